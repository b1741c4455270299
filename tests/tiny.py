"""Tiny data and settings shared by the tests of all three uses: models small enough that a run of a few epochs
takes a second or so, on data made up here (nothing read from $RNNLM_DATA).

Plain values and functions, so that module-scoped fixtures, parametrize lists and CLI argument lists can use them;
tests/conftest.py wraps the ones that write files as fixtures (``tiny_corpus``, ``tiny_lm_config``,
``tiny_conll``). A test that needs other settings overrides them: ``{**tiny.LM, "hidden": 12}``.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np


def flags(settings: dict[str, object]) -> list[str]:
    """The command-line flags that say what ``settings`` (API keyword arguments) say: True is ``--x``, False
    ``--no-x``, anything else ``--x value``."""
    out: list[str] = []
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + flag[2:])
        else:
            out += [flag, str(value)]
    return out


# -- language models ---------------------------------------------------------------------------------------


def lm_text(rows: int = 100) -> str:
    """A character corpus of ``rows`` numbered lines of one pangram (about 50 characters each)."""
    return "".join(f"row {i}: pack my box with five dozen liquor jugs.\n" for i in range(rows))


LM_TEXT = lm_text()

# A one-layer LM on LM_TEXT: about 70 steps of 4 x 16 characters an epoch. No cell: each test names its own.
LM = {"layers": 1, "hidden": 16, "embed": 8, "batch_size": 4, "seq_len": 16, "progress": False}
LM_FLAGS = flags(LM)

# -- taggers -----------------------------------------------------------------------------------------------

PEOPLE = [["Anna"], ["Bob", "Smith"], ["Carla"], ["Dan", "Brown", "Jr"]]
PLACES = [["Paris"], ["New", "York"], ["Oslo"], ["Rio"]]
VERBS = ["visited", "left", "likes", "saw"]

# A tagger that learns ner_file's sentences in a few epochs of 40 sentences.
TAGGER = {"hidden": 16, "word_dim": 16, "char_filters": 8, "char_dim": 8, "dropout": 0.1, "word_dropout": 0.0}
TAGGER |= {"batch_size": 8, "lr": 0.02, "eval_batch_size": 3}
TAGGER_FLAGS = [*flags(TAGGER), "--no-progress"]


def ner_file(path: Path, n: int, seed: int) -> list[list[str]]:
    """Sentences 'PERSON VERB PLACE .' in CoNLL-2003 columns (IOB2), separated by blank lines; returns the tags."""
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


# -- frame sequences ---------------------------------------------------------------------------------------

# A frame classifier for ramp_frames: one model (no ensemble, no refit) unless a test asks for them.
FRAMES = {"hidden": 8, "proj": 8, "batch_size": 8, "seed": 0}
FRAMES_FLAGS = [*flags(FRAMES), "--no-progress"]

RAMPS = ("up", "down", "flat")


def _ramps(n: int, seed: int, noise: float, dims: int):
    """(frames as float64 (T, dims), label) for ramp_frames and write_ts, in the order the random draws come."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        label, t = RAMPS[i % 3], int(rng.integers(4, 10))
        ramp = {"up": 1.0, "down": -1.0, "flat": 0.0}[label] * np.linspace(-1, 1, t)
        if noise:
            ramp = ramp + noise * rng.standard_normal(t)
        yield np.stack([ramp] + [rng.standard_normal(t) for _ in range(dims - 1)], axis=1), label


def ramp_frames(n: int, seed: int, noise: float = 0.1, dims: int = 2) -> tuple[list[np.ndarray], list[str]]:
    """``n`` sequences of 4 to 9 frames of ``dims`` features (float32), labelled by the direction of a ramp in
    feature 0: up, down or flat, in turn (``noise`` is the ramp's own noise); the other features are noise."""
    pairs = list(_ramps(n, seed, noise, dims))
    return [x.astype(np.float32) for x, _ in pairs], [label for _, label in pairs]


def write_ts(path: Path, n: int, seed: int, dims: int = 2) -> None:
    """ramp_frames as a UEA-style .ts file (the values rounded to 5 decimals)."""
    lines = ["# toy", "@problemName toy", "@timeStamps false", "@missing false", "@univariate false"]
    lines += [f"@dimensions {dims}", "@equalLength false", f"@classLabel true {' '.join(RAMPS)}", "@data"]
    for x, label in _ramps(n, seed, 0.1, dims):
        lines.append(":".join(",".join(f"{v:.5f}" for v in s) for s in x.T) + f":{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_frames_cli(*args: str) -> tuple[int, str]:
    """``rnnlm frames ARGS`` in this process: the exit code and what it printed."""
    import contextlib
    import io

    from rnnlm.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["frames", *args])
    return code, out.getvalue()
