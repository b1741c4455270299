"""Token files for corpora larger than memory (lm/data/tokens.py): the streaming prepare equals reading the text
into memory, a prepare is reused until its files or vocabulary change, bytes round-trip at byte level, and the
resident memory stays bounded while a prepare runs and while batches are read (measured in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rnnlm.core.text import read_texts
from rnnlm.core.vocab import Vocab
from rnnlm.lm.config import DataConfig
from rnnlm.lm.data import tokens
from rnnlm.lm.data.batching import BatchSampler
from rnnlm.lm.data.dataset import load_corpus
from rnnlm.lm.data.tokens import TokenFile, prepare

ROOT = Path(__file__).resolve().parents[3]


def quiet(msg: str) -> None:
    pass


@pytest.fixture
def texts(tmp_path: Path) -> Path:
    """Three files in a directory: one with a BOM and CRLF line ends, one without a final newline, one with
    characters beyond the BMP; a long line, so that pieces of 64 bytes must read on past it."""
    d = tmp_path / "texts"
    d.mkdir()
    (d / "a.txt").write_bytes(b"\xef\xbb\xbfone two\r\nthree four five\r\n" + b"x" * 200 + b"\r\nend\r\n")
    (d / "b.txt").write_text("caf\u00e9 na\u00efve words\nno final newline", encoding="utf-8")
    (d / "c.txt").write_text("emoji \U0001f600 and \u4e2d\u6587\n" * 20, encoding="utf-8")
    return d


@pytest.mark.parametrize("level", ["char", "word"])
def test_a_streamed_prepare_equals_the_text_read_into_memory(texts, tmp_path, monkeypatch, level):
    monkeypatch.setattr(tokens, "PIECE", 64)  # many pieces, lines longer than a piece
    ready = prepare([str(texts)], tmp_path / "out", level, log=quiet)
    text = read_texts([texts])
    vocab = Vocab.build(text, level)
    assert ready.vocab == vocab and not ready.reused
    assert np.array_equal(ready.tokens[0 : len(ready.tokens)], vocab.encode(text))
    assert ready.tokens.dtype == np.uint8 and (tmp_path / "out" / "tokens.bin").stat().st_size == len(ready.tokens)


def test_a_prepare_is_reused_until_its_files_or_vocabulary_change(texts, tmp_path):
    out = tmp_path / "out"
    first = prepare([str(texts / "*.txt")], out, "char", log=quiet)  # a glob
    assert prepare([str(texts / "*.txt")], out, "char", log=quiet).reused
    b = texts / "b.txt"
    os.utime(b, ns=(b.stat().st_atime_ns, b.stat().st_mtime_ns + 10**9))  # touched, the same content
    assert prepare([str(texts / "*.txt")], out, "char", log=quiet).reused
    b.write_text(b.read_text(encoding="utf-8").replace("na", "NA"), encoding="utf-8")  # the same size
    again = prepare([str(texts / "*.txt")], out, "char", log=quiet)
    assert not again.reused and "N" in again.vocab and "N" not in first.vocab
    assert not prepare([str(texts / "*.txt")], out, "char", min_freq=2, log=quiet).reused  # another vocabulary
    wider = Vocab.build(read_texts([texts]) + "#", "char")  # another vocabulary that reads these files
    assert not prepare([str(texts / "*.txt")], out, "char", vocab=wider, log=quiet).reused
    assert not prepare([str(texts / "a.txt")], out, "char", log=quiet).reused  # other files


def test_byte_level_reads_any_bytes_and_round_trips_text(tmp_path):
    raw = bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8))  # not UTF-8, NULs and all
    (tmp_path / "bin.dat").write_bytes(raw)
    ready = prepare([str(tmp_path / "bin.dat")], tmp_path / "out", "byte", log=quiet)
    assert len(ready.vocab) == 256 and ready.tokens.dtype == np.uint8
    assert ready.tokens[0 : len(ready.tokens)].tobytes() == raw
    text = "caf\u00e9 \U0001f600 \u4e2d\u6587\n"
    ids = ready.vocab.encode(text)
    assert ids.tobytes() == text.encode("utf-8") and ready.vocab.decode(ids) == text
    assert Vocab.from_dict(ready.vocab.to_dict()) == Vocab.byte_level()


def test_train_reads_byte_level_and_large_text_through_a_cached_token_file(texts, tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLM_STREAM_BYTES", "100")  # these files count as large
    cfg = DataConfig(paths=[str(texts)], val_fraction=0.2)
    corpus = load_corpus(cfg)
    assert isinstance(corpus.train, TokenFile) and "token file (prepared" in corpus.description
    whole = Vocab.build(read_texts([texts]), "char").encode(read_texts([texts]))
    got = np.concatenate([corpus.train[0 : len(corpus.train)], corpus.val[0 : len(corpus.val)]])
    assert np.array_equal(got, whole)
    assert "token file (reused" in load_corpus(cfg, corpus.vocab).description
    # the batches of the token file are those of the same ids in memory
    for sampling in ("random", "sequential"):
        a = BatchSampler(corpus.train, 4, 8, sampling, True, 0)
        b = BatchSampler(corpus.train[0 : len(corpus.train)], 4, 8, sampling, True, 0)
        for (x1, y1), (x2, y2) in zip(a.batches(1), b.batches(1), strict=True):
            assert (x1 == x2).all() and (y1 == y2).all()
    byte = load_corpus(DataConfig(paths=[str(texts)], level="byte"))
    assert byte.level == "byte" and len(byte.train) + len(byte.val) == sum(p.stat().st_size for p in texts.iterdir())


MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    from rnnlm.lm.data import tokens
    from rnnlm.lm.data.batching import BatchSampler

    def kb(key):
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key + ":"))

    def grows(work):
        # the peak resident memory while ``work`` runs, above what was resident before it (MB)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current VmRSS
        before = kb("VmRSS")
        kept = work()
        return (kb("VmHWM") - before) / 1024, kept

    d = Path(sys.argv[1])
    tokens.PIECE = 1 << 20
    prepare, ready = grows(lambda: tokens.prepare([str(d / "big.txt")], d / "out", "char", log=lambda s: None))

    def read(ids):
        for X, Y in BatchSampler(ids, 64, 4096, "sequential", False, 0).batches(0):  # every byte read once
            pass
        return ids

    read_file, _ = grows(lambda: read(tokens.TokenFile(d / "ids.bin", "uint8")))
    # the map kept open, as nanoGPT#287 had it
    read_map, _ = grows(lambda: read(np.memmap(d / "ids.bin", dtype=np.uint8, mode="r")))
    print(json.dumps({"prepare": prepare, "read": read_file, "memmap": read_map, "tokens": len(ready.tokens)}))
    """
)


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures with Linux's /proc/self/status")
def test_resident_memory_stays_bounded_while_preparing_and_reading(tmp_path):
    line = "the quick brown fox jumps over the lazy dog " * 2 + "\n"
    with open(tmp_path / "big.txt", "w", encoding="utf-8") as f:
        for _ in range(24 * (1 << 20) // len(line)):
            f.write(line)
    block = np.arange(1 << 20, dtype=np.uint32).astype(np.uint8).tobytes()
    with open(tmp_path / "ids.bin", "wb") as f:  # real pages (a sparse file's holes need not take memory when mapped)
        for _ in range(96):
            f.write(block)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    grew = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    assert grew["tokens"] == (tmp_path / "big.txt").stat().st_size
    # read into memory, 24 MB of text would be its bytes, its str and its uint16 ids: about 100 MB; streamed in 1 MB
    # pieces it is a few pieces' buffers and numpy's and the allocator's own (about 26 MB measured)
    assert grew["prepare"] < 40, grew
    assert grew["read"] < 24, grew  # about 10 MB measured
    assert grew["memmap"] > 48, grew  # the measurement sees what a kept map costs (96 MB measured)
