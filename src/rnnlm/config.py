"""Typed configuration for every concern: data, model, training, generation.

Each field carries its help text in ``metadata["help"]``; the CLI builds its flags from these
fields so that a flag, its default and its help live in one place. The resolved configs are
written as JSON beside every checkpoint (``RUN/config.json``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a default and its help text (lists get a factory)."""
    meta = {"help": help, **kw}
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    """Where the text comes from and how it becomes token ids."""

    paths: list[str] = _f([], "Training text: files, directories (every *.txt inside) or globs.", positional=True)
    corpus: str | None = _f(None, "Named corpus (see `rnnlm info --corpora`); python-docs when no paths are given.")
    level: str | None = _f(
        None,
        "Token level: char (every Unicode character) or word (whitespace tokens, <eos> at "
        "each line end); default: the named corpus's own level, else char.",
        choices=("char", "word"),
    )
    val_paths: list[str] = _f([], "Validation text files; when absent the tail --val-fraction of the text is used.")
    test_paths: list[str] = _f([], "Test text files (reported by `rnnlm eval`, never used for training).")
    val_fraction: float = _f(0.1, "Fraction of the text held out as the contiguous validation tail (0 = none).")
    min_freq: int = _f(1, "Tokens seen fewer times than this in training become <unk>.")
    max_size: int | None = _f(None, "Keep at most this many of the most frequent tokens; the rest become <unk>.")
    max_chars: int | None = _f(None, "Use only the first N characters of the text (the d2l recipe uses 10,000).")
    newlines: str = _f(
        "keep", "Keep newlines, or turn \\n and \\r into spaces as the d2l recipe does.", choices=("keep", "space")
    )


@dataclass
class ModelConfig:
    """The recurrent language model: embedding (or one-hot) -> recurrent layers -> linear head."""

    cell: str = _f("lstm", "Recurrent cell: rnn (tanh), gru or lstm.", choices=("rnn", "gru", "lstm"))
    impl: str = _f(
        "fused",
        "scratch: the cell written out in PyTorch ops; fused: torch.nn.RNN/GRU/LSTM (cuDNN on GPU).",
        choices=("scratch", "fused"),
    )
    layers: int = _f(2, "Number of stacked recurrent layers.")
    hidden: int = _f(256, "Hidden units per layer.")
    embed: int = _f(128, "Embedding size; 0 feeds one-hot vectors (the textbook RNN).")
    dropout: float = _f(0.0, "Dropout on the embedding, between layers and before the output layer.")
    tie_weights: bool = _f(False, "Share the input embedding with the output layer (needs --embed == --hidden).")
    init: str = _f(
        "uniform",
        "Weight init: uniform(+-1/sqrt(hidden)) as torch.nn.RNN does, or normal(0, --init-std).",
        choices=("uniform", "normal"),
    )
    init_std: float = _f(0.01, "Standard deviation for --init normal (biases start at zero).")


@dataclass
class TrainConfig:
    """How the model is optimised, for how long, and what gets logged and saved."""

    out: str | None = _f(None, "Run directory for metrics and checkpoints (default: runs/<date-time>).")
    seed: int = _f(0, "Random seed for weights, batch order and dropout.")
    batch_size: int = _f(32, "Sequences per minibatch.")
    seq_len: int = _f(64, "Time steps per sequence (truncated backpropagation length).")
    sampling: str = _f(
        "sequential",
        "random: windows in random order, state reset per batch; sequential: "
        "contiguous streams, state carried (detached) across batches.",
        choices=("random", "sequential"),
    )
    random_offset: bool = _f(True, "Start each epoch's windows at a random offset in [0, seq_len) for variety.")
    optimizer: str = _f("adamw", "Optimizer.", choices=("sgd", "adamw"))
    lr: float = _f(2e-3, "Peak learning rate.")
    weight_decay: float = _f(0.0, "Decoupled weight decay (AdamW) or L2 penalty (SGD).")
    momentum: float = _f(0.0, "SGD momentum.")
    clip: float = _f(1.0, "Clip gradients to this global L2 norm (0 = no clipping).")
    schedule: str = _f("constant", "Learning-rate schedule after warmup.", choices=("constant", "step", "cosine"))
    warmup_steps: int = _f(0, "Linear warmup from 0 to --lr over this many steps.")
    step_size: int = _f(1000, "For --schedule step: multiply the lr by --gamma every this many steps.")
    gamma: float = _f(0.5, "For --schedule step: the decay factor.")
    min_lr_ratio: float = _f(0.0, "For --schedule cosine: final lr as a fraction of --lr.")
    epochs: int | None = _f(10, "Stop after this many passes over the training text.")
    max_steps: int | None = _f(None, "Stop after this many optimizer steps (whichever limit comes first).")
    time_budget: float | None = _f(None, "Stop after this many seconds of training.")
    device: str = _f("auto", "auto (cuda when available), cpu, cuda or cuda:N.")
    eval_batch_size: int = _f(16, "Streams used to evaluate validation text.")
    log_every: int = _f(0, "Write a metrics line every N steps (0 = once per epoch).")
    pred_period: int = _f(1, "Print samples every N epochs (0 = never).")
    pred_len: int = _f(100, "Tokens generated per sample during training.")
    prefixes: list[str] = _f([], "Prefixes for the periodic samples (default: the start of the text).")
    pred_temperature: float = _f(0.0, "Temperature of the periodic samples (0 = greedy, the d2l way).")
    save_every: float = _f(
        60.0,
        "Write the last checkpoint at most every this many seconds (it is always written "
        "at the end, on Ctrl-C and when a limit stops the run).",
    )
    progress: bool = _f(True, "Show a progress bar when writing to a terminal.")


@dataclass
class GenerateConfig:
    """How text is produced from a trained model."""

    prefix: str = _f("", "Text that warms up the state; generation continues from it.")
    length: int = _f(200, "Tokens to generate after the prefix.")
    temperature: float = _f(
        1.0,
        "Divide logits by this before sampling: below 1 is more conservative, above 1 more "
        "random; 0 means greedy (always the most likely token).",
    )
    top_k: int = _f(0, "Sample only among the k most likely tokens (0 = all).")
    top_p: float = _f(1.0, "Sample only among the most likely tokens whose probabilities add up to p (1 = all).")
    beam: int = _f(
        0,
        "Beam search with this many beams instead of sampling (0 = off); it is deterministic, so "
        "--temperature, --top-k, --top-p and --seed do not apply.",
    )
    num_samples: int = _f(1, "Independent samples, generated as one batch.")
    seed: int | None = _f(None, "Random seed for sampling (default: nondeterministic).")


@dataclass
class RunConfig:
    """Everything that defines a training run; written to RUN/config.json."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Inverse of to_dict; unknown keys are an error so that typos never pass silently."""
        if not isinstance(d, dict):
            raise ValueError(f"a run config is a JSON object with data/model/train sections, not {type(d).__name__}")
        unknown = sorted(set(d) - {"data", "model", "train"})
        if unknown:
            raise ValueError(f"a run config has only data/model/train sections; unknown keys {unknown}")
        parts = {}
        for name, sub in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig)):
            if not isinstance(d.get(name, {}), dict):
                raise ValueError(f"config section {name!r} must be a JSON object")
            values = dict(d.get(name, {}))
            known = {f.name for f in dataclasses.fields(sub)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise ValueError(f"config section {name!r} has unknown keys {unknown}")
            parts[name] = sub(**values)
        return cls(**parts)


# Presets: named recipes. Each maps a section to field overrides; explicit flags win over them.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The char-RNN of the Chinese "Dive into Deep Learning" (PyTorch edition, chapter 6): Jay Chou
    # lyrics, first 10,000 characters, newlines as spaces, one-hot scratch RNN with 256 hidden units,
    # normal(0, 0.01) weights, SGD lr 100, clip 0.01, 250 epochs, greedy samples every 50 epochs.
    "d2l": {
        "data": {"corpus": "jaychou", "level": "char", "max_chars": 10_000, "newlines": "space", "val_fraction": 0.0},
        "model": {
            "cell": "rnn",
            "impl": "scratch",
            "layers": 1,
            "hidden": 256,
            "embed": 0,
            "dropout": 0.0,
            "tie_weights": False,
            "init": "normal",
            "init_std": 0.01,
        },
        "train": {
            "batch_size": 32,
            "seq_len": 35,
            "random_offset": False,
            "optimizer": "sgd",
            "lr": 100.0,
            "weight_decay": 0.0,
            "momentum": 0.0,
            "clip": 0.01,
            "schedule": "constant",
            "warmup_steps": 0,
            "epochs": 250,
            "pred_period": 50,
            "pred_len": 50,
            "prefixes": ["分开", "不分开"],
            "pred_temperature": 0.0,
        },
    },
}


def apply_preset(cfg: RunConfig, name: str) -> RunConfig:
    """Return a copy of cfg with the preset's values set."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    d = cfg.to_dict()
    for section, values in PRESETS[name].items():
        d[section].update(values)
    return RunConfig.from_dict(d)


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def split_overrides(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Sort flat keyword settings (hidden=512, lr=0.01) into their config sections.

    Field names are unique across sections, so each name belongs to exactly one; an unknown
    name raises TypeError with the closest known names.
    """
    owner = {f.name: section for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    out: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for name, value in flat.items():
        if name not in owner:
            import difflib

            close = difflib.get_close_matches(name, owner, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise TypeError(f"unknown setting {name!r}{hint}")
        out[owner[name]][name] = value
    return out


def build_config(
    overrides: dict[str, dict[str, Any]] | None = None, preset: str | None = None, base: RunConfig | None = None
) -> RunConfig:
    """Defaults (or base), then the preset, then explicit overrides: later wins."""
    cfg = base or RunConfig()
    overrides = overrides or {}
    if preset:
        cfg = apply_preset(cfg, preset)
        if overrides.get("data", {}).get("paths") and "corpus" not in overrides.get("data", {}):
            cfg.data.corpus = None  # a preset's corpus is only the default for when no text is given
    d = cfg.to_dict()
    for section, values in overrides.items():
        d[section].update(values)
    return RunConfig.from_dict(d)
