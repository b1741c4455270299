"""Whole-sequence recurrences as autograd Functions: one layer and direction per call, time-major.

Autograd through the scratch cells records a dozen nodes per time step and keeps every
intermediate alive. Here one Function runs a layer and direction over all T steps:

* forward projects the inputs of every step in one matmul (a row lookup for one-hot ids) straight
  into the gate buffer, then runs the steps in place in it: add the recurrent product, activate;
* backward first turns the saved activations into the factors that do not depend on the carried
  gradient (for all steps at once), then walks the steps back with two to five in-place ops each,
  leaving the pre-activation gradients in one buffer; from that buffer the gradients of W_hh, W_ih,
  the bias and the inputs are one matmul (or sum) each over all steps.

Each ``apply`` takes ``x`` (T, B, in) floats or (T, B) int64 ids standing for one-hot rows, ``W_ih``
(G*H, in), the folded ``bias`` (G*H,), the initial state (B, H), ``W_hh`` (G*H, H) in torch's gate
order, then two settings:

* ``reverse``: run from the last step to the first (the backward direction of a bidirectional layer);
* ``mm_dtype``: torch.bfloat16 takes every matmul in bfloat16 (float32 accumulation, products
  rounded to bfloat16); the state, gates and outputs stay in the input's dtype. None: exact.

For the LSTM in float32 on a CPU, each step's pointwise work (the activations and the cell update
forward, the gate gradients backward: some fifteen and six torch operators) is one call into
csrc/lstm_step.c when a C compiler is at hand (native.py): 34 instead of 77 us forward and 7 instead
of 40 us backward per (32, 448) step on our 2-core machine, a char-cpu training step 1.08x to 1.10x
faster (bench/cpu_step.py).

They return the outputs (T, B, H) and the final state. Backward never changes what forward saved,
so it may run more than once (``retain_graph``, gradcheck).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnlm.recurrent import gemm, native


class Workspace:
    """Buffers one backward pass hands on to the next forward pass of the same shape.

    glibc returns a freed block above 32 MB to the OS, and the next step pays a page fault for every
    4 KB page of it again (allocating and filling 34 MB: 12.7 ms, 30 MB: 5.5 ms); charrnn's gate buffer is
    33.5 MB. A buffer given back here is reused instead. It holds at most ``keep`` buffers.
    """

    def __init__(self, keep: int = 16) -> None:
        self.keep, self.free = keep, []

    def take(self, shape: tuple[int, ...], like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """A buffer of this shape, dtype (default like's) and device: a given-back one, else a new one."""
        dtype = dtype or like.dtype
        for k, t in enumerate(self.free):
            if t.shape == shape and t.dtype == dtype and t.device == like.device:
                return self.free.pop(k)
        return like.new_empty(shape, dtype=dtype)

    def give(self, *buffers: Tensor) -> None:
        """Hand back buffers nothing else refers to any more."""
        self.free = [*self.free, *buffers][-self.keep :]


def _take(ws: Workspace | None, shape: tuple[int, ...], like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    return like.new_empty(shape, dtype=dtype or like.dtype) if ws is None else ws.take(shape, like, dtype)


def _order(T: int, reverse: bool) -> list[int]:
    return list(range(T - 1, -1, -1)) if reverse else list(range(T))


def _in(t: Tensor, mm_dtype: torch.dtype | None) -> Tensor:
    return t if mm_dtype is None else t.to(mm_dtype)


def _recurrent(W: Tensor, mm_dtype: torch.dtype | None, h0: Tensor) -> Tensor:
    """The recurrent weight W in the matmul dtype, packed for the per-step products with a batch of h0's rows."""
    return gemm.packed(_in(W, mm_dtype), h0.shape[0])


def _project(x: Tensor, W_ih: Tensor, bias: Tensor, mm_dtype: torch.dtype | None, ws: Workspace | None = None):
    """A (T, B, G*H) buffer holding x W_ih^T + bias for every step (from ``ws`` where one can be filled)."""
    if x.dim() == 2:  # one-hot ids: rows of W_ih^T
        return F.embedding(x, W_ih.t().contiguous()).add_(bias)
    T, B, _ = x.shape
    x2 = x.reshape(T * B, -1)
    if mm_dtype is None:  # oneDNN's matmul writes only into a tensor of its own
        return gemm.linear(x2, W_ih, bias).view(T, B, -1)
    y = gemm.linear(x2.to(mm_dtype), W_ih.to(mm_dtype)).view(T, B, -1)
    return _take(ws, y.shape, bias).copy_(y).add_(bias)


def _input_grads(ctx, DG: Tensor, D: Tensor, x: Tensor, W_ih: Tensor):
    """dx, dW_ih and dbias from the pre-activation gradients DG (T, B, G*H), D = DG in the matmul dtype."""
    need, mm_dtype = ctx.needs_input_grad, ctx.settings[1]
    D2 = D.reshape(-1, D.shape[2])
    dx = dW_ih = None
    if need[1] and x.dim() == 2:  # one-hot rows: their gradients add up at the ids
        dW_ih = DG.new_zeros(W_ih.shape[1], W_ih.shape[0]).index_add_(0, x.reshape(-1), DG.reshape(D2.shape)).t()
    elif need[1]:
        dW_ih = gemm.weight_grad(D2, _in(x.reshape(D2.shape[0], -1), mm_dtype)).to(W_ih.dtype)
    if need[0] and x.dim() == 3:
        dx = gemm.linear(D2, _in(W_ih.t().contiguous(), mm_dtype)).to(x.dtype).view(x.shape)
    return dx, dW_ih, DG.sum((0, 1)) if need[2] else None


def _recurrent_grad(ctx, D: Tensor, out: Tensor, h0: Tensor) -> Tensor:
    """dW_hh = sum_t dg_t^T h_{t-1}: one matmul over the steps after the first, one for the first (from h0)."""
    reverse, mm_dtype = ctx.settings
    T = D.shape[0]
    first, rest, prev = (T - 1, slice(0, T - 1), slice(1, T)) if reverse else (0, slice(1, T), slice(0, T - 1))
    dW = gemm.weight_grad(D[first], _in(h0, mm_dtype))
    if T > 1:
        hs = _in(out[prev], mm_dtype)
        dW = dW + gemm.weight_grad(D[rest].reshape(-1, D.shape[2]), hs.reshape(-1, hs.shape[2]))
    return dW.to(out.dtype)


def _times_previous(X: Tensor, S: Tensor, s0: Tensor, reverse: bool) -> None:
    """X_t *= S_{t-1} in place, with s0 before the first step (S: a state per step, T first)."""
    if reverse:
        X[:-1].mul_(S[1:])
        X[-1].mul_(s0)
    else:
        X[1:].mul_(S[:-1])
        X[0].mul_(s0)


def _tanh_(x: Tensor) -> Tensor:
    """tanh in place, as 2 sigmoid(2x) - 1: this torch's CPU tanh runs about 7x slower than its sigmoid
    (measured on (64, 512) float32: 69 against 10 us), and the four cheap ops still win twice over."""
    return x.mul_(2).sigmoid_().mul_(2).sub_(1)


def _ones(x: Tensor) -> Tensor:
    return torch.ones((), dtype=x.dtype, device=x.device)


_use_native = True  # native_steps(False) keeps the LSTM's pointwise work in torch operators


@contextlib.contextmanager
def native_steps(enabled: bool) -> Iterator[None]:
    """Run the block with the LSTM's fused C steps on or off (off: the torch operators), then restore the
    previous setting. Process-wide, not per thread: tests and bench/cpu_step.py compare the two paths."""
    global _use_native
    saved, _use_native = _use_native, enabled
    try:
        yield
    finally:
        _use_native = saved


@functools.cache
def _lstm_steps() -> ctypes.CDLL | None:
    """csrc/lstm_step.c, LSTMSequence's pointwise work of one step as one call (None: no C compiler)."""
    lib = native.load("lstm_step")
    if lib is not None:
        i64, ptr, flag = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
        lib.lstm_forward_step.argtypes = [i64, i64, ptr, ptr, flag, ptr, ptr, ptr, ptr, ptr]
        lib.lstm_backward_step.argtypes = [i64, i64, ptr, ptr, flag, ptr, ptr, ptr, ptr, ptr, ptr]
        lib.lstm_forward_step.restype = lib.lstm_backward_step.restype = None
    return lib


def _native_lstm(*tensors: Tensor, mm_dtype: torch.dtype | None) -> ctypes.CDLL | None:
    """The fused steps where they apply: float32 CPU tensors, contiguous, matmuls in float32 or bfloat16."""
    if not _use_native or mm_dtype not in (None, torch.bfloat16):
        return None
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors):
        return None
    return _lstm_steps()


def _at(t: Tensor) -> int:
    return t.data_ptr()


class RNNSequence(torch.autograd.Function):
    """Elman RNN: h_t = tanh(x_t W_ih^T + b + h_{t-1} W_hh^T)."""

    @staticmethod
    def forward(ctx, x, W_ih, bias, h0, W_hh, reverse: bool, mm_dtype: torch.dtype | None):
        out = _project(x, W_ih, bias, mm_dtype)  # (T, B, H), activated in place step by step
        W, steps, h = _recurrent(W_hh, mm_dtype, h0), out.unbind(0), h0
        for t in _order(len(steps), reverse):
            h = _tanh_(gemm.add_linear(steps[t], h, W, out=steps[t]))
        ctx.save_for_backward(x, W_ih, h0, W_hh, out)
        ctx.settings = reverse, mm_dtype
        return out, h.clone()

    @staticmethod
    def backward(ctx, d_out, d_hT):
        x, W_ih, h0, W_hh, out = ctx.saved_tensors
        reverse, mm_dtype = ctx.settings
        W = _recurrent(W_hh.t().contiguous(), mm_dtype, h0)  # dh_{t-1} = dz_t W_hh
        DZ = torch.addcmul(_ones(out), out, out, value=-1)  # tanh' = 1 - h^2, times g step by step
        dz, d_outs, g = DZ.unbind(0), d_out.unbind(0), torch.empty_like(h0)
        order = _order(len(dz), not reverse)
        torch.add(d_outs[order[0]], d_hT, out=g)  # the gradient reaching the last state
        for k, t in enumerate(order):
            dz[t].mul_(g)
            if k + 1 < len(order):
                gemm.add_linear(d_outs[order[k + 1]], dz[t], W, out=g)  # ... and the state before it
        dh0 = gemm.linear(_in(dz[order[-1]], mm_dtype), W).to(h0.dtype) if ctx.needs_input_grad[3] else None
        D = _in(DZ, mm_dtype)
        dW_hh = _recurrent_grad(ctx, D, out, h0) if ctx.needs_input_grad[4] else None
        return (*_input_grads(ctx, DZ, D, x, W_ih), dh0, dW_hh, None, None)


class GRUSequence(torch.autograd.Function):
    """GRU as torch computes it: r, z = sigmoid(.), n = tanh(xn + r * (h W_hn^T + b_hn)), h = n + z (h - n)."""

    @staticmethod
    def forward(ctx, x, W_ih, bias, h0, W_hh, b_hn, reverse, mm_dtype):
        A = _project(x, W_ih, bias, mm_dtype)  # (T, B, 3H): becomes r, z, n
        T, B, H3 = A.shape
        H = H3 // 3
        HN = A.new_empty(T, B, H)  # h W_hn^T + b_hn, which the reset gate scales
        out = A.new_empty(T, B, H)
        W, steps, hn, outs, h = _recurrent(W_hh, mm_dtype, h0), A.unbind(0), HN.unbind(0), out.unbind(0), h0
        for t in _order(T, reverse):
            a, y = steps[t], gemm.linear(_in(h, mm_dtype), W)  # (B, 3H)
            a[:, : 2 * H].add_(y[:, : 2 * H]).sigmoid_()
            torch.add(y[:, 2 * H :], b_hn, out=hn[t])
            _tanh_(torch.addcmul(a[:, 2 * H :], a[:, :H], hn[t], out=a[:, 2 * H :]))
            h = torch.lerp(a[:, 2 * H :], h, a[:, H : 2 * H], out=outs[t])
        ctx.save_for_backward(x, W_ih, h0, W_hh, A, HN, out)
        ctx.settings = reverse, mm_dtype
        return out, h.clone()

    @staticmethod
    def backward(ctx, d_out, d_hT):
        x, W_ih, h0, W_hh, A, HN, out = ctx.saved_tensors
        reverse, mm_dtype = ctx.settings
        T, B, H = out.shape
        r, z, n = A.split(H, dim=-1)
        # With g the gradient reaching h_t: d[r, z, hn] = g [P_r, P_z, P_hn], d n_pre = g A_n, dh_{t-1} gets g z.
        A_n = torch.addcmul(_ones(n), n, n, value=-1)
        torch.addcmul(A_n, A_n, z, value=-1, out=A_n)  # (1 - n^2)(1 - z)
        G = torch.empty_like(out)  # first h_{t-1} - n, then g for every step
        first, rest, prev = (T - 1, slice(0, T - 1), slice(1, T)) if reverse else (0, slice(1, T), slice(0, T - 1))
        torch.sub(out[prev], n[rest], out=G[rest])
        torch.sub(h0, n[first], out=G[first])
        P = torch.empty_like(A)
        P_r, P_z, P_hn = P.split(H, dim=-1)
        torch.addcmul(r, r, r, value=-1, out=P_r).mul_(HN).mul_(A_n)
        torch.addcmul(z, z, z, value=-1, out=P_z).mul_(G)
        torch.mul(A_n, r, out=P_hn)
        W = _recurrent(W_hh.t().contiguous(), mm_dtype, h0)
        p, g, zs, d_outs = P.unbind(0), G.unbind(0), z.unbind(0), d_out.unbind(0)
        order = _order(T, not reverse)
        torch.add(d_outs[order[0]], d_hT, out=g[order[0]])
        for k, t in enumerate(order):
            p[t].view(B, 3, H).mul_(g[t].unsqueeze(1))
            if k + 1 < len(order):
                s = order[k + 1]
                gemm.add_linear(d_outs[s], p[t], W, out=g[s]).addcmul_(g[t], zs[t])
        need = ctx.needs_input_grad
        dh0 = g[first] * zs[first] + gemm.linear(_in(p[first], mm_dtype), W).to(h0.dtype) if need[3] else None
        dW_hh = _recurrent_grad(ctx, _in(P, mm_dtype), out, h0) if need[4] else None  # P: d[r, z, hn]
        db_hn = P_hn.sum((0, 1)) if need[5] else None
        torch.mul(G, A_n, out=P_hn)  # the input side's candidate gradient lacks the reset gate's factor
        return (*_input_grads(ctx, P, _in(P, mm_dtype), x, W_ih), dh0, dW_hh, db_hn, None, None)


class LSTMSequence(torch.autograd.Function):
    """LSTM: i, f, o = sigmoid(.), g = tanh(.), c = f c + i g, h = o tanh(c); gates in torch's order i, f, g, o."""

    @staticmethod
    def run(x, W_ih, bias, h0, c0, W_hh, reverse, mm_dtype, ws=None):
        """The forward pass: gate activations A (T, B, 4H), cell states C, their tanh TC, outputs, h_T, c_T."""
        A = _project(x, W_ih, bias, mm_dtype, ws)  # becomes the gate activations
        T, B, H4 = A.shape
        H = H4 // 4
        C, TC = (_take(ws, (T, B, H), A) for _ in range(2))
        out = A.new_empty(T, B, H)
        W = _recurrent(W_hh, mm_dtype, h0)
        steps, cs, tc, outs = A.unbind(0), C.unbind(0), TC.unbind(0), out.unbind(0)
        h, c = h0, c0
        lib = _native_lstm(A, h0, c0, mm_dtype=mm_dtype)
        if lib is not None:  # the same steps, the pointwise work of each in one C call
            h_mm = h0.to(mm_dtype) if mm_dtype is not None else None
            bf16 = int(mm_dtype is not None)
            for t in _order(T, reverse):
                product = gemm.linear(h if h_mm is None else h_mm, W)
                lib.lstm_forward_step(B, H, _at(steps[t]), _at(product), bf16, _at(c), _at(cs[t]), _at(tc[t]),
                                      _at(outs[t]), None if h_mm is None else _at(h_mm))  # fmt: skip
                h, c = outs[t], cs[t]
            return A, C, TC, out, h, c
        for t in _order(T, reverse):
            a = gemm.add_linear(steps[t], h, W, out=steps[t])
            a[:, : 2 * H].sigmoid_()
            _tanh_(a[:, 2 * H : 3 * H])
            a[:, 3 * H :].sigmoid_()
            c = torch.mul(a[:, H : 2 * H], c, out=cs[t]).addcmul_(a[:, :H], a[:, 2 * H : 3 * H])
            h = torch.mul(a[:, 3 * H :], _tanh_(tc[t].copy_(c)), out=outs[t])
        return A, C, TC, out, h, c

    @staticmethod
    def forward(ctx, x, W_ih, bias, h0, c0, W_hh, reverse, mm_dtype, ws: Workspace | None = None):
        A, C, TC, out, h, c = LSTMSequence.run(x, W_ih, bias, h0, c0, W_hh, reverse, mm_dtype, ws)
        ctx.save_for_backward(x, W_ih, bias, h0, c0, W_hh, out)
        ctx.settings, ctx.ws = (reverse, mm_dtype), ws
        ctx.buffers = A, C, TC  # backward overwrites them; a second backward recomputes them
        return out, h.clone(), c.clone()

    @staticmethod
    def backward(ctx, d_out, d_hT, d_cT):
        x, W_ih, bias, h0, c0, W_hh, out = ctx.saved_tensors
        reverse, mm_dtype = ctx.settings
        A, C, TC = ctx.buffers or LSTMSequence.run(x, W_ih, bias, h0, c0, W_hh, *ctx.settings)[:3]
        ctx.buffers = None
        T, B, H = out.shape
        i, f, g, o = A.split(H, dim=-1)
        # With gh the gradient reaching h_t and dc the one reaching c_t:
        # dc += gh Q_c;  d o_pre = gh P_o;  d [i, f, g]_pre = dc [P_i, P_f, P_g];  dc_{t-1} = dc f.
        # The factors replace what they are made of, in A (becoming P), C (Q_c) and TC, in an order
        # that reads every value before overwriting it.
        F_ = _take(ctx.ws, out.shape, out).copy_(f)  # f itself carries dc back
        _times_previous(torch.addcmul(f, f, f, value=-1, out=f), C, c0, reverse)  # P_f = f (1 - f) c_{t-1}
        Q_c = torch.addcmul(_ones(TC), TC, TC, value=-1, out=C).mul_(o)  # (1 - tanh(c)^2) o
        torch.addcmul(o, o, o, value=-1, out=o).mul_(TC)  # P_o = o (1 - o) tanh(c)
        P_g = torch.addcmul(_ones(g), g, g, value=-1, out=TC).mul_(i)  # (1 - g^2) i
        torch.addcmul(i, i, i, value=-1, out=i).mul_(g)  # P_i = i (1 - i) g
        g.copy_(P_g)
        P = A
        W = _recurrent(W_hh.t().contiguous(), mm_dtype, h0)
        D = P if mm_dtype is None else _take(ctx.ws, P.shape, P, mm_dtype)  # P in the matmul dtype
        p, d, q_c, fs, d_outs = P.unbind(0), D.unbind(0), Q_c.unbind(0), F_.unbind(0), d_out.unbind(0)
        gh, dc = torch.empty_like(h0), d_cT.clone()
        order = _order(T, not reverse)
        torch.add(d_outs[order[0]], d_hT, out=gh)
        lib = _native_lstm(P, Q_c, F_, dc, mm_dtype=mm_dtype)
        if lib is not None:  # the same steps, with gh = d_out + the product added inside the call
            d_outs = d_out.contiguous().unbind(0)
            bf16, product, base, scratch = int(mm_dtype is not None), None, gh, gh.new_empty(H)
            for k, t in enumerate(order):
                mm = None if product is None else _at(product)
                lib.lstm_backward_step(B, H, _at(base), mm, bf16, _at(q_c[t]), _at(p[t]), _at(dc), _at(fs[t]),
                                       _at(d[t]) if bf16 else None, _at(scratch))  # fmt: skip
                if k + 1 < len(order):
                    product, base = gemm.linear(d[t], W), d_outs[order[k + 1]]
        else:
            for k, t in enumerate(order):
                dc.addcmul_(gh, q_c[t])
                p[t][:, 3 * H :].mul_(gh)
                p[t][:, : 3 * H].view(B, 3, H).mul_(dc.unsqueeze(1))
                dc.mul_(fs[t])
                if mm_dtype is not None:
                    d[t].copy_(p[t])
                if k + 1 < len(order):
                    gemm.add_linear(d_outs[order[k + 1]], d[t], W, out=gh)
        dh0 = gemm.linear(d[order[-1]], W).to(h0.dtype) if ctx.needs_input_grad[3] else None
        dW_hh = _recurrent_grad(ctx, D, out, h0) if ctx.needs_input_grad[5] else None
        dx, dW_ih, db = _input_grads(ctx, P, D, x, W_ih)
        if ctx.ws is not None:  # every gradient above is a tensor of its own
            ctx.ws.give(A, C, TC, F_, *([] if D is P else [D]))
        return dx, dW_ih, db, dh0, dc, dW_hh, None, None, None
