"""rnnlm.recurrent.native: C kernels built on first use, cached per CPU, and optional everywhere."""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest
import torch

from rnnlm.core.paths import cache_root
from rnnlm.lm.config import ModelConfig
from rnnlm.lm.decoder import NativeDecoder
from rnnlm.lm.model import RNNLM
from rnnlm.recurrent import native

build = native.load.__wrapped__  # load() without its per-process memo

CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
needs_compiler = pytest.mark.skipif(CC is None, reason="no C compiler")


@pytest.mark.e2e
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


# ----------------------------------------------------------------------------- what may be loaded, and rebuilding


def _logits(lib: ctypes.CDLL, steps: int = 6) -> torch.Tensor:
    """The decode kernel's logits after each of a few tokens of a small fixed model, (steps, V)."""
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(cell="lstm", layers=2, hidden=40, embed=12), 53)
    dec = NativeDecoder(model.decoder(), lib)
    st, rows = dec.begin(), []
    for token in range(1, steps + 1):
        dec.feed(st, [token])
        rows.append(st.logits.clone())
    return torch.stack(rows)


def _works(lib: ctypes.CDLL | None) -> bool:
    """Whether lib is a decode kernel whose logits match the torch step decoder's."""
    if lib is None:
        return False
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(cell="lstm", layers=2, hidden=40, embed=12), 53)
    step, state, rows = model.decoder(), model.begin_state(1), []
    for token in range(1, 7):
        logits, state = step(torch.tensor([token]), state)
        rows.append(logits[0])
    return torch.allclose(_logits(lib), torch.stack(rows), atol=1e-5, rtol=1e-5)


def _cached_path(monkeypatch) -> Path:
    """Where load("decode") keeps its library, found without building or loading anything."""
    paths = []

    def record(cc, source, headers, path):
        paths.append(path)
        raise OSError("only the path is wanted here")

    with monkeypatch.context() as m:
        m.setattr(native, "_build", record)
        assert build("decode") is None
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    return paths[0]


@pytest.fixture
def own_cache(monkeypatch, tmp_path) -> Path:
    """A fresh cache for this test: its kernel files have never been loaded by this process (dlopen
    returns a library already loaded from the same path without reading the file again)."""
    monkeypatch.setenv("RNNLM_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.e2e
@needs_compiler
@pytest.mark.parametrize("problem", ["another user's", "group-writable", "world-writable"])
def test_a_cached_library_that_others_could_have_written_is_not_loaded(own_cache, monkeypatch, caplog, problem) -> None:
    path = _cached_path(monkeypatch)
    marker = own_cache / "planted code ran"
    planted = own_cache / "planted.c"
    planted.write_text(
        '#include <stdio.h>\n__attribute__((constructor)) static void run(void) { fclose(fopen(MARKER, "w")); }\n'
    )
    subprocess.run([CC, "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", str(path), str(planted)], check=True)
    path.chmod({"another user's": 0o755, "group-writable": 0o775, "world-writable": 0o757}[problem])
    planted_inode = os.lstat(path).st_ino
    if problem == "another user's":  # tests need not run as root to chown: the file reads as another uid's
        real_lstat = os.lstat

        def foreign(p, *args, **kwargs):
            st = real_lstat(p, *args, **kwargs)
            if st.st_ino != planted_inode:
                return st
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, os.getuid() + 1, *st[5:10]))

        monkeypatch.setattr(os, "lstat", foreign)
    with caplog.at_level(logging.WARNING, logger="rnnlm.recurrent.native"):
        lib = build("decode")
    assert not marker.exists(), "the planted library was loaded"
    assert "is not to be trusted" in caplog.text and "building it again" in caplog.text
    assert os.lstat(path).st_ino != planted_inode and _works(lib)  # rebuilt in its place, and loaded
    assert not stat.S_IMODE(os.lstat(path).st_mode) & 0o022


@pytest.mark.e2e
@needs_compiler
def test_a_damaged_cached_library_is_built_again(own_cache, monkeypatch, caplog) -> None:
    path = _cached_path(monkeypatch)
    path.write_bytes(b"\x7fELF and then nothing a loader could use")
    with caplog.at_level(logging.WARNING, logger="rnnlm.recurrent.native"):
        lib = build("decode")
    assert "does not load" in caplog.text
    assert _works(lib)


def test_another_users_kernel_folder_turns_the_kernels_off(own_cache, monkeypatch, caplog) -> None:
    kernels = cache_root() / "kernels"
    kernels.mkdir(parents=True)
    real_stat, inode = os.stat, os.stat(kernels).st_ino

    def foreign(p, *args, **kwargs):
        st = real_stat(p, *args, **kwargs)
        if st.st_ino != inode:
            return st
        return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, os.getuid() + 1, *st[5:10]))

    monkeypatch.setattr(os, "stat", foreign)
    monkeypatch.setattr(native, "_build", lambda *a: pytest.fail("built into another user's folder"))
    monkeypatch.setattr(native, "_compiler", lambda: ["cc"])
    monkeypatch.setattr(native.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "cc 1.0", ""))
    with caplog.at_level(logging.WARNING, logger="rnnlm.recurrent.native"):
        assert build("decode") is None
    assert str(kernels) in caplog.text and f"belongs to uid {os.getuid() + 1}" in caplog.text
    assert "RNNLM_CACHE" in caplog.text


@pytest.mark.e2e
@needs_compiler
def test_others_lose_write_permission_on_ones_own_kernel_folder(own_cache) -> None:
    kernels = cache_root() / "kernels"
    kernels.mkdir(parents=True)
    kernels.chmod(0o777)
    assert _works(build("decode"))
    assert stat.S_IMODE(os.stat(kernels).st_mode) == 0o755


@pytest.mark.e2e
@needs_compiler
@pytest.mark.parametrize("command", ["{cc} -pipe", "env {cc}"])  # a compiler flag; a wrapper such as ccache
def test_a_compiler_command_with_arguments_builds(own_cache, monkeypatch, command) -> None:
    monkeypatch.setenv("CC", command.format(cc=CC))
    assert _works(build("decode"))


def test_a_cc_that_is_no_command_is_reported(monkeypatch, caplog) -> None:
    monkeypatch.setenv("CC", 'gcc "-O2')
    with caplog.at_level(logging.WARNING, logger="rnnlm.recurrent.native"):
        assert build("decode") is None
    assert "fix $CC" in caplog.text


@pytest.mark.e2e
@needs_compiler
def test_two_concurrent_builds_both_end_with_a_working_kernel(own_cache, monkeypatch) -> None:
    """Both find no library, both build (held until both are in _build) and rename into place."""
    real_build, both_building = native._build, threading.Barrier(2)
    built: list[Path] = []

    def build_together(*args) -> None:
        both_building.wait(timeout=60)
        real_build(*args)
        built.append(args[-1])

    monkeypatch.setattr(native, "_build", build_together)
    libs: list[ctypes.CDLL | None] = [None, None]

    def first_use(i: int) -> None:
        libs[i] = build("decode")

    threads = [threading.Thread(target=first_use, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(built) == 2 and built[0] == built[1]
    assert all(_works(lib) for lib in libs)
    assert [p.name for p in built[0].parent.iterdir()] == [built[0].name]  # no temporary left


@pytest.mark.e2e
@needs_compiler
def test_the_kernels_numerics_do_not_depend_on_fma_contraction(own_cache, monkeypatch) -> None:
    """GCC contracts a * b + c into one fused multiply-add under -ffp-contract=fast, as clang does by
    default: the build's own -ffp-contract=off must win, so that the logits are the same bits."""
    plain = build("decode")
    monkeypatch.setenv("CC", f"{CC} -ffp-contract=fast")
    contracting = build("decode")
    assert plain is not None and contracting is not None
    assert len(list((cache_root() / "kernels").glob("decode-*.so"))) == 2  # two libraries, really
    assert torch.equal(_logits(plain), _logits(contracting))
