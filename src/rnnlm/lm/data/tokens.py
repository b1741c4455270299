"""Corpora larger than memory: text tokenized once, streaming, into a token file that is read a window at a time.

``prepare`` reads the text files in pieces that end at a line end (byte level: raw pieces), builds the vocabulary
in a first pass that only counts, and encodes in a second pass into ``tokens.bin`` (uint8, uint16 or uint32 as the
vocabulary needs), with ``tokens.json`` beside it: the files' paths, sizes, modification times and SHA-256, the
level and the vocabulary's SHA-256. A later run with the same files and vocabulary reuses the file: a file whose
size and time are unchanged is taken as it is, one whose time moved is hashed again and reused if its content is
the same.

``TokenFile`` reads the file with explicit reads (``os.pread``) of the windows a batch needs, opened per batch and
never mapped: a memory map kept open grows the resident memory to the whole file as it is read (nanoGPT#287),
while pread leaves the pages to the system's cache, where they do not count against the process.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnlm.core.atomic import atomic_write_json, atomic_writer
from rnnlm.core.errors import DataError
from rnnlm.core.paths import cache_root
from rnnlm.core.text import resolve_paths
from rnnlm.core.vocab import Vocab

FORMAT, VERSION = "rnnlm-tokens", 1
TOKENS, SIDECAR, VOCAB = "tokens.bin", "tokens.json", "vocab.json"
PIECE = 1 << 24  # bytes read at a time (16 MB): bounds what a prepare holds in memory
STREAM_BYTES = 256 << 20  # `rnnlm train` prepares a token file when its text files are larger than this


def stream_threshold() -> int:
    """Bytes of text above which ``rnnlm train`` tokenizes into a cached token file (RNNLM_STREAM_BYTES)."""
    raw = os.environ.get("RNNLM_STREAM_BYTES")
    try:
        return STREAM_BYTES if raw is None else int(raw)
    except ValueError:
        raise DataError(f"RNNLM_STREAM_BYTES={raw!r} is not a number of bytes") from None


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id."""
    return np.dtype(np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.uint32)


class TokenFile:
    """A 1-D array of token ids in a file (or a contiguous part of one), read with explicit reads, never mapped."""

    ndim = 1

    def __init__(self, path: str | Path, dtype: Any, start: int = 0, stop: int | None = None) -> None:
        self.path, self.dtype = Path(path), np.dtype(dtype)
        total = self.path.stat().st_size // self.dtype.itemsize
        self.start, self.stop = start, total if stop is None else stop

    def __len__(self) -> int:
        return self.stop - self.start

    def part(self, start: int, stop: int) -> TokenFile:
        """Tokens start..stop of this one, as a TokenFile (nothing is read)."""
        return TokenFile(self.path, self.dtype, self.start + start, self.start + stop)

    def __getitem__(self, key: slice) -> np.ndarray:
        """A contiguous slice, read into memory (for short pieces: a sample's prefix)."""
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("a TokenFile reads contiguous slices only; use windows() for batches")
        start, stop, _ = key.indices(len(self))
        return self.windows(np.asarray([start]), max(stop - start, 0))[0]

    def windows(self, starts: np.ndarray, width: int) -> np.ndarray:
        """(len(starts), width) ids: the ``width`` tokens from each start, one read each, the file opened once."""
        size = self.dtype.itemsize
        out = np.empty((len(starts), width), dtype=self.dtype)
        with open(self.path, "rb") as f:
            for i, s in enumerate(np.asarray(starts).tolist()):
                if s < 0 or s + width > len(self):
                    raise IndexError(f"tokens {s}..{s + width} lie outside {len(self)}")
                buf = os.pread(f.fileno(), width * size, (self.start + s) * size)
                out[i] = np.frombuffer(buf, dtype=self.dtype)
        return out


def windows(ids: np.ndarray | TokenFile, starts: np.ndarray, width: int) -> np.ndarray:
    """(len(starts), width) ids, row i the ``width`` tokens from ``starts[i]``, from an array or a token file."""
    if isinstance(ids, TokenFile):
        return ids.windows(starts, width)
    return ids[np.asarray(starts)[:, None] + np.arange(width)]


@dataclass
class Prepared:
    """A token file ready to train on: its vocabulary, the tokens, and whether an earlier prepare was reused."""

    vocab: Vocab
    tokens: TokenFile
    reused: bool
    seconds: float  # spent preparing now (or checking the cache)
    text_bytes: int  # the input files' total size


def _pieces(path: Path, level: str, digest: Any = None) -> Iterator[str | bytes]:
    """The file's content in pieces of about PIECE bytes: raw bytes at byte level; else UTF-8 text cut at line
    ends (so no character or word is split), a leading BOM dropped and ``\\r\\n`` read as ``\\n``, as read_text
    does. ``digest`` (a hashlib object) is fed every byte read."""
    decode = codecs.getincrementaldecoder("utf-8")("strict")
    offset, rest, first = 0, b"", True
    with open(path, "rb") as f:
        while True:
            block = f.read(PIECE)
            if digest is not None:
                digest.update(block)
            if level == "byte":
                if not block:
                    return
                yield block
                continue
            if first:
                nul = block.find(b"\0", 0, 8192)
                if nul >= 0:
                    raise DataError(
                        f"{path} looks like a binary file (a NUL byte at byte offset {nul}); read it with --level "
                        "byte, or pass text"
                    )
                if block.startswith(codecs.BOM_UTF8):
                    block, offset = block[3:], 3
                first = False
            data = rest + block
            if not block and not data:
                return
            cut = len(data) if not block else data.rfind(b"\n") + 1
            if cut == 0:  # no line end yet: read on
                rest = data
                continue
            try:
                text = decode.decode(data[:cut], final=not block)
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path} is not valid UTF-8 at byte offset {offset + e.start}; convert it to UTF-8, or read "
                    "its bytes with --level byte"
                ) from None
            offset, rest = offset + cut, data[cut:]
            if text:
                yield text.replace("\r\n", "\n") if "\r" in text else text
            if not block:
                return


def _stream(paths: Sequence[Path], level: str, digests: list[Any] | None = None) -> Iterator[str | bytes]:
    """Every file's pieces in turn; a newline joins text files that do not end with one (as read_texts does)."""
    for i, path in enumerate(paths):
        last = None
        for piece in _pieces(path, level, digests[i] if digests is not None else None):
            last = piece
            yield piece
        if level != "byte" and i + 1 < len(paths) and last is not None and not last.endswith("\n"):
            yield "\n"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(PIECE):
            digest.update(block)
    return digest.hexdigest()


def _vocab_sha(vocab: Vocab) -> str:
    return hashlib.sha256(json.dumps(vocab.to_dict(), sort_keys=True).encode("utf-8")).hexdigest()


def _reusable(out: Path, paths: list[Path], level: str, settings: dict[str, Any], vocab: Vocab | None) -> bool:
    """Whether ``out`` holds a token file of these files, level and vocabulary (module docstring)."""
    try:
        side = json.loads((out / SIDECAR).read_text(encoding="utf-8"))
        saved_vocab = Vocab.load(out / VOCAB)
        size = (out / TOKENS).stat().st_size
    except (OSError, ValueError, KeyError):
        return False
    if side.get("format") != FORMAT or side.get("version") != VERSION or side.get("level") != level:
        return False
    if size != side["tokens"] * np.dtype(side["dtype"]).itemsize:
        return False
    if vocab is not None and _vocab_sha(vocab) != side["vocab_sha256"]:
        return False
    if vocab is None and (side.get("settings") != settings or _vocab_sha(saved_vocab) != side["vocab_sha256"]):
        return False
    files = side.get("files", [])
    if [f["path"] for f in files] != [str(p) for p in paths]:
        return False
    for f, p in zip(files, paths, strict=True):
        st = p.stat()
        if st.st_size != f["size"]:
            return False
        if st.st_mtime_ns != f["mtime_ns"] and _sha256(p) != f["sha256"]:  # touched: the same content is fine
            return False
    return True


def prepare(
    specs: Sequence[str | Path],
    out: str | Path,
    level: str = "char",
    min_freq: int = 1,
    max_size: int | None = None,
    vocab: Vocab | None = None,
    log: Callable[[str], None] = print,
) -> Prepared:
    """Tokenize the text files (files, directories, globs) into ``out``/tokens.bin, or reuse what is there.

    The vocabulary is ``vocab`` when given (a resumed run's), else built by a counting pass (byte level: the 256
    bytes). Every file is written atomically; an interrupted prepare leaves the old files or none."""
    t0 = time.perf_counter()
    paths = [p.absolute() for p in resolve_paths(specs)]
    total = sum(p.stat().st_size for p in paths)
    out = Path(out)
    settings = {"min_freq": min_freq, "max_size": max_size}
    if _reusable(out, paths, level, settings, vocab):
        side = json.loads((out / SIDECAR).read_text(encoding="utf-8"))
        tokens = TokenFile(out / TOKENS, side["dtype"])
        return Prepared(Vocab.load(out / VOCAB), tokens, True, time.perf_counter() - t0, total)
    out.mkdir(parents=True, exist_ok=True)
    if vocab is None and level != "byte":
        log(f"prepare: counting the tokens of {len(paths)} file(s), {total / 1e6:,.1f} MB")
    if vocab is None:
        vocab = Vocab.build(_stream(paths, level), level, min_freq, max_size)  # type: ignore[arg-type]
    dtype = token_dtype(len(vocab))
    log(f"prepare: writing {out / TOKENS} ({dtype.name} ids, vocabulary of {len(vocab):,})")
    digests = [hashlib.sha256() for _ in paths]
    count = 0
    with atomic_writer(out / TOKENS) as f:
        for piece in _stream(paths, level, digests):
            ids = np.frombuffer(piece, dtype=np.uint8) if isinstance(piece, bytes) else vocab.encode(piece)
            f.write(ids.astype(dtype, copy=False).tobytes())
            count += len(ids)
    if count < 2:
        raise DataError(f"{', '.join(map(str, paths))}: the text holds fewer than 2 tokens; give more text")
    vocab.save(out / VOCAB)
    files = [
        {"path": str(p), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns, "sha256": d.hexdigest()}
        for p, d in zip(paths, digests, strict=True)
    ]
    side = {"format": FORMAT, "version": VERSION, "level": level, "dtype": dtype.name, "tokens": count}
    side |= {"vocab_sha256": _vocab_sha(vocab), "settings": settings, "files": files}
    atomic_write_json(out / SIDECAR, side)
    return Prepared(vocab, TokenFile(out / TOKENS, dtype), False, time.perf_counter() - t0, total)


def cache_dir(specs: Sequence[str | Path], level: str, min_freq: int, max_size: int | None) -> Path:
    """Where ``rnnlm train`` keeps the token file of these files and settings: in the user cache (core/paths)."""
    key = json.dumps([[str(Path(s).expanduser().absolute()) for s in specs], level, min_freq, max_size])
    return cache_root() / "tokens" / hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
