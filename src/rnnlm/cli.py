"""The `rnnlm` command: train | eval | generate | plot | info, and the tag and frames subcommands.

Training flags are generated from the config dataclasses (lm/config.py, tagging/config.py,
frames/config.py), so every flag's name, default and help text live next to the field they set.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnlm import __version__
from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import CheckpointError, ConfigError, RnnlmError
from rnnlm.core.flags import MarkdownHelpAction, add_dataclass_flags, add_load_flags
from rnnlm.frames.config import FORMAT as FRAMES_FORMAT
from rnnlm.lm import run as lm_run
from rnnlm.lm.config import DEFAULT_PRESET, PRESETS, SECTIONS, GenerateConfig, LMEvalConfig, build_config
from rnnlm.lm.config import FORMAT as LM_FORMAT
from rnnlm.lm.evaluate import DYNAMIC_LR, DYNAMIC_SEQ_LEN
from rnnlm.tagging.config import FORMAT as TAG_FORMAT
from rnnlm.training.runinfo import table


def _sections(ns: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Explicitly given flags, sorted into config sections."""
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in vars(ns).items():
        if "." in key:
            section, name = key.split(".", 1)
            if section in out and not (name == "paths" and value == []):
                out[section][name] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rnnlm", description="Train, evaluate and sample recurrent language models (RNN, GRU, LSTM) on any text."
    )
    p.add_argument("--version", action="version", version=f"rnnlm {__version__}")
    p.add_argument("--help-markdown", action=MarkdownHelpAction)  # hidden: prints docs/cli.md
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,eval,generate,plot,info,frames,tag}")

    t = sub.add_parser(
        "train",
        help="train a model",
        description="Train a language model. With no data and no "
        "--corpus it trains on python-docs, text that ships with Python. Flags given explicitly win "
        "over --preset and --config.",
    )
    t.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help=f"Start from a named recipe (default: {DEFAULT_PRESET}, unless --config is given). char-cpu = a "
        "regularized LSTM (2 x 448, bfloat16 matmuls where the CPU has them, locked dropout, weight drop, AR/TAR, "
        "AdamW with warmup and cosine decay, averaged weights) chosen for quality per second on a small CPU; "
        "char-gpu = the same shaped for one GPU; plain = the bare defaults below the presets (LSTM 2 x 256, no "
        "regularization, constant lr); d2l = "
        "the char-RNN of 'Dive into Deep Learning' (one-hot scratch RNN, 256 hidden, SGD lr 100, clip 0.01, "
        "250 epochs).",
    )
    t.add_argument("--config", metavar="JSON", help="Start from a saved config.json (e.g. another run's).")
    t.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="Continue this run exactly where it stopped; only the "
        "length of training (--epochs, --max-steps, --time-budget), --device and logging may change.",
    )
    shown = build_config()  # the defaults a run without --preset gets (DEFAULT_PRESET's values)
    for section, cls in SECTIONS.items():
        add_dataclass_flags(
            t.add_argument_group(f"{section} options"), cls, prefix=f"{section}.", defaults=getattr(shown, section)
        )

    e = sub.add_parser(
        "eval",
        help="score text with a trained model",
        description="Print JSON with the mean loss "
        "(nats/token), perplexity and bits per token over the whole text, read sequentially with the "
        "state carried. Without DATA, the run's own validation text is scored.",
    )
    e.add_argument("run_dir", metavar="RUN_DIR", help="A language-model run directory (made by rnnlm train).")
    e.add_argument("data", nargs="*", metavar="DATA", help="Text files, directories or globs to score.")
    e.add_argument(
        "--split",
        choices=("train", "valid", "test"),
        default=None,
        help="Without DATA: which split of the run's data (default: valid, else train).",
    )
    add_load_flags(e)
    add_dataclass_flags(e, LMEvalConfig, prefix="eval.")
    for flag, name in (("--batch-size", "eval_batch_size"), ("--seq-len", "eval_seq_len")):  # rnnlm 0.1's names
        e.add_argument(
            flag,
            dest=f"eval.{name}",
            type=int,
            default=argparse.SUPPRESS,
            metavar="N",
            help=f"Same as --{name.replace('_', '-')}.",
        )
    dyn = e.add_argument_group(
        "dynamic evaluation",
        'Also report dynamic evaluation (Krause et al. 2018), as a separate figure under "dynamic": the text is '
        "read as one stream and, after each chunk is scored, the model takes one SGD step on it, so "
        "that it adapts to what it has read (the saved model is not changed).",
    )
    dyn.add_argument(
        "--dynamic-lr",
        type=float,
        default=0.0,
        metavar="LR",
        help=f"SGD step size (0 = off; {DYNAMIC_LR} was chosen on timemachine's validation text for the char-cpu "
        "model) (default: 0)",
    )
    dyn.add_argument(
        "--dynamic-decay",
        type=float,
        default=0.0,
        metavar="D",
        help="pull the weights back toward the trained ones by this share per step (default: 0)",
    )
    dyn.add_argument(
        "--dynamic-seq-len",
        type=int,
        default=DYNAMIC_SEQ_LEN,
        metavar="N",
        help=f"tokens per chunk, i.e. between two updates (default: {DYNAMIC_SEQ_LEN})",
    )

    g = sub.add_parser(
        "generate",
        help="generate text",
        description="Generate text from a trained model and stream it to stdout. The output starts with the prefix.",
    )
    g.add_argument("run_dir", metavar="RUN_DIR", help="A language-model run directory (made by rnnlm train).")
    add_load_flags(g)
    add_dataclass_flags(g, GenerateConfig, prefix="gen.")

    pl = sub.add_parser(
        "plot",
        help="draw learning curves",
        description="Plot the learning curves of one or more runs of any kind (language model, tagger, frame "
        "model) into a PNG: the training and validation loss (bits per token for a language model, nats for the "
        "others), the validation scores that taggers and frame models log (accuracy, F1) and the learning rate. "
        "An ensemble run gets lines for each member (and each refit). Needs matplotlib (pip install 'rnnlm[plot]').",
    )
    pl.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="Run directories, or an ensemble member's.")
    pl.add_argument("--out", help="PNG file (default: RUN_DIR/metrics.png for one run, runs.png for several).")
    pl.add_argument("--x", choices=("step", "epoch", "elapsed_s"), default="step", help="x axis (default: step).")

    i = sub.add_parser(
        "info",
        help="describe a run or the named corpora",
        description="Describe a run of any kind (made by rnnlm train, rnnlm tag train or rnnlm frames train): "
        "the model, engine, device and precision, the parameter count, the vocabulary, tag set or classes, the "
        "best and last checkpoints with their scores, an ensemble's members and final model, and the files. "
        "Without RUN_DIR (or with --corpora), list the named corpora.",
    )
    i.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="A run directory.")
    i.add_argument("--corpora", action="store_true", help="List the named corpora and where each is found.")
    i.add_argument("--json", action="store_true", help="Print JSON (numbers as numbers) for scripts.")
    from rnnlm.frames.cli import add_frames_parser  # its flags come from core/flags.py, as the tagger's do

    add_frames_parser(sub)

    from rnnlm.tagging.cli import add_tag_parser

    add_tag_parser(sub)
    return p


def cmd_train(ns: argparse.Namespace) -> int:
    from rnnlm.lm.run import train
    from rnnlm.training import runs

    overrides = _sections(ns)
    if ns.resume:
        if ns.preset or ns.config:
            raise RnnlmError("--resume continues a run with its own config; drop --preset/--config")
        resume = runs.open_run(ns.resume, lm_run.KIND)  # read once; train checks the overrides once
        cfg = runs.with_overrides(resume.config, overrides)
    else:
        resume, base = None, None
        if ns.config:
            base = runs.config_from_json(ckpt.read_json(ns.config, "config"), lm_run.KIND, Path(ns.config))
            base.train.out = None  # never write into the run the config came from
        cfg = build_config(overrides, ns.preset, base)
    result = train(cfg, resume=resume)
    print(f"done: {result.run_dir} | generate with: rnnlm generate {result.run_dir} --prefix TEXT")
    return 0


def cmd_eval(ns: argparse.Namespace) -> int:
    from rnnlm.core.text import read_texts
    from rnnlm.lm.api import load
    from rnnlm.lm.data.dataset import load_corpus

    ecfg = LMEvalConfig(**{k[5:]: v for k, v in vars(ns).items() if k.startswith("eval.")})
    ecfg.check()
    if ns.dynamic_lr < 0 or not 0 <= ns.dynamic_decay < 1 or ns.dynamic_seq_len < 1:
        raise ConfigError(
            f"dynamic evaluation needs --dynamic-lr >= 0, --dynamic-decay in [0, 1) and --dynamic-seq-len >= 1; got "
            f"{ns.dynamic_lr}, {ns.dynamic_decay} and {ns.dynamic_seq_len}"
        )
    lm = load(ns.run_dir, ns.checkpoint, ns.device, ns.engine)
    if ns.data:
        ids = lm.encode_text(read_texts(ns.data))
        result = {"data": ns.data}
    else:
        corpus = load_corpus(lm.config.data, lm.vocab)
        splits = {"train": corpus.train, "valid": corpus.val, "test": corpus.test}
        split = ns.split or ("valid" if corpus.val is not None else "train")
        if splits[split] is None:
            raise RnnlmError(f"the run's data has no {split} split; pass DATA or choose --split")
        ids = splits[split]
        result = {"data": corpus.description, "split": split}
    result.update(lm.evaluate_ids(ids, ecfg.eval_batch_size, ecfg.eval_seq_len))
    if ns.dynamic_lr > 0:  # a separate figure: the model learns from the text while scoring it
        result["dynamic"] = lm.evaluate_dynamic(ids, ns.dynamic_lr, ns.dynamic_decay, ns.dynamic_seq_len)
    result["checkpoint"] = lm.checkpoint.get("path")
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


def cmd_generate(ns: argparse.Namespace) -> int:
    from rnnlm.lm.api import load

    gcfg = GenerateConfig(**{k[4:]: v for k, v in vars(ns).items() if k.startswith("gen.")})
    gcfg.check()
    lm = load(ns.run_dir, ns.checkpoint, ns.device, ns.engine)
    if gcfg.beam or gcfg.num_samples > 1:
        outs = lm.generate(
            gcfg.prefix, gcfg.length, gcfg.temperature, gcfg.top_k, gcfg.top_p, gcfg.beam, gcfg.num_samples, gcfg.seed
        )
        outs = [outs] if isinstance(outs, str) else outs
        for k, text in enumerate(outs):
            if len(outs) > 1:
                print(f"--- sample {k + 1} ---")
            print(text)
        return 0
    for piece in lm.stream(gcfg.prefix, gcfg.length, gcfg.temperature, gcfg.top_k, gcfg.top_p, gcfg.seed):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_plot(ns: argparse.Namespace) -> int:
    from rnnlm.core.plot import plot_runs

    # A language model's loss is drawn in bits per token, as its log prints it; a tagger's and a frame model's in
    # nats, beside their scores. A folder without config.json is an ensemble's member (a frame run's), or no run.
    bits = []
    for run_dir in map(Path, ns.run_dirs):
        member = not (run_dir / ckpt.CONFIG).exists() and (run_dir / ckpt.METRICS).is_file()
        bits.append(not member and run_format(run_dir) == LM_FORMAT)
    print(plot_runs(ns.run_dirs, ns.out, ns.x, bits))
    return 0


def run_format(run_dir: Path) -> str:
    """The kind of run in a directory, as its config.json's format says; a clear error for a folder that is
    no run, or a part of one."""
    made_by = "a folder made by `rnnlm train`, `rnnlm tag train` or `rnnlm frames train`"
    if not run_dir.exists():
        raise CheckpointError(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: not a directory; give a run directory ({made_by})")
    if not (run_dir / ckpt.CONFIG).is_file():
        for parent in list(run_dir.absolute().parents)[:3]:
            if (parent / ckpt.CONFIG).is_file():
                raise CheckpointError(
                    f"{run_dir}: a part of the run in {parent}, not a run of its own; give that run's folder"
                )
        raise CheckpointError(f"{run_dir}: not a run directory (it has no {ckpt.CONFIG}); give {made_by}")
    raw = ckpt.read_json(run_dir / ckpt.CONFIG, "run config")
    known = (LM_FORMAT, TAG_FORMAT, FRAMES_FORMAT)
    fmt = raw.get("format", LM_FORMAT) if isinstance(raw, dict) else None  # rnnlm 0.1 wrote no format
    if fmt not in known:
        raise CheckpointError(
            f"{run_dir / ckpt.CONFIG}: {'format ' + repr(fmt) if fmt else 'no run config'}, which is none of the "
            f"kinds of run this rnnlm knows ({', '.join(known)}); give {made_by}"
        )
    return fmt


def cmd_info(ns: argparse.Namespace) -> int:
    from rnnlm.lm.data.corpora import list_corpora

    if ns.corpora or not ns.run_dir:
        rows = list_corpora()
        if ns.json:
            for c in rows:
                print(json.dumps(c, ensure_ascii=False))
        else:
            print(_table([{k: c[k] for k in ("name", "level", "status", "description")} for c in rows]))
        return 0
    run_dir = Path(ns.run_dir)
    fmt = run_format(run_dir)
    if fmt == LM_FORMAT:
        from rnnlm.lm.info import describe
    elif fmt == FRAMES_FORMAT:
        from rnnlm.frames.info import describe
    else:
        from rnnlm.tagging.info import describe
    info, rows = describe(run_dir)
    if ns.json:
        print(json.dumps({"format": fmt, **info}, ensure_ascii=False, indent=2))
    else:
        print(table(rows))
    return 0


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _table(rows: list[dict[str, Any]], header: bool = True) -> str:
    """Rows of equal keys as aligned text columns."""
    if not rows:
        return "(none)"
    keys = list(rows[0])
    cells = [[_fmt(r.get(k, "")) for k in keys] for r in rows]
    if header:
        cells.insert(0, keys)
    widths = [max(len(row[i]) for row in cells) for i in range(len(keys))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _warn(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    print(f"rnnlm: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    handlers = {"train": cmd_train, "eval": cmd_eval, "generate": cmd_generate, "plot": cmd_plot, "info": cmd_info}
    handler = handlers.get(ns.command) or ns.handler  # a subcommand defined in another module sets its handler
    try:
        with warnings.catch_warnings():  # restores showwarning when the command is done
            warnings.showwarning = _warn  # our warnings are messages for the user, not for a developer
            return handler(ns)
    except RnnlmError as e:  # the user's input, files or settings: the message says what to do
        print(f"rnnlm: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `rnnlm generate ... | head`: the reader has all it wanted
        sys.stderr.close()
        return 0
    except OSError as e:  # the file system said no: a path, its permissions, a full disk
        print(f"rnnlm: error: {os_error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        where = f" ({e})" if str(e) else ""
        print(f"rnnlm: interrupted{where}", file=sys.stderr)
        return 130
    except Exception:  # anything else is a bug in rnnlm, whatever its type (ValueError included)
        traceback.print_exc()
        print(
            f"rnnlm: internal error: this is a bug in rnnlm {__version__}, not in your input; please report it "
            "with the command and the traceback above",
            file=sys.stderr,
        )
        return 1


def os_error_message(e: OSError) -> str:
    """One line for an OSError: the path it names, what the system said, and what to check."""
    path = e.filename
    if path is not None and e.filename2 is not None:
        path = f"{path} -> {e.filename2}"
    said = f"[Errno {e.errno}] {e.strerror}" if e.errno is not None and e.strerror else str(e)
    verb = "write" if e.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG) else "read or write"
    where = f"cannot {verb} {path}" if path is not None else "a file operation failed"
    return f"{where}: {said}; check the path, its permissions and the free space on its disk"


if __name__ == "__main__":
    sys.exit(main())
