"""Frame scores: confusion matrix, accuracy and macro-F1 by hand, the printed table, the saved files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rnnlm.frames.metrics import classification_report, confusion_matrix, format_report, save_report

GOLD = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
PRED = [0, 0, 1, 1, 2, 2, 2, 2, 0, 1]
CLASSES = ["a", "b", "c", "d"]


def test_confusion_matrix_counts_each_pair():
    cm = confusion_matrix(GOLD, PRED, 4)
    assert cm.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 3, 0], [0, 1, 0, 0]]
    loop = np.zeros((4, 4), dtype=int)
    for g, p in zip(GOLD, PRED, strict=True):
        loop[g, p] += 1
    assert np.array_equal(cm, loop)
    with pytest.raises(ValueError, match="class ids"):
        confusion_matrix([0, 4], [0, 1], 4)


def test_report_by_hand():
    r = classification_report(GOLD, PRED, CLASSES)
    assert r["count"] == 10 and r["accuracy"] == pytest.approx(6 / 10)
    # a: P 2/3 R 2/3; b: P 1/3 R 1/2; c: P 3/4 R 3/4; d: P 0 R 0 (F1 0)
    f1 = [2 / 3, 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2), 3 / 4, 0.0]
    assert [row["f1"] for row in r["per_class"]] == pytest.approx(f1)
    assert r["macro_f1"] == pytest.approx(sum(f1) / 4)
    assert [row["support"] for row in r["per_class"]] == [3, 2, 4, 1]
    assert r["per_class"][1]["precision"] == pytest.approx(1 / 3) and r["per_class"][1]["recall"] == 0.5


def test_macro_f1_leaves_out_classes_never_seen():
    r = classification_report([0, 1, 1], [0, 1, 0], ["x", "y", "never"])
    assert r["per_class"][2]["support"] == 0
    assert r["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)  # x: P 1/2 R 1; y: P 1 R 1/2


def test_table_and_saved_files(tmp_path):
    r = classification_report(GOLD, PRED, CLASSES)
    text = format_report(r, title="test")
    assert text.splitlines()[0] == "test: accuracy 0.6000 (6/10) | macro-F1 0.4542"
    assert "\nc         0.7500  0.7500  0.7500        4\n" in text
    assert [line.split() for line in text.splitlines()[-5:]] == [
        ["a", "b", "c", "d"],
        ["a", "2", "1", "0", "0"],
        ["b", "0", "1", "1", "0"],
        ["c", "1", "0", "3", "0"],
        ["d", "0", "1", "0", "0"],
    ]
    written = save_report(r, tmp_path / "sub" / "rep", title="test")
    assert [p.name for p in written] == ["rep.json", "rep.png"]
    assert json.loads(written[0].read_text(encoding="utf-8")) == r
    assert written[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
