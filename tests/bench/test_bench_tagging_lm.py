"""bench/tagging_lm.py: the two character LMs trained side by side are the models trained one after the other."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.e2e  # each test runs a benchmark script in a subprocess
SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "tagging_lm.py"
WORDS = ["the", "market", "rose", "on", "Monday", "Reuters", "London", "said", "shares", "bank", "of"]


def tiny_data(root: Path) -> Path:
    """A shared-data folder with the files the NER text is built from, a few kilobytes each."""
    rng = random.Random(0)
    (root / "conll2003").mkdir(parents=True)
    (root / "wikitext-2").mkdir()
    lines = []
    for _ in range(60):
        lines += [f"{rng.choice(WORDS)} NN I-NP O" for _ in range(rng.randint(3, 9))] + [""]
    (root / "conll2003" / "eng.train").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name in ("wikitext-2/wiki.valid.tokens", "wikitext-2/wiki.test.tokens", "timemachine.txt"):
        text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(40))
        (root / name).write_text(text + "\n", encoding="utf-8")
    return root


def train(data: Path, out: Path, jobs: int) -> dict:
    settings = ["max_steps=4", "hidden=16", "embed=8", "layers=1", "batch_size=4", "seq_len=16"]
    args = [sys.executable, str(SCRIPT), "ner", "--data", str(data), "--out", str(out), "--jobs", str(jobs)]
    args += ["--budget", "600"] + [a for s in settings for a in ("--set", s)]
    proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "RNNLM_NATIVE": "0"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_side_by_side_training_gives_the_sequential_models(tmp_path):
    data = tiny_data(tmp_path / "data")
    one, two = train(data, tmp_path / "one", jobs=1), train(data, tmp_path / "two", jobs=2)
    assert one["jobs"] == 1 and two["jobs"] == 2 and one["threads"] == two["threads"] == 1
    text = (tmp_path / "one" / "text.txt").read_text(encoding="utf-8")
    reversed_text = (tmp_path / "one" / "text.reversed.txt").read_text(encoding="utf-8")
    assert [line[::-1] for line in reversed_text.splitlines()] == text.splitlines()
    for direction in ("forward", "backward"):
        assert one[direction]["steps"] == two[direction]["steps"] == 4
        assert one[direction]["val_bpc"] == two[direction]["val_bpc"]
        a = load_file(tmp_path / "one" / direction / "last.safetensors")
        b = load_file(tmp_path / "two" / direction / "last.safetensors")
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), direction
    forward = load_file(tmp_path / "one" / "forward" / "last.safetensors")
    backward = load_file(tmp_path / "one" / "backward" / "last.safetensors")
    assert any(not forward[k].equal(backward[k]) for k in forward if k in backward)  # two texts, two models
