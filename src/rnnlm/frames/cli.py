"""`rnnlm frames train | eval | predict`: recurrent models over real-valued frame sequences.

The training flags are generated from the frame configs (frames/config.py), which build on the shared
TrainConfig and EvalConfig; the handlers call the Python API in frames/api.py and the run in frames/run.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import RnnlmError
from rnnlm.frames.config import FRAMES_SECTIONS
from rnnlm.training import distributed


def add_frames_parser(sub: Any) -> None:
    """Add `frames` with its train, eval and predict subcommands to the rnnlm parser's subparsers."""
    from rnnlm.core.flags import add_dataclass_flags

    f = sub.add_parser(
        "frames",
        help="classify or label sequences of real-valued frames",
        description="Recurrent models over real-valued feature vectors (speech frames, sensor series): one "
        "label per sequence (--task classify) or per frame (--task label). Reads UEA/UCR .ts files and .npz files.",
    )
    fsub = f.add_subparsers(dest="frames_command", required=True, metavar="{train,eval,predict}")

    t = fsub.add_parser(
        "train",
        help="train a frame model",
        description="Train on TRAIN, holding out a stratified, seeded validation split of it for early stopping "
        "and the best checkpoint; with --test, score the test file once at the end (it chooses nothing). The "
        "validation and test scores are printed and saved as RUN/val_report.json and RUN/test_report.json (with "
        "a confusion-matrix PNG when matplotlib is installed).",
    )
    t.add_argument("train_path", nargs="?", metavar="TRAIN", help="Training file: .ts (UEA/UCR) or .npz.")
    t.add_argument("--config", metavar="JSON", help="Start from a saved config.json (e.g. another run's).")
    t.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="Continue this run exactly where it stopped; only the length of training, --device, logging and "
        "--test may change.",
    )
    skip = {"data": ("train_path",)}  # the training file is the positional TRAIN
    for section, cls in FRAMES_SECTIONS.items():
        group = t.add_argument_group(f"{section} options")
        add_dataclass_flags(group, cls, f"{section}.", skip.get(section, ()))
    t.set_defaults(handler=cmd_frames_train)

    e = fsub.add_parser(
        "eval",
        help="score a labelled file",
        description="Print accuracy, macro-F1, per-class scores and the confusion matrix of a labelled file, "
        "and save them as PREFIX.json (and PREFIX.png with matplotlib).",
    )
    _model_flags(e)
    e.add_argument("--out", metavar="PREFIX", help="Where to save the report (default: RUN_DIR/eval_<file name>).")
    e.add_argument("--json", action="store_true", help="Print the report as JSON instead of a table.")
    e.set_defaults(handler=cmd_frames_eval)

    p = fsub.add_parser(
        "predict",
        help="predict the labels of a file",
        description="Print one line per sequence: its predicted class, or for a labeler its frames' classes "
        "separated by spaces. With --json, one JSON object per line, with the probabilities.",
    )
    _model_flags(p)
    p.add_argument("--json", action="store_true", help="Print JSON lines with the class probabilities.")
    p.set_defaults(handler=cmd_frames_predict)


def _model_flags(p: argparse.ArgumentParser) -> None:
    from rnnlm.core.flags import add_engine_flag

    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("file", metavar="FILE", help="A .ts or .npz file with the same features as the training file.")
    p.add_argument("--checkpoint", default="best", help="best, last, or a .safetensors path (default: best).")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu).")
    add_engine_flag(p, "Engine for the recurrence (default: the run's own).")


def _sections(ns: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Explicitly given flags, sorted into the frame config's sections."""
    out: dict[str, dict[str, Any]] = {s: {} for s in FRAMES_SECTIONS}
    for key, value in vars(ns).items():
        section, _, name = key.partition(".")
        if name and section in out:
            out[section][name] = value
    return out


def cmd_frames_train(ns: argparse.Namespace) -> int:
    from rnnlm.frames.config import build_frames_config
    from rnnlm.frames.run import KIND, train
    from rnnlm.training import runs

    overrides = _sections(ns)
    if ns.train_path:
        overrides["data"]["train_path"] = ns.train_path
    if ns.resume:
        if ns.config or ns.train_path:
            raise RnnlmError("--resume continues a run with its own config and data; drop --config and TRAIN")
        resume = runs.open_run(ns.resume, KIND)  # read once; train checks the overrides once
        cfg = runs.with_overrides(resume.config, overrides)
    else:
        resume, base = None, None
        if ns.config:
            base = runs.config_from_json(ckpt.read_json(ns.config, "config"), KIND, Path(ns.config))
            base.train.out = None  # never write into the run the config came from
        cfg = build_frames_config(overrides, base)
        if cfg.data.train_path is None:
            raise RnnlmError("give the training file: rnnlm frames train TRAIN.ts [--test TEST.ts]")
    result = train(cfg, resume=resume)
    if distributed.is_main():  # under torchrun rank 0 speaks for the run
        print(f"done: {result.run_dir} | score a file with: rnnlm frames eval {result.run_dir} FILE")
    return 0


def cmd_frames_eval(ns: argparse.Namespace) -> int:
    from rnnlm.frames.api import load
    from rnnlm.frames.metrics import format_report, save_report

    model = load(ns.run_dir, ns.checkpoint, ns.device, ns.engine)
    report = model.evaluate(ns.file)
    report = {"file": str(ns.file), "checkpoint": model.checkpoint.get("path"), **report}
    prefix = Path(ns.out) if ns.out else Path(ns.run_dir) / f"eval_{Path(ns.file).stem}"
    written = save_report(report, prefix, title=Path(ns.file).name)
    if ns.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print(format_report(report, title=Path(ns.file).name))
        print("saved: " + ", ".join(str(p) for p in written))
    return 0


def cmd_frames_predict(ns: argparse.Namespace) -> int:
    from rnnlm.frames.api import load

    model = load(ns.run_dir, ns.checkpoint, ns.device, ns.engine)
    probs = model.predict_proba(ns.file)
    names = model.classes
    for i, p in enumerate(probs):
        best = p.argmax(-1)
        if not ns.json:
            print(names[best] if model.task == "classify" else " ".join(names[k] for k in best))
        elif model.task == "classify":
            row = {
                "index": i,
                "label": names[best],
                "probabilities": dict(zip(names, p.astype(float).round(6).tolist(), strict=True)),
            }
            print(json.dumps(row, ensure_ascii=False))
        else:
            row = {"index": i, "labels": [names[k] for k in best], "probabilities": p.astype(float).round(6).tolist()}
            print(json.dumps(row, ensure_ascii=False))
    return 0
