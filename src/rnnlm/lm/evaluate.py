"""Evaluation: mean negative log-likelihood over a whole text, and the metrics derived from it.

Two protocols (``LMEvalConfig.eval_protocol``): "carried" reads the text in order with the state carried, so every
token sees all the text before it; "windows" reads it as consecutive windows that each start from a zero state, so
every token sees only its window, as a transformer of that block does (nanoGPT's way of scoring).

Perplexity and bits per token are derived from the mean NLL here and nowhere else.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rnnlm.lm.config import LMEvalConfig
from rnnlm.lm.data.tokens import TokenFile, windows

# Dynamic evaluation's SGD step and chunk length, chosen on timemachine's validation split with the char-cpu
# model (bench/notes/lm_quality.md); the defaults of the API, `rnnlm eval --dynamic-lr` and bench/quality.py.
DYNAMIC_LR = 0.05
DYNAMIC_SEQ_LEN = 64


def _chunks(ids: np.ndarray | TokenFile, batch_size: int, seq_len: int, shard: tuple[int, int] = (0, 1)):
    """The scoring order of ``evaluate``: (X, Y, tail) chunks of ids as (B, <= seq_len) tensors. The text is
    cut into ``batch_size`` contiguous streams; the few targets left over at the end (``tail`` True) follow
    as one stream that continues the last one, so every one of the len(ids) - 1 targets comes exactly once.
    ``shard=(rank, world)`` yields only that rank's contiguous block of streams; the last rank, which holds
    the last stream, also scores the tail, so the ranks together score every target once."""
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be at least 1 (got {batch_size} and {seq_len})")
    ids = ids if isinstance(ids, TokenFile) else np.asarray(ids)
    n_targets = len(ids) - 1
    if n_targets < 1:
        return
    streams = max(1, min(batch_size, n_targets))
    L = n_targets // streams  # targets per stream
    rank, world = shard
    rows = np.arange(streams)[rank * streams // world : (rank + 1) * streams // world] * L  # this rank's streams
    if len(rows) == 0:  # more ranks than streams: nothing for this one
        return
    for t in range(0, L, seq_len):
        block = torch.from_numpy(windows(ids, rows + t, min(seq_len, L - t) + 1).astype(np.int64))  # (B, w + 1)
        yield block[:, :-1], block[:, 1:], False
    if rank != world - 1:
        return
    for t in range(streams * L, n_targets, seq_len):
        end = min(t + seq_len, n_targets)
        block = torch.from_numpy(windows(ids, np.asarray([t]), end + 1 - t).astype(np.int64))  # (1, w + 1)
        yield block[:, :-1], block[:, 1:], True


def _continue_last_stream(state, X: torch.Tensor, tail: bool):
    """At the first tail chunk, the state of the last stream only, which ended right where the tail begins."""
    if tail and state is not None and state[0].shape[1] != X.shape[0]:
        return tuple(s[:, -1:].contiguous() for s in state)
    return state


def _window_chunks(ids: np.ndarray | TokenFile, block: int, rows: int, shard: tuple[int, int] = (0, 1)):
    """The scoring order of ``evaluate_windows``: (X, Y, False) chunks of up to ``rows`` windows. Window k reads
    ids[k*block : (k+1)*block] and predicts the next token at each place, so the windows' targets tile the
    text's len(ids) - 1 targets exactly once; the last window is shorter when block does not divide them.
    ``shard=(rank, world)`` yields only that rank's contiguous block of windows."""
    if block < 2 or rows < 1:
        raise ValueError(f"windows need block >= 2 and rows >= 1 (got {block} and {rows})")
    ids = ids if isinstance(ids, TokenFile) else np.asarray(ids)
    n_targets = len(ids) - 1
    starts = np.arange(0, max(n_targets, 0), block)
    rank, world = shard
    starts = starts[rank * len(starts) // world : (rank + 1) * len(starts) // world]
    full = starts[starts + block <= n_targets]
    for i in range(0, len(full), rows):
        chunk = torch.from_numpy(windows(ids, full[i : i + rows], block + 1).astype(np.int64))  # (B, block + 1)
        yield chunk[:, :-1], chunk[:, 1:], False
    for s in starts[starts + block > n_targets].tolist():  # the last, shorter window
        chunk = torch.from_numpy(windows(ids, np.asarray([s]), n_targets - s + 1).astype(np.int64))  # (1, w + 1)
        yield chunk[:, :-1], chunk[:, 1:], False


def _score(model: torch.nn.Module, chunks, device: torch.device | str | None, carry: bool) -> tuple[float, int]:
    """Sum of NLL and count over the (X, Y, tail) chunks; the state runs from chunk to chunk when ``carry``,
    else every chunk starts from a zero state. In eval mode, restored afterwards."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        total, count, state = 0.0, 0, None
        for X, Y, tail in chunks:
            state = _continue_last_stream(state, X, tail) if carry else None
            logits, state = model(X.to(device), state)
            total += F.cross_entropy(logits.flatten(0, 1), Y.to(device).flatten(), reduction="sum").item()
            count += Y.numel()
        return total, count
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    ids: np.ndarray | TokenFile,
    batch_size: int = LMEvalConfig.eval_batch_size,
    seq_len: int = LMEvalConfig.eval_seq_len,
    device: torch.device | str | None = None,
    shard: tuple[int, int] = (0, 1),
) -> tuple[float, int]:
    """Sum of NLL (nats) over every next-token prediction in ids, and how many there were.

    The text is cut into `batch_size` contiguous streams that run in parallel with their state
    carried from chunk to chunk; the few targets left over at the end are scored by continuing
    the last stream, so every one of the len(ids) - 1 targets is scored exactly once. With
    ``shard=(rank, world)`` only that rank's share is scored (sum the ranks' results for the whole).
    """
    return _score(model, _chunks(ids, batch_size, seq_len, shard), device, carry=True)


@torch.no_grad()
def evaluate_windows(
    model: torch.nn.Module,
    ids: np.ndarray | TokenFile,
    block: int,
    batch_size: int = LMEvalConfig.eval_batch_size,
    seq_len: int = LMEvalConfig.eval_seq_len,
    device: torch.device | str | None = None,
    shard: tuple[int, int] = (0, 1),
) -> tuple[float, int]:
    """Like ``evaluate``, under the windows protocol: the text as consecutive windows of ``block`` tokens, each
    read from a zero state, every target in each window counted. This is how nanoGPT's estimate_loss scores a
    model (its windows are random, these tile the text, so the figure is exact and repeatable), so a model that
    carries its state can be compared with one that sees a fixed context. Each forward pass takes as many
    tokens as ``evaluate``'s (batch_size * seq_len: the same memory), i.e. that many // block windows.
    """
    rows = max(1, batch_size * seq_len // block)
    return _score(model, _window_chunks(ids, block, rows, shard), device, carry=False)


def score(
    model: torch.nn.Module,
    ids: np.ndarray | TokenFile,
    ec: LMEvalConfig,
    device: torch.device | str | None = None,
    shard: tuple[int, int] = (0, 1),
) -> tuple[float, int]:
    """Sum of NLL and count under the config's protocol (``evaluate`` or ``evaluate_windows``): the one place
    that training's validation, `rnnlm eval` and the API choose between them."""
    if ec.eval_protocol == "windows":
        return evaluate_windows(model, ids, ec.eval_block, ec.eval_batch_size, ec.eval_seq_len, device, shard)
    return evaluate(model, ids, ec.eval_batch_size, ec.eval_seq_len, device, shard)


def dynamic_evaluate(
    model: torch.nn.Module,
    ids: np.ndarray,
    lr: float,
    decay: float = 0.0,
    batch_size: int = 1,
    seq_len: int = DYNAMIC_SEQ_LEN,
    device: torch.device | str | None = None,
) -> tuple[float, int]:
    """Like ``evaluate``, with dynamic evaluation (Krause et al., 2018): after each chunk is scored, the model
    takes one SGD step on that chunk's mean loss, theta <- theta - lr * grad + decay * (theta0 - theta), so
    that it adapts to the text it has read so far. Every prediction is made before its own target is learned
    from, so the score is a fair online one. The weights are put back as they were at the end, even after an
    error or Ctrl-C, and so is the training mode.

    This is a different number from ``evaluate``'s and is reported apart from it, never in its place.
    """
    if lr <= 0 or not 0 <= decay < 1:
        raise ValueError(f"dynamic evaluation needs lr > 0 and decay in [0, 1) (got {lr} and {decay})")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    was_training = model.training
    model.eval()  # no dropout; gradients still flow
    total, count, state = 0.0, 0, None
    try:
        with torch.enable_grad():
            for X, Y, tail in _chunks(ids, batch_size, seq_len):
                state = _continue_last_stream(state, X, tail)
                logits, state = model(X.to(device), state)
                state = tuple(s.detach() for s in state)
                if logits.dtype in (torch.float16, torch.bfloat16):
                    logits = logits.float()
                loss = F.cross_entropy(logits.flatten(0, 1), Y.to(device).flatten(), reduction="sum")
                total += loss.item()
                count += Y.numel()
                grads = torch.autograd.grad(loss / Y.numel(), params, allow_unused=True)
                with torch.no_grad():
                    for p, g, p0 in zip(params, grads, start, strict=True):
                        if g is not None:
                            p.add_(g, alpha=-lr)
                        if decay:
                            p.add_(p0 - p, alpha=decay)
    finally:
        with torch.no_grad():
            for p, p0 in zip(params, start, strict=True):
                p.copy_(p0)
        model.train(was_training)
    return total, count
