"""Prediction speed of a trained tagger: sentences per second one at a time and batched, fast paths off and on.

    python bench/tagging_predict.py RUN_DIR TEST_FILE [--single 200] [--batched 1000] [--repeats 3] [--json OUT]

Both ways are timed in this one process, alternating (reference, fast, reference, fast, ...), and the median of
--repeats passes is reported, so that a busy machine slows both alike and their ratio stays fair. "reference"
is tagging with the fast paths off (``SequenceTagger.fast_paths(False)``: the batched engines alone, what
`rnnlm tag predict` ran before them); "fast" is the default. One at a time: each of the first --single
sentences of TEST_FILE alone, ``tagger.tag([s], batch_size=1)`` (no document context: each sentence is its own
document). Batched: the first --batched sentences in one call with their document ids, as ``evaluate`` reads
them, batches of the run's eval batch size. The tags of both ways are compared (``same_tags``, ``tags_differing``).
Prints one JSON line with the machine, the threads, the load average at the start and the end, and besides the
wall-clock rates the rates per CPU second of this process (``per_cpu_second``), which a busy machine disturbs less.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

import machine  # bench/machine.py
from rnnlm.tagging import api as tagging
from rnnlm.tagging.encoding import read_tagged


def differing(a: list[list[str]], b: list[list[str]]) -> int:
    return sum(x != y for s, t in zip(a, b, strict=True) for x, y in zip(s, t, strict=True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("test", help="a tagged file (the run's format) whose sentences are tagged")
    p.add_argument("--single", type=int, default=200, help="sentences tagged one at a time per pass")
    p.add_argument("--batched", type=int, default=1000, help="sentences tagged in one call per pass")
    p.add_argument("--repeats", type=int, default=3, help="timed passes of each way (median)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--json", help="also write the result line to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    tagger = tagging.load(args.run_dir)
    load_s = time.perf_counter() - start
    sents = read_tagged(args.test, "auto", tagger.config.data.column)
    single = [s.tokens for s in sents[: args.single]]
    batch, docs = [s.tokens for s in sents[: args.batched]], [s.doc for s in sents[: args.batched]]
    times: dict[str, dict[str, list[float]]] = {w: {"single": [], "batched": []} for w in ("reference", "fast")}
    cpu: dict[str, dict[str, list[float]]] = {w: {"single": [], "batched": []} for w in ("reference", "fast")}
    tags: dict[str, tuple[list, list]] = {}
    for way in ("reference", "fast"):  # warm-up, and the tags to compare
        tagger.fast_paths(way == "fast")
        tags[way] = ([tagger.tag([s], batch_size=1)[0] for s in single], tagger.tag(batch, docs=docs))
    for _ in range(args.repeats):
        for way in ("reference", "fast"):
            tagger.fast_paths(way == "fast")
            t0, c0 = time.perf_counter(), time.process_time()
            for s in single:
                tagger.tag([s], batch_size=1)
            t1, c1 = time.perf_counter(), time.process_time()
            tagger.tag(batch, docs=docs)
            t2, c2 = time.perf_counter(), time.process_time()
            times[way]["single"].append(t1 - t0)
            times[way]["batched"].append(t2 - t1)
            cpu[way]["single"].append(c1 - c0)
            cpu[way]["batched"].append(c2 - c1)
    rate = {
        way: {
            "single_sentences_per_s": len(single) / statistics.median(t["single"]),
            "batched_sentences_per_s": len(batch) / statistics.median(t["batched"]),
        }
        for way, t in times.items()
    }
    # per CPU second of this process (all its threads): what a busy machine's waiting leaves out
    per_cpu_s = {
        way: {
            "single_sentences_per_cpu_s": len(single) / statistics.median(t["single"]),
            "batched_sentences_per_cpu_s": len(batch) / statistics.median(t["batched"]),
        }
        for way, t in cpu.items()
    }
    result = {
        "run_dir": args.run_dir,
        "test": args.test,
        "machine": machine.kind(machine.describe()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average": [load_start, os.getloadavg()[0]],
        "load_seconds": load_s,
        "single_sentences": len(single),
        "batched_sentences": len(batch),
        "words": sum(map(len, batch)),
        **rate,
        "speedup_single": rate["fast"]["single_sentences_per_s"] / rate["reference"]["single_sentences_per_s"],
        "speedup_batched": rate["fast"]["batched_sentences_per_s"] / rate["reference"]["batched_sentences_per_s"],
        "same_tags": {
            "single": tags["reference"][0] == tags["fast"][0],
            "batched": tags["reference"][1] == tags["fast"][1],
        },
        # tokens whose tag differs between the two ways, of all tokens tagged
        "tags_differing": {
            "single": [differing(tags["reference"][0], tags["fast"][0]), sum(map(len, single))],
            "batched": [differing(tags["reference"][1], tags["fast"][1]), sum(map(len, batch))],
        },
        "per_cpu_second": per_cpu_s,
        "seconds": times,
        "cpu_seconds": cpu,
    }
    line = json.dumps(result)
    print(line)
    if args.json:
        Path(args.json).write_text(line + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
