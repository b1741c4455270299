"""What ``rnnlm info`` shows of every kind of run (language model, tagger, frame model): its checkpoints, its last
metrics line, an ensemble's members and final model, and the files present. Each use adds what only it knows
(lm/info.py, tagging/info.py, frames/info.py) and the command line picks the use by config.json's format.

A damaged file is reported in place (``{"error": ...}``) rather than failing the whole description: info is
what a user runs to find out what is wrong with a run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import RnnlmError
from rnnlm.training.config import TrainConfig
from rnnlm.training.runs import MEMBERS, MODEL

FINAL = MODEL  # an ensemble run's final model: every member's weights together (runs.py)

Rows = list[tuple[str, str]]


def numbers(meta: dict[str, str]) -> dict[str, Any]:
    """Checkpoint metadata (strings in the file) with numbers as numbers."""
    out: dict[str, Any] = {}
    for k, v in meta.items():
        try:
            out[k] = int(v)
        except ValueError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def in_place(read: Callable[[], Any]) -> Any:
    """``read()``, or ``{"error": message}`` when it raises a user-facing error."""
    try:
        return read()
    except RnnlmError as e:
        return {"error": str(e)}


def checkpoint_info(path: Path) -> dict[str, Any] | None:
    """A checkpoint's metadata (step, epoch, the score it was chosen by) as numbers; None when there is no file."""
    if not path.is_file():
        return None
    first = {"step": 0, "epoch": 1}  # then the rest by name: the file keeps no order
    return in_place(
        lambda: numbers(dict(sorted(ckpt.read_metadata(path).items(), key=lambda kv: (first.get(kv[0], 2), kv[0]))))
    )


def last_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The last line of metrics.jsonl; None when nothing was logged yet."""
    if not (run_dir / ckpt.METRICS).is_file():
        return None
    return in_place(lambda: (ckpt.read_metrics(run_dir) or [None])[-1])


def files_present(run_dir: Path) -> list[str]:
    """The run directory's entries, folders marked with a trailing /; hidden ones (the lock, a write's temporary
    file) left out."""
    return sorted(p.name + "/" if p.is_dir() else p.name for p in run_dir.iterdir() if not p.name.startswith("."))


def _natural(path: Path) -> list[Any]:
    """Sort key that puts members/10 after members/9."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def member_dirs(run_dir: Path) -> list[Path]:
    """Every training run inside an ensemble run's members/ folder (frame members' refits included), in order."""
    top = run_dir / MEMBERS
    if not top.is_dir():
        return []
    found = {p.parent for name in (ckpt.LAST, ckpt.BEST, ckpt.METRICS) for p in top.rglob(name)}
    return sorted(found, key=lambda p: _natural(p.relative_to(run_dir)))


def describe_files(run_dir: Path) -> dict[str, Any]:
    """What every run directory shows: its checkpoints, last metrics line and files; for an ensemble also the final
    model and each member's checkpoints."""
    info: dict[str, Any] = {
        "run_dir": str(run_dir),
        "best": checkpoint_info(run_dir / ckpt.BEST),
        "last": checkpoint_info(run_dir / ckpt.LAST),
        "last_metrics": last_metrics(run_dir),
    }
    members = member_dirs(run_dir)
    if members or (run_dir / FINAL).is_file():
        info["model"] = checkpoint_info(run_dir / FINAL)
        info["members"] = [
            {
                "dir": d.relative_to(run_dir).as_posix(),
                "best": checkpoint_info(d / ckpt.BEST),
                "last": checkpoint_info(d / ckpt.LAST),
            }
            for d in members
        ]
    info["files"] = files_present(run_dir)
    return info


def engine_line(engine: str, matmul_dtype: str | None, device: str, resolved: dict[str, str]) -> str:
    """The engine row: the settings, and what they resolved to where the run last trained (config.json's
    "resolved", which runs made before it lack)."""
    text = engine + (f", {matmul_dtype} matmuls" if matmul_dtype else "") + f", device {device}"
    if resolved:
        ran = f"{resolved.get('engine')}, {resolved.get('matmul_dtype')} matmuls, device {resolved.get('device')}"
        text += f" (ran as {ran})" if ran != text else ""
    return text


def fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def pairs(d: dict[str, Any] | None, keys: tuple[str, ...] | None = None) -> str:
    """``key value, key value`` of a checkpoint's or metrics line's numbers (its error, when it has one)."""
    if not d:
        return "none"
    if "error" in d:
        return str(d["error"])
    return ", ".join(f"{k} {fmt(v)}" for k, v in d.items() if keys is None or k in keys)


def common_rows(info: dict[str, Any]) -> Rows:
    """The rows every kind of run shows after its own: checkpoints, final model, members, metrics, files."""
    rows: Rows = []
    if "members" in info:
        rows.append(("final model", pairs(info["model"]) if info["model"] else f"none yet (no {FINAL})"))
        for m in info["members"]:
            what = f"best: {pairs(m['best'])}" if m["best"] else "no best checkpoint"
            what += f" | last: {pairs(m['last'], ('step', 'epoch'))}" if m["last"] else " | nothing saved yet"
            if m.get("finished"):
                what += " | finished"
            rows.append((m["dir"], what))
    for key in ("best", "last"):
        if info[key] or "members" not in info:
            rows.append((f"{key} checkpoint", pairs(info[key])))
    if info["last_metrics"]:
        rows.append(("last metrics", pairs(info["last_metrics"])))
    rows.append(("files", ", ".join(info["files"])))
    return rows


def training_line(tc: TrainConfig, batch: str | None = None) -> str:
    """The optimizer, batch and limits of a run in one line; ``batch`` is a use's own word for its batch shape
    (a language model's "batch 32 x 64", with its window length), else "batch N"."""
    limits = [f"{tc.epochs} epoch{'s' if tc.epochs != 1 else ''}" if tc.epochs is not None else "no epoch limit"]
    if tc.max_steps is not None:
        limits.append(f"{tc.max_steps} steps")
    if tc.time_budget is not None:
        limits.append(f"{tc.time_budget:g} s")
    batch = batch or f"batch {tc.batch_size}"
    return f"{tc.optimizer}, lr {tc.lr:g}, {batch}, {', '.join(limits)}, seed {tc.seed}"


def table(rows: Rows) -> str:
    """Label/value rows as two aligned text columns."""
    width = max((len(a) for a, _ in rows), default=0)
    return "\n".join(f"{a.ljust(width)}  {b}".rstrip() for a, b in rows)
