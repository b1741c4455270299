"""`rnnlm info` and `rnnlm plot` on every kind of run: a language model, a tagger, a frame classifier, and the
ensembles of the last two (members in members/<i>); and the clear errors for a folder that is no run."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from rnnlm.cli import main
from rnnlm.core import checkpoint as ckpt
from rnnlm.core.plot import curves, metric_sources
from tiny import FRAMES_FLAGS, LM_FLAGS, LM_TEXT, TAGGER_FLAGS, ner_file, write_ts

pytestmark = pytest.mark.e2e  # every test reads the runs trained once

LM_TINY = ["--cell", "gru", *LM_FLAGS, "--epochs", "1"]
FRAMES_TINY = [*FRAMES_FLAGS, "--epochs", "2"]


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def ok(*args: str) -> str:
    code, out, err = cli(*args)
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One tiny run of each kind (two epochs or so each)."""
    d = tmp_path_factory.mktemp("runs")
    (d / "a.txt").write_text(LM_TEXT, encoding="utf-8")
    ner_file(d / "train.conll", 24, seed=0)
    ner_file(d / "dev.conll", 8, seed=1)
    write_ts(d / "train.ts", 30, seed=0)
    found = {name: d / name for name in ("lm", "tagger", "tag-ensemble", "frames", "frames-ensemble")}
    ok("train", str(d / "a.txt"), *LM_TINY, "--max-steps", "12", "--pred-period", "0", "--out", str(found["lm"]))
    tag = ["tag", "train", str(d / "train.conll"), "--dev", str(d / "dev.conll"), *TAGGER_FLAGS, "--epochs", "2"]
    ok(*tag, "--out", str(found["tagger"]))
    ok(*tag, "--ensemble", "2", "--jobs", "1", "--out", str(found["tag-ensemble"]))
    frames = ["frames", "train", str(d / "train.ts"), *FRAMES_TINY]
    ok(*frames, "--ensemble", "1", "--no-refit", "--out", str(found["frames"]))
    ok(*frames, "--ensemble", "2", "--refit", "--out", str(found["frames-ensemble"]))
    return found


def info(run: Path) -> tuple[dict, dict[str, str]]:
    """`rnnlm info --json` and the table's rows as {label: value}."""
    data = json.loads(ok("info", str(run), "--json"))
    rows = {}
    for line in ok("info", str(run)).splitlines():
        label, _, value = line.partition("  ")
        rows[label.strip()] = value.strip()
    return data, rows


def test_info_of_a_language_model_run(runs):
    data, rows = info(runs["lm"])
    assert data["format"] == "rnnlm-run" and data["kind"] == "language model"
    assert data["level"] == "char" and data["vocab_size"] == len(set(LM_TEXT)) and data["parameters"] > 0
    assert isinstance(data["best"]["val_loss"], float) and isinstance(data["last"]["step"], int)
    assert data["files"] == sorted(
        ["config.json", "vocab.json", "metrics.jsonl", "last.safetensors", "best.safetensors"]
    )
    assert "members" not in data
    assert rows["kind"] == "language model (rnnlm-run)"
    assert rows["model"] == "gru, 1 x 16, embed 8"
    assert rows["engine"].startswith(f"{data['config']['model']['engine']}, ")
    assert rows["parameters"] == f"{data['parameters']:,}"
    assert rows["vocabulary"] == f"char level, {data['vocab_size']} tokens"
    assert rows["best checkpoint"].startswith(f"step {data['best']['step']}, epoch ")
    assert rows["files"] == ", ".join(data["files"])


def test_info_of_a_tagger_run(runs):
    data, rows = info(runs["tagger"])
    assert data["format"] == "rnnlm-tag-run" and data["kind"] == "tagger"
    assert data["column"] == "ner" and data["scheme"] == "IOB2" and data["model_scheme"] == "BIOES"
    assert data["tags"] == json.loads((runs["tagger"] / "tags.json").read_text())["tags"]
    assert data["vocab_size"] == len(json.loads((runs["tagger"] / "vocab.json").read_text())["tokens"])
    best_meta = ckpt.load_weights(runs["tagger"] / ckpt.BEST)[1]
    assert data["best"]["val_f1"] == float(best_meta["val_f1"])  # the score the best weights were chosen by
    assert data["last_metrics"]["step"] == data["last"]["step"] and "val_acc" in data["last_metrics"]
    assert "tags.json" in data["files"] and "chars.json" in data["files"]
    assert rows["kind"] == "tagger (rnnlm-tag-run): the ner column of conll2003 files, scheme IOB2, learned as BIOES"
    assert (
        rows["model"].startswith("bidirectional lstm, 1 x 16, words 16, character CNN 8 -> 8")
        and "crf" in rows["model"]
    )
    assert rows["tags"].startswith(f"{len(data['tags'])}: O, B-LOC")
    assert f"val_f1 {float(best_meta['val_f1']):.4g}" in rows["best checkpoint"]


def test_info_of_a_tagger_ensemble_lists_its_members(runs):
    data, rows = info(runs["tag-ensemble"])
    assert [m["dir"] for m in data["members"]] == ["members/0", "members/1"]
    assert all(m["finished"] and m["best"]["val_f1"] >= 0 for m in data["members"])
    assert data["model"]["members"] == 2 and "val_f1" in data["model"]  # the ensemble's own dev score
    assert data["best"] is None and data["last"] is None and "model.safetensors" in data["files"]
    single = json.loads(ok("info", str(runs["tagger"]), "--json"))["parameters"]
    assert data["parameters"] == 2 * single  # same settings and data, so the same vocabularies
    assert rows["ensemble"].startswith("2 members") and rows["parameters"].endswith(f"(2 members of {single:,} each)")
    assert rows["members/0"].startswith("best: step ") and rows["members/0"].endswith("finished")
    assert rows["final model"].startswith("members 2")
    assert "best checkpoint" not in rows


def test_info_of_a_frame_run(runs):
    data, rows = info(runs["frames"])
    assert data["format"] == "rnnlm-frames-run" and data["kind"] == "frame classifier"
    assert data["classes"] == ["up", "down", "flat"] and data["num_features"] == 2 and data["task"] == "classify"
    report = json.loads((runs["frames"] / "val_report.json").read_text())
    assert data["reports"]["val"]["accuracy"] == report["accuracy"] and data["reports"]["test"] is None
    assert "val_acc" in data["last_metrics"] and "val_loss" in data["best"]  # the best by validation loss
    assert rows["kind"] == "frame classifier (rnnlm-frames-run)"
    assert rows["model"] == "bidirectional gru, 1 x 8, proj 8, convolutional branch of 128 channels, last pooling"
    assert rows["classes"] == "3: up, down, flat; 2 features per frame"
    assert rows["val scores"].startswith(f"accuracy {report['accuracy']:.4f}, macro-F1 ")
    assert rows["fit"] == "one model"


def test_info_of_a_frame_ensemble_lists_members_and_refits(runs):
    data, rows = info(runs["frames-ensemble"])
    assert [m["dir"] for m in data["members"]] == ["members/0", "members/0/refit", "members/1", "members/1/refit"]
    assert data["model"]["members"] == 2 and data["members"][1]["best"] is None  # a refit has no validation data
    single = json.loads(ok("info", str(runs["frames"]), "--json"))["parameters"]
    assert data["parameters"] == 2 * single
    assert rows["fit"] == "an ensemble of 2 (seeded apart), each refit on all the training data"
    assert rows["parameters"] == f"{2 * single:,} (2 members of {single:,} each)"
    assert rows["members/0/refit"].startswith("no best checkpoint | last: step ")


def png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


@pytest.mark.parametrize("kind", ["lm", "tagger", "tag-ensemble", "frames", "frames-ensemble"])
def test_plot_draws_every_kind_of_run(runs, kind, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / f"{kind}.png"
    assert ok("plot", str(runs[kind]), "--out", str(out)).strip() == str(out)
    assert png(out)


def test_what_plot_draws(runs):
    """The series are the logged metrics: an LM's loss in bits, a tagger's in nats beside its scores; an ensemble
    has a line per member (and per refit)."""
    lm = curves(ckpt.read_metrics(runs["lm"]))
    row = ckpt.read_metrics(runs["lm"])[-1]
    assert lm["val"][1][-1] == pytest.approx(row["val_loss"] / 0.6931471805599453) and "val_acc" not in lm
    tagger = curves(ckpt.read_metrics(runs["tagger"]), bits=False)
    row = ckpt.read_metrics(runs["tagger"])[-1]
    assert tagger["val"][1][-1] == row["val_loss"] and tagger["val_f1"][1][-1] == row["val_f1"]
    assert [w for w, _ in metric_sources(runs["frames-ensemble"])] == [
        "members/0", "members/0/refit", "members/1", "members/1/refit"
    ]  # fmt: skip
    assert [w for w, _ in metric_sources(runs["tag-ensemble"])] == ["members/0", "members/1"]


def test_plot_of_runs_of_different_kinds_together(runs, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "all.png"
    ok("plot", str(runs["lm"]), str(runs["tagger"]), str(runs["frames-ensemble"] / "members" / "0"), "--out", str(out))
    assert png(out)


def test_a_folder_that_is_no_run_is_a_clear_error(runs, tmp_path):
    cases = {
        tmp_path / "nothing": "no such run directory",
        tmp_path: "not a run directory (it has no config.json); give a folder made by `rnnlm train`",
        runs["tagger"] / "tags.json": "not a directory",
        runs["frames-ensemble"] / "members": f"a part of the run in {runs['frames-ensemble']}",
    }
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"format": "something-else"}', encoding="utf-8")
    cases[tmp_path / "other"] = "format 'something-else', which is none of the kinds of run this rnnlm knows"
    for where, message in cases.items():
        for command in ("info", "plot"):
            code, out, err = cli(command, str(where))
            assert code == 2 and message in err and "Traceback" not in err, (command, where, err)
            assert out == ""


def test_a_damaged_file_is_reported_in_place(runs, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(runs["frames"], copy)
    (copy / "last.safetensors").write_bytes(b"garbage")
    (copy / "val_report.json").write_text("{", encoding="utf-8")
    data, rows = info(copy)
    assert "corrupt or truncated" in data["last"]["error"] and "corrupt" in data["reports"]["val"]["error"]
    assert "corrupt or truncated" in rows["last checkpoint"] and data["best"]["step"] > 0
