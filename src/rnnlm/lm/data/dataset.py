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
from rnnlm.lm.data.tokens import TokenFile, cache_dir, prepare, stream_threshold


@dataclass
class Corpus:
    """A tokenised corpus: the vocabulary and each split as a 1-D array of ids."""

    vocab: Vocab
    train: np.ndarray | TokenFile  # (N,) ids, uint16 or uint32; a large corpus: a token file read per batch
    val: np.ndarray | TokenFile | None  # None when nothing is held out
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
        raise DataError(f"unknown token level {level!r}; choose char, word or byte")

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
    if streams(cfg):
        return stream_corpus(cfg, vocab)
    texts, level, description = load_texts(cfg)
    if vocab is None:
        if level == "char":
            # From every split, so that validation and test text never meet an unknown character.
            vocab = Vocab.build(list(texts.values()), "char", cfg.min_freq, cfg.max_size)
        else:
            vocab = Vocab.build(texts["train"], level, cfg.min_freq, cfg.max_size)
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


def streams(cfg: DataConfig) -> bool:
    """Whether the training text is tokenized into a cached token file instead of being read into memory: at byte
    level (bytes of any encoding), or when the files are larger than ``stream_threshold()``; only for files given
    as paths, read whole (no --corpus, --max-chars or --newlines space)."""
    if not cfg.paths or cfg.corpus is not None or cfg.max_chars is not None or cfg.newlines != "keep":
        if cfg.level == "byte" and not cfg.paths:
            raise DataError("--level byte reads text files given as paths; name the files (a corpus is read as text)")
        return False
    if cfg.level == "byte":
        return True
    return sum(p.stat().st_size for p in resolve_paths(cfg.paths)) > stream_threshold()


def stream_corpus(cfg: DataConfig, vocab: Vocab | None = None) -> Corpus:
    """The corpus of a token file (tokens.py), prepared in the user cache or reused from there; the validation
    split is the contiguous last --val-fraction of the tokens, unless --val-paths are given."""
    level = vocab.level if vocab is not None else cfg.level or "char"
    out = cache_dir(cfg.paths, level, cfg.min_freq, cfg.max_size)
    ready = prepare(cfg.paths, out, level, cfg.min_freq, cfg.max_size, vocab)
    tokens, vocab = ready.tokens, ready.vocab
    val: np.ndarray | TokenFile | None = None
    if cfg.val_paths:
        val, val_from = vocab.encode(read_texts(cfg.val_paths)), "the --val-paths files"
    elif cfg.val_fraction > 0:
        cut = int(len(tokens) * (1 - cfg.val_fraction))
        tokens, val = tokens.part(0, cut), tokens.part(cut, len(tokens))
        val_from = f"the last {cfg.val_fraction:g} of the tokens"
    else:
        val_from = "none"
    test = vocab.encode(read_texts(cfg.test_paths)) if cfg.test_paths else None
    how = "reused" if ready.reused else f"prepared in {ready.seconds:.1f} s"
    description = (
        f"{len(resolve_paths(cfg.paths))} file(s), {ready.text_bytes / 1e6:,.1f} MB as a token file ({how}: "
        f"{out}); {level} level; validation: {val_from}"
    )
    return Corpus(vocab=vocab, train=tokens, val=val, test=test, level=level, description=description)


def _join(parts: list[str]) -> str:
    return "".join(p if p.endswith("\n") or i + 1 == len(parts) else p + "\n" for i, p in enumerate(parts))


def apply_newlines(text: str, mode: str) -> str:
    """DataConfig.newlines: "keep" leaves the text alone, "space" turns \\n and \\r into spaces."""
    if mode == "space":
        return text.replace("\n", " ").replace("\r", " ")
    if mode != "keep":
        raise DataError(f"unknown newlines mode {mode!r}; choose keep or space")
    return text
