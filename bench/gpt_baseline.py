"""A small GPT trained as nanoGPT's CPU configuration, on the data split of bench/quality.py: the baseline that
rnnlm's figures are compared with, under the same evaluation protocols, on the same machine.

    python bench/gpt_baseline.py                                  # tinyshakespeare, 2,000 iterations or 300 s
    python bench/gpt_baseline.py --corpus timemachine --out runs/gpt-tm.json
    python bench/gpt_baseline.py --corpus my_book.txt --budget 120

The model is our own (torch.nn's TransformerEncoderLayer: pre-norm, GELU, a causal mask), shaped as nanoGPT's
shakespeare_char config run on a CPU as its README gives it: 4 layers, 4 heads, width 128, block 64, batch 12,
no dropout, no biases, learned positions, the output layer tied to the embedding; AdamW (lr 1e-3, betas 0.9 and
0.99, weight decay 0.1 on the matrices only), 100 warm-up iterations then cosine decay to 1e-4 at iteration
2,000, gradients clipped to norm 1. Training stops at --iters (2,000, nanoGPT's max_iters) or when the --budget
seconds of wall clock are spent, whichever comes first (the clock starts at the first step, as rnnlm's
--time-budget does); the schedule stays the 2,000-iteration one either way, and the JSON says how far it got.

Data as bench/quality.py: the corpus at the character level, the vocabulary the characters of the whole text,
the first 90% for training and the last 10% for validation. The final model is scored over the whole validation
text in two ways:
  * windows: consecutive windows of the block, each from an empty context, every target counted (nanoGPT's
    estimate_loss, exhaustively; rnnlm's `eval --protocol windows`, the same function);
  * sliding: windows of the block every block/2 characters, only the targets a window adds past the previous
    one counted, so every target but the first block's sees at least block/2 characters of context.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import machine  # bench/machine.py
from rnnlm.core.atomic import atomic_write_json
from rnnlm.lm.config import DataConfig, LMEvalConfig
from rnnlm.lm.data.dataset import load_corpus
from rnnlm.lm.data.tokens import windows
from rnnlm.lm.evaluate import evaluate_windows
from rnnlm.training.metrics import summarize

FILL_AFTER = 50  # --fill: iterations timed before the schedule is stretched (inside the warm-up, which it keeps)


@dataclass
class GPTConfig:
    """nanoGPT's shakespeare_char config with the README's CPU overrides."""

    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 128  # width of the residual stream
    block_size: int = 64  # the longest context the model reads (learned positions)
    dropout: float = 0.0
    batch_size: int = 12  # windows per iteration
    lr: float = 1e-3  # peak learning rate
    min_lr: float = 1e-4  # where the cosine decay ends
    warmup_iters: int = 100
    lr_decay_iters: int = 2000
    max_iters: int = 2000
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.1  # on the weight matrices and embeddings only
    grad_clip: float = 1.0


class GPT(nn.Module):
    """A decoder-only transformer with the rnnlm model interface: ``model(ids, state) -> (logits, None)``, so that
    rnnlm's evaluation functions score it as they score a recurrent model (a window at a time, no state)."""

    def __init__(self, cfg: GPTConfig, vocab_size: int) -> None:
        super().__init__()
        self.block_size = cfg.block_size
        self.tok = nn.Embedding(vocab_size, cfg.n_embd)
        self.pos = nn.Embedding(cfg.block_size, cfg.n_embd)
        layer = nn.TransformerEncoderLayer(
            cfg.n_embd, cfg.n_head, 4 * cfg.n_embd, cfg.dropout, "gelu", batch_first=True, norm_first=True, bias=False
        )
        final_norm = nn.LayerNorm(cfg.n_embd, bias=False)
        self.blocks = nn.TransformerEncoder(layer, cfg.n_layer, norm=final_norm, enable_nested_tensor=False)
        self.head = nn.Linear(cfg.n_embd, vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied: one matrix reads and writes the tokens
        # GPT-2's initialization: N(0, 0.02), the layers that write into the residual stream scaled down by
        # sqrt(2 * layers) so that the stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                deep = name.endswith(("out_proj.weight", "linear2.weight"))
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer) if deep else 0.02)

    def forward(self, ids: torch.Tensor, state: None = None) -> tuple[torch.Tensor, None]:
        T = ids.shape[1]  # ids: (B, T)
        if self.block_size < T:
            raise ValueError(f"a window of {T} tokens is longer than the block ({self.block_size})")
        x = self.tok(ids) + self.pos(torch.arange(T, device=ids.device))  # (B, T, C)
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=ids.device)
        return self.head(self.blocks(x, mask=causal, is_causal=True)), None  # (B, T, V)


def lr_at(it: int, cfg: GPTConfig) -> float:
    """Linear warm-up, then cosine decay from lr to min_lr at lr_decay_iters, then min_lr."""
    if it < cfg.warmup_iters:
        return cfg.lr * (it + 1) / (cfg.warmup_iters + 1)
    if it > cfg.lr_decay_iters:
        return cfg.min_lr
    done = (it - cfg.warmup_iters) / (cfg.lr_decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * done)) * (cfg.lr - cfg.min_lr)


def optimizer(model: GPT, cfg: GPTConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices and embeddings, none on the norms' gains."""
    params = list(model.parameters())  # the tied matrix once
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


@torch.no_grad()
def sliding_loss(model: nn.Module, ids: np.ndarray, block: int, stride: int, rows: int = 64) -> tuple[float, int]:
    """Sum of NLL and count over every target of ids, each scored once in a window of ``block`` tokens that starts
    every ``stride`` tokens (the last window ends at the text's end): a window counts only the targets past the
    previous window's, so each one after the first window has at least block - stride tokens of context."""
    model.eval()
    n = len(ids) - 1  # targets
    if n < 1:
        return 0.0, 0
    width = min(block, n)
    starts = list(range(0, n - width + 1, stride))
    if starts[-1] + width < n:
        starts.append(n - width)
    first = np.asarray([0] + [prev + width - s for prev, s in zip(starts, starts[1:], strict=False)])
    starts_np = np.asarray(starts)
    total, count = 0.0, 0
    for i in range(0, len(starts), rows):
        chunk = torch.from_numpy(windows(ids, starts_np[i : i + rows], width + 1).astype(np.int64))
        logits, _ = model(chunk[:, :-1])  # (B, width, V)
        nll = F.cross_entropy(logits.transpose(1, 2), chunk[:, 1:], reduction="none")  # (B, width)
        counted = torch.arange(width)[None, :] >= torch.from_numpy(first[i : i + rows])[:, None]
        total += nll[counted].sum().item()
        count += int(counted.sum())
    return total, count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", default="tinyshakespeare", help="named corpus or a text file (default: tinyshakespeare)")
    p.add_argument("--budget", type=float, default=300.0, help="training seconds at most (default: 300)")
    p.add_argument("--iters", type=int, default=GPTConfig.max_iters, help="iterations at most (default: 2000)")
    p.add_argument(
        "--fill",
        action="store_true",
        help="stretch the schedule over the budget: after 50 iterations, --iters and the decay's end become the "
        "iterations the budget holds at the speed so far (the baseline's best use of the time, as rnnlm's "
        "time-based schedule)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default, as rnnlm's)")
    p.add_argument("--seed", type=int, default=1337, help="seed of the weights and the batches (default: 1337)")
    p.add_argument("--log-every", type=int, default=100, help="iterations between lines (default: 100)")
    p.add_argument("--out", help="where to write the JSON (default: runs/gpt-baseline-<corpus>-<time>.json)")
    args = p.parse_args()
    if args.iters < 1 or args.budget <= 0:
        p.error(f"--iters must be at least 1 and --budget above 0, got {args.iters} and {args.budget}")
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    is_file = Path(args.corpus).is_file()
    named = {"paths": [args.corpus]} if is_file else {"corpus": args.corpus}
    # As bench/quality.py: the characters of the whole text; the first 90% to train on, the last 10% to score.
    corpus = load_corpus(DataConfig(**named, level="char", val_fraction=0.1))
    train, val = np.asarray(corpus.train), np.asarray(corpus.val)
    cfg = GPTConfig(max_iters=args.iters)
    torch.manual_seed(args.seed)
    model = GPT(cfg, len(corpus.vocab))
    opt = optimizer(model, cfg)
    gen = torch.Generator().manual_seed(args.seed)
    print(
        f"{corpus.description}\nGPT {cfg.n_layer} x {cfg.n_embd}, {sum(p.numel() for p in model.parameters()):,} "
        f"parameters, {torch.get_num_threads()} threads"
    )

    model.train()
    it, t0 = 0, time.perf_counter()
    while it < cfg.max_iters and time.perf_counter() - t0 < args.budget:
        starts = torch.randint(len(train) - cfg.block_size - 1, (cfg.batch_size,), generator=gen).numpy()
        batch = torch.from_numpy(windows(train, starts, cfg.block_size + 1).astype(np.int64))  # (B, block + 1)
        for group in opt.param_groups:
            group["lr"] = lr_at(it, cfg)
        logits, _ = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        it += 1
        if args.fill and it == FILL_AFTER:
            fits = int(args.budget / ((time.perf_counter() - t0) / it))
            cfg.max_iters = cfg.lr_decay_iters = max(fits, cfg.warmup_iters + 1)
            print(f"--fill: {cfg.max_iters} iterations fit in {args.budget:g} s; the cosine decay ends there")
        if it % args.log_every == 0:
            print(f"iter {it}: train loss {loss.item():.4f}, {time.perf_counter() - t0:.0f} s")
    train_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    ec = LMEvalConfig()
    win = summarize(*evaluate_windows(model, val, cfg.block_size, ec.eval_batch_size, ec.eval_seq_len))
    slide = summarize(*sliding_loss(model, val, cfg.block_size, cfg.block_size // 2))
    report = {
        "model": "our GPT in nanoGPT's shakespeare_char CPU configuration (bench/gpt_baseline.py)",
        "corpus": args.corpus,
        "data": corpus.description,
        "windows": {"block": cfg.block_size, "loss": round(win["loss"], 4), "bpc": round(win["bpt"], 4)},
        "sliding": {
            "block": cfg.block_size,
            "stride": cfg.block_size // 2,
            "loss": round(slide["loss"], 4),
            "bpc": round(slide["bpt"], 4),
        },
        "iters": it,
        "filled": args.fill,
        "stop": "--iters reached" if it >= cfg.max_iters else f"--budget {args.budget:g} s reached",
        "train_s": round(train_s, 1),
        "eval_s": round(time.perf_counter() - t1, 1),
        "tokens_per_s": round(it * cfg.batch_size * cfg.block_size / train_s),
        "budget_s": args.budget,
        "seed": args.seed,
        "config": asdict(cfg),
        "machine": machine.describe()
        | {
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
    }
    out = Path(args.out or f"runs/gpt-baseline-{Path(args.corpus).stem}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, report)
    print(
        f"{it} iterations in {train_s:.0f} s: val {win['loss']:.4f} nats/char in cold windows of {cfg.block_size}, "
        f"{slide['loss']:.4f} sliding (stride {cfg.block_size // 2}) | {out}"
    )


if __name__ == "__main__":
    main()
