"""rnnlm.recurrent.native: C kernels built on first use, cached per CPU, and optional everywhere."""

from __future__ import annotations

import logging
import shutil

import pytest

from rnnlm.lm.data.fetch import cache_root
from rnnlm.recurrent import native

build = native.load.__wrapped__  # load() without its per-process memo

needs_compiler = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")


@needs_compiler
def test_a_kernel_is_built_once_into_the_cache_and_then_reused(monkeypatch) -> None:
    lib = build("decode")
    assert lib is not None and hasattr(lib, "rnnlm_sample") and hasattr(lib, "rnnlm_feed")
    built = list((cache_root() / "kernels").glob("decode-*.so"))
    assert len(built) == 1
    monkeypatch.setattr(native, "_build", lambda *a: pytest.fail("rebuilt a cached kernel"))
    assert build("decode") is not None
    assert not [p for p in (cache_root() / "kernels").iterdir() if p.suffix != ".so"]  # no temporary left


def test_rnnlm_native_0_turns_kernels_off(monkeypatch) -> None:
    monkeypatch.setenv("RNNLM_NATIVE", "0")
    assert build("decode") is None


@pytest.fixture
def fake_cc(monkeypatch, tmp_path):
    """A "compiler" that prints a version and fails every build; the cache goes to tmp_path."""
    monkeypatch.setenv("RNNLM_CACHE", str(tmp_path))
    script = tmp_path / "cc"
    script.write_text('#!/bin/sh\n[ "$1" = --version ] && echo fake-cc 1.0 && exit 0\necho no such flag >&2\nexit 1\n')
    script.chmod(0o755)
    monkeypatch.setenv("CC", str(script))
    return tmp_path


def test_a_failing_compiler_means_the_torch_path_and_a_warning(fake_cc, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="rnnlm.recurrent.native"):
        assert build("decode") is None
    assert "could not be built" in caplog.text and "no such flag" in caplog.text
    assert not list((fake_cc / "kernels").iterdir())  # nothing half-written


def test_no_compiler_at_all_means_the_torch_path(monkeypatch) -> None:
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    assert build("decode") is None


def test_the_cache_key_follows_the_cpu(fake_cc, monkeypatch) -> None:
    """A library built for one CPU's instruction set is never loaded on another with the same home directory."""
    paths = []

    def record(cc, source, headers, path):
        paths.append(path)
        raise OSError("not built in this test")

    monkeypatch.setattr(native, "_build", record)
    for flags in ("flags: avx2", "flags: avx2 avx512f", "flags: avx2"):
        monkeypatch.setattr(native, "_cpu_signature", lambda flags=flags: flags)
        assert build("decode") is None
    assert len(paths) == 3 and paths[0] != paths[1] and paths[0] == paths[2]
