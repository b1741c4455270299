"""What the engine tests compare between two engines (imported by test_engine_cpu.py and test_engine_triton.py)."""

from __future__ import annotations

import torch

from rnnlm.models import RecurrentEncoder


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
