"""The runs a server was started with: ids for their folders, their kind, and one loaded model each.

A request names a run by its id, never by a path: the ids are made here, once, from the folders given on the
command line, and nothing else on disk can be reached through them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import CheckpointError, RnnlmError
from rnnlm.core.plot import metric_sources
from rnnlm.frames.config import FORMAT as FRAMES_FORMAT
from rnnlm.lm.config import FORMAT as LM_FORMAT
from rnnlm.tagging.config import FORMAT as TAG_FORMAT

KINDS = {LM_FORMAT: "lm", TAG_FORMAT: "tagger", FRAMES_FORMAT: "frames"}
_ID = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass
class ServedRun:
    """One run directory as the server knows it; ``model`` is the loaded API object (LanguageModel,
    SequenceTagger or FrameModel), or None with ``error`` saying why (a run that has no checkpoint yet)."""

    id: str
    dir: Path
    kind: str  # lm | tagger | frames
    model: Any = None
    error: str | None = None
    cache: dict[str, Any] = field(default_factory=dict)  # per-run values computed once (validation states)

    def describe(self) -> dict[str, Any]:
        """What the page lists: id, name, kind and whether the model could be loaded (never the path)."""
        out: dict[str, Any] = {"id": self.id, "name": self.dir.name, "kind": self.kind, "ready": self.model is not None}
        if self.error:
            out["error"] = self.error
        if self.kind == "lm" and self.model is not None:
            m = self.model.config.model
            out["model"] = f"{m.cell} {m.layers}x{m.hidden}, {self.model.vocab.level} vocab {len(self.model.vocab)}"
            out["cell"], out["layers"], out["hidden"] = m.cell, m.layers, m.hidden
        return out


def run_kind(run_dir: Path) -> str:
    """lm, tagger or frames, as the run's config.json says; a CheckpointError naming the folder otherwise."""
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    raw = ckpt.read_json(run_dir / ckpt.CONFIG, "run config")
    fmt = raw.get("format", LM_FORMAT) if isinstance(raw, dict) else None  # rnnlm 0.1 wrote no format
    if fmt not in KINDS:
        raise CheckpointError(f"{run_dir / ckpt.CONFIG}: format {fmt!r} is no kind of run this rnnlm serves")
    return KINDS[str(fmt)]


def load_model(kind: str, run_dir: Path) -> Any:
    """The run's best model on the CPU through its use's API. Frame models run the scratch engine, whose
    gradients every cell has, since saliency differentiates through them."""
    if kind == "lm":
        from rnnlm.lm.api import load

        return load(run_dir)
    if kind == "tagger":
        from rnnlm.tagging.api import load as load_tagger

        return load_tagger(run_dir)
    from rnnlm.frames.api import load as load_frames

    return load_frames(run_dir, engine="scratch")


def open_runs(run_dirs: list[str | Path], load: bool = True) -> dict[str, ServedRun]:
    """The served runs by id (the folder's name, made unique with -2, -3 ...). A folder that is no run is an
    error now, at start; a run whose model cannot be loaded yet (still training, no checkpoint) is served for its
    curves, with the reason shown."""
    out: dict[str, ServedRun] = {}
    for raw in run_dirs:
        run_dir = Path(raw).resolve()
        kind = run_kind(run_dir)
        base = _ID.sub("-", run_dir.name).strip("-") or "run"
        rid, n = base, 1
        while rid in out:
            n += 1
            rid = f"{base}-{n}"
        run = ServedRun(rid, run_dir, kind)
        if load:
            try:
                run.model = load_model(kind, run_dir)
            except (RnnlmError, OSError) as e:
                run.error = f"the model cannot be loaded yet ({e}); its training curves are shown"
        out[rid] = run
    return out


# -- metrics --------------------------------------------------------------------------------------------------


def read_curves(run: ServedRun, max_points: int = 2000) -> list[dict[str, Any]]:
    """Every metrics.jsonl of a run (its own, its ensemble members'), as rows of numbers, at most ``max_points``
    each (evenly thinned, the last row always kept).

    Safe while the run trains: a file is read whole in one call, so an atomic rewrite (truncate_metrics on
    resume) shows either the old or the new file; a line still being appended (no newline yet) or damaged is
    left out rather than failing the read.
    """
    try:
        sources = metric_sources(run.dir)
    except CheckpointError:
        return []
    out = []
    for label, folder in sources:
        try:
            data = (folder / ckpt.METRICS).read_bytes()
        except OSError:
            continue
        rows = []
        for line in data.split(b"\n")[:-1]:  # the part after the last newline is unfinished
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(row, dict):
                rows.append({k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        if len(rows) > max_points:
            stride = -(-len(rows) // max_points)
            rows = rows[::stride] + ([rows[-1]] if (len(rows) - 1) % stride else [])
        out.append({"source": label or "run", "rows": rows})
    return out
