"""The `rnnlm` command: main, its error mapping, and the commands that read every kind of run (info, plot).

Each use mounts its own subcommands: the language model's train | eval | generate (lm/cli.py), tag (tagging/cli.py)
and frames (frames/cli.py). Their flags are generated from the config dataclasses, so every flag's name, default
and help text live next to the field they set.
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
from rnnlm.core.errors import CheckpointError, RnnlmError
from rnnlm.core.flags import MarkdownHelpAction
from rnnlm.frames.config import FORMAT as FRAMES_FORMAT
from rnnlm.lm.config import FORMAT as LM_FORMAT
from rnnlm.tagging.config import FORMAT as TAG_FORMAT
from rnnlm.training.distributed import shutdown
from rnnlm.training.runinfo import table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rnnlm",
        description="Train, evaluate and use recurrent networks (RNN, GRU, LSTM): language models on any text "
        "(train, eval, generate), sequence taggers (tag) and frame-sequence models (frames).",
    )
    p.add_argument("--version", action="version", version=f"rnnlm {__version__}")
    p.add_argument("--help-markdown", action=MarkdownHelpAction)  # hidden: prints docs/cli.md
    commands = "{train,eval,generate,plot,info,frames,tag,serve,export,card}"
    sub = p.add_subparsers(dest="command", required=True, metavar=commands)

    from rnnlm.lm.cli import add_lm_parsers  # train, eval, generate: the language model's commands

    add_lm_parsers(sub)

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
    from rnnlm.serve.cli import add_serve_parser  # the web page over runs of every kind

    add_serve_parser(sub)
    from rnnlm.share import add_share_parsers  # export, card: any kind of run

    add_share_parsers(sub)
    return p


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
    handlers = {"plot": cmd_plot, "info": cmd_info}
    handler = handlers.get(ns.command) or ns.handler  # each use's subcommands set their handler
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
    finally:
        shutdown()  # under torchrun: leave the process group before exit


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
