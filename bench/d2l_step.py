"""The d2l recipe's float32 training step against the textbook loop's, side by side in one process.

    python bench/d2l_step.py                          # every path, alternating windows, median
    python bench/d2l_step.py --json out.json --threads 1
    python bench/d2l_step.py --profile rnnlm          # torch.profiler's table of one path's steps
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 python bench/d2l_step.py

Not a test: it measures and prints. Unlike bench/d2l_recipe.py (whole 250-epoch runs) and bench/speed.py's
"recipe" row (the recipe's shape with the default engine and init), every rnnlm path here is the trainer's
step exactly as `--preset d2l` configures it (RunConfig from the preset: engine, SGD lr 100, clip 0.01,
normal(0, 0.01) init), fed the recipe's own batches (Jay Chou lyrics, first 10,000 characters, random
sampling, 32 x 35). Paths:

* textbook: the book's loop step as bench/d2l_recipe.py writes it (one-hot matmuls, a list of per-step
  outputs, hand-written global-norm clipping and SGD).
* rnnlm: ``Trainer.train_step`` with the preset as it is.
* rnnlm-scratch / rnnlm-cpu: the same with the engine forced (the reference cells / the cpu engine).

"% f32 peak" divides each path's useful FLOPs per second (forward matmuls times 3; a one-hot input is a row
lookup, not a matmul) by a 2048^3 float32 torch.mm measured in the same process, "% dnnl" by the same product
through oneDNN (gemm.linear): the float32 matmul roofline of the machine it runs on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from rnnlm.lm.config import build_config, split_settings
from rnnlm.lm.data.batching import BatchSampler
from rnnlm.lm.data.dataset import load_corpus
from rnnlm.lm.model import RNNLM
from rnnlm.lm.task import LanguageModelTask

sys.path.insert(0, str(Path(__file__).resolve().parent))
import d2l_recipe  # noqa: E402
from speed import cpu_kind, cpu_model, matmul_peak  # noqa: E402

# The operators that do a step's matrix products (torch's MKL path, oneDNN's, and oneDNN's weight packing).
MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "mkldnn::_linear_pointwise", "mkldnn::_reorder_linear_weight"}

Step = Callable[[torch.Tensor, torch.Tensor], None]


def textbook_step(V: int, H: int = 256) -> Step:
    """One step of the book's loop (random sampling: a zero state per batch): bench/d2l_recipe.py's own step."""
    params = d2l_recipe.textbook_params(V, H)

    def step(X: torch.Tensor, Y: torch.Tensor) -> None:
        loss, _ = d2l_recipe.textbook_step(params, X, Y, torch.zeros(X.shape[0], H))
        loss.item()

    return step


def recipe_config(data: Path, engine: str | None = None):
    settings = {"paths": [str(data)], "sampling": "random", "progress": False, "pred_period": 0}
    cfg = build_config(split_settings(settings), preset="d2l")
    if engine:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, engine=engine))
    return cfg


def rnnlm_step(data: Path, engine: str | None = None) -> Step:
    """The trainer's step as `--preset d2l` runs it (the language-model task's loss), engine optionally forced."""
    from rnnlm.training.trainer import Trainer

    cfg = recipe_config(data, engine)
    corpus = load_corpus(cfg.data)
    task = LanguageModelTask(corpus, cfg.train, cfg.eval, torch.device("cpu"))
    torch.manual_seed(0)
    trainer = Trainer(RNNLM(cfg.model, len(corpus.vocab)), task, cfg.train, log=lambda _: None)
    return lambda X, Y: trainer.train_step((X, Y))


def recipe_batches(data: Path) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    cfg = recipe_config(data)
    corpus = load_corpus(cfg.data)
    sampler = BatchSampler(corpus.train, 32, 35, "random", random_offset=False, seed=0)
    epoch = 0
    while True:
        yield from sampler.batches(epoch)
        epoch += 1


def flops_per_token(V: int, H: int = 256) -> float:
    return 3.0 * (2 * H * H + 2 * H * V)  # recurrent and output matmuls, forward and backward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(os.environ.get("RNNLM_DATA", "../shared/data")) / "jaychou_lyrics.txt"
    ap.add_argument("--data", type=Path, default=default)
    ap.add_argument("--paths", nargs="+", default=["textbook", "rnnlm", "rnnlm-scratch", "rnnlm-cpu"])
    ap.add_argument("--windows", type=int, default=7)
    ap.add_argument("--steps", type=int, default=8, help="steps per timed window")
    ap.add_argument("--threads", type=int, help="intra-op threads (default: torch's)")
    ap.add_argument("--profile", help="print torch.profiler's table for this path instead of timing")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    V = len(load_corpus(recipe_config(args.data).data).vocab)
    make = {
        "textbook": lambda: textbook_step(V),
        "rnnlm": lambda: rnnlm_step(args.data),
        "rnnlm-scratch": lambda: rnnlm_step(args.data, "scratch"),
        "rnnlm-cpu": lambda: rnnlm_step(args.data, "cpu"),
    }
    batches = recipe_batches(args.data)
    if args.profile:
        from torch.profiler import profile

        step = make[args.profile]()
        for _ in range(5):
            step(*next(batches))
        with profile() as prof:
            for _ in range(10):
                step(*next(batches))
        events = prof.key_averages()
        print(events.table(sort_by="self_cpu_time_total", row_limit=30))
        total = sum(e.self_cpu_time_total for e in events)
        matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
        print(f"{args.profile}: {total / 10e3:.2f} ms of CPU time per step, {100 * matmul / total:.1f}% in matmuls")
        return
    steps = {k: make[k]() for k in args.paths}
    for step in steps.values():
        for _ in range(3):
            step(*next(batches))
    times: dict[str, list[float]] = {k: [] for k in steps}
    peak = peak_dnnl = 0.0  # GFLOP/s of a 2048^3 float32 product through torch.mm and through oneDNN
    cpu: dict[str, list[float]] = {k: [] for k in steps}  # CPU seconds of the process: robust to a shared machine
    for _ in range(args.windows):
        for k, step in steps.items():
            window = [next(batches) for _ in range(args.steps)]
            t, c = time.perf_counter(), time.process_time()
            for X, Y in window:
                step(X, Y)
            times[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
        # The peaks are timed between the windows too and the best kept: on a shared machine a single
        # measurement may land in a busy moment and make every share look larger than it is.
        peak = max(peak, matmul_peak(torch.device("cpu"), torch.float32, reps=1))
        peak_dnnl = max(peak_dnnl, matmul_peak(torch.device("cpu"), torch.float32, reps=1, onednn=True))
    info = {
        "cpu": cpu_model(),
        **cpu_kind(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "peak_gflops": {"float32": round(peak, 1), "float32_onednn": round(peak_dnnl, 1)},
    }
    print(json.dumps(info))
    tokens = 32 * 35 * args.steps
    base = tokens / statistics.median(times["textbook"]) if "textbook" in times else None
    base_cpu = statistics.median(cpu["textbook"]) if "textbook" in cpu else None
    rows = []
    print(
        f"{'path':<15}{'tok/s':>9}{'ms/step':>9}{'GFLOP/s':>9}{'% f32 peak':>11}{'% dnnl':>8}"
        f"{'/ textbook':>11}{'cpu ms':>8}{'cpu /':>7}"
    )
    for k, v in times.items():
        tps = tokens / statistics.median(v)
        gf = tps * flops_per_token(V) / 1e9
        row = {"path": k, "tokens_per_s": round(tps), "ms_per_step": round(1e3 * statistics.median(v) / args.steps, 2)}
        row |= {
            "gflops": round(gf, 1),
            "peak_share": round(gf / peak, 3),
            "onednn_peak_share": round(gf / peak_dnnl, 3),
        }
        row["vs_textbook"] = round(tps / base, 2) if base else None
        row["cpu_ms_per_step"] = round(1e3 * statistics.median(cpu[k]) / args.steps, 2)
        row["cpu_vs_textbook"] = round(base_cpu / statistics.median(cpu[k]), 2) if base_cpu else None
        rows.append(row)
        ratio = f"{row['vs_textbook']:>11}{row['cpu_ms_per_step']:>8}{row['cpu_vs_textbook']:>7}" if base else ""
        print(
            f"{k:<15}{tps:>9.0f}{row['ms_per_step']:>9}{gf:>9.1f}{100 * gf / peak:>10.1f}%"
            f"{100 * gf / peak_dnnl:>7.1f}%{ratio}",
            flush=True,
        )
    bound = None
    if base_cpu and torch.get_num_threads() == 1:
        # The most any path of these FLOPs can gain on one thread: every product at oneDNN's 2048^3 rate and
        # nothing else taking time, against the textbook's CPU time per step.
        bound = round(base_cpu / args.steps / (32 * 35 * flops_per_token(V) / (peak_dnnl * 1e9)), 2)
        print(f"bound: a step of these FLOPs at {peak_dnnl:.0f} GFLOP/s (oneDNN's 2048^3 rate) = {bound}x the textbook")
    if args.json:
        out = {**info, "steps_per_window": args.steps, "windows": args.windows, "rows": rows, "roofline_bound": bound}
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
