"""A frame model's export (frames/export.py): the ONNX graph gives the class probabilities that rnnlm gives, for
padded batches of mixed lengths, with the training set's standardization inside it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export_checks import SHAPES, assert_close, mixed_lengths, onnx_session, program, run_onnx
from rnnlm.core import export as core_export
from rnnlm.frames import api as frames
from rnnlm.recurrent.encoder import RecurrentEncoder
from tiny import FRAMES, ramp_frames

pytestmark = pytest.mark.e2e

# Every layer a frame model has: a bidirectional encoder, a convolutional branch, attention pooling; and an ensemble.
SETTINGS = {
    **FRAMES,
    "epochs": 1,
    "max_steps": 2,
    "val_fraction": 0,
    "refit": False,
    "progress": False,
    "threads": 1,
    "fcn": 4,
}


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames_export")
    x, y = ramp_frames(24, seed=0, dims=3)
    x = [f * 5 + 3 for f in x]  # far from standardized, so that a graph without the statistics fails
    settings = {**SETTINGS, "pooling": "attention", "ensemble": 2}
    return frames.train(x, y, out=str(d / "run"), log=lambda _: None, **settings)


@pytest.fixture(scope="module")
def classifier_onnx(classifier, tmp_path_factory):
    return classifier.export(tmp_path_factory.mktemp("frames_onnx") / "c.onnx")


@pytest.fixture(scope="module")
def labeler(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames_label")
    x, y = ramp_frames(12, seed=1, dims=3)
    labels = [np.array([label] * len(f)) for f, label in zip(x, y, strict=True)]
    settings = {**SETTINGS, "fcn": 0, "cell": "lstm", "layers": 2}
    return frames.train(x, labels, out=str(d / "run"), log=lambda _: None, **settings)


def rnnlm_probs(model: frames.FrameModel, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """What rnnlm computes, with its reference engine in float32."""
    for m in model.model.modules():
        if isinstance(m, RecurrentEncoder):
            m.engine = "scratch"
    with torch.no_grad():
        return torch.softmax(model.model(x, lengths), dim=-1)


def check(model: frames.FrameModel, path, classify: bool) -> None:
    session = onnx_session(path)
    for batch, time in SHAPES:
        g = torch.Generator().manual_seed(batch + time)
        x = torch.randn(batch, time, 3, generator=g) * 5 + 3
        lengths = mixed_lengths(batch, time)
        x[torch.arange(time) >= lengths[:, None]] = float("nan")  # padding may hold anything
        want = rnnlm_probs(model, x, lengths)
        got = run_onnx(session, {"frames": x, "lengths": lengths})
        if not classify:  # a padded step's row is no prediction (uniform in the graph): compare the real ones
            mask = torch.arange(time) < lengths[:, None]
            got, want = [torch.as_tensor(got[0])[mask]], want[mask]
        assert_close(got, [want], f"batch {batch}, time {time}")


def test_the_onnx_classifier_gives_rnnlm_s_probabilities(classifier, classifier_onnx):
    check(classifier, classifier_onnx, classify=True)


def test_the_onnx_labeler_gives_rnnlm_s_probabilities_at_every_real_frame(labeler, tmp_path):
    check(labeler, labeler.export(tmp_path / "l.onnx"), classify=False)


def test_a_sequence_s_probabilities_do_not_depend_on_its_batch(classifier_onnx):
    session = onnx_session(classifier_onnx)
    x = torch.randn(3, 9, 3)
    lengths = torch.tensor([9, 4, 6])
    together = run_onnx(session, {"frames": x, "lengths": lengths})[0]
    for b in range(3):
        alone = run_onnx(session, {"frames": x[b : b + 1, : lengths[b]], "lengths": lengths[b : b + 1]})[0]
        np.testing.assert_allclose(together[b : b + 1], alone, atol=1e-6)


def test_the_file_carries_the_classes_and_the_input_spec(classifier, classifier_onnx):
    meta = core_export.read_metadata(classifier_onnx)
    assert meta["kind"] == "frames" and meta["task"] == "classify" and meta["members"] == 2
    assert meta["classes"] == classifier.classes and meta["inputs_order"] == ["frames", "lengths"]
    assert "features=3" in meta["inputs"]["frames"]


def test_the_exported_program_gives_rnnlm_s_probabilities(classifier, tmp_path):
    path = classifier.export(tmp_path / "c.pt2", format="exported-program")
    probs = program(path)
    # A program runs torch's scan step by step in Python: 60 steps here (500 in the language model's test).
    for batch, time in ((1, 1), (3, 7), (17, 60)):
        x = torch.randn(batch, time, 3) * 5 + 3
        lengths = mixed_lengths(batch, time)
        with torch.no_grad():
            assert_close([probs(x, lengths)], [rnnlm_probs(classifier, x, lengths)], f"batch {batch}, time {time}")
