"""One version string: rnnlm.__version__ is the source, and `rnnlm --version`, the installed package's metadata
and pyproject.toml all read it from there."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import tomllib
from pathlib import Path

import pytest

import rnnlm
from rnnlm.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_the_command_prints_the_package_version():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert out.getvalue().strip() == f"rnnlm {rnnlm.__version__}"


def test_pyproject_reads_the_version_from_the_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"], "pyproject.toml must not spell the version out a second time"
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "rnnlm.__version__"}


def test_the_installed_metadata_agrees():
    try:
        installed = importlib.metadata.version("rnnlm")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("rnnlm is not installed (pip install -e .), so there is no metadata to compare")
    assert installed == rnnlm.__version__, (
        f"the installed metadata says {installed} but rnnlm.__version__ is {rnnlm.__version__}; "
        "reinstall (pip install -e .) after changing the version"
    )
