"""Before/after parity: run the same short, deterministic jobs with two source trees and compare what they produce.

    git worktree add /tmp/old-check f043d07          # the code before the restructure (issue 21)
    python bench/parity.py --old /tmp/old-check --new . --out bench/results/parity_YYYYMMDD.json
    python bench/parity.py --old /tmp/old-check --new . --only ptb frames   # some jobs only

Each job runs once per tree, in a subprocess with ``PYTHONPATH=<tree>/src`` (so each tree's own code and its own
bench scripts), ``RNNLM_DATA``, one thread (``--threads 1`` where a command has it, OMP_NUM_THREADS=1) and a
kernel cache of its own (``RNNLM_CACHE``), in a work folder of its own with the same relative paths, so that the
two runs differ only by the code. Every limit is a step or epoch count, never a time budget: a time budget
measures the machine's load, not the code.

What is compared: exit codes; metrics.jsonl values (losses, perplexities, accuracies, F1, lr; wall-clock fields
such as elapsed_s and tokens_per_s left out); every tensor of every checkpoint (exact, else the largest absolute
difference; 1e-6 counts as the same); checkpoint metadata; the JSON a command prints or writes (eval, reports,
predictions with probabilities); generated and predicted text (exact). A run's config.json, the training log
and `rnnlm info` are compared too, but a difference there is reported as formatting ("info"), not as a failure.

Jobs that a few of issue 21's fixes change on purpose (a setting now refused, an OSError now a user error,
EMA that now averages batch-norm buffers) are marked ``intended``: they are expected to differ, and are run to
show how. A job whose two runs differ is run again with the old tree to tell a changed result from a job that is
not deterministic.

Prints a table (job, what was compared, result) and writes the whole comparison as JSON to --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import machine  # bench/machine.py

TOL = 1e-6  # an absolute difference this small counts as the same number
# Keys that hold wall-clock measurements (or the machine), left out of every comparison.
TIMING = re.compile(
    r"elapsed|seconds|(^|_)s$|tok(en)?s?_per_s|tok_s|per_s$|^wall|^cpu$|load_average|^machine$|throughput"
)
# Numbers followed by a unit of time or speed in a log line, masked before logs are compared.
# A run folder named after the time it started (bench/d2l_recipe.py: <sampling>-seed<n>-<unix time>).
STAMP = re.compile(r"-\d{10}(?=/|$)")
TIMING_TEXT = re.compile(r"\d[\d,.]*\s*(s\b|ms\b|tok/s|tokens/s|sentences/s|it/s|min\b)")


@dataclass
class Step:
    """One command of a job. argv[0] is ``rnnlm`` (the tree's CLI), a ``bench/*.py`` script of the tree, or
    ``python`` (a snippet run with the tree's code); the rest are arguments, relative to the job's folder."""

    argv: list[str]
    # text (exact), json and jsonl (numbers within TOL), table (a markdown table whose last two columns are
    # wall and CPU seconds, left out; exact), log (timings masked; a difference is info), none
    stdout: str = "text"
    label: str = ""
    ok: bool = True  # must exit 0 in both trees; False for the error paths, whose exit codes are compared


@dataclass
class Job:
    name: str
    about: str
    steps: list[Step]
    runs: list[str] = field(default_factory=list)  # run folders (relative) whose files are compared
    intended: str = ""  # when the new code changes this on purpose: the reason
    info_files: tuple[str, ...] = ("config.json",)  # files whose differences are formatting, not results
    info_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)  # file -> its keys compared as info
    needs: tuple[str, ...] = ()  # jobs whose old-tree runs this job reads (through OLD_RUNS)
    # for an intended change, the part that must still be the same: metrics keys (a regex) compared apart
    same_keys: str = ""


# A job's folder is WORK/<old|new|old-again>/<job>: this relative path reaches the old tree's runs from there.
OLD_RUNS = "../../old"


# ----------------------------------------------------------------------------------------------- inputs


def take_blocks(src: Path, dst: Path, n: int) -> None:
    """The first n blank-line-separated blocks of a CoNLL file (sentences, comments and -DOCSTART- kept)."""
    blocks, current = [], []
    with src.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                current.append(line)
            elif current:
                blocks.append("".join(current))
                current = []
                if len(blocks) == n:
                    break
    if current and len(blocks) < n:
        blocks.append("".join(current))
    dst.write_text("\n".join(blocks) + "\n", encoding="utf-8")


def make_inputs(data: Path, folder: Path) -> dict[str, str]:
    """Small slices of the benchmark data and a few raw sentences, shared by both trees."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "upos_train": ("ud_en_ewt/en_ewt-ud-train.conllu", 300),
        "upos_dev": ("ud_en_ewt/en_ewt-ud-dev.conllu", 120),
        "upos_test": ("ud_en_ewt/en_ewt-ud-test.conllu", 120),
        "ner_train": ("conll2003/eng.train", 300),
        "ner_dev": ("conll2003/eng.testa", 120),
        "ner_test": ("conll2003/eng.testb", 120),
    }
    paths = {}
    for key, (rel, n) in files.items():
        dst = folder / f"{key}{Path(rel).suffix or '.conll'}"
        take_blocks(data / rel, dst, n)
        paths[key] = str(dst)
    raw = folder / "sentences.txt"
    raw.write_text(
        "EU rejects German call to boycott British lamb.\n"
        "Peter Blackburn met the European Commission in Brussels on 22 August 1996.\n"
        "\n"
        "Al-Zaman: American forces killed Shaikh Abdullah al-Ani in the town of Qaim!\n"
        "Zürich's café costs 3.50 francs, said Ms. Müller.\n",
        encoding="utf-8",
    )
    paths["raw"] = str(raw)
    tok = folder / "tokenized.txt"
    tok.write_text("EU rejects German call to boycott British lamb .\nJapan 's Nikkei fell 2.3 % on Monday .\n")
    paths["tokenized"] = str(tok)
    small = folder / "small.txt"  # a short text for eval with dynamic evaluation
    small.write_text((data / "tinyshakespeare.txt").read_text(encoding="utf-8")[-6000:], encoding="utf-8")
    paths["small"] = str(small)
    jv = data / "japanese_vowels"
    paths["jv_train"], paths["jv_test"] = str(jv / "JapaneseVowels_TRAIN.ts"), str(jv / "JapaneseVowels_TEST.ts")
    paths["jaychou"] = str(data / "jaychou_lyrics.txt")
    for split in ("valid", "test"):  # 400 lines (about 8,500 words) each, so that an evaluation takes seconds
        lines = (data / "ptb" / f"ptb.{split}.txt").read_text(encoding="utf-8").splitlines(keepends=True)[:400]
        (folder / f"ptb_{split}.txt").write_text("".join(lines), encoding="utf-8")
        paths[f"ptb_{split}"] = str(folder / f"ptb_{split}.txt")
    return paths


# ------------------------------------------------------------------------------------------------- jobs


def tag_flags(settings: dict[str, Any], drop: tuple[str, ...] = ()) -> list[str]:
    """`rnnlm tag train` flags from a bench/tagging.py SETTINGS entry."""
    flags = []
    for key, value in settings.items():
        if key in drop:
            continue
        flags.append("--" + key.replace("_", "-"))
        flags.append(str(value).lower() if isinstance(value, bool) else str(value))
    return flags


def make_jobs(p: dict[str, str], tag_settings: dict[str, dict], char_lm_settings: dict[str, dict]) -> list[Job]:
    t1 = ["--threads", "1"]
    quiet = ["--no-progress"]
    upos = tag_flags({**tag_settings["upos"], "ensemble": 2, "jobs": 2})
    ner = tag_flags({**tag_settings["ner"], "ensemble": 2, "jobs": 2})
    ner_lm = tag_flags({**tag_settings["ner"], **char_lm_settings["ner"], "ensemble": 2, "jobs": 2})
    return [
        Job(
            "d2l-bench",
            "bench/d2l_recipe.py: the d2l recipe through the Python API, both samplers, 8 epochs",
            [Step(["bench/d2l_recipe.py", "--epochs", "8", "--seeds", "0", "--out", "d2l"], "jsonl")],
            runs=["d2l"],
        ),
        Job(
            "d2l-cli",
            "rnnlm train --preset d2l (6 epochs), eval, greedy and sampled generate",
            [
                Step(
                    ["rnnlm", "train", "--preset", "d2l", "--epochs", "6", "--pred-period", "3", "--out", "run"]
                    + t1
                    + quiet,
                    "log",
                    "train",
                ),
                Step(["rnnlm", "eval", "run"], "json", "eval"),
                Step(
                    ["rnnlm", "generate", "run", "--prefix", "分开", "--length", "40", "--temperature", "0"],
                    "text",
                    "generate greedy",
                ),
                Step(
                    ["rnnlm", "generate", "run", "--prefix", "不分开", "--length", "40", "--seed", "0"],
                    "text",
                    "generate seed 0",
                ),
            ],
            runs=["run"],
        ),
        Job(
            "quality",
            "bench/quality.py, char-cpu on tinyshakespeare, --max-steps 60 instead of the 300 s budget (the figure: "
            "the whole validation text); eval and dynamic eval of a 6k-char text; generate --seed 0, top-k/top-p",
            [
                Step(
                    [
                        "bench/quality.py",
                        "--set",
                        "max_steps=60",
                        "--set",
                        "time_budget=None",
                        "--set",
                        "threads=1",
                        "--dynamic-lr",
                        "0",
                        "--out",
                        "q",
                    ],
                    "log",
                    "bench/quality.py",
                ),
                Step(["rnnlm", "eval", "q", p["small"], "--dynamic-lr", "0.05"], "json", "eval + dynamic (6k chars)"),
                Step(["rnnlm", "generate", "q", "--seed", "0", "--length", "120"], "text", "generate seed 0"),
                Step(
                    [
                        "rnnlm",
                        "generate",
                        "q",
                        "--seed",
                        "1",
                        "--length",
                        "60",
                        "--top-k",
                        "5",
                        "--top-p",
                        "0.9",
                        "--temperature",
                        "0.8",
                        "--prefix",
                        "ROMEO:",
                        "--num-samples",
                        "2",
                    ],
                    "text",
                    "generate top-k top-p x2",
                ),
            ],
            runs=["q"],
            info_keys={"quality.json": ("config",)},  # the run's config again (compared as config.json is)
        ),
        Job(
            "ptb-word",
            "word-level LSTM 1 x 128 on ptb (validation and test: their first 400 lines): 30 steps, resumed to 45; "
            "eval valid/test (and with the scratch engine), beam search",
            [
                Step(
                    [
                        "rnnlm",
                        "train",
                        "--corpus",
                        "ptb",
                        "--val-paths",
                        p["ptb_valid"],
                        "--test-paths",
                        p["ptb_test"],
                        "--preset",
                        "plain",
                        "--layers",
                        "1",
                        "--hidden",
                        "128",
                        "--embed",
                        "128",
                        "--max-steps",
                        "30",
                        "--log-every",
                        "15",
                        "--pred-period",
                        "0",
                        "--out",
                        "ptb",
                    ]
                    + t1
                    + quiet,
                    "log",
                    "train",
                ),
                Step(["rnnlm", "train", "--resume", "ptb", "--max-steps", "45"] + t1 + quiet, "log", "resume"),
                Step(["rnnlm", "eval", "ptb"], "json", "eval valid"),
                Step(["rnnlm", "eval", "ptb", "--split", "test", "--checkpoint", "last"], "json", "eval test last"),
                Step(["rnnlm", "eval", "ptb", "--impl", "scratch", "--eval-batch-size", "4"], "json", "eval scratch"),
                Step(
                    ["rnnlm", "generate", "ptb", "--prefix", "the company said", "--length", "12", "--beam", "3"],
                    "text",
                    "generate beam",
                ),
                Step(["rnnlm", "generate", "ptb", "--length", "20", "--seed", "0"], "text", "generate seed 0"),
            ],
            runs=["ptb"],
        ),
        Job(
            "tag-upos",
            "bench/tagging.py SETTINGS['upos'] (XPOS aux head, 2 layers, cosine) on 300 EWT sentences, "
            "ensemble 2 side by side, --max-steps 14; tag eval, tag predict",
            [
                Step(
                    [
                        "rnnlm",
                        "tag",
                        "train",
                        p["upos_train"],
                        "--dev",
                        p["upos_dev"],
                        *upos,
                        "--max-steps",
                        "14",
                        "--out",
                        "upos",
                    ]
                    + t1
                    + quiet,
                    "log",
                    "tag train",
                ),
                Step(["rnnlm", "tag", "eval", "upos", p["upos_test"]], "json", "tag eval"),
                Step(["rnnlm", "tag", "predict", "upos", p["raw"]], "text", "tag predict"),
                Step(
                    ["rnnlm", "tag", "predict", "upos", p["tokenized"], "--tokenized", "--json"],
                    "jsonl",
                    "tag predict --json",
                ),
            ],
            runs=["upos"],
        ),
        Job(
            "tag-ner",
            "bench/tagging.py SETTINGS['ner'] (CRF, BIOES) on 300 CoNLL-2003 sentences, ensemble 2 side by side, "
            "--max-steps 25; tag eval (entity F1), tag predict",
            [
                Step(
                    [
                        "rnnlm",
                        "tag",
                        "train",
                        p["ner_train"],
                        "--dev",
                        p["ner_dev"],
                        *ner,
                        "--max-steps",
                        "25",
                        "--out",
                        "ner",
                    ]
                    + t1
                    + quiet,
                    "log",
                    "tag train",
                ),
                Step(["rnnlm", "tag", "eval", "ner", p["ner_test"]], "json", "tag eval"),
                Step(["rnnlm", "tag", "predict", "ner", p["raw"], "--json"], "jsonl", "tag predict --json"),
                Step(["rnnlm", "tag", "predict", "ner", p["tokenized"], "--tokenized"], "text", "tag predict"),
            ],
            runs=["ner"],
        ),
        Job(
            "tag-ner-charlm",
            "bench/tagging_lm.py ner (two tiny char LMs, 1 x 64, 25 steps, side by side), then the NER settings "
            "with --char-lm (document context, bench/tagging.py CHAR_LM_SETTINGS), ensemble 2, --max-steps 12",
            [
                Step(
                    [
                        "bench/tagging_lm.py",
                        "ner",
                        "--out",
                        "charlm",
                        "--budget",
                        "100000",
                        "--threads",
                        "1",
                        "--set",
                        "max_steps=25",
                        "--set",
                        "hidden=64",
                        "--set",
                        "layers=1",
                        "--set",
                        "embed=32",
                    ],
                    "none",
                    "bench/tagging_lm.py",
                ),
                Step(
                    [
                        "rnnlm",
                        "tag",
                        "train",
                        p["ner_train"],
                        "--dev",
                        p["ner_dev"],
                        *ner_lm,
                        "--char-lm",
                        "charlm",
                        "--max-steps",
                        "12",
                        "--out",
                        "nerlm",
                    ]
                    + t1
                    + quiet,
                    "log",
                    "tag train --char-lm",
                ),
                Step(["rnnlm", "tag", "eval", "nerlm", p["ner_test"]], "json", "tag eval"),
                Step(["rnnlm", "tag", "predict", "nerlm", p["raw"], "--json"], "jsonl", "tag predict --json"),
            ],
            runs=["charlm", "nerlm"],
        ),
        Job(
            "frames-bench",
            "bench/frames.py (Japanese vowels, default recipe) with --set epochs=4 --set ensemble=2, seed 0",
            [Step(["bench/frames.py", "--seeds", "0", "--set", "epochs=4", "--set", "ensemble=2"], "table")],
        ),
        Job(
            "frames-cli",
            "rnnlm frames train (Japanese vowels, default recipe: GRU + FCN with batch norm, refit) 4 epochs, "
            "ensemble 2, --test; frames eval, frames predict",
            [
                Step(
                    [
                        "rnnlm",
                        "frames",
                        "train",
                        p["jv_train"],
                        "--test",
                        p["jv_test"],
                        "--epochs",
                        "4",
                        "--ensemble",
                        "2",
                        "--out",
                        "fr",
                    ]
                    + t1
                    + quiet,
                    "log",
                    "frames train",
                ),
                Step(
                    ["rnnlm", "frames", "eval", "fr", p["jv_test"], "--json", "--out", "fr_eval/test"],
                    "json",
                    "frames eval --json",
                ),
                Step(["rnnlm", "frames", "eval", "fr", p["jv_test"], "--out", "fr_eval/table"], "text", "frames eval"),
                Step(["rnnlm", "frames", "predict", "fr", p["jv_test"], "--json"], "jsonl", "frames predict --json"),
                Step(["rnnlm", "frames", "predict", "fr", p["jv_test"]], "text", "frames predict"),
            ],
            runs=["fr", "fr_eval"],
        ),
        Job(
            "cli-info-plot",
            "rnnlm info (text and --json) and plot of an LM run, plot of a tagger run, info --corpora, two error "
            "paths, beam search",
            [
                Step(
                    [
                        "rnnlm",
                        "train",
                        "--corpus",
                        "timemachine",
                        "--preset",
                        "plain",
                        "--layers",
                        "1",
                        "--hidden",
                        "32",
                        "--embed",
                        "16",
                        "--max-steps",
                        "6",
                        "--log-every",
                        "3",
                        "--pred-period",
                        "0",
                        "--out",
                        "lm",
                    ]
                    + t1
                    + quiet,
                    "log",
                    "train tiny LM",
                ),
                Step(
                    [
                        "rnnlm",
                        "tag",
                        "train",
                        p["ner_train"],
                        "--dev",
                        p["ner_dev"],
                        "--hidden",
                        "16",
                        "--word-dim",
                        "16",
                        "--char-filters",
                        "8",
                        "--max-steps",
                        "4",
                        "--log-every",
                        "2",
                        "--out",
                        "tg",
                    ]
                    + t1
                    + quiet,
                    "log",
                    "tag train tiny",
                ),
                Step(
                    [
                        "rnnlm",
                        "frames",
                        "train",
                        p["jv_train"],
                        "--hidden",
                        "8",
                        "--proj",
                        "8",
                        "--fcn",
                        "8",
                        "--epochs",
                        "2",
                        "--ensemble",
                        "1",
                        "--out",
                        "fm",
                    ]
                    + t1
                    + quiet,
                    "log",
                    "frames train tiny",
                ),
                Step(["rnnlm", "info", "--corpora"], "log", "info --corpora"),
                Step(["rnnlm", "info", "lm"], "log", "info lm"),
                Step(["rnnlm", "info", "lm", "--json"], "log", "info lm --json"),
                Step(["rnnlm", "plot", "lm", "--out", "plots/lm.png"], "log", "plot lm"),
                Step(["rnnlm", "plot", "tg", "--out", "plots/tg.png"], "log", "plot tagger"),
                Step(["rnnlm", "eval", "no-such-run"], "none", "eval of a missing run", ok=False),
                Step(["rnnlm", "train", "--hidden", "0", "--out", "bad"], "none", "train --hidden 0", ok=False),
                Step(
                    ["rnnlm", "generate", "lm", "--beam", "2", "--num-samples", "1", "--length", "5"],
                    "text",
                    "generate beam",
                ),
            ],
            runs=["lm", "tg", "fm", "plots"],
        ),
        Job(
            "cross-read",
            "runs made by the OLD tree's code (the jobs above), read by each tree: eval, generate, tag eval and "
            "predict, frames eval and predict, and a resume of a copy of the ptb run to 55 steps",
            [
                Step(["rnnlm", "eval", f"{OLD_RUNS}/quality/q", p["small"]], "json", "eval quality run"),
                Step(
                    ["rnnlm", "generate", f"{OLD_RUNS}/quality/q", "--seed", "0", "--length", "80"],
                    "text",
                    "generate quality run",
                ),
                Step(["rnnlm", "tag", "eval", f"{OLD_RUNS}/tag-ner/ner", p["ner_test"]], "json", "tag eval ner run"),
                Step(
                    ["rnnlm", "tag", "predict", f"{OLD_RUNS}/tag-upos/upos", p["raw"], "--json"],
                    "jsonl",
                    "tag predict upos run",
                ),
                Step(
                    ["rnnlm", "tag", "predict", f"{OLD_RUNS}/tag-ner-charlm/nerlm", p["raw"], "--json"],
                    "jsonl",
                    "tag predict char-LM run",
                ),
                Step(
                    [
                        "rnnlm",
                        "frames",
                        "eval",
                        f"{OLD_RUNS}/frames-cli/fr",
                        p["jv_test"],
                        "--json",
                        "--out",
                        "fr_eval/test",
                    ],
                    "json",
                    "frames eval",
                ),
                Step(
                    ["rnnlm", "frames", "predict", f"{OLD_RUNS}/frames-cli/fr", p["jv_test"], "--json"],
                    "jsonl",
                    "frames predict",
                ),
                Step(
                    ["python", "-c", f"import shutil; shutil.copytree('{OLD_RUNS}/ptb-word/ptb', 'ptb')"],
                    "none",
                    "copy the old ptb run",
                ),
                Step(["rnnlm", "train", "--resume", "ptb", "--max-steps", "55"] + t1 + quiet, "log", "resume it"),
            ],
            runs=["ptb"],
            needs=("quality", "tag-ner", "tag-upos", "tag-ner-charlm", "frames-cli", "ptb-word"),
        ),
        # What issue 21 changes on purpose: each runs in both trees to show the difference.
        Job(
            "intended-info-plot",
            "rnnlm info and plot of a tagger and a frames run (issue 21: they read all three kinds of run)",
            [
                Step(["rnnlm", "info", f"{OLD_RUNS}/cli-info-plot/tg"], "log", "info tagger", ok=False),
                Step(["rnnlm", "info", f"{OLD_RUNS}/cli-info-plot/fm"], "log", "info frames", ok=False),
                Step(
                    ["rnnlm", "plot", f"{OLD_RUNS}/cli-info-plot/fm", "--out", "fm.png"], "log", "plot frames", ok=False
                ),
            ],
            intended="issue 21: `rnnlm info` and `rnnlm plot` read tagger and frames runs (before: exit 2)",
            needs=("cli-info-plot",),
        ),
        Job(
            "intended-ema-buffers",
            "frames train with --ema 0.9: the FCN's batch-norm statistics are now averaged too",
            [
                Step(
                    [
                        "rnnlm",
                        "frames",
                        "train",
                        p["jv_train"],
                        "--test",
                        p["jv_test"],
                        "--epochs",
                        "3",
                        "--ensemble",
                        "1",
                        "--no-refit",
                        "--ema",
                        "0.9",
                        "--out",
                        "ema",
                    ]
                    + t1
                    + quiet,
                    "log",
                    "frames train --ema",
                ),
                Step(
                    ["rnnlm", "frames", "eval", "ema", p["jv_test"], "--json", "--out", "ema_eval/test"],
                    "json",
                    "frames eval",
                ),
            ],
            runs=["ema"],
            intended="EMA averages buffers (0f7fc57): batch-norm running statistics follow the averaged weights",
            same_keys=r"^(step|epoch|lr|train_)",  # training itself is unchanged: only the averaged model differs
        ),
        Job(
            "intended-refused",
            "tagger settings that were silently ignored and are now refused (9f379fa), --num-samples > --beam",
            [
                Step(
                    [
                        "rnnlm",
                        "tag",
                        "train",
                        p["ner_train"],
                        "--char-lm-context",
                        "document",
                        "--max-steps",
                        "1",
                        "--hidden",
                        "8",
                        "--out",
                        "r1",
                    ]
                    + t1
                    + quiet,
                    "none",
                    "--char-lm-context without --char-lm",
                    ok=False,
                ),
                Step(
                    [
                        "rnnlm",
                        "tag",
                        "train",
                        p["ner_train"],
                        "--impl",
                        "cpu",
                        "--max-steps",
                        "1",
                        "--hidden",
                        "8",
                        "--out",
                        "r2",
                    ]
                    + t1
                    + quiet,
                    "none",
                    "tagger --impl cpu",
                    ok=False,
                ),
                Step(
                    [
                        "rnnlm",
                        "tag",
                        "train",
                        p["ner_train"],
                        "--aux-weight",
                        "0.5",
                        "--max-steps",
                        "1",
                        "--hidden",
                        "8",
                        "--out",
                        "r3",
                    ]
                    + t1
                    + quiet,
                    "none",
                    "--aux-weight without --aux-column",
                    ok=False,
                ),
                Step(
                    [
                        "rnnlm",
                        "frames",
                        "train",
                        p["jv_train"],
                        "--cuda-graph",
                        "on",
                        "--epochs",
                        "1",
                        "--ensemble",
                        "1",
                        "--out",
                        "r4",
                    ]
                    + t1
                    + quiet,
                    "none",
                    "frames --cuda-graph on",
                    ok=False,
                ),
                Step(
                    [
                        "rnnlm",
                        "train",
                        "--corpus",
                        "timemachine",
                        "--preset",
                        "plain",
                        "--layers",
                        "1",
                        "--hidden",
                        "16",
                        "--max-steps",
                        "2",
                        "--pred-period",
                        "0",
                        "--out",
                        "r5",
                    ]
                    + t1
                    + quiet,
                    "none",
                    "tiny LM for generate",
                ),
                Step(
                    ["rnnlm", "generate", "r5", "--beam", "2", "--num-samples", "3", "--length", "5"],
                    "none",
                    "generate --num-samples 3 --beam 2",
                    ok=False,
                ),
            ],
            intended="settings that were ignored are refused with exit 2 (9f379fa, 5188260, dba152b)",
        ),
        Job(
            "intended-oserror",
            "an OSError (an unwritable --out) is a user error, exit 2, not a traceback (dba152b)",
            [
                Step(
                    [
                        "rnnlm",
                        "tag",
                        "train",
                        p["ner_train"],
                        "--max-steps",
                        "1",
                        "--hidden",
                        "8",
                        "--out",
                        "/proc/parity-x",
                    ]
                    + t1
                    + quiet,
                    "none",
                    "tag train --out /proc/x",
                    ok=False,
                ),
            ],
            intended="OSError mapped to a user error naming its path, exit 2 (dba152b)",
        ),
    ]


# ------------------------------------------------------------------------------------------- running


def tree_commit(tree: Path) -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(tree), "status", "--porcelain", "--", "src", "bench"], capture_output=True, text=True
        ).stdout.strip()
        return head + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


SHIM = "import sys\nfrom rnnlm.cli import main\nsys.argv[0] = 'rnnlm'\nraise SystemExit(main(sys.argv[1:]))\n"


def run_job(job: Job, tree: Path, folder: Path, python: str, data: str, timeout: float) -> list[dict]:
    """Run a job's steps with one tree's code in `folder`; returns one record per step."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(tree / "src"),
        "RNNLM_DATA": data,
        "RNNLM_CACHE": str(folder.parent / "cache"),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
        "MPLBACKEND": "Agg",
        "COLUMNS": "100",
    }
    records = []
    for i, step in enumerate(job.steps):
        head, rest = step.argv[0], step.argv[1:]
        if head == "rnnlm":
            cmd = [python, "-c", SHIM, *rest]
        elif head.startswith("bench/"):
            cmd = [python, str(tree / head), *rest]
        else:
            cmd = [python, *rest]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, timeout=timeout)
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as e:
            rc, out, err = "timeout", e.stdout or b"", e.stderr or b""
        seconds = time.perf_counter() - start
        (folder / f"step{i}.stdout").write_bytes(out)
        (folder / f"step{i}.stderr").write_bytes(err)
        records.append(
            {
                "rc": rc,
                "seconds": round(seconds, 1),
                "stdout": out.decode("utf-8", "replace"),
                "stderr": err.decode("utf-8", "replace"),
            }
        )
    return records


# ------------------------------------------------------------------------------------------- comparing


@dataclass
class Diff:
    """What one comparison found: the same, within TOL, or different (with where and how)."""

    max_abs: float = 0.0
    exact: bool = True
    first: str = ""  # the first difference that counts, as a readable line
    count: int = 0
    known: set[str] = field(default_factory=set)  # known, intended format changes that were set aside

    def note(self, where: str, a: Any, b: Any, numeric: float | None = None) -> None:
        if numeric is not None:
            self.max_abs = max(self.max_abs, numeric)
            self.exact = False
            if numeric <= TOL:
                return
        self.count += 1
        if not self.first:
            self.first = f"{where}: old {short(a)} / new {short(b)}"

    def verdict(self) -> str:
        if self.count:
            return "differs"
        return "identical" if self.exact else "close"


def short(x: Any, n: int = 120) -> str:
    s = json.dumps(x, ensure_ascii=False) if not isinstance(x, str) else repr(x)
    return s if len(s) <= n else s[: n - 3] + "..."


def compare_values(a: Any, b: Any, where: str, d: Diff) -> None:
    """Walk two JSON values; numbers within TOL are close, timing keys are skipped."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if TIMING.search(str(k)):
                continue
            if k not in a or k not in b:
                d.note(f"{where}.{k}", a.get(k, "<absent>"), b.get(k, "<absent>"))
            else:
                compare_values(a[k], b[k], f"{where}.{k}", d)
    elif isinstance(a, list) and isinstance(b, list):
        # the trainer's state in a checkpoint is a list of [name, value] pairs: skip the timing ones
        if len(a) == 2 and isinstance(a[0], str) and TIMING.search(a[0]) and a[0] == (b[0] if b else None):
            return
        if len(a) != len(b):
            d.note(f"{where}[len]", len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            compare_values(x, y, f"{where}[{i}]", d)
    elif isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        if a != b:
            d.note(where, a, b)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)):
            return
        diff = abs(a - b)
        d.note(where, a, b, diff if math.isfinite(diff) else math.inf)
    elif a != b:
        d.note(where, a, b)


def parse_json_text(text: str, kind: str) -> Any:
    if kind == "json":
        return json.loads(text)
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") or line.startswith("["):
            rows.append(json.loads(line))
    return rows


def mask_log(text: str, roots: tuple[str, ...]) -> list[str]:
    for r in roots:
        text = text.replace(r, "<tree>")
    return [TIMING_TEXT.sub("<t>", line).rstrip() for line in text.splitlines()]


def mask_table(text: str) -> list[str]:
    """bench/frames.py's output without its timings: each table row less its last two cells (wall, CPU s)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---") and not line.startswith("| seed"):
            line = "|".join(line.split("|")[:-3])
        lines.append(TIMING_TEXT.sub("<t>", line).rstrip())
    return lines


def first_line_diff(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"line {i + 1}: old {short(x)} / new {short(y)}"
    return f"lines: old {len(a)} / new {len(b)}"


def compare_tensors(old: Path, new: Path, where: str, d: Diff) -> None:
    from safetensors import safe_open

    with safe_open(str(old), "pt") as fa, safe_open(str(new), "pt") as fb:
        ka, kb = set(fa.keys()), set(fb.keys())
        if ka != kb:
            d.note(f"{where} tensors", sorted(ka - kb)[:6], sorted(kb - ka)[:6])
        for k in sorted(ka & kb):
            x, y = fa.get_tensor(k), fb.get_tensor(k)
            if x.shape != y.shape or x.dtype != y.dtype:
                d.note(f"{where}:{k} shape/dtype", f"{tuple(x.shape)} {x.dtype}", f"{tuple(y.shape)} {y.dtype}")
                continue
            if x.is_floating_point():
                if not bool((x == y).all()):
                    diff = float((x.double() - y.double()).abs().max())
                    d.note(f"{where}:{k}", float(x.flatten()[0]), float(y.flatten()[0]), diff)
            elif not bool((x == y).all()):
                d.note(f"{where}:{k}", x.flatten()[:4].tolist(), y.flatten()[:4].tolist())
            ma, mb = decode_meta(fa.metadata() or {}), decode_meta(fb.metadata() or {})
    set_aside_known(ma, mb, d)
    compare_values(ma, mb, f"{where} metadata", d)


# Entries that the new code adds to a checkpoint's trainer state on purpose: name -> why.
KNOWN_NEW_ENTRIES = {"buffers": "the EMA state's 'buffers' entry (0f7fc57: EMA averages buffers too)"}


def set_aside_known(a: Any, b: Any, d: Diff) -> None:
    """Remove from `b` the [name, value] pairs of KNOWN_NEW_ENTRIES that `a` lacks (recording them in d.known)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in set(a) & set(b):
            set_aside_known(a[k], b[k], d)
    elif isinstance(a, list) and isinstance(b, list):

        def names(x: list) -> list:
            return [e[0] if isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) else None for e in x]

        na = names(a)
        for i, name in reversed(list(enumerate(names(b)))):  # from the end: earlier indices stay valid
            if name in KNOWN_NEW_ENTRIES and name not in na:
                d.known.add(KNOWN_NEW_ENTRIES[name])
                del b[i]
        for x, y in zip(a, b, strict=False):
            set_aside_known(x, y, d)


def decode_meta(meta: dict[str, str]) -> dict[str, Any]:
    out = {}
    for k, v in meta.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def compare_run_dir(
    old: Path,
    new: Path,
    rel: str,
    info_files: tuple[str, ...],
    info_keys: dict[str, tuple[str, ...]],
    same_keys: str = "",
) -> list[dict]:
    """Every file of a run folder: metrics and JSON by value, checkpoints by tensor, the rest by presence."""
    rows = []

    def files(root: Path) -> dict[str, Path]:
        """Files by their path in the run, a folder's Unix-time suffix (bench/d2l_recipe.py) made <time>."""
        found = root.rglob("*") if root.exists() else []
        return {STAMP.sub("-<time>", p.relative_to(root).as_posix()): p for p in found if p.is_file()}

    pa, pb = files(old), files(new)
    fa, fb = set(pa), set(pb)
    if not fa and not fb:
        return [{"what": f"{rel}/", "verdict": "differs", "detail": "no files in either tree"}]
    if fa != fb:
        rows.append(
            {
                "what": f"{rel}/ file list",
                "verdict": "info",
                "detail": f"only old: {sorted(fa - fb)[:8]}; only new: {sorted(fb - fa)[:8]}",
            }
        )
    groups: dict[str, Diff] = {}
    first_of: dict[str, str] = {}
    for name in sorted(fa & fb):
        a, b = pa[name], pb[name]
        base = Path(name).name
        if name.endswith(".safetensors"):
            kind = "checkpoints (tensors, metadata)"
        elif base == "metrics.jsonl":
            kind = "metrics.jsonl"
        elif base in info_files:
            kind = "info: " + base
        elif name.endswith(".json") or name.endswith(".jsonl"):
            kind = "other JSON (reports, vocab, tags)"
        elif name.endswith(".txt"):
            kind = "text files"
        else:
            continue  # PNGs, locks and the like: presence only (file list)
        d = groups.setdefault(kind, Diff())
        before = d.count
        try:
            if name.endswith(".safetensors"):
                compare_tensors(a, b, name, d)
            elif name.endswith(".jsonl"):
                ra = [json.loads(x) for x in a.read_text(encoding="utf-8").splitlines() if x.strip()]
                rb = [json.loads(x) for x in b.read_text(encoding="utf-8").splitlines() if x.strip()]
                compare_values(ra, rb, name, d)
                if same_keys and base == "metrics.jsonl":
                    sub = groups.setdefault(f"metrics.jsonl, keys {same_keys} only (must be the same)", Diff())

                    def keep(rows: list) -> list:
                        return [{k: v for k, v in r.items() if re.search(same_keys, k)} for r in rows]

                    compare_values(keep(ra), keep(rb), name, sub)
            elif name.endswith(".json"):
                ja, jb = json.loads(a.read_text(encoding="utf-8")), json.loads(b.read_text(encoding="utf-8"))
                for key in info_keys.get(base, ()):
                    sub = groups.setdefault(f"info: {base} {key}", Diff())
                    compare_values(ja.pop(key, None), jb.pop(key, None), f"{name}.{key}", sub)
                compare_values(ja, jb, name, d)
            elif a.read_bytes() != b.read_bytes():
                d.note(name, "bytes", "other bytes")
        except (ValueError, OSError) as e:
            d.note(name, "unreadable", str(e))
        if d.count > before and kind not in first_of:
            first_of[kind] = name
    for kind, d in groups.items():
        verdict = d.verdict()
        if kind.startswith("info: ") and verdict == "differs":
            verdict = "info"
        rows.append(
            {
                "what": f"{rel}/ {kind}",
                "verdict": verdict,
                "max_abs_diff": d.max_abs,
                "detail": d.first,
                "differences": d.count,
            }
        )
        if d.known:
            rows.append(
                {
                    "what": f"{rel}/ {kind}: known format change",
                    "verdict": "info",
                    "detail": "new, set aside: " + "; ".join(sorted(d.known)),
                }
            )
    return rows


def compare_job(job: Job, old: list[dict], new: list[dict], dirs: tuple[Path, Path], roots: tuple[str, ...]) -> list:
    rows = []
    for step, a, b in zip(job.steps, old, new, strict=True):
        label = step.label or " ".join(step.argv[:3])
        verdict = "identical" if a["rc"] == b["rc"] else "differs"
        if verdict == "identical" and step.ok and a["rc"] != 0:
            verdict = "failed"  # a step that should work failed in both trees: the job compared nothing
        rc = {"what": f"{label}: exit code", "verdict": verdict, "detail": f"old {a['rc']} / new {b['rc']}"}
        if a["rc"] != 0 or b["rc"] != 0:
            ea = a["stderr"].strip().splitlines()[-1:] or [""]
            eb = b["stderr"].strip().splitlines()[-1:] or [""]
            rc["detail"] += f"; old: {short(ea[0], 160)}; new: {short(eb[0], 160)}"
        rows.append(rc)
        if step.stdout == "none" or a["rc"] != 0 or b["rc"] != 0:
            continue
        if step.stdout in ("json", "jsonl"):
            d = Diff()
            try:
                compare_values(
                    parse_json_text(a["stdout"], step.stdout), parse_json_text(b["stdout"], step.stdout), "stdout", d
                )
            except ValueError as e:
                d.note("stdout", "JSON", f"unreadable: {e}")
            rows.append(
                {
                    "what": f"{label}: output",
                    "verdict": d.verdict(),
                    "max_abs_diff": d.max_abs,
                    "detail": d.first,
                    "differences": d.count,
                }
            )
        elif step.stdout == "table":
            la, lb = mask_table(a["stdout"]), mask_table(b["stdout"])
            rows.append(
                {
                    "what": f"{label}: output",
                    "verdict": "identical" if la == lb else "differs",
                    "detail": "" if la == lb else first_line_diff(la, lb),
                }
            )
        elif step.stdout == "text":
            same = a["stdout"] == b["stdout"]
            rows.append(
                {
                    "what": f"{label}: output",
                    "verdict": "identical" if same else "differs",
                    "detail": "" if same else first_line_diff(a["stdout"].splitlines(), b["stdout"].splitlines()),
                }
            )
        else:  # a log: timings masked, a difference is reported, not failed
            la, lb = mask_log(a["stdout"], roots), mask_log(b["stdout"], roots)
            rows.append(
                {
                    "what": f"{label}: log",
                    "verdict": "identical" if la == lb else "info",
                    "detail": "" if la == lb else first_line_diff(la, lb),
                }
            )
    for rel in job.runs:
        rows.extend(compare_run_dir(dirs[0] / rel, dirs[1] / rel, rel, job.info_files, job.info_keys, job.same_keys))
    return rows


def job_status(rows: list[dict], intended: str) -> str:
    if any(r["verdict"] == "failed" for r in rows):
        return "error: a step failed in both trees"
    if any(r["verdict"] == "differs" and "(must be the same)" in r["what"] for r in rows):
        return "differs beyond the intended change"
    if any(r["verdict"] == "differs" for r in rows):
        return "intended" if intended else "differs"
    if intended:
        return "no difference seen (intended change not exercised)"
    return "same"


# ------------------------------------------------------------------------------------------- main


def read_bench_settings(tree: Path, python: str, data: str) -> dict:
    """bench/tagging.py's SETTINGS and CHAR_LM_SETTINGS as the tree defines them (absent: empty)."""
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('bench_tagging', {str(tree / 'bench/tagging.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(json.dumps({'SETTINGS': m.SETTINGS, 'CHAR_LM_SETTINGS': getattr(m, 'CHAR_LM_SETTINGS', None)}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "RNNLM_DATA": data, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def describe_machine() -> dict:
    """bench/machine.py's description, with the instruction sets and the platform that parity compares across."""
    _, flags = machine.cpu()
    return {
        **machine.describe(),
        "amx_bf16": "amx_bf16" in flags,
        "avx2": "avx2" in flags,
        "platform": platform.platform(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="source tree before (a checkout with src/rnnlm)")
    p.add_argument("--new", required=True, help="source tree after")
    p.add_argument("--out", help="JSON file for the whole comparison (default: bench/results/parity_<date>.json)")
    p.add_argument("--data", default=os.environ.get("RNNLM_DATA", "/work/shared/data"), help="the shared data folder")
    p.add_argument("--work", help="folder for the runs (default: a new folder under /tmp, kept for inspection)")
    p.add_argument("--only", nargs="+", metavar="JOB", help="run only these jobs (names or prefixes)")
    p.add_argument("--list", action="store_true", help="list the jobs and exit")
    p.add_argument("--python", default=sys.executable, help="interpreter for both trees (default: this one)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per step (default: 600)")
    p.add_argument(
        "--no-recheck",
        action="store_true",
        help="do not run a differing job again with the old tree to test its determinism",
    )
    args = p.parse_args()

    old, new = Path(args.old).resolve(), Path(args.new).resolve()
    for tree in (old, new):
        if not (tree / "src" / "rnnlm" / "cli.py").exists():
            p.error(f"{tree} holds no src/rnnlm/cli.py: give the root of an rnnlm checkout")
    date = datetime.date.today().strftime("%Y%m%d")
    out = Path(args.out or f"bench/results/parity_{date}.json")
    work = Path(args.work or f"/tmp/rnnlm-parity-{date}-{os.getpid()}").resolve()
    work.mkdir(parents=True, exist_ok=True)

    bench = {name: read_bench_settings(tree, args.python, args.data) for name, tree in (("old", old), ("new", new))}
    inputs = make_inputs(Path(args.data), work / "inputs")
    # The jobs take the benchmark settings from the new tree; a difference from the old tree's is reported.
    jobs = make_jobs(inputs, bench["new"]["SETTINGS"], bench["new"]["CHAR_LM_SETTINGS"] or {"ner": {}, "upos": {}})
    if args.list:
        for job in jobs:
            print(f"{job.name:22s} {job.about}")
        return
    if args.only:
        wanted = {j.name for j in jobs if any(j.name.startswith(o) for o in args.only)}
        wanted |= {n for j in jobs if j.name in wanted for n in j.needs}  # the runs they read
        jobs = [j for j in jobs if j.name in wanted]

    report: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": describe_machine(),
        "old": {"path": str(old), "commit": tree_commit(old)},
        "new": {"path": str(new), "commit": tree_commit(new)},
        "work": str(work),
        "tolerance": TOL,
        "bench_settings": {"same": bench["old"] == bench["new"], "old": bench["old"], "new": bench["new"]},
        "jobs": [],
    }
    print(
        f"old {old} ({report['old']['commit']}) | new {new} ({report['new']['commit']}) | work {work}", file=sys.stderr
    )
    if bench["old"] != bench["new"]:
        print("note: bench/tagging.py settings differ between the trees; the jobs use the new tree's", file=sys.stderr)
    roots = (str(old), str(new), str(work))
    total = time.perf_counter()
    for job in jobs:
        dirs = (work / "old" / job.name, work / "new" / job.name)
        t0 = time.perf_counter()
        ra = run_job(job, old, dirs[0], args.python, args.data, args.timeout)
        rb = run_job(job, new, dirs[1], args.python, args.data, args.timeout)
        rows = compare_job(job, ra, rb, dirs, roots)
        status = job_status(rows, job.intended)
        recheck = None
        if status == "differs" and not args.no_recheck:
            again = work / "old-again" / job.name
            rc = run_job(job, old, again, args.python, args.data, args.timeout)
            self_rows = compare_job(job, ra, rc, (dirs[0], again), roots)
            recheck = (
                "old tree reproduces itself"
                if job_status(self_rows, "") == "same"
                else (
                    "old tree does NOT reproduce itself: "
                    + next(f"{r['what']}: {r['detail']}" for r in self_rows if r["verdict"] == "differs")
                )
            )
        print(
            f"{job.name}: {status} ({time.perf_counter() - t0:.0f} s)" + (f"; {recheck}" if recheck else ""),
            file=sys.stderr,
            flush=True,
        )
        report["jobs"].append(
            {
                "job": job.name,
                "about": job.about,
                "intended": job.intended or None,
                "status": status,
                "recheck": recheck,
                "steps": [
                    {"argv": s.argv, "rc": [a["rc"], b["rc"]], "seconds": [a["seconds"], b["seconds"]]}
                    for s, a, b in zip(job.steps, ra, rb, strict=True)
                ],
                "comparisons": rows,
            }
        )
    report["wall_seconds"] = round(time.perf_counter() - total)
    report["summary"] = {j["job"]: j["status"] for j in report["jobs"]}

    print()
    print("| job | compared | result |")
    print("| --- | --- | --- |")
    for j in report["jobs"]:
        for r in j["comparisons"]:
            v = r["verdict"]
            if v == "close":
                v = f"close (max abs diff {r['max_abs_diff']:.2g})"
            elif v == "differs":
                v = f"differs{' (intended)' if j['intended'] else ''}: {r['detail']}"
                if r.get("max_abs_diff"):
                    v += f" (max abs diff {r['max_abs_diff']:.3g})"
            elif v == "failed":
                v = f"FAILED in both trees: {r['detail']}"
            elif v == "info":
                v = f"info (not a result): {r['detail']}"
            elif r["what"].endswith("exit code"):
                v = f"identical ({r['detail']})" if r["detail"] != "old 0 / new 0" else "identical (0)"
            print(f"| {j['job']} | {r['what']} | {v.replace('|', '/')} |")
    print()
    for j in report["jobs"]:
        print(
            f"{j['job']}: {j['status']}"
            + (f" ({j['intended']})" if j["intended"] else "")
            + (f"; {j['recheck']}" if j["recheck"] else "")
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\n{out} | runs kept in {work} | {report['wall_seconds']} s")


if __name__ == "__main__":
    main()
