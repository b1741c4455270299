"""What the engine tests feed two engines and compare between them (imported by test_engine_cpu.py and
test_engine_triton.py)."""

from __future__ import annotations

import torch

from rnnlm.recurrent.encoder import RecurrentEncoder


def everything(enc: RecurrentEncoder, engine: str, x: torch.Tensor, state, lengths=None):
    """Outputs, final state, and the gradients of a loss touching both w.r.t. weights, input and state.

    The loss weights are drawn on the CPU from a fixed seed and moved to the outputs' device, so every
    engine and device sees the same loss.
    """
    enc.engine = engine
    out, final = enc(x, state, lengths)
    g = torch.Generator().manual_seed(3)

    def weights(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device)

    loss = (out * weights(out)).sum() + sum((f * weights(f)).sum() for f in final)
    inputs = list(enc.parameters()) + [t for t in (x, *(state or ())) if t.requires_grad]
    return (out, *final, *torch.autograd.grad(loss, inputs))


def random_inputs(enc: RecurrentEncoder, batch: int, steps: int, one_hot: bool, carried: bool, dtype=torch.float64):
    """Seeded inputs for ``enc`` on its device: token ids (one-hot input) or dense frames that need a gradient,
    and with ``carried`` a random initial state that needs one too (else None)."""
    device = next(enc.parameters()).device
    g = torch.Generator().manual_seed(1)
    if one_hot:
        x = torch.randint(0, enc.input_size, (batch, steps), generator=g).to(device)
    else:
        x = torch.randn(batch, steps, enc.input_size, generator=g, dtype=dtype).to(device).requires_grad_(True)
    state = None
    if carried:
        shape = (enc.num_layers * enc.num_directions, batch, enc.hidden_size)
        state = tuple(
            torch.randn(shape, generator=g, dtype=dtype).to(device).requires_grad_(True) for _ in range(enc.num_states)
        )
    return x, state
