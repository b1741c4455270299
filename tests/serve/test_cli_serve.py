"""The serve command's pieces that need no run."""

from __future__ import annotations

import pytest

from rnnlm.cli import main
from rnnlm.serve.cli import is_loopback


@pytest.mark.parametrize(
    ("host", "loop"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("127.3.0.1", True),
        ("0.0.0.0", False),
        ("192.168.1.4", False),
        ("example.org", False),
    ],
)
def test_loopback(host, loop):
    assert is_loopback(host) is loop


def test_a_folder_that_is_no_run_is_a_clear_error(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
