"""Shared fixtures. Corpora come from $RNNLM_DATA (CI sets it to ../shared/data); nothing is downloaded."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

import tiny

# Property-based tests (Hypothesis): "ci" runs at least 200 examples per property (the quick loop and CI); "deep"
# runs 10,000 (bench/fuzz.sh). No deadline: a shared machine's pauses must not fail a test (no timing in tests).
settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile(
    "deep", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

if not torch.cuda.is_available():  # the triton engine's kernels run under Triton's interpreter (CPU)
    os.environ.setdefault("TRITON_INTERPRET", "1")

_LOCAL = {"localhost", "127.0.0.1", "::1"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Tests may talk to servers they start on loopback, and to nothing else."""
    real_getaddrinfo = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if host not in _LOCAL and not str(host).startswith("127."):
            raise OSError(f"tests may not reach the network (tried {host!r})")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Corpora found or fetched by a test land in a temporary cache, never in the user's."""
    monkeypatch.setenv("RNNLM_CACHE", str(tmp_path_factory.getbasetemp() / "rnnlm-cache"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of shared corpora; tests that need it skip locally when RNNLM_DATA is unset, fail in CI."""
    value = os.environ.get("RNNLM_DATA")
    if not value:
        if os.environ.get("CI"):
            pytest.fail("RNNLM_DATA must point at the shared corpora in CI")
        pytest.skip("RNNLM_DATA is not set")
    path = Path(value).resolve()  # CI passes a relative path; tests may change directory or link to it
    if not path.is_dir():
        pytest.fail(f"RNNLM_DATA={value} is not a directory")
    return path


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Run torch on one thread, then restore the count. Tiny models train several times faster without thread
    synchronization, and on a busy machine (CI, or a few test runs side by side on two cores) many times faster:
    torch's threads then wait for cores. Tests of thread handling set the counts they need themselves; workers
    and subprocesses choose their own."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- tiny data and configs (tests/tiny.py), as fixtures ------------------------------------------------------


@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    """tiny.LM_TEXT in tmp_path/corpus.txt: the character corpus of the tiny language model."""
    path = tmp_path / "corpus.txt"
    path.write_text(tiny.LM_TEXT, encoding="utf-8")
    return path


@pytest.fixture
def tiny_lm_config(tiny_corpus, tmp_path):
    """A factory of tiny LM run configs on tiny_corpus: ``tiny_lm_config(out=None, **settings)`` gives the
    RunConfig of tiny.LM with an LSTM, 2 epochs, lr 0.01 and no samples, writing to ``out`` (tmp_path/run by
    default), with ``settings`` (API names: ``epochs=1``, ``sampling="random"``) on top."""
    from rnnlm.lm.config import RunConfig, build_config, split_settings

    def make(out: Path | str | None = None, **settings) -> RunConfig:
        base = {"paths": [str(tiny_corpus)], **tiny.LM, "cell": "lstm", "epochs": 2, "lr": 0.01, "pred_period": 0}
        return build_config(split_settings({**base, "out": str(out or tmp_path / "run"), **settings}))

    return make


@pytest.fixture(scope="session")
def tiny_conll(tmp_path_factory):
    """A factory of tiny NER data: ``tiny_conll(train=40, dev=10)`` writes tiny.ner_file's sentences to
    train.txt (seed 0) and dev.txt (seed 1; none when dev=0) in a new folder of its own, and returns the folder.
    Session-scoped, so that module-scoped fixtures can use it; a test may write its runs into the folder."""

    def make(train: int = 40, dev: int = 10) -> Path:
        d = tmp_path_factory.mktemp("conll")
        tiny.ner_file(d / "train.txt", train, seed=0)
        if dev:
            tiny.ner_file(d / "dev.txt", dev, seed=1)
        return d

    return make
