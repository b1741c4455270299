"""A linear-chain conditional random field over per-token tag scores, batched and masked.

Shapes: emissions (B, T, K) hold the score of each of K tags at each step; tags (B, T) are tag ids;
mask (B, T) is a bool prefix mask, True on the first L_b steps of sequence b (every L_b >= 1). Steps
where the mask is False are padding: neither their emissions nor their tags affect any result, even if
they hold NaN. Everything is vectorised over the batch; only the recursions loop over time.

The score of a tag sequence y_1..y_L is

    start[y_1] + sum_t emissions[t, y_t] + sum_t transitions[y_{t-1}, y_t] + end[y_L]

and p(y | x) = exp(score(y)) / Z with Z the sum of exp(score) over all K^L sequences.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CRF(nn.Module):
    """Transition scores between K tags plus start and end scores; emissions come from the caller's encoder."""

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"a CRF needs at least one tag, not {num_tags}")
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))  # [i, j]: score of tag i followed by j
        self.start_transitions = nn.Parameter(torch.empty(num_tags))  # score of a sequence starting with the tag
        self.end_transitions = nn.Parameter(torch.empty(num_tags))  # score of a sequence ending with the tag
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Small uniform scores: near-uniform transitions, so that early training follows the emissions."""
        for p in (self.transitions, self.start_transitions, self.end_transitions):
            nn.init.uniform_(p, -0.1, 0.1)

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}"

    def _check(self, emissions: Tensor, mask: Tensor, tags: Tensor | None = None) -> None:
        """Raise ValueError unless the shapes fit and the mask is a prefix mask with every length >= 1."""
        if emissions.dim() != 3 or emissions.size(2) != self.num_tags:
            raise ValueError(f"emissions must be (B, T, {self.num_tags}), not {tuple(emissions.shape)}")
        if mask.shape != emissions.shape[:2] or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a bool tensor of shape {tuple(emissions.shape[:2])}, not "
                f"{mask.dtype} {tuple(mask.shape)}"
            )
        if tags is not None and tags.shape != mask.shape:
            raise ValueError(f"tags must have shape {tuple(mask.shape)}, not {tuple(tags.shape)}")
        if emissions.size(1) == 0 or not bool(mask[:, 0].all()):
            raise ValueError("every sequence needs at least one step: mask[:, 0] must be True")
        if bool((mask[:, 1:] & ~mask[:, :-1]).any()):
            raise ValueError("mask must be a prefix mask (True for the first L_b steps, then False)")

    def score(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """(B,) score of each given tag sequence; tags in the padding are ignored."""
        self._check(emissions, mask, tags)
        tags = tags.masked_fill(~mask, 0)  # padding may hold -100 or garbage; keep the indexing in range
        lengths = mask.sum(1)  # (B,)
        emit = emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1)  # (B, T)
        trans = self.transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1): step t-1 -> t
        last = tags.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)  # (B,)
        # torch.where, never a product with the mask: NaN * 0 is NaN, so NaN padding would reach the result.
        zero = emissions.new_zeros(())
        return (
            self.start_transitions[tags[:, 0]]
            + torch.where(mask, emit, zero).sum(1)
            + torch.where(mask[:, 1:], trans, zero).sum(1)
            + self.end_transitions[last]
        )

    def log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """(B,) log Z: the log-sum-exp of the scores of all tag sequences (the forward algorithm)."""
        self._check(emissions, mask)
        alpha = self.start_transitions + emissions[:, 0]  # (B, K): log-sum over paths ending in each tag
        for t in range(1, emissions.size(1)):
            # (B, K, 1) + (K, K) -> (B, K_prev, K_next), summed over the previous tag
            nxt = torch.logsumexp(alpha.unsqueeze(2) + self.transitions, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t].unsqueeze(1), nxt, alpha)  # finished sequences keep their alpha
        return torch.logsumexp(alpha + self.end_transitions, dim=1)

    def neg_log_likelihood(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Mean over the batch of -log p(tags | emissions): the training loss, always >= 0."""
        return (self.log_partition(emissions, mask) - self.score(emissions, tags, mask)).mean()

    def forward(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """The training loss, ``neg_log_likelihood``: calling the module works like calling any loss module."""
        return self.neg_log_likelihood(emissions, tags, mask)

    def viterbi(self, emissions: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The best tag sequences (B, T), padding set to 0, and their scores (B,)."""
        self._check(emissions, mask)
        B, T, K = emissions.shape
        delta = self.start_transitions + emissions[:, 0]  # (B, K): best score of a path ending in each tag
        identity = torch.arange(K, device=emissions.device).expand(B, K)
        backpointers = []
        for t in range(1, T):
            best, prev = (delta.unsqueeze(2) + self.transitions).max(dim=1)  # (B, K_next) each
            step = mask[:, t].unsqueeze(1)
            delta = torch.where(step, best + emissions[:, t], delta)
            # In the padding each tag points to itself, so tracing back from the last step reaches the
            # tag that ended the sequence: one backtrace serves every length.
            backpointers.append(torch.where(step, prev, identity))
        scores, tag = (delta + self.end_transitions).max(dim=1)  # (B,)
        path = [tag]
        for prev in reversed(backpointers):
            tag = prev.gather(1, tag.unsqueeze(1)).squeeze(1)
            path.append(tag)
        paths = torch.stack(path[::-1], dim=1)  # (B, T)
        return paths.masked_fill(~mask, 0), scores
