"""The recurrent cells written out in PyTorch ops, with the textbook's names: the reference engine.

Each function runs one direction of one layer over a whole sequence::

    outputs, state = lstm_scratch(XW, state, W_hh, ...)

The input side ``X_t W_x + b`` does not depend on the state, so the caller computes it for all T
steps in one matmul (``XW``, shape (B, T, gates * hidden)); only the recurrent part runs step by
step here. ``W_hh`` is (hidden, gates * hidden) so the code reads ``H @ W_hh``; its gate blocks are
in torch's order, the same as the canonical weights (see encoder.py). ``mask`` (B, T) bool, when
given, freezes the state of a sequence after its last valid step and zeroes its outputs there, so
padding never changes a result.
"""

from __future__ import annotations

import torch

from rnnlm.recurrent.state import State


def _keep(mask_t: torch.Tensor | None, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """new where the step is valid, old where it is padding (mask_t: (B, 1) bool or None)."""
    return new if mask_t is None else torch.where(mask_t, new, old)


def _steps(XW: torch.Tensor, mask: torch.Tensor | None):
    """(XW_t, mask_t) for every step; mask_t is (B, 1) or None."""
    masks = [None] * XW.shape[1] if mask is None else mask.unsqueeze(-1).unbind(1)
    return zip(XW.unbind(1), masks, strict=True)


def _stack(outputs: list[torch.Tensor], mask: torch.Tensor | None) -> torch.Tensor:
    out = torch.stack(outputs, dim=1)  # (B, T, hidden)
    return out if mask is None else out * mask.unsqueeze(-1)


def rnn_scratch(XW: torch.Tensor, state: State, W_hh: torch.Tensor, mask: torch.Tensor | None = None):
    """Elman RNN: H_t = tanh(X_t W_xh + b_h + H_{t-1} W_hh); XW holds X_t W_xh + b_h."""
    (H,) = state
    outputs = []
    for XW_t, m in _steps(XW, mask):
        H = _keep(m, torch.tanh(XW_t + H @ W_hh), H)  # (B, hidden)
        outputs.append(H)
    return _stack(outputs, mask), (H,)


def gru_scratch(
    XW: torch.Tensor, state: State, W_hh: torch.Tensor, b_hn: torch.Tensor, mask: torch.Tensor | None = None
):
    """Gated recurrent unit, in the form torch.nn.GRU and cuDNN compute.

    The reset gate scales the recurrent term after its matmul, R * (H W_hn + b_hn), rather than the
    textbook's (R * H) W_hn: this is what lets weights move between engines, and it is why the
    candidate keeps a recurrent bias of its own.
    """
    (H,) = state
    W_hr, W_hz, W_hn = W_hh.chunk(3, dim=1)  # torch's gate order: reset, update, new
    outputs = []
    for XW_t, m in _steps(XW, mask):
        XW_r, XW_z, XW_n = XW_t.chunk(3, dim=-1)
        R = torch.sigmoid(XW_r + H @ W_hr)  # reset gate, (B, hidden)
        Z = torch.sigmoid(XW_z + H @ W_hz)  # update gate
        H_tilde = torch.tanh(XW_n + R * (H @ W_hn + b_hn))  # candidate state
        H = _keep(m, Z * H + (1 - Z) * H_tilde, H)
        outputs.append(H)
    return _stack(outputs, mask), (H,)


def lstm_scratch(XW: torch.Tensor, state: State, W_hh: torch.Tensor, mask: torch.Tensor | None = None):
    """Long short-term memory with input, forget and output gates and a candidate memory cell."""
    H, C = state
    outputs = []
    for XW_t, m in _steps(XW, mask):
        gates = XW_t + H @ W_hh  # (B, 4 * hidden), torch's order: input, forget, candidate, output
        I, F, C_tilde, O = gates.chunk(4, dim=-1)
        I, F, O = torch.sigmoid(I), torch.sigmoid(F), torch.sigmoid(O)
        C_new = F * C + I * torch.tanh(C_tilde)
        H = _keep(m, O * torch.tanh(C_new), H)
        C = _keep(m, C_new, C)
        outputs.append(H)
    return _stack(outputs, mask), (H, C)
