"""Minibatches of (input, target) windows over one long token stream: random or sequential sampling.

With offset 0 the two samplers are exactly d2l's ``data_iter_random`` and ``data_iter_consecutive``.

Sequential partitioning cuts the stream into ``B`` rows and walks them ``T`` steps at a time, so row
``b`` of batch ``i + 1`` continues row ``b`` of batch ``i`` and the model may carry its state over::

    stream: a b c d e f g h i j k l m n o p q r s t u v w x      (B = 2, T = 3)
    rows:   a b c d e f g h i j k l
            m n o p q r s t u v w x
    batch 0: X = [a b c]   Y = [b c d]     batch 1: X = [d e f]   Y = [e f g]   ...
                 [m n o]       [n o p]              [p q r]       [q r s]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from rnnlm.errors import DataError

SAMPLINGS = ("random", "sequential")


@dataclass(frozen=True)
class EpochPlan:
    """The random choices of one epoch."""

    offset: int  # first token used this epoch, in [0, seq_len)
    order: np.ndarray | None  # random sampling: the window permutation; None for sequential


class BatchSampler:
    """Yields batch-first ``(X, Y)`` int64 tensors of shape ``(batch_size, seq_len)``, ``Y`` = ``X`` shifted by one.

    An epoch's randomness comes only from ``np.random.default_rng([seed, epoch])``, so a resumed run
    regenerates the very same epoch and can skip the batches it has already done.
    """

    def __init__(
        self, ids: np.ndarray, batch_size: int, seq_len: int, sampling: str, random_offset: bool, seed: int
    ) -> None:
        if sampling not in SAMPLINGS:
            raise DataError(f"unknown sampling {sampling!r}; choose random or sequential")
        if batch_size < 1 or seq_len < 1:
            raise DataError(f"batch size and sequence length must be at least 1, not {batch_size} and {seq_len}")
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise DataError(f"token ids must form one 1-D stream, not an array of shape {ids.shape}")
        self.ids = ids
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.sampling = sampling
        self.random_offset = random_offset
        self.seed = seed
        # Require a full batch even at the largest offset, so that no epoch comes out empty.
        worst = seq_len - 1 if random_offset else 0
        per_batch = batch_size * seq_len + 1 if sampling == "random" else batch_size * (seq_len + 1)
        needed = per_batch + worst
        if len(ids) < needed:
            how = f"{sampling} sampling" + (" with a random offset" if random_offset else "")
            raise DataError(
                f"the text has {len(ids):,} tokens, but one batch of batch_size={batch_size} x "
                f"seq_len={seq_len} ({how}) needs at least {needed:,}; lower --batch-size or "
                "--seq-len, or give more text"
            )

    @property
    def carries_state(self) -> bool:
        """True when consecutive batches continue each other's rows (sequential sampling)."""
        return self.sampling == "sequential"

    def epoch_plan(self, epoch: int) -> EpochPlan:
        """The epoch's offset and (random sampling) window order; draws offset first, then the permutation."""
        rng = np.random.default_rng([self.seed, epoch])
        offset = int(rng.integers(0, self.seq_len)) if self.random_offset else 0
        order = rng.permutation(self._num_windows(offset)) if self.sampling == "random" else None
        return EpochPlan(offset, order)

    def _num_windows(self, offset: int) -> int:
        # Each window needs seq_len inputs plus the one extra target token after them.
        return (len(self.ids) - offset - 1) // self.seq_len

    def _row_len(self, offset: int) -> int:
        return (len(self.ids) - offset) // self.batch_size

    def num_batches(self, epoch: int) -> int:
        """Batches in this epoch (a partial last batch is dropped)."""
        return self._num_batches(self.epoch_plan(epoch).offset)

    def _num_batches(self, offset: int) -> int:
        if self.sampling == "random":
            return self._num_windows(offset) // self.batch_size
        return (self._row_len(offset) - 1) // self.seq_len

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches from number ``start`` on (to resume mid-epoch)."""
        plan = self.epoch_plan(epoch)
        B, T = self.batch_size, self.seq_len
        n = self._num_batches(plan.offset)
        if self.sampling == "random":
            assert plan.order is not None
            steps = np.arange(T + 1)
            for i in range(start, n):
                starts = plan.offset + plan.order[i * B : (i + 1) * B] * T  # (B,)
                yield _split(self.ids[starts[:, None] + steps])  # (B, T + 1)
        else:
            L = self._row_len(plan.offset)
            streams = self.ids[plan.offset : plan.offset + B * L].reshape(B, L)  # a view, no copy
            for i in range(start, n):
                yield _split(streams[:, i * T : (i + 1) * T + 1])  # (B, T + 1)


def _split(block: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T + 1) ids -> inputs and targets, each (B, T) int64."""
    block = block.astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(block[:, :-1])), torch.from_numpy(np.ascontiguousarray(block[:, 1:]))
