"""From a DataConfig to token ids: pick the text, split off validation, build or apply the vocabulary."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from rnnlm.core.errors import DataError
from rnnlm.core.text import read_texts, resolve_paths
from rnnlm.core.vocab import LEVELS, Vocab
from rnnlm.lm.config import DataConfig
from rnnlm.lm.data.corpora import DEFAULT_CORPUS, corpus_text, get_corpus


@dataclass
class Corpus:
    """A tokenised corpus: the vocabulary and each split as a 1-D array of ids."""

    vocab: Vocab
    train: np.ndarray  # (N,) ids, uint16 or uint32
    val: np.ndarray | None  # None when nothing is held out
    test: np.ndarray | None
    level: str  # "char" or "word"
    description: str  # where the text came from, for logs and `rnnlm info`


def load_texts(cfg: DataConfig) -> tuple[dict[str, str], str, str]:
    """The split texts ({"train", maybe "valid", maybe "test"}), the token level and a description."""
    name = cfg.corpus or (None if cfg.paths else DEFAULT_CORPUS)
    train_parts: list[str] = []
    own: dict[str, str] = {}  # the named corpus's own valid/test splits
    sources: list[str] = []
    corpus_level = None
    if name is not None:
        spec = get_corpus(name)
        own = corpus_text(spec.name)
        train_parts.append(own.pop("train"))
        corpus_level = spec.level
        sources.append(f"corpus {spec.name}")
    if cfg.paths:
        paths = resolve_paths(cfg.paths)
        shown = ", ".join(str(p) for p in paths[:3]) + (f", ... ({len(paths)} files)" if len(paths) > 3 else "")
        train_parts.append(read_texts(paths))
        sources.append(shown)
    level = cfg.level or corpus_level or "char"
    if level not in LEVELS:
        raise DataError(f"unknown token level {level!r}; choose char or word")

    train = apply_newlines(_join(train_parts), cfg.newlines)
    if cfg.max_chars is not None:
        if cfg.max_chars < 1:
            raise DataError(f"--max-chars must be at least 1, not {cfg.max_chars}")
        train = train[: cfg.max_chars]  # after the newline replacement, as the d2l recipe does

    texts = {"train": train}
    if cfg.val_paths:
        texts["valid"], val_from = read_texts(cfg.val_paths), "the --val-paths files"
    elif "valid" in own:
        texts["valid"], val_from = own["valid"], "the corpus's valid split"
    else:
        train, val = split_tail(train, cfg.val_fraction, level)
        texts["train"] = train
        if val is not None:
            texts["valid"] = val
        val_from = f"the last {cfg.val_fraction:g} of the text" if val is not None else "none"
    if cfg.test_paths:
        texts["test"] = read_texts(cfg.test_paths)
    elif "test" in own:
        texts["test"] = own["test"]
    texts = {k: v if k == "train" else apply_newlines(v, cfg.newlines) for k, v in texts.items()}

    sizes = ", ".join(f"{k} {len(v):,} chars" for k, v in texts.items())
    description = f"{' + '.join(sources)}; {level} level; {sizes}; validation: {val_from}"
    return texts, level, description


def split_tail(text: str, fraction: float, level: str) -> tuple[str, str | None]:
    """Cut the contiguous last ``fraction`` off as validation text (word level: at a line end if one is near)."""
    if fraction == 0:
        return text, None
    if not 0 < fraction < 1:
        raise DataError(f"--val-fraction must be in [0, 1), not {fraction}")
    cut = int(len(text) * (1 - fraction))
    if level == "word":
        # A cut inside a word would invent two words; a cut inside a line, a sentence without its end.
        # Take the nearest line end within half the validation length, else the nearest space before.
        reach = (len(text) - cut) // 2
        before = text.rfind("\n", max(0, cut - reach), cut)
        after = text.find("\n", cut, cut + reach)
        ends = [i + 1 for i in (before, after) if i >= 0]
        if ends:
            cut = min(ends, key=lambda i: abs(i - cut))
        else:
            space = max(text.rfind(" ", 0, cut), text.rfind("\t", 0, cut))
            cut = space + 1 if space >= 0 else cut
    train, val = text[:cut], text[cut:]
    if not train.strip() or not val.strip():
        raise DataError(
            f"the text ({len(text):,} characters) is too short to hold out {fraction:g} of it for "
            "validation; give more text, --val-paths, or --val-fraction 0"
        )
    return train, val


def load_corpus(cfg: DataConfig, vocab: Vocab | None = None) -> Corpus:
    """Load and encode the configured text; builds the vocabulary unless one is given (resume, eval)."""
    if vocab is not None:
        if cfg.level is not None and cfg.level != vocab.level:
            raise DataError(
                f"--level {cfg.level} conflicts with the model's {vocab.level}-level vocabulary; "
                "drop --level or use a model trained at that level"
            )
        cfg = dataclasses.replace(cfg, level=vocab.level)
    texts, level, description = load_texts(cfg)
    if vocab is None:
        if level == "char":
            # From every split, so that validation and test text never meet an unknown character.
            vocab = Vocab.build(list(texts.values()), "char", cfg.min_freq, cfg.max_size)
        else:
            vocab = Vocab.build(texts["train"], "word", cfg.min_freq, cfg.max_size)
    encoded = {split: vocab.encode(text) for split, text in texts.items()}
    if len(encoded["train"]) == 0:
        raise DataError("the training text holds no tokens; give a file with some text")
    return Corpus(
        vocab=vocab,
        train=encoded["train"],
        val=encoded.get("valid"),
        test=encoded.get("test"),
        level=vocab.level,
        description=description,
    )


def _join(parts: list[str]) -> str:
    return "".join(p if p.endswith("\n") or i + 1 == len(parts) else p + "\n" for i, p in enumerate(parts))


def apply_newlines(text: str, mode: str) -> str:
    """DataConfig.newlines: "keep" leaves the text alone, "space" turns \\n and \\r into spaces."""
    if mode == "space":
        return text.replace("\n", " ").replace("\r", " ")
    if mode != "keep":
        raise DataError(f"unknown newlines mode {mode!r}; choose keep or space")
    return text
