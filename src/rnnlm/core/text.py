"""Finding and reading text files: strict UTF-8, with errors that say which file and what to do."""

from __future__ import annotations

import codecs
import glob
from collections.abc import Sequence
from pathlib import Path

from rnnlm.core.errors import DataError

_BOM = codecs.BOM_UTF8
_BINARY_SNIFF = 8192  # a NUL byte this early means a binary file; text never holds one
_GLOB_CHARS = frozenset("*?[")


def resolve_paths(specs: Sequence[str | Path]) -> list[Path]:
    """Expand files, directories (every ``*.txt`` below, recursively) and globs into a list of files.

    Each spec contributes its files in sorted order; specs keep the order they were given in.
    """
    out: list[Path] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.txt") if p.is_file() and not _hidden(p, path))
            if not found:
                raise DataError(
                    f"{spec}: the directory holds no .txt files; pass a text file, a directory of .txt files or a glob"
                )
            out.extend(found)
        elif path.exists():
            out.append(path)
        elif _GLOB_CHARS & set(str(spec)):
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not found:
                raise DataError(
                    f"{spec}: no file matches this pattern; pass a text file, a directory of .txt files or a glob"
                )
            out.extend(found)
        else:
            raise DataError(f"{spec}: no such file or directory; pass a text file, a directory of .txt files or a glob")
    return out


def _hidden(path: Path, root: Path) -> bool:
    # Editors and notebooks leave copies in dot-folders (.ipynb_checkpoints); they would double the text.
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def read_text(path: str | Path) -> str:
    """Read one UTF-8 text file: a leading BOM is dropped and ``\\r\\n`` becomes ``\\n``.

    Raises DataError naming the file when it is missing, a directory, unreadable, empty, binary or
    not valid UTF-8 (with the byte offset, line and bytes of the first bad sequence).
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory; pass it as a path spec to read every .txt file in it, or name a file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file or directory; check the path") from None
    except OSError as e:
        raise DataError(
            f"cannot read {path}: {e.strerror or e}; check that it exists and that you may read it"
        ) from None

    start = len(_BOM) if data.startswith(_BOM) else 0
    if len(data) == start:
        raise DataError(f"{path} is empty; give a file that holds some text")
    nul = data.find(b"\0", 0, _BINARY_SNIFF)
    if nul >= 0:
        raise DataError(
            f"{path} looks like a binary file (a NUL byte at byte offset {nul}); rnnlm reads UTF-8 "
            "text files, so pass the text itself (extract it first if this is an archive or document)"
        )
    try:
        # A memoryview skips the BOM without copying the (possibly 100 MB) buffer; one decode for the whole file.
        text, _ = codecs.utf_8_decode(memoryview(data)[start:], "strict", True)
    except UnicodeDecodeError as e:
        raise DataError(_utf8_message(path, data, start + e.start, start + e.end)) from None
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    return text


def _utf8_message(path: Path, data: bytes, bad: int, end: int) -> str:
    line = data.count(b"\n", 0, bad) + 1
    shown = " ".join(f"0x{b:02x}" for b in data[bad : max(end, bad + 1)])
    context = data[bad : bad + 8].hex(" ")  # the bytes around it help to guess the real encoding
    return (
        f"{path} is not valid UTF-8: the bytes {shown} at byte offset {bad} (line {line}) do not decode "
        f"(bytes from there: {context}). Convert the file to UTF-8 first, e.g. `iconv -f <enc> -t utf-8 "
        f"{path} > {path.stem}.utf8.txt`, where <enc> is its real encoding (latin1, cp1252, gbk, shift_jis, ...)"
    )


def read_texts(specs: Sequence[str | Path]) -> str:
    """Resolve the specs and concatenate the files, adding a newline after a file that lacks one."""
    paths = resolve_paths(specs)
    if not paths:
        raise DataError("no text files were given; pass a text file, a directory of .txt files or a glob")
    parts: list[str] = []
    for i, path in enumerate(paths):
        text = read_text(path)
        parts.append(text)
        # Without the newline the last word of one file would fuse with the first word of the next.
        if i + 1 < len(paths) and not text.endswith("\n"):
            parts.append("\n")
    return "".join(parts)
