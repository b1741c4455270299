"""Typed configuration for every concern: data, model, training, generation.

Each field carries its help text in ``metadata["help"]``; the CLI builds its flags from these
fields so that a flag, its default and its help live in one place. The resolved configs are
written as JSON beside every checkpoint (``RUN/config.json``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from rnnlm.core.errors import ConfigError

FORMAT = "rnnlm-run"
VERSION = 2  # 1: rnnlm 0.1 (no version key; eval_batch_size in the train section)


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a default and its help text (lists get a factory)."""
    meta = {"help": help, **kw}
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    return field(default=default, metadata=meta)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _require(ok: bool, name: str, rule: str, value: Any) -> None:
    """Raise a ConfigError naming the flag, the rule and the value when ok is false."""
    if not ok:
        raise ConfigError(f"{_flag(name)} {rule}, got {value!r}")


def _check_choices(cfg: Any) -> None:
    for f in dataclasses.fields(cfg):
        choices = f.metadata.get("choices")
        value = getattr(cfg, f.name)
        if choices and value is not None and value not in choices:
            raise ConfigError(f"{_flag(f.name)} must be one of {', '.join(choices)}, got {value!r}")


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

    def check(self) -> None:
        """Raise ConfigError for a setting that cannot work, before anything is read or written."""
        _check_choices(self)
        _require(0.0 <= self.val_fraction < 1.0, "val_fraction", "must be in [0, 1)", self.val_fraction)
        _require(self.min_freq >= 1, "min_freq", "must be at least 1", self.min_freq)
        _require(self.max_size is None or self.max_size >= 2, "max_size", "must be at least 2", self.max_size)
        _require(self.max_chars is None or self.max_chars >= 2, "max_chars", "must be at least 2", self.max_chars)


@dataclass
class ModelConfig:
    """The recurrent language model: embedding (or one-hot) -> recurrent encoder -> linear head."""

    cell: str = _f("lstm", "Recurrent cell: rnn (tanh), gru or lstm.", choices=("rnn", "gru", "lstm"))
    impl: str = _f(
        "auto",
        "Engine that computes the recurrence: scratch (the cells written out in PyTorch ops), fused "
        "(torch's RNN/GRU/LSTM kernels, cuDNN on GPU), cpu (one autograd Function per layer, for CPUs), "
        "triton (one persistent GPU kernel per layer; needs triton), or auto (the fastest measured for the "
        "cell, input and device). "
        "Every engine reads the same weights, so a run may switch engines when resumed, evaluated or sampled.",
    )
    matmul_dtype: str = _f(
        "float32",
        "bfloat16 runs the matrix products of the cpu and triton engines and of the training loss in bfloat16 "
        "(float32 accumulation; weights, states and gates stay float32): about twice the speed on CPUs with "
        "AVX512-BF16 or AMX, at bfloat16 rounding. On a GPU the fused engine runs cuDNN under bfloat16 autocast; "
        "the scratch engine ignores it. auto: bfloat16 on a CPU with those instructions, else float32, decided "
        "when a run starts and written to its config.",
        choices=("float32", "bfloat16", "auto"),
    )
    layers: int = _f(2, "Number of stacked recurrent layers.")
    hidden: int = _f(256, "Hidden units per layer.")
    embed: int = _f(128, "Embedding size; 0 feeds one-hot vectors (the textbook RNN).")
    dropout: float = _f(
        0.0,
        "Dropout on the embedding, between layers and before the output layer, a fresh mask at every step; "
        "given alone, it replaces a preset's locked rates.",
    )
    dropout_in: float = _f(
        0.0,
        "Locked (variational) dropout on the input embeddings: one mask per sequence, the same at every time "
        "step (AWD-LSTM). Any locked rate replaces --dropout, which must then be 0.",
    )
    dropout_hidden: float = _f(0.0, "Locked dropout on each layer's outputs before the next layer reads them.")
    dropout_out: float = _f(0.0, "Locked dropout on the last layer's outputs, before the output layer.")
    embed_dropout: float = _f(0.0, "Embedding dropout: drop whole token types (rows of the embedding) per batch.")
    weight_drop: float = _f(
        0.0, "DropConnect on the hidden-to-hidden weights W_hh: one mask per batch, shared by all time steps."
    )
    tie_weights: bool = _f(
        False,
        "Share the input embedding with the output layer; when --embed differs from --hidden, a learned "
        "projection maps the last layer's outputs to --embed first.",
    )
    init: str = _f(
        "uniform",
        "Weight init: uniform(+-1/sqrt(hidden)) as torch.nn.RNN does, or normal(0, --init-std).",
        choices=("uniform", "normal"),
    )
    init_std: float = _f(0.01, "Standard deviation for --init normal (biases start at zero).")

    def check(self) -> None:
        """Raise ConfigError for a model that cannot be built, naming the flag."""
        from rnnlm.recurrent.engines import engine_names  # models import this module

        _check_choices(self)
        _require(self.impl in engine_names(), "impl", f"must be one of {', '.join(engine_names())}", self.impl)
        _require(self.layers >= 1, "layers", "must be at least 1", self.layers)
        _require(self.hidden >= 1, "hidden", "must be at least 1", self.hidden)
        _require(self.embed >= 0, "embed", "must be at least 0 (0 = one-hot)", self.embed)
        for name in ("dropout", "dropout_in", "dropout_hidden", "dropout_out", "embed_dropout", "weight_drop"):
            _require(0.0 <= getattr(self, name) < 1.0, name, "must be in [0, 1)", getattr(self, name))
        _require(self.init_std > 0, "init_std", "must be positive", self.init_std)
        if self.locked_dropout and self.dropout > 0:
            raise ConfigError(
                f"--dropout {self.dropout} draws a fresh mask at every step; the locked rates (--dropout-in, "
                "--dropout-hidden, --dropout-out) replace it, so set --dropout 0 or the locked rates to 0"
            )
        if self.embed == 0:
            for name in ("tie_weights", "embed_dropout", "dropout_in"):
                _require(not getattr(self, name), name, "needs an embedding (--embed > 0)", getattr(self, name))

    @property
    def locked_dropout(self) -> bool:
        """Whether the model's dropouts are the locked ones (any locked rate set) rather than --dropout."""
        return self.dropout_in > 0 or self.dropout_hidden > 0 or self.dropout_out > 0


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
    variable_len: bool = _f(
        False,
        "Variable-length truncated BPTT (AWD-LSTM, sequential sampling): each batch is --seq-len steps wide "
        "with probability 0.95, else half that, plus N(0, 5) noise (at least 5), with the state carried as before.",
    )
    ar: float = _f(0.0, "Activation regularization: add ar * mean(h^2) of the last layer's outputs to the loss.")
    tar: float = _f(
        0.0, "Temporal activation regularization: add tar * mean((h_t - h_{t-1})^2) of the last layer's outputs."
    )
    optimizer: str = _f("adamw", "Optimizer.", choices=("sgd", "adamw"))
    lr: float = _f(2e-3, "Peak learning rate.")
    weight_decay: float = _f(0.0, "Decoupled weight decay (AdamW) or L2 penalty (SGD).")
    momentum: float = _f(0.0, "SGD momentum.")
    adam_beta2: float = _f(0.999, "AdamW's decay rate of the squared-gradient average (its beta2; beta1 is 0.9).")
    clip: float = _f(1.0, "Clip gradients to this global L2 norm (0 = no clipping).")
    ema: float = _f(
        0.0,
        "Keep an exponential moving average of the weights with this decay (e.g. 0.999; 0 = off). Evaluation "
        "and the best checkpoint, so the final model, use the average; the last checkpoint keeps the trained "
        "weights and the average, for an exact resume.",
    )
    schedule: str = _f("constant", "Learning-rate schedule after warmup.", choices=("constant", "step", "cosine"))
    warmup_steps: int = _f(0, "Linear warmup from 0 to --lr over this many steps.")
    step_size: int = _f(1000, "For --schedule step: multiply the lr by --gamma every this many steps.")
    gamma: float = _f(0.5, "For --schedule step: the decay factor.")
    min_lr_ratio: float = _f(0.0, "For --schedule cosine: final lr as a fraction of --lr.")
    epochs: int | None = _f(
        10,
        "Stop after this many passes over the training text. When --time-budget or --max-steps is given "
        "and --epochs is not, there is no epoch limit. Whichever limit comes first stops the run, and the "
        "run's last line names it.",
    )
    max_steps: int | None = _f(None, "Stop after this many optimizer steps.")
    time_budget: float | None = _f(None, "Stop after this many seconds of training (evaluation included).")
    patience: int = _f(
        0, "Early stopping: stop when the validation loss has not improved for this many evaluations (0 = off)."
    )
    device: str = _f("auto", "auto (cuda when available), cpu, cuda or cuda:N.")
    threads: int = _f(
        0,
        "CPU threads per training step: 0 keeps torch's default; N uses N; -1 times one thread against the "
        "default every 200 steps and uses the faster (on a shared CPU one thread often wins), at the price of "
        "bit-exact reproducibility, since the thread count changes the order of float additions.",
    )
    cuda_graph: str = _f(
        "auto",
        "On a GPU, capture the whole training step (forward, backward, clipping, optimizer) in one CUDA graph "
        "and replay it, with no host sync per step: auto and on use it for language models (batches of one "
        "shape); off runs every step eagerly.",
        choices=("auto", "on", "off"),
    )
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

    def check(self) -> None:
        """Raise ConfigError for a setting that would fail later, before the run directory exists."""
        _check_choices(self)
        for name in ("batch_size", "seq_len", "step_size"):
            _require(getattr(self, name) >= 1, name, "must be at least 1", getattr(self, name))
        for name in ("weight_decay", "momentum", "clip", "warmup_steps", "log_every", "pred_period", "pred_len"):
            _require(getattr(self, name) >= 0, name, "must be at least 0", getattr(self, name))
        for name in ("pred_temperature", "save_every", "patience", "ar", "tar"):
            _require(getattr(self, name) >= 0, name, "must be at least 0", getattr(self, name))
        _require(0.0 <= self.adam_beta2 < 1.0, "adam_beta2", "must be in [0, 1)", self.adam_beta2)
        _require(0.0 <= self.ema < 1.0, "ema", "must be in [0, 1) (0 = no weight average)", self.ema)
        if self.variable_len and self.sampling != "sequential":
            raise ConfigError("--variable-len needs --sampling sequential (the state runs along the rows)")
        _require(self.threads >= -1, "threads", "must be -1 (timed), 0 (torch's default) or a count", self.threads)
        _require(self.lr > 0, "lr", "must be positive", self.lr)
        _require(self.gamma > 0, "gamma", "must be positive", self.gamma)
        _require(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", "must be in [0, 1]", self.min_lr_ratio)
        for name in ("epochs", "max_steps"):
            value = getattr(self, name)
            _require(value is None or value >= 1, name, "must be at least 1 (or none)", value)
        _require(
            self.time_budget is None or self.time_budget > 0,
            "time_budget",
            "must be positive (or none)",
            self.time_budget,
        )
        if self.schedule == "cosine" and self.epochs is None and self.max_steps is None and self.time_budget is None:
            raise ConfigError("--schedule cosine needs an end: set --epochs, --max-steps or --time-budget")
        try:
            device = torch_device(self.device)
        except RuntimeError as e:
            raise ConfigError(
                f"--device {self.device!r} is not a device ({e}); use auto, cpu, cuda or cuda:N"
            ) from None
        del device


def torch_device(name: str) -> Any:
    """torch.device(name), with auto allowed; imported lazily so the config module stays light."""
    import torch

    return torch.device("cpu" if name == "auto" else name)


@dataclass
class EvalConfig:
    """How held-out text is scored: the one home of these settings for training, `rnnlm eval` and the API."""

    eval_batch_size: int = _f(16, "Parallel streams when scoring held-out text (each carries its state).")
    eval_seq_len: int = _f(256, "Time steps per forward pass when scoring held-out text.")

    def check(self) -> None:
        _require(self.eval_batch_size >= 1, "eval_batch_size", "must be at least 1", self.eval_batch_size)
        _require(self.eval_seq_len >= 1, "eval_seq_len", "must be at least 1", self.eval_seq_len)


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

    def check(self) -> None:
        _require(self.length >= 0, "length", "must be at least 0", self.length)
        _require(self.temperature >= 0, "temperature", "must be at least 0 (0 = greedy)", self.temperature)
        _require(self.top_k >= 0, "top_k", "must be at least 0 (0 = all)", self.top_k)
        _require(0 < self.top_p <= 1, "top_p", "must be in (0, 1]", self.top_p)
        _require(self.beam >= 0, "beam", "must be at least 0", self.beam)
        _require(self.num_samples >= 1, "num_samples", "must be at least 1", self.num_samples)
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
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def check(self) -> None:
        """Every section's check: a bad setting fails here, before any file is read or written."""
        for section in SECTIONS:
            getattr(self, section).check()

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Inverse of to_dict; unknown keys are an error so that typos never pass silently.

        A version-1 config (rnnlm 0.1) is read too: its train.eval_batch_size moves to the eval section.
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
        unknown = sorted(set(d) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"a run config has only {'/'.join(SECTIONS)} sections; unknown keys {unknown}")
        return cls(**sections_from_dict(d, SECTIONS))


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}


# Presets: named recipes. Each maps a section to field overrides on the dataclass defaults; explicit flags
# win over them. A run given no preset and no --config starts from DEFAULT_PRESET.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The dataclass defaults alone: rnnlm's default before the char-cpu recipe (LSTM 2 x 256, no
    # regularization, constant lr 2e-3).
    "plain": {},
    # Quality per second on a small CPU (issue 10; bench/quality.py, bench/quality_notes.md): the shape and
    # the regularization were compared on the validation splits of tinyshakespeare, timemachine and the
    # Jay Chou lyrics at equal quiet-machine time on 2 cores (the notes give every run and what each showed).
    "char-cpu": {
        "model": {
            "cell": "lstm",
            "matmul_dtype": "auto",  # bfloat16 where the CPU multiplies it natively: 1.4x at this width
            "layers": 2,
            "hidden": 448,  # chosen over 384 and 512 on three corpora (bench/quality_notes.md, 2026-11-28)
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
            # as well in the end but is worse in mid-run (bench/quality_notes.md).
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
        raise ConfigError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    d = cfg.to_dict()
    for section, values in PRESETS[name].items():
        d[section].update(values)
    return RunConfig.from_dict(d)


def sections_from_dict(
    d: dict[str, Any],
    sections: dict[str, type],
    defaults: dict[str, Any] | None = None,
    hidden: dict[str, set[str]] | None = None,
) -> dict[str, Any]:
    """Each section of a run config's JSON as its dataclass; an unknown key is an error, so that typos
    never pass silently. ``defaults`` gives a section's base instance (else the class's defaults);
    ``hidden`` names fields that a kind of run neither writes nor reads. The caller has checked that
    ``d`` holds no other sections (its message names the kind of run)."""
    parts = {}
    for name, cls in sections.items():
        values = d.get(name, {})
        if not isinstance(values, dict):
            raise ConfigError(f"config section {name!r} must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)} - (hidden or {}).get(name, set())
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"config section {name!r} has unknown keys {unknown}")
        base = (defaults or {}).get(name) or cls()
        parts[name] = dataclasses.replace(base, **values)
    return parts


def field_owners(sections: dict[str, type] | None = None) -> dict[str, str]:
    """Each setting's name -> the section that owns it. A name in two sections is a bug in the
    configs, not a user error: a flat setting (hidden=512) must belong to exactly one section."""
    owner: dict[str, str] = {}
    for section, cls in (sections or SECTIONS).items():
        for f in dataclasses.fields(cls):
            if f.name in owner:
                raise TypeError(f"setting {f.name!r} is defined in both the {owner[f.name]} and {section} configs")
            owner[f.name] = section
    return owner


def split_overrides(flat: dict[str, Any], sections: dict[str, type] | None = None) -> dict[str, dict[str, Any]]:
    """Sort flat keyword settings (hidden=512, lr=0.01) into their config sections (default: a language
    model run's).

    An unknown name raises TypeError with the closest known names.
    """
    owner = field_owners(sections)
    out: dict[str, dict[str, Any]] = {section: {} for section in sections or SECTIONS}
    for name, value in flat.items():
        if name not in owner:
            import difflib

            close = difflib.get_close_matches(name, owner, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise TypeError(f"unknown setting {name!r}{hint}")
        out[owner[name]][name] = value
    return out


DEFAULT_PRESET = "char-cpu"

# An explicit setting that cannot coexist with a preset's value of another field makes that value yield,
# unless that field is given too: (section, field, does the given value conflict?) -> fields reset to off.
_YIELDS: list[tuple[str, str, Any, dict[str, Any]]] = [
    ("model", "dropout", lambda v: v > 0, {"dropout_in": 0.0, "dropout_hidden": 0.0, "dropout_out": 0.0}),
    ("model", "embed", lambda v: v == 0, {"dropout_in": 0.0, "embed_dropout": 0.0, "tie_weights": False}),
    ("train", "sampling", lambda v: v == "random", {"variable_len": False}),
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
    train = overrides.get("train", {})
    if "epochs" not in train and (train.get("time_budget") is not None or train.get("max_steps") is not None):
        d["train"]["epochs"] = None
    return RunConfig.from_dict(d)
