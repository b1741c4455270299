"""The ``cpu`` engine: each layer and direction's recurrence as one autograd Function (sequence_fns.py).

It reads the canonical weights and returns what ``scratch`` returns, in a time-major layout inside:
the inputs are projected for all steps in one matmul (a row lookup for one-hot ids) straight into
(T, B, gates * hidden), so a step's slice is contiguous, and the outputs come back as a (B, T, D)
view of the time-major result. Batches with ``lengths`` (padding) go to ``scratch``, which masks
them; the language model never pads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import gemm
from .encoder import RecurrentEncoder
from .engines import ENGINES, register_engine
from .sequence_fns import GRUSequence, LSTMSequence, RNNSequence
from .state import State

# A step's recurrent matmul below this many FLOPs runs single-threaded: measured in bench/speed.py on
# a 2-core machine, a parallel region per step costs more than a second thread saves at these sizes,
# and far more when another job holds a core. Larger steps keep torch's setting.
SINGLE_THREAD_STEP_FLOPS = 32e6


def step_threads(batch: int, hidden: int, gates: int) -> int | None:
    """Threads for the step loops of this shape (None: torch's own setting)."""
    return 1 if 2 * batch * hidden * gates * hidden < SINGLE_THREAD_STEP_FLOPS else None


def _project(x: torch.Tensor, weight_ih: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Time-major input side ``X W_x + b`` for all steps: x (T, B) ids (one-hot rows: a row lookup)
    or (T, B, in) floats -> (T, B, gates * hidden)."""
    if x.dim() == 2:
        return F.embedding(x, weight_ih.t().contiguous()) + bias  # contiguous rows look up faster
    T, B, _ = x.shape
    return gemm.Linear.apply(x.reshape(T * B, -1), weight_ih, bias, None).view(T, B, -1)


def _dropout_like_scratch(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout of the batch-first view of x (T, B, D), drawing the same mask as scratch does."""
    if not training or p == 0.0:
        return x
    noise = x.new_empty(x.shape[1], x.shape[0], x.shape[2]).bernoulli_(1 - p).div_(1 - p)  # (B, T, D) order
    return x * noise.transpose(0, 1)


def run_sequence(enc: RecurrentEncoder, XW: torch.Tensor, state: tuple[torch.Tensor, ...], layer: int, direction: int):
    """One layer and direction over the whole sequence: XW (T, B, G*H) -> outputs (T, B, H), final state."""
    w = enc.weights(layer, direction)
    settings = (direction == 1, None, step_threads(XW.shape[1], enc.hidden_size, XW.shape[2] // enc.hidden_size))
    if enc.cell == "rnn":
        out, h = RNNSequence.apply(XW, state[0], w[1], *settings)
        return out, (h,)
    if enc.cell == "gru":
        out, h = GRUSequence.apply(XW, state[0], w[1], w[3], *settings)
        return out, (h,)
    out, h, c = LSTMSequence.apply(XW, state[0], state[1], w[1], *settings)
    return out, (h, c)


@register_engine("cpu")
def cpu(enc: RecurrentEncoder, x: torch.Tensor, state: State, lengths: torch.Tensor | None):
    """Whole-sequence autograd Functions, one per layer and direction, fastest on a CPU; scratch with lengths."""
    if lengths is not None:
        return ENGINES["scratch"](enc, x, state, lengths)
    dirs = enc.num_directions
    finals: list[list[torch.Tensor]] = [[] for _ in state]
    layer_input = x.t() if x.dim() == 2 else x.transpose(0, 1).contiguous()  # (T, B) ids or (T, B, in)
    for layer in range(enc.num_layers):
        outputs = []
        for direction in range(dirs):
            w = enc.weights(layer, direction)
            XW = _project(layer_input, w[0], w[2])  # (T, B, gates * hidden)
            s = tuple(part[layer * dirs + direction] for part in state)
            out, s = run_sequence(enc, XW, s, layer, direction)
            outputs.append(out)
            for k, part in enumerate(s):
                finals[k].append(part)
        layer_input = outputs[0] if dirs == 1 else torch.cat(outputs, dim=-1)  # (T, B, dirs * hidden)
        if layer < enc.num_layers - 1:  # between layers only, as torch.nn.LSTM applies its dropout
            layer_input = _dropout_like_scratch(layer_input, enc.dropout, enc.training)
    return layer_input.transpose(0, 1), tuple(torch.stack(parts) for parts in finals)
