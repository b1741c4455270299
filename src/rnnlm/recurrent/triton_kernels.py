"""Triton kernels for the ``triton`` engine: a whole layer's recurrence in one persistent launch.

A cuDNN or textbook step loop launches a few small kernels per time step, and at the batch sizes of
character models the launches, not the arithmetic, set the pace. Here one launch walks all T steps:

* ``recurrence_fwd``: for every step, the recurrent product ``h_{t-1} W_hh^T`` (tiles of W_hh come
  from L2, which holds the whole matrix), the gate math fused behind it, and the stores that the
  backward pass needs (gate activations, cell states, the GRU's ``h W_hn^T + b_hn``);
* ``recurrence_bwd``: backpropagation through time: the carried gradient ``dP_{t+1} W_hh`` and
  the gate derivatives, leaving the pre-activation gradients dP of every step in one buffer.

The input projection (before) and the weight gradients (after) stay as large matmuls in torch
(engine_triton.py). Buffers are time-major and padded by one step, so that no step needs a branch:

    HS (T+1, B, H)   h_{-1} = h0 and every h_t; forward: h_t at t+1, h0 at 0; reverse: h_t at t, h0 at T
    CS (T+1, B, H)   the same for the LSTM's cell state
    A  (T, B, G*H)   in: x_t W_ih^T + b; out: the gate activations (i, f, g, o | r, z, n)
    DP (T+1, B, G*H) the pre-activation gradients; the extra step, zeros, is the one after the last

A program owns a block of ``BB`` batch rows and a slice of the hidden units. With one slice
(``NSPLIT == 1``) the steps are ordered by a barrier inside the program. With several, the programs of
one batch block meet at a grid barrier (an atomic counter) after every step, so all of them must be
resident at once: the launcher keeps the grid within the multiprocessor count. The interpreter
(``TRITON_INTERPRET=1``, the CPU tests) runs programs one after another, so it takes ``NSPLIT == 1``.

Gate orders are torch's: rnn ``h``; gru ``r, z, n``; lstm ``i, f, g, o``. ``CELL`` is 0, 1, 2.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0


@triton.jit
def _dot(a, b, acc, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """acc + a @ b. UPCAST: the interpreter's dot mishandles bfloat16 operands, so it gets the same
    bfloat16-rounded values as float32 (a float32 product of them is exact, as the GPU's is)."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PREC, out_dtype=acc.dtype)


@triton.jit
def _step_barrier(SYNC, pid_b, s, NSPLIT: tl.constexpr):
    """Every program of this batch block has finished step s (its stores visible) before any goes on."""
    tl.debug_barrier()
    if NSPLIT > 1:
        tl.atomic_add(SYNC + pid_b, 1, sem="release", scope="gpu")
        target = (s + 1) * NSPLIT
        while tl.atomic_add(SYNC + pid_b, 0, sem="acquire", scope="gpu") < target:
            pass
        tl.debug_barrier()


@triton.jit
def recurrence_fwd(
    A, HS, CS, HN, WT, BHN, SYNC,
    T, B, H, HSPLIT,
    CELL: tl.constexpr, REVERSE: tl.constexpr, NSPLIT: tl.constexpr,
    BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """WT: W_hh^T (H, G*H), contiguous, float32 or bfloat16 (the dot's input dtype)."""
    G: tl.constexpr = 1 if CELL == 0 else (3 if CELL == 1 else 4)
    ACC = A.dtype.element_ty  # float32 (float64 in the gradient checks)
    pid_b = tl.program_id(0)
    pid_n = tl.program_id(1)
    GH = G * H
    rows = pid_b * BB + tl.arange(0, BB)
    rmask = rows < B
    n_lo = pid_n * HSPLIT
    n_hi = tl.minimum(n_lo + HSPLIT, H)
    for s in range(T):
        t = (T - 1 - s) if REVERSE else s
        prev = t + 1 if REVERSE else t  # where h_{t-1} (and c_{t-1}) lie in HS (CS)
        cur = t if REVERSE else t + 1  # where h_t goes
        hp_base = HS + prev * B * H
        hc_base = HS + cur * B * H
        a_base = A + t * B * GH
        for n0 in range(n_lo, n_hi, BN):
            cols = n0 + tl.arange(0, BN)
            cmask = cols < n_hi
            acc0 = tl.zeros((BB, BN), dtype=ACC)
            acc1 = tl.zeros((BB, BN), dtype=ACC)
            acc2 = tl.zeros((BB, BN), dtype=ACC)
            acc3 = tl.zeros((BB, BN), dtype=ACC)
            for k0 in range(0, H, BK):
                ks = k0 + tl.arange(0, BK)
                kmask = ks < H
                h = tl.load(hp_base + rows[:, None] * H + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
                h = h.to(WT.dtype.element_ty)
                wp = WT + ks[:, None] * GH + cols[None, :]
                wm = kmask[:, None] & cmask[None, :]
                acc0 = _dot(h, tl.load(wp, mask=wm, other=0.0), acc0, PREC, UPCAST)
                if G > 1:
                    acc1 = _dot(h, tl.load(wp + H, mask=wm, other=0.0), acc1, PREC, UPCAST)
                    acc2 = _dot(h, tl.load(wp + 2 * H, mask=wm, other=0.0), acc2, PREC, UPCAST)
                if G > 3:
                    acc3 = _dot(h, tl.load(wp + 3 * H, mask=wm, other=0.0), acc3, PREC, UPCAST)
            m2 = rmask[:, None] & cmask[None, :]
            ap = a_base + rows[:, None] * GH + cols[None, :]
            hidx = rows[:, None] * H + cols[None, :]
            if CELL == 0:
                h_new = _tanh(tl.load(ap, mask=m2, other=0.0) + acc0)
            elif CELL == 1:
                r = _sigmoid(tl.load(ap, mask=m2, other=0.0) + acc0)
                z = _sigmoid(tl.load(ap + H, mask=m2, other=0.0) + acc1)
                hn = acc2 + tl.load(BHN + cols, mask=cmask, other=0.0)[None, :]
                n = _tanh(tl.load(ap + 2 * H, mask=m2, other=0.0) + r * hn)
                h_prev = tl.load(hp_base + hidx, mask=m2, other=0.0)
                h_new = n + z * (h_prev - n)
                tl.store(ap, r, mask=m2)
                tl.store(ap + H, z, mask=m2)
                tl.store(ap + 2 * H, n, mask=m2)
                tl.store(HN + t * B * H + hidx, hn, mask=m2)
            else:
                i = _sigmoid(tl.load(ap, mask=m2, other=0.0) + acc0)
                f = _sigmoid(tl.load(ap + H, mask=m2, other=0.0) + acc1)
                g = _tanh(tl.load(ap + 2 * H, mask=m2, other=0.0) + acc2)
                o = _sigmoid(tl.load(ap + 3 * H, mask=m2, other=0.0) + acc3)
                c_prev = tl.load(CS + prev * B * H + hidx, mask=m2, other=0.0)
                c = f * c_prev + i * g
                h_new = o * _tanh(c)
                tl.store(ap, i, mask=m2)
                tl.store(ap + H, f, mask=m2)
                tl.store(ap + 2 * H, g, mask=m2)
                tl.store(ap + 3 * H, o, mask=m2)
                tl.store(CS + cur * B * H + hidx, c, mask=m2)
            tl.store(hc_base + hidx, h_new, mask=m2)
        _step_barrier(SYNC, pid_b, s, NSPLIT)


@triton.jit
def recurrence_bwd(
    A, HS, CS, HN, W, DOUT, DP, DNIN, E, DC, SYNC,
    T, B, H, HSPLIT,
    CELL: tl.constexpr, REVERSE: tl.constexpr, NSPLIT: tl.constexpr,
    BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """W: W_hh (G*H, H), contiguous. DOUT (T, B, H): the gradient of the outputs. E (B, H): the gradient
    reaching h_T on entry (d h_T), the GRU's elementwise carry ``g z`` between steps. DC (B, H): d c_T
    on entry, d c_{-1} on exit. DNIN (T, B, H): the GRU's candidate gradient for the input side."""
    G: tl.constexpr = 1 if CELL == 0 else (3 if CELL == 1 else 4)
    ACC = A.dtype.element_ty  # float32 (float64 in the gradient checks)
    pid_b = tl.program_id(0)
    pid_n = tl.program_id(1)
    GH = G * H
    rows = pid_b * BB + tl.arange(0, BB)
    rmask = rows < B
    n_lo = pid_n * HSPLIT
    n_hi = tl.minimum(n_lo + HSPLIT, H)
    for s in range(T):
        t = s if REVERSE else (T - 1 - s)  # backward in time: the opposite of the forward order
        prev = t + 1 if REVERSE else t
        cur = t if REVERSE else t + 1
        dp_cur = DP + (t + REVERSE) * B * GH  # DP of step t
        dp_next = DP + (t + 1 - REVERSE) * B * GH  # DP of the step that read h_t (zeros at the end)
        a_base = A + t * B * GH
        for n0 in range(n_lo, n_hi, BN):
            cols = n0 + tl.arange(0, BN)
            cmask = cols < n_hi
            m2 = rmask[:, None] & cmask[None, :]
            hidx = rows[:, None] * H + cols[None, :]
            rec = tl.zeros((BB, BN), dtype=ACC)
            for k0 in range(0, GH, BK):
                ks = k0 + tl.arange(0, BK)
                kmask = ks < GH
                d = tl.load(dp_next + rows[:, None] * GH + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
                w = tl.load(W + ks[:, None] * H + cols[None, :], mask=kmask[:, None] & cmask[None, :], other=0.0)
                rec = _dot(d.to(W.dtype.element_ty), w, rec, PREC, UPCAST)
            gh = rec + tl.load(DOUT + t * B * H + hidx, mask=m2, other=0.0)
            gh += tl.load(E + hidx, mask=m2, other=0.0)
            ap = a_base + rows[:, None] * GH + cols[None, :]
            dpp = dp_cur + rows[:, None] * GH + cols[None, :]
            if CELL == 0:
                h = tl.load(HS + cur * B * H + hidx, mask=m2, other=0.0)
                tl.store(dpp, gh * (1.0 - h * h), mask=m2)
                tl.store(E + hidx, tl.zeros((BB, BN), dtype=ACC), mask=m2)
            elif CELL == 1:
                r = tl.load(ap, mask=m2, other=0.0)
                z = tl.load(ap + H, mask=m2, other=0.0)
                n = tl.load(ap + 2 * H, mask=m2, other=0.0)
                hn = tl.load(HN + t * B * H + hidx, mask=m2, other=0.0)
                h_prev = tl.load(HS + prev * B * H + hidx, mask=m2, other=0.0)
                dn = gh * (1.0 - z) * (1.0 - n * n)
                tl.store(dpp, dn * hn * r * (1.0 - r), mask=m2)
                tl.store(dpp + H, gh * (h_prev - n) * z * (1.0 - z), mask=m2)
                tl.store(dpp + 2 * H, dn * r, mask=m2)
                tl.store(DNIN + t * B * H + hidx, dn, mask=m2)
                tl.store(E + hidx, gh * z, mask=m2)
            else:
                i = tl.load(ap, mask=m2, other=0.0)
                f = tl.load(ap + H, mask=m2, other=0.0)
                g = tl.load(ap + 2 * H, mask=m2, other=0.0)
                o = tl.load(ap + 3 * H, mask=m2, other=0.0)
                c = tl.load(CS + cur * B * H + hidx, mask=m2, other=0.0)
                c_prev = tl.load(CS + prev * B * H + hidx, mask=m2, other=0.0)
                tc = _tanh(c)
                dc = tl.load(DC + hidx, mask=m2, other=0.0) + gh * o * (1.0 - tc * tc)
                tl.store(dpp, dc * g * i * (1.0 - i), mask=m2)
                tl.store(dpp + H, dc * c_prev * f * (1.0 - f), mask=m2)
                tl.store(dpp + 2 * H, dc * i * (1.0 - g * g), mask=m2)
                tl.store(dpp + 3 * H, gh * tc * o * (1.0 - o), mask=m2)
                tl.store(DC + hidx, dc * f, mask=m2)
                tl.store(E + hidx, tl.zeros((BB, BN), dtype=ACC), mask=m2)
        _step_barrier(SYNC, pid_b, s, NSPLIT)
