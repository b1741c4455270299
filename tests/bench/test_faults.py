"""bench/faults.py's short version: a language-model run killed with SIGKILL three times inside its checkpoint
writes (half written, or written and not yet renamed), resumed each time, and finished: nothing corrupt, nothing
lost, and its final weights equal an uninterrupted run's bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rnnlm

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(os.name != "posix", reason="process groups and SIGKILL")]
SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "faults.py"


def test_three_kills_inside_checkpoint_writes(tmp_path) -> None:
    src = str(Path(rnnlm.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "faults.json"
    args = ["lm", "--kills", "3", "--kills-per-trial", "3", "--steps", "20", "--modes", "write,rename"]
    args += ["--work", str(tmp_path / "work"), "--json", str(out), "--seed", "1"]
    subprocess.run([sys.executable, str(SCRIPT), *args], check=True, env=env, timeout=600, capture_output=True)
    result = json.loads(out.read_text())
    summary = result["summary"]
    assert summary["kills"] == 3 and summary["paused_in_checkpoint_writes"] == 3  # each kill inside a write
    assert summary["unrecoverable_runs"] == summary["corrupt_checkpoints"] == summary["lost_best_checkpoints"] == 0
    assert summary["trials"] == summary["bit_exact_trials"] == 1
