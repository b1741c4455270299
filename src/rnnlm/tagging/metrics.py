"""Scores for taggers: token accuracy (part-of-speech) and entity-level precision, recall and F1 (NER, chunking).

seqeval reads the entities out of the tags; it is an optional dependency (``pip install 'rnnlm[tag]'``),
imported only when entity scores are asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from rnnlm.core.errors import RnnlmError
from rnnlm.tagging.schemes import split_tag


def token_accuracy(
    gold: Tensor | Sequence[Sequence[Any]], pred: Tensor | Sequence[Sequence[Any]], mask: Tensor | None = None
) -> float:
    """Fraction of tokens whose predicted tag equals the gold tag.

    Either tensors (B, T) of tag ids with a bool ``mask`` (B, T) marking the real tokens (padding is not
    counted), or sequences of tag sequences (ids or strings) without a mask.
    """
    if isinstance(gold, Tensor) or isinstance(pred, Tensor):
        if not (isinstance(gold, Tensor) and isinstance(pred, Tensor) and isinstance(mask, Tensor)):
            raise TypeError("with tensors, pass gold, pred and a bool mask, all (B, T)")
        if not gold.shape == pred.shape == mask.shape:
            raise ValueError(f"gold {tuple(gold.shape)}, pred {tuple(pred.shape)} and mask {tuple(mask.shape)} differ")
        total = int(mask.sum())
        correct = int(((gold == pred) & mask.bool()).sum())
    else:
        if mask is not None:
            raise TypeError("a mask goes with tensors; sequences of tags carry their own lengths")
        _check_lengths(gold, pred)
        total = sum(len(g) for g in gold)
        correct = sum(g == p for gs, ps in zip(gold, pred, strict=True) for g, p in zip(gs, ps, strict=True))
    if total == 0:
        raise ValueError("no tokens to score")
    return correct / total


def _check_lengths(gold: Sequence[Sequence[Any]], pred: Sequence[Sequence[Any]]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted ones")
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i} has {len(g)} gold tags but {len(p)} predicted ones")


@dataclass(frozen=True)
class PRF:
    """Precision, recall and F1 of one entity type (or all), and its number of gold entities."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class EntityScores:
    """Entity-level scores per type and over all types (micro-averaged, the number CoNLL reports)."""

    per_type: dict[str, PRF]
    overall: PRF


def entity_scores(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], strict_scheme: str | None = None
) -> EntityScores:
    """Exact-match entity precision, recall and F1 of predicted tags against gold tags.

    By default seqeval reads the entities as conlleval.pl does, in any of IOB1, IOB2 and BIOES: an ``I-``
    after ``O`` starts an entity, so invalid predictions still count. With ``strict_scheme`` ("IOB2" or
    "BIOES") only entities that are well formed in that scheme count. A score whose denominator is zero
    (a type never predicted, or never in the gold) is 0.
    """
    _check_lengths(gold, pred)
    for sequence in (*gold, *pred):
        for tag in sequence:
            split_tag(tag)  # a clear error now, rather than a warning and a wrong count from seqeval
    extract = _entity_reader(strict_scheme)
    gold_set, pred_set = extract(gold), extract(pred)
    hits = gold_set & pred_set
    types = sorted({e[0] for e in gold_set | pred_set})

    def count(entities: set[tuple[str, int, int, int]], type_: str | None) -> int:
        return sum(1 for e in entities if type_ is None or e[0] == type_)

    def prf(type_: str | None) -> PRF:
        n_gold, n_pred, n_hit = count(gold_set, type_), count(pred_set, type_), count(hits, type_)
        p = n_hit / n_pred if n_pred else 0.0
        r = n_hit / n_gold if n_gold else 0.0
        return PRF(p, r, 2 * p * r / (p + r) if p + r else 0.0, n_gold)

    return EntityScores({t: prf(t) for t in types}, prf(None))


def require_seqeval(why: str = "entity scores") -> None:
    """Raise RnnlmError, naming the extra to install, unless seqeval can be imported.

    A training run calls this before it makes its run directory: otherwise a missing seqeval would only
    show at the first dev evaluation, after an epoch of training and before any checkpoint is saved.
    """
    try:
        import seqeval.metrics.sequence_labeling  # noqa: F401
        import seqeval.scheme  # noqa: F401
    except ImportError:
        raise RnnlmError(
            f"{why} need seqeval, which is not installed: pip install 'rnnlm[tag]' (or pip install seqeval)"
        ) from None


def _entity_reader(strict_scheme: str | None) -> Callable[[Sequence[Sequence[str]]], set[tuple[str, int, int, int]]]:
    """A function from tag sequences to their entities as (type, sentence, start, end) tuples."""
    require_seqeval()
    from seqeval.metrics.sequence_labeling import get_entities
    from seqeval.scheme import IOB2, IOBES, Entities

    schemes = {"IOB2": IOB2, "BIOES": IOBES}
    if strict_scheme is None:
        return lambda seqs: {(t, i, a, b) for i, s in enumerate(seqs) for t, a, b in get_entities(list(s))}
    if strict_scheme not in schemes:
        raise ValueError(f"strict_scheme must be one of {', '.join(schemes)} or None, not {strict_scheme!r}")
    return lambda seqs: {
        (e.tag, e.sent_id, e.start, e.end)
        for sent in Entities([list(s) for s in seqs], schemes[strict_scheme]).entities
        for e in sent
    }
