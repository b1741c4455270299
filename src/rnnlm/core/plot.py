"""Learning curves from metrics.jsonl, drawn with matplotlib (an optional dependency: rnnlm[plot])."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnlm.core.atomic import atomic_write_bytes
from rnnlm.core.checkpoint import read_metrics
from rnnlm.core.errors import RnnlmError

LN2 = math.log(2.0)


def curves(rows: list[dict[str, Any]], x: str = "step") -> dict[str, tuple[list[float], list[float]]]:
    """Series to plot: training and validation loss in bits per token, and the learning rate."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for name, key, scale in (("train", "train_loss", 1 / LN2), ("val", "val_loss", 1 / LN2), ("lr", "lr", 1.0)):
        pts = [(r[x], r[key] * scale) for r in rows if key in r and x in r]
        if pts:
            out[name] = ([p[0] for p in pts], [p[1] for p in pts])
    return out


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path | None = None, x: str = "step") -> Path:
    """Draw the learning curves of one or more runs into a PNG (written atomically); returns its path."""
    try:
        # A bare Figure draws to a file with the Agg renderer, whatever backend pyplot uses in this process.
        from matplotlib.figure import Figure
    except ImportError:
        raise RnnlmError("plotting needs matplotlib: pip install 'rnnlm[plot]' (or pip install matplotlib)") from None
    out = Path(out) if out else Path(run_dirs[0]) / "metrics.png" if len(run_dirs) == 1 else Path("runs.png")
    fig = Figure(figsize=(11, 4))
    ax_loss, ax_lr = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
    for run_dir in run_dirs:
        series = curves(read_metrics(run_dir), x)
        label = Path(run_dir).name
        if "train" in series:
            (line,) = ax_loss.plot(*series["train"], linestyle="--", alpha=0.7, label=f"{label} train")
            color = line.get_color()
        else:
            color = None
        if "val" in series:
            ax_loss.plot(*series["val"], color=color, label=f"{label} validation")
        if "lr" in series:
            ax_lr.plot(*series["lr"], color=color, label=label)
    ax_loss.set(xlabel=x, ylabel="bits per token", title="loss")
    ax_lr.set(xlabel=x, ylabel="learning rate", title="learning rate")
    ax_loss.grid(alpha=0.3)
    ax_lr.grid(alpha=0.3)
    ax_loss.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buf.getvalue())
    return out
