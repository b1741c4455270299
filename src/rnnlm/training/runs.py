"""What every kind of run shares (language models, taggers, frame models): the device, a new run directory,
the resume check, the last checkpoint, and ``fit_run``, which trains a model on a task with the standard
callbacks. Each use assembles its own run from these (lm/run.py, tagging/run.py, frames/run.py)."""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import CheckpointError, RnnlmError
from rnnlm.training.callbacks import BestCheckpoint, EarlyStopping, LastCheckpoint, MetricsLogger
from rnnlm.training.config import TrainConfig
from rnnlm.training.trainer import INTERRUPTED, Trainer

# TrainConfig fields that a resume may change: how long the run goes on, where, and what it prints. Everything
# else defines the run; changing it would silently train a different model. Each use adds its own.
RESUMABLE_TRAIN = frozenset(
    {"epochs", "max_steps", "time_budget", "device", "threads", "progress", "log_every", "out", "save_every"}
)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; asking for CUDA without it is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RnnlmError(
            f"--device {name}: this torch build sees no CUDA device "
            f"(torch {torch.__version__}); use --device cpu, or install a CUDA build of torch"
        )
    return device


def new_run_dir(out: str | None, command: str = "rnnlm train") -> Path:
    """The path for a new run; refuses one that already holds a run, so nothing is overwritten.

    The directory itself is made by the caller once the run is known to start, so that a run
    that fails its checks leaves no empty directory behind.
    """
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{int(now * 1000) % 1000:03d}"
    path = Path(out) if out else Path("runs") / stamp
    if path.exists() and not path.is_dir():
        raise RnnlmError(f"--out {path}: exists and is not a directory")
    if (path / ckpt.CONFIG).exists():
        raise RnnlmError(
            f"--out {path}: already holds a run; continue it with `{command} --resume {path}` or choose another --out"
        )
    check_writable(path)
    return path


def check_writable(path: Path, flag: str = "--out") -> None:
    """Raise RnnlmError unless a directory can be made at ``path``: checked before data are read and
    encoded, so that a run that could not save fails in a second rather than after the long work.

    The nearest existing folder on the way must be a directory where a directory can be made; this is
    tried with a temporary one, removed at once, since permission bits do not tell (root, read-only mounts,
    /proc). Nothing is left behind.
    """
    path = path.expanduser().absolute()
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise RnnlmError(f"{flag} {path}: {parent} is a file, not a directory; choose another {flag}")
    try:
        probe = tempfile.mkdtemp(prefix=".rnnlm-probe-", dir=parent)
    except OSError as e:
        raise RnnlmError(
            f"{flag} {path}: cannot create a directory in {parent} ({e.strerror or e}); choose a writable {flag}"
        ) from None
    os.rmdir(probe)


def check_resume(saved: Any, wanted: Any, resumable: dict[str, set[str]]) -> None:
    """Raise CheckpointError naming every setting that a resume may not change.

    ``saved`` and ``wanted`` are run configs of one kind (a dataclass of config sections); ``resumable``
    names, per section, the fields that may change.
    """
    problems = []
    for section in (s.name for s in dataclasses.fields(saved)):
        old, new = getattr(saved, section), getattr(wanted, section)
        for f in dataclasses.fields(old):
            if f.name in resumable.get(section, ()):
                continue
            a, b = getattr(old, f.name), getattr(new, f.name)
            if a != b and not (section == "data" and f.name == "level" and b is None):
                problems.append(f"--{f.name.replace('_', '-')} is {b!r} but the run used {a!r}")
    if problems:
        raise CheckpointError(
            "cannot resume: " + "; ".join(problems) + ". A resume continues the same run; "
            "only the length of training, the device and logging may change. "
            "Start a new run with another --out instead."
        )


# -- what every kind of run shares (language models, taggers, frame models) ------------------------------


def member_seed(seed: int, member: int) -> int:
    """The seed of an ensemble's member: member 0 trains with the run's seed, member i > 0 with a seed drawn
    from (seed, i), so that the members of runs with neighbouring seeds (a benchmark's 0..4) never coincide."""
    return seed if member == 0 else int(np.random.SeedSequence([seed, member]).generate_state(1)[0])


def resume_checkpoint(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights and trainer state of a run's last checkpoint, with clear errors when it cannot resume."""
    if not (run_dir / ckpt.LAST).is_file() and (run_dir / ckpt.LEGACY_STATE).is_file():
        raise CheckpointError(f"{run_dir}: made by rnnlm 0.1, which this version cannot resume; start a new run")
    weights, _, state = ckpt.load_checkpoint(ckpt.checkpoint_path(run_dir, "last"))
    if state is None:
        raise CheckpointError(f"{run_dir / ckpt.LAST}: holds no trainer state, so the run cannot be resumed")
    return weights, state


def fit_run(
    model: torch.nn.Module,
    task: Any,
    tc: TrainConfig,
    run_dir: Path,
    write_files: Callable[[], None],
    header: list[str],
    log: Callable[[str], None],
    state: dict[str, Any] | None = None,
    command: str = "rnnlm train",
    extra_callbacks: Sequence[Any] = (),
) -> tuple[Trainer, str, dict[str, Any]]:
    """Train ``model`` on ``task`` in ``run_dir`` with the standard callbacks; returns the trainer, why it
    stopped and the last metrics line.

    Everything that can fail on bad settings happens before the run directory is made; ``write_files``
    then writes the run's config and side files (vocabulary, statistics). ``state`` resumes exactly;
    ``command`` is what the user types to resume, for the message after Ctrl-C. ``extra_callbacks`` join the
    standard ones before the last checkpoint's, so that a stop they request is saved (an ensemble's workers).
    """
    show = tc.progress and sys.stderr.isatty()
    bar = tqdm(disable=not show, unit="step", dynamic_ncols=True, leave=False)

    def say(msg: str) -> None:  # the caller's log, without tearing the progress bar
        with bar.external_write_mode():
            log(msg)

    logger = MetricsLogger(run_dir, tc.log_every)
    monitor = getattr(task, "monitor", ("val_loss", "min"))  # (metric, "min"|"max") that picks the best weights
    callbacks: list[Any] = [logger, BestCheckpoint(run_dir, *monitor)]
    if tc.patience:
        callbacks.append(EarlyStopping(tc.patience, *monitor))
    callbacks += [*task.callbacks(), *extra_callbacks]
    callbacks += [LastCheckpoint(run_dir, tc.save_every, tc.log_every), _Progress(bar)]
    trainer = Trainer(model, task, tc, callbacks, log=say)
    bar.reset(total=trainer.total_steps())
    if state is not None:
        trainer.load_state_dict(state)
        dropped = ckpt.truncate_metrics(run_dir, trainer.step)
        if dropped:
            log(f"resume: dropped {dropped} metrics line(s) logged after the last save (step {trainer.step})")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_files()
    for line in header:
        log(line)
    if state is not None:
        log(f"resumed at step {trainer.step}, epoch {trainer.epoch_progress()}")
        if trainer.stopping():
            log(
                f"nothing to do: the run already meets its limits (--epochs {tc.epochs}, --max-steps {tc.max_steps}, "
                f"--time-budget {tc.time_budget}); raise one of them (or pass none) to train further"
            )
    try:
        reason = trainer.fit()
    finally:
        bar.close()
    log(f"stopped: {reason} at step {trainer.step}, epoch {trainer.epoch_progress()}")
    if reason == INTERRUPTED:
        raise KeyboardInterrupt(
            f"saved {run_dir / ckpt.LAST} at step {trainer.step}; continue with: {command} --resume {run_dir}"
        )
    return trainer, reason, logger.last


class _Progress:
    """Moves the progress bar (shown only on a terminal) one step at a time."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def on_step(self, trainer: Trainer, loss: float, count: int) -> None:
        if self.bar.n == 0 and trainer.step > 1:
            self.bar.update(trainer.step - 1)  # a resumed run starts where it stopped
        self.bar.update(1)
        if isinstance(loss, float) or trainer.step % 50 == 0:  # a device tensor (CUDA graph): read it rarely
            self.bar.set_postfix(epoch=trainer.epoch + 1, loss=f"{float(loss):.3f}", refresh=False)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters, each shared (tied) tensor counted once."""
    return sum(p.numel() for p in model.parameters())
