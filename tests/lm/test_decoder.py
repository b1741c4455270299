"""StepDecoder and the compiled NativeDecoder: generation steps against the model's forward pass and each other."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import Tensor

from rnnlm.core.errors import NonFiniteLogitsError
from rnnlm.lm import generate
from rnnlm.lm.config import ModelConfig
from rnnlm.lm.decoder import NativeDecoder, StepDecoder
from rnnlm.lm.generate import NATIVE_CHUNK, generate_ids
from rnnlm.lm.model import RNNLM


@pytest.mark.parametrize("embed,tie", [(0, False), (6, False), (6, True)])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_a_step_equals_the_forward_pass(cell: str, embed: int, tie: bool) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, layers=2, hidden=8, embed=embed, dropout=0.3, tie_weights=tie)  # tie: a projection
    model = RNNLM(cfg, 11).double()
    decode = model.decoder()
    g = torch.Generator().manual_seed(1)
    state = tuple(torch.randn(s.shape, generator=g, dtype=torch.float64) for s in model.begin_state(3))
    ids = torch.tensor([4, 0, 10])
    for _ in range(3):  # a few steps, each from the state the last one left
        logits, new = decode(ids, state)
        with torch.no_grad():
            ref_logits, ref_state = model.eval()(ids.view(3, 1), state)
        torch.testing.assert_close(logits, ref_logits[:, 0], atol=1e-12, rtol=0)
        for a, b in zip(new, ref_state, strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
        state, ids = new, logits.argmax(-1)


def test_greedy_generation_is_unchanged_by_the_decoder(monkeypatch) -> None:
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(cell="gru", layers=2, hidden=16, embed=0), 9)
    fast = [int(t) for t in generate_ids(model, [1, 2], 30, temperature=0.0)]
    monkeypatch.delattr(RNNLM, "decoder")
    slow = [int(t) for t in generate_ids(model, [1, 2], 30, temperature=0.0)]
    assert fast == slow


def test_a_bidirectional_encoder_is_refused() -> None:
    model = RNNLM(ModelConfig(cell="rnn", layers=1, hidden=4, embed=0), 5)
    model.encoder.bidirectional = True
    with pytest.raises(ValueError, match="bidirectional"):
        StepDecoder(model)


# ----------------------------------------------------------------------------- the compiled decoder

needs_compiler = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")


def _native(model: RNNLM) -> NativeDecoder:
    native = NativeDecoder.create(model.decoder())
    assert native is not None, "the decode kernel did not build (see the log)"
    return native


@needs_compiler
@pytest.mark.parametrize("embed,tie", [(0, False), (6, False), (6, True)])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_the_compiled_step_equals_the_step_decoder(cell: str, embed: int, tie: bool) -> None:
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(cell=cell, layers=2, hidden=24, embed=embed, tie_weights=tie), 37)
    decode, native = model.decoder(), _native(model)
    g = torch.Generator().manual_seed(1)
    state = tuple(torch.randn(s.shape, generator=g) for s in model.begin_state(1))
    st = native.begin(state)
    token = 5
    for _ in range(6):  # greedy steps, each fed back: logits and state after every one
        native.feed(st, [token])
        logits, state = decode(torch.tensor([token]), state)
        torch.testing.assert_close(st.logits, logits[0], atol=1e-5, rtol=1e-5)
        for a, b in zip(st.state(), state, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        token = int(native.sample(st, 1, None, 0.0, feed_last=False)[0])
        assert token == int(logits.argmax())


@needs_compiler
@pytest.mark.parametrize("temperature", [0.0, 0.8, 1.5])
@pytest.mark.parametrize("cell,embed", [("rnn", 0), ("gru", 8), ("lstm", 0), ("lstm", 8)])
def test_batch_one_generation_draws_the_same_tokens_through_the_kernel(cell, embed, temperature) -> None:
    """The whole stream (prefix, chunked uniforms, draws) against the torch path with the same generator seed."""
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(cell=cell, layers=2, hidden=32, embed=embed), 41)
    _native(model)  # the fast path is really taken
    length = 3 * NATIVE_CHUNK + 5  # several chunks and a partial one

    def run(native: bool = True) -> list[int]:
        g = torch.Generator().manual_seed(7)
        steps = generate_ids(model, [1, 2, 3], length, temperature=temperature, generator=g, use_native=native)
        return [int(t) for t in steps]

    def run_global(native: bool = True) -> list[int]:  # the global generator
        torch.manual_seed(11)
        return [int(t) for t in generate_ids(model, [4], 40, temperature=temperature, use_native=native)]

    fast, fast_global = run(), run_global()
    assert fast == run(native=False)
    assert fast_global == run_global(native=False)


@needs_compiler
@pytest.mark.parametrize("cell,embed", [("gru", 0), ("lstm", 8)])
def test_the_kernels_trace_holds_the_logits_each_token_was_drawn_from(cell: str, embed: int) -> None:
    """The logits the kernel hands back per draw equal the step decoder's after feeding the tokens before it."""
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(cell=cell, layers=2, hidden=16, embed=embed), 23)
    native, decode = _native(model), model.decoder()
    st = native.begin()
    native.feed(st, [1, 2])
    trace = torch.full((7, 23), float("nan"))
    toks = native.sample(st, 7, torch.rand(7, dtype=torch.float64), 0.9, feed_last=False, trace=trace)
    logits, state = decode(torch.tensor([1]), model.begin_state(1))
    logits, state = decode(torch.tensor([2]), state)
    for step, tok in enumerate(toks.tolist()):
        torch.testing.assert_close(trace[step], logits[0], atol=1e-5, rtol=1e-5)
        logits, state = decode(torch.tensor([tok]), state)
    with pytest.raises(ValueError, match="trace"):
        native.sample(st, 3, torch.rand(3, dtype=torch.float64), 0.9, trace=torch.empty(2, 23))


@needs_compiler
def test_use_native_false_keeps_one_stream_on_the_torch_path(monkeypatch) -> None:
    """A parameter, not a module switch: two streams open side by side each take their own path."""
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(cell="lstm", layers=1, hidden=16, embed=0), 13)
    calls: list[int] = []
    real_sample = NativeDecoder.sample

    def counted(self, st, steps, *args, **kwargs):
        calls.append(steps)
        return real_sample(self, st, steps, *args, **kwargs)

    monkeypatch.setattr(NativeDecoder, "sample", counted)
    g_torch, g_native = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    slow = generate_ids(model, [1], 10, temperature=0.9, generator=g_torch, use_native=False)
    fast = generate_ids(model, [1], 10, temperature=0.9, generator=g_native)
    pairs = [(int(a), int(b)) for a, b in zip(slow, fast, strict=True)]  # interleaved, one token of each at a time
    assert calls == [10]  # the default stream ran in one kernel call, the other never called the kernel
    assert [a for a, _ in pairs] == [b for _, b in pairs]


@needs_compiler
def test_the_compiled_decoder_refuses_bad_ids_and_draws() -> None:
    model = RNNLM(ModelConfig(cell="gru", layers=1, hidden=8, embed=0), 9)
    native = _native(model)
    st = native.begin()
    with pytest.raises(ValueError, match=r"\[0, 9\)"):
        native.feed(st, [3, 9])
    with pytest.raises(ValueError, match="needs one uniform per step"):
        native.sample(st, 2, None, 0.7)
    with pytest.raises(ValueError, match="3 steps need 3 uniforms"):
        native.sample(st, 3, torch.rand(2, dtype=torch.float64), 0.7)
    with pytest.raises(ValueError, match="batch-1 state"):
        native.begin(model.begin_state(2))


def test_float64_models_keep_the_torch_step() -> None:
    model = RNNLM(ModelConfig(cell="rnn", layers=1, hidden=4, embed=0), 5).double()
    assert NativeDecoder.create(model.decoder()) is None


def test_the_step_decoder_is_rebuilt_when_the_weights_change() -> None:
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(cell="lstm", layers=1, hidden=8, embed=4), 7)
    first = model.decoder()
    assert model.decoder() is first  # unchanged weights: the same copy
    ids, state = torch.tensor([2]), model.begin_state(1)
    before = first(ids, state)[0]
    with torch.no_grad():
        model.head.bias.add_(1.0)  # an in-place update, as an optimizer step makes
    second = model.decoder()
    assert second is not first
    torch.testing.assert_close(second(ids, state)[0], before + 1.0)
    model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    assert model.decoder() is not second


def _outcome(draw) -> int | str:
    """A draw's token, or the message of the NonFiniteLogitsError it raised."""
    try:
        return int(draw())
    except NonFiniteLogitsError as e:
        return str(e)


@needs_compiler
@pytest.mark.parametrize("temperature", [0.0, 0.7])
@pytest.mark.parametrize("case", ["a NaN", "a +inf", "all -inf", "some -inf"])
def test_the_kernel_draws_what_sample_next_draws_from_non_finite_logits(case: str, temperature: float) -> None:
    """Both refuse logits that give no distribution, with the same error; both agree where one exists."""
    model = RNNLM(ModelConfig(cell="gru", layers=1, hidden=8, embed=0), 9)
    native = _native(model)
    logits = torch.linspace(-1.0, 1.0, 9)
    if case == "a NaN":
        logits[3] = float("nan")  # not the first: the kernel's running max skipped it and drew another id
    elif case == "a +inf":
        logits[5] = float("inf")
    elif case == "all -inf":
        logits.fill_(float("-inf"))
    else:
        logits[1::2] = float("-inf")

    def kernel() -> Tensor:
        st = native.begin()
        st.logits.copy_(logits)
        u = None if temperature == 0 else torch.rand(1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        return native.sample(st, 1, u, temperature, feed_last=False)[0]

    def torch_path() -> Tensor:
        return generate.sample_next(logits.view(1, 9), temperature, generator=torch.Generator().manual_seed(5))[0]

    fast, slow = _outcome(kernel), _outcome(torch_path)
    assert fast == slow
    refused = case == "a NaN" or (temperature > 0 and case in ("a +inf", "all -inf"))
    assert isinstance(fast, str) == refused, fast
    if isinstance(fast, int) and case == "some -inf":
        assert fast % 2 == 0  # a token of probability 0 is never drawn


@needs_compiler
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_nan_weights_raise_the_same_error_as_the_torch_path_does(temperature: float) -> None:
    """A diverged model: generation through the compiled decoder and through torch fails alike, instead
    of returning token V-1 (or whichever id the NaN left) without a word."""
    model = RNNLM(ModelConfig(cell="rnn", layers=1, hidden=8, embed=0), 9)
    with torch.no_grad():
        model.head.weight[3].fill_(float("nan"))  # one NaN logit, not the first
    _native(model)  # the fast path is really taken

    def run(native: bool) -> int | str:
        try:
            g = torch.Generator().manual_seed(0)
            return len(list(generate_ids(model, [1], 5, temperature=temperature, generator=g, use_native=native)))
        except NonFiniteLogitsError as e:
            return str(e)

    fast, slow = run(True), run(False)
    assert isinstance(fast, str) and "logits hold NaN" in fast
    assert fast == slow


def test_replaced_parameters_rebuild_the_step_decoder() -> None:
    """A parameter swapped for a new tensor (load_state_dict(assign=True), a .double()) is seen even at version 0."""
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(cell="gru", layers=1, hidden=8, embed=0), 7)
    first = model.decoder()
    new_state = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    model.load_state_dict(new_state, assign=True)
    second = model.decoder()
    assert second is not first
    torch.testing.assert_close(second.head_bias, new_state["head.bias"])
