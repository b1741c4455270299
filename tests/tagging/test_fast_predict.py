"""The tagger's inference shortcuts against the batched engines they stand in for (tagging/model.py, char_cnn.py):
one sentence's recurrence in one C call each, the character CNN over each distinct word once, the ensemble's
mean CRF kept between batches. Same scores within rounding, same tags."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnlm.recurrent.one_sequence import _kernel
from rnnlm.tagging.char_cnn import CharCNN
from rnnlm.tagging.config import TaggerConfig
from rnnlm.tagging.model import Tagger, TaggerEnsemble

V, C, K = 30, 12, 5  # words, characters, tags


def ensemble(dtype: str, n: int = 2) -> TaggerEnsemble:
    torch.manual_seed(0)
    cfg = TaggerConfig(hidden=10, word_dim=6, char_dim=4, char_filters=5, head="crf", matmul_dtype=dtype)
    out = TaggerEnsemble([Tagger(cfg, V, C, K) for _ in range(n)]).eval()
    with torch.no_grad():  # scores far from zero, so that the transitions and the recurrence matter
        for p in out.parameters():
            p.mul_(3.0)
    return out


def sentence(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    chars = torch.randint(1, C, (1, n, 6), generator=g)
    chars[..., 4:] = 0  # words of four characters at most, as padded batches hold them
    return torch.randint(1, V, (1, n), generator=g), chars, torch.tensor([n])


def tag(model: TaggerEnsemble, fast: bool, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for m in model.members:
        m.fast = fast
    with torch.no_grad():
        scores = model(*inputs)
        return scores, model.decode(scores, torch.ones(scores.shape[:2], dtype=torch.bool))


@pytest.mark.skipif(_kernel() is None, reason="no C compiler here: the fast path is off")
@pytest.mark.parametrize(("dtype", "tol"), [("float32", 1e-5), ("bfloat16", 3e-2)])
def test_one_sentence_scores_and_tags_are_the_batched_engines(dtype, tol):
    model = ensemble(dtype)
    for n, seed in [(1, 0), (7, 1), (23, 2)]:
        inputs = sentence(n, seed)
        (fast, fast_tags), (ref, ref_tags) = tag(model, True, *inputs), tag(model, False, *inputs)
        torch.testing.assert_close(fast, ref, rtol=tol, atol=tol)
        assert torch.equal(fast_tags, ref_tags)
    # a batch of one padded past its length (as a caller's own batching may leave it): the padding changes nothing
    words, chars, lengths = sentence(9, 3)
    padded = F.pad(words, (0, 4)), F.pad(chars, (0, 0, 0, 4)), lengths
    for m in model.members:
        m.fast = True
    with torch.no_grad():
        torch.testing.assert_close(model(*padded)[:, :9], model(words, chars, lengths), rtol=1e-6, atol=1e-6)
        assert model.members[0].encode(*padded)[:, 9:].abs().max() == 0


def test_the_char_cnn_encodes_each_distinct_word_once_with_the_same_vectors():
    torch.manual_seed(0)
    cnn = CharCNN(C, 6, 7, 3, 0.0).eval()
    chars = torch.randint(1, 4, (5, 9, 3))  # few characters: many repeated words
    chars[1, 6:] = 0  # padding slots
    chars[2, :, 2] = 0  # shorter words
    with torch.no_grad():
        fast = cnn(chars)
        cnn.distinct = False
        torch.testing.assert_close(fast, cnn(chars), rtol=1e-6, atol=1e-6)
    assert torch.equal(fast[1, 6:], torch.zeros(3, 7))


def test_the_mean_head_is_kept_until_a_member_s_crf_changes():
    model = ensemble("float32", 3)
    with torch.no_grad():
        head = model.mean_head()
        assert model.mean_head() is head
        model.members[1].head.crf.transitions.add_(0.3)
        fresh = model.mean_head()
    assert fresh is not head
    want = torch.stack([m.head.crf.transitions for m in model.members]).mean(0)
    torch.testing.assert_close(fresh.crf.transitions, want)
