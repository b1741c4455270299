"""Configs: presets, flat settings, JSON round trip."""

from __future__ import annotations

import pytest

from rnnlm.core.errors import ConfigError
from rnnlm.lm.config import PRESETS, RunConfig, build_config, split_settings


def test_preset_then_explicit_overrides_win():
    cfg = build_config(split_settings({"sampling": "random", "lr": 50.0}), preset="d2l")
    assert cfg.train.sampling == "random" and cfg.train.lr == 50.0
    assert cfg.model.hidden == 256 and cfg.data.max_chars == 10_000
    assert set(PRESETS["d2l"]) <= {"data", "model", "train"}


def test_unknown_setting_suggests_the_closest():
    with pytest.raises(TypeError, match="did you mean hidden"):
        split_settings({"hiden": 3})


def test_round_trip_and_unknown_keys():
    cfg = build_config(split_settings({"cell": "gru", "prefixes": ["a", "b"]}))
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    d = cfg.to_dict()
    d["model"]["colour"] = "blue"
    with pytest.raises(ValueError, match="colour"):
        RunConfig.from_dict(d)


def test_preset_corpus_is_only_a_default():
    assert build_config(preset="d2l").data.corpus == "jaychou"
    given = build_config(split_settings({"paths": ["mine.txt"]}), preset="d2l")
    assert given.data.corpus is None and given.data.paths == ["mine.txt"]


def test_setting_names_are_unique_across_sections():
    """A flat setting (hidden=512) must belong to one section; a name in two would be routed silently."""
    import dataclasses

    from rnnlm.core.fields import field_owners
    from rnnlm.lm.config import SECTIONS

    owners = field_owners(SECTIONS)
    assert len(owners) == sum(len(dataclasses.fields(c)) for c in SECTIONS.values())

    @dataclasses.dataclass
    class Other:
        lr: float = 1.0

    with pytest.raises(TypeError, match="'lr' is defined in both the train and other configs"):
        field_owners({**SECTIONS, "other": Other})


def test_config_json_has_a_format_version_and_reads_version_1():
    d = RunConfig().to_dict()
    assert d["format"] == "rnnlm-run" and d["version"] == 2
    old = {k: v for k, v in d.items() if k not in ("format", "version", "eval")}  # as rnnlm 0.1 wrote it
    old["train"] = {**old["train"], "eval_batch_size": 7}
    assert RunConfig.from_dict(old).eval.eval_batch_size == 7
    with pytest.raises(ValueError, match="version 3"):
        RunConfig.from_dict({**d, "version": 3})


def test_every_section_checks_its_settings():
    from rnnlm.core.errors import ConfigError

    for overrides, message in [
        ({"data": {"val_fraction": 1.0}}, "--val-fraction must be in"),
        ({"model": {"layers": 0}}, "--layers must be at least 1"),
        ({"train": {"schedule": "cosine", "epochs": None}}, "--schedule cosine needs an end"),
        ({"train": {"sampling": "shuffled"}}, "--sampling must be one of random, sequential"),
        ({"eval": {"eval_seq_len": 0}}, "--eval-seq-len must be at least 1"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_config(overrides).check()
    build_config().check()


def test_char_cpu_is_the_default_and_plain_is_the_bare_defaults():
    cfg = build_config()
    for section, values in PRESETS["char-cpu"].items():
        for name, value in values.items():
            assert getattr(getattr(cfg, section), name) == value, name
    assert build_config(preset="plain") == RunConfig()
    assert build_config(base=RunConfig()) == RunConfig()  # --config starts from its own file, not the preset
    d2l = build_config(preset="d2l")  # other presets apply to the bare defaults, not on top of char-cpu
    assert d2l.model.weight_drop == 0 and not d2l.train.variable_len and d2l.model.dropout_hidden == 0


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_passes_its_checks(name):
    build_config(preset=name).check()


def test_a_conflicting_flag_makes_the_presets_value_yield():
    assert build_config(split_settings({"dropout": 0.3})).model.dropout_hidden == 0.0
    cfg = build_config(split_settings({"dropout": 0.3, "dropout_out": 0.1}))  # both given: the check refuses
    with pytest.raises(ConfigError, match="--dropout"):
        cfg.check()
    one_hot = build_config(split_settings({"embed": 0}))
    assert one_hot.model.dropout_in == 0.0 and one_hot.model.embed_dropout == 0.0
    one_hot.check()
    random = build_config(split_settings({"sampling": "random"}))
    assert not random.train.variable_len
    random.check()
    assert build_config(split_settings({"dropout": 0.0})).model.dropout_hidden > 0  # no conflict: the preset stays
