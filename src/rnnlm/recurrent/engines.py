"""Engines: the ways to compute a RecurrentEncoder's recurrence, chosen by name from a registry.

Every engine reads the same canonical weights (encoder.py) and returns the same numbers, so a
model trained with one runs with any other, and a resume may switch. An engine is a function::

    run(encoder, x, state, lengths) -> (outputs (B, T, D), state)

with x (B, T, in) floats or (B, T) one-hot token ids, state a tuple of (layers * directions, B, H)
tensors and lengths (B,) or None. A faster engine registers itself with ``@register_engine(name)``
in its own module; nothing in the model changes.

* ``scratch``: the textbook cells (cells.py) in PyTorch ops; one-hot inputs are row lookups.
* ``fused``: torch's own fused kernels, the ones torch.nn.LSTM calls (cuDNN on a GPU).
* ``cpu``: each layer's whole recurrence as one autograd Function (engine_cpu.py, sequence_fns.py).
* ``triton``: each layer's recurrence as one persistent Triton kernel, forward and backward (GPU;
  engine_triton.py, triton_kernels.py).
* ``auto``: the fastest correct engine for the input, cell, precision and device (resolve_engine_name).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnlm.core.errors import ConfigError
from rnnlm.recurrent import gemm
from rnnlm.recurrent.cells import gru_scratch, lstm_scratch, rnn_scratch
from rnnlm.recurrent.encoder import RecurrentEncoder, to_torch_state_dict
from rnnlm.recurrent.state import State

EngineFn = Callable[[RecurrentEncoder, torch.Tensor, State, "torch.Tensor | None"], tuple[torch.Tensor, State]]


@dataclass(frozen=True)
class Engine:
    name: str
    run: EngineFn
    doc: str

    def __call__(self, enc: RecurrentEncoder, x: torch.Tensor, state: State, lengths: torch.Tensor | None):
        return self.run(enc, x, state, lengths)


ENGINES: dict[str, Engine] = {}


def register_engine(name: str, doc: str = "") -> Callable[[EngineFn], EngineFn]:
    """Decorator: make ``fn`` available as ``--engine name``."""

    def add(fn: EngineFn) -> EngineFn:
        ENGINES[name] = Engine(name, fn, doc or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return add


def engine_names() -> tuple[str, ...]:
    """Every name --engine accepts."""
    return ("auto", *ENGINES)


def resolve_engine_name(
    name: str,
    one_hot: bool,
    device: torch.device,
    cell: str = "lstm",
    matmul_dtype: str = "float32",
    padded: bool = False,
) -> str:
    """The engine ``auto`` stands for, as measured side by side on a CPU (bench/speed.py, one thread):

    * ``cpu`` for rnn and gru (1.3 to 1.9x scratch and fused, one-hot or dense), for one-hot input of
      any cell (row lookups instead of dense one-hot matmuls) and for bfloat16 matmuls;
    * ``fused`` for dense float32 lstm, where torch's oneDNN LSTM kernel beats the cpu engine by
      up to 1.35x at small shapes and about ties at large ones; on a GPU always (cuDNN);
    * for padded batches (``lengths``), as before: scratch for one-hot input, else fused (packed);
    * on a GPU (bench/speed.py --device cuda, H200, the whole step in a CUDA graph): ``triton`` for rnn
      and gru where the triton package is installed (gru: 1.47 against 1.00 M tokens/s for cuDNN inside
      the same graph; rnn: 2.09 against 2.05), ``fused`` (cuDNN) for lstm, which wins there (charrnn:
      1.33 against 0.86 M tokens/s) and for padded batches.
    """
    if name != "auto":
        return name
    if device.type != "cpu":
        use_triton = device.type == "cuda" and cell != "lstm" and not padded and _has_triton()
        return "triton" if use_triton else "fused"
    if padded:
        return "scratch" if one_hot else "fused"
    if cell == "lstm" and not one_hot and matmul_dtype != "bfloat16":
        return "fused"
    return "cpu"


def _has_triton() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def _cpuinfo_has_bf16() -> bool:
    """Whether /proc/cpuinfo (Linux) lists AVX512-BF16 or AMX-BF16."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX, read from /proc/cpuinfo) and
    oneDNN's bfloat16 matmul runs here (tried once: oneDNN may be capped below what the CPU has, as with
    ONEDNN_MAX_CPU_ISA=AVX2, and then bfloat16 runs on the slower torch.mm path)."""
    return _cpuinfo_has_bf16() and gemm.onednn_works(torch.bfloat16)


def resolve_matmul_dtype(name: str, device: torch.device) -> str:
    """The matmul precision ``auto`` stands for: bfloat16 where it pays (a CPU with native bfloat16
    arithmetic), else float32 (on a GPU too: bfloat16 there is --matmul-dtype bfloat16); other names unchanged.

    An explicit or saved "bfloat16" runs on any CPU: where oneDNN cannot, through torch.mm (gemm.py)
    and, for the fused engine, torch's own bfloat16 kernels (``fused``), only slower."""
    if name != "auto":
        return name
    return "bfloat16" if device.type == "cpu" and cpu_has_native_bf16() else "float32"


def resolve_engine(
    engine: str, matmul_dtype: str, device: torch.device, cell: str, one_hot: bool, padded: bool
) -> tuple[str, str]:
    """(the engine, the matmul precision) that a recurrence of this cell and input runs with on ``device``:
    ``auto`` made concrete for both, as a run resolves them once at setup (training/runs.resolve_run)."""
    dtype = resolve_matmul_dtype(matmul_dtype, device)
    return resolve_engine_name(engine, one_hot, device, cell, dtype, padded), dtype


def get_engine(name: str, enc: RecurrentEncoder, x: torch.Tensor, lengths: torch.Tensor | None = None) -> Engine:
    """The engine registered as ``name`` (``auto`` resolved for this input); a clear error if unknown."""
    resolved = resolve_engine_name(
        name, x.dim() == 2, x.device, enc.cell, getattr(enc, "matmul_dtype", "float32"), lengths is not None
    )
    if resolved not in ENGINES:
        raise ConfigError(f"unknown engine (--engine) {name!r}; choose from {', '.join(engine_names())}")
    return ENGINES[resolved]


# -- scratch ---------------------------------------------------------------------------------------


def _project(x: torch.Tensor, weight_ih: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``X W_x + b`` for all steps at once; (B, T) ids stand for one-hot rows, so the product is a
    row lookup at O(B*T*out) cost instead of O(B*T*V*out)."""
    if x.dim() == 2:
        return F.embedding(x, weight_ih.t()) + bias  # (B, T, gates * hidden)
    return F.linear(x, weight_ih, bias)


def _reverse(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse each sequence within its own length (padding stays at the end); its own inverse."""
    if lengths is None:
        return x.flip(1)
    T = x.shape[1]
    t = torch.arange(T, device=x.device)
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, T)
    if x.dim() == 3:
        idx = idx.unsqueeze(-1).expand_as(x)
    return x.gather(1, idx)


@register_engine("scratch")
def scratch(enc: RecurrentEncoder, x: torch.Tensor, state: State, lengths: torch.Tensor | None):
    """The textbook cells in PyTorch ops, one time step after another (the reference)."""
    mask = None if lengths is None else torch.arange(x.shape[1], device=x.device) < lengths[:, None]  # (B, T)
    dirs = enc.num_directions
    finals: list[list[torch.Tensor]] = [[] for _ in state]
    layer_input = x
    for layer in range(enc.num_layers):
        outputs = []
        for direction in range(dirs):
            w = enc.weights(layer, direction)
            inp = layer_input if direction == 0 else _reverse(layer_input, lengths)
            XW = _project(inp, w[0], w[2])  # (B, T, gates * hidden)
            s = tuple(part[layer * dirs + direction] for part in state)
            if enc.cell == "rnn":
                out, s = rnn_scratch(XW, s, w[1].t(), mask)
            elif enc.cell == "gru":
                out, s = gru_scratch(XW, s, w[1].t(), w[3], mask)
            else:
                out, s = lstm_scratch(XW, s, w[1].t(), mask)
            outputs.append(out if direction == 0 else _reverse(out, lengths))
            for k, part in enumerate(s):
                finals[k].append(part)
        layer_input = outputs[0] if dirs == 1 else torch.cat(outputs, dim=-1)  # (B, T, dirs * hidden)
        if layer < enc.num_layers - 1:  # between layers only, as torch.nn.LSTM applies its dropout
            layer_input = enc.drop_between(layer_input, time_dim=1)
    return layer_input, tuple(torch.stack(parts) for parts in finals)


# -- fused -----------------------------------------------------------------------------------------

# torch's fused kernels as torch.nn.RNN/GRU/LSTM.forward call them; torch._VF is private, so they are
# looked up by name, and where one is missing or fails the engine runs scratch (public ops, same numbers).
_VF_NAMES = {"rnn": "rnn_tanh", "gru": "gru", "lstm": "lstm"}
_fused_failed: set[tuple[str, str, str]] = set()  # (device type, cell, matmul dtype) whose kernel failed here
_autocast_ok: dict[str, bool] = {}  # cell -> whether its kernel runs under CPU bfloat16 autocast here


def _vf(cell: str) -> Callable | None:
    """torch's fused kernel for ``cell``, or None where this torch has none under that name."""
    return getattr(getattr(torch, "_VF", None), _VF_NAMES[cell], None)


def _cpu_autocast_works(cell: str, fn: Callable) -> bool:
    """Whether ``fn`` runs forward and backward under CPU bfloat16 autocast, tried once per cell on a tiny
    input. It does not on a CPU without AVX512 (or under ONEDNN_MAX_CPU_ISA=AVX2): oneDNN cannot build
    its bfloat16 RNN ("could not create a primitive descriptor for the LSTM forward propagation")."""
    if cell not in _autocast_ok:
        G = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
        try:  # with gradients even when called for evaluation
            with torch.inference_mode(False), torch.enable_grad():
                shapes = ((G * 2, 3), (G * 2, 2), (G * 2,), (G * 2,))
                weights = [torch.full(shape, 0.1, requires_grad=True) for shape in shapes]
                h = torch.zeros(1, 1, 2)
                hx = (h, h) if cell == "lstm" else h
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out = fn(torch.ones(1, 2, 3), hx, weights, True, 1, 0.0, True, False, True)
                out[0].float().sum().backward()
            _autocast_ok[cell] = True
        except RuntimeError:
            _autocast_ok[cell] = False
    return _autocast_ok[cell]


def _in_bfloat16(fn: Callable) -> Callable:
    """``fn`` with its float tensors (input, state, weights) cast to bfloat16 first, as autocast would cast
    them: handed over already cast, the kernel runs where autocast's mix of dtypes fails (CPUs without
    AVX512), on torch's own or oneDNN's bfloat16 path, slower but with the same rounding."""

    def cast(a):
        if isinstance(a, torch.Tensor):
            return a.to(torch.bfloat16) if a.is_floating_point() else a
        return type(a)(cast(b) for b in a) if isinstance(a, (list, tuple)) else a

    return lambda *args: fn(*(cast(a) for a in args))


def _note_fallback(key: tuple[str, str, str], error: Exception) -> None:
    _fused_failed.add(key)
    warnings.warn(
        f"rnnlm: torch's fused {key[1]} kernel failed on {key[0]} with {key[2]} matmuls "
        f"({str(error).splitlines()[0][:200] if str(error) else type(error).__name__}); "
        "running the scratch engine instead (same weights, slower)",
        RuntimeWarning,
        stacklevel=3,
    )


@register_engine("fused")
def fused(enc: RecurrentEncoder, x: torch.Tensor, state: State, lengths: torch.Tensor | None):
    """torch's fused RNN/GRU/LSTM kernels (cuDNN on a GPU), called as torch.nn.LSTM.forward calls them."""
    key = (x.device.type, enc.cell, enc.matmul_dtype)
    fn = _vf(enc.cell)
    if fn is None or key in _fused_failed:
        if fn is None and key not in _fused_failed:
            _note_fallback(key, AttributeError(f"torch._VF.{_VF_NAMES[enc.cell]} is missing"))
        return scratch(enc, x, state, lengths)
    try:
        return _fused(enc, fn, x, state, lengths)
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError as e:  # the kernel, not the input: scratch raises again where the input is wrong
        if x.is_cuda and torch.cuda.is_current_stream_capturing():
            raise  # a CUDA graph capture that failed: training/graph_step.py runs the step eagerly instead
        _note_fallback(key, e)
        return scratch(enc, x, state, lengths)


def _fused(enc: RecurrentEncoder, fn: Callable, x: torch.Tensor, state: State, lengths: torch.Tensor | None):
    if x.dim() == 2:
        x = F.one_hot(x, enc.input_size).to(enc.weight_hh_l0.dtype)  # (B, T, V)
    sd = to_torch_state_dict(enc)
    flat = [
        sd[name + sfx]
        for layer in range(enc.num_layers)
        for sfx in enc.suffixes(layer)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    ]
    if enc.matmul_dtype != "bfloat16":
        return _run_fused(enc, fn, x, state, lengths, flat)
    if x.device.type == "cpu" and not _cpu_autocast_works(enc.cell, fn):
        fn = _in_bfloat16(fn)
    with torch.autocast(x.device.type, dtype=torch.bfloat16):  # cuDNN's or oneDNN's bfloat16 RNN
        out, state = _run_fused(enc, fn, x, state, lengths, flat)
    return out.float(), tuple(s.float() for s in state)


def _run_fused(enc: RecurrentEncoder, fn, x: torch.Tensor, state: State, lengths, flat: list[torch.Tensor]):
    hx = state if enc.cell == "lstm" else state[0]
    if enc.locked and enc.training and enc.dropout > 0 and enc.num_layers > 1:
        if lengths is not None:  # padded batches with locked dropout: scratch masks both
            return scratch(enc, x, state, lengths)
        return _fused_layer_by_layer(enc, fn, x, state, flat)
    dropout = enc.dropout if enc.num_layers > 1 else 0.0
    common = (flat, True, enc.num_layers, dropout, enc.training, enc.bidirectional)
    if lengths is None:
        result = fn(x, hx, *common, True)  # batch_first
        return result[0], tuple(result[1:])
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    order = packed.sorted_indices
    hx = tuple(h.index_select(1, order) for h in state) if enc.cell == "lstm" else state[0].index_select(1, order)
    result = fn(packed.data, packed.batch_sizes, hx, *common)
    out = PackedSequence(result[0], packed.batch_sizes, order, packed.unsorted_indices)
    padded, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return padded, tuple(h.index_select(1, packed.unsorted_indices) for h in result[1:])


def _fused_layer_by_layer(enc: RecurrentEncoder, fn, x: torch.Tensor, state: State, flat: list[torch.Tensor]):
    """The fused kernels one layer at a time, with the encoder's locked dropout between layers (torch's
    kernels only know dropout with a fresh mask at every step)."""
    dirs, per_layer = enc.num_directions, 4 * enc.num_directions
    finals: list[list[torch.Tensor]] = [[] for _ in state]
    for layer in range(enc.num_layers):
        rows = slice(layer * dirs, (layer + 1) * dirs)
        hx = tuple(s[rows] for s in state) if enc.cell == "lstm" else state[0][rows]
        weights = flat[layer * per_layer : (layer + 1) * per_layer]
        result = fn(x, hx, weights, True, 1, 0.0, enc.training, enc.bidirectional, True)
        x = result[0]  # (B, T, dirs * hidden)
        if layer < enc.num_layers - 1:
            x = enc.drop_between(x, time_dim=1)
        for k, part in enumerate(result[1:]):
            finals[k].append(part)
    return x, tuple(torch.cat(parts) for parts in finals)
