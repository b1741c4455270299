"""The tagger model: padding never changes a sentence's scores or tags, and each head's loss and decoder
against a direct computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnlm.recurrent.engines import resolve_matmul_dtype
from rnnlm.tagging.config import TaggerConfig
from rnnlm.tagging.encoding import EncodedSentence, collate
from rnnlm.tagging.model import Tagger

V, C, K = 30, 12, 5  # words, characters (+ padding id 0), tags


def make(head="crf", cell="lstm", engine="fused", layers=2, char_dim=4, dtype="float32") -> Tagger:
    torch.manual_seed(0)
    cfg = TaggerConfig(cell, engine, layers, hidden=6, word_dim=5, char_dim=char_dim, char_filters=3, head=head,
                       matmul_dtype=dtype)  # fmt: skip
    model = Tagger(cfg, V, C, K, unk_id=0).double().eval()
    with torch.no_grad():  # larger transitions than the init, so that the CRF's choice depends on neighbours
        if head == "crf":
            model.head.crf.transitions.normal_()
    return model


def sentences(lengths: list[int], seed: int = 0) -> list[EncodedSentence]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        width = int(torch.randint(1, 6, (1,), generator=g))
        chars = torch.randint(1, C, (n, width), generator=g)
        chars[:, 1:] *= torch.rand(n, width - 1, generator=g) < 0.7  # words of different lengths (0 = padding)
        chars = torch.where(chars[:, :1] == 0, 1, chars)
        out.append(
            EncodedSentence(
                torch.randint(0, V, (n,), generator=g).numpy(), chars.numpy(), torch.zeros(n).long().numpy()
            )
        )
    return out


def garbage_padding(batch, seed: int = 1):
    """The batch with random ids wherever padding is: none of it may reach a result."""
    g = torch.Generator().manual_seed(seed)
    pad = ~batch.mask
    words = torch.where(pad, torch.randint(0, V, batch.words.shape, generator=g), batch.words)
    chars = torch.where(pad[..., None], torch.randint(1, C, batch.chars.shape, generator=g), batch.chars)
    return words, chars


@pytest.mark.parametrize(
    "head,cell,engine", [("crf", "lstm", "fused"), ("crf", "gru", "scratch"), ("softmax", "lstm", "scratch")]
)
def test_padding_never_changes_a_sentences_scores_or_tags(head, cell, engine):
    model = make(head, cell, engine)
    lengths = [7, 1, 4, 7, 2]
    data = sentences(lengths)
    batch = collate(data, list(range(len(data))))
    words, chars = garbage_padding(batch)
    scores = model(words, chars, batch.lengths)  # (B, T, K)
    tags = model.decode(scores, batch.mask)
    for b, n in enumerate(lengths):
        alone = collate(data, [b])
        s = model(alone.words, alone.chars, alone.lengths)
        torch.testing.assert_close(scores[b, :n], s[0], rtol=1e-10, atol=1e-10)
        assert tags[b, :n].tolist() == model.decode(s, alone.mask)[0].tolist()
        assert (tags[b, n:] == 0).all()
        loss_alone = model.loss(s, torch.zeros_like(alone.tags), alone.mask)
        loss_in_batch = model.loss(scores[b : b + 1], torch.zeros_like(batch.tags[b : b + 1]), batch.mask[b : b + 1])
        torch.testing.assert_close(loss_in_batch, loss_alone)


def test_the_backward_direction_starts_at_each_sentences_end():
    """Without lengths the backward LSTM would read the padding first: the check above would fail."""
    model = make("softmax")
    data = sentences([6, 2])
    batch = collate(data, [0, 1])
    words, chars = garbage_padding(batch)
    outputs, _ = model.encoder(model.input(words, chars))  # no lengths
    alone = collate(data, [1])
    ref, _ = model.encoder(model.input(alone.words, alone.chars), lengths=alone.lengths)
    assert not torch.allclose(outputs[1, :2], ref[0])


def test_softmax_loss_and_decoding_against_cross_entropy():
    model = make("softmax")
    batch = collate(sentences([5, 3]), [0, 1])
    scores = model(batch.words, batch.chars, batch.lengths)
    tags = torch.tensor([[0, 1, 2, 3, 4], [4, -1, 2, -1, -1]])  # -1: unknown gold tag, or padding
    expected = F.cross_entropy(scores[0], tags[0], reduction="sum") + F.cross_entropy(
        scores[1, [0, 2]], tags[1, [0, 2]], reduction="sum"
    )
    torch.testing.assert_close(model.loss(scores, tags, batch.mask), expected)
    assert model.decode(scores, batch.mask)[0].tolist() == scores[0].argmax(-1).tolist()


def test_crf_loss_is_the_sum_of_sentence_nlls_and_skips_unknown_gold():
    model = make("crf")
    data = sentences([5, 3, 4])
    batch = collate(data, [0, 1, 2])
    scores = model(batch.words, batch.chars, batch.lengths)
    tags = torch.tensor([[0, 1, 2, 3, 4], [4, 0, 2, -1, -1], [1, -1, 1, 1, -1]])  # the last has an unknown tag
    crf = model.head.crf
    expected = sum(
        crf.neg_log_likelihood(scores[b : b + 1], tags[b : b + 1].clamp(min=0), batch.mask[b : b + 1]) for b in (0, 1)
    )
    torch.testing.assert_close(model.loss(scores, tags, batch.mask), expected)


def test_word_dropout_and_dropout_only_in_training():
    model = make(char_dim=0)
    model.input.word_dropout = 0.5
    batch = collate(sentences([8, 8]), [0, 1])
    a = model(batch.words, batch.chars, batch.lengths)
    assert torch.equal(a, model(batch.words, batch.chars, batch.lengths))  # eval: deterministic
    model.train()
    torch.manual_seed(1)
    seen = []
    model.input.words.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    model(batch.words, batch.chars, batch.lengths)
    replaced = seen[0] != batch.words
    assert replaced.any() and (seen[0][replaced] == 0).all()  # replaced words became <unk> (id 0)


def test_engines_agree_on_a_trained_shape():
    fused, scratch = make(engine="fused"), make(engine="scratch")
    batch = collate(sentences([6, 3, 1]), [0, 1, 2])
    torch.testing.assert_close(
        fused(batch.words, batch.chars, batch.lengths), scratch(batch.words, batch.chars, batch.lengths)
    )


def test_bfloat16_matmuls_keep_padding_out_and_stay_near_float32():
    """The fused engine under --matmul-dtype bfloat16 (torch.autocast around the packed LSTM): float32
    outputs, padding still changes nothing, and the scores stay within bfloat16's rounding of float32's."""
    exact, fast = make(engine="fused"), make(engine="fused", dtype="bfloat16")
    exact.float(), fast.float()
    assert fast.encoder.matmul_dtype == "bfloat16"
    lengths = [7, 1, 4]
    data = sentences(lengths)
    batch = collate(data, [0, 1, 2])
    words, chars = garbage_padding(batch)
    scores = fast(words, chars, batch.lengths)
    assert scores.dtype == torch.float32
    ref = exact(words, chars, batch.lengths)
    assert 0 < (scores - ref).abs().max() < 0.05  # bfloat16 did run, and only rounded
    # the same batch with other padding: bit for bit the same scores (a batch of another size may round apart)
    assert torch.equal(scores, fast(batch.words, batch.chars, batch.lengths))
    for b, n in enumerate(lengths):
        alone = collate(data, [b])
        torch.testing.assert_close(scores[b, :n], fast(alone.words, alone.chars, alone.lengths)[0], rtol=0, atol=2e-3)
    scores.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in fast.encoder.parameters())


def test_auto_precision_is_float32_on_a_gpu():
    model = make(dtype="auto")
    assert model.encoder.matmul_dtype in ("float32", "bfloat16")  # the CPU's choice
    if torch.cuda.is_available():
        assert model.to_device(torch.device("cuda")).encoder.matmul_dtype == "float32"
    cpu = torch.device("cpu")
    assert model.to_device(cpu).encoder.matmul_dtype == resolve_matmul_dtype("auto", cpu)
