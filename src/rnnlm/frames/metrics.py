"""Scores for frame classifiers and labelers: accuracy, macro-F1 and the confusion matrix.

A report is a plain dict (saved as JSON); ``format_report`` prints it as a table and ``save_report``
writes it, with a PNG of the confusion matrix when matplotlib is installed. For per-frame labels every
real frame counts once. Macro-F1 averages the per-class F1 over the classes that occur in the gold labels
or the predictions; a class that is neither is left out, since its F1 is undefined.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnlm.core.atomic import atomic_write_bytes


def confusion_matrix(
    gold: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray, num_classes: int
) -> np.ndarray:
    """(C, C) int64 counts: row = gold class, column = predicted class."""
    gold, pred = np.asarray(gold, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    if gold.shape != pred.shape or gold.ndim != 1:
        raise ValueError(f"gold and pred must be 1-D of one length, got {gold.shape} and {pred.shape}")
    if gold.size and (min(gold.min(), pred.min()) < 0 or max(gold.max(), pred.max()) >= num_classes):
        raise ValueError(f"class ids must lie in [0, {num_classes})")
    out = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(out, (gold, pred), 1)
    return out


def classification_report(
    gold: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix of id arrays."""
    cm = confusion_matrix(gold, pred, len(classes))
    total = int(cm.sum())
    if total == 0:
        raise ValueError("no labels to score")
    hits = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
    seen = (support > 0) | (predicted > 0)
    per_class = [
        {"class": c, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for c, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    ]
    return {
        "count": total,
        "accuracy": float(hits.sum() / total),
        "macro_f1": float(f1[seen].mean()),
        "classes": list(classes),
        "per_class": per_class,
        "confusion": cm.tolist(),
    }


def format_report(report: dict[str, Any], title: str = "") -> str:
    """The report as text: a headline, a per-class table, and the confusion matrix (rows gold, columns predicted)."""
    classes = [str(c) for c in report["classes"]]
    lines = [
        (f"{title}: " if title else "")
        + f"accuracy {report['accuracy']:.4f} ({round(report['accuracy'] * report['count'])}/{report['count']}) | "
        f"macro-F1 {report['macro_f1']:.4f}",
    ]
    width = max(5, *(len(c) for c in classes))
    lines.append(f"{'class':<{width}}  precision  recall      f1  support")
    for row in report["per_class"]:
        scores = f"{row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:6.4f}  {row['support']:7d}"
        lines.append(f"{row['class']:<{width}}  {scores}")
    cm = report["confusion"]
    cell = max(len(str(v)) for v in [*classes, *(x for r in cm for x in r)])
    lines.append("confusion (rows: gold, columns: predicted)")
    lines.append(" " * width + "  " + " ".join(c.rjust(cell) for c in classes))
    for c, row in zip(classes, cm, strict=True):
        lines.append(c.ljust(width) + "  " + " ".join(str(v).rjust(cell) for v in row))
    return "\n".join(lines)


def save_report(report: dict[str, Any], prefix: str | Path, title: str = "") -> list[Path]:
    """Write PREFIX.json (atomically) and, when matplotlib is installed, PREFIX.png; returns the paths written."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    path = prefix.with_name(prefix.name + ".json")
    atomic_write_bytes(path, (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    written = [path]
    png = confusion_png(report, title)
    if png is not None:
        written.append(prefix.with_name(prefix.name + ".png"))
        atomic_write_bytes(written[-1], png)
    return written


def confusion_png(report: dict[str, Any], title: str = "") -> bytes | None:
    """The confusion matrix drawn as a PNG, or None without matplotlib (an optional dependency)."""
    try:
        from matplotlib.figure import Figure  # a bare Figure: no pyplot, no backend switching
    except ImportError:
        return None
    cm = np.asarray(report["confusion"])
    classes = [str(c) for c in report["classes"]]
    size = 2.5 + 0.45 * len(classes)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=90 if max(map(len, classes)) > 3 else 0)
    ax.set_yticks(ticks, classes)
    if len(classes) <= 30:
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set(xlabel="predicted", ylabel="gold")
    ax.set_title(f"{title + ': ' if title else ''}accuracy {report['accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()
