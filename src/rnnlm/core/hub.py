"""Run directories published on the Hugging Face Hub: ``rnnlm.load("user/name")`` downloads one, when the optional
huggingface_hub package is installed, and loads it like a local run directory.

A local path always wins: a folder that exists is read as it is, so a run directory named like a Hub id
("runs/demo") never goes to the network.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rnnlm.core.errors import CheckpointError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # user/name, as the Hub spells a repository


def local_run_dir(name: str | Path, revision: str | None = None) -> Path:
    """The local folder of a run: ``name`` itself when it exists, else a Hub repository's snapshot."""
    path = Path(name)
    if path.exists() or not _HUB_ID.match(str(name)):
        return path
    hub = _huggingface_hub()
    if hub is None:
        raise CheckpointError(
            f"{name}: no such run directory; to load it from the Hugging Face Hub, pip install huggingface_hub"
        )
    try:
        return Path(hub.snapshot_download(repo_id=str(name), revision=revision))
    except Exception as e:  # the Hub's own errors (not found, offline, gated) have no common base to name
        raise CheckpointError(f"{name}: neither a run directory here nor a repository on the Hub ({e})") from None


def _huggingface_hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        return None
    return huggingface_hub
