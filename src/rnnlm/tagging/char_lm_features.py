"""Contextual word features from two frozen character language models, after Akbik et al. (2018).

A sentence w_1..w_n is read as the string ``s = " " + " ".join(tokens) + " "``. The forward model reads
``s`` left to right and word i's forward feature is its top-layer output at the space that follows the
word: the state after the whole word and the sentence to its left. The backward model, trained on text
reversed character by character, reads ``s[::-1]`` and word i's backward feature is its output at the
space that precedes the word in ``s``: the state after the whole word and the sentence to its right.
Each word gets the two concatenated, (n, H_forward + H_backward). With ``all_layers`` each model gives every
layer's output side by side instead of its top layer's (for part of speech a lower layer can carry more;
Peters et al. (2018) found so for ELMo's).

A folder of character LMs holds two ``rnnlm train`` run directories, ``forward/`` and ``backward/``
(bench/tagging_lm.py makes one). ``copy_char_lms`` writes the part of them that the features need
(config.json, vocab.json and the chosen weights as best.safetensors, without the optimizer state) into a
tagger run, so that the tagger loads from its run directory alone.

A character the model has never seen is read as its ``<unk>`` when its vocabulary has one, else as a
space: a word boundary is the least surprising guess for a character the model cannot name.

With ``docs`` (each sentence's document id, sentences of a document consecutive) the sentences of a document
are read together, in pieces of consecutive sentences of up to ``PIECE_CHARS`` characters: a piece is
``"\n" + "\n".join(sentences) + "\n"``, one sentence per line as the models were trained, the forward model
reads it left to right and the backward model reads the whole piece reversed. A word's forward state then
also holds the sentences before it, and its backward state the sentences after it (document-level context).
A piece ends at a document's end or before a sentence that would take it past ``PIECE_CHARS``, so the
cost stays that of reading each sentence once.

With ``pool`` (document pooling, after Akbik et al. (2019), "Pooled contextualized embeddings for named
entity recognition") each word's features are followed by the mean of the features of every occurrence of
the same word (the exact string) in its document, the word's own included: (n, 2 * dim). A short later
mention ("Smith", "Leeds") then also carries what its document said around its clearer mentions.

Sentences are read in batches of similar length, right-padded. A unidirectional model's output at a
position depends only on what came before it, so the padding never changes a sentence's features
(tests/test_char_lm_features.py checks a batch against each sentence alone).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.atomic import atomic_write_json
from rnnlm.core.errors import CheckpointError
from rnnlm.core.vocab import Vocab
from rnnlm.lm import run as lm_run
from rnnlm.lm.model import RNNLM
from rnnlm.recurrent.encoder import RecurrentEncoder
from rnnlm.recurrent.one_sequence import OneSequenceLSTM

DIRECTIONS = ("forward", "backward")
PIECE_CHARS = 2000  # the longest run of a document's sentences read as one string, in characters
BATCH_CHARS = 1024  # characters per text of a full batch (with padding): bounds the memory of long texts


class CharLM:
    """One frozen character LM and the reading direction it was trained in."""

    def __init__(self, model: RNNLM, vocab: Vocab, backward: bool, source: str = "", all_layers: bool = False) -> None:
        if vocab.level != "char":
            raise CheckpointError(f"{source}: a {vocab.level}-level model; contextual features need a character LM")
        self.model, self.vocab, self.backward = model.eval().requires_grad_(False), vocab, backward
        self.all_layers = all_layers  # every layer's outputs, bottom first, instead of the top layer's alone
        self.layers = [self._one_layer(layer) for layer in range(model.encoder.num_layers)] if all_layers else []
        if vocab.unk is not None:
            self.fallback = vocab.id_of(vocab.unk)
        elif " " in vocab:
            self.fallback = vocab.id_of(" ")
        else:
            raise CheckpointError(
                f"{source}: the model's vocabulary has neither <unk> nor a space, so unknown characters have "
                "no fallback; train it on text with spaces between words"
            )
        self.lookup = vocab.token_to_id
        self.fast = True  # a batch of one text through OneSequenceLSTM where it runs (False: the model's engine)

    def _one_layer(self, layer: int) -> RecurrentEncoder:
        """A one-layer encoder that shares the weights of the model's layer ``layer``."""
        enc = self.model.encoder
        in_size = enc.input_size if layer == 0 else enc.output_size
        one = RecurrentEncoder(
            enc.cell, in_size, enc.hidden_size, 1, enc.bidirectional, 0.0, enc.engine, enc.matmul_dtype
        )
        for name, _ in list(one.named_parameters()):
            setattr(one, name, enc.get_parameter(name.replace("_l0", f"_l{layer}")))
        return one.eval()

    @property
    def dim(self) -> int:
        return self.model.cfg.hidden * (len(self.layers) if self.all_layers else 1)

    def outputs(self, X: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, dim): the top layer's outputs, or every layer's side by side."""
        if not self.all_layers:
            return self.model.encode(X)[0]
        x, out, enc = self.model.input(X), [], self.model.encoder
        for one in self.layers:
            one.engine, one.matmul_dtype = enc.engine, enc.matmul_dtype  # as the whole model would run now
            x, _ = one(x)
            out.append(x)
        return torch.cat(out, dim=-1)

    def one_sequence(self, X: torch.Tensor) -> torch.Tensor | None:
        """``outputs`` of one text, (1, T) ids -> (1, T, dim), through the C recurrence; None where it cannot run.

        A tagger tagging one sentence at a time reads one text per call, and there the engine's per-step calls
        cost more than their arithmetic (bench/notes/tagging.md, "Prediction speed")."""
        if not self.fast or X.shape[0] != 1:
            return None
        one = OneSequenceLSTM.for_encoder(self.model.encoder)
        if one is None:
            return None
        layers = one(self.model.input(X)[0])  # each (T, H)
        return torch.cat(layers if self.all_layers else layers[-1:], dim=-1).unsqueeze(0)

    def ids(self, text: str) -> list[int]:
        """Token ids of the text, each unknown character as the fallback id."""
        get, fallback = self.lookup.get, self.fallback
        return [get(c, fallback) for c in text]

    def states(self, texts: Sequence[str], positions: Sequence[Sequence[int]], batch_size: int) -> list[np.ndarray]:
        """Outputs of each text at its positions (``outputs``), (len(positions[k]), dim) float32 each.

        The texts are read as given (reverse them first for a backward model), in batches of up to
        ``batch_size`` texts of similar length, and of at most ``batch_size * BATCH_CHARS`` characters with
        the padding (a batch of long texts holds fewer of them).
        """
        device = next(self.model.parameters()).device
        out: list[np.ndarray] = [np.zeros((0, self.dim), np.float32)] * len(texts)
        order = np.argsort([len(t) for t in texts], kind="stable")
        batches, start = [], 0
        while start < len(order):  # longer texts come later, so a batch's last text is its longest
            end = start + 1
            while (
                end < len(order)
                and end - start < batch_size
                and (end - start + 1) * len(texts[order[end]]) <= (batch_size * BATCH_CHARS)
            ):
                end += 1
            batches.append(order[start:end])
            start = end
        with torch.no_grad():
            for index in batches:
                T = max(len(texts[k]) for k in index)
                X = torch.full((len(index), T), self.fallback, dtype=torch.long)  # right padding: any id will do
                for b, k in enumerate(index):
                    X[b, : len(texts[k])] = torch.tensor(self.ids(texts[k]))
                hidden = self.one_sequence(X) if device.type == "cpu" else None
                hidden = self.outputs(X.to(device)) if hidden is None else hidden  # (B, T, dim)
                for b, k in enumerate(index):
                    out[k] = hidden[b, positions[k]].float().cpu().numpy()
        return out


def sentence_positions(tokens: Sequence[str]) -> tuple[str, list[int], list[int]]:
    """The string a sentence is read as, and per word the index of the space after it and before it."""
    return piece_positions([tokens], " ")


def piece_positions(sentences: Sequence[Sequence[str]], sep: str = "\n") -> tuple[str, list[int], list[int]]:
    """The string consecutive sentences are read as (``sep`` before, between and after them, a space between
    words), and per word of every sentence in turn the index of the character after it and before it."""
    text = sep + sep.join(" ".join(tokens) for tokens in sentences) + sep
    after, before, pos = [], [], 1
    for tokens in sentences:
        for t in tokens:
            before.append(pos - 1)
            pos += len(t)
            after.append(pos)
            pos += 1
    return text, after, before


def pieces(sentences: Sequence[Sequence[str]], docs: Sequence[object], limit: int = PIECE_CHARS) -> list[range]:
    """Runs of consecutive sentences read as one string: all of one document, of at most ``limit`` characters
    each unless one sentence alone is longer."""
    out: list[range] = []
    start, size = 0, 0
    for k, tokens in enumerate(sentences):
        n = sum(len(t) for t in tokens) + len(tokens)  # the words and the character after each
        if k > start and (docs[k] != docs[k - 1] or size + n > limit):
            out.append(range(start, k))
            start, size = k, 0
        size += n
    if len(sentences) > start:
        out.append(range(start, len(sentences)))
    return out


class CharLMFeatures:
    """Forward + backward character-LM states for each word of a sentence: (n, dim) float32 arrays."""

    def __init__(self, forward: CharLM, backward: CharLM, batch_size: int = 64, pool: bool = False) -> None:
        self.forward, self.backward, self.batch_size = forward, backward, batch_size
        self.pool = pool  # append each word's mean over its document's occurrences (see the module docstring)

    @classmethod
    def load(
        cls,
        folder: str | Path,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        pool: bool = False,
        all_layers: bool = False,
    ) -> CharLMFeatures:
        """The two models of a folder with ``forward/`` and ``backward/`` run directories (best weights)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"--char-lm {folder}: no such folder; make one with bench/tagging_lm.py")
        lms = []
        for name in DIRECTIONS:
            if not (folder / name / ckpt.CONFIG).is_file():
                raise CheckpointError(
                    f"--char-lm {folder}: needs {name}/ , an `rnnlm train` run directory of a {name} character LM"
                )
            model, vocab, _, _ = lm_run.load_model(folder / name, "best", str(device))
            lms.append(CharLM(model, vocab, name == "backward", str(folder / name), all_layers))
        return cls(*lms, batch_size=batch_size, pool=pool)

    @property
    def dim(self) -> int:
        """Features per word: forward + backward states, twice that with pooling."""
        return (self.forward.dim + self.backward.dim) * (2 if self.pool else 1)

    def to(self, device: str | torch.device) -> CharLMFeatures:
        self.forward.model.to(device)
        self.backward.model.to(device)
        return self

    def __call__(
        self, sentences: Sequence[Sequence[str]], docs: Sequence[object] | None = None, read_docs: bool | None = None
    ) -> list[np.ndarray]:
        """(n, dim) float32 features of each sentence of n tokens.

        ``docs`` gives each sentence's document id (a document's sentences in a row; None: each sentence is
        its own document). With ``read_docs`` (default: whether docs are given) each sentence is read with its
        neighbours in the same document; with pooling the means are taken over each document.
        """
        if docs is not None and len(docs) != len(sentences):
            raise ValueError(f"{len(docs)} document ids for {len(sentences)} sentences")
        read_docs = docs is not None if read_docs is None else read_docs
        out = self._states(sentences, docs if read_docs else None)
        if self.pool:
            out = pool_by_document(sentences, out, docs if docs is not None else range(len(sentences)))
        return out

    def _states(self, sentences: Sequence[Sequence[str]], docs: Sequence[object] | None) -> list[np.ndarray]:
        if docs is None:
            runs_, read = [range(k, k + 1) for k in range(len(sentences))], [sentence_positions(s) for s in sentences]
        else:
            runs_ = pieces(sentences, docs)
            read = [piece_positions([sentences[k] for k in r]) for r in runs_]
        texts = [text for text, _, _ in read]
        # In the reversed string, index i of s is at len(s) - 1 - i.
        back_pos = [[len(text) - 1 - i for i in before] for text, _, before in read]
        backward = (self.backward.states, [t[::-1] for t in texts], back_pos, self.batch_size)
        if len(texts) == 1 and self.backward.fast and torch.get_num_threads() > 1:
            # One text, where torch may use two cores: the two models' C recurrences (which let go of the GIL)
            # at the same time, each on one core, rather than one after the other with two threads idling.
            later = _side_thread().submit(*backward)
            fwd = self.forward.states(texts, [after for _, after, _ in read], self.batch_size)
            bwd = later.result()
        else:
            fwd = self.forward.states(texts, [after for _, after, _ in read], self.batch_size)
            bwd = backward[0](*backward[1:])
        out: list[np.ndarray] = []
        for r, f, b in zip(runs_, fwd, bwd, strict=True):
            both = np.concatenate([f, b], axis=1)
            cuts = np.cumsum([len(sentences[k]) for k in r])[:-1]
            out.extend(np.split(both, cuts))
        return out


@functools.cache
def _side_thread() -> ThreadPoolExecutor:
    """The thread that reads one text through the backward model while this one reads it forward."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnnlm-char-lm")


def pool_by_document(
    sentences: Sequence[Sequence[str]], features: Sequence[np.ndarray], docs: Sequence[object]
) -> list[np.ndarray]:
    """Each sentence's (n, D) features followed by, per word, the mean of the features of every occurrence of
    the same string in its document (a document's sentences in a row): (n, 2D) each."""
    out: list[np.ndarray] = []
    start = 0
    while start < len(sentences):
        end = start + 1
        while end < len(sentences) and docs[end] == docs[start]:
            end += 1
        words = [w for k in range(start, end) for w in sentences[k]]
        both = np.concatenate(features[start:end], axis=0)
        _, inverse = np.unique(np.array(words, dtype=object), return_inverse=True)
        sums = np.zeros((int(inverse.max()) + 1, both.shape[1]), np.float64)
        np.add.at(sums, inverse, both)
        means = (sums / np.bincount(inverse)[:, None]).astype(np.float32)[inverse]
        pooled = np.concatenate([both, means], axis=1)
        out.extend(np.split(pooled, np.cumsum([len(sentences[k]) for k in range(start, end)])[:-1]))
        start = end
    return out


def copy_char_lms(source: str | Path, dest: str | Path) -> None:
    """Write the config, vocabulary and best weights of ``source``'s two models under ``dest``, atomically."""
    for name in DIRECTIONS:
        src, out = Path(source) / name, Path(dest) / name
        out.mkdir(parents=True, exist_ok=True)
        weights, meta = ckpt.load_weights(ckpt.checkpoint_path(src, "best"))
        atomic_write_json(out / ckpt.CONFIG, ckpt.read_json(src / ckpt.CONFIG, "run config"))
        Vocab.load(src / ckpt.VOCAB).save(out / ckpt.VOCAB)
        ckpt.save_weights(out / ckpt.BEST, weights, meta)
