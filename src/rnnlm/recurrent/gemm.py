"""Matrix products for the fast CPU paths: oneDNN's kernels where torch exposes them, else torch's.

On the AMD CPUs this project is measured on, torch.mm goes to MKL, whose float32 kernels run at
about half the rate of oneDNN's (measured single-threaded on (1120, 256) x (256, 1027): 90 against
220 GFLOP/s; bench/speed.py prints both peaks). torch reaches oneDNN's matmul through the operator
inductor uses, ``torch.ops.mkldnn._linear_pointwise``; it has no autograd, so only the hand-written
forward and backward passes of the autograd Functions here call it. Float64 (the tests), other
devices, builds without oneDNN and dtypes whose oneDNN kernels do not run on this CPU (bfloat16
without AVX512, as on AMD Zen 3: tried once on a tiny product, see _probe) take torch.mm. A oneDNN call
that fails later falls back to torch.mm too, with a warning, and stays there.

``linear(x, W)`` is ``x @ W.T`` as in F.linear: x (M, K), W (N, K), either possibly a transposed
view. Both must share a dtype; bfloat16 inputs give a bfloat16 product accumulated in float32.

A recurrence multiplies by the same W at every step, so ``packed(W)`` puts it once into oneDNN's own
blocked layout (``mkldnn._reorder_linear_weight``, as inductor does for frozen weights) instead of
letting every product reorder it again: on our 2-core AMD machine a (32, 448) x (448, 1792) product
takes 70 us instead of 125 us in bfloat16 and 122 us instead of 206 us in float32, for a one-off
165 us.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor

_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)
# torch's oneDNN operators are private (inductor's): looked up once, None where this torch lacks them.
_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
_REORDER = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None)


def onednn_available() -> bool:
    """Whether this torch build has the oneDNN matmul operator."""
    return torch.backends.mkldnn.is_available() and _LINEAR is not None


_use_onednn = True  # onednn(False) sends every product to torch.mm (tests compare the two paths)
_use_packing = True  # onednn(pack=False) leaves the recurrent weights unpacked
# Whether oneDNN's matmul (and its weight packing) works for a dtype here, tried once per process (_works).
_linear_ok: dict[torch.dtype, bool] = {}
_reorder_ok: dict[torch.dtype, bool] = {}


@contextlib.contextmanager
def onednn(enabled: bool | None = None, pack: bool | None = None) -> Iterator[None]:
    """Run the block with oneDNN's products on or off (off: torch.mm) and with or without packed weights
    (None: as they are), then restore the previous settings. They are process-wide (not per thread):
    bench/cpu_step.py and the tests compare the paths; training never needs to switch."""
    global _use_onednn, _use_packing
    saved = _use_onednn, _use_packing
    _use_onednn = saved[0] if enabled is None else enabled
    _use_packing = saved[1] if pack is None else pack
    try:
        yield
    finally:
        _use_onednn, _use_packing = saved


def _probe(dtype: torch.dtype) -> tuple[bool, bool]:
    """Try oneDNN's matmul, then a packed weight, once on tiny tensors of ``dtype`` against torch.mm.

    On a CPU without AVX512 (AMD Zen 3), or under ONEDNN_MAX_CPU_ISA=AVX2, oneDNN is available but its
    bfloat16 primitives fail to build ("could not create a primitive descriptor for the inner product"),
    while torch.mm on bfloat16 tensors still works (slower). The op itself gives the answer that counts.
    """
    if _LINEAR is None or not torch.backends.mkldnn.is_available():
        return False, False
    g = torch.Generator().manual_seed(0)
    x, W = (torch.randn(shape, generator=g).to(dtype) for shape in ((3, 8), (5, 8)))
    want = (x.float() @ W.float().t()).to(dtype).float()
    tol = dict(atol=0.05, rtol=0.02) if dtype == torch.bfloat16 else dict(atol=1e-5, rtol=1e-5)
    try:
        linear_ok = torch.allclose(_LINEAR(x, W, None, "none", [], "").float(), want, **tol)
    except (RuntimeError, TypeError, NotImplementedError):
        linear_ok = False
    reorder_ok = False
    if linear_ok and _REORDER is not None:
        with contextlib.suppress(RuntimeError, TypeError, NotImplementedError):
            reorder_ok = torch.allclose(_LINEAR(x, _REORDER(W, 3), None, "none", [], "").float(), want, **tol)
    return linear_ok, reorder_ok


def _works(dtype: torch.dtype) -> bool:
    """Whether oneDNN's matmul runs in ``dtype`` here (probed on first use, then remembered)."""
    ok = _linear_ok.get(dtype)
    if ok is None:
        _linear_ok[dtype], _reorder_ok[dtype] = _probe(dtype)
        ok = _linear_ok[dtype]
    return ok


def onednn_works(dtype: torch.dtype) -> bool:
    """Whether the products in ``dtype`` run on oneDNN here; where not, they run on torch.mm."""
    return dtype in _ONEDNN_DTYPES and _works(dtype)


def _onednn(x: Tensor) -> bool:
    return _use_onednn and x.device.type == "cpu" and x.dtype in _ONEDNN_DTYPES and _works(x.dtype)


def _failed(dtype: torch.dtype, error: RuntimeError) -> None:
    """Take torch.mm for ``dtype`` from now on, and say so once: the op failed where the probe passed."""
    _linear_ok[dtype] = _reorder_ok[dtype] = False
    msg = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    warnings.warn(f"rnnlm: oneDNN's {dtype} matmul failed ({msg}); using torch.mm now", RuntimeWarning, stacklevel=3)


def packed(W: Tensor, rows: int) -> Tensor:
    """W (N, K) ready for many ``linear(x, W)`` / ``add_linear`` calls with x of about ``rows`` rows: oneDNN's
    blocked copy where oneDNN runs those calls, else W itself. Only those two functions may read the copy."""
    if _use_packing and _onednn(W) and _reorder_ok.get(W.dtype):
        try:
            return _REORDER(W, rows)
        except RuntimeError as e:
            _failed(W.dtype, e)
    return W


def linear(x: Tensor, W: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ W.T (+ bias): x (M, K), W (N, K), bias (N,) -> (M, N)."""
    if _onednn(x):
        try:
            return _LINEAR(x, W, bias, "none", [], "")
        except RuntimeError as e:  # e.g. a CPU feature the probe did not need: torch.mm from now on
            _failed(x.dtype, e)
    W = _plain(W)
    return x @ W.t() if bias is None else torch.addmm(bias, x, W.t())


def _plain(W: Tensor) -> Tensor:
    """W itself, or a packed weight (oneDNN's layout, from ``packed``) back in torch's, for torch.mm."""
    return W if W.layout == torch.strided else W.to_dense()


def add_linear(base: Tensor, x: Tensor, W: Tensor, out: Tensor) -> Tensor:
    """out = base + x @ W.T, with x cast to W's dtype (bfloat16 matmuls add into a float32 ``out``)."""
    x = x.to(W.dtype)
    if _onednn(x):
        return torch.add(base, linear(x, W), out=out)
    W = _plain(W)
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
