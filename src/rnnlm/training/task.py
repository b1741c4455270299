"""The Task protocol: everything the training loop, its callbacks and the run lifecycle ask of a task.

The trainer knows no use. A task (``lm/task.py``, ``tagging/task.py``, ``frames/task.py``) supplies the batches, the
loss, the held-out metrics and its own resumable state; the trainer (``trainer.py``), the CUDA-graph step
(``graph_step.py``), the metrics callback (``callbacks.py``) and ``runs.train_model`` read only what is listed here.

Each use's task subclasses ``Task`` explicitly, so that the optional settings below come with their defaults (a
task that graphs no step, carries no state and is judged by its validation loss writes none of them) and a task
that leaves out a required method cannot be made (they are abstract). ``isinstance(obj, Task)`` also holds for an
object that has every member without subclassing (the protocol is runtime-checkable).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Task(Protocol):
    """Batches, loss, held-out metrics and resumable state of what a model is trained on."""

    # -- required ----------------------------------------------------------------------------------------
    unit: str
    """What the loss counts, for the throughput on the console: ``"tok"``, ``"seq"``, ``"frame"``."""

    @abstractmethod
    def num_batches(self, epoch: int) -> int:
        """Batches in ``epoch``: where an epoch ends, the cosine schedule's length and ``epoch_progress``."""

    @abstractmethod
    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """The batches of ``epoch`` from the ``start``-th on (a resume continues mid-epoch), on the model's device.

        Their order may depend only on (seed, epoch) and the task's state, so that a resumed run sees the batches
        that a run trained straight through would have seen."""

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[Any, ...]:
        """``(objective, count)`` for one batch: the mean loss to minimise (a scalar tensor) and how many targets
        it averages over (the weight of this batch in the logged mean). A task whose objective adds penalties
        returns a third value, the plain loss, which is what gets logged."""

    @abstractmethod
    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """The held-out metrics of a log point (``val_loss`` and the like; empty without held-out data), merged
        into the metrics line; ``monitor`` names the one that picks the best weights."""

    @abstractmethod
    def summary(self, metrics: dict[str, Any]) -> str:
        """The task's part of a console line, from a metrics line (``train ppl 4.2 | val ppl 5.0``)."""

    # -- optional, with the defaults of a task that needs none of them ------------------------------------
    monitor: tuple[str, str] = ("val_loss", "min")
    """The metric that picks the best checkpoint and drives early stopping, and whether lower ("min") or higher
    ("max") is better; a tagger is judged by entity F1 or accuracy, since a lower dev loss need not tag better."""

    report_period: int = 1
    """Epoch-end lines reach the console every this many epochs (every --log-every line, and the last, always do);
    a language model prints every --pred-period epochs, as the d2l recipe does."""

    fixed_shapes: bool = False
    """Every batch has one shape, so on a GPU the whole step may be captured once and replayed as a CUDA graph."""

    carries_state: bool = False
    """Whether ``loss`` reads ``carry`` (a state handed from one batch to the next); the graphed step then keeps
    it in the graph's buffers."""

    carry: tuple[torch.Tensor, ...] | None = None
    """The state carried into the next batch (None: a zero state), set by ``loss``; read and set by the graphed
    step only when ``carries_state``."""

    shards_evaluation: bool = False
    """Under torchrun: whether ``evaluate`` scores only this rank's share of the held-out data and sums over the
    ranks itself (``training.distributed``), so each target is scored once; otherwise rank 0 evaluates everything
    and hands the metrics to the other ranks."""

    def callbacks(self) -> list[Any]:
        """Callbacks of the task's own, joined to the standard ones (a language model's text samples)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """What an exact resume needs of the task, saved in the last checkpoint (nothing by default: a task whose
        batch order is a function of (seed, epoch) keeps no state)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved."""
