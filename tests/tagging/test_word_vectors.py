"""Pretrained word vectors: the reader (formats, normalization, errors) and a tagger run started from them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rnnlm.core.errors import ConfigError, DataError
from rnnlm.tagging import api as tagging
from rnnlm.tagging.encoding import normalize_word
from rnnlm.tagging.word_vectors import read_word_vectors, unit_rms
from tag_checks import run_cli
from tiny import TAGGER, TAGGER_FLAGS, ner_file


def lower(w: str) -> str:
    return normalize_word(w, True, True)


def test_reads_word2vec_with_header_and_glove_without(tmp_path):
    body = "the 0.5 -1 2\nParis 1e-1 0 3\n"
    (tmp_path / "w2v.txt").write_text("2 3\n" + body, encoding="utf-8")
    (tmp_path / "glove.txt").write_text(body, encoding="utf-8")
    for name in ("w2v.txt", "glove.txt"):
        words, vectors = read_word_vectors(tmp_path / name)
        assert words == ["the", "Paris"]
        np.testing.assert_array_equal(vectors, np.array([[0.5, -1, 2], [0.1, 0, 3]], dtype=np.float32))


def test_a_word_is_everything_before_the_last_dim_values(tmp_path):
    """glove.840B.300d has words with spaces (``. . .``, ``at name@domain.com``): the vector is the last D
    values of the line, D from the header or else from the first line."""
    body = "the 0.5 -1 2\n. . . 1 2 3\nat name@domain.com 4 5 6\nParis 7 8 9\n"
    (tmp_path / "glove.txt").write_text(body, encoding="utf-8")
    (tmp_path / "w2v.txt").write_text("3 3\nNew York 1 1 1\n" + body, encoding="utf-8")
    words, vectors = read_word_vectors(tmp_path / "glove.txt")
    assert words == ["the", ". . .", "at name@domain.com", "Paris"]
    assert vectors.tolist() == [[0.5, -1, 2], [1, 2, 3], [4, 5, 6], [7, 8, 9]]
    words, vectors = read_word_vectors(tmp_path / "w2v.txt", lower)
    assert words == ["new_york", "the", "._._.", "at_name@domain.com", "paris"]  # spaces as the tagger's lookup
    assert vectors[0].tolist() == [1, 1, 1] and vectors[2].tolist() == [1, 2, 3]


def test_gzip_normalization_first_spelling_wins_and_limit(tmp_path):
    path = tmp_path / "v.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("Apple 1 1\napple 2 2\nYear1999 3 3\nBanana 4 4\n")
    words, vectors = read_word_vectors(path, lower)
    assert words == ["apple", "year0000", "banana"]
    assert vectors[0].tolist() == [1, 1]  # the first spelling's vector, not the second's
    words, _ = read_word_vectors(path, lower, limit=2)
    assert words == ["apple", "year0000"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("a 1 2 3\nb 1 2\n", "line 2: 'b 1 2': 2 values where the file has 3 dimensions"),
        ("2 3\na b 1 2\n", "line 2: 'a b 1 2': the vector holds a value that is not a number"),
        ("a 1 2\nb 1 x\n", "line 2: 'b 1 x': the vector holds a value that is not a number"),
        ("a 1 2\nlonely\n", "line 2: 'lonely': expected a word and its vector"),
        ("a 1 nan\n", "line 1: 'a 1 nan': the vector holds inf or nan"),
        ("\n\n", "no word vectors in the file"),
    ],
)
def test_bad_files_name_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=str(path)) as e:
        read_word_vectors(path)
    assert message in str(e.value)


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(DataError, match="no such word-vectors file"):
        read_word_vectors(tmp_path / "absent.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 1 2\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_word_vectors(tmp_path / "latin1.txt")


def test_unit_rms_scales_every_vector_by_one_factor():
    v = np.array([[3.0, 4.0], [0.0, 0.0], [6.0, 8.0]], dtype=np.float32)
    out = unit_rms(v)
    assert np.sqrt((out**2).sum(1).mean()) == pytest.approx(1.0)
    np.testing.assert_allclose(out * np.sqrt((v**2).sum(1).mean()), v, rtol=1e-6)


def vectors_file(path: Path, dim: int) -> dict[str, np.ndarray]:
    """Vectors for two training words (one in another case), one word training never saw, and <unk>."""
    rng = np.random.default_rng(0)
    table = {w: rng.normal(size=dim).astype(np.float32) for w in ("paris", "OSLO", "berlin", "<unk>")}
    lines = [f"{len(table)} {dim}"] + [w + " " + " ".join(f"{x:.6f}" for x in v) for w, v in table.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return table


@pytest.mark.e2e
def test_a_run_starts_from_the_vectors_and_adds_their_words(tmp_path):
    ner_file(tmp_path / "train.txt", 30, seed=0)
    table = vectors_file(tmp_path / "v.txt", TAGGER["word_dim"])
    settings = dict(TAGGER, epochs=1, progress=False, seed=3, lr=1e-9, out=str(tmp_path / "run"))
    tagger = tagging.train(str(tmp_path / "train.txt"), word_vectors=str(tmp_path / "v.txt"), **settings)
    words = tagger.encoder.words
    assert "berlin" in words.token_to_id  # a word of the file that training never saw joins the vocabulary
    assert words.tokens.count("<unk>") == 1 and words.id_of("<unk>") == 0  # the file's <unk> is not added
    # lr 1e-9: the embeddings are still (nearly) the starting ones, the file's vectors scaled by one common factor
    weight = tagger.model.input.words.weight.detach()
    rows = {w: weight[words.id_of(w)].numpy() for w in ("paris", "oslo", "berlin")}
    scaled = unit_rms(np.stack([table["paris"], table["OSLO"], table["berlin"]]))  # <unk> dropped before scaling
    for i, w in enumerate(("paris", "oslo", "berlin")):
        np.testing.assert_allclose(rows[w], scaled[i], atol=1e-6)
    # the word never seen in training is read through its own vector, not as <unk>
    assert tagger.encoder.encode_words(["Berlin"]).tolist() == [words.id_of("berlin")]
    # and the vocabulary and the embeddings travel in the run directory
    again = tagging.load(tagger.run_dir)
    assert again.encoder.words.tokens == words.tokens
    torch.testing.assert_close(again.model.input.words.weight, tagger.model.input.words.weight)
    saved = load_file(str(Path(tagger.run_dir) / "last.safetensors"))
    assert saved["input.words.weight"].shape[0] == len(words)


def test_the_dimension_must_match_word_dim(tmp_path):
    ner_file(tmp_path / "train.txt", 10, seed=0)
    vectors_file(tmp_path / "v.txt", TAGGER["word_dim"] + 1)
    with pytest.raises(ConfigError, match=r"17-dimensional vectors but --word-dim is 16; pass --word-dim 17"):
        tagging.train(
            str(tmp_path / "train.txt"),
            word_vectors=str(tmp_path / "v.txt"),
            out=str(tmp_path / "run"),
            epochs=1,
            **TAGGER,
        )
    assert not (tmp_path / "run").exists()  # a run that never started leaves nothing behind


@pytest.mark.e2e
def test_cli_flags_and_resume_without_the_file(tmp_path):
    ner_file(tmp_path / "train.txt", 30, seed=0)
    vectors_file(tmp_path / "v.txt", TAGGER["word_dim"])
    run = tmp_path / "run"
    run_cli(
        "tag", "train", str(tmp_path / "train.txt"), "--word-vectors", str(tmp_path / "v.txt"),
        "--vector-words", "2", "--epochs", "1", "--out", str(run), *TAGGER_FLAGS,
    )  # fmt: skip
    vocab = json.loads((run / "vocab.json").read_text(encoding="utf-8"))
    tokens = vocab["tokens"] if isinstance(vocab, dict) else vocab
    assert "paris" in tokens and "berlin" not in tokens  # --vector-words 2: only the file's first two words
    (tmp_path / "v.txt").unlink()  # a resumed run reads its own checkpoint, never the vectors file again
    run_cli("tag", "train", "--resume", str(run), "--epochs", "2", "--no-progress")
    assert len((run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()) == 2
