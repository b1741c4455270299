"""The CUDA-graph training step (graph_step.py) against the eager step; most tests need a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnlm.core.errors import TrainingError
from rnnlm.core.vocab import Vocab
from rnnlm.lm.config import LMEvalConfig, LMTrainConfig, ModelConfig
from rnnlm.lm.data.dataset import Corpus
from rnnlm.lm.model import RNNLM
from rnnlm.lm.task import LanguageModelTask
from rnnlm.training.optim import lr_at
from rnnlm.training.trainer import Trainer, _plain_lr

CUDA = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not CUDA, reason="CUDA graphs need a GPU")
TEXT = "the quick brown fox jumps over the lazy dog; " * 40


def corpus() -> Corpus:
    vocab = Vocab.build(TEXT, "char")
    ids = np.asarray(vocab.encode(TEXT)).astype(np.uint16)
    return Corpus(vocab, ids, None, None, "char", "test text")


def trainer(graph: str, cell: str = "lstm", sampling: str = "sequential", engine: str = "auto", **train) -> Trainer:
    torch.manual_seed(0)
    c = corpus()
    model = RNNLM(ModelConfig(cell=cell, layers=2, hidden=64, embed=16, impl=engine), len(c.vocab)).cuda()
    settings = {"batch_size": 4, "seq_len": 16, "sampling": sampling, "pred_period": 0, "cuda_graph": graph}
    tc = LMTrainConfig(**{**settings, **train})
    task = LanguageModelTask(c, tc, LMEvalConfig(), torch.device("cuda"))
    return Trainer(model, task, tc, log=lambda _: None)


def run_steps(t: Trainer, n: int) -> list[float]:
    losses = []
    for batch in t.task.batches(0):
        loss, _ = t.train_step(batch)
        t.step, t.batch = t.step + 1, t.batch + 1
        losses.append(float(loss))
        if len(losses) == n:
            return losses
    raise AssertionError("the corpus ran out of batches")


@needs_gpu
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("sampling", ["sequential", "random"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_graph_steps_equal_eager_steps(cell: str, sampling: str, optimizer: str) -> None:
    """Twelve steps (three eager warm-up, one captured, the rest replayed) give the eager run's losses and
    weights; the carried state of sequential batches passes from replay to replay, and a cosine lr moves.
    (On an H200 one capture in six of the AdamW GRU cases was invalidated, cause not found; the step then
    retries after three eager steps, so twelve steps leave room for one retry.)"""
    kw = {"optimizer": optimizer, "lr": 0.05 if optimizer == "sgd" else 3e-3, "schedule": "cosine", "max_steps": 12}
    eager, graphed = trainer("off", cell, sampling, **kw), trainer("on", cell, sampling, **kw)
    assert eager.graph is None and graphed.graph is not None
    a, b = [], []
    for t, out in ((eager, a), (graphed, b)):
        for batch in t.task.batches(0):
            t.lr = lr_at(t.cfg, t.step, 12)
            loss, _ = t.train_step(batch)
            t.step, t.batch = t.step + 1, t.batch + 1
            out.append(float(loss))
            if len(out) == 10:
                break
    assert len(graphed.graph.graphs) == 1, graphed.graph.capture_error
    np.testing.assert_allclose(b, a, rtol=2e-3, atol=2e-4)
    for (name, p), q in zip(eager.model.named_parameters(), graphed.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, atol=2e-3, rtol=2e-3, msg=name)


@needs_gpu
def test_a_nan_step_is_skipped_and_reported_at_the_check() -> None:
    t = trainer("on", lr=1e-3, optimizer="adamw")
    t.graph.check_every = 5
    run_steps(t, 5)  # warm-up and capture done
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    t.model.head.bias.data[0] = float("nan")  # every later loss is NaN
    with pytest.raises(TrainingError, match="NaN or infinite"):
        run_steps(t, 20)
    for k, v in t.model.state_dict().items():
        if k != "head.bias":
            torch.testing.assert_close(v, before[k], msg=k)


def test_a_tensor_lr_is_saved_as_a_number() -> None:
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=torch.tensor(0.01))
    sd = _plain_lr(opt.state_dict())
    assert sd["param_groups"][0]["lr"] == pytest.approx(0.01) and isinstance(sd["param_groups"][0]["lr"], float)
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)  # the live optimizer keeps its tensor


def test_no_graph_on_a_cpu() -> None:
    c = corpus()
    model = RNNLM(ModelConfig(cell="rnn", layers=1, hidden=8, embed=4), len(c.vocab))
    tc = LMTrainConfig(batch_size=2, seq_len=8, pred_period=0, cuda_graph="on")
    t = Trainer(model, LanguageModelTask(c, tc, LMEvalConfig(), torch.device("cpu")), tc, log=lambda _: None)
    assert t.graph is None and isinstance(run_steps(t, 2)[0], float)
