"""Inside a language model: per-token loss, and every unit's hidden state (an LSTM's cell state and gates too)
over a text.

The states come from a re-computation with the model's canonical weights (recurrent/encoder.py), in float32, not
from the engine that trained the model: the engines keep no gates. Where a C compiler is at hand it is one pass
of the compiled trace kernel per layer (recurrent/trace.py), which keeps every step's h, c and gates; elsewhere
torch.nn.LSTM (GRU, RNN) gives the hidden states and the gates follow from them for all steps at once
(gate_signals). The tests hold each against the other and against the model's engine. The states of the text
last inspected are kept per run (TextStates), so a span, or another signal of the same text, costs no new pass.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any

import numpy as np
import torch

from rnnlm.core.errors import RnnlmError
from rnnlm.lm.api import LanguageModel
from rnnlm.lm.data.dataset import load_texts
from rnnlm.recurrent import trace

# What each cell has per unit and step: the hidden state first, then the cell state and gates.
SIGNALS = {"rnn": ("h",), "gru": ("h", "r", "z", "n"), "lstm": ("h", "c", "i", "f", "g", "o")}
VAL_CHARS = 10_000  # characters of the validation text searched for a span's units
_LOCK = threading.Lock()  # guards the per-run cache of validation states


_TORCH_CELLS = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}


def _torch_layer(cell: str, weights: list[torch.Tensor]) -> torch.nn.Module:
    """One layer as torch.nn.RNN/GRU/LSTM with the canonical weights: the one bias as torch's input bias, the
    recurrent bias zero except the GRU candidate's (recurrent/encoder.py, to_torch_state_dict)."""
    W_ih, W_hh, b, *rest = weights
    layer = _TORCH_CELLS[cell](W_ih.shape[1], W_hh.shape[1])
    b_hh = torch.cat([torch.zeros(2 * W_hh.shape[1]), rest[0]]) if cell == "gru" else torch.zeros_like(b)
    layer.load_state_dict({"weight_ih_l0": W_ih, "weight_hh_l0": W_hh, "bias_ih_l0": b, "bias_hh_l0": b_hh})
    return layer


@torch.no_grad()
def states(
    lm: LanguageModel, ids: np.ndarray, gates: Collection[int] | None = None
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every layer's signals over the token ids, and the logits: ({"h0": (T, H), "c0": ..., "h1": ...}, (T, V)).
    ``gates``: the layers whose gates (and LSTM cell state) are wanted, all by default; the others give h alone.

    Through the compiled trace kernel (recurrent/trace.py) where it runs: one pass that keeps every step's state
    and gates. Elsewhere torch.nn.LSTM (GRU, RNN) gives each layer's h, and the gates follow (gate_signals)."""
    wanted = range(lm.model.encoder.num_layers) if gates is None else sorted(gates)
    traced = traced_states(lm, ids, wanted)
    if traced is not None:
        return traced[2], traced[1]
    inputs, logits = hidden_states(lm, ids)
    out = {f"h{layer}": h for layer, h in enumerate(inputs[1:])}
    for layer in wanted:
        out.update(gate_signals(lm, inputs, layer))
    return out, logits


def _embed(lm: LanguageModel, ids: np.ndarray) -> torch.Tensor:
    """(T, E) embeddings, or one-hot rows for a model without an embedding."""
    model = lm.model
    x_ids = torch.as_tensor(ids.astype(np.int64))
    emb = model.input.embedding
    return torch.nn.functional.one_hot(x_ids, model.vocab_size).float() if emb is None else emb.weight.float()[x_ids]


def _logits(lm: LanguageModel, h: torch.Tensor) -> torch.Tensor:
    """The head over the top layer's states (T, H) -> (T, V)."""
    head = lm.model.head
    W_q = head.weight.float()
    if getattr(head, "proj", None) is not None:  # tied with a projection: (V, E) @ (E, H)
        W_q = W_q @ head.proj.weight.float()
    return torch.addmm(head.bias.float(), h, W_q.t())


@torch.no_grad()
def traced_states(
    lm: LanguageModel, ids: np.ndarray, gates: Collection[int]
) -> tuple[list[torch.Tensor], torch.Tensor, dict[str, torch.Tensor]] | None:
    """hidden_states' inputs and logits, and the signals (every h; gates and c of the layers in ``gates``), in
    one pass of the compiled trace kernel per layer; None where the kernel cannot run (no C compiler, or weights
    other than float32 on the CPU)."""
    enc = lm.model.encoder
    layer_weights = [enc.weights(layer, 0) for layer in range(enc.num_layers)]
    if not trace.available(*(w for ws in layer_weights for w in ws)):
        return None
    x = _embed(lm, ids)
    inputs, signals = [x], {}
    H = enc.hidden_size
    for layer, weights in enumerate(layer_weights):
        h, c, g = trace.trace_layer(enc.cell, x, weights)
        signals[f"h{layer}"] = h
        if layer in gates and enc.cell != "rnn":
            names = SIGNALS[enc.cell][2:] if c is not None else SIGNALS[enc.cell][1:]
            signals.update({f"{n}{layer}": g[:, k * H : (k + 1) * H] for k, n in enumerate(names)})
            if c is not None:
                signals[f"c{layer}"] = c
        inputs.append(h)
        x = h
    return inputs, _logits(lm, x), signals


@torch.no_grad()
def hidden_states(lm: LanguageModel, ids: np.ndarray) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The input of every layer and the output of the last, [x (T, E), h0 (T, H), h1 ...], and the logits (T, V),
    from torch.nn.LSTM (GRU, RNN) holding each layer's weights: the path where the trace kernel cannot run, and
    the reference the tests hold it against."""
    enc = lm.model.encoder
    x = _embed(lm, ids)
    inputs = [x]
    for layer in range(enc.num_layers):
        weights = [w.detach().float() for w in enc.weights(layer, 0)]
        x = _torch_layer(enc.cell, weights)(x[:, None])[0][:, 0]  # (T, 1, E) in, time first -> (T, H)
        inputs.append(x)
    return inputs, _logits(lm, x)


@torch.no_grad()
def gate_signals(lm: LanguageModel, inputs: list[torch.Tensor], layer: int) -> dict[str, torch.Tensor]:
    """One layer's gates (and an LSTM's cell state) for all steps at once, from hidden_states' inputs.

    The state each step starts from is known (h_{t-1}), so the gates' pre-activations of every step are one
    matrix product, [x_t, h_{t-1}] @ [W_ih, W_hh]^T; an LSTM's cell state then follows by the scan
    c_t = f_t c_{t-1} + i_t g_t, two vector operations per step in numpy."""
    enc = lm.model.encoder
    if enc.cell == "rnn":
        return {}
    H = enc.hidden_size
    weights = [w.detach().float() for w in enc.weights(layer, 0)]
    W_ih, W_hh, b = weights[:3]
    x, h = inputs[layer], inputs[layer + 1]
    h_prev = torch.cat([torch.zeros(1, H), h[:-1]])  # the state each step starts from
    if enc.cell == "gru":  # the candidate's recurrent part is kept apart: r multiplies it, bias included
        gx, gh = torch.addmm(b, x, W_ih.t()), h_prev @ W_hh.t()  # (T, 3H) each
        r = torch.sigmoid(gx[:, :H] + gh[:, :H])
        z = torch.sigmoid(gx[:, H : 2 * H] + gh[:, H : 2 * H])
        n = torch.tanh(gx[:, 2 * H :] + r * (gh[:, 2 * H :] + weights[3]))
        return {f"r{layer}": r, f"z{layer}": z, f"n{layer}": n}
    pre = torch.addmm(b, torch.cat([x, h_prev], 1), torch.cat([W_ih, W_hh], 1).t())  # (T, 4H): i, f, g, o
    i, f, o = torch.sigmoid(pre[:, :H]), torch.sigmoid(pre[:, H : 2 * H]), torch.sigmoid(pre[:, 3 * H :])
    g = torch.tanh(pre[:, 2 * H : 3 * H])
    ig, fn = (i * g).numpy(), f.numpy()
    c = np.empty_like(ig)
    prev = np.zeros(H, dtype=np.float32)
    for t in range(len(c)):  # a numpy step costs a microsecond, a torch step several
        prev = np.multiply(fn[t], prev, out=c[t])
        prev += ig[t]
    return {f"c{layer}": torch.from_numpy(c), f"i{layer}": i, f"f{layer}": f, f"g{layer}": g, f"o{layer}": o}


class TextStates:
    """A text's hidden states and logits, kept so that another signal, layer or span of the same text needs no
    second pass of the recurrence: the gates follow from the hidden states in one matrix product (gate_signals).
    ``half``: keep the derived signals in half precision (the validation text, which stays in memory)."""

    def __init__(self, lm: LanguageModel, ids: np.ndarray, gates: Collection[int] = (), half: bool = False) -> None:
        self.lm, self.ids, self.half = lm, ids, half
        traced = traced_states(lm, ids, gates)  # the gates of these layers come with the pass
        if traced is None:
            self.inputs, self.logits = hidden_states(lm, ids)
            signals = {f"h{layer}": h for layer, h in enumerate(self.inputs[1:])}
        else:
            self.inputs, self.logits, signals = traced
        self.signals = {k: self._keep(v) for k, v in signals.items()}
        self.lock = threading.Lock()

    def _keep(self, m: torch.Tensor) -> torch.Tensor:
        return m.half() if self.half else m

    def signal(self, key: str) -> torch.Tensor:
        """One signal over the text, (T, H): "h1", "c0", "f1" ... (the gates of a layer computed on first use)."""
        with self.lock:
            if key not in self.signals:
                self.signals.update(
                    {k: self._keep(v) for k, v in gate_signals(self.lm, self.inputs, int(key[1:])).items()}
                )
            return self.signals[key]


def text_states(lm: LanguageModel, cache: dict[str, Any], ids: np.ndarray, gates: Collection[int] = ()) -> TextStates:
    """The states of the text last inspected on this run (with the gates of ``gates`` if new), computed again only
    when the text changes."""
    kept = cache.get("text")
    if kept is not None and np.array_equal(kept.ids, ids):
        return kept
    kept = cache["text"] = TextStates(lm, ids, gates)  # one text per run: 5,000 x 448 units are 9 MB per signal
    return kept


def token_texts(lm: LanguageModel, ids: np.ndarray) -> list[str]:
    """How each token shows on the page: a character, or a word with the space before it."""
    if lm.vocab.level == "char":
        return [lm.vocab.tokens[i] for i in ids.tolist()]
    return [lm.vocab.decode_after(ids[k - 1], [i]) if k else lm.vocab.tokens[i] for k, i in enumerate(ids.tolist())]


def losses(logits: torch.Tensor, ids: np.ndarray) -> list[float | None]:
    """-log p(token | the tokens before it) in nats; None for the first token, which nothing predicts."""
    logp = torch.log_softmax(logits[:-1].double(), dim=-1)
    nll = -logp.gather(1, torch.as_tensor(ids[1:].astype(np.int64))[:, None]).squeeze(1)
    return [None, *[round(v, 4) for v in nll.tolist()]]


def unit_orders(m: torch.Tensor) -> dict[str, list[int]]:
    """Orders of the units (columns of m, (T, H)): as they are, by variance over time, and clustered (units
    sorted by their angle in the plane of the two leading eigenvectors of the units' correlation matrix, so that
    units that rise and fall together sit side by side)."""
    H = m.shape[1]
    var = m.float().var(dim=0, unbiased=False) if m.shape[0] > 1 else torch.zeros(H)  # float32: it only orders
    orders = {"index": list(range(H)), "variance": torch.argsort(var, descending=True, stable=True).tolist()}
    z = m.float() - m.float().mean(0)
    z = z / z.norm(dim=0).clamp_min(1e-12)
    # The (H, H) product in float32 (a fourth of float64's time over 5,000 steps): it only orders the units.
    _, vecs = torch.linalg.eigh((z.t() @ z).double())  # ascending eigenvalues: the last two lead
    angle = torch.atan2(vecs[:, -1], vecs[:, -2])
    orders["cluster"] = torch.argsort(angle, stable=True).tolist()
    return orders


def quantize(m: torch.Tensor) -> tuple[bytes, float]:
    """(T, H) values as bytes 0..255 over [-scale, scale] (scale = the largest magnitude, at least 1), time-major:
    a heat map of 5,000 x 448 units travels as 2 MB rather than as 20 MB of JSON numbers."""
    scale = max(1.0, float(m.abs().max())) if m.numel() else 1.0
    q = ((m / scale + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return q.contiguous().numpy().tobytes(), scale


# -- what a unit follows --------------------------------------------------------------------------------------


def properties(tokens: list[str]) -> dict[str, np.ndarray]:
    """Simple properties of each position of a character text: inside double quotes, inside brackets, the
    position in its line, a digit, an upper-case letter."""
    quote, depth, col = False, 0, 0
    out = {k: np.zeros(len(tokens)) for k in ("in quotes", "in brackets", "position in line", "digit", "upper case")}
    for t, ch in enumerate(tokens):
        if ch == '"':
            quote = not quote
        depth = depth + 1 if ch in "([{" else max(0, depth - 1) if ch in ")]}" else depth
        out["in quotes"][t], out["in brackets"][t] = quote, depth > 0
        out["position in line"][t] = col
        col = 0 if ch == "\n" else col + 1
        out["digit"][t], out["upper case"][t] = ch.isdigit(), ch.isupper()
    return out


def rank_units(m: torch.Tensor, tokens: list[str], top: int = 8) -> dict[str, list[list[float]]]:
    """Per property, the units whose activation correlates best with it (Pearson r, by |r|): [[unit, r], ...].
    A property that does not vary over the text (no quote in it) ranks nothing."""
    x = m.double().numpy()
    xc = x - x.mean(0)
    xn = np.sqrt((xc**2).sum(0))
    out: dict[str, list[list[float]]] = {}
    for name, prop in properties(tokens).items():
        pc = prop - prop.mean()
        pn = np.sqrt((pc**2).sum())
        if pn == 0:
            out[name] = []
            continue
        r = (pc @ xc) / np.where(xn > 0, xn * pn, np.inf)
        best = np.argsort(-np.abs(r), kind="stable")[:top]
        out[name] = [[int(u), round(float(r[u]), 4)] for u in best]
    return out


# -- a span: its units, and where else they fire ----------------------------------------------------------------


def span_units(m: torch.Tensor, start: int, end: int, top: int = 10) -> list[list[float]]:
    """The units most on in [start, end) compared with the whole text: [[unit, mean in span, z], ...], by z
    (the span's mean above the text's mean, in the unit's standard deviations over the text)."""
    span = m[start:end].double().mean(0)
    mu, sd = m.double().mean(0), m.double().std(0, unbiased=False).clamp_min(1e-6)
    z = (span - mu) / sd
    best = torch.argsort(z, descending=True, stable=True)[:top]
    return [[int(u), round(float(span[u]), 4), round(float(z[u]), 3)] for u in best.tolist()]


def validation_tokens(lm: LanguageModel, cache: dict[str, Any]) -> tuple[list[str], np.ndarray] | None:
    """The tokens and ids of the first VAL_CHARS of the run's validation text, read once per run; None when the
    run has no validation text here (its files moved, or it had none)."""
    with _LOCK:
        if "val" not in cache:
            try:
                texts, _, _ = load_texts(lm.config.data)
                val = (texts.get("valid") or "")[:VAL_CHARS]
                ids = lm.encode_text(val) if val else None
                cache["val"] = None if ids is None or len(ids) < 2 else (token_texts(lm, ids), ids)
            except (OSError, RnnlmError, ValueError):
                cache["val"] = None
        return cache["val"]


def validation_states(lm: LanguageModel, cache: dict[str, Any], key: str) -> tuple[list[str], torch.Tensor] | None:
    """The validation tokens and one signal over them ((T, H)), computed once per run (``key``: "h1", "c0" ...)."""
    val = validation_tokens(lm, cache)
    if val is None:
        return None
    with _LOCK:
        if "val:states" not in cache:  # the hidden states once; every signal derived in half precision
            cache["val:states"] = TextStates(lm, val[1], half=True)  # h first: other signals on demand
    return val[0], cache["val:states"].signal(key)


def top_places(
    text_tokens: list[str], m: torch.Tensor, units: list[int], width: int, top: int = 5, context: int = 30
) -> list[dict[str, Any]]:
    """The ``top`` windows of ``width`` tokens (not overlapping) where the mean of ``units`` is highest, each with
    the text around it: {"before", "span", "after", "score", "start"}."""
    act = m[:, units].double().mean(1)  # (T,)
    width = max(1, min(width, len(act)))
    score = torch.nn.functional.avg_pool1d(act[None, None], width, stride=1)[0, 0]  # (T - width + 1,)
    taken = torch.zeros(len(act), dtype=torch.bool)
    out = []
    for s in torch.argsort(score, descending=True, stable=True).tolist():
        if taken[s : s + width].any():
            continue
        taken[s : s + width] = True
        out.append(
            {
                "start": s,
                "score": round(float(score[s]), 4),
                "before": "".join(text_tokens[max(0, s - context) : s]),
                "span": "".join(text_tokens[s : s + width]),
                "after": "".join(text_tokens[s + width : s + width + context]),
            }
        )
        if len(out) == top:
            break
    return out
