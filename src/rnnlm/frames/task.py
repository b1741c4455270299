"""The frame task: classify each sequence, or label each frame, of a FrameDataset.

Minibatches are drawn from a shuffle that depends only on (seed, epoch), so a resumed run sees the
same batches as one trained straight through, and the task needs no state of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rnnlm.core.errors import DataError
from rnnlm.frames.data import FrameDataset
from rnnlm.frames.metrics import classification_report
from rnnlm.frames.prep import IGNORE_INDEX, FrameBatch, make_batch, pad_frames
from rnnlm.training import distributed
from rnnlm.training.config import TrainConfig
from rnnlm.training.task import Task


def frame_logits(
    model: torch.nn.Module, sequences: list[np.ndarray], batch_size: int, device: torch.device | str = "cpu"
) -> list[torch.Tensor]:
    """The model's logits for each sequence, in order, on the CPU: (C,) per sequence or (T_i, C) per frame.

    Runs in eval mode under no_grad and restores the model's mode afterwards.
    """
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    try:
        with torch.no_grad():
            for start in range(0, len(sequences), batch_size):
                chunk = sequences[start : start + batch_size]
                frames, lengths, _ = pad_frames(chunk)
                logits = model(frames.to(device), lengths.to(device)).cpu()  # (B, C) or (B, T, C)
                if logits.dim() == 3:
                    out.extend(logits[i, : int(n)] for i, n in enumerate(lengths))
                else:
                    out.extend(logits)
    finally:
        model.train(was_training)
    return out


def score(logits: list[torch.Tensor], data: FrameDataset) -> tuple[float, dict[str, Any]]:
    """Mean cross-entropy (per sequence, or per frame) and the classification report of labelled data."""
    if data.labels is None:
        raise DataError(f"{data.source or 'the data'}: has no labels to score against")
    if data.task == "classify":
        flat, gold = torch.stack(logits), torch.as_tensor(np.asarray(data.labels), dtype=torch.int64)
    else:
        flat = torch.cat(logits)  # (sum T_i, C)
        gold = torch.as_tensor(np.concatenate(data.labels), dtype=torch.int64)
    loss = F.cross_entropy(flat, gold).item()
    return loss, classification_report(gold.numpy(), flat.argmax(-1).numpy(), data.classes)


class FrameTask(Task):
    """Batches, loss and validation metrics for a FrameRNN on ``train``, validated on ``val`` (or not).

    ``label_smoothing`` softens the training targets only; validation and test losses are plain cross-entropy,
    so that early stopping compares the same quantity whatever the setting.
    """

    def __init__(
        self,
        train: FrameDataset,
        val: FrameDataset | None,
        tc: TrainConfig,
        eval_batch_size: int,
        device: torch.device,
        label_smoothing: float = 0.0,
    ) -> None:
        if train.labels is None:
            raise DataError(f"{train.source or 'the training data'}: has no labels to train on")
        self.train, self.val, self.tc, self.eval_batch_size, self.device = train, val, tc, eval_batch_size, device
        self.label_smoothing = label_smoothing
        self.unit = "seq" if train.task == "classify" else "frame"
        self.shards_evaluation = True

    def num_batches(self, epoch: int) -> int:
        n, bs, world = len(self.train), self.tc.batch_size, distributed.world_size()
        batches = math.ceil(n / bs)
        # Under torchrun a last batch with fewer sequences than ranks is left out (on every rank alike), rather
        # than padded with repeats as DistributedSampler does; the shuffle changes which ones each epoch.
        return batches - 1 if world > 1 and n - (batches - 1) * bs < world else batches

    def batches(self, epoch: int, start: int = 0) -> Iterator[FrameBatch]:
        order = np.random.default_rng([self.tc.seed, epoch]).permutation(len(self.train))
        bs, rank, world = self.tc.batch_size, distributed.rank(), distributed.world_size()
        for i in range(start, self.num_batches(epoch)):
            # Under torchrun rank r takes every world-th sequence of the global batch.
            b = make_batch(self.train, order[i * bs : (i + 1) * bs][rank::world])
            yield FrameBatch(b.frames.to(self.device), b.lengths, b.mask.to(self.device), b.targets.to(self.device))

    def loss(self, model: torch.nn.Module, batch: FrameBatch) -> tuple[torch.Tensor, int]:
        logits = model(batch.frames, batch.lengths)  # (B, C) or (B, T, C)
        eps = self.label_smoothing
        if logits.dim() == 2:
            return F.cross_entropy(logits, batch.targets, label_smoothing=eps), len(batch.targets)
        flat, gold = logits.flatten(0, 1), batch.targets.flatten()
        loss = F.cross_entropy(flat, gold, ignore_index=IGNORE_INDEX, label_smoothing=eps)
        return loss, int(batch.mask.sum())

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """Loss, accuracy and macro-F1 on the validation split (empty without one)."""
        if self.val is None:
            return {}
        # Under torchrun each rank scores its block of the sequences; the logits are gathered in order.
        mine = frame_logits(
            model, self.val.sequences[distributed.block(len(self.val))], self.eval_batch_size, self.device
        )
        logits = [x for part in distributed.gather(mine) for x in part]
        loss, report = score(logits, self.val)
        return {"val_loss": loss, "val_acc": report["accuracy"], "val_f1": report["macro_f1"]}

    def summary(self, m: dict[str, Any]) -> str:
        line = f"train loss {m['train_loss']:.4f}"
        if "val_loss" in m:
            line += f" | val loss {m['val_loss']:.4f} | val acc {m['val_acc']:.4f} | val F1 {m['val_f1']:.4f}"
        return line

    def callbacks(self) -> list[Any]:
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}  # the batch order is a function of (seed, epoch); nothing is carried between batches

    def load_state_dict(self, d: dict[str, Any]) -> None:
        pass
