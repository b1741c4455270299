"""A tagger, and an ensemble's member, stopped by Ctrl-C in the middle of an epoch and resumed, trains on to the
weights and dev scores of the run that was never stopped."""

from __future__ import annotations

import signal

import pytest
import torch

from rnnlm.core import checkpoint as ckpt
from rnnlm.tagging import api as tagging
from rnnlm.tagging import run as tag_run
from rnnlm.tagging.task import TaggingTask
from rnnlm.training import ensemble as ensembles
from rnnlm.training import runs
from tiny import TAGGER


@pytest.fixture(scope="module")
def files(tiny_conll):
    return tiny_conll(train=40, dev=10)


def train(files, out, **kw):
    settings = {**TAGGER, "dev": str(files / "dev.txt"), "epochs": 3, "progress": False, "threads": 1}
    return tagging.train(files / "train.txt", out=str(out), log=lambda _: None, **{**settings, **kw})


def ctrl_c_at(monkeypatch, call: int) -> None:
    """Press Ctrl-C during the ``call``-th training step of this process (evaluation computes no training loss)."""
    loss, calls = TaggingTask.loss, [0]

    def pressed(self, model, batch):
        calls[0] += 1
        if calls[0] == call:
            signal.raise_signal(signal.SIGINT)  # the trainer finishes this step, saves and stops
        return loss(self, model, batch)

    monkeypatch.setattr(TaggingTask, "loss", pressed)


def epoch_rows(run_dir):
    """The metrics lines of whole epochs, without the wall-clock fields."""
    return [
        {k: v for k, v in r.items() if k not in ("elapsed_s", "tokens_per_s")}
        for r in ckpt.read_metrics(run_dir)
        if float(r["epoch"]).is_integer()
    ]


def same_weights(a, b):
    wa, wb = ckpt.load_weights(a)[0], ckpt.load_weights(b)[0]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def whole(files):
    """Runs that were never stopped: a tagger and a two-member ensemble, 3 epochs each."""
    train(files, files / "whole")
    train(files, files / "whole_ens", ensemble=2, jobs=1)
    return files / "whole", files / "whole_ens"


@pytest.mark.e2e
def test_a_tagger_stopped_mid_epoch_resumes_to_the_uninterrupted_run(files, whole, tmp_path, monkeypatch):
    steps = ckpt.read_metrics(whole[0])[0]["step"]  # per epoch
    at = steps + 2  # in the middle of epoch 2
    ctrl_c_at(monkeypatch, at)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt, match=f"at step {at};"):
        train(files, run)
    monkeypatch.undo()
    meta = ckpt.load_weights(run / ckpt.LAST)[1]
    assert int(meta["step"]) == at and 1 < float(meta["epoch"]) < 2
    tag_run.train(runs.open_run(run, tag_run.KIND).config, resume=run, log=lambda _: None)
    assert same_weights(run / ckpt.LAST, whole[0] / ckpt.LAST)
    assert epoch_rows(run) == epoch_rows(whole[0]) and len(epoch_rows(run)) == 3


@pytest.mark.e2e
def test_an_ensemble_member_stopped_mid_epoch_resumes_to_the_uninterrupted_run(files, whole, tmp_path, monkeypatch):
    steps = ckpt.read_metrics(whole[1] / "members/1")[0]["step"]
    ctrl_c_at(monkeypatch, 3 * steps + steps + 2)  # member 1 trains its 3 epochs, then member 2 is stopped in epoch 2
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt, match="member 2/2: saved .*--resume"):
        train(files, run, ensemble=2, jobs=1)
    monkeypatch.undo()
    assert int(ckpt.load_weights(run / "members/1" / ckpt.LAST)[1]["step"]) == steps + 2
    assert (run / "members/0" / ensembles.FINISHED).is_file() and not (run / "members/1" / ensembles.FINISHED).exists()
    lines = []
    tag_run.train(runs.open_run(run, tag_run.KIND).config, resume=run, log=lines.append)
    assert any(f"member 2/2 | resumed at step {steps + 2}" in line for line in lines)
    for i in (0, 1):
        member, want = run / "members" / str(i), whole[1] / "members" / str(i)
        assert same_weights(member / ckpt.LAST, want / ckpt.LAST)
        assert epoch_rows(member) == epoch_rows(want) and len(epoch_rows(member)) == 3
