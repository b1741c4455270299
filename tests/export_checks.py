"""Shared by the export tests: the tolerance of a parity check, and running an exported file.

The tolerance: float32 computes each output with about 1e-7 relative rounding; the exported graph and torch
sum the same products in other orders (onnxruntime's MLAS kernels, torch's oneDNN or MKL, AVX2 or AVX-512 code
paths), and a recurrence carries the difference through every step. Over 500 steps the largest difference
measured was 2e-7 (bench/notes/export.md); atol 1e-5 with rtol 1e-4 leaves a margin of 50 for other CPUs and
still fails on any real mistake (a wrong gate order, a state from the wrong step, a missing standardization, a
direction that reads padding), each of which moves outputs by 1e-2 or more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

ATOL, RTOL = 1e-5, 1e-4
BATCHES = (1, 3, 17)
LENGTHS = (1, 7, 500)
# (batch, time) pairs that take every batch size and every length, the longest with the largest batch: the
# checks run rnnlm's step-by-step reference engine on the other side, which takes a while at 500 steps.
SHAPES = ((1, 1), (1, 7), (3, 1), (3, 7), (17, 7), (17, 500))

ort = pytest.importorskip("onnxruntime")


def onnx_session(path: str | Path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the suite runs with one thread; it also makes the sums' order fixed
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, feeds: Mapping[str, torch.Tensor | np.ndarray]) -> list[np.ndarray]:
    return session.run(None, {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in feeds.items()})


def assert_close(got: Sequence[np.ndarray | torch.Tensor], want: Sequence[torch.Tensor], what: str) -> None:
    assert len(got) == len(want), what
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        a = torch.as_tensor(np.asarray(a))
        assert a.shape == b.shape, f"{what}, output {i}: shape {tuple(a.shape)} != {tuple(b.shape)}"
        torch.testing.assert_close(a, b.float(), atol=ATOL, rtol=RTOL, msg=lambda m, i=i: f"{what}, output {i}: {m}")


def mixed_lengths(batch: int, time: int, seed: int = 0) -> torch.Tensor:
    """(batch,) lengths in 1..time, the first the longest (so that time is what the batch needs), mixed after."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, time + 1, (batch,), generator=g)
    lengths[0] = time
    return lengths


def program(path: str | Path):
    """The module of a saved torch.export program."""
    return torch.export.load(str(path)).module()
