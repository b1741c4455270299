"""Typed configuration of a frame-sequence run: data, model, the shared TrainConfig with frame defaults, the
shared EvalConfig, and how the final model is fitted (ensemble, refit).

Written as ``RUN/config.json`` (format ``rnnlm-frames-run``). The CLI (frames/cli.py) builds its flags from
these fields. Version 1 configs (before the ``fit`` section and label smoothing) read as one model without a
refit or label smoothing, which is how they were trained; version 1 and 2 configs (before ``fcn``) read as
models without a convolutional branch; version 1 to 3 configs (before the ``eval`` section) have their
``eval_batch_size`` in the data section, and language-model settings in the train section that a frame run
never read (it refused any other value than the default), which are dropped; version 1 to 4 configs call
``model.engine`` ``model.impl``; version 1 to 5 configs (before audio input) read with the default ``audio``
section, which a run of feature files never reads.
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
# model.engine); 1 to 5: no audio section
VERSION = 6

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

    train_path: str | None = setting(
        None,
        "Training data: a folder of class folders of audio files, a CSV or JSONL manifest of audio files, or a "
        "feature file (.ts or .npz); None when the API was given arrays.",
    )
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


FEATURES = ("logmel", "mfcc")
NORMALIZATIONS = ("utterance", "global")


@dataclass
class FramesAudioConfig:
    """How audio files become frames (read only when the data are audio): the features, the rules for files
    that cannot be learnt from, and the training-time augmentation. Saved in the run, so that evaluation,
    prediction and streaming compute exactly the features the model was trained on."""

    sample_rate: int = setting(16000, "Every file is resampled to this rate (Hz) and mixed down to mono.")
    features: str = setting(
        "logmel", "logmel: log mel filterbank energies (dB); mfcc: their cepstral coefficients.", choices=FEATURES
    )
    n_mels: int = setting(40, "Mel bands.")
    n_mfcc: int = setting(13, "Cepstral coefficients kept with --features mfcc.")
    win_ms: float = setting(25.0, "Analysis window (ms); a periodic Hann window.")
    hop_ms: float = setting(20.0, "Step between frames (ms); frame t is centred at t * hop.")
    n_fft: int | None = setting(None, "FFT length (default: the next power of two at or above the window).")
    fmin: float = setting(0.0, "Lowest frequency of the mel filterbank (Hz).")
    fmax: float | None = setting(None, "Highest frequency of the mel filterbank (Hz; default: half the rate).")
    deltas: int = setting(2, "Orders of deltas appended to each frame: 0, 1 (slopes) or 2 (slopes and their slopes).")
    delta_width: int = setting(2, "Deltas are least-squares slopes over this many frames on each side.")
    normalize: str = setting(
        "utterance",
        "utterance: each feature of a file to zero mean and unit std over its frames, before the model's own "
        "standardization with the training set's statistics; global: that standardization alone.",
        choices=NORMALIZATIONS,
    )
    min_duration: float = setting(
        0.1, "Training and evaluation skip (and list) files shorter than this (s); prediction labels every file."
    )
    silence_db: float = setting(
        -60.0,
        "Training and evaluation skip (and list) files whose loudest sample is below this level (dB of full "
        "scale): silence-only recordings; prediction labels every file.",
    )
    gap_label: str = setting("_", "Per-frame labels: the label of frames that no interval covers.")
    cache: bool = setting(
        False,
        "Keep each file's features in the rnnlm cache ($RNNLM_CACHE/audio_features), keyed on the file's "
        "content and these settings, instead of computing them on every read.",
    )
    spec_time_masks: int = setting(2, "Training only (SpecAugment): spans of frames masked per utterance.")
    spec_time_width: int = setting(8, "Training only: the widest time mask (frames).")
    spec_freq_masks: int = setting(2, "Training only (SpecAugment): bands of features masked per utterance.")
    spec_freq_width: int = setting(6, "Training only: the widest frequency mask (mel bands or coefficients).")
    speed: float = setting(
        0.1, "Training only: play each utterance at a speed drawn from [1 - this, 1 + this] (0 = off)."
    )
    volume_db: float = setting(6.0, "Training only: scale each utterance by a gain drawn from +-this many dB.")
    noise_prob: float = setting(0.5, "Training only: the fraction of utterances mixed with noise (0 = off).")
    noise_snr_min: float = setting(5.0, "Training only: the lowest signal-to-noise ratio of the mixed noise (dB).")
    noise_snr_max: float = setting(30.0, "Training only: the highest signal-to-noise ratio of the mixed noise (dB).")
    noise: str = setting(
        "white", "What noise is mixed in: white (Gaussian), or a folder or file of noise recordings (looped)."
    )

    def check(self) -> None:
        check_choices(self)
        require(self.sample_rate >= 1000, "sample_rate", "must be at least 1000", self.sample_rate)
        for name in ("n_mels", "n_mfcc", "delta_width"):
            require(getattr(self, name) >= 1, name, "must be at least 1", getattr(self, name))
        require(self.win_ms > 0 and self.hop_ms > 0, "win_ms", "and --hop-ms must be > 0", (self.win_ms, self.hop_ms))
        win = round(self.win_ms * self.sample_rate / 1000)
        require(self.n_fft is None or self.n_fft >= win, "n_fft", f"must be at least the window ({win})", self.n_fft)
        require(
            self.features != "mfcc" or self.n_mfcc <= self.n_mels, "n_mfcc", "must be at most --n-mels", self.n_mfcc
        )
        top = self.sample_rate / 2 if self.fmax is None else self.fmax
        require(0 <= self.fmin < top <= self.sample_rate / 2, "fmin", "and --fmax must lie in [0, rate / 2]", top)
        require(self.deltas in (0, 1, 2), "deltas", "must be 0, 1 or 2", self.deltas)
        for name in ("spec_time_masks", "spec_time_width", "spec_freq_masks", "spec_freq_width"):
            require(getattr(self, name) >= 0, name, "must be at least 0", getattr(self, name))
        require(0 <= self.speed < 0.5, "speed", "must be in [0, 0.5)", self.speed)
        require(self.volume_db >= 0, "volume_db", "must be at least 0", self.volume_db)
        require(0 <= self.noise_prob <= 1, "noise_prob", "must be in [0, 1]", self.noise_prob)
        require(
            self.noise_snr_min <= self.noise_snr_max,
            "noise_snr_min",
            "must be at most --noise-snr-max",
            self.noise_snr_min,
        )

    @property
    def augments(self) -> bool:
        """Whether training changes the audio or its features (then they are computed afresh for every batch)."""
        masks = self.spec_time_masks * self.spec_time_width + self.spec_freq_masks * self.spec_freq_width
        return bool(masks or self.speed or self.volume_db or self.noise_prob)


# The recipe of a run whose data are audio (spoken words): what differs from the frame defaults, under any
# setting given explicitly; a classifier's convolutional branch is narrower. Measured in
# bench/notes/frames_audio.md.
AUDIO_RECIPE: dict[str, dict[str, Any]] = {
    "fit": {"ensemble": 1, "refit": False},
    "train": {"epochs": 25, "batch_size": 32},
}
AUDIO_FCN = 32


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
    audio: FramesAudioConfig = field(default_factory=FramesAudioConfig)

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
    "audio": FramesAudioConfig,
}


def build_frames_config(
    overrides: dict[str, dict[str, Any]] | None = None, base: FramesRunConfig | None = None
) -> FramesRunConfig:
    """Defaults (or base), then explicit overrides. A time budget or step limit given without an epoch
    limit governs alone, as for language models. Without a base, training data that are audio start from the
    defaults with AUDIO_RECIPE over them."""
    from rnnlm.frames.audio import is_audio_source, list_audio

    d = (base or FramesRunConfig()).to_dict()
    overrides = overrides or {}
    train_path = overrides.get("data", {}).get("train_path")
    if base is None and train_path is not None and is_audio_source(train_path):
        for section, values in AUDIO_RECIPE.items():
            d[section].update(values)
        if list_audio(train_path)[0].intervals is None:  # one label per file: a classifier
            d["model"]["fcn"] = AUDIO_FCN
    for section, values in overrides.items():
        d[section].update(values)
    budget_governs_alone(overrides.get("train", {}), d["train"])
    return FramesRunConfig.from_dict(d)


def split_frames_settings(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Flat keyword settings (hidden=32, lr=1e-3) sorted into the frame config's sections."""
    return split_overrides(flat, FRAMES_SECTIONS)
