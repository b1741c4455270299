"""Tasks: what the trainer trains. A task supplies batches, the loss, held-out metrics and its own state.

The trainer (trainer.py) knows nothing about tokens, tags or frames; it asks its task::

    task.num_batches(epoch) -> int                     batches in that epoch
    task.batches(epoch, start) -> iterator of batches  from batch `start` on (a resume starts mid-epoch)
    task.loss(model, batch) -> (mean loss, count)      the forward pass; count = targets in the batch; an
                                                       optional third value is the loss to log when the
                                                       first is an objective with penalties (AR/TAR)
    task.evaluate(model) -> dict                       held-out metrics, with "val_loss" (lower is better)
    task.summary(metrics) -> str                       the held-out part of a console line
    task.callbacks() -> list                           task-specific hooks (e.g. text samples)
    task.state_dict() / load_state_dict(d)             what an exact resume needs (e.g. the carried state)
    task.monitor = (metric, "min" | "max")             optional: the held-out metric that picks the best
                                                       checkpoint and early stopping; default ("val_loss", "min")

The language-model task lives in lm.py, the frame task (sequence classification, per-frame labels) in
frames.py.
"""

from rnnlm.tasks.frames import FrameTask
from rnnlm.tasks.lm import LanguageModelTask, SampleText

__all__ = ["FrameTask", "LanguageModelTask", "SampleText"]
