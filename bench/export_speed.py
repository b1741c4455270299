"""Batch-1 speed of an exported model in onnxruntime against the same model in PyTorch, for each use.

    python bench/export_speed.py [--repeats 200] [--out bench/results/export_speed.json]

Three calls a user makes one at a time:
- language model: one generation step, (1, 1) token id and the state of the char-cpu recipe's 2 x 448 LSTM
  (vocabulary 103, as the quick start's);
- tagger: one sentence of 20 words through the default BiLSTM-CRF (emissions; Viterbi is not timed);
- frame model: one sequence of 30 frames of 12 features through the default frame classifier (bidirectional GRU
  64, convolutional branch of 128 channels), as Japanese Vowels has.

Each is timed three ways, one thread each: ``rnnlm`` (the model as rnnlm runs it, its engine ``auto``, float32
matmuls), ``torch graph`` (the exported graph, run eagerly by PyTorch: torch.nn.LSTM and kin) and ``onnxruntime``
(the .onnx file, CPU provider). The weights are random: the speed does not depend on them. Times are the median
of ``--repeats`` calls after 20 warm-up calls, the three timed in turn within each round, in thread CPU time
(and wall time beside it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

import machine  # bench/machine.py
from rnnlm.core.vocab import Vocab
from rnnlm.frames import export as frames_export
from rnnlm.frames.config import FramesRunConfig
from rnnlm.frames.model import FrameRNN
from rnnlm.lm import export as lm_export
from rnnlm.lm.config import RunConfig
from rnnlm.lm.model import RNNLM
from rnnlm.tagging import export as tag_export
from rnnlm.tagging.config import TagRunConfig
from rnnlm.tagging.encoding import TagEncoder
from rnnlm.tagging.model import Tagger
from rnnlm.tagging.schemes import TagSet


def median_ms(fns: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median milliseconds per call of each function: CPU time of the calling thread (``time.thread_time``), which
    a busy shared machine's preemption does not inflate as it does wall time, and wall time beside it. With one
    thread each, torch and onnxruntime both compute in the calling thread. The functions are timed in turn within
    every round, so that a change of load falls on all of them alike."""
    for fn in fns.values():
        for _ in range(20):
            fn()
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    wall: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t, c = time.perf_counter(), time.thread_time()
            fn()
            cpu[name].append(time.thread_time() - c)
            wall[name].append(time.perf_counter() - t)
    out = {name: statistics.median(ts) * 1e3 for name, ts in cpu.items()}
    out |= {name.replace("_ms", "_wall_ms"): statistics.median(ts) * 1e3 for name, ts in wall.items()}
    return out


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def lm_case(tmp: Path):
    cfg = RunConfig()
    cfg.model = dataclasses.replace(cfg.model, layers=2, hidden=448, embed=128, matmul_dtype="float32")
    vocab = Vocab([chr(c) for c in range(32, 135)], "char")
    model = RNNLM(cfg.model, len(vocab)).eval()
    path = lm_export.export_model(model, vocab, cfg, tmp / "lm.onnx")
    graph = lm_export.step_module(model)
    ids, *state = lm_export.example_inputs(model, batch=1, time=1)
    feeds = {"ids": ids.numpy(), "h": state[0].numpy(), "c": state[1].numpy()}
    return model, (ids, tuple(state)), graph, (ids, *state), session(path), feeds


def tagger_case(tmp: Path):
    cfg = TagRunConfig()
    cfg.model = dataclasses.replace(cfg.model, matmul_dtype="float32")
    words = Vocab(["<unk>", "<eos>", *[f"w{i}" for i in range(20000)]], "word", unk="<unk>")
    chars = Vocab(["<unk>", *[chr(c) for c in range(33, 127)]], "char", unk="<unk>")
    tags = TagSet.build([["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]])
    enc = TagEncoder(words, chars, tags, True, True)
    model = Tagger(cfg.model, len(words), len(chars) + 1, len(tags)).eval()
    path = tag_export.export_model(model, enc, cfg, None, tmp / "tagger.onnx")
    sentence = [[f"w{i * 37 % 20000}" for i in range(20)]]
    meta = tag_export.metadata(model, enc, cfg, None, {})
    feeds = tag_export.prepare(meta, sentence)
    args = tuple(torch.from_numpy(feeds[k]) for k in ("words", "chars", "lengths"))
    return model, args, tag_export.TagScores(model), args, session(path), feeds


def frames_case(tmp: Path):
    cfg = FramesRunConfig()
    model = FrameRNN(cfg.model, 12, 9, "classify", torch.zeros(12), torch.ones(12)).eval()
    info = {"task": "classify", "num_features": 12, "classes": [str(i) for i in range(9)]}
    path = frames_export.export_model(model, info, tmp / "frames.onnx")
    x, lengths = torch.randn(1, 30, 12), torch.tensor([30])
    feeds = {"frames": x.numpy(), "lengths": lengths.numpy()}
    return model, (x, lengths), frames_export.FrameProbs(model), (x, lengths), session(path), feeds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--out", default="bench/results/export_speed.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        for name, case in (("LM step", lm_case), ("tagged sentence", tagger_case), ("frame sequence", frames_case)):
            model, model_args, graph, graph_args, sess, feeds = case(Path(d))
            got = sess.run(None, feeds)[0]
            want = graph(*graph_args)
            want = want[0] if isinstance(want, tuple) else want
            assert np.allclose(got, want.numpy(), atol=1e-4), name  # the same function is timed
            fns = {
                "rnnlm_ms": lambda m=model, a=model_args: m(*a),
                "torch_graph_ms": lambda g=graph, a=graph_args: g(*a),
                "onnxruntime_ms": lambda s=sess, f=feeds: s.run(None, f),
            }
            row: dict[str, Any] = {"case": name, **median_ms(fns, args.repeats)}
            row["speedup_vs_rnnlm"] = row["rnnlm_ms"] / row["onnxruntime_ms"]
            rows.append(row)
            print(
                f"{name:16s} rnnlm {row['rnnlm_ms']:.3f} ms | torch graph {row['torch_graph_ms']:.3f} ms | "
                f"onnxruntime {row['onnxruntime_ms']:.3f} ms | x{row['speedup_vs_rnnlm']:.2f}"
            )
    result = {
        "machine": machine.describe(),
        "onnxruntime": ort.__version__,
        "threads": 1,
        "repeats": args.repeats,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
