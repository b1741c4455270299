"""The recurrent state, in one place: every model, engine and generator uses these helpers.

A state is a tuple of tensors of shape (layers * directions, B, hidden): ``(h,)`` for rnn and gru,
``(h, c)`` for lstm. Row ``layer * directions + direction`` belongs to that layer and direction, as in
torch.nn.LSTM, so a state moves between engines unchanged.
"""

from __future__ import annotations

import torch

State = tuple[torch.Tensor, ...]


def detach_state(state: State) -> State:
    """Cut the state from the graph of the batch that made it.

    With sequential batches the state carries over, but backpropagating through every earlier
    batch would grow the graph without bound; truncated backpropagation stops at the batch edge.
    """
    return tuple(s.detach() for s in state)


def select_state(state: State, index: torch.Tensor) -> State:
    """Pick, repeat or reorder batch rows of the state (beam search, samples); index: (B',) int64."""
    return tuple(s.index_select(1, index) for s in state)
