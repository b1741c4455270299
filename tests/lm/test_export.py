"""A language model's export (lm/export.py): the ONNX step function computes what the model computes, at every
batch size and length, with the state carried across calls; the file carries the vocabulary and input spec."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

import rnnlm
from export_checks import SHAPES, assert_close, onnx_session, program, run_onnx
from rnnlm.core import export as core_export
from rnnlm.core.vocab import Vocab
from rnnlm.lm import export as lm_export
from rnnlm.lm.config import RunConfig
from rnnlm.lm.model import RNNLM
from tiny import LM, LM_TEXT

pytestmark = pytest.mark.e2e  # each file is exported once, then run at many shapes: about a second a module


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
    """A trained run: a one-layer LSTM with tied weights (embed = hidden, so the head has no projection)."""
    d = tmp_path_factory.mktemp("lm_export")
    (d / "t.txt").write_text(LM_TEXT, encoding="utf-8")
    settings = {**LM, "embed": 16, "tie_weights": True, "max_steps": 3, "threads": 1, "pred_period": 0}
    return rnnlm.train(d / "t.txt", cell="lstm", out=str(d / "run"), log=lambda _: None, **settings)


@pytest.fixture(scope="module")
def lstm_onnx(lstm_run, tmp_path_factory):
    return lstm_run.export(tmp_path_factory.mktemp("lm_onnx") / "lm.onnx")


def scratch_float32(model: RNNLM) -> RNNLM:
    """The model as rnnlm's reference engine runs it, in float32: the other side of every comparison."""
    model.set_engine("scratch")
    model.encoder.matmul_dtype = "float32"
    return model


def model_of(cell: str, layers: int = 2, embed: int = 6) -> tuple[RNNLM, Vocab, RunConfig]:
    torch.manual_seed(1)
    vocab = Vocab(sorted(set(LM_TEXT)), "char")
    cfg = RunConfig()
    cfg.model = dataclasses.replace(cfg.model, cell=cell, layers=layers, hidden=8, embed=embed, matmul_dtype="float32")
    return RNNLM(cfg.model, len(vocab)).eval(), vocab, cfg


def check_step(session, model: RNNLM, batch: int, time: int) -> None:
    g = torch.Generator().manual_seed(batch * 1000 + time)
    ids = torch.randint(0, model.vocab_size, (batch, time), generator=g)
    state = tuple(torch.randn(s.shape, generator=g) for s in model.begin_state(batch, "cpu"))
    inputs, _ = lm_export.names(model)
    got = run_onnx(session, dict(zip(inputs, (ids, *state), strict=True)))
    with torch.no_grad():
        logits, new_state = scratch_float32(model)(ids, state)
    assert_close(got, [logits, *new_state], f"batch {batch}, time {time}")


def test_the_onnx_step_function_is_the_model_at_every_batch_and_length(lstm_run, lstm_onnx):
    session = onnx_session(lstm_onnx)
    model = lstm_run.model
    assert model.head.weight is model.input.embedding.weight  # the tie survived saving and loading
    for batch, time in SHAPES:
        check_step(session, model, batch, time)


@pytest.mark.parametrize("cell, embed", [("gru", 6), ("rnn", 0)])
def test_gru_and_one_hot_rnn_steps_export_too(cell, embed, tmp_path):
    model, vocab, cfg = model_of(cell, embed=embed)
    session = onnx_session(lm_export.export_model(model, vocab, cfg, tmp_path / "m.onnx"))
    for batch, time in ((1, 1), (3, 7), (17, 500)):
        check_step(session, model, batch, time)


def test_a_text_fed_in_two_calls_with_the_state_carried_gives_the_logits_of_one_call(lstm_run, lstm_onnx):
    session = onnx_session(lstm_onnx)
    model = scratch_float32(lstm_run.model)
    ids = torch.tensor([lstm_run.encode_prefix(LM_TEXT[:60]), lstm_run.encode_prefix(LM_TEXT[60:120])])
    h, c = (s.numpy() for s in model.begin_state(2, "cpu"))
    first, h, c = session.run(None, {"ids": ids[:, :23].numpy(), "h": h, "c": c})
    second, h, c = session.run(None, {"ids": ids[:, 23:].numpy(), "h": h, "c": c})
    with torch.no_grad():
        whole, (h_want, c_want) = model(ids)
    assert_close([np.concatenate([first, second], axis=1), h, c], [whole, h_want, c_want], "carried state")


def test_the_file_carries_the_vocabulary_the_input_spec_and_the_version(lstm_run, lstm_onnx):
    path = lstm_onnx
    meta = core_export.read_metadata(path)
    assert meta["rnnlm_version"] == rnnlm.__version__ and meta["kind"] == "language-model"
    assert meta["vocab"]["tokens"] == list(lstm_run.vocab.tokens) and meta["vocab"]["level"] == "char"
    assert meta["inputs_order"] == ["ids", "h", "c"] and meta["outputs_order"] == ["logits", "h_out", "c_out"]
    assert set(meta["inputs"]) == {"ids", "h", "c"}
    session = onnx_session(path)
    assert [i.name for i in session.get_inputs()] == meta["inputs_order"]
    assert json.loads(session.get_modelmeta().custom_metadata_map["rnnlm"]) == meta  # readable by onnxruntime alone


def test_greedy_generation_with_onnxruntime_alone_matches_rnnlm(lstm_run, lstm_onnx):
    """The README's runner: numpy and onnxruntime, the vocabulary from the file, greedy decoding."""
    session = onnx_session(lstm_onnx)
    meta = json.loads(session.get_modelmeta().custom_metadata_map["rnnlm"])
    tokens = meta["vocab"]["tokens"]
    index = {t: i for i, t in enumerate(tokens)}
    L, H = meta["model"]["layers"], meta["model"]["hidden"]
    h = c = np.zeros((L, 1, H), np.float32)
    ids = np.array([[index[ch] for ch in "row 1"]], np.int64)
    out = []
    for _ in range(20):
        logits, h, c = session.run(None, {"ids": ids, "h": h, "c": c})
        ids = logits[:, -1:].argmax(-1)
        out.append(tokens[int(ids[0, 0])])
    scratch_float32(lstm_run.model)
    assert "".join(out) == lstm_run.generate("row 1", length=20, temperature=0)[len("row 1") :]


def test_the_exported_program_is_the_model_with_a_dynamic_batch_and_time(lstm_run, tmp_path):
    path = lstm_run.export(tmp_path / "lm.pt2", format="exported-program")
    assert core_export.read_metadata(path)["vocab"]["tokens"] == list(lstm_run.vocab.tokens)
    step = program(path)
    model = scratch_float32(lstm_run.model)
    for batch, time in ((1, 1), (3, 7), (17, 500)):
        ids = torch.randint(0, model.vocab_size, (batch, time))
        state = tuple(torch.randn(s.shape) for s in model.begin_state(batch, "cpu"))
        with torch.no_grad():
            logits, new_state = model(ids, state)
            assert_close(step(ids, *state), [logits, *new_state], f"batch {batch}, time {time}")


def test_a_model_that_has_generated_text_still_exports(lstm_run, tmp_path):
    """Generation caches a compiled decoder on the model, whose C pointers no copy can take: export copies the
    model (to swap its encoder), so the cache is left out of copies."""
    lstm_run.generate("row", length=5)
    assert "_step_decoder" in lstm_run.model.__dict__
    assert lstm_run.export(tmp_path / "after.onnx").is_file()
    assert "_step_decoder" not in copy.deepcopy(lstm_run.model).__dict__
