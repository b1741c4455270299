"""Frame layers: standardizing input, sequence pooling heads and per-frame heads, with and without padding."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnlm.frames.layers import (
    POOLINGS,
    ConvBranch,
    FrameInput,
    FrameLabelHead,
    MaskedBatchNorm,
    SequenceClassifierHead,
    last_valid,
)
from rnnlm.frames.prep import feature_stats, pad_frames, pad_labels


def identity_input(mean, std, **kwargs) -> FrameInput:
    """A FrameInput whose projection is the identity, so its output is the standardized frames."""
    layer = FrameInput(len(mean), len(mean), torch.tensor(mean), torch.tensor(std), **kwargs)
    with torch.no_grad():
        layer.proj.weight.copy_(torch.eye(len(mean)))
        layer.proj.bias.zero_()
    return layer


def garbage_batch(seqs):
    """Pad with values that break any computation they reach: NaN, infinities and huge numbers."""
    frames, lengths, mask = pad_frames(seqs)
    junk = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30])
    pad = ~mask[..., None].expand_as(frames)
    frames[pad] = junk[torch.arange(int(pad.sum())) % 4]
    return frames, lengths, mask


# ---------------------------------------------------------------- FrameInput


def test_frame_input_standardizes_like_numpy_and_fills_missing_with_zero():
    x = np.array([[[1.0, 10.0], [np.nan, 30.0], [5.0, np.nan]]], dtype=np.float32)  # (1, 3, 2)
    mean, std = feature_stats([x[0]])
    assert mean.tolist() == [3.0, 20.0] and std.tolist() == [2.0, 10.0]
    out = identity_input(mean.tolist(), std.tolist())(torch.from_numpy(x))
    expected = np.nan_to_num((x.astype(np.float64) - [3.0, 20.0]) / [2.0, 10.0], nan=0.0)
    np.testing.assert_allclose(out.detach().numpy(), expected, atol=1e-6)
    assert out[0, :, 0].tolist() == [-1.0, 0.0, 1.0]


def test_frame_input_statistics_travel_in_the_state_dict():
    layer = FrameInput(3, 4, torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 1.0, 2.0]))
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert state["mean"].tolist() == [1.0, 2.0, 3.0] and state["std"].tolist() == [0.5, 1.0, 2.0]
    fresh = FrameInput(3, 4, torch.zeros(3), torch.ones(3))
    fresh.load_state_dict(state)
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(fresh(x), layer(x), rtol=0, atol=0)


def test_frame_input_rejects_bad_statistics():
    with pytest.raises(ValueError, match=r"mean and std must be \(3,\)"):
        FrameInput(3, 4, torch.zeros(2), torch.ones(3))
    with pytest.raises(ValueError, match="std must be > 0"):
        FrameInput(2, 4, torch.zeros(2), torch.tensor([1.0, 0.0]))


def test_augmentations_are_off_by_default_and_only_in_training():
    torch.manual_seed(0)
    x = torch.randn(3, 6, 2)
    plain = identity_input([0.0, 0.0], [1.0, 1.0])
    torch.testing.assert_close(plain.train()(x), plain.eval()(x), rtol=0, atol=0)
    noisy = identity_input([0.0, 0.0], [1.0, 1.0], noise_std=0.5)
    assert not torch.equal(noisy.train()(x), x)
    torch.testing.assert_close(noisy.eval()(x), x, rtol=0, atol=0)


def test_time_mask_zeroes_one_span_inside_the_real_frames():
    layer = identity_input([0.0], [1.0], time_mask=3).train()
    frames, lengths, mask = pad_frames([np.ones((n, 1)) for n in (6, 2, 9)])
    torch.manual_seed(1)
    widths = []
    for _ in range(40):
        out = layer(frames, mask)[..., 0]  # (B, T); 0 where masked in time or padded
        assert out[~mask].eq(0).all()
        for row, n in zip(out, lengths.tolist(), strict=True):
            zeros = torch.nonzero(row[:n] == 0).flatten().tolist()
            if zeros:
                assert zeros == list(range(zeros[0], zeros[-1] + 1))  # one contiguous span
            assert len(zeros) <= min(3, n)
            widths.append(len(zeros))
    assert set(widths) == {0, 1, 2, 3}
    spans = torch.stack([layer._time_span(frames, mask) for _ in range(200)])  # (200, B, T)
    assert not (spans & ~mask).any()  # never reaches into the padding
    assert spans.sum(-1)[:, 1].max() == 2 and spans.sum(-1).max() == 3
    torch.testing.assert_close(layer.eval()(frames, mask), frames.masked_fill(~mask[..., None], 0))


# ---------------------------------------------------------------- pooling by hand

FEATURES = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [[10.0, 0.0], [20.0, -2.0], [float("nan"), 7.0]]])
MASK = torch.tensor([[True, True, True], [True, True, False]])


def test_last_and_mean_pooling_by_hand():
    assert SequenceClassifierHead(2, 3, "last").pool(FEATURES, MASK).tolist() == [[5.0, 6.0], [20.0, -2.0]]
    assert SequenceClassifierHead(2, 3, "mean").pool(FEATURES, MASK).tolist() == [[3.0, 4.0], [15.0, -1.0]]
    # The last real step is the highest True, even where the mask has holes.
    holes = torch.tensor([[True, False, True], [False, True, False]])
    assert last_valid(FEATURES, holes).tolist() == [[5.0, 6.0], [20.0, -2.0]]


def test_attention_pooling_by_hand():
    head = SequenceClassifierHead(2, 3, "attention")
    with torch.no_grad():
        head.score.weight.copy_(torch.tensor([[0.1, 0.0]]))
        head.score.bias.fill_(0.25)  # a shared bias must not change a softmax
    w0 = [math.exp(0.1 * v) for v in (1, 3, 5)]
    w1 = [math.exp(1.0), math.exp(2.0)]
    expected = [
        [sum(w * f for w, f in zip(w0, col, strict=True)) / sum(w0) for col in ((1, 3, 5), (2, 4, 6))],
        [sum(w * f for w, f in zip(w1, col, strict=True)) / sum(w1) for col in ((10, 20), (0, -2))],
    ]
    pooled = head.pool(FEATURES, MASK)
    torch.testing.assert_close(pooled, torch.tensor(expected), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(head(FEATURES, MASK), head.out(pooled))


def test_attention_pooling_gradient():
    head = SequenceClassifierHead(3, 2, "attention").double()
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    features = torch.randn(2, 4, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: head.pool(f, mask), (features,))


def test_heads_reject_bad_masks():
    head = SequenceClassifierHead(2, 3, "mean")
    with pytest.raises(ValueError, match="at least one real step"):
        head(FEATURES, torch.tensor([[True, True, True], [False, False, False]]))
    with pytest.raises(ValueError, match="mask must be"):
        head(FEATURES, MASK.long())
    with pytest.raises(ValueError, match="at least one real step"):
        last_valid(FEATURES, torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="pooling must be one of"):
        SequenceClassifierHead(2, 3, "max")


# ---------------------------------------------------------------- padding never changes an output


@pytest.fixture
def sequences():
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(n, 3, generator=gen) * 4 + 1 for n in (5, 2, 4, 1)]


@pytest.mark.parametrize("pooling", POOLINGS)
def test_classifier_output_is_the_same_alone_and_in_a_padded_batch(sequences, pooling):
    torch.manual_seed(0)
    frame_in = FrameInput(3, 6, torch.ones(3), torch.full((3,), 4.0))
    head = SequenceClassifierHead(6, 5, pooling)
    frames, _, mask = garbage_batch(sequences)
    batched = head(frame_in(frames, mask), mask)
    assert batched.shape == (4, 5) and torch.isfinite(batched).all()
    for i, seq in enumerate(sequences):
        alone_mask = torch.ones(1, len(seq), dtype=torch.bool)
        alone = head(frame_in(seq[None], alone_mask), alone_mask)
        torch.testing.assert_close(batched[i], alone[0], rtol=1e-5, atol=1e-6)


def test_frame_labels_are_the_same_alone_and_in_a_padded_batch(sequences):
    torch.manual_seed(0)
    frame_in, head = FrameInput(3, 6, torch.zeros(3), torch.ones(3)), FrameLabelHead(6, 4)
    frames, lengths, mask = garbage_batch(sequences)
    features = frame_in(frames, mask)
    assert torch.equal(features[~mask], frame_in.proj.bias.expand(int((~mask).sum()), 6))  # padding enters as 0
    logits = head(features, mask)
    assert logits.shape == (4, 5, 4) and logits[~mask].eq(0).all()
    for i, seq in enumerate(sequences):
        alone = head(frame_in(seq[None]))
        torch.testing.assert_close(logits[i, : lengths[i]], alone[0], rtol=1e-5, atol=1e-6)


def test_garbage_in_padding_keeps_loss_and_gradients_finite(sequences):
    torch.manual_seed(0)
    frame_in, head = FrameInput(3, 6, torch.zeros(3), torch.ones(3)), FrameLabelHead(6, 4)
    pool = SequenceClassifierHead(6, 4, "attention")
    frames, _, mask = garbage_batch(sequences)
    targets = pad_labels([torch.randint(0, 4, (len(s),)) for s in sequences])
    features = frame_in(frames, mask)
    loss = F.cross_entropy(head(features, mask).transpose(1, 2), targets)
    loss = loss + F.cross_entropy(pool(features, mask), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.isfinite(loss)
    params = [*frame_in.parameters(), *head.parameters(), *pool.parameters()]
    assert all(torch.isfinite(p.grad).all() for p in params)


# ---------------------------------------------------------------- the convolutional branch (--fcn)


def test_masked_batch_norm_is_batch_norm_over_the_real_frames_only(sequences):
    """Training: the statistics, output and running estimates of nn.BatchNorm1d given only the real frames
    (joined into one long sequence); eval: the running estimates, as nn.BatchNorm1d."""
    torch.manual_seed(0)
    ours, ref = MaskedBatchNorm(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2.0)
        ours.bias.normal_()
        ref.weight.copy_(ours.weight)
        ref.bias.copy_(ours.bias)
    frames, lengths, mask = garbage_batch(sequences)
    x = frames.transpose(1, 2)  # (B, C, T), NaN and infinities in the padding
    for _ in range(2):  # two updates of the running estimates
        got = ours(x, mask)
        want = ref(torch.cat(sequences).T[None])[0]  # (C, N) of the real frames
        torch.testing.assert_close(got.transpose(1, 2)[mask], want.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    clean = torch.randn(2, 3, 4)
    torch.testing.assert_close(ours(clean, torch.ones(2, 4, dtype=torch.bool)), ref(clean))


def trained_branch(in_dim: int = 3, channels: int = 4) -> ConvBranch:
    """A branch whose running statistics have moved away from their initial 0 and 1."""
    torch.manual_seed(0)
    branch = ConvBranch(in_dim, channels)
    for _ in range(3):
        branch(torch.randn(4, 7, in_dim) * 3 + 1, torch.ones(4, 7, dtype=torch.bool))
    return branch.eval()


def test_conv_branch_shapes_and_kernels():
    branch = ConvBranch(3, 4)
    assert [c.weight.shape for c in branch.convs] == [(4, 3, 7), (8, 4, 5), (4, 8, 3)]
    assert [n.weight.shape for n in branch.norms] == [(4,), (8,), (4,)] and branch.out_dim == 4
    assert branch(torch.randn(2, 5, 3), torch.ones(2, 5, dtype=torch.bool)).shape == (2, 4)
    with pytest.raises(ValueError, match="channels must be at least 1"):
        ConvBranch(3, 0)
    with pytest.raises(ValueError, match="at least one real step"):
        branch(torch.randn(2, 5, 3), torch.zeros(2, 5, dtype=torch.bool))


def test_conv_branch_in_eval_is_the_same_alone_and_in_a_padded_batch(sequences):
    branch = trained_branch()
    assert not torch.equal(branch.norms[0].running_mean, torch.zeros(4))
    frames, _, mask = garbage_batch(sequences)
    clean = frames.masked_fill(~mask[..., None], 0.0)  # the padding a FrameInput leaves (garbage: below)
    with torch.no_grad():
        batched = branch(clean, mask)
        assert batched.shape == (4, 4) and torch.isfinite(batched).all()
        for i, seq in enumerate(sequences):
            alone = branch(seq[None], torch.ones(1, len(seq), dtype=torch.bool))
            torch.testing.assert_close(batched[i], alone[0], rtol=1e-5, atol=1e-6)


def test_conv_branch_in_training_ignores_padding(sequences):
    """Batch statistics come from real frames only: more padding, or other values in it, change neither the
    vectors nor the running estimates nor the gradients."""
    outputs, grads, running = [], [], []
    for extra, fill in ((0, 0.0), (3, 0.0), (3, 1e30)):
        branch = trained_branch().train()
        frames, _, mask = pad_frames(sequences)
        frames = F.pad(frames, (0, 0, 0, extra))
        mask = F.pad(mask, (0, extra))
        frames = frames.masked_fill(~mask[..., None], fill)
        vectors = branch(frames, mask)
        vectors.square().sum().backward()
        outputs.append(vectors.detach())
        grads.append([p.grad.clone() for p in branch.parameters()])
        running.append([b.clone() for b in branch.buffers()])
    for i in (1, 2):
        torch.testing.assert_close(outputs[i], outputs[0], rtol=1e-5, atol=1e-6)
        for got, want in zip(grads[i] + running[i], grads[0] + running[0], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_head_joins_the_extra_vector_before_its_output_layer():
    torch.manual_seed(0)
    head = SequenceClassifierHead(2, 3, "mean", extra_dim=4)
    assert head.out.weight.shape == (3, 6)
    extra = torch.randn(2, 4)
    want = torch.cat([FEATURES.masked_fill(~MASK[..., None], 0).sum(1) / MASK.sum(1, keepdim=True), extra], 1)
    torch.testing.assert_close(head(FEATURES, MASK, extra), head.out(want))
    with pytest.raises(ValueError, match="extra vector of 4"):
        head(FEATURES, MASK)
    with pytest.raises(ValueError, match="extra vector of 0"):
        SequenceClassifierHead(2, 3)(FEATURES, MASK, extra)
