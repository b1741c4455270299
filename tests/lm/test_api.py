"""The Python API mirrors the CLI: train, load, generate, evaluate."""

from __future__ import annotations

import json

import pytest
import torch

import rnnlm
from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import ConfigError, DataError
from rnnlm.lm import run as lm_run
from rnnlm.lm.task import LanguageModelTask
from rnnlm.training import runs

TEXT = "".join(f"{i} sphinx of black quartz, judge my vow.\n" for i in range(100))


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    (d / "t.txt").write_text(TEXT, encoding="utf-8")
    return rnnlm.train(
        d / "t.txt",
        cell="rnn",
        layers=1,
        hidden=24,
        embed=0,
        batch_size=4,
        seq_len=16,
        epochs=2,
        lr=0.01,
        progress=False,
        out=str(d / "run"),
        log=lambda _: None,
    )


@pytest.mark.e2e
def test_train_returns_a_usable_model(lm):
    assert lm.metrics["epoch"] == 2
    text = lm.generate("sphinx", length=30, temperature=0)
    assert text.startswith("sphinx") and len(text) == 36


@pytest.mark.e2e
def test_load_gives_the_same_model(lm):
    again = rnnlm.load(lm.run_dir)
    assert again.metrics == lm.metrics  # the last metrics line of training
    rows = [json.loads(x) for x in (lm.run_dir / ckpt.METRICS).read_text().splitlines()]
    best_step = min(rows, key=lambda m: m["val_loss"])["step"]
    assert again.checkpoint["path"].endswith("best.safetensors") and again.checkpoint["step"] == str(best_step)
    assert again.checkpoint == lm.checkpoint
    assert again.generate("judge", 40, temperature=0) == lm.generate("judge", 40, temperature=0)
    assert again.generate("judge", 40, seed=3) == lm.generate("judge", 40, seed=3)


@pytest.mark.e2e
def test_load_takes_an_engine_and_its_deprecated_name_impl(lm):
    """engine= picks the engine (any engine reads the weights); impl=, its name before, still works and warns."""
    trained = lm.config.model.engine
    other = "scratch" if trained != "scratch" else "fused"
    new = rnnlm.load(lm.run_dir, engine=other)
    assert new.model.encoder.engine == new.config.model.engine == other != lm.model.encoder.engine
    with pytest.warns(DeprecationWarning, match=r"rnnlm.load\(impl=...\) is deprecated; use engine="):
        old = rnnlm.load(lm.run_dir, impl=other)
    assert old.model.encoder.engine == other
    assert old.generate("judge", 40, temperature=0) == new.generate("judge", 40, temperature=0)
    with pytest.raises(TypeError, match="give engine= only"):
        rnnlm.load(lm.run_dir, engine=trained, impl=other)
    with pytest.warns(DeprecationWarning, match=r"runs.load\(impl=...\)"):
        assert runs.load(lm.run_dir, lm_run.KIND, impl=other).model.encoder.engine == other


@pytest.mark.e2e
def test_stream_equals_generate(lm):
    assert "".join(lm.stream("vow", 25, seed=7)) == lm.generate("vow", 25, seed=7)


@pytest.mark.e2e
def test_samples_and_beams(lm):
    outs = lm.generate("of", 10, num_samples=4, seed=0)
    assert len(outs) == 4 and all(o.startswith("of") and len(o) == 12 for o in outs)
    beams = lm.generate("of", 10, beam=3, num_samples=2)
    assert len(beams) == 2 and beams[0] != beams[1]


@pytest.mark.e2e
def test_evaluate_text(lm):
    res = lm.evaluate(text=TEXT[:500])
    assert res["tokens"] == 499 and res["ppl"] == pytest.approx(2 ** res["bits_per_token"])
    with pytest.raises(DataError, match="at least 2 tokens"):  # a user error: `rnnlm eval` says it plainly
        lm.evaluate(text="s")
    assert res["protocol"] == "carried"
    win = lm.evaluate(text=TEXT[:500], protocol="windows", block=16)
    assert win["protocol"] == "windows" and win["block"] == 16 and win["tokens"] == 499
    with pytest.raises(ConfigError, match="--eval-block must be at least 2"):
        lm.evaluate(text=TEXT[:500], protocol="windows", block=0)


def test_unknown_setting_is_reported():
    with pytest.raises(TypeError, match="did you mean"):
        rnnlm.train("x.txt", hiden=3)


@pytest.mark.e2e
def test_train_returns_the_best_weights_like_load(tmp_path, monkeypatch):
    """rnnlm.train() and rnnlm.load() give the same weights: the best ones, here from epoch 2 of 3."""
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    fake = iter([3.0, 1.0, 2.0])  # validation losses of epochs 1, 2, 3
    monkeypatch.setattr(LanguageModelTask, "evaluate", lambda self, model: {"val_loss": next(fake)})
    lm = rnnlm.train(
        tmp_path / "t.txt", cell="gru", layers=1, hidden=8, embed=4, batch_size=4, seq_len=16, epochs=3,
        progress=False, pred_period=0, out=str(tmp_path / "run"), log=lambda _: None,
    )  # fmt: skip
    best, meta = ckpt.load_weights(tmp_path / "run" / ckpt.BEST)
    last = ckpt.load_weights(tmp_path / "run" / ckpt.LAST)[0]
    assert meta["epoch"] == "2" and lm.checkpoint["path"].endswith(ckpt.BEST)
    ours = lm.model.state_dict()
    assert all(torch.equal(ours[k], best[k]) for k in best)
    assert not all(torch.equal(ours[k], last[k]) for k in last)
