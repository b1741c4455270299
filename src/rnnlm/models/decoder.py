"""One token at a time: the language model's weights arranged for the steps of generation.

Generation feeds one token per row and step. Through ``model(X, state)`` that step pays for the
module calls, the argument checks, the engine choice and a loop over one time step, which at batch 1
cost several times the arithmetic. StepDecoder does only the arithmetic, with the canonical weights
(encoder.py), in the order the scratch cells do it (cells.py), so its logits equal the model's up to
float rounding. It reads the weights as they are when it is built; build a new one after an update.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .state import State


class StepDecoder:
    """``decoder(ids (N,), state) -> (logits (N, V), state)``: one step of a unidirectional RNNLM, no autograd."""

    def __init__(self, model: torch.nn.Module) -> None:
        enc = model.encoder
        if enc.bidirectional:
            raise ValueError("a bidirectional encoder cannot generate one step at a time")
        self.cell, self.H = enc.cell, enc.hidden_size
        embedding = model.input.embedding
        self.embedding = None if embedding is None else embedding.weight.detach()
        # Transposed copies: a one-row product reads a (in, out) row-major matrix fastest (16 against 25 us
        # for the recipe's head through a transposed view).
        self.layers = []  # per layer: W_ih^T, bias, W_hh^T, and the gru's [0, 0, b_hn]
        for layer in range(enc.num_layers):
            w = [t.detach() for t in enc.weights(layer, 0)]
            extra = torch.cat([w[3].new_zeros(2 * self.H), w[3]]) if enc.cell == "gru" else None
            self.layers.append((w[0].t().contiguous(), w[2], w[1].t().contiguous(), extra))
        # One-hot input: x W_ih^T + b is row x of W_ih^T + b.
        self.rows = None if embedding is not None else self.layers[0][0] + self.layers[0][1]
        head_weight = model.head.weight.detach()  # (V, D)
        if getattr(model.head, "proj", None) is not None:  # tied with a projection: (V, E) @ (E, D)
            head_weight = head_weight @ model.head.proj.weight.detach()
        self.head_weight, self.head_bias = head_weight.t().contiguous(), model.head.bias.detach()

    @torch.no_grad()
    def __call__(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        H, parts = self.H, [s.unbind(0) for s in state]  # per state tensor, per layer: (N, H)
        new: list[list[Tensor]] = [[] for _ in state]
        x = None if self.embedding is None else self.embedding.index_select(0, ids)  # (N, E)
        for layer, (W_ih_t, bias, W_hh_t, b_hn) in enumerate(self.layers):
            xw = self.rows.index_select(0, ids) if x is None else torch.addmm(bias, x, W_ih_t)  # (N, gates * H)
            h = parts[0][layer]
            if self.cell == "rnn":
                h = torch.addmm(xw, h, W_hh_t).tanh_()
            elif self.cell == "gru":
                gh = torch.addmm(b_hn, h, W_hh_t)  # (N, 3H): h W_hh^T, b_hn on the candidate's block
                rz = (xw[:, : 2 * H] + gh[:, : 2 * H]).sigmoid_()
                n = torch.addcmul(xw[:, 2 * H :], rz[:, :H], gh[:, 2 * H :]).tanh_()
                h = torch.lerp(n, h, rz[:, H:])
            else:
                gates = torch.addmm(xw, h, W_hh_t)  # (N, 4H): i, f, g, o
                gates[:, : 2 * H].sigmoid_()
                gates[:, 2 * H : 3 * H].tanh_()
                gates[:, 3 * H :].sigmoid_()
                c = torch.addcmul(gates[:, H : 2 * H] * parts[1][layer], gates[:, :H], gates[:, 2 * H : 3 * H])
                new[1].append(c)
                h = gates[:, 3 * H :] * torch.tanh(c)
            new[0].append(h)
            x = h
        logits = torch.addmm(self.head_bias, x, self.head_weight)  # (N, V)
        return logits, tuple(torch.stack(p) for p in new)
