"""Where a GPU training step's time goes: the kernels of rnnlm's step (CUDA graph replays), by GPU time.

    python bench/profile_step.py --config recipe        # needs a CUDA GPU

Not a test: it measures and prints torch.profiler's table of the kernels in 20 replayed steps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import CONFIGS, rnnlm_step  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="recipe", choices=list(CONFIGS))
    ap.add_argument("--rows", type=int, default=25)
    args = ap.parse_args()
    device = torch.device("cuda")
    _, V, _, _, _, B, T, *_ = CONFIGS[args.config]
    X, Y = (torch.randint(0, V, (B, T), device=device) for _ in range(2))
    step = rnnlm_step(args.config, device)
    for _ in range(8):  # eager warm-up, autotuning and capture
        step(X, Y)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(20):
            step(X, Y)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
