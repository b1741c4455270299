"""bench/tagging.py records the torch threads each model really trained with, not this process's count."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.e2e  # each test runs a benchmark script in a subprocess
SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "tagging.py"
UPOS = {"the": ("DET", "DT"), "a": ("DET", "DT"), "dog": ("NOUN", "NN"), "runs": ("VERB", "VBZ")}


def tiny_ewt(root: Path) -> Path:
    """A shared-data folder with the three UD English EWT files the UPOS benchmark reads, a few lines each."""
    rng = random.Random(0)
    (root / "ud_en_ewt").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        blocks = []
        for k in range(12):
            words = [rng.choice(["the", "a"]), "dog", "runs"]
            rows = [f"{i}\t{w}\t_\t{UPOS[w][0]}\t{UPOS[w][1]}\t_\t0\tdep\t_\t_" for i, w in enumerate(words, 1)]
            blocks.append(f"# sent_id = {k}\n" + "\n".join(rows) + "\n")
        (root / "ud_en_ewt" / f"en_ewt-ud-{split}.conllu").write_text("\n".join(blocks) + "\n", encoding="utf-8")
    return root


def test_the_result_records_each_members_threads_not_the_parents(tmp_path):
    """Two members side by side with --set threads=1 train with one thread each, while this process runs 3."""
    data = tiny_ewt(tmp_path / "data")
    settings = ["epochs=1", "ensemble=2", "jobs=2", "threads=1", "layers=1", "hidden=8", "word_dim=8"]
    settings += ["char_dim=4", "char_filters=4", "batch_size=4"]
    args = [sys.executable, str(SCRIPT), "upos", "--data", str(data), "--out", str(tmp_path / "run"), "--threads", "3"]
    args += ["--repeats", "1"] + [a for s in settings for a in ("--set", s)]
    lm = ["max_steps=3", "layers=1", "hidden=8", "embed=4", "batch_size=4", "seq_len=8"]
    args += [a for s in lm for a in ("--lm-set", s)] + ["--lm-text", str(data / "ud_en_ewt" / "en_ewt-ud-dev.conllu")]
    proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "RNNLM_NATIVE": "0"})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["threads"] == [1, 1]
    assert set(result["stages"]) == {"char_lm", "tagger"}  # the whole preset ran: LMs, then the ensemble
    for i in range(2):  # what each member's trainer was given
        config = json.loads((tmp_path / "run" / "members" / str(i) / "config.json").read_text(encoding="utf-8"))
        assert config["train"]["threads"] == 1


def test_torchs_default_is_the_count_of_the_process_that_trained_the_model(tmp_path):
    if str(SCRIPT.parent) not in sys.path:  # as `python bench/tagging.py` has it: bench/machine.py importable
        sys.path.append(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_tagging", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for setting, want in ((0, torch.get_num_threads()), (4, 4), (-1, -1)):
        (tmp_path / "config.json").write_text(json.dumps({"train": {"threads": setting}}), encoding="utf-8")
        assert bench.threads_of(tmp_path) == want
