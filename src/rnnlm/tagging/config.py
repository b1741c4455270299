"""Typed configuration of a tagger run (``rnnlm tag train``): data, model, training and evaluation sections.

Same rules as the language model's config: every field is typed, defaulted and documented, the CLI builds its
flags from the fields, and the resolved config is written to ``RUN/config.json`` (format ``rnnlm-tag-run``).
Training and scoring use the shared TrainConfig (with tagging defaults and the tagger's own fields) and EvalConfig.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

from rnnlm.core.errors import ConfigError
from rnnlm.core.fields import check_choices, flag_name, old_names, renamed_keys, require, sections_from_dict, setting
from rnnlm.training.config import EvalConfig, TrainConfig, budget_governs_alone

FORMAT = "rnnlm-tag-run"
VERSION = 3  # 1: eval_batch_size in the data section (now the eval section); 1 and 2: model.impl
FORMATS = ("conll2003", "conllu")
COLUMNS = {"conll2003": ("ner", "chunk", "pos"), "conllu": ("upos", "xpos")}
CHUNK_COLUMNS = ("ner", "chunk")  # columns of chunk tags (B-/I-/...), scored by entity F1
TAG_SCHEMES = ("auto", "none", "IOB1", "IOB2", "BIOES")
# The engines that run a tagger's padded batches; cpu and triton run whole unpadded sequences only.
TAGGER_ENGINES = ("auto", "scratch", "fused")


@dataclass
class TagDataConfig:
    """Which file, format and column to learn, and how words become ids."""

    train: str = setting("", "Training file (CoNLL-2003 columns or CoNLL-U).")
    dev: str | None = setting(None, "Development file: early stopping and the best checkpoint are chosen on it.")
    format: str = setting(
        "auto", "File format; auto: conllu for *.conllu files, else conll2003.", choices=("auto", *FORMATS)
    )
    column: str | None = setting(
        None, "Tag column to learn: ner, chunk, pos (conll2003) or upos, xpos (conllu); default ner / upos."
    )
    scheme: str = setting(
        "auto",
        "Chunk scheme the column is written in; auto detects it for ner/chunk and uses none (plain tags) "
        "for part-of-speech columns.",
        choices=TAG_SCHEMES,
    )
    model_scheme: str = setting(
        "BIOES",
        "Chunk scheme the model learns (predictions are written back in the file's scheme); ignored for plain tags.",
        choices=("BIOES", "IOB2"),
    )
    aux_column: str | None = setting(
        None,
        "A second tag column of the same file learned beside --column by a softmax head of its own on the same "
        "encoder (multi-task), e.g. xpos beside upos; only training reads it, and tagging gives --column alone.",
    )
    lowercase: bool = setting(True, "Lowercase words before the word lookup (the characters keep the case).")
    zero_digits: bool = setting(True, "Map every digit to 0 before the word lookup, so numbers share embeddings.")
    min_freq: int = setting(1, "Training words seen fewer times than this become <unk>.")
    max_word_chars: int = setting(20, "Characters of each word the character encoder reads (longer words are cut).")

    def check(self) -> None:
        check_choices(self)
        require(bool(self.train), "train", "must name a training file", self.train)
        if self.format != "auto" and self.column is not None and self.column not in COLUMNS[self.format]:
            raise ConfigError(
                f"--column {self.column!r} is not a {self.format} column; choose {', '.join(COLUMNS[self.format])}"
            )
        if self.aux_column is not None:
            if self.format != "auto" and self.aux_column not in COLUMNS[self.format]:
                raise ConfigError(
                    f"--aux-column {self.aux_column!r} is not a {self.format} column; "
                    f"choose {', '.join(COLUMNS[self.format])}"
                )
            require(self.aux_column != self.column, "aux_column", "must differ from --column", self.aux_column)
        require(self.min_freq >= 1, "min_freq", "must be at least 1", self.min_freq)
        require(self.max_word_chars >= 1, "max_word_chars", "must be at least 1", self.max_word_chars)


@dataclass
class TaggerConfig:
    """Word embedding + character CNN -> bidirectional recurrent encoder -> softmax or CRF head."""

    cell: str = setting("lstm", "Recurrent cell of the encoder.", choices=("rnn", "gru", "lstm"))
    engine: str = setting(
        "auto",
        "Engine of the recurrence (scratch, fused, auto); any engine reads any run's weights.",
        old_names=("impl",),
    )
    layers: int = setting(1, "Stacked bidirectional layers.")
    hidden: int = setting(200, "Hidden units per direction.")
    word_dim: int = setting(100, "Word embedding size.")
    char_dim: int = setting(30, "Character embedding size (0 = no character encoder).")
    char_filters: int = setting(100, "Filters of the character CNN: the size of each word's spelling vector.")
    char_kernel: int = setting(3, "Width of the character CNN's filters (odd).")
    char_dropout: float = setting(0.0, "Dropout on the character embeddings inside the character CNN.")
    dropout: float = setting(0.5, "Dropout on the word features, between layers and before the head.")
    word_dropout: float = setting(0.05, "In training, replace each word by <unk> with this probability.")
    head: str = setting(
        "crf", "Output layer: crf (Viterbi decoding) or softmax (each tag on its own).", choices=("crf", "softmax")
    )
    char_lm: str | None = setting(
        None,
        "Folder with forward/ and backward/ character-LM runs (rnnlm tag lm): their states at each word "
        "join the word features (contextual string embeddings). The run keeps its own copy in RUN/char_lm.",
    )
    char_lm_context: str = setting(
        "sentence",
        "What the character LMs read around each sentence: the sentence alone, or the document, i.e. the "
        "sentences before and after it in the same document of the file (CoNLL-2003 -DOCSTART-, CoNLL-U # newdoc; "
        "for raw text, the lines up to a blank line), in pieces of up to 2,000 characters.",
        choices=("sentence", "document"),
    )
    char_lm_layers: str = setting(
        "top",
        "Which layers' outputs of each character LM join the word features: the top layer's, or all layers' side "
        "by side (as wide as the layers together).",
        choices=("top", "all"),
    )
    char_lm_pool: str = setting(
        "none",
        "document: each word's character-LM features are followed by their mean over every occurrence of the "
        "same word in its document (pooled contextual embeddings), doubling their width; a short later mention "
        "then also carries what the document said around its other mentions.",
        choices=("none", "document"),
    )
    word_vectors: str | None = setting(
        None,
        "Pretrained word vectors, word2vec or GloVe text format (.gz too), as many dimensions as --word-dim: "
        "their words join the vocabulary and their vectors start the word embeddings (bench/tagging_vectors.py "
        "trains some on local text). Only a new run reads the file; the checkpoint keeps the embeddings.",
    )
    vector_words: int | None = setting(
        None, "At most this many of the --word-vectors file's first words join the vocabulary (none: all of them)."
    )
    matmul_dtype: str = setting(
        "auto",
        "Precision of the encoder's matmuls: bfloat16 (float32 weights, state and outputs), float32, or auto: "
        "bfloat16 on a CPU that multiplies it natively (AVX512-BF16, AMX), float32 elsewhere. Either reads any "
        "run's weights.",
        choices=("auto", "float32", "bfloat16"),
    )

    def check(self) -> None:
        from rnnlm.recurrent.engines import engine_names  # models import the config modules

        check_choices(self)
        require(self.engine in engine_names(), "engine", f"must be one of {', '.join(engine_names())}", self.engine)
        for name in ("layers", "hidden", "word_dim"):
            require(getattr(self, name) >= 1, name, "must be at least 1", getattr(self, name))
        require(self.char_dim >= 0, "char_dim", "must be at least 0 (0 = no character encoder)", self.char_dim)
        require(self.char_filters >= 1, "char_filters", "must be at least 1", self.char_filters)
        require(self.char_kernel >= 1 and self.char_kernel % 2 == 1, "char_kernel", "must be odd", self.char_kernel)
        require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)", self.dropout)
        require(0.0 <= self.char_dropout < 1.0, "char_dropout", "must be in [0, 1)", self.char_dropout)
        require(0.0 <= self.word_dropout < 1.0, "word_dropout", "must be in [0, 1)", self.word_dropout)
        if self.vector_words is not None:
            require(self.vector_words >= 1, "vector_words", "must be at least 1 (or none)", self.vector_words)
        if self.engine not in TAGGER_ENGINES:  # not silently scratch in float32
            raise ConfigError(
                f"--engine {self.engine}: a tagger's batches are padded (sentences of different lengths), which the "
                f"{self.engine} engine does not run (it would fall back to scratch, in float32); a tagger runs "
                f"{', '.join(TAGGER_ENGINES)}"
            )
        if self.engine == "scratch" and self.matmul_dtype == "bfloat16":
            raise ConfigError(
                "--matmul-dtype bfloat16 with --engine scratch: the scratch engine multiplies in float32 only; use "
                "--engine fused (or auto) for bfloat16 matmuls, or --matmul-dtype float32"
            )
        _need(self, "char_lm", ("char_lm_context", "char_lm_layers", "char_lm_pool"), "DIR")
        _need(self, "word_vectors", ("vector_words",), "FILE")


def _need(cfg: Any, owner: str, names: tuple[str, ...], metavar: str) -> None:
    """Raise ConfigError for a setting of ``names`` changed from its default while ``owner`` is unset: it only
    shapes what ``owner`` adds, so without it the setting would be silently ignored."""
    if getattr(cfg, owner):
        return
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    for name in names:
        value = getattr(cfg, name)
        if value != defaults[name]:
            raise ConfigError(
                f"{flag_name(name)} {value} applies only with {flag_name(owner)}, which is not given; add "
                f"{flag_name(owner)} {metavar} or leave {flag_name(name)} out"
            )


@dataclass
class TagTrainConfig(TrainConfig):
    """TrainConfig with tagging defaults, and what only a tagger reads (rare words, the auxiliary head, ensembles)."""

    def check(self) -> None:
        super().check()
        require(0.0 <= self.unk_singletons <= 1.0, "unk_singletons", "must be in [0, 1]", self.unk_singletons)
        require(self.aux_weight >= 0.0, "aux_weight", "must be at least 0", self.aux_weight)
        require(self.ensemble >= 1, "ensemble", "must be at least 1", self.ensemble)
        require(self.jobs >= 0, "jobs", "must be at least 0 (0 = as many as the CPU cores hold)", self.jobs)
        if self.cuda_graph == "on":  # not silently eager
            raise ConfigError(
                "--cuda-graph on: a tagger's batches change shape (sentences of different lengths), so its "
                "training step cannot be replayed from one CUDA graph; use --cuda-graph auto or off (both run "
                "the step eagerly)"
            )

    batch_size: int = setting(32, "Sentences per minibatch (sentences of similar length are batched together).")
    lr: float = setting(2e-3, "Peak learning rate.")
    clip: float = setting(5.0, "Clip gradients to this global L2 norm (0 = no clipping).")
    epochs: int | None = setting(
        30, "Stop after this many passes over the training sentences (none: no limit; see --time-budget)."
    )
    patience: int = setting(
        5,
        "Early stopping: stop when the dev score (entity F1 for chunk tags, else token accuracy) has not "
        "improved for this many evaluations (0 = off).",
    )
    unk_singletons: float = setting(
        0.5,
        "In training, replace each word seen only once in the training data by <unk> with this probability, "
        "so that <unk> is learned in the company of rare words and the model learns to read their spelling.",
    )
    aux_weight: float = setting(1.0, "Weight of the --aux-column head's loss (per token) beside the main loss.")
    ensemble: int = setting(
        1,
        "Train this many taggers with different seeds (member 0 with --seed) and tag with all of them: their "
        "tag scores are averaged (CRF: emissions and transitions; softmax: log-probabilities). Each member "
        "keeps its own best dev checkpoint and trains within --time-budget and --epochs on its own; the run's "
        "model.safetensors holds them all.",
    )
    jobs: int = setting(
        0,
        "Ensemble members trained at the same time, each in its own process. 0 = as many as the CPU cores hold: "
        "one per core, or one per --threads cores when --threads is a count; at most --ensemble, one at a time on "
        "a GPU. --threads stays each member's threads per step; with 0 or -1 the members share the cores evenly.",
    )


SECTIONS: dict[str, type] = {"data": TagDataConfig, "model": TaggerConfig, "train": TagTrainConfig, "eval": EvalConfig}


@dataclass
class TagRunConfig:
    """Everything that defines a tagger run; written to RUN/config.json."""

    data: TagDataConfig = field(default_factory=TagDataConfig)
    model: TaggerConfig = field(default_factory=TaggerConfig)
    train: TagTrainConfig = field(default_factory=TagTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def check(self) -> None:
        for section in SECTIONS:
            getattr(self, section).check()
        # across sections: --aux-weight (train) weighs the loss of --aux-column's head (data)
        if self.data.aux_column is None and self.train.aux_weight != TagTrainConfig().aux_weight:
            raise ConfigError(
                f"--aux-weight {self.train.aux_weight} applies only with --aux-column, which is not given; "
                "add --aux-column COLUMN or leave --aux-weight out"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: Any) -> TagRunConfig:
        """Inverse of to_dict; unknown keys are an error so that typos never pass silently.

        A version-1 config is read too: its data.eval_batch_size moves to the eval section; in versions 1 and 2
        ``model.engine`` was ``model.impl``.
        """
        if not isinstance(d, dict):
            raise ValueError(f"a tagger run config is a JSON object, not {type(d).__name__}")
        d = dict(d)
        fmt, version = d.pop("format", None), d.pop("version", None)
        if fmt != FORMAT or type(version) is not int or not 1 <= version <= VERSION:
            raise ValueError(
                f"not a tagger run config this version can read (format {fmt!r}, version {version!r}; this rnnlm "
                f"reads {FORMAT!r} versions 1 to {VERSION})"
            )
        if version == 1 and isinstance(d.get("data"), dict) and "eval_batch_size" in d["data"]:
            d["data"] = dict(d["data"])
            d["eval"] = {"eval_batch_size": d["data"].pop("eval_batch_size"), **d.get("eval", {})}
        if version < 3:
            d = renamed_keys(d, SECTIONS)
        unknown = sorted(set(d) - set(SECTIONS))
        if unknown:
            raise ValueError(f"a tagger run config has only {'/'.join(SECTIONS)} sections; unknown keys {unknown}")
        return cls(**sections_from_dict(d, SECTIONS))


def split_settings(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Sort flat keyword settings (hidden=100, dev="x") into sections; TypeError names an unknown one. A
    setting's old name (impl=) still works, with a DeprecationWarning."""
    owner = {f.name: s for s, c in SECTIONS.items() for f in dataclasses.fields(c)}
    renamed = old_names(SECTIONS)
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for name, value in flat.items():
        if name in renamed and name not in owner:
            # stacklevel 3: the user's call of tagging's train()
            warnings.warn(f"the setting {name}= is deprecated; use {renamed[name]}=", DeprecationWarning, stacklevel=3)
            name = renamed[name]
        if name not in owner:
            raise TypeError(f"unknown tagger setting {name!r}; the settings are {', '.join(sorted(owner))}")
        out[owner[name]][name] = value
    return out


def build_tag_config(overrides: dict[str, dict[str, Any]]) -> TagRunConfig:
    """Defaults, then the overrides; a --time-budget or --max-steps given without --epochs governs alone."""
    d = TagRunConfig().to_dict()
    for section, values in overrides.items():
        d[section].update(values)
    budget_governs_alone(overrides.get("train", {}), d["train"])
    return TagRunConfig.from_dict(d)
