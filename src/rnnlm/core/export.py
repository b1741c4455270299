"""Writing a model's graph to a file that runs without rnnlm: ONNX, or a torch.export program.

Each use builds the module to export (lm/export.py, tagging/export.py, frames/export.py), its example inputs,
which of their axes are dynamic, and what a user needs beside the graph (the vocabulary or tag set, the input
spec, rnnlm's version). This module writes the file, atomically, with that record inside it:

- ONNX: one metadata property ``rnnlm`` holding the record as JSON
  (``onnxruntime.InferenceSession(path).get_modelmeta().custom_metadata_map["rnnlm"]``);
- torch.export: the extra file ``rnnlm.json`` of the saved program (``torch.export.load(path, extra_files=
  {"rnnlm.json": ""})`` fills it in).

ONNX goes through torch's TorchScript-based exporter (``dynamo=False``): it turns each torch.nn.RNN/GRU/LSTM
into one ONNX RNN/GRU/LSTM operator with dynamic batch and time and takes about a second, where the torch.export
based exporter took ten times as long for the same graph (bench/notes/export.md). torch warns that it is
deprecated; the warning is silenced here, scoped to the export.
"""

from __future__ import annotations

import io
import json
import sys
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnlm.core.atomic import atomic_write_bytes
from rnnlm.core.errors import CheckpointError, ConfigError

FORMATS = ("onnx", "exported-program")
SUFFIXES = {"onnx": ".onnx", "exported-program": ".pt2"}
# How the reference encoder loops over time for each format (recurrent/export.py): ONNX takes torch.nn.LSTM and its
# kin as one operator each; torch.export would unroll them into a fixed number of steps, so it gets a scan.
LOOPS = {"onnx": "module", "exported-program": "scan"}
METADATA_KEY = "rnnlm"
EXTRA_FILE = "rnnlm.json"
OPSET = 17
INSTALL = "pip install 'rnnlm[export]'"

# Axis names: {input or output name: {axis: name}}, e.g. {"ids": {0: "batch", 1: "time"}}.
Axes = Mapping[str, Mapping[int, str]]


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return fmt


def default_path(run_dir: str | Path, fmt: str) -> Path:
    """Where an export goes when no --out is given: model.onnx or model.pt2 in the run directory."""
    return Path(run_dir) / f"model{SUFFIXES[check_format(fmt)]}"


def export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    inputs: Sequence[str],
    outputs: Sequence[str],
    axes: Axes,
    metadata: dict[str, Any],
    path: str | Path,
    fmt: str,
) -> Path:
    """Write ``module`` traced on ``args`` to ``path`` as ``fmt``, with ``metadata`` inside; returns the path.

    ``inputs``/``outputs`` name the graph's tensors (in order), ``axes`` their dynamic axes. The example inputs
    must be at least 2 long on every dynamic axis, so that no tracer takes a size of 1 for a constant.
    """
    check_format(fmt)
    path = Path(path)
    if not path.parent.is_dir():
        raise CheckpointError(f"--out {path}: the folder {path.parent} does not exist; create it first")
    record = json.dumps(
        {"rnnlm_version": version(), **metadata, "inputs_order": list(inputs), "outputs_order": list(outputs)}
    )
    module = module.eval()
    with torch.no_grad():
        if fmt == "onnx":
            data = _onnx_bytes(module, args, inputs, outputs, axes, record)
        else:
            data = _program_bytes(module, args, inputs, axes, record)
    atomic_write_bytes(path, data)
    return path


def _onnx_bytes(
    module: nn.Module, args: tuple[torch.Tensor, ...], inputs: Sequence[str], outputs: Sequence[str], axes: Axes,
    record: str,
) -> bytes:  # fmt: skip
    onnx = require("onnx")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The deprecation of this exporter, and its advice to pass the LSTM's initial state as an input, which the
        # graph does (or shapes the zeros from the batch at run time: recurrent/export.py).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            buffer,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes={k: dict(v) for k, v in axes.items()},
            opset_version=OPSET,
            dynamo=False,
        )
    model = onnx.load_from_string(buffer.getvalue())
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, record
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _program_bytes(
    module: nn.Module, args: tuple[torch.Tensor, ...], inputs: Sequence[str], axes: Axes, record: str
) -> bytes:
    dims: dict[str, torch.export.Dim] = {}
    shapes = []
    for name in inputs:
        spec = {axis: dims.setdefault(label, torch.export.Dim(label)) for axis, label in axes.get(name, {}).items()}
        shapes.append(spec or None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's notes on its own internals (FutureWarning and the like)
        program = torch.export.export(module, args, dynamic_shapes=tuple(shapes), strict=False)
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={EXTRA_FILE: record})
    return buffer.getvalue()


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The record that ``export`` wrote into an ONNX file or a torch.export program."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        extra = {EXTRA_FILE: ""}
        torch.export.load(path, extra_files=extra)
        return json.loads(extra[EXTRA_FILE])
    onnx = require("onnx")
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    raise CheckpointError(f"{path}: an ONNX file without rnnlm's metadata; was it written by `rnnlm export`?")


def version() -> str:
    """rnnlm's version. The package's root module is always imported before any of its submodules (this one
    included), so it is read from there rather than imported, which would make core depend on every use."""
    return str(sys.modules["rnnlm"].__version__)


def require(name: str) -> Any:
    """Import an optional export dependency, or say how to install it."""
    try:
        return __import__(name)
    except ImportError:
        raise ConfigError(f"exporting needs the {name} package; install it with {INSTALL}") from None
