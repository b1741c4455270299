"""Matrix products for the fast CPU paths: oneDNN's kernels where torch exposes them, else torch's.

On the AMD CPUs this project is measured on, torch.mm goes to MKL, whose float32 kernels run at
about half the rate of oneDNN's (measured single-threaded on (1120, 256) x (256, 1027): 90 against
220 GFLOP/s; bench/speed.py prints both peaks). torch reaches oneDNN's matmul through the operator
inductor uses, ``torch.ops.mkldnn._linear_pointwise``; it has no autograd, so only the hand-written
forward and backward passes of the autograd Functions here call it. Float64 (the tests), other
devices and builds without oneDNN take torch.mm.

``linear(x, W)`` is ``x @ W.T`` as in F.linear: x (M, K), W (N, K), either possibly a transposed
view. Both must share a dtype; bfloat16 inputs give a bfloat16 product accumulated in float32.

A recurrence multiplies by the same W at every step, so ``packed(W)`` puts it once into oneDNN's own
blocked layout (``mkldnn._reorder_linear_weight``, as inductor does for frozen weights) instead of
letting every product reorder it again: on our 2-core AMD machine a (32, 448) x (448, 1792) product
takes 70 us instead of 125 us in bfloat16 and 122 us instead of 206 us in float32, for a one-off
165 us.
"""

from __future__ import annotations

import torch
from torch import Tensor

_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


def onednn_available() -> bool:
    """Whether this torch build has the oneDNN matmul operator."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


USE_ONEDNN = onednn_available()  # tests switch it off to check the torch.mm path against this one
_REORDER = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None) if USE_ONEDNN else None


def _onednn(x: Tensor) -> bool:
    return USE_ONEDNN and x.device.type == "cpu" and x.dtype in _ONEDNN_DTYPES


def packed(W: Tensor, rows: int) -> Tensor:
    """W (N, K) ready for many ``linear(x, W)`` / ``add_linear`` calls with x of about ``rows`` rows: oneDNN's
    blocked copy where oneDNN runs those calls, else W itself. Only those two functions may read the copy."""
    if _onednn(W) and _REORDER is not None:
        return _REORDER(W, rows)
    return W


def linear(x: Tensor, W: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ W.T (+ bias): x (M, K), W (N, K), bias (N,) -> (M, N)."""
    if _onednn(x):
        return torch.ops.mkldnn._linear_pointwise(x, W, bias, "none", [], "")
    return x @ W.t() if bias is None else torch.addmm(bias, x, W.t())


def add_linear(base: Tensor, x: Tensor, W: Tensor, out: Tensor) -> Tensor:
    """out = base + x @ W.T, with x cast to W's dtype (bfloat16 matmuls add into a float32 ``out``)."""
    x = x.to(W.dtype)
    if _onednn(x):
        return torch.add(base, linear(x, W), out=out)
    if base.dtype == x.dtype:
        return torch.addmm(base, x, W.t(), out=out)
    return torch.add(base, x @ W.t(), out=out)


def weight_grad(dy: Tensor, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """sum_m dy_m^T x_m for dy (M, N) and x (M, K): a linear layer's weight gradient (N, K), in dy's dtype.

    ``dtype`` runs the product in that dtype (bfloat16), the result coming back in dy's.
    """
    out_dtype = dy.dtype
    if dtype is not None:
        dy, x = dy.to(dtype), x.to(dtype)
    # As (x^T dy)^T: oneDNN copies a transposed first operand, and x is the narrower one here.
    return linear(x.t(), dy.t()).t().to(out_dtype)


def linear_as(x: Tensor, W: Tensor, bias: Tensor | None, dtype: torch.dtype | None) -> Tensor:
    """x @ W.T + bias with the product taken in ``dtype`` (None: x's), returned in x's dtype."""
    if dtype is None:
        return linear(x, W, bias)
    y = linear(x.to(dtype), W.to(dtype)).to(x.dtype)
    return y if bias is None else y.add_(bias)
