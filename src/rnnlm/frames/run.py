"""Frame-sequence runs: setting one up, training it (or resuming it), and reading what it left behind.

A frame run of one model holds what a language-model run holds (config.json, metrics.jsonl, last/best
checkpoints; the training-set statistics travel in the weights as ``input.mean``/``input.std``) plus
``classes.json`` (task, feature count, class names) and the reports written after training:
``val_report.json`` and, with a test file, ``test_report.json`` (each with a .png when matplotlib is there).
An ensemble or refit run keeps each member's training runs in ``members/<i>/`` (and ``members/<i>/refit/``)
and its final model in ``model.safetensors``, every member's weights under ``members.<i>.``.
``train(cfg, resume, log)`` sets a run up and trains it; ``rnnlm frames train`` and ``rnnlm.frames.train`` both
call it. The training loop, callbacks, checkpoints and resume are the shared ones of training/ (runs.py,
trainer.py, callbacks.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.atomic import atomic_write_json
from rnnlm.core.errors import CheckpointError, ConfigError, DataError
from rnnlm.frames.config import FramesRunConfig
from rnnlm.frames.data import FrameDataset, read_frames
from rnnlm.frames.metrics import format_report, save_report
from rnnlm.frames.model import FrameEnsemble, FrameRNN
from rnnlm.frames.prep import feature_stats, stratified_split
from rnnlm.frames.task import FrameTask, frame_logits, score
from rnnlm.recurrent.engines import resolve_engine
from rnnlm.training import distributed, runs
from rnnlm.training import ensemble as members
from rnnlm.training.config import TrainConfig
from rnnlm.training.runs import MEMBERS, MODEL, RESUMABLE_TRAIN, count_parameters, train_model

CLASSES = "classes.json"
COMMAND = "rnnlm frames train"
# A resume may also change the test file (scored after training) and the scoring batch size.
FRAMES_RESUMABLE = {"train": RESUMABLE_TRAIN, "model": {"engine"}, "data": {"test"}, "eval": {"eval_batch_size"}}


@dataclass
class FramesTrainResult(runs.TrainResult):
    """What a finished (or stopped) frame run leaves behind: besides the run directory, config and stop reason (of
    the last model trained), the reports of the final model."""

    reports: dict[str, dict[str, Any]]  # "val" / "test" -> classification report of the best weights


def read_side(run_dir: Path, cfg: FramesRunConfig) -> dict[str, Any]:
    """classes.json of a frame run directory: task, num_features and classes."""
    info = ckpt.read_json(run_dir / CLASSES, "class list")
    if not isinstance(info, dict) or not {"task", "num_features", "classes"} <= set(info):
        raise CheckpointError(f"{run_dir / CLASSES}: needs task, num_features and classes")
    return info


def build_frame_model(
    cfg: FramesRunConfig, info: dict[str, Any], weights: dict[str, torch.Tensor] | None = None, extra: Any = None
) -> FrameRNN | FrameEnsemble:
    """A FrameRNN for a run; with weights (statistics included), loaded strictly: an ensemble's weights
    (keys ``members.<i>.``) give a FrameEnsemble of as many members."""
    F = int(info["num_features"])

    def one() -> FrameRNN:
        return FrameRNN(cfg.model, F, len(info["classes"]), info["task"], torch.zeros(F), torch.ones(F))

    prefix = f"{MEMBERS}."
    count = len({k.split(".")[1] for k in weights or {} if k.startswith(prefix)})
    model = FrameEnsemble([one() for _ in range(count)]) if count else one()
    return model if weights is None else runs.load_strict(model, weights)


def _engine(cfg: FramesRunConfig, device: torch.device) -> tuple[str, str]:
    """A frame model's recurrence reads padded batches of dense projections, in float32."""
    m = cfg.model
    return resolve_engine(m.engine, "float32", device, m.cell, one_hot=False, padded=True)


def _absolute_paths(cfg: FramesRunConfig) -> None:
    cfg.data.train_path, cfg.data.test = _absolute(cfg.data.train_path), _absolute(cfg.data.test)
    if cfg.audio.noise != "white":
        cfg.audio.noise = str(_absolute(cfg.audio.noise))


KIND = runs.register_kind(
    runs.RunKind(
        noun="frame run",
        command=COMMAND,
        config=FramesRunConfig,
        resumable=FRAMES_RESUMABLE,
        read_side=read_side,
        build_model=build_frame_model,
        resolve_engine=_engine,
        prepare=_absolute_paths,
    )
)


def concat_datasets(parts: list[FrameDataset]) -> FrameDataset:
    """The sequences and labels of labelled FrameDatasets of one task and class list, one after another."""
    first = parts[0]
    labels: Any = [lab for p in parts for lab in p.labels]
    if first.task == "classify":
        labels = np.asarray(labels, dtype=np.int64)
    sequences = [s for p in parts for s in p.sequences]
    waves = None if any(p.waves is None for p in parts) else [w for p in parts for w in p.waves]
    return FrameDataset(sequences, labels, first.classes, first.task, first.source, waves)


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


def phase_dirs(cfg: FramesRunConfig, run_dir: Path) -> list[Path]:
    """The directory of each training run inside a frame run, in the order they are trained.

    A single model trains in the run directory itself; otherwise member i trains in members/<i>, and its
    refit (when there is a validation split to choose the epoch count) in members/<i>/refit.
    """
    if cfg.fit.single:
        return [run_dir]
    dirs = []
    for i in range(cfg.fit.ensemble):
        dirs.append(run_dir / MEMBERS / str(i))
        if cfg.fit.refit and cfg.data.val_fraction > 0:
            dirs.append(dirs[-1] / "refit")
    return dirs


def train(
    cfg: FramesRunConfig,
    resume: str | Path | runs.Run | None = None,
    log: Callable[[str], None] = print,
    train_data: FrameDataset | None = None,
    test_data: FrameDataset | None = None,
) -> FramesTrainResult:
    """Train a frame model as cfg says (or continue the run in ``resume``), then score the final model.

    Each member is trained with early stopping on its own validation split and, with ``fit.refit``, trained
    again on all the training data for the epoch count that early stopping chose; an ensemble averages the
    members' probabilities. The data come from cfg.data's paths unless given as FrameDatasets. cfg is not
    modified; every setting is checked before anything is read or written. ``resume`` may be the run already
    opened (runs.open_run), which is then not read again.
    """
    cfg, run_dir, run = runs.begin(cfg, resume, KIND)
    if distributed.world_size() > 1 and not cfg.fit.single:
        raise ConfigError(
            "under torchrun a frame run trains one model: drop --ensemble and --refit, or run them without torchrun"
        )
    log = distributed.main_log(log)
    if run is not None:
        members.member_start(phase_dirs(run.config, run_dir)[0], True)  # fails early when the run cannot resume
    train_data, test_data = _read_data(cfg, train_data, test_data, run.side["classes"] if run else None, log)
    cfg.data.task = train_data.task
    resolved = runs.resolve_run(cfg, KIND)  # config.json and the header say what runs
    device = resolved.device
    info = {"task": train_data.task, "num_features": train_data.num_features, "classes": train_data.classes}
    if train_data.waves is not None:
        info["input"] = "audio"  # prediction reads sound files and computes the features of cfg.audio

    def write_files() -> None:  # config.json last: it makes the folder a run (see tagging/run.py's _write_files)
        atomic_write_json(run_dir / CLASSES, info)
        runs.write_config(run_dir, cfg, resolved)

    if run is not None and members.has_final_model(run_dir):
        log(f"nothing to do: {run_dir} holds a finished {MODEL}; start a new run to train differently")
    dirs = iter(phase_dirs(cfg, run_dir))
    tested = len(test_data) if test_data is not None else "none"
    phases = _Phases(cfg, info, train_data, tested, run_dir, resolved, run is not None, write_files, log)
    models, epochs, val_parts, val_logits = [], [], [], []
    reason = ""
    for i in range(cfg.fit.ensemble):
        seed = members.member_seed(cfg.train.seed, i)
        fit_part, val_part = split_train_val(train_data, cfg.data.val_fraction, seed)
        tc = dataclasses.replace(cfg.train, seed=seed)
        name = f"member {i + 1}/{cfg.fit.ensemble} (seed {seed})" if cfg.fit.ensemble > 1 else "model"
        model, meta, reason = phases.train_model(next(dirs), tc, fit_part, val_part, name)
        if val_part is not None:
            val_parts.append(val_part)
            val_logits += frame_logits(model, val_part.sequences, cfg.eval.eval_batch_size, device)
        if cfg.fit.refit and val_part is not None:
            # The epoch count early stopping chose, now on all the data: a longer epoch, the same number of passes.
            tc = dataclasses.replace(tc, epochs=max(1, math.ceil(float(meta["epoch"]))), patience=0)
            model, meta, reason = phases.train_model(next(dirs), tc, train_data, None, f"{name}, refit on all the data")
        models.append(model)
        epochs.append(float(meta["epoch"]))  # of its final weights
    if cfg.fit.single:
        final = models[0]
    else:
        final = FrameEnsemble(models).to(device)
        meta = {"members": len(models), "refit": cfg.fit.refit, "epochs": json.dumps(epochs)}
        ckpt.save_weights(run_dir / MODEL, final.state_dict(), meta)
    val = concat_datasets(val_parts) if val_parts else None
    # Several ranks: rank 0 scores the final model and writes the reports.
    reports = _reports(cfg, final, val, val_logits, test_data, run_dir, device, log) if distributed.is_main() else {}
    distributed.barrier()
    return FramesTrainResult(run_dir, cfg, reason, reports=reports)


def read_any(
    path: str | Path, cfg: FramesRunConfig, classes: list[str] | None, log: Callable[[str], None]
) -> FrameDataset:
    """Labelled data from a path: audio (a folder, manifest or sound file; features as cfg.audio says, the
    samples kept for augmentation) or a feature file (.ts, .npz)."""
    from rnnlm.frames.audio import is_audio_source, read_audio_dataset

    if is_audio_source(path):
        return read_audio_dataset(path, cfg.audio, classes, keep_waves=True, log=log)
    return read_frames(path, classes)


def _read_data(
    cfg: FramesRunConfig,
    train_data: FrameDataset | None,
    test_data: FrameDataset | None,
    classes: list[str] | None,
    log: Callable[[str], None] = print,
) -> tuple[FrameDataset, FrameDataset | None]:
    """The training data (from cfg.data.train_path unless given; labelled, of the run's classes on a resume, of
    the --task asked for) and the test data (labelled, compatible with it), or a DataError that says why not."""
    if train_data is None:
        if cfg.data.train_path is None:
            raise DataError("no training data: give a folder of audio, a manifest, a .ts or .npz file, or arrays")
        train_data = read_any(cfg.data.train_path, cfg, classes, log)
    if train_data.labels is None:
        raise DataError(
            f"{train_data.source or 'the training data'}: has no labels to train on; give a labelled file "
            "(.ts with '@classLabel true ...', .npz with 'y' or 'frame_labels') or labels to the Python API"
        )
    if classes is not None and train_data.classes != classes:
        raise DataError(f"the training data's classes {train_data.classes} differ from the run's {classes}")
    if cfg.data.task is not None and cfg.data.task != train_data.task:
        raise DataError(
            f"--task {cfg.data.task}, but {train_data.source or 'the training data'} is a {train_data.task} set"
        )
    if test_data is None and cfg.data.test is not None:
        test_data = read_any(cfg.data.test, cfg, train_data.classes, log)
        if (test_data.waves is None) != (train_data.waves is None):
            raise DataError(f"{cfg.data.test}: test data must be of the kind of the training data (audio or features)")
    if test_data is not None:
        if test_data.labels is None:
            raise DataError(
                f"{test_data.source or 'the test data'}: has no labels to score; use `rnnlm frames predict`"
            )
        check_compatible(test_data, train_data.task, train_data.num_features, train_data.classes)
    return train_data, test_data


def _reports(
    cfg: FramesRunConfig,
    final: torch.nn.Module,
    val: FrameDataset | None,
    val_logits: list[torch.Tensor],
    test_data: FrameDataset | None,
    run_dir: Path,
    device: torch.device,
    log: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Score the final model on the validation splits (each member's logits on its own) and the test data; log
    the reports and save them in the run directory."""
    reports = {}
    where = "" if cfg.fit.single else " (each member's early-stopping weights on its own split)"
    log(f"scores of the final model ({'best weights' if cfg.fit.single else MODEL}); validation{where}:")
    for name, data in (("val", val), ("test", test_data)):
        if data is None:
            continue
        logits = val_logits if name == "val" else frame_logits(final, data.sequences, cfg.eval.eval_batch_size, device)
        loss, report = score(logits, data)
        reports[name] = {"loss": loss, **report}
        log(format_report(reports[name], title=name))
        save_report(reports[name], run_dir / f"{name}_report", title=name)
    return reports


class _Phases:
    """The models of a frame run (a single one, or each member and its refit), each trained in its own directory
    (phase_dirs) one after another in this process: ``train_model`` trains one, or on a resume continues it, or
    skips it when it had finished (ensemble.py's rule), and returns its chosen weights."""

    def __init__(
        self,
        cfg: FramesRunConfig,
        info: dict[str, Any],
        train_data: FrameDataset,
        tested: int | str,
        run_dir: Path,
        resolved: runs.Resolved,
        resuming: bool,
        write_files: Callable[[], None],
        log: Callable[[str], None],
    ) -> None:
        self.cfg, self.info, self.train_data, self.run_dir = cfg, info, train_data, run_dir
        self.resolved, self.device = resolved, resolved.device
        self.tested, self.resuming, self.write_files, self.log = tested, resuming, write_files, log
        self.dirs = phase_dirs(cfg, run_dir)

    def finished(self, where: Path) -> bool:
        """Whether a member's phase in ``where`` ended before this resume (ensemble.is_finished): its finished.json,
        or, in a run made before that marker, the next phase began or the final model exists. A single model
        trains in the run directory and is never skipped: a resume with longer limits trains it on."""
        if where == self.run_dir:
            return False
        k = self.dirs.index(where)
        return members.is_finished(where, self.dirs[k + 1] if k + 1 < len(self.dirs) else self.run_dir / MODEL)

    def train_model(
        self, where: Path, tc: TrainConfig, fit_part: FrameDataset, val_part: FrameDataset | None, name: str
    ) -> tuple[torch.nn.Module, dict[str, str], str]:
        """Train the model of the phase in ``where`` (a member's through ensemble.train_member); returns (the best
        weights, or the last without validation data; their checkpoint metadata; why it stopped)."""
        cfg, device = self.cfg, self.device
        state = weights = None
        if self.resuming and self.finished(where):
            self.log(f"{name}: finished before, in {where}")
            return self.chosen(where) + ("finished before",)
        if self.resuming:
            weights, state = members.member_start(where, True)
        torch.manual_seed(tc.seed)
        if weights is not None:
            model = build_frame_model(cfg, self.info, weights)
        else:
            mean, std = feature_stats(fit_part.sequences)  # its training part only: no validation data leaks in
            model = FrameRNN(cfg.model, fit_part.num_features, len(fit_part.classes), fit_part.task, mean, std)
        model = model.to(device)
        augment = None
        if fit_part.waves is not None and cfg.audio.augments:
            from rnnlm.frames.audio import read_noise
            from rnnlm.frames.augment import AudioAugmenter

            augment = AudioAugmenter(cfg.audio, read_noise(cfg.audio.noise, cfg.audio.sample_rate))
        task = FrameTask(fit_part, val_part, tc, cfg.eval.eval_batch_size, device, cfg.model.label_smoothing, augment)
        m = cfg.model
        head = m.pooling + " pooling" if fit_part.task == "classify" else "per-frame softmax"
        data = self.train_data
        header = [
            f"data: {data.source or 'arrays'} | {data.task}, {len(data.classes)} classes, {data.num_features} "
            f"features | train {len(fit_part)} sequences, val {len(val_part) if val_part is not None else 'none'}, "
            f"test {self.tested}",
            f"{name}: {'bi' if m.bidirectional else 'uni'}directional {m.cell}, {m.layers} x {m.hidden}, proj "
            f"{m.proj}, {head}, engine {self.resolved.engine_text(m.engine)} | {count_parameters(model):,} parameters "
            f"| device {device} | run {where}",
        ]

        def train(extra: Sequence[Any] = ()) -> str:
            return train_model(model, task, tc, where, self.write_files, header, self.log, state, COMMAND, extra)[1]

        reason = train() if where == self.run_dir else members.train_member(name, where, self.run_dir, COMMAND, train)
        return self.chosen(where) + (reason,)

    def chosen(self, where: Path) -> tuple[torch.nn.Module, dict[str, str]]:
        weights, meta = ckpt.load_weights(ckpt.checkpoint_path(where, "best"))  # the last without validation
        return build_frame_model(self.cfg, self.info, weights).to(self.device), meta


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
