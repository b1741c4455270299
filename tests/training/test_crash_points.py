"""A run killed at the moments between its files: before config.json, between config.json and its first
checkpoint. Either the folder can take a new run, or ``--resume`` continues it; never neither. (bench/faults.py
kills real runs at random moments; these are the two it found, kept as tests.)"""

from __future__ import annotations

import pytest

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.checkpoint import load_weights
from rnnlm.core.vocab import Vocab
from rnnlm.lm import run as lm_run

pytestmark = pytest.mark.e2e  # training runs


def test_killed_before_config_json_the_folder_takes_a_new_run(tiny_lm_config, tmp_path, monkeypatch) -> None:
    def killed(self, path):
        raise KeyboardInterrupt("killed while writing vocab.json")

    monkeypatch.setattr(Vocab, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        lm_run.train(tiny_lm_config(max_steps=2), log=lambda _: None)
    run = tmp_path / "run"
    assert not (run / ckpt.CONFIG).exists()  # config.json is written last: the folder is no run yet
    monkeypatch.undo()
    assert lm_run.train(tiny_lm_config(max_steps=2), log=lambda _: None).stop_reason.startswith("--max-steps")


def test_killed_before_the_first_checkpoint_resume_starts_over(tiny_lm_config, tmp_path) -> None:
    whole = lm_run.train(tiny_lm_config(out=tmp_path / "whole", max_steps=4, log_every=2), log=lambda _: None)
    cut = lm_run.train(tiny_lm_config(max_steps=4, log_every=2), log=lambda _: None).run_dir
    for name in (ckpt.LAST, ckpt.BEST):  # as if killed after config.json, before the first save
        (cut / name).unlink()
    lm_run.train(tiny_lm_config(max_steps=4, log_every=2), resume=cut, log=lambda _: None)
    want, got = load_weights(whole.run_dir / ckpt.LAST)[0], load_weights(cut / ckpt.LAST)[0]
    assert all(want[k].equal(got[k]) for k in want)  # bit for bit
    assert len(ckpt.read_metrics(cut)) == len(ckpt.read_metrics(whole.run_dir))  # no line twice
