"""Character-level word encoder: a CNN over each word's characters, max-pooled to one vector (Ma & Hovy, 2016).

It gives a tagger a view of spelling (capitals, suffixes, digits) that a word embedding lacks for rare
and unseen words. Input (B, T, W) character ids with 0 as padding, output (B, T, D) with D = num_filters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnlm.recurrent.dropout import Dropout

PAD = 0  # the character id of padding, both after a word's last character and in padded word slots


class CharCNN(nn.Module):
    """Embed characters, convolve over each word, and keep each filter's maximum over the word's characters.

    The defaults are Ma & Hovy's: 30-dimensional character embeddings, 30 filters of width 3, dropout
    0.5 on the character embeddings. Padding never changes the result: its embeddings are zeroed
    (matching the convolution's own zero padding at the word edges) and positions past the word's end
    are left out of the max. A word slot without characters encodes to zeros.
    """

    def __init__(
        self, num_chars: int, char_dim: int = 30, num_filters: int = 30, kernel_size: int = 3, dropout: float = 0.5
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            # An odd width centres each window on a character, so output position i belongs to character i.
            raise ValueError(f"kernel_size must be odd and positive, not {kernel_size}")
        self.embedding = nn.Embedding(num_chars, char_dim, padding_idx=PAD)
        self.dropout = Dropout(dropout)
        self.conv = nn.Conv1d(char_dim, num_filters, kernel_size, padding=kernel_size // 2)
        self.output_dim = num_filters
        # In evaluation, encode each distinct spelling of the batch once (padding slots are one of them): batches
        # of 256 test sentences hold 8-34% as many distinct words as word slots (bench/notes/tagging.md).
        self.distinct = True

    def forward(self, chars: Tensor) -> Tensor:
        """(B, T, W) character ids -> (B, T, num_filters) word vectors."""
        B, T, W = chars.shape
        if W == 0:
            raise ValueError("chars must have at least one character slot per word (W >= 1); pad empty words with 0")
        chars = chars.reshape(B * T, W)
        if self.distinct and not (self.training or torch.is_grad_enabled()) and B * T > 1:
            words, inverse = torch.unique(chars, dim=0, return_inverse=True)
            return self.words(words)[inverse].reshape(B, T, -1)
        return self.words(chars).reshape(B, T, -1)

    def words(self, chars: Tensor) -> Tensor:
        """(N, W) character ids -> (N, num_filters), each row alone."""
        present = chars != PAD  # (N, W)
        # Zeroing by mask, not just padding_idx: a loaded or weight-decayed padding row need not be zero.
        x = self.dropout(self.embedding(chars)) * present.unsqueeze(-1)  # (N, W, C)
        h = self.conv(x.transpose(1, 2))  # (N, F, W)
        h = h.masked_fill(~present.unsqueeze(1), float("-inf"))
        pooled = h.max(dim=2).values  # (N, F); -inf for a slot without characters, replaced next
        return torch.where(present.any(dim=1, keepdim=True), pooled, pooled.new_zeros(()))  # (N, F)
