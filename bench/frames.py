"""The frame-sequence protocol: train on a UEA/UCR training file with several seeds, score the test file.

Not a test: it measures and prints. Each seed is one whole `rnnlm frames train` run (validation splits, early
stopping, refits and ensemble members are all drawn from the training file; the test file is scored once, at
the end, and chooses nothing). Prints one row per seed, then the mean and the minimum test accuracy and the
wall and CPU time per run.

    python bench/frames.py                                  # Japanese Vowels, seeds 0-4, the default recipe
    python bench/frames.py --cv 5 --set ensemble=1          # compare recipes on the training file only
    python bench/frames.py --train X_TRAIN.ts --test X_TEST.ts                  # another archive data set

--cv K chooses recipes without the test file: run r holds out fold r % K of the training file (stratified,
drawn with --cv-seed), trains the whole recipe on the rest and scores the held-out fold, so that seeds 0..K-1
score every training sequence once. Unlike the validation report of a run, this also measures what a refit or
an ensemble adds, since no part of the recipe has seen the held-out fold.

Torch runs with one thread unless --threads says otherwise: on models this small, more threads only add
synchronization (on our shared 2-core machine, 7.5 ms per step with one thread, 42 ms with two). With one
thread the process's CPU time is about the wall time the run would take on an idle machine.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rnnlm.core.checkpoint import read_metrics
from rnnlm.frames import api as frames
from rnnlm.frames.data import read_frames
from rnnlm.frames.prep import stratified_folds

DATA = Path(os.environ.get("RNNLM_DATA", "../shared/data")) / "japanese_vowels"


def parse_setting(text: str) -> tuple[str, object]:
    """name=value, the value read as a Python literal when it is one (32, 0.1, False), else as a string."""
    name, _, value = text.partition("=")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def epochs_trained(run_dir: Path) -> tuple[int, str]:
    """Epochs over all the run's trainings (members, refits), and the epoch count of each final member."""
    total = sum(int(read_metrics(m.parent)[-1]["epoch"]) for m in sorted(run_dir.rglob("metrics.jsonl")))
    model = frames.load(run_dir)
    final = json.loads(model.checkpoint["epochs"]) if "epochs" in model.checkpoint else [model.checkpoint["epoch"]]
    return total, "/".join(f"{float(e):g}" for e in final)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", default=str(DATA / "JapaneseVowels_TRAIN.ts"))
    p.add_argument("--test", default=str(DATA / "JapaneseVowels_TEST.ts"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a training setting")
    p.add_argument("--no-test", action="store_true", help="report validation only (of the members before refits)")
    p.add_argument("--cv", type=int, default=0, metavar="K", help="score held-out folds of the training file")
    p.add_argument("--cv-seed", type=int, default=0, help="seed of the --cv folds (default: 0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)  # this script owns its process
    settings = dict(parse_setting(s) for s in args.set)
    data = read_frames(args.train)
    folds = stratified_folds(data.labels, args.cv, args.cv_seed) if args.cv else None
    held = "held-out fold" if args.cv else "test"
    scored = f"{args.cv}-fold cross-validation on it" if args.cv else "no test" if args.no_test else f"test {args.test}"
    print(f"train {args.train} | {scored}")
    print(f"settings {settings or 'defaults'} | torch {torch.__version__}, {args.threads} thread(s)")
    columns = ["seed", "epochs run", "final epochs", "val loss", "val acc", f"{held} loss", f"{held} acc"]
    columns += [f"{held} macro-F1", "wall s", "CPU s"]
    print("| " + " | ".join(columns) + " |")
    print("|" + " ---: |" * len(columns))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            out = str(Path(tmp) / f"seed{seed}")
            kw = dict(seed=seed, out=out, progress=False, log=lambda line: None, **settings)
            start, cpu = time.perf_counter(), time.process_time()
            if folds is None:
                model = frames.train(args.train, test=None if args.no_test else args.test, **kw)
            else:
                fold = folds == seed % args.cv
                part = data.subset(np.flatnonzero(~fold))
                held_out = data.subset(np.flatnonzero(fold))
                model = frames.train(part, test=held_out, **kw)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            val, test = model.reports.get("val", {}), model.reports.get("test", {})
            epochs, final = epochs_trained(Path(out))
            row = {
                "val_loss": val.get("loss", float("nan")),
                "val_acc": val.get("accuracy", float("nan")),
                "test_loss": test.get("loss", float("nan")),
                "test_acc": test.get("accuracy", float("nan")),
                "test_f1": test.get("macro_f1", float("nan")),
                "wall": wall,
                "cpu": cpu,
            }
            rows.append(row)
            print(
                f"| {seed} | {epochs} | {final} | {row['val_loss']:.4f} | {row['val_acc']:.4f} | "
                f"{row['test_loss']:.4f} | {row['test_acc']:.4f} | {row['test_f1']:.4f} | {wall:.1f} | {cpu:.1f} |",
                flush=True,
            )

    def mean(key: str) -> float:
        return statistics.fmean(r[key] for r in rows)

    print(
        f"mean: val loss {mean('val_loss'):.4f}, val acc {mean('val_acc'):.4f}, {held} loss {mean('test_loss'):.4f}, "
        f"{held} acc {mean('test_acc'):.4f} "
        f"(min {min(r['test_acc'] for r in rows):.4f}), {held} macro-F1 {mean('test_f1'):.4f} | per run: wall "
        f"{mean('wall'):.1f} s (max {max(r['wall'] for r in rows):.1f} s), CPU {mean('cpu'):.1f} s "
        f"(max {max(r['cpu'] for r in rows):.1f} s)"
    )


if __name__ == "__main__":
    main()
