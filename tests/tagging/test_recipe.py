"""`rnnlm tag train --preset`: the whole protocol in one run directory, the budget split between its stages, and a
run stopped by Ctrl-C that continues from the stage it was in."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from rnnlm.cli import main
from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import ConfigError
from rnnlm.tagging import api as tagging
from rnnlm.tagging import char_lms, recipe
from rnnlm.tagging import run as tag_run
from rnnlm.tagging.config import build_tag_config, split_settings
from rnnlm.tagging.recipe import PRESETS, Preset
from tiny import LM, TAGGER

# The ner preset's protocol at the size of the tiny data: two members one after the other, a few steps each.
TINY = dataclasses.replace(
    PRESETS["ner"],
    tagger={**PRESETS["ner"].tagger, **TAGGER, "ensemble": 2, "jobs": 1, "max_steps": 3, "threads": 1},
    lm={**LM, "max_steps": 3},
    budget=100.0,
    lm_share=0.3,
    reserve=5.0,
    lm_jobs=1,
)


class Clock:
    """time.monotonic as the test says: it moves only when a stage is made to take time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_presets_split_their_budget_and_check_their_settings():
    for p in PRESETS.values():
        split = p.split(1800.0)
        assert split["char_lm"] == pytest.approx(600.0) and split["char_lm"] + split["tagger"] == 1800.0
        assert p.split(1800.0, with_lms=False) == {"char_lm": 0.0, "tagger": 1800.0}
    with pytest.raises(ConfigError, match="--preset 'pos'"):
        recipe.preset_named("pos")


def test_a_preset_needs_dev_and_refuses_unknown_settings(tiny_conll, tmp_path):
    files = tiny_conll(train=10, dev=4)
    with pytest.raises(ConfigError, match="needs --dev"):
        recipe.train_preset(files / "train.txt", TINY, out=tmp_path / "r")
    with pytest.raises(TypeError, match="hiden"):
        recipe.train_preset(files / "train.txt", TINY, dev=files / "dev.txt", out=tmp_path / "r", settings={"hiden": 3})
    assert not (tmp_path / "r").exists()  # nothing written for a run that never started


@pytest.mark.e2e
def test_budget_split_and_ctrl_c_between_stages(tiny_conll, tmp_path, monkeypatch):
    files = tiny_conll(train=30, dev=8)
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    lm_calls: list[dict] = []
    train_lms = char_lms.train_char_lms

    def lms_taking_25_s(*args, **kw):
        lm_calls.append(kw)
        out = train_lms(*args, **kw)
        clock.now += 25.0
        return out

    monkeypatch.setattr(char_lms, "train_char_lms", lms_taking_25_s)
    real_train = tag_run.train

    def interrupted(cfg, run=None, log=print, **kw):
        raise KeyboardInterrupt("Ctrl-C while encoding")

    monkeypatch.setattr(tag_run, "train", interrupted)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        tagging.train(files / "train.txt", dev=str(files / "dev.txt"), preset=TINY, out=str(run_dir), log=print)
    assert [c["time_budget"] for c in lm_calls] == [30.0]  # lm_share of the budget
    state = json.loads((run_dir / recipe.RECIPE).read_text(encoding="utf-8"))
    assert state["stages"]["char_lm"] == {"seconds": 25.0, "done": True}
    assert "done" not in state["stages"]["tagger"]

    # continued: the LMs are not trained again, and the tagger gets what is left of the budget
    lm_calls.clear()
    monkeypatch.setattr(tag_run, "train", real_train)
    said: list[str] = []
    tagger = tagging.train(resume=str(run_dir), log=said.append)
    assert lm_calls == [] and any("character LMs finished before" in line for line in said)
    config = json.loads((run_dir / ckpt.CONFIG).read_text(encoding="utf-8"))
    assert config["train"]["time_budget"] == pytest.approx(100.0 - 25.0 - 0.0 - 5.0)  # the Ctrl-C took no time
    assert config["model"]["char_lm"] == str((run_dir / recipe.LM_DIR).absolute())
    assert (run_dir / "char_lm" / "forward" / ckpt.BEST).is_file()  # the run's own copy: it needs nothing else
    assert tagger.char_lm is not None and tagger.config.train.ensemble == 2
    state = json.loads((run_dir / recipe.RECIPE).read_text(encoding="utf-8"))
    assert state["stages"]["tagger"]["done"] is True

    again: list[str] = []
    tagging.train(resume=str(run_dir), log=again.append)  # a finished run: nothing to do, nothing retrained
    assert any("nothing to do" in line for line in again)


def test_a_deadline_cuts_the_training_budget_after_encoding(tiny_conll, tmp_path, monkeypatch):
    files = tiny_conll(train=20, dev=0)
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    setup = tag_run._setup

    def encoding_takes_7_s(*args):
        job = setup(*args)
        clock.now += 7.0
        return job

    monkeypatch.setattr(tag_run, "_setup", encoding_takes_7_s)
    settings = {**TAGGER, "train": str(files / "train.txt"), "max_steps": 2, "time_budget": 500.0}
    cfg = build_tag_config(split_settings({**settings, "out": str(tmp_path / "t")}))
    result = tag_run.train(cfg, None, lambda _: None, deadline=clock.now + 50.0)
    assert result.config.train.time_budget == pytest.approx(43.0)
    saved = json.loads((tmp_path / "t" / ckpt.CONFIG).read_text(encoding="utf-8"))
    assert saved["train"]["time_budget"] == pytest.approx(43.0)


def test_cli_refuses_what_a_preset_run_cannot_take(tiny_conll, tmp_path, capsys):
    files = tiny_conll(train=10, dev=4)
    assert main(["tag", "train", str(files / "train.txt"), "--lm-text", str(files / "dev.txt")]) == 2
    assert "--lm-text is text for a preset" in capsys.readouterr().err
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / recipe.RECIPE).write_text(json.dumps({"format": "rnnlm-tag-recipe"}), encoding="utf-8")
    assert main(["tag", "train", "--resume", str(tmp_path / "r"), "--hidden", "8"]) == 2
    assert "continues with the settings it began with" in capsys.readouterr().err


def test_preset_instances_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["ner"].budget = 1.0  # type: ignore[misc]
    assert isinstance(TINY, Preset)
