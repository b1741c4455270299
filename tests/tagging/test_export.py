"""A tagger's export (tagging/export.py): the ONNX scores are rnnlm's, with and without character-LM features;
the numpy Viterbi finds the CRF's paths; the numpy input preparation is rnnlm's encoding."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import rnnlm
from export_checks import SHAPES, assert_close, mixed_lengths, onnx_session, program, run_onnx
from rnnlm.core import export as core_export
from rnnlm.core.errors import ConfigError
from rnnlm.recurrent.encoder import RecurrentEncoder
from rnnlm.tagging import api as tagging
from rnnlm.tagging import export as tag_export
from rnnlm.tagging.crf import CRF
from rnnlm.tagging.encoding import collate, encode, read_tagged
from rnnlm.tagging.model import TaggerEnsemble
from tiny import LM, TAGGER, ner_file

pytestmark = pytest.mark.e2e

SETTINGS = {**TAGGER, "epochs": 1, "progress": False, "threads": 1}
SENTENCES = [["Anna", "visited", "New", "York", "."], ["Zoë", "left", "12x"], ["Bob"], ["Dan", "saw", "Rio", "."]]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("tag_export")
    ner_file(d / "train.txt", 24, seed=0)
    return d


@pytest.fixture(scope="module")
def crf_tagger(data):
    return tagging.train(data / "train.txt", out=str(data / "crf"), log=lambda _: None, **SETTINGS)


@pytest.fixture(scope="module")
def lm_tagger(data):
    """A softmax tagger reading every layer of two small character LMs (a one-layer GRU, a two-layer LSTM)."""
    lines = [" ".join(s.tokens) for s in read_tagged(data / "train.txt", "conll2003", "ner")]
    (data / "fwd.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (data / "bwd.txt").write_text("\n".join(line[::-1] for line in lines) + "\n", encoding="utf-8")
    quiet = {**LM, "max_steps": 2, "val_fraction": 0.1, "threads": 1, "pred_period": 0}
    rnnlm.train(data / "fwd.txt", out=str(data / "lms" / "forward"), log=lambda _: None, **quiet, cell="gru")
    bwd = {**quiet, "hidden": 10, "layers": 2, "cell": "lstm"}
    rnnlm.train(data / "bwd.txt", out=str(data / "lms" / "backward"), log=lambda _: None, **bwd)
    settings = {**SETTINGS, "char_lm": str(data / "lms"), "char_lm_layers": "all", "head": "softmax"}
    return tagging.train(data / "train.txt", out=str(data / "lm"), log=lambda _: None, **settings)


def float32_scratch(tagger: tagging.SequenceTagger) -> tagging.SequenceTagger:
    """The tagger (and its character LMs) on rnnlm's reference engine in float32: the other side of each check."""
    models = [tagger.model] + ([tagger.char_lm.forward.model, tagger.char_lm.backward.model] if tagger.char_lm else [])
    for model in models:
        for m in model.modules():
            if isinstance(m, RecurrentEncoder):
                m.engine, m.matmul_dtype = "scratch", "float32"
    return tagger


def rnnlm_scores(tagger: tagging.SequenceTagger, sentences: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """rnnlm's own scores of the sentences, padded as one batch, and their mask."""
    encoded = encode(tagger.encoder, sentences, None, tagger.config.data.max_word_chars, tagger.char_lm)
    batch = collate(encoded, list(range(len(sentences))))
    with torch.no_grad():
        return tagger.model(batch.words, batch.chars, batch.lengths, batch.lm), batch.mask


def sentences_of(batch: int, time: int) -> list[list[str]]:
    """``batch`` sentences of mixed lengths, the longest ``time`` words, with words the tagger never saw."""
    words = ["Anna", "visited", "New", "York", ".", "Zoë", "left", "the", "Oslo", "Rio", "7th", "UNSEEN"]
    g = torch.Generator().manual_seed(batch * 7 + time)
    lengths = mixed_lengths(batch, time).tolist()
    return [[words[int(i)] for i in torch.randint(0, len(words), (n,), generator=g)] for n in lengths]


def check(tagger: tagging.SequenceTagger, path) -> None:
    session = onnx_session(path)
    meta = core_export.read_metadata(path)
    float32_scratch(tagger)
    for batch, time in SHAPES:
        if tagger.char_lm is not None and time == 500:
            time = 60  # the character LMs read each sentence's characters: 60 words are already ~400 steps
        sentences = sentences_of(batch, time)
        want, mask = rnnlm_scores(tagger, sentences)
        got = torch.as_tensor(run_onnx(session, tag_export.prepare(meta, sentences))[0])
        assert_close([got[mask]], [want[mask]], f"batch {batch}, time {time}")  # padded rows score nothing


def test_the_onnx_crf_tagger_gives_rnnlm_s_scores_and_the_numpy_viterbi_its_tags(crf_tagger, tmp_path):
    path = crf_tagger.export(tmp_path / "t.onnx")
    check(crf_tagger, path)
    meta = core_export.read_metadata(path)
    scores = run_onnx(onnx_session(path), tag_export.prepare(meta, SENTENCES))[0]
    paths = tag_export.viterbi(scores, np.array([len(s) for s in SENTENCES]), meta["crf"])
    want = crf_tagger.tag(SENTENCES)  # in the file's scheme; the metadata's tags are the model's (BIOES)
    schemes = crf_tagger.schemes
    assert [schemes.to_file([meta["tags"][i] for i in p]) for p in paths] == want


def test_the_onnx_tagger_with_character_lm_features_gives_rnnlm_s_scores(lm_tagger, tmp_path):
    path = lm_tagger.export(tmp_path / "t.onnx")
    meta = core_export.read_metadata(path)
    assert set(meta["char_lm"]) == {"forward", "backward"} and meta["crf"] is None and meta["head"] == "softmax"
    assert meta["inputs_order"] == ["words", "chars", "lengths", *tag_export.LM_INPUTS]
    check(lm_tagger, path)


def test_the_numpy_viterbi_finds_the_crf_s_best_paths():
    torch.manual_seed(0)
    crf = CRF(5)
    for p in crf.parameters():
        torch.nn.init.normal_(p)
    scores = torch.randn(6, 9, 5)
    lengths = torch.tensor([9, 1, 4, 7, 2, 9])
    mask = torch.arange(9) < lengths[:, None]
    want, _ = crf.viterbi(scores, mask)
    params = {"transitions": crf.transitions.tolist(), "start": crf.start_transitions.tolist()}
    got = tag_export.viterbi(scores.numpy(), lengths.numpy(), {**params, "end": crf.end_transitions.tolist()})
    assert got == [row[:n] for row, n in zip(want.tolist(), lengths.tolist(), strict=True)]


def test_the_numpy_inputs_are_rnnlm_s_encoding(crf_tagger, tmp_path):
    meta = tag_export.metadata(crf_tagger.model, crf_tagger.encoder, crf_tagger.config, None, {})
    encoded = encode(crf_tagger.encoder, SENTENCES, None, crf_tagger.config.data.max_word_chars)
    batch = collate(encoded, list(range(len(SENTENCES))))
    feeds = tag_export.prepare(meta, SENTENCES)
    np.testing.assert_array_equal(feeds["words"], batch.words.numpy())
    np.testing.assert_array_equal(feeds["chars"], batch.chars.numpy())
    np.testing.assert_array_equal(feeds["lengths"], batch.lengths.numpy())


def test_a_tagger_that_pools_over_documents_is_refused_with_the_reason(crf_tagger, tmp_path):
    cfg = crf_tagger.config
    cfg.model.char_lm, cfg.model.char_lm_pool = "somewhere", "document"
    try:
        with pytest.raises(ConfigError, match="pools its character-LM features over documents"):
            tag_export.check_exportable(cfg)
    finally:
        cfg.model.char_lm, cfg.model.char_lm_pool = None, "none"


def test_the_exported_program_gives_rnnlm_s_scores(lm_tagger, tmp_path):
    """The tagger with character-LM features: every part a tagger can have but the CRF (which is not in a graph)."""
    tagger = float32_scratch(lm_tagger)
    path = tagger.export(tmp_path / "t.pt2", format="exported-program")
    meta = core_export.read_metadata(path)
    scores = program(path)
    for batch, time in ((1, 1), (3, 7), (17, 20)):  # 20 words: ~150 characters for the LMs' scan
        sentences = sentences_of(batch, time)
        want, mask = rnnlm_scores(tagger, sentences)
        feeds = {k: torch.from_numpy(v) for k, v in tag_export.prepare(meta, sentences).items()}
        with torch.no_grad():
            got = scores(*(feeds[k] for k in meta["inputs_order"]))
        assert_close([got[mask]], [want[mask]], f"batch {batch}, time {time}")


def test_an_ensemble_exports_its_mean_scores_and_mean_crf(crf_tagger, tmp_path):
    second = copy.deepcopy(crf_tagger.model)
    with torch.no_grad():
        for p in second.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ensemble = TaggerEnsemble([crf_tagger.model, second]).eval()
    cfg, enc = crf_tagger.config, crf_tagger.encoder
    path = tag_export.export_model(ensemble, enc, cfg, None, tmp_path / "e.onnx")
    meta = core_export.read_metadata(path)
    tagger = float32_scratch(tagging.SequenceTagger(ensemble, enc, cfg))
    want, mask = rnnlm_scores(tagger, SENTENCES)
    got = torch.as_tensor(run_onnx(onnx_session(path), tag_export.prepare(meta, SENTENCES))[0])
    assert_close([got[mask]], [want[mask]], "ensemble")
    torch.testing.assert_close(torch.tensor(meta["crf"]["transitions"]), ensemble.mean_head().crf.transitions.detach())
