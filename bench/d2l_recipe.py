"""Reproduce the d2l char-RNN recipe with rnnlm, and time it against the textbook loop.

    python bench/d2l_recipe.py                      # both samplers, 250 epochs, rnnlm only
    python bench/d2l_recipe.py --textbook           # also the textbook loop, side by side
    python bench/d2l_recipe.py --epochs 50 --seeds 0 1 2

The textbook loop below is written the way the book writes it (one-hot tensors multiplied by W_xh,
a Python list of per-step outputs, hand-written clipping and SGD). It is the baseline that rnnlm's
`--preset d2l` must match in perplexity and beat in time. Perplexity is exp of the mean training
loss over the epoch's batches, as the book reports it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import rnnlm
from rnnlm.lm.data.batching import BatchSampler


def corpus_ids(path: Path) -> tuple[np.ndarray, list[str]]:
    text = path.read_text(encoding="utf-8").replace("\n", " ").replace("\r", " ")[:10_000]
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    return np.array([index[c] for c in text], dtype=np.int64), chars


def textbook_params(V: int, H: int = 256) -> list[torch.Tensor]:
    """The book's weights, W_xh, W_hh, b_h, W_hq, b_q: normal(0, 0.01) matrices, zero biases."""
    params = [torch.randn(V, H) * 0.01, torch.randn(H, H) * 0.01, torch.zeros(H), torch.randn(H, V) * 0.01]
    params.append(torch.zeros(V))
    return [p.requires_grad_(True) for p in params]


def textbook_step(
    params: list[torch.Tensor],
    X: torch.Tensor,
    Y: torch.Tensor,
    state: torch.Tensor,
    lr: float = 100.0,
    theta: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the book's loop on a (B, T) batch from ``state``: one-hot inputs multiplied by W_xh, a list of
    per-step outputs, hand-written global-norm clipping at theta and SGD at lr. Returns the loss and the last state."""
    W_xh, W_hh, b_h, W_hq, b_q = params
    outputs = []
    for t in range(X.shape[1]):
        x = F.one_hot(X[:, t], W_xh.shape[0]).float()
        state = torch.tanh(x @ W_xh + state @ W_hh + b_h)
        outputs.append(state @ W_hq + b_q)
    loss = F.cross_entropy(torch.cat(outputs, 0), Y.t().reshape(-1))
    for p in params:
        p.grad = None
    loss.backward()
    with torch.no_grad():
        norm = torch.sqrt(sum((p.grad**2).sum() for p in params))
        if norm > theta:
            for p in params:
                p.grad.mul_(theta / norm)
        for p in params:
            p.sub_(lr * p.grad)
    return loss, state


def textbook_loop(ids: np.ndarray, vocab: list[str], sampling: str, epochs: int, seed: int) -> dict:
    """The book's loop: one-hot inputs, per-step matmuls, manual clip and SGD (lr 100, clip 0.01)."""
    torch.manual_seed(seed)
    random.seed(seed)
    V, H, B, T = len(vocab), 256, 32, 35
    params = textbook_params(V, H)
    sampler = BatchSampler(ids, B, T, sampling, random_offset=False, seed=seed)
    history, start = {}, time.perf_counter()
    for epoch in range(epochs):
        state = torch.zeros(B, H)
        loss_sum, n = 0.0, 0
        for X, Y in sampler.batches(epoch):
            state = torch.zeros(B, H) if sampling == "random" else state.detach()
            loss, state = textbook_step(params, X, Y, state)
            loss_sum += loss.item() * Y.numel()
            n += Y.numel()
        if (epoch + 1) % 50 == 0 or epoch + 1 == epochs:
            history[epoch + 1] = math.exp(loss_sum / n)
    return {"ppl": history, "seconds": time.perf_counter() - start}


def rnnlm_run(path: Path, sampling: str, epochs: int, seed: int, out: Path, samples: list[str]) -> dict:
    def log(line: str) -> None:
        if line.startswith(" - "):
            samples.append(line)
        print(line, flush=True)

    start = time.perf_counter()
    lm = rnnlm.train(
        path, preset="d2l", sampling=sampling, epochs=epochs, seed=seed, out=str(out), progress=False, log=log
    )
    seconds = time.perf_counter() - start
    lines = [json.loads(x) for x in (lm.run_dir / "metrics.jsonl").read_text().splitlines()]
    ppl = {m["epoch"]: m["train_ppl"] for m in lines if m["epoch"] % 50 == 0 or m["epoch"] == epochs}
    return {"ppl": ppl, "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(os.environ.get("RNNLM_DATA", "../shared/data"), "jaychou_lyrics.txt"))
    p.add_argument("--epochs", type=int, default=250)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--samplings", nargs="+", default=["random", "sequential"])
    p.add_argument("--textbook", action="store_true", help="also time the textbook loop")
    p.add_argument("--out", default="runs/bench-d2l")
    args = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(
        f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}", file=sys.stderr
    )
    path = Path(args.data)
    results = []
    for sampling in args.samplings:
        for seed in args.seeds:
            out = Path(args.out) / f"{sampling}-seed{seed}-{int(time.time())}"
            samples: list[str] = []
            r = rnnlm_run(path, sampling, args.epochs, seed, out, samples)
            row = {"impl": "rnnlm", "sampling": sampling, "seed": seed, **r, "samples": samples[-2:]}
            if args.textbook:
                ids, vocab = corpus_ids(path)
                tb = textbook_loop(ids, vocab, sampling, args.epochs, seed)
                row["textbook"] = tb
                row["speedup"] = tb["seconds"] / r["seconds"]
            results.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
