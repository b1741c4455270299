"""Whole-sequence recurrences as autograd Functions: one layer and direction per call, time-major.

Autograd through the scratch cells records a dozen nodes per time step and keeps every
intermediate alive. Here forward runs the steps into preallocated buffers with in-place
activations and keeps only what backward reads; backward walks the steps back with two to five
ops each. Whatever does not depend on the carried gradient (activation derivatives and their
products) is computed for all steps at once before the backward loop, and the recurrent weight
gradient is one matmul over all steps, not T small ones.

Each ``apply`` takes ``XW`` (T, B, gates * hidden), the input projection with the folded bias
already added (the caller computes it for all steps in one matmul, and autograd differentiates
it), the initial state (B, hidden), ``W_hh`` (gates * hidden, hidden) in torch's layout and gate
order, then three settings:

* ``reverse``: run from the last step to the first (the backward direction of a bidirectional layer);
* ``mm_dtype``: torch.bfloat16 runs the recurrent matmuls in bfloat16 (float32 accumulation, the
  product rounded to bfloat16); the state, gates and outputs stay in the input's dtype. None: exact;
* ``threads``: intra-op threads for the step loops (None: leave torch's setting). A step's matmul
  is small, and on a shared CPU a parallel region per step costs more than it saves.

They return the outputs (T, B, hidden) and the final state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from . import gemm


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads (None: leave the setting), then restore it."""
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _order(T: int, reverse: bool) -> list[int]:
    return list(range(T - 1, -1, -1)) if reverse else list(range(T))


def _previous(out: Tensor, first: Tensor, reverse: bool) -> Tensor:
    """The state each step started from, (T, B, H): ``first``, then the outputs one step behind."""
    if reverse:
        return torch.cat([out[1:], first.unsqueeze(0)])
    return torch.cat([first.unsqueeze(0), out[:-1]])


def _weights(W_hh: Tensor, mm_dtype: torch.dtype | None, transpose: bool) -> Tensor:
    """W_hh (forward: h W_hh^T) or W_hh^T (backward: dgates W_hh) as ``gemm.linear`` reads it, in the matmul dtype."""
    W = W_hh.t().contiguous() if transpose else W_hh
    return W if mm_dtype is None else W.to(mm_dtype)


def _weight_grad(dgates: Tensor, prev: Tensor, mm_dtype: torch.dtype | None) -> Tensor:
    """dW_hh = sum over steps of dgates_t^T h_{t-1}: one (G*H, T*B) x (T*B, H) matmul."""
    return gemm.weight_grad(dgates.flatten(0, 1), prev.flatten(0, 1), mm_dtype)


def _mm(a: Tensor, W: Tensor) -> Tensor:
    """a @ W.T in W's dtype, returned in a's."""
    return gemm.linear(a.to(W.dtype), W).to(a.dtype)


def _one_minus_square(x: Tensor) -> Tensor:
    """1 - x^2, the derivative of tanh at the point whose tanh is x."""
    return torch.addcmul(torch.ones((), dtype=x.dtype), x, x, value=-1)


class RNNSequence(torch.autograd.Function):
    """Elman RNN: h_t = tanh(XW_t + h_{t-1} W_hh^T)."""

    @staticmethod
    def forward(ctx, XW, h0, W_hh, reverse: bool, mm_dtype: torch.dtype | None, threads: int | None):
        out = torch.empty_like(XW)  # (T, B, H)
        W, xw, outs = _weights(W_hh, mm_dtype, False), XW.unbind(0), out.unbind(0)
        h = h0
        with num_threads(threads):
            for t in _order(len(xw), reverse):
                h = gemm.add_linear(xw[t], h, W, outs[t]).tanh_()
        ctx.save_for_backward(out, h0, W_hh)
        ctx.settings = reverse, mm_dtype, threads
        return out, h.clone()

    @staticmethod
    def backward(ctx, d_out, d_hT):
        out, h0, W_hh = ctx.saved_tensors
        reverse, mm_dtype, threads = ctx.settings
        W = _weights(W_hh, mm_dtype, True)
        dZ = _one_minus_square(out)  # tanh'; becomes the pre-activation gradient step by step
        dz, d_outs, g = dZ.unbind(0), d_out.unbind(0), torch.empty_like(h0)
        order = _order(len(dz), not reverse)
        with num_threads(threads):
            torch.add(d_outs[order[0]], d_hT, out=g)  # the gradient reaching the last state
            for k, t in enumerate(order):
                dz[t].mul_(g)
                if k + 1 < len(order):
                    gemm.add_linear(d_outs[order[k + 1]], dz[t], W, g)  # ... and the state before it
        dh0 = _mm(dz[order[-1]], W) if ctx.needs_input_grad[1] else None
        dW = _weight_grad(dZ, _previous(out, h0, reverse), mm_dtype) if ctx.needs_input_grad[2] else None
        return dZ, dh0, dW, None, None, None


class GRUSequence(torch.autograd.Function):
    """GRU as torch computes it: r, z = sigmoid(.), n = tanh(XW_n + r * (h W_hn^T + b_hn)), h = n + z (h - n)."""

    @staticmethod
    def forward(ctx, XW, h0, W_hh, b_hn, reverse: bool, mm_dtype: torch.dtype | None, threads: int | None):
        T, B, H3 = XW.shape
        H = H3 // 3
        bias = torch.cat([b_hn.new_zeros(2 * H), b_hn])  # b_hn sits on the candidate's block only
        GH = torch.empty_like(XW)  # (T, B, 3H): h W_hh^T + [0, 0, b_hn]
        RZ = XW.new_empty(T, B, 2 * H)  # reset and update gates
        N = XW.new_empty(T, B, H)  # candidate state
        out = XW.new_empty(T, B, H)
        W = _weights(W_hh, mm_dtype, False)
        xw, gh, rz, n, outs = (x.unbind(0) for x in (XW, GH, RZ, N, out))
        h = h0
        with num_threads(threads):
            for t in _order(T, reverse):
                gemm.add_linear(bias, h, W, gh[t])
                torch.add(xw[t][:, : 2 * H], gh[t][:, : 2 * H], out=rz[t]).sigmoid_()
                torch.addcmul(xw[t][:, 2 * H :], rz[t][:, :H], gh[t][:, 2 * H :], out=n[t]).tanh_()
                h = torch.lerp(n[t], h, rz[t][:, H:], out=outs[t])
        ctx.save_for_backward(out, h0, W_hh, GH, RZ, N)
        ctx.settings = reverse, mm_dtype, threads
        return out, h.clone()

    @staticmethod
    def backward(ctx, d_out, d_hT):
        out, h0, W_hh, GH, RZ, N = ctx.saved_tensors
        reverse, mm_dtype, threads = ctx.settings
        T, B, H = out.shape
        W = _weights(W_hh, mm_dtype, True)
        r, z, hn = RZ[..., :H], RZ[..., H:], GH[..., 2 * H :]
        prev = _previous(out, h0, reverse)
        # With g the gradient reaching h_t: d n_pre = g A, d z_pre = g P_z, d r_pre = g P_r, d hn = g P_hn.
        A = (1 - z) * _one_minus_square(N)
        P = torch.stack([A * hn * r * (1 - r), (prev - N) * z * (1 - z), A * r], dim=2)  # (T, B, 3, H)
        DGH = XW_grad = out.new_empty(T, B, 3 * H)  # gradient of GH, later turned into XW's
        G = torch.empty_like(out)  # g for every step
        dgh, g, p, zs, d_outs = DGH.unbind(0), G.unbind(0), P.unbind(0), z.unbind(0), d_out.unbind(0)
        order = _order(T, not reverse)
        with num_threads(threads):
            torch.add(d_outs[order[0]], d_hT, out=g[order[0]])
            for k, t in enumerate(order):
                torch.mul(g[t].unsqueeze(1), p[t], out=dgh[t].view(B, 3, H))
                if k + 1 < len(order):
                    s = order[k + 1]
                    gemm.add_linear(d_outs[s], dgh[t], W, g[s]).addcmul_(g[t], zs[t])
        first = order[-1]
        dh0 = g[first] * zs[first] + _mm(dgh[first], W) if ctx.needs_input_grad[1] else None
        dW = _weight_grad(DGH, prev, mm_dtype) if ctx.needs_input_grad[2] else None
        db_hn = DGH[..., 2 * H :].sum((0, 1)) if ctx.needs_input_grad[3] else None
        torch.mul(G, A, out=XW_grad[..., 2 * H :])  # the candidate's input gradient lacks the factor r
        return XW_grad, dh0, dW, db_hn, None, None, None


class LSTMSequence(torch.autograd.Function):
    """LSTM: i, f, o = sigmoid(.), g = tanh(.), c = f c + i g, h = o tanh(c); gates in torch's order i, f, g, o."""

    @staticmethod
    def forward(ctx, XW, h0, c0, W_hh, reverse: bool, mm_dtype: torch.dtype | None, threads: int | None):
        T, B, H4 = XW.shape
        H = H4 // 4
        GA = torch.empty_like(XW)  # (T, B, 4H) gate activations
        C = XW.new_empty(T, B, H)  # cell states
        TC = XW.new_empty(T, B, H)  # tanh of the cell states
        out = XW.new_empty(T, B, H)
        W = _weights(W_hh, mm_dtype, False)
        xw, ga, cs, tc, outs = (x.unbind(0) for x in (XW, GA, C, TC, out))
        h, c = h0, c0
        with num_threads(threads):
            for t in _order(T, reverse):
                a = gemm.add_linear(xw[t], h, W, ga[t])
                a[:, : 2 * H].sigmoid_()
                a[:, 2 * H : 3 * H].tanh_()
                a[:, 3 * H :].sigmoid_()
                c = torch.mul(a[:, H : 2 * H], c, out=cs[t]).addcmul_(a[:, :H], a[:, 2 * H : 3 * H])
                h = torch.mul(a[:, 3 * H :], torch.tanh(c, out=tc[t]), out=outs[t])
        ctx.save_for_backward(out, h0, c0, W_hh, GA, C, TC)
        ctx.settings = reverse, mm_dtype, threads
        return out, h.clone(), c.clone()

    @staticmethod
    def backward(ctx, d_out, d_hT, d_cT):
        out, h0, c0, W_hh, GA, C, TC = ctx.saved_tensors
        reverse, mm_dtype, threads = ctx.settings
        T, B, H = out.shape
        W = _weights(W_hh, mm_dtype, True)
        i, f, gg, o = GA.split(H, dim=-1)
        # With g the gradient reaching h_t and dc the one reaching c_t:
        # dc += g Q_c;  d o_pre = g P_o;  d [i, f, g]_pre = dc P;  dc_{t-1} = dc f.
        Q_c = o * _one_minus_square(TC)
        P_o = TC * o * (1 - o)
        P = torch.stack([gg * i * (1 - i), _previous(C, c0, reverse) * f * (1 - f), i * _one_minus_square(gg)], 2)
        DG = torch.empty_like(GA)  # (T, B, 4H) pre-activation gradients
        dga, p, q_c, p_o, fs, d_outs = (x.unbind(0) for x in (DG, P, Q_c, P_o, f, d_out))
        g, dc = torch.empty_like(h0), d_cT.clone()
        order = _order(T, not reverse)
        with num_threads(threads):
            torch.add(d_outs[order[0]], d_hT, out=g)
            for k, t in enumerate(order):
                dc.addcmul_(g, q_c[t])
                torch.mul(dc.unsqueeze(1), p[t], out=dga[t][:, : 3 * H].view(B, 3, H))
                torch.mul(g, p_o[t], out=dga[t][:, 3 * H :])
                dc.mul_(fs[t])
                if k + 1 < len(order):
                    gemm.add_linear(d_outs[order[k + 1]], dga[t], W, g)
        dh0 = _mm(dga[order[-1]], W) if ctx.needs_input_grad[1] else None
        dW = _weight_grad(DG, _previous(out, h0, reverse), mm_dtype) if ctx.needs_input_grad[3] else None
        return DG, dh0, dc, dW, None, None, None
