"""Tagging metrics: hand-worked examples, and agreement with seqeval's own report on real data."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import torch

from rnnlm.core.errors import RnnlmError
from rnnlm.tagging.conll import read_conll2003
from rnnlm.tagging.metrics import PRF, entity_scores, token_accuracy
from rnnlm.tagging.schemes import iob2_to_bioes

GOLD = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"], ["B-ORG", "O", "B-PER"]]
PRED = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "O", "B-ORG"]]


def test_token_accuracy_ignores_padding() -> None:
    gold = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    pred = torch.tensor([[1, 0, 3, 7], [4, 5, 9, 9]])  # wrong in the padding too, which must not count
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    assert token_accuracy(gold, pred, mask) == 4 / 5
    assert token_accuracy(GOLD, PRED) == 6 / 8
    with pytest.raises(TypeError, match="bool mask"):
        token_accuracy(gold, pred)
    with pytest.raises(ValueError, match="sentence 1 has 3 gold tags but 2 predicted"):
        token_accuracy(GOLD, [PRED[0], PRED[1][:2]])


def test_entity_scores_hand_worked() -> None:
    # Gold: PER(0-1) LOC(3-4) | ORG(0) PER(2).  Predicted: PER(0-1) LOC(3) | ORG(0) ORG(2).
    # Right: PER(0-1), ORG(0): 2 of 4 predicted, 2 of 4 gold.
    s = entity_scores(GOLD, PRED)
    assert s.overall == PRF(0.5, 0.5, 0.5, 4)
    assert s.per_type == {
        "LOC": PRF(0.0, 0.0, 0.0, 1),  # LOC(3) is too short: an exact-span mismatch
        "ORG": PRF(0.5, 1.0, 2 / 3, 1),
        "PER": PRF(1.0, 0.5, 2 / 3, 2),
    }
    assert entity_scores([["O", "O"]], [["O", "O"]]).overall == PRF(0.0, 0.0, 0.0, 0)


def test_conlleval_reading_and_strict_mode() -> None:
    gold, pred = [["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]]  # an invalid IOB2 prediction
    assert entity_scores(gold, pred).overall == PRF(1.0, 1.0, 1.0, 1)  # conlleval reads I- after O as a start
    assert entity_scores(gold, pred, strict_scheme="IOB2").overall == PRF(0.0, 0.0, 0.0, 1)
    bioes_gold, bioes_pred = [iob2_to_bioes(s) for s in GOLD], [iob2_to_bioes(s) for s in PRED]
    assert entity_scores(bioes_gold, bioes_pred) == entity_scores(GOLD, PRED)
    assert entity_scores(bioes_gold, bioes_pred, strict_scheme="BIOES") == entity_scores(GOLD, PRED)
    with pytest.raises(ValueError, match="strict_scheme must be one of IOB2, BIOES"):
        entity_scores(GOLD, PRED, strict_scheme="IOB1")
    with pytest.raises(ValueError, match="'PER' is not a chunk tag"):
        entity_scores([["PER"]], [["O"]])


def test_missing_seqeval_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "seqeval.metrics.sequence_labeling", None)  # makes the import fail
    with pytest.raises(RnnlmError, match=r"pip install 'rnnlm\[tag\]'"):
        entity_scores(GOLD, PRED)
    assert token_accuracy(GOLD, PRED) == 6 / 8  # accuracy does not need seqeval


@pytest.mark.e2e
def test_agrees_with_seqeval_report_on_conll(shared_data: Path) -> None:
    from seqeval.metrics import classification_report

    gold = [s.tags["ner"] for s in read_conll2003(shared_data / "conll2003" / "eng.testb")]
    rng = random.Random(0)
    tags = sorted({t for s in gold for t in s})
    pred = [[rng.choice(tags) if rng.random() < 0.1 else t for t in s] for s in gold]  # invalid IOB2 included
    ours = entity_scores(gold, pred)
    theirs = classification_report(gold, pred, output_dict=True, zero_division=0)
    for name, prf in [*ours.per_type.items(), ("micro avg", ours.overall)]:
        row = theirs[name]
        assert prf.support == row["support"]
        assert (prf.precision, prf.recall, prf.f1) == pytest.approx((row["precision"], row["recall"], row["f1-score"]))
    assert set(ours.per_type) == {"LOC", "MISC", "ORG", "PER"} and 0.5 < ours.overall.f1 < 0.9
