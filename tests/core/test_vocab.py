"""The vocabulary: deterministic ids, encode/decode round trips, unknown tokens, JSON persistence."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnlm.core.errors import VocabError
from rnnlm.core.vocab import EOS, UNK, Vocab

ENGLISH = "The quick brown fox\njumps over the lazy dog.\nThe dog sleeps.\n"
CHINESE = "分开 不分开\n我不能再想 我不 我不 我不能\n爱情来的太快就像龙卷风\n"


def test_char_ids_sorted_by_code_point() -> None:
    v = Vocab.build("baca\n", "char")
    assert v.tokens == ["\n", "a", "b", "c"]
    assert v.unk is None and len(v) == 4 and "a" in v and "z" not in v
    assert v.id_of("c") == 3 and v.token_to_id["b"] == 2
    assert v.encode("cab\n").tolist() == [3, 1, 2, 0]


def test_char_min_freq_and_max_size_add_unk() -> None:
    text = "aaaabbbcc d"  # counts: a4 b3 c2 ' '1 d1
    v = Vocab.build(text, "char", min_freq=2)
    assert v.tokens == [UNK, "a", "b", "c"] and v.unk == UNK
    assert v.encode("abd").tolist() == [1, 2, 0]
    v = Vocab.build(text, "char", max_size=3)  # <unk> + the two most frequent, then sorted by code point
    assert v.tokens == [UNK, "a", "b"]
    assert Vocab.build("cba", "char", max_size=2).tokens == [UNK, "a"]  # tie broken by code point


def test_char_vocab_from_several_texts_matches_one() -> None:
    assert Vocab.build(["ab", "cb"], "char") == Vocab.build("abcb", "char")


def test_char_encode_matches_naive_lookup_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rnnlm.core.vocab._CHUNK", 7)  # force many chunks
    text = CHINESE * 3 + "😀 é"
    v = Vocab.build(text, "char")
    ids = v.encode(text)
    assert ids.dtype == np.uint16
    assert ids.tolist() == [v.tokens.index(c) for c in text]
    assert v.decode(ids) == text


@pytest.mark.parametrize("text", [ENGLISH, CHINESE, "", "no newline at end"])
def test_round_trip_char_and_word(text: str) -> None:
    for level in ("char", "word"):
        v = Vocab.build(ENGLISH + CHINESE + "no newline at end", level)
        assert v.decode(v.encode(text)) == text


def test_word_ids_specials_then_frequency_then_string() -> None:
    v = Vocab.build("b a c\nc b\nc x <unk>\n", "word")
    # counts: c3 b2 a1 x1; the corpus's own <unk> is our <unk>
    assert v.tokens == [UNK, EOS, "c", "b", "a", "x"]
    assert v.encode("c <unk> q\nb").tolist() == [2, 0, 0, 1, 3]
    assert v.id_of("never seen") == 0


def test_word_eos_follows_every_line_end_only() -> None:
    v = Vocab.build("a b\n\nc", "word")
    assert v.encode("a b\n\nc").tolist() == [v.id_of(t) for t in ["a", "b", EOS, EOS, "c"]]
    assert v.encode("  a\tb  \n").tolist() == [v.id_of(t) for t in ["a", "b", EOS]]


def test_word_min_freq_and_max_size() -> None:
    text = "a a a b b c\n"
    assert Vocab.build(text, "word", min_freq=2).tokens == [UNK, EOS, "a", "b"]
    assert Vocab.build(text, "word", max_size=3).tokens == [UNK, EOS, "a"]


def test_word_encode_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    text = ENGLISH * 5
    v = Vocab.build(text, "word")
    whole = v.encode(text)
    monkeypatch.setattr("rnnlm.core.vocab._CHUNK", 3)
    assert v.encode(text).tolist() == whole.tolist()
    assert Vocab.build(text, "word") == v


def test_decode_accepts_lists_arrays_and_tensors() -> None:
    v = Vocab.build("ab", "char")
    assert v.decode([1, 0]) == v.decode(np.array([1, 0], dtype=np.uint16)) == v.decode(torch.tensor([1, 0])) == "ba"
    with pytest.raises(VocabError, match="id 2 is outside"):
        v.decode([2])
    with pytest.raises(VocabError, match="id -1 is outside"):
        v.decode(torch.tensor([-1]))


def test_unknown_char_without_unk_names_tokens_and_counts() -> None:
    v = Vocab.build("abc", "char")
    with pytest.raises(VocabError) as e:
        v.encode("abxyxz")
    msg = str(e.value)
    assert "3 distinct" in msg and "'x' (x2)" in msg and "'y' (x1)" in msg and "vocabulary lacks" in msg
    with pytest.raises(VocabError, match="'q'"):
        v.id_of("q")


def test_unknown_error_shows_at_most_ten() -> None:
    v = Vocab.build("a", "char")
    with pytest.raises(VocabError, match="and 16 more"):
        v.encode("bcdefghijklmnopqrstuvwxyz0")


def test_word_vocab_without_unk_rejects_unknown_words() -> None:
    v = Vocab([EOS, "a"], "word")
    assert v.encode("a\n").tolist() == [1, 0]
    with pytest.raises(VocabError, match="'zz' \\(x2\\)"):
        v.encode("a zz zz")


def test_dtype_grows_past_65536_tokens() -> None:
    words = [f"w{i}" for i in range(65535)]
    v = Vocab([UNK, EOS, *words], "word", unk=UNK)
    assert len(v) == 65537 and v.dtype == np.uint32
    assert v.encode("w65534\n").tolist() == [65536, 1]
    assert Vocab([UNK, EOS, *words[:-1]], "word", unk=UNK).dtype == np.uint16


def test_save_load_round_trip_is_utf8_json(tmp_path: Path) -> None:
    v = Vocab.build(CHINESE, "char", min_freq=2)
    path = tmp_path / "vocab.json"
    v.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]  # the atomic write left no temporary file
    raw = path.read_text(encoding="utf-8")
    assert "不" in raw  # ensure_ascii=False: readable, not \\u escapes
    assert json.loads(raw)["tokens"] == v.tokens
    assert Vocab.load(path) == v
    assert Vocab.from_dict(v.to_dict()) == v


def test_load_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(VocabError, match="missing.json does not exist"):
        Vocab.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(VocabError, match="bad.json"):
        Vocab.load(bad)
    bad.write_text(json.dumps({"level": "char", "tokens": ["a", "a"]}), encoding="utf-8")
    with pytest.raises(VocabError, match="bad.json: the vocabulary repeats tokens"):
        Vocab.load(bad)


@pytest.mark.parametrize(
    ("d", "match"),
    [
        ([], "JSON object"),
        ({"tokens": ["a"]}, "lacks the keys"),
        ({"level": "bytes", "tokens": ["a"]}, "unknown token level"),
        ({"level": "byte", "tokens": ["a"]}, "256 byte values"),
        ({"level": "char", "tokens": []}, "at least one token"),
        ({"level": "char", "tokens": ["ab"]}, "single characters"),
        ({"level": "char", "tokens": ["a", 3]}, "non-empty string"),
        ({"level": "char", "tokens": ["a"], "unk": "<unk>"}, "not among the tokens"),
        ({"level": "word", "tokens": ["a"]}, "needs the <eos>"),
        ({"level": "word", "tokens": ["<eos>", "a b"]}, "whitespace"),
        ({"level": "char", "tokens": ["a"], "format": "other"}, "unsupported vocabulary format"),
    ],
)
def test_from_dict_rejects_malformed(d: object, match: str) -> None:
    with pytest.raises(VocabError, match=match):
        Vocab.from_dict(d)


def test_build_rejects_bad_arguments() -> None:
    with pytest.raises(VocabError, match="empty text"):
        Vocab.build("", "char")
    with pytest.raises(VocabError, match="without words"):
        Vocab.build("", "word")
    with pytest.raises(VocabError, match="min_freq"):
        Vocab.build("a", "char", min_freq=0)
    with pytest.raises(VocabError, match="max_size"):
        Vocab.build("a", "char", max_size=1)
    with pytest.raises(VocabError, match="unknown token level"):
        Vocab.build("a", "token")


def test_char_counts_agree_with_counter() -> None:
    # The vectorised bincount path against a plain Counter.
    text = (CHINESE + ENGLISH) * 2 + "z"
    counts = Counter(text)
    v = Vocab.build(text, "char", min_freq=4)
    assert v.tokens == [UNK, *sorted(c for c, n in counts.items() if n >= 4)]
    assert Vocab.build(text, "char").tokens == sorted(counts)


def test_decode_after_continues_with_the_right_separator():
    words = Vocab.build("a b\nc a\n", level="word")
    ids = words.encode("a b\nc").tolist()
    assert words.decode_after(ids[0], ids[1:]) == " b\nc"
    assert words.decode_after(ids[1], ids[2:]) == "\nc"  # "b" then <eos> "c"
    assert words.decode_after(ids[2], ids[3:]) == "c"  # a word after a line break gets no space
    chars = Vocab.build("héllo", level="char")
    assert chars.decode_after(chars.id_of("h"), chars.encode("éllo").tolist()) == "éllo"


def test_max_size_counts_unk_also_when_min_freq_drops_characters() -> None:
    v = Vocab.build("aabbc", "char", min_freq=2, max_size=2)  # c is rare; a and b tie for one slot
    assert v.tokens == [UNK, "a"] and len(v) == 2
    assert Vocab.build("aabbc", "char", min_freq=2, max_size=3).tokens == [UNK, "a", "b"]
    assert Vocab.build("aabbc", "char", max_size=2).tokens == [UNK, "a"]
    assert Vocab.build("aabbc", "char", max_size=3).tokens == ["a", "b", "c"]
