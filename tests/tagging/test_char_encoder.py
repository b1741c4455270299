"""The character CNN against a word-by-word reference, and its indifference to padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnlm.tagging.char_cnn import CharCNN

WORDS = [["Peter", "Blackburn", ""], ["EU", "a", "rejects"]]  # "" is a padded word slot


def encode(words: list[list[str]], width: int) -> torch.Tensor:
    """(B, T, width) ids: ord(c) % 50 + 1, so that 0 stays free for padding."""
    ids = torch.zeros(len(words), len(words[0]), width, dtype=torch.long)
    for b, sent in enumerate(words):
        for t, w in enumerate(sent):
            ids[b, t, : len(w)] = torch.tensor([ord(c) % 50 + 1 for c in w], dtype=torch.long)
    return ids


def make(kernel_size: int = 3) -> CharCNN:
    torch.manual_seed(0)
    return CharCNN(num_chars=51, char_dim=5, num_filters=7, kernel_size=kernel_size).eval()


def reference(model: CharCNN, word: str) -> torch.Tensor:
    """One word alone: embed its characters, convolve with zero padding, max over its positions."""
    if not word:
        return torch.zeros(model.output_dim)
    ids = torch.tensor([ord(c) % 50 + 1 for c in word])
    x = model.embedding.weight[ids].T.unsqueeze(0)  # (1, C, L)
    pad = model.conv.kernel_size[0] // 2
    h = F.conv1d(x, model.conv.weight, model.conv.bias, padding=pad)  # (1, F, L)
    return h[0].max(dim=1).values


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_matches_word_by_word_reference(kernel_size: int) -> None:
    model = make(kernel_size)
    with torch.no_grad():
        out = model(encode(WORDS, 9))
        assert out.shape == (2, 3, 7)
        for b, sent in enumerate(WORDS):
            for t, w in enumerate(sent):
                torch.testing.assert_close(out[b, t], reference(model, w), rtol=0, atol=1e-6)
    assert not out[0, 2].any()  # the empty slot


def test_extra_padding_and_the_padding_row_change_nothing() -> None:
    model = make(5)
    with torch.no_grad():
        base = model(encode(WORDS, 9))
        torch.testing.assert_close(model(encode(WORDS, 20)), base, rtol=0, atol=1e-6)
        model.embedding.weight[0] = 100.0  # e.g. a checkpoint whose padding row drifted
        torch.testing.assert_close(model(encode(WORDS, 20)), base, rtol=0, atol=1e-6)


def test_gradient_skips_padding_and_dropout_is_train_only() -> None:
    model = make()
    model(encode(WORDS, 12)).sum().backward()
    grad = model.embedding.weight.grad
    assert grad is not None and not grad[0].any() and grad[1:].abs().sum() > 0
    ids = encode(WORDS, 9)
    model.train()
    assert not torch.equal(model(ids), model(ids))  # dropout on the character embeddings
    model.eval()
    assert torch.equal(model(ids), model(ids))


def test_rejects_even_kernels_and_zero_width() -> None:
    with pytest.raises(ValueError, match="odd"):
        CharCNN(10, kernel_size=4)
    with pytest.raises(ValueError, match="W >= 1"):
        make()(torch.zeros(2, 3, 0, dtype=torch.long))
