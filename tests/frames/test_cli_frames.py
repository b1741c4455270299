"""`rnnlm frames train | eval | predict` end to end on a tiny .ts file, exact resume, and clear errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from fixture_files import CONFIGS
from rnnlm.cli import build_parser, main
from rnnlm.core.checkpoint import load_weights
from rnnlm.frames import api as frames
from rnnlm.frames.config import FRAMES_SECTIONS, VERSION
from rnnlm.frames.data import read_ts
from rnnlm.lm.config import LMTrainConfig
from rnnlm.training.config import TrainConfig
from tiny import FRAMES_FLAGS, run_frames_cli, write_ts

# one model, whose files these tests read; one test trains an ensemble
TINY = [*FRAMES_FLAGS, "--ensemble", "1", "--no-refit"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames_cli")
    write_ts(d / "train.ts", 60, seed=0)
    write_ts(d / "test.ts", 30, seed=1)
    code, log = run_frames_cli(
        "train", str(d / "train.ts"), "--test", str(d / "test.ts"), "--out", str(d / "run"), *TINY
    )
    assert code == 0, log
    return d, log


@pytest.mark.e2e
def test_train_prints_and_saves_the_scores(trained):
    d, log = trained
    run = d / "run"
    assert "test: accuracy" in log and "confusion (rows: gold, columns: predicted)" in log
    assert f"done: {run}" in log
    for name in ("config.json", "classes.json", "metrics.jsonl", "last.safetensors", "best.safetensors"):
        assert (run / name).is_file(), name
    for name in ("val_report", "test_report"):
        assert (run / f"{name}.json").is_file() and (run / f"{name}.png").is_file()
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert config["format"] == "rnnlm-frames-run" and config["data"]["task"] == "classify"
    assert config["data"]["train_path"] == str((d / "train.ts").absolute())
    assert json.loads((run / "classes.json").read_text(encoding="utf-8")) == {
        "task": "classify",
        "num_features": 2,
        "classes": ["up", "down", "flat"],
    }
    weights, _ = load_weights(run / "best.safetensors")
    assert weights["input.mean"].shape == (2,)  # the training statistics travel with the weights


@pytest.mark.e2e
def test_eval_reproduces_the_test_report(trained):
    d, _ = trained
    code, out = run_frames_cli("eval", str(d / "run"), str(d / "test.ts"))
    assert code == 0
    saved = json.loads((d / "run" / "eval_test.json").read_text(encoding="utf-8"))
    report = json.loads((d / "run" / "test_report.json").read_text(encoding="utf-8"))
    assert saved["accuracy"] == report["accuracy"] and saved["confusion"] == report["confusion"]
    assert out.startswith(f"test.ts: accuracy {report['accuracy']:.4f}")
    code, out = run_frames_cli("eval", str(d / "run"), str(d / "test.ts"), "--json", "--out", str(d / "ev"))
    assert json.loads(out)["macro_f1"] == report["macro_f1"] and (d / "ev.json").is_file()


@pytest.mark.e2e
def test_predict_lines_agree_with_the_api_and_the_labels(trained):
    d, _ = trained
    code, out = run_frames_cli("predict", str(d / "run"), str(d / "test.ts"))
    assert code == 0
    lines = out.splitlines()
    test = read_ts(d / "test.ts")
    assert lines == frames.load(d / "run").predict(test).tolist()
    report = json.loads((d / "run" / "test_report.json").read_text(encoding="utf-8"))
    gold = [test.classes[k] for k in test.labels]
    assert np.mean([p == g for p, g in zip(lines, gold, strict=True)]) == report["accuracy"]
    code, out = run_frames_cli("predict", str(d / "run"), str(d / "test.ts"), "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["index"] for r in rows] == list(range(30)) and [r["label"] for r in rows] == lines
    for r in rows:
        assert max(r["probabilities"], key=r["probabilities"].get) == r["label"]
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.e2e
def test_resume_continues_exactly(tmp_path):
    write_ts(tmp_path / "train.ts", 30, seed=0)
    common = [str(tmp_path / "train.ts"), *TINY, "--patience", "0"]
    assert run_frames_cli("train", *common, "--epochs", "4", "--out", str(tmp_path / "straight"))[0] == 0
    assert run_frames_cli("train", *common, "--epochs", "2", "--out", str(tmp_path / "resumed"))[0] == 0
    as_version_3(tmp_path / "resumed" / "config.json")  # a run of an older rnnlm resumes too
    code, log = run_frames_cli(
        "train", "--resume", str(tmp_path / "resumed"), "--epochs", "4", "--eval-batch-size", "5"
    )
    assert code == 0 and "resumed at step 6, epoch 2" in log  # 24 training sequences, batches of 8
    config = json.loads((tmp_path / "resumed" / "config.json").read_text(encoding="utf-8"))
    assert (
        config["version"] == VERSION and config["eval"] == {"eval_batch_size": 5} and "seq_len" not in config["train"]
    )
    a, _ = load_weights(tmp_path / "straight" / "last.safetensors")
    b, _ = load_weights(tmp_path / "resumed" / "last.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


@pytest.mark.e2e
def test_an_ensemble_run_trains_evaluates_and_predicts(tmp_path):
    write_ts(tmp_path / "train.ts", 30, seed=0)
    write_ts(tmp_path / "test.ts", 12, seed=1)
    run = tmp_path / "run"
    flags = ["--ensemble", "2", "--refit", "--epochs", "3", "--patience", "0", "--out", str(run)]
    code, log = run_frames_cli("train", str(tmp_path / "train.ts"), "--test", str(tmp_path / "test.ts"), *TINY, *flags)
    assert code == 0 and "member 2/2" in log and "refit on all the data" in log
    assert sorted(p.name for p in run.iterdir() if p.suffix != ".png") == [
        "classes.json",
        "config.json",
        "members",
        "model.safetensors",
        "test_report.json",
        "val_report.json",
    ]
    code, out = run_frames_cli("eval", str(run), str(tmp_path / "test.ts"), "--json")
    report = json.loads((run / "test_report.json").read_text(encoding="utf-8"))
    assert code == 0 and json.loads(out)["confusion"] == report["confusion"]
    code, out = run_frames_cli("predict", str(run), str(tmp_path / "test.ts"))
    assert out.splitlines() == frames.load(run).predict(read_ts(tmp_path / "test.ts")).tolist()


def as_version_3(path) -> None:
    """Rewrite a run's config.json as version 3 wrote it: eval_batch_size in the data section, the language
    model's training settings (at their defaults, as a frame run had to keep them) in the train section, and the
    engine setting named impl."""
    d = json.loads(path.read_text(encoding="utf-8"))
    old = json.loads((CONFIGS / "frames_v3.json").read_text(encoding="utf-8"))
    lm_only = {k: v for k, v in old["train"].items() if k not in d["train"]}
    assert len(lm_only) == 10
    d.update(version=3, data={**d["data"], **d.pop("eval")}, train={**d["train"], **lm_only})
    d["model"] = {("impl" if k == "engine" else k): v for k, v in d["model"].items()}
    path.write_text(json.dumps(d), encoding="utf-8")


@pytest.mark.e2e
def test_errors_name_the_problem(trained, tmp_path, capsys):
    d, _ = trained
    assert main(["frames", "train", "--no-progress"]) == 2
    assert "give the training file" in capsys.readouterr().err
    write_ts(tmp_path / "three.ts", 6, seed=0, dims=3)
    assert main(["frames", "eval", str(d / "run"), str(tmp_path / "three.ts")]) == 2
    assert "3 features per frame, but the model reads 2" in capsys.readouterr().err
    code = main(["frames", "train", "--resume", str(d / "run"), "--hidden", "9"])
    assert code == 2 and "--hidden is 9 but the run used 8" in capsys.readouterr().err
    for bad in (["--seq-len", "5"], ["--pooling", "max"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["frames", "train", "x.ts", *bad])


def test_every_frames_flag_is_documented(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["frames", "train", "--help"])
    out = capsys.readouterr().out
    for cls in FRAMES_SECTIONS.values():
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            assert (flag in out) != (f.name == "train_path"), flag  # the training file is the positional TRAIN
    lm_only = {f.name for f in dataclasses.fields(LMTrainConfig)} - {f.name for f in dataclasses.fields(TrainConfig)}
    for name in lm_only:  # a language model's settings are no frame run's flags
        assert f"--{name.replace('_', '-')} " not in out, name
    assert "(default: 16)" in out  # the frame run's own batch size, not the language model's 32


def _as_npz(data, path, labels: list[str] | None = None) -> None:
    """The sequences of a FrameDataset padded into an .npz, with labels ``y`` only when given."""
    n, t = len(data), int(data.lengths.max())
    x = np.zeros((n, t, data.num_features), dtype=np.float32)
    for i, s in enumerate(data.sequences):
        x[i, : len(s)] = s
    arrays = {"x": x, "lengths": data.lengths}
    if labels is not None:
        arrays["y"] = np.array(labels)
    np.savez(path, **arrays)


@pytest.mark.e2e
def test_predict_reads_unlabelled_files_and_unknown_labels(trained, tmp_path, capsys):
    d, _ = trained
    test = read_ts(d / "test.ts")
    code, expected = run_frames_cli("predict", str(d / "run"), str(d / "test.ts"))
    assert code == 0 and len(expected.splitlines()) == 30
    _as_npz(test, tmp_path / "bare.npz")  # frames and lengths alone: what prediction needs
    new_labels = ["sideways"] * len(test)  # a class the model never saw
    _as_npz(test, tmp_path / "new.npz", new_labels)
    ts = (d / "test.ts").read_text(encoding="utf-8")
    (tmp_path / "bare.ts").write_text(  # the .ts way to say "no labels": @classLabel false, no label field
        "\n".join(
            line.rsplit(":", 1)[0] if line[:1] not in "@#" else line.replace("true up down flat", "false")
            for line in ts.splitlines()
        ),
        encoding="utf-8",
    )
    (tmp_path / "new.ts").write_text(ts.replace(":flat\n", ":sideways\n"), encoding="utf-8")
    for name in ("bare.npz", "new.npz", "bare.ts", "new.ts"):
        code, out = run_frames_cli("predict", str(d / "run"), str(tmp_path / name))
        assert (code, out) == (0, expected), name
    # Scoring needs labels the model knows: both refusals are user errors that say why.
    assert main(["frames", "eval", str(d / "run"), str(tmp_path / "bare.npz")]) == 2
    assert "no labels to score against" in capsys.readouterr().err
    assert main(["frames", "eval", str(d / "run"), str(tmp_path / "new.npz")]) == 2
    assert "label 'sideways' is not among the classes ['up', 'down', 'flat']" in capsys.readouterr().err
    # and so is training on a file without labels, before a run directory is made
    assert main(["frames", "train", str(tmp_path / "bare.npz"), "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "has no labels to train on" in capsys.readouterr().err and not (tmp_path / "r").exists()


@pytest.mark.e2e
def test_eval_writing_where_it_cannot_is_a_clear_error(trained, capsys):
    d, _ = trained
    assert main(["frames", "eval", str(d / "run"), str(d / "test.ts"), "--out", "/proc/rnnlm-x/ev"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnlm: error: cannot read or write /proc/rnnlm-x: [Errno 2] ") and "Traceback" not in err


def test_cuda_graph_on_is_refused_not_ignored(tmp_path, capsys):
    write_ts(tmp_path / "train.ts", 12, seed=0)
    args = ["frames", "train", str(tmp_path / "train.ts"), *TINY, "--out", str(tmp_path / "r")]
    assert main([*args, "--cuda-graph", "on"]) == 2
    err = capsys.readouterr().err
    assert "--cuda-graph on: a frame run's batches differ in shape" in err and not (tmp_path / "r").exists()
    cfg = frames.FramesRunConfig()
    for value in ("auto", "off"):  # eager steps, as a frame run takes them: honoured
        cfg.train.cuda_graph = value
        cfg.check()
