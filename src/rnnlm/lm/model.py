"""The recurrent language model: token input layer -> recurrent encoder -> LM head.

Batch-first throughout: token ids X are (B, T), logits (B, T, V). The state is a tuple of
(layers, B, hidden) tensors (recurrent/state.py). Parameter names, and so the state-dict keys:

    input.embedding.weight   (V, E)     absent when embed == 0 (one-hot input)
    encoder.weight_ih_l0 ... canonical recurrent weights, the same for every engine (recurrent/encoder.py)
    head.weight, head.bias   (V, H)     the output layer O = H W_hq + b_q
    head.proj.weight         (E, H)     only with tied weights and embed != hidden (heads.py)
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from rnnlm.lm.config import ModelConfig
from rnnlm.lm.decoder import StepDecoder
from rnnlm.lm.heads import LMHead
from rnnlm.lm.inputs import TokenInput
from rnnlm.recurrent.encoder import RecurrentEncoder, from_torch_state_dict
from rnnlm.recurrent.engines import resolve_matmul_dtype
from rnnlm.recurrent.state import State


class RNNLM(nn.Module):
    """A recurrent language model over a vocabulary of ``vocab_size`` tokens."""

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        cfg.check()
        if cfg.matmul_dtype == "auto":  # runs resolve it for their device first (runs.train); a bare model: CPU
            cfg = dataclasses.replace(cfg, matmul_dtype=resolve_matmul_dtype("auto", torch.device("cpu")))
        self.cfg = cfg
        self.vocab_size = vocab_size
        # Either --dropout (a fresh mask at every step, at all three places) or the locked rates (ModelConfig).
        locked = cfg.locked_dropout
        self.input = TokenInput(
            vocab_size, cfg.embed, cfg.dropout_in if locked else cfg.dropout, cfg.embed_dropout, locked
        )
        self.encoder = RecurrentEncoder(
            cfg.cell,
            self.input.output_size,
            cfg.hidden,
            cfg.layers,
            dropout=cfg.dropout_hidden if locked else cfg.dropout,
            engine=cfg.engine,
            matmul_dtype=cfg.matmul_dtype,
            locked=locked,
            weight_drop=cfg.weight_drop,
        )
        self.head = LMHead(
            cfg.hidden,
            vocab_size,
            cfg.dropout_out if locked else cfg.dropout,
            tie_to=self.input.embedding if cfg.tie_weights else None,
            matmul_dtype=cfg.matmul_dtype,
            locked=locked,
        )
        self.reset_parameters()

    @property
    def num_states(self) -> int:
        return self.encoder.num_states

    def set_engine(self, name: str) -> None:
        """Compute the recurrence with another engine from now on (the weights stay as they are)."""
        self.encoder.engine = name

    def reset_parameters(self) -> None:
        """Initialise every parameter by ``cfg.init``; the same rule whatever the engine.

        uniform: every weight and bias of the encoder and the head ~ U(-1/sqrt(hidden), 1/sqrt(hidden)),
        torch.nn.LSTM's own rule. An untied embedding ~ N(0, 1), torch.nn.Embedding's default, which
        keeps the input signal about as strong as a one-hot row; a tied embedding is also the output
        weight and follows the head's rule, since N(0, 1) there would start with huge logits.
        normal: every weight, the embedding included, ~ N(0, init_std) and every bias zero (the d2l recipe).
        """
        cfg = self.cfg
        k = 1.0 / math.sqrt(cfg.hidden)
        for name, p in self.named_parameters():  # a tied weight is listed once, as input.embedding.weight
            is_bias = name.rsplit(".", 1)[-1].startswith("bias")
            if cfg.init == "normal":
                nn.init.zeros_(p) if is_bias else nn.init.normal_(p, 0.0, cfg.init_std)
            elif name == "input.embedding.weight" and not cfg.tie_weights:
                nn.init.normal_(p, 0.0, 1.0)
            else:
                nn.init.uniform_(p, -k, k)

    def begin_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The zero state for a batch, on the model's device unless told otherwise."""
        return self.encoder.begin_state(batch_size, device)

    def forward(self, X: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """X: (B, T) int64 token ids -> logits (B, T, V) and the final state. state None = zeros."""
        outputs, state = self.encode(X, state)
        return self.head(outputs), state

    def encode(self, X: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """X: (B, T) token ids -> the encoder's outputs (B, T, H), which the head turns into logits, and the state.

        Training takes the loss from here (``head.loss``) so that the logits are never kept.
        """
        inputs = self.input(X)  # (B, T, E), or (B, T) ids for one-hot input
        return self.encoder(inputs, state)  # (B, T, H)

    def __getstate__(self) -> dict:
        """The module's state without the cached decoder, which holds pointers into compiled code: a copy (as
        export makes, copy.deepcopy) or a pickle of a model that has generated text would fail on it otherwise."""
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        return {k: v for k, v in state.items() if k != "_step_decoder"}

    def decoder(self) -> StepDecoder:
        """A function for generation: (ids (N,), state) -> (next-token logits (N, V), state), from today's weights.

        Building one copies the weights (about 1.5 ms for the recipe), so on the CPU it is kept until a
        parameter changes: any in-place update (optimizer step, load_state_dict) bumps the tensor's
        version, and a move (.to, .double) replaces it. Writes through ``p.data`` bypass the version, so
        after those build ``StepDecoder(model)`` directly. Elsewhere it is built anew on every call: a
        replayed CUDA graph updates the weights without bumping their versions.
        """
        params = list(self.parameters())
        if any(p.device.type != "cpu" for p in params):
            return StepDecoder(self)
        versions = _versions(params)
        if versions is None:  # no version counters in this torch: nothing to tell a stale copy by
            return StepDecoder(self)
        cached = self.__dict__.get("_step_decoder")  # (the parameters themselves, their versions, the decoder)
        fresh = cached is not None and len(cached[0]) == len(params) and cached[1] == versions
        if not (fresh and all(a is b for a, b in zip(cached[0], params, strict=True))):
            cached = (params, versions, StepDecoder(self))
            self.__dict__["_step_decoder"] = cached  # not a submodule: no state_dict entry
        return cached[2]


def _versions(tensors: list[torch.Tensor]) -> list[int] | None:
    """Each tensor's in-place version counter (``Tensor._version``, private to torch), or None where this
    torch has none, so that a cache keyed on them is skipped rather than trusted or crashing."""
    try:
        return [t._version for t in tensors]
    except (AttributeError, RuntimeError):
        return None


# -- checkpoints written by rnnlm 0.1 ----------------------------------------------------------------

# rnnlm 0.1 scratch layers kept one (in, hidden) matrix per gate; names per torch gate block, in torch's order.
_V1_SCRATCH_GATES = {
    "rnn": (("W_xh", "W_hh", "b_h"),),
    "gru": (("W_xr", "W_hr", "b_r"), ("W_xz", "W_hz", "b_z"), ("W_xh", "W_hh", "b_xh")),
    "lstm": (("W_xi", "W_hi", "b_i"), ("W_xf", "W_hf", "b_f"), ("W_xc", "W_hc", "b_c"), ("W_xo", "W_ho", "b_o")),
}


def upgrade_state_dict(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Weights saved by rnnlm 0.1 (``rnn.*`` fused or ``layers.*`` scratch keys) in today's layout.

    A dict already in today's layout comes back unchanged.
    """
    if not any(k.startswith(("rnn.", "layers.", "embedding.")) for k in sd):
        return sd
    out = {k: v for k, v in sd.items() if k.startswith("head.")}
    if "embedding.weight" in sd:
        out["input.embedding.weight"] = sd["embedding.weight"]
    if any(k.startswith("rnn.") for k in sd):
        out.update({"encoder." + k: v for k, v in from_torch_state_dict(sd, cfg.cell, prefix="rnn.").items()})
        return out
    for layer in range(cfg.layers):
        gates = [tuple(sd[f"layers.{layer}.{n}"] for n in names) for names in _V1_SCRATCH_GATES[cfg.cell]]
        out[f"encoder.weight_ih_l{layer}"] = torch.cat([w_x.t() for w_x, _, _ in gates])
        out[f"encoder.weight_hh_l{layer}"] = torch.cat([w_h.t() for _, w_h, _ in gates])
        out[f"encoder.bias_l{layer}"] = torch.cat([b for _, _, b in gates])
        if cfg.cell == "gru":
            out[f"encoder.bias_hn_l{layer}"] = sd[f"layers.{layer}.b_hh"]
    return out
