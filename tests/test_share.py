"""Taking a run elsewhere (share.py): ``rnnlm export`` and ``rnnlm card`` for every kind of run, ``rnnlm.load`` of a
Hub id through huggingface_hub (mocked: no network), and tied weights that stay tied. (``python -m rnnlm`` runs in
tests/test_wheel.py, from the installed wheel.)"""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch

import rnnlm
from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import CheckpointError
from rnnlm.frames import api as frames
from rnnlm.share import card_text
from rnnlm.tagging import api as tagging
from tag_checks import run_cli
from tiny import FRAMES, LM, LM_TEXT, TAGGER, ner_file, ramp_frames


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("share_lm")
    (d / "t.txt").write_text(LM_TEXT, encoding="utf-8")
    settings = {**LM, "max_steps": 3, "threads": 1, "pred_period": 0, "tie_weights": True, "embed": 16}
    return rnnlm.train(d / "t.txt", cell="gru", out=str(d / "run"), log=lambda _: None, **settings).run_dir


@pytest.fixture(scope="module")
def tag_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("share_tag")
    ner_file(d / "train.txt", 16, seed=0)
    ner_file(d / "dev.txt", 4, seed=1)
    settings = {**TAGGER, "epochs": 1, "progress": False, "threads": 1, "dev": str(d / "dev.txt")}
    return tagging.train(d / "train.txt", out=str(d / "run"), log=lambda _: None, **settings).run_dir


@pytest.fixture(scope="module")
def frames_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("share_frames")
    x, y = ramp_frames(16, seed=0)
    settings = {**FRAMES, "epochs": 1, "refit": False, "progress": False, "threads": 1, "val_fraction": 0.25}
    return frames.train(x, y, out=str(d / "run"), log=lambda _: None, **settings).run_dir


@pytest.mark.e2e
def test_rnnlm_export_writes_each_kind_of_run_with_its_metadata(lm_run, tag_run, frames_run, tmp_path):
    for run_dir, kind in ((lm_run, "language-model"), (tag_run, "tagger"), (frames_run, "frames")):
        out = tmp_path / f"{kind}.onnx"
        said = json.loads(run_cli("export", str(run_dir), "--format", "onnx", "--out", str(out)))
        assert said["path"] == str(out) and said["kind"] == kind and out.is_file()
    assert json.loads(run_cli("export", str(lm_run)))["path"] == str(lm_run / "model.onnx")  # the default place


@pytest.mark.e2e
def test_rnnlm_card_fills_the_model_card_from_the_run(lm_run, tag_run, frames_run):
    lm_card = (run_cli("card", str(lm_run)).strip(), (lm_run / "README.md").read_text(encoding="utf-8"))
    assert lm_card[0] == str(lm_run / "README.md")
    text = lm_card[1]
    best = ckpt.read_metadata(lm_run / ckpt.BEST)
    assert text.startswith("---\nlibrary_name: rnnlm\n") and "pipeline_tag: text-generation" in text
    assert f"| loss (nats per char) | {float(best['val_loss']):.4f} |" in text
    assert "the last 0.1 of the training text" in text and "- machine: " in text and "not recorded" not in text
    assert "gru, 1 x 16" in text and 'rnnlm.load("USER/NAME")' in text
    seconds = ckpt.read_metrics(lm_run)[-1]["elapsed_s"]
    assert f"- time: {seconds:.0f} s of training" in text

    text = card_text(tag_run)
    f1 = ckpt.read_metadata(tag_run / ckpt.BEST)["val_f1"]
    assert "pipeline_tag: token-classification" in text and f"| entity F1 (%) | {float(f1):.2f} |" in text
    assert "on the dev file" in text and "B-PER" in text

    text = card_text(frames_run)
    report = json.loads((frames_run / "val_report.json").read_text(encoding="utf-8"))
    assert f"| val accuracy | {report['accuracy']:.4f} |" in text and "validation split of 0.25" in text
    assert "Classes: 3: down, flat, up" in text


@pytest.mark.e2e
def test_a_hub_id_is_downloaded_through_huggingface_hub_and_loaded(lm_run, tag_run, monkeypatch):
    asked = []

    def snapshot_download(repo_id: str, revision=None) -> str:
        asked.append(repo_id)
        return str({"someone/lm": lm_run, "someone/ner": tag_run}[repo_id])

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=snapshot_download))
    lm = rnnlm.load("someone/lm")
    assert lm.run_dir == lm_run and tagging.load("someone/ner").run_dir == tag_run
    assert asked == ["someone/lm", "someone/ner"]
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed: the error says what to do
    with pytest.raises(CheckpointError, match="pip install huggingface_hub"):
        rnnlm.load("someone/lm")


def test_a_local_folder_wins_over_a_hub_id_and_no_hub_is_asked(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="run config"):  # read as the local folder it is, not downloaded
        rnnlm.load("runs/demo")


@pytest.mark.e2e
def test_tied_weights_are_saved_once_each_and_load_tied(lm_run):
    weights, _ = ckpt.load_weights(lm_run / ckpt.BEST)
    torch.testing.assert_close(weights["head.weight"], weights["input.embedding.weight"], rtol=0, atol=0)
    model = rnnlm.load(lm_run).model
    assert model.head.weight is model.input.embedding.weight
    with torch.no_grad():
        model.input.embedding.weight[0, 0] += 1.0  # one tensor: the head sees the change
        assert float(model.head.weight[0, 0]) == float(model.input.embedding.weight[0, 0])
