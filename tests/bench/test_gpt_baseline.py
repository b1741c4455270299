"""bench/gpt_baseline.py: the GPT reads only what comes before, its sliding-window score is the brute-force one,
and the script trains, scores and writes its JSON."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import rnnlm
from rnnlm.lm.evaluate import evaluate_windows

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpt_baseline.py"
if str(SCRIPT.parent) not in sys.path:  # as `python bench/gpt_baseline.py` has it: bench/machine.py importable
    sys.path.append(str(SCRIPT.parent))
_spec = importlib.util.spec_from_file_location("gpt_baseline", SCRIPT)
gpt = sys.modules.setdefault("gpt_baseline", importlib.util.module_from_spec(_spec))  # dataclasses look it up
_spec.loader.exec_module(gpt)


def tiny(block: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    return gpt.GPT(gpt.GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=block), vocab_size=7).double()


@pytest.mark.parametrize("training", [True, False])
def test_a_later_token_does_not_change_earlier_logits(training):
    m = tiny().train(training)
    ids = torch.randint(7, (3, 8), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 7
    with torch.no_grad():
        a, _ = m(ids)
        b, _ = m(changed)
    assert torch.equal(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])  # and it does read the token where it stands


def test_sliding_with_stride_one_scores_each_target_after_its_last_block_of_tokens():
    """Stride 1 against a loop over targets: target t read from the (up to) block tokens just before it."""
    m = tiny().eval()
    ids = np.random.default_rng(2).integers(0, 7, size=30)
    total, count = gpt.sliding_loss(m, ids, block=8, stride=1, rows=5)
    expected = 0.0
    with torch.no_grad():
        for t in range(1, len(ids)):
            context = torch.from_numpy(ids[max(0, t - 8) : t])[None]
            logits, _ = m(context)
            expected += F.cross_entropy(logits[:, -1], torch.tensor([ids[t]])).item()
    assert count == len(ids) - 1
    assert total == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("n", [33, 36, 5])  # 36: the last window is set back to end at the text's end
def test_sliding_counts_every_target_once_and_a_full_stride_is_the_windows_protocol(n):
    m = tiny().eval()
    ids = np.random.default_rng(3).integers(0, 7, size=n)
    assert gpt.sliding_loss(m, ids, block=8, stride=4, rows=3)[1] == n - 1
    if (n - 1) % 8 == 0:  # windows that tile the text exactly: the same windows, every target counted
        slide = gpt.sliding_loss(m, ids, block=8, stride=8, rows=3)
        assert slide[0] == pytest.approx(evaluate_windows(m, ids, 8, batch_size=1, seq_len=16)[0], rel=1e-10)


def test_the_schedule_warms_up_then_decays_to_the_floor():
    cfg = gpt.GPTConfig()
    assert gpt.lr_at(0, cfg) == pytest.approx(cfg.lr / 101)
    assert gpt.lr_at(cfg.warmup_iters, cfg) == pytest.approx(cfg.lr)
    assert gpt.lr_at(cfg.lr_decay_iters, cfg) == pytest.approx(cfg.min_lr)
    assert gpt.lr_at(5000, cfg) == cfg.min_lr


@pytest.mark.e2e
def test_the_script_trains_a_few_iterations_and_writes_its_json(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("".join(f"{i} sphinx of black quartz, judge my vow.\n" for i in range(60)), encoding="utf-8")
    src = str(Path(rnnlm.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "gpt.json"
    args = [sys.executable, str(SCRIPT), "--corpus", str(text), "--iters", "3", "--threads", "1", "--out", str(out)]
    subprocess.run(args, check=True, env=env, timeout=300, capture_output=True)
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["iters"] == 3 and report["stop"] == "--iters reached"
    assert report["windows"]["block"] == 64 and report["sliding"]["stride"] == 32
    for figure in (report["windows"], report["sliding"]):  # three steps from random weights: about ln(vocab)
        assert 2 < figure["loss"] < 5
    assert set(report["machine"]) >= {"cpu", "avx512_bf16", "torch", "threads", "load_average_before"}
