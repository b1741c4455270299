"""Evaluation covers every target once, matching an independent whole-sequence computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnlm.config import ModelConfig
from rnnlm.evaluate import evaluate, summarize
from rnnlm.models import RNNLM


def model(cell="gru"):
    torch.manual_seed(0)
    m = RNNLM(ModelConfig(cell=cell, layers=2, hidden=12, embed=6), vocab_size=7)
    return m.double().eval()


def nll(m, ids: np.ndarray) -> float:
    """NLL of ids[1:] given ids[:-1], one forward pass from a zero state."""
    x = torch.from_numpy(ids.astype(np.int64))
    logits, _ = m(x[None, :-1])
    return F.cross_entropy(logits[0], x[1:], reduction="sum").item()


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_one_stream_equals_a_single_forward_pass(cell):
    m = model(cell)
    ids = np.random.default_rng(0).integers(0, 7, size=101).astype(np.uint16)
    total, n = evaluate(m, ids, batch_size=1, seq_len=9)  # chunks of 9 with the state carried
    assert n == 100
    assert total == pytest.approx(nll(m, ids), rel=1e-10)


def test_streams_and_tail_cover_every_target_once():
    m = model()
    ids = np.random.default_rng(1).integers(0, 7, size=103).astype(np.uint16)
    total, n = evaluate(m, ids, batch_size=4, seq_len=10)
    # 102 targets over 4 streams: 25 each, streams start at 0, 25, 50, 75; the last 2 continue stream 4.
    expected = nll(m, ids[0:26]) + nll(m, ids[25:51]) + nll(m, ids[50:76]) + nll(m, ids[75:103])
    assert n == 102
    assert total == pytest.approx(expected, rel=1e-10)


def test_evaluate_restores_training_mode():
    m = model().train()
    evaluate(m, np.arange(7, dtype=np.uint16), batch_size=2)
    assert m.training


def test_summarize():
    s = summarize(10 * math.log(4), 10)
    assert s["loss"] == pytest.approx(math.log(4))
    assert s["ppl"] == pytest.approx(4.0)
    assert s["bpt"] == pytest.approx(2.0)
    assert summarize(1e6, 1)["ppl"] == math.inf
