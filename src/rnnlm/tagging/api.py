"""The Python API for sequence taggers, mirroring ``rnnlm tag train | eval | predict``.

>>> from rnnlm import tagging
>>> tagger = tagging.train("eng.train", dev="eng.testa", epochs=20, out="runs/ner")
>>> tagger = tagging.load("runs/ner")
>>> tagger.tag_text("Apple is a great company")[0]["entities"]
>>> tagger.evaluate("eng.testb")["f1"]

``train`` sorts its keyword settings into the run config and trains through ``tagging.run.train(cfg)``, as
``rnnlm tag train`` does; what a tagger run directory holds is described in tagging/run.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from rnnlm.core.errors import ConfigError
from rnnlm.core.fields import renamed_keyword
from rnnlm.core.hub import local_run_dir
from rnnlm.tagging import recipe
from rnnlm.tagging import run as tag_run
from rnnlm.tagging.char_lm_features import CharLMFeatures
from rnnlm.tagging.config import TagRunConfig, split_settings
from rnnlm.tagging.conll import check_tags
from rnnlm.tagging.encoding import TagEncoder, encode, guess_format, read_tagged, tokenize
from rnnlm.tagging.model import Tagger, TaggerEnsemble
from rnnlm.tagging.recipe import Preset
from rnnlm.tagging.schemes import chunks
from rnnlm.tagging.task import TagSchemes, predict, score
from rnnlm.training import runs

_LINE_END = re.compile(r"\r\n|\r|\n")  # where tag_text's lines end (never str.splitlines' other breaks)


class SequenceTagger:
    """A trained tagger with its vocabularies: tag sentences or raw text, score a tagged file."""

    def __init__(
        self,
        model: Tagger,
        encoder: TagEncoder,
        config: TagRunConfig,
        run_dir: Path | None = None,
        checkpoint: dict[str, str] | None = None,
        char_lm: CharLMFeatures | None = None,
    ) -> None:
        self.model, self.encoder, self.config, self.run_dir = model, encoder, config, run_dir
        self.char_lm = char_lm  # the frozen character LMs whose states the model reads, when it reads any
        self.checkpoint = checkpoint or {}  # which weights were loaded: path, step, epoch, monitored score
        d = config.data
        self.schemes = TagSchemes(d.scheme, d.model_scheme if d.scheme != "none" else "none")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __repr__(self) -> str:
        m, d = self.config.model, self.config.data
        return f"SequenceTagger({d.column}, {m.cell} {m.layers}x{m.hidden} {m.head}, run_dir={str(self.run_dir)!r})"

    def fast_paths(self, enabled: bool = True) -> None:
        """Turn the inference shortcuts on (the default) or off: one sentence's recurrences in one C call each
        (recurrent/one_sequence.py) and the character CNN over each distinct word once. Off, tagging runs
        the batched engines alone: the reference that tests and bench/tagging_predict.py compare against."""
        taggers = self.model.members if isinstance(self.model, TaggerEnsemble) else [self.model]
        for m in taggers:
            m.fast = enabled
            if m.input.chars is not None:
                m.input.chars.distinct = enabled
        if self.char_lm is not None:
            self.char_lm.forward.fast = self.char_lm.backward.fast = enabled

    def export(self, out: str | Path, format: str = "onnx") -> Path:
        """Write the tagger's scores (word and character ids in, tag scores out) to ``out`` as ``format``: onnx or
        exported-program (tagging/export.py says what the graph takes and gives, and how to decode)."""
        from rnnlm.tagging.export import export_model

        return export_model(self.model, self.encoder, self.config, self.char_lm, out, format, self.checkpoint)

    def tag(
        self, sentences: Sequence[Sequence[str]], batch_size: int | None = None, docs: Sequence[object] | None = None
    ) -> list[list[str]]:
        """Tags of pre-tokenized sentences, in the training file's scheme.

        ``docs`` (a document id per sentence, a document's sentences in a row) lets a tagger trained with
        ``char_lm_context="document"`` read each sentence with its neighbours, and one trained with
        ``char_lm_pool="document"`` pool over each document; without it each sentence is its own document.
        Other taggers ignore it.
        """
        if not sentences:
            return []
        cfg = self.config.data
        m = self.config.model
        by_doc = m.char_lm_context == "document"
        if self.char_lm is not None and (by_doc or m.char_lm_pool == "document"):
            docs = list(range(len(sentences))) if docs is None else docs
        else:
            docs = None
        encoded = encode(self.encoder, sentences, None, cfg.max_word_chars, self.char_lm, docs, by_doc)
        ids, _, _ = predict(self.model, encoded, batch_size or self.config.eval.eval_batch_size, self.device)
        return [self.schemes.to_file(self.encoder.tags.decode(row)) for row in ids]

    def tag_text(self, text: str, tokenized: bool = False) -> list[dict[str, Any]]:
        """Tag each non-empty line as a sentence: ``{"tokens", "tags"}``, plus ``"entities"`` for chunk tags.

        Raw lines are tokenized (``data.tagged.tokenize``) and each entity also gets its character span
        in the line; with ``tokenized`` the tokens are the line's whitespace-separated fields. The lines up
        to a blank line are one document (for a tagger that reads document context). Lines end at ``\n``,
        ``\r\n`` or ``\r`` only: not also at ``\x0c``, ``\x85``, U+2028 and the like as str.splitlines does,
        since the CoNLL readers keep those inside a line too (within a line they separate tokens).
        """
        lines, docs, doc = [], [], 0
        for line in _LINE_END.split(text):
            if line.strip():
                lines.append(line)
                docs.append(doc)
            elif docs and docs[-1] == doc:
                doc += 1
        spans = [[(t, None, None) for t in line.split()] if tokenized else tokenize(line) for line in lines]
        tokens = [[t for t, _, _ in s] for s in spans]
        out = []
        for line, sent, tags in zip(lines, spans, self.tag(tokens, docs=docs), strict=True):
            item: dict[str, Any] = {"tokens": [t for t, _, _ in sent], "tags": tags}
            if self.schemes.chunked:
                item["entities"] = [_entity(line, sent, type_, a, b) for type_, a, b in chunks(tags)]
            out.append(item)
        return out

    def evaluate(self, path: str | Path, format: str | None = None, column: str | None = None) -> dict[str, Any]:
        """Token accuracy (and entity P/R/F1 overall and per type, for chunk tags) on a tagged file, in percent.

        ``column`` is the run's unless the file is in another format whose column holds the same tags (a
        CoNLL-2003 pos tagger scored on a CoNLL-U file's xpos): any other column would score tags the tagger
        never predicts, so it is a ConfigError rather than a meaningless 0.
        """
        d = self.config.data
        column = column or d.column
        format = guess_format(path) if format == "auto" else format or d.format
        if format == d.format and column != d.column:  # another column of the same format: other tags
            raise ConfigError(
                f"--column {column}: the tagger predicts the {d.column} column, so it cannot be scored against "
                f"{column} tags; leave --column out to score {d.column}, or train a tagger with --column {column}"
            )
        sentences = read_tagged(path, format, column)
        gold = [s.tags[column] for s in sentences]
        if not self.schemes.chunked and not {t for g in gold for t in g} & set(self.encoder.tags.tags):
            raise ConfigError(
                f"--column {column} of {path}: none of its tags is one the tagger predicts ({d.column} tags); "
                "score a column with the same tags"
            )
        if self.schemes.chunked:
            check_tags(sentences, column, self.schemes.file)
        pred = self.tag([s.tokens for s in sentences], docs=[s.doc for s in sentences])
        return {"data": str(path), **score(gold, pred, self.schemes.chunked), "checkpoint": self.checkpoint.get("path")}


def _entity(line: str, sent: list[tuple[str, Any, Any]], type_: str, a: int, b: int) -> dict[str, Any]:
    """One entity for JSON: its type, token span [start, end) and text (with character offsets when known)."""
    if sent[a][1] is None:
        return {"type": type_, "start": a, "end": b, "text": " ".join(t for t, _, _ in sent[a:b])}
    lo, hi = sent[a][1], sent[b - 1][2]
    return {"type": type_, "start": a, "end": b, "text": line[lo:hi], "char_start": lo, "char_end": hi}


def load(
    run_dir: str | Path,
    checkpoint: str = "best",
    device: str = "cpu",
    engine: str | None = None,
    *,
    impl: str | None = None,
) -> SequenceTagger:
    """Load a trained tagger (a run directory, or a Hub id "user/name" with huggingface_hub installed; 'best' = the
    best dev score; falls back to 'last' without a dev set; in an ensemble
    run both name model.safetensors). ``engine`` picks another engine (scratch, fused, auto); ``impl=`` is its
    deprecated name, kept for old notebooks."""
    engine = renamed_keyword(engine, impl, "impl", "engine", "tagging.load")
    loaded = runs.load(local_run_dir(run_dir), tag_run.KIND, checkpoint, device, engine)
    run = loaded.run
    return SequenceTagger(loaded.model, run.side, run.config, run.dir, loaded.meta, loaded.extra)  # type: ignore[arg-type]


def train(
    data: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    preset: str | Preset | None = None,
    lm_texts: Sequence[str | Path] = (),
    log: Callable[[str], None] = print,
    **settings: Any,
) -> SequenceTagger:
    """Train a tagger and return it with its best weights. Keyword settings are the flags of ``rnnlm tag
    train`` in snake_case (dev="eng.testa", column="ner", hidden=100, epochs=20, out="runs/ner").

    ``preset="ner"`` or ``"upos"`` runs that preset's whole protocol (tagging/recipe.py: character LMs on the
    training file and ``lm_texts``, encoding, an ensemble) within ``time_budget`` seconds; the other settings
    override its tagger settings. ``resume`` continues a run, a preset's too."""
    if resume is not None and recipe.is_recipe_run(resume):
        if preset is not None or settings or lm_texts:
            raise ConfigError(f"resume={str(resume)!r}: a preset run continues with the settings it began with")
        return load(recipe.resume_preset(resume, log).run_dir, "best")
    if preset is not None:
        if resume is not None:
            raise ConfigError("preset= starts a run; resume= continues one (its preset is recorded): pass one")
        if data is None:
            raise ConfigError(f"preset={preset!r} needs the training file")
        fixed = {k: settings.pop(k, None) for k in ("dev", "out", "time_budget")}
        result = recipe.train_preset(
            data, preset, dev=fixed["dev"], out=fixed["out"], time_budget=fixed["time_budget"], lm_texts=lm_texts,
            settings=settings, log=log,
        )  # fmt: skip
        return load(result.run_dir, "best")
    if lm_texts:
        raise ConfigError("lm_texts= is text for a preset's character LMs; pass preset=, or use train_char_lms")
    if data is not None:
        settings["train"] = str(data)
    cfg, run = tag_run.config_for(split_settings(settings), resume)
    result = tag_run.train(cfg, run, log)
    return load(result.run_dir, "best", device=cfg.train.device)
