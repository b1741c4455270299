"""Evaluation covers every target once, matching an independent whole-sequence computation."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnlm.core.errors import ConfigError
from rnnlm.lm.config import LMEvalConfig, ModelConfig
from rnnlm.lm.data.tokens import TokenFile
from rnnlm.lm.evaluate import dynamic_evaluate, evaluate, evaluate_windows, score
from rnnlm.lm.model import RNNLM
from rnnlm.training.metrics import summarize


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


@pytest.mark.parametrize("cell, n, block, batch_size", [("lstm", 101, 8, 2), ("gru", 97, 12, 1), ("rnn", 41, 5, 7)])
def test_windows_protocol_equals_one_cold_window_at_a_time(cell, n, block, batch_size):
    """Batched windows against the plain loop: window k reads ids[k*block : (k+1)*block] from a zero state and
    predicts the token after each, one forward pass per window."""
    m = model(cell)
    ids = np.random.default_rng(4).integers(0, 7, size=n).astype(np.uint16)
    # batch_size * seq_len // block windows per pass: several passes, and a shorter last window (100 = 12 x 8 + 4)
    total, count = evaluate_windows(m, ids, block, batch_size=batch_size, seq_len=9)
    expected = sum(nll(m, ids[s : s + block + 1]) for s in range(0, n - 1, block))
    assert count == n - 1
    assert total == pytest.approx(expected, rel=1e-10)


def test_windows_shards_add_up_to_the_whole():
    m = model()
    ids = np.random.default_rng(5).integers(0, 7, size=90).astype(np.uint16)  # 89 targets: 11 windows of 8, + 1
    whole = evaluate_windows(m, ids, 8, batch_size=1, seq_len=24)
    parts = [evaluate_windows(m, ids, 8, batch_size=1, seq_len=24, shard=(r, 3)) for r in range(3)]
    assert sum(c for _, c in parts) == whole[1] == 89
    assert sum(t for t, _ in parts) == pytest.approx(whole[0], rel=1e-10)


def test_windows_read_a_token_file_as_they_read_an_array(tmp_path):
    m = model()
    ids = np.random.default_rng(8).integers(0, 7, size=75).astype(np.uint8)
    (tmp_path / "ids.bin").write_bytes(b"\0" * 5 + ids.tobytes())  # the text starts 5 tokens into the file
    part = TokenFile(tmp_path / "ids.bin", np.uint8).part(5, 80)
    assert evaluate_windows(m, part, 8, 2, 12) == evaluate_windows(m, ids, 8, 2, 12)


@pytest.mark.parametrize("block", [60, 61, 500])
def test_one_window_holding_the_text_is_the_carried_protocol_in_one_stream(block):
    m = model("lstm")
    ids = np.random.default_rng(6).integers(0, 7, size=61).astype(np.uint16)
    carried = evaluate(m, ids, batch_size=1, seq_len=7)
    windows = evaluate_windows(m, ids, block, batch_size=4, seq_len=16)
    assert windows[1] == carried[1] == 60
    assert windows[0] == pytest.approx(carried[0], rel=1e-10)


def test_score_follows_the_configured_protocol():
    m = model()
    ids = np.random.default_rng(7).integers(0, 7, size=50).astype(np.uint16)
    assert score(m, ids, LMEvalConfig(eval_batch_size=2, eval_seq_len=5))[0] == evaluate(m, ids, 2, 5)[0]
    ec = LMEvalConfig(eval_batch_size=2, eval_seq_len=5, eval_protocol="windows", eval_block=6)
    assert score(m, ids, ec)[0] == evaluate_windows(m, ids, 6, 2, 5)[0]
    assert evaluate_windows(m, ids, 6)[0] != pytest.approx(evaluate(m, ids, 1)[0])  # the protocols do differ


def test_windows_reject_a_block_below_two():
    with pytest.raises(ValueError, match="block >= 2"):
        evaluate_windows(model(), np.arange(7, dtype=np.uint16), block=1)
    with pytest.raises(ConfigError, match="--eval-block must be at least 2, got 1"):
        LMEvalConfig(eval_protocol="windows", eval_block=1).check()
    with pytest.raises(ConfigError, match="--eval-protocol must be one of carried, windows, got 'sliding'"):
        LMEvalConfig(eval_protocol="sliding").check()


def test_summarize():
    s = summarize(10 * math.log(4), 10)
    assert s["loss"] == pytest.approx(math.log(4))
    assert s["ppl"] == pytest.approx(4.0)
    assert s["bpt"] == pytest.approx(2.0)
    assert summarize(1e6, 1)["ppl"] == math.inf


def reference_dynamic(m, ids: np.ndarray, lr: float, decay: float, seq_len: int) -> float:
    """Dynamic evaluation written the plain way: score a chunk, then torch.optim.SGD on its mean loss and the
    pull back toward the starting weights, one stream, state carried."""
    m = copy.deepcopy(m)
    start = [p.detach().clone() for p in m.parameters()]
    opt = torch.optim.SGD(m.parameters(), lr=lr)
    x = torch.from_numpy(ids.astype(np.int64))
    total, state = 0.0, None
    for t in range(0, len(ids) - 1, seq_len):
        X, Y = x[None, t : t + seq_len], x[None, t + 1 : t + seq_len + 1]
        X = X[:, : Y.shape[1]]
        logits, state = m(X, state)
        state = tuple(s.detach() for s in state)
        loss = F.cross_entropy(logits[0], Y[0], reduction="sum")
        total += loss.item()
        opt.zero_grad()
        (loss / Y.numel()).backward()
        opt.step()
        with torch.no_grad():
            for p, p0 in zip(m.parameters(), start, strict=True):
                p.add_(p0 - p, alpha=decay)
    return total


@pytest.mark.parametrize("cell, decay", [("lstm", 0.0), ("gru", 0.1)])
def test_dynamic_evaluation_against_a_plain_sgd_loop(cell, decay):
    m = model(cell)
    ids = np.random.default_rng(2).integers(0, 7, size=58).astype(np.uint16)  # 57 targets: chunks 10 x 5 + 7
    before = [p.detach().clone() for p in m.parameters()]
    total, n = dynamic_evaluate(m, ids, lr=0.5, decay=decay, batch_size=1, seq_len=10)
    assert n == 57
    assert total == pytest.approx(reference_dynamic(m, ids, 0.5, decay, 10), rel=1e-10)
    assert abs(total - evaluate(m, ids, batch_size=1, seq_len=10)[0]) > 1e-3  # it did adapt
    for p, b in zip(m.parameters(), before, strict=True):  # and the model passed in is unchanged
        assert torch.equal(p, b)


def test_dynamic_evaluation_scores_each_chunk_before_learning_from_it():
    m = model()
    ids = np.random.default_rng(3).integers(0, 7, size=41).astype(np.uint16)
    # One chunk holding the whole text: no update comes before any prediction, so the score is the static one.
    total, _ = dynamic_evaluate(m, ids, lr=10.0, batch_size=1, seq_len=100)
    assert total == pytest.approx(nll(m, ids), rel=1e-10)


def test_dynamic_evaluation_learns_a_repeated_text():
    m = model()
    ids = np.tile(np.array([1, 4, 2, 6, 3, 0, 5], dtype=np.uint16), 60)
    static, n = evaluate(m, ids, batch_size=1, seq_len=14)
    dynamic, _ = dynamic_evaluate(m, ids, lr=2.0, batch_size=1, seq_len=7)
    assert dynamic / n < 0.5 * static / n  # the untrained model picks the cycle up as it reads


def test_dynamic_evaluation_rejects_bad_settings():
    with pytest.raises(ValueError, match="lr > 0"):
        dynamic_evaluate(model(), np.arange(7, dtype=np.uint16), lr=0.0)
    with pytest.raises(ValueError, match="decay in"):
        dynamic_evaluate(model(), np.arange(7, dtype=np.uint16), lr=0.1, decay=1.0)


def test_dynamic_evaluation_puts_the_weights_back_after_an_interruption():
    m = model().train()
    before = [p.detach().clone() for p in m.parameters()]
    forward, calls = m.forward, []

    def interrupted_at_the_third_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return forward(*args, **kwargs)

    m.forward = interrupted_at_the_third_chunk  # two updates have been made by then
    with pytest.raises(KeyboardInterrupt):
        dynamic_evaluate(m, np.arange(40, dtype=np.uint16) % 7, lr=1.0, batch_size=1, seq_len=5)
    assert all(torch.equal(p, b) for p, b in zip(m.parameters(), before, strict=True))
    assert m.training
