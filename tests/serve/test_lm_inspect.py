"""The Inspect page's numbers: the plain-PyTorch re-computation against the model's own engine, and the unit
statistics against direct computations."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rnnlm.lm.config import ModelConfig
from rnnlm.lm.model import RNNLM
from rnnlm.serve import lm_inspect

needs_compiler = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")


@pytest.mark.parametrize(
    ("cell", "embed", "tie"), [("lstm", 6, False), ("gru", 0, False), ("rnn", 6, False), ("lstm", 6, True)]
)
def test_states_and_losses_match_the_model(cell, embed, tie):
    """Every layer's hidden state equals what the engine's encoder gives (layer by layer, through a model cut to
    that many layers), and the losses equal the model's own log-softmax."""
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, layers=2, hidden=8, embed=embed, tie_weights=tie)
    model = RNNLM(cfg, 11).eval()
    ids = np.random.default_rng(0).integers(0, 11, 40)
    signals, logits = lm_inspect.states(SimpleNamespace(model=model), ids)
    X = torch.as_tensor(ids)[None]
    with torch.no_grad():
        want_logits, (h_n, *rest) = model(X)
        outputs, _ = model.encode(X)
    torch.testing.assert_close(signals["h1"], outputs[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(signals["h0"][-1], h_n[0, 0], atol=1e-5, rtol=1e-4)  # layer 0's last state
    if cell == "lstm":
        torch.testing.assert_close(signals["c1"][-1], rest[0][1, 0], atol=1e-5, rtol=1e-4)
        # the gates say what the cell state does: c_t = f c_{t-1} + i g
        c, f, i, g = (signals[k + "0"] for k in "cfig")
        torch.testing.assert_close(c[1:], f[1:] * c[:-1] + i[1:] * g[1:])
        torch.testing.assert_close(signals["h0"], signals["o0"] * torch.tanh(c), atol=1e-5, rtol=1e-4)
    if cell == "gru":  # h_t = z h_{t-1} + (1 - z) n
        h, z, n = signals["h1"], signals["z1"], signals["n1"]
        torch.testing.assert_close(h[1:], z[1:] * h[:-1] + (1 - z[1:]) * n[1:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(logits, want_logits[0], atol=1e-4, rtol=1e-4)
    only, _ = lm_inspect.states(SimpleNamespace(model=model), ids, gates=(1,))  # gates of the top layer alone
    assert set(only) == {"h0"} | {k for k in signals if k.endswith("1")}
    for k, v in only.items():
        torch.testing.assert_close(v, signals[k])
    nll = -torch.log_softmax(want_logits[0, :-1].double(), -1)[torch.arange(39), torch.as_tensor(ids[1:])]
    got = lm_inspect.losses(logits, ids)
    assert got[0] is None
    np.testing.assert_allclose(got[1:], nll.numpy(), atol=2e-4)


def test_ranking_finds_the_unit_that_is_the_property():
    text = 'ab "cd" (e) 12 X\nfg "h"\n'
    tokens = list(text)
    props = lm_inspect.properties(tokens)
    assert props["in quotes"][text.index("c")] == 1 and props["in quotes"][text.index("a")] == 0
    assert props["in brackets"][text.index("e")] == 1 and props["in brackets"][text.index("1")] == 0
    assert props["position in line"][text.index("f")] == 0 and props["position in line"][2] == 2
    m = torch.randn(len(tokens), 6, generator=torch.Generator().manual_seed(1)) * 0.1
    m[:, 4] = torch.as_tensor(props["digit"])  # unit 4 is on exactly at the digits
    m[:, 2] = -torch.as_tensor(props["in quotes"])  # unit 2 is off inside quotes
    ranked = lm_inspect.rank_units(m, tokens)
    assert ranked["digit"][0] == [4, 1.0]
    assert ranked["in quotes"][0] == [2, -1.0]


def test_span_units_and_top_places():
    m = torch.zeros(30, 4)
    m[10:13, 3] = 1.0  # unit 3 fires on steps 10..12 only
    m[20:23, 3] = 0.5  # and less on 20..22
    units = lm_inspect.span_units(m, 10, 13, top=2)
    assert units[0][0] == 3 and units[0][1] == 1.0
    tokens = list("abcdefghijklmnopqrstuvwxyz0123")
    places = lm_inspect.top_places(tokens, m, [3], 3, top=2, context=2)
    assert [(p["start"], p["span"], p["before"], p["after"]) for p in places] == [
        (10, "klm", "ij", "no"),
        (20, "uvw", "st", "xy"),
    ]


def test_quantize_keeps_values_to_the_scale():
    m = torch.tensor([[-3.0, 0.0], [1.5, 3.0]])
    q, scale = lm_inspect.quantize(m)
    back = (np.frombuffer(q, np.uint8).reshape(2, 2) / 127.5 - 1) * scale
    assert scale == 3.0 and np.abs(back - m.numpy()).max() <= scale / 255 + 1e-9


def test_cluster_order_puts_units_that_move_together_side_by_side():
    t = torch.linspace(0, 6, 50)
    a, b = torch.sin(t), torch.cos(3 * t)
    m = torch.stack([a, b, a * 2, b + 0.01 * t, -a], 1)
    order = lm_inspect.unit_orders(m)["cluster"]
    assert sorted(order) == list(range(5))
    pos = {u: k for k, u in enumerate(order)}
    assert abs(pos[0] - pos[2]) == 1 and abs(pos[1] - pos[3]) == 1


def test_kept_states_give_what_a_fresh_pass_gives_and_change_with_the_text():
    """A text's kept states serve every signal and layer as states() computes them afresh; another text replaces
    them, and the validation text's signals are the same in half precision."""
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(cell="lstm", layers=2, hidden=8, embed=6), 11).eval()
    lm, cache = SimpleNamespace(model=model), {}
    ids = np.random.default_rng(1).integers(0, 11, 30)
    fresh, logits = lm_inspect.states(lm, ids)
    kept = lm_inspect.text_states(lm, cache, ids)
    for key in ["c1", "h0", "f0", "o1", "h1"]:  # the gates computed afterwards, from the kept hidden states
        torch.testing.assert_close(kept.signal(key), fresh[key], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kept.logits, logits, atol=1e-5, rtol=1e-5)
    assert lm_inspect.text_states(lm, cache, ids.copy()) is kept  # the same text: nothing computed again
    other = ids.copy()
    other[5] = (other[5] + 1) % 11
    again = lm_inspect.text_states(lm, cache, other)
    assert again is not kept and not torch.equal(again.signal("c1"), kept.signal("c1"))
    half = lm_inspect.TextStates(lm, ids, half=True)
    assert half.signal("g1").dtype == torch.float16
    torch.testing.assert_close(half.signal("g1").float(), fresh["g1"], atol=1e-3, rtol=1e-3)


@needs_compiler
@pytest.mark.parametrize(("cell", "embed"), [("lstm", 6), ("gru", 0), ("rnn", 6)])
def test_the_trace_kernel_gives_what_torch_and_the_gate_products_give(cell, embed):
    """The compiled one-pass trace (h, c and gates kept per step) against torch.nn.LSTM (GRU, RNN) for h and the
    all-steps matrix product for the gates, layer by layer."""
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(cell=cell, layers=2, hidden=12, embed=embed), 11).eval()
    lm = SimpleNamespace(model=model)
    ids = np.random.default_rng(2).integers(0, 11, 50)
    traced = lm_inspect.traced_states(lm, ids, (0, 1))
    assert traced is not None, "the decode kernel did not build (see the log)"
    _, logits, signals = traced
    inputs, want_logits = lm_inspect.hidden_states(lm, ids)
    want = {f"h{layer}": h for layer, h in enumerate(inputs[1:])}
    for layer in (0, 1):
        want.update(lm_inspect.gate_signals(lm, inputs, layer))
    assert set(signals) == set(want)
    for key, value in want.items():
        torch.testing.assert_close(signals[key], value, atol=2e-5, rtol=1e-4, msg=key)
    torch.testing.assert_close(logits, want_logits, atol=1e-4, rtol=1e-4)
    only = lm_inspect.traced_states(lm, ids, (1,))[2]  # the gates of one layer alone
    assert set(only) == {"h0"} | {k for k in want if k.endswith("1")}
