"""Small C kernels, compiled on first use with the system's C compiler and loaded through ctypes.

A kernel here is plain C (no Python or torch headers, only the ``.h`` files beside it) working on raw
pointers, so it builds in well under a second with any C compiler and needs nothing at install time.
Each one is optional: when no compiler is found, the build fails, or ``RNNLM_NATIVE=0`` is set,
``load`` returns None once (with one log line saying why) and callers keep their torch path.

The shared library is built for this CPU (``-march=native``) and cached in the folder ``kernels`` of
the user cache (``$RNNLM_CACHE``, else ``$XDG_CACHE_HOME/rnnlm``, else ``~/.cache/rnnlm``), named by a hash of the
source, the flags, the compiler and the CPU's feature flags, so a home directory shared by machines
with different CPUs never loads a library built for another one. It is written to a temporary name
and renamed into place, so concurrent first uses and interrupted builds leave no broken file.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from rnnlm.lm.data.fetch import cache_root

log = logging.getLogger(__name__)

CFLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fno-math-errno", "-std=c11")
BUILD_TIMEOUT_S = 120


def _cpu_signature() -> str:
    """The machine and its CPU feature flags: what decides whether -march=native code runs here."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        flags = platform.processor()
    return f"{platform.system()} {platform.machine()} {flags}"


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@functools.cache
def load(name: str) -> ctypes.CDLL | None:
    """The compiled kernel ``csrc/<name>.c`` as a ctypes library, or None where it cannot be built."""
    if os.environ.get("RNNLM_NATIVE", "1") == "0":
        log.info("native kernel %s: off (RNNLM_NATIVE=0)", name)
        return None
    cc = _compiler()
    if cc is None:
        log.info("native kernel %s: no C compiler found (set CC); using the torch path", name)
        return None
    folder = resources.files("rnnlm.recurrent").joinpath("csrc")
    source = folder.joinpath(f"{name}.c").read_bytes()
    headers = {h.name: h.read_bytes() for h in sorted(folder.iterdir(), key=lambda h: h.name) if h.name.endswith(".h")}
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        log.info("native kernel %s: %s does not run (%s); using the torch path", name, cc, e)
        return None
    parts = [source, *(n.encode() + b"\0" + h for n, h in headers.items())]
    key = hashlib.sha256(b"\0".join([*parts, " ".join(CFLAGS).encode(), version.encode(), _cpu_signature().encode()]))
    path = cache_root() / "kernels" / f"{name}-{key.hexdigest()[:16]}.so"
    if not path.exists():
        try:
            _build(cc, source, headers, path)
        except (OSError, subprocess.SubprocessError) as e:
            log.warning("native kernel %s could not be built (%s); using the torch path", name, e)
            return None
    try:
        return ctypes.CDLL(str(path))
    except OSError as e:
        log.warning("native kernel %s could not be loaded from %s (%s); using the torch path", name, path, e)
        return None


def _build(cc: str, source: bytes, headers: dict[str, bytes], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src, lib = Path(tmp) / "kernel.c", Path(tmp) / path.name
        src.write_bytes(source)
        for header, text in headers.items():  # #include "x.h" finds them beside the source
            (Path(tmp) / header).write_bytes(text)
        done = subprocess.run(
            [cc, *CFLAGS, "-o", str(lib), str(src), "-lm"], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
        )
        if done.returncode != 0:
            raise OSError(f"{cc} exited with {done.returncode}: {done.stderr.strip()[:2000]}")
        os.replace(lib, path)
