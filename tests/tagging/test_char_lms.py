"""`rnnlm tag lm` / tagging.train_char_lms: the text the two character LMs learn, their training (side by side and
one after the other), resuming, and a tagger that reads the result with --char-lm."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import DataError, RnnlmError
from rnnlm.tagging import api as tagging
from rnnlm.tagging import char_lms
from rnnlm.tagging.char_lms import lm_text, reverse_lines, text_format, train_char_lms
from rnnlm.training import ensemble as members
from tiny import LM, TAGGER

TINY_LM = {**LM, "max_steps": 4}


def test_a_conll2003_file_gives_its_words_one_sentence_a_line(tiny_conll):
    files = tiny_conll(train=6, dev=0)
    path = files / "train.txt"
    # independently: the first column of each non-blank line, sentences split at blank lines, no -DOCSTART-
    blocks = path.read_text(encoding="utf-8").split("\n\n")
    expected = [
        " ".join(line.split()[0] for line in block.splitlines())
        for block in blocks
        if block.strip() and not block.startswith("-DOCSTART-")
    ]
    assert text_format(path) == "conll2003"
    assert lm_text([path]).splitlines() == expected


def test_a_conllu_file_gives_its_tokens(tmp_path):
    path = tmp_path / "a.conllu"
    rows = ["# sent_id = 1", "1\tHello\thello\tINTJ\tUH\t_\t0\troot\t_\t_"]
    rows.append("2\tthere\tthere\tADV\tRB\t_\t1\tadvmod\t_\t_")
    path.write_text("\n".join(rows) + "\n\n", encoding="utf-8")
    assert text_format(path) == "conllu"
    assert lm_text([path]) == "Hello there\n"


def test_plain_text_is_read_as_it_is_and_files_are_joined_on_lines(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    b.write_text("Ünïcode  spacing kept\n", encoding="utf-8")
    a.write_text("first line\n-DOCSTART- further down is text\nno newline at the end", encoding="utf-8")
    assert text_format(a) == "text" and text_format(b) == "text"
    assert lm_text([a, b]) == a.read_text(encoding="utf-8") + "\n" + b.read_text(encoding="utf-8")
    assert text_format(a, "conll2003") == "conll2003"  # an explicit format wins


def test_no_text_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no text to learn from"):
        lm_text([empty])
    with pytest.raises(RnnlmError, match="--format 'xml'"):
        lm_text([empty], "xml")


@pytest.mark.parametrize("text", ["", "a\n", "ab c\nxyz\n\nlast\n", "tab\tand ü\n"])
def test_reversed_lines_keep_their_places(text):
    back = reverse_lines(text)
    assert back.count("\n") == text.count("\n")
    assert [line[::-1] for line in back.splitlines()] == text.splitlines()
    assert reverse_lines(back) == text


def test_plan_runs_both_at_once_only_where_two_cores_are():
    assert char_lms.plan(2) == (2, 1.0)
    assert char_lms.plan(16) == (2, 1.0)
    assert char_lms.plan(1) == (1, 0.5)  # one after the other, each for half: the same wall time
    assert char_lms.plan(16, jobs=1) == (1, 0.5)


@pytest.mark.e2e
def test_train_resume_and_a_tagger_that_reads_them(tiny_conll, tmp_path):
    files = tiny_conll(train=30, dev=8)
    out = tmp_path / "lm"
    summary = train_char_lms([files / "train.txt"], out, time_budget=60, jobs=1, settings=TINY_LM, log=lambda _: None)
    assert set(summary) >= {"forward", "backward"}
    assert summary["forward"]["steps"] == 4 and summary["backward"]["steps"] == 4
    assert json.loads((out / char_lms.SUMMARY).read_text(encoding="utf-8"))["forward"]["steps"] == 4
    assert (out / char_lms.REVERSED).read_text(encoding="utf-8") == reverse_lines(
        (out / char_lms.TEXT).read_text(encoding="utf-8")
    )
    # the backward model learned the reversed text: its config names it
    backward = json.loads((out / "backward" / ckpt.CONFIG).read_text(encoding="utf-8"))
    assert backward["data"]["paths"] == [str((out / char_lms.REVERSED).absolute())]
    assert members.is_finished(out / "forward") and members.is_finished(out / "backward")

    with pytest.raises(RnnlmError, match="already holds character LMs"):
        train_char_lms([files / "train.txt"], out, time_budget=60, jobs=1, settings=TINY_LM, log=lambda _: None)
    said: list[str] = []
    again = train_char_lms([], out, resume=True, time_budget=60, jobs=1, settings=TINY_LM, log=said.append)
    assert any("forward finished before" in line for line in said)
    assert again["forward"]["steps"] == 4  # not trained again

    tagger = tagging.train(
        files / "train.txt", dev=str(files / "dev.txt"), char_lm=str(out), max_steps=3, out=str(tmp_path / "tag"),
        log=lambda _: None, **TAGGER,
    )  # fmt: skip
    assert tagger.char_lm is not None and tagger.char_lm.dim == 2 * LM["hidden"]
    assert len(tagger.tag([["Anna", "visited", "Oslo", "."]])[0]) == 4


@pytest.mark.e2e
def test_the_command_trains_both_side_by_side(tiny_conll, tmp_path):
    files = tiny_conll(train=20, dev=0)
    out = tmp_path / "cli-lm"
    sets = [arg for k, v in TINY_LM.items() for arg in ("--set", f"{k}={json.dumps(v)}")]
    cmd = [sys.executable, "-m", "rnnlm.cli", "tag", "lm", str(files / "train.txt"), "--out", str(out)]
    done = subprocess.run([*cmd, "--time-budget", "60", "--jobs", "2", *sets], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "side by side" in done.stdout and f"--char-lm {out}" in done.stdout
    assert members.is_finished(out / "forward") and members.is_finished(out / "backward")
    refused = subprocess.run([*cmd, "--resume", str(out)], capture_output=True, text=True)
    assert refused.returncode == 2 and "leave out TEXT and --out" in refused.stderr
