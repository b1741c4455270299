"""Preparing frame sequences for a model: standardization statistics, a stratified split, padded batches.

Batches are batch-first: frames (B, T, F) float32, lengths (B,) int64, and a mask (B, T) bool that is
True on real frames and False on padding. Real frames come first in each row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from rnnlm.core.errors import DataError
from rnnlm.frames.data import FrameDataset

IGNORE_INDEX = -100  # label on padded frames; torch's cross_entropy skips it by default


def feature_stats(sequences: Sequence[np.ndarray], min_std: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and std, (F,) float32 tensors, over every frame of the given (T_i, F) sequences.

    Pass the training sequences only, so that no statistic of the validation or test data leaks into
    the model. NaN (a missing value) is left out of both sums. The std is the population std (divided by
    the count) and is floored at ``min_std``, so a constant feature is not blown up by a tiny divisor.
    A feature with no value at all gets mean 0 and std 1 (it becomes all 0 after standardizing).
    """
    if not sequences:
        raise DataError("no sequences to compute feature statistics from; pass the training sequences")
    frames = np.concatenate([np.asarray(s, dtype=np.float64) for s in sequences])  # (sum T_i, F)
    present = ~np.isnan(frames)
    count = present.sum(axis=0)
    values = np.where(present, frames, 0.0)
    mean = values.sum(axis=0) / np.maximum(count, 1)
    var = (np.where(present, frames - mean, 0.0) ** 2).sum(axis=0) / np.maximum(count, 1)
    std = np.maximum(np.sqrt(var), min_std)
    std[count == 0] = 1.0
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def stratified_split(labels: Sequence[int] | np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices 0..N-1 into (train_idx, val_idx), sorted int64 arrays, about ``fraction`` for validation.

    Each class is shuffled with one generator seeded by ``seed`` (classes in sorted order) and gives
    round(fraction * n) of its n items to validation, but at least one and never all of them, so every
    class with two or more items appears on both sides; a class with one item stays in training. The
    same labels, fraction and seed always give the same split.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise DataError(f"stratified_split needs a non-empty 1-D array of labels, got shape {labels.shape}")
    if not 0.0 < fraction < 1.0:
        raise DataError(f"the validation fraction must lie strictly between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        if len(members) >= 2:
            take = min(max(round(fraction * len(members)), 1), len(members) - 1)
            val.append(members[:take])
    if not val:
        raise DataError("no class has two or more sequences, so no validation set can be drawn; give more data")
    val_idx = np.sort(np.concatenate(val)).astype(np.int64)
    train_idx = np.setdiff1d(np.arange(labels.size), val_idx).astype(np.int64)
    return train_idx, val_idx


def stratified_folds(labels: Sequence[int] | np.ndarray, k: int, seed: int) -> np.ndarray:
    """(N,) int64 fold numbers in 0..k-1: each class, shuffled with one generator seeded by ``seed`` (classes
    in sorted order), is dealt round-robin, so every fold holds floor(n/k) or ceil(n/k) of a class's n items."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or k < 2:
        raise DataError(f"stratified_folds needs a non-empty 1-D array of labels and k >= 2, got {labels.shape}, {k}")
    rng = np.random.default_rng(seed)
    folds = np.empty(labels.size, dtype=np.int64)
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        folds[members] = np.arange(members.size) % k
    return folds


def pad_frames(
    sequences: Sequence[np.ndarray | torch.Tensor], pad_value: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad (T_i, F) sequences into frames (B, T, F) float32, lengths (B,) int64 and mask (B, T) bool.

    T is the longest length; padded frames hold ``pad_value``. NaN in real frames is kept as it is.
    """
    if not sequences:
        raise ValueError("pad_frames needs at least one sequence")
    seqs = [torch.as_tensor(s, dtype=torch.float32) for s in sequences]
    if any(s.ndim != 2 or s.shape[1] != seqs[0].shape[1] or s.shape[0] < 1 for s in seqs):
        raise ValueError(f"every sequence must be (T_i >= 1, F) with one F, got {[tuple(s.shape) for s in seqs]}")
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.int64)
    frames = seqs[0].new_full((len(seqs), int(lengths.max()), seqs[0].shape[1]), pad_value)
    for i, s in enumerate(seqs):
        frames[i, : s.shape[0]] = s
    mask = torch.arange(frames.shape[1]) < lengths[:, None]  # (B, T)
    return frames, lengths, mask


def pad_labels(labels: Sequence[np.ndarray | torch.Tensor], ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Pad per-frame label ids (T_i,) into a (B, T) int64 tensor with ``ignore_index`` on padding."""
    rows = [torch.as_tensor(lab, dtype=torch.int64) for lab in labels]
    out = torch.full((len(rows), max(len(r) for r in rows)), ignore_index, dtype=torch.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


class FrameBatch(NamedTuple):
    """One padded minibatch; see the module docstring for the shapes."""

    frames: torch.Tensor  # (B, T, F) float32
    lengths: torch.Tensor  # (B,) int64
    mask: torch.Tensor  # (B, T) bool, True on real frames
    targets: torch.Tensor | None  # classify: (B,) int64; label: (B, T) int64 with IGNORE_INDEX on padding


def make_batch(data: FrameDataset, indices: Sequence[int] | np.ndarray) -> FrameBatch:
    """Gather the sequences at ``indices`` (in that order) into a padded FrameBatch."""
    indices = [int(i) for i in indices]
    frames, lengths, mask = pad_frames([data.sequences[i] for i in indices])
    if data.labels is None:
        targets = None
    elif data.task == "classify":
        targets = torch.as_tensor(np.asarray(data.labels)[indices], dtype=torch.int64)
    else:
        targets = pad_labels([data.labels[i] for i in indices])
    return FrameBatch(frames, lengths, mask, targets)
