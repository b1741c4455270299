"""Shared by the tagger's CLI tests: a tiny synthetic CoNLL-2003 file, tiny settings and a CLI runner."""

from __future__ import annotations

import contextlib
import io
import random
from pathlib import Path

from rnnlm.cli import main

PEOPLE = [["Anna"], ["Bob", "Smith"], ["Carla"], ["Dan", "Brown", "Jr"]]
PLACES = [["Paris"], ["New", "York"], ["Oslo"], ["Rio"]]
VERBS = ["visited", "left", "likes", "saw"]
SMALL = {"hidden": 16, "word_dim": 16, "char_filters": 8, "char_dim": 8, "dropout": 0.1, "word_dropout": 0.0}
SMALL |= {"batch_size": 8, "lr": 0.02, "eval_batch_size": 3}
TINY = [x for k, v in SMALL.items() for x in ("--" + k.replace("_", "-"), str(v))] + ["--no-progress"]


def ner_file(path: Path, n: int, seed: int) -> list[list[str]]:
    """Sentences 'PERSON VERB PLACE .' in CoNLL-2003 columns (IOB2), separated by blank lines."""
    rng = random.Random(seed)
    lines, gold = ["-DOCSTART- -X- -X- O", ""], []
    for _ in range(n):
        person, verb, place = rng.choice(PEOPLE), rng.choice(VERBS), rng.choice(PLACES)
        tags = [f"{'B' if i == 0 else 'I'}-PER" for i in range(len(person))] + ["O"]
        tags += [f"{'B' if i == 0 else 'I'}-LOC" for i in range(len(place))] + ["O"]
        words = [*person, verb, *place, "."]
        lines += [f"{w} X X {t}" for w, t in zip(words, tags, strict=True)] + [""]
        gold.append(tags)
    path.write_text("\n".join(lines), encoding="utf-8")
    return gold


def run_cli(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(args)) == 0
    return out.getvalue()
