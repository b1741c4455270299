"""An advisory lock on a run directory, so that two processes never write one run at once.

``lock_folder(folder)`` takes an exclusive lock on ``folder/.rnnlm.lock`` (``fcntl.flock`` on POSIX, ``msvcrt.locking``
on Windows) and holds it until the context ends. A second process that asks for the same folder gets a
``RunLockedError`` at once, naming the process that holds it; it never waits, and it writes nothing. The lock belongs
to the open file, so the operating system releases it when the holder exits in any way, ``kill -9`` included: a lock
file left behind by a killed process is stale, and the next process takes it over (and is told so, through
``Lock.stale``). The file holds the holder's pid, host and start time, for that message.

The lock is advisory: it binds rnnlm processes only. Within one process the same folder may be locked again (the
count goes up), since a frame run's single model trains in the run directory that the run itself holds.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rnnlm.core.errors import OutputError, RunLockedError

LOCK = ".rnnlm.lock"


@dataclass
class Lock:
    """A held lock: its file, and what the file said of a holder that died without releasing it (or None)."""

    path: Path
    fd: int
    stale: dict | None
    count: int = 1


_HELD: dict[str, Lock] = {}  # folder (resolved) -> the lock this process holds on it


@contextlib.contextmanager
def lock_folder(folder: str | Path, command: str = "rnnlm") -> Iterator[Lock]:
    """Hold the run directory's lock for the duration (the folder must exist); RunLockedError when another process
    holds it, OutputError when the lock file cannot be made (a read-only folder)."""
    key = str(Path(folder).resolve())
    held = _HELD.get(key)
    if held is not None:
        held.count += 1
        try:
            yield held
        finally:
            held.count -= 1
        return
    lock = _acquire(Path(folder), command)
    _HELD[key] = lock
    try:
        yield lock
    finally:
        del _HELD[key]
        _release(lock)


def _acquire(folder: Path, command: str) -> Lock:
    path = folder / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise OutputError(
            f"cannot lock the run directory {folder}: {e.strerror or e} (creating {path}); a run needs a writable "
            "folder: make it writable, or copy the run elsewhere and use the copy"
        ) from None
    try:
        _lock(fd)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
            raise OutputError(f"cannot lock the run directory {folder}: {e.strerror or e}") from None
        holder = _read(path)
        who = f"process {holder.get('pid', '?')} on {holder.get('host', '?')}" if holder else "another process"
        since = f", since {holder['started']}" if holder and "started" in holder else ""
        raise RunLockedError(
            f"{folder} is in use by {who}{since} (it holds {path}); two processes writing one run would mix their "
            f"checkpoints. Wait for it to finish (or stop it), or choose another --out"
        ) from None
    stale = _read(path) or None  # a previous holder's record: it ended without removing it (killed)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    data = json.dumps({**record, "command": command}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0) if hasattr(os, "pwrite") else os.write(fd, data)
    return Lock(path, fd, stale)


def _release(lock: Lock) -> None:
    """Empty the record (a clean exit leaves no stale holder behind), then unlock by closing the file."""
    with contextlib.suppress(OSError):
        os.ftruncate(lock.fd, 0)
    os.close(lock.fd)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


if os.name == "nt":  # pragma: no cover - Windows
    import msvcrt

    def _lock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # the first byte, without waiting; released when the file closes
else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
