"""Heads: what a model predicts from the encoder's outputs (B, T, D).

Today the language-model head. A tagger's per-token head (softmax or CRF) and a sequence
classifier take the same (B, T, D) features and a mask, and live beside it.
"""

from __future__ import annotations

import torch
from torch import nn


class LMHead(nn.Linear):
    """O_t = H_t W_hq + b_q: next-token logits (B, T, V), with dropout on H before the product.

    ``tie_to`` shares the weight with an input embedding (V, E), which needs E == D.
    """

    def __init__(self, in_size: int, vocab_size: int, dropout: float = 0.0, tie_to: nn.Embedding | None = None):
        super().__init__(in_size, vocab_size)
        self.drop = nn.Dropout(dropout)
        if tie_to is not None:
            if tie_to.weight.shape != self.weight.shape:
                raise ValueError(
                    f"tie_weights shares the embedding with the output layer, so it needs embed == hidden "
                    f"(got embed={tie_to.embedding_dim}, hidden={in_size}); set --embed {in_size} or turn off "
                    f"--tie-weights"
                )
            self.weight = tie_to.weight  # one tensor, (V, D) == (V, E)

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        return super().forward(self.drop(outputs))  # (B, T, V)
