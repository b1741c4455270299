"""The engine setting is named one way ("engine", ``--engine``) everywhere; its old name ``impl`` keeps working
where scripts, notebooks and runs made before the rename use it: as a hidden flag, a deprecated keyword setting and
an older config.json's key."""

from __future__ import annotations

import json

import pytest

from fixture_files import CONFIGS
from rnnlm.cli import build_parser
from rnnlm.core.errors import ConfigError
from rnnlm.frames.config import FramesRunConfig, split_frames_settings
from rnnlm.lm.config import RunConfig, split_settings
from rnnlm.tagging.config import TagRunConfig
from rnnlm.tagging.config import split_settings as split_tag_settings

READERS = {"rnnlm-run": RunConfig, "rnnlm-tag-run": TagRunConfig, "rnnlm-frames-run": FramesRunConfig}
FIXTURES = sorted(CONFIGS.glob("*.json"))


def test_there_are_fixture_configs_of_every_kind():
    assert {json.loads(p.read_text(encoding="utf-8"))["format"] for p in FIXTURES} == set(READERS)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_every_older_config_reads_its_impl_as_the_engine_and_writes_it_back_as_engine(path):
    old = json.loads(path.read_text(encoding="utf-8"))
    assert "engine" not in old["model"]  # written before the rename
    reader = READERS[old["format"]]
    cfg = reader.from_dict(old)
    assert cfg.model.engine == old["model"]["impl"]
    new = cfg.to_dict()
    assert new["model"]["engine"] == old["model"]["impl"] and "impl" not in new["model"]
    assert new["version"] > old["version"]  # a reader before the rename refuses the file by its version
    assert reader.from_dict(new) == cfg


@pytest.mark.parametrize("reader", list(READERS.values()), ids=lambda r: r.__name__)
def test_a_current_config_with_the_old_key_is_an_error_not_a_silent_default(reader):
    d = reader().to_dict()
    d["model"] = {"impl" if k == "engine" else k: v for k, v in d["model"].items()}
    with pytest.raises((ConfigError, ValueError), match=r"unknown keys \['impl'\]"):
        reader.from_dict(d)


# Every command that has the engine flag, with what it needs to parse.
COMMANDS = [
    ["train", "a.txt"],
    ["train", "--resume", "RUN"],
    ["eval", "RUN"],
    ["generate", "RUN"],
    ["tag", "train", "t.txt"],
    ["tag", "train", "--resume", "RUN"],
    ["tag", "eval", "RUN", "t.txt"],
    ["tag", "predict", "RUN"],
    ["frames", "train", "t.ts"],
    ["frames", "train", "--resume", "RUN"],
    ["frames", "eval", "RUN", "t.ts"],
    ["frames", "predict", "RUN", "t.ts"],
]


def _subparser(parser, argv):
    """The parser of the (sub)command that argv names."""
    for word in argv:
        actions = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not actions or word not in actions[0].choices:
            break
        parser = actions[0].choices[word]
    return parser


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_impl_is_a_hidden_alias_of_engine_on_every_command(argv):
    parser = build_parser()
    new = vars(parser.parse_args([*argv, "--engine", "fused"]))
    old = vars(parser.parse_args([*argv, "--impl", "fused"]))
    assert new == old and "fused" in new.values()
    assert vars(parser.parse_args(argv)) != new  # the flag did something
    text = _subparser(parser, argv).format_help()
    assert "--engine" in text and "--impl" not in text


def test_the_old_keyword_setting_still_works_with_a_deprecation_warning():
    for split in (split_settings, split_tag_settings, split_frames_settings):
        with pytest.warns(DeprecationWarning, match=r"impl= is deprecated; use engine="):
            assert split({"impl": "scratch"})["model"] == {"engine": "scratch"}
        assert split({"engine": "scratch"})["model"] == {"engine": "scratch"}
