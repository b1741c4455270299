"""Configs: presets, flat settings, JSON round trip."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

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
    assert d["format"] == "rnnlm-run" and d["version"] == 3
    old = {k: v for k, v in d.items() if k not in ("format", "version", "eval")}  # as rnnlm 0.1 wrote it
    old["train"] = {**old["train"], "eval_batch_size": 7}
    assert RunConfig.from_dict(old).eval.eval_batch_size == 7
    with pytest.raises(ValueError, match="version 4"):
        RunConfig.from_dict({**d, "version": 4})


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


FIXTURES = (
    Path(__file__).parent.parent / "fixtures" / "configs"
)  # config.json files as the code before the split wrote them
LM_ONLY = {"seq_len", "sampling", "random_offset", "variable_len", "ar", "tar"}
LM_ONLY |= {"pred_period", "pred_len", "prefixes", "pred_temperature"}


def test_the_shared_train_config_has_no_language_model_fields():
    """TrainConfig holds what every use reads; the language model's windows and samples are in its subclass,
    and a tagger's or frame run's train section has none of them, hidden or refused."""
    from rnnlm.frames.config import FramesTrainConfig
    from rnnlm.lm.config import LMTrainConfig
    from rnnlm.tagging.config import TagTrainConfig
    from rnnlm.training.config import TrainConfig

    def names(cls: type) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    assert not names(TrainConfig) & LM_ONLY
    assert names(LMTrainConfig) >= LM_ONLY and names(LMTrainConfig) - LM_ONLY == names(TrainConfig)
    assert not names(TagTrainConfig) & LM_ONLY and not names(FramesTrainConfig) & LM_ONLY
    assert all(
        not f.metadata.get("unused") for cls in (TagTrainConfig, FramesTrainConfig) for f in dataclasses.fields(cls)
    )


@pytest.mark.parametrize(
    "name,settings,preset,size",
    [
        ("lm_v2_char_cpu.json", {"paths": ["text.txt"], "out": "runs/lm"}, None, "auto"),
        ("lm_v2_d2l.json", {}, "d2l", None),
    ],
)
def test_language_model_config_json_is_unchanged(name, settings, preset, size):
    """A language model's config.json keeps its keys and values: one written before the train section was split
    reads back and writes out the same (but for model.impl, now model.engine, and the version that says so, and
    the eval settings and model.size added since: at their defaults, none for the size of an old run), and the same
    settings give the same file today (char-cpu's size now auto)."""
    written = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    model = {("engine" if k == "impl" else k): v for k, v in written["model"].items()}
    added = {"eval_protocol": "carried", "eval_block": 64}  # eval settings added since (issue 27), at defaults
    old = {**written, "version": 3, "model": {**model, "size": None}, "eval": written["eval"] | added}
    assert RunConfig.from_dict(written).to_dict() == old
    old["model"]["size"] = size
    new = build_config(split_settings(settings), preset=preset).to_dict()
    assert {s: set(v) if isinstance(v, dict) else v for s, v in new.items()} == {
        s: set(v) if isinstance(v, dict) else v for s, v in old.items()
    }
    assert new == old


def test_a_budget_without_epochs_governs_alone_for_every_use():
    """One rule (training.config.budget_governs_alone) for the three builders: a --time-budget or --max-steps
    given without --epochs lifts the epoch limit; given with it, or lifted to none, the epoch limit stays."""
    from rnnlm.frames.config import build_frames_config
    from rnnlm.tagging.config import build_tag_config
    from rnnlm.training.config import budget_governs_alone

    for build in (build_config, build_tag_config, build_frames_config):
        default = build({}).train.epochs
        assert default is not None
        for given, epochs in [
            ({"time_budget": 5.0}, None),
            ({"max_steps": 3}, None),
            ({"time_budget": 5.0, "epochs": 2}, 2),
            ({"max_steps": None, "time_budget": None}, default),
        ]:
            assert build({"train": given}).train.epochs == epochs, (build.__name__, given)
    section = {"epochs": 7}
    budget_governs_alone({"lr": 1.0}, section)
    assert section == {"epochs": 7}
