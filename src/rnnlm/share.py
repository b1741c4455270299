"""Taking a run off the machine that trained it: ``rnnlm export`` (ONNX or a torch.export program) and ``rnnlm card``
(a Hugging Face model card), for every kind of run.

This module knows all three uses, so it sits beside cli.py, above them (pyproject's import-linter layers): it picks
the use by config.json's format and calls that use's export (lm/export.py, tagging/export.py, frames/export.py) or
its description (``info.describe``, the same that ``rnnlm info`` prints).

A run directory is published as it is: config.json, the side files (vocab.json, tags, classes.json), the weights
(best.safetensors, or an ensemble's model.safetensors) and README.md, the card. ``rnnlm.load("user/name")`` reads it
back from the Hub (core/hub.py).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from rnnlm import __version__
from rnnlm.core import checkpoint as ckpt
from rnnlm.core import export as core_export
from rnnlm.core.atomic import atomic_write_bytes
from rnnlm.core.errors import CheckpointError
from rnnlm.core.hub import local_run_dir
from rnnlm.frames.config import FORMAT as FRAMES_FORMAT
from rnnlm.lm.config import FORMAT as LM_FORMAT
from rnnlm.tagging.config import FORMAT as TAG_FORMAT

CARD = "README.md"


def run_format(run_dir: Path) -> str:
    """The kind of run in a directory (config.json's format), with the command line's clear errors."""
    from rnnlm.cli import run_format as read  # cli imports this module when it builds its parser: import late

    return read(run_dir)


def export(run_dir: str | Path, format: str = "onnx", out: str | Path | None = None, checkpoint: str = "best") -> Path:
    """Export any kind of run (a directory or a Hub id) to ``out`` as ``format`` (onnx or exported-program);
    returns the file's path (default RUN_DIR/model.onnx or model.pt2)."""
    core_export.check_format(format)
    run_dir = local_run_dir(run_dir)
    fmt = run_format(run_dir)
    if fmt == LM_FORMAT:
        from rnnlm.lm.export import export as use_export
    elif fmt == TAG_FORMAT:
        from rnnlm.tagging.export import export as use_export
    else:
        from rnnlm.frames.export import export as use_export
    return use_export(run_dir, format, out, checkpoint)


# -- model cards --------------------------------------------------------------------------------------------------


def _describe(run_dir: Path, fmt: str) -> tuple[dict[str, Any], dict[str, str]]:
    if fmt == LM_FORMAT:
        from rnnlm.lm.info import describe
    elif fmt == TAG_FORMAT:
        from rnnlm.tagging.info import describe
    else:
        from rnnlm.frames.info import describe
    info, rows = describe(run_dir)
    return info, dict(rows)


def training_time(run_dir: Path) -> tuple[float, int]:
    """Seconds of training summed over the run's training runs (an ensemble's members and refits each count),
    from each metrics.jsonl's last elapsed_s; and how many there were."""
    total, count = 0.0, 0
    for path in sorted(run_dir.rglob(ckpt.METRICS)):
        if path.parent.name == "char_lm" or "char_lm" in path.relative_to(run_dir).parts:
            continue  # a tagger's frozen character LMs are copies of other runs
        rows = ckpt.read_metrics(path.parent)
        if rows:
            total += float(rows[-1].get("elapsed_s", 0.0))
            count += 1
    return total, count


def _metrics(fmt: str, info: dict[str, Any], cfg: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(metric, value, protocol) rows of the card."""
    best = info.get("best") if isinstance(info.get("best"), dict) else None
    if fmt == LM_FORMAT:
        d = cfg["data"]
        where = (
            f"the files {', '.join(d['val_paths'])}"
            if d["val_paths"]
            else f"the last {d['val_fraction']:g} of the training text (held out from training)"
        )
        if not best or "val_loss" not in best:
            return [("validation loss", "not measured (no validation data)", where)]
        loss = float(best["val_loss"])
        unit = "char" if d["level"] == "char" else "token"
        proto = f"mean over every {unit} of {where}; the best checkpoint (step {best.get('step')})"
        return [
            (f"loss (nats per {unit})", f"{loss:.4f}", proto),
            ("perplexity", f"{math.exp(loss):.3f}", "exp(loss)"),
            (f"bits per {unit}", f"{loss / math.log(2):.4f}", "loss / ln 2"),
        ]
    if fmt == TAG_FORMAT:
        d = cfg["data"]
        if not best:
            return [("dev score", "not measured (no dev file)", "")]
        out = []
        for key, name in (("val_f1", "entity F1 (%)"), ("val_acc", "token accuracy (%)")):
            if key in best:
                proto = (
                    f"on the dev file {d['dev']}; exact-match entity spans ({d['scheme']} chunks)"
                    if key == "val_f1"
                    else f"on the dev file {d['dev']}; every token counts"
                )
                out.append(
                    (name, f"{float(best[key]):.2f}", proto + f"; the best checkpoint (epoch {best.get('epoch')})")
                )
        return out or [("dev score", "not recorded", "")]
    rows = []
    for name, report in (info.get("reports") or {}).items():
        if not report or "error" in report:
            continue
        split = (
            f"the test file {cfg['data']['test']}"
            if name == "test"
            else f"a validation split of {cfg['data']['val_fraction']:g} of the training data"
        )
        proto = f"{report.get('count', '?')} sequences of {split}, scored by the final model"
        for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
            if key in report:
                rows.append((f"{name} {label}", f"{float(report[key]):.4f}", proto))
    return rows or [("scores", "no report saved (no validation split or test file)", "")]


_TASKS = {
    LM_FORMAT: ("text-generation", "language model", "Generate or score text like the training text."),
    TAG_FORMAT: ("token-classification", "sequence tagger", "Tag each word of tokenized sentences."),
    FRAMES_FORMAT: (None, "frame-sequence model", "Classify (or label each frame of) sequences of feature vectors."),
}


def card_text(run_dir: str | Path) -> str:
    """The model card of a run, as Markdown with the Hub's YAML header."""
    run_dir = Path(run_dir)
    fmt = run_format(run_dir)
    info, rows = _describe(run_dir, fmt)
    raw = ckpt.read_json(run_dir / ckpt.CONFIG, "run config")
    cfg = info["config"]
    pipeline, noun, use = _TASKS[fmt]
    m = cfg["model"]
    seconds, runs_count = training_time(run_dir)
    resolved = raw.get("resolved") if isinstance(raw.get("resolved"), dict) else {}
    machine = resolved.get("machine", "not recorded (the run predates rnnlm's record of it)")
    tags = ["rnnlm", "pytorch", "recurrent", m.get("cell", "lstm"), noun.replace(" ", "-")]
    header = ["---", "library_name: rnnlm", "tags:", *(f"- {t}" for t in tags)]
    header += [f"pipeline_tag: {pipeline}"] if pipeline else []
    header += ["---", ""]
    name = run_dir.resolve().name
    lines = [
        *header,
        f"# {name}",
        "",
        f"A {info['kind']} trained with [rnnlm](https://pypi.org/project/rnnlm/) {__version__}.",
    ]
    lines += ["", "## Task", "", rows.get("kind", info["kind"]), "", f"Model: {rows.get('model', '')}."]
    lines += [f"Parameters: {rows.get('parameters', '')}."]
    if fmt == FRAMES_FORMAT:
        lines += [f"Classes: {rows.get('classes', '')}."]
    elif fmt == TAG_FORMAT:
        lines += [f"Tags: {rows.get('tags', '')}.", f"Vocabulary: {rows.get('vocabulary', '')}."]
    else:
        lines += [f"Vocabulary: {rows.get('vocabulary', '')}."]
    lines += ["", "## Data", "", f"{rows.get('data', '')}."]
    lines += ["", "## Metrics", "", "| metric | value | protocol |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in _metrics(fmt, info, cfg)]
    lines += ["", "## Training", ""]
    several = f", summed over {runs_count} training runs" if runs_count > 1 else ""
    lines += [f"- time: {seconds:.0f} s of training{several}" if runs_count else "- time: not recorded"]
    lines += [f"- machine: {machine}", f"- engine: {rows.get('engine', '')}", f"- settings: {rows.get('training', '')}"]
    if "fit" in rows:
        lines += [f"- fit: {rows['fit']}"]
    lines += ["", "## Intended use", "", use]
    lines += [
        "It was trained on the data above only: expect it to do well on text or signals like those and poorly "
        "elsewhere, and check it on your own data before you rely on it. The scores above are on the held-out "
        "data they name, not a guarantee on yours.",
    ]
    lines += ["", "## How to load", "", "```bash", "pip install rnnlm", "```", "", "```python"]
    if fmt == LM_FORMAT:
        lines += [
            "import rnnlm",
            "",
            'lm = rnnlm.load("USER/NAME")  # or the local folder',
            'print(lm.generate("The "))',
        ]
    elif fmt == TAG_FORMAT:
        lines += ["from rnnlm import tagging", "", 'tagger = tagging.load("USER/NAME")  # or the local folder']
        lines += ['print(tagger.tag_text("Anna visited New York"))']
    else:
        lines += ["from rnnlm import frames", "", 'model = frames.load("USER/NAME")  # or the local folder']
        lines += ["print(model.predict(sequences))  # a list of (T_i, features) arrays"]
    lines += ["```", "", "Hub ids need `pip install huggingface_hub`. Without rnnlm, export the model first:", ""]
    lines += ["```bash", f"rnnlm export {name} --format onnx --out model.onnx", "```", ""]
    return "\n".join(lines)


def card(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's model card (default RUN_DIR/README.md, the Hub's place for it); returns the path."""
    run_dir = Path(run_dir)
    path = Path(out) if out is not None else run_dir / CARD
    if not path.parent.is_dir():
        raise CheckpointError(f"--out {path}: the folder {path.parent} does not exist")
    atomic_write_bytes(path, card_text(run_dir).encode("utf-8"))
    return path


# -- the commands -------------------------------------------------------------------------------------------------


def add_share_parsers(sub: Any) -> None:
    """``rnnlm export`` and ``rnnlm card``."""
    e = sub.add_parser(
        "export",
        help="write a run's model as ONNX or a torch.export program",
        description="Write a run of any kind to a file that runs without rnnlm: ONNX (onnxruntime) or a torch.export "
        "program. A language model becomes its step function (token ids and state in, logits and state out), a "
        "tagger its tag scores (with the CRF's scores in the metadata for Viterbi), a frame model its class "
        "probabilities (standardization included). Batch and time are dynamic; the vocabulary or tag set, the input "
        f"spec and rnnlm's version are inside the file. Needs {core_export.INSTALL}.",
    )
    e.add_argument("run_dir", metavar="RUN_DIR", help="A run directory (or a Hub id with huggingface_hub).")
    e.add_argument("--format", choices=core_export.FORMATS, default="onnx", help="File format (default: onnx).")
    e.add_argument("--out", help="Output file (default: RUN_DIR/model.onnx or RUN_DIR/model.pt2).")
    e.add_argument("--checkpoint", default="best", help="best, last or a .safetensors path (default: best).")
    e.set_defaults(handler=cmd_export)
    c = sub.add_parser(
        "card",
        help="write a run's model card (README.md)",
        description="Write a Hugging Face model card for a run of any kind: task, data, metrics and how they were "
        "measured, training time and machine, intended use and how to load it, filled from the run directory. The "
        "run directory with its README.md can then be uploaded as it is.",
    )
    c.add_argument("run_dir", metavar="RUN_DIR", help="A run directory.")
    c.add_argument("--out", help="Output file (default: RUN_DIR/README.md).")
    c.set_defaults(handler=cmd_card)


def cmd_export(ns: argparse.Namespace) -> int:
    path = export(ns.run_dir, ns.format, ns.out, ns.checkpoint)
    meta = core_export.read_metadata(path)
    print(json.dumps({"path": str(path), "kind": meta["kind"], "inputs": meta["inputs"], "outputs": meta["outputs"]}))
    return 0


def cmd_card(ns: argparse.Namespace) -> int:
    print(card(ns.run_dir, ns.out))
    return 0
