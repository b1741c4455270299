"""Samplers and evaluation for any length, batch size and sequence length (Hypothesis).

The samplers are checked against their specification (batching.py's docstring): sequential batches walk
``batch_size`` contiguous rows end to end, each input position once, the targets one step ahead; random batches are
distinct whole windows of ``seq_len + 1`` tokens starting at ``offset + k * seq_len``; fewer than ``batch_size``
windows (or ``seq_len`` steps per row) are left out. ``evaluate`` for any chunking equals one forward pass per
stream, computed apart.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rnnlm.core.errors import DataError
from rnnlm.lm.config import ModelConfig
from rnnlm.lm.data.batching import BatchSampler
from rnnlm.lm.evaluate import evaluate
from rnnlm.lm.model import RNNLM

pytestmark = pytest.mark.e2e  # 200 examples per property
# A quarter of the profile's examples per property (CI: 50; bench/fuzz.sh's deep profile: 2,500): the readers get
# the full count; these properties need fewer to reach their edge cases (empty, one batch, one step).
FEWER = settings(max_examples=max(1, settings().max_examples // 4))


def make(n: int, B: int, T: int, sampling: str, random_offset: bool, variable_len: bool, seed: int):
    ids = np.arange(n, dtype=np.int64)  # ids equal positions: a batch says which positions it holds
    try:
        return BatchSampler(ids, B, T, sampling, random_offset, seed, variable_len)
    except DataError as e:
        assert "needs at least" in str(e)
        worst = T - 1 if random_offset else 0
        need = (B * T + 1 if sampling == "random" else B * (T + 1)) + worst
        assert n < need  # refused only when one batch cannot be made
        return None


SHAPES = dict(
    n=st.integers(1, 400),
    B=st.integers(1, 9),
    T=st.integers(1, 40),
    random_offset=st.booleans(),
    seed=st.integers(0, 2**31),
    epoch=st.integers(0, 5),
)


@FEWER
@given(**SHAPES, variable_len=st.booleans())
def test_sequential_batches_walk_each_row_once(n, B, T, random_offset, seed, epoch, variable_len) -> None:
    s = make(n, B, T, "sequential", random_offset, variable_len, seed)
    assume(s is not None)
    plan = s.epoch_plan(epoch)
    assert 0 <= plan.offset < T and (random_offset or plan.offset == 0)
    L = (n - plan.offset) // B  # tokens per row
    batches = list(s.batches(epoch))
    assert len(batches) == s.num_batches(epoch) >= 1
    X = torch.cat([x for x, _ in batches], dim=1)  # (B, steps): the rows, batch after batch
    Y = torch.cat([y for _, y in batches], dim=1)
    steps = X.shape[1]
    rows = plan.offset + np.arange(B)[:, None] * L + np.arange(steps)[None, :]
    assert np.array_equal(X.numpy(), rows)  # each row walked from its start, no gap, no repeat
    assert np.array_equal(Y.numpy(), rows + 1)  # targets one step ahead, never past the row's end
    assert steps <= L - 1
    if not variable_len:
        assert all(x.shape == (B, T) for x, _ in batches)
        assert L - 1 - steps < T  # fewer than seq_len steps of a row are left out
    # A resume mid-epoch regenerates the same batches.
    k = len(batches) // 2
    again = list(s.batches(epoch, start=k))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again, batches[k:], strict=True))


@FEWER
@given(**SHAPES)
def test_random_batches_are_distinct_whole_windows(n, B, T, random_offset, seed, epoch) -> None:
    s = make(n, B, T, "random", random_offset, False, seed)
    assume(s is not None)
    plan = s.epoch_plan(epoch)
    windows = (n - plan.offset - 1) // T
    batches = list(s.batches(epoch))
    assert len(batches) == s.num_batches(epoch) == windows // B >= 1
    starts = []
    for x, y in batches:
        assert x.shape == y.shape == (B, T)
        assert torch.equal(y, x + 1)  # contiguous windows, targets one ahead
        starts += x[:, 0].tolist()
    assert len(set(starts)) == len(starts)  # no window twice
    assert all((st - plan.offset) % T == 0 and st + T <= n - 1 for st in starts)  # on the grid, inside the text
    assert windows - len(starts) < B  # fewer than batch_size windows left out
    k = len(batches) // 2
    again = list(s.batches(epoch, start=k))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again, batches[k:], strict=True))


@pytest.fixture(scope="module")
def model() -> RNNLM:
    torch.manual_seed(0)
    return RNNLM(ModelConfig(cell="lstm", layers=2, hidden=6, embed=4, engine="scratch"), vocab_size=5).double().eval()


def one_pass(m: RNNLM, ids: np.ndarray) -> float:
    """NLL of ids[1:] given ids[:-1] in one forward pass from a zero state."""
    x = torch.from_numpy(ids.astype(np.int64))
    logits, _ = m(x[None, :-1])
    return F.cross_entropy(logits[0], x[1:], reduction="sum").item()


@FEWER
@given(ids=st.lists(st.integers(0, 4), min_size=0, max_size=120), seq_len=st.integers(1, 50))
def test_evaluate_one_stream_equals_one_forward_pass_for_any_chunking(model, ids: list[int], seq_len: int) -> None:
    arr = np.array(ids, dtype=np.uint16)
    total, count = evaluate(model, arr, batch_size=1, seq_len=seq_len)
    assert count == max(len(ids) - 1, 0)
    assert total == pytest.approx(one_pass(model, arr) if len(ids) > 1 else 0.0, rel=1e-9, abs=1e-9)


@FEWER
@given(ids=st.lists(st.integers(0, 4), min_size=2, max_size=120), batch=st.integers(1, 12), seq_len=st.integers(1, 50))
def test_evaluate_streams_equal_one_pass_per_stream(model, ids: list[int], batch: int, seq_len: int) -> None:
    """Any batch and chunking: the sum over streams of one forward pass each, the tail continuing the last."""
    arr = np.array(ids, dtype=np.uint16)
    total, count = evaluate(model, arr, batch_size=batch, seq_len=seq_len)
    targets = len(ids) - 1
    streams = min(batch, targets)
    L = targets // streams
    # Stream b scores targets b*L+1 .. (b+1)*L; the last stream runs on to the end of the text.
    want = sum(one_pass(model, arr[b * L : (b + 1) * L + 1]) for b in range(streams - 1))
    want += one_pass(model, arr[(streams - 1) * L :])
    assert count == targets
    assert total == pytest.approx(want, rel=1e-9, abs=1e-9)
