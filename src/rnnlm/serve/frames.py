"""A frame model on the page: predictions for an uploaded file, read in memory; its confusion matrix when the file
has labels; and per-frame saliency (gradient x input) of one sequence."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch

from rnnlm.core.errors import DataError
from rnnlm.frames.api import FrameModel
from rnnlm.frames.data import FrameDataset, parse_ts, read_npz
from rnnlm.frames.metrics import classification_report
from rnnlm.frames.run import check_compatible
from rnnlm.frames.task import frame_logits
from rnnlm.serve import params as P


def read_upload(data: bytes, name: str, classes: list[str] | None, labels: bool) -> FrameDataset:
    """The frames of an uploaded .ts or .npz file, from memory (the name gives the type and names it in errors)."""
    suffix = name.lower().rsplit(".", 1)[-1] if "." in name else ""
    if suffix == "ts":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{name}: not UTF-8 text at byte {e.start}; a .ts file is text") from None
        return parse_ts(text, name, classes, labels)
    if suffix == "npz":
        return read_npz(io.BytesIO(data), classes, labels, name=name)
    raise DataError(f"{name}: unknown frame file type; upload a .ts (UEA/UCR) or an .npz file")


def predict_upload(fm: FrameModel, data: bytes, name: str) -> dict[str, Any]:
    """Predictions (class and probabilities) of every sequence, and the report against the file's labels when it
    has labels the model knows."""
    ds = read_upload(data, name, None, labels=False)
    if len(ds) > P.MAX_SEQUENCES:
        raise P.BadRequest(f"{name}: {len(ds):,} sequences; at most {P.MAX_SEQUENCES:,} are predicted at once", 413)
    check_compatible(ds, fm.task, fm.num_features, fm.classes)
    logits = frame_logits(fm.model, ds.sequences, fm.config.eval.eval_batch_size, fm.device)
    out: dict[str, Any] = {"task": fm.task, "classes": fm.classes, "lengths": ds.lengths.tolist()}
    if fm.task == "classify":
        probs = torch.softmax(torch.stack(logits), dim=-1)
        out["predictions"] = probs.argmax(-1).tolist()
        out["probabilities"] = [[round(p, 4) for p in row] for row in probs.tolist()]
    else:
        out["predictions"] = [x.argmax(-1).tolist() for x in logits]
    try:
        labelled = read_upload(data, name, fm.classes, labels=True)
    except DataError as e:
        out["labels_note"] = str(e)
        labelled = None
    if labelled is not None and labelled.labels is not None and labelled.task == fm.task:
        gold = np.asarray(labelled.labels) if fm.task == "classify" else np.concatenate(labelled.labels)
        pred = np.asarray(out["predictions"]) if fm.task == "classify" else np.concatenate(out["predictions"])
        out["labels"] = gold.tolist() if fm.task == "classify" else [x.tolist() for x in labelled.labels]
        out["report"] = classification_report(gold, pred, fm.classes)
    return out


def saliency(fm: FrameModel, data: bytes, name: str, index: int) -> dict[str, Any]:
    """Gradient x input of sequence ``index``: how much each frame's values pushed the predicted class's logit
    (for per-frame labels, the sum of each frame's predicted logit). Returns the frames, the per-frame total and
    the per-feature values."""
    ds = read_upload(data, name, None, labels=False)
    if not 0 <= index < len(ds):
        raise P.BadRequest(f"sequence {index} does not exist; the file has {len(ds)} (0 to {len(ds) - 1})")
    check_compatible(ds, fm.task, fm.num_features, fm.classes)
    frames = torch.as_tensor(ds.sequences[index])[None]  # (1, T, F)
    x = frames.nan_to_num(0.0).requires_grad_(True)
    model = fm.model
    with torch.enable_grad():
        logits = model(x, torch.tensor([frames.shape[1]]))  # (1, C) or (1, T, C)
        target = logits.max(dim=-1).values.sum()
        (grad,) = torch.autograd.grad(target, x)
    gx = (grad * x).detach()[0]  # (T, F)
    pred = logits.detach()[0].argmax(-1)
    return {
        "index": index,
        "prediction": pred.tolist(),
        "frames": [[round(v, 4) for v in row] for row in frames[0].nan_to_num(0.0).tolist()],
        "saliency": [round(v, 5) for v in gx.sum(-1).tolist()],
        "per_feature": [[round(v, 5) for v in row] for row in gx.tolist()],
    }
