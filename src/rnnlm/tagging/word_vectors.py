"""Pretrained word vectors in the word2vec / GloVe text format, for a tagger's ``--word-vectors``.

One vector per line, ``word v1 v2 ... vD`` separated by spaces; word2vec files start with a ``count dim``
header line, GloVe files do not (both are read). The word is everything before the last D values, so it may
hold spaces (glove.840B.300d has words such as ``. . .``); without a header, the first line sets D and so
must hold a word without spaces. The file is read as UTF-8, ``.gz`` files through gzip.
Words are normalized as the tagger looks them up (lowercased, digits as 0, as its config says); when two
words of the file normalize alike, the first one wins, which in files sorted by frequency is the most
frequent spelling. Errors name the file, the line and what is wrong with it.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from rnnlm.core.errors import DataError

_SHOWN = 60  # characters of an offending line quoted in an error


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    # Read bytes and decode each line on its own, so that a bad byte is reported with its line and offset.
    opener = gzip.open if path.suffix == ".gz" else open
    number = 0
    try:
        with opener(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(
                        f"{path}, line {number}: not UTF-8 text ({e.reason} at byte {e.start} of the line); "
                        "save the file as UTF-8"
                    ) from None
                yield number, line.rstrip("\r\n")
    except FileNotFoundError:
        raise DataError(f"{path}: no such word-vectors file") from None
    except (OSError, EOFError, zlib.error) as e:  # a truncated or corrupt .gz
        raise DataError(f"{path}, line {number + 1}: cannot read the word vectors ({e})") from None


def read_word_vectors(
    path: str | Path, normalize: Callable[[str], str] = lambda w: w, limit: int | None = None
) -> tuple[list[str], np.ndarray]:
    """The file's words (normalized, first occurrence kept) and their (N, D) float32 vectors.

    ``limit`` keeps the first that many distinct words. Raises DataError for a missing or empty file, a
    line with fewer values than the header's or the first line's, or a value that is not a number.
    """
    path = Path(path)
    words: list[str] = []
    rows: list[np.ndarray] = []
    seen: set[str] = set()
    dim = None
    for number, line in _lines(path):
        if limit is not None and len(words) >= limit:
            break
        if not line.strip():
            continue
        parts = line.rstrip(" ").split(" ")
        if number == 1 and len(parts) == 2 and all(p.isascii() and p.isdigit() for p in parts) and int(parts[1]) >= 1:
            dim = int(parts[1])  # the word2vec header: count and dimensions
            continue
        where = f"{path}, line {number}: {line[:_SHOWN]!r}{'...' if len(line) > _SHOWN else ''}"
        if len(parts) < 2:
            raise DataError(f"{where}: expected a word and its vector, separated by spaces")
        if dim is None:
            dim = len(parts) - 1
        if len(parts) < dim + 1:  # more parts than that are a word with spaces
            raise DataError(f"{where}: {len(parts) - 1} values where the file has {dim} dimensions")
        try:
            vector = np.array(parts[-dim:], dtype=np.float32)
        except ValueError:
            raise DataError(f"{where}: the vector holds a value that is not a number") from None
        if not np.isfinite(vector).all():
            raise DataError(f"{where}: the vector holds inf or nan")
        word = normalize(" ".join(parts[:-dim]))
        if word not in seen:
            seen.add(word)
            words.append(word)
            rows.append(vector)
    if not words:
        raise DataError(f"{path}: no word vectors in the file")
    return words, np.stack(rows)


def unit_rms(vectors: np.ndarray) -> np.ndarray:
    """The vectors scaled by one factor so that their root-mean-square length is 1: the scale of the
    tagger's own random word embeddings, so that neither kind outweighs the other at the start."""
    rms = float(np.sqrt((vectors.astype(np.float64) ** 2).sum(1).mean()))
    return vectors / rms if rms > 0 else vectors
