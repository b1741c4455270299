"""The run lifecycle that every kind of run shares (language models, taggers, frame models), written once.

A use describes its runs with a small ``RunKind`` (its config class, side files, how to build its model, which
settings a resume may change, how ``--engine auto`` resolves for its input); the functions here do the rest:
``open_run`` reads and checks a run directory, ``begin`` starts a new run or a resume (read once, checked
once), ``resolve_run`` resolves the device, engine and matmul precision once at setup, ``write_config``
records them in config.json, ``checkpoint_path`` finds a checkpoint (an ensemble's final model too), ``load``
loads a model with any engine, and ``train_model`` trains one model on a task in one folder with the standard
callbacks. Each use's ``run.train(cfg, resume, log)`` returns a ``TrainResult``; the words for training are listed
in docs/architecture.md ("Names")."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.atomic import atomic_write_json, remove_stale_temporaries
from rnnlm.core.errors import CheckpointError, OutputError, RnnlmError
from rnnlm.core.fields import renamed_keyword
from rnnlm.core.lock import lock_folder
from rnnlm.training import distributed
from rnnlm.training.callbacks import BestCheckpoint, EarlyStopping, LastCheckpoint, MetricsLogger
from rnnlm.training.config import TrainConfig
from rnnlm.training.task import Task
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


# -- the run lifecycle, written once: a use describes its runs with a RunKind -------------------------------

MODEL, MEMBERS = "model.safetensors", "members"  # an ensemble (or refit) run's final model, its members' folders
RESOLVED = "resolved"  # config.json's record of what the settings resolved to on the machine that ran


@dataclass(frozen=True)
class RunKind:
    """What one use (language models, taggers, frame models) tells the shared run lifecycle about its runs.

    Everything else (reading and checking a run directory, merging and checking a resume, finding a checkpoint,
    loading a model with another engine, resolving the device, engine and precision) is written once, here.
    """

    noun: str  # what the use calls a run, for messages: "language-model run"
    command: str  # what trains one: "rnnlm tag train" (messages say how to resume or retrain)
    config: type  # the run config: check(), to_dict(), from_dict() (which raises ValueError/TypeError)
    resumable: Mapping[str, Collection[str]]  # per config section, the fields a resume may change
    read_side: Callable[[Path, Any], Any]  # (run_dir, config) -> the side files (vocabularies, classes)
    # (config, side, weights or None, extra) -> the model on the CPU, weights loaded strictly
    build_model: Callable[[Any, Any, dict[str, torch.Tensor] | None, Any], nn.Module]
    # (config, device) -> (the engine the recurrence runs with, the matmul precision): ``auto`` made concrete
    resolve_engine: Callable[[Any, torch.device], tuple[str, str]]
    # (run_dir, config, device) -> what the model reads beside its weights on a device (a tagger's character LMs)
    read_extra: Callable[[Path, Any, torch.device], Any] | None = None
    # (config) -> None: fill in what the settings leave to the data and make paths absolute, before a resume is
    # checked against the saved config (which holds them so)
    prepare: Callable[[Any], None] | None = None
    # whether config.json's model.matmul_dtype becomes the resolved precision, so that a resume anywhere continues
    # at the precision the run trained at (language models); otherwise the setting stays as given (a tagger's
    # ``auto`` then lets ``--engine scratch``, which multiplies in float32 only, load it) and the record says
    pin_matmul_dtype: bool = False

    @property
    def format(self) -> str:
        """config.json's "format" for this kind of run."""
        return str(self.config().to_dict()["format"])


_KINDS: dict[str, RunKind] = {}  # format -> kind, for a message that names what a folder holds


def register_kind(kind: RunKind) -> RunKind:
    """Make ``kind`` known by its config format (so that opening its run as another kind says what it is)."""
    _KINDS[kind.format] = kind
    return kind


@dataclass
class Run:
    """A run directory as read from disk: its config (as saved), side files and the last resolved settings."""

    dir: Path
    config: Any
    side: Any
    resolved: dict[str, str] = field(default_factory=dict)  # empty for runs made before it was recorded


def config_from_json(raw: Any, kind: RunKind, path: Path) -> Any:
    """The run config in ``raw`` (a config.json's content) as ``kind``'s config class; a CheckpointError that
    names the file, and the kind of run it holds when it is another kind's."""
    if isinstance(raw, dict):
        fmt = raw.get("format")
        other = _KINDS.get(fmt) if isinstance(fmt, str) else None
        if other is not None and other is not kind:
            raise CheckpointError(
                f"{path}: holds a {other.noun} (made by `{other.command}`), not a {kind.noun}; "
                f"use the {other.command.rsplit(' ', 1)[0]} commands for it"
            )
        raw = {k: v for k, v in raw.items() if k != RESOLVED}
    try:
        cfg = kind.config.from_dict(raw)
        cfg.check()  # every setting's rule, as a new run checks it: a crafted size or rate stops here, named
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: not a {kind.noun} config ({e}); was it made by `{kind.command}`?") from None
    return cfg


def open_run(run_dir: str | Path | Run, kind: RunKind) -> Run:
    """Read and check a run directory: its config.json (as ``kind``'s config) and side files. A Run already
    opened comes back as it is (a resume that the CLI opened is not read again).

    Every failure is a CheckpointError that names the file: a missing folder, a damaged or foreign config,
    another kind of run, a missing or damaged side file.
    """
    if isinstance(run_dir, Run):
        return run_dir
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    path = run_dir / ckpt.CONFIG
    raw = ckpt.read_json(path, "run config")
    cfg = config_from_json(raw, kind, path)
    try:
        side = kind.read_side(run_dir, cfg)
    except CheckpointError:
        raise
    except (RnnlmError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{run_dir}: cannot read the {kind.noun}'s side files ({e})") from None
    resolved = raw.get(RESOLVED) if isinstance(raw.get(RESOLVED), dict) else {}
    return Run(run_dir, cfg, side, {str(k): str(v) for k, v in resolved.items()})


def with_overrides(cfg: Any, overrides: Mapping[str, Mapping[str, Any]]) -> Any:
    """``cfg`` with explicit settings ({section: {field: value}}) applied, read back through its from_dict."""
    d = cfg.to_dict()
    for section, values in overrides.items():
        d[section].update(values)
    return type(cfg).from_dict(d)


def resume_config(saved: Any, wanted: Any, kind: RunKind) -> Any:
    """The config a resume continues with: ``wanted`` (a whole config, or {section: {field: value}} overrides of
    ``saved``), checked against the saved one. Raises CheckpointError naming every setting a resume may not
    change. The one check of a resume: each use's ``train`` calls it, once."""
    if isinstance(wanted, Mapping):
        wanted = with_overrides(saved, wanted)
    check_resume(saved, wanted, {s: set(f) for s, f in kind.resumable.items()})
    return wanted


def begin(cfg: Any, resume: str | Path | Run | None, kind: RunKind) -> tuple[Any, Path, Run | None]:
    """Start a run's setup: (the config to run, the run directory, the opened run on a resume).

    ``cfg`` is copied and checked. A resume opens the run (unless given opened: read once) and checks ``cfg``
    against the saved config (once); a new run gets a new directory path, refused when it already holds a run,
    made later (see train_model). ``cfg.train.out`` becomes the run directory.
    """
    cfg = copy.deepcopy(cfg)
    cfg.check()
    distributed.setup(resolve_device(cfg.train.device))  # under torchrun: join the other ranks
    if kind.prepare is not None:
        kind.prepare(cfg)
    run = None
    if resume is not None:
        run = open_run(resume, kind)
        cfg = resume_config(run.config, cfg, kind)
        run_dir = run.dir
    else:  # several ranks: rank 0 names the directory (its clock's date), and all refuse one that holds a run
        run_dir = distributed.on_main(lambda: new_run_dir(cfg.train.out, kind.command))
    cfg.train.out = str(run_dir)
    return cfg, run_dir, run


@dataclass(frozen=True)
class Resolved:
    """What a run's machine-dependent settings stand for on the machine that runs it: resolved once, at setup,
    recorded in config.json (under "resolved") and printed in the header from there."""

    device: torch.device
    engine: str  # the engine that computes the recurrence (``--engine auto`` made concrete)
    matmul_dtype: str  # the precision of the recurrence's matmuls
    extra: Mapping[str, str] = field(default_factory=dict)  # a use's own decisions (a language model's --size auto)

    def to_dict(self) -> dict[str, str]:
        return {"device": str(self.device), "engine": self.engine, "matmul_dtype": self.matmul_dtype, **self.extra}

    def engine_text(self, setting: str) -> str:
        """The engine for a header: ``fused``, or ``auto: fused`` when the setting was auto."""
        return f"auto: {self.engine}" if setting == "auto" else self.engine


def resolve_run(cfg: Any, kind: RunKind) -> Resolved:
    """Resolve the run's device, engine and matmul precision once, at setup; write_config records the result.

    The settings keep the user's words (``auto`` moves with the run to another machine: a GPU run's engine does
    not exist on a CPU), except that a kind with ``pin_matmul_dtype`` gets the resolved precision written into
    ``cfg.model.matmul_dtype`` (a language model resumes at the precision it trained at, on any machine)."""
    device = distributed.setup(resolve_device(cfg.train.device))  # under torchrun on GPUs: this rank's GPU
    engine, matmul_dtype = kind.resolve_engine(cfg, device)
    if kind.pin_matmul_dtype:
        cfg.model.matmul_dtype = matmul_dtype
    return Resolved(device, engine, matmul_dtype)


def write_config(run_dir: Path, cfg: Any, resolved: Resolved | None = None) -> None:
    """Write config.json: the settings, and (under "resolved") what they resolved to where the run ran."""
    d = cfg.to_dict()
    if resolved is not None:
        d[RESOLVED] = {**resolved.to_dict(), "machine": machine_name(resolved.device)}
    atomic_write_json(run_dir / ckpt.CONFIG, d)


def machine_name(device: torch.device) -> str:
    """The machine a run trains on, for its model card: the CPU model and core count, and the GPU on CUDA."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    text = f"{cpu}, {os.cpu_count()} cores"
    if device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    return text


def checkpoint_path(run_dir: str | Path, which: str = "best", kind: RunKind | None = None) -> Path:
    """Resolve best, last or a path to a checkpoint file. In an ensemble (or refit) run best and last both name
    the final model.safetensors (a member's own are in members/<i>/); one whose members have not all finished is
    a clear error. Otherwise 'best' falls back to 'last' (a run without validation data)."""
    run_dir = Path(run_dir)
    command = kind.command if kind is not None else "rnnlm train"
    if which in ("best", "last"):
        if (run_dir / MODEL).is_file():
            return run_dir / MODEL
        if (run_dir / MEMBERS).is_dir():
            raise CheckpointError(
                f"{run_dir}: the ensemble has not finished training (no {MODEL}); continue it with {command} "
                f"--resume {run_dir}, or use one member with --checkpoint {MEMBERS}/0/best.safetensors"
            )
        if run_dir.is_dir() and not (run_dir / ckpt.LAST).is_file() and not (run_dir / ckpt.BEST).is_file():
            raise CheckpointError(
                f"{run_dir}: no checkpoint yet ({ckpt.LAST} is missing); train first with `{command} --out {run_dir}`"
            )
    return ckpt.checkpoint_path(run_dir, which)


@dataclass
class Loaded:
    """A run's model loaded for use: in eval mode on its device, with the run and the checkpoint's metadata."""

    run: Run
    model: nn.Module
    meta: dict[str, str]  # the checkpoint's metadata (step, epoch, scores) and its "path"
    device: torch.device
    extra: Any = None  # what kind.read_extra gave (a tagger's character LMs)


def load(
    run_dir: str | Path,
    kind: RunKind,
    checkpoint: str = "best",
    device: str = "cpu",
    engine: str | None = None,
    *,
    impl: str | None = None,
) -> Loaded:
    """Load a run's model: 'best' (the best validation score; 'last' without validation data), 'last', or a
    checkpoint file's path; in an ensemble run both name the final model. ``engine`` computes the recurrence with
    another engine than the run's own (every engine reads every run's weights); ``impl`` is its deprecated name."""
    engine = renamed_keyword(engine, impl, "impl", "engine", "runs.load")
    run = open_run(run_dir, kind)
    if engine is not None:
        run.config.model.engine = engine
        run.config.model.check()
    path = checkpoint_path(run.dir, checkpoint, kind)
    weights, meta = ckpt.load_weights(path)
    dev = resolve_device(device)
    extra = kind.read_extra(run.dir, run.config, dev) if kind.read_extra is not None else None
    check_model_size(kind, run, weights, extra, path)
    model = to_device(kind.build_model(run.config, run.side, weights, extra), dev)
    model.eval()
    return Loaded(run, model, {**meta, "path": str(path)}, dev, extra)


def check_model_size(kind: RunKind, run: Run, weights: dict[str, torch.Tensor], extra: Any, path: Path) -> None:
    """Refuse a config.json that describes a bigger model than the checkpoint holds, before any memory is taken.

    A run directory may come from someone else: its config.json could ask for ``hidden: 100000`` (160 GB of
    weights) beside a small checkpoint, and building that model would exhaust the memory before the weights are
    found not to fit. The model is first built on the ``meta`` device, which allocates nothing; the limit is the
    checkpoint itself: the model may hold at most as many values as the file's tensors, and at most as many layers
    or members as the file has tensors. A model that cannot be
    built on ``meta`` is left to the real build, which checks every weight's shape.
    """
    # Counts of modules (layers, members) are checked first: each brings at least one tensor to the checkpoint, and
    # a million of them would take long to build even on ``meta``.
    for section in dataclasses.fields(run.config):
        values = getattr(run.config, section.name)
        for name in ("layers", "ensemble"):
            count = getattr(values, name, None)
            if isinstance(count, int) and count > len(weights):
                raise CheckpointError(
                    f"{run.dir / ckpt.CONFIG}: {section.name}.{name} is {count:,}, but {path} holds only "
                    f"{len(weights):,} tensors; the config does not belong to this checkpoint (was it crafted?)"
                )
    try:
        with torch.device("meta"):
            skeleton = kind.build_model(run.config, run.side, None, extra)
    except RuntimeError as e:
        if "overflow" in str(e):  # sizes whose product does not fit in 64 bits (hidden: 10**15)
            raise CheckpointError(
                f"{run.dir / ckpt.CONFIG}: describes a model too large to build ({str(e).splitlines()[0]}); the "
                f"config does not belong to {path} (was it crafted?)"
            ) from None
        return
    except Exception:  # noqa: BLE001 - only a pre-check: the real build below reports what is wrong
        return
    want = sum(t.numel() for t in skeleton.state_dict().values())
    have = sum(t.numel() for t in weights.values())
    if want > have:
        raise CheckpointError(
            f"{run.dir / ckpt.CONFIG}: describes a model of {want:,} values, but {path} holds {have:,}; the config "
            "does not belong to this checkpoint (was one of them copied from another run, or crafted?)"
        )


def to_device(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a model to ``device``, through its own ``to_device`` where it has one (a tagger resolves its matmul
    precision for the device there)."""
    move = getattr(model, "to_device", None)
    return move(device) if callable(move) else model.to(device)


def load_strict(model: nn.Module, weights: dict[str, torch.Tensor]) -> nn.Module:
    """Load ``weights`` into ``model`` strictly; a CheckpointError when they do not fit its config."""
    try:
        model.load_state_dict(weights, strict=True)
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(
            f"the checkpoint does not fit the run's config.json ({str(e).splitlines()[0]}); "
            "was the file copied from another run?"
        ) from None
    return model


# -- what every kind of run shares (language models, taggers, frame models) ------------------------------


@dataclass
class TrainResult:
    """What each use's ``run.train(cfg, resume, log)`` returns: where the run is, the config it ran with (as
    config.json records it) and why training stopped. A use adds what only it has (a language model's weights and
    vocabulary, a frame run's reports)."""

    run_dir: Path
    config: Any
    stop_reason: str


def resume_checkpoint(run_dir: Path) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any] | None]:
    """The weights and trainer state of a run's last checkpoint, with clear errors when it cannot resume.

    A run stopped before its first save (killed between config.json and last.safetensors) has nothing to continue
    from: it starts again from step 0, as the new run it was, so (None, None), with the metrics lines it logged
    dropped. Without that, neither ``--resume`` nor a new run on the same ``--out`` could ever use the folder.
    """
    if not (run_dir / ckpt.LAST).is_file() and (run_dir / ckpt.LEGACY_STATE).is_file():
        raise CheckpointError(f"{run_dir}: made by rnnlm 0.1, which this version cannot resume; start a new run")
    if not (run_dir / ckpt.LAST).is_file() and (run_dir / ckpt.CONFIG).is_file():
        if distributed.is_main():
            ckpt.truncate_metrics(run_dir, 0)
        return None, None
    weights, _, state = ckpt.load_checkpoint(ckpt.checkpoint_path(run_dir, "last"))
    if state is None:
        raise CheckpointError(f"{run_dir / ckpt.LAST}: holds no trainer state, so the run cannot be resumed")
    return weights, state


def train_model(
    model: torch.nn.Module,
    task: Task,
    tc: TrainConfig,
    run_dir: Path,
    write_files: Callable[[], None],
    header: list[str],
    log: Callable[[str], None],
    state: dict[str, Any] | None = None,
    command: str = "rnnlm train",
    extra_callbacks: Sequence[Any] = (),
    spent: float = 0.0,
) -> tuple[Trainer, str, dict[str, Any]]:
    """Train one model (``model`` on ``task``) in ``run_dir`` with the standard callbacks (metrics, best and last
    checkpoints, early stopping, the task's own); returns the trainer, why it stopped and the last metrics line.

    Everything that can fail on bad settings happens before the run directory is made; ``write_files``
    then writes the run's config and side files (vocabulary, statistics). ``state`` resumes exactly;
    ``command`` is what the user types to resume, for the message after Ctrl-C. ``extra_callbacks`` join the
    standard ones before the last checkpoint's, so that a stop they request is saved (an ensemble's workers).
    ``spent``: seconds a new run already spent on its setup that its time budget counts (``--size auto``'s probe).
    """
    main = distributed.is_main()  # several ranks: rank 0 alone logs and writes files
    show = tc.progress and sys.stderr.isatty() and main
    bar = tqdm(disable=not show, unit="step", dynamic_ncols=True, leave=False)
    log = distributed.main_log(log)

    def say(msg: str) -> None:  # the caller's log, without tearing the progress bar
        with bar.external_write_mode():
            log(msg)

    logger = MetricsLogger(run_dir, tc.log_every)
    monitor = task.monitor  # (metric, "min"|"max") that picks the best weights
    callbacks: list[Any] = [logger, BestCheckpoint(run_dir, *monitor)]
    if tc.patience:
        callbacks.append(EarlyStopping(tc.patience, *monitor))
    callbacks += [*task.callbacks(), *extra_callbacks]
    callbacks += [LastCheckpoint(run_dir, tc.save_every, tc.log_every), _Progress(bar)]
    trainer = Trainer(model, task, tc, callbacks, log=say)
    bar.reset(total=trainer.total_steps())
    if state is not None:
        trainer.load_state_dict(state)
    else:
        trainer.elapsed_before = spent
    if main:
        make_run_dir(run_dir)
    # From here on this process alone writes the folder (rank 0 of several: the others write nothing).
    with locked(run_dir, command, log) if main else contextlib.nullcontext():
        if state is not None:
            dropped = ckpt.truncate_metrics(run_dir, trainer.step) if main else 0
            if dropped:
                log(f"resume: dropped {dropped} metrics line(s) logged after the last save (step {trainer.step})")
        if main:
            write_files()
        if distributed.world_size() > 1:
            header = [*header, f"ranks: {distributed.world_size()} processes ({torch.distributed.get_backend()})"]
        for line in header:
            log(line)
        if state is not None:
            log(f"resumed at step {trainer.step}, epoch {trainer.epoch_progress()}")
            if trainer.stopping():
                log(
                    f"nothing to do: the run already meets its limits (--epochs {tc.epochs}, --max-steps "
                    f"{tc.max_steps}, --time-budget {tc.time_budget}); raise one of them (or pass none) to train "
                    "further"
                )
        try:
            reason = trainer.fit()
        finally:
            bar.close()
    log(f"stopped: {reason} at step {trainer.step}, epoch {trainer.epoch_progress()}")
    distributed.barrier()  # several ranks: rank 0 has written the checkpoints that the others may read next
    if reason == INTERRUPTED:
        raise KeyboardInterrupt(
            f"saved {run_dir / ckpt.LAST} at step {trainer.step}; continue with: {command} --resume {run_dir}"
        )
    return trainer, reason, logger.last


def make_run_dir(run_dir: Path) -> None:
    """Make the run directory (and its parents); an OutputError when the disk or the permissions refuse."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot make the run directory {run_dir}: {e.strerror or e}; choose another --out") from None


@contextlib.contextmanager
def locked(run_dir: Path, command: str, log: Callable[[str], None]) -> Iterator[None]:
    """Hold the run directory's lock (core/lock.py) for the duration, so that a second process on the same run gets
    a clear error instead of mixing its checkpoints with this one's. A lock left by a killed process is taken over
    (and said so), with the temporary files its last write left behind."""
    with lock_folder(run_dir, command) as held:
        if held.count == 1:
            removed = remove_stale_temporaries(run_dir)
            if held.stale:
                log(
                    f"{run_dir}: process {held.stale.get('pid', '?')} (started {held.stale.get('started', '?')}) "
                    f"ended without releasing the run; taking it over"
                    + (f" and removing {len(removed)} unfinished temporary file(s)" if removed else "")
                )
        yield


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
