"""Ensembles and refits of frame models: the ensemble's probabilities are its members' mean, a refit trains the
chosen epoch count on all the data, and an ensemble run saves, loads and resumes to the same predictions."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from fixture_files import CONFIGS
from rnnlm.core.checkpoint import load_weights, read_metrics
from rnnlm.frames import api as frames
from rnnlm.frames.config import VERSION, FramesModelConfig, FramesRunConfig
from rnnlm.frames.model import FrameEnsemble, FrameRNN
from rnnlm.frames.prep import feature_stats, pad_frames
from rnnlm.training.ensemble import member_seed
from tiny import FRAMES, ramp_frames

QUIET = dict(progress=False, log=lambda line: None)


def test_ensemble_probabilities_are_the_mean_of_its_members():
    members = []
    for seed, task in ((0, "label"), (1, "label"), (2, "label")):
        torch.manual_seed(seed)
        members.append(FrameRNN(FramesModelConfig(hidden=5, proj=4), 3, 4, task, torch.zeros(3), torch.ones(3)))
    ensemble = FrameEnsemble(members).eval()
    gen = torch.Generator().manual_seed(0)
    frames_, lengths, mask = pad_frames([torch.randn(n, 3, generator=gen) for n in (5, 2, 7)])
    with torch.no_grad():
        want = torch.stack([m.eval()(frames_, lengths).softmax(-1) for m in members]).mean(0)  # (B, T, C)
        got = ensemble(frames_, lengths).softmax(-1)
    torch.testing.assert_close(got[mask], want[mask])
    assert set(ensemble.state_dict()) == {f"members.{i}.{k}" for i in range(3) for k in members[0].state_dict()}


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    seqs, labels = ramp_frames(60, seed=0, noise=0)
    out = tmp_path_factory.mktemp("ensemble") / "run"
    settings = dict(epochs=6, patience=0, ensemble=2, refit=True, **FRAMES)
    return frames.train(seqs, labels, out=str(out), **settings, **QUIET), (seqs, labels, settings)


@pytest.mark.e2e
def test_refit_trains_the_chosen_epochs_on_all_the_data(ensemble_run):
    model, (seqs, labels, _) = ensemble_run
    run = model.run_dir
    final, _ = load_weights(run / "model.safetensors")
    mean, std = feature_stats(seqs)
    for i in range(2):
        chosen = float(load_weights(run / "members" / str(i) / "best.safetensors")[1]["epoch"])
        refit = read_metrics(run / "members" / str(i) / "refit")
        assert [r["epoch"] for r in refit] == list(range(1, math.ceil(chosen) + 1))
        assert refit[-1]["step"] == math.ceil(chosen) * math.ceil(60 / 8)  # every sequence, in batches of 8
        assert "val_loss" not in refit[-1]
        torch.testing.assert_close(final[f"members.{i}.input.mean"], mean)  # statistics of all the data
        torch.testing.assert_close(final[f"members.{i}.input.std"], std)
        member = read_metrics(run / "members" / str(i))
        assert member[-1]["epoch"] == 6 and member[-1]["step"] == 6 * math.ceil(48 / 8)  # the split's 48
    assert json.loads(load_weights(run / "model.safetensors")[1]["epochs"]) == [
        math.ceil(float(load_weights(run / "members" / str(i) / "best.safetensors")[1]["epoch"])) for i in range(2)
    ]
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert config["version"] == VERSION and config["fit"] == {"ensemble": 2, "refit": True}
    assert member_seed(0, 0) == 0 and member_seed(0, 1) not in (0, 1, 2, 3, 4)


@pytest.mark.e2e
def test_ensemble_run_loads_to_identical_predictions(ensemble_run):
    model, _ = ensemble_run
    seqs, _ = ramp_frames(12, seed=5, noise=0)
    again = frames.load(model.run_dir)
    assert isinstance(again.model, FrameEnsemble) and len(again.model.members) == 2
    np.testing.assert_array_equal(again.predict_proba(seqs), model.predict_proba(seqs))
    np.testing.assert_array_equal(frames.load(model.run_dir, "last").predict_proba(seqs), model.predict_proba(seqs))
    assert again.reports["val"] == model.reports["val"]
    assert "2 x bidirectional gru" in repr(again)
    # A member's own checkpoint still loads as one model.
    member = frames.load(model.run_dir, str(model.run_dir / "members" / "1" / "refit" / "last.safetensors"))
    assert isinstance(member.model, FrameRNN)
    probs = np.mean(
        [
            frames.load(
                model.run_dir, str(model.run_dir / "members" / str(i) / "refit" / "last.safetensors")
            ).predict_proba(seqs)
            for i in range(2)
        ],
        axis=0,
    )
    np.testing.assert_allclose(model.predict_proba(seqs), probs, rtol=1e-5, atol=1e-6)


@pytest.mark.e2e
def test_ensemble_validation_report_pools_the_members_splits(ensemble_run):
    model, _ = ensemble_run
    report = model.reports["val"]
    assert int(np.sum(report["confusion"])) == 2 * 12  # each member's 12 validation sequences


@pytest.mark.e2e
def test_resume_after_a_crash_between_members_gives_the_same_model(ensemble_run, tmp_path):
    model, (seqs, labels, _) = ensemble_run
    crashed = tmp_path / "crashed"
    shutil.copytree(model.run_dir, crashed)
    shutil.rmtree(crashed / "members" / "1" / "refit")  # member 1 chose its epochs, then the process died
    (crashed / "model.safetensors").unlink()
    lines = []
    again = frames.train(seqs, labels, resume=crashed, progress=False, log=lines.append)
    assert "member 1/2 (seed 0): finished before, in" in "\n".join(lines)
    a, _ = load_weights(model.run_dir / "model.safetensors")
    b, _ = load_weights(crashed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert again.reports["val"] == model.reports["val"]


def version_3() -> dict:
    """A frame run's config.json as version 3 wrote it (tests/fixtures/configs)."""
    return json.loads((CONFIGS / "frames_v3.json").read_text(encoding="utf-8"))


def test_version_1_configs_read_as_they_were_trained():
    d = version_3()
    d["version"] = 1
    del d["fit"], d["model"]["label_smoothing"], d["model"]["fcn"]
    cfg = FramesRunConfig.from_dict(d)
    assert (cfg.fit.ensemble, cfg.fit.refit, cfg.model.label_smoothing) == (1, False, 0.0) and cfg.fit.single
    assert cfg.model.fcn == 0
    assert cfg.model.hidden == FramesRunConfig().model.hidden  # a field the file holds is read as it is


def test_version_2_configs_read_as_models_without_a_conv_branch():
    d = version_3()
    assert d["version"] == 3 and d["model"]["fcn"] is None  # a classifier's default branch
    d["version"] = 2
    del d["model"]["fcn"]
    cfg = FramesRunConfig.from_dict(d)
    assert cfg.model.fcn == 0 and cfg.fit == FramesRunConfig().fit
    d["model"]["fcn"] = 8  # a field the file holds is read as it is
    assert FramesRunConfig.from_dict(d).model.fcn == 8


@pytest.mark.e2e
def test_a_run_made_before_the_finished_marker_resumes_by_the_old_rule(ensemble_run, tmp_path):
    """Frame runs used to call a member finished once the next one began (or the final model existed); such a run
    has no finished.json, and its finished members must not be trained again."""
    model, (seqs, labels, _) = ensemble_run
    run = model.run_dir
    assert all((run / "members" / str(i) / sub / "finished.json").is_file() for i in (0, 1) for sub in ("", "refit"))
    old = tmp_path / "old"
    shutil.copytree(run, old)
    for marker in old.rglob("finished.json"):
        marker.unlink()
    (old / "model.safetensors").unlink()  # the process died before it saved the members together
    lines = []
    again = frames.train(seqs, labels, resume=old, progress=False, log=lines.append)
    text = "\n".join(lines)
    second = f"member 2/2 (seed {member_seed(0, 1)})"
    for name in ("member 1/2 (seed 0)", "member 1/2 (seed 0), refit on all the data", second):
        assert f"{name}: finished before, in" in text, name
    assert f"{second}, refit on all the data: finished before" not in text  # the last one: resumed, not skipped
    a, _ = load_weights(run / "model.safetensors")
    b, _ = load_weights(old / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert again.reports["val"] == model.reports["val"]
