"""RNNLM: engines agree, state handling, weight tying, init, dropout, and weights from rnnlm 0.1."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rnnlm.core.errors import ConfigError
from rnnlm.lm.config import ModelConfig
from rnnlm.lm.model import RNNLM, upgrade_state_dict
from rnnlm.recurrent.state import detach_state, select_state
from rnnlm.training.runs import count_parameters

V, H, LAYERS, B, T = 11, 6, 2, 3, 7
CELLS = ["rnn", "gru", "lstm"]
ENGINES = ["scratch", "fused", "cpu"]


def cfg_for(cell: str, engine: str, embed: int = 5, **kw) -> ModelConfig:
    return ModelConfig(**{"cell": cell, "engine": engine, "layers": LAYERS, "hidden": H, "embed": embed, **kw})


def build(cell: str, engine: str, embed: int = 5, dtype: torch.dtype = torch.float64, seed: int = 0, **kw) -> RNNLM:
    torch.manual_seed(seed)
    return RNNLM(cfg_for(cell, engine, embed, **kw), V).to(dtype)


def random_state(model: RNNLM, batch: int = B, seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    dtype = model.head.weight.dtype
    return tuple(0.5 * torch.randn(LAYERS, batch, H, generator=g, dtype=dtype) for _ in range(model.num_states))


@pytest.mark.parametrize("embed", [0, 5])
@pytest.mark.parametrize("cell", CELLS)
def test_engines_agree_on_one_model(cell: str, embed: int) -> None:
    model = build(cell, "scratch", embed)
    X = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(2))
    state = random_state(model)
    logits, final = model(X, state)
    model.set_engine("fused")
    logits_f, final_f = model(X, state)
    torch.testing.assert_close(logits_f, logits, atol=1e-12, rtol=0)
    for a, b in zip(final_f, final, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cell", CELLS)
def test_state_carries_across_chunks(cell: str, engine: str) -> None:
    model = build(cell, engine)
    X = torch.randint(0, V, (B, 10), generator=torch.Generator().manual_seed(7))
    state = random_state(model)
    whole, final = model(X, state)
    first, mid = model(X[:, :4], state)
    second, final2 = model(X[:, 4:], mid)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, atol=1e-12, rtol=0)
    for a, b in zip(final2, final, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cell", CELLS)
def test_shapes_and_begin_state(cell: str, engine: str) -> None:
    model = build(cell, engine, dtype=torch.float32)
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
    # a loss on the next chunk reaches the first chunk's start through the state, unless it was cut
    model(torch.randint(0, V, (B, T)), state)[0].sum().backward()
    assert all(s.grad is not None for s in start)
    for s in start:
        s.grad = None
    model(torch.randint(0, V, (B, T)), cut)[0].sum().backward()
    assert all(s.grad is None for s in start)


@pytest.mark.parametrize("engine", ENGINES)
def test_select_state_reorders_rows(engine: str) -> None:
    model = build("lstm", engine)
    X = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(8))
    state = random_state(model)
    index = torch.tensor([2, 0, 0, 1])
    picked = select_state(state, index)
    for s, p in zip(state, picked, strict=True):
        torch.testing.assert_close(p, s[:, index], atol=0, rtol=0)
    logits, final = model(X, state)
    logits_p, final_p = model(X[index], picked)
    torch.testing.assert_close(logits_p, logits[index], atol=1e-12, rtol=0)
    for a, b in zip(final_p, final, strict=True):
        torch.testing.assert_close(a, b[:, index], atol=1e-12, rtol=0)


@pytest.mark.parametrize("engine", ENGINES)
def test_tie_weights(engine: str) -> None:
    tied = build("gru", engine, embed=H, tie_weights=True)
    untied = build("gru", engine, embed=H)
    assert tied.head.weight is tied.input.embedding.weight
    assert count_parameters(untied) - count_parameters(tied) == V * H
    sd = tied.state_dict()
    assert "input.embedding.weight" in sd and "head.weight" in sd
    # uniform init: the shared matrix follows the head's U(-k, k) rule, not the embedding's N(0, 1)
    assert tied.input.embedding.weight.abs().max() <= 1 / math.sqrt(H)
    tied(torch.randint(0, V, (B, T)))[0].sum().backward()
    assert tied.input.embedding.weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="needs an embedding"):
        RNNLM(cfg_for("gru", engine, embed=0, tie_weights=True), V)
    # embed != hidden: a projection (E, H) maps the outputs to E; the shared matrix stays (V, E)
    projected = build("gru", engine, embed=H + 1, tie_weights=True)
    assert projected.head.weight is projected.input.embedding.weight
    assert projected.head.proj.weight.shape == (H + 1, H)
    X = torch.randint(0, V, (B, T))
    logits, _ = projected(X)
    outputs, _ = projected.encode(X)
    expected = outputs @ projected.head.proj.weight.t() @ projected.head.weight.t() + projected.head.bias
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("cell", CELLS)
def test_init_normal(cell: str) -> None:
    torch.manual_seed(10)
    std = 0.05
    model = RNNLM(ModelConfig(cell=cell, layers=2, hidden=64, embed=32, init="normal", init_std=std), 50)
    for name, p in model.named_parameters():
        if name.rsplit(".", 1)[-1].startswith("bias"):
            assert not p.any(), name
        else:
            assert abs(p.mean().item()) < 0.2 * std, name
            assert p.std().item() == pytest.approx(std, rel=0.1), name


def test_init_uniform() -> None:
    torch.manual_seed(11)
    hidden = 64
    model = RNNLM(ModelConfig(cell="lstm", layers=2, hidden=hidden, embed=32), 50)
    k = 1 / math.sqrt(hidden)
    for name, p in model.named_parameters():
        if name == "input.embedding.weight":
            assert p.std().item() == pytest.approx(1.0, rel=0.1)
        else:
            assert p.abs().max().item() <= k, name
            assert p.abs().max().item() > 0.8 * k, name  # spread over the range, not squeezed near 0


def test_count_parameters_exact() -> None:
    # lstm, V=11, E=5, H=6, 2 layers: 4H(in + H) weights and one 4H bias per layer (torch keeps two)
    assert count_parameters(build("lstm", "fused")) == 11 * 5 + (24 * 11 + 24) + (24 * 12 + 24) + (6 * 11 + 11)
    # gru with one-hot input: layer-0 input weights are (3H, V); the candidate keeps a recurrent bias
    gru = (18 * 11 + 18 * 6 + 18 + 6) + (18 * 6 + 18 * 6 + 18 + 6) + (6 * 11 + 11)
    assert count_parameters(build("gru", "scratch", embed=0)) == gru


@pytest.mark.parametrize("engine", ENGINES)
def test_dropout_train_vs_eval(engine: str) -> None:
    model = build("lstm", engine, dropout=0.5)
    X = torch.randint(0, V, (B, T))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(X)[0], model(X)[0], atol=0, rtol=0)
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(X)[0], model(X)[0])


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ConfigError, match="--cell must be one of"):
        RNNLM(ModelConfig(cell="transformer"), V)
    with pytest.raises(ConfigError, match="--engine must be one of auto, scratch, fused"):
        RNNLM(ModelConfig(engine="cudnn"), V)
    with pytest.raises(ConfigError, match="--dropout"):
        RNNLM(ModelConfig(dropout=1.0), V)


# Weights as rnnlm 0.1 saved them, built here gate by gate from today's layout, independently of
# upgrade_state_dict: scratch kept one (in, hidden) matrix per gate, fused kept torch's keys.
V1_GATES = {
    "rnn": [("W_xh", "W_hh", "b_h")],
    "gru": [("W_xr", "W_hr", "b_r"), ("W_xz", "W_hz", "b_z"), ("W_xh", "W_hh", "b_xh")],
    "lstm": [("W_xi", "W_hi", "b_i"), ("W_xf", "W_hf", "b_f"), ("W_xc", "W_hc", "b_c"), ("W_xo", "W_ho", "b_o")],
}


def v1_state_dict(model: RNNLM, engine: str) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    cell, gates = model.cfg.cell, len(V1_GATES[model.cfg.cell])
    out = {"head.weight": sd["head.weight"], "head.bias": sd["head.bias"]}
    if "input.embedding.weight" in sd:
        out["embedding.weight"] = sd["input.embedding.weight"]
    for l in range(LAYERS):
        w_ih, w_hh, b = (sd[f"encoder.{n}_l{l}"] for n in ("weight_ih", "weight_hh", "bias"))
        if engine == "fused":
            b_hh = torch.zeros_like(b)
            if cell == "gru":
                b_hh[2 * H :] = sd[f"encoder.bias_hn_l{l}"]
            out |= {f"rnn.weight_ih_l{l}": w_ih, f"rnn.weight_hh_l{l}": w_hh, f"rnn.bias_ih_l{l}": b}
            out[f"rnn.bias_hh_l{l}"] = b_hh
            continue
        for g, (w_x, w_h, b_name) in enumerate(V1_GATES[cell]):
            rows = slice(g * H, (g + 1) * H)
            assert w_ih.shape[0] == gates * H
            out[f"layers.{l}.{w_x}"] = w_ih[rows].t().contiguous()
            out[f"layers.{l}.{w_h}"] = w_hh[rows].t().contiguous()
            out[f"layers.{l}.{b_name}"] = b[rows]
        if cell == "gru":
            out[f"layers.{l}.b_hh"] = sd[f"encoder.bias_hn_l{l}"]
    return out


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cell", CELLS)
def test_weights_of_rnnlm_0_1_still_load(cell: str, engine: str) -> None:
    model = build(cell, "scratch", embed=0 if cell == "rnn" else 5)
    old = v1_state_dict(model, engine)
    again = build(cell, "scratch", embed=0 if cell == "rnn" else 5, seed=99)
    again.load_state_dict(upgrade_state_dict(old, model.cfg))
    X = torch.randint(0, V, (B, T))
    torch.testing.assert_close(again(X)[0], model(X)[0], atol=1e-12, rtol=0)
    assert upgrade_state_dict(model.state_dict(), model.cfg).keys() == model.state_dict().keys()  # passes through


def test_one_hot_input_reads_rows_of_the_input_weights() -> None:
    model = build("rnn", "scratch", embed=0)
    X = torch.randint(0, V, (B, T))
    W_xh = model.encoder.weight_ih_l0.t()  # (V, H), the textbook's W_xh
    H_1 = torch.tanh(F.one_hot(X[:, 0], V).double() @ W_xh + model.encoder.bias_l0)  # the first step by hand
    _, (h,) = model(X[:, :1], (torch.zeros(LAYERS, B, H, dtype=torch.float64),))
    torch.testing.assert_close(h[0], H_1, atol=1e-12, rtol=0)


def test_auto_matmul_dtype_is_bfloat16_only_where_the_cpu_has_it(monkeypatch) -> None:
    from rnnlm.recurrent import engines

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert engines.resolve_matmul_dtype("float32", cpu) == "float32"
    monkeypatch.setattr(engines, "cpu_has_native_bf16", lambda: True)
    assert engines.resolve_matmul_dtype("auto", cpu) == "bfloat16"
    assert engines.resolve_matmul_dtype("auto", gpu) == "float32"
    assert RNNLM(ModelConfig(matmul_dtype="auto"), V).encoder.matmul_dtype == "bfloat16"
    monkeypatch.setattr(engines, "cpu_has_native_bf16", lambda: False)
    assert engines.resolve_matmul_dtype("auto", cpu) == "float32"
