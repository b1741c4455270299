"""A reference encoder for export: a RecurrentEncoder's weights run by torch.nn.RNN/GRU/LSTM, one layer and one
direction at a time, with padding handled by masks rather than packed sequences.

Exporters (ONNX, torch.export) see plain torch modules here, never the engines of engines.py (the C and Triton
kernels, or autograd Functions that an exporter cannot trace). Three traps of exporting recurrent models are
avoided by construction:

- the initial state is a graph input, or zeros shaped from the input's batch size at run time, so a graph
  exported at one batch size runs at another (a constant ``initial_h`` would silently break that);
- no ``pack_padded_sequence``: a padded batch runs whole, the forward direction's outputs past each length are
  zeroed, and the backward direction reads each sequence reversed within its own length (a gather), so it
  starts at that sequence's last real step, exactly as the encoder's engines do;
- time is never unrolled in Python, so the exported graph takes any number of steps.

With lengths the final state is not returned (it would be the state after the padding): the taggers and frame
models read outputs only. Without lengths (a language model's step) the final state is returned as usual.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from rnnlm.recurrent.encoder import RecurrentEncoder, to_torch_state_dict
from rnnlm.recurrent.state import State

_MODULES = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class ReferenceEncoder(nn.Module):
    """The same function as ``enc`` (its weights, copied): ``forward(x, state=None, lengths=None)``.

    ``loop`` says how time is looped over: ``module`` calls torch.nn.RNN/GRU/LSTM (ONNX: one RNN/GRU/LSTM operator
    each), ``scan`` writes the cell as a function stepped by torch's ``scan`` operator, which torch.export keeps as a
    loop over a dynamic number of steps (it traces torch.nn.LSTM into a fixed number of steps instead).
    ``all_layers`` makes the outputs every layer's, side by side, bottom first (a tagger's character-LM features
    can read them so); otherwise the top layer's, as the encoder gives them.
    """

    def __init__(self, enc: RecurrentEncoder, all_layers: bool = False, loop: str = "module") -> None:
        super().__init__()
        if loop not in LOOPS:
            raise ValueError(f"loop must be one of {LOOPS}, got {loop!r}")
        self.loop = loop
        self.cell, self.input_size, self.hidden_size = enc.cell, enc.input_size, enc.hidden_size
        self.num_layers, self.num_directions, self.all_layers = enc.num_layers, enc.num_directions, all_layers
        self.num_states, self.bidirectional, self.output_size = enc.num_states, enc.bidirectional, enc.output_size
        torch_sd = {k: v.detach().clone() for k, v in to_torch_state_dict(enc).items()}
        kind = _MODULES[enc.cell]
        extra = {"nonlinearity": "tanh"} if enc.cell == "rnn" else {}
        self.rnns = nn.ModuleList()
        for layer in range(enc.num_layers):
            in_size = enc.input_size if layer == 0 else enc.output_size
            for sfx in enc.suffixes(layer):
                one = kind(in_size, enc.hidden_size, 1, batch_first=True, **extra)
                one.load_state_dict({name + "_l0": torch_sd[name + sfx] for name in _names()})
                self.rnns.append(one.to(enc.weight_hh_l0.device))
        self.eval()

    def forward(
        self, x: torch.Tensor, state: State | None = None, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """x: (B, T, in) floats or (B, T) one-hot ids -> outputs (B, T, D) and the final state (``()`` with
        lengths)."""
        if x.dim() == 2:  # token ids standing for one-hot rows
            x = F.one_hot(x.long(), self.input_size).to(self.rnns[0].weight_ih_l0.dtype)
        B, T = x.shape[0], x.shape[1]
        mask = reverse = None
        if lengths is not None:
            steps = torch.arange(T, device=x.device).unsqueeze(0)  # (1, T)
            lengths = lengths.to(x.device).long().unsqueeze(1)  # (B, 1)
            mask = (steps < lengths).unsqueeze(-1)  # (B, T, 1)
            # Each sequence reversed within its own length; padded steps stay where they are.
            reverse = torch.where(steps < lengths, lengths - 1 - steps, steps.expand(B, T))  # (B, T)
        finals: list[list[torch.Tensor]] = [[] for _ in range(self.num_states)]
        layer_outputs = []
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.num_directions):
                k = layer * self.num_directions + d
                inp = x if d == 0 else _reverse_time(x, reverse)
                if state is not None:
                    hx = tuple(s[k : k + 1] for s in state)
                else:  # zeros shaped by this batch at run time, never a constant of the export's batch size
                    zeros = inp.new_zeros((1, B, self.hidden_size))
                    hx = (zeros,) * self.num_states
                if self.loop == "scan":
                    out, last = _scan(self.cell, self.rnns[k], inp, hx)
                else:
                    out, last = self.rnns[k](inp, hx if self.cell == "lstm" else hx[0])
                    last = last if self.cell == "lstm" else (last,)
                for i, s in enumerate(last):
                    finals[i].append(s)
                outs.append(out if d == 0 else _reverse_time(out, reverse))
            x = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]  # (B, T, D)
            if mask is not None:
                x = torch.where(mask, x, x.new_zeros(()))  # outputs past each length are 0, as the engines give
            layer_outputs.append(x)
        outputs = torch.cat(layer_outputs, dim=-1) if self.all_layers else x
        if mask is not None:
            return outputs, ()
        return outputs, tuple(torch.cat(f, dim=0) for f in finals)


LOOPS = ("module", "scan")


def _scan(cell: str, rnn: nn.Module, x: torch.Tensor, hx: State) -> tuple[torch.Tensor, State]:
    """One layer and direction over x (B, T, in) from hx, torch.nn.RNN/GRU/LSTM's formulas stepped by ``scan``."""
    from torch._higher_order_ops.scan import scan  # torch's loop operator for export (no public name yet)

    W_ih, W_hh, b_ih, b_hh = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0
    XW = (x @ W_ih.t() + b_ih).transpose(0, 1)  # (T, B, gates * H): the input side of every step at once

    def step(state: list[torch.Tensor], xw: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        h = state[0]
        hw = h @ W_hh.t() + b_hh  # (B, gates * H)
        if cell == "rnn":
            h = torch.tanh(xw + hw)
            return [h], h.clone()
        if cell == "gru":
            x_r, x_z, x_n = xw.chunk(3, dim=-1)
            h_r, h_z, h_n = hw.chunk(3, dim=-1)
            r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            h = (1 - z) * torch.tanh(x_n + r * h_n) + z * h
            return [h], h.clone()
        i, f, g, o = (xw + hw).chunk(4, dim=-1)
        c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return [h, c], h.clone()

    last, outputs = scan(step, [s[0] for s in hx], XW)
    return outputs.transpose(0, 1), tuple(s.unsqueeze(0) for s in last)


def _names() -> tuple[str, ...]:
    return ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _reverse_time(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """x (B, T, D) with each row's steps taken in ``index`` (B, T) order; all T steps reversed without one."""
    if index is None:
        return x.flip(1)
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def reference_copy(model: nn.Module, loop: str = "module") -> nn.Module:
    """A copy of ``model`` in eval mode with every RecurrentEncoder inside it replaced by a ReferenceEncoder of the
    same weights (looping as ``loop`` says): the graph an exporter traces. The model itself is left as it is."""
    out = copy.deepcopy(model).eval()
    for parent in list(out.modules()):
        for attr, child in list(parent.named_children()):
            if isinstance(child, RecurrentEncoder):
                setattr(parent, attr, ReferenceEncoder(child, loop=loop))
    return out
