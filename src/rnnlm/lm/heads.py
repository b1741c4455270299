"""Heads: what a model predicts from the encoder's outputs (B, T, D).

Today the language-model head. A tagger's per-token head (softmax or CRF) and a sequence
classifier take the same (B, T, D) features and a mask, and live beside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from rnnlm.recurrent import gemm
from rnnlm.recurrent.dropout import Dropout, locked_dropout


class LMHead(nn.Linear):
    """O_t = H_t W_hq + b_q: next-token logits (B, T, V), with dropout on H before the product.

    ``tie_to`` shares the weight with an input embedding (V, E). When E differs from the encoder's
    width D, a projection ``proj`` (E, D) without bias maps H to E first: O_t = (H_t P^T) W_hq + b_q.
    ``locked`` makes the dropout one mask per sequence (recurrent/dropout.py).
    """

    def __init__(
        self,
        in_size: int,
        vocab_size: int,
        dropout: float = 0.0,
        tie_to: nn.Embedding | None = None,
        matmul_dtype: str = "float32",
        locked: bool = False,
    ):
        out_in = in_size if tie_to is None else tie_to.embedding_dim
        super().__init__(out_in, vocab_size)
        self.drop = Dropout(dropout)
        self.locked = locked
        self.matmul_dtype = matmul_dtype  # "bfloat16": loss() takes its matmuls in bfloat16
        self.proj = nn.Linear(in_size, out_in, bias=False) if out_in != in_size else None
        if tie_to is not None:
            self.weight = tie_to.weight  # one tensor, (V, E)

    def features(self, outputs: Tensor) -> Tensor:
        """What the output layer reads: the encoder's outputs (B, T, D) after dropout (and the projection)."""
        h = locked_dropout(outputs, self.drop.p, self.training) if self.locked else self.drop(outputs)
        return h if self.proj is None else self.proj(h)  # (B, T, D) or (B, T, E)

    def forward(self, outputs: Tensor) -> Tensor:
        return super().forward(self.features(outputs))  # (B, T, V)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy of ``forward(outputs)`` (B, T, V) against targets (B, T), without keeping the logits.

        The same number as ``F.cross_entropy(self(outputs).flatten(0, 1), targets.flatten())`` up to
        rounding; see LinearCrossEntropy. Rows are taken in the order the outputs lie in memory (a mean
        does not depend on it), so time-major outputs seen through a (B, T, D) view are not copied.
        """
        outputs = self.features(outputs)
        if not outputs.is_contiguous() and outputs.transpose(0, 1).is_contiguous():
            outputs, targets = outputs.transpose(0, 1), targets.t()
        rows = outputs.reshape(-1, outputs.shape[-1])  # (N, D)
        dtype = torch.bfloat16 if self.matmul_dtype == "bfloat16" else None
        return LinearCrossEntropy.apply(rows, self.weight, self.bias, targets.reshape(-1), dtype)


# Below this a probability's log is taken from the logits instead (float32's smallest normal is 1.2e-38).
_TINY = 1e-30
# The GPU's way on any device: every row's loss from the logits, without reading a value back to the host
# (no_host_sync() switches it on to check that path against the CPU's on a CPU).
_no_host_sync = False


@contextlib.contextmanager
def no_host_sync(enabled: bool = True) -> Iterator[None]:
    """Run the block with the loss taken the GPU's way on any device (every row from the logits, no value
    read back to the host), then restore the previous setting. Process-wide: for tests."""
    global _no_host_sync
    saved, _no_host_sync = _no_host_sync, enabled
    try:
        yield
    finally:
        _no_host_sync = saved


# Logits per block of rows: about 1 MB, so that a block's softmax reads what its matmul just wrote
# while it is still in the core's cache (the recipe's head: 3.0 against 6.5 ms for all rows at once).
_BLOCK = 2**18


class LinearCrossEntropy(torch.autograd.Function):
    """mean_n -log softmax(h_n W^T + b)[y_n] in one Function: h (N, D), W (V, D), b (V,), y (N,) int64.

    ``dtype`` (bfloat16 or None) takes the matmuls in that dtype; the softmax and the loss stay in h's.

    Autograd through ``F.linear`` and ``F.cross_entropy`` keeps the logits, writes their log-softmax,
    and in backward fills a one-hot gradient and runs the log-softmax backward: four passes over
    (N, V). Here forward takes each block of rows' logits and their softmax while they are in cache,
    reads each row's loss from its target's probability (from the logits when that probability is
    too small for its log to be exact) and turns the softmax into softmax - one_hot, the gradient of
    the sum of the losses (the Function has one scalar output); backward only runs the two matmuls and
    scales the smaller results. Without gradients (evaluation) nothing is kept. The matmuls go
    through gemm.linear.
    """

    @staticmethod
    def forward(
        ctx, h: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, dtype: torch.dtype | None = None
    ) -> Tensor:
        N, V = h.shape[0], weight.shape[0]
        W = weight if dtype is None else weight.to(dtype)
        probs, nll = h.new_empty(N, V), h.new_empty(N)
        # On a GPU: all rows at once (no cache to fit), and no host sync (a CUDA graph may be capturing).
        step = N if h.is_cuda else max(1, _BLOCK // V)
        for s in range(0, N, step):
            logits = gemm.linear_as(h[s : s + step], W, bias, dtype)  # (rows, V)
            p, y = torch.softmax(logits, dim=1, out=probs[s : s + step]), targets[s : s + step]
            rows = torch.arange(len(y), device=h.device)
            if h.is_cuda or _no_host_sync:  # every row from the logits: exact, no host sync (CUDA graphs)
                torch.sub(torch.logsumexp(logits, dim=1), logits[rows, y], out=nll[s : s + step])
                continue
            p_y = p[rows, y]
            torch.neg(p_y.log(), out=nll[s : s + step])
            tiny = p_y < _TINY  # log of a probability this small, or of 0 after underflow, would be inexact
            if bool(tiny.any()):
                far = tiny.nonzero().squeeze(1)
                nll[s + far] = torch.logsumexp(logits[far], dim=1) - logits[far, y[far]]
        if any(ctx.needs_input_grad[:3]):
            probs[torch.arange(N, device=h.device), targets] -= 1  # d(sum of losses)/d logits
            ctx.save_for_backward(h, weight)
            ctx.dlogits, ctx.has_bias, ctx.dtype = probs, bias is not None, dtype
        return nll.sum() / N

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, weight = ctx.saved_tensors
        dlogits, dtype, need = ctx.dlogits, ctx.dtype, ctx.needs_input_grad
        scale = grad / h.shape[0]  # applied to the results: they are smaller than (N, V)
        dh = dW = db = None
        if need[0]:
            dh = gemm.linear_as(dlogits, weight.t().contiguous(), None, dtype).mul_(scale)
        if need[1]:
            dW = gemm.weight_grad(dlogits, h, dtype).mul_(scale)
        if ctx.has_bias and need[2]:
            db = dlogits.sum(0).mul_(scale)
        return dh, dW, db, None, None
