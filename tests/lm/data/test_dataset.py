"""From a DataConfig to encoded splits: sources, preprocessing, validation splits, vocabularies, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rnnlm.core.errors import CorpusNotFoundError, DataError, VocabError
from rnnlm.core.vocab import Vocab
from rnnlm.lm.config import DataConfig
from rnnlm.lm.data import corpora as corpora_module
from rnnlm.lm.data import fetch as fetch_module
from rnnlm.lm.data.batching import BatchSampler
from rnnlm.lm.data.dataset import load_corpus, load_texts, split_tail

ENGLISH = "The quick brown fox jumps over the lazy dog.\nPack my box with five dozen liquor jugs.\n" * 20
CHINESE = "分开 不分开\n我不能再想 我不 我不 我不能\n爱情来的太快就像龙卷风\n" * 20


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


@pytest.mark.parametrize("text", [ENGLISH, CHINESE])
@pytest.mark.parametrize("level", ["char", "word"])
def test_round_trip_through_train_and_validation(tmp_path: Path, text: str, level: str) -> None:
    path = write(tmp_path / "t.txt", text)
    corpus = load_corpus(DataConfig(paths=[str(path)], level=level, val_fraction=0.25))
    assert corpus.level == level and corpus.test is None
    assert corpus.vocab.decode(corpus.train) + corpus.vocab.decode(corpus.val) == text
    assert corpus.train.dtype == np.uint16


def test_d2l_jaychou_preprocessing_gives_1027_characters(shared_data: Path) -> None:
    cfg = DataConfig(
        paths=[str(shared_data / "jaychou_lyrics.txt")], newlines="space", max_chars=10_000, val_fraction=0.0
    )
    corpus = load_corpus(cfg)
    assert len(corpus.vocab) == 1027 and corpus.vocab.unk is None
    assert len(corpus.train) == 10_000 and corpus.val is None
    assert "\n" not in corpus.vocab and " " in corpus.vocab


@pytest.mark.e2e  # reads PTB's training file (5 MB)
def test_ptb_gives_the_10000_word_vocabulary(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The Mikolov training file has 9,999 word types (its own <unk> among them); <eos> makes 10,000.
    monkeypatch.setenv("RNNLM_DATA", str(shared_data))
    corpus = load_corpus(DataConfig(corpus="ptb"))
    assert corpus.level == "word"  # the corpus's own level
    assert len(corpus.vocab) == 10_000 and corpus.vocab.tokens[:3] == ["<unk>", "<eos>", "the"]
    assert (len(corpus.train), len(corpus.val), len(corpus.test)) == (929_589, 73_760, 82_430)
    assert "corpus ptb" in corpus.description and "valid split" in corpus.description


@pytest.mark.e2e  # reads PTB's training file (5 MB)
def test_ptb_char_default_level_gives_about_50_symbols(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNLM_DATA", str(shared_data))
    texts, level, _ = load_texts(DataConfig(corpus="ptb-char"))
    assert level == "word"
    vocab = Vocab.build(texts["train"], level)
    assert len(vocab) == 51  # 49 symbols ("_" between words, letters, digits, ...) + <unk> + <eos>


def test_python_docs_is_the_default_and_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RNNLM_DATA", raising=False)
    monkeypatch.setenv("RNNLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fetch_module.urllib.request, "urlopen", lambda *a, **k: pytest.fail("network used"))
    corpus = load_corpus(DataConfig())
    assert corpus.level == "char" and "python-docs" in corpus.description
    assert len(corpus.train) > 300_000 and len(corpus.val) > 30_000  # the 10% tail
    assert not (tmp_path / "cache").exists()


def test_paths_and_corpus_combine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpora_module, "python_docs_text", lambda: "docs text")
    extra = write(tmp_path / "extra.txt", "my text")
    texts, level, description = load_texts(DataConfig(paths=[str(extra)], corpus="python-docs", val_fraction=0))
    assert texts == {"train": "docs text\nmy text"} and level == "char"
    assert "corpus python-docs" in description and "extra.txt" in description


def test_newlines_then_max_chars_then_validation_tail(tmp_path: Path) -> None:
    path = write(tmp_path / "t.txt", "ab\ncd\r\nef\ngh\n")
    texts, _, _ = load_texts(DataConfig(paths=[str(path)], newlines="space", max_chars=8, val_fraction=0.25))
    assert texts == {"train": "ab cd ", "valid": "ef"}
    texts, _, _ = load_texts(DataConfig(paths=[str(path)], max_chars=5, val_fraction=0))
    assert texts == {"train": "ab\ncd"}


def test_val_and_test_paths(tmp_path: Path) -> None:
    train = write(tmp_path / "train.txt", "abc\n")
    val = write(tmp_path / "val.txt", "cab\nd")
    test = write(tmp_path / "test.txt", "ba\n")
    cfg = DataConfig(paths=[str(train)], val_paths=[str(val)], test_paths=[str(test)], newlines="space")
    texts, _, _ = load_texts(cfg)
    assert texts == {"train": "abc ", "valid": "cab d", "test": "ba "}
    corpus = load_corpus(cfg)  # the char vocabulary covers validation and test text too
    assert corpus.vocab.tokens == [" ", "a", "b", "c", "d"]
    assert corpus.vocab.decode(corpus.val) == "cab d" and corpus.vocab.decode(corpus.test) == "ba "


def test_word_level_split_lands_on_a_line_end() -> None:
    text = "".join(f"line {i} has words\n" for i in range(10))
    train, val = split_tail(text, 0.3, "word")
    assert train.endswith("\n") and train + val == text and val.startswith("line ")
    train, val = split_tail("one two three four five six seven eight", 0.3, "word")
    assert train.endswith(" ") and val == "six seven eight"[-len(val) :] and not val.startswith(" ")
    assert split_tail(text, 0, "char") == (text, None)
    with pytest.raises(DataError, match="val-fraction"):
        split_tail(text, 1.0, "char")
    with pytest.raises(DataError, match="too short"):
        split_tail("a", 0.5, "char")


def test_given_vocab_is_used_for_resume(tmp_path: Path) -> None:
    path = write(tmp_path / "t.txt", "abcabc")
    vocab = Vocab.build("abcdef", "char")
    corpus = load_corpus(DataConfig(paths=[str(path)], val_fraction=0), vocab=vocab)
    assert corpus.vocab is vocab and corpus.train.tolist() == [0, 1, 2, 0, 1, 2]
    with pytest.raises(DataError, match="conflicts with the model's char-level vocabulary"):
        load_corpus(DataConfig(paths=[str(path)], level="word"), vocab=vocab)
    write(path, "abz")
    with pytest.raises(VocabError, match="'z'"):
        load_corpus(DataConfig(paths=[str(path)], val_fraction=0), vocab=vocab)


def test_word_vocab_options_reach_the_builder(tmp_path: Path) -> None:
    path = write(tmp_path / "t.txt", "a a a b b c\n" * 3)
    corpus = load_corpus(DataConfig(paths=[str(path)], level="word", min_freq=4, val_fraction=0))
    assert corpus.vocab.tokens == ["<unk>", "<eos>", "a", "b"]
    assert corpus.vocab.decode(corpus.train[:7]) == "a a a b b <unk>\n"


# -- errors ---------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.txt: no such file or directory"):
        load_corpus(DataConfig(paths=[str(tmp_path / "nope.txt")]))


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty.txt is empty"):
        load_corpus(DataConfig(paths=[str(write(tmp_path / "empty.txt", b""))]))


def test_binary_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="binary file .*offset 3"):
        load_corpus(DataConfig(paths=[str(write(tmp_path / "x.txt", b"abc\x00def"))]))


def test_non_utf8_file_gives_byte_offset(tmp_path: Path) -> None:
    gbk = "ok\n你好".encode("gbk")
    with pytest.raises(DataError, match=r"gbk.txt is not valid UTF-8: the bytes 0xc4 at byte offset 3 \(line 2\)") as e:
        load_corpus(DataConfig(paths=[str(write(tmp_path / "gbk.txt", gbk))]))
    assert "bytes from there: c4 e3 ba c3" in str(e.value)


def test_whitespace_only_word_text(tmp_path: Path) -> None:
    with pytest.raises((DataError, VocabError), match="without words|no tokens"):
        load_corpus(DataConfig(paths=[str(write(tmp_path / "w.txt", "   "))], level="word", val_fraction=0))


def test_unknown_corpus() -> None:
    with pytest.raises(CorpusNotFoundError, match="unknown corpus 'wiki-103'.*ptb"):
        load_corpus(DataConfig(corpus="wiki-103"))


def test_bad_options(tmp_path: Path) -> None:
    path = str(write(tmp_path / "t.txt", "some text\n"))
    with pytest.raises(DataError, match="max-chars"):
        load_texts(DataConfig(paths=[path], max_chars=0))
    with pytest.raises(DataError, match="newlines"):
        load_texts(DataConfig(paths=[path], newlines="drop"))


def test_corpus_shorter_than_one_batch(tmp_path: Path) -> None:
    corpus = load_corpus(DataConfig(paths=[str(write(tmp_path / "short.txt", "tiny text\n"))], val_fraction=0))
    with pytest.raises(DataError, match=r"has 10 tokens.*needs at least 2,080.*--batch-size or --seq-len"):
        BatchSampler(corpus.train, batch_size=32, seq_len=64, sampling="sequential", random_offset=False, seed=0)
