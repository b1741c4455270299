"""Shared fixtures. Corpora come from $RNNLM_DATA (CI sets it to ../shared/data); nothing is downloaded."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="module")
def one_thread():
    """Run torch on one thread for the module, then restore the count: tiny models train several times
    faster without thread synchronization, most of all on a shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
