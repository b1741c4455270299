"""Where rnnlm keeps files of its own: one small module that both the corpus fetcher and the native
kernel cache import, so that neither reaches into the other."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The user cache: ``$RNNLM_CACHE``, else ``$XDG_CACHE_HOME/rnnlm``, else ``~/.cache/rnnlm``.

    Downloaded corpora live here, and compiled kernels in its folder ``kernels``.
    """
    if os.environ.get("RNNLM_CACHE"):
        return Path(os.environ["RNNLM_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "rnnlm"
