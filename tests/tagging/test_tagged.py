"""Tagged data: word/char/tag ids, padded batches, length-bucketed epochs, and the raw-text tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnlm.tagging.encoding import (
    POOL,
    LengthBatcher,
    TagEncoder,
    collate,
    encode,
    normalize_word,
    replace_rare,
    singletons,
    sorted_batches,
    tokenize,
)

SENTS = [["Peter", "Blackburn", "won", "in", "1996"], ["EU", "rejects", "it"], ["Won"]]
TAGS = [["B-PER", "I-PER", "O", "O", "O"], ["B-ORG", "O", "O"], ["O"]]


def test_encoder_vocabularies_and_normalization():
    enc = TagEncoder.build(SENTS, TAGS, lowercase=True, zero_digits=True)
    assert enc.words.tokens[:3] == ["<unk>", "<eos>", "won"]  # "won" and "Won" are one word, seen twice
    assert "0000" in enc.words and "1996" not in enc.words
    assert enc.tags.tags == ["O", "B-ORG", "B-PER", "I-PER"]
    assert enc.encode_words(["WON", "2024", "zebra"]).tolist() == [2, enc.words.id_of("0000"), 0]
    chars = enc.encode_chars(["Won", "Ωx"], max_chars=2)  # cut to 2; unknown characters are <unk> (id 0 + 1)
    assert chars.shape == (2, 2) and chars[1].tolist() == [1, enc.chars.id_of("x") + 1]
    assert chars.min() >= 1  # 0 is left for padding
    assert normalize_word("New  York", False, False) == "New_York"


def test_encode_marks_unknown_gold_tags():
    enc = TagEncoder.build(SENTS, TAGS, True, True)
    (s,) = encode(enc, [["EU", "won"]], [["B-ORG", "B-MISC"]], max_chars=20)
    assert s.tags.tolist() == [1, -1] and s.words.tolist() == [enc.words.id_of("eu"), enc.words.id_of("won")]


def test_collate_pads_and_keeps_the_order_asked_for():
    enc = TagEncoder.build(SENTS, TAGS, True, True)
    data = encode(enc, SENTS, TAGS, max_chars=20)
    batch = collate(data, [2, 0])
    assert batch.index == [2, 0] and batch.lengths.tolist() == [1, 5]
    assert batch.words.shape == (2, 5) and batch.chars.shape == (2, 5, 9)  # "Blackburn" has 9 characters
    assert batch.mask.tolist() == [[True, False, False, False, False], [True] * 5]
    assert batch.tags[0, 1:].tolist() == [-1] * 4 and (batch.chars[0, 1:] == 0).all()
    assert batch.words[1].tolist() == data[0].words.tolist()


def test_singletons_are_replaced_by_unk_with_their_probability():
    enc = TagEncoder.build(SENTS, TAGS, True, True)
    data = encode(enc, SENTS, TAGS, max_chars=20)
    rare = singletons(data, len(enc.words))
    assert [enc.words.tokens[i] for i in np.flatnonzero(rare)] == sorted(
        ["peter", "blackburn", "in", "0000", "eu", "rejects", "it"]
    )  # "won" occurs twice, <unk> and <eos> never
    words = collate(data, [0, 1, 2]).words  # (3, 5)
    assert (replace_rare(words, rare, 0.0, 0, np.random.default_rng(0)) == words).all()
    every = replace_rare(words, rare, 1.0, 0, np.random.default_rng(0))
    assert (every == torch.where(torch.from_numpy(rare)[words], 0, words)).all()
    half = [replace_rare(words, rare, 0.5, 0, np.random.default_rng(k)) for k in range(200)]
    share = torch.stack([(h != words).float() for h in half]).mean(0)[torch.from_numpy(rare)[words]]
    assert 0.4 < share.mean() < 0.6
    assert torch.equal(half[3], replace_rare(words, rare, 0.5, 0, np.random.default_rng(3)))


def test_length_batcher_is_a_deterministic_partition_with_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 60, size=POOL * 8 + 37).tolist()
    b = LengthBatcher(lengths, batch_size=4, seed=3)
    e0 = b.epoch(0)
    assert len(e0) == b.num_batches() == len(b.epoch(1))
    assert sorted(np.concatenate(e0).tolist()) == list(range(len(lengths)))  # every sentence once
    assert all(np.array_equal(x, y) for x, y in zip(e0, LengthBatcher(lengths, 4, 3).epoch(0), strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(e0, b.epoch(1), strict=True))
    spread = np.mean([np.ptp(np.asarray(lengths)[i]) for i in e0])
    assert spread < 3  # within a pool of 200 sentences, batch neighbours differ by a few tokens at most
    order = np.concatenate(list(sorted_batches(lengths, 5)))
    assert np.all(np.diff(np.asarray(lengths)[order]) >= 0)


@pytest.mark.parametrize(
    "text,tokens",
    [
        ("I like eating apple", ["I", "like", "eating", "apple"]),
        ("Apple's U.S. sales don't fall.", ["Apple", "'s", "U.S.", "sales", "do", "n't", "fall", "."]),
        ("$3.5 billion (12:30) on 2024-01-31", ["$", "3.5", "billion", "(", "12:30", ")", "on", "2024-01-31"]),
        ("well-known O'Neil AT&T, e.g. I'm", ["well-known", "O'Neil", "AT&T", ",", "e.g.", "I", "'m"]),
        ("Zürich “quoted”", ["Zürich", "“", "quoted", "”"]),
    ],
)
def test_tokenize_splits_like_the_treebanks(text, tokens):
    got = tokenize(text)
    assert [t for t, _, _ in got] == tokens
    assert all(text[a:b] == t for t, a, b in got)  # offsets point at the tokens
