"""Tiny trained runs of all three kinds, made once per session for the serve tests (tests/tiny.py's settings)."""

from __future__ import annotations

from pathlib import Path

import pytest

import tiny


@pytest.fixture(scope="session")
def served_runs(tmp_path_factory) -> dict[str, Path]:
    """{"lm": ..., "tagger": ..., "frames": ...}: run folders trained for a few steps, plus the files they read."""
    import rnnlm
    from rnnlm import frames, tagging

    d = tmp_path_factory.mktemp("served")
    quiet = {"log": lambda s: None}
    (d / "corpus.txt").write_text(tiny.LM_TEXT, encoding="utf-8")
    settings = {**tiny.LM, "cell": "lstm", "epochs": 2, "log_every": 20, "lr": 0.01, "pred_period": 0}
    rnnlm.train(str(d / "corpus.txt"), **settings, out=str(d / "lm"), **quiet)
    tiny.ner_file(d / "train.txt", 40, seed=0)
    tiny.ner_file(d / "dev.txt", 10, seed=1)
    tagging.train(
        str(d / "train.txt"),
        dev=str(d / "dev.txt"),
        **tiny.TAGGER,
        epochs=3,
        log_every=5,
        out=str(d / "tag"),
        progress=False,
        **quiet,
    )
    tiny.write_ts(d / "frames.ts", 30, seed=0)
    frames.train(
        str(d / "frames.ts"),
        **tiny.FRAMES,
        ensemble=1,
        refit=False,
        epochs=2,
        out=str(d / "fr"),
        progress=False,
        **quiet,
    )
    return {"lm": d / "lm", "tagger": d / "tag", "frames": d / "fr", "ts": d / "frames.ts"}


@pytest.fixture(scope="session")
def app(served_runs):
    from rnnlm.serve.app import create_app

    return create_app([served_runs["lm"], served_runs["tagger"], served_runs["frames"]])


@pytest.fixture(scope="session")
def client(app):
    from starlette.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
