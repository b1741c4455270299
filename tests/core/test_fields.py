"""Keyword settings as the Python APIs take them (core/fields.split_overrides)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnnlm.core.errors import ConfigError
from rnnlm.frames.config import FRAMES_SECTIONS, FramesRunConfig
from rnnlm.lm.config import RunConfig, build_config, split_settings


def test_paths_given_as_path_objects_become_the_strings_a_config_holds(tmp_path):
    """frames.train(..., out=Path(...)) once failed: the config rejects anything but a string for a path."""
    from rnnlm.core.fields import split_overrides

    sections = split_overrides({"out": tmp_path / "run", "train_path": Path("data/train")}, FRAMES_SECTIONS)
    cfg = FramesRunConfig.from_dict(
        {**FramesRunConfig().to_dict(), **{k: {**FramesRunConfig().to_dict()[k], **v} for k, v in sections.items()}}
    )
    assert cfg.train.out == str(tmp_path / "run") and isinstance(cfg.train.out, str)
    lm = build_config(split_settings({"paths": [tmp_path / "a.txt", "b.txt"], "out": tmp_path / "lm"}))
    assert lm.data.paths == [str(tmp_path / "a.txt"), "b.txt"] and lm.train.out == str(tmp_path / "lm")
    assert RunConfig.from_dict(lm.to_dict()) == lm
    with pytest.raises(ConfigError, match="out must be a string"):  # a config read from a file stays strict
        RunConfig.from_dict({**lm.to_dict(), "train": {**lm.to_dict()["train"], "out": 3}})
