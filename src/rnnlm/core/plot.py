"""Learning curves from metrics.jsonl, drawn with matplotlib (an optional dependency: rnnlm[plot]).

Whatever a run logged is drawn: the training and validation loss, the validation scores (accuracy and F1, which
taggers and frame models log) and the learning rate. An ensemble run (a tagger's or a frame model's) has no
curves of its own: each member's training run, in ``members/<i>/`` (and a frame member's ``refit/``), gets its
own lines. This module reads files only; which kind of run a folder holds is the caller's to say (``bits``).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnlm.core.atomic import atomic_write_bytes
from rnnlm.core.checkpoint import METRICS, read_metrics
from rnnlm.core.errors import CheckpointError, RnnlmError

LN2 = math.log(2.0)
MEMBERS = "members"  # where an ensemble run keeps its members' training runs
Series = tuple[list[float], list[float]]  # x values, y values
SCORES = (("val_acc", "accuracy", "-"), ("val_f1", "F1", ":"))  # (metric, label, line style)


def curves(rows: list[dict[str, Any]], x: str = "step", bits: bool = True) -> dict[str, Series]:
    """Series to plot: training and validation loss (in bits when ``bits``, a language model's bits per token;
    else in nats as logged), the validation scores that were logged, and the learning rate."""
    out: dict[str, Series] = {}
    scale = 1 / LN2 if bits else 1.0
    keys = [("train", "train_loss", scale), ("val", "val_loss", scale), ("lr", "lr", 1.0)]
    keys += [(name, name, 1.0) for name, _, _ in SCORES]
    for name, key, k in keys:
        pts = [(r[x], r[key] * k) for r in rows if r.get(key) is not None and r.get(x) is not None]
        if pts:
            out[name] = ([p[0] for p in pts], [p[1] for p in pts])
    return out


def metric_sources(run_dir: str | Path) -> list[tuple[str, Path]]:
    """(label, folder) of every metrics.jsonl of a run: its own, then its members' in order (members/10 after
    members/9); an error that names the folder when there is none."""
    run_dir = Path(run_dir)
    found = [("", run_dir)] if (run_dir / METRICS).is_file() else []
    if (run_dir / MEMBERS).is_dir():
        members = [p.parent for p in (run_dir / MEMBERS).rglob(METRICS)]
        members.sort(key=lambda p: [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.as_posix())])
        found += [(p.relative_to(run_dir).as_posix(), p) for p in members]
    if not found:
        raise CheckpointError(
            f"{run_dir}: no {METRICS} yet (nor in {MEMBERS}/); is it a run directory, and has it logged a line?"
        )
    return found


def _name(run_dir: Path) -> str:
    """A run's label: its folder's name; for a member's folder, from the ensemble's (ner/members/0)."""
    parts = run_dir.absolute().parts
    if MEMBERS in parts[1:-1]:
        i = len(parts) - 1 - parts[::-1].index(MEMBERS)
        return "/".join(parts[i - 1 :])
    return parts[-1]


def _draw(ax: Any, xy: Series, **kw: Any) -> Any:
    """One line; a single point (a run that logged once) gets a marker, or it would not show."""
    (line,) = ax.plot(*xy, marker="o" if len(xy[0]) == 1 else None, **kw)
    return line


def plot_runs(
    run_dirs: Sequence[str | Path], out: str | Path | None = None, x: str = "step", bits: Sequence[bool] | None = None
) -> Path:
    """Draw the learning curves of one or more runs into a PNG (written atomically); returns its path.

    ``bits`` says per run whether its loss is drawn in bits (a language model's bits per token) or in nats;
    by default every run's is in bits.
    """
    try:
        # A bare Figure draws to a file with the Agg renderer, whatever backend pyplot uses in this process.
        from matplotlib.figure import Figure
    except ImportError:
        raise RnnlmError("plotting needs matplotlib: pip install 'rnnlm[plot]' (or pip install matplotlib)") from None
    bits = [True] * len(run_dirs) if bits is None else list(bits)
    if len(bits) != len(run_dirs):
        raise ValueError(f"bits has {len(bits)} entries for {len(run_dirs)} runs")
    series = []  # (label, curves) per metrics file, every file read before anything is drawn
    for run_dir, in_bits in zip(run_dirs, bits, strict=True):
        name = _name(Path(run_dir))
        for where, folder in metric_sources(run_dir):
            series.append((f"{name} {where}".strip(), curves(read_metrics(folder), x, in_bits)))
    scored = any(score in c for _, c in series for score, _, _ in SCORES)
    out = Path(out) if out else Path(run_dirs[0]) / "metrics.png" if len(run_dirs) == 1 else Path("runs.png")

    fig = Figure(figsize=(15, 4) if scored else (11, 4))
    axes = fig.subplots(1, 3 if scored else 2, gridspec_kw={"width_ratios": [3, 2, 1] if scored else [3, 1]})
    ax_loss, ax_lr = axes[0], axes[-1]
    for label, c in series:
        color = None
        if "train" in c:
            line = _draw(ax_loss, c["train"], linestyle="--", alpha=0.7, label=f"{label} train")
            color = line.get_color()
        if "val" in c:
            line = _draw(ax_loss, c["val"], color=color, label=f"{label} validation")
            color = line.get_color()
        for key, what, style in SCORES:
            if key in c:
                line = _draw(axes[1], c[key], color=color, linestyle=style, label=f"{label} {what}")
                color = line.get_color()
        if "lr" in c:
            _draw(ax_lr, c["lr"], color=color, label=label)
    unit = "bits per token" if all(bits) else "loss (nats)" if not any(bits) else "bits per token (LM), else nats"
    ax_loss.set(xlabel=x, ylabel=unit, title="loss")
    ax_lr.set(xlabel=x, ylabel="learning rate", title="learning rate")
    if scored:
        axes[1].set(xlabel=x, ylabel="validation score", title="validation score")
        axes[1].legend(fontsize="small")
    for ax in axes:
        ax.grid(alpha=0.3)
    ax_loss.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buf.getvalue())
    return out
