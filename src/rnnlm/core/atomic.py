"""Atomic file writes: a reader (or a crash) sees the old file or the whole new one, never a mix.

The data goes to a temporary file in the same directory, is flushed to disk, then renamed over the
target; a rename within one file system is atomic.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write data to path so that path holds either its old content or all of data, never a mix."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # Mode 0o666 filtered by the process umask, as a plain open() would make it (mkstemp would give
    # 0o600, and reading the umask means setting it, which other threads would see).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write obj as pretty UTF-8 JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write in pieces (a token file larger than memory) that appears at ``path`` whole, when the
    block ends without an error; until then ``path`` keeps its old content, and after an error the pieces are gone."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
