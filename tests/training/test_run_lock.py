"""Two processes on one run directory: the second is refused before it writes anything, the first is unharmed."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from rnnlm.core.errors import RunLockedError
from rnnlm.core.lock import lock_folder
from rnnlm.lm import run as lm_run

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(os.name != "posix", reason="fork")]


def hold(folder: str, ready: str) -> None:
    with lock_folder(folder, "rnnlm train"):
        Path(ready).write_text("locked")
        time.sleep(120)


def test_a_resume_while_another_process_trains_the_run_is_refused(tiny_lm_config, tmp_path) -> None:
    run = lm_run.train(tiny_lm_config(max_steps=3), log=lambda _: None).run_dir
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".rnnlm.lock"}
    ready = tmp_path / "ready"
    holder = multiprocessing.get_context("fork").Process(target=hold, args=(str(run), str(ready)))
    holder.start()  # stands for a training process that holds the run
    try:
        while not ready.exists():
            time.sleep(0.01)
        with pytest.raises(RunLockedError, match=f"process {holder.pid} "):
            lm_run.train(tiny_lm_config(max_steps=6), resume=run, log=lambda _: None)
        after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        assert {k: v for k, v in after.items() if k != ".rnnlm.lock"} == before  # nothing written
        assert holder.is_alive()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(10)
    lines: list[str] = []
    result = lm_run.train(tiny_lm_config(max_steps=6), resume=run, log=lines.append)  # the stale lock is taken over
    assert result.stop_reason.startswith("--max-steps")
    assert any(f"process {holder.pid} " in line and "taking it over" in line for line in lines)
