"""The ``cpu`` engine: each layer and direction's recurrence as one autograd Function (sequence_fns.py).

It reads the canonical weights and returns what ``scratch`` returns, time-major inside: a step's
slice of every buffer is contiguous, and the outputs come back as a (B, T, D) view of the
time-major result. Batches with ``lengths`` (padding) go to ``scratch``, which masks them; the
language model never pads.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rnnlm.recurrent.encoder import RecurrentEncoder
from rnnlm.recurrent.engines import ENGINES, register_engine
from rnnlm.recurrent.sequence_fns import GRUSequence, LSTMSequence, RNNSequence, Workspace
from rnnlm.recurrent.state import State


def _workspace(enc: RecurrentEncoder) -> Workspace:
    """The buffers this encoder's layers hand from one step to the next (sequence_fns.Workspace)."""
    if not hasattr(enc, "_cpu_workspace"):
        enc._cpu_workspace = Workspace()
    return enc._cpu_workspace


def matmul_dtype(enc: RecurrentEncoder) -> torch.dtype | None:
    """The dtype of the engine's matmuls: None (the weights' own) or bfloat16."""
    return torch.bfloat16 if getattr(enc, "matmul_dtype", "float32") == "bfloat16" else None


def run_sequence(enc: RecurrentEncoder, x: torch.Tensor, state: tuple[torch.Tensor, ...], layer: int, direction: int):
    """One layer and direction over the whole sequence: x (T, B, in) or (T, B) ids -> outputs (T, B, H), final state."""
    w = enc.weights(layer, direction)
    settings = (direction == 1, matmul_dtype(enc))
    if enc.cell == "rnn":
        out, h = RNNSequence.apply(x, w[0], w[2], state[0], w[1], *settings)
        return out, (h,)
    if enc.cell == "gru":
        out, h = GRUSequence.apply(x, w[0], w[2], state[0], w[1], w[3], *settings)
        return out, (h,)
    out, h, c = LSTMSequence.apply(x, w[0], w[2], state[0], state[1], w[1], *settings, _workspace(enc))
    return out, (h, c)


@register_engine("cpu")
def cpu(enc: RecurrentEncoder, x: torch.Tensor, state: State, lengths: torch.Tensor | None):
    """Whole-sequence autograd Functions, one per layer and direction, fastest on a CPU; scratch with lengths."""
    if lengths is not None or (x.shape[1] == 1 and not torch.is_grad_enabled()):
        # Padding needs scratch's masks; a single decoding step has no steps to amortize the Functions over.
        return ENGINES["scratch"](enc, x, state, lengths)
    return stack_layers(enc, x, state, run_sequence)


def stack_layers(enc: RecurrentEncoder, x: torch.Tensor, state: State, run: Callable) -> tuple[torch.Tensor, State]:
    """Every layer and direction through ``run(enc, x, state, layer, direction)`` (time-major x -> outputs
    (T, B, H), final state), with scratch's dropout between layers; batch-first in and out."""
    dirs = enc.num_directions
    finals: list[list[torch.Tensor]] = [[] for _ in state]
    layer_input = x.t() if x.dim() == 2 else x.transpose(0, 1).contiguous()  # (T, B) ids or (T, B, in)
    for layer in range(enc.num_layers):
        outputs = []
        for direction in range(dirs):
            s = tuple(part[layer * dirs + direction] for part in state)
            out, s = run(enc, layer_input, s, layer, direction)
            outputs.append(out)
            for k, part in enumerate(s):
                finals[k].append(part)
        layer_input = outputs[0] if dirs == 1 else torch.cat(outputs, dim=-1)  # (T, B, dirs * hidden)
        if layer < enc.num_layers - 1:  # between layers only, as torch.nn.LSTM applies its dropout
            layer_input = enc.drop_between(layer_input, time_dim=0)  # the mask scratch draws
    return layer_input.transpose(0, 1), tuple(torch.stack(parts) for parts in finals)
