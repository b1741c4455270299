"""Time one training step (forward, loss, backward) of the scratch and fused models side by side.

Not a test: it measures and prints. Both implementations run in the same process on the same
batch, after warmup, so their ratio is a fair comparison on this machine.

    python bench/bench_models.py                      # every cell, both configs, cpu (+ cuda if present)
    python bench/bench_models.py --cells lstm --repeats 20 --devices cpu
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from rnnlm.lm.config import ModelConfig
from rnnlm.lm.model import RNNLM

# name -> (vocab, hidden, embed, layers, batch, seq_len); d2l is the textbook char-RNN setting.
CONFIGS: dict[str, tuple[int, int, int, int, int, int]] = {
    "d2l": (1027, 256, 0, 1, 32, 35),
    "large": (5000, 512, 256, 2, 32, 64),
}


def make_step(model: RNNLM, X: torch.Tensor, Y: torch.Tensor) -> Callable[[], None]:
    """One training step without the optimizer: forward, cross-entropy, backward."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        logits, _ = model(X)  # (B, T, V)
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), Y.reshape(-1)).backward()

    return step


def elapsed_ms(step: Callable[[], None], cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if cuda:  # kernels run asynchronously; wait for them before reading the clock
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start)


def bench(name: str, cell: str, device: str, warmup: int, repeats: int) -> tuple[float, float]:
    """Median (scratch ms, fused ms) for one config and cell, with the same weights and batch.

    The two steps alternate, so a change in machine load (a shared CPU) hits both alike.
    """
    vocab, hidden, embed, layers, batch, seq_len = CONFIGS[name]
    torch.manual_seed(0)
    cfg = {"cell": cell, "layers": layers, "hidden": hidden, "embed": embed}
    scratch = RNNLM(ModelConfig(engine="scratch", **cfg), vocab).to(device)
    fused = copy.deepcopy(scratch)  # the same weights; only the engine differs
    fused.set_engine("fused")
    X = torch.randint(0, vocab, (batch, seq_len), device=device)
    Y = torch.randint(0, vocab, (batch, seq_len), device=device)
    steps = make_step(scratch, X, Y), make_step(fused, X, Y)
    cuda = X.is_cuda
    for _ in range(warmup):
        for step in steps:
            elapsed_ms(step, cuda)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for step, out in zip(steps, times, strict=True):
            out.append(elapsed_ms(step, cuda))
    s, f = (statistics.median(t) for t in times)
    return s, f


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", nargs="+", default=["rnn", "gru", "lstm"], choices=["rnn", "gru", "lstm"])
    p.add_argument(
        "--configs",
        nargs="+",
        default=list(CONFIGS),
        choices=list(CONFIGS),
        help="d2l: V=1027 H=256 one-hot 1 layer B=32 T=35; large: V=5000 H=512 E=256 2 layers B=32 T=64",
    )
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before measuring")
    p.add_argument("--repeats", type=int, default=10, help="timed steps; the median is reported")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, median of {args.repeats} alternating steps"
    )
    print(f"{'device':<8}{'config':<8}{'cell':<6}{'scratch ms':>12}{'fused ms':>10}{'scratch/fused':>15}")
    for device in devices:
        for name in args.configs:
            for cell in args.cells:
                s, f = bench(name, cell, device, args.warmup, args.repeats)
                print(f"{device:<8}{name:<8}{cell:<6}{s:>12.1f}{f:>10.1f}{s / f:>14.2f}x", flush=True)


if __name__ == "__main__":
    main()
