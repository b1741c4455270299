"""Input layers: what turns a step's raw input into the vector the recurrent encoder reads.

Today: token ids through an embedding, or as one-hot rows (the textbook RNN). Character-aware word
encoders and projections of real-valued frames plug in here the same way: a module whose
``forward`` maps the raw batch to (B, T, output_size) floats (or ids, for one-hot).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rnnlm.recurrent.dropout import Dropout, embedding_dropout, locked_dropout


class TokenInput(nn.Module):
    """Token ids (B, T) -> embeddings (B, T, E) with dropout, or the ids themselves for one-hot input.

    With ``embed_size == 0`` the ids pass through and ``output_size`` is the vocabulary size: the
    encoder's first layer reads them as one-hot rows (a row lookup in its input weights).
    ``locked`` makes the dropout on the vectors one mask per sequence; ``embed_dropout`` drops whole
    token types (rows of the embedding) for the batch (recurrent/dropout.py).
    """

    def __init__(
        self, vocab_size: int, embed_size: int, dropout: float = 0.0, embed_dropout: float = 0.0, locked: bool = False
    ) -> None:
        super().__init__()
        if vocab_size < 1 or embed_size < 0:
            raise ValueError(f"need vocab_size >= 1 and embed >= 0; got {vocab_size} and {embed_size}")
        if embed_size == 0 and (embed_dropout > 0 or (locked and dropout > 0)):
            raise ValueError("embedding dropout and locked input dropout need an embedding (embed > 0)")
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embed_size) if embed_size > 0 else None
        self.drop = Dropout(dropout)
        self.embed_dropout, self.locked = embed_dropout, locked

    @property
    def output_size(self) -> int:
        return self.embedding.embedding_dim if self.embedding is not None else self.vocab_size

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        if X.dim() != 2 or X.dtype.is_floating_point or X.dtype.is_complex or X.dtype == torch.bool:
            raise ValueError(f"X must be (B, T) int64 token ids, got shape {tuple(X.shape)} dtype {X.dtype}")
        X = X.long()  # the lookups want int64; a no-op when it already is
        if self.embedding is None:
            return X  # (B, T) ids = one-hot rows
        weight = embedding_dropout(self.embedding.weight, self.embed_dropout, self.training)  # (V, E)
        E = F.embedding(X, weight)  # (B, T, E)
        return locked_dropout(E, self.drop.p, self.training) if self.locked else self.drop(E)
