"""How many intra-op threads a training step runs with: timed, not guessed, because a shared CPU decides.

On a quiet 2-core machine two threads nearly halve a large matmul. When another job holds a core,
every parallel region waits for a thread that is not running, and the same step takes two to four
times longer with two threads than with one (measured in bench/speed.py: a (1120, 256) x (256, 1027)
matmul, 8.6 ms with one thread, 17.9 ms with two). So the trainer times its own steps with each
candidate count now and then and runs the faster.

torch's thread count is process-wide, so the library only changes it inside a block that restores it
(``num_threads``, ``ThreadChooser.scope``), and ``Trainer.fit`` sets it once per change of count, not
twice per step.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads (None: leave torch's setting), then restore it."""
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class ThreadChooser:
    """Runs each step with the thread count that was fastest when last timed.

    ``setting`` n > 0 always uses n threads and 0 torch's default, so results are reproducible bit for
    bit. -1 times 1 thread against torch's default: the first step
    (warm-up) runs with the default, the next ``2 * trials`` alternate between the two, and the one
    with the lower median runs until ``every`` steps have passed; then they are timed again.
    """

    def __init__(self, setting: int = 0, every: int = 200, trials: int = 2) -> None:
        default = torch.get_num_threads()
        self.candidates = [setting] if setting > 0 else [default] if setting == 0 else sorted({1, default})
        self.every, self.trials = every, trials
        self.steps = 0
        self.chosen = self.candidates[-1]
        self._times: dict[int, list[float]] = {n: [] for n in self.candidates}
        self._scoped = False  # inside scope(): steps leave the count set
        self._outer = default  # the count scope() found, which it restores

    def _trial(self) -> int | None:
        """The candidate to time at this step, or None outside the timing steps."""
        k = self.steps % self.every - 1  # step 0 of a cycle runs as chosen (the very first warms up)
        if len(self.candidates) == 1 or not 0 <= k < self.trials * len(self.candidates):
            return None
        return self.candidates[k % len(self.candidates)]

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Run many steps inside this block: a step sets torch's thread count only when it differs from
        the current one and leaves it set, and the block restores the count it found on exit."""
        old, self._scoped, self._outer = torch.get_num_threads(), True, torch.get_num_threads()
        try:
            yield
        finally:
            self._scoped = False
            if torch.get_num_threads() != old:
                torch.set_num_threads(old)

    def outside(self) -> contextlib.AbstractContextManager:
        """Inside ``scope``: run the block (an evaluation) with the count the scope found, as it ran before."""
        return num_threads(self._outer if self._scoped else None)

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Run one training step inside this block (outside ``scope``, the count is restored after it)."""
        trial = self._trial()
        n = self.chosen if trial is None else trial
        t0 = time.perf_counter()
        if self._scoped:
            if torch.get_num_threads() != n:
                torch.set_num_threads(n)
            yield
        else:
            with num_threads(n):
                yield
        if trial is not None:
            self._times[trial].append(time.perf_counter() - t0)
            if all(len(v) == self.trials for v in self._times.values()):
                self.chosen = min(self.candidates, key=lambda n: statistics.median(self._times[n]))
                self._times = {n: [] for n in self.candidates}
        self.steps += 1
