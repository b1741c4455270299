"""Training and sampling speed, side by side in one process: the textbook loop, plain torch, and rnnlm.

    python bench/speed.py                       # every config on the CPU
    python bench/speed.py --configs recipe gru --json speed.json
    python bench/speed.py --threads 1           # every path single-threaded: the engines alone
    python bench/speed.py --device cuda

Not a test: it measures and prints. Every path trains the same model shape on the same random token
batch. One training step is forward, loss, backward, clipping and the optimizer step, with a sync
at the end of each timed window; warm-up steps are not timed, and the median over several windows
is reported. The paths alternate window by window, so a change in machine load hits all alike.

* loop:  the textbook loop as the book writes it: one-hot inputs, ``H = tanh(X @ W_xh + H @ W_hh + b_h)``
         per step (the book's GRU and LSTM for those cells), the output layer inside the step loop and
         ``torch.cat``, ``nn.CrossEntropyLoss``, global-norm clipping computed with ``.item()``, manual SGD.
* torch: what a user writes instead: nn.RNN/GRU/LSTM (cuDNN on a GPU), nn.Linear, torch.optim, clip_grad_norm_
         (one-hot configs feed ``F.one_hot`` rows; the others an nn.Embedding).
* rnnlm: this project's own training step (``Trainer.train_step``) with the default engine (``auto``) and
         the language-model task's loss; it picks its thread count by timing (training/threads.py).
* rnnlm-bf16: the same with ``--matmul-dtype bfloat16`` (the cpu engine's and the loss's matmuls in bfloat16).

Sampling (recipe shape, temperature 0.8, 200 characters after a one-character prefix): ``loop`` is the
book's predict loop with a multinomial draw; ``rnnlm`` is ``generate_ids``, which at batch 1 on the CPU
runs the compiled decoder (recurrent/csrc/decode.c); ``rnnlm-torch`` is the same stream on the torch step path.

The roofline columns count the useful FLOPs of forward and backward from the shapes (3x the forward
matmuls; a one-hot input costs a row lookup, not a matmul) and divide the achieved rate by this
machine's measured peak: a large float32 matmul through torch.mm in the same process ("% f32 peak"), and
the same through oneDNN ("% dnnl"), which on AMD CPUs runs about twice as fast as torch.mm's MKL.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rnnlm.lm.config import ModelConfig
from rnnlm.lm.generate import generate_ids
from rnnlm.lm.model import RNNLM
from rnnlm.recurrent import gemm
from rnnlm.training.config import TrainConfig
from rnnlm.training.task import Task
from rnnlm.training.trainer import Trainer

# name: cell, vocab, embed (0 = one-hot), hidden, layers, batch, seq_len, optimizer, lr
CONFIGS = {
    "recipe": ("rnn", 1027, 0, 256, 1, 32, 35, "sgd", 1.0),
    "gru": ("gru", 1027, 0, 256, 1, 32, 35, "sgd", 1.0),
    "charrnn": ("lstm", 65, 64, 512, 2, 64, 64, "adamw", 2e-3),
    "wide": ("lstm", 65, 64, 512, 2, 256, 64, "adamw", 2e-3),
    "charrnn-b512": ("lstm", 65, 64, 512, 2, 512, 64, "adamw", 2e-3),
    "large": ("lstm", 65, 64, 1024, 3, 128, 256, "adamw", 2e-3),  # bfloat16 matmuls on every path
}
DEFAULT_CONFIGS = {
    "cpu": ["recipe", "gru", "charrnn", "wide"],
    "cuda": ["recipe", "gru", "charrnn", "charrnn-b512", "large"],
}
BF16_ONLY = {"large"}
GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def flops_per_token(name: str) -> float:
    """Useful FLOPs of one training token: forward matmuls, times 3 for forward plus backward."""
    cell, V, E, H, L, *_ = CONFIGS[name]
    G = GATES[cell]
    fwd = 2 * H * V  # the output layer
    for layer in range(L):
        fwd += 2 * H * G * H  # recurrent matmul
        if layer > 0 or E:
            fwd += 2 * (E if layer == 0 else H) * G * H  # input matmul (one-hot: a lookup)
    return 3.0 * fwd


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def cpu_kind() -> dict[str, Any]:
    """What decides the float32 and bfloat16 kernels a figure came from: whether the CPU has AVX512-BF16, any
    instruction-set cap set in the environment (how an AVX2-only CPU is emulated: the ISA is capped, the
    microarchitecture stays the host's), and the load average, since a shared machine slows every path."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            bf16 = "avx512_bf16" in f.read()
    except OSError:
        bf16 = None
    caps = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "avx512_bf16": bf16,
        "isa_limits": {k: os.environ[k] for k in caps if k in os.environ},
        "load_average": load,
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 0, reps: int = 5, onednn: bool = False) -> float:
    """GFLOP/s of an n x n x n matmul (best of reps), through torch.mm or through oneDNN (gemm.linear)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    mm = (lambda: gemm.linear(a, b)) if onednn else (lambda: a @ b)
    mm()
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        mm()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


# -- the three paths -------------------------------------------------------------------------------------


def loop_step(name: str, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """The book's from-scratch loop for one-hot configs (rnn, gru, lstm cells)."""
    cell, V, _, H, _, B, _, _, lr = CONFIGS[name]

    def p(*shape: int, zero: bool = False) -> torch.Tensor:
        t = torch.zeros(shape, device=device) if zero else torch.randn(shape, device=device) * 0.01
        return t.requires_grad_(True)

    names = {"rnn": ["h"], "gru": ["z", "r", "h"], "lstm": ["i", "f", "o", "c"]}[cell]
    W = {g: (p(V, H), p(H, H), p(H, zero=True)) for g in names}
    W_hq, b_q = p(H, V), p(V, zero=True)
    params = [t for g in names for t in W[g]] + [W_hq, b_q]
    loss_fn = nn.CrossEntropyLoss()

    def step(X: torch.Tensor, Y: torch.Tensor) -> None:
        Hs = torch.zeros(B, H, device=device)
        C = torch.zeros(B, H, device=device)
        outputs = []
        for t in range(X.shape[1]):
            x = F.one_hot(X[:, t], V).float()

            def gate(g: str, x: torch.Tensor, Hs: torch.Tensor, act: Callable = torch.sigmoid) -> torch.Tensor:
                return act(x @ W[g][0] + Hs @ W[g][1] + W[g][2])

            if cell == "rnn":
                Hs = gate("h", x, Hs, torch.tanh)
            elif cell == "gru":
                Z, R = gate("z", x, Hs), gate("r", x, Hs)
                H_tilde = torch.tanh(x @ W["h"][0] + (R * Hs) @ W["h"][1] + W["h"][2])
                Hs = Z * Hs + (1 - Z) * H_tilde
            else:
                I, Fg, O = gate("i", x, Hs), gate("f", x, Hs), gate("o", x, Hs)
                C_tilde = gate("c", x, Hs, torch.tanh)
                C = Fg * C + I * C_tilde
                Hs = O * torch.tanh(C)
            outputs.append(Hs @ W_hq + b_q)
        loss = loss_fn(torch.cat(outputs, 0), Y.t().reshape(-1))
        for q in params:
            q.grad = None
        loss.backward()
        with torch.no_grad():
            norm = sum((q.grad**2).sum().item() for q in params) ** 0.5  # the book's .item() in Python
            if norm > 1.0:
                for q in params:
                    q.grad.mul_(1.0 / norm)
            for q in params:
                q.sub_(lr * q.grad)

    return step


class TorchModel(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        cell, V, E, H, L, *_ = CONFIGS[name]
        self.V, self.one_hot = V, E == 0
        self.embed = None if self.one_hot else nn.Embedding(V, E)
        self.rnn = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell](
            V if self.one_hot else E, H, L, batch_first=True
        )
        self.head = nn.Linear(H, V)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        x = F.one_hot(X, self.V).float() if self.one_hot else self.embed(X)
        return self.head(self.rnn(x)[0])


def torch_step(name: str, device: torch.device, bf16: bool = False) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """nn.RNN/GRU/LSTM (cuDNN on a GPU) with torch.optim; ``bf16``: the forward under bfloat16 autocast."""
    *_, opt, lr = CONFIGS[name]
    model = TorchModel(name).to(device)
    optim = torch.optim.SGD(model.parameters(), lr) if opt == "sgd" else torch.optim.AdamW(model.parameters(), lr)

    def step(X: torch.Tensor, Y: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(X).flatten(0, 1).float(), Y.flatten())
        optim.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()

    return step


class _OneBatch(Task):
    """A task for timing the trainer's real step (``train_step``, which the benchmark calls with its own batch),
    with the language-model task's loss; it serves no batches and evaluates nothing."""

    unit = "tok"
    fixed_shapes = True  # on a GPU the trainer replays the step as a CUDA graph (training/graph_step.py)

    def num_batches(self, epoch: int) -> int:
        return 1 << 40

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from ()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {}

    def summary(self, metrics: dict[str, Any]) -> str:
        return ""

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, int]:
        X, Y = batch
        outputs, _ = model.encode(X)  # as LanguageModelTask.loss computes it, from a zero state
        return model.head.loss(outputs, Y), Y.numel()


def rnnlm_model(name: str, device: torch.device, matmul_dtype: str = "float32", engine: str = "auto") -> RNNLM:
    cell, V, E, H, L, *_ = CONFIGS[name]
    mc = ModelConfig(cell=cell, layers=L, hidden=H, embed=E, matmul_dtype=matmul_dtype, engine=engine)
    return RNNLM(mc, V).to(device)


def rnnlm_step(
    name: str, device: torch.device, matmul_dtype: str = "float32", engine: str = "auto", graph: str = "auto"
) -> Callable:
    *_, opt, lr = CONFIGS[name]
    model = rnnlm_model(name, device, matmul_dtype, engine)
    trainer = Trainer(model, _OneBatch(), TrainConfig(optimizer=opt, lr=lr, clip=1.0, cuda_graph=graph))
    return lambda X, Y: trainer.train_step((X, Y))


def tokens_per_s(steps: dict[str, Callable], X: torch.Tensor, Y: torch.Tensor, warmup: int, windows: int, per: int):
    for step in steps.values():
        for _ in range(warmup):
            step(X, Y)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(windows):
        for k, step in steps.items():
            sync(X.device)
            t = time.perf_counter()
            for _ in range(per):
                step(X, Y)
            sync(X.device)
            times[k].append(time.perf_counter() - t)
    return {k: X.numel() * per / statistics.median(v) for k, v in times.items()}


# -- sampling --------------------------------------------------------------------------------------------


def sampling_chars_per_s(device: torch.device, batch: int, length: int, windows: int = 5) -> dict[str, float]:
    """The textbook predict loop (one-hot, per step, batch 1) against rnnlm's generate path, recipe shape;
    the two alternate window by window and the median of each is reported."""
    model = rnnlm_model("recipe", device).eval()
    V = model.vocab_size
    W_xh, W_hh = model.encoder.weight_ih_l0.t(), model.encoder.weight_hh_l0.t()
    b_h, W_hq, b_q = model.encoder.bias_l0, model.head.weight.t(), model.head.bias

    @torch.no_grad()
    def loop() -> None:
        H, y = torch.zeros(1, W_hh.shape[0], device=device), 0
        for _ in range(length):  # the book feeds one one-hot character at a time and samples
            H = torch.tanh(F.one_hot(torch.tensor([y], device=device), V).float() @ W_xh + H @ W_hh + b_h)
            y = int(torch.multinomial(torch.softmax((H @ W_hq + b_q) / 0.8, -1), 1))

    gen = torch.Generator().manual_seed(0)

    def rnnlm(use_native: bool = True) -> None:
        steps = generate_ids(
            model, [0], length, temperature=0.8, num_samples=batch, generator=gen, use_native=use_native
        )
        for _ in steps:
            pass

    def rnnlm_torch() -> None:  # the same stream without the compiled batch-1 decoder
        rnnlm(use_native=False)

    paths = {"loop": loop, "rnnlm": rnnlm} if batch == 1 else {"rnnlm": rnnlm}
    if batch == 1 and device.type == "cpu":
        paths["rnnlm-torch"] = rnnlm_torch
    times: dict[str, list[float]] = {k: [] for k in paths}
    for window in range(windows + 1):  # the first round warms up
        for k, f in paths.items():
            t = time.perf_counter()
            f()
            if window:
                times[k].append(time.perf_counter() - t)
    rows = {"loop": 1}
    return {k: rows.get(k, batch) * length / statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--configs",
        nargs="+",
        choices=list(CONFIGS),
        help="default: the four CPU configs, or on CUDA recipe, gru, charrnn, charrnn-b512 and large",
    )
    ap.add_argument("--warmup", type=int, help="untimed steps per path (default 3; 6 on CUDA: graph capture)")
    ap.add_argument("--windows", type=int, default=5, help="timed windows per path; the median is reported")
    ap.add_argument("--steps", type=int, help="steps per timed window (default 3; 20 on CUDA)")
    ap.add_argument("--no-sampling", action="store_true", help="skip the sampling rows")
    ap.add_argument(
        "--no-bf16",
        action="store_true",
        help="skip the bfloat16 peak and rows (a CPU without native bfloat16, or one emulated by an ISA cap, "
        "multiplies bfloat16 very slowly)",
    )
    ap.add_argument("--threads", type=int, help="intra-op threads for every path (default: torch's)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.configs = args.configs or DEFAULT_CONFIGS[device.type]
    args.warmup = args.warmup if args.warmup is not None else (6 if cuda else 3)
    args.steps = args.steps or (20 if cuda else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    peak32 = matmul_peak(device, torch.float32)
    peak16 = None if args.no_bf16 else matmul_peak(device, torch.bfloat16)
    onednn = device.type == "cpu" and gemm.onednn_available()
    peak_dnnl = matmul_peak(device, torch.float32, onednn=True) if onednn else peak32
    info = {
        "cpu": cpu_model(),
        **cpu_kind(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "peak_gflops": {
            "float32": round(peak32, 1),
            "bfloat16": None if peak16 is None else round(peak16, 1),
            "float32_onednn": round(peak_dnnl, 1),
        },
    }
    print(json.dumps(info))
    rows = []
    head = f"{'config':<13}{'path':<18}{'tok/s':>10}{'GFLOP/s':>9}{'% f32 peak':>11}{'% dnnl':>8}"
    print(head + f"{'rnnlm/loop':>12}{'rnnlm/torch':>12}")
    for name in args.configs:
        cell, V, E, H, L, B, T, *_ = CONFIGS[name]
        g = torch.Generator().manual_seed(0)
        X, Y = (torch.randint(0, V, (B, T), generator=g).to(device) for _ in range(2))
        torch.manual_seed(0)
        if name in BF16_ONLY:  # every path in bfloat16: autocast for torch
            steps = {"torch": torch_step(name, device, bf16=True), "rnnlm-bf16": rnnlm_step(name, device, "bfloat16")}
            if cuda:
                steps["rnnlm-bf16-triton"] = rnnlm_step(name, device, "bfloat16", engine="triton")
        elif cuda:  # the default (auto engine, whole step in a CUDA graph), and each engine alone
            steps = {
                "torch": torch_step(name, device),
                "rnnlm": rnnlm_step(name, device),
                "rnnlm-nograph": rnnlm_step(name, device, graph="off"),
                "rnnlm-triton": rnnlm_step(name, device, engine="triton"),
                "rnnlm-cudnn": rnnlm_step(name, device, engine="fused"),
                "rnnlm-bf16": rnnlm_step(name, device, "bfloat16"),
            }
        else:
            steps = {
                "torch": torch_step(name, device),
                "rnnlm": rnnlm_step(name, device),
                "rnnlm-bf16": rnnlm_step(name, device, "bfloat16"),
            }
        if args.no_bf16:
            steps = {k: v for k, v in steps.items() if "bf16" not in k}
        if E == 0:
            steps = {"loop": loop_step(name, device), **steps}
        tps = tokens_per_s(steps, X, Y, args.warmup, args.windows, args.steps)
        for path, v in tps.items():
            gf = v * flops_per_token(name) / 1e9
            row = {"config": name, "path": path, "tokens_per_s": round(v), "gflops": round(gf, 1)}
            row["peak_share"] = round(gf / peak32, 3)
            row["onednn_peak_share"] = round(gf / peak_dnnl, 3)
            if path.startswith("rnnlm"):
                row["vs_loop"] = round(v / tps["loop"], 2) if "loop" in tps else None
                row["vs_torch"] = round(v / tps["torch"], 2)
            rows.append(row)
            ratios = f"{row.get('vs_loop') or '':>12}{row.get('vs_torch') or '':>12}" if "vs_torch" in row else ""
            shares = f"{100 * gf / peak32:>10.1f}%{100 * gf / peak_dnnl:>7.1f}%"
            print(f"{name:<13}{path:<18}{v:>10.0f}{gf:>9.1f}{shares}{ratios}", flush=True)
    samples = {} if args.no_sampling else {f"batch {b}": sampling_chars_per_s(device, b, 200) for b in (1, 64)}
    for k, v in samples.items():
        ratio = f" ({v['rnnlm'] / v['loop']:.2f}x the loop)" if "loop" in v else ""
        print(f"sampling {k}: " + ", ".join(f"{p} {c:.0f} chars/s" for p, c in v.items()) + ratio)
    cuts = {}
    if cuda:  # the triton engine's kernel cuts, as its autotuner timed them (engine_triton.choose_config)
        from rnnlm.recurrent import engine_triton

        for (cell, B, H, dtype, _), (best, times) in engine_triton.TUNED.items():
            key = f"{cell} B{B} H{H} {str(dtype).replace('torch.', '')}"
            cuts[key] = {"chosen": list(best), "ms": {str(tuple(c)): round(ms, 4) for c, ms in times.items()}}
            print(f"triton cut for {key}: {tuple(best)}; ms by cut: {cuts[key]['ms']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({**info, "training": rows, "sampling": samples, "triton_cuts": cuts}, f, indent=2)


if __name__ == "__main__":
    main()
