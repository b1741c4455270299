"""Atomic file writes: a reader (or a crash) sees the old file or the whole new one, never a mix.

The data goes to a temporary file in the same directory, is flushed to disk, then renamed over the
target; a rename within one file system is atomic.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any


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


# A lone surrogate (U+D800..U+DFFF) has no UTF-8 form; JSON writes it as its \uXXXX escape, which reads back as the
# same lone surrogate. Surrogates appear only inside JSON strings, so escaping them in the dumped text is exact.
_SURROGATE = re.compile("[\ud800-\udfff]")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write obj as pretty UTF-8 JSON, atomically; any str round-trips, lone surrogates included (as escapes)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))
