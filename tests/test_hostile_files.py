"""Crafted run files (config.json, vocab.json, safetensors headers) give a clear error, never code execution or an
exhausted memory; ``load`` of someone else's run directory never unpickles and never loads native code from it."""

from __future__ import annotations

import ctypes
import json
import pickle
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnlm
from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import CheckpointError, RnnlmError, VocabError
from rnnlm.core.vocab import Vocab
from rnnlm.lm import run as lm_run
from rnnlm.training import runs

SRC = Path(rnnlm.__file__).parent
DEEP = 100_000  # nesting levels: Python's json recurses once per level, past the interpreter's limit


def header_file(path: Path, header: bytes, length: int | None = None, tail: bytes = b"") -> Path:
    """A safetensors-like file: an 8-byte little-endian header length (``length``, default the true one), the
    header, then ``tail``."""
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + tail)
    return path


@pytest.mark.parametrize(
    "header, length",
    [
        (b"{}", 2**63),  # a length far past the file's end
        (b"{}", 2**64 - 1),
        (b"{" * 10 + b"}" * 10, None),
        (b"[" * DEEP + b"]" * DEEP, None),  # deep nesting
        (b'{"__metadata__": [1, 2]}', None),  # wrong type
        (b'{"__metadata__": {"step": 3}}', None),
        (b'{"__metadata__": "x"}', None),
        (b"[]", None),
        (b'"just a string"', None),
        (b"NaN", None),
        (b"\xff\xfe", None),
        (b"", 0),
        # tensors whose shapes or offsets claim more than the file holds, or are not numbers
        (b'{"w": {"dtype": "F32", "shape": [100000000000], "data_offsets": [0, 400000000000]}}', None),
        (b'{"w": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 4]}}', None),
        (b'{"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}', None),
        (b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 18446744073709551615]}}', None),
        (b'{"w": {"dtype": "XX", "shape": [1], "data_offsets": [0, 4]}}', None),
        (b'{"w": {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}}', None),
    ],
)
def test_crafted_safetensors_headers(tmp_path: Path, header: bytes, length: int | None) -> None:
    path = header_file(tmp_path / "best.safetensors", header, length)
    for read in (ckpt.read_metadata, ckpt.load_checkpoint, ckpt.load_weights):
        try:
            out = read(path)
        except CheckpointError as e:
            assert str(path) in str(e)
        else:  # a header this reader need not understand may still read, as plain data
            assert isinstance(out, (dict, tuple))


def tensors_with_trainer(skeleton: str) -> bytes:
    from safetensors.numpy import save

    return save({"w": np.zeros(2, dtype=np.float32)}, metadata={"trainer": skeleton})


@pytest.mark.parametrize(
    "skeleton",
    [
        "[" * DEEP + "]" * DEEP,
        '{"items": 5}',
        '{"items": [[1]]}',
        '{"list": 3}',
        "5",
        '"x"',
        '{"tensor": "nope"}',
        '{"tensor": ["w"]}',
        '{"tuple": [{"value": 1}, 7]}',
        '{"value": NaN, "items": null}',
        '{"items": [["a", ' * 2000 + '{"value": 1}' + "]]}" * 2000,  # deep, and within json's own limit
    ],
)
def test_crafted_trainer_state(tmp_path: Path, skeleton: str) -> None:
    path = tmp_path / "last.safetensors"
    path.write_bytes(tensors_with_trainer(skeleton))
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        ckpt.load_checkpoint(path)


@pytest.mark.parametrize(
    "text",
    [
        "[" * DEEP + "]" * DEEP,
        '{"a":' * DEEP + "1" + "}" * DEEP,
        '{"format": "rnnlm-vocab", "version": 1, "level": "char", "tokens": 5}',
        '{"format": "rnnlm-vocab", "version": 1, "level": "char", "tokens": {"a": 1}}',
        '{"format": "rnnlm-vocab", "version": 1, "level": "char", "tokens": ["a", ["b"]]}',
        '{"format": "rnnlm-vocab", "version": 1, "level": ["char"], "tokens": ["a"]}',
        '{"format": "rnnlm-vocab", "version": NaN, "level": "char", "tokens": ["a"]}',
        '{"format": "rnnlm-vocab", "version": 1, "level": "char", "tokens": ["a"], "unk": ["a"]}',
        '{"format": "rnnlm-vocab", "version": 1, "level": "char", "tokens": "abc"}',
    ],
)
def test_crafted_vocab_json(tmp_path: Path, text: str) -> None:
    path = tmp_path / "vocab.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(VocabError, match=re.escape(str(path))):
        Vocab.load(path)


def test_a_huge_vocab_json_is_refused_before_it_is_read(tmp_path: Path, monkeypatch) -> None:
    """The size limit is checked on the open file, before any byte is read (a sparse file of 300 MB here)."""
    path = tmp_path / "vocab.json"
    with open(path, "wb") as f:
        f.truncate(300 << 20)
    read = []
    monkeypatch.setattr(json, "loads", lambda *a, **k: read.append(a) or {})
    with pytest.raises(VocabError, match=re.escape(str(path)) + r".*314,572,800 bytes, more than the 256 MB"):
        Vocab.load(path)
    assert read == []


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory) -> Path:
    """A tiny trained language-model run (2 steps)."""
    import tiny

    folder = tmp_path_factory.mktemp("hostile")
    (folder / "corpus.txt").write_text(tiny.LM_TEXT, encoding="utf-8")
    cfg = lm_run.KIND.config()
    d = cfg.to_dict()
    d["data"]["paths"] = [str(folder / "corpus.txt")]
    d["model"].update(cell="gru", layers=1, hidden=8, embed=4, engine="fused")
    d["train"].update(batch_size=2, seq_len=8, max_steps=2, epochs=None, progress=False, pred_period=0, ema=0.0)
    d["train"].update(warmup_steps=0, out=str(folder / "run"))
    cfg = type(cfg).from_dict(d)
    lm_run.train(cfg, log=lambda _: None)
    return folder / "run"


def with_config(src: Path, dst: Path, section: str, key: str, value: object) -> Path:
    shutil.copytree(src, dst)
    path = dst / ckpt.CONFIG
    d = json.loads(path.read_text(encoding="utf-8"))
    d[section][key] = value
    path.write_text(json.dumps(d), encoding="utf-8")
    return dst


@pytest.mark.parametrize(
    "section, key, value, says",
    [
        ("model", "hidden", 100_000, "describes a model of"),  # 160 GB of weights beside a small checkpoint
        ("model", "hidden", 10**15, "too large to build"),
        ("model", "hidden", float("nan"), "hidden must be an integer"),
        ("model", "hidden", "16", "hidden must be an integer"),
        ("model", "hidden", [8], "hidden must be an integer"),
        ("model", "hidden", True, "hidden must be an integer"),
        ("model", "hidden", -1, "must be at least 1"),
        ("model", "layers", 10**6, "holds only"),
        ("model", "layers", 3, "describes a model of"),
        ("model", "dropout", float("nan"), "dropout must be a number"),
        ("model", "cell", {"x": 1}, "cell must be a string"),
        ("eval", "eval_seq_len", 0, "must be at least 1"),
        ("train", "lr", "fast", "lr must be a number"),
    ],
)
def test_crafted_config_json(lm_dir: Path, tmp_path: Path, section: str, key: str, value: object, says: str) -> None:
    run = with_config(lm_dir, tmp_path / "run", section, key, value)
    with pytest.raises(CheckpointError, match=re.escape(says)) as e:
        runs.load(run, lm_run.KIND)
    assert str(run / ckpt.CONFIG) in str(e.value)


def test_deeply_nested_config_json(lm_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(lm_dir, tmp_path / "run")
    (tmp_path / "run" / ckpt.CONFIG).write_text("[" * DEEP + "]" * DEEP, encoding="utf-8")
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / "run" / ckpt.CONFIG))):
        runs.load(tmp_path / "run", lm_run.KIND)


class Payload:
    """Unpickling this creates a file: the proof that a pickle in the run directory ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_load_never_unpickles_nor_loads_native_code_from_the_run(lm_dir: Path, tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "run"
    shutil.copytree(lm_dir, run)
    marker = tmp_path / "pwned"
    for name in ("last.state.pt", "model.pt", "vocab.pkl", "best.pt"):  # every pickle a reader might try
        (run / name).write_bytes(pickle.dumps(Payload(marker)))
    for name in ("lstm_step.so", "decode.so", "kernels/decode.so", "__init__.py", "sitecustomize.py"):
        (run / name).parent.mkdir(exist_ok=True)
        (run / name).write_bytes(b"not a library")
    loaded: list[str] = []
    real_cdll = ctypes.CDLL

    def watch(name, *args, **kw):
        loaded.append(str(name))
        return real_cdll(name, *args, **kw)

    def refuse(*args, **kw):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(ctypes, "CDLL", watch)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    lm = rnnlm.load(run)
    lm.generate("row", length=5, temperature=0)
    lm.evaluate(text="row 1: pack my box")
    for which in ("best", "last"):
        rnnlm.load(run, checkpoint=which)
    assert not marker.exists()
    assert not [p for p in loaded if Path(p).resolve().is_relative_to(run.resolve())]


def test_no_torch_load_without_weights_only_and_no_pickle_in_the_package() -> None:
    """The source itself: every torch.load (there is none today) must pass weights_only=True; nothing imports pickle,
    and np.load never allows pickle."""
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"
        assert not re.search(r"^\s*(import pickle|from pickle|import dill|import cloudpickle)", text, re.M), path
        assert "allow_pickle=True" not in text, path


def test_a_reader_error_is_an_rnnlm_error() -> None:
    assert issubclass(CheckpointError, RnnlmError) and issubclass(VocabError, RnnlmError)
