"""The triton engine (engine_triton.py, triton_kernels.py) against scratch and finite differences.

Without a GPU the kernels run under Triton's interpreter (conftest.py sets TRITON_INTERPRET=1), which
executes the same kernel code on CPU tensors with numpy, one program after another. With a GPU the
same tests run the compiled kernels, and the tests marked ``cuda`` add the grid-barrier cut
(several programs across the hidden units) and the whole training step in one CUDA graph.
"""

from __future__ import annotations

import pytest
import torch

from engine_checks import everything, random_inputs
from rnnlm.recurrent import engine_triton as et
from rnnlm.recurrent.encoder import RecurrentEncoder

pytestmark = pytest.mark.skipif(not et.available(), reason="needs the triton package")

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
CELLS = ["rnn", "gru", "lstm"]
# Without a GPU each interpreted kernel call takes a good part of a second: those tests are e2e there.
slow_when_interpreted = pytest.mark.e2e if not CUDA else (lambda test: test)
# Shapes that are not whole tiles: batch rows and hidden units are masked at the edges.
B, T, IN, H = 3, 5, 4, 20


def encoder(cell: str, bidirectional: bool = False, layers: int = 2, dtype=torch.float64, **kw) -> RecurrentEncoder:
    torch.manual_seed(0)
    return RecurrentEncoder(cell, IN, H, layers, bidirectional, engine="scratch", **kw).to(DEVICE, dtype)


@slow_when_interpreted
@pytest.mark.parametrize("one_hot", [False, True])
@pytest.mark.parametrize("carried", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_triton_engine_equals_scratch(cell: str, bidirectional: bool, carried: bool, one_hot: bool) -> None:
    """Outputs, final state and every gradient (weights, input, carried state), float64, two layers."""
    enc = encoder(cell, bidirectional)
    x, state = random_inputs(enc, B, T, one_hot, carried)
    ours, ref = everything(enc, "triton", x, state), everything(enc, "scratch", x, state)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@slow_when_interpreted
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck(cell: str) -> None:
    """The hand-written backward through time against finite differences of the kernel's forward."""
    torch.manual_seed(2)
    G = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    h, b, t, n_in = 3, 2, 3, 2

    def p(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, dtype=torch.float64, device=DEVICE) * 0.5).requires_grad_(True)

    x, W_ih, bias, h0, W_hh = p(t, b, n_in), p(G * h, n_in), p(G * h), p(b, h), p(G * h, h)
    c0 = p(b, h) if cell == "lstm" else None
    b_hn = p(h) if cell == "gru" else None
    for reverse in (False, True):
        args = [a for a in (x, W_ih, bias, h0, c0, W_hh, b_hn) if a is not None]

        def fn(*a, reverse=reverse):
            it = iter(a)
            full = [next(it) if v is not None else None for v in (x, W_ih, bias, h0, c0, W_hh, b_hn)]
            return et.TritonSequence.apply(*full, cell, reverse, None)

        assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6, fast_mode=True)


@slow_when_interpreted
@pytest.mark.parametrize("cell", CELLS)
def test_float32_and_bfloat16_matmuls_stay_close(cell: str) -> None:
    """float32 as a model trains (TF32 products on a GPU), and bfloat16 matmuls with float32 state."""
    ref = encoder(cell, dtype=torch.float32)
    x, state = random_inputs(ref, B, T, one_hot=False, carried=True, dtype=torch.float32)
    want = everything(ref, "scratch", x, state)
    for mm, tol in (("float32", 1e-2 if CUDA else 1e-5), ("bfloat16", 3e-2)):
        ref.matmul_dtype = mm
        got = everything(ref, "triton", x, state)
        for a, b in zip(got, want, strict=True):
            scale = b.abs().max().clamp_min(1.0)
            assert (a - b).abs().max() <= tol * scale, (mm, (a - b).abs().max())


@slow_when_interpreted
def test_state_carried_across_calls_equals_one_long_call() -> None:
    """Sequential batches: running T steps in two calls, the state handed on, equals one call."""
    enc = encoder("lstm", dtype=torch.float32)
    enc.engine = "triton"
    x = torch.randn(B, 2 * T, IN, device=DEVICE)
    with torch.no_grad():
        whole, s_whole = enc(x)
        first, s = enc(x[:, :T])
        second, s2 = enc(x[:, T:], s)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=1e-5, rtol=0)
    for a, b in zip(s2, s_whole, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_padded_batches_fall_back_to_scratch() -> None:
    enc = encoder("gru", bidirectional=True)
    x, _ = random_inputs(enc, B, T, one_hot=False, carried=False)
    lengths = torch.tensor([5, 2, 4], device=DEVICE)
    enc.engine = "triton"
    ours = enc(x, lengths=lengths)[0]
    enc.engine = "scratch"
    torch.testing.assert_close(ours, enc(x, lengths=lengths)[0])


def test_config_splits_hidden_units_only_where_programs_stay_resident() -> None:
    """The grid barrier needs every program of the grid resident at once: at most one per multiprocessor."""
    for b, h, sms in ((32, 256, 132), (64, 512, 132), (512, 512, 132), (128, 1024, 132), (3, 20, 132), (16, 64, 4)):
        cfg = et.split_config(b, h, sms)
        blocks = -(-b // cfg.bb)
        assert blocks * cfg.nsplit <= max(sms, blocks), (b, h, cfg)
        assert cfg.nsplit == 1 or h // cfg.nsplit >= 32
        assert cfg.bn & (cfg.bn - 1) == 0 and cfg.bn >= 16
    assert et.split_config(32, 256, 132).nsplit == 8  # the recipe: 2 batch blocks x 8 slices of 32 units
    for b, h, sms in ((32, 256, 132), (512, 512, 132), (128, 1024, 132), (16, 64, 4)):
        cuts = et.candidates(b, h, sms)
        assert cuts[0].nsplit == 1 and [c.nsplit for c in cuts] == [2**k for k in range(len(cuts))]
        assert all(-(-b // c.bb) * c.nsplit <= sms or c.nsplit == 1 for c in cuts)
        assert all(h // c.nsplit >= 16 for c in cuts)
    assert [c.nsplit for c in et.candidates(128, 1024, 132)] == [1, 2, 4, 8, 16]


def test_unavailable_device_names_the_way_out(monkeypatch) -> None:
    monkeypatch.setattr(et, "interpreted", lambda: False)
    enc = encoder("rnn", dtype=torch.float32).cpu()
    enc.engine = "triton"
    with pytest.raises(RuntimeError, match="CUDA device"):
        enc(torch.randn(B, T, IN))


@pytest.mark.skipif(not CUDA, reason="needs a GPU: the grid barrier cannot run under the interpreter")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("nsplit", [2, 4, 8])
def test_grid_barrier_cut_equals_scratch_on_gpu(cell: str, nsplit: int, dtype, monkeypatch) -> None:
    """Several programs across the hidden units meet at a grid barrier after every step (float32 without TF32)."""
    torch.manual_seed(0)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    enc = RecurrentEncoder(cell, 16, 256, 2, bidirectional=True, engine="scratch").to(DEVICE, dtype)
    monkeypatch.setattr(et, "OVERRIDE", et.KernelConfig(16, nsplit, 32, 32))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 12, 16, generator=g, dtype=dtype).to(DEVICE).requires_grad_(True)
    state = tuple(torch.randn(4, 40, 256, dtype=dtype).to(DEVICE) for _ in range(enc.num_states))
    ours, ref = everything(enc, "triton", x, state), everything(enc, "scratch", x, state)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-9 if dtype == torch.float64 else 1e-4, rtol=0)
