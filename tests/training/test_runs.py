"""The run lifecycle written once (training/runs.py) and the ensemble rules (training/ensemble.py): opening each
kind of run, a folder of another kind, checkpoint fallbacks, the finished rule, resolved settings in config.json,
a resume read and checked once."""

from __future__ import annotations

import json
from unittest.mock import ANY

import numpy as np
import pytest
import torch

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.atomic import atomic_write_json
from rnnlm.core.errors import CheckpointError
from rnnlm.core.vocab import Vocab
from rnnlm.frames import run as frames_run
from rnnlm.frames.config import FramesRunConfig
from rnnlm.lm import run as lm_run
from rnnlm.lm.config import RunConfig
from rnnlm.recurrent.engines import resolve_matmul_dtype
from rnnlm.tagging import api as tagging
from rnnlm.tagging import run as tag_run
from rnnlm.tagging.config import TagRunConfig
from rnnlm.tagging.encoding import TagEncoder
from rnnlm.tagging.info import describe
from rnnlm.training import ensemble, runs
from tiny import TAGGER


def lm_dir(path):
    path.mkdir()
    atomic_write_json(path / ckpt.CONFIG, RunConfig().to_dict())
    Vocab.build("ab ba", level="char").save(path / ckpt.VOCAB)
    return path


def tagger_dir(path):
    path.mkdir()
    cfg = TagRunConfig()
    cfg.data.train, cfg.data.format, cfg.data.column = "x.txt", "conll2003", "ner"
    atomic_write_json(path / ckpt.CONFIG, cfg.to_dict())
    enc = TagEncoder.build([["Anna", "saw", "Oslo"]], [["S-PER", "O", "S-LOC"]], True, True, 1)
    enc.words.save(path / ckpt.VOCAB)
    enc.chars.save(path / tag_run.CHARS)
    atomic_write_json(path / tag_run.TAGS, enc.tags.to_dict())
    return path


def frames_dir(path):
    path.mkdir()
    atomic_write_json(path / ckpt.CONFIG, FramesRunConfig().to_dict())
    atomic_write_json(path / frames_run.CLASSES, {"task": "classify", "num_features": 2, "classes": ["a", "b"]})
    return path


MAKERS = {"lm": (lm_dir, lm_run.KIND), "tagger": (tagger_dir, tag_run.KIND), "frames": (frames_dir, frames_run.KIND)}


@pytest.mark.parametrize("name", list(MAKERS))
def test_open_run_reads_each_kind_of_run(tmp_path, name):
    make, kind = MAKERS[name]
    run = runs.open_run(make(tmp_path / name), kind)
    assert isinstance(run.config, kind.config) and run.dir == tmp_path / name and run.resolved == {}
    side = {"lm": Vocab, "tagger": TagEncoder, "frames": dict}[name]
    assert isinstance(run.side, side)


@pytest.mark.parametrize("name", list(MAKERS))
def test_a_folder_of_another_kind_says_what_it_holds(tmp_path, name):
    make, kind = MAKERS[name]
    folder = make(tmp_path / name)
    for other_name, (_, other) in MAKERS.items():
        if other_name == name:
            continue
        with pytest.raises(CheckpointError, match=rf"holds a {kind.noun} \(made by `{kind.command}`\), not a"):
            runs.open_run(folder, other)


def test_open_run_names_the_file_that_is_missing_or_damaged(tmp_path):
    folder = tagger_dir(tmp_path / "t")
    (folder / tag_run.TAGS).unlink()
    with pytest.raises(CheckpointError, match="tags.json"):
        runs.open_run(folder, tag_run.KIND)
    folder = frames_dir(tmp_path / "f")
    atomic_write_json(folder / frames_run.CLASSES, {"task": "classify"})
    with pytest.raises(CheckpointError, match="classes.json: needs task, num_features and classes"):
        runs.open_run(folder, frames_run.KIND)
    with pytest.raises(CheckpointError, match="no such run directory"):
        runs.open_run(tmp_path / "missing", lm_run.KIND)


def test_checkpoint_path_falls_back_and_names_an_ensembles_final_model(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint yet.*rnnlm tag train --out"):
        runs.checkpoint_path(run, "best", tag_run.KIND)
    (run / ckpt.LAST).write_bytes(b"x")
    assert runs.checkpoint_path(run, "best") == run / ckpt.LAST  # no validation data: no best
    (run / ckpt.BEST).write_bytes(b"x")
    assert runs.checkpoint_path(run, "best") == run / ckpt.BEST
    assert runs.checkpoint_path(run, "last") == run / ckpt.LAST
    (run / runs.MEMBERS / "0").mkdir(parents=True)
    (run / runs.MEMBERS / "0" / ckpt.BEST).write_bytes(b"x")
    with pytest.raises(CheckpointError, match="has not finished.*rnnlm frames train --resume"):
        runs.checkpoint_path(run, "best", frames_run.KIND)
    assert runs.checkpoint_path(run, "members/0/best.safetensors") == run / "members/0/best.safetensors"
    (run / runs.MODEL).write_bytes(b"x")
    assert runs.checkpoint_path(run, "best") == runs.checkpoint_path(run, "last") == run / runs.MODEL
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        runs.checkpoint_path(run, "members/1/best.safetensors")


def test_a_member_has_finished_by_its_marker_or_for_old_frame_runs_when_the_next_began(tmp_path):
    first, second = ensemble.member_dirs(tmp_path, 2)
    assert (first, second) == (tmp_path / "members/0", tmp_path / "members/1")
    first.mkdir(parents=True)
    assert not ensemble.is_finished(first) and not ensemble.is_finished(first, second)
    second.mkdir()
    assert not ensemble.is_finished(first)  # the marker is the rule: parallel members start side by side
    assert ensemble.is_finished(first, second)  # an old frame run: the next member began only after this one
    ensemble.mark_finished(first, "epochs")
    assert ensemble.is_finished(first) and json.loads((first / ensemble.FINISHED).read_text()) == {"reason": "epochs"}
    assert not ensemble.has_final_model(tmp_path)


def test_resume_config_merges_and_refuses_what_a_resume_may_not_change():
    saved = FramesRunConfig()
    wanted = runs.resume_config(saved, {"train": {"epochs": 99}, "data": {"test": "t.ts"}}, frames_run.KIND)
    assert wanted.train.epochs == 99 and wanted.data.test == "t.ts" and saved.train.epochs != 99
    with pytest.raises(CheckpointError, match="--hidden is 3 but the run used"):
        runs.resume_config(saved, {"model": {"hidden": 3}}, frames_run.KIND)


@pytest.fixture(scope="module")
def files(tiny_conll):
    return tiny_conll(train=20, dev=0)


@pytest.mark.e2e
def test_a_taggers_config_says_what_ran_and_a_resume_is_read_and_checked_once(files, tmp_path, monkeypatch):
    lines: list[str] = []
    settings = {**TAGGER, "epochs": 1, "progress": False, "threads": 1}
    tagger = tagging.train(files / "train.txt", out=str(tmp_path / "run"), log=lines.append, **settings)
    config = json.loads((tagger.run_dir / ckpt.CONFIG).read_text(encoding="utf-8"))
    dtype = resolve_matmul_dtype("auto", torch.device("cpu"))
    assert config["resolved"].pop("machine") == runs.machine_name(torch.device("cpu"))  # for the model card
    assert config["resolved"] == {"device": "cpu", "engine": "fused", "matmul_dtype": dtype}
    assert config["model"]["matmul_dtype"] == config["model"]["engine"] == "auto"  # the settings move with the run
    assert f"engine auto: fused, {dtype} matmuls | device cpu" in "\n".join(lines)
    assert runs.open_run(tagger.run_dir, tag_run.KIND).resolved == {**config["resolved"], "machine": ANY}
    rows = dict(describe(tagger.run_dir)[1])  # rnnlm info
    assert rows["engine"] == f"auto, auto matmuls, device auto (ran as fused, {dtype} matmuls, device cpu)"
    assert tagging.load(tagger.run_dir, engine="scratch").model.encoder.engine == "scratch"  # another engine to use
    with pytest.warns(DeprecationWarning, match=r"tagging.load\(impl=...\) is deprecated; use engine="):
        assert tagging.load(tagger.run_dir, impl="scratch").model.encoder.engine == "scratch"  # the old keyword

    reads, checks = [], []
    read_json, check_resume = ckpt.read_json, runs.check_resume
    monkeypatch.setattr(ckpt, "read_json", lambda path, what: reads.append(str(path)) or read_json(path, what))
    monkeypatch.setattr(runs, "check_resume", lambda *a: checks.append(1) or check_resume(*a))
    monkeypatch.setattr(tagging, "load", lambda *a, **k: None)  # what train returns: not the resume
    tagging.train(resume=tagger.run_dir, epochs=2, log=lines.append)
    assert [p for p in reads if p.endswith(ckpt.CONFIG)] == [str(tagger.run_dir / ckpt.CONFIG)] and checks == [1]


@pytest.mark.e2e
def test_a_frame_runs_config_and_header_name_the_engine_that_runs_its_padded_batches(tmp_path):
    """A frame model reads padded batches, which ``auto`` computes with fused (packed sequences) for every cell,
    in float32; config.json records it and the header prints it from there."""
    from rnnlm.frames import api as frames

    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((int(n), 2)).astype(np.float32) for n in rng.integers(3, 8, 12)]
    lines: list[str] = []
    settings = dict(cell="gru", hidden=4, proj=4, epochs=1, ensemble=1, refit=False, progress=False)
    model = frames.train(seqs, ["a", "b"] * 6, out=str(tmp_path / "run"), log=lines.append, **settings)
    assert any("directional gru" in line and "engine auto: fused |" in line for line in lines), lines
    config = json.loads((model.run_dir / ckpt.CONFIG).read_text(encoding="utf-8"))
    assert config["resolved"] == {"device": "cpu", "engine": "fused", "matmul_dtype": "float32", "machine": ANY}
