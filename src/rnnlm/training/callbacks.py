"""What hangs off the training loop: metrics lines, checkpoints, best-model tracking, early stopping.

Each is a plain object with any of ``on_step(trainer, loss, count)``, ``on_epoch_end(trainer)``,
``on_metrics(trainer, metrics)`` and ``on_train_end(trainer)``; the trainer calls them in list order.
One with ``state_dict``/``load_state_dict`` is saved in the last checkpoint and restored on resume.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.atomic import append_text
from rnnlm.training import distributed
from rnnlm.training.metrics import summarize


class MetricsLogger:
    """Appends a line to metrics.jsonl at every log point and shows it on the console when due.

    Log points: every ``log_every`` steps, else each epoch's end; and the end of training when steps
    are left unlogged. A per-epoch line reports the whole epoch's loss, as the d2l recipe does (also
    across a resume); with ``log_every`` each line reports the steps since the previous line.
    """

    def __init__(self, run_dir: Path, log_every: int) -> None:
        self.path = Path(run_dir) / ckpt.METRICS
        self.log_every = log_every
        self.epoch_sum = self.epoch_count = 0.0
        self.int_sum = self.int_count = self.int_seconds = 0.0
        self.last: dict[str, Any] = {}

    def on_step(self, trainer: Any, loss: float, count: int) -> None:
        self.epoch_sum += loss * count
        self.epoch_count += count
        self.int_sum += loss * count
        self.int_count += count
        self.int_seconds += trainer.step_seconds
        if self.log_every and trainer.step % self.log_every == 0:
            self.log_point(trainer, epoch_end=False)

    def on_epoch_end(self, trainer: Any) -> None:
        if not self.log_every or trainer.step % self.log_every:
            self.log_point(trainer, epoch_end=True)
        self.epoch_sum = self.epoch_count = 0.0  # before the last checkpoint: a resume starts a fresh epoch

    def on_train_end(self, trainer: Any) -> None:
        if self.int_count:
            self.log_point(trainer, epoch_end=False)

    def log_point(self, trainer: Any, epoch_end: bool) -> None:
        """Evaluate, append a metrics line, show it when due, and pass it to the other callbacks."""
        per_epoch = epoch_end and not self.log_every
        s, n = (self.epoch_sum, self.epoch_count) if per_epoch else (self.int_sum, self.int_count)
        train = summarize(float(s), int(n))  # float(): a CUDA graph's losses stay on the device until here
        with trainer.evaluation_weights():  # with --ema, the averaged weights are scored and saved as the best
            self._evaluate_and_report(trainer, train, epoch_end)

    def _evaluate_and_report(self, trainer: Any, train: dict[str, float], epoch_end: bool) -> None:
        m: dict[str, Any] = {
            "step": trainer.step,
            "epoch": trainer.epoch_progress(),
            "elapsed_s": round(trainer.elapsed(), 3),
            "lr": trainer.lr,
            "tokens_per_s": round(self.int_count / max(self.int_seconds, 1e-9), 1),
            "train_loss": train["loss"],
            "train_ppl": train["ppl"],
            **trainer.held_out(),
        }
        if distributed.is_main():  # several ranks: every rank has the same line (summed losses), rank 0 writes it
            # Strict JSON: an overflowed perplexity is written as null, not as the non-standard Infinity.
            line = {k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in m.items()}
            append_text(self.path, json.dumps(line) + "\n")  # one write: a crash cuts at most this line short
        self.last = m
        self.int_sum = self.int_count = self.int_seconds = 0.0
        if trainer.report_due(epoch_end):
            trainer.log(
                f"epoch {m['epoch']} | step {m['step']} | lr {m['lr']:.3g} | {trainer.task.summary(m)} | "
                f"{m['tokens_per_s']:.0f} {trainer.task.unit}/s | {m['elapsed_s']:.1f} s"
            )
        trainer.fire("on_metrics", m)

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": [self.epoch_sum, self.epoch_count],
            "interval": [self.int_sum, self.int_count, self.int_seconds],
            "last": self.last,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.epoch_sum, self.epoch_count = d["epoch"]
        self.int_sum, self.int_count, self.int_seconds = d["interval"]
        self.last = d["last"]


def improves(value: float, best: float, mode: str) -> bool:
    """Whether ``value`` beats ``best`` for a metric where lower (mode "min") or higher ("max") is better."""
    return value < best if mode == "min" else value > best


def _worst(mode: str) -> float:
    return math.inf if mode == "min" else -math.inf


class BestCheckpoint:
    """Saves the weights whenever the monitored metric reaches a new best (best.safetensors).

    By default the lowest validation loss; a task may monitor another metric, e.g. ``("val_f1", "max")``.
    """

    def __init__(self, run_dir: Path, monitor: str = "val_loss", mode: str = "min") -> None:
        self.path = Path(run_dir) / ckpt.BEST
        self.monitor, self.mode = monitor, mode
        self.best = _worst(mode)

    def on_metrics(self, trainer: Any, m: dict[str, Any]) -> None:
        if self.monitor in m and improves(m[self.monitor], self.best, self.mode):
            self.best = m[self.monitor]
            meta = {"step": trainer.step, "epoch": m["epoch"], self.monitor: m[self.monitor]}
            if distributed.is_main():
                ckpt.save_weights(self.path, trainer.model.state_dict(), meta)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.best = d["best"]
        if self.path.is_file():  # a crash after a new best but before the last save: keep the better one
            saved = ckpt.load_weights(self.path)[1].get(self.monitor)
            if saved is not None and improves(float(saved), self.best, self.mode):
                self.best = float(saved)


class EarlyStopping:
    """Stops the run when the monitored metric (default: validation loss) has not improved for
    ``patience`` evaluations."""

    def __init__(self, patience: int, monitor: str = "val_loss", mode: str = "min") -> None:
        self.patience, self.monitor, self.mode = patience, monitor, mode
        self.best, self.bad = _worst(mode), 0

    def on_metrics(self, trainer: Any, m: dict[str, Any]) -> None:
        if self.monitor not in m:
            return
        if improves(m[self.monitor], self.best, self.mode):
            self.best, self.bad = m[self.monitor], 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                trainer.request_stop(f"early stopping ({self.monitor} did not improve in {self.bad} evaluations)")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.best, self.bad = d["best"], d["bad"]


class LastCheckpoint:
    """Saves what an exact resume needs (last.safetensors) at log points and epoch ends, at most every
    ``save_every`` seconds, and always at the end of training (a limit, Ctrl-C, early stopping)."""

    def __init__(self, run_dir: Path, save_every: float, log_every: int = 0) -> None:
        self.path = Path(run_dir) / ckpt.LAST
        self.save_every, self.log_every = save_every, log_every
        self.saved_step, self.saved_at = -1, -math.inf

    def on_step(self, trainer: Any, loss: float, count: int) -> None:
        if self.log_every and trainer.step % self.log_every == 0:
            self.save(trainer)

    def on_epoch_end(self, trainer: Any) -> None:
        self.save(trainer)

    def on_train_end(self, trainer: Any) -> None:
        self.save(trainer, force=True)

    def save(self, trainer: Any, force: bool = False) -> None:
        now = trainer.clock()  # several ranks: rank 0's clock, so that all decide alike (the state is gathered)
        if self.saved_step == trainer.step or (not force and now - self.saved_at < self.save_every):
            return
        meta = {"step": trainer.step, "epoch": trainer.epoch_progress()}
        state = trainer.state_dict()
        if distributed.is_main():
            ckpt.save_weights(self.path, trainer.model.state_dict(), meta, state)
        self.saved_step, self.saved_at = trainer.step, now
