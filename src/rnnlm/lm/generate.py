"""Token-level generation: greedy decoding, temperature / top-k / top-p sampling, and beam search.

Everything here works on token ids and on any model with the package's recurrent interface::

    model(X: LongTensor (B, T), state: State | None) -> (logits (B, T, V), state)
    model.begin_state(batch_size, device) -> State      # State = tuple of (layers, B, hidden)
    model.decoder() -> step(ids (B,), state) -> (logits (B, V), state)   # optional: a faster single step

Text in and text out (encoding the prefix, decoding the ids) belongs to the caller, so that char
and word models share this code.

One row with plain temperature sampling on the CPU (what ``rnnlm generate`` does) runs through the
compiled decoder (decoder.py, NativeDecoder): the same draws from the same generator, the steps
in C, the ids yielded in chunks of NATIVE_CHUNK.

Two decisions worth knowing:

* Random draws happen on the device of the ``generator`` when one is given (else on the logits'
  device with PyTorch's global RNG). Passing a CPU ``torch.Generator`` makes a seed give the same
  draws whether the model runs on CPU or GPU; the per-step copy of a (num_samples, V) probability
  table to the host costs little next to the forward pass, and streaming needs the ids there anyway.
* The model is switched to eval mode only around its own forward calls, so a half-consumed
  ``generate_ids`` stream never leaves a training model in eval mode (training loops print samples
  between epochs and may drop the stream early).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from rnnlm.core.errors import NonFiniteLogitsError
from rnnlm.lm.decoder import NativeDecoder
from rnnlm.recurrent.state import State, select_state
from rnnlm.training.threads import num_threads

# A nucleus whose mass falls short of top_p by no more than this counts as reaching it, so that a
# p that exactly covers a set of tokens keeps that set despite rounding in the cumulative sum.
_TOP_P_TOLERANCE = 1e-6
# Steps per call of the compiled batch-1 decoder: long enough to hide the call, short enough to stream.
NATIVE_CHUNK = 32


# ----------------------------------------------------------------------------- argument checks


def _check_prefix_and_length(prefix_ids: Sequence[int], length: int) -> None:
    if len(prefix_ids) == 0:
        raise ValueError("a prefix of at least one token is needed to start generation (got an empty prefix)")
    if any(int(i) < 0 for i in prefix_ids):
        raise ValueError(f"prefix token ids must be non-negative, got {list(prefix_ids)}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")


def _check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    if not temperature >= 0:  # written this way so that NaN fails too
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = no limit), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 = no limit), got {top_p}")


# ----------------------------------------------------------------------------- one step


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Return a copy of logits (N, V) with -inf outside the top-k and then the top-p (nucleus) set.

    top_k keeps every token whose logit is at least the k-th largest, so ties at the boundary are all
    kept (more than k tokens) rather than broken by an arbitrary sort order. top_p keeps the smallest
    set of most likely tokens whose probabilities (renormalised after top-k) add up to at least p,
    again with every token tied with the last one kept. The most likely token always survives.
    """
    _check_sampling(1.0, top_k, top_p)
    out = logits.clone()
    vocab = out.shape[-1]
    if 0 < top_k < vocab:
        kth = out.topk(top_k, dim=-1).values[:, -1:]  # (N, 1): the k-th largest logit per row
        out[out < kth] = float("-inf")
    if top_p < 1.0:
        # float64 so that the cumulative sum of a large vocabulary does not drift away from p.
        sorted_logits, _ = out.sort(dim=-1, descending=True)
        probs = torch.softmax(sorted_logits.double(), dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # (N, V): probability of the tokens ranked above
        keep = mass_before < top_p - _TOP_P_TOLERANCE
        keep[:, 0] = True
        # The least likely kept logit is the threshold; comparing against it keeps ties together.
        last_kept = keep.sum(dim=-1, keepdim=True) - 1
        threshold = sorted_logits.gather(-1, last_kept)  # (N, 1)
        out[out < threshold] = float("-inf")
    return out


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one token id per row of logits (N, V); returns a LongTensor (N,) on the logits' device.

    The logits are divided by the temperature first, then filtered by top_k and top_p, so the
    nucleus is taken from the tempered distribution. temperature 0 is greedy (argmax, first index
    on ties) and ignores the generator. With a generator, the draw runs on the generator's device.
    Raises NonFiniteLogitsError where a row holds NaN, or when sampling gives no distribution (a +inf
    logit, or every logit -inf): argmax and the draw would otherwise return an arbitrary id.
    """
    _check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        if bool(logits.isnan().any()):
            raise NonFiniteLogitsError()
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    if top_k or top_p < 1.0:
        scaled = filter_logits(scaled, top_k, top_p)
    probs = torch.softmax(scaled, dim=-1)
    if generator is not None:
        probs = probs.to(generator.device)
    return _draw(probs, generator).to(logits.device)


def _draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One index per row of probs (N, V), drawn by inverting the cumulative distribution with one uniform each.

    torch.multinomial draws V exponentials per row, which costs more than the whole forward pass of a
    small model at batch 1; one uniform, a cumulative sum and a binary search draw from the same
    distribution. The sum is float64 so that rounding cannot skew it; tokens of probability 0 are never
    drawn, since the search returns the first index whose cumulative mass exceeds the draw.
    """
    cdf = probs.double().cumsum(dim=-1)  # (N, V)
    if not bool((cdf[:, -1] > 0).all()):  # NaN anywhere makes the total NaN, which fails the test
        raise NonFiniteLogitsError()
    u = torch.rand(probs.shape[0], 1, generator=generator, dtype=torch.float64, device=probs.device)
    ids = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1)  # (N,)
    return ids.clamp_(max=probs.shape[-1] - 1)


# ----------------------------------------------------------------------------- model plumbing


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put the model in eval mode (no dropout) for the block, then restore its own flag."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def _forward(model: nn.Module, X: Tensor, state: State) -> tuple[Tensor, State]:
    """Run the model on X (B, T) and return the last step's logits (B, V) and the new state."""
    with torch.no_grad(), _eval_mode(model):
        logits, state = model(X, state)
    return logits[:, -1], state


def _warm_up(model: nn.Module, prefix_ids: Sequence[int], device: torch.device) -> tuple[Tensor, State]:
    """Feed the whole prefix in one forward pass with batch 1; returns last logits (1, V) and the state."""
    X = torch.tensor([list(prefix_ids)], dtype=torch.long, device=device)  # (1, T)
    return _forward(model, X, model.begin_state(1, device))


# ----------------------------------------------------------------------------- sampling


def generate_ids(
    model: nn.Module,
    prefix_ids: Sequence[int],
    length: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    use_native: bool = True,
) -> Iterator[Tensor]:
    """Continue a prefix: yield `length` LongTensors (num_samples,), one new token per sample per step.

    The state is warmed on the whole prefix once (batch 1) and copied to num_samples rows, which are
    then sampled independently as one batch. Ids are yielded on the CPU as soon as they are drawn so
    that the caller can stream them. With temperature 0 this is the d2l ``predict_rnn`` loop: feed the
    prefix, then repeatedly append the argmax of the last logits and feed it back. Arguments are
    checked here, when the call is made, not at the first ``next()``. ``use_native=False`` keeps this
    stream on the torch path where the compiled decoder would run it (tests and the benchmark compare
    the two; ``RNNLM_NATIVE=0`` turns the compiled kernels off for the whole process).
    """
    _check_prefix_and_length(prefix_ids, length)
    _check_sampling(temperature, top_k, top_p)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    return _sample_stream(
        model, list(prefix_ids), length, temperature, top_k, top_p, num_samples, generator, use_native
    )


def _sample_stream(
    model: nn.Module,
    prefix_ids: list[int],
    length: int,
    temperature: float,
    top_k: int,
    top_p: float,
    num_samples: int,
    generator: torch.Generator | None,
    use_native: bool,
) -> Iterator[Tensor]:
    if length == 0:
        return
    device = _device_of(model)
    decode = model.decoder() if hasattr(model, "decoder") else None  # the model's own one-token step
    # One row, no filtering, draws on the CPU: the compiled decoder runs the whole stream.
    if use_native and decode is not None and num_samples == 1 and top_k == 0 and top_p == 1.0:
        on_cpu = generator is None or generator.device.type == "cpu"
        native = NativeDecoder.create(decode) if on_cpu else None
        if native is not None:
            yield from _native_stream(native, prefix_ids, length, temperature, generator)
            return
    logits, state = _warm_up(model, prefix_ids, device)
    # One warm-up serves every sample: the prefix is the same, so its state is too.
    rows = torch.zeros(num_samples, dtype=torch.long, device=device)
    state = select_state(state, rows)
    logits = logits.expand(num_samples, -1)  # (num_samples, V)
    # A step this small (the recipe's at batch 64: 66k logits) gains little from a second thread on a quiet
    # machine and loses several times over when another job holds a core: one thread.
    threads = 1 if logits.numel() <= 2**17 else None
    for step in range(length):
        with num_threads(threads):
            ids = sample_next(logits, temperature, top_k, top_p, generator)  # (num_samples,)
        yield ids.cpu()
        if step + 1 < length:  # the last token needs no forward pass
            with num_threads(threads):
                if decode is not None:
                    logits, state = decode(ids.to(device), state)
                else:
                    logits, state = _forward(model, ids.to(device).view(num_samples, 1), state)


def _native_stream(
    native: NativeDecoder, prefix_ids: list[int], length: int, temperature: float, generator: torch.Generator | None
) -> Iterator[Tensor]:
    """The batch-1 stream through the compiled kernel: the same draws as _sample_stream's, NATIVE_CHUNK per call.

    The uniforms of a chunk are drawn in one call, which gives the numbers one call per step would
    (the CPU generator is sequential); a consumer that stops mid-chunk leaves the generator further on.
    """
    st = native.begin()
    native.feed(st, prefix_ids)
    done = 0
    while done < length:
        n = min(NATIVE_CHUNK, length - done)
        uniforms = None if temperature == 0 else torch.rand(n, generator=generator, dtype=torch.float64)
        ids = native.sample(st, n, uniforms, temperature, feed_last=done + n < length)
        for i in range(n):
            yield ids[i : i + 1]
        done += n


# ----------------------------------------------------------------------------- beam search


@torch.no_grad()
def beam_search(
    model: nn.Module,
    prefix_ids: Sequence[int],
    length: int,
    beam: int,
    *,
    num_return: int = 1,
    length_penalty: float = 0.0,
    stop_id: int | None = None,
) -> list[tuple[list[int], float]]:
    """The `num_return` most likely continuations of a prefix with their total log-probabilities, best first.

    Each step extends every live hypothesis by every token and keeps the `beam` best by total
    log-probability. Without stop_id every continuation has exactly `length` tokens, so ranking is by
    total log-probability and length_penalty has no effect. With stop_id, a hypothesis that emits it
    is finished there (the stop token is the last id returned) and the rest go on; finished and
    full-length hypotheses are then ranked by total / len ** length_penalty (0 = plain sum, which
    favours short ones; 1 = mean per token). The returned score is always the plain total. Fewer than
    num_return come back only when fewer distinct continuations exist.
    """
    _check_prefix_and_length(prefix_ids, length)
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if not 1 <= num_return <= beam:
        raise ValueError(f"num_return must be between 1 and beam ({beam}), got {num_return}")
    if length == 0:
        return [([], 0.0)]

    device = _device_of(model)
    logits, state = _warm_up(model, prefix_ids, device)
    vocab = logits.shape[-1]
    if stop_id is not None and not 0 <= stop_id < vocab:
        raise ValueError(f"stop_id must be a token id in [0, {vocab}), got {stop_id}")

    seqs: list[list[int]] = [[]]  # live hypotheses, best first
    scores = torch.zeros(1, dtype=torch.float64, device=device)  # (live,) total log-probabilities
    finished: list[tuple[list[int], float]] = []
    for step in range(length):
        if step > 0:
            last = torch.tensor([s[-1] for s in seqs], dtype=torch.long, device=device).view(-1, 1)
            logits, state = _forward(model, last, state)
        # float64 so that a long sum of log-probabilities ranks exactly as the true products would.
        cand = scores[:, None] + torch.log_softmax(logits.double(), dim=-1)  # (live, V)
        if stop_id is not None:
            for row, total in enumerate(cand[:, stop_id].tolist()):
                if total > float("-inf"):
                    finished.append((seqs[row] + [stop_id], total))
            cand[:, stop_id] = float("-inf")
        flat = cand.view(-1)
        n_keep = min(beam, int(torch.isfinite(flat).sum()))
        if n_keep == 0:  # every continuation has probability zero or ended with stop_id
            seqs, scores = [], scores[:0]
            break
        scores, idx = flat.topk(n_keep)
        parents, tokens = idx // vocab, idx % vocab
        seqs = [seqs[p] + [t] for p, t in zip(parents.tolist(), tokens.tolist(), strict=True)]
        state = select_state(state, parents)

    pool = finished + list(zip(seqs, scores.tolist(), strict=True))
    # sorted() is stable, so equal normalised scores keep the order in which they were found.
    pool.sort(key=lambda h: h[1] / len(h[0]) ** length_penalty, reverse=True)
    return pool[:num_return]
