"""The frame-sequence protocol: train on a UEA/UCR training file with several seeds, score the test file.

Not a test: it measures and prints. Each seed is one whole `rnnlm frames train` run (the validation split,
early stopping and the best checkpoint chosen on validation loss are all drawn from the training file; the
test file is scored once, at the end, and chooses nothing). Prints one row per seed, then the mean and the
minimum test accuracy and the wall time per run.

    python bench/frames.py                                    # Japanese Vowels, seeds 0-4, the default recipe
    python bench/frames.py --no-test --set hidden=32 --set pooling=attention   # compare recipes on validation
    python bench/frames.py --train X_TRAIN.ts --test X_TEST.ts                   # another archive data set

Torch runs with one thread unless --threads says otherwise: on models this small, more threads only add
synchronization (on our shared 2-core machine, 7.5 ms per step with one thread, 42 ms with two).
"""

from __future__ import annotations

import argparse
import ast
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rnnlm import frames
from rnnlm.checkpoint import read_metrics

DATA = Path(os.environ.get("RNNLM_DATA", "../shared/data")) / "japanese_vowels"


def parse_setting(text: str) -> tuple[str, object]:
    """name=value, the value read as a Python literal when it is one (32, 0.1, False), else as a string."""
    name, _, value = text.partition("=")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", default=str(DATA / "JapaneseVowels_TRAIN.ts"))
    p.add_argument("--test", default=str(DATA / "JapaneseVowels_TEST.ts"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a training setting")
    p.add_argument("--no-test", action="store_true", help="report validation only (for choosing a recipe)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)  # this script owns its process
    settings = dict(parse_setting(s) for s in args.set)
    print(f"train {args.train}" + ("" if args.no_test else f" | test {args.test}"))
    print(f"settings {settings or 'defaults'} | torch {torch.__version__}, {args.threads} thread(s)")
    print("| seed | epochs run | best epoch | val loss | val acc | test acc | test macro-F1 | wall s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            start = time.perf_counter()
            model = frames.train(
                args.train,
                test=None if args.no_test else args.test,
                seed=seed,
                out=str(Path(tmp) / f"seed{seed}"),
                progress=False,
                log=lambda line: None,
                **settings,
            )
            wall = time.perf_counter() - start
            val, test = model.reports.get("val", {}), model.reports.get("test", {})
            row = {
                "seed": seed,
                "epochs": read_metrics(model.run_dir)[-1]["epoch"],
                "best": model.checkpoint.get("epoch", "?"),
                "val_loss": val.get("loss", float("nan")),
                "val_acc": val.get("accuracy", float("nan")),
                "test_acc": test.get("accuracy", float("nan")),
                "test_f1": test.get("macro_f1", float("nan")),
                "wall": wall,
            }
            rows.append(row)
            print(
                f"| {seed} | {row['epochs']} | {row['best']} | {row['val_loss']:.4f} | "
                f"{row['val_acc']:.4f} | {row['test_acc']:.4f} | {row['test_f1']:.4f} | {wall:.1f} |",
                flush=True,
            )

    def mean(key: str) -> float:
        return statistics.fmean(r[key] for r in rows)

    print(
        f"mean: val loss {mean('val_loss'):.4f}, val acc {mean('val_acc'):.4f}, test acc {mean('test_acc'):.4f} "
        f"(min {min(r['test_acc'] for r in rows):.4f}), test macro-F1 {mean('test_f1'):.4f} | wall per run "
        f"{mean('wall'):.1f} s (max {max(r['wall'] for r in rows):.1f} s)"
    )


if __name__ == "__main__":
    main()
