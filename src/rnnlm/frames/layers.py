"""Input and output layers for recurrent models over real-valued frames; the encoder in between is not here.

Shapes are batch-first: frames (B, T, F), encoder features (B, T, D), and a mask (B, T) bool that is
True on real frames and False on padding (``rnnlm.frames.prep.pad_frames`` makes all three).
Nothing that sits in the padding, not even NaN or infinity, reaches an output at a real position or a
pooled result: padded values are replaced with ``masked_fill``, never multiplied by 0 (0 * inf is NaN).
"""

from __future__ import annotations

import torch
from torch import nn

from rnnlm.training.distributed import sum_over_ranks

POOLINGS = ("last", "mean", "attention")


def _check_mask(features: torch.Tensor, mask: torch.Tensor) -> None:
    if mask.dtype != torch.bool or mask.shape != features.shape[:2]:
        raise ValueError(f"mask must be (B, T) bool like the features, got {mask.dtype} {tuple(mask.shape)}")


def _check_every_row_real(mask: torch.Tensor) -> None:
    """A ValueError unless every row of the (B, T) mask has a real step. Skipped inside torch.export, which cannot
    branch on a tensor's values: an exported graph states the rule in its input spec (lengths >= 1) instead."""
    if not torch.compiler.is_exporting() and not bool(mask.any(dim=1).all()):
        raise ValueError("every sequence needs at least one real step in the mask")


class FrameInput(nn.Module):
    """Standardize frames with stored statistics, fill missing values with 0, and project to ``out_dim``.

    ``mean`` and ``std`` are (F,) training-set statistics (``rnnlm.frames.prep.feature_stats``); they
    are buffers, so they travel in the state_dict and a loaded model standardizes as it was trained.
    NaN marks a missing value and becomes 0 after standardizing, i.e. the training mean.
    Two training-time augmentations are off by default: ``noise_std`` adds Gaussian noise to the
    standardized frames, and ``time_mask`` zeroes one random span of up to that many real frames per
    sequence (the mask's True count is taken as the length, so real frames must come first). Both use
    torch's global generator and do nothing in eval mode.
    """

    def __init__(
        self,
        num_features: int,
        out_dim: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        noise_std: float = 0.0,
        time_mask: int = 0,
    ) -> None:
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32)
        std = torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != (num_features,) or std.shape != (num_features,):
            raise ValueError(f"mean and std must be ({num_features},), got {tuple(mean.shape)}, {tuple(std.shape)}")
        if not std.is_meta and not bool((std > 0).all()):  # a meta tensor (runs.load's size check) has no values
            raise ValueError("every std must be > 0; compute them with feature_stats, which floors them")
        if noise_std < 0 or time_mask < 0:
            raise ValueError(f"noise_std and time_mask must be >= 0, got {noise_std}, {time_mask}")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.noise_std = noise_std
        self.time_mask = time_mask
        self.proj = nn.Linear(num_features, out_dim)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, F) frames -> (B, T, out_dim); with a mask, padded frames enter as 0 (outputs there = bias)."""
        return self.proj(self.standardize(frames, mask))

    def standardize(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, F) frames -> (B, T, F) standardized frames, augmented in training, 0 on padded frames."""
        x = torch.nan_to_num((frames - self.mean) / self.std, nan=0.0)
        if mask is not None:
            _check_mask(frames, mask)
            x = x.masked_fill(~mask[..., None], 0.0)
        if self.training and self.noise_std > 0:
            x = x + self.noise_std * torch.randn_like(x)
        if self.training and self.time_mask > 0:
            x = x.masked_fill(self._time_span(x, mask)[..., None], 0.0)
        return x

    def _time_span(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T) bool: one span of 0..time_mask frames per sequence, inside its real frames."""
        B, T = x.shape[:2]
        lengths = mask.sum(1) if mask is not None else torch.full((B,), T, device=x.device)
        width = torch.minimum(torch.randint(0, self.time_mask + 1, (B,), device=x.device), lengths)
        start = (torch.rand(B, device=x.device) * (lengths - width + 1)).long()  # in 0..length - width
        t = torch.arange(T, device=x.device)
        return (t >= start[:, None]) & (t < (start + width)[:, None])


class MaskedBatchNorm(nn.Module):
    """Batch normalization of (B, C, T) features per channel, with statistics over real frames only.

    In training, each channel is normalized with the mean and (biased) variance of its values at the real
    frames of the batch, and running estimates are updated from them (unbiased variance, ``momentum``), as
    ``torch.nn.BatchNorm1d`` does over all positions. In eval mode the running estimates are used, so that a
    sequence's output does not depend on the rest of its batch. Padded positions never enter a statistic;
    their outputs are meaningless and left for the caller to mask.
    """

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, C, T) features and (B, T) mask -> (B, C, T)."""
        if self.training:
            # Under torchrun the statistics are those of the whole global batch, summed over the ranks (as
            # SyncBatchNorm does), so that two ranks train as one process does.
            real = mask[:, None, :]  # (B, 1, T)
            sums = torch.cat([x.masked_fill(~real, 0.0).sum(dim=(0, 2)), mask.sum().to(x.dtype)[None]])
            sums = sum_over_ranks(sums)
            mean, n = sums[:-1] / sums[-1], sums[-1]  # (C,), ()
            var = sum_over_ranks((x - mean[:, None]).masked_fill(~real, 0.0).square().sum(dim=(0, 2))) / n
            with torch.no_grad():
                unbiased = var * (n / (n - 1)) if n > 1 else var
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(unbiased.detach(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        scale = self.weight * torch.rsqrt(var + self.eps)  # (C,)
        return (x - mean[:, None]) * scale[:, None] + self.bias[:, None]


class ConvBranch(nn.Module):
    """A fully convolutional branch (FCN, as in LSTM-FCN): (B, T, F) frames -> (B, out_dim), one per sequence.

    Three blocks of a 1-D convolution over time ("same" padding, kernels 7/5/3), a masked batch normalization
    and a ReLU, with ``channels``, 2 * ``channels`` and ``channels`` outputs, then the mean over each
    sequence's real frames. Every convolution sees zeros beyond a sequence's real frames, exactly as when the
    sequence is run alone (padded steps are filled with 0 before each one), and the normalization's statistics
    ignore padding, so padding never changes a sequence's vector.
    """

    KERNELS = (7, 5, 3)

    def __init__(self, in_dim: int, channels: int) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be at least 1, got {channels}")
        widths = (in_dim, channels, 2 * channels, channels)
        self.convs = nn.ModuleList(
            nn.Conv1d(a, b, k, padding=k // 2) for a, b, k in zip(widths[:-1], widths[1:], self.KERNELS, strict=True)
        )
        self.norms = nn.ModuleList(MaskedBatchNorm(b) for b in widths[1:])
        self.out_dim = channels

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, F) frames and (B, T) mask -> (B, channels), the mean over real frames of the last block."""
        _check_mask(x, mask)
        _check_every_row_real(mask)
        pad = ~mask[:, None, :]  # (B, 1, T)
        h = x.transpose(1, 2)  # Conv1d wants (B, C, T)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = torch.relu(norm(conv(h.masked_fill(pad, 0.0)), mask))
        return h.masked_fill(pad, 0.0).sum(dim=2) / mask.sum(dim=1, keepdim=True).to(h.dtype)


def last_valid(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, D): each row's features at its last real step (the highest True in its mask)."""
    _check_mask(features, mask)
    steps = torch.arange(features.shape[1], device=features.device)
    _check_every_row_real(mask)
    last = torch.where(mask, steps, -1).amax(dim=1)  # (B,)
    return features[torch.arange(features.shape[0], device=features.device), last]


class SequenceClassifierHead(nn.Module):
    """Pool encoder features over each sequence's real steps, then a linear layer to class logits.

    ``pooling``:
      - ``"last"``: the features at the last real step. For a left-to-right encoder that step has read the
        whole sequence. For a bidirectional encoder the backward half at that step has read one frame only,
        so the caller should pass features whose last step holds a summary of both directions (e.g. the
        forward output at the last step joined with the backward output at step 0), or use mean/attention.
      - ``"mean"``: the average over real steps.
      - ``"attention"``: a softmax over real steps of a learned score per step (padding scores -inf),
        then the weighted sum of the features.
    """

    def __init__(self, in_dim: int, num_classes: int, pooling: str = "last", extra_dim: int = 0) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.score = nn.Linear(in_dim, 1) if pooling == "attention" else None
        self.out = nn.Linear(in_dim + extra_dim, num_classes)
        self.extra_dim = extra_dim

    def pool(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, D) features and (B, T) mask -> (B, D), one vector per sequence."""
        if self.pooling == "last":
            return last_valid(features, mask)
        _check_mask(features, mask)
        _check_every_row_real(mask)
        clean = features.masked_fill(~mask[..., None], 0.0)  # (B, T, D), garbage in padding gone
        if self.pooling == "mean":
            return clean.sum(dim=1) / mask.sum(dim=1, keepdim=True).to(clean.dtype)
        scores = self.score(clean).squeeze(-1).masked_fill(~mask, float("-inf"))  # (B, T)
        weights = torch.softmax(scores, dim=1)
        return torch.einsum("bt,btd->bd", weights, clean)

    def forward(self, features: torch.Tensor, mask: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) features and (B, T) mask -> (B, num_classes) logits. With ``extra_dim``, ``extra`` is a
        (B, extra_dim) vector per sequence (e.g. a convolutional branch's) joined to the pooled features."""
        pooled = self.pool(features, mask)
        if (extra is None) != (self.extra_dim == 0):
            raise ValueError(f"this head joins an extra vector of {self.extra_dim} per sequence (0: none)")
        if extra is not None:
            pooled = torch.cat([pooled, extra], dim=-1)
        return self.out(pooled)


class FrameLabelHead(nn.Module):
    """A linear layer applied at every step: (B, T, D) features -> (B, T, num_classes) logits.

    With a mask, padded steps get logits 0, so that garbage there cannot turn a masked loss into NaN
    (cross_entropy's ``ignore_index`` drops those steps from the sum but not from its arithmetic).
    """

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.out = nn.Linear(in_dim, num_classes)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) features -> (B, T, num_classes) logits."""
        if mask is None:
            return self.out(features)
        _check_mask(features, mask)
        logits = self.out(features.masked_fill(~mask[..., None], 0.0))
        return logits.masked_fill(~mask[..., None], 0.0)
