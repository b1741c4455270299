"""The whole frame model: padding never changes a sequence's output, and it computes what torch.nn.GRU/LSTM do."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnlm.frames.config import FramesModelConfig
from rnnlm.frames.model import FrameRNN
from rnnlm.frames.prep import pad_frames
from rnnlm.recurrent.encoder import to_torch_state_dict

LENGTHS = (6, 1, 4, 9, 2)


def make_model(task="classify", **kw) -> FrameRNN:
    torch.manual_seed(0)
    cfg = FramesModelConfig(**{"hidden": 5, "proj": 4, "dropout": 0.0, "fcn": 0, **kw})
    return FrameRNN(cfg, 3, 4, task, torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 1.0, 3.0])).eval()


def garbage_batch(seqs):
    """Padded frames whose padding holds NaN, infinities and huge values: any leak shows in the output."""
    frames, lengths, mask = pad_frames(seqs)
    junk = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30])
    pad = ~mask[..., None].expand_as(frames)
    frames[pad] = junk[torch.arange(int(pad.sum())) % 4]
    return frames, lengths


@pytest.fixture
def sequences():
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(n, 3, generator=gen) * 2 + 1 for n in LENGTHS]


CASES = [
    dict(cell="gru", bidirectional=True, pooling="mean"),
    dict(cell="gru", bidirectional=True, pooling="last"),
    dict(cell="lstm", bidirectional=True, pooling="attention"),
    dict(cell="lstm", bidirectional=False, pooling="last"),
    dict(cell="rnn", bidirectional=True, pooling="attention", layers=2),
]


@pytest.mark.parametrize("engine", ["fused", "scratch"])
@pytest.mark.parametrize("kw", CASES, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_classifier_alone_equals_in_a_padded_batch(sequences, kw, engine):
    model = make_model(engine=engine, **kw)
    frames, lengths = garbage_batch(sequences)
    with torch.no_grad():
        batched = model(frames, lengths)  # (B, C)
        assert batched.shape == (len(LENGTHS), 4) and torch.isfinite(batched).all()
        for i, seq in enumerate(sequences):
            alone = model(seq[None], torch.tensor([len(seq)]))
            torch.testing.assert_close(batched[i], alone[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_labeler_alone_equals_in_a_padded_batch(sequences, bidirectional):
    model = make_model("label", cell="lstm", bidirectional=bidirectional, layers=2)
    frames, lengths = garbage_batch(sequences)
    with torch.no_grad():
        batched = model(frames, lengths)  # (B, T, C)
    assert batched.shape == (len(LENGTHS), max(LENGTHS), 4)
    for i, seq in enumerate(sequences):
        alone = model(seq[None], torch.tensor([len(seq)]))[0]
        torch.testing.assert_close(batched[i, : len(seq)], alone, rtol=1e-5, atol=1e-6)
        assert batched[i, len(seq) :].eq(0).all()


def test_padding_changes_no_gradient(sequences):
    """The summed loss of a padded batch has the gradient of the per-sequence losses added up."""
    model = make_model(cell="gru", bidirectional=True, pooling="attention").train()
    targets = torch.tensor([0, 1, 2, 3, 1])
    frames, lengths = garbage_batch(sequences)
    F.cross_entropy(model(frames, lengths), targets, reduction="sum").backward()
    batched = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for seq, y in zip(sequences, targets, strict=True):
        F.cross_entropy(model(seq[None], torch.tensor([len(seq)])), y[None], reduction="sum").backward()
    for got, want in zip(batched, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_bidirectional_last_pooling_matches_torch_nn(sequences, cell):
    """Standardize, project, torch.nn.GRU/LSTM with copied weights, then the forward output at the last frame
    joined with the backward output at the first frame: computed here by hand, compared with the model."""
    model = make_model(cell=cell, bidirectional=True, pooling="last")
    ref = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(4, 5, batch_first=True, bidirectional=True)
    ref.load_state_dict(to_torch_state_dict(model.encoder))
    for seq in sequences:
        x = ((seq - model.input.mean) / model.input.std) @ model.input.proj.weight.T + model.input.proj.bias
        out, _ = ref(x[None])  # (1, T, 2H)
        pooled = torch.cat([out[0, -1, :5], out[0, 0, 5:]])
        want = pooled @ model.head.out.weight.T + model.head.out.bias
        got = model(seq[None], torch.tensor([len(seq)]))[0]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_missing_values_read_as_the_training_mean():
    model = make_model(cell="gru")
    seq = torch.tensor([[float("nan"), 0.0, 2.0], [3.0, float("nan"), -1.0]])
    filled = torch.where(seq.isnan(), model.input.mean.expand_as(seq), seq)
    with torch.no_grad():
        torch.testing.assert_close(model(seq[None], torch.tensor([2])), model(filled[None], torch.tensor([2])))


@pytest.mark.parametrize("engine", ["fused", "scratch"])
@pytest.mark.parametrize("pooling", ["last", "attention"])
def test_classifier_with_a_conv_branch_alone_equals_in_a_padded_batch(sequences, pooling, engine):
    model = make_model(engine=engine, pooling=pooling, fcn=6).train()
    with torch.no_grad():  # training steps move the branch's running statistics away from 0 and 1
        for _ in range(3):
            model(*garbage_batch(sequences))
    model.eval()
    assert not torch.equal(model.fcn.norms[2].running_var, torch.ones(6))
    frames, lengths = garbage_batch(sequences)
    with torch.no_grad():
        batched = model(frames, lengths)
        assert batched.shape == (len(LENGTHS), 4) and torch.isfinite(batched).all()
        for i, seq in enumerate(sequences):
            alone = model(seq[None], torch.tensor([len(seq)]))
            torch.testing.assert_close(batched[i], alone[0], rtol=1e-5, atol=1e-6)
        # The model's output is its head's output layer applied to the pooled GRU vector joined with the branch's.
        standardized = ((sequences[0] - model.input.mean) / model.input.std)[None]
        branch = model.fcn(standardized, torch.ones(1, LENGTHS[0], dtype=torch.bool))
        assert branch.shape == (1, 6) and model.head.out.weight.shape == (4, 2 * 5 + 6)
        model.head.out.weight[:, 10:] = 0  # without the branch's part, the GRU alone decides
        alone = model(sequences[0][None], torch.tensor([LENGTHS[0]]))
        model.fcn = None
        model.head.extra_dim = 0
        model.head.out.weight = torch.nn.Parameter(model.head.out.weight[:, :10])
        torch.testing.assert_close(model(sequences[0][None], torch.tensor([LENGTHS[0]])), alone)


def test_conv_branch_is_on_by_default_for_classifiers_only():
    cfg = FramesModelConfig()
    assert cfg.fcn is None and cfg.fcn_channels("classify") == 128 and cfg.fcn_channels("label") == 0
    assert make_model(fcn=None).fcn.out_dim == 128 and make_model("label", fcn=None).fcn is None
    assert make_model().fcn is None and not any(k.startswith("fcn.") for k in make_model().state_dict())
    with pytest.raises(ValueError, match="--fcn .* needs --task classify"):
        make_model("label", fcn=4)
    with pytest.raises(ValueError, match="--fcn must be at least 0"):
        make_model(fcn=-1)


def test_bad_settings_name_the_flag():
    with pytest.raises(ValueError, match="--pooling must be one of"):
        make_model(pooling="max")
    with pytest.raises(ValueError, match="--proj must be at least 1"):
        make_model(proj=0)
    with pytest.raises(ValueError, match=r"--label-smoothing must be in \[0, 1\)"):
        make_model(label_smoothing=1.0)
