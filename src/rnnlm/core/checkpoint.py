"""Run directories and checkpoints, written atomically so that a crash never corrupts earlier work.

A run directory holds:

    config.json        the resolved RunConfig (written once, when the run starts)
    vocab.json         the vocabulary (written once)
    metrics.jsonl      one JSON object per logged step
    last.safetensors   the latest save: the weights, and under keys ``trainer.*`` plus the metadata
                       ``trainer`` everything else an exact resume needs (optimizer, RNG, position,
                       carried state). One file, so the pair can never disagree; no pickle anywhere.
    best.safetensors   weights with the lowest validation loss so far (only when there is validation data)

Every file is written to a temporary name in the same directory, flushed to disk and then renamed over
the old one, so a reader sees either the old or the new file, never a half-written one. Runs made by
rnnlm 0.1 kept the trainer state apart in ``last.state.pt``; their weights still load, but they
cannot be resumed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from rnnlm.core.atomic import atomic_write_bytes
from rnnlm.core.errors import CheckpointError

CONFIG = "config.json"
VOCAB = "vocab.json"
METRICS = "metrics.jsonl"
LAST = "last.safetensors"
LEGACY_STATE = "last.state.pt"  # rnnlm 0.1
BEST = "best.safetensors"
TRAINER_PREFIX = "trainer."  # keys of the trainer state inside last.safetensors; never a model key


# What a file of a run directory may hold at most, so that a crafted one cannot exhaust the memory: a config or
# side file is a few KB (a large vocabulary a few MB), a safetensors header a few MB even for an optimizer's state.
MAX_JSON_BYTES = 256 << 20
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on a header
# JSON errors: malformed text, bad UTF-8, and nesting deeper than Python's recursion limit (about 1,000 levels),
# which json.loads reports as RecursionError.
JSON_ERRORS = (json.JSONDecodeError, UnicodeDecodeError, RecursionError)


def read_json(path: str | Path, what: str) -> Any:
    """Read a JSON file of a run directory (at most MAX_JSON_BYTES), turning every failure into a CheckpointError."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read() if size <= MAX_JSON_BYTES else b""
    except FileNotFoundError:
        raise CheckpointError(
            f"{path}: missing {what}; is {path.parent} a run directory made by `rnnlm train`?"
        ) from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    if size > MAX_JSON_BYTES:
        raise CheckpointError(f"{path}: the {what} is larger than {MAX_JSON_BYTES >> 20} MB, the most rnnlm reads")
    try:
        return json.loads(data.decode("utf-8"))
    except JSON_ERRORS as e:
        raise CheckpointError(
            f"{path}: the {what} is corrupt ({_short(e)}); the run directory cannot be used as is"
        ) from None


def _short(e: BaseException) -> str:
    return "nested too deeply" if isinstance(e, RecursionError) else str(e)


def save_weights(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    metadata: dict[str, Any],
    trainer_state: dict[str, Any] | None = None,
) -> None:
    """Save weights (and, for an exact resume, the trainer state) as one safetensors file, atomically."""
    # safetensors refuses tensors that share memory (tied weights): store each one as its own copy.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    meta = {k: str(v) for k, v in metadata.items()}
    if trainer_state is not None:
        meta["trainer"] = json.dumps(_pack(trainer_state, TRAINER_PREFIX.rstrip("."), tensors))
    atomic_write_bytes(path, st_save(tensors, metadata=meta))


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, Any] | None]:
    """Weights, string metadata and the trainer state (None when the file has none), on the CPU."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__", {}) or {}
        skeleton = metadata.pop("trainer", None)
        trainer_state = None if skeleton is None else _unpack(json.loads(skeleton), tensors)
    except (SafetensorError, ValueError, KeyError, TypeError, AttributeError, *JSON_ERRORS) as e:
        # TypeError, AttributeError: a trainer state whose nodes are not what _pack writes (a crafted file)
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({_short(e)}); use the run's other checkpoint "
            f"(--checkpoint last/best) or train again"
        ) from None
    weights = {k: v for k, v in tensors.items() if not k.startswith(TRAINER_PREFIX)}
    return weights, metadata, trainer_state


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Weights and metadata of a checkpoint (always onto the CPU), without the trainer state."""
    weights, metadata, _ = load_checkpoint(path)
    return weights, metadata


def read_metadata(path: str | Path) -> dict[str, str]:
    """A checkpoint's string metadata (step, epoch, scores), read from its header alone: no tensor is loaded,
    so describing a large run stays quick. The trainer state is left out, as load_weights leaves it out."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size)) if 0 < size < MAX_HEADER_BYTES else None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except JSON_ERRORS:
        header = None
    metadata = header.get("__metadata__") or {} if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint (its header is not safetensors JSON of at most "
            f"{MAX_HEADER_BYTES:,} bytes, with string metadata); use the run's other checkpoint (--checkpoint "
            "last/best) or train again"
        )
    return {k: v for k, v in metadata.items() if k != "trainer"}


# Nested plain values (dicts with str or int keys, lists, tuples, numbers, strings, None) and tensors
# as JSON plus named tensors, so that an optimizer's state dict round-trips exactly without pickle.
def _pack(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"tensor": key}
    if isinstance(obj, dict):
        return {"items": [[k, _pack(v, f"{key}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        tag = "list" if isinstance(obj, list) else "tuple"
        return {tag: [_pack(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    raise TypeError(f"cannot save a {type(obj).__name__} in a checkpoint (at {key})")


def _unpack(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if not isinstance(node, dict):
        raise TypeError(f"a trainer-state node is a JSON object, not {type(node).__name__}")
    if "tensor" in node:
        return tensors[node["tensor"]]
    if "items" in node:
        return {k: _unpack(v, tensors) for k, v in node["items"]}
    if "list" in node:
        return [_unpack(v, tensors) for v in node["list"]]
    if "tuple" in node:
        return tuple(_unpack(v, tensors) for v in node["tuple"])
    return node["value"]


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
    """Every line of a run's metrics.jsonl; a damaged line is an error that names it, except a last line cut short
    (a process killed while appending it), which is left out, as a resume drops it."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        raise CheckpointError(f"{path}: no metrics yet; is {run_dir} a run directory made by `rnnlm train`?")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 at byte {e.start}; the file is damaged") from None
    lines = text.split("\n")
    rows = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except (json.JSONDecodeError, RecursionError) as e:
            if n == len(lines):  # the last line, without its newline: a write cut short (a kill, a full disk)
                break
            raise CheckpointError(f"{path}, line {n}: not JSON ({_short(e)})") from None
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
