"""The recurrent encoder: a stack of RNN/GRU/LSTM layers, one or two directions, any engine.

Batch-first: inputs (B, T, in) floats, or (B, T) int64 token ids that stand for one-hot rows of
size ``input_size`` (the textbook RNN); outputs (B, T, directions * hidden). ``lengths`` (B,) makes a
padded batch behave as if each sequence ran alone: the state stops at each sequence's last valid
step, the backward direction starts there, and outputs past it are zero.

Canonical weights, the one layout on disk whatever engine ran (suffix ``_reverse`` for the backward
direction, ``l`` the layer)::

    weight_ih_l{l}   (gates * hidden, in)      torch.nn.LSTM's layout and gate order:
    weight_hh_l{l}   (gates * hidden, hidden)    rnn: h | gru: r, z, n | lstm: i, f, g, o
    bias_l{l}        (gates * hidden,)          torch's bias_ih + bias_hh in one vector
    bias_hn_l{l}     (hidden,)                  gru only: the candidate's recurrent bias, which sits
                                                inside the reset gate and so cannot be folded

One bias where torch keeps two is the textbook's model (``b_h``); two copies of it would train
differently under SGD. ``to_torch_state_dict``/``from_torch_state_dict`` convert to and from the
weights of torch.nn.RNN/GRU/LSTM exactly.

The engine (how the recurrence is computed) is chosen by name from engines.py and can change at
any time: ``encoder.engine = "fused"``.

Two AWD-LSTM regularizers live here so that every engine sees them: ``weight_drop`` (DropConnect
on W_hh: each training forward pass reads a dropped copy of every ``weight_hh`` through
``weights()``) and ``locked`` (the dropout between layers keeps one mask for all time steps; engines
call ``drop_between``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rnnlm.recurrent.dropout import dropout, dropout_mask, locked_dropout
from rnnlm.recurrent.state import State

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


class RecurrentEncoder(nn.Module):
    """Stacked recurrent layers; ``forward(x, state=None, lengths=None) -> (outputs, state)``."""

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        engine: str = "auto",
        matmul_dtype: str = "float32",
        locked: bool = False,
        weight_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in GATES:
            raise ValueError(f"cell must be one of {tuple(GATES)}, got {cell!r}")
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError(
                f"need input_size, hidden_size and num_layers >= 1; got {input_size}, {hidden_size}, {num_layers}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not 0.0 <= weight_drop < 1.0:
            raise ValueError(f"weight_drop must be in [0, 1), got {weight_drop}")
        self.cell, self.input_size, self.hidden_size = cell, input_size, hidden_size
        self.num_layers, self.bidirectional, self.dropout = num_layers, bidirectional, dropout
        self.engine = engine
        self.locked = locked  # dropout between layers: one mask per sequence (True) or per step (False)
        self.weight_drop = weight_drop  # DropConnect probability on every weight_hh while training
        self._dropped_hh: dict[str, torch.Tensor] = {}  # suffix -> this forward pass's dropped W_hh
        self.matmul_dtype = matmul_dtype  # "bfloat16": the cpu engine's matmuls in bfloat16 (engine_cpu.py)
        G, H = GATES[cell], hidden_size
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else H * self.num_directions
            for sfx in self.suffixes(layer):
                self.register_parameter(f"weight_ih{sfx}", nn.Parameter(torch.empty(G * H, in_size)))
                self.register_parameter(f"weight_hh{sfx}", nn.Parameter(torch.empty(G * H, H)))
                self.register_parameter(f"bias{sfx}", nn.Parameter(torch.empty(G * H)))
                if cell == "gru":
                    self.register_parameter(f"bias_hn{sfx}", nn.Parameter(torch.empty(H)))
        self.reset_parameters()

    # -- layout ----------------------------------------------------------------------------------
    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def num_states(self) -> int:
        """Tensors in the state: 2 for lstm (h, c), else 1."""
        return 2 if self.cell == "lstm" else 1

    @property
    def output_size(self) -> int:
        return self.hidden_size * self.num_directions

    def suffixes(self, layer: int) -> list[str]:
        """Name suffixes of a layer's directions: ``_l0`` and ``_l0_reverse``."""
        return [f"_l{layer}"] + ([f"_l{layer}_reverse"] if self.bidirectional else [])

    def weights(self, layer: int, direction: int) -> tuple[torch.Tensor, ...]:
        """(weight_ih, weight_hh, bias[, bias_hn]) of one layer and direction."""
        sfx = self.suffixes(layer)[direction]
        names = ("weight_ih", "weight_hh", "bias") + (("bias_hn",) if self.cell == "gru" else ())
        w = [getattr(self, n + sfx) for n in names]
        if sfx in self._dropped_hh:  # inside a training forward pass with weight drop
            w[1] = self._dropped_hh[sfx]
        return tuple(w)

    def drop_between(self, x: torch.Tensor, time_dim: int) -> torch.Tensor:
        """Dropout on a layer's outputs before the next layer reads them: x (B, T, D), or (T, B, D) for
        ``time_dim=0``. Standard dropout draws its mask in (B, T, D) order whatever the layout, locked
        dropout one (B, D) mask, so every engine drops the same units from the same random state."""
        if self.locked:
            return locked_dropout(x, self.dropout, self.training, time_dim)
        if not self.training or self.dropout == 0.0:
            return x
        noise = dropout_mask((x.shape[1 - time_dim], x.shape[time_dim], x.shape[2]), self.dropout, x)  # (B, T, D)
        return x * (noise if time_dim == 1 else noise.transpose(0, 1))

    def reset_parameters(self) -> None:
        """Every weight and bias ~ U(-1/sqrt(hidden), 1/sqrt(hidden)), torch.nn.LSTM's rule."""
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -k, k)

    def extra_repr(self) -> str:
        return (
            f"{self.cell}, {self.input_size}, {self.hidden_size}, layers={self.num_layers}, "
            f"bidirectional={self.bidirectional}, dropout={self.dropout}, engine={self.engine!r}"
            + (", locked" if self.locked else "")
            + (f", weight_drop={self.weight_drop}" if self.weight_drop else "")
            + (f", matmul_dtype={self.matmul_dtype!r}" if self.matmul_dtype != "float32" else "")
        )

    # -- running -----------------------------------------------------------------------------------
    def begin_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """The zero state for a batch, on the encoder's device and dtype unless told otherwise."""
        ref = self.weight_hh_l0
        shape = (self.num_layers * self.num_directions, batch_size, self.hidden_size)
        return tuple(
            torch.zeros(shape, dtype=dtype or ref.dtype, device=ref.device if device is None else device)
            for _ in range(self.num_states)
        )

    def forward(
        self, x: torch.Tensor, state: State | None = None, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """x: (B, T, in) floats or (B, T) ids; lengths (B,) or None -> outputs (B, T, D), final state."""
        from rnnlm.recurrent.engines import get_engine  # engines import this module for the layout

        if x.dim() not in (2, 3):
            raise ValueError(f"x must be (B, T, features) or (B, T) token ids, got shape {tuple(x.shape)}")
        if x.dim() == 3 and x.shape[-1] != self.input_size:
            raise ValueError(f"x has {x.shape[-1]} features per step but the encoder takes {self.input_size}")
        if state is None:
            state = self.begin_state(x.shape[0], x.device)
        elif not isinstance(state, tuple) or len(state) != self.num_states:
            raise ValueError(
                f"state must be a tuple of {self.num_states} tensor(s), {'(h, c)' if self.num_states == 2 else '(h,)'}"
            )
        if lengths is not None:
            lengths = lengths.to(device=x.device, dtype=torch.long)
            if lengths.shape != (x.shape[0],) or bool((lengths < 1).any()) or bool((lengths > x.shape[1]).any()):
                raise ValueError(f"lengths must be (B,) values in [1, T={x.shape[1]}], got {lengths.tolist()}")
        engine = get_engine(self.engine, self, x, lengths)
        if not (self.training and self.weight_drop > 0):
            return engine(self, x, state, lengths)
        # One DropConnect mask per forward pass, the same at every time step (AWD-LSTM's WeightDrop).
        self._dropped_hh = {
            sfx: dropout(getattr(self, "weight_hh" + sfx), self.weight_drop, True)
            for layer in range(self.num_layers)
            for sfx in self.suffixes(layer)
        }
        try:
            return engine(self, x, state, lengths)
        finally:
            self._dropped_hh = {}


# -- conversion to and from torch.nn.RNN/GRU/LSTM weights ------------------------------------------


def to_torch_state_dict(enc: RecurrentEncoder) -> dict[str, torch.Tensor]:
    """The encoder's weights as torch.nn.{RNN,GRU,LSTM} names them (differentiable; bias_hh is zero
    except the gru candidate's, which is bias_hn)."""
    out = {}
    H = enc.hidden_size
    for layer in range(enc.num_layers):
        for direction, sfx in enumerate(enc.suffixes(layer)):
            w = enc.weights(layer, direction)
            out[f"weight_ih{sfx}"], out[f"weight_hh{sfx}"], out[f"bias_ih{sfx}"] = w[0], w[1], w[2]
            if enc.cell == "gru":
                out[f"bias_hh{sfx}"] = torch.cat([torch.zeros(2 * H, dtype=w[2].dtype, device=w[2].device), w[3]])
            else:
                out[f"bias_hh{sfx}"] = torch.zeros_like(w[2])
    return out


def from_torch_state_dict(sd: dict[str, torch.Tensor], cell: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """Canonical encoder weights from a torch.nn.{RNN,GRU,LSTM} state dict (keys after ``prefix``)."""
    out = {}
    for key, w in sd.items():
        if not key.startswith(prefix + "weight_ih"):
            continue
        sfx = key[len(prefix + "weight_ih") :]
        b_ih, b_hh = sd[f"{prefix}bias_ih{sfx}"], sd[f"{prefix}bias_hh{sfx}"]
        out[f"weight_ih{sfx}"] = w.clone()
        out[f"weight_hh{sfx}"] = sd[f"{prefix}weight_hh{sfx}"].clone()
        if cell == "gru":
            H = b_ih.shape[0] // 3
            out[f"bias{sfx}"] = torch.cat([b_ih[: 2 * H] + b_hh[: 2 * H], b_ih[2 * H :]])
            out[f"bias_hn{sfx}"] = b_hh[2 * H :].clone()
        else:
            out[f"bias{sfx}"] = b_ih + b_hh
    return out
