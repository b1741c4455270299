"""One token at a time: the language model's weights arranged for the steps of generation.

Generation feeds one token per row and step. Through ``model(X, state)`` that step pays for the
module calls, the argument checks, the engine choice and a loop over one time step, which at batch 1
cost several times the arithmetic. StepDecoder does only the arithmetic, with the canonical weights
(recurrent/encoder.py), in the order the scratch cells do it (recurrent/cells.py), so its logits equal the model's up to
float rounding. It reads the weights as they are when it is built; build a new one after an update.

NativeDecoder goes one step further for one row on the CPU: the same arithmetic and the same draws
in C (recurrent/csrc/decode.c, compiled on first use by rnnlm.recurrent.native), a whole chunk of steps
per call, so that no Python runs between tokens. Where no C compiler is found, generation keeps StepDecoder.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
from torch import Tensor

from rnnlm.core.errors import NonFiniteLogitsError
from rnnlm.recurrent.state import State


class StepDecoder:
    """``decoder(ids (N,), state) -> (logits (N, V), state)``: one step of a unidirectional RNNLM, no autograd."""

    def __init__(self, model: torch.nn.Module) -> None:
        enc = model.encoder
        if enc.bidirectional:
            raise ValueError("a bidirectional encoder cannot generate one step at a time")
        self.cell, self.H = enc.cell, enc.hidden_size
        embedding = model.input.embedding
        self.embedding = None if embedding is None else embedding.weight.detach()
        # Transposed copies: a one-row product reads a (in, out) row-major matrix fastest (16 against 25 us
        # for the recipe's head through a transposed view).
        self.layers = []  # per layer: W_ih^T, bias, W_hh^T, and the gru's [0, 0, b_hn]
        for layer in range(enc.num_layers):
            w = [t.detach() for t in enc.weights(layer, 0)]
            extra = torch.cat([w[3].new_zeros(2 * self.H), w[3]]) if enc.cell == "gru" else None
            self.layers.append((w[0].t().contiguous(), w[2], w[1].t().contiguous(), extra))
        # One-hot input: x W_ih^T + b is row x of W_ih^T + b.
        self.rows = None if embedding is not None else self.layers[0][0] + self.layers[0][1]
        head_weight = model.head.weight.detach()  # (V, D)
        if getattr(model.head, "proj", None) is not None:  # tied with a projection: (V, E) @ (E, D)
            head_weight = head_weight @ model.head.proj.weight.detach()
        self.head_weight, self.head_bias = head_weight.t().contiguous(), model.head.bias.detach()

    @torch.no_grad()
    def __call__(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        H, parts = self.H, [s.unbind(0) for s in state]  # per state tensor, per layer: (N, H)
        new: list[list[Tensor]] = [[] for _ in state]
        x = None if self.embedding is None else self.embedding.index_select(0, ids)  # (N, E)
        for layer, (W_ih_t, bias, W_hh_t, b_hn) in enumerate(self.layers):
            xw = self.rows.index_select(0, ids) if x is None else torch.addmm(bias, x, W_ih_t)  # (N, gates * H)
            h = parts[0][layer]
            if self.cell == "rnn":
                h = torch.addmm(xw, h, W_hh_t).tanh_()
            elif self.cell == "gru":
                gh = torch.addmm(b_hn, h, W_hh_t)  # (N, 3H): h W_hh^T, b_hn on the candidate's block
                rz = (xw[:, : 2 * H] + gh[:, : 2 * H]).sigmoid_()
                n = torch.addcmul(xw[:, 2 * H :], rz[:, :H], gh[:, 2 * H :]).tanh_()
                h = torch.lerp(n, h, rz[:, H:])
            else:
                gates = torch.addmm(xw, h, W_hh_t)  # (N, 4H): i, f, g, o
                gates[:, : 2 * H].sigmoid_()
                gates[:, 2 * H : 3 * H].tanh_()
                gates[:, 3 * H :].sigmoid_()
                c = torch.addcmul(gates[:, H : 2 * H] * parts[1][layer], gates[:, :H], gates[:, 2 * H : 3 * H])
                new[1].append(c)
                h = gates[:, 3 * H :] * torch.tanh(c)
            new[0].append(h)
            x = h
        logits = torch.addmm(self.head_bias, x, self.head_weight)  # (N, V)
        return logits, tuple(torch.stack(p) for p in new)


class NativeDecoder:
    """A StepDecoder's weights handed to the compiled kernel ``recurrent/csrc/decode.c``: batch-1 generation in C.

    ``feed`` runs the prefix through the cells; ``sample`` then draws a token, feeds it, draws the next,
    and so on, for a whole chunk of steps in one call. The draws are generate.sample_next's: the
    cumulative distribution of softmax(logits / temperature) inverted with one float64 uniform per
    step, argmax at temperature 0. Arithmetic is float32 as in StepDecoder, in another order, so the
    logits agree with it to float rounding. ``create`` returns None where the kernel cannot serve
    the model: no C compiler, or weights other than float32 on the CPU.
    """

    CELLS = {"rnn": 0, "gru": 1, "lstm": 2}

    def __init__(self, decoder: StepDecoder, lib: ctypes.CDLL) -> None:
        embedding = decoder.embedding
        self.H, self.n_layers, self.lstm = decoder.H, len(decoder.layers), decoder.cell == "lstm"
        self.V = decoder.head_bias.numel()
        dims = [self.CELLS[decoder.cell], self.n_layers, self.H, self.V, 0 if embedding is None else embedding.shape[1]]
        self.dims = torch.tensor(dims, dtype=torch.int64)
        self._keep: list[Tensor] = []  # every tensor a pointer below points into
        self.ptrs = self._pointers([embedding, decoder.rows, decoder.head_weight, decoder.head_bias])
        self.layer_ptrs = self._pointers([t for layer in decoder.layers for t in layer])
        self._feed, self._sample = lib.rnnlm_feed, lib.rnnlm_sample
        self._feed.restype = self._sample.restype = ctypes.c_int

    @classmethod
    def create(cls, decoder: StepDecoder) -> NativeDecoder | None:
        """The decoder's NativeDecoder (made once per decoder), or None where the kernel cannot run it."""
        if hasattr(decoder, "_native"):
            return decoder._native
        tensors = [decoder.head_weight, decoder.head_bias, decoder.embedding, decoder.rows]
        tensors = [t for t in [*tensors, *(t for layer in decoder.layers for t in layer)] if t is not None]
        native = None
        if all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors):
            from rnnlm.recurrent.native import load  # here: most models never generate

            lib = load("decode")
            native = None if lib is None else cls(decoder, lib)
        decoder._native = native
        return native

    def _pointers(self, tensors: list[Tensor | None]) -> ctypes.Array:
        """An array of C pointers to (contiguous copies of) the tensors; None becomes NULL."""
        out = (ctypes.c_void_p * len(tensors))()
        for i, t in enumerate(tensors):
            if t is not None:
                t = t.detach().contiguous()
                self._keep.append(t)
                out[i] = t.data_ptr()
        return out

    def begin(self, state: State | None = None) -> NativeState:
        """A generation state for this decoder: zeros, or a copy of a batch-1 model state."""
        H, L = self.H, self.n_layers
        if state is None:
            parts = [torch.zeros(L, H) for _ in range(2 if self.lstm else 1)]
        else:
            if state[0].shape != (L, 1, H):
                raise ValueError(f"expected a batch-1 state of shape {(L, 1, H)}, got {tuple(state[0].shape)}")
            parts = [s.detach().reshape(L, H).to(torch.float32, copy=True) for s in state]
        return NativeState(parts[0], parts[1] if self.lstm else None, torch.zeros(self.V))

    def _check_ids(self, ids: Tensor) -> None:
        if ids.numel() and not (int(ids.min()) >= 0 and int(ids.max()) < self.V):
            raise ValueError(f"token ids must lie in [0, {self.V}), got {ids.tolist()}")

    def _state_args(self, st: NativeState) -> list[ctypes.c_void_p]:
        c = None if st.c is None else st.c.data_ptr()
        return [ctypes.c_void_p(self.dims.data_ptr()), self.ptrs, self.layer_ptrs, ctypes.c_void_p(st.h.data_ptr()),
                ctypes.c_void_p(c)]  # fmt: skip

    def feed(self, st: NativeState, ids: list[int] | Tensor) -> None:
        """Feed the tokens one after the other; st.logits then holds the logits after the last one."""
        ids = torch.as_tensor(ids, dtype=torch.int64).contiguous().view(-1)
        self._check_ids(ids)
        rc = self._feed(*self._state_args(st), ctypes.c_void_p(ids.data_ptr()), ctypes.c_int64(ids.numel()),
                        ctypes.c_void_p(st.logits.data_ptr()))  # fmt: skip
        if rc != 0:
            raise MemoryError("the native decoder could not allocate its work buffer")

    def sample(
        self,
        st: NativeState,
        steps: int,
        uniforms: Tensor | None,
        temperature: float,
        feed_last: bool = True,
        trace: Tensor | None = None,
    ) -> Tensor:
        """Draw `steps` tokens (int64, (steps,)), feeding each one; the last only with feed_last.

        uniforms: float64 (steps,) on the CPU, one per draw; None only at temperature 0 (greedy).
        trace: a float32 (steps, V) tensor that receives the logits each token was drawn from (the page shows
        their probabilities; reading them here saves a second pass of the model), or None.
        Raises NonFiniteLogitsError, as generate.sample_next does, where the logits of a draw hold NaN
        (or when sampling give no distribution); the tokens of the call drawn before it are lost.
        """
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        if uniforms is not None:
            uniforms = uniforms.to(torch.float64).contiguous().view(-1)
            if uniforms.numel() != steps:
                raise ValueError(f"{steps} steps need {steps} uniforms, got {uniforms.numel()}")
        elif temperature != 0:
            raise ValueError("sampling at a temperature above 0 needs one uniform per step")
        if trace is not None and (trace.shape != (steps, self.V) or trace.dtype != torch.float32
                                  or not trace.is_contiguous() or trace.device.type != "cpu"):  # fmt: skip
            raise ValueError(f"trace must be a contiguous float32 CPU tensor of shape {(steps, self.V)}")
        out = torch.empty(steps, dtype=torch.int64)
        rc = self._sample(
            *self._state_args(st),
            ctypes.c_int64(steps),
            ctypes.c_void_p(None if uniforms is None else uniforms.data_ptr()),
            ctypes.c_double(temperature),
            ctypes.c_int(int(feed_last)),
            ctypes.c_void_p(out.data_ptr()),
            ctypes.c_void_p(st.logits.data_ptr()),
            ctypes.c_void_p(None if trace is None else trace.data_ptr()),
        )
        if rc == 1:
            raise NonFiniteLogitsError()
        if rc != 0:
            raise MemoryError("the native decoder could not allocate its work buffer")
        return out


@dataclass
class NativeState:
    """A NativeDecoder's running state: h and c (layers, H) and the last logits (V,), float32, on the CPU."""

    h: Tensor
    c: Tensor | None
    logits: Tensor

    def state(self) -> State:
        """The recurrent state in the model's layout, (layers, 1, H) per tensor."""
        return tuple(p.unsqueeze(1).clone() for p in (self.h, self.c) if p is not None)
