"""Run directories and checkpoints, written atomically so that a crash never corrupts earlier work.

A run directory holds:

    config.json        the resolved RunConfig (written once, when the run starts)
    vocab.json         the vocabulary (written once)
    metrics.jsonl      one JSON object per logged step
    last.safetensors   weights at the latest save (metadata: step, epoch, ...)
    last.state.pt      everything else needed to resume exactly: optimizer, RNG, sampler position,
                       carried hidden state (a torch.save of plain values, loadable with weights_only=True)
    best.safetensors   weights with the lowest validation loss so far (only when there is validation data)

Every file is written to a temporary name in the same directory, flushed to disk and then renamed over
the old one, so a reader sees either the old or the new file, never a half-written one.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .atomic import atomic_write_bytes
from .errors import CheckpointError

CONFIG = "config.json"
VOCAB = "vocab.json"
METRICS = "metrics.jsonl"
LAST = "last.safetensors"
LAST_STATE = "last.state.pt"
BEST = "best.safetensors"


def read_json(path: str | Path, what: str) -> Any:
    """Read a JSON file of a run directory, turning every failure into a CheckpointError."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{path}: missing {what}; is {path.parent} a run directory made by `rnnlm train`?"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: the {what} is corrupt ({e}); the run directory cannot be used as is") from None


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Save model weights as safetensors with string metadata, atomically."""
    # safetensors refuses tensors that share memory (tied weights): store each one as its own copy.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    atomic_write_bytes(path, st_save(tensors, metadata={k: str(v) for k, v in metadata.items()}))


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load weights and metadata saved by save_weights (always onto the CPU)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({e}); use the run's other checkpoint "
            f"(--checkpoint last/best) or train again"
        ) from None
    return tensors, metadata


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Save the resumable trainer state (plain values and tensors only), atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: str | Path) -> dict[str, Any]:
    """Load the trainer state; never unpickles arbitrary objects (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing trainer state; this run cannot be resumed (was it ever saved?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path}: corrupt or truncated trainer state ({type(e).__name__}: {e})") from None


def checkpoint_path(run_dir: str | Path, which: str = "best") -> Path:
    """Resolve 'best', 'last' or an explicit .safetensors path; 'best' falls back to 'last'."""
    run_dir = Path(run_dir)
    if which not in ("best", "last"):
        path = Path(which)
        if not path.is_absolute() and not path.exists():
            path = run_dir / which
        if not path.is_file():
            raise CheckpointError(f"{which}: no such checkpoint file")
        return path
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    best, last = run_dir / BEST, run_dir / LAST
    if which == "best" and best.is_file():
        return best
    if last.is_file():
        return last
    raise CheckpointError(
        f"{run_dir}: no checkpoint yet ({LAST} is missing); train first with `rnnlm train --out {run_dir}`"
    )


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every line of a run's metrics.jsonl; a damaged line is an error that names it."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        raise CheckpointError(f"{path}: no metrics yet; is {run_dir} a run directory made by `rnnlm train`?")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}, line {n}: not JSON ({e})") from None
    return rows


def truncate_metrics(run_dir: str | Path, step: int) -> int:
    """Drop metrics lines after `step` (and any damaged line), so a resume does not repeat them.

    After a crash the last saved state can be older than the last metrics line; the resumed run
    logs those steps again. Returns how many lines were dropped.
    """
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("step", 0) <= step:
            kept.append(line)
    if len(kept) != len(lines):
        atomic_write_bytes(path, "".join(x + "\n" for x in kept).encode("utf-8"))
    return len(lines) - len(kept)
