"""The dropouts of AWD-LSTM (Merity et al., 2018) that plain ``nn.Dropout`` does not give.

* locked (variational) dropout: one mask per sequence, the same at every time step, so a unit that
  is dropped stays dropped for the whole window instead of flickering from step to step;
* embedding dropout: drop whole rows of the embedding matrix, i.e. every occurrence of a token type
  in the batch at once;
* weight drop (DropConnect) on the recurrent weights W_hh is a dropped copy of the matrix taken once
  per forward pass (encoder.py applies it, so every engine sees it).

Every function is the identity when not training or when p is 0, and scales kept values by 1/(1-p)
so that the expected activation is unchanged.
"""

from __future__ import annotations

from torch import Tensor


def locked_dropout(x: Tensor, p: float, training: bool, time_dim: int = 1) -> Tensor:
    """Dropout of x (B, T, D), or (T, B, D) with ``time_dim=0``, with one (B, D) mask for every step.

    The mask is drawn as (B, D) whatever the layout, so batch-first and time-major inputs holding
    the same numbers get the same mask from the same random state.
    """
    if not training or p == 0.0:
        return x
    batch_dim = 1 - time_dim
    mask = x.new_empty(x.shape[batch_dim], x.shape[2]).bernoulli_(1 - p).div_(1 - p)  # (B, D)
    return x * mask.unsqueeze(time_dim)


def embedding_dropout(weight: Tensor, p: float, training: bool) -> Tensor:
    """The embedding matrix (V, E) with whole rows (token types) zeroed with probability p."""
    if not training or p == 0.0:
        return weight
    keep = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p).div_(1 - p)  # (V, 1)
    return weight * keep
