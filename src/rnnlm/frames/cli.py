"""`rnnlm frames train | eval | predict | stream`: recurrent models over real-valued frame sequences and audio.

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
        "label per sequence (--task classify) or per frame (--task label). Reads audio (a folder of class folders "
        "of sound files, or a CSV/JSONL manifest; features computed as the audio options say), UEA/UCR .ts files "
        "and .npz files.",
    )
    fsub = f.add_subparsers(dest="frames_command", required=True, metavar="{train,eval,predict,stream}")

    t = fsub.add_parser(
        "train",
        help="train a frame model",
        description="Train on TRAIN, holding out a stratified, seeded validation split of it for early stopping "
        "and the best checkpoint; with --test, score the test file once at the end (it chooses nothing). The "
        "validation and test scores are printed and saved as RUN/val_report.json and RUN/test_report.json (with "
        "a confusion-matrix PNG when matplotlib is installed).",
    )
    t.add_argument(
        "train_path",
        nargs="?",
        metavar="TRAIN",
        help="Training data: a folder of class folders of sound files (WAV, FLAC, OGG), a manifest (.csv with a "
        "header, or .jsonl) of path and label (or intervals: a start,end,label file per sound file, for labels per "
        "frame), or a feature file (.ts, .npz).",
    )
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
    e.add_argument(
        "file", metavar="FILE", help="Labelled data of the kind the run was trained on (folder, manifest, .ts, .npz)."
    )
    e.add_argument("--out", metavar="PREFIX", help="Where to save the report (default: RUN_DIR/eval_<file name>).")
    e.add_argument("--json", action="store_true", help="Print the report as JSON instead of a table.")
    e.set_defaults(handler=cmd_frames_eval)

    p = fsub.add_parser(
        "predict",
        help="predict the labels of sound files or a feature file",
        description="Print one line per sequence: its predicted class, or for a labeler its frames' classes "
        "separated by spaces; an audio run prints the file's path first, then a tab. With --json, one JSON "
        "object per line, with the probabilities.",
    )
    _model_flags(p)
    p.add_argument(
        "file",
        metavar="FILE",
        nargs="+",
        help="Sound files (or a folder or manifest) for an audio run; a .ts or "
        ".npz file with the training file's features otherwise.",
    )
    p.add_argument("--json", action="store_true", help="Print JSON lines with the class probabilities.")
    p.add_argument(
        "--frames",
        action="store_true",
        help="Audio: a label per frame (tab-separated time and label lines after the path); a classifier gives each "
        "frame the label of the --window seconds up to it, as `rnnlm frames stream` would.",
    )
    p.add_argument("--window", type=float, default=1.0, help="Seconds a classifier's --frames label reads (default 1).")
    p.set_defaults(handler=cmd_frames_predict)

    s = fsub.add_parser(
        "stream",
        help="label audio arriving in chunks",
        description="Read audio in chunks from FILE or standard input (a WAV stream, or with --raw 16-bit mono "
        "samples at --rate) and print a line every --step seconds: the time heard, the label of the last --window "
        "seconds and its probability (a labeler adds its labels of the step's frames). The real-time factor goes "
        "to standard error at the end.",
    )
    s.add_argument("run_dir", metavar="RUN_DIR")
    s.add_argument("file", metavar="FILE", nargs="?", default="-", help="A sound file, or - for standard input.")
    s.add_argument("--raw", action="store_true", help="Standard input holds raw 16-bit little-endian mono samples.")
    s.add_argument("--rate", type=int, help="The rate of --raw input (default: the run's).")
    s.add_argument("--window", type=float, default=1.0, help="Seconds of audio each label reads (default 1).")
    s.add_argument("--step", type=float, default=0.2, help="Seconds between labels (default 0.2).")
    s.add_argument("--chunk", type=float, default=0.1, help="Seconds read at a time (default 0.1).")
    s.add_argument("--checkpoint", default="best", help="best, last, or a .safetensors path (default: best).")
    s.set_defaults(handler=cmd_frames_stream)


def _model_flags(p: argparse.ArgumentParser) -> None:
    from rnnlm.core.flags import add_engine_flag

    p.add_argument("run_dir", metavar="RUN_DIR")
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
    if model.audio:
        return _predict_audio(model, ns)
    if len(ns.file) != 1 or ns.frames:
        raise RnnlmError("a run trained on a feature file predicts one .ts or .npz file at a time, without --frames")
    probs = model.predict_proba(ns.file[0])
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


def _predict_audio(model: Any, ns: argparse.Namespace) -> int:
    """One line per sound file (path, tab, label), or with --frames the path and then time and label lines."""
    import numpy as np

    from rnnlm.frames.audio import MANIFEST_SUFFIXES, list_audio, read_audio
    from rnnlm.frames.features import FeatureExtractor

    paths: list[Path] = []
    for f in ns.file:
        p = Path(f)
        paths += [it.path for it in list_audio(p)] if p.is_dir() or p.suffix.lower() in MANIFEST_SUFFIXES else [p]
    names, extract = model.classes, FeatureExtractor(model.config.audio)
    for path in paths:
        wave = read_audio(path, extract.rate)
        if not ns.frames:
            p = model.predict_proba([wave])[0]
            row = {"path": str(path), "label": names[int(p.argmax())]}
            if ns.json:
                row["probabilities"] = dict(zip(names, p.astype(float).round(6).tolist(), strict=True))
            print(json.dumps(row, ensure_ascii=False) if ns.json else f"{path}\t{row['label']}")
            continue
        if model.task == "label":
            best = model.predict_proba([wave])[0].argmax(-1)
            times = extract.frame_times(len(best))
            labels = [names[int(k)] for k in best]
        else:  # the label of the window up to each frame, as streaming gives it with a step of one hop
            steps = list(model.stream([wave], window=ns.window, step=extract.hop / extract.rate))
            times, labels = np.array([s.time for s in steps]), [s.label for s in steps]
        if ns.json:
            print(json.dumps({"path": str(path), "times": times.round(4).tolist(), "labels": labels}))
        else:
            print(str(path))
            for t, label in zip(times, labels, strict=True):
                print(f"{t:.3f}\t{label}")
    return 0


def _chunks(ns: argparse.Namespace, run_rate: int) -> tuple[Any, int]:
    """The input's chunks of float samples and its rate."""
    import sys
    import wave

    import numpy as np

    if ns.file != "-":
        from rnnlm.frames.audio import _soundfile

        sf = _soundfile()
        try:
            rate = sf.info(ns.file).samplerate
        except (sf.LibsndfileError, RuntimeError) as e:
            raise RnnlmError(f"{ns.file}: not a readable sound file ({e})") from None
        size = max(1, round(ns.chunk * rate))
        return (b for b in sf.blocks(ns.file, blocksize=size, dtype="float32", always_2d=True)), rate
    stdin = sys.stdin.buffer
    if ns.raw:
        rate = ns.rate or run_rate
        size = max(1, round(ns.chunk * rate)) * 2

        def raw() -> Any:
            while data := stdin.read(size):
                yield np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0

        return raw(), rate
    try:
        w = wave.open(stdin, "rb")  # noqa: SIM115 (read by the generator below until the stream ends)
    except (wave.Error, EOFError) as e:
        raise RnnlmError(f"standard input is not a WAV stream ({e}); give --raw for raw 16-bit samples") from None
    if w.getsampwidth() != 2:
        raise RnnlmError(f"standard input holds {8 * w.getsampwidth()}-bit WAV; stream 16-bit PCM, or give a file")
    rate, channels = w.getframerate(), w.getnchannels()
    size = max(1, round(ns.chunk * rate))

    def frames() -> Any:
        while data := w.readframes(size):
            yield np.frombuffer(data, dtype="<i2").reshape(-1, channels).astype(np.float32) / 32768.0

    return frames(), rate


def cmd_frames_stream(ns: argparse.Namespace) -> int:
    import sys

    from rnnlm.frames.api import load
    from rnnlm.frames.stream import Streamer

    model = load(ns.run_dir, ns.checkpoint)
    if not model.audio:
        raise RnnlmError(f"{ns.run_dir}: streaming reads audio; this run was trained on feature files")
    chunks, rate = _chunks(ns, model.config.audio.sample_rate)
    streamer = Streamer(model, ns.window, ns.step, rate)

    def show(steps: Any) -> None:
        for s in steps:
            extra = f"\t{s.start:.3f}:{' '.join(s.frames)}" if s.frames is not None else ""
            print(f"{s.time:.3f}\t{s.label}\t{s.probability:.3f}{extra}", flush=True)

    for chunk in chunks:
        show(streamer.push(chunk))
    show(streamer.flush())
    heard = streamer.heard / streamer.rate
    print(f"real-time factor {streamer.real_time_factor():.4f} ({heard:.2f} s of audio)", file=sys.stderr)
    return 0
