"""A language model as a step function in ONNX or torch.export: token ids and the state in, logits and the state out.

The graph (inputs, then outputs; batch B and time T are dynamic)::

    ids     (B, T) int64    token ids (the vocabulary is in the file's metadata)
    h       (L, B, H)       the state: zeros to start, then what the last call returned
    c       (L, B, H)       lstm only: the memory cell
    ->
    logits  (B, T, V)       next-token logits at every step
    h_out, (c_out)          the state after the last step, to feed to the next call

Feeding a text in pieces, each call's state going into the next, gives the logits of feeding it whole: the
generation loop needs nothing else (README, "Export and share a model", has one in numpy and onnxruntime).
The recurrence runs as torch.nn.RNN/GRU/LSTM with the model's weights (recurrent/export.py), in float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnlm.core import export as core_export
from rnnlm.core.vocab import Vocab
from rnnlm.lm import run as lm_run
from rnnlm.lm.config import RunConfig
from rnnlm.lm.model import RNNLM
from rnnlm.recurrent.export import reference_copy

KIND = "language-model"


class LMStep(nn.Module):
    """``forward(ids, h) -> (logits, h_out)``: the model's forward pass with its state as a tensor (rnn, gru)."""

    def __init__(self, model: RNNLM, loop: str = "module") -> None:
        super().__init__()
        self.model = reference_copy(model, loop).float()

    def forward(self, ids: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, (h_out,) = self.model(ids, (h,))
        return logits, h_out


class LSTMStep(LMStep):
    """``forward(ids, h, c) -> (logits, h_out, c_out)``: an explicit signature (not ``*state``), as torch.export
    matches its dynamic shapes to the arguments by position."""

    def forward(self, ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        logits, (h_out, c_out) = self.model(ids, (h, c))
        return logits, h_out, c_out


def step_module(model: RNNLM, loop: str = "module") -> LMStep:
    """The exported module: the model's step function, with the reference encoder (recurrent/export.py)."""
    return LSTMStep(model, loop) if model.num_states == 2 else LMStep(model, loop)


def names(model: RNNLM) -> tuple[list[str], list[str]]:
    """The graph's input and output names."""
    states = ["h", "c"][: model.num_states]
    return ["ids", *states], ["logits", *(s + "_out" for s in states)]


def metadata(model: RNNLM, vocab: Vocab, cfg: RunConfig, checkpoint: dict[str, str]) -> dict[str, Any]:
    """What a user of the file needs beside the graph: the vocabulary, the input spec, where it came from."""
    m = cfg.model
    L, H = m.layers, m.hidden
    state = {n: f"float32 (layers={L}, batch, hidden={H}); zeros to start" for n in ["h", "c"][: model.num_states]}
    return {
        "kind": KIND,
        "inputs": {"ids": "int64 (batch, time) token ids", **state},
        "outputs": {
            "logits": f"float32 (batch, time, vocab={len(vocab)})",
            **{k + "_out": v for k, v in state.items()},
        },  # noqa: E501
        "vocab": {"level": vocab.level, "unk": vocab.unk, "tokens": list(vocab.tokens)},
        "model": {"cell": m.cell, "layers": L, "hidden": H, "embed": m.embed, "tie_weights": m.tie_weights},
        "checkpoint": {k: v for k, v in checkpoint.items() if k != "path"},
        "precision": "float32 (the run may have trained with bfloat16 matmuls; the export computes in float32)",
    }


def example_inputs(model: RNNLM, batch: int = 2, time: int = 3) -> tuple[torch.Tensor, ...]:
    """Token ids and a zero state; 2 x 3 so that neither dynamic axis is traced as a constant 1."""
    ids = torch.randint(0, model.vocab_size, (batch, time))
    return (ids, *model.begin_state(batch, "cpu"))


def export_model(
    model: RNNLM, vocab: Vocab, cfg: RunConfig, out: str | Path, fmt: str = "onnx", checkpoint: dict[str, str] | None
    = None,
) -> Path:  # fmt: skip
    """Write the model's step function to ``out`` as ``fmt`` (onnx or exported-program); returns the path."""
    step = step_module(model.cpu(), core_export.LOOPS[core_export.check_format(fmt)])
    inputs, outputs = names(model)
    axes: dict[str, dict[int, str]] = {"ids": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"}}
    for n in inputs[1:] + outputs[1:]:
        axes[n] = {1: "batch"}
    meta = metadata(model, vocab, cfg, checkpoint or {})
    return core_export.export(step, example_inputs(model), inputs, outputs, axes, meta, out, fmt)


def export(run_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None, checkpoint: str = "best") -> Path:
    """Export a language-model run's weights (``checkpoint``: best, last or a file) to ``out`` (default
    RUN_DIR/model.onnx or model.pt2)."""
    core_export.check_format(fmt)
    model, vocab, cfg, meta = lm_run.load_model(run_dir, checkpoint, "cpu")
    return export_model(model, vocab, cfg, out or core_export.default_path(run_dir, fmt), fmt, meta)
