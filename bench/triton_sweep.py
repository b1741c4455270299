"""How the triton engine's kernels should be cut, measured: one layer's forward and backward through time.

    python bench/triton_sweep.py [--json PATH]        # needs a CUDA GPU

Not a test: it measures and prints. For each shape it times one layer (input projection, the persistent
forward kernel, backward kernel and weight gradients: ``TritonSequence``) under several kernel cuts
(engine_triton.KernelConfig: batch rows per program, programs across the hidden units, tile width),
next to the same layer through cuDNN (torch's fused kernel). The cut ``choose_config`` picks is marked.
CUDA events time each call; the median of several is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from rnnlm.recurrent import engine_triton as et

# name: cell, batch, hidden, steps, matmul dtype
SHAPES = {
    "recipe": ("rnn", 32, 256, 35, None),
    "gru": ("gru", 32, 256, 35, None),
    "charrnn": ("lstm", 64, 512, 64, None),
    "charrnn-b512": ("lstm", 512, 512, 64, None),
    "large-bf16": ("lstm", 128, 1024, 256, torch.bfloat16),
}
G = {"rnn": 1, "gru": 3, "lstm": 4}


def timed(fn, reps: int = 10) -> float:
    """Median milliseconds of fn() over reps calls, after two untimed ones."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def layer_step(cell: str, B: int, H: int, T: int, mm) -> tuple:
    dev = torch.device("cuda")
    g = G[cell]

    def p(*shape):
        return (torch.randn(*shape, device=dev) * 0.1).requires_grad_(True)

    x, W_ih, bias, h0, W_hh = p(T, B, H), p(g * H, H), p(g * H), p(B, H), p(g * H, H)
    c0 = p(B, H) if cell == "lstm" else None
    b_hn = p(H) if cell == "gru" else None

    def triton_step():
        out, *final = et.TritonSequence.apply(x, W_ih, bias, h0, c0, W_hh, b_hn, cell, False, mm)
        out.sum().backward()

    mod = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](H, H).to(dev)

    def cudnn_step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=mm is not None):
            out = mod(x)[0]
        out.float().sum().backward()

    return triton_step, cudnn_step


def candidates(B: int, H: int, sms: int) -> list[et.KernelConfig]:
    """16 or 32 batch rows per program, 1 to 32 programs across the hidden units (all resident)."""
    out = []
    for bb in (16, 32):
        if bb > max(16, B):
            continue
        blocks = -(-B // bb)
        for nsplit in (1, 2, 4, 8, 16, 32):
            if nsplit > 1 and (blocks * nsplit > sms or H // nsplit < 16):
                continue
            out.append(et.KernelConfig(bb, nsplit, min(64, et._pow2(-(-H // nsplit))), 32))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(json.dumps({"device": torch.cuda.get_device_name(0), "multiprocessors": sms, "torch": torch.__version__}))
    results = []
    for name in args.shapes:
        cell, B, H, T, mm = SHAPES[name]
        triton_step, cudnn_step = layer_step(cell, B, H, T, mm)
        ref = timed(cudnn_step)
        chosen = et.choose_config(B, H, torch.device("cuda"))
        print(f"{name}: cuDNN layer fwd+bwd {ref:.3f} ms; chosen {tuple(chosen)}", flush=True)
        for cfg in candidates(B, H, sms):
            et.OVERRIDE = cfg
            try:
                ms = timed(triton_step)
            except Exception as e:  # a cut that does not compile (registers, shared memory) is reported, not fatal
                print(f"  {tuple(cfg)}: failed: {type(e).__name__}: {str(e)[:120]}", flush=True)
                continue
            finally:
                et.OVERRIDE = None
            mark = " <- chosen" if cfg == chosen else ""
            print(f"  {tuple(cfg)}: {ms:.3f} ms ({ref / ms:.2f}x cuDNN){mark}", flush=True)
            results.append({"shape": name, "config": list(cfg), "ms": ms, "cudnn_ms": ref, "chosen": cfg == chosen})
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
