"""Frame files read from memory (an upload) read as from disk; saliency is the gradient times the input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rnnlm.frames.data import read_frames
from rnnlm.serve.frames import read_upload, saliency

pytestmark = pytest.mark.e2e  # the runs are trained once per session (conftest.served_runs)


def same(a, b) -> None:
    assert len(a) == len(b) and a.classes == b.classes and a.task == b.task
    for x, y in zip(a.sequences, b.sequences, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(np.asarray(a.labels), np.asarray(b.labels))


def test_ts_and_npz_uploads_read_as_the_files(served_runs, tmp_path):
    ts = served_runs["ts"]
    same(read_upload(ts.read_bytes(), "a.ts", None, True), read_frames(ts))
    ds = read_frames(ts)
    x = np.zeros((len(ds), max(ds.lengths), 2), dtype=np.float32)
    for i, s in enumerate(ds.sequences):
        x[i, : len(s)] = s
    path = tmp_path / "a.npz"
    np.savez(path, x=x, lengths=ds.lengths, y=np.array(ds.classes)[np.asarray(ds.labels)])
    same(read_upload(path.read_bytes(), "a.npz", None, True), read_frames(path))


def test_saliency_is_gradient_times_input(app, served_runs):
    """Against central differences of a float64 copy of the model, on the predicted class's logit."""
    fm = app.state.runs["fr"].model
    data = served_runs["ts"].read_bytes()
    got = saliency(fm, data, "a.ts", 4)
    x = torch.tensor(got["frames"], dtype=torch.float64)[None]
    model = copy.deepcopy(fm.model).double().eval()
    n = torch.tensor([x.shape[1]])
    c = got["prediction"]

    def logit(v):
        with torch.no_grad():
            return float(model(v, n)[0, c])

    grad = torch.zeros_like(x)
    eps = 1e-5
    for t in range(x.shape[1]):
        for f in range(x.shape[2]):
            d = torch.zeros_like(x)
            d[0, t, f] = eps
            grad[0, t, f] = (logit(x + d) - logit(x - d)) / (2 * eps)
    want = (grad * x)[0].sum(-1)
    np.testing.assert_allclose(got["saliency"], want.numpy(), atol=2e-3, rtol=2e-2)


def test_a_frame_labeler_predicts_and_scores_every_frame():
    """A per-frame labeler (untrained; the shapes are what matter): one prediction per frame, the confusion matrix
    over frames, and a saliency value per frame."""
    import io
    from types import SimpleNamespace

    from rnnlm.frames.api import FrameModel
    from rnnlm.frames.config import FramesModelConfig
    from rnnlm.frames.model import FrameRNN
    from rnnlm.serve.frames import predict_upload

    torch.manual_seed(0)
    model = FrameRNN(
        FramesModelConfig(hidden=4, proj=3, engine="scratch"), 2, 3, "label", torch.zeros(2), torch.ones(2)
    )
    config = SimpleNamespace(eval=SimpleNamespace(eval_batch_size=4), model=model.cfg)
    fm = FrameModel(model.eval(), {"task": "label", "num_features": 2, "classes": ["a", "b", "c"]}, config)
    x = np.random.default_rng(0).standard_normal((3, 5, 2)).astype(np.float32)
    lengths = np.array([5, 3, 4])
    labels = np.array([["a", "b", "c", "a", "b"]] * 3)
    buf = io.BytesIO()
    np.savez(buf, x=x, lengths=lengths, frame_labels=labels, classes=np.array(["a", "b", "c"]))
    data = buf.getvalue()
    out = predict_upload(fm, data, "l.npz")
    assert [len(p) for p in out["predictions"]] == [5, 3, 4]
    assert np.sum(out["report"]["confusion"]) == 12
    want = fm.predict(x, lengths=lengths)
    assert [list(np.array(fm.classes)[p]) for p in out["predictions"]] == [list(w) for w in want]
    assert len(saliency(fm, data, "l.npz", 1)["saliency"]) == 3
