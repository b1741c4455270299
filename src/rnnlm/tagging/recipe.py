"""The tagging presets: the whole benchmark protocol in one command (``rnnlm tag train --preset ner|upos``).

A preset runs three stages within one time budget (wall time, from the raw files to the trained model):

1. the forward and backward character LMs (tagging/char_lms.py), side by side, on the training file's words
   and any ``--lm-text``, for the preset's share of the budget (skipped when ``--char-lm DIR`` is given);
2. encoding: the sentences read through the LMs (tagging/run.py);
3. the ensemble of taggers, side by side, each for what is left of the budget once the data are encoded
   (less a reserve for saving the ensemble and scoring it on dev).

The run directory holds everything: the LM runs in ``RUN/lm``, the tagger (and its own copy of the LMs in
``RUN/char_lm``), and ``RUN/recipe.json``, which records the preset, the settings, the budget and what each
stage took. ``rnnlm tag train --resume RUN`` continues from the stage that was running when it stopped: a
finished stage is not run again, and the tagger stage keeps the budget it was given when it began.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.atomic import atomic_write_json
from rnnlm.core.errors import ConfigError, RnnlmError
from rnnlm.tagging import char_lms
from rnnlm.tagging import run as tag_run
from rnnlm.tagging.config import build_tag_config, split_settings
from rnnlm.training import runs

RECIPE = "recipe.json"
LM_DIR = "lm"


@dataclass(frozen=True)
class Preset:
    """A tagging protocol: the tagger's settings, the character LMs' share of the budget and their settings."""

    name: str
    about: str
    tagger: dict[str, Any]  # `rnnlm tag train` settings (flat, snake_case)
    budget: float = 1800.0  # the default --time-budget of the whole protocol, in seconds
    lm_share: float = 1 / 3  # of the budget, for the character LMs (both at once: its wall time)
    lm: dict[str, Any] = field(default_factory=dict)  # `rnnlm train` settings of both character LMs
    reserve: float = 20.0  # seconds kept back from the ensemble: saving it and scoring it on dev
    lm_jobs: int = 0  # character LMs trained at once (0: both where there are two cores)

    def split(self, budget: float, with_lms: bool = True) -> dict[str, float]:
        """The seconds of each stage: the character LMs', and at most the rest for encoding and the ensemble."""
        lm = budget * self.lm_share if with_lms else 0.0
        return {"char_lm": lm, "tagger": budget - lm}


# The settings are bench/notes/tagging.md's, chosen on dev there; the LMs of both get a third of the budget (the
# benchmark's 600 s of 1,800).
PRESETS: dict[str, Preset] = {
    "ner": Preset(
        "ner",
        "CoNLL-2003 named entities: char-LM features read in document context, CRF over BIOES, 3 members",
        {
            "column": "ner",
            "ensemble": 3,
            "jobs": 3,
            "lr": 0.004,
            "batch_size": 16,
            "char_filters": 150,
            "schedule": "cosine",
            "patience": 0,
            "char_lm_context": "document",
        },
    ),
    "upos": Preset(
        "upos",
        "Universal part of speech (CoNLL-U): char-LM features, 2 layers, XPOS learned beside, 3 members",
        {
            "column": "upos",
            "aux_column": "xpos",
            "ensemble": 3,
            "jobs": 3,
            "layers": 2,
            "lr": 0.004,
            "dropout": 0.33,
            "char_filters": 150,
            "schedule": "cosine",
            "patience": 0,
        },
    ),
}


def preset_named(name: str | Preset) -> Preset:
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        raise ConfigError(f"--preset {name!r}: the tagging presets are {', '.join(PRESETS)}")
    return PRESETS[name]


def is_recipe_run(run_dir: str | Path) -> bool:
    """Whether a run directory was begun by a preset (and is continued by ``resume_preset``)."""
    return (Path(run_dir) / RECIPE).is_file()


def train_preset(
    train: str | Path,
    preset: str | Preset,
    *,
    dev: str | Path | None = None,
    out: str | Path | None = None,
    time_budget: float | None = None,
    lm_texts: Sequence[str | Path] = (),
    settings: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> runs.TrainResult:
    """Run a preset's whole protocol on ``train`` (scored on ``dev``) in ``out`` within ``time_budget`` seconds
    (default: the preset's). ``settings`` override the preset's tagger settings (``char_lm=DIR`` skips the LM
    stage); ``lm_texts`` are more text for the character LMs, beside the training file's words."""
    p = preset_named(preset)
    budget = float(time_budget if time_budget is not None else p.budget)
    if not budget > 0:
        raise ConfigError(f"--time-budget {budget:g}: a preset needs a positive budget in seconds")
    settings = dict(settings or {})
    for key in ("train", "dev", "time_budget", "out"):
        if key in settings:
            raise ConfigError(f"{key}= is an argument of the preset, not one of its settings")
    tagger = {**p.tagger, **settings, "train": str(train), "dev": str(dev) if dev else None, "time_budget": budget}
    cfg = build_tag_config(split_settings(tagger))  # every setting checked before anything is trained
    if not dev:
        raise ConfigError(f"--preset {p.name} needs --dev FILE: the members keep their best checkpoint on dev")
    run_dir = runs.new_run_dir(str(out) if out else None, tag_run.COMMAND)
    if (run_dir / RECIPE).exists():
        raise RnnlmError(f"--out {run_dir}: holds a preset run already; continue it with --resume {run_dir}")
    with_lms = not cfg.model.char_lm
    state = {
        "format": "rnnlm-tag-recipe",
        "version": 1,
        "preset": p.name,
        "recipe": dataclasses.asdict(
            p
        ),  # the whole preset: a resume runs it as it began, whatever rnnlm's presets become
        "budget_s": budget,
        "split_s": p.split(budget, with_lms),
        "train": str(Path(train).absolute()),
        "dev": str(Path(dev).absolute()),
        "lm_texts": [str(Path(t).absolute()) for t in lm_texts],
        "settings": settings,
        "stages": {},
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / RECIPE, state)
    return _run(run_dir, state, p, log)


def resume_preset(run_dir: str | Path, log: Callable[[str], None] = print) -> runs.TrainResult:
    """Continue a preset run from the stage that was running when it stopped."""
    run_dir = Path(run_dir)
    state = ckpt.read_json(run_dir / RECIPE, "preset record")
    if not isinstance(state, dict) or state.get("format") != "rnnlm-tag-recipe":
        raise RnnlmError(f"{run_dir / RECIPE}: not a preset record this version of rnnlm can read")
    try:
        p = Preset(**state["recipe"])
    except (KeyError, TypeError) as e:
        raise RnnlmError(f"{run_dir / RECIPE}: not a preset record this version of rnnlm can read ({e})") from None
    return _run(run_dir, state, p, log)


def _run(run_dir: Path, state: dict[str, Any], p: Preset, log: Callable[[str], None]) -> runs.TrainResult:
    stages: dict[str, Any] = state["stages"]
    settings = dict(state["settings"])
    split = state["split_s"]
    with_lms = split["char_lm"] > 0
    total = 3 if with_lms else 2
    log(
        f"preset {p.name}: {p.about} | budget {state['budget_s']:g} s: "
        + (f"character LMs {split['char_lm']:g} s, then " if with_lms else "")
        + f"encoding and the ensemble {split['tagger']:g} s"
    )

    def save() -> None:
        atomic_write_json(run_dir / RECIPE, state)

    if with_lms:
        lm_dir = run_dir / LM_DIR
        if stages.get("char_lm", {}).get("done"):
            log(f"stage 1/{total}: character LMs finished before, in {lm_dir}")
        else:
            begun = (lm_dir / char_lms.TEXT).is_file()
            log(f"stage 1/{total}: character LMs, {split['char_lm']:g} s" + (" (continued)" if begun else ""))
            start = time.monotonic()
            lm_settings = {**p.lm, **settings.pop("lm", {})}
            try:
                char_lms.train_char_lms(
                    [state["train"], *state["lm_texts"]],
                    lm_dir,
                    resume=begun,
                    time_budget=split["char_lm"],
                    jobs=p.lm_jobs,
                    settings=lm_settings,
                    log=log,
                )
            finally:
                stage = stages.setdefault("char_lm", {})
                stage["seconds"] = round(stage.get("seconds", 0.0) + time.monotonic() - start, 1)
                save()
            stages["char_lm"]["done"] = True
            save()
        settings["char_lm"] = str(lm_dir.absolute())
    settings.pop("lm", None)

    n = 2 if with_lms else 1
    resuming = (run_dir / ckpt.CONFIG).is_file()
    start = time.monotonic()
    if resuming:
        log(f"stage {n}-{total}/{total}: the ensemble (continued, with the budget it began with)")
        cfg, run = tag_run.config_for({}, run_dir)
        deadline = None
    else:
        spent = sum(s.get("seconds", 0.0) for s in stages.values())
        left = state["budget_s"] - spent - p.reserve
        log(f"stage {n}/{total}: encoding, then stage {total}/{total}: the ensemble, in the {left:.0f} s left")
        tagger = {**p.tagger, **settings, "train": state["train"], "dev": state["dev"], "out": str(run_dir)}
        cfg, run = build_tag_config(split_settings({**tagger, "time_budget": max(left, 1.0)})), None
        deadline = start + left
    try:
        result = tag_run.train(cfg, run, log, deadline=deadline)
    finally:
        stage = stages.setdefault("tagger", {})
        stage["seconds"] = round(stage.get("seconds", 0.0) + time.monotonic() - start, 1)
        save()
    stages["tagger"]["done"] = True
    state["seconds"] = round(sum(s.get("seconds", 0.0) for s in stages.values()), 1)
    save()
    log(f"preset {p.name}: {state['seconds']:g} s of the {state['budget_s']:g} s budget")
    return result
