"""Character-LM features (char_lm_features.py): the LMs' own states at the right places, batching that never
changes them, and a tagger that reads them from its run directory alone (API and ``rnnlm tag``)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import rnnlm
from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import CheckpointError
from rnnlm.recurrent.encoder import to_torch_state_dict
from rnnlm.recurrent.one_sequence import OneSequenceLSTM
from rnnlm.tagging import api as tagging
from rnnlm.tagging import char_lm_features
from rnnlm.tagging import encoding as tagged
from rnnlm.tagging.char_lm_features import DIRECTIONS, CharLMFeatures, pieces
from rnnlm.tagging.config import TaggerConfig
from rnnlm.tagging.encoding import TagEncoder, collate, encode, read_tagged
from rnnlm.tagging.model import Tagger
from tag_checks import run_cli
from tiny import LM, TAGGER, TAGGER_FLAGS, ner_file

QUIET = {**LM, "max_steps": 4, "val_fraction": 0.1, "threads": 1, "pred_period": 0}  # each LM sets its hidden
SENTENCES = [["Anna", "visited", "New", "York", "."], ["Zoë", "left"], ["Bob"], ["Dan", "Brown", "saw", "Rio", "."]]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    """A forward (hidden 12) and a backward (hidden 10) character LM, a few steps each; no 'ë' in their text."""
    d = tmp_path_factory.mktemp("charlm")
    ner_file(d / "sents.txt", 40, seed=3)
    lines = [" ".join(s.tokens) for s in read_tagged(d / "sents.txt", "conll2003", "ner")]
    (d / "fwd.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (d / "bwd.txt").write_text("\n".join(line[::-1] for line in lines) + "\n", encoding="utf-8")
    rnnlm.train(d / "fwd.txt", out=str(d / "lms" / "forward"), log=lambda _: None, **{**QUIET, "hidden": 12})
    rnnlm.train(d / "bwd.txt", out=str(d / "lms" / "backward"), log=lambda _: None, **{**QUIET, "hidden": 10})
    return d / "lms"


def engine_only(features: CharLMFeatures) -> CharLMFeatures:
    """The features through the LMs' engine alone, a text of one also (not through the C recurrence, which the
    last test compares with it): these tests check places and batching against the engine's own numbers."""
    features.forward.fast = features.backward.fast = False
    return features


def states_by_hand(lm, text: str) -> torch.Tensor:
    """The model's top-layer outputs over one string, (len(text), H); unknown characters read as a space."""
    ids = [lm.vocab.id_of(c) if c in lm.vocab else lm.vocab.id_of(" ") for c in text]
    with torch.no_grad():
        return lm.model.encode(torch.tensor([ids]))[0][0]


def test_features_are_the_lms_states_at_the_spaces_around_each_word(lm_dir):
    features = engine_only(CharLMFeatures.load(lm_dir))
    assert features.dim == 22 and features.forward.vocab.unk is None  # so 'ë' falls back to the space
    text = " Anna visited New York . "
    fwd, bwd = states_by_hand(features.forward, text), states_by_hand(features.backward, text[::-1])
    after = [5, 13, 17, 22, 24]  # the space after each word
    before = [0, 5, 13, 17, 22]  # the space before each word, read backward at len - 1 - i
    expected = torch.cat([fwd[after], bwd[[24 - i for i in before]]], dim=1)
    got = features([SENTENCES[0]])[0]
    assert got.dtype == np.float32 and got.shape == (5, 22)
    torch.testing.assert_close(torch.from_numpy(got), expected)
    # unknown characters (Z, ë) read as spaces; in the reversed string index i of s is at 9 - i
    fwd, bwd = states_by_hand(features.forward, " Zoë left "), states_by_hand(features.backward, " tfel ëoZ ")
    expected = torch.cat([fwd[[4, 9]], bwd[[9, 5]]], dim=1)
    torch.testing.assert_close(torch.from_numpy(features([SENTENCES[1]])[0]), expected)


def test_a_batch_gives_each_sentence_the_features_it_gets_alone(lm_dir):
    features = engine_only(CharLMFeatures.load(lm_dir, batch_size=3))
    batched = features(SENTENCES)
    features.batch_size = 1
    for sentence, got in zip(SENTENCES, batched, strict=True):
        np.testing.assert_allclose(got, features([sentence])[0], rtol=1e-5, atol=1e-6)
    assert [len(f) for f in batched] == [5, 2, 1, 5]


def test_pieces_keep_to_documents_and_to_the_character_limit():
    # Characters per sentence (words + one after each): 24, 9, 4, 20.
    assert pieces(SENTENCES, [0, 0, 0, 0], limit=20) == [range(0, 1), range(1, 3), range(3, 4)]
    assert pieces(SENTENCES, [0, 0, 0, 0], limit=10_000) == [range(0, 4)]
    assert pieces(SENTENCES, [0, 1, 1, 2], limit=10_000) == [range(0, 1), range(1, 3), range(3, 4)]
    assert pieces([], [], limit=5) == []


def test_document_context_reads_a_document_s_sentences_as_one_text(lm_dir):
    features = CharLMFeatures.load(lm_dir)
    got = features(SENTENCES, docs=["a", "a", "b", "b"])
    # Document "a" is read as one string, one sentence per line; "Zoë" reads as "Z" + "o" + space (no "ë").
    text = "\nAnna visited New York .\nZoë left\n"
    fwd, bwd = states_by_hand(features.forward, text), states_by_hand(features.backward, text[::-1])
    after, before = [5, 13, 17, 22, 24, 28, 33], [0, 5, 13, 17, 22, 24, 28]
    expected = torch.cat([fwd[after], bwd[[len(text) - 1 - i for i in before]]], dim=1)
    torch.testing.assert_close(torch.from_numpy(np.concatenate(got[:2])), expected)
    assert [len(f) for f in got] == [5, 2, 1, 5]
    text = "\nBob\nDan Brown saw Rio .\n"
    fwd, bwd = states_by_hand(features.forward, text), states_by_hand(features.backward, text[::-1])
    after, before = [4, 8, 14, 18, 22, 24], [0, 4, 8, 14, 18, 22]
    expected = torch.cat([fwd[after], bwd[[len(text) - 1 - i for i in before]]], dim=1)
    torch.testing.assert_close(torch.from_numpy(np.concatenate(got[2:])), expected)
    # The context changes what a word gets: "left" follows a sentence in its document, "Bob" precedes one.
    alone = features(SENTENCES, docs=[0, 1, 2, 3])
    assert not np.allclose(alone[1], got[1]) and not np.allclose(alone[2], got[2])
    with pytest.raises(ValueError, match="3 document ids for 4 sentences"):
        features(SENTENCES, docs=[0, 0, 1])


@pytest.mark.e2e
def test_all_layers_gives_each_layer_s_states_bottom_first(lm_dir, tmp_path):
    lms = tmp_path / "lms"
    shutil.copytree(lm_dir, lms)
    shutil.rmtree(lms / "forward")
    fwd = tmp_path / "fwd.txt"
    fwd.write_text("Anna visited New York .\nBob left\n" * 20, encoding="utf-8")
    rnnlm.train(
        fwd,
        out=str(lms / "forward"),
        log=lambda _: None,
        **{**QUIET, "hidden": 12, "layers": 2, "matmul_dtype": "float32"},
    )
    top, every = CharLMFeatures.load(lms), CharLMFeatures.load(lms, all_layers=True)
    assert (top.dim, every.dim) == (22, 34)  # forward 12 (top) or 12 + 12; the one-layer backward 10 either way
    got, want = every(SENTENCES), top(SENTENCES)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g[:, 12:24], w[:, :12], rtol=1e-5, atol=1e-6)  # the forward model's top layer
        np.testing.assert_allclose(g[:, 24:], w[:, 12:], rtol=1e-5, atol=1e-6)  # the backward model's only one
    # The bottom layer by an independent computation: torch.nn.LSTM with the layer-0 weights.
    lm = every.forward
    ref = torch.nn.LSTM(lm.model.encoder.input_size, 12, batch_first=True)
    sd = to_torch_state_dict(lm.model.encoder)
    ref.load_state_dict({k: v for k, v in sd.items() if k.endswith("_l0")})
    text = " Anna visited New York . "
    with torch.no_grad():
        bottom = ref(lm.model.input(torch.tensor([lm.ids(text)])))[0][0]
    torch.testing.assert_close(torch.from_numpy(got[0][:, :12]), bottom[[5, 13, 17, 22, 24]], rtol=1e-4, atol=1e-5)


POOL_SENTENCES = [["Anna", "saw", "Bob", "."], ["Bob", "left", "."], ["Anna", "met", "Anna", "."]]


def test_pooling_appends_each_word_s_mean_over_its_document(lm_dir):
    plain, pooled = CharLMFeatures.load(lm_dir), CharLMFeatures.load(lm_dir, pool=True)
    assert pooled.dim == 2 * plain.dim == 44
    docs = ["a", "a", "b"]
    for read_docs in (False, True):
        base = plain(POOL_SENTENCES, docs, read_docs=read_docs)
        got = pooled(POOL_SENTENCES, docs, read_docs=read_docs)
        for doc in ("a", "b"):  # by hand: every occurrence of the same string in the same document
            ks = [k for k, d in enumerate(docs) if d == doc]
            words = [(k, i, w) for k in ks for i, w in enumerate(POOL_SENTENCES[k])]
            for k, i, w in words:
                same = [base[k2][i2] for k2, i2, w2 in words if w2 == w]
                np.testing.assert_allclose(got[k][i, :22], base[k][i])
                np.testing.assert_allclose(got[k][i, 22:], np.mean(same, axis=0), rtol=1e-5, atol=1e-6)
    # "Bob" and "." are pooled across the two sentences of document a; Anna of document b is not pooled with a's.
    got = pooled(POOL_SENTENCES, docs, read_docs=False)
    np.testing.assert_allclose(got[0][2, 22:], got[1][0, 22:])
    assert not np.allclose(got[0][0, 22:], got[2][0, 22:])
    # Without document ids each sentence is its own document: only the third sentence's two "Anna" are pooled.
    alone, base = pooled(POOL_SENTENCES), plain(POOL_SENTENCES)
    np.testing.assert_allclose(alone[1][:, 22:], base[1], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(alone[2][0, 22:], (base[2][0] + base[2][2]) / 2, rtol=1e-5, atol=1e-6)


def test_feature_chunks_end_with_a_document_so_pooling_sees_all_of_it(lm_dir, monkeypatch):
    pooled = CharLMFeatures.load(lm_dir, pool=True)
    sentences = POOL_SENTENCES + [["Bob", "."]]
    docs = [0, 0, 0, 1]
    enc = TagEncoder.build(sentences, [["O"] * len(s) for s in sentences], True, True)
    calls = []
    monkeypatch.setattr(tagged, "FEATURE_CHUNK", 2)  # would cut document 0 after its second sentence
    data = encode(enc, sentences, None, 20, lambda *a, **k: calls.append(len(a[0])) or pooled(*a, **k), docs, False)
    assert calls == [3, 1]
    for s, whole in zip(data, pooled(sentences, docs, read_docs=False), strict=True):
        np.testing.assert_allclose(s.lm, whole, rtol=1e-3, atol=1e-3)  # float16 rounding


def test_long_texts_come_in_smaller_batches_with_the_same_states(lm_dir, monkeypatch):
    features = engine_only(CharLMFeatures.load(lm_dir, batch_size=4))
    docs = [0, 0, 1, 1]
    whole = features(SENTENCES, docs)
    seen = []
    encode = features.forward.model.encode
    monkeypatch.setattr(features.forward.model, "encode", lambda X: seen.append(X.shape) or encode(X))
    monkeypatch.setattr(char_lm_features, "BATCH_CHARS", 8)  # 4 x 8 characters: one piece of ~30 at a time
    for a, b in zip(features(SENTENCES, docs), whole, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert [shape[0] for shape in seen] == [1, 1]


def test_encoded_sentences_keep_float16_features_and_batches_pad_them_with_zeros(lm_dir, monkeypatch):
    features = CharLMFeatures.load(lm_dir)
    enc = TagEncoder.build(SENTENCES, [["O"] * len(s) for s in SENTENCES], True, True)
    monkeypatch.setattr(tagged, "FEATURE_CHUNK", 3)  # two chunks: 3 sentences, then 1
    data = encode(enc, SENTENCES, None, 20, features)
    for s, whole in zip(data, features(SENTENCES), strict=True):
        assert s.lm.dtype == np.float16
        np.testing.assert_allclose(s.lm, whole, rtol=1e-3, atol=1e-3)  # float16 rounding
    batch = collate(data, [0, 1, 2])
    assert batch.lm.dtype == torch.float32 and batch.lm.shape == (3, 5, 22)
    assert not batch.lm[1, 2:].any() and not batch.lm[2, 1:].any()
    torch.testing.assert_close(batch.lm[1, :2], torch.from_numpy(data[1].lm).float())
    assert collate(encode(enc, SENTENCES, None, 20), [0, 1]).lm is None


def test_a_tagger_without_char_lm_has_the_parameters_it_always_had():
    torch.manual_seed(0)
    model = Tagger(TaggerConfig(engine="fused", hidden=6, word_dim=5, char_dim=4, char_filters=3), 30, 12, 5)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {  # as printed by the tagger before char_lm existed, with the same seed
        "input.words.weight": (30, 5),
        "input.chars.embedding.weight": (12, 4),
        "input.chars.conv.weight": (3, 4, 3),
        "input.chars.conv.bias": (3,),
        "encoder.weight_ih_l0": (24, 8),
        "encoder.weight_hh_l0": (24, 6),
        "encoder.bias_l0": (24,),
        "encoder.weight_ih_l0_reverse": (24, 8),
        "encoder.weight_hh_l0_reverse": (24, 6),
        "encoder.bias_l0_reverse": (24,),
        "head.weight": (5, 12),
        "head.bias": (5,),
        "head.crf.transitions": (5, 5),
        "head.crf.start_transitions": (5,),
        "head.crf.end_transitions": (5,),
    }
    assert sum(float(v.double().sum()) for v in model.state_dict().values()) == pytest.approx(-4.60529677568411)


@pytest.mark.e2e
def test_a_run_made_before_char_lm_existed_still_loads(tmp_path):
    ner_file(tmp_path / "train.txt", 16, seed=0)
    settings = {**TAGGER, "epochs": 1, "progress": False, "threads": 1, "out": str(tmp_path / "run")}
    tagger = tagging.train(tmp_path / "train.txt", log=lambda _: None, **settings)
    assert tagger.char_lm is None and not (tmp_path / "run" / "char_lm").exists()
    config = json.loads((tmp_path / "run" / ckpt.CONFIG).read_text(encoding="utf-8"))
    del config["model"]["char_lm"]  # as an older rnnlm wrote it
    (tmp_path / "run" / ckpt.CONFIG).write_text(json.dumps(config), encoding="utf-8")
    assert tagging.load(tmp_path / "run").tag(SENTENCES) == tagger.tag(SENTENCES)


def test_a_tagger_with_char_lm_widens_only_the_first_input_weights():
    cfg = TaggerConfig(engine="fused", hidden=6, word_dim=5, char_dim=4, char_filters=3, char_lm="lms")
    model = Tagger(cfg, 30, 12, 5, lm_dim=22)
    assert model.state_dict()["encoder.weight_ih_l0"].shape == (24, 8 + 22)
    with pytest.raises(ValueError, match="width 22, got none"):
        model(torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2, 1, dtype=torch.long), torch.tensor([2]))
    with pytest.raises(ValueError, match="needs lm_dim"):
        Tagger(cfg, 30, 12, 5)


@pytest.mark.e2e
def test_a_tagger_run_reads_its_own_copy_of_the_lms(lm_dir, tmp_path):
    ner_file(tmp_path / "train.txt", 32, seed=0)
    ner_file(tmp_path / "dev.txt", 8, seed=1)
    lms = tmp_path / "lms"
    shutil.copytree(lm_dir, lms)
    settings = {**TAGGER, "epochs": 2, "progress": False, "threads": 1}
    files = {"data": tmp_path / "train.txt", "dev": str(tmp_path / "dev.txt"), "out": str(tmp_path / "run")}
    tagger = tagging.train(**files, char_lm=str(lms), log=lambda _: None, **settings)
    copy = tmp_path / "run" / "char_lm"
    assert sorted(p.name for p in (copy / "forward").iterdir()) == [ckpt.BEST, ckpt.CONFIG, ckpt.VOCAB]
    original = CharLMFeatures.load(lms)
    tagger.char_lm = original  # "before": the tagger reading the folder it was trained from
    before = tagger.tag(SENTENCES)
    shutil.move(lms, tmp_path / "elsewhere")
    loaded = tagging.load(tmp_path / "run")
    assert loaded.tag(SENTENCES) == before
    for a, b in zip(loaded.char_lm(SENTENCES), original(SENTENCES), strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.config.model.char_lm == str(lms)  # where the LMs came from; the run reads its copy
    resumed = tagging.train(resume=tmp_path / "run", epochs=3, log=lambda _: None)  # also from the copy
    assert resumed.checkpoint["epoch"] in ("2", "3")


class Spy:
    """Character-LM features that record the document ids each call is given."""

    def __init__(self, features: CharLMFeatures) -> None:
        self.features, self.docs, self.read = features, [], []

    @property
    def dim(self) -> int:
        return self.features.dim

    def __call__(self, sentences, docs=None, read_docs=None):
        self.docs.append(None if docs is None else list(docs))
        self.read.append(read_docs)
        return self.features(sentences, docs, read_docs)


@pytest.mark.e2e
def test_a_document_context_tagger_reads_documents_in_eval_and_predict(lm_dir, tmp_path):
    ner_file(tmp_path / "train.txt", 24, seed=0)
    ner_file(tmp_path / "dev.txt", 6, seed=1)
    text = (tmp_path / "dev.txt").read_text(encoding="utf-8").split("\n\n")
    (tmp_path / "dev.txt").write_text("\n\n".join(text[:4] + ["-DOCSTART- -X- -X- O"] + text[4:]), encoding="utf-8")
    settings = {**TAGGER, "epochs": 1, "progress": False, "threads": 1, "char_lm": str(lm_dir)}
    files = {"data": tmp_path / "train.txt", "dev": str(tmp_path / "dev.txt"), "out": str(tmp_path / "run")}
    tagger = tagging.train(**files, char_lm_context="document", log=lambda _: None, **settings)
    tagger = tagging.load(tmp_path / "run")
    assert tagger.config.model.char_lm_context == "document"
    tagger.char_lm = spy = Spy(tagger.char_lm)
    tagger.tag(SENTENCES)
    tagger.tag(SENTENCES, docs=[0, 0, 1, 1])
    tagger.tag_text("Anna visited New York .\nZoë left\n\n\nBob\n", tokenized=True)
    tagger.evaluate(tmp_path / "dev.txt")  # -DOCSTART- opens dev's sentences 1-3 and then 4-6
    assert spy.docs == [[0, 1, 2, 3], [0, 0, 1, 1], [0, 0, 1], [0, 0, 0, 1, 1, 1]]
    # The same calls give each sentence its own document when the tagger was trained on sentences alone.
    tagger.config.model.char_lm_context = "sentence"
    tagger.tag(SENTENCES, docs=[0, 0, 1, 1])
    assert spy.docs[-1] is None


@pytest.mark.e2e
def test_a_pooling_tagger_pools_over_documents_but_reads_sentences_alone(lm_dir, tmp_path):
    ner_file(tmp_path / "train.txt", 24, seed=0)
    ner_file(tmp_path / "dev.txt", 6, seed=1)
    settings = {**TAGGER, "epochs": 1, "progress": False, "threads": 1, "char_lm": str(lm_dir)}
    files = {"data": tmp_path / "train.txt", "dev": str(tmp_path / "dev.txt"), "out": str(tmp_path / "run")}
    trained = tagging.train(**files, char_lm_pool="document", log=lambda _: None, **settings)
    tagger = tagging.load(tmp_path / "run")
    assert tagger.char_lm.pool and tagger.model.input.lm_dim == 44  # 22 per word, and their document means
    assert tagger.tag(SENTENCES) == trained.tag(SENTENCES)
    tagger.char_lm = spy = Spy(tagger.char_lm)
    tagger.tag(SENTENCES, docs=[0, 0, 1, 1])
    tagger.tag(SENTENCES)
    assert spy.docs == [[0, 0, 1, 1], [0, 1, 2, 3]] and spy.read == [False, False]


@pytest.mark.e2e
def test_cli_train_eval_predict_with_char_lm(lm_dir, tmp_path):
    ner_file(tmp_path / "train.txt", 32, seed=0)
    ner_file(tmp_path / "dev.txt", 8, seed=1)
    lms = tmp_path / "lms"
    shutil.copytree(lm_dir, lms)
    run = tmp_path / "run"
    log = run_cli("tag", "train", str(tmp_path / "train.txt"), "--dev", str(tmp_path / "dev.txt"), *TAGGER_FLAGS,
                  "--epochs", "2", "--char-lm", str(lms), "--char-lm-context", "document",
                  "--out", str(run))  # fmt: skip
    assert "char LM features: 22 per word" in log and "document context" in log
    shutil.rmtree(lms)
    scores = json.loads(run_cli("tag", "eval", str(run), str(tmp_path / "dev.txt")))
    assert scores["sentences"] == 8 and 0 <= scores["f1"] <= 100
    (tmp_path / "in.txt").write_text("Anna visited New York .\nZoë left\n", encoding="utf-8")
    lines = run_cli("tag", "predict", str(run), str(tmp_path / "in.txt"), "--tokenized", "--json").splitlines()
    assert [json.loads(line)["tokens"] for line in lines] == SENTENCES[:2]
    info = json.loads(run_cli("info", str(run), "--json"))  # the frozen LMs are counted apart, from the run's copy
    lm_parameters = [json.loads(run_cli("info", str(lm_dir / d), "--json"))["parameters"] for d in DIRECTIONS]
    assert info["char_lm_parameters"] == sum(lm_parameters) and info["parameters"] > 0
    assert "character-LM features (document context, top layers)" in run_cli("info", str(run))
    shutil.rmtree(run / "char_lm")
    with pytest.raises(CheckpointError, match="char_lm is missing"):
        tagging.load(run)
    info = json.loads(run_cli("info", str(run), "--json"))  # still described, the missing copy named in place
    assert "char_lm is missing" in info["parameters"]["error"] and info["best"]["step"] > 0


def test_one_text_at_a_time_through_the_c_recurrence_gives_the_engines_features(lm_dir):
    features = CharLMFeatures.load(lm_dir, batch_size=1)  # every batch one text: the fast path's case
    fast = features(SENTENCES), features(SENTENCES, [0, 0, 1, 1])
    if OneSequenceLSTM.for_encoder(features.forward.model.encoder) is None:
        pytest.skip("no C compiler here: the fast path is off")
    features.forward.fast = features.backward.fast = False
    reference = features(SENTENCES), features(SENTENCES, [0, 0, 1, 1])
    # bfloat16 matmuls where the CPU has them: h rounded to bfloat16 at each step, the sums in another order
    tol = 3e-2 if features.forward.model.encoder.matmul_dtype == "bfloat16" else 1e-5
    for got, want in zip([*fast[0], *fast[1]], [*reference[0], *reference[1]], strict=True):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
