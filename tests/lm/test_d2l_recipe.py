"""`--preset d2l` trains exactly as the textbook loop does, step for step, from the same weights.

The textbook loop is written out here independently: the book's two minibatch iterators (random
windows in shuffled order; consecutive rows), one-hot tensors multiplied by W_xh, a list of per-step
outputs laid out time-major, hand-written global-norm clipping and SGD. Only the shuffle is shared
with rnnlm, since a shuffle is a random choice, not part of the method. The full 250-epoch
reproduction (perplexity 1.30 / 1.16) is a benchmark: bench/d2l_recipe.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnlm.core import checkpoint as ckpt
from rnnlm.lm.config import build_config, split_settings
from rnnlm.lm.data.batching import BatchSampler
from rnnlm.lm.data.dataset import load_corpus
from rnnlm.lm.model import RNNLM
from rnnlm.lm.run import train

STEPS = 3


def book_random_batches(ids: list[int], batch_size: int, num_steps: int, shuffle):
    """The book's random sampling: non-overlapping windows of num_steps, visited in shuffled order."""
    num_windows = (len(ids) - 1) // num_steps
    starts = list(range(num_windows))
    shuffle(starts)
    for i in range(num_windows // batch_size):
        picked = starts[i * batch_size : (i + 1) * batch_size]
        X = [ids[j * num_steps : j * num_steps + num_steps] for j in picked]
        Y = [ids[j * num_steps + 1 : j * num_steps + num_steps + 1] for j in picked]
        yield torch.tensor(X), torch.tensor(Y)


def book_consecutive_batches(ids: list[int], batch_size: int, num_steps: int):
    """The book's sequential partitioning: batch_size rows of the text, read num_steps at a time."""
    row_len = len(ids) // batch_size
    rows = torch.tensor(ids[: batch_size * row_len]).view(batch_size, row_len)
    for i in range((row_len - 1) // num_steps):
        yield rows[:, i * num_steps : (i + 1) * num_steps], rows[:, i * num_steps + 1 : (i + 1) * num_steps + 1]


def textbook_steps(params, ids, vocab_size: int, sampling: str) -> list[float]:
    W_xh, W_hh, b_h, W_hq, b_q = params
    B, T, H = 32, 35, W_hh.shape[0]
    ids = ids.tolist()
    if sampling == "random":
        order = BatchSampler(ids, B, T, "random", random_offset=False, seed=0).epoch_plan(0).order.tolist()
        batches = book_random_batches(ids, B, T, shuffle=lambda xs: xs.__setitem__(slice(None), order))
    else:
        batches = book_consecutive_batches(ids, B, T)
    losses, state = [], torch.zeros(B, H, dtype=torch.float64)
    for X, Y in list(batches)[:STEPS]:
        state = torch.zeros(B, H, dtype=torch.float64) if sampling == "random" else state.detach()
        outputs = []
        for t in range(T):
            state = torch.tanh(F.one_hot(X[:, t], vocab_size).double() @ W_xh + state @ W_hh + b_h)
            outputs.append(state @ W_hq + b_q)
        loss = F.cross_entropy(torch.cat(outputs), Y.t().reshape(-1))
        for p in params:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            norm = torch.sqrt(sum((p.grad**2).sum() for p in params))
            for p in params:
                if norm > 0.01:
                    p.grad.mul_(0.01 / norm)
                p.sub_(100.0 * p.grad)
        losses.append(loss.item())
    return losses


@pytest.mark.e2e
@pytest.mark.parametrize("sampling", ["random", "sequential"])
def test_preset_matches_the_textbook_loop(shared_data, tmp_path, sampling):
    settings = {
        "paths": [str(shared_data / "jaychou_lyrics.txt")],
        "sampling": sampling,
        "max_steps": STEPS,
        "progress": False,
        "pred_period": 0,
        "out": str(tmp_path / "run"),
    }
    cfg = build_config(split_settings(settings), preset="d2l")
    corpus = load_corpus(cfg.data)
    assert len(corpus.vocab) == 1027 and len(corpus.train) == 10_000

    torch.manual_seed(cfg.train.seed)  # the trainer seeds, then builds the model: same initial weights
    init = RNNLM(cfg.model, len(corpus.vocab)).state_dict()
    assert init["encoder.bias_l0"].shape == (256,)  # one bias b_h, as in the book (torch.nn.RNN has two)
    params = [
        init["encoder.weight_ih_l0"].t().double().clone(),  # W_xh (V, H)
        init["encoder.weight_hh_l0"].t().double().clone(),  # W_hh (H, H)
        init["encoder.bias_l0"].double().clone(),  # b_h
        init["head.weight"].t().double().clone(),  # W_hq (H, V)
        init["head.bias"].double().clone(),  # b_q
    ]
    for p in params:
        p.requires_grad_(True)
    losses = textbook_steps(params, corpus.train, len(corpus.vocab), sampling)

    result = train(cfg, log=lambda _: None)
    trained = ckpt.load_weights(tmp_path / "run" / ckpt.LAST)[0]
    assert result.metrics["step"] == STEPS
    mean_loss = sum(losses) / STEPS  # the metrics line is the mean over the (partial) epoch's batches
    assert result.metrics["train_loss"] == pytest.approx(mean_loss, abs=1e-4)
    names = ("encoder.weight_ih_l0", "encoder.weight_hh_l0", "encoder.bias_l0", "head.weight", "head.bias")
    W_xh, W_hh, b_h, W_hq, b_q = (p.detach() for p in params)
    expected = dict(zip(names, (W_xh.t(), W_hh.t(), b_h, W_hq.t(), b_q), strict=True))
    for k, v in expected.items():
        # float32 against float64 with lr 100: equal to about 1e-4 after three steps.
        torch.testing.assert_close(trained[k].double(), v.detach(), atol=2e-4, rtol=0)
