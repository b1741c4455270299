"""The recurrent language model: embedding (or one-hot) -> recurrent layers -> linear head.

Batch-first throughout: token ids X are (B, T), logits (B, T, V). The state is a tuple of
(layers, B, hidden) tensors, ``(h,)`` for rnn and gru and ``(h, c)`` for lstm, in both
implementations, so that callers never need to know which one they hold.

Parameter names, and so the state-dict keys:

    embedding.weight                 (V, E)        absent when embed == 0 (one-hot input)
    layers.{l}.W_xh, ...             (in, hidden)  impl scratch, see cells.py for the names
    rnn.weight_ih_l{l}, ...          torch's       impl fused
    head.weight, head.bias           (V, hidden)   the output layer O = H W_hq + b_q

``convert_state_dict`` moves weights between the two implementations of the same config.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rnnlm.config import ModelConfig
from rnnlm.models.cells import SCRATCH_CELLS

State = tuple[torch.Tensor, ...]  # rnn/gru: (h,), lstm: (h, c); each (layers, B, hidden)

_FUSED = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


def _check_config(cfg: ModelConfig, vocab_size: int) -> None:
    """Reject configs that cannot build a model, saying which field is wrong."""
    for name, allowed in (
        ("cell", tuple(SCRATCH_CELLS)),
        ("impl", ("scratch", "fused")),
        ("init", ("uniform", "normal")),
    ):
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"model {name} must be one of {allowed}, got {getattr(cfg, name)!r}")
    if vocab_size < 1 or cfg.layers < 1 or cfg.hidden < 1 or cfg.embed < 0:
        raise ValueError(
            f"need vocab_size >= 1, layers >= 1, hidden >= 1 and embed >= 0; got vocab_size={vocab_size}, "
            f"layers={cfg.layers}, hidden={cfg.hidden}, embed={cfg.embed}"
        )
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.tie_weights and cfg.embed != cfg.hidden:
        raise ValueError(
            f"tie_weights shares the embedding with the output layer, so it needs embed == hidden "
            f"(got embed={cfg.embed}, hidden={cfg.hidden}); set --embed {cfg.hidden} or turn off --tie-weights"
        )


class RNNLM(nn.Module):
    """A recurrent language model over a vocabulary of ``vocab_size`` tokens."""

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        _check_config(cfg, vocab_size)
        self.cfg = cfg
        self.vocab_size = vocab_size
        V, E, H = vocab_size, cfg.embed, cfg.hidden
        self.embedding = nn.Embedding(V, E) if E > 0 else None
        self.drop = nn.Dropout(cfg.dropout)
        input_size = E if E > 0 else V
        if cfg.impl == "fused":
            # torch applies its dropout between layers only (and warns about it with one layer);
            # the dropout after the last layer is self.drop in forward.
            between = cfg.dropout if cfg.layers > 1 else 0.0
            kwargs = {"nonlinearity": "tanh"} if cfg.cell == "rnn" else {}
            self.rnn = _FUSED[cfg.cell](input_size, H, cfg.layers, batch_first=True, dropout=between, **kwargs)
        else:
            cell = SCRATCH_CELLS[cfg.cell]
            self.layers = nn.ModuleList(cell(input_size if i == 0 else H, H) for i in range(cfg.layers))
        self.head = nn.Linear(H, V)
        if cfg.tie_weights:
            self.head.weight = self.embedding.weight  # one tensor, (V, H) == (V, E)
        self.reset_parameters()

    @property
    def num_states(self) -> int:
        """Tensors in the state: 2 for lstm (h, c), else 1."""
        return 2 if self.cfg.cell == "lstm" else 1

    def reset_parameters(self) -> None:
        """Initialise every parameter by ``cfg.init``; the same rule in both implementations.

        uniform: every weight and bias of the recurrent layers and the head ~ U(-1/sqrt(hidden),
        1/sqrt(hidden)), torch.nn.RNN's own rule. An untied embedding ~ N(0, 1), torch.nn.Embedding's
        default, which keeps the input signal about as strong as a one-hot row; a tied embedding is
        also the output weight and follows the head's rule, since N(0, 1) there would start with
        huge logits.
        normal: every weight, the embedding included, ~ N(0, init_std) and every bias zero (the d2l
        recipe).
        """
        cfg = self.cfg
        k = 1.0 / math.sqrt(cfg.hidden)
        for name, p in self.named_parameters():  # a tied weight is listed once, as embedding.weight
            leaf = name.rsplit(".", 1)[-1]
            is_bias = leaf.startswith(("b_", "bias"))
            if cfg.init == "normal":
                if is_bias:
                    nn.init.zeros_(p)
                else:
                    nn.init.normal_(p, 0.0, cfg.init_std)
            elif name == "embedding.weight" and not cfg.tie_weights:
                nn.init.normal_(p, 0.0, 1.0)
            else:
                nn.init.uniform_(p, -k, k)

    def begin_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The zero state for a batch, on the model's device and dtype unless told otherwise."""
        ref = self.head.weight
        shape = (self.cfg.layers, batch_size, self.cfg.hidden)
        return tuple(
            torch.zeros(shape, dtype=ref.dtype, device=ref.device if device is None else device)
            for _ in range(self.num_states)
        )

    def forward(self, X: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """X: (B, T) int64 token ids -> logits (B, T, V) and the final state. state None = zeros."""
        if X.dim() != 2 or X.dtype.is_floating_point or X.dtype.is_complex or X.dtype == torch.bool:
            raise ValueError(f"X must be (B, T) int64 token ids, got shape {tuple(X.shape)} dtype {X.dtype}")
        X = X.long()  # one_hot and the row lookups want int64; a no-op when it already is
        if state is None:
            state = self.begin_state(X.shape[0], X.device)
        if self.embedding is not None:
            inputs = self.drop(self.embedding(X))  # (B, T, E)
        elif self.cfg.impl == "scratch":
            inputs = X  # (B, T) ids; layer 0 looks up rows of W_x*, the same as a one-hot matmul
        else:
            inputs = F.one_hot(X, self.vocab_size).to(self.head.weight.dtype)  # (B, T, V)
        if self.cfg.impl == "fused":
            outputs, final = self.rnn(inputs, state if self.num_states == 2 else state[0])  # (B, T, H)
            new_state = tuple(final) if self.num_states == 2 else (final,)
        else:
            outputs, new_state = self._scratch_layers(inputs, state)
        logits = self.head(self.drop(outputs))  # (B, T, V)
        return logits, new_state

    def _scratch_layers(self, inputs: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Run the stacked scratch layers, with dropout between them as torch.nn.LSTM applies it."""
        finals = []
        for i, layer in enumerate(self.layers):
            inputs, layer_state = layer(inputs, tuple(s[i] for s in state))  # (B, T, H)
            if i < len(self.layers) - 1:
                inputs = self.drop(inputs)
            finals.append(layer_state)
        # per-layer (h, c) pairs -> one (layers, B, H) tensor per state component
        return inputs, tuple(torch.stack(parts) for parts in zip(*finals, strict=True))


def detach_state(state: State) -> State:
    """Cut the state from the graph of the batch that made it.

    With sequential batches the state carries over, but backpropagating through every earlier
    batch would grow the graph without bound; truncated backpropagation stops at the batch edge.
    """
    return tuple(s.detach() for s in state)


def select_state(state: State, index: torch.Tensor) -> State:
    """Pick, repeat or reorder batch rows of the state (beam search); index: (B',) int64."""
    return tuple(s.index_select(1, index) for s in state)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters, each shared (tied) tensor counted once."""
    return sum(p.numel() for p in model.parameters())


def _copy(t: torch.Tensor) -> torch.Tensor:
    # A fresh contiguous tensor: views of one storage would upset safetensors, and the clone keeps
    # the conversion differentiable.
    return t.clone(memory_format=torch.contiguous_format)


def convert_state_dict(sd: dict[str, torch.Tensor], cfg: ModelConfig, to: str) -> dict[str, torch.Tensor]:
    """Map the weights of one implementation of ``cfg`` onto the other, ``to`` "scratch" or "fused".

    Gate blocks are split or concatenated and transposed. Where a scratch cell has one bias for
    torch's pair (bias_ih + bias_hh), scratch gets the sum and fused gets the sum in bias_ih and
    zero in bias_hh, so both models compute the same function. Other keys (embedding, head) pass
    through; a dict already in the ``to`` form comes back as a shallow copy.
    """
    if to not in ("scratch", "fused"):
        raise ValueError(f"to must be 'scratch' or 'fused', got {to!r}")
    if cfg.cell not in SCRATCH_CELLS:
        raise ValueError(f"unknown cell {cfg.cell!r}")
    has_fused = any(k.startswith("rnn.") for k in sd)
    has_scratch = any(k.startswith("layers.") for k in sd)
    if has_fused == has_scratch:
        raise ValueError("state dict must hold the recurrent weights of exactly one impl (rnn.* or layers.*)")
    source = "fused" if has_fused else "scratch"
    if source == to:
        return dict(sd)
    prefix = "rnn." if has_fused else "layers."
    out = {k: v for k, v in sd.items() if not k.startswith(prefix)}
    gates = SCRATCH_CELLS[cfg.cell].TORCH_GATES
    used: set[str] = set()

    def get(key: str) -> torch.Tensor:
        if key not in sd:
            raise ValueError(
                f"state dict has no {key!r}; was it saved with another cell or number of layers than "
                f"cell={cfg.cell!r}, layers={cfg.layers}?"
            )
        used.add(key)
        return sd[key]

    for l in range(cfg.layers):
        names = {w: f"rnn.{w}_l{l}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        if to == "scratch":
            w_ih, w_hh, b_ih, b_hh = (get(names[w]).chunk(len(gates)) for w in names)
            for g, (w_x, w_h, biases) in enumerate(gates):
                out[f"layers.{l}.{w_x}"] = _copy(w_ih[g].t())  # (in, hidden)
                out[f"layers.{l}.{w_h}"] = _copy(w_hh[g].t())  # (hidden, hidden)
                if len(biases) == 1:
                    out[f"layers.{l}.{biases[0]}"] = b_ih[g] + b_hh[g]
                else:
                    out[f"layers.{l}.{biases[0]}"] = _copy(b_ih[g])
                    out[f"layers.{l}.{biases[1]}"] = _copy(b_hh[g])
        else:
            w_ih, w_hh, b_ih, b_hh = [], [], [], []
            for w_x, w_h, biases in gates:
                w_ih.append(get(f"layers.{l}.{w_x}").t())  # (hidden, in)
                w_hh.append(get(f"layers.{l}.{w_h}").t())
                b_ih.append(get(f"layers.{l}.{biases[0]}"))
                b_hh.append(get(f"layers.{l}.{biases[1]}") if len(biases) == 2 else torch.zeros_like(b_ih[-1]))
            for key, blocks in zip(names.values(), (w_ih, w_hh, b_ih, b_hh), strict=True):
                out[key] = torch.cat(blocks)  # gate blocks stacked in torch's order
    extra = sorted(k for k in sd if k.startswith(prefix) and k not in used)
    if extra:
        raise ValueError(
            f"state dict has recurrent weights that cell={cfg.cell!r}, layers={cfg.layers} does not use: {extra}"
        )
    return out
