"""``rnnlm tag``: train | eval | predict sequence taggers (part of speech, named entities).

The training flags are generated from the tagger's config dataclasses (tagging/config.py), as ``rnnlm
train``'s are from lm/config.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rnnlm.core.flags import add_dataclass_flags, add_load_flags
from rnnlm.tagging import recipe
from rnnlm.tagging.char_lms import TEXT_FORMATS
from rnnlm.tagging.config import SECTIONS
from rnnlm.tagging.recipe import PRESETS
from rnnlm.training import distributed


def add_tag_parser(sub: Any) -> None:
    """Add ``tag`` with its own subcommands to the ``rnnlm`` parser's subparsers."""
    tag = sub.add_parser(
        "tag",
        help="train and run sequence taggers (POS, NER)",
        description="BiLSTM-CRF sequence taggers over CoNLL-2003 and CoNLL-U files.",
    )
    tag.set_defaults(handler=cmd_tag)
    cmds = tag.add_subparsers(dest="tag_command", required=True, metavar="{train,lm,eval,predict}")

    t = cmds.add_parser(
        "train",
        help="train a tagger",
        description="Train a tagger on one tag column of a CoNLL-2003 or CoNLL-U file. With --dev the best "
        "checkpoint and early stopping follow the dev score: entity F1 for chunk tags (ner, chunk), token "
        "accuracy otherwise.",
    )
    t.add_argument(
        "data.train", nargs="?", default=argparse.SUPPRESS, metavar="TRAIN", help="Training file (not with --resume)."
    )
    t.add_argument("--resume", metavar="RUN_DIR", help="Continue this run exactly where it stopped.")
    t.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="Run the whole benchmark protocol within --time-budget (default 1800 s, from the raw files to the "
        "scored ensemble): the forward and backward character LMs on TRAIN's words (and --lm-text) for a third "
        "of the budget, then the encoding and an ensemble of 3 taggers for the rest; needs --dev. Other flags "
        "override the preset's tagger settings; --char-lm DIR skips the LM stage.",
    )
    t.add_argument(
        "--lm-text",
        action="append",
        default=[],
        metavar="FILE",
        help="With --preset: more text for the character LMs, beside TRAIN's words (repeat for more files).",
    )
    for section, cls in SECTIONS.items():
        skip = {"train"} if section == "data" else set()  # the training file is the positional TRAIN
        add_dataclass_flags(t.add_argument_group(f"{section} options"), cls, prefix=f"{section}.", skip=skip)

    lm = cmds.add_parser(
        "lm",
        help="train the character LMs a tagger reads (--char-lm)",
        description="Train the forward and the backward character language models of the texts, side by side "
        "where there are two cores, for --time-budget seconds of wall time; OUT is then a folder that `rnnlm tag "
        "train --char-lm OUT` reads. Text files are read as they are; tagged files (*.conllu, or CoNLL-2003 files "
        "that begin with -DOCSTART-) as their words, one sentence per line.",
    )
    lm.add_argument("texts", nargs="*", metavar="TEXT", help="Text or tagged files, directories or globs.")
    lm.add_argument("--out", help="Folder for the texts and the forward/ and backward/ runs.")
    lm.add_argument("--resume", metavar="DIR", help="Continue the models in DIR where they stopped.")
    lm.add_argument(
        "--time-budget", type=float, default=600.0, help="Seconds of wall time for both models (default: 600)."
    )
    lm.add_argument("--format", default="auto", choices=TEXT_FORMATS, help="How to read every TEXT (default: auto).")
    lm.add_argument(
        "--jobs", type=int, default=0, help="Models trained at once: 0 = both where there are two cores, else 1 or 2."
    )
    lm.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="An `rnnlm train` setting for both models, e.g. --set hidden=1024 (repeat for more).",
    )

    e = cmds.add_parser(
        "eval",
        help="score a tagged file",
        description="Print JSON with token accuracy and, for chunk tags, entity precision, recall and F1 "
        "(overall and per type, conlleval's counting via seqeval), all in percent.",
    )
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("file", metavar="FILE", help="A file in the run's format with the run's tag column.")
    e.add_argument("--format", choices=("conll2003", "conllu"), help="Format of FILE (default: the run's).")
    e.add_argument(
        "--column",
        help="Tag column of FILE (default: the run's); another one only from another --format with the same tags.",
    )
    add_load_flags(e)

    p = cmds.add_parser(
        "predict",
        help="tag text",
        description="Tag each non-empty line of the files (or of stdin) as one sentence. Raw text is "
        "split into words, numbers and punctuation; --tokenized takes the words as separated by spaces. "
        "Prints token<TAB>tag lines with a blank line after each sentence, or with --json one object per "
        "sentence: tokens, tags and (for chunk tags) entities with token and character spans.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("files", nargs="*", metavar="FILE", help="Text files (default: stdin).")
    p.add_argument("--tokenized", action="store_true", help="Lines hold tokens separated by whitespace.")
    p.add_argument("--json", action="store_true", help="One JSON object per sentence.")
    add_load_flags(p)


def cmd_tag(ns: argparse.Namespace) -> int:
    return {"train": _train, "lm": _lm, "eval": _eval, "predict": _predict}[ns.tag_command](ns)


def _train(ns: argparse.Namespace) -> int:
    from rnnlm.core.errors import RnnlmError
    from rnnlm.tagging import run as tag_run

    # Only the flags given explicitly are present (SUPPRESS defaults), as "section.field": sorted into the
    # config's sections as they come, and trained through the same run.train(cfg) as the Python API.
    overrides: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for key, value in vars(ns).items():
        section, _, name = key.partition(".")
        if name and section in overrides:
            overrides[section][name] = value
    if "train" not in overrides["data"] and not ns.resume:
        raise RnnlmError("rnnlm tag train needs a TRAIN file (or --resume RUN_DIR)")
    if ns.lm_text and not ns.preset:
        raise RnnlmError(
            "--lm-text is text for a preset's character LMs; add --preset, or train them with `rnnlm tag lm`"
        )
    if ns.preset or (ns.resume and recipe.is_recipe_run(ns.resume)):
        run_dir = _train_preset(ns, overrides)
    else:
        cfg, run = tag_run.config_for(overrides, ns.resume)
        run_dir = tag_run.train(cfg, run).run_dir
    if distributed.is_main():  # under torchrun rank 0 speaks for the run
        print(f"done: {run_dir} | tag text with: rnnlm tag predict {run_dir} < FILE")
    return 0


def _train_preset(ns: argparse.Namespace, overrides: dict[str, dict[str, Any]]) -> Any:
    """A preset's whole protocol (tagging/recipe.py), new or continued."""
    from rnnlm.core.errors import RnnlmError

    if ns.resume:
        given = sorted(k for section in overrides.values() for k in section)
        if ns.preset or given or ns.lm_text:
            raise RnnlmError(
                f"--resume {ns.resume}: a preset run continues with the settings it began with; leave out "
                + ", ".join(f"--{k.replace('_', '-')}" for k in [*given, *(["preset"] if ns.preset else [])])
            )
        return recipe.resume_preset(ns.resume).run_dir
    flat = {k: v for section in overrides.values() for k, v in section.items()}
    train, dev = flat.pop("train"), flat.pop("dev", None)
    budget, out = flat.pop("time_budget", None), flat.pop("out", None)
    result = recipe.train_preset(
        train, ns.preset, dev=dev, out=out, time_budget=budget, lm_texts=ns.lm_text, settings=flat
    )
    return result.run_dir


def _lm(ns: argparse.Namespace) -> int:
    from rnnlm.core.errors import RnnlmError
    from rnnlm.tagging.char_lms import train_char_lms

    if ns.resume and (ns.texts or ns.out):
        raise RnnlmError("--resume DIR continues the models with the text they began with; leave out TEXT and --out")
    if not ns.resume and not (ns.texts and ns.out):
        raise RnnlmError("rnnlm tag lm needs TEXT files and --out DIR (or --resume DIR)")
    settings = {}
    for item in ns.set:
        key, eq, value = item.partition("=")
        if not eq:
            raise RnnlmError(f"--set {item!r}: write KEY=VALUE, e.g. --set hidden=1024")
        settings[key.replace("-", "_")] = _value(value)
    out = ns.resume or ns.out
    train_char_lms(
        ns.texts, out, resume=bool(ns.resume), time_budget=ns.time_budget, fmt=ns.format, jobs=ns.jobs,
        settings=settings,
    )  # fmt: skip
    print(f"done: {out} | use it with: rnnlm tag train TRAIN --char-lm {out}")
    return 0


def _value(text: str) -> Any:
    """A --set value: JSON where it parses (numbers, true/false, null), the text itself otherwise."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _eval(ns: argparse.Namespace) -> int:
    from rnnlm.tagging import api as tagging

    tagger = tagging.load(ns.run_dir, ns.checkpoint, ns.device, ns.engine)
    print(json.dumps(tagger.evaluate(ns.file, ns.format, ns.column), ensure_ascii=False, indent=2))
    return 0


def _predict(ns: argparse.Namespace) -> int:
    from rnnlm.core.text import read_texts
    from rnnlm.tagging import api as tagging

    tagger = tagging.load(ns.run_dir, ns.checkpoint, ns.device, ns.engine)
    text = read_texts(ns.files) if ns.files else sys.stdin.read()
    for item in tagger.tag_text(text, tokenized=ns.tokenized):
        if ns.json:
            print(json.dumps(item, ensure_ascii=False))
        else:
            print("".join(f"{tok}\t{tag}\n" for tok, tag in zip(item["tokens"], item["tags"], strict=True)))
    return 0
