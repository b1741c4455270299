"""Shared by the tagger's CLI tests: a CLI runner. (The tiny CoNLL file and settings are in tiny.py.)"""

from __future__ import annotations

import contextlib
import io

from rnnlm.cli import main


def run_cli(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(args)) == 0
    return out.getvalue()
