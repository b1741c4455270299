"""The vocabulary: a deterministic token <-> id mapping for characters or words, saved as JSON."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnlm.core.atomic import atomic_write_json
from rnnlm.core.errors import VocabError

MAX_VOCAB_BYTES = 256 << 20
"""The largest vocab.json that Vocab.load reads (a word vocabulary of millions of words is tens of MB)."""

if TYPE_CHECKING:
    import torch

UNK = "<unk>"
EOS = "<eos>"
LEVELS = ("char", "word", "byte")
# Byte level: the 256 byte values, token i written as chr(i) (its Latin-1 character); text of any encoding is read
# as its bytes, and decoded text is those bytes read as UTF-8 (a broken sequence shows as U+FFFD).
BYTE_TOKENS = [chr(i) for i in range(256)]
FORMAT = "rnnlm-vocab"
VERSION = 1
_CHUNK = 1 << 22  # characters per vectorised step: bounds the temporary buffers (16 MB of UTF-32) on huge texts


def _code_points(text: str) -> Iterator[np.ndarray]:
    """The text's code points as uint32 arrays, one chunk at a time."""
    for i in range(0, len(text), _CHUNK):
        # surrogatepass: a str may hold lone surrogates (e.g. from surrogateescape); count them, don't crash.
        yield np.frombuffer(text[i : i + _CHUNK].encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _word_chunks(text: str) -> Iterator[list[str]]:
    """Word tokens, chunked at line ends: ``line.split()`` per line, ``<eos>`` after each ``\\n``."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + _CHUNK)
        end = len(text) if end < 0 else end + 1
        # Replacing "\n" by a spaced <eos> gives exactly per-line split() plus <eos> at each line end, and
        # the last line gets none unless the text ends with "\n".
        yield text[start:end].replace("\n", f" {EOS} ").split()
        start = end


class Vocab:
    """Tokens and their ids (id = index in ``tokens``) for char-, word- or byte-level text."""

    def __init__(self, tokens: Sequence[str], level: str, unk: str | None = None) -> None:
        self.level = level
        self.tokens: list[str] = list(tokens)
        self.unk = unk
        _validate(self.tokens, level, unk)
        self.token_to_id: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        self._unk_id = -1 if unk is None else self.token_to_id[unk]
        if level == "char":
            # Dense code point -> id table (at most 0x110000 entries, 4.4 MB); the last slot catches any code
            # point above the largest known one. -1 marks characters outside the vocabulary.
            cps = [ord(t) for t in self.tokens if t != unk]
            self._lut = np.full((max(cps) + 2) if cps else 1, -1, dtype=np.int32)
            for i, t in enumerate(self.tokens):
                if t != unk:
                    self._lut[ord(t)] = i

    # -- building -------------------------------------------------------------------------------------------

    @classmethod
    def build(cls, text: str | Sequence[str], level: str, min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """Build from text (or several texts). ``max_size`` bounds ``len(vocab)``, specials included.

        Char level: characters sorted by code point, ``<unk>`` (id 0) only if min_freq/max_size drop some.
        Word level: ``<unk>`` (0), ``<eos>`` (1), then words by descending count, ties by the word itself.
        Byte level: the 256 byte values, whatever the text (``byte_level()``). Several texts may come as any
        iterable (a generator of chunks: the vocabulary of a corpus larger than memory, counted in one pass).
        """
        if level not in LEVELS:
            raise VocabError(f"unknown token level {level!r}; choose char, word or byte")
        if level == "byte":
            return cls.byte_level()
        if min_freq < 1:
            raise VocabError(f"min_freq must be at least 1, not {min_freq}")
        if max_size is not None and max_size < 2:
            raise VocabError(f"max_size must be at least 2 (room for <unk> and one token), not {max_size}")
        texts = [text] if isinstance(text, str) else text
        return (
            cls._build_char(texts, min_freq, max_size)
            if level == "char"
            else cls._build_word(texts, min_freq, max_size)
        )

    @classmethod
    def byte_level(cls) -> Vocab:
        """The byte-level vocabulary: ids 0-255 are the bytes of the text's encoding."""
        return cls(BYTE_TOKENS, "byte")

    @classmethod
    def _build_char(cls, texts: Iterable[str], min_freq: int, max_size: int | None) -> Vocab:
        counts = np.zeros(0, dtype=np.int64)
        for text in texts:
            for cps in _code_points(text):
                c = np.bincount(cps)  # O(n) counting, no sort: fast on 100 MB of text
                if len(c) > len(counts):
                    counts = np.pad(counts, (0, len(c) - len(counts)))
                counts[: len(c)] += c
        present = np.flatnonzero(counts)
        if len(present) == 0:
            raise VocabError("cannot build a vocabulary from empty text")
        keep = present[counts[present] >= min_freq]
        # <unk> takes a slot whenever anything is dropped, by min_freq or by max_size.
        room = None if max_size is None else max_size - (1 if len(keep) < len(present) else 0)
        if room is not None and len(keep) > room:
            by_freq = np.lexsort((keep, -counts[keep]))  # most frequent first, ties by code point
            keep = np.sort(keep[by_freq[: max_size - 1]])  # one slot left for <unk>
        chars = [chr(int(c)) for c in keep]
        if len(keep) < len(present):
            return cls([UNK, *chars], "char", unk=UNK)
        return cls(chars, "char")

    @classmethod
    def _build_word(cls, texts: Iterable[str], min_freq: int, max_size: int | None) -> Vocab:
        counts: Counter[str] = Counter()
        for text in texts:
            for words in _word_chunks(text):
                counts.update(words)
        if not counts:
            raise VocabError("cannot build a vocabulary from text without words")
        # The corpus's own "<unk>" (PTB has it) is our <unk>; neither special competes for a frequency slot.
        counts.pop(UNK, None)
        counts.pop(EOS, None)
        ranked = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if max_size is not None:
            ranked = ranked[: max_size - 2]
        return cls([UNK, EOS, *ranked], "word", unk=UNK)

    # -- lookup ---------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self.token_to_id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return (self.level, self.unk, self.tokens) == (other.level, other.unk, other.tokens)

    def __repr__(self) -> str:
        return f"Vocab(level={self.level!r}, size={len(self)}, unk={self.unk!r})"

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        """The smallest unsigned dtype that holds every id (uint8 only for bytes: a char vocabulary's ids have
        always been uint16 arrays)."""
        if self.level == "byte":
            return np.uint8
        return np.uint16 if len(self) <= 65536 else np.uint32

    def id_of(self, token: str) -> int:
        """The id of a token; unknown tokens give the ``<unk>`` id, or VocabError when there is none."""
        i = self.token_to_id.get(token, self._unk_id)
        if i < 0:
            raise _unknown_error(Counter([token]))
        return i

    # -- encoding -------------------------------------------------------------------------------------------

    def encode(self, text: str) -> np.ndarray:
        """Token ids of the text (uint16, or uint32 for vocabularies over 65,536 tokens)."""
        if self.level == "byte":
            return np.frombuffer(text.encode("utf-8", "surrogateescape"), dtype=np.uint8).copy()
        return self._encode_char(text) if self.level == "char" else self._encode_word(text)

    def _encode_char(self, text: str) -> np.ndarray:
        out = np.empty(len(text), dtype=self.dtype)
        unknown: list[np.ndarray] = []
        top = len(self._lut) - 1
        pos = 0
        for cps in _code_points(text):
            ids = self._lut[np.minimum(cps, top)]
            missing = ids < 0
            if missing.any():
                if self._unk_id < 0:
                    unknown.append(cps[missing])
                ids[missing] = self._unk_id
            out[pos : pos + len(cps)] = ids
            pos += len(cps)
        if unknown:
            cps, n = np.unique(np.concatenate(unknown), return_counts=True)
            raise _unknown_error(Counter({chr(int(c)): int(k) for c, k in zip(cps, n, strict=True)}))
        return out

    def _encode_word(self, text: str) -> np.ndarray:
        parts: list[np.ndarray] = []
        unknown: Counter[str] = Counter()
        lookup = self.token_to_id.get
        for words in _word_chunks(text):
            ids = np.array(list(map(lookup, words, repeat(self._unk_id))), dtype=np.int64)
            if self._unk_id < 0 and (ids < 0).any():
                unknown.update(w for w, i in zip(words, ids.tolist(), strict=True) if i < 0)
            parts.append(ids.astype(self.dtype))
        if unknown:
            raise _unknown_error(unknown)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=self.dtype)

    def decode(self, ids: Iterable[int] | np.ndarray | torch.Tensor) -> str:
        """Text of the ids: chars are joined; words are joined by spaces, with ``<eos>`` as a line break."""
        if hasattr(ids, "detach"):  # a torch.Tensor, without importing torch here
            ids = ids.detach().cpu().numpy()
        arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() >= len(self)):
            bad = int(arr[(arr < 0) | (arr >= len(self))][0])
            raise VocabError(f"id {bad} is outside the vocabulary (ids run from 0 to {len(self) - 1})")
        if self.level == "byte":
            return arr.astype(np.uint8).tobytes().decode("utf-8", "replace")
        tokens = [self.tokens[i] for i in arr.tolist()]
        if self.level == "char":
            return "".join(tokens)
        lines: list[str] = []
        line: list[str] = []
        for t in tokens:
            if t == EOS:
                lines.append(" ".join(line))
                line = []
            else:
                line.append(t)
        lines.append(" ".join(line))
        return "\n".join(lines)

    def decode_after(self, context_id: int, ids: Iterable[int]) -> str:
        """Text that ids add when they follow token context_id (word level: the right space or line break)."""
        return self.decode([context_id, *ids])[len(self.decode([context_id])) :]

    # -- persistence ----------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return {"format": FORMAT, "version": VERSION, "level": self.level, "unk": self.unk, "tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: Any) -> Vocab:
        """Inverse of to_dict; VocabError when the dictionary is malformed."""
        if not isinstance(d, dict):
            raise VocabError(f"a vocabulary must be a JSON object, not {type(d).__name__}")
        if d.get("format", FORMAT) != FORMAT or d.get("version", VERSION) != VERSION:
            raise VocabError(
                f"unsupported vocabulary format {d.get('format')!r} version {d.get('version')!r}; "
                f"this rnnlm reads {FORMAT!r} version {VERSION}"
            )
        missing = sorted({"level", "tokens"} - set(d))
        if missing:
            raise VocabError(f"the vocabulary lacks the keys {missing}")
        tokens, level, unk = d["tokens"], d["level"], d.get("unk")
        if not isinstance(tokens, list) or not isinstance(level, str) or not isinstance(unk, (str, type(None))):
            raise VocabError(
                "a vocabulary holds 'tokens' (a list of strings), 'level' (a string) and 'unk' (a string or null), "
                f"not {type(tokens).__name__}, {type(level).__name__} and {type(unk).__name__}"
            )
        return cls(tokens, level, unk)

    def save(self, path: str | Path) -> None:
        """Write JSON atomically: a crash leaves the old file or the new one, never half of one."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        """Read a vocabulary written by save."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > MAX_VOCAB_BYTES:  # before reading: a file from elsewhere must not exhaust memory
                    raise VocabError(
                        f"{path}: the vocabulary file is {size:,} bytes, more than the {MAX_VOCAB_BYTES >> 20} MB "
                        "rnnlm reads; it is not a vocabulary this rnnlm wrote"
                    )
                d = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            raise VocabError(f"vocabulary file {path} does not exist; was the run saved completely?") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            why = "nested too deeply" if isinstance(e, RecursionError) else e
            raise VocabError(
                f"cannot read the vocabulary file {path}: {why}; the file is corrupt or not a vocabulary"
            ) from None
        try:
            return cls.from_dict(d)
        except VocabError as e:
            raise VocabError(f"{path}: {e}") from None


def _validate(tokens: list[str], level: str, unk: str | None) -> None:
    if level not in LEVELS:
        raise VocabError(f"unknown token level {level!r}; choose char, word or byte")
    if level == "byte":
        if tokens != BYTE_TOKENS or unk is not None:
            raise VocabError("a byte-level vocabulary holds the 256 byte values, in order, and no <unk>")
        return
    if not tokens:
        raise VocabError("a vocabulary needs at least one token")
    if not all(isinstance(t, str) and t for t in tokens):
        raise VocabError("every vocabulary token must be a non-empty string")
    if len(set(tokens)) != len(tokens):
        dup = sorted(t for t, n in Counter(tokens).items() if n > 1)[:10]
        raise VocabError(f"the vocabulary repeats tokens: {dup}")
    if unk is not None and unk not in tokens:
        raise VocabError(f"the unknown token {unk!r} is not among the tokens")
    if level == "char":
        long = [t for t in tokens if len(t) != 1 and t != unk]
        if long:
            raise VocabError(f"a char-level vocabulary holds single characters, not {long[:10]}")
    else:
        if EOS not in tokens:
            raise VocabError(f"a word-level vocabulary needs the {EOS} token")
        spaced = [t for t in tokens if len(t.split()) != 1 or t.split()[0] != t]
        if spaced:
            raise VocabError(f"word tokens cannot contain whitespace: {spaced[:10]}")


def _unknown_error(unknown: Counter[str]) -> VocabError:
    shown = ", ".join(f"{t!r} (x{n})" for t, n in unknown.most_common(10))
    more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
    return VocabError(
        f"the text holds {len(unknown)} distinct token(s) that the model's vocabulary lacks: "
        f"{shown}{more}. The vocabulary comes from the training text; remove these tokens or "
        "train on text that contains them"
    )
