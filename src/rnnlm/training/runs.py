"""Runs as a whole: setting one up and training it, resuming it, and loading what it trained.

``train(cfg)`` is where a run is assembled: config checks, data, model, task, callbacks, trainer and
the run directory. The loop itself is in trainer.py.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.atomic import atomic_write_json
from rnnlm.core.errors import CheckpointError, RnnlmError
from rnnlm.core.vocab import Vocab
from rnnlm.lm.config import RunConfig, TrainConfig
from rnnlm.lm.data.dataset import load_corpus
from rnnlm.lm.model import RNNLM, count_parameters, upgrade_state_dict
from rnnlm.lm.task import LanguageModelTask
from rnnlm.recurrent.engines import resolve_engine_name, resolve_matmul_dtype
from rnnlm.training.callbacks import BestCheckpoint, EarlyStopping, LastCheckpoint, MetricsLogger
from rnnlm.training.trainer import INTERRUPTED, Trainer

# Fields that may change when a run is resumed: how long it goes on, where, and what it prints.
# Everything else defines the run; changing it would silently train a different model.
RESUMABLE = {
    "train": {
        "epochs",
        "max_steps",
        "time_budget",
        "device",
        "threads",
        "progress",
        "log_every",
        "pred_period",
        "pred_len",
        "prefixes",
        "pred_temperature",
        "out",
        "save_every",
    },
    "model": {"impl", "matmul_dtype"},  # every engine, at either precision, reads the same weights
    "eval": {"eval_batch_size", "eval_seq_len"},
}


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


def read_run(run_dir: str | Path) -> tuple[RunConfig, Vocab]:
    """The config and vocabulary of a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    raw = ckpt.read_json(run_dir / ckpt.CONFIG, "run config")
    try:
        cfg = RunConfig.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{run_dir / ckpt.CONFIG}: not a valid run config ({e})") from None
    try:
        vocab = Vocab.load(run_dir / ckpt.VOCAB)
    except RnnlmError as e:
        raise CheckpointError(str(e)) from None
    return cfg, vocab


def check_resume(saved: Any, wanted: Any, resumable: dict[str, set[str]] = RESUMABLE) -> None:
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


def merge_resume(saved: RunConfig, overrides: dict[str, dict[str, Any]]) -> RunConfig:
    """The saved config with explicit overrides applied (each checked by check_resume)."""
    d = saved.to_dict()
    for section, values in overrides.items():
        d[section].update(values)
    wanted = RunConfig.from_dict(d)
    check_resume(saved, wanted)
    return wanted


def build_model(cfg: RunConfig, vocab: Vocab, weights: dict[str, torch.Tensor] | None = None) -> RNNLM:
    """A model for the config; with weights, loaded strictly, with a clear error on a mismatch."""
    model = RNNLM(cfg.model, len(vocab))
    if weights is not None:
        try:
            model.load_state_dict(upgrade_state_dict(weights, cfg.model), strict=True)
        except (RuntimeError, KeyError) as e:
            raise CheckpointError(
                f"the checkpoint does not fit the run's config.json ({str(e).splitlines()[0]}); "
                f"was the file copied from another run?"
            ) from None
    return model


def load_model(
    run_dir: str | Path, which: str = "best", device: str = "cpu", impl: str | None = None
) -> tuple[RNNLM, Vocab, RunConfig, dict[str, str]]:
    """Model (in eval mode, on device), vocabulary, config and checkpoint metadata of a run.

    ``impl`` computes the recurrence with another engine than the run was trained with.
    """
    cfg, vocab = read_run(run_dir)
    if impl is not None:
        cfg.model.impl = impl
        cfg.model.check()
    path = ckpt.checkpoint_path(run_dir, which)
    weights, meta = ckpt.load_weights(path)
    model = build_model(cfg, vocab, weights).to(resolve_device(device))
    model.eval()
    meta = {**meta, "path": str(path)}
    return model, vocab, cfg, meta


@dataclass
class TrainResult:
    """What a finished (or stopped) run leaves behind."""

    run_dir: Path
    model: RNNLM  # the weights at the end of training (last.safetensors)
    vocab: Vocab
    config: RunConfig
    metrics: dict[str, Any]  # the last line written to metrics.jsonl
    stop_reason: str


def train(cfg: RunConfig, resume: str | Path | None = None, log: Callable[[str], None] = print) -> TrainResult:
    """Train a language model as cfg says (a new run), or continue the run in `resume` exactly where it stopped.

    cfg is not modified. Every setting is checked before anything is read or written. For a resume,
    cfg must equal the run's saved config except for the fields in RESUMABLE (see merge_resume).
    """
    cfg = copy.deepcopy(cfg)
    cfg.check()
    state = weights = None
    if resume is not None:
        run_dir = Path(resume)
        saved, vocab = read_run(run_dir)
        check_resume(saved, cfg)
        weights, state = resume_checkpoint(run_dir)
        corpus = load_corpus(saved.data, vocab)
        cfg.data, cfg.train.out = saved.data, str(run_dir)
    else:
        run_dir = new_run_dir(cfg.train.out)  # before the corpus is read: a bad --out fails at once
        corpus = load_corpus(cfg.data)
        cfg.data.level = corpus.level
        # Absolute paths in config.json, so that `--resume` and `rnnlm eval` work from any directory.
        for field in ("paths", "val_paths", "test_paths"):
            setattr(cfg.data, field, [str(Path(p).expanduser().absolute()) for p in getattr(cfg.data, field)])
        cfg.train.out = str(run_dir)
    device = resolve_device(cfg.train.device)
    cfg.model.matmul_dtype = resolve_matmul_dtype(cfg.model.matmul_dtype, device)  # config.json says what ran
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, corpus.vocab, weights).to(device)
    task = LanguageModelTask(corpus, cfg.train, cfg.eval, device)

    def write_files() -> None:
        atomic_write_json(run_dir / ckpt.CONFIG, cfg.to_dict())  # on a resume: the new limits
        if resume is None:
            corpus.vocab.save(run_dir / ckpt.VOCAB)

    m = cfg.model
    val = f"{len(corpus.val):,}" if corpus.val is not None else "none"
    engine = m.impl
    if m.impl == "auto":
        engine = f"auto: {resolve_engine_name('auto', m.embed == 0, device, m.cell, m.matmul_dtype)}"
    header = [
        f"data: {corpus.description} | {corpus.level} level, vocab {len(corpus.vocab):,} | "
        f"train {len(corpus.train):,} tokens, val {val}",
        f"model: {m.cell}, {m.layers} x {m.hidden}, embed {m.embed or 'one-hot'}, engine {engine} | "
        f"{count_parameters(model):,} parameters | device {device} | run {run_dir}",
    ]
    trainer, reason, metrics = fit_run(model, task, cfg.train, run_dir, write_files, header, log, state)
    return TrainResult(run_dir, model, corpus.vocab, cfg, metrics, reason)


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
