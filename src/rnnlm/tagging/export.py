"""A tagger in ONNX or torch.export: word and character ids in, tag scores out, and a numpy Viterbi decoder.

The graph (inputs, then outputs; batch B, words T, characters per word W and characters per text S dynamic)::

    words       (B, T) int64      word ids (metadata "words": normalize each word as "normalize" says first)
    chars       (B, T, W) int64   1 + character id of each word's first W characters, 0 = padding
    lengths     (B,) int64        words per sentence, each >= 1
    with character-LM features ("char_lm" in the metadata), also:
    lm_forward      (B, S) int64  the forward LM's ids of the text " w1 w2 ... wn " (metadata "char_lm")
    lm_forward_at   (B, T) int64  per word, the index in that text of the space after it
    lm_backward     (B, S) int64  the backward LM's ids of the same text reversed
    lm_backward_at  (B, T) int64  per word, the index in the reversed text of the space before it
    ->
    scores      (B, T, K) float32 tag scores (CRF emissions, or softmax logits; an ensemble's mean)

``prepare`` builds these arrays from tokens with numpy and the metadata alone, as ``rnnlm tag predict`` does.
A softmax tagger's tags are the argmax of the scores. A CRF tagger's best path is found by ``viterbi`` below
(numpy), from the scores and the CRF's transition, start and end scores, which the metadata holds ("crf").
Viterbi stays out of the graph: its loop over a dynamic number of steps with a backtrace would need ONNX Loop
operators that the exporters only emit from TorchScript-scripted code, while the decoder is twenty lines of
numpy that any runtime's user can read and check.

The character-LM features are rounded to float16 inside the graph, as rnnlm keeps them for a tagger (encoding.py),
so the scores are those of ``rnnlm tag predict``. A tagger that pools the features over documents
(``char_lm_pool document``) cannot be exported: a sentence's features then depend on the other sentences of its
document.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rnnlm.core import export as core_export
from rnnlm.core.errors import ConfigError
from rnnlm.recurrent.export import ReferenceEncoder, reference_copy
from rnnlm.tagging.char_lm_features import CharLM, CharLMFeatures
from rnnlm.tagging.config import TagRunConfig
from rnnlm.tagging.encoding import TagEncoder
from rnnlm.tagging.model import CRFTagHead, Tagger, TaggerEnsemble
from rnnlm.tagging.run import KIND as TAG_RUN
from rnnlm.training import runs

KIND = "tagger"
LM_INPUTS = ["lm_forward", "lm_forward_at", "lm_backward", "lm_backward_at"]


class _CharLMGraph(nn.Module):
    """One frozen character LM: (B, S) ids and (B, T) positions -> (B, T, dim) outputs at those positions."""

    def __init__(self, lm: CharLM, loop: str = "module") -> None:
        super().__init__()
        model = reference_copy(lm.model, loop).float()
        if lm.all_layers:
            enc = model.encoder
            assert isinstance(enc, ReferenceEncoder)
            enc.all_layers = True
        self.model = model

    def forward(self, ids: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        out = self.model.encode(ids)[0]  # (B, S, dim)
        return torch.gather(out, 1, at.unsqueeze(-1).expand(-1, -1, out.shape[-1]))  # (B, T, dim)


class TagScores(nn.Module):
    """``forward(words, chars, lengths[, lm_forward, lm_forward_at, lm_backward, lm_backward_at]) -> scores``."""

    def __init__(
        self, model: Tagger | TaggerEnsemble, char_lm: CharLMFeatures | None = None, loop: str = "module"
    ) -> None:
        super().__init__()
        self.model = reference_copy(model, loop).float()
        self.lm_forward = self.lm_backward = None
        if char_lm is not None:
            self.lm_forward = _CharLMGraph(char_lm.forward, loop)
            self.lm_backward = _CharLMGraph(char_lm.backward, loop)

    def forward(
        self,
        words: torch.Tensor,
        chars: torch.Tensor,
        lengths: torch.Tensor,
        lm_forward: torch.Tensor | None = None,
        lm_forward_at: torch.Tensor | None = None,
        lm_backward: torch.Tensor | None = None,
        lm_backward_at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        lm = None
        if self.lm_forward is not None and self.lm_backward is not None:
            assert lm_forward is not None and lm_forward_at is not None
            assert lm_backward is not None and lm_backward_at is not None
            forward = self.lm_forward(lm_forward, lm_forward_at)  # (B, T, D_forward)
            backward = self.lm_backward(lm_backward, lm_backward_at)  # (B, T, D_backward)
            lm = torch.cat([forward, backward], -1).half().float()  # float16, as rnnlm keeps them (encoding.py)
            lm = torch.where((torch.arange(words.shape[1]) < lengths.unsqueeze(1)).unsqueeze(-1), lm, 0.0)
        return self.model(words, chars, lengths, lm)


def crf_parameters(model: Tagger | TaggerEnsemble) -> dict[str, list[Any]] | None:
    """The CRF's transition, start and end scores (an ensemble's means), or None for a softmax head."""
    head = model.mean_head() if isinstance(model, TaggerEnsemble) else model.head
    if not isinstance(head, CRFTagHead):
        return None
    crf = head.crf
    return {
        "transitions": crf.transitions.detach().float().tolist(),  # [i][j]: tag i followed by tag j
        "start": crf.start_transitions.detach().float().tolist(),
        "end": crf.end_transitions.detach().float().tolist(),
    }


def metadata(
    model: Tagger | TaggerEnsemble, enc: TagEncoder, cfg: TagRunConfig, char_lm: CharLMFeatures | None,
    checkpoint: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    """What a user needs beside the graph: vocabularies, normalization, tags, CRF scores, the input spec."""
    d, m = cfg.data, cfg.model
    inputs = {
        "words": "int64 (batch, words) word ids",
        "chars": "int64 (batch, words, chars) 1 + character id, 0 = padding",
        "lengths": "int64 (batch,) words per sentence, each >= 1",
    }
    meta: dict[str, Any] = {
        "kind": KIND,
        "inputs": inputs,
        "outputs": {"scores": f"float32 (batch, words, tags={len(enc.tags)})"},
        "head": m.head,
        "tags": list(enc.tags.tags),
        "scheme": d.scheme if d.scheme == "none" else d.model_scheme,
        "file_scheme": d.scheme,
        "column": d.column,
        "words": list(enc.words.tokens),
        "unk_word": enc.unk_word,
        "chars": list(enc.chars.tokens),
        "unk_char": enc.chars.id_of(enc.chars.unk) if enc.chars.unk is not None else 0,
        "normalize": {"lowercase": enc.lowercase, "zero_digits": enc.zero_digits},
        "max_word_chars": d.max_word_chars,
        "crf": crf_parameters(model),
        "checkpoint": {k: v for k, v in checkpoint.items() if k != "path"},
    }
    if char_lm is not None:
        inputs.update({
            "lm_forward": "int64 (batch, text) forward LM ids of ' ' + ' '.join(words) + ' '",
            "lm_forward_at": "int64 (batch, words) index of the space after each word",
            "lm_backward": "int64 (batch, text) backward LM ids of that text reversed",
            "lm_backward_at": "int64 (batch, words) index, in the reversed text, of the space before each word",
        })  # fmt: skip
        meta["char_lm"] = {
            name: {"tokens": list(lm.vocab.tokens), "fallback": lm.fallback}
            for name, lm in (("forward", char_lm.forward), ("backward", char_lm.backward))
        }
    return meta


def example_inputs(model: Tagger | TaggerEnsemble, char_lm: CharLMFeatures | None) -> tuple[torch.Tensor, ...]:
    """Two sentences of 3 and 2 words, 3 character slots: no dynamic axis has a size of 1."""
    words = torch.tensor([[2, 3, 4], [5, 6, 0]])
    chars = torch.tensor([[[1, 2, 0], [2, 3, 4], [1, 0, 0]], [[3, 0, 0], [1, 2, 0], [0, 0, 0]]])
    lengths = torch.tensor([3, 2])
    if char_lm is None:
        return words, chars, lengths
    text = torch.zeros(2, 8, dtype=torch.long)  # " a bc d " in any ids
    at = torch.tensor([[2, 5, 7], [2, 5, 5]])
    # Separate tensors for the two LMs: torch.export takes one tensor passed twice for one input, and would feed
    # the backward LM's ids to both.
    return words, chars, lengths, text, at, text.clone(), at.clone()


def check_exportable(cfg: TagRunConfig) -> None:
    if cfg.model.char_lm and cfg.model.char_lm_pool == "document":
        raise ConfigError(
            "this tagger pools its character-LM features over documents (char_lm_pool document), so a sentence's "
            "scores depend on the other sentences of its document, which no per-batch graph can take; export a "
            "tagger trained without --char-lm-pool"
        )


def export_model(
    model: Tagger | TaggerEnsemble, enc: TagEncoder, cfg: TagRunConfig, char_lm: CharLMFeatures | None,
    out: str | Path, fmt: str = "onnx", checkpoint: dict[str, str] | None = None,
) -> Path:  # fmt: skip
    """Write the tagger's scores to ``out`` as ``fmt`` (onnx or exported-program); returns the path."""
    check_exportable(cfg)
    module = TagScores(model.cpu(), char_lm, core_export.LOOPS[core_export.check_format(fmt)])
    inputs = ["words", "chars", "lengths"] + (LM_INPUTS if char_lm is not None else [])
    axes = {
        "words": {0: "batch", 1: "words"},
        "chars": {0: "batch", 1: "words", 2: "chars"},
        "lengths": {0: "batch"},
        "scores": {0: "batch", 1: "words"},
    }
    if char_lm is not None:
        axes |= {n: {0: "batch", 1: "text" if n in ("lm_forward", "lm_backward") else "words"} for n in LM_INPUTS}
    meta = metadata(model, enc, cfg, char_lm, checkpoint or {})
    return core_export.export(module, example_inputs(model, char_lm), inputs, ["scores"], axes, meta, out, fmt)


def export(run_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None, checkpoint: str = "best") -> Path:
    """Export a tagger run (``checkpoint``: best, last or a file) to ``out`` (default RUN_DIR/model.onnx or .pt2)."""
    core_export.check_format(fmt)
    loaded = runs.load(run_dir, TAG_RUN, checkpoint, "cpu")
    model = loaded.model
    assert isinstance(model, (Tagger, TaggerEnsemble))
    out = out or core_export.default_path(run_dir, fmt)
    return export_model(model, loaded.run.side, loaded.run.config, loaded.extra, out, fmt, loaded.meta)


# -- what runs beside the graph, in numpy alone ---------------------------------------------------------------


def viterbi(scores: np.ndarray, lengths: np.ndarray, crf: dict[str, Any]) -> list[list[int]]:
    """The best tag path of each sentence under a linear-chain CRF: scores (B, T, K), lengths (B,), and the
    metadata's "crf" (transitions [i][j] for tag i followed by j, start and end scores). A path's score is
    start[y_1] + sum_t scores[t, y_t] + sum_t transitions[y_{t-1}, y_t] + end[y_n]; the loop keeps, for every
    tag, the best score of a path ending in it and the tag before it, then traces back from the best end."""
    trans, start, end = (np.asarray(crf[k], dtype=np.float32) for k in ("transitions", "start", "end"))
    paths = []
    for b in range(scores.shape[0]):
        n = int(lengths[b])
        delta = start + scores[b, 0]  # (K,)
        back = []
        for t in range(1, n):
            cand = delta[:, None] + trans  # (K_prev, K_next)
            back.append(cand.argmax(axis=0))
            delta = cand.max(axis=0) + scores[b, t]
        tag = int((delta + end).argmax())
        path = [tag]
        for prev in reversed(back):
            tag = int(prev[tag])
            path.append(tag)
        paths.append(path[::-1])
    return paths


def prepare(meta: dict[str, Any], sentences: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
    """The graph's inputs for tokenized sentences, from the file's metadata alone (numpy; no torch, no rnnlm
    model): word ids after normalizing, character ids cut to ``max_word_chars``, and the character-LM texts."""
    words_index = {w: i for i, w in enumerate(meta["words"])}
    chars_index = {c: i for i, c in enumerate(meta["chars"])}
    norm = meta["normalize"]
    B, T = len(sentences), max(len(s) for s in sentences)
    W = max(1, min(meta["max_word_chars"], max(len(w) for s in sentences for w in s)))
    words = np.zeros((B, T), np.int64)
    chars = np.zeros((B, T, W), np.int64)
    for b, s in enumerate(sentences):
        for i, w in enumerate(s):
            form = w.lower() if norm["lowercase"] else w
            form = re.sub(r"\d", "0", form) if norm["zero_digits"] else form
            words[b, i] = words_index.get("_".join(form.split()) or "_", meta["unk_word"])
            chars[b, i, : min(len(w), W)] = [chars_index.get(c, meta["unk_char"]) + 1 for c in w[:W]]
    out = {"words": words, "chars": chars, "lengths": np.array([len(s) for s in sentences], np.int64)}
    if meta.get("char_lm"):
        texts = [" " + " ".join(s) + " " for s in sentences]
        S = max(len(t) for t in texts)
        for name, text_of in (("forward", lambda t: t), ("backward", lambda t: t[::-1])):
            lm = meta["char_lm"][name]
            index = {c: i for i, c in enumerate(lm["tokens"])}
            ids = np.full((B, S), lm["fallback"], np.int64)
            at = np.zeros((B, T), np.int64)
            for b, (s, text) in enumerate(zip(sentences, texts, strict=True)):
                ids[b, : len(text)] = [index.get(c, lm["fallback"]) for c in text_of(text)]
                pos = 1
                for i, w in enumerate(s):  # the space after word i, or (backward) the one before it, reversed
                    at[b, i] = pos + len(w) if name == "forward" else len(text) - pos
                    pos += len(w) + 1
            out[f"lm_{name}"], out[f"lm_{name}_at"] = ids, at
    return out
