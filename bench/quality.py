"""Quality per second: validation loss after a fixed wall-clock training budget (issue 10's protocol).

    python bench/quality.py                                   # char-cpu preset, tinyshakespeare, 300 s
    python bench/quality.py --preset char-gpu --budget 60 --device cuda
    python bench/quality.py --corpus timemachine --budget 120 --set dropout_out=0.3 --out runs/q-tm

Protocol: the named corpus at the character level, the first 90% of the text for training and the last
10% for validation (--val-fraction 0.1, nanoGPT's split). The run trains for --budget seconds of wall
clock as the trainer's --time-budget measures it (start-up and the final evaluation excluded, periodic
evaluations included). The figure is the mean cross-entropy in nats per character over the whole
validation text, read sequentially with the state carried (what `rnnlm eval` prints), of the checkpoint
with the best validation loss; bits per character are that / ln 2. Beside it, under "windows", the same
checkpoint under nanoGPT's protocol (`rnnlm eval --protocol windows --block 64`): consecutive windows of
--block characters, each read from a zero state, so that it compares like with like with a GPT of that block
(bench/gpt_baseline.py).

Dynamic evaluation (--dynamic-lr, on by default) is reported beside the figure, under "dynamic_eval", and
never in its place: the model learns from the validation text while it scores it.

Writes RUN/quality.json (the figure, the curve of validation loss against seconds, the settings, the
machine and its load average before and after) and RUN/quality.png (`rnnlm plot --x elapsed_s`).
The machine should be otherwise idle: a time budget measures the machine as much as the recipe, so the
load average before and after is recorded, and a warning is printed when it is not quiet.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import time
from pathlib import Path

import machine  # bench/machine.py
from rnnlm.core.atomic import atomic_write_json
from rnnlm.core.plot import plot_runs
from rnnlm.lm.config import LMEvalConfig, build_config, split_settings
from rnnlm.lm.evaluate import DYNAMIC_LR, DYNAMIC_SEQ_LEN, dynamic_evaluate, evaluate, evaluate_windows
from rnnlm.lm.run import load_model, train
from rnnlm.training.metrics import summarize

# Reference figures on a 2-core CPU machine of this kind, from the issue (nats/char after about 300 s).
ANCHORS_CPU = {
    "nanoGPT CPU config (4 x 128, block 64, batch 12, 6,000 iterations), 296 s": 1.600,
    "rnnlm default before the presets (LSTM 2 x 256), 300 s": 1.529,
    "the same with --schedule cosine --lr 3e-3 --epochs none, 300 s": 1.463,
}
QUIET_LOAD = 1.3  # a load average above this on a 2-core machine means something else is competing


def parse_value(text: str) -> object:
    """A --set value as a Python literal when it is one (0.3, True, None), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="char-cpu", help="training recipe (default: char-cpu)")
    p.add_argument("--corpus", default="tinyshakespeare", help="named corpus (default: tinyshakespeare)")
    p.add_argument("--budget", type=float, default=300.0, help="training seconds (default: 300)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    p.add_argument("--log-every", type=int, default=0, help="steps between curve points (default: the preset's)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override any setting")
    p.add_argument("--out", help="run directory (default: runs/quality-<preset>-<corpus>-<time>)")
    p.add_argument(
        "--dynamic-lr",
        type=float,
        default=DYNAMIC_LR,
        help=f"also report dynamic evaluation with this SGD step, apart from the figure (0 = skip; default: "
        f"{DYNAMIC_LR}, chosen on timemachine)",
    )
    p.add_argument(
        "--block",
        type=int,
        default=LMEvalConfig.eval_block,
        help=f"window of the windows protocol, reported beside the figure (default: {LMEvalConfig.eval_block}, "
        "nanoGPT's CPU config)",
    )
    args = p.parse_args()
    if args.block < 2:
        p.error(f"--block must be at least 2, got {args.block}")

    load_before = os.getloadavg()
    if load_before[0] > QUIET_LOAD:
        print(f"warning: load average {load_before[0]:.2f} > {QUIET_LOAD}: the machine is busy, the figure will suffer")
    settings: dict[str, object] = {
        "corpus": args.corpus,
        "level": "char",
        "val_fraction": 0.1,
        "time_budget": args.budget,
        "device": args.device,
        "out": args.out or f"runs/quality-{args.preset}-{args.corpus}-{time.strftime('%Y%m%d-%H%M%S')}",
        "progress": False,
    }
    if args.log_every:
        settings["log_every"] = args.log_every
    for item in args.set:
        name, _, value = item.partition("=")
        settings[name.replace("-", "_")] = parse_value(value)
    cfg = build_config(split_settings(settings), preset=args.preset)
    start = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - start  # what the user waits for: reading the text, --size auto's probe, training

    # The figure: the best checkpoint over the whole validation text, state carried, as `rnnlm eval` does it.
    model, _, _, meta = load_model(result.run_dir, "best", args.device)
    from rnnlm.lm.data.dataset import load_corpus

    corpus = load_corpus(result.config.data, result.vocab)
    ec = cfg.eval
    val = summarize(*evaluate(model, corpus.val, ec.eval_batch_size, ec.eval_seq_len))
    # The same checkpoint under nanoGPT's protocol: cold windows of --block, every target counted.
    win = summarize(*evaluate_windows(model, corpus.val, args.block, ec.eval_batch_size, ec.eval_seq_len))
    # Reported apart, never as the figure: the model keeps learning from the validation text as it scores it.
    dynamic = summarize(*dynamic_evaluate(model, corpus.val, args.dynamic_lr)) if args.dynamic_lr > 0 else None
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    report = {
        "protocol": "issue 10: char level, first 90% train / last 10% validation, nats/char of the best checkpoint",
        "preset": args.preset,
        "corpus": args.corpus,
        "budget_s": args.budget,
        "val_loss": round(val["loss"], 4),
        "val_bpc": round(val["bpt"], 4),
        "windows": {"block": args.block, "loss": round(win["loss"], 4), "bpc": round(win["bpt"], 4)},
        "steps": result.metrics.get("step"),
        "wall_s": round(wall, 1),
        "size": result.config.model.size,
        "hidden": result.config.model.hidden,
        "resolved": json.loads((result.run_dir / "config.json").read_text(encoding="utf-8")).get("resolved"),
        "best_checkpoint": {k: meta[k] for k in ("step", "epoch") if k in meta},
        "dynamic_eval": None
        if dynamic is None
        else {"lr": args.dynamic_lr, "seq_len": DYNAMIC_SEQ_LEN, "val_loss": round(dynamic["loss"], 4)},
        "stop": result.stop_reason,
        "curve": [
            {"elapsed_s": r["elapsed_s"], "step": r["step"], "val_loss": r["val_loss"], "train_loss": r["train_loss"]}
            for r in rows
            if "val_loss" in r
        ],
        "settings": {k: v for k, v in settings.items() if k != "out"},
        "config": result.config.to_dict(),
        "machine": machine.describe()
        | {
            "platform": platform.platform(),
            "device": str(args.device),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "anchors_cpu_300s": ANCHORS_CPU,
    }
    out = Path(result.run_dir)
    atomic_write_json(out / "quality.json", report)
    try:
        png = plot_runs([out], out / "quality.png", x="elapsed_s")
    except Exception as e:  # matplotlib missing: the JSON still holds the curve
        png = f"not drawn ({e})"
    print(
        f"{args.preset} on {args.corpus}, {args.budget:g} s: val {val['loss']:.4f} nats/char "
        f"({val['bpt']:.4f} bits/char); cold windows of {args.block}: {win['loss']:.4f} | "
        f"{out / 'quality.json'} | {png}"
    )
    if dynamic is not None:
        print(f"dynamic evaluation (lr {args.dynamic_lr:g}), reported apart: {dynamic['loss']:.4f} nats/char")


if __name__ == "__main__":
    main()
