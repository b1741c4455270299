"""Learning-rate schedules are exact functions of the step."""

from __future__ import annotations

import pytest
import torch

from rnnlm.training.config import TrainConfig
from rnnlm.training.optim import WeightAverage, lr_at


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

    from rnnlm.core.errors import ConfigError
    from rnnlm.training.optim import build_optimizer

    model = torch.nn.Linear(3, 2)
    for beta2 in (0.999, 0.99):
        opt = build_optimizer(model, TrainConfig(optimizer="adamw", adam_beta2=beta2))
        assert opt.param_groups[0]["betas"] == (0.9, beta2)
    with pytest.raises(ConfigError, match="--adam-beta2 must be in"):
        TrainConfig(adam_beta2=1.0).check()


def test_adamw_is_fused_where_torch_can_and_steps_as_the_plain_one():
    """The fused AdamW (torch 2.4 on; CUDA only before) against torch's per-tensor one, 20 steps."""
    from rnnlm.training.optim import build_optimizer

    torch.manual_seed(0)
    fast, plain = torch.nn.Linear(5, 4), torch.nn.Linear(5, 4)
    plain.load_state_dict(fast.state_dict())
    cfg = TrainConfig(optimizer="adamw", lr=0.01, weight_decay=0.1)
    opt = build_optimizer(fast, cfg)
    major, minor = (int(v) for v in torch.__version__.split(".")[:2])
    assert bool(opt.param_groups[0]["fused"]) == ((major, minor) >= (2, 4))
    ref = torch.optim.AdamW(plain.parameters(), lr=0.01, weight_decay=0.1, foreach=False)
    for _ in range(20):
        x = torch.randn(8, 5)
        for model, o in ((fast, opt), (plain, ref)):
            o.zero_grad()
            model(x).pow(2).sum().backward()
            o.step()
    for a, b in zip(fast.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_weight_average_follows_its_recurrence_and_swaps_back_bit_for_bit():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    model.bias.requires_grad_(False)  # frozen parameters are not averaged
    avg = WeightAverage(model, decay=0.9)
    expected = model.weight.detach().double().clone()
    for t in range(1, 41):
        with torch.no_grad():
            model.weight.add_(torch.randn(2, 3))
        d = min(0.9, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * model.weight.detach().double()
        avg.update()
    assert [len(avg.params), avg.updates] == [1, 40]
    torch.testing.assert_close(avg.average[0].double(), expected, rtol=1e-5, atol=1e-6)
    trained = model.weight.detach().clone()
    with avg.swapped():
        torch.testing.assert_close(model.weight.detach(), avg.average[0], rtol=0, atol=0)
    assert torch.equal(model.weight, trained)
    other = torch.nn.Linear(3, 2)
    other.bias.requires_grad_(False)
    copy = WeightAverage(other, decay=0.9)
    copy.load_state_dict(avg.state_dict())
    assert copy.updates == 40 and torch.equal(copy.average[0], avg.average[0])
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        WeightAverage(model, decay=1.0)


def test_weight_average_averages_batch_norm_statistics_by_the_same_rule():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    avg = WeightAverage(model, decay=0.9)
    bn = model[1]
    mean, var = bn.running_mean.double().clone(), bn.running_var.double().clone()
    for t in range(1, 31):
        loss = model(torch.randn(16, 3) * 2 + 1).pow(2).mean()  # train mode: the step moves the running statistics
        opt.zero_grad()
        loss.backward()
        opt.step()
        avg.update()
        d = min(0.9, (1 + t) / (10 + t))
        mean = d * mean + (1 - d) * bn.running_mean.double()
        var = d * var + (1 - d) * bn.running_var.double()
    averaged = avg.averaged.module[1]
    torch.testing.assert_close(averaged.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(averaged.running_var.double(), var, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(averaged.running_mean, bn.running_mean)  # averaged, not copied
    assert int(averaged.num_batches_tracked) == int(bn.num_batches_tracked) == 30  # a count is not averaged
    x = torch.randn(5, 3)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    with avg.swapped():  # the model evaluates with the averaged weights and their own statistics
        assert torch.equal(bn.running_mean, averaged.running_mean)
        torch.testing.assert_close(model(x), avg.averaged.module.eval()(x), rtol=0, atol=0)
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())  # bit for bit back
    # A resume restores the buffers' average too; one saved before buffers were averaged takes the model's.
    other = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    other.load_state_dict(model.state_dict())
    resumed = WeightAverage(other, decay=0.9)
    resumed.load_state_dict(avg.state_dict())
    assert resumed.updates == 30 and torch.equal(resumed.averaged.module[1].running_var, averaged.running_var)
    old = WeightAverage(other, decay=0.9)
    old.load_state_dict({"updates": 30, "average": avg.state_dict()["average"]})
    assert torch.equal(old.averaged.module[1].running_mean, bn.running_mean)
    assert torch.equal(old.average[0], avg.average[0])


def test_a_fused_adamw_step_bumps_the_weights_versions_that_kept_copies_read():
    """torch's fused AdamW writes the parameters without bumping their version counters; the copies kept of the
    weights (step decoder, one-sequence kernel, an ensemble's mean head) would then serve an earlier step's weights
    (a tagger's resumed run once scored dev differently from the uninterrupted one)."""
    from rnnlm.training.config import TrainConfig
    from rnnlm.training.optim import build_optimizer

    model = torch.nn.Linear(4, 3)
    opt = build_optimizer(model, TrainConfig(optimizer="adamw", lr=0.1))
    before = [p._version for p in model.parameters()]
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    assert all(after > b for after, b in zip((p._version for p in model.parameters()), before, strict=True))
