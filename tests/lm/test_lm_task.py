"""The language-model task: the state carried across variable-length batches, and AR/TAR."""

from __future__ import annotations

import numpy as np
import torch

from rnnlm.core.vocab import Vocab
from rnnlm.lm.config import LMEvalConfig, LMTrainConfig, ModelConfig
from rnnlm.lm.data.dataset import Corpus
from rnnlm.lm.evaluate import evaluate, evaluate_windows
from rnnlm.lm.model import RNNLM
from rnnlm.lm.task import LanguageModelTask
from rnnlm.training.metrics import summarize

V = 13


def task_and_model(**train) -> tuple[LanguageModelTask, RNNLM]:
    ids = np.random.default_rng(0).integers(0, V, 3000)
    vocab = Vocab([chr(97 + i) for i in range(V)], "char")
    corpus = Corpus(vocab, ids, None, None, "char", "test")
    tc = LMTrainConfig(batch_size=3, seq_len=16, sampling="sequential", seed=4, **train)
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(cell="lstm", layers=2, hidden=8, embed=6), V).double()
    return LanguageModelTask(corpus, tc, LMEvalConfig(), torch.device("cpu")), model


def test_variable_length_batches_carry_the_state_as_one_long_pass() -> None:
    task, model = task_and_model(variable_len=True)
    model.eval()  # no dropout: the carried computation must equal one pass over the rows
    batches = list(task.batches(0))
    losses = [task.loss(model, batch)[0] for batch in batches]
    X = torch.cat([x for x, _ in batches], dim=1)
    Y = torch.cat([y for _, y in batches], dim=1)
    logits, _ = model(X)
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), Y, reduction="none")  # (B, covered)
    edges = np.cumsum([0] + [x.shape[1] for x, _ in batches])
    expected = [nll[:, a:b].mean() for a, b in zip(edges, edges[1:], strict=False)]
    torch.testing.assert_close(torch.stack(losses), torch.stack(expected))
    assert len({x.shape[1] for x, _ in batches}) > 2


def test_ar_and_tar_are_added_to_the_objective_but_not_to_the_logged_loss() -> None:
    task, model = task_and_model(ar=2.0, tar=1.0)
    X, Y = next(iter(task.batches(0)))
    objective, count, logged = task.loss(model, (X, Y))
    outputs, _ = model.encode(X)
    ce = model.head.loss(outputs, Y)
    penalty = 2.0 * outputs.pow(2).mean() + 1.0 * (outputs[:, 1:] - outputs[:, :-1]).pow(2).mean()
    torch.testing.assert_close(logged, ce.detach())
    torch.testing.assert_close(objective, ce + penalty)
    assert count == Y.numel() and penalty > 0
    plain, _ = task_and_model()
    assert len(plain.loss(model, (X, Y))) == 2  # without penalties the loss is the objective


def test_validation_follows_the_eval_protocol() -> None:
    """--eval-protocol windows reaches training's validation: its figure is the windows protocol's, not the
    carried one."""
    task, model = task_and_model()
    val = np.random.default_rng(1).integers(0, V, 300)
    task.corpus = Corpus(task.corpus.vocab, task.corpus.train, val, None, "char", "test")
    carried = task.evaluate(model)["val_loss"]
    assert carried == summarize(*evaluate(model, val, 16, 256))["loss"]
    task.ec = LMEvalConfig(eval_protocol="windows", eval_block=10)
    assert task.evaluate(model)["val_loss"] == summarize(*evaluate_windows(model, val, 10))["loss"] != carried
