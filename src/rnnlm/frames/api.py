"""The Python API for frame sequences, mirroring ``rnnlm frames train | eval | predict``.

>>> from rnnlm import frames
>>> model = frames.train("JapaneseVowels_TRAIN.ts", test="JapaneseVowels_TEST.ts", out="runs/jv")
>>> model = frames.train(sequences, labels, hidden=32, epochs=50)   # numpy arrays work too
>>> model = frames.load("runs/jv")
>>> model.predict(sequences)           # class names, one per sequence (or one array per sequence for labels)
>>> model.evaluate("JapaneseVowels_TEST.ts")["accuracy"]

Data may be a .ts/.npz path, a FrameDataset, a list of (T_i, F) arrays, or one (N, T, F) array (with
``lengths`` when the sequences are padded). Labels: (N,) values for classification, a list of (T_i,)
arrays for per-frame labeling; any values (ints, strings) work, and the class names are their strings.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import CheckpointError, DataError
from rnnlm.core.fields import renamed_keyword
from rnnlm.core.hub import local_run_dir
from rnnlm.frames import run as frames_run
from rnnlm.frames.config import FramesRunConfig, build_frames_config, split_frames_settings
from rnnlm.frames.data import FrameDataset, read_frames
from rnnlm.frames.model import FrameEnsemble, FrameRNN
from rnnlm.frames.run import KIND, check_compatible
from rnnlm.frames.task import frame_logits, score
from rnnlm.training import runs

FrameData = str | Path | FrameDataset | np.ndarray | Sequence[np.ndarray]


def as_dataset(
    data: FrameData,
    labels: Sequence[Any] | np.ndarray | None = None,
    lengths: Sequence[int] | np.ndarray | None = None,
    classes: Sequence[str] | None = None,
) -> FrameDataset:
    """Frames and labels in any of the accepted forms (see the module docstring) as a FrameDataset.

    ``classes`` fixes the label ids (a trained model's classes); without it they are the sorted distinct labels.
    """
    if isinstance(data, FrameDataset):
        if labels is not None or lengths is not None:
            raise ValueError("a FrameDataset carries its own labels and lengths")
        return data
    if isinstance(data, (str, Path)):
        if labels is not None or lengths is not None:
            raise ValueError("a file carries its own labels and lengths")
        return read_frames(data, classes)
    if isinstance(data, np.ndarray) and data.ndim == 3:
        n, t = data.shape[:2]
        lengths = np.full(n, t) if lengths is None else np.asarray(lengths)
        if lengths.shape != (n,) or lengths.min(initial=1) < 1 or lengths.max(initial=1) > t:
            raise DataError(f"lengths must be ({n},) values in [1, {t}]")
        sequences = [data[i, : int(lengths[i])] for i in range(n)]
    elif isinstance(data, np.ndarray):
        raise DataError(f"frames must be (N, T, F) or a list of (T_i, F) arrays, got shape {data.shape}; [x] is one")
    else:
        if lengths is not None:
            raise ValueError("lengths go with one padded (N, T, F) array; a list of arrays has its own lengths")
        sequences = list(data)
    sequences = [np.asarray(s, dtype=np.float32) for s in sequences]
    if any(np.isinf(s).any() for s in sequences):
        raise DataError("frames hold an infinite value; use NaN for a missing one")
    if labels is None:
        return FrameDataset(sequences, None, list(classes or []), "classify", "arrays")
    per_frame = not isinstance(labels, np.ndarray) and any(np.ndim(x) > 0 for x in labels)
    flat = np.concatenate([np.asarray(x).ravel() for x in labels]) if per_frame else np.asarray(labels)
    names = list(classes) if classes is not None else [str(v) for v in np.unique(flat)]
    index = {c: i for i, c in enumerate(names)}
    unknown = sorted({str(v) for v in flat.tolist()} - set(index))
    if unknown:
        raise DataError(f"labels {unknown[:10]} are not among the classes {names[:20]}")
    ids = np.array([index[str(v)] for v in flat.tolist()], dtype=np.int64)
    if per_frame:
        ids = np.split(ids, np.cumsum([np.size(x) for x in labels])[:-1])
    try:
        return FrameDataset(sequences, ids, names, "label" if per_frame else "classify", "arrays")
    except ValueError as e:
        raise DataError(str(e)) from None


class FrameModel:
    """A trained frame classifier or labeler with its class names: predict and score sequences."""

    def __init__(
        self,
        model: FrameRNN | FrameEnsemble,
        info: dict[str, Any],
        config: FramesRunConfig,
        run_dir: Path | None = None,
        checkpoint: dict[str, str] | None = None,
        reports: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.model, self.config, self.run_dir = model, config, run_dir
        self.task: str = info["task"]
        self.num_features: int = int(info["num_features"])
        self.classes: list[str] = list(info["classes"])
        self.checkpoint = checkpoint or {}  # which weights were loaded: path, step, epoch (, val_loss)
        self.reports = reports or {}  # after training: "val" (and "test") reports of these weights

    def __repr__(self) -> str:
        m = self.config.model
        members = len(self.model.members) if isinstance(self.model, FrameEnsemble) else 1
        return (
            f"FrameModel({self.task}, {f'{members} x ' if members > 1 else ''}"
            f"{'bi' if m.bidirectional else 'uni'}directional {m.cell} {m.layers}x{m.hidden}, "
            f"{len(self.classes)} classes, run_dir={str(self.run_dir)!r})"
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _data(self, data: FrameData, labels: Any = None, lengths: Any = None) -> FrameDataset:
        ds = as_dataset(data, labels, lengths, self.classes)
        check_compatible(ds, self.task, self.num_features, self.classes)
        return ds

    def _frames(self, data: FrameData, lengths: Any = None) -> FrameDataset:
        """The frames alone, as prediction needs them: the labels of a file or FrameDataset are dropped
        unread, so an unlabelled file works and a label the model never saw is no error."""
        if isinstance(data, (str, Path)) and lengths is None:
            ds = read_frames(data, labels=False)
        else:
            ds = as_dataset(data, None, lengths)
            if ds.labels is not None:
                ds = dataclasses.replace(ds, labels=None, classes=[])
        check_compatible(ds, self.task, self.num_features, self.classes)
        return ds

    def export(self, out: str | Path, format: str = "onnx") -> Path:
        """Write the model (frames and lengths in, class probabilities out) to ``out`` as ``format``: onnx or
        exported-program (frames/export.py says what the graph takes and gives)."""
        from rnnlm.frames.export import export_model

        info = {"task": self.task, "num_features": self.num_features, "classes": self.classes}
        return export_model(self.model, info, out, format, self.checkpoint)

    def predict_proba(self, data: FrameData, lengths: Any = None) -> np.ndarray | list[np.ndarray]:
        """Class probabilities: (N, C) for classification, a list of (T_i, C) arrays for per-frame labels."""
        logits = frame_logits(self.model, self._frames(data, lengths).sequences, self._batch(), self.device)
        probs = [torch.softmax(x, dim=-1).numpy() for x in logits]
        return np.stack(probs) if self.task == "classify" else probs

    def predict(self, data: FrameData, lengths: Any = None) -> np.ndarray | list[np.ndarray]:
        """Class names: (N,) for classification, a list of (T_i,) arrays for per-frame labels."""
        names = np.array(self.classes)
        probs = self.predict_proba(data, lengths)
        return names[probs.argmax(-1)] if self.task == "classify" else [names[p.argmax(-1)] for p in probs]

    def evaluate(self, data: FrameData, labels: Any = None, lengths: Any = None) -> dict[str, Any]:
        """Loss, accuracy, macro-F1, per-class scores and the confusion matrix on labelled data."""
        ds = self._data(data, labels, lengths)
        if ds.labels is None:
            raise DataError(f"{ds.source}: no labels to score against; pass labels=, or use predict()")
        loss, report = score(frame_logits(self.model, ds.sequences, self._batch(), self.device), ds)
        return {"loss": loss, **report}

    def _batch(self) -> int:
        return self.config.eval.eval_batch_size


def train(
    data: FrameData | None = None,
    labels: Any = None,
    *,
    lengths: Any = None,
    test: FrameData | None = None,
    test_labels: Any = None,
    test_lengths: Any = None,
    resume: str | Path | None = None,
    log: Callable[[str], None] = print,
    **settings: Any,
) -> FrameModel:
    """Train a frame model and return it with its best weights (lowest validation loss) and its reports.

    Keyword settings are the flags of ``rnnlm frames train`` in snake_case (hidden=32, pooling="attention",
    bidirectional=False, epochs=50, out="runs/x"). ``resume=RUN_DIR`` continues a run exactly; a run
    trained on arrays needs the same arrays again.
    """
    train_data = test_data = None
    if isinstance(data, (str, Path)):
        settings["train_path"] = str(data)
    elif data is not None:
        train_data = as_dataset(data, labels, lengths)
    if isinstance(test, (str, Path)):
        settings["test"] = str(test)
    elif test is not None:
        test_data = as_dataset(test, test_labels, test_lengths, train_data.classes if train_data else None)
    overrides = split_frames_settings(settings)
    if resume is not None:
        run = runs.open_run(resume, KIND)  # read once; frames_run.train checks the overrides once
        cfg = runs.with_overrides(run.config, overrides)
    else:
        run, cfg = None, build_frames_config(overrides)
    result = frames_run.train(cfg, run, log, train_data, test_data)
    model = load(result.run_dir, "best", device=cfg.train.device)
    model.reports = result.reports
    return model


def load(
    run_dir: str | Path,
    checkpoint: str = "best",
    device: str = "cpu",
    engine: str | None = None,
    *,
    impl: str | None = None,
) -> FrameModel:
    """Load a trained frame run: its final model ('best' falls back to 'last' when the run had no validation
    split; both name model.safetensors in an ensemble or refit run), or the checkpoint file at a path.

    ``engine`` picks the engine that computes the recurrence (every engine reads every run's weights); ``impl=``
    is its deprecated name, kept for old notebooks.
    """
    engine = renamed_keyword(engine, impl, "impl", "engine", "frames.load")
    run_dir = local_run_dir(run_dir)  # a Hub id ("user/name") is downloaded first, with huggingface_hub
    loaded = runs.load(run_dir, KIND, checkpoint, device, engine)
    reports = {}
    for name in ("val", "test"):
        report_path = Path(run_dir) / f"{name}_report.json"
        if report_path.is_file() and checkpoint == "best":
            with contextlib.suppress(CheckpointError):  # a damaged report does not stop the model from loading
                reports[name] = ckpt.read_json(report_path, f"{name} report")
    run = loaded.run
    return FrameModel(loaded.model, run.side, run.config, run.dir, loaded.meta, reports)  # type: ignore[arg-type]
