"""Atomic file writes: a reader (or a crash) sees the old file or the whole new one, never a mix.

The data go to a temporary file in the same directory (``.<name>.<pid>.<random>.tmp``), are written with
``os.write``, flushed to disk with ``os.fsync``, and the file is renamed over the target with ``os.replace`` (atomic
within one file system); the directory is then synced so that the rename itself survives a power cut. Any failure on
the way (a full disk, a read-only folder, an I/O error) removes the temporary file, leaves the target as it was, and
raises an ``OutputError`` that names the file and the reason. Each step is one call of the ``os`` function, so that a
test can make any single write, fsync or rename fail.

A process killed inside a write leaves only its temporary file behind; ``remove_stale_temporaries`` clears them once
a run directory is locked again (core/lock.py). The fault-injection benchmark (bench/faults.py) pauses a write half
way, or just before its rename, on request (``RNNLM_FAULT_PAUSE``, see ``_pause``), to kill the process there.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from rnnlm.core.errors import OutputError

CHUNK = 1 << 20  # bytes per os.write: a large checkpoint is written in many calls, any of which may fail
_TEMPORARY = re.compile(r"\..+\.(\d+)\.[0-9a-f]{8}\.tmp")  # what atomic_write_bytes names its temporary files


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write data to path so that path holds either its old content or all of data, never a mix.

    Raises OutputError (the target untouched, no temporary file left) when the data cannot be written.
    """
    path = Path(path)
    tmp, fd = _open_temporary(path)
    with _replacing(tmp, path):
        try:
            view = memoryview(data)
            _write_all(fd, view[: len(view) // 2])
            _pause("write", path)
            _write_all(fd, view[len(view) // 2 :])
            os.fsync(fd)
        finally:
            os.close(fd)
        _pause("rename", path)
        os.replace(tmp, path)
    _sync_folder(path)


def _open_temporary(path: Path) -> tuple[Path, int]:
    """A new temporary file beside ``path`` (named so that remove_stale_temporaries knows it), open for writing."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        # Mode 0o666 filtered by the process umask, as a plain open() would make it (mkstemp would give
        # 0o600, and reading the umask means setting it, which other threads would see).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise _error(path, e, "create a temporary file beside") from None
    return tmp, fd


@contextlib.contextmanager
def _replacing(tmp: Path, path: Path) -> Iterator[None]:
    """The block that writes ``tmp`` and renames it over ``path``: whatever fails in it removes ``tmp`` (the target
    keeps its old content), and an OSError becomes the OutputError that names ``path``."""
    try:
        yield
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _error(path, e, "write") from None
        raise


def _write_all(fd: int, view: memoryview) -> None:
    """os.write until every byte is written (a write may take fewer bytes than given)."""
    done = 0
    while done < len(view):
        done += os.write(fd, view[done : done + CHUNK])


def _sync_folder(path: Path) -> None:
    """fsync the folder, so that the rename is on disk too (POSIX; Windows has no folder handles to sync)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENOTSUP):  # some file systems cannot sync a folder: nothing to do
            return
        raise OutputError(
            f"wrote {path} whole, but could not sync its folder ({e.strerror or e}): a power cut now could bring "
            "back its previous content. Check the disk, then run the command again (a training run continues "
            "with --resume)"
        ) from None


def _error(path: Path, e: OSError, action: str) -> OutputError:
    """A clear error for a write that failed, saying what the user can do about it."""
    why = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space on that disk (or choose another --out)"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the folder writable (or choose another --out)"
    else:
        fix = "check the disk"
    return OutputError(
        f"cannot {action} {path}: {why}; {path.name} keeps its previous content (if it had one). "
        f"{fix[0].upper()}{fix[1:]}, then run the command again (a training run continues with --resume)"
    )


def append_text(path: str | Path, text: str) -> None:
    """Append text to a log file (metrics.jsonl), an OutputError when it cannot be written. A line cut short by a
    crash or a full disk is dropped when the run resumes (checkpoint.truncate_metrics)."""
    path = Path(path)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise _error(path, e, "append to") from None


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files that writers killed in mid-write left in ``folder`` (call it with the folder
    locked, so that no live writer's file is taken); returns what was removed."""
    removed = []
    for p in Path(folder).glob(".*.tmp"):
        if _TEMPORARY.fullmatch(p.name) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


# A lone surrogate (U+D800..U+DFFF) has no UTF-8 form; JSON writes it as its \uXXXX escape, which reads back as the
# same lone surrogate. Surrogates appear only inside JSON strings, so escaping them in the dumped text is exact.
_SURROGATE = re.compile("[\ud800-\udfff]")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write obj as pretty UTF-8 JSON, atomically; any str round-trips, lone surrogates included (as escapes)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write in pieces (a token file larger than memory) that appears at ``path`` whole, when the
    block ends without an error; until then ``path`` keeps its old content, and after an error the pieces are gone.
    A write that fails (a full disk) is an OutputError, as in atomic_write_bytes."""
    path = Path(path)
    tmp, fd = _open_temporary(path)
    with _replacing(tmp, path):
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    _sync_folder(path)


def _pause(stage: str, path: Path) -> None:
    """The fault-injection hook of bench/faults.py: with ``RNNLM_FAULT_PAUSE=DIR:STAGE:N`` the N-th atomic write
    whose stage is STAGE (``write``: half of the data written; ``rename``: written and synced, not yet renamed),
    counted over every process of the run (an ensemble's workers too), creates ``DIR/paused.<pid>`` and sleeps, so
    that the benchmark can kill the process at that moment. N = 0 only counts (the benchmark's reference run learns
    how many writes a run makes). Unset (always, outside the benchmark) it costs one dictionary look-up."""
    spec = os.environ.get("RNNLM_FAULT_PAUSE")
    if not spec:
        return
    folder, want, nth = spec.rsplit(":", 2)
    if stage != want:
        return
    # One byte appended per write to DIR/count.STAGE: O_APPEND makes each append atomic among the processes, and
    # this descriptor's offset after its own write is this write's number.
    fd = os.open(os.path.join(folder, f"count.{stage}"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b".")
        count = os.lseek(fd, 0, os.SEEK_CUR)
    finally:
        os.close(fd)
    if count != int(nth):
        return
    Path(folder, f"paused.{os.getpid()}").write_text(str(path), encoding="utf-8")
    time.sleep(600)  # killed here; a benchmark that forgets it still finishes, ten minutes late
