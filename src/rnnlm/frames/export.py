"""A frame classifier or labeler in ONNX or torch.export: frames and lengths in, class probabilities out.

The graph (inputs, then outputs; batch B and time T are dynamic)::

    frames  (B, T, F) float32   raw frames, real ones first in each row; NaN marks a missing value
    lengths (B,) int64          real frames per row, each in 1..T
    ->
    probs   (B, C) float32      classify: the class probabilities of each sequence
            (B, T, C)           label: of each frame (the padded steps' rows are uniform; ignore them)

Standardization with the training set's statistics is inside the graph, so the frames go in as they were read;
an ensemble's members are all in it and the probabilities are their mean, as ``rnnlm frames predict`` gives.
The class names are in the file's metadata, in the order of the probabilities' last axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnlm.core import export as core_export
from rnnlm.frames.model import FrameEnsemble, FrameRNN
from rnnlm.frames.run import KIND as FRAMES_RUN
from rnnlm.recurrent.export import reference_copy
from rnnlm.training import runs

KIND = "frames"
INPUTS, OUTPUTS = ["frames", "lengths"], ["probs"]


class FrameProbs(nn.Module):
    """``forward(frames, lengths) -> probs``: the model's softmax, with the reference encoder."""

    def __init__(self, model: FrameRNN | FrameEnsemble, loop: str = "module") -> None:
        super().__init__()
        self.model = reference_copy(model, loop).float()

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(frames, lengths), dim=-1)


def metadata(model: FrameRNN | FrameEnsemble, info: dict[str, Any], checkpoint: dict[str, str]) -> dict[str, Any]:
    """The class names, the input spec and where the file came from."""
    task, F, C = info["task"], int(info["num_features"]), len(info["classes"])
    out = f"float32 (batch, classes={C})" if task == "classify" else f"float32 (batch, time, classes={C})"
    members = len(model.members) if isinstance(model, FrameEnsemble) else 1
    return {
        "kind": KIND,
        "task": task,
        "inputs": {
            "frames": f"float32 (batch, time, features={F}); real frames first, NaN for a missing value",
            "lengths": "int64 (batch,) real frames per row, each >= 1",
        },
        "outputs": {"probs": out},
        "classes": list(info["classes"]),
        "members": members,
        "checkpoint": {k: v for k, v in checkpoint.items() if k != "path"},
    }


def example_inputs(num_features: int, batch: int = 2, time: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames and lengths of two rows, one shorter (so the tracer sees the padding path)."""
    return torch.randn(batch, time, num_features), torch.tensor([time] + [time - 1] * (batch - 1))


def export_model(
    model: FrameRNN | FrameEnsemble, info: dict[str, Any], out: str | Path, fmt: str = "onnx",
    checkpoint: dict[str, str] | None = None,
) -> Path:  # fmt: skip
    """Write the model to ``out`` as ``fmt`` (onnx or exported-program); returns the path."""
    axes = {"frames": {0: "batch", 1: "time"}, "lengths": {0: "batch"}, "probs": {0: "batch"}}
    if info["task"] == "label":
        axes["probs"] = {0: "batch", 1: "time"}
    meta = metadata(model, info, checkpoint or {})
    args = example_inputs(int(info["num_features"]))
    return core_export.export(
        FrameProbs(model.cpu(), core_export.LOOPS[core_export.check_format(fmt)]),
        args,
        INPUTS,
        OUTPUTS,
        axes,
        meta,
        out,
        fmt,
    )


def export(run_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None, checkpoint: str = "best") -> Path:
    """Export a frame run's final model (``checkpoint``: best, last or a file) to ``out`` (default
    RUN_DIR/model.onnx or model.pt2)."""
    core_export.check_format(fmt)
    loaded = runs.load(run_dir, FRAMES_RUN, checkpoint, "cpu")
    model = loaded.model
    assert isinstance(model, (FrameRNN, FrameEnsemble))
    return export_model(model, loaded.run.side, out or core_export.default_path(run_dir, fmt), fmt, loaded.meta)
