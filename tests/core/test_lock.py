"""The run directory's advisory lock: a second process is refused with a clear error and the first is unharmed; a
lock left by a process killed with SIGKILL is detected as stale and taken over; a read-only folder is a clear error.

The holder is a real process (the lock belongs to a process's open file, so a thread would not show it)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from rnnlm.core.errors import OutputError, RunLockedError
from rnnlm.core.lock import LOCK, lock_folder

pytestmark = pytest.mark.skipif(os.name != "posix", reason="fork and SIGKILL")


def hold(folder: str, ready: str) -> None:
    with lock_folder(folder, "holder"):
        Path(ready).write_text("locked")
        time.sleep(120)


def start_holder(folder: Path, tmp_path: Path):
    """A forked process that takes the lock and sleeps (forked: no interpreter to start)."""
    ready = tmp_path / "ready"
    ready.unlink(missing_ok=True)
    proc = multiprocessing.get_context("fork").Process(target=hold, args=(str(folder), str(ready)))
    proc.start()
    while not ready.exists():
        assert proc.is_alive(), "the holder process died"
        time.sleep(0.01)
    return proc


def test_a_second_process_is_refused_then_takes_the_stale_lock_after_kill_9(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    holder = start_holder(run, tmp_path)
    try:
        with pytest.raises(RunLockedError, match=f"process {holder.pid} ") as e, lock_folder(run):
            pass
        assert str(run) in str(e.value) and "choose another --out" in str(e.value)
        assert holder.is_alive()  # the first is unharmed
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(10)
        with lock_folder(run) as lock:  # the lock died with its process; its record says who held it
            assert lock.stale is not None and lock.stale["pid"] == holder.pid
    finally:
        holder.kill()
        holder.join(10)
    with lock_folder(run) as lock:  # released cleanly last time: nothing stale
        assert lock.stale is None


def test_the_same_process_may_lock_a_folder_again(tmp_path) -> None:
    with lock_folder(tmp_path) as outer, lock_folder(tmp_path) as inner:
        assert inner is outer and outer.count == 2
    assert (tmp_path / LOCK).read_text() == ""


def test_read_only_folder(tmp_path, monkeypatch) -> None:
    import errno

    real = os.open

    def read_only(path, flags, *args):
        if str(path).endswith(LOCK):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(OutputError, match="Read-only file system") as e, lock_folder(tmp_path):
        pass
    assert str(tmp_path) in str(e.value)
