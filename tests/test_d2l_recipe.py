"""`--preset d2l` trains exactly as the textbook loop does, step for step, from the same weights.

The textbook loop is written out here independently: one-hot tensors multiplied by W_xh, a list of
per-step outputs laid out time-major, hand-written global-norm clipping and SGD. The full 250-epoch
reproduction (perplexity 1.30 / 1.16) is a benchmark: bench/d2l_recipe.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnlm import checkpoint as ckpt
from rnnlm.config import build_config, split_overrides
from rnnlm.data import BatchSampler, load_corpus
from rnnlm.models import RNNLM
from rnnlm.trainer import train

STEPS = 3


def textbook_steps(params, ids, vocab_size: int, sampling: str) -> list[float]:
    W_xh, W_hh, b_h, W_hq, b_q = params
    B, T, H = 32, 35, W_hh.shape[0]
    losses, state = [], torch.zeros(B, H, dtype=torch.float64)
    for X, Y in list(BatchSampler(ids, B, T, sampling, random_offset=False, seed=0).batches(0))[:STEPS]:
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
    cfg = build_config(split_overrides(settings), preset="d2l")
    corpus = load_corpus(cfg.data)
    assert len(corpus.vocab) == 1027 and len(corpus.train) == 10_000

    torch.manual_seed(cfg.train.seed)  # the trainer seeds, then builds the model: same initial weights
    init = RNNLM(cfg.model, len(corpus.vocab)).state_dict()
    names = ("layers.0.W_xh", "layers.0.W_hh", "layers.0.b_h")
    params = [init[k].double().clone() for k in names] + [
        init["head.weight"].t().double().clone(),
        init["head.bias"].double().clone(),
    ]
    for p in params:
        p.requires_grad_(True)
    losses = textbook_steps(params, corpus.train, len(corpus.vocab), sampling)

    result = train(cfg, log=lambda _: None)
    trained = ckpt.load_weights(tmp_path / "run" / ckpt.LAST)[0]
    assert result.metrics["step"] == STEPS
    mean_loss = sum(losses) / STEPS  # the metrics line is the mean over the (partial) epoch's batches
    assert result.metrics["train_loss"] == pytest.approx(mean_loss, abs=1e-4)
    expected = dict(zip(names, params[:3], strict=True))
    expected["head.weight"], expected["head.bias"] = params[3].t(), params[4]
    for k, v in expected.items():
        # float32 against float64 with lr 100: equal to about 1e-4 after three steps.
        torch.testing.assert_close(trained[k].double(), v.detach(), atol=2e-4, rtol=0)
