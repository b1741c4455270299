"""The forward and backward character language models a tagger reads (``rnnlm tag lm``, ``--char-lm DIR``).

A tagger's contextual string embeddings (char_lm_features.py) come from two character LMs: one reads the
text left to right, the other right to left. ``train_char_lms`` trains both from the user's own text:

- The text: plain text files as they are, and tagged files (CoNLL-2003, CoNLL-U) as their words, one sentence
  per line, joined by spaces: the way the tagger's features will read them. ``OUT/text.txt`` holds it and
  ``OUT/text.reversed.txt`` the same lines each reversed character by character. Reversing line by line keeps
  the lines in place, so both models hold out the same validation tail and their bits per character compare.
- Each model is an ordinary language-model run (``OUT/forward``, ``OUT/backward``) with ``rnnlm train``'s
  default recipe (char-cpu) for the time budget, so ``rnnlm info``, ``eval`` and ``generate`` read them too.
- The two train side by side, one process each, where there are two cores (one thread each); one after the
  other elsewhere, each with half the budget, so that the wall time is the budget either way.
- Ctrl-C stops both, each saving its last checkpoint; ``rnnlm tag lm --resume OUT`` (``resume=True``)
  continues them, and a model that had finished is not trained again (``finished.json``, as for ensemble
  members). ``OUT/lm.json`` sums up what was trained.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.atomic import atomic_write_bytes, atomic_write_json
from rnnlm.core.errors import DataError, RnnlmError
from rnnlm.core.text import read_text, resolve_paths
from rnnlm.lm import run as lm_run
from rnnlm.lm.config import RunConfig, build_config, split_settings
from rnnlm.tagging.char_lm_features import DIRECTIONS
from rnnlm.tagging.conll import read_conll2003, read_conllu
from rnnlm.training import ensemble as members
from rnnlm.training import runs

TEXT, REVERSED, SUMMARY = "text.txt", "text.reversed.txt", "lm.json"
TEXT_FORMATS = ("auto", "text", "conll2003", "conllu")
COMMAND = "rnnlm tag lm"
# What every character LM of a tagger trains with, beside the default recipe: a small held-out tail (the text
# is mostly for training), no samples, no progress bar (two processes share the terminal).
LM_SIZE = "XL"  # 2 x 448: the tagging presets' figures were measured with it (bench/notes/tagging.md)
LM_DEFAULTS: dict[str, Any] = {"val_fraction": 0.03, "log_every": 500, "pred_period": 0, "progress": False}


def text_format(path: Path, fmt: str = "auto") -> str:
    """How a file is read: ``fmt`` when given; for ``auto``, conllu for a ``*.conllu`` file, conll2003 for a
    file whose first line that is not blank starts with ``-DOCSTART-`` (as CoNLL-2003 files do), else text."""
    if fmt != "auto":
        return fmt
    if path.suffix == ".conllu":
        return "conllu"
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                return "conll2003" if line.startswith("-DOCSTART-") else "text"
    return "text"


def lm_text(specs: Sequence[str | Path], fmt: str = "auto") -> str:
    """The text the two models learn: plain files as they are, tagged files as their sentences' words, one
    sentence per line; files, directories or globs (``fmt`` applies to every file)."""
    if fmt not in TEXT_FORMATS:
        raise RnnlmError(f"--format {fmt!r}: choose one of {', '.join(TEXT_FORMATS)}")
    paths = resolve_paths(specs)
    if not paths:
        raise DataError("no text was given; pass text files, tagged files (CoNLL-2003, CoNLL-U), directories or globs")
    parts = []
    for path in paths:
        kind = text_format(path, fmt)
        if kind == "text":
            text = read_text(path)
        else:
            sentences = read_conllu(path) if kind == "conllu" else read_conll2003(path)
            text = "\n".join(" ".join(s.tokens) for s in sentences)
        parts.append(text if text.endswith("\n") else text + "\n")
    text = "".join(parts)
    if not text.strip():
        raise DataError(f"{', '.join(map(str, paths))}: no text to learn from (every file is empty)")
    return text


def reverse_lines(text: str) -> str:
    """Every line reversed character by character, the lines in their order."""
    return "".join(line[::-1] + "\n" for line in text.splitlines())


@dataclass
class _Direction:
    """One model to train (a worker process's unit of work; picklable)."""

    name: str  # forward or backward
    run_dir: Path
    cfg: RunConfig
    resume: bool
    top: Path
    threads: int = 0  # torch threads of the worker process (0: leave them)


def _train_direction(job: _Direction, log: Callable[[str], None] | None = None) -> str:
    """Train (or continue) one direction's model; a module-level function, so that a worker can run it."""
    import torch

    if job.threads:
        torch.set_num_threads(job.threads)
    out = log or (lambda msg: print(msg, flush=True))

    def say(msg: str) -> None:
        out(f"{job.name} | {msg}")

    def train(extra: Sequence[Any]) -> str:
        resume = job.run_dir if job.resume else None
        return lm_run.train(job.cfg, resume, say, extra).stop_reason

    return members.train_member(job.name, job.run_dir, job.top, COMMAND, train)


def plan(cores: int, jobs: int = 0) -> tuple[int, float]:
    """(models side by side, the share of the budget each model trains for): both at once where there are two
    cores (``jobs`` 0 or 2), each for the whole budget; one at a time elsewhere, each for half of it."""
    parallel = 2 if (jobs == 0 and cores >= 2) or jobs >= 2 else 1
    return parallel, 1.0 if parallel == 2 else 0.5


def train_char_lms(
    texts: Sequence[str | Path],
    out: str | Path,
    *,
    resume: bool = False,
    time_budget: float = 600.0,
    fmt: str = "auto",
    jobs: int = 0,
    settings: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the forward and backward character LMs of ``texts`` in ``out`` within ``time_budget`` seconds of
    wall time, or continue them where ``out`` holds them already; returns (and writes to ``out/lm.json``) each
    model's validation bits per character, steps and seconds. ``settings``: ``rnnlm train`` settings for both
    models (hidden=1024, cell="gru", ...), over the default recipe. ``resume``: continue the models in ``out``
    (``texts`` are then not read: the models keep learning the text they began with)."""
    out = Path(out)
    if time_budget <= 0 or not math.isfinite(time_budget):
        raise RnnlmError(f"--time-budget {time_budget}: must be a positive number of seconds")
    start = time.perf_counter()
    parallel, share = plan(members.usable_cores(), jobs)
    started = any((out / d / ckpt.CONFIG).is_file() for d in DIRECTIONS)
    if resume and not (out / TEXT).is_file():
        raise RnnlmError(f"--resume {out}: holds no character LMs begun by {COMMAND} ({out / TEXT} is missing)")
    if started and not resume:
        raise RnnlmError(
            f"--out {out}: already holds character LMs; continue them with `{COMMAND} --resume {out}` or choose "
            "another --out"
        )
    if resume:
        log(f"char LMs: continuing the models in {out}")
    else:
        runs.check_writable(out)
        text = lm_text(texts, fmt)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / TEXT, text.encode("utf-8"))
        atomic_write_bytes(out / REVERSED, reverse_lines(text).encode("utf-8"))
        log(f"char LMs: {len(text):,} characters, {text.count(chr(10)):,} lines -> {out / TEXT}")
    settings = dict(settings or {})
    if not {"hidden", "size"} & set(settings):  # the width the tagging presets were measured with, not --size auto
        settings["size"] = LM_SIZE
    base = {**LM_DEFAULTS, **settings, "time_budget": time_budget * share}
    todo = []
    for name, text_file in zip(DIRECTIONS, (TEXT, REVERSED), strict=True):
        where = out / name
        if members.is_finished(where):
            log(f"char LMs: {name} finished before, in {where}")
            continue
        resume = (where / ckpt.CONFIG).is_file()
        cfg = build_config(split_settings({**base, "paths": [str((out / text_file).absolute())], "out": str(where)}))
        if parallel > 1:
            cfg.train = dataclasses.replace(cfg.train, threads=1)
        todo.append(_Direction(name, where, cfg, resume, out, threads=1 if parallel > 1 else 0))
    if todo:
        at_once = "side by side, one process and one thread each" if parallel > 1 else "one after the other"
        log(f"char LMs: training {', '.join(j.name for j in todo)} for {base['time_budget']:g} s each, {at_once}")
    if parallel > 1 and len(todo) > 1:
        members.train_in_workers(todo, parallel, out, COMMAND, _train_direction)
    else:
        for job in todo:
            _train_direction(job, log)
    summary = summarize(out)
    summary["wall_seconds"] = round(time.perf_counter() - start, 1)
    atomic_write_json(out / SUMMARY, summary)
    for name in DIRECTIONS:
        row = summary[name]
        log(f"char LMs: {name} {row['model']}, {row['steps']:,} steps, validation {row['val_bpc']:.4f} bits/char")
    return summary


def summarize(out: Path) -> dict[str, Any]:
    """Each direction's model, validation bits per character (its best), steps and training seconds."""
    summary: dict[str, Any] = {}
    for name in DIRECTIONS:
        run_dir = out / name
        rows = ckpt.read_metrics(run_dir)
        losses = [r["val_loss"] for r in rows if "val_loss" in r]
        m = runs.open_run(run_dir, lm_run.KIND).config.model
        summary[name] = {
            "model": f"{m.cell} {m.layers} x {m.hidden}",
            "val_bpc": min(losses) / math.log(2) if losses else float("nan"),
            "steps": rows[-1]["step"] if rows else 0,
            "train_seconds": rows[-1].get("elapsed_s", 0.0) if rows else 0.0,
        }
    return summary
