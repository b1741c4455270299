"""Checkpoint writes under injected faults: ENOSPC (and EIO) at every write, fsync and rename of a checkpoint save,
a read-only folder, and a reader during writes. The previous checkpoint must stay intact and readable, no temporary
file may stay behind, and the error must be an OutputError that names the file and says what to do."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnlm.core import atomic
from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import CheckpointError, OutputError

# A checkpoint of several MB, so that its data take several os.write calls (atomic.CHUNK bytes each).
OLD = {"w": torch.zeros(300_000), "b": torch.arange(5.0)}
NEW = {"w": torch.ones(900_000), "b": torch.arange(5.0) + 1}
TRAINER = {"optimizer": {"state": {0: {"exp_avg": torch.full((3,), 2.0)}}, "lr": 0.1}, "step": 7}


class Faults:
    """Counts the calls of one os function made by a checkpoint save, and fails the n-th with an OSError; ``renamed``
    says whether os.replace had already put the new file in place when it failed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str, fail_at: int | None, code: int) -> None:
        self.calls = 0
        self.renamed = False
        real, real_replace = getattr(os, name), os.replace

        def wrapper(*args, **kw):
            self.calls += 1
            if self.calls == fail_at:
                raise OSError(code, os.strerror(code))
            out = real(*args, **kw)
            self.renamed |= name == "replace"
            return out

        def replace(*args, **kw):
            real_replace(*args, **kw)
            self.renamed = True

        if name != "replace":
            monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, name, wrapper)


def save(path: Path, tensors: dict[str, torch.Tensor], step: int) -> None:
    ckpt.save_weights(path, tensors, {"step": step}, TRAINER)


def intact(path: Path, tensors: dict[str, torch.Tensor], step: int) -> None:
    weights, meta, state = ckpt.load_checkpoint(path)
    assert meta["step"] == str(step)
    assert all(torch.equal(weights[k], v) for k, v in tensors.items())
    assert torch.equal(state["optimizer"]["state"][0]["exp_avg"], TRAINER["optimizer"]["state"][0]["exp_avg"])


def injection_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many calls of each os function one save of NEW makes (so that every one of them is failed in turn)."""
    counts = {}
    for name in ("open", "write", "fsync", "replace"):
        with monkeypatch.context() as m:
            f = Faults(m, name, None, errno.ENOSPC)
            save(tmp_path / "count.safetensors", NEW, 2)
            counts[name] = f.calls
    return counts


@pytest.mark.e2e
def test_every_write_fsync_and_rename_of_a_checkpoint_save_can_fail_cleanly(tmp_path, monkeypatch) -> None:
    counts = injection_points(tmp_path, monkeypatch)
    # open: the temporary file and the folder (to sync it); fsync: the data and the folder
    assert counts["write"] >= 3 and counts["open"] == 2 and counts["fsync"] == 2 and counts["replace"] == 1
    path = tmp_path / "last.safetensors"
    tried = after_rename = 0
    for name, n in counts.items():
        for k in range(1, n + 1):
            for code in (errno.ENOSPC, errno.EIO):
                save(path, OLD, 1)
                with monkeypatch.context() as m:
                    f = Faults(m, name, k, code)
                    with pytest.raises(OutputError, match=os.strerror(code)) as e:
                        save(path, NEW, 2)
                if f.renamed:  # the folder's open or fsync failed: the new file, whole, is in place
                    intact(path, NEW, 2)
                    after_rename += 1
                else:
                    intact(path, OLD, 1)  # the previous checkpoint, whole
                assert str(path) in str(e.value)
                assert "run the command again" in str(e.value)
                assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
                tried += 1
    assert tried == 2 * sum(counts.values()) and after_rename == 4


def test_a_short_write_is_completed(tmp_path, monkeypatch) -> None:
    """os.write may take fewer bytes than given (a signal, a pipe, a full quota on some systems)."""
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(data[:1000])))
    save(tmp_path / "last.safetensors", NEW, 2)
    monkeypatch.undo()
    intact(tmp_path / "last.safetensors", NEW, 2)


def test_metrics_line_on_a_full_disk(tmp_path, monkeypatch) -> None:
    def full(*args, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(OutputError, match="No space left"):
        atomic.append_text(tmp_path / "metrics.jsonl", "{}\n")


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() == 0, reason="root writes to read-only folders")
def test_read_only_folder(tmp_path) -> None:
    save(tmp_path / "last.safetensors", OLD, 1)
    tmp_path.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(OutputError, match="(?i)make the folder writable"):
            save(tmp_path / "last.safetensors", NEW, 2)
    finally:
        tmp_path.chmod(stat.S_IRWXU)
    intact(tmp_path / "last.safetensors", OLD, 1)


def test_read_only_folder_as_root_too(tmp_path, monkeypatch) -> None:
    """EROFS (a read-only mount) where chmod cannot show it: the error an os.open in such a folder gives."""
    save(tmp_path / "last.safetensors", OLD, 1)
    Faults(monkeypatch, "open", 1, errno.EROFS)
    with pytest.raises(OutputError, match="(?i)make the folder writable"):
        save(tmp_path / "last.safetensors", NEW, 2)
    monkeypatch.undo()
    intact(tmp_path / "last.safetensors", OLD, 1)


def test_stale_temporaries_are_removed_and_only_they(tmp_path) -> None:
    stale = tmp_path / ".last.safetensors.12345.0123abcd.tmp"
    stale.write_bytes(b"half")
    keep = [tmp_path / ".hidden.tmp", tmp_path / "notes.tmp", tmp_path / "last.safetensors"]
    for p in keep:
        p.write_bytes(b"x")
    assert atomic.remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and all(p.exists() for p in keep)


def test_a_reader_during_writes_always_sees_a_whole_checkpoint(tmp_path) -> None:
    """A writer thread saves checkpoints of changing sizes while the test reads the file again and again: every
    read is one whole checkpoint (its step and its values agree). Atomicity is the file system's, so a thread
    shows it as well as another process (eval, generate or serve beside a training run) would."""
    path = tmp_path / "last.safetensors"
    ckpt.save_weights(path, {"w": torch.zeros(10)}, {"step": 0}, {"step": 0})
    sizes = [10, *(20_000 * k for k in range(1, 8))]
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for step in range(1, 31):
                size = sizes[1 + step % 7]  # files of changing sizes: a torn read would not parse
                ckpt.save_weights(path, {"w": torch.full((size,), float(step))}, {"step": step}, {"step": step})
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)

    writer = threading.Thread(target=write)
    writer.start()
    seen = set()
    while writer.is_alive():
        weights, meta, state = ckpt.load_checkpoint(path)  # never a CheckpointError: never a torn file
        step = int(meta["step"])
        assert state == {"step": step}
        assert np.all(weights["w"].numpy() == step) and len(weights["w"]) in sizes
        seen.add(step)
    writer.join()
    assert not errors and int(ckpt.load_checkpoint(path)[1]["step"]) == 30
    assert len(seen) >= 2  # the reads did overlap the writes


def test_metrics_with_a_line_cut_short_by_a_kill(tmp_path) -> None:
    """`rnnlm info` and `plot` read metrics.jsonl while a run may be killed in mid-line: the cut line is left out."""
    path = tmp_path / ckpt.METRICS
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "val_lo', encoding="utf-8")
    assert ckpt.read_metrics(tmp_path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n', encoding="utf-8")
    with pytest.raises(CheckpointError, match="line 2"):
        ckpt.read_metrics(tmp_path)
    path.write_bytes(b'{"step": 1}\n\xff\n')
    with pytest.raises(CheckpointError, match="byte 12"):
        ckpt.read_metrics(tmp_path)


def test_the_fault_pause_counts_writes_over_every_process_of_a_run(tmp_path, monkeypatch) -> None:
    """bench/faults.py's hook: the N-th write counted over all the run's processes (here 4 writes that another
    process made, found in the shared counter), pauses where asked and nowhere else; N = 0 only counts."""
    pause = tmp_path / "pause"
    pause.mkdir()
    slept = []
    monkeypatch.setattr(atomic.time, "sleep", slept.append)
    monkeypatch.setenv("RNNLM_FAULT_PAUSE", f"{pause}:rename:0")
    for i in range(3):
        atomic.atomic_write_bytes(tmp_path / f"count{i}.bin", b"x" * 10)
    assert (pause / "count.rename").read_bytes() == b"..." and not (pause / "count.write").exists()
    assert slept == [] and not list(pause.glob("paused.*"))

    (pause / "count.rename").write_bytes(b"....")  # another process of the run made 4 writes
    monkeypatch.setenv("RNNLM_FAULT_PAUSE", f"{pause}:rename:6")
    atomic.atomic_write_bytes(tmp_path / "fifth.bin", b"5")
    assert slept == [] and not list(pause.glob("paused.*"))
    atomic.atomic_write_bytes(tmp_path / "sixth.bin", b"6")
    assert slept == [600]
    assert (pause / f"paused.{os.getpid()}").read_text() == str(tmp_path / "sixth.bin")
    atomic.atomic_write_bytes(tmp_path / "seventh.bin", b"7")
    assert slept == [600]  # the sixth only
