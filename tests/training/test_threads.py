"""ThreadChooser: timed thread counts for training steps, and the num_threads context."""

from __future__ import annotations

import time

import pytest
import torch

from rnnlm.training.threads import ThreadChooser, num_threads


@pytest.fixture
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def test_num_threads_restores_the_setting(two_threads) -> None:
    with num_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with num_threads(None):
        assert torch.get_num_threads() == 2


def run(chooser: ThreadChooser, steps: int, slow_threads: int) -> list[int]:
    """Steps whose time depends on the thread count; returns the count each step ran with."""
    seen = []
    for _ in range(steps):
        with chooser.step():
            seen.append(torch.get_num_threads())
            time.sleep(0.01 if seen[-1] == slow_threads else 0.0)
    return seen


@pytest.mark.parametrize("slow", [1, 2])
def test_the_faster_count_runs_after_the_trials(two_threads, slow: int) -> None:
    chooser = ThreadChooser(setting=-1, every=10, trials=2)
    seen = run(chooser, 20, slow_threads=slow)
    fast = 3 - slow
    assert seen[0] == 2  # warm-up with torch's default
    assert seen[1:5] == [1, 2, 1, 2]  # alternating trials
    assert seen[5:10] == [fast] * 5
    assert seen[10] == fast and seen[11:15] == [1, 2, 1, 2]  # timed again after `every` steps
    assert seen[15:] == [fast] * 5
    assert torch.get_num_threads() == 2  # the process setting is left as it was


def test_a_fixed_setting_is_never_timed(two_threads) -> None:
    assert set(run(ThreadChooser(setting=1, every=5), 12, slow_threads=1)) == {1}


def test_the_default_keeps_torchs_count_so_runs_reproduce(two_threads) -> None:
    """Timing would make the thread count, and so the float sums, depend on the machine's load."""
    assert set(run(ThreadChooser(), 25, slow_threads=2)) == {2}


def test_a_scope_sets_the_count_once_per_change_not_every_step(two_threads, monkeypatch) -> None:
    """Trainer.fit runs its steps in scope(): with --threads 1 the count is set once on the way in and
    restored once on the way out, not set and restored around each of the 30 steps."""
    calls: list[int] = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n) or real(n))
    chooser = ThreadChooser(setting=1)
    with chooser.scope():
        assert set(run(chooser, 30, slow_threads=2)) == {1}
        with chooser.outside():  # an evaluation between steps: the count found before training
            assert torch.get_num_threads() == 2
    assert calls == [1, 2, 1, 2]
    assert torch.get_num_threads() == 2
