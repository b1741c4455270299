"""Evaluation: mean negative log-likelihood over a whole text, and the metrics derived from it.

Perplexity and bits per token are derived from the mean NLL here and nowhere else.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

LN2 = math.log(2.0)


def summarize(nll_sum: float, count: int) -> dict[str, float]:
    """Mean NLL in nats per token, perplexity exp(loss), and bits per token loss / ln 2."""
    loss = nll_sum / max(count, 1)
    ppl = math.exp(loss) if loss < 700 else math.inf
    return {"loss": loss, "ppl": ppl, "bpt": loss / LN2}


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    ids: np.ndarray,
    batch_size: int = 16,
    seq_len: int = 256,
    device: torch.device | str | None = None,
) -> tuple[float, int]:
    """Sum of NLL (nats) over every next-token prediction in ids, and how many there were.

    The text is cut into `batch_size` contiguous streams that run in parallel with their state
    carried from chunk to chunk; the few targets left over at the end are scored by continuing
    the last stream, so every one of the len(ids) - 1 targets is scored exactly once.
    """
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be at least 1 (got {batch_size} and {seq_len})")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    n_targets = len(ids) - 1
    if n_targets < 1:
        return 0.0, 0
    was_training = model.training
    model.eval()
    try:
        data = torch.from_numpy(ids.astype(np.int64, copy=False))
        streams = max(1, min(batch_size, n_targets))
        L = n_targets // streams  # targets per stream
        grid = data[: streams * L + 1]
        X_all = grid[:-1].view(streams, L)  # (B, L)
        Y_all = grid[1:].view(streams, L)
        total = 0.0
        state = None
        for t in range(0, L, seq_len):
            X = X_all[:, t : t + seq_len].to(device)
            Y = Y_all[:, t : t + seq_len].to(device)
            logits, state = model(X, state)
            total += F.cross_entropy(logits.flatten(0, 1), Y.flatten(), reduction="sum").item()
        tail = n_targets - streams * L
        if tail:
            # The last stream ended right where the tail begins: carry its state on.
            state = tuple(s[:, -1:].contiguous() for s in state)
            for t in range(streams * L, n_targets, seq_len):
                end = min(t + seq_len, n_targets)
                X = data[t:end].view(1, -1).to(device)
                Y = data[t + 1 : end + 1].view(1, -1).to(device)
                logits, state = model(X, state)
                total += F.cross_entropy(logits.flatten(0, 1), Y.flatten(), reduction="sum").item()
        return total, n_targets
    finally:
        model.train(was_training)
