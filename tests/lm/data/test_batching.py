"""The two minibatch samplers, checked on ``np.arange(N)`` so that every id is its own position."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnlm.core.errors import DataError
from rnnlm.lm.data.batching import BatchSampler


def collect(sampler: BatchSampler, epoch: int, start: int = 0) -> list[tuple[list, list]]:
    return [(X.tolist(), Y.tolist()) for X, Y in sampler.batches(epoch, start)]


def test_sequential_exact_batches() -> None:
    # 20 tokens, B=2 -> rows [0..9] and [10..19]; T=3 -> (10 - 1) // 3 = 3 batches.
    s = BatchSampler(np.arange(20), batch_size=2, seq_len=3, sampling="sequential", random_offset=False, seed=0)
    assert s.carries_state and s.num_batches(0) == 3
    assert collect(s, 0) == [
        ([[0, 1, 2], [10, 11, 12]], [[1, 2, 3], [11, 12, 13]]),
        ([[3, 4, 5], [13, 14, 15]], [[4, 5, 6], [14, 15, 16]]),
        ([[6, 7, 8], [16, 17, 18]], [[7, 8, 9], [17, 18, 19]]),
    ]


def test_sequential_is_d2l_consecutive_with_offset_zero() -> None:
    ids = np.arange(101)
    B, T = 4, 5
    s = BatchSampler(ids, B, T, "sequential", False, 0)
    L = len(ids) // B  # d2l: batch_len = data_len // batch_size
    rows = ids[: B * L].reshape(B, L)
    expected = [(rows[:, i * T : (i + 1) * T], rows[:, i * T + 1 : (i + 1) * T + 1]) for i in range((L - 1) // T)]
    got = list(s.batches(0))
    assert len(got) == len(expected) == s.num_batches(0)
    for (X, Y), (eX, eY) in zip(got, expected, strict=True):
        assert X.tolist() == eX.tolist() and Y.tolist() == eY.tolist()


def test_sequential_rows_continue_across_batches_with_random_offset() -> None:
    s = BatchSampler(np.arange(1000), 4, 7, "sequential", True, seed=3)
    for epoch in range(4):
        offset = s.epoch_plan(epoch).offset
        batches = list(s.batches(epoch))
        assert batches[0][0][0, 0].item() == offset
        for (X0, Y0), (X1, _) in zip(batches, batches[1:], strict=False):
            assert torch.equal(X1[:, 0], Y0[:, -1])  # row b of batch i+1 picks up where row b of batch i ended
            assert torch.equal(X1[:, 0], X0[:, -1] + 1)


def test_random_windows_follow_the_permutation() -> None:
    ids = np.arange(20)
    s = BatchSampler(ids, 2, 3, "random", random_offset=False, seed=0)
    assert not s.carries_state
    # n = (20 - 0 - 1) // 3 = 6 windows starting at 0, 3, ..., 15; 6 // 2 = 3 batches.
    perm = np.random.default_rng([0, 0]).permutation(6)
    assert s.epoch_plan(0).order.tolist() == perm.tolist()
    assert s.num_batches(0) == 3
    for i, (X, Y) in enumerate(s.batches(0)):
        starts = perm[2 * i : 2 * i + 2] * 3
        assert X.tolist() == [[k, k + 1, k + 2] for k in starts]
        assert Y.tolist() == [[k + 1, k + 2, k + 3] for k in starts]


def test_random_offset_draws_offset_first_then_permutation() -> None:
    ids = np.arange(200)
    s = BatchSampler(ids, 3, 4, "random", random_offset=True, seed=11)
    for epoch in range(3):
        rng = np.random.default_rng([11, epoch])
        offset = int(rng.integers(0, 4))
        perm = rng.permutation((200 - offset - 1) // 4)
        plan = s.epoch_plan(epoch)
        assert plan.offset == offset and plan.order.tolist() == perm.tolist()
        starts = [X[:, 0].tolist() for X, _ in s.batches(epoch)]
        assert [k for row in starts for k in row] == (offset + perm[: len(starts) * 3] * 4).tolist()


def test_random_windows_appear_at_most_once_per_epoch() -> None:
    s = BatchSampler(np.arange(503), 4, 6, "random", True, seed=5)
    for epoch in range(3):
        starts = [k for X, _ in s.batches(epoch) for k in X[:, 0].tolist()]
        offset = s.epoch_plan(epoch).offset
        assert len(starts) == len(set(starts)) == s.num_batches(epoch) * 4
        assert all((k - offset) % 6 == 0 for k in starts)


@pytest.mark.parametrize("sampling", ["random", "sequential"])
def test_same_seed_and_epoch_give_identical_batches(sampling: str) -> None:
    ids = np.arange(400, dtype=np.uint16)
    a = BatchSampler(ids, 3, 5, sampling, True, seed=7)
    b = BatchSampler(ids, 3, 5, sampling, True, seed=7)
    assert collect(a, 2) == collect(b, 2)
    # Another seed changes the epoch (seed 8's offset for epoch 2 differs from seed 7's).
    assert collect(a, 2) != collect(BatchSampler(ids, 3, 5, sampling, True, seed=8), 2)


@pytest.mark.parametrize("sampling", ["random", "sequential"])
def test_start_skips_batches(sampling: str) -> None:
    s = BatchSampler(np.arange(300), 2, 4, sampling, True, seed=1)
    assert collect(s, 1, start=5) == collect(s, 1)[5:]
    assert collect(s, 1, start=s.num_batches(1)) == []


def test_tensors_are_int64_batch_first() -> None:
    s = BatchSampler(np.arange(100, dtype=np.uint16), 4, 5, "random", False, 0)
    X, Y = next(iter(s.batches(0)))
    assert X.dtype == Y.dtype == torch.int64 and X.shape == Y.shape == (4, 5)
    assert X.is_contiguous() and Y.is_contiguous()


@pytest.mark.parametrize(
    ("sampling", "random_offset", "needed"),
    [
        ("random", False, 2 * 3 + 1),
        ("random", True, 2 * 3 + 1 + 2),
        ("sequential", False, 2 * 4),
        ("sequential", True, 2 * 4 + 2),
    ],
)
def test_too_short_for_one_batch(sampling: str, random_offset: bool, needed: int) -> None:
    BatchSampler(np.arange(needed), 2, 3, sampling, random_offset, 0)  # just enough
    with pytest.raises(DataError) as e:
        BatchSampler(np.arange(needed - 1), 2, 3, sampling, random_offset, 0)
    msg = str(e.value)
    assert f"has {needed - 1} tokens" in msg and f"needs at least {needed}" in msg
    assert "--batch-size" in msg and "--seq-len" in msg


def test_every_offset_yields_a_batch() -> None:
    # With just enough tokens, every epoch (whatever its offset) must still have one batch.
    for sampling, n in (("random", 2 * 3 + 1 + 2), ("sequential", 2 * 4 + 2)):
        s = BatchSampler(np.arange(n), 2, 3, sampling, True, 0)
        assert all(s.num_batches(e) >= 1 for e in range(20))


def test_bad_arguments() -> None:
    with pytest.raises(DataError, match="unknown sampling"):
        BatchSampler(np.arange(100), 2, 3, "shuffled", False, 0)
    with pytest.raises(DataError, match="at least 1"):
        BatchSampler(np.arange(100), 0, 3, "random", False, 0)
    with pytest.raises(DataError, match="1-D"):
        BatchSampler(np.zeros((10, 10)), 2, 3, "random", False, 0)


def test_variable_lengths_walk_the_rows_end_to_end() -> None:
    ids = np.arange(5000)
    B, T = 4, 20
    s = BatchSampler(ids, B, T, "sequential", True, seed=1, variable_len=True)
    for epoch in range(3):
        plan = s.epoch_plan(epoch)
        batches = list(s.batches(epoch))
        assert len(batches) == s.num_batches(epoch) == len(plan.bounds) - 1
        widths = [X.shape[1] for X, _ in batches]
        assert min(widths) >= 5 and len(set(widths)) > 3  # they vary
        assert abs(np.median(widths) - T) <= 4
        X = torch.cat([X for X, _ in batches], dim=1)  # (B, covered)
        Y = torch.cat([Y for _, Y in batches], dim=1)
        L = (len(ids) - plan.offset) // B
        rows = torch.from_numpy(ids[plan.offset : plan.offset + B * L].reshape(B, L))
        assert torch.equal(X, rows[:, : X.shape[1]]) and torch.equal(Y, rows[:, 1 : X.shape[1] + 1])
        assert L - 1 - X.shape[1] < T + 30  # what is left at the end of the rows is less than a window
    assert s.epoch_plan(0).bounds.tolist() != s.epoch_plan(1).bounds.tolist()
    again = BatchSampler(ids, B, T, "sequential", True, seed=1, variable_len=True)
    assert collect(again, 1, start=5) == collect(s, 1)[5:]  # a resume regenerates the same epoch


def test_variable_lengths_need_sequential_sampling() -> None:
    with pytest.raises(DataError, match="sequential"):
        BatchSampler(np.arange(500), 2, 5, "random", False, 0, variable_len=True)
