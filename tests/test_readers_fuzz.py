"""Every reader returns data or raises the project's error naming the file, on any bytes (Hypothesis).

The readers are those a user's or someone else's file reaches: text, CoNLL-2003, CoNLL-U, ``.ts``, ``.npz``, word
vectors (plain and gzip), a run's ``config.json`` and ``vocab.json``, and safetensors headers. Each property feeds a
reader a valid file with random edits (bytes inserted, deleted, replaced; tokens that parsers trip on), or random
bytes, and requires either a result or an ``RnnlmError`` whose message names the file: never another exception. A
tracemalloc bound on the reads of files that hold lengths or counts (.ts, .npz, word vectors, safetensors,
config.json) stands for "no unbounded memory" (inputs are at most a few KB; a reader that believes a length field
inside them would allocate far more). Examples that once failed are kept as ``@example``.
"""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save as st_save

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import RnnlmError
from rnnlm.core.text import read_text
from rnnlm.core.vocab import Vocab
from rnnlm.frames.data import read_npz, read_ts
from rnnlm.lm import run as lm_run
from rnnlm.tagging.conll import read_conll2003, read_conllu
from rnnlm.tagging.word_vectors import read_word_vectors
from rnnlm.training import runs

pytestmark = pytest.mark.e2e  # 200 examples per reader

MEMORY_LIMIT = 64 << 20  # bytes a reader may allocate (numpy and Python objects) for an input of a few KB

# Byte strings that parsers trip on, inserted at random places.
TOKENS = [
    b"\n",
    b"\r\n",
    b"\r",
    b"\t",
    b" ",
    b"\x00",
    b":",
    b",",
    b"?",
    b"#",
    b"@",
    b"-",
    b"_",
    b".",
    b"=",
    b'"',
    b"{",
    b"}",
    b"[",
    b"]",
    b"0",
    b"1",
    b"-1",
    b"1e999",
    b"nan",
    b"inf",
    b"-inf",
    b"NaN",
    b"Infinity",
    b"\xc2\xb2",
    b"\xd9\xa1",
    b"\xe2\x80\xa8",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xed\xa0\x80",
    b"99999999999999999999",
    b"1-2",
    b"3.1",
    b"-DOCSTART-",
    b"# newdoc",
    b"@data",
    b"@classLabel",
    b"@dimensions",
    b"@seriesLength",
    b"true",
    b"false",
    b"null",
]


@st.composite
def edited(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` with up to 6 random edits (insert a token or random bytes, delete a span, truncate), or random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 6))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.integers(0, 3))
        if kind == 0:
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif kind == 1:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif kind == 2:
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            del data[pos:]
    return bytes(data)


def reads_or_names_the_file(read: Callable[[Path], object], path: Path, data: bytes, memory: bool = False) -> None:
    """Write ``data`` to ``path`` and read it: a result, or an RnnlmError naming the file; with ``memory``, within
    the memory bound (traced for the readers that believe a length or a count written in the file)."""
    path.write_bytes(data)
    if memory:
        tracemalloc.start()
    try:
        read(path)
    except RnnlmError as e:
        assert path.name in str(e), f"the error does not name the file: {e}"
    finally:
        if memory:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    assert not memory or peak < MEMORY_LIMIT, f"reading {len(data)} bytes took {peak:,} bytes"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


TEXT = "The first line.\nCafé ünïcode 分开\r\nlast line without a newline".encode()


@given(edited(TEXT))
def test_text(folder: Path, data: bytes) -> None:
    reads_or_names_the_file(read_text, folder / "corpus.txt", data)


CONLL2003 = b"-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n.  . O O\n\nPeter NNP B-NP B-PER\n"


@given(edited(CONLL2003))
def test_conll2003(folder: Path, data: bytes) -> None:
    reads_or_names_the_file(read_conll2003, folder / "train.conll", data)


CONLLU = (
    b"# newdoc id = d1\n# sent_id = 1\n# text = I don't.\n1\tI\tI\tPRON\tPRP\t_\t2\tnsubj\t_\t_\n"
    b"2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n2\tdo\tdo\tAUX\tVBP\t_\t0\troot\t_\t_\n3\tn't\tnot\tPART\tRB\t_\t2\tadvmod\t_\t_\n"
    b"3.1\t_\t_\t_\t_\t_\t_\t_\t_\t_\n4\t.\t.\tPUNCT\t.\t_\t2\tpunct\t_\t_\n\n"
)


@given(edited(CONLLU))
def test_conllu(folder: Path, data: bytes) -> None:
    reads_or_names_the_file(read_conllu, folder / "train.conllu", data)


TS = (
    b"# comment\n@problemName Vowels\n@timeStamps false\n@missing true\n@univariate false\n@dimensions 2\n"
    b"@equalLength false\n@seriesLength 3\n@classLabel true a b\n@data\n1.0,2,?:3,4e-1,5:a\n-1,0.5:2,3:b\n"
)


@given(edited(TS))
@example(TS.replace(b"@dimensions 2", b"@dimensions \xc2\xb2"))  # '²'.isdigit() but int('²') raised ValueError
def test_ts(folder: Path, data: bytes) -> None:
    reads_or_names_the_file(read_ts, folder / "train.ts", data, memory=True)


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


NPZ = npz_bytes(
    x=np.arange(24, dtype=np.float32).reshape(2, 4, 3),
    lengths=np.array([4, 2]),
    y=np.array(["a", "b"]),
    classes=np.array(["a", "b"]),
)
NPZ_STORED = NPZ  # np.savez stores uncompressed: edits reach the .npy headers (shapes, dtypes) directly


def npy_header_edits() -> st.SearchStrategy[bytes]:
    """An npz whose x header claims another shape or dtype than its data hold (a crafted length)."""
    shapes = st.tuples(st.integers(0, 10**12), st.integers(0, 10**6), st.integers(0, 10**6))
    dtypes = st.sampled_from(["<f4", "<f8", "|O", "<U5", "|b1", "<c8", "<i8"])
    return st.builds(_crafted_npz, shapes, dtypes)


def _crafted_npz(shape: tuple[int, int, int], dtype: str) -> bytes:
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    text = repr(header).encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    npy = b"\x93NUMPY\x01\x00" + (len(text) + pad + 1).to_bytes(2, "little") + text + b" " * pad + b"\n" + b"\0" * 96
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.npy", npy)
        z.writestr("lengths.npy", _npy(np.array([1, 1])))
    return buf.getvalue()


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@given(st.one_of(edited(NPZ_STORED), npy_header_edits()))
@example(_crafted_npz((1, 721, 11621), "<f8"))  # 67 MB allocated for 574 bytes before the header check
@example(_crafted_npz((10**12, 1, 1), "<f4"))  # 4 TB: MemoryError before the header check
@example(NPZ_STORED[:60] + b"\xff" + NPZ_STORED[61:])  # a bad CRC: zipfile.BadZipFile before the fix
def test_npz(folder: Path, data: bytes) -> None:
    reads_or_names_the_file(read_npz, folder / "train.npz", data, memory=True)


VECTORS = b"3 2\nthe 0.1 -0.2\n. . . 1e-3 4\nCaf\xc3\xa9 5 6\n"


@given(edited(VECTORS))
@example(b"1 \xc2\xb2\nthe 1 2\n")  # a header '1 ²': '²'.isdigit() but int('²') raised ValueError
def test_word_vectors(folder: Path, data: bytes) -> None:
    reads_or_names_the_file(read_word_vectors, folder / "vectors.txt", data, memory=True)


@given(st.one_of(edited(gzip.compress(VECTORS, mtime=0)), edited(VECTORS).map(lambda d: gzip.compress(d, mtime=0))))
@example(  # a damaged deflate stream: zlib.error before the fix
    b"\x1f\x8b\x08\n\x00\x00\x00\x00\x00\x02\x033V0\xe2*\xc9HU0\xd03T\xd05\xd03\xe2\xd2S\x00A\xc3T]c\x05\x13.\xe7"
    b"\xc4\xb4\xc3+\x15L\x15\xcc\xb8\x00v\x89\xbc\xd0(\x00\x00\x00"
)
def test_word_vectors_gzip(folder: Path, data: bytes) -> None:
    reads_or_names_the_file(read_word_vectors, folder / "vectors.txt.gz", data, memory=True)


VOCAB = json.dumps(Vocab.build("abc\n", "char").to_dict()).encode()


@given(edited(VOCAB))
def test_vocab_json(folder: Path, data: bytes) -> None:
    reads_or_names_the_file(Vocab.load, folder / "vocab.json", data)


def lm_config_bytes() -> bytes:
    cfg = lm_run.KIND.config()
    return json.dumps(cfg.to_dict()).encode()


LM_CONFIG = lm_config_bytes()


def open_lm_run(path: Path) -> object:
    """Open the run that ``path`` (its config.json) belongs to, and check its settings as a load does."""
    run = runs.open_run(path.parent, lm_run.KIND)
    return run


@given(edited(LM_CONFIG))
def test_config_json(folder: Path, data: bytes) -> None:
    reads_or_names_the_file(open_lm_run, lm_run_dir(folder) / ckpt.CONFIG, data, memory=True)


def lm_run_dir(folder: Path) -> Path:
    """A folder with a language model's vocab.json, where each example writes a config.json."""
    run_dir = folder / "run"
    if not (run_dir / ckpt.VOCAB).is_file():
        run_dir.mkdir(exist_ok=True)
        Vocab.build("abc\n", "char").save(run_dir / ckpt.VOCAB)
    return run_dir


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=max(1, settings().max_examples // 4))  # test_config_json reads the file 200 times
@given(st.sampled_from(["data", "model", "train", "eval"]), st.text(max_size=15), JSON_VALUES)
def test_config_json_with_any_value_in_any_setting(folder: Path, section: str, key: str, value: object) -> None:
    """A well-formed config.json with any JSON value in place of a setting (wrong types, NaN, huge numbers)."""
    d = json.loads(LM_CONFIG)
    names = list(d[section])
    d[section][names[hash(key) % len(names)] if key not in d[section] and names else key] = value
    reads_or_names_the_file(open_lm_run, lm_run_dir(folder) / ckpt.CONFIG, json.dumps(d).encode())


SAFETENSORS = st_save(
    {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "trainer.opt.0": np.ones(2, dtype=np.float32)},
    metadata={"step": "3", "trainer": json.dumps({"items": [["opt", {"list": [{"tensor": "trainer.opt.0"}]}]]})},
)


@given(edited(SAFETENSORS))
def test_safetensors_metadata(folder: Path, data: bytes) -> None:
    reads_or_names_the_file(ckpt.read_metadata, folder / "last.safetensors", data, memory=True)


@given(edited(SAFETENSORS))
def test_safetensors_checkpoint(folder: Path, data: bytes) -> None:
    reads_or_names_the_file(ckpt.load_checkpoint, folder / "best.safetensors", data, memory=True)
