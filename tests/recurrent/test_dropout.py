"""The AWD-LSTM regularizers (recurrent/dropout.py and their seams in the model): locked dropout keeps one
mask for every step, weight drop is a dropped W_hh that every engine reads, embedding dropout drops
whole token types, and evaluation applies none of them."""

from __future__ import annotations

import copy

import pytest
import torch

from rnnlm.core.errors import ConfigError
from rnnlm.lm.config import LMTrainConfig, ModelConfig
from rnnlm.lm.model import RNNLM
from rnnlm.recurrent.dropout import dropout, dropout_mask, embedding_dropout, locked_dropout

V, H, LAYERS, B, T = 11, 6, 2, 3, 7
ENGINES = ["scratch", "fused", "cpu"]
ALL_ON = dict(dropout_in=0.3, dropout_hidden=0.4, dropout_out=0.2, embed_dropout=0.25, weight_drop=0.5)


def build(cell: str = "lstm", engine: str = "scratch", **kw) -> RNNLM:
    torch.manual_seed(0)
    cfg = ModelConfig(**{"cell": cell, "engine": engine, "layers": LAYERS, "hidden": H, "embed": 5, **kw})
    return RNNLM(cfg, V).double()


X = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.9])
def test_cpu_mask_drops_with_probability_p_and_keeps_the_mean(p: float) -> None:
    """dropout_mask's 16-bit CPU draws: values 0 and 1/(1-p'), p' within 2^-17 of p, the drop rate within
    five standard deviations of p, and the four elements that share one 64-bit draw independent."""
    torch.manual_seed(3)
    n = 400_003  # not a multiple of four: the last draw is cut
    mask = dropout_mask((n,), p, torch.empty(0))
    kept = mask != 0
    values = mask[kept].unique()
    assert len(values) == 1 and abs(1 / values.item() - (1 - p)) <= 2**-17
    sd = (p * (1 - p) / n) ** 0.5
    assert abs((~kept).double().mean().item() - p) < 5 * sd
    lanes = kept[: n // 4 * 4].view(-1, 4).double()  # the 16-bit lanes of one 64-bit draw
    both = (lanes[:, :-1] * lanes[:, 1:]).mean().item()  # neighbours kept together: (1-p)^2 if independent
    assert abs(both - (1 - p) ** 2) < 5 * ((1 - p) ** 2 * (1 - (1 - p) ** 2) / (n // 4)) ** 0.5


def test_cpu_masks_repeat_with_the_seed_and_follow_the_dtype() -> None:
    like = torch.empty(0, dtype=torch.float64)
    torch.manual_seed(5)
    a = dropout_mask((7, 9), 0.3, like)
    torch.manual_seed(5)
    b = dropout_mask((7, 9), 0.3, like)
    assert a.dtype == torch.float64 and a.shape == (7, 9) and torch.equal(a, b)
    assert torch.equal(dropout(a, 0.3, training=False), a) and torch.equal(dropout(a, 0.0, training=True), a)
    x = torch.randn(50, 60)
    y = dropout(x, 0.4, training=True)
    assert torch.equal(y != 0, (x != 0) & (y != 0)) and torch.allclose(y[y != 0], x[y != 0] / (1 - 0.4), atol=1e-4)


def test_locked_dropout_uses_one_mask_for_every_step() -> None:
    torch.manual_seed(3)
    y = locked_dropout(torch.ones(4, 50, 8), 0.5, training=True)
    assert set(y.unique().tolist()) == {0.0, 2.0}  # kept values scaled by 1 / (1 - p)
    assert torch.equal(y, y[:, :1].expand_as(y))  # every step equals the first
    assert 0 < (y == 0).sum() < y.numel()
    # time-major input gets the same (B, D) mask from the same random state
    x = torch.randn(4, 50, 8)
    torch.manual_seed(4)
    batch_first = locked_dropout(x, 0.3, True)
    torch.manual_seed(4)
    time_major = locked_dropout(x.transpose(0, 1), 0.3, True, time_dim=0)
    assert torch.equal(time_major.transpose(0, 1), batch_first)
    assert locked_dropout(x, 0.3, training=False) is x


def test_embedding_dropout_drops_whole_token_types() -> None:
    torch.manual_seed(5)
    weight = torch.randn(20, 4)
    dropped = embedding_dropout(weight, 0.5, training=True)
    zero_rows = (dropped == 0).all(dim=1)
    assert 0 < zero_rows.sum() < 20
    torch.testing.assert_close(dropped[~zero_rows], 2 * weight[~zero_rows])
    model = build(embed_dropout=0.5)
    model.train()
    ids = torch.tensor([[3, 3, 3, 3, 3, 4, 4]])
    for seed in range(6):  # a token is dropped at all of its positions or at none
        torch.manual_seed(seed)
        E = model.input(ids)[0]  # (T, E)
        assert len({bool((E[t] == 0).all()) for t in range(5)}) == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_weight_drop_is_a_dropped_w_hh_that_every_engine_reads(engine: str) -> None:
    model = build("gru" if engine == "cpu" else "lstm", engine, weight_drop=0.5)
    model.train()
    torch.manual_seed(7)
    got, _ = model(X)
    # The same masks from the same random state, put into the weights of a model without weight drop.
    torch.manual_seed(7)
    reference = copy.deepcopy(model)
    reference.encoder.weight_drop = 0.0
    for layer in range(LAYERS):
        w = getattr(reference.encoder, f"weight_hh_l{layer}")
        w.data = dropout_mask(tuple(w.shape), 0.5, w) * w.data
    expected, _ = reference(X)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    got.sum().backward()
    mask = reference.encoder.weight_hh_l0 == 0
    assert mask.any() and (model.encoder.weight_hh_l0.grad[mask] == 0).all()  # dropped weights get no gradient
    assert not model.encoder._dropped_hh  # the dropped copies do not outlive the forward pass


@pytest.mark.parametrize("engine", ENGINES)
def test_weight_drop_off_changes_nothing(engine: str) -> None:
    plain, off = build(engine=engine), build(engine=engine, weight_drop=0.0)
    plain.train(), off.train()
    torch.manual_seed(1)
    a, _ = plain(X)
    torch.manual_seed(1)
    b, _ = off(X)
    assert torch.equal(a, b)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_every_engine_draws_the_same_locked_masks(cell: str) -> None:
    outs = []
    for engine in ENGINES:
        model = build(cell, engine, **ALL_ON)
        model.train()
        torch.manual_seed(11)
        outs.append(model(X)[0])
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], atol=1e-12, rtol=0)


def test_locked_dropout_between_layers_keeps_its_mask_over_time() -> None:
    model = build(engine="fused", dropout_hidden=0.5)
    model.train()
    seen = []
    drop = model.encoder.drop_between

    def spy(x: torch.Tensor, time_dim: int) -> torch.Tensor:  # records the mask: ones through the same dropout
        seen.append(drop(torch.ones_like(x), time_dim))
        return drop(x, time_dim)

    model.encoder.drop_between = spy
    torch.manual_seed(0)
    model(X)
    (mask,) = seen
    assert torch.equal(mask, mask[:, :1].expand_as(mask)) and (mask == 0).any()


@pytest.mark.parametrize("engine", ENGINES)
def test_evaluation_applies_no_dropout(engine: str) -> None:
    regularized, plain = build(engine=engine, **ALL_ON), build(engine=engine)
    plain.load_state_dict(regularized.state_dict())
    regularized.eval(), plain.eval()
    torch.manual_seed(0)
    a, _ = regularized(X)
    b, _ = plain(X)
    assert torch.equal(a, b)
    regularized.train()
    assert not torch.equal(regularized(X)[0], b)


def test_the_checks_name_the_flag() -> None:
    with pytest.raises(ConfigError, match="--dropout"):
        ModelConfig(dropout=0.2, dropout_hidden=0.1).check()
    with pytest.raises(ConfigError, match="--embed-dropout"):
        ModelConfig(embed=0, embed_dropout=0.1).check()
    with pytest.raises(ConfigError, match="--weight-drop"):
        ModelConfig(weight_drop=1.0).check()
    with pytest.raises(ConfigError, match="--variable-len"):
        LMTrainConfig(variable_len=True, sampling="random").check()
    with pytest.raises(ConfigError, match="--ar"):
        LMTrainConfig(ar=-1.0).check()
    ModelConfig(**ALL_ON).check()
