"""docs/cli.md is generated from the parser (so from the config dataclasses) and cannot go stale."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from rnnlm.cli import build_parser, main
from rnnlm.core.flags import MARKDOWN_INTRO, render_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
COMMANDS = [
    ["train"], ["eval"], ["generate"], ["plot"], ["info"],
    ["tag", "train"], ["tag", "eval"], ["tag", "predict"],
    ["frames", "train"], ["frames", "eval"], ["frames", "predict"],
]  # fmt: skip


def generated() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main(["--help-markdown"])
    assert exit_.value.code == 0
    return out.getvalue()


def test_the_committed_reference_is_the_generators_output():
    text = generated()
    assert text == render_markdown(build_parser(), MARKDOWN_INTRO)
    assert DOC.read_text(encoding="utf-8") == text, (
        "docs/cli.md differs from the flags it documents; regenerate it with: "
        "PYTHONPATH=src python -m rnnlm.cli --help-markdown > docs/cli.md"
    )


def help_of(command: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    return out.getvalue()


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_flag_of_every_command_is_documented_under_it(command):
    """Read from argparse's own --help, not from the generator's walk: every flag is in the command's section,
    with its help text."""
    text = generated()
    heading = re.search(rf"^(#+) `rnnlm {' '.join(command)}`$", text, re.M)
    assert heading, command
    end = re.compile(rf"^#{{1,{len(heading[1])}}} `", re.M).search(text, heading.end())  # the next command
    section = text[heading.start() : end.start() if end else None]
    declared = re.findall(r"^  (--\S.*?)(?: {2,}|$)", help_of(command), re.M)  # "  --a, --no-a  help"
    flags = {f for line in declared for f in re.findall(r"--[a-z][a-z0-9-]*", line)} - {"--help"}
    assert flags, command
    for flag in flags:
        assert f"`{flag}" in section or f", {flag}" in section, f"{flag} of rnnlm {' '.join(command)}"


def test_the_generator_flag_is_hidden_and_defaults_have_their_column():
    assert "--help-markdown" not in help_of([])
    text = generated()
    assert "| `--hidden N` | 448 | Hidden units per layer. |" in text  # rnnlm train: the default preset's value
    assert "| `--hidden N` | 200 | Hidden units per direction. |" in text  # rnnlm tag train: the tagger's
    assert "| `--epochs N` | 60 |" in text  # rnnlm frames train: the frame defaults, not TrainConfig's
