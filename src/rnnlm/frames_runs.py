"""Frame-sequence runs: setting one up, training it (or resuming it), and reading what it left behind.

A frame run directory holds what a language-model run holds (config.json, metrics.jsonl, last/best
checkpoints; the training-set statistics travel in the weights as ``input.mean``/``input.std``) plus
``classes.json`` (task, feature count, class names) and the reports written after training:
``val_report.json`` and, with a test file, ``test_report.json`` (each with a .png when matplotlib is there).
The training loop, callbacks, checkpoints and resume are the shared ones of runs.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ckpt
from .atomic import atomic_write_json
from .data.frame_prep import feature_stats, stratified_split
from .data.frames import FrameDataset, read_frames
from .errors import CheckpointError, DataError
from .frame_metrics import format_report, save_report
from .frames_config import FramesRunConfig
from .models import count_parameters, resolve_engine_name
from .models.frames import FrameRNN
from .runs import RESUMABLE, check_resume, fit_run, new_run_dir, resolve_device, resume_checkpoint
from .tasks.frames import FrameTask, frame_logits, score

CLASSES = "classes.json"
COMMAND = "rnnlm frames train"
# A resume may also change the test file (scored after training) and the scoring batch size.
FRAMES_RESUMABLE = {**RESUMABLE, "data": {"test", "eval_batch_size"}}


@dataclass
class FramesRunResult:
    """What a finished (or stopped) frame run leaves behind."""

    run_dir: Path
    config: FramesRunConfig
    reports: dict[str, dict[str, Any]]  # "val" / "test" -> classification report of the best weights
    stop_reason: str


def read_frames_run(run_dir: str | Path) -> tuple[FramesRunConfig, dict[str, Any]]:
    """The config and classes.json (task, num_features, classes) of a frame run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    raw = ckpt.read_json(run_dir / ckpt.CONFIG, "run config")
    try:
        cfg = FramesRunConfig.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{run_dir / ckpt.CONFIG}: not a frames run config ({e})") from None
    info = ckpt.read_json(run_dir / CLASSES, "class list")
    if not isinstance(info, dict) or not {"task", "num_features", "classes"} <= set(info):
        raise CheckpointError(f"{run_dir / CLASSES}: needs task, num_features and classes")
    return cfg, info


def build_frame_model(
    cfg: FramesRunConfig, info: dict[str, Any], weights: dict[str, torch.Tensor] | None = None
) -> FrameRNN:
    """A FrameRNN for a run; with weights (statistics included), loaded strictly."""
    F = int(info["num_features"])
    model = FrameRNN(cfg.model, F, len(info["classes"]), info["task"], torch.zeros(F), torch.ones(F))
    if weights is not None:
        try:
            model.load_state_dict(weights, strict=True)
        except (RuntimeError, KeyError) as e:
            raise CheckpointError(
                f"the checkpoint does not fit the run's config.json ({str(e).splitlines()[0]}); "
                "was the file copied from another run?"
            ) from None
    return model


def merge_frames_resume(saved: FramesRunConfig, overrides: dict[str, dict[str, Any]]) -> FramesRunConfig:
    """The saved config with explicit overrides applied; refuses any that would change the run."""
    d = saved.to_dict()
    for section, values in overrides.items():
        d[section].update(values)
    wanted = FramesRunConfig.from_dict(d)
    check_resume(saved, wanted, FRAMES_RESUMABLE)
    return wanted


def split_train_val(data: FrameDataset, fraction: float, seed: int) -> tuple[FrameDataset, FrameDataset | None]:
    """The training part and the stratified validation part (None when fraction is 0).

    Per-frame labels have no single class per sequence, so their split is a plain seeded draw of sequences.
    """
    if fraction == 0:
        return data, None
    keys = np.asarray(data.labels) if data.task == "classify" else np.zeros(len(data), dtype=np.int64)
    train_idx, val_idx = stratified_split(keys, fraction, seed)
    return data.subset(train_idx), data.subset(val_idx)


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().absolute())


def run_frames(
    cfg: FramesRunConfig,
    train_data: FrameDataset | None = None,
    test_data: FrameDataset | None = None,
    resume: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> FramesRunResult:
    """Train a frame model as cfg says (or continue the run in ``resume``), then score the best weights.

    The data come from cfg.data's paths unless given as FrameDatasets. cfg is not modified; every setting
    is checked before anything is read or written.
    """
    cfg = copy.deepcopy(cfg)
    cfg.data.train_path, cfg.data.test = _absolute(cfg.data.train_path), _absolute(cfg.data.test)
    cfg.check()
    state = weights = None
    classes = None
    if resume is not None:
        run_dir = Path(resume)
        saved, info = read_frames_run(run_dir)
        check_resume(saved, cfg, FRAMES_RESUMABLE)
        weights, state = resume_checkpoint(run_dir)
        classes = info["classes"]
    else:
        run_dir = new_run_dir(cfg.train.out, COMMAND)
    if train_data is None:
        if cfg.data.train_path is None:
            raise DataError("no training data: give a .ts or .npz file, or arrays to the Python API")
        train_data = read_frames(cfg.data.train_path, classes)
    if classes is not None and train_data.classes != classes:
        raise DataError(f"the training data's classes {train_data.classes} differ from the run's {classes}")
    if cfg.data.task is not None and cfg.data.task != train_data.task:
        raise DataError(
            f"--task {cfg.data.task}, but {train_data.source or 'the training data'} is a {train_data.task} set"
        )
    cfg.data.task, cfg.train.out = train_data.task, str(run_dir)
    if test_data is None and cfg.data.test is not None:
        test_data = read_frames(cfg.data.test, train_data.classes)
    if test_data is not None:
        if test_data.labels is None:
            raise DataError(
                f"{test_data.source or 'the test data'}: has no labels to score; use `rnnlm frames predict`"
            )
        check_compatible(test_data, train_data.task, train_data.num_features, train_data.classes)
    fit_part, val_part = split_train_val(train_data, cfg.data.val_fraction, cfg.train.seed)
    mean, std = feature_stats(fit_part.sequences)  # training part only: nothing of the validation data leaks in

    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    info = {"task": train_data.task, "num_features": train_data.num_features, "classes": train_data.classes}
    if weights is not None:
        model = build_frame_model(cfg, info, weights)
    else:
        model = FrameRNN(cfg.model, train_data.num_features, len(train_data.classes), train_data.task, mean, std)
    model = model.to(device)
    task = FrameTask(fit_part, val_part, cfg.train, cfg.data.eval_batch_size, device)

    def write_files() -> None:
        atomic_write_json(run_dir / ckpt.CONFIG, cfg.to_dict())
        atomic_write_json(run_dir / CLASSES, info)

    m = cfg.model
    engine = m.impl if m.impl != "auto" else f"auto: {resolve_engine_name('auto', False, device)}"
    head = m.pooling + " pooling" if train_data.task == "classify" else "per-frame softmax"
    header = [
        f"data: {train_data.source or 'arrays'} | {train_data.task}, {len(train_data.classes)} classes, "
        f"{train_data.num_features} features | train {len(fit_part)} sequences, "
        f"val {len(val_part) if val_part is not None else 'none'}, test {len(test_data) if test_data else 'none'}",
        f"model: {'bi' if m.bidirectional else 'uni'}directional {m.cell}, {m.layers} x {m.hidden}, proj {m.proj}, "
        f"{head}, engine {engine} | {count_parameters(model):,} parameters | device {device} | run {run_dir}",
    ]
    _, reason, _ = fit_run(model, task, cfg.train, run_dir, write_files, header, log, state, COMMAND)

    path = ckpt.checkpoint_path(run_dir, "best")  # the last weights when there was no validation split
    best_weights, meta = ckpt.load_weights(path)
    best = build_frame_model(cfg, info, best_weights).to(device)
    log(f"scores of {path.name} (step {meta.get('step', '?')}):")
    reports = {}
    for name, data in (("val", val_part), ("test", test_data)):
        if data is None:
            continue
        loss, report = score(frame_logits(best, data.sequences, cfg.data.eval_batch_size, device), data)
        reports[name] = {"loss": loss, **report}
        log(format_report(reports[name], title=name))
        save_report(reports[name], run_dir / f"{name}_report", title=name)
    return FramesRunResult(run_dir, cfg, reports, reason)


def check_compatible(data: FrameDataset, task: str, num_features: int, classes: list[str]) -> None:
    """Raise DataError unless data fits a model of this task, feature count and classes."""
    where = data.source or "the data"
    if data.num_features != num_features:
        raise DataError(f"{where}: {data.num_features} features per frame, but the model reads {num_features}")
    if data.labels is not None and (data.task != task or data.classes != list(classes)):
        raise DataError(
            f"{where}: a {data.task} set with classes {data.classes[:20]}, but the model is a {task} model "
            f"with classes {list(classes)[:20]}"
        )
