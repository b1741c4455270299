"""Vocabularies round-trip any Unicode text (Hypothesis): surrogates, combining marks, NUL, CR/LF, U+2028, any length.

Each property compares two computations: the text against its decoding, a vocabulary against the one read back from
its JSON file, a word vocabulary's decoding against the line-by-line whitespace split that defines word tokens.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rnnlm.core import vocab as vocab_module
from rnnlm.core.vocab import EOS, Vocab

pytestmark = pytest.mark.e2e  # 200 examples per property: about a second each
# A quarter of the profile's examples per property (CI: 50; bench/fuzz.sh's deep profile: 2,500): the readers get
# the full count; these properties need fewer to reach their edge cases (empty, one batch, one step).
FEWER = settings(max_examples=max(1, settings().max_examples // 4))

# Every code point, lone surrogates included (a str may hold them, e.g. read with surrogateescape), weighted
# towards the characters that break text handling: NUL, CR, LF, U+2028/2029, NEL, combining marks, BOM, astral.
SPECIAL = ["\0", "\r", "\n", "\r\n", "\u2028", "\u2029", "\x85", "\u0301", "\u200d", "\ufeff", "\ud800", "\udfff"]
CHARS = st.one_of(st.characters(codec=None, exclude_categories=()), st.sampled_from(SPECIAL))
PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
# A high surrogate right before a low one is UTF-16 for one astral character, and JSON (as Python's json reads it)
# joins the two escapes into it: such a str is not text in any encoding, and a word token holding one reads back as
# the character (test_a_surrogate_pair_reads_back_as_its_character). Lone surrogates round-trip.
TEXT = st.lists(CHARS, max_size=300).map("".join).filter(lambda t: not PAIR.search(t))


@FEWER
@given(TEXT.filter(bool))
@example("\ud800")  # a lone surrogate: vocab.json could not be written (UnicodeEncodeError) before the fix
@example("a\udcff\r\n\u2028\0")
def test_char_vocab_round_trips_any_text(tmp_path_factory, text: str) -> None:
    v = Vocab.build(text, "char")
    ids = v.encode(text)
    assert len(ids) == len(text)
    assert v.decode(ids) == text
    path = tmp_path_factory.mktemp("v") / "vocab.json"
    v.save(path)
    back = Vocab.load(path)
    assert back == v
    assert back.decode(back.encode(text)) == text


@FEWER
@given(TEXT.filter(bool), st.integers(1, 4), st.integers(2, 40))
def test_char_vocab_with_unk_maps_only_dropped_chars_to_unk(text: str, min_freq: int, max_size: int) -> None:
    v = Vocab.build(text, "char", min_freq=min_freq, max_size=max_size)
    assert len(v) <= max_size
    decoded = v.decode(v.encode(text))
    # Known characters come back, and each unknown one becomes exactly one <unk>.
    want = "".join(c if c in v else v.unk for c in text)
    assert decoded == want


@contextlib.contextmanager
def small_chunks(size: int) -> Iterator[None]:
    """Encode in chunks of ``size`` characters (a huge text's path) for the duration."""
    old = vocab_module._CHUNK
    vocab_module._CHUNK = size
    try:
        yield
    finally:
        vocab_module._CHUNK = old


def word_reference(text: str) -> str:
    """What word-level decode(encode(text)) must give: each line's whitespace-split words, lines kept apart."""
    return "\n".join(" ".join(line.split()) for line in text.split("\n"))


@FEWER
@given(TEXT.filter(lambda t: bool(t.split())))
@example("a\u2028b\nc")  # U+2028 separates words, as str.split says; only \n ends a line
@example("\ud800 x\r\n")
def test_word_vocab_round_trips_words_and_lines(tmp_path_factory, text: str) -> None:
    v = Vocab.build(text, "word")
    ids = v.encode(text)
    assert v.decode(ids) == word_reference(text)
    assert int((ids == v.id_of(EOS)).sum()) == text.count("\n")
    path = tmp_path_factory.mktemp("v") / "vocab.json"
    v.save(path)
    assert Vocab.load(path) == v


@FEWER
@given(TEXT.filter(bool), st.integers(1, 50))
def test_chunked_encoding_equals_one_pass(text: str, chunk: int) -> None:
    """Huge texts are encoded in chunks; any chunk size gives the ids of one pass."""
    whole_char = Vocab.build(text, "char")
    want = whole_char.encode(text)
    with small_chunks(chunk):
        assert Vocab.build(text, "char") == whole_char
        assert np.array_equal(whole_char.encode(text), want)
        if text.split():
            w = Vocab.build(text, "word")
            assert w.decode(w.encode(text)) == word_reference(text)


@FEWER
@given(st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=20, unique=True))
def test_any_char_vocab_saves_and_loads(tmp_path_factory, tokens: list[str]) -> None:
    singles = sorted({t[0] for t in tokens})
    v = Vocab(singles, "char")
    path = tmp_path_factory.mktemp("v") / "vocab.json"
    v.save(path)
    assert Vocab.load(path) == v


def test_a_surrogate_pair_reads_back_as_its_character(tmp_path) -> None:
    v = Vocab(["<unk>", "<eos>", "a\ud800\udc00"], "word", unk="<unk>")
    v.save(tmp_path / "vocab.json")
    assert Vocab.load(tmp_path / "vocab.json").tokens[2] == "a\U00010000"
