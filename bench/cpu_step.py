"""What each of the CPU training step's fast paths is worth, side by side in one process.

    python bench/cpu_step.py                      # char-cpu's model (LSTM 2 x 448, bfloat16 matmuls), batch 32 x 64
    python bench/cpu_step.py --windows 12 --json cpu_step.json

Not a test: it measures and prints. Each setting trains its own copy of the same model on one fixed batch with
the trainer's real step (`Trainer.train_step`, the language-model loss), the settings alternating window by
window so that a change in the machine's load hits all alike; the median of the windows is reported.

* all:         every fast path on (what rnnlm runs);
* none:        every one off (the step as it was before them);
* no-X:        all but X, where X is
  * packing:   the recurrent weights packed once per sequence for oneDNN (gemm.packed);
  * masks:     dropout masks from 16-bit draws (recurrent/dropout.py) instead of torch's bernoulli_;
  * fused-adam: AdamW's fused kernel instead of torch's per-tensor loop;
  * c-steps:   the LSTM's pointwise step work in C (recurrent/csrc/lstm_step.c) instead of torch operators.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from rnnlm.lm.config import build_config
from rnnlm.lm.model import RNNLM
from rnnlm.recurrent import dropout, gemm, sequence_fns
from rnnlm.training.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import _OneBatch  # noqa: E402

PATHS = ("packing", "masks", "fused-adam", "c-steps")


def _bernoulli_mask(shape: tuple[int, ...], p: float, like: torch.Tensor) -> torch.Tensor:
    return like.new_empty(shape).bernoulli_(1 - p).div_(1 - p)


@contextmanager
def paths_off(off: set[str]):
    """The fast paths named in ``off`` switched to their fallbacks (fused AdamW is chosen per trainer)."""
    saved = dropout.dropout_mask
    if "masks" in off:
        dropout.dropout_mask = _bernoulli_mask
    try:
        with gemm.onednn(pack="packing" not in off), sequence_fns.native_steps("c-steps" not in off):
            yield
    finally:
        dropout.dropout_mask = saved


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--windows", type=int, default=8, help="timed windows per setting (default: 8)")
    p.add_argument("--steps", type=int, default=10, help="training steps per window (default: 10)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    cfg = build_config({})  # char-cpu, the default preset
    settings = {"all": set(), "none": set(PATHS), **{f"no-{x}": {x} for x in PATHS}}
    X, Y = (torch.randint(0, 65, (cfg.train.batch_size, cfg.train.seq_len)) for _ in range(2))
    trainers = {}
    for name, off in settings.items():
        torch.manual_seed(0)
        model = RNNLM(cfg.model, 65)
        trainer = Trainer(model, _OneBatch(), cfg.train)
        if "fused-adam" in off:
            trainer.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, foreach=False)
        trainers[name] = trainer
        with paths_off(off):
            for _ in range(3):  # warm-up: kernels built, buffers allocated
                trainer.train_step((X, Y))
    rates: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.windows):
        for name, off in settings.items():
            with paths_off(off):
                start = time.perf_counter()
                for _ in range(args.steps):
                    trainers[name].train_step((X, Y))
                rates[name].append(X.numel() * args.steps / (time.perf_counter() - start))
    median = {name: statistics.median(r) for name, r in rates.items()}
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}; char-cpu step, batch {tuple(X.shape)}")  # fmt: skip
    print(f"{'setting':<16}{'tokens/s':>10}{'all / this':>12}")
    for name, rate in median.items():
        print(f"{name:<16}{rate:>10,.0f}{median['all'] / rate:>12.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"tokens_per_s": median, "windows": rates}, indent=1) + "\n")


if __name__ == "__main__":
    main()
