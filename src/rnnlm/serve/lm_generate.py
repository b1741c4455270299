"""Generation for the page: one token at a time, each with its probability and the most likely alternatives.

Every request carries its own state (the recurrent state and a generator), and the model's weights are only
read, so concurrent requests share one model without a lock. The draws are the package's own (the compiled
decoder of ``rnnlm generate``, or ``lm.generate.sample_next`` for top-k and top-p), so a seed gives the text
``LanguageModel.generate`` gives; what is added is the probability of each drawn token under the model (at
temperature 1, before any top-k or top-p) and its top alternatives, for the shading and the hover.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from rnnlm.core.vocab import Vocab
from rnnlm.lm.api import LanguageModel
from rnnlm.lm.decoder import NativeDecoder
from rnnlm.lm.generate import beam_search, sample_next
from rnnlm.serve import params as P


def settings(body: dict[str, Any], vocab_size: int) -> dict[str, Any]:
    """The generation settings of a request, checked and bounded (params.BadRequest otherwise)."""
    return {
        "prefix": P.text(body, "prefix", P.MAX_PREFIX, ""),
        "length": P.number(body, "length", 200, 1, P.MAX_LENGTH, integer=True),
        "temperature": P.number(body, "temperature", 1.0, 0.0, 10.0),
        "top_k": P.number(body, "top_k", 0, 0, vocab_size, integer=True),
        "top_p": P.number(body, "top_p", 1.0, 1e-6, 1.0),
        "beam": P.number(body, "beam", 0, 0, P.MAX_BEAM, integer=True),
        "alternatives": P.number(body, "alternatives", 5, 0, P.MAX_ALTERNATIVES, integer=True),
        "seed": None if body.get("seed") is None else P.number(body, "seed", 0, 0, 2**63 - 1, integer=True),
    }


def _piece(vocab: Vocab, prev: int, tok: int) -> str:
    """The text a token adds after ``prev``: a character is itself; a word brings its space or line break."""
    return vocab.tokens[tok] if vocab.level == "char" else vocab.decode_after(prev, [tok])


def _events(lm: LanguageModel, prev: int, toks: list[int], logits: torch.Tensor, k: int) -> list[dict[str, Any]]:
    """The events of a run of drawn tokens: each one's text, its probability and the k most likely tokens there
    with theirs. logits (n, V) are the rows the tokens were drawn from; one softmax and one topk serve them all."""
    probs = torch.softmax(logits.float(), dim=-1)  # (n, V)
    picked = probs.gather(1, torch.tensor(toks)[:, None])[:, 0].tolist()
    if k:
        top = probs.topk(min(k, probs.shape[1]), dim=-1)
        alt_ids, alt_ps = top.indices.tolist(), top.values.tolist()
    out = []
    for row, (tok, p) in enumerate(zip(toks, picked, strict=True)):
        event: dict[str, Any] = {"t": _piece(lm.vocab, prev, tok), "p": round(p, 5)}
        if k:
            event["alts"] = [
                [_piece(lm.vocab, prev, i), round(q, 5)] for i, q in zip(alt_ids[row], alt_ps[row], strict=True)
            ]
        out.append(event)
        prev = tok
    return out


def start(lm: LanguageModel, s: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Check the prefix against the vocabulary now (an error before any byte is sent), then return the
    stream of events: the prefix, then one per token."""
    ids = lm.encode_prefix(s["prefix"])
    return _beam(lm, ids, s) if s["beam"] else _sample(lm, ids, s)


CHUNKS = (1, 4, 16, 32)  # tokens per compiled call: the first at once, then longer calls as the stream runs


def _sample(lm: LanguageModel, ids: list[int], s: dict[str, Any]) -> Iterator[dict[str, Any]]:
    generator = None
    if s["seed"] is not None:
        generator = torch.Generator().manual_seed(s["seed"])
    native = None
    if lm.device.type == "cpu" and s["top_k"] == 0 and s["top_p"] == 1.0:
        native = NativeDecoder.create(lm.model.decoder())
    if native is not None:
        return _sample_native(lm, native, ids, s, generator)
    return _sample_steps(lm, ids, s, generator)


def _sample_native(  # no autograd here: the kernel and a softmax of plain tensors
    lm: LanguageModel, native: NativeDecoder, ids: list[int], s: dict[str, Any], generator: torch.Generator | None
) -> Iterator[dict[str, Any]]:
    """Plain temperature sampling on the CPU: the draws of ``rnnlm generate`` (its compiled kernel, a chunk of
    tokens per call, the same uniforms from the same generator). The kernel also hands back the logits each token
    was drawn from, so the probabilities cost one softmax per chunk and no second pass of the model."""
    yield {"prefix": s["prefix"]}
    st = native.begin()
    native.feed(st, ids)
    prev, done, k = ids[-1], 0, 0
    while done < s["length"]:
        n = min(CHUNKS[min(k, len(CHUNKS) - 1)], s["length"] - done)
        k += 1
        uniforms = None if s["temperature"] == 0 else torch.rand(n, generator=generator, dtype=torch.float64)
        trace = torch.empty(n, native.V)  # (n, V): the logits of each draw
        toks = native.sample(st, n, uniforms, s["temperature"], feed_last=done + n < s["length"], trace=trace).tolist()
        yield from _events(lm, prev, toks, trace, s["alternatives"])
        prev = toks[-1]
        done += n


@torch.no_grad()
def _sample_steps(
    lm: LanguageModel, ids: list[int], s: dict[str, Any], generator: torch.Generator | None
) -> Iterator[dict[str, Any]]:
    """Top-k or top-p sampling, or off the CPU: one step of the model's StepDecoder and one ``sample_next`` per
    token, as ``LanguageModel.generate`` draws them."""
    model = lm.model
    decode = model.decoder()  # functional: (ids, state) -> (logits, state); the weights are only read
    yield {"prefix": s["prefix"]}
    logits, state = model(torch.tensor([ids], device=lm.device), model.begin_state(1))
    logits, prev = logits[:, -1], ids[-1]  # (1, V)
    for step in range(s["length"]):
        tok = int(sample_next(logits, s["temperature"], s["top_k"], s["top_p"], generator)[0])
        yield from _events(lm, prev, [tok], logits.cpu(), s["alternatives"])
        prev = tok
        if step + 1 < s["length"]:
            logits, state = decode(torch.tensor([tok], device=lm.device), state)


@torch.no_grad()
def _beam(lm: LanguageModel, ids: list[int], s: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Beam search finds the whole continuation first; its tokens then stream with the model's probabilities,
    read from one forward pass over the prefix and the continuation."""
    model = lm.model
    yield {"prefix": s["prefix"]}
    seq, _ = beam_search(model, ids, s["length"], s["beam"])[0]
    logits, _ = model(torch.tensor([ids + seq]), model.begin_state(1))  # (1, T, V)
    steps = logits[0, len(ids) - 1 : -1]  # the logits that predicted each generated token
    yield from _events(lm, ids[-1], seq, steps, s["alternatives"])
