"""Tagged sentences for a tagger: reading a column, word/char/tag ids, length-bucketed batches, tokenizing.

A batch is a ``TagBatch`` of padded tensors, batch-first: ``words`` (B, T) word ids, ``chars`` (B, T, W)
character ids (0 = padding), ``lengths`` (B,) and ``tags`` (B, T) tag ids (-1 in the padding, and for a
gold tag the tag set lacks). Sentences of similar length share a batch, so little time goes to padding.
With character-LM features (char_lm_features.py) a batch also has ``lm`` (B, T, D) float32, zero in the
padding; each sentence keeps them as float16, which halves their memory (CoNLL-2003's 204k training words
at D = 768: 314 MB instead of 627 MB) for a rounding error of 2^-11 relative, far below what the tagger's
dropout does to them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rnnlm.core.errors import DataError
from rnnlm.core.vocab import UNK, Vocab
from rnnlm.tagging import schemes as tagschemes
from rnnlm.tagging.conll import Sentence, check_tags, read_conll2003, read_conllu

FEATURE_CHUNK = 2048  # sentences whose character-LM features are computed together (about 30k words)
POOL = 50  # batches whose sentences are sorted by length together: buckets, yet a fresh mix every epoch


def guess_format(path: str | Path) -> str:
    """conllu for a *.conllu file, else conll2003."""
    return "conllu" if str(path).endswith(".conllu") else "conll2003"


def read_tagged(path: str | Path, fmt: str, column: str, *more: str | None) -> list[Sentence]:
    """Sentences of a CoNLL-2003 or CoNLL-U file, checked to hold ``column`` (and the ``more`` that are not None)."""
    fmt = guess_format(path) if fmt == "auto" else fmt
    sentences = read_conllu(path) if fmt == "conllu" else read_conll2003(path)
    for name in (column, *more):
        if name is not None and name not in sentences[0].tags:
            columns = ", ".join(sentences[0].tags)
            raise DataError(f"{path}: a {fmt} file has no {name!r} column; its columns are {columns}")
    return sentences


def resolve_scheme(sentences: Sequence[Sentence], column: str, scheme: str, chunked: bool) -> str:
    """The column's chunk scheme: as given (checked against every tag), detected for chunk columns, or none."""
    if scheme == "auto":
        if not chunked:
            return "none"
        try:
            return tagschemes.detect_scheme(s.tags[column] for s in sentences)
        except ValueError as e:
            raise DataError(f"{sentences[0].path}: cannot tell the {column} column's chunk scheme ({e})") from None
    if scheme != "none":
        check_tags(sentences, column, scheme)
    return scheme


def normalize_word(word: str, lowercase: bool, zero_digits: bool) -> str:
    """Lowercased, digits as 0 (as asked), inner whitespace as _ (a word token holds none)."""
    if lowercase:
        word = word.lower()
    if zero_digits:
        word = re.sub(r"\d", "0", word)
    return "_".join(word.split()) or "_"


class TagEncoder:
    """Words, characters and tags to ids and back; built from the training sentences, saved beside the run."""

    def __init__(
        self,
        words: Vocab,
        chars: Vocab,
        tags: tagschemes.TagSet,
        lowercase: bool,
        zero_digits: bool,
        aux: tagschemes.TagSet | None = None,
    ):
        self.words, self.chars, self.tags, self.aux = words, chars, tags, aux  # aux: a second column's tags
        self.lowercase, self.zero_digits = lowercase, zero_digits
        self.unk_word = words.id_of(UNK)

    @classmethod
    def build(
        cls,
        sentences: Sequence[Sequence[str]],
        tags: Sequence[Sequence[str]],
        lowercase: bool,
        zero_digits: bool,
        min_freq: int = 1,
        aux_tags: Sequence[Sequence[str]] | None = None,
    ) -> TagEncoder:
        """Word vocabulary (by frequency, then the word), every character seen, the tag set (and the tag set
        of a second column, ``aux_tags``)."""
        text = "\n".join(" ".join(normalize_word(w, lowercase, zero_digits) for w in s) for s in sentences)
        words = Vocab.build(text, "word", min_freq=min_freq)
        chars = Vocab([UNK, *sorted({c for s in sentences for w in s for c in w})], "char", unk=UNK)
        aux = tagschemes.TagSet.build(aux_tags) if aux_tags is not None else None
        return cls(words, chars, tagschemes.TagSet.build(tags), lowercase, zero_digits, aux)

    def with_words(self, extra: Sequence[str]) -> TagEncoder:
        """The same encoder with the words of ``extra`` that it lacks appended to its word vocabulary, in
        their order (the ids of the words it had stay as they were)."""
        known = self.words.token_to_id
        added = [w for w in dict.fromkeys(extra) if w not in known]
        words = Vocab([*self.words.tokens, *added], "word", unk=self.words.unk)
        return TagEncoder(words, self.chars, self.tags, self.lowercase, self.zero_digits, self.aux)

    def normalize(self, word: str) -> str:
        """The form looked up in the word vocabulary."""
        return normalize_word(word, self.lowercase, self.zero_digits)

    def encode_words(self, tokens: Sequence[str]) -> np.ndarray:
        """(T,) word ids; unknown words are <unk>."""
        lookup = self.words.token_to_id.get
        return np.array([lookup(self.normalize(t), self.unk_word) for t in tokens], dtype=np.int64)

    def encode_chars(self, tokens: Sequence[str], max_chars: int) -> np.ndarray:
        """(T, W) character ids + 1 (0 is padding), each word cut to ``max_chars``."""
        lookup, unk = self.chars.token_to_id.get, self.chars.id_of(UNK)
        width = max(1, min(max_chars, max(len(t) for t in tokens)))
        out = np.zeros((len(tokens), width), dtype=np.int64)
        for i, t in enumerate(tokens):
            out[i, : min(len(t), width)] = [lookup(c, unk) + 1 for c in t[:width]]
        return out


@dataclass
class EncodedSentence:
    """One sentence as arrays: word ids (T,), char ids (T, W) and tag ids (T,) (-1: no gold tag known), and
    with a character LM its features (T, D) float16."""

    words: np.ndarray
    chars: np.ndarray
    tags: np.ndarray
    lm: np.ndarray | None = None
    aux: np.ndarray | None = None  # (T,) ids of the second column's tags (-1: unknown), when one is learned


def encode(
    encoder: TagEncoder,
    sentences: Sequence[Sequence[str]],
    tags: Sequence[Sequence[str]] | None,
    max_chars: int,
    features: Callable[..., list[np.ndarray]] | None = None,
    docs: Sequence[object] | None = None,
    read_docs: bool = True,
    aux_tags: Sequence[Sequence[str]] | None = None,
) -> list[EncodedSentence]:
    """Arrays of each sentence; a gold tag outside the tag set gets id -1 (scored as an error, no loss).

    ``features`` (a CharLMFeatures) maps the sentences to one (n, D) array each, computed here once; with
    ``docs`` (a document id per sentence) it reads each sentence with its neighbours in the same document
    (unless ``read_docs`` is false) and pools over documents when it pools. ``aux_tags`` are a second column's
    gold tags, encoded with ``encoder.aux``.
    """
    index = encoder.tags.index
    aux_index = encoder.aux.index if encoder.aux is not None and aux_tags is not None else None
    out = []
    for k, tokens in enumerate(sentences):
        if not tokens:
            raise DataError(f"sentence {k + 1} has no tokens")
        gold = np.array([index.get(t, -1) for t in tags[k]] if tags is not None else [-1] * len(tokens))
        out.append(EncodedSentence(encoder.encode_words(tokens), encoder.encode_chars(tokens, max_chars), gold))
        if aux_index is not None:
            out[-1].aux = np.array([aux_index.get(t, -1) for t in aux_tags[k]], dtype=np.int64)
    if features is not None:  # a chunk at a time, so that only one chunk's float32 arrays exist at once
        start = 0
        while start < len(out):
            end = min(start + FEATURE_CHUNK, len(out))
            while docs is not None and end < len(out) and docs[end] == docs[end - 1]:
                end += 1  # a chunk ends with a document
            chunk = sentences[start:end]
            got = features(chunk) if docs is None else features(chunk, docs[start:end], read_docs=read_docs)
            for s, lm in zip(out[start:end], got, strict=True):
                s.lm = lm.astype(np.float16)
            start = end
    return out


@dataclass
class TagBatch:
    """Padded tensors of a batch of sentences (see the module docstring); ``index`` = their positions."""

    words: torch.Tensor
    chars: torch.Tensor
    lengths: torch.Tensor
    tags: torch.Tensor
    index: list[int]
    lm: torch.Tensor | None = None  # (B, T, D) character-LM features, when the tagger reads them
    aux: torch.Tensor | None = None  # (B, T) a second column's tag ids (-1 in the padding), when learned

    def to(self, device: torch.device) -> TagBatch:
        moved = (t.to(device) for t in (self.words, self.chars, self.lengths, self.tags))
        lm, aux = (None if t is None else t.to(device) for t in (self.lm, self.aux))
        return TagBatch(*moved, self.index, lm, aux)

    @property
    def mask(self) -> torch.Tensor:
        """(B, T) True on real tokens."""
        return torch.arange(self.words.shape[1], device=self.lengths.device) < self.lengths[:, None]


def singletons(sentences: Sequence[EncodedSentence], num_words: int) -> np.ndarray:
    """(V,) bool: the word ids that occur exactly once in the sentences."""
    return np.bincount(np.concatenate([s.words for s in sentences]), minlength=num_words) == 1


def replace_rare(words: torch.Tensor, rare: np.ndarray, p: float, unk: int, rng: np.random.Generator) -> torch.Tensor:
    """(B, T) word ids with each rare one replaced by ``unk`` with probability ``p`` (Lample et al., 2016)."""
    ids = words.numpy()
    hit = rare[ids] & (rng.random(ids.shape) < p)
    return torch.from_numpy(np.where(hit, unk, ids))


def collate(sentences: Sequence[EncodedSentence], index: Sequence[int]) -> TagBatch:
    """Pad the sentences at ``index`` into one batch."""
    chosen = [sentences[i] for i in index]
    B, T = len(chosen), max(len(s.words) for s in chosen)
    W = max(s.chars.shape[1] for s in chosen)
    words = np.zeros((B, T), dtype=np.int64)
    chars = np.zeros((B, T, W), dtype=np.int64)
    tags = np.full((B, T), -1, dtype=np.int64)
    for b, s in enumerate(chosen):
        n, w = s.chars.shape
        words[b, :n], chars[b, :n, :w], tags[b, :n] = s.words, s.chars, s.tags
    lengths = torch.tensor([len(s.words) for s in chosen])
    lm = None
    if chosen[0].lm is not None:
        lm = torch.zeros(B, T, chosen[0].lm.shape[1])
        for b, s in enumerate(chosen):
            lm[b, : len(s.words)] = torch.from_numpy(s.lm)  # float16 -> float32
    aux = None
    if chosen[0].aux is not None:
        aux = torch.full((B, T), -1, dtype=torch.long)
        for b, s in enumerate(chosen):
            aux[b, : len(s.words)] = torch.from_numpy(s.aux)
    return TagBatch(
        torch.from_numpy(words), torch.from_numpy(chars), lengths, torch.from_numpy(tags), list(index), lm, aux
    )


class LengthBatcher:
    """Batches of sentence indices: shuffled, then sorted by length within pools of ``POOL`` batches.

    An epoch's order comes only from ``np.random.default_rng([seed, epoch])``, so a resumed run makes
    the very same batches and can skip those it has done. Every epoch has the same number of batches.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int) -> None:
        if not lengths:
            raise DataError("no sentences to batch")
        self.lengths, self.batch_size, self.seed = np.asarray(lengths), batch_size, seed

    def num_batches(self) -> int:
        pool = self.batch_size * POOL
        full, rest = divmod(len(self.lengths), pool)
        return full * POOL + -(-rest // self.batch_size)

    def epoch(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths))
        batches = []
        for p in range(0, len(order), self.batch_size * POOL):
            pool = order[p : p + self.batch_size * POOL]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Indices in batches of similar length, for tagging and scoring (no shuffling)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    for i in range(0, len(order), batch_size):
        yield order[i : i + batch_size]


# -- tokenizing raw text ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?:[^\W\d_]\.){2,}                # abbreviations with dots: U.S., e.g.
  | \w+(?=n't\b)                      # do|n't, is|n't
  | n't\b
  | '(?:s|re|ve|ll|d|m)\b             # clitics: 's 're 've 'll 'd 'm
  | \d+(?:[.,:/-]\d+)*                # numbers, times, dates: 3.5, 1,000, 12:30, 2024-01-31
  | \w+(?:[-&]\w+|'(?!(?:s|re|ve|ll|d|m)\b)\w+)*  # words: well-known, AT&T, O'Neil (not John|'s)
  | \S                                # any other character, alone
    """,
    re.VERBOSE | re.IGNORECASE,
)


def tokenize(text: str) -> list[tuple[str, int, int]]:
    """Tokens of a line of raw text as (token, start, end) character offsets: words, numbers, clitics
    (``'s``, ``n't``) and each punctuation mark apart, close to the treebanks' own splits."""
    return [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]
