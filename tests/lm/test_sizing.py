"""--size: named widths, and auto's rule (the widest size the time budget can train for TARGET_STEPS steps)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from rnnlm.core.errors import ConfigError
from rnnlm.lm import sizing
from rnnlm.lm.config import SIZES, build_config, split_settings
from rnnlm.lm.run import train

# Seconds per step by width, as a machine might time them: each width about 1.3x the one before.
FAKE = {192: 0.040, 256: 0.052, 320: 0.068, 384: 0.088, 448: 0.114, 640: 0.200}


def fake_timer(calls: list[int] | None = None):
    def timer(cfg, corpus, device, hidden):
        if calls is not None:
            calls.append(hidden)
        return FAKE[hidden]

    return timer


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        (200.0, "M"),  # 200 / 0.068 = 2,941 steps; L: 2,272 < 2,500
        (250.0, "L"),  # 250 / 0.088 = 2,840; XL: 2,192
        (300.0, "XL"),  # 300 / 0.114 = 2,631; XXL: 1,500
        (3600.0, "XXL"),  # every size reaches 2,500: the widest
        (60.0, "XS"),  # none reaches 2,500: the narrowest
    ],
)
def test_the_rule_picks_the_widest_size_the_budget_trains_for_the_target_steps(budget, expected):
    step_s = {name: FAKE[w] for name, w in SIZES.items()}
    assert sizing.choose_size(step_s, budget) == expected
    # The rule in the words of the module: steps = budget / step time, the widest reaching the target.
    fits = [n for n in SIZES if budget / step_s[n] >= sizing.TARGET_STEPS]
    assert expected == (max(fits, key=SIZES.get) if fits else "XS")


def test_the_probe_stops_at_the_first_size_that_falls_short_and_leaves_the_random_state_alone():
    cfg = build_config(split_settings({"time_budget": 250.0}))
    calls: list[int] = []
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    choice = sizing.probe(cfg, corpus=None, device=torch.device("cpu"), timer=fake_timer(calls))
    assert torch.equal(torch.rand(3), expected_next)  # the run after it draws what a run without it draws
    assert choice.size == "L" and choice.hidden == 384
    assert calls == [192, 256, 320, 384, 448]  # XL (2,192 steps) was the first to fall short; XXL is not timed
    assert choice.predicted_steps("L") == int(250 / 0.088)
    assert "auto -> L (hidden 384)" in choice.describe()
    assert choice.record()["size"] == "L"


def test_fake_timings_that_reach_the_target_only_at_the_start_stop_early():
    cfg = build_config(split_settings({"time_budget": 60.0}))
    calls: list[int] = []
    choice = sizing.probe(cfg, None, torch.device("cpu"), timer=fake_timer(calls))
    assert choice.size == "XS" and calls == [192]


def test_named_sizes_are_widths_and_an_explicit_width_replaces_auto():
    assert build_config().model.size == "auto"  # char-cpu's default
    assert build_config().model.hidden == SIZES["XL"]
    cfg = build_config(split_settings({"size": "S"}))
    assert (cfg.model.size, cfg.model.hidden) == ("S", 256)
    cfg = build_config(split_settings({"hidden": 300}))
    assert (cfg.model.size, cfg.model.hidden) == (None, 300)
    with pytest.raises(ConfigError, match="--size S means --hidden 256"):
        build_config(split_settings({"size": "S", "hidden": 300})).check()
    with pytest.raises(ConfigError, match="--size must be one of"):
        build_config(split_settings({"size": "huge"})).check()
    assert build_config(preset="plain").model.size is None


def test_auto_drops_dropout_for_a_small_size_only_when_the_budget_reads_the_text_a_few_times(monkeypatch):
    assert build_config(split_settings({"size": "S"})).model.dropout_in == 0.1  # a named size is a width only
    monkeypatch.setattr(sizing, "time_step", fake_timer())
    # 140 s: S (2,692 steps of 32 x 64 tokens = 5.5M tokens); M: 2,058 steps, short of the target
    for train_tokens, given, expected in [
        (1_000_000, {}, (0.0, 0.0)),  # 5.5 epochs: no dropout
        (1_000_000, {"weight_drop": 0.3}, (0.0, 0.3)),  # a setting given explicitly stays
        (100_000, {}, (0.1, 0.2)),  # 55 epochs: the recipe's light set stays
    ]:
        cfg = build_config(split_settings({"time_budget": 140.0, **given}))
        corpus = SimpleNamespace(train=range(train_tokens))
        assert sizing.resolve(cfg, corpus, torch.device("cpu"), log=lambda _: None).size == "S"
        assert (cfg.model.hidden, cfg.model.dropout_hidden, cfg.model.weight_drop) == (256, *expected)
        assert cfg.to_dict()["model"]["size"] == "S" and "given" not in cfg.to_dict()["model"]


def test_auto_without_a_time_budget_takes_the_reference_size():
    cfg = build_config(split_settings({"max_steps": 10}))
    assert sizing.resolve(cfg, None, torch.device("cpu"), log=lambda _: None) is None
    assert (cfg.model.size, cfg.model.hidden) == ("XL", 448)


@pytest.mark.e2e
def test_an_auto_run_is_the_run_of_the_size_it_chose(tmp_path, monkeypatch):
    """The auto run writes the chosen size into config.json (and the timings under "resolved") and trains
    bit for bit what a run given that --size trains."""
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 80, encoding="utf-8")
    common = {"paths": [str(text)], "time_budget": 400.0, "max_steps": 3, "layers": 1, "threads": 1, "ema": 0.0}
    common |= {"eval_batch_size": 4, "log_every": 0}
    monkeypatch.setattr(sizing, "time_step", fake_timer())
    said: list[str] = []
    auto = train(build_config(split_settings({**common, "out": str(tmp_path / "auto")})), log=said.append)
    fixed = train(build_config(split_settings({**common, "size": "XL", "out": str(tmp_path / "xl")})), log=print)
    assert auto.config.model.size == "XL" and auto.config.model.hidden == 448
    saved = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert saved["model"]["size"] == "XL" and saved["resolved"]["size"] == "XL"
    assert "XS 0.0400" in saved["resolved"]["size_step_s"]
    assert any(line.startswith("size: auto -> XL (hidden 448)") for line in said)
    for (name, a), (_, b) in zip(auto.model.state_dict().items(), fixed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
