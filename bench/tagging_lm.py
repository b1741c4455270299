"""Train the forward and backward character language models whose states feed a tagger (``--char-lm``).

    python bench/tagging_lm.py ner --out runs/charlm-ner              # 300 s per model, both at once
    python bench/tagging_lm.py upos --budget 600 --out runs/charlm-upos
    python bench/tagging.py ner --set char_lm=runs/charlm-ner         # then the tagging benchmark

The text: the tagging task's training split (its tokens joined by spaces, one sentence per line, as the
tagger's features will read them), then wikitext-2's valid and test files and The Time Machine. Never
the task's dev or test split, which the tagger benchmark scores. ``OUT/text.txt`` holds it, and
``OUT/text.reversed.txt`` the same lines each reversed character by character. Reversing line by line
rather than the whole file keeps the lines in place, so both models hold out the same validation tail
(the last --val-fraction of the text, inside the shared corpora) and their bits per character compare.

Each model trains with ``rnnlm train``'s default recipe (char-cpu: a 2-layer LSTM, AdamW, cosine schedule
over the time budget) for --budget seconds; OUT/forward and OUT/backward are ordinary run directories.
The two train side by side by default (--jobs 2), each in a process of its own with --threads threads: on
a 2-core machine both get the budget's steps in the wall time of one.
Prints one JSON line with each model's validation bits per character, steps and seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import rnnlm
from rnnlm.core.atomic import atomic_write_bytes
from rnnlm.core.checkpoint import read_metrics
from rnnlm.tagging.encoding import read_tagged

TRAIN_SPLITS = {"upos": "ud_en_ewt/en_ewt-ud-train.conllu", "ner": "conll2003/eng.train"}
COLUMNS = {"upos": "upos", "ner": "ner"}
SHARED = ("wikitext-2/wiki.valid.tokens", "wikitext-2/wiki.test.tokens", "timemachine.txt")


def build_text(task: str, data: Path) -> str:
    """The training split's sentences, one per line, then the shared English corpora."""
    sentences = read_tagged(data / TRAIN_SPLITS[task], "auto", COLUMNS[task])
    parts = ["\n".join(" ".join(s.tokens) for s in sentences)]
    for name in SHARED:
        lines = (line.strip() for line in (data / name).read_text(encoding="utf-8").splitlines())
        parts.append("\n".join(line for line in lines if line))  # wikitext's blank lines and heading spacing
    return "\n".join(parts) + "\n"


def reverse_lines(text: str) -> str:
    """Every line reversed character by character, the lines in their order."""
    return "".join(line[::-1] + "\n" for line in text.splitlines())


def train_one(job: tuple) -> tuple[str, dict]:
    """Train one direction's model; returns the direction and its summary (a process pool's unit of work)."""
    direction, path, run_out, args, extra = job
    start = time.perf_counter()
    lm = rnnlm.train(
        path,
        out=run_out,
        time_budget=args.budget,
        threads=args.threads,
        val_fraction=args.val_fraction,
        log_every=500,
        pred_period=0,
        progress=False,
        **extra,
    )
    rows = read_metrics(lm.run_dir)
    best = min(r["val_loss"] for r in rows if "val_loss" in r)
    m = lm.config.model
    row = {
        "run_dir": str(lm.run_dir),
        "model": f"{m.cell} {m.layers}x{m.hidden}",
        "val_bpc": best / math.log(2),
        "steps": rows[-1]["step"],
        "train_seconds": rows[-1]["elapsed_s"],
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    print(f"{direction}: {row}", file=sys.stderr)
    return direction, row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=sorted(TRAIN_SPLITS))
    p.add_argument("--data", default=os.environ.get("RNNLM_DATA", "../shared/data"), help="the shared data folder")
    p.add_argument("--out", required=True, help="folder for the texts and the forward/ and backward/ runs")
    p.add_argument("--budget", type=float, default=300.0, help="seconds of training per model (default: 300)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training step")
    p.add_argument(
        "--jobs", type=int, default=2, help="models trained side by side, one process each (default: 2, both at once)"
    )
    p.add_argument("--val-fraction", type=float, default=0.03, help="held-out tail of the text (default: 0.03)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an `rnnlm train` setting")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = build_text(args.task, Path(args.data))
    files = {"forward": out / "text.txt", "backward": out / "text.reversed.txt"}
    atomic_write_bytes(files["forward"], text.encode("utf-8"))
    atomic_write_bytes(files["backward"], reverse_lines(text).encode("utf-8"))
    print(f"text: {len(text):,} characters, {text.count(chr(10)):,} lines -> {out}", file=sys.stderr)

    extra = {k: json.loads(v) if v[:1] in "0123456789-[{" else v for k, v in (s.split("=", 1) for s in args.set)}
    result: dict[str, object] = {"task": args.task, "characters": len(text), "budget_s": args.budget, "jobs": args.jobs}
    jobs = [(direction, str(path), str(out / direction), args, extra) for direction, path in files.items()]
    # each model in a process of its own, side by side: the same budget each, half the wall time
    pool = ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) if args.jobs > 1 else None
    with pool or contextlib.nullcontext():
        result.update((pool.map if pool else map)(train_one, jobs))
    result["threads"] = args.threads  # each model's torch threads (this process trains none when --jobs > 1)
    print(json.dumps(result))
    atomic_write_bytes(out / "result.json", (json.dumps(result, indent=2) + "\n").encode("utf-8"))


if __name__ == "__main__":
    main()
