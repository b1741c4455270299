"""The scratch cells against torch's own cells, and the one-hot row lookup against the matmul."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnlm.models import SCRATCH_CELLS, project_inputs

B, T, IN, H = 3, 6, 4, 5


def _load_from_torch_cell(cell: str, layer: nn.Module, ref: nn.Module) -> None:
    """Copy torch cell weights into a scratch layer, gate by gate, written out here on purpose.

    This mapping is independent of convert_state_dict (and of the cells' TORCH_GATES table), so a
    mistake in either shows up as a mismatch instead of being copied into the test.
    """
    n = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    Wi = [w.T for w in ref.weight_ih.chunk(n)]  # torch stores (out, in); scratch stores (in, out)
    Wh = [w.T for w in ref.weight_hh.chunk(n)]
    bi, bh = ref.bias_ih.chunk(n), ref.bias_hh.chunk(n)
    if cell == "rnn":
        values = {"W_xh": Wi[0], "W_hh": Wh[0], "b_h": bi[0] + bh[0]}
    elif cell == "gru":  # torch order: reset, update, new
        values = {
            "W_xr": Wi[0], "W_hr": Wh[0], "b_r": bi[0] + bh[0],
            "W_xz": Wi[1], "W_hz": Wh[1], "b_z": bi[1] + bh[1],
            "W_xh": Wi[2], "W_hh": Wh[2], "b_xh": bi[2], "b_hh": bh[2],
        }  # fmt: skip
    else:  # torch order: input, forget, cell (g), output
        values = {
            "W_xi": Wi[0], "W_hi": Wh[0], "b_i": bi[0] + bh[0],
            "W_xf": Wi[1], "W_hf": Wh[1], "b_f": bi[1] + bh[1],
            "W_xc": Wi[2], "W_hc": Wh[2], "b_c": bi[2] + bh[2],
            "W_xo": Wi[3], "W_ho": Wh[3], "b_o": bi[3] + bh[3],
        }  # fmt: skip
    assert set(values) == {name for name, _ in layer.named_parameters()}
    with torch.no_grad():
        for name, value in values.items():
            getattr(layer, name).copy_(value)


def _torch_cell(cell: str) -> nn.Module:
    if cell == "rnn":
        return nn.RNNCell(IN, H, nonlinearity="tanh")
    return {"gru": nn.GRUCell, "lstm": nn.LSTMCell}[cell](IN, H)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_scratch_layer_matches_torch_cell(cell: str) -> None:
    torch.manual_seed(0)
    ref = _torch_cell(cell).double()
    layer = SCRATCH_CELLS[cell](IN, H).double()
    _load_from_torch_cell(cell, layer, ref)
    X = torch.randn(B, T, IN, dtype=torch.float64)
    state = tuple(torch.randn(B, H, dtype=torch.float64) for _ in range(layer.num_states))

    # one step: the scratch layer on a length-1 sequence against a single torch cell call
    _, one = layer(X[:, :1], state)
    expected = ref(X[:, 0], state if cell == "lstm" else state[0])
    expected = expected if cell == "lstm" else (expected,)
    for got, want in zip(one, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)

    # T steps: the scratch loop against torch's cell called step by step
    outputs, final = layer(X, state)
    ref_state = state
    ref_outputs = []
    for t in range(T):
        new = ref(X[:, t], ref_state if cell == "lstm" else ref_state[0])
        ref_state = tuple(new) if cell == "lstm" else (new,)
        ref_outputs.append(ref_state[0])
    torch.testing.assert_close(outputs, torch.stack(ref_outputs, dim=1), atol=1e-12, rtol=0)
    for got, want in zip(final, ref_state, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_gru_is_not_the_textbook_reset_form() -> None:
    """The reset gate must act after H W_hh (torch's form); the d2l form (R * H) W_hh gives other numbers."""
    torch.manual_seed(1)
    layer = SCRATCH_CELLS["gru"](IN, H).double()
    X = torch.randn(B, 1, IN, dtype=torch.float64)
    H0 = torch.randn(B, H, dtype=torch.float64)
    (got,) = layer(X, (H0,))[1]
    p = dict(layer.named_parameters())
    X0 = X[:, 0]
    Z = torch.sigmoid(X0 @ p["W_xz"] + H0 @ p["W_hz"] + p["b_z"])
    R = torch.sigmoid(X0 @ p["W_xr"] + H0 @ p["W_hr"] + p["b_r"])
    torch_form = torch.tanh(X0 @ p["W_xh"] + p["b_xh"] + R * (H0 @ p["W_hh"] + p["b_hh"]))
    textbook_form = torch.tanh(X0 @ p["W_xh"] + p["b_xh"] + (R * H0) @ p["W_hh"] + p["b_hh"])
    torch.testing.assert_close(got, Z * H0 + (1 - Z) * torch_form, atol=1e-12, rtol=0)
    assert not torch.allclose(got, Z * H0 + (1 - Z) * textbook_form, atol=1e-6)


def test_one_hot_row_lookup_equals_matmul() -> None:
    torch.manual_seed(2)
    V = 13
    X = torch.randint(0, V, (B, T))
    W = torch.randn(V, H, requires_grad=True)
    lookup = project_inputs(X, W)  # (B, T, H)
    matmul = F.one_hot(X, V).float() @ W
    torch.testing.assert_close(lookup, matmul, atol=0, rtol=0)
    # the gradient w.r.t. W must agree too: rows of W receive the sum over the positions using them
    G = torch.randn(B, T, H)
    (g_lookup,) = torch.autograd.grad(lookup, W, G)
    (g_matmul,) = torch.autograd.grad(matmul, W, G)
    torch.testing.assert_close(g_lookup, g_matmul, atol=1e-6, rtol=1e-6)


def test_float_inputs_use_matmul() -> None:
    X = torch.randn(B, T, IN)
    W = torch.randn(IN, H)
    torch.testing.assert_close(project_inputs(X, W), X @ W, atol=0, rtol=0)
