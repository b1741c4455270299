"""Typed configuration for every concern: data, model, training, generation.

Each field carries its help text in ``metadata["help"]``; the CLI builds its flags from these
fields so that a flag, its default and its help live in one place. The resolved configs are
written as JSON beside every checkpoint (``RUN/config.json``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from rnnlm.core.errors import ConfigError
from rnnlm.core.fields import check_choices, renamed_keys, require, sections_from_dict, setting, split_overrides
from rnnlm.training.config import EvalConfig, TrainConfig, budget_governs_alone

FORMAT = "rnnlm-run"
# Named model sizes: hidden units per layer (--size; lm/sizing.py chooses one for --size auto). XL is the width
# char-cpu was tuned at (bench/notes/lm_quality.md); auto without a time budget takes it.
SIZES: dict[str, int] = {"XS": 192, "S": 256, "M": 320, "L": 384, "XL": 448, "XXL": 640}
AUTO_SIZE, REFERENCE_SIZE = "auto", "XL"
# What --size auto sets beside the width when it chooses a small size for a run that sees the text only a few
# times: no dropout. At 300 s on tinyshakespeare (6 epochs) S (256 units) reached 1.4394 without it and 1.4610 with
# char-cpu's light set; on timemachine, a small text read 30 times and more in the same budget, the light set was
# needed (bench/notes/lm_quality.md, "Sizing").
NO_DROPOUT: dict[str, Any] = {"dropout_in": 0.0, "dropout_hidden": 0.0, "dropout_out": 0.0, "weight_drop": 0.0}
SMALL_SIZES, FEW_EPOCHS = ("XS", "S"), 10.0
VERSION = 3  # 1: rnnlm 0.1 (no version key; eval_batch_size in the train section); 1 and 2: model.impl


@dataclass
class DataConfig:
    """Where the text comes from and how it becomes token ids."""

    paths: list[str] = setting([], "Training text: files, directories (every *.txt inside) or globs.", positional=True)
    corpus: str | None = setting(
        None, "Named corpus (see `rnnlm info --corpora`); python-docs when no paths are given."
    )
    level: str | None = setting(
        None,
        "Token level: char (every Unicode character), word (whitespace tokens, <eos> at "
        "each line end) or byte (the 256 byte values of text in any encoding; bits per byte as enwik8 reports "
        "them); default: the named corpus's own level, else char.",
        choices=("char", "word", "byte"),
    )
    val_paths: list[str] = setting(
        [], "Validation text files; when absent the tail --val-fraction of the text is used."
    )
    test_paths: list[str] = setting([], "Test text files (reported by `rnnlm eval`, never used for training).")
    val_fraction: float = setting(0.1, "Fraction of the text held out as the contiguous validation tail (0 = none).")
    min_freq: int = setting(1, "Tokens seen fewer times than this in training become <unk>.")
    max_size: int | None = setting(None, "Keep at most this many of the most frequent tokens; the rest become <unk>.")
    max_chars: int | None = setting(None, "Use only the first N characters of the text (the d2l recipe uses 10,000).")
    newlines: str = setting(
        "keep", "Keep newlines, or turn \\n and \\r into spaces as the d2l recipe does.", choices=("keep", "space")
    )

    def check(self) -> None:
        """Raise ConfigError for a setting that cannot work, before anything is read or written."""
        check_choices(self)
        require(0.0 <= self.val_fraction < 1.0, "val_fraction", "must be in [0, 1)", self.val_fraction)
        require(self.min_freq >= 1, "min_freq", "must be at least 1", self.min_freq)
        require(self.max_size is None or self.max_size >= 2, "max_size", "must be at least 2", self.max_size)
        require(self.max_chars is None or self.max_chars >= 2, "max_chars", "must be at least 2", self.max_chars)


@dataclass
class ModelConfig:
    """The recurrent language model: embedding (or one-hot) -> recurrent encoder -> linear head."""

    cell: str = setting("lstm", "Recurrent cell: rnn (tanh), gru or lstm.", choices=("rnn", "gru", "lstm"))
    engine: str = setting(
        "auto",
        "Engine that computes the recurrence: scratch (the cells written out in PyTorch ops), fused "
        "(torch's RNN/GRU/LSTM kernels, cuDNN on GPU), cpu (one autograd Function per layer, for CPUs), "
        "triton (one persistent GPU kernel per layer; needs triton), or auto (the fastest measured for the "
        "cell, input and device). "
        "Every engine reads the same weights, so a run may switch engines when resumed, evaluated or sampled.",
        old_names=("impl",),
    )
    matmul_dtype: str = setting(
        "float32",
        "bfloat16 runs the matrix products of the cpu and triton engines and of the training loss in bfloat16 "
        "(float32 accumulation; weights, states and gates stay float32): about twice the speed on CPUs with "
        "AVX512-BF16 or AMX, at bfloat16 rounding. On a GPU the fused engine runs cuDNN under bfloat16 autocast; "
        "the scratch engine ignores it. auto: bfloat16 on a CPU with those instructions, else float32, decided "
        "when a run starts and written to its config.",
        choices=("float32", "bfloat16", "auto"),
    )
    layers: int = setting(2, "Number of stacked recurrent layers.")
    hidden: int = setting(256, "Hidden units per layer.")
    size: str | None = setting(
        None,
        "A named width instead of --hidden: XS 192, S 256, M 320, L 384, XL 448, XXL 640 hidden units. auto times "
        "the training step at each size in the run's first seconds and takes the widest that the "
        "--time-budget can train for 2,500 steps (XL without a budget), without dropout for XS or S when the "
        "budget reads the text at most 10 times; config.json then holds what was chosen, so --config repeats it.",
        choices=(AUTO_SIZE, *SIZES),
    )
    embed: int = setting(128, "Embedding size; 0 feeds one-hot vectors (the textbook RNN).")
    dropout: float = setting(
        0.0,
        "Dropout on the embedding, between layers and before the output layer, a fresh mask at every step; "
        "given alone, it replaces a preset's locked rates.",
    )
    dropout_in: float = setting(
        0.0,
        "Locked (variational) dropout on the input embeddings: one mask per sequence, the same at every time "
        "step (AWD-LSTM). Any locked rate replaces --dropout, which must then be 0.",
    )
    dropout_hidden: float = setting(0.0, "Locked dropout on each layer's outputs before the next layer reads them.")
    dropout_out: float = setting(0.0, "Locked dropout on the last layer's outputs, before the output layer.")
    embed_dropout: float = setting(0.0, "Embedding dropout: drop whole token types (rows of the embedding) per batch.")
    weight_drop: float = setting(
        0.0, "DropConnect on the hidden-to-hidden weights W_hh: one mask per batch, shared by all time steps."
    )
    tie_weights: bool = setting(
        False,
        "Share the input embedding with the output layer; when --embed differs from --hidden, a learned "
        "projection maps the last layer's outputs to --embed first.",
    )
    init: str = setting(
        "uniform",
        "Weight init: uniform(+-1/sqrt(hidden)) as torch.nn.RNN does, or normal(0, --init-std).",
        choices=("uniform", "normal"),
    )
    init_std: float = setting(0.01, "Standard deviation for --init normal (biases start at zero).")

    def check(self) -> None:
        """Raise ConfigError for a model that cannot be built, naming the flag."""
        from rnnlm.recurrent.engines import engine_names  # models import this module

        check_choices(self)
        require(self.engine in engine_names(), "engine", f"must be one of {', '.join(engine_names())}", self.engine)
        require(self.layers >= 1, "layers", "must be at least 1", self.layers)
        require(self.hidden >= 1, "hidden", "must be at least 1", self.hidden)
        if self.size in SIZES and self.hidden != SIZES[self.size]:
            raise ConfigError(
                f"--size {self.size} means --hidden {SIZES[self.size]}, got --hidden {self.hidden}; give one of the two"
            )
        require(self.embed >= 0, "embed", "must be at least 0 (0 = one-hot)", self.embed)
        for name in ("dropout", "dropout_in", "dropout_hidden", "dropout_out", "embed_dropout", "weight_drop"):
            require(0.0 <= getattr(self, name) < 1.0, name, "must be in [0, 1)", getattr(self, name))
        require(self.init_std > 0, "init_std", "must be positive", self.init_std)
        if self.locked_dropout and self.dropout > 0:
            raise ConfigError(
                f"--dropout {self.dropout} draws a fresh mask at every step; the locked rates (--dropout-in, "
                "--dropout-hidden, --dropout-out) replace it, so set --dropout 0 or the locked rates to 0"
            )
        if self.embed == 0:
            for name in ("tie_weights", "embed_dropout", "dropout_in"):
                require(not getattr(self, name), name, "needs an embedding (--embed > 0)", getattr(self, name))

    @property
    def locked_dropout(self) -> bool:
        """Whether the model's dropouts are the locked ones (any locked rate set) rather than --dropout."""
        return self.dropout_in > 0 or self.dropout_hidden > 0 or self.dropout_out > 0


@dataclass
class LMTrainConfig(TrainConfig):
    """TrainConfig with what only a language model reads: how the text is cut into windows, the activation
    penalties on its outputs, and the text samples printed while it trains."""

    seq_len: int = setting(64, "Time steps per sequence (truncated backpropagation length).")
    sampling: str = setting(
        "sequential",
        "random: windows in random order, state reset per batch; sequential: "
        "contiguous streams, state carried (detached) across batches.",
        choices=("random", "sequential"),
    )
    random_offset: bool = setting(True, "Start each epoch's windows at a random offset in [0, seq_len) for variety.")
    variable_len: bool = setting(
        False,
        "Variable-length truncated BPTT (AWD-LSTM, sequential sampling): each batch is --seq-len steps wide "
        "with probability 0.95, else half that, plus N(0, 5) noise (at least 5), with the state carried as before.",
    )
    ar: float = setting(0.0, "Activation regularization: add ar * mean(h^2) of the last layer's outputs to the loss.")
    tar: float = setting(
        0.0, "Temporal activation regularization: add tar * mean((h_t - h_{t-1})^2) of the last layer's outputs."
    )
    pred_period: int = setting(1, "Print samples every N epochs (0 = never).")
    pred_len: int = setting(100, "Tokens generated per sample during training.")
    prefixes: list[str] = setting([], "Prefixes for the periodic samples (default: the start of the text).")
    pred_temperature: float = setting(0.0, "Temperature of the periodic samples (0 = greedy, the d2l way).")

    def check(self) -> None:
        super().check()
        require(self.seq_len >= 1, "seq_len", "must be at least 1", self.seq_len)
        for name in ("pred_period", "pred_len", "pred_temperature", "ar", "tar"):
            require(getattr(self, name) >= 0, name, "must be at least 0", getattr(self, name))
        if self.variable_len and self.sampling != "sequential":
            raise ConfigError("--variable-len needs --sampling sequential (the state runs along the rows)")


@dataclass
class LMEvalConfig(EvalConfig):
    """How held-out text is scored: the one home of these settings for training, `rnnlm eval` and the API."""

    eval_batch_size: int = setting(16, "Parallel streams when scoring held-out text (each carries its state).")
    eval_seq_len: int = setting(256, "Time steps per forward pass when scoring held-out text.")
    eval_protocol: str = setting(
        "carried",
        "carried = the text read in order with the state carried, so each token sees all the text before it; "
        "windows = consecutive windows of --eval-block tokens, each from a zero state, every target counted "
        "(nanoGPT's protocol, to compare with models that see a fixed context).",
        choices=("carried", "windows"),
    )
    eval_block: int = setting(64, "Tokens per window under --eval-protocol windows (64: nanoGPT's CPU config).")

    def check(self) -> None:
        super().check()
        check_choices(self)
        require(self.eval_seq_len >= 1, "eval_seq_len", "must be at least 1", self.eval_seq_len)
        # A window of one token predicts from that token alone: no sequence is read, nothing worth comparing.
        require(self.eval_block >= 2, "eval_block", "must be at least 2", self.eval_block)


@dataclass
class GenerateConfig:
    """How text is produced from a trained model."""

    prefix: str = setting("", "Text that warms up the state; generation continues from it.")
    length: int = setting(200, "Tokens to generate after the prefix.")
    temperature: float = setting(
        1.0,
        "Divide logits by this before sampling: below 1 is more conservative, above 1 more "
        "random; 0 means greedy (always the most likely token).",
    )
    top_k: int = setting(0, "Sample only among the k most likely tokens (0 = all).")
    top_p: float = setting(1.0, "Sample only among the most likely tokens whose probabilities add up to p (1 = all).")
    beam: int = setting(
        0,
        "Beam search with this many beams instead of sampling (0 = off); it is deterministic, so "
        "--temperature, --top-k, --top-p and --seed do not apply.",
    )
    num_samples: int = setting(1, "Independent samples, generated as one batch.")
    seed: int | None = setting(None, "Random seed for sampling (default: nondeterministic).")

    def check(self) -> None:
        require(self.length >= 0, "length", "must be at least 0", self.length)
        require(self.temperature >= 0, "temperature", "must be at least 0 (0 = greedy)", self.temperature)
        require(self.top_k >= 0, "top_k", "must be at least 0 (0 = all)", self.top_k)
        require(0 < self.top_p <= 1, "top_p", "must be in (0, 1]", self.top_p)
        require(self.beam >= 0, "beam", "must be at least 0", self.beam)
        require(self.num_samples >= 1, "num_samples", "must be at least 1", self.num_samples)
        if self.beam and self.num_samples > self.beam:
            raise ConfigError(
                f"--num-samples {self.num_samples} with --beam {self.beam}: beam search returns at most --beam "
                "beams; raise --beam or lower --num-samples"
            )


@dataclass
class RunConfig:
    """Everything that defines a training run; written to RUN/config.json."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: LMTrainConfig = field(default_factory=LMTrainConfig)
    eval: LMEvalConfig = field(default_factory=LMEvalConfig)

    def check(self) -> None:
        """Every section's check: a bad setting fails here, before any file is read or written."""
        for section in SECTIONS:
            getattr(self, section).check()

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Inverse of to_dict; unknown keys are an error so that typos never pass silently.

        A version-1 config (rnnlm 0.1) is read too: its train.eval_batch_size moves to the eval section; in
        versions 1 and 2 ``model.engine`` was ``model.impl``.
        """
        if not isinstance(d, dict):
            raise ConfigError(
                f"a run config is a JSON object with {'/'.join(SECTIONS)} sections, not {type(d).__name__}"
            )
        d = dict(d)
        fmt, version = d.pop("format", FORMAT), d.pop("version", 1)
        if fmt != FORMAT or not isinstance(version, int) or not 1 <= version <= VERSION:
            raise ConfigError(
                f"not an rnnlm run config this version can read (format {fmt!r}, version {version!r}; "
                f"this rnnlm reads {FORMAT!r} versions 1 to {VERSION}); upgrade rnnlm"
            )
        if version == 1 and isinstance(d.get("train"), dict) and "eval_batch_size" in d["train"]:
            d["train"] = dict(d["train"])
            d["eval"] = {"eval_batch_size": d["train"].pop("eval_batch_size"), **d.get("eval", {})}
        if version < 3:
            d = renamed_keys(d, SECTIONS)
        unknown = sorted(set(d) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"a run config has only {'/'.join(SECTIONS)} sections; unknown keys {unknown}")
        return cls(**sections_from_dict(d, SECTIONS))


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": LMTrainConfig, "eval": LMEvalConfig}


# Presets: named recipes. Each maps a section to field overrides on the dataclass defaults; explicit flags
# win over them. A run given no preset and no --config starts from DEFAULT_PRESET.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The dataclass defaults alone: rnnlm's default before the char-cpu recipe (LSTM 2 x 256, no
    # regularization, constant lr 2e-3).
    "plain": {},
    # Quality per second on a small CPU (issue 10; bench/quality.py, bench/notes/lm_quality.md): the shape and
    # the regularization were compared on the validation splits of tinyshakespeare, timemachine and the
    # Jay Chou lyrics at equal quiet-machine time on 2 cores (the notes give every run and what each showed).
    "char-cpu": {
        "model": {
            "cell": "lstm",
            "matmul_dtype": "auto",  # bfloat16 where the CPU multiplies it natively: 1.4x at this width
            "layers": 2,
            # The width for the machine and the budget (lm/sizing.py); 448 (XL) was chosen over 384 and 512 on three
            # corpora at 300 s on a Zen 5 with bfloat16 (bench/notes/lm_quality.md, 2026-11-28).
            "size": AUTO_SIZE,
            "hidden": SIZES[REFERENCE_SIZE],
            "embed": 128,
            "dropout": 0.0,
            "dropout_in": 0.1,
            "dropout_hidden": 0.1,
            "dropout_out": 0.1,
            "embed_dropout": 0.0,
            "weight_drop": 0.2,
            "tie_weights": False,
        },
        "train": {
            "batch_size": 32,
            "seq_len": 64,
            "sampling": "sequential",
            "variable_len": False,  # measured: no gain (timemachine 1.4284 without, 1.4297 with)
            "optimizer": "adamw",
            "lr": 3e-3,
            "weight_decay": 0.0,
            "schedule": "cosine",
            "warmup_steps": 100,
            # Cosine decay to a tenth of the peak, with the weights averaged (--ema): 1.4132 against 1.4143 /
            # 1.4196 on tinyshakespeare (300 s), 1.4049 against 1.4127 on timemachine (120 s), 1.537 against
            # 1.543 / 1.546 bits/char on the Python docs (180 s). Decay to zero without the average settles
            # as well in the end but is worse in mid-run (bench/notes/lm_quality.md).
            "min_lr_ratio": 0.1,
            "ema": 0.998,
            # AWD-LSTM's penalties at AWD-LSTM's weights: 0.015 nats/char better on tinyshakespeare (300 s) and
            # timemachine (120 s), 0.008 bits/char on the Python docs (180 s); twice as strong lost on the docs.
            "ar": 2.0,
            "tar": 1.0,
        },
    },
    # The same recipe shaped for one large GPU (cuDNN): wider and deeper, bigger batches, after the issue's
    # cuDNN reference (3 x 1024, AdamW). Not measured yet: no GPU run has been made with it.
    "char-gpu": {
        "model": {
            "cell": "lstm",
            "layers": 3,
            "hidden": 1024,
            "embed": 256,
            "dropout": 0.0,
            "dropout_in": 0.1,
            "dropout_hidden": 0.3,
            "dropout_out": 0.3,
            "weight_drop": 0.3,
        },
        "train": {
            "batch_size": 128,
            "seq_len": 128,
            "sampling": "sequential",
            "variable_len": True,
            "optimizer": "adamw",
            "lr": 2e-3,
            "schedule": "cosine",
            "warmup_steps": 200,
        },
    },
    # The char-RNN of the Chinese "Dive into Deep Learning" (PyTorch edition, chapter 6): Jay Chou
    # lyrics, first 10,000 characters, newlines as spaces, one-hot scratch RNN with 256 hidden units,
    # normal(0, 0.01) weights, SGD lr 100, clip 0.01, 250 epochs, greedy samples every 50 epochs.
    "d2l": {
        "data": {"corpus": "jaychou", "level": "char", "max_chars": 10_000, "newlines": "space", "val_fraction": 0.0},
        "model": {
            "cell": "rnn",
            "engine": "scratch",
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
        raise ConfigError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    d = cfg.to_dict()
    for section, values in PRESETS[name].items():
        d[section].update(values)
    return RunConfig.from_dict(d)


DEFAULT_PRESET = "char-cpu"

# An explicit setting that cannot coexist with a preset's value of another field makes that value yield,
# unless that field is given too: (section, field, does the given value conflict?) -> fields reset to off.
_YIELDS: list[tuple[str, str, Any, dict[str, Any]]] = [
    ("model", "dropout", lambda v: v > 0, {"dropout_in": 0.0, "dropout_hidden": 0.0, "dropout_out": 0.0}),
    ("model", "embed", lambda v: v == 0, {"dropout_in": 0.0, "embed_dropout": 0.0, "tie_weights": False}),
    ("train", "sampling", lambda v: v == "random", {"variable_len": False}),
    ("model", "hidden", lambda v: True, {"size": None}),  # an explicit width replaces a preset's --size auto
]


def build_config(
    overrides: dict[str, dict[str, Any]] | None = None, preset: str | None = None, base: RunConfig | None = None
) -> RunConfig:
    """Defaults (or base), then the preset, then explicit overrides: later wins.

    Without a preset or a base the DEFAULT_PRESET applies (``preset="plain"``: the dataclass defaults).
    A time budget or step limit given without --epochs governs alone: the default (or a preset's)
    epoch limit would otherwise cut it short.
    """
    cfg = base or RunConfig()
    overrides = overrides or {}
    if preset is None and base is None:
        preset = DEFAULT_PRESET
    if preset:
        cfg = apply_preset(cfg, preset)
        if overrides.get("data", {}).get("paths") and "corpus" not in overrides.get("data", {}):
            cfg.data.corpus = None  # a preset's corpus is only the default for when no text is given
    d = cfg.to_dict()
    for section, values in overrides.items():
        d[section].update(values)
    for section, name, conflicts, off in _YIELDS:
        given = overrides.get(section, {})
        if name in given and conflicts(given[name]):
            d[section].update({k: v for k, v in off.items() if k not in given})
    budget_governs_alone(overrides.get("train", {}), d["train"])
    cfg = RunConfig.from_dict(d)
    given = frozenset(overrides.get("model", {}))
    if cfg.model.size in SIZES and "size" in given:
        apply_size(cfg.model, cfg.model.size, given)  # auto is resolved when the run starts (lm/sizing.py)
    cfg.model.given = given  # what --size auto's choice must not change
    return cfg


def apply_size(
    model: ModelConfig, size: str, given: Collection[str] = (), settings: dict[str, Any] | None = None
) -> None:
    """Make ``model`` the named size: its width and ``settings`` (--size auto's NO_DROPOUT), except the fields in
    ``given`` (set explicitly)."""
    model.size = size
    for name, value in {"hidden": SIZES[size], **(settings or {})}.items():
        if name not in given:
            setattr(model, name, value)


def split_settings(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Sort flat keyword settings (hidden=512, lr=0.01) into a language-model run's sections; TypeError names an
    unknown one, with the closest known names."""
    return split_overrides(flat, SECTIONS)
