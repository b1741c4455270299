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
from rnnlm.tagging.config import SECTIONS
from rnnlm.training import distributed


def add_tag_parser(sub: Any) -> None:
    """Add ``tag`` with its own subcommands to the ``rnnlm`` parser's subparsers."""
    tag = sub.add_parser(
        "tag",
        help="train and run sequence taggers (POS, NER)",
        description="BiLSTM-CRF sequence taggers over CoNLL-2003 and CoNLL-U files.",
    )
    tag.set_defaults(handler=cmd_tag)
    cmds = tag.add_subparsers(dest="tag_command", required=True, metavar="{train,eval,predict}")

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
    for section, cls in SECTIONS.items():
        skip = {"train"} if section == "data" else set()  # the training file is the positional TRAIN
        add_dataclass_flags(t.add_argument_group(f"{section} options"), cls, prefix=f"{section}.", skip=skip)

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
    return {"train": _train, "eval": _eval, "predict": _predict}[ns.tag_command](ns)


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
    cfg, run = tag_run.config_for(overrides, ns.resume)
    run_dir = tag_run.train(cfg, run).run_dir
    if distributed.is_main():  # under torchrun rank 0 speaks for the run
        print(f"done: {run_dir} | tag text with: rnnlm tag predict {run_dir} < FILE")
    return 0


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
