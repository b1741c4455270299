"""The tagging benchmarks: UD English EWT part of speech (UPOS) and CoNLL-2003 English NER, each its preset.

    python bench/tagging.py ner                          # `rnnlm tag train --preset ner`, 1800 s in all, then test
    python bench/tagging.py upos --time-budget 900       # the same protocol in half the time
    python bench/tagging.py ner --set char_lm=runs/charlm-ner     # LMs trained before (rnnlm tag lm): no LM stage
    python bench/tagging.py ner --set hidden=100 --lm-set hidden=512 --out runs/ner-small

Protocol: what `rnnlm tag train TRAIN --dev DEV --preset TASK --time-budget S` runs (tagging/recipe.py), so the
benchmark and the product cannot drift apart: the forward and backward character LMs side by side on the
training split's words and --lm-text (default: wikitext-2's valid and test files and The Time Machine, never the
task's dev or test split) for a third of the budget, then the encoding, then an ensemble of three taggers
(different seeds) side by side for the rest of the budget. Each member keeps the weights with its best dev score
(token accuracy for UPOS, entity F1 for NER); the ensemble is scored once on the test split: UD EWT test token
accuracy, CoNLL-2003 eng.testb entity F1 (conlleval counting via seqeval). No pretrained embeddings: every
weight starts random. --set overrides a tagger setting, --lm-set a character-LM one.
Prediction throughput is the time to tag the whole test split (pre-tokenized sentences, batches of
--eval-batch-size sorted by length) after one warm-up pass, best of --repeats; also one sentence at a time.
Prints progress, then one JSON line with every number (wall_seconds: the whole protocol, from the raw files to
the trained ensemble; stages: each stage's seconds); --json also writes it to a file. Its lists (threads,
epochs, train_seconds, dev, best_dev) hold one entry per member.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

import machine  # bench/machine.py
from rnnlm.tagging import api as tagging
from rnnlm.tagging.encoding import read_tagged
from rnnlm.tagging.recipe import PRESETS, RECIPE
from rnnlm.training.ensemble import member_dirs

TASKS = {
    "upos": ("ud_en_ewt/en_ewt-ud-train.conllu", "ud_en_ewt/en_ewt-ud-dev.conllu", "ud_en_ewt/en_ewt-ud-test.conllu"),
    "ner": ("conll2003/eng.train", "conll2003/eng.testa", "conll2003/eng.testb"),
}
# More text for the character LMs, beside the training split's words (never the dev or test split).
LM_TEXTS = ("wikitext-2/wiki.valid.tokens", "wikitext-2/wiki.test.tokens", "timemachine.txt")
_LM_ONLY = ("char_lm_context", "char_lm_layers", "char_lm_pool")  # settings a tagger takes only with char_lm
# The presets' tagger settings, split as the --set char_lm= runs read them: the benchmark IS the preset.
SETTINGS: dict[str, dict[str, object]] = {
    task: {k: v for k, v in PRESETS[task].tagger.items() if k not in _LM_ONLY} for task in TASKS
}
CHAR_LM_SETTINGS: dict[str, dict[str, object]] = {
    task: {k: v for k, v in PRESETS[task].tagger.items() if k in _LM_ONLY} for task in TASKS
}


def parse_value(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def throughput(
    tagger: tagging.SequenceTagger, sentences: list[list[str]], docs: list[int], repeats: int
) -> dict[str, float]:
    """Sentences per second over the test split: batched (best of `repeats` after a warm-up; each sentence in
    its document, as `evaluate` reads them) and one by one."""
    tagger.tag(sentences, docs=docs)
    best = min(_seconds(lambda: tagger.tag(sentences, docs=docs)) for _ in range(repeats))
    few = sentences[:500]
    single = _seconds(lambda: [tagger.tag([s], batch_size=1) for s in few])
    return {"sentences_per_s": len(sentences) / best, "single_sentences_per_s": len(few) / single}


def read_rows(run_dir: Path) -> list[dict]:
    """The metrics lines of one trained model (the run itself, or one member of an ensemble)."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def threads_of(model_dir: Path) -> int:
    """The torch threads one trained model (the run, or one member) ran with, from its own config.json.

    A member trained in a worker process has a count of its own there (the threads split among the
    members); 0 (torch's default) is this process's count, since such a model trained in this process; -1
    stays -1 (timed every 200 steps between one thread and the default).
    """
    threads = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["train"]["threads"]
    return threads or torch.get_num_threads()


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=sorted(TASKS))
    p.add_argument("--data", default=os.environ.get("RNNLM_DATA", "../shared/data"), help="the shared data folder")
    p.add_argument(
        "--time-budget", type=float, default=None, help="seconds for the whole protocol (default: the preset's, 1800)"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a tagger setting")
    p.add_argument("--lm-set", action="append", default=[], metavar="KEY=VALUE", help="a character-LM setting")
    p.add_argument(
        "--lm-text", action="append", metavar="FILE", help="text for the character LMs (default: LM_TEXTS in --data)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of this process (1 is fastest on a busy machine); members trained side by side split "
        "--set threads (default: every core) among them",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed passes for the throughput")
    p.add_argument("--out", help="run directory (default: runs/bench-<task>-<time>)")
    p.add_argument("--json", help="also write the result line to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train, dev, test = (str(Path(args.data) / f) for f in TASKS[args.task])
    settings = {"progress": False, **{k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}}
    lm_settings = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.lm_set)}
    preset = dataclasses.replace(PRESETS[args.task], lm={**PRESETS[args.task].lm, **lm_settings})
    lm_texts = args.lm_text if args.lm_text is not None else [str(Path(args.data) / f) for f in LM_TEXTS]
    out = args.out or f"runs/bench-{args.task}-{time.strftime('%Y%m%d-%H%M%S')}"
    where = machine.describe()
    print(f"machine: {machine.kind(where)}, threads {torch.get_num_threads()} | settings {settings}", file=sys.stderr)

    start = time.perf_counter()
    tagger = tagging.train(
        train, dev=dev, preset=preset, time_budget=args.time_budget, lm_texts=lm_texts, out=out, **settings
    )
    wall = time.perf_counter() - start
    stages = json.loads((tagger.run_dir / RECIPE).read_text(encoding="utf-8"))["stages"]
    members = member_dirs(tagger.run_dir, tagger.config.train.ensemble) if tagger.config.train.ensemble > 1 else []
    member_rows = [read_rows(d) for d in members or [tagger.run_dir]]
    test_scores = tagger.evaluate(test)
    test_sents = read_tagged(test, "auto", tagger.config.data.column)
    sentences, docs = [s.tokens for s in test_sents], [s.doc for s in test_sents]
    result = {
        "task": args.task,
        "machine": where,
        "threads": [threads_of(d) for d in members or [tagger.run_dir]],  # each model's, not this process's
        "run_dir": str(tagger.run_dir),
        "settings": settings,
        "best_checkpoint": tagger.checkpoint,
        "epochs": [rows[-1]["epoch"] for rows in member_rows],
        "train_seconds": [rows[-1]["elapsed_s"] for rows in member_rows],
        "wall_seconds": round(wall, 1),
        "stages": {k: v["seconds"] for k, v in stages.items()},
        "dev": [{k: rows[-1][k] for k in ("val_acc", "val_f1") if k in rows[-1]} for rows in member_rows],
        "best_dev": [max(r["val_f1" if "val_f1" in r else "val_acc"] for r in rows) for rows in member_rows],
        "test": test_scores,
        **throughput(tagger, sentences, docs, args.repeats),
    }
    line = json.dumps(result, ensure_ascii=False)
    print(line)
    if args.json:
        Path(args.json).write_text(line + "\n", encoding="utf-8")
    score = f"F1 {test_scores['f1']:.2f}" if "f1" in test_scores else f"accuracy {test_scores['accuracy']:.2f}"
    print(
        f"{args.task}: test {score} | {result['epochs']} epochs, {max(result['train_seconds']):.0f} s training | "
        f"{result['sentences_per_s']:.0f} sentences/s batched, {result['single_sentences_per_s']:.0f} one at a time",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
