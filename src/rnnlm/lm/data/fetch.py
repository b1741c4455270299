"""Getting one corpus file onto disk: local lookup, download or derivation, checks, atomic placement.

A file is looked up in ``$RNNLM_DATA/<relpath>``, then in the user cache (``$RNNLM_CACHE``, else
``$XDG_CACHE_HOME/rnnlm``, else ``~/.cache/rnnlm``); failing both it is downloaded into the cache (or
computed from another corpus file), checked, and moved into place atomically.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rnnlm.core.errors import CorpusNotFoundError
from rnnlm.core.paths import cache_root

DOWNLOAD_TIMEOUT = 60.0  # seconds without progress before a download is given up


@dataclass(frozen=True)
class Source:
    """One public place a file can be downloaded from."""

    url: str
    member: str | None = None  # the file's name inside the zip archive at url (None: url is the file)
    archive_sha256: str | None = None  # checksum of the archive itself, where known


@dataclass(frozen=True)
class CorpusFile:
    """One file of a corpus, with what is known about its content."""

    relpath: str  # path below $RNNLM_DATA and the cache, as in the shared data layout
    sources: tuple[Source, ...] = ()  # tried in order
    sha256: str | None = None
    git_blob: str | None = None  # git blob id (sha1 of "blob <size>\0" + bytes), where no sha256 is known
    size: int | None = None  # bytes; the only check where neither checksum is known
    derive_from: CorpusFile | None = None  # computed from this file instead of downloaded ...
    derive: Callable[[bytes], bytes] | None = None  # ... by this function of its bytes

    @property
    def url(self) -> str | None:
        """The first download address, if any."""
        return self.sources[0].url if self.sources else None


def data_root() -> Path | None:
    """``$RNNLM_DATA``, the folder of pre-placed corpora, if set."""
    value = os.environ.get("RNNLM_DATA")
    return Path(value).expanduser() if value else None


def find_local(file: CorpusFile) -> Path | None:
    """The file in $RNNLM_DATA, else in the cache, else None."""
    roots = [r for r in (data_root(), cache_root()) if r is not None]
    return next((r / file.relpath for r in roots if (r / file.relpath).is_file()), None)


def where_by_hand(file: CorpusFile) -> str:
    """The end of an error message: both places where a user may put the file."""
    data = data_root()
    first = f"{data / file.relpath} ($RNNLM_DATA)" if data else f"$RNNLM_DATA/{file.relpath} (with RNNLM_DATA set)"
    return f"put the file by hand at {first} or at {cache_root() / file.relpath} (the cache)"


def fetch(name: str, file: CorpusFile) -> Path:
    """Local path of the file, downloading or computing it into the cache when it is not on disk."""
    found = find_local(file)
    if found is not None:
        return found
    dest = cache_root() / file.relpath
    if file.derive_from is not None and file.derive is not None:
        try:
            source = fetch(name, file.derive_from)
        except CorpusNotFoundError as e:
            raise CorpusNotFoundError(
                f"{e}\n{file.relpath} of corpus {name!r} is computed from that file; or {where_by_hand(file)}"
            ) from None
        print(f"rnnlm: computing {dest} from {source}", file=sys.stderr)
        with _staged(dest) as tmp:
            tmp.write_bytes(file.derive(source.read_bytes()))
            problem = check(tmp, file)
            if problem:
                raise CorpusNotFoundError(
                    f"{file.relpath} computed from {source} does not match: {problem}; the "
                    f"source file may be another version. Or {where_by_hand(file)}"
                )
        return dest
    failures = [] if file.sources else ["  (no download address is known for this file)"]
    for src in file.sources:
        print(f"rnnlm: downloading {src.url} (first use of corpus {name!r}) into {dest}", file=sys.stderr)
        try:
            with _staged(dest) as tmp:
                _download(src, tmp)
                problem = check(tmp, file)
                if problem:
                    raise ValueError(problem)
            return dest
        except (OSError, http.client.HTTPException, ValueError, zipfile.BadZipFile, KeyError) as e:
            failures.append(f"  {src.url}: {_reason(e)}")
    raise CorpusNotFoundError(
        f"could not download {file.relpath} of corpus {name!r}:\n"
        + "\n".join(failures)
        + f"\nDownload it yourself and {where_by_hand(file)}"
    )


@contextmanager
def _staged(dest: Path) -> Iterator[Path]:
    """A temporary file beside dest that replaces dest on success and is deleted on any failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the bytes reach the disk before the name does
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _download(src: Source, out: Path) -> None:
    """Fetch src into out (extracting src.member from a zip archive)."""
    request = urllib.request.Request(src.url, headers={"User-Agent": "rnnlm (python urllib)"})
    if src.member is None:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as r, open(out, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
        return
    archive = out.with_name(out.name + ".zip")
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as r, open(archive, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
        if src.archive_sha256 and (got := _digest(archive, "sha256")) != src.archive_sha256:
            raise ValueError(f"the archive's sha256 is {got}, expected {src.archive_sha256}")
        with zipfile.ZipFile(archive) as z, z.open(src.member) as m, open(out, "wb") as f:
            shutil.copyfileobj(m, f, 1 << 20)
    finally:
        archive.unlink(missing_ok=True)


def _digest(path: Path, algo: str, prefix: bytes = b"") -> str:
    h = hashlib.new(algo, prefix)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check(path: Path, file: CorpusFile) -> str | None:
    """What is wrong with the file's content, or None when it matches every known checksum."""
    size = path.stat().st_size
    if file.size is not None and size != file.size:
        return f"it has {size:,} bytes, expected {file.size:,}"
    if file.sha256 and (got := _digest(path, "sha256")) != file.sha256:
        return f"its sha256 is {got}, expected {file.sha256}"
    # A git blob id is the sha1 of a "blob <size>\0" header and the bytes: all we know of some files.
    if file.git_blob and (got := _digest(path, "sha1", f"blob {size}\0".encode())) != file.git_blob:
        return f"its git blob id is {got}, expected {file.git_blob}"
    return None


def _reason(e: BaseException) -> str:
    if isinstance(e, KeyError):
        return f"the archive lacks the member {e}"
    if isinstance(e, zipfile.BadZipFile):
        return f"not a valid zip archive ({e})"
    reason = getattr(e, "reason", None)
    return str(reason if reason is not None and not hasattr(e, "code") else e)
