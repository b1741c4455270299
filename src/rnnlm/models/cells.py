"""Recurrent layers written out in PyTorch ops, with the textbook names.

Each layer maps a whole sequence at once: ``layer(X, state) -> (outputs, state)`` with X of shape
(B, T, input_size), or (B, T) token ids for a one-hot first layer, outputs (B, T, hidden) and
state a tuple of (B, hidden) tensors: ``(H,)`` for rnn and gru, ``(H, C)`` for lstm.

Weights are stored (in_features, out_features) so that the code reads ``X @ W``. The input side
``X W_x* + b`` does not depend on the state, so it is computed for all T steps in one matmul
before the loop over time; only the recurrent part runs step by step.

The parameters are those of ``torch.nn.RNN/GRU/LSTM`` split by gate and transposed; each class
lists in ``TORCH_GATES`` how its names map onto torch's gate blocks, in torch's order, so that
``rnnlm.models.convert_state_dict`` can move weights between the two implementations.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.functional import embedding

State = tuple[torch.Tensor, ...]
# (input weight, recurrent weight, biases) per torch gate block. One bias name means the scratch
# cell has a single bias that stands for torch's bias_ih + bias_hh; two names are (ih, hh) kept apart.
Gates = tuple[tuple[str, str, tuple[str, ...]], ...]


def project_inputs(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``X @ W`` for every time step; integer X holds token ids and stands for one-hot rows.

    For a one-hot X_t, ``X_t @ W`` is row X_t of W, so the lookup gives the same numbers as the
    matmul at O(B*T*hidden) cost instead of O(B*T*V*hidden).
    """
    if X.dtype in (torch.int64, torch.int32):
        return embedding(X, W)  # (B, T) ids -> (B, T, out)
    return X @ W  # (B, T, in) @ (in, out) -> (B, T, out)


class ScratchLayer(nn.Module):
    """Parameter bookkeeping shared by the scratch layers; the subclasses hold the equations."""

    TORCH_GATES: Gates = ()
    num_states = 1  # tensors in the state: 1 for (H,), 2 for (H, C)

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        for w_x, w_h, biases in self.TORCH_GATES:
            setattr(self, w_x, nn.Parameter(torch.empty(input_size, hidden_size)))
            setattr(self, w_h, nn.Parameter(torch.empty(hidden_size, hidden_size)))
            for b in biases:
                setattr(self, b, nn.Parameter(torch.empty(hidden_size)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(hidden), 1/sqrt(hidden)) for every tensor, as torch.nn.RNN does."""
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -k, k)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class RNNScratch(ScratchLayer):
    """Elman RNN with tanh: H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h)."""

    TORCH_GATES: Gates = (("W_xh", "W_hh", ("b_h",)),)

    def forward(self, X: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """X: (B, T, in) or (B, T) ids; state (H,) -> outputs (B, T, hidden), final (H,)."""
        XW_h = project_inputs(X, self.W_xh) + self.b_h  # (B, T, hidden)
        (H,) = state
        outputs = []
        for XW_h_t in XW_h.unbind(dim=1):
            H = torch.tanh(XW_h_t + H @ self.W_hh)  # (B, hidden)
            outputs.append(H)
        return torch.stack(outputs, dim=1), (H,)


class GRUScratch(ScratchLayer):
    """Gated recurrent unit, in the form computed by torch.nn.GRU and cuDNN."""

    # torch's weight_ih_l0 stacks the blocks (r, z, n); n is the candidate, here W_xh / W_hh.
    TORCH_GATES: Gates = (
        ("W_xr", "W_hr", ("b_r",)),
        ("W_xz", "W_hz", ("b_z",)),
        ("W_xh", "W_hh", ("b_xh", "b_hh")),
    )

    def forward(self, X: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """X: (B, T, in) or (B, T) ids; state (H,) -> outputs (B, T, hidden), final (H,)."""
        XW_z = project_inputs(X, self.W_xz) + self.b_z  # (B, T, hidden)
        XW_r = project_inputs(X, self.W_xr) + self.b_r
        XW_h = project_inputs(X, self.W_xh) + self.b_xh
        (H,) = state
        outputs = []
        steps = zip(XW_z.unbind(dim=1), XW_r.unbind(dim=1), XW_h.unbind(dim=1), strict=True)
        for XW_z_t, XW_r_t, XW_h_t in steps:
            Z = torch.sigmoid(XW_z_t + H @ self.W_hz)  # update gate, (B, hidden)
            R = torch.sigmoid(XW_r_t + H @ self.W_hr)  # reset gate
            # The reset gate scales the recurrent term after its matmul, R * (H W_hh + b_hh), as torch
            # and cuDNN do; the textbook (R * H) W_hh is a different function, and this one is what
            # lets weights move between the scratch and fused GRU. It also needs the second bias.
            H_tilde = torch.tanh(XW_h_t + R * (H @ self.W_hh + self.b_hh))
            H = Z * H + (1 - Z) * H_tilde
            outputs.append(H)
        return torch.stack(outputs, dim=1), (H,)


class LSTMScratch(ScratchLayer):
    """Long short-term memory with input, forget and output gates and a candidate memory cell."""

    # torch's weight_ih_l0 stacks the blocks (i, f, g, o); g is the candidate cell, here W_xc / W_hc.
    TORCH_GATES: Gates = (
        ("W_xi", "W_hi", ("b_i",)),
        ("W_xf", "W_hf", ("b_f",)),
        ("W_xc", "W_hc", ("b_c",)),
        ("W_xo", "W_ho", ("b_o",)),
    )
    num_states = 2

    def forward(self, X: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """X: (B, T, in) or (B, T) ids; state (H, C) -> outputs (B, T, hidden), final (H, C)."""
        XW_i = project_inputs(X, self.W_xi) + self.b_i  # (B, T, hidden)
        XW_f = project_inputs(X, self.W_xf) + self.b_f
        XW_o = project_inputs(X, self.W_xo) + self.b_o
        XW_c = project_inputs(X, self.W_xc) + self.b_c
        H, C = state
        outputs = []
        steps = zip(XW_i.unbind(dim=1), XW_f.unbind(dim=1), XW_o.unbind(dim=1), XW_c.unbind(dim=1), strict=True)
        for XW_i_t, XW_f_t, XW_o_t, XW_c_t in steps:
            I = torch.sigmoid(XW_i_t + H @ self.W_hi)  # input gate, (B, hidden)
            F = torch.sigmoid(XW_f_t + H @ self.W_hf)  # forget gate
            O = torch.sigmoid(XW_o_t + H @ self.W_ho)  # output gate
            C_tilde = torch.tanh(XW_c_t + H @ self.W_hc)  # candidate memory
            C = F * C + I * C_tilde
            H = O * torch.tanh(C)
            outputs.append(H)
        return torch.stack(outputs, dim=1), (H, C)


SCRATCH_CELLS: dict[str, type[ScratchLayer]] = {"rnn": RNNScratch, "gru": GRUScratch, "lstm": LSTMScratch}
