"""The rnnlm command end to end: train, eval, generate, info, help, and clear errors."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rnnlm.cli import build_parser, main
from rnnlm.lm.config import SECTIONS, GenerateConfig
from tiny import LM_FLAGS, LM_TEXT, TAGGER_FLAGS, ner_file

TINY = ["--cell", "gru", *LM_FLAGS, "--epochs", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "a.txt").write_text(LM_TEXT, encoding="utf-8")
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        assert main(["train", str(d / "a.txt"), *TINY, "--out", str(d / "run"), "--prefixes", "row 1", "ja"]) == 0
    (d / "train.log").write_text(capture.getvalue(), encoding="utf-8")
    return d


def flags_in_help(parser_args):
    with pytest.raises(SystemExit):
        build_parser().parse_args([*parser_args, "--help"])


def test_every_config_field_has_a_documented_flag(capsys):
    flags_in_help(["train"])
    out = capsys.readouterr().out
    for cls in SECTIONS.values():
        for f in dataclasses.fields(cls):
            name = f.name if f.metadata.get("positional") else "--" + f.name.replace("_", "-")
            assert name in out, name
    flags_in_help(["generate"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for f in dataclasses.fields(GenerateConfig):
        assert "--" + f.name.replace("_", "-") in out
    assert "below 1 is more conservative" in out  # which way temperature goes


@pytest.mark.e2e
def test_train_writes_a_run_and_prints_samples(run, capsys):
    lines = (run / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["epoch"] == 1
    out = (run / "train.log").read_text(encoding="utf-8")
    # Right after the epoch's line, one sample per prefix: the prefix and --pred-len (100) characters.
    assert re.search(r"(?s)\nepoch 1 \|[^\n]*\n - row 1.{100}\n - ja.{100}\nstopped: --epochs 1 reached", out), out


@pytest.mark.e2e
def test_generate_streams_prefix_and_continuation(run, capsys):
    assert main(["generate", str(run / "run"), "--prefix", "row", "--length", "20", "--seed", "1"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("row") and len(first.rstrip("\n")) == 3 + 20
    main(["generate", str(run / "run"), "--prefix", "row", "--length", "20", "--seed", "1"])
    assert capsys.readouterr().out == first  # same seed, same text
    assert main(["generate", str(run / "run"), "--prefix", "row", "--length", "5", "--num-samples", "3"]) == 0
    assert capsys.readouterr().out.count("--- sample") == 3
    assert main(["generate", str(run / "run"), "--prefix", "row", "--length", "5", "--beam", "2"]) == 0
    assert capsys.readouterr().out.startswith("row")


@pytest.mark.e2e
def test_generate_rejects_unknown_characters(run, capsys):
    assert main(["generate", str(run / "run"), "--prefix", "Zürich"]) == 2
    err = capsys.readouterr().err
    assert "rnnlm: error:" in err and "'Z'" in err and "'ü'" in err


@pytest.mark.e2e
def test_eval_prints_json(run, capsys):
    assert main(["eval", str(run / "run")]) == 0
    res = valid = json.loads(capsys.readouterr().out)
    assert res["split"] == "valid" and res["ppl"] > 1 and res["bits_per_token"] > 0
    assert res["checkpoint"].endswith("best.safetensors")
    assert main(["eval", str(run / "run"), str(run / "a.txt")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["tokens"] == len(LM_TEXT) - 1 and "dynamic" not in res
    assert main(["eval", str(run / "run"), "--dynamic-lr", "0.05", "--dynamic-seq-len", "16"]) == 0
    dyn = json.loads(capsys.readouterr().out)
    assert dyn["split"] == "valid" and dyn["loss"] == valid["loss"]  # the main figure stays the static one
    assert dyn["dynamic"]["tokens"] == dyn["tokens"] and dyn["dynamic"]["loss"] != dyn["loss"]
    assert dyn["dynamic"]["lr"] == 0.05 and dyn["dynamic"]["seq_len"] == 16
    assert valid["protocol"] == "carried" and "block" not in valid
    assert main(["eval", str(run / "run"), "--protocol", "windows", "--block", "8"]) == 0
    win = json.loads(capsys.readouterr().out)
    assert win["protocol"] == "windows" and win["block"] == 8 and win["tokens"] == valid["tokens"]
    assert win["loss"] != valid["loss"]  # cold windows of 8 see less context than the carried state


@pytest.mark.e2e
def test_info(run, capsys):
    assert main(["info", str(run / "run"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["level"] == "char" and info["parameters"] > 0 and info["last_metrics"]["step"] > 0
    assert isinstance(info["last"]["step"], int) and isinstance(info["last"]["epoch"], int)  # numbers, not strings
    assert isinstance(info["best"]["val_loss"], float)
    assert main(["info", str(run / "run")]) == 0  # for people: an aligned table, not JSON
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["run", str(run / "run")]
    assert any(line.startswith("parameters ") and f"{info['parameters']:,}" in line for line in table)
    assert main(["info", "--corpora", "--json"]) == 0
    names = [json.loads(x)["name"] for x in capsys.readouterr().out.splitlines()]
    assert "python-docs" in names and "ptb" in names
    assert main(["info", "--corpora"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["name", "level", "status", "description"]
    assert {r.split()[0] for r in rows[1:]} == set(names)


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.txt"), *TINY, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "nope.txt" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # a run that never started leaves nothing behind
    (tmp_path / "short.txt").write_text("hello world\n", encoding="utf-8")
    assert main(["train", str(tmp_path / "short.txt"), "--out", str(tmp_path / "r")]) == 2
    assert "lower --batch-size or --seq-len" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["eval", str(tmp_path / "no-run")]) == 2
    assert "no such run directory" in capsys.readouterr().err


@pytest.mark.e2e
def test_console_script_is_installed():
    script = Path(sys.executable).parent / "rnnlm"  # created by pip from [project.scripts]
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("rnnlm ")


@pytest.mark.e2e
def test_bad_settings_fail_before_any_output(run, capsys):
    assert main(["generate", str(run / "run"), "--prefix", "row", "--top-k", "-1"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "--top-k must be at least 0" in out.err
    assert main(["eval", str(run / "run"), "--seq-len", "0"]) == 2
    assert "--eval-seq-len must be at least 1, got 0" in capsys.readouterr().err
    assert main(["eval", str(run / "run"), "--protocol", "windows", "--block", "1"]) == 2
    assert "--eval-block must be at least 2, got 1" in capsys.readouterr().err
    assert main(["eval", str(run / "run"), "--dynamic-decay", "1"]) == 2
    assert "--dynamic-decay in [0, 1)" in capsys.readouterr().err
    assert main(["generate", str(run / "run"), "--prefix", "row", "--num-samples", "0"]) == 2
    assert "--num-samples must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.e2e
def test_bad_config_file_and_damaged_side_files(run, tmp_path, capsys):
    (tmp_path / "c.json").write_text("[]", encoding="utf-8")
    assert main(["train", str(run / "a.txt"), "--config", str(tmp_path / "c.json")]) == 2
    assert "JSON object" in capsys.readouterr().err
    (tmp_path / "v.json").write_text('{"tokens": []}', encoding="utf-8")
    assert main(["train", str(run / "a.txt"), "--config", str(tmp_path / "v.json")]) == 2
    assert "unknown keys ['tokens']" in capsys.readouterr().err
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run / "run", copy)
    (copy / "best.safetensors").write_bytes(b"garbage")
    assert main(["info", str(copy), "--json"]) == 0
    assert "corrupt or truncated" in json.loads(capsys.readouterr().out)["best"]["error"]


@pytest.mark.e2e
def test_resume_with_nothing_left_says_so(run, capsys):
    assert main(["train", "--resume", str(run / "run")]) == 0
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.e2e
@pytest.mark.parametrize(("trained", "other"), [("scratch", "fused"), ("fused", "scratch")])
def test_a_run_generates_and_evaluates_with_another_engine(tmp_path, capsys, trained, other):
    (tmp_path / "a.txt").write_text(LM_TEXT, encoding="utf-8")
    run = str(tmp_path / "run")
    # float32 matmuls: scratch has no bfloat16 mode, and fused takes --matmul-dtype bfloat16 at its word
    args = [str(tmp_path / "a.txt"), *TINY, "--engine", trained, "--matmul-dtype", "float32", "--out", run]
    assert main(["train", *args, "--pred-period", "0"]) == 0
    capsys.readouterr()
    outs = {}
    for engine in (trained, other):
        assert main(["generate", run, "--prefix", "row", "--length", "40", "--seed", "3", "--engine", engine]) == 0
        text = capsys.readouterr().out
        assert main(["eval", run, "--engine", engine]) == 0
        outs[engine] = (text, json.loads(capsys.readouterr().out)["loss"])
    # --impl, the flag's name before, is a hidden alias: the same text and loss
    assert main(["generate", run, "--prefix", "row", "--length", "40", "--seed", "3", "--impl", other]) == 0
    assert capsys.readouterr().out == outs[other][0]
    assert main(["eval", run, "--impl", other]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == outs[other][1]
    assert outs[other][0] == outs[trained][0] and outs[other][0].startswith("row")
    assert outs[other][1] == pytest.approx(outs[trained][1], rel=1e-5)
    assert main(["train", "--resume", run, "--epochs", "2", "--engine", other]) == 0  # a resume may switch engines
    assert f"engine {other}" in capsys.readouterr().out


@pytest.mark.e2e
def test_word_level_end_to_end_on_ptb(shared_data, tmp_path, capsys):
    """Train, evaluate, generate and resume a word-level model on PTB, tiny and fast."""
    run = str(tmp_path / "ptb")
    flags = ["--corpus", "ptb", "--level", "word", "--max-chars", "60000", "--cell", "lstm", "--layers", "1"]
    flags += ["--hidden", "32", "--embed", "16", "--batch-size", "8", "--seq-len", "12", "--no-progress"]
    assert main(["train", *flags, "--max-steps", "20", "--out", run, "--prefixes", "the company"]) == 0
    out = capsys.readouterr().out
    assert "word level" in out and "stopped: --max-steps 20 reached" in out
    assert main(["eval", run]) == 0
    res = json.loads(capsys.readouterr().out)
    vocab = json.loads((tmp_path / "ptb" / "vocab.json").read_text(encoding="utf-8"))
    assert vocab["level"] == "word" and "<eos>" in vocab["tokens"] and "company" in vocab["tokens"]
    assert 1 < res["ppl"] < len(vocab["tokens"]) * 2  # a model, not noise: near or below uniform after 20 steps
    assert main(["generate", run, "--prefix", "the company", "--length", "10", "--seed", "0"]) == 0
    words = capsys.readouterr().out.split()
    assert words[:2] == ["the", "company"] and len(words) >= 10  # 10 word tokens (an <eos> prints a newline)
    assert main(["train", "--resume", run, "--max-steps", "30"]) == 0
    assert "resumed at step 20" in capsys.readouterr().out
    assert json.loads((tmp_path / "ptb" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 30


# ---------------------------------------------------------------- file-system errors and bugs


def _never(*args, **kwargs):
    raise AssertionError("reached the long work before checking --out")


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_an_unwritable_out_fails_at_once_naming_the_path(tmp_path, capsys, monkeypatch, where):
    from rnnlm.lm import run as lm_run
    from rnnlm.tagging import run as tagging

    (tmp_path / "a.txt").write_text(LM_TEXT, encoding="utf-8")
    ner_file(tmp_path / "ok.conll", 6, seed=0)
    (tmp_path / "file").write_text("not a directory", encoding="utf-8")
    out = str(tmp_path / "file" / "x") if where == "under-a-file" else "/proc/rnnlm-x"
    monkeypatch.setattr(lm_run, "load_corpus", _never)  # the data would be read and encoded after the check
    monkeypatch.setattr(tagging, "encode", _never)
    for command in (
        ["train", str(tmp_path / "a.txt"), *TINY],
        ["tag", "train", str(tmp_path / "ok.conll"), *TAGGER_FLAGS],
        ["frames", "train", str(tmp_path / "a.ts"), "--no-progress"],  # refused before the file is read
    ):
        assert main([*command, "--out", out]) == 2, command
        err = capsys.readouterr().err
        assert err.startswith(f"rnnlm: error: --out {out}: ") and "Traceback" not in err, err
    assert not Path(out).exists()


@pytest.mark.e2e
def test_an_os_error_is_a_user_error_that_names_the_path(run, capsys, monkeypatch):
    import errno

    from rnnlm.lm import cli as lm_cli

    def full_disk(ns):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/run/last.safetensors")

    monkeypatch.setattr(lm_cli, "cmd_eval", full_disk)  # the parser is built per call and picks it up
    assert main(["eval", str(run / "run")]) == 2
    assert capsys.readouterr().err == (
        "rnnlm: error: cannot write /data/run/last.safetensors: [Errno 28] No space left on device; check the path, "
        "its permissions and the free space on its disk\n"
    )


@pytest.mark.e2e
def test_a_bug_is_reported_as_a_bug_not_as_a_user_error(run, capsys, monkeypatch):
    from rnnlm.lm import api

    def broken(*args, **kwargs):
        raise ValueError("operands could not be broadcast together")  # what a real bug deep inside looks like

    monkeypatch.setattr(api.LanguageModel, "evaluate_ids", broken)
    assert main(["eval", str(run / "run")]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ValueError: operands could not be broadcast" in err
    assert "this is a bug in rnnlm" in err and "rnnlm: error:" not in err
