"""Typed configuration of a frame-sequence run: data, model, the shared TrainConfig with frame defaults, the
shared EvalConfig, and how the final model is fitted (ensemble, refit).

Written as ``RUN/config.json`` (format ``rnnlm-frames-run``). The CLI (frames/cli.py) builds its flags from
these fields. Version 1 configs (before the ``fit`` section and label smoothing) read as one model without a
refit or label smoothing, which is how they were trained; version 1 and 2 configs (before ``fcn``) read as
models without a convolutional branch; version 1 to 3 configs (before the ``eval`` section) have their
``eval_batch_size`` in the data section, and language-model settings in the train section that a frame run
never read (it refused any other value than the default), which are dropped; version 1 to 4 configs call
``model.engine`` ``model.impl``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from rnnlm.core.errors import ConfigError
from rnnlm.core.fields import check_choices, renamed_keys, require, sections_from_dict, setting, split_overrides
from rnnlm.frames.data import TASKS
from rnnlm.frames.layers import POOLINGS
from rnnlm.training.config import EvalConfig, TrainConfig, budget_governs_alone

FORMAT = "rnnlm-frames-run"
# 1: no fit section (one model, no refit), no label smoothing; 2: no convolutional branch; 3: eval_batch_size in
# the data section, and the language model's training settings in the train section; 1 to 4: model.impl (now
# model.engine)
VERSION = 5

# Channels of the convolutional branch of a classifier when --fcn is not given (see FramesModelConfig.fcn).
FCN_CLASSIFY = 128

# What the train section of a version 1 to 3 config held for a language model only; read and dropped.
_LM_TRAIN_BEFORE_4 = (
    "seq_len",
    "sampling",
    "random_offset",
    "variable_len",
    "ar",
    "tar",
    "pred_period",
    "pred_len",
    "prefixes",
    "pred_temperature",
)


@dataclass
class FramesDataConfig:
    """Which frames are read, and how the validation split is drawn from the training file."""

    train_path: str | None = setting(None, "Training file (.ts or .npz); None when the API was given arrays.")
    test: str | None = setting(
        None, "Test file, scored once with the best checkpoint after training; never used to choose anything."
    )
    task: str | None = setting(
        None,
        "classify: one label per sequence; label: one label per frame (default: what the file holds; .ts "
        "files hold sequence labels).",
        choices=TASKS,
    )
    val_fraction: float = setting(
        0.2,
        "Fraction of each class of the training file held out (stratified, drawn with --seed) for early "
        "stopping and choosing the best checkpoint (0 = none: the last weights are kept).",
    )

    def check(self) -> None:
        check_choices(self)
        require(0.0 <= self.val_fraction < 1.0, "val_fraction", "must be in [0, 1)", self.val_fraction)


@dataclass
class FramesModelConfig:
    """Standardize and project each frame -> recurrent encoder -> sequence or per-frame softmax head."""

    cell: str = setting("gru", "Recurrent cell: rnn (tanh), gru or lstm.", choices=("rnn", "gru", "lstm"))
    engine: str = setting(
        "auto",
        "Engine that computes the recurrence: scratch, fused or auto (see `rnnlm train --help`).",
        old_names=("impl",),
    )
    layers: int = setting(1, "Number of stacked recurrent layers.")
    hidden: int = setting(64, "Hidden units per layer and direction.")
    proj: int = setting(64, "Size of the linear projection of each standardized frame (the encoder's input).")
    bidirectional: bool = setting(
        True, "Read each sequence in both directions (a per-frame label may then use the future)."
    )
    pooling: str = setting(
        "last",
        "How --task classify turns the encoder's outputs into one vector per sequence: last (the final step; "
        "for a bidirectional encoder the backward half is taken at the first step), mean, or attention.",
        choices=POOLINGS,
    )
    dropout: float = setting(0.4, "Dropout on the projected frames, between layers and before the head.")
    noise_std: float = setting(0.0, "Training only: Gaussian noise of this std added to the standardized frames.")
    time_mask: int = setting(0, "Training only: zero one random span of up to this many frames per sequence.")
    fcn: int | None = setting(
        None,
        "Channels of a fully convolutional branch beside the recurrent encoder, for --task classify: three "
        "convolutions over the standardized frames (kernels 7/5/3; fcn, 2*fcn and fcn channels), each with "
        "batch normalization over real frames and a ReLU, averaged over each sequence's frames and joined to the "
        f"pooled recurrent vector before the output layer. 0 = none (default: {FCN_CLASSIFY} for --task classify, "
        "none for --task label, which cannot have one).",
    )
    label_smoothing: float = setting(
        0.1,
        "Training only: the loss's target gives 1 - this to the gold class and spreads this evenly over all "
        "classes (0 = plain cross-entropy; validation and test losses are always plain).",
    )

    def check(self) -> None:
        from rnnlm.recurrent.engines import engine_names  # models import the config modules

        check_choices(self)
        require(self.engine in engine_names(), "engine", f"must be one of {', '.join(engine_names())}", self.engine)
        for name in ("layers", "hidden", "proj"):
            require(getattr(self, name) >= 1, name, "must be at least 1", getattr(self, name))
        require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)", self.dropout)
        require(self.noise_std >= 0, "noise_std", "must be at least 0", self.noise_std)
        require(self.time_mask >= 0, "time_mask", "must be at least 0", self.time_mask)
        require(self.fcn is None or self.fcn >= 0, "fcn", "must be at least 0", self.fcn)
        require(0.0 <= self.label_smoothing < 1.0, "label_smoothing", "must be in [0, 1)", self.label_smoothing)

    def fcn_channels(self, task: str) -> int:
        """The convolutional branch's channel count for this task (0 = no branch): ``fcn``, or its default."""
        if self.fcn is not None:
            return self.fcn
        return FCN_CLASSIFY if task == "classify" else 0


@dataclass
class FramesFitConfig:
    """How the final model is made from the recipe: several members, each refitted on all the training data."""

    ensemble: int = setting(
        3,
        "Members of the ensemble: models trained with different seeds (member 0 with --seed) and so different "
        "validation splits; their class probabilities are averaged. Training limits apply to each member.",
    )
    refit: bool = setting(
        True,
        "Once early stopping on the validation split has chosen a member's epoch count, train it again from "
        "scratch on all the training data (statistics included) for that many epochs. Needs a validation split; "
        "without one the members already see all the data.",
    )

    def check(self) -> None:
        require(self.ensemble >= 1, "ensemble", "must be at least 1", self.ensemble)

    @property
    def single(self) -> bool:
        """One model, trained once: the run directory is that model's own (no members/, no model.safetensors)."""
        return self.ensemble == 1 and not self.refit


# What an older run did where its config.json is silent, by version: the settings that came later.
LEGACY = {
    1: {"fit": {"ensemble": 1, "refit": False}, "model": {"label_smoothing": 0.0, "fcn": 0}},
    2: {"model": {"fcn": 0}},
}


@dataclass
class FramesTrainConfig(TrainConfig):
    """TrainConfig with the defaults of a frame run: many short epochs on a small data set, early stopping."""

    batch_size: int = setting(16, "Sequences per minibatch.")
    lr: float = setting(3e-3, "Peak learning rate.")
    weight_decay: float = setting(0.01, "Decoupled weight decay (AdamW) or L2 penalty (SGD).")
    epochs: int | None = setting(
        60,
        "Stop after this many passes over the training sequences. When --time-budget or --max-steps is given "
        "and --epochs is not, there is no epoch limit. Whichever limit comes first stops the run, and the "
        "run's last line names it.",
    )
    patience: int = setting(
        20, "Early stopping: stop when the validation loss has not improved for this many evaluations (0 = off)."
    )

    def check(self) -> None:
        super().check()
        if self.cuda_graph == "on":  # auto and off both mean eager steps here, which is what runs
            raise ConfigError(
                "--cuda-graph on: a frame run's batches differ in shape (sequence lengths), so its training step "
                "cannot be captured in one CUDA graph; leave --cuda-graph at auto or off (each step runs eagerly)"
            )


@dataclass
class FramesRunConfig:
    """Everything that defines a frame run; written to RUN/config.json."""

    data: FramesDataConfig = field(default_factory=FramesDataConfig)
    model: FramesModelConfig = field(default_factory=FramesModelConfig)
    train: FramesTrainConfig = field(default_factory=FramesTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    fit: FramesFitConfig = field(default_factory=FramesFitConfig)

    def check(self) -> None:
        """Every section's check: a bad setting fails before any file is touched."""
        for section in FRAMES_SECTIONS:
            getattr(self, section).check()

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FramesRunConfig:
        """Inverse of to_dict; unknown keys are an error so that typos never pass silently."""
        if not isinstance(d, dict):
            raise ConfigError(f"a frames run config is a JSON object, not {type(d).__name__}")
        d = dict(d)
        fmt, version = d.pop("format", None), d.pop("version", None)
        if fmt != FORMAT or type(version) is not int or not 1 <= version <= VERSION:
            raise ConfigError(
                f"not a frames run config this version can read (format {fmt!r}, version {version!r}; "
                f"this rnnlm reads {FORMAT!r} versions 1 to {VERSION})"
            )
        for name, values in LEGACY.get(version, {}).items():
            d[name] = {**values, **d.get(name, {})}
        if version < 4:
            d.update(_before_4(d))
        if version < 5:
            d = renamed_keys(d, FRAMES_SECTIONS)
        unknown = sorted(set(d) - set(FRAMES_SECTIONS))
        if unknown:
            raise ConfigError(f"a frames run config has only {'/'.join(FRAMES_SECTIONS)} sections; unknown {unknown}")
        return cls(**sections_from_dict(d, FRAMES_SECTIONS))


def _before_4(d: dict[str, Any]) -> dict[str, Any]:
    """The sections of a version 1 to 3 config that changed: the language model's training settings dropped
    from train, and data's eval_batch_size moved to the eval section."""
    train, data = d.get("train", {}), d.get("data", {})
    if not isinstance(train, dict) or not isinstance(data, dict):
        return {}  # sections_from_dict names the section that is not an object
    out = {"train": {k: v for k, v in train.items() if k not in _LM_TRAIN_BEFORE_4}}
    if "eval_batch_size" in data:
        out["data"] = {k: v for k, v in data.items() if k != "eval_batch_size"}
        out["eval"] = {"eval_batch_size": data["eval_batch_size"], **d.get("eval", {})}
    return out


FRAMES_SECTIONS: dict[str, type] = {
    "data": FramesDataConfig,
    "model": FramesModelConfig,
    "train": FramesTrainConfig,
    "eval": EvalConfig,
    "fit": FramesFitConfig,
}


def build_frames_config(
    overrides: dict[str, dict[str, Any]] | None = None, base: FramesRunConfig | None = None
) -> FramesRunConfig:
    """Defaults (or base), then explicit overrides. A time budget or step limit given without an epoch
    limit governs alone, as for language models."""
    d = (base or FramesRunConfig()).to_dict()
    overrides = overrides or {}
    for section, values in overrides.items():
        d[section].update(values)
    budget_governs_alone(overrides.get("train", {}), d["train"])
    return FramesRunConfig.from_dict(d)


def split_frames_settings(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Flat keyword settings (hidden=32, lr=1e-3) sorted into the frame config's sections."""
    return split_overrides(flat, FRAMES_SECTIONS)
