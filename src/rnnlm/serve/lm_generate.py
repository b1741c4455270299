"""Generation for the page: one token at a time, each with its probability and the most likely alternatives.

Every request carries its own state (the recurrent state and a generator), and the model's weights are only
read, so concurrent requests share one model without a lock. The sampling rule is the package's own
(``lm.generate.sample_next``); what is added is the probability of each drawn token under the model (at
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


def _event(lm: LanguageModel, prev: int, tok: int, logits: torch.Tensor, k: int) -> dict[str, Any]:
    """One generated token: its text, its probability and the k most likely tokens there with theirs."""
    probs = torch.softmax(logits.float(), dim=-1)  # (V,)
    out: dict[str, Any] = {"t": _piece(lm.vocab, prev, tok), "p": round(float(probs[tok]), 5)}
    if k:
        top = probs.topk(min(k, probs.numel()))
        out["alts"] = [
            [_piece(lm.vocab, prev, i), round(p, 5)]
            for i, p in zip(top.indices.tolist(), top.values.tolist(), strict=True)
        ]
    return out


def start(lm: LanguageModel, s: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Check the prefix against the vocabulary now (an error before any byte is sent), then return the
    stream of events: the prefix, then one per token."""
    ids = lm.encode_prefix(s["prefix"])
    return _beam(lm, ids, s) if s["beam"] else _sample(lm, ids, s)


@torch.no_grad()
def _sample(lm: LanguageModel, ids: list[int], s: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Draws by ``sample_next`` from the logits of each step. On the CPU a step runs in the compiled kernel
    (``NativeDecoder.feed``: one call, no Python between the matrix products), elsewhere through the model's
    StepDecoder; either way each request keeps its own state."""
    model = lm.model
    generator = None
    if s["seed"] is not None:
        generator = torch.Generator().manual_seed(s["seed"])
    decode = model.decoder()  # functional: (ids, state) -> (logits, state); the weights are only read
    native = NativeDecoder.create(decode) if lm.device.type == "cpu" else None
    yield {"prefix": s["prefix"]}
    if native is not None:
        st = native.begin()
        native.feed(st, ids)
        logits = st.logits[None]  # (1, V), overwritten by the next feed
    else:
        logits, state = model(torch.tensor([ids], device=lm.device), model.begin_state(1))
        logits = logits[:, -1]  # (1, V)
    prev = ids[-1]
    for step in range(s["length"]):
        tok = int(sample_next(logits, s["temperature"], s["top_k"], s["top_p"], generator)[0])
        yield _event(lm, prev, tok, logits[0].cpu(), s["alternatives"])
        prev = tok
        if step + 1 < s["length"]:
            if native is not None:
                native.feed(st, [tok])
            else:
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
    prev = ids[-1]
    for tok, row in zip(seq, steps, strict=True):
        yield _event(lm, prev, tok, row, s["alternatives"])
        prev = tok
