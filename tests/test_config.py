"""Configs: presets, flat settings, JSON round trip."""

from __future__ import annotations

import pytest

from rnnlm.config import PRESETS, RunConfig, build_config, split_overrides


def test_preset_then_explicit_overrides_win():
    cfg = build_config(split_overrides({"sampling": "random", "lr": 50.0}), preset="d2l")
    assert cfg.train.sampling == "random" and cfg.train.lr == 50.0
    assert cfg.model.hidden == 256 and cfg.data.max_chars == 10_000
    assert set(PRESETS["d2l"]) <= {"data", "model", "train"}


def test_unknown_setting_suggests_the_closest():
    with pytest.raises(TypeError, match="did you mean hidden"):
        split_overrides({"hiden": 3})


def test_round_trip_and_unknown_keys():
    cfg = build_config(split_overrides({"cell": "gru", "prefixes": ["a", "b"]}))
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    d = cfg.to_dict()
    d["model"]["colour"] = "blue"
    with pytest.raises(ValueError, match="colour"):
        RunConfig.from_dict(d)


def test_preset_corpus_is_only_a_default():
    assert build_config(preset="d2l").data.corpus == "jaychou"
    given = build_config(split_overrides({"paths": ["mine.txt"]}), preset="d2l")
    assert given.data.corpus is None and given.data.paths == ["mine.txt"]
