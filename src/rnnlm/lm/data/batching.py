"""Minibatches of (input, target) windows over one long token stream: random or sequential sampling.

With offset 0 the two samplers are exactly d2l's ``data_iter_random`` and ``data_iter_consecutive``.

Sequential partitioning cuts the stream into ``B`` rows and walks them ``T`` steps at a time, so row
``b`` of batch ``i + 1`` continues row ``b`` of batch ``i`` and the model may carry its state over::

    stream: a b c d e f g h i j k l m n o p q r s t u v w x      (B = 2, T = 3)
    rows:   a b c d e f g h i j k l
            m n o p q r s t u v w x
    batch 0: X = [a b c]   Y = [b c d]     batch 1: X = [d e f]   Y = [e f g]   ...
                 [m n o]       [n o p]              [p q r]       [q r s]

With ``variable_len`` (AWD-LSTM's variable-length truncated BPTT, sequential sampling only) each
batch's width is drawn afresh: ``seq_len`` with probability 0.95, else ``seq_len / 2``, then
N(that, 5), at least 5 steps. The rows are still walked end to end, so the state carried from batch
to batch still continues its row; only the places where backpropagation is cut move from epoch to
epoch, so that no position is always the first step of a window.

Under torchrun (``shard=(rank, world)``) every rank draws the same epoch plan and takes its own contiguous block
of each global batch's rows: with sequential sampling a block of streams (lanes) whose state it carries, with
random sampling its share of the batch's windows from the one permutation. The ranks' rows together are the
single process's batch, so every rank takes the same number of steps by construction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from rnnlm.core.errors import DataError
from rnnlm.lm.data.tokens import TokenFile, windows

SAMPLINGS = ("random", "sequential")


@dataclass(frozen=True)
class EpochPlan:
    """The random choices of one epoch."""

    offset: int  # first token used this epoch, in [0, seq_len)
    order: np.ndarray | None  # random sampling: the window permutation; None for sequential
    bounds: np.ndarray | None = None  # variable-length sequential batches: batch i covers steps bounds[i]:bounds[i+1]


class BatchSampler:
    """Yields batch-first ``(X, Y)`` int64 tensors of shape ``(batch_size, seq_len)``, ``Y`` = ``X`` shifted by one.

    An epoch's randomness comes only from ``np.random.default_rng([seed, epoch])``, so a resumed run
    regenerates the very same epoch and can skip the batches it has already done.
    """

    def __init__(
        self,
        ids: np.ndarray | TokenFile,
        batch_size: int,
        seq_len: int,
        sampling: str,
        random_offset: bool,
        seed: int,
        variable_len: bool = False,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if sampling not in SAMPLINGS:
            raise DataError(f"unknown sampling {sampling!r}; choose random or sequential")
        if variable_len and sampling != "sequential":
            raise DataError("variable-length batches need sequential sampling (the state runs along the rows)")
        if batch_size < 1 or seq_len < 1:
            raise DataError(f"batch size and sequence length must be at least 1, not {batch_size} and {seq_len}")
        ids = ids if isinstance(ids, TokenFile) else np.asarray(ids)  # a token file is read a batch at a time
        if ids.ndim != 1:
            raise DataError(f"token ids must form one 1-D stream, not an array of shape {ids.shape}")
        self.ids = ids
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.sampling = sampling
        self.random_offset = random_offset
        self.seed = seed
        self.variable_len = variable_len
        rank, world = shard
        if batch_size < world:
            raise DataError(
                f"--batch-size {batch_size} is the global batch, split over {world} ranks; give at least one row "
                f"per rank (--batch-size {world} or more)"
            )
        self.rows = slice(rank * batch_size // world, (rank + 1) * batch_size // world)  # this rank's block
        self._plans: dict[int, EpochPlan] = {}  # the last epochs' plans, each drawn once
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
        """The epoch's offset and (random sampling) window order, or (variable lengths) batch bounds;
        draws the offset first, then the permutation or the lengths."""
        if epoch in self._plans:
            return self._plans[epoch]
        rng = np.random.default_rng([self.seed, epoch])
        offset = int(rng.integers(0, self.seq_len)) if self.random_offset else 0
        order = rng.permutation(self._num_windows(offset)) if self.sampling == "random" else None
        bounds = self._variable_bounds(rng, self._row_len(offset) - 1) if self.variable_len else None
        plan = EpochPlan(offset, order, bounds)
        # Kept for this epoch and the one before: on a corpus of a few GB the window permutation takes seconds to
        # draw (and hundreds of MB), and the loop asks for the epoch's length more than once.
        self._plans = {**dict(list(self._plans.items())[-1:]), epoch: plan}
        return plan

    def _variable_bounds(self, rng: np.random.Generator, steps: int) -> np.ndarray:
        """Batch edges 0 = b_0 < b_1 < ... <= steps, widths drawn as AWD-LSTM does (module docstring)."""
        T, bounds = self.seq_len, [0]
        while True:
            base = T if rng.random() < 0.95 else T / 2
            width = max(5, int(rng.normal(base, 5)))
            if bounds[-1] + width > steps:
                break
            bounds.append(bounds[-1] + width)
        if len(bounds) == 1:  # a text shorter than one drawn width: one batch of what there is
            bounds.append(min(T, steps))
        return np.asarray(bounds)

    def _num_windows(self, offset: int) -> int:
        # Each window needs seq_len inputs plus the one extra target token after them.
        return (len(self.ids) - offset - 1) // self.seq_len

    def _row_len(self, offset: int) -> int:
        return (len(self.ids) - offset) // self.batch_size

    def num_batches(self, epoch: int) -> int:
        """Batches in this epoch (a partial last batch is dropped)."""
        plan = self.epoch_plan(epoch)
        if plan.bounds is not None:
            return len(plan.bounds) - 1
        return self._num_batches(plan.offset)

    def _num_batches(self, offset: int) -> int:
        if self.sampling == "random":
            return self._num_windows(offset) // self.batch_size
        return (self._row_len(offset) - 1) // self.seq_len

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches from number ``start`` on (to resume mid-epoch)."""
        plan = self.epoch_plan(epoch)
        B, T = self.batch_size, self.seq_len
        n = self.num_batches(epoch)
        if self.sampling == "random":
            assert plan.order is not None
            for i in range(start, n):
                starts = plan.offset + plan.order[i * B : (i + 1) * B][self.rows] * T  # (B,)
                yield _split(windows(self.ids, starts, T + 1))  # (B, T + 1)
        else:
            L = self._row_len(plan.offset)
            rows = plan.offset + np.arange(B)[self.rows] * L  # where each of this rank's streams starts
            edges = plan.bounds if plan.bounds is not None else np.arange(n + 1) * T
            for i in range(start, n):
                yield _split(windows(self.ids, rows + edges[i], int(edges[i + 1] - edges[i]) + 1))  # (B, width + 1)


def _split(block: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T + 1) ids -> inputs and targets, each (B, T) int64."""
    block = block.astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(block[:, :-1])), torch.from_numpy(np.ascontiguousarray(block[:, 1:]))
