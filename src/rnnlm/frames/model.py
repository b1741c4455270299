"""The frame-sequence model: frame input layer -> recurrent encoder -> sequence or per-frame head.

Batch-first: frames (B, T, F) float, lengths (B,) int64; real frames come first in each row. Logits are
(B, C) for ``task="classify"`` and (B, T, C) for ``task="label"`` (0 on padded steps). A sequence's
logits do not depend on what else is in its batch or on what its padding holds. Parameter names:

    input.mean, input.std            (F,) training-set statistics (buffers, saved with the weights)
    input.proj.weight, .bias         (P, F) the frame projection
    encoder.weight_ih_l0 ...         canonical recurrent weights (recurrent/encoder.py)
    head.out.weight, .bias           (C, D), or (C, D + fcn) with the convolutional branch; head.score.* for
                                     attention pooling
    fcn.convs.<i>.*, fcn.norms.<i>.* the convolutional branch (--fcn; a classifier has one by default)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rnnlm.core.errors import ConfigError
from rnnlm.frames.config import FramesModelConfig
from rnnlm.frames.layers import ConvBranch, FrameInput, FrameLabelHead, SequenceClassifierHead
from rnnlm.recurrent.dropout import Dropout
from rnnlm.recurrent.encoder import RecurrentEncoder


class FrameRNN(nn.Module):
    """A recurrent classifier (one label per sequence) or labeler (one per frame) over real-valued frames.

    ``mean`` and ``std`` are the (F,) training-set statistics; a model about to load a checkpoint may pass
    any placeholder (zeros, ones), since the checkpoint holds the real ones.
    """

    def __init__(
        self,
        cfg: FramesModelConfig,
        num_features: int,
        num_classes: int,
        task: str,
        mean: torch.Tensor,
        std: torch.Tensor,
    ) -> None:
        super().__init__()
        cfg.check()
        if task not in ("classify", "label"):
            raise ValueError(f"task must be classify or label, got {task!r}")
        self.cfg, self.task, self.num_classes = cfg, task, num_classes
        self.input = FrameInput(num_features, cfg.proj, mean, std, cfg.noise_std, cfg.time_mask)
        self.drop = Dropout(cfg.dropout)
        self.encoder = RecurrentEncoder(
            cfg.cell, cfg.proj, cfg.hidden, cfg.layers, cfg.bidirectional, cfg.dropout, engine=cfg.engine
        )
        D = self.encoder.output_size
        fcn = cfg.fcn_channels(task)
        if fcn and task != "classify":
            raise ConfigError("--fcn (a convolutional branch pooled over each sequence) needs --task classify")
        # The branch reads the standardized frames, not the projection, and is not dropped out (it is normalized).
        self.fcn = ConvBranch(num_features, fcn) if fcn else None
        if task == "classify":
            self.head: nn.Module = SequenceClassifierHead(D, num_classes, cfg.pooling, extra_dim=fcn)
        else:
            self.head = FrameLabelHead(D, num_classes)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, F) frames and (B,) lengths -> (B, C) or (B, T, C) logits."""
        lengths = lengths.to(frames.device)
        mask = torch.arange(frames.shape[1], device=frames.device) < lengths[:, None]  # (B, T)
        standardized = self.input.standardize(frames, mask)  # (B, T, F), 0 on padding
        x = self.drop(self.input.proj(standardized))  # (B, T, P)
        outputs, _ = self.encoder(x, lengths=lengths)  # (B, T, D), zero past each length
        if self.task == "label":
            return self.head(self.drop(outputs), mask)
        if self.cfg.pooling == "last" and self.encoder.bidirectional:
            # The backward direction has read the whole sequence at step 0, not at the last step: put its
            # step-0 output beside the forward output at every step, so that "last" sees both summaries.
            H = self.encoder.hidden_size
            back = outputs[:, :1, H:].expand(-1, outputs.shape[1], -1)
            outputs = torch.cat([outputs[..., :H], back], dim=-1)
        extra = self.fcn(standardized, mask) if self.fcn is not None else None  # (B, fcn)
        return self.head(self.drop(outputs), mask, extra)


class FrameEnsemble(nn.Module):
    """Members that read the same frames; the output is the log of their mean class probabilities.

    Those log-probabilities serve as logits: their softmax is the members' mean probability, exactly, and
    their cross-entropy is the ensemble's. Parameter names are the members' under ``members.<i>.``.
    """

    def __init__(self, members: list[FrameRNN]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.task = members[0].task

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, F) frames and (B,) lengths -> (B, C) or (B, T, C) log mean probabilities."""
        logp = torch.stack([m(frames, lengths).log_softmax(-1) for m in self.members])  # (K, B, C) or (K, B, T, C)
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))
