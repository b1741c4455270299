"""Run directories as a whole: creating one, checking a resume against it, loading a trained model."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from .config import RunConfig
from .data import Vocab
from .errors import CheckpointError, RnnlmError
from .models import RNNLM

# Fields that may change when a run is resumed: how long it goes on, where, and what it prints.
# Everything else defines the run; changing it would silently train a different model.
RESUMABLE = {
    "train": {
        "epochs",
        "max_steps",
        "time_budget",
        "device",
        "progress",
        "log_every",
        "pred_period",
        "pred_len",
        "prefixes",
        "pred_temperature",
        "eval_batch_size",
        "out",
        "save_every",
    },
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


def new_run_dir(out: str | None) -> Path:
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
            f"--out {path}: already holds a run; continue it with `rnnlm train --resume {path}` or choose another --out"
        )
    return path


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


def check_resume(saved: RunConfig, wanted: RunConfig) -> None:
    """Raise CheckpointError naming every setting that a resume may not change."""
    problems = []
    for section in ("data", "model", "train"):
        old, new = getattr(saved, section), getattr(wanted, section)
        for f in dataclasses.fields(old):
            if f.name in RESUMABLE.get(section, ()):
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
            model.load_state_dict(weights, strict=True)
        except RuntimeError as e:
            raise CheckpointError(
                f"the checkpoint does not fit the run's config.json ({str(e).splitlines()[0]}); "
                f"was the file copied from another run?"
            ) from None
    return model


def load_model(
    run_dir: str | Path, which: str = "best", device: str = "cpu"
) -> tuple[RNNLM, Vocab, RunConfig, dict[str, str]]:
    """Model (in eval mode, on device), vocabulary, config and checkpoint metadata of a run."""
    cfg, vocab = read_run(run_dir)
    path = ckpt.checkpoint_path(run_dir, which)
    weights, meta = ckpt.load_weights(path)
    model = build_model(cfg, vocab, weights).to(resolve_device(device))
    model.eval()
    meta = {**meta, "path": str(path)}
    return model, vocab, cfg, meta
