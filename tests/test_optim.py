"""Learning-rate schedules are exact functions of the step."""

from __future__ import annotations

import pytest

from rnnlm.config import TrainConfig
from rnnlm.optim import lr_at


def test_warmup_then_constant():
    cfg = TrainConfig(lr=1.0, warmup_steps=4)
    assert [lr_at(cfg, s, None) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_step_decay():
    cfg = TrainConfig(lr=1.0, schedule="step", step_size=2, gamma=0.1)
    assert [lr_at(cfg, s, None) for s in range(5)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_cosine_by_steps_and_by_time():
    cfg = TrainConfig(lr=1.0, schedule="cosine", min_lr_ratio=0.1)
    assert lr_at(cfg, 0, 11) == pytest.approx(1.0)
    assert lr_at(cfg, 5, 10) == pytest.approx(0.55)
    assert lr_at(cfg, 10, 10) == pytest.approx(0.1)
    timed = TrainConfig(lr=1.0, schedule="cosine", time_budget=100.0, epochs=None)
    assert lr_at(timed, 123, None, elapsed_s=50.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="needs an end"):
        lr_at(TrainConfig(schedule="cosine", epochs=None), 0, None)


def test_adamw_takes_its_beta2_from_the_config():
    import torch

    from rnnlm.errors import ConfigError
    from rnnlm.optim import build_optimizer

    model = torch.nn.Linear(3, 2)
    for beta2 in (0.999, 0.99):
        opt = build_optimizer(model, TrainConfig(optimizer="adamw", adam_beta2=beta2))
        assert opt.param_groups[0]["betas"] == (0.9, beta2)
    with pytest.raises(ConfigError, match="--adam-beta2 must be in"):
        TrainConfig(adam_beta2=1.0).check()
