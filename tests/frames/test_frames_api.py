"""The frames Python API: numpy arrays in, names out; the synthetic task that needs a bidirectional model;
configs; the task's batch order."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fixture_files import CONFIGS
from rnnlm.core.errors import ConfigError, DataError
from rnnlm.frames import api as frames
from rnnlm.frames.config import VERSION, FramesModelConfig, FramesRunConfig, build_frames_config, split_frames_settings
from rnnlm.frames.data import FrameDataset
from rnnlm.frames.model import FrameRNN
from rnnlm.frames.synth import future_symbol_dataset
from rnnlm.frames.task import FrameTask
from rnnlm.training.config import TrainConfig
from tiny import ramp_frames

QUIET = dict(progress=False, log=lambda line: None)


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    seqs, labels = ramp_frames(60, seed=0)
    out = tmp_path_factory.mktemp("api") / "run"
    return frames.train(seqs, labels, hidden=8, proj=8, epochs=25, seed=0, out=str(out), **QUIET)


@pytest.mark.e2e
def test_numpy_in_names_out(toy_model):
    seqs, labels = ramp_frames(30, seed=1)
    assert toy_model.classes == ["down", "flat", "up"] and toy_model.task == "classify"
    pred = toy_model.predict(seqs)
    assert pred.shape == (30,) and set(pred) <= set(toy_model.classes)
    report = toy_model.evaluate(seqs, labels)
    assert report["accuracy"] == pytest.approx(np.mean(pred == np.array(labels)))
    assert report["accuracy"] > 0.9  # an easy task: the model has learned something
    probs = toy_model.predict_proba(seqs)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    # One padded (N, T, F) array with lengths gives the same answers as the list of arrays.
    lengths = np.array([len(s) for s in seqs])
    padded = np.full((30, lengths.max(), 2), np.nan, dtype=np.float32)
    for i, s in enumerate(seqs):
        padded[i, : len(s)] = s
    np.testing.assert_allclose(toy_model.predict_proba(padded, lengths=lengths), probs, rtol=1e-5, atol=1e-6)


@pytest.mark.e2e
def test_load_gives_the_trained_model_back(toy_model):
    seqs, _ = ramp_frames(10, seed=2)
    again = frames.load(toy_model.run_dir)
    np.testing.assert_array_equal(again.predict_proba(seqs), toy_model.predict_proba(seqs))
    assert again.reports["val"] == toy_model.reports["val"]
    a, b = again.model.state_dict(), toy_model.model.state_dict()  # the training statistics included
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.e2e
def test_load_takes_an_engine_and_its_deprecated_name_impl(toy_model):
    seqs, _ = ramp_frames(10, seed=2)

    def engines(model) -> set[str]:  # an ensemble's members each have their encoder
        return {m.encoder.engine for m in getattr(model.model, "members", [model.model])}

    new = frames.load(toy_model.run_dir, engine="scratch")
    assert engines(new) == {new.config.model.engine} == {"scratch"} != engines(toy_model)
    with pytest.warns(DeprecationWarning, match=r"frames.load\(impl=...\) is deprecated; use engine="):
        old = frames.load(toy_model.run_dir, impl="scratch")
    assert engines(old) == {"scratch"}
    np.testing.assert_allclose(old.predict_proba(seqs), new.predict_proba(seqs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new.predict_proba(seqs), toy_model.predict_proba(seqs), rtol=1e-5, atol=1e-6)


@pytest.mark.e2e
def test_api_errors_are_clear(toy_model):
    with pytest.raises(DataError, match="3 features per frame, but the model reads 2"):
        toy_model.predict([np.zeros((4, 3), dtype=np.float32)])
    with pytest.raises(DataError, match=r"labels \['sideways'\] are not among the classes"):
        toy_model.evaluate([np.zeros((4, 2), dtype=np.float32)], ["sideways"])
    with pytest.raises(DataError, match=r"\[x\] is one"):
        toy_model.predict(np.zeros((4, 2), dtype=np.float32))
    with pytest.raises(TypeError, match="unknown setting 'seq_len'"):  # a language model's, not a frame run's
        frames.train(*ramp_frames(6, 0), seq_len=10)
    with pytest.raises(TypeError, match="did you mean hidden"):
        frames.train(*ramp_frames(6, 0), hiden=10)


@pytest.mark.e2e
def test_only_a_bidirectional_labeler_solves_the_future_symbol_task(tmp_path):
    """Each frame's label is the symbol shown 3 frames later: a left-to-right model is at chance (1/4) on
    every frame but the last few, a bidirectional one reads the answer."""
    train, test = future_symbol_dataset(300, seed=0), future_symbol_dataset(100, seed=1)
    settings = dict(hidden=16, proj=8, epochs=30, patience=10, lr=0.01, dropout=0.0, val_fraction=0.1, seed=0)
    # One LSTM, as the thresholds were set for (the default is now an ensemble of GRUs, only slower here).
    settings.update(cell="lstm", ensemble=1, refit=False)
    acc = {}
    for bidirectional in (False, True):
        out = str(tmp_path / str(bidirectional))
        model = frames.train(train, test=test, bidirectional=bidirectional, out=out, **settings, **QUIET)
        assert model.task == "label"
        acc[bidirectional] = model.reports["test"]["accuracy"]
    assert acc[False] < 0.40, acc
    assert acc[True] > 0.95, acc


@pytest.mark.e2e
def test_a_conv_branch_run_loads_to_identical_predictions(tmp_path):
    """--fcn: the branch's weights and running statistics travel in the checkpoint, and its config round-trips."""
    seqs, labels = ramp_frames(30, seed=0)
    model = frames.train(seqs, labels, hidden=4, proj=4, fcn=3, epochs=2, seed=0, out=str(tmp_path), **QUIET)
    assert model.config.model.fcn == 3
    again = frames.load(tmp_path)
    assert again.config == model.config
    np.testing.assert_array_equal(again.predict_proba(seqs), model.predict_proba(seqs))
    a, b = again.model.state_dict(), model.model.state_dict()
    assert "members.0.fcn.norms.2.running_var" in a and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_version_3_config_reads_without_the_language_model_settings():
    """A frame run's config.json before version 4 held the language model's training settings (at their
    defaults: any other value was refused) and eval_batch_size in the data section: it reads, and writes back
    without the first and with the second in the eval section, every other key and value as before."""
    old = json.loads((CONFIGS / "frames_v3.json").read_text(encoding="utf-8"))
    assert old["version"] == 3 and {"seq_len", "pred_period", "prefixes"} <= set(old["train"])
    cfg = FramesRunConfig.from_dict(old)
    settings = {"train_path": "train.ts", "eval_batch_size": 64, "out": "runs/frames"}
    assert cfg == build_frames_config(split_frames_settings(settings)) and cfg.eval.eval_batch_size == 64
    new = cfg.to_dict()
    lm_only = {"seq_len", "sampling", "random_offset", "variable_len", "ar", "tar"}
    lm_only |= {"pred_period", "pred_len", "prefixes", "pred_temperature"}
    assert new["version"] == VERSION and not lm_only & set(new["train"]) and new["eval"] == {"eval_batch_size": 64}
    assert new["train"] == {k: v for k, v in old["train"].items() if k not in lm_only}
    assert new["data"] == {k: v for k, v in old["data"].items() if k != "eval_batch_size"}
    engine_as_impl = {("impl" if k == "engine" else k): v for k, v in new["model"].items()}
    assert (engine_as_impl, new["fit"]) == (old["model"], old["fit"])
    assert FramesRunConfig.from_dict(new) == cfg
    with pytest.raises(ValueError, match=r"section 'train' has unknown keys \['seq_len'\]"):
        FramesRunConfig.from_dict({**new, "train": {**new["train"], "seq_len": 64}})  # only older versions had it


def test_config_round_trip_and_checks():
    settings = {"hidden": 7, "pooling": "attention", "fcn": 16, "time_budget": 5.0}
    cfg = build_frames_config(split_frames_settings(settings))
    assert cfg.model.hidden == 7 and cfg.model.pooling == "attention" and cfg.model.fcn == 16
    assert cfg.train.epochs is None  # a time budget without an epoch limit governs alone
    assert cfg.train.batch_size == 16 and cfg.train.patience == 20  # the frame defaults, not the LM's
    assert FramesRunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown \['generate'\]"):
        FramesRunConfig.from_dict({**cfg.to_dict(), "generate": {}})
    with pytest.raises(ValueError, match=r"section 'model' has unknown keys \['embed'\]"):
        FramesRunConfig.from_dict({**cfg.to_dict(), "model": {"embed": 3}})
    with pytest.raises(ValueError, match="not a frames run config"):
        FramesRunConfig.from_dict({**cfg.to_dict(), "format": "rnnlm-run"})
    bad = build_frames_config(split_frames_settings({"val_fraction": 1.0}))
    with pytest.raises(ConfigError, match=r"--val-fraction must be in \[0, 1\)"):
        bad.check()


def test_batch_order_depends_only_on_seed_and_epoch():
    data = future_symbol_dataset(37, seed=0)
    task = FrameTask(data, None, TrainConfig(batch_size=8, seed=3), 64, torch.device("cpu"))
    assert task.num_batches(0) == 5
    whole = [b.frames for b in task.batches(1)]
    assert [b.frames.shape[0] for b in task.batches(1)] == [8, 8, 8, 8, 5]
    tail = [b.frames for b in task.batches(1, start=3)]  # a resume starts mid-epoch
    assert all(torch.equal(a, b) for a, b in zip(whole[3:], tail, strict=True))
    other = [b.frames for b in task.batches(2)]
    assert not torch.equal(whole[0], other[0])


@pytest.mark.parametrize("task", ["classify", "label"])
def test_label_smoothing_mixes_the_gold_loss_with_the_mean_over_classes(task):
    """With smoothing eps the loss is (1 - eps) * cross-entropy + eps * mean over classes of -log p."""
    data = future_symbol_dataset(6, seed=0)
    if task == "classify":
        data = FrameDataset(data.sequences, np.arange(6) % 4, data.classes, "classify")
    model = FrameRNN(FramesModelConfig(hidden=4, proj=3), data.num_features, 4, task, torch.zeros(6), torch.ones(6))
    model.eval()
    tc = TrainConfig(batch_size=6)
    batch = next(iter(FrameTask(data, None, tc, 64, torch.device("cpu")).batches(0)))
    plain, count = FrameTask(data, None, tc, 64, torch.device("cpu")).loss(model, batch)
    smooth, count2 = FrameTask(data, None, tc, 64, torch.device("cpu"), label_smoothing=0.2).loss(model, batch)
    logp = model(batch.frames, batch.lengths).log_softmax(-1)  # (B, C) or (B, T, C)
    real = batch.targets != -100
    uniform = -logp.mean(-1)[real].mean()
    assert count == count2
    torch.testing.assert_close(smooth, 0.8 * plain + 0.2 * uniform)


def test_label_loss_is_the_mean_over_real_frames():
    data = future_symbol_dataset(6, seed=0)
    task = FrameTask(data, None, TrainConfig(batch_size=6), 64, torch.device("cpu"))
    model = FrameRNN(FramesModelConfig(hidden=4, proj=3), data.num_features, 4, "label", torch.zeros(6), torch.ones(6))
    model.eval()  # no dropout: the two computations must see the same network
    batch = next(iter(task.batches(0)))
    loss, count = task.loss(model, batch)
    assert count == int(data.lengths.sum())
    per_frame = []
    for i in range(6):
        n = int(batch.lengths[i])
        logits = model(batch.frames[i : i + 1, :n], batch.lengths[i : i + 1])[0]
        per_frame.append(torch.nn.functional.cross_entropy(logits, batch.targets[i, :n], reduction="none"))
    torch.testing.assert_close(loss, torch.cat(per_frame).mean())
