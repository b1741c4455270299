"""The recurrent encoder: every engine against torch.nn.RNN/GRU/LSTM, masking, gradients, the registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from rnnlm.recurrent.encoder import RecurrentEncoder, from_torch_state_dict, to_torch_state_dict
from rnnlm.recurrent.engines import ENGINES, register_engine, resolve_engine_name

B, T, IN, H = 3, 6, 4, 5
CELLS = ["rnn", "gru", "lstm"]
ENGINE_NAMES = ["scratch", "fused", "cpu"]
TORCH = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


def encoder(cell: str, engine: str, layers: int = 2, bidirectional: bool = False, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return RecurrentEncoder(cell, IN, H, layers, bidirectional, engine=engine, **kw).double()


def reference(enc: RecurrentEncoder) -> nn.Module:
    """torch's own module holding the encoder's weights."""
    ref = TORCH[enc.cell](IN, H, enc.num_layers, batch_first=True, bidirectional=enc.bidirectional).double()
    ref.load_state_dict(to_torch_state_dict(enc))
    return ref


def random_state(enc: RecurrentEncoder, batch: int = B, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    shape = (enc.num_layers * enc.num_directions, batch, H)
    return tuple(0.5 * torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(enc.num_states))


def run_torch(ref: nn.Module, x: torch.Tensor, state):
    out, final = ref(x, state if len(state) == 2 else state[0])
    return out, (tuple(final) if isinstance(final, tuple) else (final,))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("engine", ENGINE_NAMES)
@pytest.mark.parametrize("cell", CELLS)
def test_engine_matches_torch_module(cell: str, engine: str, bidirectional: bool) -> None:
    enc = encoder(cell, engine, bidirectional=bidirectional)
    ref = reference(enc)
    x = torch.randn(B, T, IN, dtype=torch.float64)
    state = random_state(enc)
    out, final = enc(x, state)
    ref_out, ref_final = run_torch(ref, x, state)
    assert out.shape == (B, T, H * enc.num_directions)
    torch.testing.assert_close(out, ref_out, atol=1e-12, rtol=0)
    for a, b in zip(final, ref_final, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    # and the gradients of every weight and of the input agree with torch's
    x.requires_grad_(True)
    g = torch.Generator().manual_seed(3)
    w_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (enc(x, state)[0] * w_out).sum().backward()
    grad_x, x.grad = x.grad, None
    (run_torch(ref, x, state)[0] * w_out).sum().backward()
    torch.testing.assert_close(grad_x, x.grad, atol=1e-12, rtol=0)
    ours = {k: p.grad for k, p in enc.named_parameters()}
    theirs = from_torch_state_dict({k: p.grad for k, p in ref.named_parameters()}, cell)
    for k in ours:  # a folded bias gets bias_ih's gradient, which equals bias_hh's
        expected = (
            theirs[k]
            if not k.startswith("bias_l")
            else {n: p.grad for n, p in ref.named_parameters()}["bias_ih" + k[len("bias") :]]
        )
        torch.testing.assert_close(ours[k], expected, atol=1e-12, rtol=0, msg=k)


@pytest.mark.parametrize("cell", CELLS)
def test_weights_from_torch_give_torch_outputs(cell: str) -> None:
    """from_torch_state_dict folds torch's two biases; nonzero bias_hh makes the folding matter."""
    torch.manual_seed(4)
    ref = TORCH[cell](IN, H, 2, batch_first=True, bidirectional=True).double()
    enc = RecurrentEncoder(cell, IN, H, 2, bidirectional=True, engine="scratch").double()
    enc.load_state_dict(from_torch_state_dict(ref.state_dict(), cell))
    x = torch.randn(B, T, IN, dtype=torch.float64)
    torch.testing.assert_close(enc(x)[0], ref(x)[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("engine", ENGINE_NAMES)
@pytest.mark.parametrize("cell", CELLS)
def test_padding_never_changes_a_result(cell: str, engine: str, bidirectional: bool) -> None:
    enc = encoder(cell, engine, bidirectional=bidirectional)
    lengths = torch.tensor([6, 2, 4])
    x = torch.randn(B, T, IN, dtype=torch.float64)
    padded = x.clone()
    for b, n in enumerate(lengths.tolist()):
        padded[b, n:] = 1e3 * torch.randn(T - n, IN, dtype=torch.float64)  # garbage that would show
    state = random_state(enc)
    out, final = enc(padded, state, lengths)
    for b, n in enumerate(lengths.tolist()):
        alone, alone_final = enc(x[b : b + 1, :n], tuple(s[:, b : b + 1] for s in state))
        torch.testing.assert_close(out[b : b + 1, :n], alone, atol=1e-12, rtol=0)
        assert not out[b, n:].any()  # outputs past a sequence's end are zero
        for a, s in zip(final, alone_final, strict=True):
            torch.testing.assert_close(a[:, b : b + 1], s, atol=1e-12, rtol=0)


@pytest.mark.parametrize("cell", CELLS)
def test_one_hot_ids_equal_one_hot_vectors(cell: str) -> None:
    for engine in ENGINE_NAMES:
        enc = encoder(cell, engine)
        ids = torch.randint(0, IN, (B, T), generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(enc(ids)[0], enc(F.one_hot(ids, IN).double())[0], atol=1e-12, rtol=0)


@pytest.mark.e2e
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_scratch(cell: str, bidirectional: bool) -> None:
    """Autograd through the scratch cells against finite differences, with lengths and a carried state."""
    torch.manual_seed(6)
    enc = RecurrentEncoder(cell, 2, 3, 2, bidirectional, engine="scratch").double()
    names = [k for k, _ in enc.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in enc.parameters())
    shape = (2 * enc.num_directions, 2, 3)
    state = tuple(0.5 * torch.randn(shape, dtype=torch.float64, requires_grad=True) for _ in range(enc.num_states))
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 3])

    def f(*tensors: torch.Tensor):
        weights = dict(zip(names, tensors[: len(names)], strict=True))
        out, final = functional_call(enc, weights, (tensors[-1], tensors[len(names) : -1], lengths))
        return (out, *final)

    assert torch.autograd.gradcheck(f, params + state + (x,), eps=1e-6, atol=1e-5)


def test_dropout_between_layers_only_in_training() -> None:
    for engine in ENGINE_NAMES:
        enc = encoder("lstm", engine, dropout=0.5)
        x = torch.randn(B, T, IN, dtype=torch.float64)
        enc.eval()
        torch.testing.assert_close(enc(x)[0], run_torch(reference(enc).eval(), x, enc.begin_state(B))[0])
        enc.train()
        assert not torch.allclose(enc(x)[0], enc(x)[0])
        one_layer = encoder("lstm", engine, layers=1, dropout=0.5).train()  # nothing between layers to drop
        torch.testing.assert_close(one_layer(x)[0], one_layer(x)[0], atol=0, rtol=0)


def test_registry_runs_a_new_engine_and_rejects_unknown_names() -> None:
    calls = []

    @register_engine("test-counting", doc="scratch, counted")
    def counting(enc, x, state, lengths):
        calls.append(x.shape)
        return ENGINES["scratch"](enc, x, state, lengths)

    try:
        enc = encoder("gru", "test-counting")
        x = torch.randn(B, T, IN, dtype=torch.float64)
        out = enc(x)[0]
        assert calls == [x.shape]
        enc.engine = "fused"  # switching engines keeps the weights and the numbers
        torch.testing.assert_close(enc(x)[0], out, atol=1e-12, rtol=0)
    finally:
        del ENGINES["test-counting"]
    enc.engine = "cudnn"
    with pytest.raises(ValueError, match="unknown engine.*'cudnn'.*scratch"):
        enc(x)


def test_auto_picks_the_measured_fastest_engine() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for cell in CELLS:
        assert resolve_engine_name("auto", one_hot=True, device=cpu, cell=cell) == "cpu"
        assert resolve_engine_name("auto", True, cpu, cell, padded=True) == "scratch"  # cpu would hand it on
        assert resolve_engine_name("auto", False, cpu, cell, padded=True) == "fused"
        assert resolve_engine_name("auto", False, cpu, cell, "bfloat16") == "cpu"
        want = "fused" if cell == "lstm" else "triton"  # measured on an H200 (engines.py); triton is installed here
        assert resolve_engine_name("auto", one_hot=True, device=cuda, cell=cell) == want
        assert resolve_engine_name("auto", False, cuda, cell, padded=True) == "fused"  # cuDNN's packed sequences
    assert resolve_engine_name("auto", False, cpu, "gru") == resolve_engine_name("auto", False, cpu, "rnn") == "cpu"
    assert resolve_engine_name("auto", False, cpu, "lstm") == "fused"  # torch's oneDNN LSTM kernel
    assert resolve_engine_name("scratch", one_hot=False, device=cpu) == "scratch"


def test_bad_inputs_are_reported() -> None:
    enc = encoder("rnn", "scratch")
    with pytest.raises(ValueError, match="5 features per step but the encoder takes 4"):
        enc(torch.randn(B, T, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="lengths must be"):
        enc(torch.randn(B, T, IN, dtype=torch.float64), lengths=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="cell must be"):
        RecurrentEncoder("transformer", IN, H)
