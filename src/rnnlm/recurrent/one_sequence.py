"""One sequence at a time through a frozen LSTM encoder, for inference: each layer and direction in one C call.

At batch 1 the cpu engine spends most of a step on calling torch (a matrix-vector product through oneDNN, then
the pointwise step), not on arithmetic. ``OneSequenceLSTM`` keeps the engine's input projection (x W_ih^T + b
for all steps at once, ``sequence_fns._project``) and runs each layer and direction's recurrence in one call of
csrc/lstm_infer.c, which reads W_hh^T in the encoder's matmul precision (bfloat16 bits or float32). The
numbers are the cpu engine's up to the order of float32 sums (tests/recurrent/test_one_sequence.py).

The weights are copied when the object is made; ``for_encoder`` keeps one per encoder and makes it again when
a weight has changed since (an optimizer step or a load bumps the tensors' versions). ``create`` returns None
where the kernel cannot run (no C compiler, ``RNNLM_NATIVE=0``, a cell other than the LSTM, a GPU, weights
other than float32), and callers keep their batched path.
"""

from __future__ import annotations

import ctypes
import functools
import weakref

import torch
from torch import Tensor

from rnnlm.recurrent import native
from rnnlm.recurrent.encoder import RecurrentEncoder
from rnnlm.recurrent.sequence_fns import _project

# Each encoder's copy, beside the encoder rather than on it: a module that held the kernel's ctypes handle could no
# longer be deep-copied or pickled (export copies the model).
_KEPT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@functools.cache
def _kernel() -> ctypes.CDLL | None:
    lib = native.load("lstm_infer")
    if lib is not None:
        i64, ptr, flag = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
        lib.lstm_infer_sequence.argtypes = [i64, i64, ptr, ptr, flag, ptr, ptr, ptr, ptr, flag]
        lib.lstm_infer_sequence.restype = None
        lib.lstm_infer_pairs.argtypes, lib.lstm_infer_pairs.restype = [], ctypes.c_int
    return lib


class OneSequenceLSTM:
    """A frozen LSTM encoder's outputs for one sequence: (T, in) features or (T,) ids -> each layer's (T, dirs * H)."""

    def __init__(self, enc: RecurrentEncoder, lib: ctypes.CDLL, pairs: bool = True) -> None:
        self.lib, self.hidden, self.dirs = lib, enc.hidden_size, enc.num_directions
        self.mm_dtype = torch.bfloat16 if enc.matmul_dtype == "bfloat16" else None
        H = self.hidden
        # 0: float32 weights; 1: bfloat16 rows; 2: bfloat16 pairs of rows for AVX512-BF16 (csrc/lstm_infer.c)
        # (pairs=False: the portable loop even where AVX512-BF16 runs, as a CPU without it would; for tests)
        self.mode = 0 if self.mm_dtype is None else 2 if pairs and lib.lstm_infer_pairs() and H % 4 == 0 else 1
        # per layer: both directions' W_ih and biases stacked (one input product for both), and per direction
        # W_hh^T as the kernel reads it
        self.layers: list[tuple[Tensor, Tensor, list[Tensor]]] = []
        with torch.no_grad():
            for layer in range(enc.num_layers):
                W_ihs, biases, Wts = [], [], []
                for direction in range(self.dirs):
                    W_ih, W_hh, bias = (w.detach() for w in enc.weights(layer, direction)[:3])
                    Wt = W_hh.t().contiguous()  # (H, 4H): the kernel streams its rows
                    if self.mode:
                        Wt = Wt.to(torch.bfloat16).view(torch.int16)
                    if self.mode == 2:  # (H/2, 4H, 2): rows 2p and 2p + 1 side by side
                        Wt = Wt.view(H // 2, 2, 4 * H).transpose(1, 2)
                    W_ihs.append(W_ih)
                    biases.append(bias)
                    Wts.append(Wt.contiguous())
                self.layers.append((torch.cat(W_ihs), torch.cat(biases), Wts))

    @classmethod
    def create(cls, enc: RecurrentEncoder, pairs: bool = True) -> OneSequenceLSTM | None:
        """The fast path for this encoder, or None where it cannot run (see the module docstring)."""
        if enc.cell != "lstm" or any(p.device.type != "cpu" or p.dtype != torch.float32 for p in enc.parameters()):
            return None
        lib = _kernel()
        return None if lib is None else cls(enc, lib, pairs)

    @classmethod
    def for_encoder(cls, enc: RecurrentEncoder) -> OneSequenceLSTM | None:
        """``create``'s result, kept on the encoder until one of its weights changes."""
        versions = tuple((id(p), p._version) for p in enc.parameters())
        kept = _KEPT.get(enc)
        if kept is None or kept[0] != versions or kept[1] != enc.matmul_dtype:
            kept = _KEPT[enc] = (versions, enc.matmul_dtype, cls.create(enc))
        return kept[2]

    def __call__(self, x: Tensor) -> list[Tensor]:
        """Each layer's outputs (T, dirs * H), bottom first, from zero states; x (T, in) float32 or (T,) ids."""
        H, outputs = self.hidden, []
        inp = x.unsqueeze(1)  # (T, 1, in) or (T, 1) ids
        with torch.no_grad():
            for W_ih, bias, Wts in self.layers:
                outs = []
                both = _project(inp, W_ih, bias, self.mm_dtype)  # (T, 1, dirs * 4H)
                for direction, Wt in enumerate(Wts):
                    A = both[:, 0, direction * 4 * H : (direction + 1) * 4 * H].contiguous()  # (T, 4H)
                    T = A.shape[0]
                    out, h, c, work = A.new_empty(T, H), A.new_zeros(H), A.new_zeros(H), A.new_empty(6 * H)
                    self.lib.lstm_infer_sequence(
                        T, H, A.data_ptr(), Wt.data_ptr(), self.mode, h.data_ptr(),
                        c.data_ptr(), work.data_ptr(), out.data_ptr(), direction,
                    )  # fmt: skip
                    outs.append(out)
                layer_out = outs[0] if self.dirs == 1 else torch.cat(outs, dim=-1)  # (T, dirs * H)
                outputs.append(layer_out)
                inp = layer_out.unsqueeze(1)
        return outputs
