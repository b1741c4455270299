"""The ``triton`` engine: each layer and direction's recurrence as one persistent Triton kernel.

Forward and backward through time each run as a single launch (triton_kernels.py); the rest of a
layer is what the ``cpu`` engine does with large matmuls: the input projection of every step at once
before the kernel, and the weight gradients as one product over all steps after it. The engine needs
the ``triton`` package (``pip install triton``; it comes with torch's CUDA builds). It runs on CUDA
tensors, and on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``), which the tests use.

Precision (the encoder's ``matmul_dtype``): ``float32`` takes the recurrent products in TF32 on a GPU
while torch allows TF32 for cuDNN or for matmuls (``torch.backends.cudnn.allow_tf32`` is on by default,
so cuDNN's RNNs do the same), and in full float32 under the interpreter or with both switched off;
``bfloat16`` takes every matmul with bfloat16 inputs and float32 accumulation. The state, gates and
activations are always float32 (float64 inputs stay float64: the gradient checks).
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import torch
from torch import Tensor

from rnnlm.recurrent import gemm
from rnnlm.recurrent.encoder import GATES, RecurrentEncoder
from rnnlm.recurrent.engine_cpu import matmul_dtype, stack_layers
from rnnlm.recurrent.engines import ENGINES, register_engine
from rnnlm.recurrent.sequence_fns import _in, _input_grads, _project
from rnnlm.recurrent.state import State

CELL_CODE = {"rnn": 0, "gru": 1, "lstm": 2}


class KernelConfig(NamedTuple):
    """How a layer's kernels are cut: ``bb`` batch rows per program, ``nsplit`` programs across the
    hidden units (a grid barrier between steps when > 1), ``bn`` x ``bk`` tiles, ``warps`` per program."""

    bb: int
    nsplit: int
    bn: int
    bk: int
    warps: int = 4


def available() -> bool:
    """Whether triton imports here."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") not in ("", "0")


def _pow2(n: int, lo: int = 16) -> int:
    return max(lo, 1 << max(n - 1, 0).bit_length())


@functools.lru_cache(maxsize=8)
def _multiprocessors(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


OVERRIDE: KernelConfig | None = None  # set by bench/triton_sweep.py to time one cut of the kernels
TUNED: dict[tuple, tuple[KernelConfig, dict[KernelConfig, float]]] = {}  # by shape: the cut, and each one's ms
TUNE = os.environ.get("RNNLM_TRITON_TUNE", "1") != "0"


def choose_config(
    B: int, H: int, device: torch.device, cell: str = "lstm", T: int = 64, dtype: torch.dtype = torch.float32
) -> KernelConfig:
    """The cut of the kernels for a batch of B, H hidden units, this cell and matmul dtype.

    Under the interpreter: one program per 16 batch rows, never split (it runs programs one after
    another). On a GPU the first call for a shape times forward and backward under each cut in
    ``candidates`` and keeps the fastest (``TUNED``). On an H200 (bench/results/speed_cuda_h200.json) the
    best cut moved with the shape and the dtype: 16 slices for the recipe's rnn in float32 but 4 in
    bfloat16, 8 for its gru, 16 for charrnn's lstm and as many as stay resident at batch 512, so no one
    rule fits. ``RNNLM_TRITON_TUNE=0``, or a call inside a CUDA-graph capture, takes ``split_config``.
    """
    if OVERRIDE is not None:
        return OVERRIDE
    if device.type != "cuda" or interpreted():
        return KernelConfig(16, 1, min(32, _pow2(H)), 32)
    index = device.index if device.index is not None else torch.cuda.current_device()
    sms = _multiprocessors(index)
    key = (cell, B, H, dtype, index)
    if key in TUNED:
        return TUNED[key][0]
    if not TUNE or torch.cuda.is_current_stream_capturing():
        return split_config(B, H, sms)
    times = {cfg: _time_cut(cfg, cell, T, B, H, dtype, device) for cfg in candidates(B, H, sms)}
    best = min(times, key=times.get)
    TUNED[key] = best, times
    return best


def candidates(B: int, H: int, sms: int) -> list[KernelConfig]:
    """16 batch rows per program and 1, 2, 4 ... slices of the hidden units, every program resident."""
    blocks = -(-B // 16)
    out, nsplit = [], 1
    while nsplit == 1 or (blocks * nsplit <= sms and H // nsplit >= 16):
        out.append(KernelConfig(16, nsplit, min(64, _pow2(-(-H // nsplit))), 32))
        nsplit *= 2
    return out


def _time_cut(cfg: KernelConfig, cell: str, T: int, B: int, H: int, dtype: torch.dtype, device) -> float:
    """Milliseconds of one forward and one backward kernel under this cut, on random data (median of 3)."""
    from rnnlm.recurrent import triton_kernels as K

    G = GATES[cell]
    f32 = {"device": device, "dtype": torch.float64 if dtype == torch.float64 else torch.float32}
    A, DP = torch.randn(T, B, G * H, **f32), torch.zeros(T + 1, B, G * H, **f32)
    HS, CS, HN, DOUT, DNIN = (torch.randn(T + 1, B, H, **f32) for _ in range(5))
    E, DC, bhn = torch.zeros(B, H, **f32), torch.zeros(B, H, **f32), torch.zeros(H, **f32)
    W = (torch.randn(G * H, H, **f32) / H**0.5).to(dtype)
    WT = W.t().contiguous()
    consts = {"CELL": CELL_CODE[cell], "REVERSE": False, "PREC": _precision(dtype, device), "UPCAST": False}

    def run() -> None:
        _launch(K.recurrence_fwd, cfg, T, B, H, (A, HS, CS, HN, WT, bhn), consts)
        _launch(K.recurrence_bwd, cfg, T, B, H, (A, HS, CS, HN, W, DOUT, DP, DNIN, E, DC), consts)

    run()  # compiles
    times = []
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[1]


def split_config(B: int, H: int, sms: int) -> KernelConfig:
    """16 batch rows per program; the hidden units halved across programs while the grid stays within
    ``sms`` programs (one per multiprocessor) and every slice keeps at least 32 units."""
    blocks = -(-B // 16)
    nsplit = 1
    while blocks * nsplit * 2 <= sms and H // (nsplit * 2) >= 32:
        nsplit *= 2
    return KernelConfig(16, nsplit, min(64, _pow2(-(-H // nsplit))), 32)


def _precision(dtype: torch.dtype, device: torch.device) -> str:
    if dtype != torch.float32 or device.type != "cuda" or interpreted():
        return "ieee"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32 else "ieee"


def _launch(kernel, cfg: KernelConfig, T: int, B: int, H: int, buffers: tuple, constexprs: dict) -> None:
    """Launch a recurrence kernel over ``buffers`` (its tensor arguments before SYNC) with this cut."""
    blocks = -(-B // cfg.bb)
    tiles = -(-H // cfg.bn)
    hsplit = cfg.bn * -(-tiles // cfg.nsplit)  # hidden units per program, in whole tiles
    sync = torch.zeros(blocks, dtype=torch.int32, device=buffers[0].device)  # the grid barrier's counters
    kernel[(blocks, cfg.nsplit)](*buffers, sync, T, B, H, hsplit, NSPLIT=cfg.nsplit, BB=cfg.bb, BN=cfg.bn,
                                 BK=cfg.bk, num_warps=cfg.warps, **constexprs)  # fmt: skip


class TritonSequence(torch.autograd.Function):
    """One layer and direction over time: x (T, B, in) or (T, B) ids -> outputs (T, B, H), h_T[, c_T].

    Arguments as sequence_fns' Functions take them, plus ``c0`` (lstm) and ``b_hn`` (gru), None else.
    """

    @staticmethod
    def forward(ctx, x, W_ih, bias, h0, c0, W_hh, b_hn, cell: str, reverse: bool, mm_dtype):
        from rnnlm.recurrent import triton_kernels as K

        A = _project(x, W_ih, bias, mm_dtype).contiguous()  # (T, B, G*H): x W_ih^T + b, then the gates
        T, B, GH = A.shape
        H = GH // GATES[cell]
        if (T + 1) * B * GH >= 2**31:
            raise ValueError(f"the triton engine indexes with 32 bits: T*B*gates*H = {T * B * GH} is too large")
        first, last = (T, 0) if reverse else (0, T)  # where h0 lies in HS, and where h_T lands
        HS = A.new_empty(T + 1, B, H)
        HS[first] = h0
        CS = A.new_empty(T + 1, B, H) if cell == "lstm" else HS
        if cell == "lstm":
            CS[first] = c0
        HN = A.new_empty(T, B, H) if cell == "gru" else HS
        WT = _in(W_hh.t().contiguous(), mm_dtype)  # (H, G*H)
        cfg = choose_config(B, H, A.device, cell, T, WT.dtype)
        consts = {
            "CELL": CELL_CODE[cell],
            "REVERSE": bool(reverse),
            "PREC": _precision(WT.dtype, A.device),
            "UPCAST": WT.dtype == torch.bfloat16 and interpreted(),
        }
        bhn = b_hn if b_hn is not None else A
        _launch(K.recurrence_fwd, cfg, T, B, H, (A, HS, CS, HN, WT, bhn), consts)
        ctx.save_for_backward(x, W_ih, h0, W_hh, A, HS, CS if cell == "lstm" else None, HN if cell == "gru" else None)
        ctx.settings, ctx.cell, ctx.cfg, ctx.consts = (bool(reverse), mm_dtype), cell, cfg, consts
        out = HS[:T] if reverse else HS[1:]
        if cell == "lstm":
            return out, HS[last].clone(), CS[last].clone()
        return out, HS[last].clone()

    @staticmethod
    def backward(ctx, d_out, d_hT, d_cT=None):
        from rnnlm.recurrent import triton_kernels as K

        x, W_ih, h0, W_hh, A, HS, CS, HN = ctx.saved_tensors
        reverse, mm_dtype = ctx.settings
        cell, cfg = ctx.cell, ctx.cfg
        T, B, GH = A.shape
        H = HS.shape[2]
        DOUT = d_out.contiguous() if d_out is not None else A.new_zeros(T, B, H)
        E = d_hT.clone().contiguous() if d_hT is not None else A.new_zeros(B, H)
        DC = (d_cT.clone().contiguous() if d_cT is not None else A.new_zeros(B, H)) if cell == "lstm" else E
        DP = A.new_empty(T + 1, B, GH)
        DP[0 if reverse else T] = 0  # the step after the last one carries nothing back
        DNIN = A.new_empty(T, B, H) if cell == "gru" else E
        W = _in(W_hh.contiguous(), mm_dtype)  # (G*H, H): dh_{t-1} = dP_t W_hh
        CSx = CS if CS is not None else HS
        HNx = HN if HN is not None else HS
        _launch(K.recurrence_bwd, cfg, T, B, H, (A, HS, CSx, HNx, W, DOUT, DP, DNIN, E, DC), ctx.consts)
        need = ctx.needs_input_grad
        D = DP[1:] if reverse else DP[:T]  # (T, B, G*H): the pre-activation gradients, step by step
        dh0 = None
        if need[3]:
            first = D[T - 1] if reverse else D[0]
            dh0 = gemm.linear(_in(first, mm_dtype), W.t()).to(h0.dtype) + E
        dW_hh = None
        if need[5]:
            Hprev = HS[1:] if reverse else HS[:T]
            dW_hh = gemm.weight_grad(_in(D.reshape(-1, GH), mm_dtype), _in(Hprev.reshape(-1, H), mm_dtype))
            dW_hh = dW_hh.to(W_hh.dtype)
        db_hn = None
        if cell == "gru":
            db_hn = D[..., 2 * H :].sum((0, 1)) if need[6] else None
            D = torch.cat([D[..., : 2 * H], DNIN], dim=-1)  # the input side's candidate gradient lacks r
        dx, dW_ih, db = _input_grads(ctx, D, _in(D, mm_dtype), x, W_ih)
        dc0 = DC if cell == "lstm" and need[4] else None
        return dx, dW_ih, db, dh0, dc0, dW_hh, db_hn, None, None, None


def run_sequence(enc: RecurrentEncoder, x: Tensor, state: tuple[Tensor, ...], layer: int, direction: int):
    """One layer and direction through the kernels: x (T, B, in) or (T, B) ids -> outputs (T, B, H), state."""
    w = enc.weights(layer, direction)
    c0 = state[1] if enc.cell == "lstm" else None
    b_hn = w[3] if enc.cell == "gru" else None
    out, *final = TritonSequence.apply(x, w[0], w[2], state[0], c0, w[1], b_hn, enc.cell, direction == 1,
                                       matmul_dtype(enc))  # fmt: skip
    return out, tuple(final)


@register_engine("triton")
def triton_engine(enc: RecurrentEncoder, x: torch.Tensor, state: State, lengths: torch.Tensor | None):
    """One persistent Triton kernel per layer, forward and backward through time (GPU; needs triton)."""
    if lengths is not None:  # padded batches: scratch masks them; the language model never pads
        return ENGINES["scratch"](enc, x, state, lengths)
    if not available():
        raise RuntimeError("--engine triton needs the triton package: pip install triton (a GPU build of torch has it)")
    if x.device.type != "cuda" and not interpreted():
        raise RuntimeError(
            "--engine triton runs on a CUDA device (or on the CPU under TRITON_INTERPRET=1, for tests only); "
            "use --engine auto on this machine"
        )
    return stack_layers(enc, x, state, run_sequence)
