"""RNNLM: scratch against fused, gradients, state handling, weight tying, init and dropout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from rnnlm.config import ModelConfig
from rnnlm.models import RNNLM, convert_state_dict, count_parameters, detach_state, project_inputs, select_state

V, H, LAYERS, B, T = 11, 6, 2, 3, 7
CELLS = ["rnn", "gru", "lstm"]
IMPLS = ["scratch", "fused"]
# the scratch parameters that stand for a sum of torch's bias_ih and bias_hh blocks
SUMMED_BIASES = {"rnn": {"b_h"}, "gru": {"b_z", "b_r"}, "lstm": {"b_i", "b_f", "b_o", "b_c"}}


def cfg_for(cell: str, impl: str, embed: int = 5, **kw) -> ModelConfig:
    return ModelConfig(**{"cell": cell, "impl": impl, "layers": LAYERS, "hidden": H, "embed": embed, **kw})


def build(cell: str, impl: str, embed: int = 5, dtype: torch.dtype = torch.float64, seed: int = 0, **kw) -> RNNLM:
    torch.manual_seed(seed)
    return RNNLM(cfg_for(cell, impl, embed, **kw), V).to(dtype)


def random_state(model: RNNLM, batch: int = B, seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    dtype = model.head.weight.dtype
    return tuple(0.5 * torch.randn(LAYERS, batch, H, generator=g, dtype=dtype) for _ in range(model.num_states))


def paired(cell: str, embed: int, dtype: torch.dtype) -> tuple[RNNLM, RNNLM]:
    """A randomly initialised scratch model and a fused model loaded with its converted weights."""
    scratch = build(cell, "scratch", embed, dtype, seed=0)
    fused = build(cell, "fused", embed, dtype, seed=123)  # different init, overwritten below
    fused.load_state_dict(convert_state_dict(scratch.state_dict(), fused.cfg, to="fused"))
    return scratch, fused


def loss_of(logits: torch.Tensor, state: tuple[torch.Tensor, ...], seed: int = 2) -> torch.Tensor:
    """Cross-entropy on random targets plus a random weighting of the final state, so both matter."""
    g = torch.Generator().manual_seed(seed)
    Y = torch.randint(0, V, logits.shape[:2], generator=g)
    loss = F.cross_entropy(logits.reshape(-1, V), Y.reshape(-1))
    for s in state:
        loss = loss + (s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum()
    return loss


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("embed", [0, 5])
@pytest.mark.parametrize("cell", CELLS)
def test_scratch_matches_fused(cell: str, embed: int, dtype: torch.dtype) -> None:
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    scratch, fused = paired(cell, embed, dtype)
    X = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(3))
    state = random_state(scratch)

    logits_s, final_s = scratch(X, state)
    logits_f, final_f = fused(X, state)
    assert logits_s.shape == (B, T, V)
    torch.testing.assert_close(logits_s, logits_f, atol=tol, rtol=tol)
    assert len(final_s) == len(final_f) == scratch.num_states
    for a, b in zip(final_s, final_f, strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)

    # gradients: the fused grads, mapped to scratch names, equal the scratch grads; where one scratch
    # bias stands for torch's pair, d/d(bias_ih) = d/d(bias_hh) = d/d(b), so the mapped sum is twice it
    loss_of(logits_s, final_s).backward()
    loss_of(logits_f, final_f).backward()
    grads_s = {k: p.grad for k, p in scratch.named_parameters()}
    grads_f = convert_state_dict({k: p.grad for k, p in fused.named_parameters()}, fused.cfg, to="scratch")
    assert set(grads_s) == set(grads_f)
    for k, g in grads_s.items():
        factor = 2.0 if k.rsplit(".", 1)[-1] in SUMMED_BIASES[cell] else 1.0
        torch.testing.assert_close(grads_f[k], factor * g, atol=tol, rtol=tol, msg=k)


@pytest.mark.parametrize("embed", [0, 5])
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_through_the_conversion(cell: str, embed: int) -> None:
    """Running the fused model on convert(scratch params) gives the scratch model's own gradients."""
    scratch, fused = paired(cell, embed, torch.float64)
    X = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(4))
    state = random_state(scratch)
    leaves = {k: p.detach().clone().requires_grad_() for k, p in scratch.named_parameters()}
    state_leaf = tuple(s.clone().requires_grad_() for s in state)
    logits, final = functional_call(fused, convert_state_dict(leaves, fused.cfg, to="fused"), (X, state_leaf))
    loss_of(logits, final).backward()

    state_ref = tuple(s.clone().requires_grad_() for s in state)
    loss_of(*scratch(X, state_ref)).backward()
    for k, p in scratch.named_parameters():
        torch.testing.assert_close(leaves[k].grad, p.grad, atol=1e-12, rtol=1e-10, msg=k)
    for a, b in zip(state_leaf, state_ref, strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
def test_convert_round_trips(cell: str) -> None:
    scratch, fused = paired(cell, 5, torch.float64)
    sd = scratch.state_dict()
    back = convert_state_dict(convert_state_dict(sd, fused.cfg, to="fused"), scratch.cfg, to="scratch")
    assert set(back) == set(sd)
    for k in sd:
        torch.testing.assert_close(back[k], sd[k], atol=0, rtol=0, msg=k)

    # fused -> scratch -> fused keeps every weight; a bias pair comes back as (sum, 0) with the same sum
    torch.manual_seed(5)
    fsd = build(cell, "fused", 5).state_dict()
    fback = convert_state_dict(convert_state_dict(fsd, scratch.cfg, to="scratch"), fused.cfg, to="fused")
    assert set(fback) == set(fsd)
    for k in fsd:
        if "bias" not in k:
            torch.testing.assert_close(fback[k], fsd[k], atol=0, rtol=0, msg=k)
    for l in range(LAYERS):
        ih, hh = f"rnn.bias_ih_l{l}", f"rnn.bias_hh_l{l}"
        torch.testing.assert_close(fback[ih] + fback[hh], fsd[ih] + fsd[hh], atol=1e-15, rtol=0)
        if cell == "gru":  # the candidate keeps its two biases apart
            torch.testing.assert_close(fback[ih][2 * H :], fsd[ih][2 * H :], atol=0, rtol=0)
            torch.testing.assert_close(fback[hh][2 * H :], fsd[hh][2 * H :], atol=0, rtol=0)


def test_convert_checks_its_input() -> None:
    scratch = build("lstm", "scratch")
    sd = scratch.state_dict()
    same = convert_state_dict(sd, scratch.cfg, to="scratch")
    assert same == sd and same is not sd
    converted = convert_state_dict(sd, cfg_for("lstm", "fused"), to="fused")
    recurrent = [v for k, v in converted.items() if k.startswith("rnn.")]
    assert all(v.is_contiguous() for v in recurrent)
    assert len({v.untyped_storage().data_ptr() for v in recurrent}) == len(recurrent)  # no shared storage
    with pytest.raises(ValueError, match="does not use"):
        convert_state_dict(sd, cfg_for("lstm", "scratch", layers=1), to="fused")
    with pytest.raises(ValueError, match="has no"):
        convert_state_dict(sd, cfg_for("lstm", "scratch", layers=3), to="fused")
    with pytest.raises(ValueError, match="has no"):
        convert_state_dict(sd, cfg_for("gru", "scratch"), to="fused")
    with pytest.raises(ValueError, match="to must be"):
        convert_state_dict(sd, scratch.cfg, to="cudnn")


@pytest.mark.parametrize("embed", [0, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_scratch(cell: str, embed: int) -> None:
    """Autograd's gradients of the scratch model against finite differences, for every parameter."""
    torch.manual_seed(6)
    model = RNNLM(ModelConfig(cell=cell, impl="scratch", layers=2, hidden=3, embed=embed), vocab_size=4).double()
    names = [k for k, _ in model.named_parameters()]
    if embed == 0:  # the one-hot layer-0 weights are (V, hidden) and reached by row lookup
        W_x0 = model.layers[0].W_xi if cell == "lstm" else model.layers[0].W_xh
        assert W_x0.shape == (4, 3)
    params = tuple(p.detach().clone().requires_grad_() for p in model.parameters())
    state = tuple(0.5 * torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True) for _ in range(model.num_states))
    X = torch.tensor([[0, 3, 1], [2, 2, 0]])  # repeated ids: their rows must add up

    def f(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, final = functional_call(
            model, dict(zip(names, tensors[: len(names)], strict=True)), (X, tensors[len(names) :])
        )
        return (logits, *final)

    assert torch.autograd.gradcheck(f, params + state, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cell", CELLS)
def test_state_carries_across_chunks(cell: str, impl: str) -> None:
    model = build(cell, impl)
    X = torch.randint(0, V, (B, 10), generator=torch.Generator().manual_seed(7))
    state = random_state(model)
    whole, final = model(X, state)
    first, mid = model(X[:, :4], state)
    second, final2 = model(X[:, 4:], mid)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, atol=1e-12, rtol=0)
    for a, b in zip(final2, final, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cell", CELLS)
def test_shapes_and_begin_state(cell: str, impl: str) -> None:
    model = build(cell, impl, dtype=torch.float32)
    state = model.begin_state(4)
    assert len(state) == (2 if cell == "lstm" else 1)
    for s in state:
        assert s.shape == (LAYERS, 4, H) and s.dtype == torch.float32 and not s.any()
    X = torch.randint(0, V, (4, 5))
    logits, final = model(X)
    assert logits.shape == (4, 5, V)
    assert [s.shape for s in final] == [(LAYERS, 4, H)] * len(state)
    logits_zero, _ = model(X, state)
    torch.testing.assert_close(logits, logits_zero, atol=0, rtol=0)  # None means the zero state
    with pytest.raises(ValueError, match="token ids"):
        model(torch.randn(4, 5))


def test_detach_state_cuts_the_graph() -> None:
    model = build("lstm", "scratch")
    start = tuple(s.requires_grad_() for s in random_state(model))  # leaves before the first chunk
    _, state = model(torch.randint(0, V, (B, T)), start)
    assert all(s.grad_fn is not None for s in state)
    cut = detach_state(state)
    assert all(s.grad_fn is None and not s.requires_grad for s in cut)
    for a, b in zip(cut, state, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    # a loss on the next chunk reaches the first chunk's start through the state, unless it was cut
    model(torch.randint(0, V, (B, T)), state)[0].sum().backward()
    assert all(s.grad is not None for s in start)
    for s in start:
        s.grad = None
    model(torch.randint(0, V, (B, T)), cut)[0].sum().backward()
    assert all(s.grad is None for s in start)


@pytest.mark.parametrize("impl", IMPLS)
def test_select_state_reorders_rows(impl: str) -> None:
    model = build("lstm", impl)
    X = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(8))
    state = random_state(model)
    index = torch.tensor([2, 0, 0, 1])
    picked = select_state(state, index)
    for s, p in zip(state, picked, strict=True):
        assert p.shape == (LAYERS, 4, H)
        torch.testing.assert_close(p, s[:, index], atol=0, rtol=0)
    # running the picked rows equals picking rows of the full run
    logits, final = model(X, state)
    logits_p, final_p = model(X[index], picked)
    torch.testing.assert_close(logits_p, logits[index], atol=1e-12, rtol=0)
    for a, b in zip(final_p, final, strict=True):
        torch.testing.assert_close(a, b[:, index], atol=1e-12, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_tie_weights(impl: str) -> None:
    tied = build("gru", impl, embed=H, tie_weights=True)
    untied = build("gru", impl, embed=H)
    assert tied.head.weight is tied.embedding.weight
    assert count_parameters(untied) - count_parameters(tied) == V * H
    sd = tied.state_dict()
    assert "embedding.weight" in sd and "head.weight" in sd
    # uniform init: the shared matrix follows the head's U(-k, k) rule, not the embedding's N(0, 1)
    assert tied.embedding.weight.abs().max() <= 1 / math.sqrt(H)
    tied(torch.randint(0, V, (B, T)))[0].sum().backward()
    assert tied.embedding.weight.grad is not None and tied.embedding.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="embed == hidden"):
        RNNLM(cfg_for("gru", impl, embed=H + 1, tie_weights=True), V)
    with pytest.raises(ValueError, match="embed == hidden"):
        RNNLM(cfg_for("gru", impl, embed=0, tie_weights=True), V)


def test_tied_weights_convert() -> None:
    scratch = build("lstm", "scratch", embed=H, tie_weights=True)
    fused = build("lstm", "fused", embed=H, tie_weights=True, seed=9)
    fused.load_state_dict(convert_state_dict(scratch.state_dict(), fused.cfg, to="fused"))
    assert fused.head.weight is fused.embedding.weight
    X = torch.randint(0, V, (B, T))
    torch.testing.assert_close(fused(X)[0], scratch(X)[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cell", CELLS)
def test_init_normal(cell: str, impl: str) -> None:
    torch.manual_seed(10)
    std = 0.05
    model = RNNLM(ModelConfig(cell=cell, impl=impl, layers=2, hidden=64, embed=32, init="normal", init_std=std), 50)
    for name, p in model.named_parameters():
        if name.rsplit(".", 1)[-1].startswith(("b_", "bias")):
            assert not p.any(), name
        else:
            assert abs(p.mean().item()) < 0.2 * std, name
            assert p.std().item() == pytest.approx(std, rel=0.1), name


@pytest.mark.parametrize("impl", IMPLS)
def test_init_uniform(impl: str) -> None:
    torch.manual_seed(11)
    hidden = 64
    model = RNNLM(ModelConfig(cell="lstm", impl=impl, layers=2, hidden=hidden, embed=32), 50)
    k = 1 / math.sqrt(hidden)
    for name, p in model.named_parameters():
        if name == "embedding.weight":
            assert p.std().item() == pytest.approx(1.0, rel=0.1)
        else:
            assert p.abs().max().item() <= k, name
            assert p.abs().max().item() > 0.8 * k, name  # spread over the range, not squeezed near 0


def test_count_parameters_exact() -> None:
    # lstm, V=11, E=5, H=6, 2 layers. fused: 4H(in + H) weights and 2 * 4H biases per layer
    fused = 11 * 5 + (24 * 11 + 48) + (24 * 12 + 48) + (6 * 11 + 11)
    assert count_parameters(build("lstm", "fused")) == fused
    # scratch keeps one bias per gate: 4H fewer per layer
    assert count_parameters(build("lstm", "scratch")) == fused - 2 * 24
    # gru scratch: 3 gates, biases b_z, b_r, b_xh, b_hh; one-hot input: layer-0 input weights are (V, H)
    gru = (3 * 6 * 11 + 4 * 6 + 3 * 36) + (3 * 36 + 4 * 6 + 3 * 36) + (6 * 11 + 11)
    assert count_parameters(build("gru", "scratch", embed=0)) == gru


@pytest.mark.parametrize("impl", IMPLS)
def test_dropout_train_vs_eval(impl: str) -> None:
    model = build("lstm", impl, dropout=0.5)
    X = torch.randint(0, V, (B, T))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(X)[0], model(X)[0], atol=0, rtol=0)
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(X)[0], model(X)[0])


def test_dropout_is_off_in_eval_for_both_impls() -> None:
    scratch = build("gru", "scratch", dropout=0.5).eval()
    fused = build("gru", "fused", dropout=0.5).eval()
    fused.load_state_dict(convert_state_dict(scratch.state_dict(), fused.cfg, to="fused"))
    X = torch.randint(0, V, (B, T))
    torch.testing.assert_close(scratch(X)[0], fused(X)[0], atol=1e-12, rtol=0)


def test_model_input_projection_is_the_one_hot_matmul() -> None:
    model = build("rnn", "scratch", embed=0, dtype=torch.float32)
    X = torch.randint(0, V, (B, T))
    W_xh = model.layers[0].W_xh
    assert W_xh.shape == (V, H)
    torch.testing.assert_close(project_inputs(X, W_xh), F.one_hot(X, V).float() @ W_xh, atol=0, rtol=0)


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="cell"):
        RNNLM(ModelConfig(cell="transformer"), V)
    with pytest.raises(ValueError, match="impl"):
        RNNLM(ModelConfig(impl="cudnn"), V)
    with pytest.raises(ValueError, match="dropout"):
        RNNLM(ModelConfig(dropout=1.0), V)
