"""The language model's commands: ``rnnlm train``, ``rnnlm eval`` and ``rnnlm generate``.

Their training flags are generated from the config dataclasses (lm/config.py), so every flag's name, default and
help text live next to the field they set. ``rnnlm`` (cli.py) mounts them beside the other uses' commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import ConfigError, RnnlmError
from rnnlm.core.flags import add_dataclass_flags, add_load_flags
from rnnlm.lm import run as lm_run
from rnnlm.lm.config import DEFAULT_PRESET, PRESETS, SECTIONS, GenerateConfig, LMEvalConfig, build_config
from rnnlm.lm.data.tokens import STREAM_BYTES, TOKENS, cache_dir, prepare
from rnnlm.lm.evaluate import DYNAMIC_LR, DYNAMIC_SEQ_LEN
from rnnlm.training import distributed


def add_lm_parsers(sub: Any) -> None:
    """Add ``train``, ``eval`` and ``generate`` to the ``rnnlm`` parser's subparsers."""
    t = sub.add_parser(
        "train",
        help="train a model",
        description="Train a language model. With no data and no "
        "--corpus it trains on python-docs, text that ships with Python. Flags given explicitly win "
        "over --preset and --config.",
    )
    t.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help=f"Start from a named recipe (default: {DEFAULT_PRESET}, unless --config is given). char-cpu = a "
        "regularized LSTM (2 x 448, bfloat16 matmuls where the CPU has them, locked dropout, weight drop, AR/TAR, "
        "AdamW with warmup and cosine decay, averaged weights) chosen for quality per second on a small CPU; "
        "char-gpu = the same shaped for one GPU; plain = the bare defaults below the presets (LSTM 2 x 256, no "
        "regularization, constant lr); d2l = "
        "the char-RNN of 'Dive into Deep Learning' (one-hot scratch RNN, 256 hidden, SGD lr 100, clip 0.01, "
        "250 epochs).",
    )
    t.set_defaults(handler=cmd_train)
    t.add_argument("--config", metavar="JSON", help="Start from a saved config.json (e.g. another run's).")
    t.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="Continue this run exactly where it stopped; only the "
        "length of training (--epochs, --max-steps, --time-budget), --device and logging may change.",
    )
    shown = build_config()  # the defaults a run without --preset gets (DEFAULT_PRESET's values)
    for section, cls in SECTIONS.items():
        add_dataclass_flags(
            t.add_argument_group(f"{section} options"), cls, prefix=f"{section}.", defaults=getattr(shown, section)
        )

    e = sub.add_parser(
        "eval",
        help="score text with a trained model",
        description="Print JSON with the mean loss "
        "(nats/token), perplexity and bits per token over the whole text, read sequentially with the "
        "state carried (--protocol carried), or as consecutive windows of --block tokens that each start from a "
        "zero state (--protocol windows, nanoGPT's protocol). Without DATA, the run's own validation text is "
        "scored.",
    )
    e.set_defaults(handler=cmd_eval)
    e.add_argument("run_dir", metavar="RUN_DIR", help="A language-model run directory (made by rnnlm train).")
    e.add_argument("data", nargs="*", metavar="DATA", help="Text files, directories or globs to score.")
    e.add_argument(
        "--split",
        choices=("train", "valid", "test"),
        default=None,
        help="Without DATA: which split of the run's data (default: valid, else train).",
    )
    add_load_flags(e)
    add_dataclass_flags(e, LMEvalConfig, prefix="eval.")
    # Short names: rnnlm 0.1's --batch-size and --seq-len, and --protocol/--block (issue 27).
    short: dict[str, Any] = {"--batch-size": "eval_batch_size", "--seq-len": "eval_seq_len"}
    short |= {"--protocol": "eval_protocol", "--block": "eval_block"}
    for flag, name in short.items():
        f = LMEvalConfig.__dataclass_fields__[name]
        kind = {"type": int, "metavar": "N"} if f.type == "int" else {"choices": f.metadata["choices"]}
        e.add_argument(
            flag, dest=f"eval.{name}", default=argparse.SUPPRESS, help=f"Same as --{name.replace('_', '-')}.", **kind
        )
    dyn = e.add_argument_group(
        "dynamic evaluation",
        'Also report dynamic evaluation (Krause et al. 2018), as a separate figure under "dynamic": the text is '
        "read as one stream and, after each chunk is scored, the model takes one SGD step on it, so "
        "that it adapts to what it has read (the saved model is not changed).",
    )
    dyn.add_argument(
        "--dynamic-lr",
        type=float,
        default=0.0,
        metavar="LR",
        help=f"SGD step size (0 = off; {DYNAMIC_LR} was chosen on timemachine's validation text for the char-cpu "
        "model) (default: 0)",
    )
    dyn.add_argument(
        "--dynamic-decay",
        type=float,
        default=0.0,
        metavar="D",
        help="pull the weights back toward the trained ones by this share per step (default: 0)",
    )
    dyn.add_argument(
        "--dynamic-seq-len",
        type=int,
        default=DYNAMIC_SEQ_LEN,
        metavar="N",
        help=f"tokens per chunk, i.e. between two updates (default: {DYNAMIC_SEQ_LEN})",
    )

    p = sub.add_parser(
        "prepare",
        help="tokenize a large corpus once, into a cached token file",
        description="Tokenize text files (files, directories of .txt files, globs) into a token file (tokens.bin: "
        "uint8, uint16 or uint32 ids as the vocabulary needs) with tokens.json (the files' sizes, times and "
        "SHA-256, the level, the vocabulary's SHA-256) and vocab.json beside it, streaming: the text is never "
        "held in memory. Without --out it fills the cache that `rnnlm train` with the same files, --level, "
        "--min-freq and --max-size reuses (train prepares by itself when the text is larger than "
        f"{STREAM_BYTES >> 20} MiB, or at --level byte). A prepare whose files and vocabulary are unchanged is "
        "reused, not redone.",
    )
    p.set_defaults(handler=cmd_prepare)
    p.add_argument("paths", nargs="+", metavar="TEXT", help="Text files, directories or globs.")
    p.add_argument("--out", metavar="DIR", help="Where to write (default: the cache that rnnlm train reads).")
    p.add_argument("--level", choices=("char", "word", "byte"), default="char", help="Token level (default: char).")
    p.add_argument("--min-freq", type=int, default=1, help="Tokens seen fewer times become <unk> (default: 1).")
    p.add_argument("--max-size", type=int, default=None, help="Keep at most this many tokens (default: all).")

    g = sub.add_parser(
        "generate",
        help="generate text",
        description="Generate text from a trained model and stream it to stdout. The output starts with the prefix.",
    )
    g.set_defaults(handler=cmd_generate)
    g.add_argument("run_dir", metavar="RUN_DIR", help="A language-model run directory (made by rnnlm train).")
    add_load_flags(g)
    add_dataclass_flags(g, GenerateConfig, prefix="gen.")


def cmd_prepare(ns: argparse.Namespace) -> int:
    """``rnnlm prepare``: tokenize into a token file, or say that the one there is reused."""
    if ns.min_freq < 1 or (ns.max_size is not None and ns.max_size < 2):
        raise ConfigError("--min-freq must be at least 1 and --max-size at least 2")
    out = ns.out or cache_dir(ns.paths, ns.level, ns.min_freq, ns.max_size)
    ready = prepare(ns.paths, out, ns.level, ns.min_freq, ns.max_size, log=print)
    rate = ready.text_bytes / 1e6 / max(ready.seconds, 1e-9)
    what = "reused (files and vocabulary unchanged)" if ready.reused else f"prepared at {rate:,.1f} MB/s"
    print(
        f"{Path(out) / TOKENS}: {len(ready.tokens):,} {ready.tokens.dtype.name} tokens from "
        f"{ready.text_bytes / 1e6:,.1f} MB, vocabulary of {len(ready.vocab):,}; {what} in {ready.seconds:.1f} s"
    )
    return 0


def _sections(ns: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Explicitly given flags, sorted into config sections."""
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in vars(ns).items():
        if "." in key:
            section, name = key.split(".", 1)
            if section in out and not (name == "paths" and value == []):
                out[section][name] = value
    return out


def cmd_train(ns: argparse.Namespace) -> int:
    from rnnlm.lm.run import train
    from rnnlm.training import runs

    overrides = _sections(ns)
    if ns.resume:
        if ns.preset or ns.config:
            raise RnnlmError("--resume continues a run with its own config; drop --preset/--config")
        resume = runs.open_run(ns.resume, lm_run.KIND)  # read once; train checks the overrides once
        cfg = runs.with_overrides(resume.config, overrides)
    else:
        resume, base = None, None
        if ns.config:
            base = runs.config_from_json(ckpt.read_json(ns.config, "config"), lm_run.KIND, Path(ns.config))
            base.train.out = None  # never write into the run the config came from
        cfg = build_config(overrides, ns.preset, base)
    result = train(cfg, resume=resume)
    if distributed.is_main():  # under torchrun rank 0 speaks for the run
        print(f"done: {result.run_dir} | generate with: rnnlm generate {result.run_dir} --prefix TEXT")
    return 0


def cmd_eval(ns: argparse.Namespace) -> int:
    from rnnlm.core.text import read_texts
    from rnnlm.lm.api import load
    from rnnlm.lm.data.dataset import load_corpus

    ecfg = LMEvalConfig(**{k[5:]: v for k, v in vars(ns).items() if k.startswith("eval.")})
    ecfg.check()
    if ns.dynamic_lr < 0 or not 0 <= ns.dynamic_decay < 1 or ns.dynamic_seq_len < 1:
        raise ConfigError(
            f"dynamic evaluation needs --dynamic-lr >= 0, --dynamic-decay in [0, 1) and --dynamic-seq-len >= 1; got "
            f"{ns.dynamic_lr}, {ns.dynamic_decay} and {ns.dynamic_seq_len}"
        )
    lm = load(ns.run_dir, ns.checkpoint, ns.device, ns.engine)
    if ns.data:
        ids = lm.encode_text(read_texts(ns.data))
        result = {"data": ns.data}
    else:
        corpus = load_corpus(lm.config.data, lm.vocab)
        splits = {"train": corpus.train, "valid": corpus.val, "test": corpus.test}
        split = ns.split or ("valid" if corpus.val is not None else "train")
        if splits[split] is None:
            raise RnnlmError(f"the run's data has no {split} split; pass DATA or choose --split")
        ids = splits[split]
        result = {"data": corpus.description, "split": split}
    result.update(lm.evaluate_ids(ids, ecfg.eval_batch_size, ecfg.eval_seq_len, ecfg.eval_protocol, ecfg.eval_block))
    if ns.dynamic_lr > 0:  # a separate figure: the model learns from the text while scoring it
        result["dynamic"] = lm.evaluate_dynamic(ids, ns.dynamic_lr, ns.dynamic_decay, ns.dynamic_seq_len)
    result["checkpoint"] = lm.checkpoint.get("path")
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


def cmd_generate(ns: argparse.Namespace) -> int:
    from rnnlm.lm.api import load

    gcfg = GenerateConfig(**{k[4:]: v for k, v in vars(ns).items() if k.startswith("gen.")})
    gcfg.check()
    lm = load(ns.run_dir, ns.checkpoint, ns.device, ns.engine)
    if gcfg.beam or gcfg.num_samples > 1:
        outs = lm.generate(
            gcfg.prefix, gcfg.length, gcfg.temperature, gcfg.top_k, gcfg.top_p, gcfg.beam, gcfg.num_samples, gcfg.seed
        )
        outs = [outs] if isinstance(outs, str) else outs
        for k, text in enumerate(outs):
            if len(outs) > 1:
                print(f"--- sample {k + 1} ---")
            print(text)
        return 0
    for piece in lm.stream(gcfg.prefix, gcfg.length, gcfg.temperature, gcfg.top_k, gcfg.top_p, gcfg.seed):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
