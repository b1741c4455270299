"""Training-step speed of a tagger at each matmul precision, side by side in one process.

    python bench/tagger_step.py                 # the UPOS benchmark's shape, with character-LM features
    python bench/tagger_step.py --layers 1 --lm-dim 768 --batch 16

A synthetic batch of sentences 10 to 29 words long (the shape matters, not the words) goes through forward,
CRF loss, backward and an AdamW step, timed over --steps steps after --warmup, for float32 and bfloat16
matmuls (--matmul-dtype), one torch thread by default. Prints tokens per second for each and their ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rnnlm.tagging.config import TaggerConfig
from rnnlm.tagging.model import Tagger


def tokens_per_s(dtype: str, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    cfg = TaggerConfig(layers=args.layers, hidden=args.hidden, char_filters=150, dropout=0.33,
                       char_lm="features" if args.lm_dim else None, matmul_dtype=dtype)  # fmt: skip
    model = Tagger(cfg, 15_734, 110, 17, 0, args.lm_dim).train()
    opt = torch.optim.AdamW(model.parameters(), 4e-3)
    rng = np.random.default_rng(0)
    lengths = torch.tensor(sorted(rng.integers(10, 30, args.batch), reverse=True))
    B, T = args.batch, int(lengths.max())
    words, chars = torch.randint(1, 15_734, (B, T)), torch.randint(1, 110, (B, T, 12))
    lm = torch.randn(B, T, args.lm_dim) if args.lm_dim else None
    tags, mask = torch.randint(0, 17, (B, T)), torch.arange(T)[None] < lengths[:, None]

    def step() -> None:
        opt.zero_grad()
        model.loss(model(words, chars, lengths, lm), tags, mask).backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    return int(lengths.sum()) * args.steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--lm-dim", type=int, default=768, help="character-LM feature width (0: none)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    speed = {dtype: tokens_per_s(dtype, args) for dtype in ("float32", "bfloat16")}
    for dtype, v in speed.items():
        print(f"{dtype}: {v:,.0f} tokens/s")
    print(f"bfloat16 / float32: {speed['bfloat16'] / speed['float32']:.2f}x")


if __name__ == "__main__":
    main()
