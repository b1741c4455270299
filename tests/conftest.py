"""Shared fixtures. Corpora come from $RNNLM_DATA (CI sets it to ../shared/data); nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of shared corpora; tests that need it skip locally when RNNLM_DATA is unset, fail in CI."""
    value = os.environ.get("RNNLM_DATA")
    if not value:
        if os.environ.get("CI"):
            pytest.fail("RNNLM_DATA must point at the shared corpora in CI")
        pytest.skip("RNNLM_DATA is not set")
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"RNNLM_DATA={value} is not a directory")
    return path
