"""One layer's recurrence with every step's state and gates kept, for one sequence: what a page that shows the
inside of a model needs (rnnlm serve's Inspect).

The engines return the outputs h of every step but keep no cell states or gates. Computing those afterwards
from h takes a second matrix product over all steps; torch.nn.LSTM at batch 1 also pays for a dozen operator
calls per step. Here the input part of every step is one matrix product, and the steps run in the compiled
kernel ``rnnlm_trace`` (csrc/decode.c, built by native.py), which writes h, the LSTM's c and the gates after
their nonlinearities as it goes: the arithmetic of the generation kernel, float32, one pass.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from rnnlm.recurrent.native import load

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
CELLS = {"rnn": 0, "gru": 1, "lstm": 2}


def available(*tensors: Tensor) -> bool:
    """Whether the kernel builds here and can take these tensors (float32 on the CPU)."""
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors):
        return False
    return load("decode") is not None


@torch.no_grad()
def trace_layer(cell: str, x: Tensor, weights: tuple[Tensor, ...]) -> tuple[Tensor, Tensor | None, Tensor]:
    """One layer over x (T, in) from a zero state, with the canonical weights (W_ih, W_hh, bias[, b_hn]):
    h (T, H), the LSTM's c (T, H) or None, and the gates (T, G*H) after their nonlinearities (lstm i, f, g, o;
    gru r, z, n; the rnn's pre-activations). The caller checks ``available`` first."""
    lib = load("decode")
    if lib is None:
        raise RuntimeError("the decode kernel is not available; check trace.available first")
    W_ih, W_hh, bias = (w.detach().float() for w in weights[:3])
    T, H = x.shape[0], W_hh.shape[1]
    G = GATES[cell]
    xw = torch.addmm(bias, x.float(), W_ih.t()).contiguous()  # (T, G*H): every step's input part at once
    w_hh = W_hh.t().contiguous()  # (H, G*H): the layout the kernel reads row by row
    b_hn = torch.cat([torch.zeros(2 * H), weights[3].detach().float()]) if cell == "gru" else torch.zeros(G * H)
    zeros = torch.zeros(H)
    h = torch.empty(T, H)
    c = torch.empty(T, H) if cell == "lstm" else None
    fn = lib.rnnlm_trace
    fn.restype = ctypes.c_int
    ptr = ctypes.c_void_p
    rc = fn(
        ctypes.c_int64(CELLS[cell]), ctypes.c_int64(T), ctypes.c_int64(H), ptr(xw.data_ptr()), ptr(w_hh.data_ptr()),
        ptr(b_hn.data_ptr()), ptr(zeros.data_ptr()), ptr(zeros.data_ptr()), ptr(h.data_ptr()),
        ptr(None if c is None else c.data_ptr()),
    )  # fmt: skip
    if rc != 0:
        raise MemoryError("the trace kernel could not allocate its work buffer")
    return h, c, xw
