"""The training loop on its own, with a fake task: the update, the NaN guard, stopping and callbacks."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlm.core.errors import TrainingError
from rnnlm.training.callbacks import BestCheckpoint, EarlyStopping
from rnnlm.training.config import TrainConfig
from rnnlm.training.task import Task
from rnnlm.training.trainer import Trainer


class Regression(Task):
    """A task with 4 batches per epoch: fit y = 2x; ``evaluate`` replays a fixed list of losses."""

    unit = "ex"

    def __init__(self, val_losses=(), nan_at_step: int | None = None) -> None:
        self.val_losses, self.evaluations, self.nan_at_step, self.steps = list(val_losses), 0, nan_at_step, 0
        g = torch.Generator().manual_seed(0)
        self.data = [(x, 2 * x) for x in torch.randn(4, 8, 1, generator=g)]

    def num_batches(self, epoch: int) -> int:
        return len(self.data)

    def batches(self, epoch: int, start: int = 0):
        yield from self.data[start:]

    def loss(self, model, batch):
        self.steps += 1
        x, y = batch
        loss = ((model(x) - y) ** 2).mean()
        return (loss * math.nan if self.steps == self.nan_at_step else loss), len(x)

    def evaluate(self, model):
        self.evaluations += 1
        return {"val_loss": self.val_losses.pop(0)} if self.val_losses else {}

    def summary(self, m):
        return ""

    def state_dict(self):
        return {}

    def load_state_dict(self, d):
        pass


class EpochEvaluator:
    """The smallest metrics callback: evaluate at each epoch's end and pass the line on."""

    def on_epoch_end(self, trainer):
        trainer.fire("on_metrics", {"epoch": trainer.epoch, **trainer.task.evaluate(trainer.model)})


def make(task, **cfg) -> Trainer:
    torch.manual_seed(0)
    settings = {"optimizer": "sgd", "lr": 0.1, "clip": 0.0, "epochs": 5, **cfg}
    return Trainer(torch.nn.Linear(1, 1), task, TrainConfig(**settings), log=lambda _: None)


def test_one_step_is_plain_sgd() -> None:
    trainer = make(Regression(), max_steps=1, epochs=None)
    w0 = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    x, y = trainer.task.data[0]
    model = torch.nn.Linear(1, 1)
    model.load_state_dict(w0)
    ((model(x) - y) ** 2).mean().backward()
    assert trainer.fit() == "--max-steps 1 reached"
    for name, p in model.named_parameters():
        torch.testing.assert_close(trainer.model.state_dict()[name], p.detach() - 0.1 * p.grad)


def test_a_nan_loss_stops_before_the_update() -> None:
    """The weights in memory are those before the bad step, not NaN (the check used to follow the update)."""
    trainer = make(Regression(nan_at_step=3))
    seen = []
    trainer.callbacks.append(
        type("Spy", (), {"on_step": lambda self, t, loss, n: seen.append(t.model.weight.item())})()
    )
    with pytest.raises(TrainingError, match=r"loss became nan at step 3 .*--lr"):
        trainer.fit()
    assert trainer.step == 2 and math.isfinite(trainer.model.weight.item())
    assert trainer.model.weight.item() == seen[-1]  # unchanged since step 2


def test_early_stopping_after_patience_evaluations_without_improvement() -> None:
    task = Regression(val_losses=[3.0, 2.0, 2.5, 2.0, 1.0])
    trainer = make(task, epochs=5)
    trainer.callbacks += [EpochEvaluator(), EarlyStopping(patience=2)]
    reason = trainer.fit()
    # 2.5 and then 2.0 (a tie is no improvement) make two evaluations without a new low after 2.0
    assert reason == "early stopping (val_loss did not improve in 2 evaluations)"
    assert trainer.epoch == 4 and task.evaluations == 4


def test_a_task_may_monitor_a_score_where_higher_is_better(tmp_path) -> None:
    """With monitor ("val_f1", "max") the best checkpoint and early stopping follow the highest F1, not the
    lowest loss: here the loss keeps falling while F1 peaks at the second evaluation."""
    task = Regression(val_losses=[3.0, 2.0, 1.5, 1.0, 0.5])
    f1s = iter([0.5, 0.8, 0.7, 0.8, 0.6])
    evaluate = task.evaluate
    task.evaluate = lambda model: {**evaluate(model), "val_f1": next(f1s)}
    trainer = make(task, epochs=5)
    best = BestCheckpoint(tmp_path, "val_f1", "max")
    trainer.callbacks += [EpochEvaluator(), best, EarlyStopping(2, "val_f1", "max")]
    assert trainer.fit() == "early stopping (val_f1 did not improve in 2 evaluations)"
    assert trainer.epoch == 4 and best.best == 0.8
    assert ckpt_meta(tmp_path)["epoch"] == "2"  # saved at the peak, not at the tie at epoch 4
    assert EarlyStopping(1).best == math.inf and BestCheckpoint(tmp_path).best == math.inf  # default: minimise


@pytest.mark.parametrize("period,shown", [(None, [1, 2, 3, 4, 5, 6, 7]), (3, [3, 6, 7])])
def test_the_task_says_how_often_epoch_lines_are_shown(period, shown) -> None:
    """The trainer reads no language-model setting: a task's report_period (a language model's --pred-period)
    spaces the epoch-end lines, the last epoch always shown; a task without one shows every epoch."""
    task = Regression()
    if period is not None:
        task.report_period = period
    trainer = make(task, epochs=7)
    due = []
    trainer.callbacks.append(
        type("Spy", (), {"on_epoch_end": lambda self, t: due.append(t.epoch) if t.report_due(True) else None})()
    )
    trainer.fit()
    assert due == shown
    assert trainer.report_due(epoch_end=False)  # lines every --log-every steps are always shown


def ckpt_meta(run_dir):
    from rnnlm.core import checkpoint

    return checkpoint.load_weights(run_dir / checkpoint.BEST)[1]


def test_limits_and_the_first_one_reached() -> None:
    assert make(Regression(), epochs=2).fit() == "--epochs 2 reached"
    trainer = make(Regression(), epochs=2, max_steps=6)
    assert trainer.fit() == "--max-steps 6 reached" and trainer.step == 6 and trainer.epoch_progress() == 1.5


def test_fit_sets_the_thread_count_once_not_around_every_step(monkeypatch) -> None:
    """--threads 1 where torch runs 2: 20 steps set the count once and restore it once (they used to set
    and restore it around every step), and evaluation runs with the count found before training."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        calls: list[int] = []
        real = torch.set_num_threads
        monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n) or real(n))
        task = Regression()
        during_eval = []
        task.evaluate = lambda model: during_eval.append(torch.get_num_threads()) or {}
        trainer = make(task, threads=1, max_steps=20, epochs=None)
        trainer.callbacks.append(EpochEvaluator())
        assert trainer.fit() == "--max-steps 20 reached"
        assert during_eval == [2] * 5 and calls.count(1) <= 1 + len(during_eval)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)
