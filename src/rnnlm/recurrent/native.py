"""Small C kernels, compiled on first use with the system's C compiler and loaded through ctypes.

A kernel here is plain C (no Python or torch headers, only the ``.h`` files beside it) working on raw
pointers, so it builds in well under a second with any C compiler and needs nothing at install time.
Each one is optional: when no compiler is found, the build fails, or ``RNNLM_NATIVE=0`` is set,
``load`` returns None once (with one log line saying why) and callers keep their torch path. The
compiler is ``$CC`` (split as a shell would, so ``CC="ccache gcc"`` works), else cc, gcc or clang.

Numerics: the kernels are built with ``-ffp-contract=off`` and no fast-math option, so each float
operation is the IEEE one the C source writes, in the order it writes it: no fused multiply-adds and
no reordered sums, with GCC and clang alike (GCC does not contract under ``-std=c11`` while clang does
by default, so without the flag the same source gave other bits with clang). A kernel's results are
thus the same whichever compiler built it and whatever vector width ``-march=native`` chose; they
differ from torch's operators, which sum in other orders and may fuse, by float rounding only.
One exception says so in its source: lstm_infer.c multiplies bfloat16 pairs with AVX512-BF16 where the
build targets it, so its bfloat16 results there differ from the portable loop's in the order of the sums.
(``-fno-math-errno`` only lets math calls skip setting errno.)

The shared library is built for this CPU (``-march=native``) and cached in the folder ``kernels`` of
the user cache (rnnlm.core.paths.cache_root), named by a hash of the source, the flags, the compiler
command and version, and the CPU's feature flags, so a home directory shared by machines with
different CPUs never loads a library built for another one. It is written to a temporary name in
that folder and renamed into place, so concurrent first uses and interrupted builds leave no broken
file. Loading a library runs its code, so one is loaded only where no other user can have written
it: the folder must belong to this user (another user's folder turns the kernels off with a warning;
others lose write permission on one's own folder, which is made 0700 when new), and a cached file
that belongs to someone else, that others may write to, or that fails to load (a damaged file) is
built again.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import stat
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from rnnlm.core.paths import cache_root

log = logging.getLogger(__name__)

CFLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fno-math-errno", "-ffp-contract=off", "-std=c11")
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


def _compiler() -> list[str] | None:
    """The C compiler command: ``$CC`` split as a shell would (``ccache gcc``), else cc, gcc or clang on the PATH.

    Raises ValueError where $CC cannot be split (an unclosed quote).
    """
    cc = os.environ.get("CC", "").strip()
    if cc:
        return shlex.split(cc)
    found = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    return [found] if found else None


def _writable_by_others(st: os.stat_result) -> str | None:
    """Why a file or folder with this status may hold another user's code, or None where only this user can write it.

    Only this user's own files pass, not even root's; a system without POSIX owners (Windows) is not checked.
    """
    if not hasattr(os, "getuid"):
        return None
    if st.st_uid != os.getuid():
        return f"it belongs to uid {st.st_uid}, not to you (uid {os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"others may write to it (mode {stat.filemode(st.st_mode)})"
    return None


def _private_folder(folder: Path) -> str | None:
    """Make the kernel folder (mode 0700), or check the one there: None where it is fit to load from, else why not.

    Others lose write permission on a folder of one's own (made by an older rnnlm under umask 002):
    the files already in it are checked one by one anyway, and another user's file is never loaded.
    """
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(folder)
    except OSError as e:
        return f"it cannot be made ({e})"
    why = _writable_by_others(st)
    if why is not None and st.st_uid == os.getuid():
        try:
            os.chmod(folder, stat.S_IMODE(st.st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH))
        except OSError as e:
            return f"{why}, and it could not be made private ({e})"
        log.info("native kernels: removed write permission for others from %s (%s)", folder, why)
        return None
    return why


def _open(path: Path) -> tuple[ctypes.CDLL | None, str | None]:
    """The library at path and None, or None and why it was not loaded (None too where there is no file)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"cannot be read ({e})"
    if not stat.S_ISREG(st.st_mode):  # a link could point anywhere
        return None, "is not a regular file"
    why = _writable_by_others(st)
    if why is not None:
        return None, f"is not to be trusted: {why}"
    try:
        return ctypes.CDLL(str(path)), None
    except OSError as e:
        return None, f"does not load ({e})"


@functools.cache
def load(name: str) -> ctypes.CDLL | None:
    """The compiled kernel ``csrc/<name>.c`` as a ctypes library, or None where it cannot be built."""
    if os.environ.get("RNNLM_NATIVE", "1") == "0":
        log.info("native kernel %s: off (RNNLM_NATIVE=0)", name)
        return None
    try:
        cc = _compiler()
    except ValueError as e:
        log.warning("native kernel %s: CC=%r is not a command (%s); fix $CC. Using the torch path", name,
                    os.environ.get("CC"), e)  # fmt: skip
        return None
    if cc is None:
        log.info("native kernel %s: no C compiler found (set CC); using the torch path", name)
        return None
    folder = resources.files("rnnlm.recurrent").joinpath("csrc")
    source = folder.joinpath(f"{name}.c").read_bytes()
    headers = {h.name: h.read_bytes() for h in sorted(folder.iterdir(), key=lambda h: h.name) if h.name.endswith(".h")}
    try:
        version = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        log.info("native kernel %s: %s does not run (%s); using the torch path", name, shlex.join(cc), e)
        return None
    parts = [source, *(n.encode() + b"\0" + h for n, h in headers.items())]
    build_info = [" ".join(CFLAGS), shlex.join(cc), version, _cpu_signature()]
    key = hashlib.sha256(b"\0".join([*parts, *(s.encode() for s in build_info)]))
    kernels = cache_root() / "kernels"
    why = _private_folder(kernels)
    if why is not None:
        log.warning("native kernel %s: not loading code from %s: %s. Set RNNLM_CACHE to a folder of your own; "
                    "using the torch path", name, kernels, why)  # fmt: skip
        return None
    path = kernels / f"{name}-{key.hexdigest()[:16]}.so"
    lib, why = _open(path)
    if lib is not None:
        return lib
    if why is not None:
        log.warning("native kernel %s: the cached %s %s; building it again", name, path, why)
    try:
        _build(cc, source, headers, path)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("native kernel %s could not be built (%s); using the torch path", name, e)
        return None
    lib, why = _open(path)
    if lib is None:
        log.warning("native kernel %s: the library just built at %s %s; using the torch path", name, path, why)
    return lib


def _build(cc: list[str], source: bytes, headers: dict[str, bytes], path: Path) -> None:
    """Compile into a temporary folder beside path, then rename into place: other processes see all or nothing."""
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src, lib = Path(tmp) / "kernel.c", Path(tmp) / path.name
        src.write_bytes(source)
        for header, text in headers.items():  # #include "x.h" finds them beside the source
            (Path(tmp) / header).write_bytes(text)
        done = subprocess.run(
            [*cc, *CFLAGS, "-o", str(lib), str(src), "-lm"], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
        )
        if done.returncode != 0:
            raise OSError(f"{shlex.join(cc)} exited with {done.returncode}: {done.stderr.strip()[:2000]}")
        os.chmod(lib, 0o755)  # whatever the umask: load() refuses a library that others may write to
        os.replace(lib, path)
