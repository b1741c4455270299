"""Dropout: AWD-LSTM's kinds (Merity et al., 2018) that plain ``nn.Dropout`` does not give, and a faster plain one.

* locked (variational) dropout: one mask per sequence, the same at every time step, so a unit that
  is dropped stays dropped for the whole window instead of flickering from step to step;
* embedding dropout: drop whole rows of the embedding matrix, i.e. every occurrence of a token type
  in the batch at once;
* weight drop (DropConnect) on the recurrent weights W_hh is a dropped copy of the matrix taken once
  per forward pass (encoder.py applies it, so every engine sees it).

Every function is the identity when not training or when p is 0, and scales kept values by 1/(1-p)
so that the expected activation is unchanged.

On a CPU the masks come from ``dropout_mask``, which draws 16 random bits per element, four to a 64-bit
draw, instead of ``bernoulli_``'s one draw per element: ``bernoulli_`` on a (1792, 448) weight takes 4.7 ms
on our 2-core machine, this 1.1 ms, which makes char-cpu's training step 1.07x to 1.12x faster
(bench/cpu_step.py). ``Dropout`` is ``nn.Dropout`` with these masks; every model here uses it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_LEVELS = 1 << 16  # a CPU mask's resolution: the drop probability is rounded to a multiple of 2^-16


def dropout_mask(shape: tuple[int, ...], p: float, like: Tensor) -> Tensor:
    """A dropout mask in like's dtype and on its device: 0 with probability p, else 1 / (1 - p).

    On a CPU the probability is rounded to a multiple of 2^-16 (0.2 drops with probability 0.1999969) and
    the scale is exact for the rounded value, so the mask's mean is 1 as with ``bernoulli_``. Elsewhere
    it is ``bernoulli_``'s mask.
    """
    if like.device.type != "cpu":
        return like.new_empty(shape).bernoulli_(1 - p).div_(1 - p)
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)  # 64 uniform bits each
    bits = words.view(torch.int16)[:n].view(shape)  # 16 uniform bits per element, in [-2^15, 2^15)
    dropped = min(round(p * _LEVELS), _LEVELS - 1)  # p < 1 keeps something, however little
    keep = bits >= dropped - _LEVELS // 2
    return keep.to(like.dtype).mul_(_LEVELS / (_LEVELS - dropped))


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Plain dropout (every element on its own), as ``F.dropout`` but with ``dropout_mask``'s faster CPU masks."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":  # torch's own kernel draws and applies the mask in one pass there
        return torch.nn.functional.dropout(x, p, True)
    return x * dropout_mask(tuple(x.shape), p, x)


class Dropout(nn.Dropout):
    """``nn.Dropout`` drawing ``dropout_mask``'s masks: the same module, attributes and repr, faster on a CPU."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def locked_dropout(x: Tensor, p: float, training: bool, time_dim: int = 1) -> Tensor:
    """Dropout of x (B, T, D), or (T, B, D) with ``time_dim=0``, with one (B, D) mask for every step.

    The mask is drawn as (B, D) whatever the layout, so batch-first and time-major inputs holding
    the same numbers get the same mask from the same random state.
    """
    if not training or p == 0.0:
        return x
    batch_dim = 1 - time_dim
    mask = dropout_mask((x.shape[batch_dim], x.shape[2]), p, x)  # (B, D)
    return x * mask.unsqueeze(time_dim)


def embedding_dropout(weight: Tensor, p: float, training: bool) -> Tensor:
    """The embedding matrix (V, E) with whole rows (token types) zeroed with probability p."""
    if not training or p == 0.0:
        return weight
    keep = dropout_mask((weight.shape[0], 1), p, weight)  # (V, 1)
    return weight * keep
