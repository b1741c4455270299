"""Named corpora: lookup order, checksums, downloads from a local HTTP server, derived files, errors."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rnnlm.core.errors import CorpusNotFoundError
from rnnlm.lm.data import corpora, fetch
from rnnlm.lm.data.corpora import REGISTRY, CorpusFile, Source, corpus_files, corpus_text, get_corpus, list_corpora

TEXT = "It was a dark and stormy night — café.\n".encode() * 50


class Server:
    """A tiny HTTP server on 127.0.0.1 that serves fixed bytes per path and logs every request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                outer.requests.append(self.path)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    thread = threading.Thread(target=s.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache and no $RNNLM_DATA: every corpus file must come from the (test) network."""
    monkeypatch.delenv("RNNLM_DATA", raising=False)
    monkeypatch.setenv("RNNLM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def use_file(monkeypatch: pytest.MonkeyPatch, name: str, file: CorpusFile) -> None:
    monkeypatch.setitem(REGISTRY, name, replace(REGISTRY[name], files={"train": file}))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_verifies_and_caches(server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["/tm.txt"] = TEXT
    use_file(
        monkeypatch,
        "timemachine",
        CorpusFile("timemachine.txt", (Source(server.url + "/tm.txt"),), sha256=sha256(TEXT)),
    )
    assert corpus_files("timemachine") == {"train": cache / "timemachine.txt"}
    assert (cache / "timemachine.txt").read_bytes() == TEXT
    assert corpus_text("timemachine") == {"train": TEXT.decode()}
    assert server.requests == ["/tm.txt"]  # the second and third calls read the cache
    assert [p.name for p in cache.iterdir()] == ["timemachine.txt"]  # no temporary files left


def test_checksum_mismatch_leaves_nothing_behind(server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["/tm.txt"] = TEXT + b"tampered"
    use_file(
        monkeypatch,
        "timemachine",
        CorpusFile("timemachine.txt", (Source(server.url + "/tm.txt"),), sha256=sha256(TEXT)),
    )
    with pytest.raises(CorpusNotFoundError) as e:
        corpus_files("timemachine")
    msg = str(e.value)
    assert f"its sha256 is {sha256(TEXT + b'tampered')}, expected {sha256(TEXT)}" in msg
    assert str(cache / "timemachine.txt") in msg
    assert not any(p.is_file() for p in cache.rglob("*"))


@pytest.mark.parametrize("failure", ["404", "refused"])
def test_failed_download_says_where_to_put_the_file(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    if failure == "404":
        url, why = server.url + "/missing.txt", "HTTP Error 404"
    else:
        with socket.socket() as s:  # a port that was free a moment ago: nobody listens there
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url, why = f"http://127.0.0.1:{port}/tm.txt", "refused"
    use_file(monkeypatch, "timemachine", CorpusFile("timemachine.txt", (Source(url),), sha256=sha256(TEXT)))
    with pytest.raises(CorpusNotFoundError) as e:
        corpus_files("timemachine")
    msg = str(e.value)
    assert url in msg and why in msg
    assert "$RNNLM_DATA/timemachine.txt" in msg and str(cache / "timemachine.txt") in msg
    assert not any(p.is_file() for p in cache.rglob("*"))


def test_error_names_rnnlm_data_path_when_set(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNLM_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("RNNLM_CACHE", str(tmp_path / "cache"))
    use_file(monkeypatch, "timemachine", CorpusFile("timemachine.txt", (Source(server.url + "/nope"),)))
    with pytest.raises(CorpusNotFoundError, match=f"by hand at {tmp_path / 'data' / 'timemachine.txt'}"):
        corpus_files("timemachine")


def test_falls_back_to_the_next_source_and_extracts_zip(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("inner/tm.txt", TEXT)
    server.files["/tm.zip"] = buf.getvalue()
    sources = (
        Source(server.url + "/gone.txt"),
        Source(server.url + "/tm.zip", member="inner/missing.txt"),
        Source(server.url + "/tm.zip", member="inner/tm.txt", archive_sha256=sha256(b"other")),
        Source(server.url + "/tm.zip", member="inner/tm.txt", archive_sha256=sha256(buf.getvalue())),
    )
    use_file(monkeypatch, "timemachine", CorpusFile("timemachine.txt", sources, sha256=sha256(TEXT)))
    assert corpus_files("timemachine")["train"].read_bytes() == TEXT
    assert len(server.requests) == 4
    assert [p.name for p in cache.iterdir()] == ["timemachine.txt"]


def test_failed_sources_are_all_reported(server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["/bad.zip"] = b"not a zip"
    sources = (Source(server.url + "/gone.txt"), Source(server.url + "/bad.zip", member="x"))
    use_file(monkeypatch, "timemachine", CorpusFile("timemachine.txt", sources))
    with pytest.raises(CorpusNotFoundError, match=r"(?s)gone.txt: HTTP Error 404.*bad.zip: not a valid zip"):
        corpus_files("timemachine")


def test_git_blob_check(shared_data: Path) -> None:
    # The data README lists both checksums of timemachine.txt: the git blob id check must accept it.
    path = shared_data / "timemachine.txt"
    good = CorpusFile("timemachine.txt", git_blob="f32a11d4181186870430bbd3c947b96541721eba")
    assert fetch.check(path, good) is None
    assert "git blob id" in fetch.check(path, replace(good, git_blob="0" * 40))
    assert "bytes, expected" in fetch.check(path, CorpusFile("x", size=1))


def test_registry_checksums_match_shared_data(shared_data: Path) -> None:
    checked = 0
    for spec in REGISTRY.values():
        for file in spec.files.values():
            path = shared_data / file.relpath
            if path.is_file():
                assert fetch.check(path, file) is None, file.relpath
                checked += 1
    assert checked == 11  # every shared file but the missing wikitext-2 train file (enwik8 is not shared)


def test_lookup_prefers_rnnlm_data(shared_data: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNLM_DATA", str(shared_data))
    assert corpus_files("ptb") == {s: shared_data / f"ptb/ptb.{s}.txt" for s in ("train", "valid", "test")}
    text = corpus_text("timemachine")
    assert list(text) == ["train"] and text["train"].startswith("The Time Machine, by H. G. Wells [1898]")


def test_ptb_char_is_derived_from_ptb_words(
    shared_data: Path, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A data folder with only the small word-level valid file: the char file is computed into the cache
    # and must match the published file's sha256 (checked inside corpus_files).
    data = tmp_path / "data" / "ptb"
    data.mkdir(parents=True)
    (data / "ptb.valid.txt").symlink_to(shared_data / "ptb" / "ptb.valid.txt")
    monkeypatch.setenv("RNNLM_DATA", str(tmp_path / "data"))
    spec = REGISTRY["ptb-char"]
    monkeypatch.setitem(REGISTRY, "ptb-char", replace(spec, files={"valid": spec.files["valid"]}))
    path = corpus_files("ptb-char")["valid"]
    assert path == cache / "ptb" / "ptb.char.valid.txt"
    assert path.read_bytes() == (shared_data / "ptb" / "ptb.char.valid.txt").read_bytes()


def test_derived_file_error_names_both_files(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = REGISTRY["ptb-char"]
    word = replace(spec.files["test"].derive_from, sources=())  # nowhere to download from
    monkeypatch.setitem(
        REGISTRY, "ptb-char", replace(spec, files={"test": replace(spec.files["test"], derive_from=word)})
    )
    with pytest.raises(CorpusNotFoundError) as e:
        corpus_files("ptb-char")
    assert "ptb/ptb.test.txt" in str(e.value) and str(cache / "ptb" / "ptb.char.test.txt") in str(e.value)


def test_enwik8_slices_move_to_character_starts() -> None:
    data = "ab中d".encode()  # 中 is 3 bytes at offsets 2..4
    assert corpora._enwik8_slice(0, 3, data) == b"ab\xe4\xb8\xad"
    assert corpora._enwik8_slice(3, 6, data) == b"d"


def test_python_docs_needs_no_file_and_no_network(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    def no_network(*args: object, **kw: object) -> None:
        raise AssertionError("python-docs must not touch the network")

    monkeypatch.setattr(fetch.urllib.request, "urlopen", no_network)
    text = corpus_text("python-docs")
    assert list(text) == ["train"] and len(text["train"]) > 100_000
    assert corpus_files("python-docs") == {}
    from pydoc_data.topics import topics

    first = sorted(topics)[0]
    assert text["train"].startswith(topics[first])


def test_unknown_corpus_lists_known_names() -> None:
    with pytest.raises(CorpusNotFoundError) as e:
        get_corpus("shakespeare")
    for name in ("python-docs", "timemachine", "tinyshakespeare", "ptb", "ptb-char", "wikitext-2", "enwik8", "jaychou"):
        assert name in str(e.value)
    assert get_corpus("PTB").name == "ptb"


def test_list_corpora_reports_availability(shared_data: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNLM_DATA", str(shared_data))
    info = {c["name"]: c for c in list_corpora()}
    assert info["python-docs"]["status"] == "built in"
    assert info["ptb"]["status"] == "available locally" and info["ptb"]["level"] == "word"
    assert info["ptb"]["local"]["valid"] == str(shared_data / "ptb" / "ptb.valid.txt")
    assert info["wikitext-2"]["status"].startswith("partly local")
    assert info["enwik8"]["status"] == "downloaded on first use"
    assert all(c["description"] and c["level"] in ("char", "word") for c in info.values())
