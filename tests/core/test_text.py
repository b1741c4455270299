"""Reading text files: path specs, strict UTF-8 and the error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnnlm.core.errors import DataError
from rnnlm.core.text import read_text, read_texts, resolve_paths


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def test_resolve_file_directory_and_glob(tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", "a")
    b = write(tmp_path / "sub" / "b.txt", "b")
    write(tmp_path / "sub" / "notes.md", "not text")
    write(tmp_path / ".ipynb_checkpoints" / "a-checkpoint.txt", "copy")
    c = write(tmp_path / "c.log", "c")
    assert resolve_paths([c]) == [c]
    assert resolve_paths([tmp_path]) == [a, b]  # recursive, sorted, only *.txt, no dot-folders
    assert resolve_paths([str(tmp_path / "*.txt"), str(c)]) == [a, c]
    assert resolve_paths([str(tmp_path / "**" / "*.txt")]) == [a, b]


@pytest.mark.parametrize("spec", ["missing.txt", "nothing-*.txt"])
def test_resolve_names_the_spec_that_matches_nothing(tmp_path: Path, spec: str) -> None:
    with pytest.raises(DataError, match="no such file or directory|no file matches") as e:
        resolve_paths([str(tmp_path / spec)])
    assert spec in str(e.value) and "glob" in str(e.value)


def test_resolve_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds no .txt files"):
        resolve_paths([tmp_path])


def test_read_strips_bom_and_normalises_crlf(tmp_path: Path) -> None:
    path = write(tmp_path / "t.txt", b"\xef\xbb\xbfone\r\ntwo\r\n\xe4\xb8\xad\r")
    assert read_text(path) == "one\ntwo\n中\r"


def test_read_texts_joins_files_with_newlines(tmp_path: Path) -> None:
    write(tmp_path / "1.txt", "no newline")
    write(tmp_path / "2.txt", "ends\n")
    write(tmp_path / "3.txt", "last")
    assert read_texts([tmp_path]) == "no newline\nends\nlast"
    with pytest.raises(DataError, match="no text files"):
        read_texts([])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file") as e:
        read_text(tmp_path / "gone.txt")
    assert "gone.txt" in str(e.value)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory"):
        read_text(tmp_path)


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf"])
def test_empty_file(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path / "empty.txt", data)
    with pytest.raises(DataError, match="empty.txt is empty"):
        read_text(path)


def test_binary_file_gives_offset_of_nul(tmp_path: Path) -> None:
    path = write(tmp_path / "model.bin", b"PK\x03\x04abc\x00\x01")
    with pytest.raises(DataError, match=r"model.bin looks like a binary file \(a NUL byte at byte offset 7\)"):
        read_text(path)


def test_invalid_utf8_gives_offset_line_and_bytes(tmp_path: Path) -> None:
    # Latin-1 "café" on line 3; the BOM is counted in the offset because it is in the file.
    path = write(tmp_path / "latin1.txt", b"\xef\xbb\xbfab\ncd\ncaf\xe9 au lait\n")
    with pytest.raises(DataError) as e:
        read_text(path)
    msg = str(e.value)
    assert "latin1.txt is not valid UTF-8" in msg
    assert "0xe9 at byte offset 12 (line 3)" in msg
    assert "iconv -f <enc> -t utf-8" in msg


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "secret.txt", "x")

    def denied(self: Path) -> bytes:  # chmod 000 would not stop root, so fake the refusal
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(DataError, match="cannot read .*secret.txt: Permission denied"):
        read_text(path)
