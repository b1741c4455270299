"""Train the forward and backward character language models of a tagging benchmark: a thin wrapper over
`rnnlm tag lm` (tagging/char_lms.py) that names the benchmark's texts.

    python bench/tagging_lm.py ner --out runs/charlm-ner              # 300 s of wall time, both at once
    python bench/tagging_lm.py upos --budget 600 --out runs/charlm-upos
    python bench/tagging.py ner --set char_lm=runs/charlm-ner         # then the tagging benchmark

The text: the tagging task's training split (its words, one sentence per line, as the tagger's features will
read them), then wikitext-2's valid and test files and The Time Machine; never the task's dev or test split,
which the tagger benchmark scores. `rnnlm tag lm` writes it to OUT/text.txt and its lines reversed to
OUT/text.reversed.txt, and trains OUT/forward and OUT/backward with `rnnlm train`'s default recipe for --budget
seconds of wall time: side by side with --jobs 2 (one process and one thread each), or one after the other with
--jobs 1, each for half the budget. Prints one JSON line with each model's validation bits per character, steps
and seconds.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from rnnlm.core.atomic import atomic_write_bytes
from rnnlm.tagging.char_lms import TEXT, train_char_lms

TRAIN_SPLITS = {"upos": "ud_en_ewt/en_ewt-ud-train.conllu", "ner": "conll2003/eng.train"}
SHARED = ("wikitext-2/wiki.valid.tokens", "wikitext-2/wiki.test.tokens", "timemachine.txt")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=sorted(TRAIN_SPLITS))
    p.add_argument("--data", default=os.environ.get("RNNLM_DATA", "../shared/data"), help="the shared data folder")
    p.add_argument("--out", required=True, help="folder for the texts and the forward/ and backward/ runs")
    p.add_argument("--budget", type=float, default=300.0, help="seconds of wall time (default: 300)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training step")
    p.add_argument(
        "--jobs", type=int, default=2, help="models trained side by side, one process each (default: 2, both at once)"
    )
    p.add_argument("--val-fraction", type=float, default=0.03, help="held-out tail of the text (default: 0.03)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an `rnnlm train` setting")
    args = p.parse_args()
    out = Path(args.out)
    extra = {k: json.loads(v) if v[:1] in "0123456789-[{" else v for k, v in (s.split("=", 1) for s in args.set)}
    extra = {"val_fraction": args.val_fraction, "threads": args.threads, **extra}
    texts = [Path(args.data) / TRAIN_SPLITS[args.task], *(Path(args.data) / name for name in SHARED)]
    summary = train_char_lms(texts, out, time_budget=args.budget, jobs=args.jobs, settings=extra)
    text = (out / TEXT).read_text(encoding="utf-8")
    result = {"task": args.task, "characters": len(text), "budget_s": args.budget, "jobs": args.jobs, **summary}
    result["threads"] = args.threads  # each model's torch threads
    print(json.dumps(result))
    atomic_write_bytes(out / "result.json", (json.dumps(result, indent=2) + "\n").encode("utf-8"))


if __name__ == "__main__":
    main()
