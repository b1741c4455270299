"""bench/tagging_predict.py times a run's tagger both ways and finds the same tags (a tiny float32 tagger)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rnnlm.tagging import api as tagging
from tiny import TAGGER

pytestmark = pytest.mark.e2e  # trains a tagger, then runs the script in a subprocess
SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "tagging_predict.py"


def test_both_ways_are_timed_and_tag_alike(tiny_conll, tmp_path):
    data = tiny_conll(train=24, dev=0)
    settings = {**TAGGER, "epochs": 1, "progress": False, "threads": 1, "matmul_dtype": "float32"}
    tagging.train(data / "train.txt", out=str(tmp_path / "run"), log=lambda _: None, **settings)
    args = [sys.executable, str(SCRIPT), str(tmp_path / "run"), str(data / "train.txt"), "--single", "4"]
    args += ["--batched", "10", "--repeats", "1", "--json", str(tmp_path / "out.json")]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert result == json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["same_tags"] == {"single": True, "batched": True}
    assert result["single_sentences"] == 4 and result["batched_sentences"] == 10
    for way in ("reference", "fast"):
        assert len(result["seconds"][way]["single"]) == 1 and result[way]["single_sentences_per_s"] > 0
