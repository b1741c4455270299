"""The cpu engine (engine_cpu.py, sequence_fns.py, gemm.py) against scratch, finite differences and itself."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from engine_checks import everything, random_inputs
from rnnlm.lm.config import ModelConfig
from rnnlm.lm.model import RNNLM
from rnnlm.recurrent import gemm, sequence_fns
from rnnlm.recurrent.encoder import RecurrentEncoder
from rnnlm.recurrent.sequence_fns import GRUSequence, LSTMSequence, RNNSequence

B, T, IN, H = 3, 6, 4, 5
CELLS = ["rnn", "gru", "lstm"]


def encoder(cell: str, bidirectional: bool = False, layers: int = 2, **kw) -> RecurrentEncoder:
    torch.manual_seed(0)
    return RecurrentEncoder(cell, IN, H, layers, bidirectional, engine="scratch", **kw).double()


@pytest.mark.parametrize("one_hot", [False, True])
@pytest.mark.parametrize("carried", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_cpu_engine_equals_scratch(cell: str, bidirectional: bool, carried: bool, one_hot: bool) -> None:
    """Outputs, final state and every gradient (weights, input, carried state) in float64."""
    enc = encoder(cell, bidirectional)
    x, state = random_inputs(enc, B, T, one_hot, carried)
    ours, ref = everything(enc, "cpu", x, state), everything(enc, "scratch", x, state)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("cell", CELLS)
def test_lengths_fall_back_to_scratch(cell: str) -> None:
    enc = encoder(cell, bidirectional=True)
    x = torch.randn(B, T, IN, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 2, 4])
    for a, b in zip(
        everything(enc, "cpu", x, None, lengths), everything(enc, "scratch", x, None, lengths), strict=True
    ):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_sequence_functions(cell: str, reverse: bool) -> None:
    """Each Function's backward against finite differences, with a carried state, forward and reversed."""
    g = torch.Generator().manual_seed(7)

    def rand(*shape: int) -> torch.Tensor:
        return (0.5 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_()

    n, bsz, h, G = 4, 2, 3, {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    x, Wi, b, h0, W = rand(n, bsz, 2), rand(G * h, 2), rand(G * h), rand(bsz, h), rand(G * h, h)
    if cell == "rnn":
        fn, args = RNNSequence.apply, (x, Wi, b, h0, W)
    elif cell == "gru":
        fn, args = GRUSequence.apply, (x, Wi, b, h0, W, rand(h))
    else:
        fn, args = LSTMSequence.apply, (x, Wi, b, h0, rand(bsz, h), W)
    assert torch.autograd.gradcheck(lambda *a: fn(*a, reverse, None), args, eps=1e-6, atol=1e-7)


@pytest.mark.e2e
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_through_the_encoder(cell: str) -> None:
    """Two bidirectional layers, autograd through projections, Functions and stacking, against finite differences."""
    torch.manual_seed(6)
    enc = RecurrentEncoder(cell, 2, 3, 2, bidirectional=True, engine="cpu").double()
    names = [k for k, _ in enc.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in enc.parameters())
    state = tuple(0.5 * torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True) for _ in range(enc.num_states))
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)

    def f(*tensors: torch.Tensor):
        weights = dict(zip(names, tensors[: len(names)], strict=True))
        out, final = functional_call(enc, weights, (tensors[-1], tensors[len(names) : -1]))
        return (out, *final)

    assert torch.autograd.gradcheck(f, params + state + (x,), eps=1e-6, atol=1e-6)


def test_dropout_between_layers_draws_scratchs_mask() -> None:
    enc = encoder("lstm", dropout=0.5).train()
    x = torch.randn(B, T, IN, dtype=torch.float64)
    outputs = {}
    for engine in ("cpu", "scratch"):
        enc.engine = engine
        torch.manual_seed(11)
        outputs[engine] = enc(x)[0]
    torch.testing.assert_close(outputs["cpu"], outputs["scratch"], atol=1e-12, rtol=0)


@pytest.mark.parametrize("switch", ["onednn", "packing"])
@pytest.mark.parametrize("cell", CELLS)
def test_float32_fast_matmuls_equal_the_plain_ones(cell: str, switch: str) -> None:
    """Outputs, state and gradients in float32 up to rounding: oneDNN's matmuls against torch.mm (onednn off),
    and the recurrent weights packed for oneDNN (the default) against unpacked (packing off)."""
    if not gemm.onednn_works(torch.float32):
        pytest.skip("oneDNN's float32 matmul does not run with this torch build")
    torch.manual_seed(0)
    enc = RecurrentEncoder(cell, 16, 32, 2, bidirectional=True, engine="cpu")
    x = torch.randn(4, 9, 16, requires_grad=True)
    fast = everything(enc, "cpu", x, None)
    with gemm.onednn(enabled=switch != "onednn", pack=switch != "packing"):
        plain = everything(enc, "cpu", x, None)
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_weights_give_the_unpacked_products(dtype: torch.dtype) -> None:
    """gemm.packed's oneDNN layout against the plain weight, for batches other than the one packed for."""
    if gemm.packed(torch.ones(2, 2, dtype=dtype), 1).layout == torch.strided:
        pytest.skip(f"oneDNN cannot pack {dtype} weights here (no oneDNN, or bfloat16 on a CPU without AVX512)")
    torch.manual_seed(0)
    W = torch.randn(96, 40).to(dtype)
    P = gemm.packed(W, 8)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=0.05, rtol=0.02)
    for rows in (1, 3, 8, 33):
        x = torch.randn(rows, 40).to(dtype)
        torch.testing.assert_close(gemm.linear(x, P), gemm.linear(x, W), **tol)
        base = torch.randn(rows, 96)
        out = torch.empty(rows, 96)
        torch.testing.assert_close(gemm.add_linear(base, x, P, out=out), base + (x @ W.t()).float(), **tol)


@pytest.mark.parametrize("mm_dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("reverse", [False, True])
def test_fused_lstm_steps_equal_the_torch_operators(mm_dtype: torch.dtype | None, reverse: bool, monkeypatch) -> None:
    """csrc/lstm_step.c against LSTMSequence's torch operators in float32: outputs, final state and every
    gradient, with a gradient that reaches the outputs through a transposed (non-contiguous) view."""
    lib = sequence_fns._lstm_steps()
    if lib is None:
        pytest.skip("no C compiler: the fused steps are not built")
    calls = []
    monkeypatch.setattr(sequence_fns, "_lstm_steps", lambda: calls.append(1) or lib)
    torch.manual_seed(0)
    T_, B_, H_, I_ = 9, 5, 12, 7
    inputs = [torch.randn(T_, B_, I_), torch.randn(4 * H_, I_) * 0.3, torch.randn(4 * H_), torch.randn(B_, H_)]
    inputs += [torch.randn(B_, H_), torch.randn(4 * H_, H_) * 0.3]
    R = torch.randn(B_, T_, H_)
    results = {}
    for fused in (True, False):
        x, W_ih, bias, h0, c0, W_hh = (t.clone().requires_grad_() for t in inputs)
        with sequence_fns.native_steps(fused):
            out, h, c = LSTMSequence.apply(x, W_ih, bias, h0, c0, W_hh, reverse, mm_dtype, None)
            ((out.transpose(0, 1) * R).sum() + h.sum() * 0.3 + c.pow(2).sum()).backward()
        results[fused] = [out, h, c, *(t.grad for t in (x, W_ih, bias, h0, c0, W_hh))]
    assert calls, "the fused steps were not used"
    for a, b in zip(results[True], results[False], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def train_losses(engine: str, cell: str, steps: int = 30, matmul_dtype: str = "float32") -> list[float]:
    torch.manual_seed(0)
    embed = 0 if cell == "rnn" else 8
    model = RNNLM(
        ModelConfig(cell=cell, layers=2, hidden=32, embed=embed, engine=engine, matmul_dtype=matmul_dtype), 20
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(1)
    text = torch.randint(0, 20, (16,), generator=g).repeat(8 * 13 * steps // 16 + 1)  # learnable: it repeats
    streams = text[: 8 * 13 * steps].view(8, -1)  # sequential batches, the state carried between them
    losses, state = [], None
    for i in range(steps):
        X, Y = streams[:, 13 * i : 13 * i + 12], streams[:, 13 * i + 1 : 13 * i + 13]
        outputs, state = model.encode(X, state)  # the loss as the language-model task computes it
        loss = model.head.loss(outputs, Y)
        state = tuple(s.detach() for s in state)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("cell", CELLS)
def test_training_follows_scratch(cell: str) -> None:
    """30 float32 SGD steps with a carried state: the loss trajectory matches scratch's to 1e-5."""
    ours, ref = train_losses("cpu", cell), train_losses("scratch", cell)
    assert ref[-1] < ref[0] - 0.1  # it learns something, so the comparison means something
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(ref), atol=1e-5, rtol=0)


@pytest.mark.parametrize("cell", CELLS)
def test_bfloat16_matmuls_train_like_float32(cell: str) -> None:
    """--matmul-dtype bfloat16 (cpu engine and loss): the 30-step loss trajectory within 5e-3 of float32's."""
    ours, ref = train_losses("cpu", cell, matmul_dtype="bfloat16"), train_losses("scratch", cell)
    assert ours != ref  # the products really were rounded
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(ref), atol=5e-3, rtol=0)


def test_backward_twice_recomputes_what_the_first_overwrote() -> None:
    """The LSTM's backward reuses its saved buffers in place; a second backward (retain_graph) recomputes them."""
    enc = encoder("lstm", bidirectional=True)
    enc.engine = "cpu"
    x = torch.randn(B, T, IN, dtype=torch.float64, requires_grad=True)
    out = enc(x)[0].sum()
    first = torch.autograd.grad(out, [x, *enc.parameters()], retain_graph=True)
    for a, b in zip(first, torch.autograd.grad(out, [x, *enc.parameters()]), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_buffers_handed_on_between_steps_change_nothing() -> None:
    """The LSTM reuses its buffers from one step to the next (Workspace): the same gradients as fresh ones."""
    grads = {}
    for reuse in (True, False):
        torch.manual_seed(0)
        enc = RecurrentEncoder("lstm", 8, 16, 2, engine="cpu", matmul_dtype="bfloat16")
        if not reuse:
            enc._cpu_workspace = None
        x = torch.randn(5, 7, 8)
        for _ in range(3):  # later steps run in the buffers the earlier ones handed back
            enc.zero_grad()
            enc(x)[0].square().sum().backward()
        grads[reuse] = [p.grad for p in enc.parameters()]
    for a, b in zip(grads[True], grads[False], strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
