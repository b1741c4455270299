"""``--size auto``: the width of the model a time budget can train well on this machine.

A recipe tuned on one CPU is the wrong size for another: char-cpu's 2 x 448 LSTM took 3,539 steps in 300 s on
a Zen 5 with bfloat16 matmuls, and 716 on a Zen 3 without them, where a smaller model did better
(bench/notes/lm_quality.md). So with ``--size auto`` (the default of char-cpu) a run first times its own
training step at each candidate width, on the real data, engine and precision, and takes the widest width
whose predicted number of steps in the time budget reaches ``TARGET_STEPS``:

    steps(w) = budget / seconds per step at width w;   size = the widest w with steps(w) >= TARGET_STEPS,
                                                        or the narrowest when none reaches it.

The candidates are timed from the narrowest up, and timing stops at the first one that falls short (wider ones
are slower), so a slow machine times two or three small models and a fast one all of them. The probe takes a
few seconds, which count against the budget: the trainer starts its clock that much later (``spent``).

When the choice is a small size (XS, S) and the budget reads the training text at most FEW_EPOCHS times at the
predicted speed, dropout is turned off as well (NO_DROPOUT; settings given explicitly stay): a short run of a small
model gains more from all its units than from regularization, while a small text read many times needs it.

The choice is a named size (``SIZES``) written into the run's config.json in place of ``auto``, with the timings
under ``"resolved"`` and every setting it changed, so ``--config`` of that run repeats it exactly on any machine.
Without a time budget there is nothing to size for: ``auto`` takes ``REFERENCE_SIZE``, the width char-cpu was
tuned at.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from rnnlm.lm.config import AUTO_SIZE, FEW_EPOCHS, NO_DROPOUT, REFERENCE_SIZE, SIZES, SMALL_SIZES, apply_size

# The fewest steps a size must be able to take in the budget. Calibrated at 300 s on tinyshakespeare
# (bench/notes/lm_quality.md, "Sizing"): on a Zen 4, S at 3,012 steps beat XS at 3,994 (bfloat16), and S at 2,622
# beat XS at 3,798 (float32, AVX2 kernels); on a Zen 5, XL at 3,539 steps beat 512 units at about 2,700.
TARGET_STEPS = 2500
# Per candidate: untimed steps for at least WARMUP_S seconds (and WARMUP_STEPS steps: kernel creation, the
# allocator's first sizes), then TIMED_STEPS timed ones, of which the median counts. Fewer untimed steps (a count
# of 3) predicted 2,227 steps in 300 s for a float32 size that then took 2,622.
WARMUP_STEPS, WARMUP_S, TIMED_STEPS = 3, 1.0, 5


@dataclass(frozen=True)
class SizeChoice:
    """What ``--size auto`` chose, and the timings it chose from (for the header and config.json)."""

    size: str
    step_s: dict[str, float]  # seconds per training step, per timed size
    budget_s: float
    probe_s: float  # wall time of the whole probe, counted against the budget

    @property
    def hidden(self) -> int:
        return SIZES[self.size]

    def predicted_steps(self, size: str) -> int:
        return int(self.budget_s / self.step_s[size])

    def describe(self) -> str:
        """One line for the run header."""
        timed = ", ".join(f"{s} {SIZES[s]}: {self.predicted_steps(s):,}" for s in self.step_s)
        return (
            f"size: auto -> {self.size} (hidden {self.hidden}), the widest whose predicted steps in "
            f"{self.budget_s:g} s reach {TARGET_STEPS:,} | steps predicted: {timed} | probe {self.probe_s:.1f} s"
        )

    def record(self) -> dict[str, str]:
        """config.json's "resolved" entries (strings, as that record holds)."""
        return {
            "size": self.size,
            "size_rule": f"widest of {'/'.join(SIZES)} with budget / step time >= {TARGET_STEPS} steps",
            "size_step_s": ", ".join(f"{s} {t:.4f}" for s, t in self.step_s.items()),
            "size_probe_s": f"{self.probe_s:.2f}",
        }


def choose_size(step_s: Mapping[str, float], budget_s: float, target_steps: int = TARGET_STEPS) -> str:
    """The widest timed size whose predicted steps in ``budget_s`` reach ``target_steps``, else the narrowest.

    ``step_s`` maps sizes to seconds per step (any subset of SIZES, as the probe leaves it)."""
    if not step_s:
        raise ValueError("no size was timed")
    timed = sorted(step_s, key=SIZES.__getitem__)
    fits = [s for s in timed if budget_s / step_s[s] >= target_steps]
    return fits[-1] if fits else timed[0]


def time_step(cfg: Any, corpus: Any, device: torch.device, hidden: int) -> float:
    """Seconds per training step of cfg's model at width ``hidden``: the real step (Trainer.train_step, with the
    run's optimizer, regularization, engine and precision) on the run's own first batches, on a throwaway model."""
    from rnnlm.lm.model import RNNLM
    from rnnlm.lm.task import LanguageModelTask
    from rnnlm.training.trainer import Trainer

    c = copy.deepcopy(cfg)
    c.model.hidden, c.model.size = hidden, None
    model = RNNLM(c.model, len(corpus.vocab)).to(device)
    task = LanguageModelTask(corpus, c.train, c.eval, device)
    trainer = Trainer(model, task, c.train, log=lambda _: None)
    batches = iter(task.batches(0))

    def step() -> None:
        batch = next(batches, None)
        if batch is None:  # a text shorter than the probe: go round again
            batch = next(iter(task.batches(0)))
        trainer.train_step(batch)

    t0, done = time.perf_counter(), 0
    while done < WARMUP_STEPS or time.perf_counter() - t0 < WARMUP_S:
        step()
        done += 1
    times = []
    for _ in range(TIMED_STEPS):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def resolve(cfg: Any, corpus: Any, device: torch.device, log: Callable[[str], None]) -> SizeChoice | None:
    """Make ``--size auto`` concrete in ``cfg.model`` (the size, its width and its settings, but for those given
    explicitly) for a new run: by the probe when a time budget bounds the run, else REFERENCE_SIZE. Returns the
    probe's choice (None when nothing was timed)."""
    from rnnlm.training import distributed

    m = cfg.model
    if m.size != AUTO_SIZE:
        return None
    given = getattr(m, "given", frozenset())  # the settings given explicitly, which a size leaves alone
    if cfg.train.time_budget is None:
        apply_size(m, REFERENCE_SIZE, given)
        return None
    log(f"size: timing the training step at each size for --time-budget {cfg.train.time_budget:g} s ...")
    several = distributed.active()
    choice = probe(cfg, corpus, device, time_step, agree=distributed.broadcast if several else lambda stop: stop)
    if several:  # every rank trains rank 0's choice
        choice = distributed.broadcast(choice)
    epochs = choice.predicted_steps(choice.size) * cfg.train.batch_size * cfg.train.seq_len / max(1, len(corpus.train))
    few = choice.size in SMALL_SIZES and epochs <= FEW_EPOCHS
    apply_size(m, choice.size, given, NO_DROPOUT if few else None)
    if few:
        log(f"size: {choice.size} reads the text about {epochs:.1f} times in the budget: no dropout")
    return choice


def probe(
    cfg: Any,
    corpus: Any,
    device: torch.device,
    timer: Callable[[Any, Any, torch.device, int], float] = time_step,
    agree: Callable[[bool], bool] = lambda stop: stop,
) -> SizeChoice:
    """Time the candidate sizes from the narrowest up, stopping at the first that cannot reach TARGET_STEPS in
    cfg's time budget, and choose (``choose_size``). The global random state is left as it was, so the run
    that follows starts exactly as a run given the settings chosen does. ``agree`` makes several ranks
    (torchrun) stop timing at the same size: each rank times its own steps; rank 0 decides."""
    budget = float(cfg.train.time_budget)
    t0 = time.perf_counter()
    step_s: dict[str, float] = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for name in sorted(SIZES, key=SIZES.__getitem__):
            step_s[name] = timer(cfg, corpus, device, SIZES[name])
            if agree(budget / step_s[name] < TARGET_STEPS):
                break
    size = choose_size(step_s, budget)
    return SizeChoice(size, step_s, budget, time.perf_counter() - t0)
