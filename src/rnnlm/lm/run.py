"""A language-model run as a whole: setting it up and training it, resuming it, and loading what it trained.

``train(cfg)`` is where a run is assembled: config checks, data, model, task, callbacks, trainer and the run
directory. What every kind of run shares is in rnnlm.training.runs; the loop itself is in training/trainer.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.atomic import atomic_write_json
from rnnlm.core.errors import CheckpointError, RnnlmError
from rnnlm.core.vocab import Vocab
from rnnlm.lm.config import RunConfig
from rnnlm.lm.data.dataset import load_corpus
from rnnlm.lm.model import RNNLM, upgrade_state_dict
from rnnlm.lm.task import LanguageModelTask
from rnnlm.recurrent.engines import resolve_engine_name, resolve_matmul_dtype
from rnnlm.training.runs import (
    RESUMABLE_TRAIN,
    check_resume,
    count_parameters,
    fit_run,
    new_run_dir,
    resolve_device,
    resume_checkpoint,
)

# Fields that may change when a run is resumed: how long it goes on, where, and what it prints.
# Everything else defines the run; changing it would silently train a different model.
RESUMABLE = {
    "train": RESUMABLE_TRAIN | {"pred_period", "pred_len", "prefixes", "pred_temperature"},
    "model": {"impl", "matmul_dtype"},  # every engine, at either precision, reads the same weights
    "eval": {"eval_batch_size", "eval_seq_len"},
}


def read_run(run_dir: str | Path) -> tuple[RunConfig, Vocab]:
    """The config and vocabulary of a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    raw = ckpt.read_json(run_dir / ckpt.CONFIG, "run config")
    try:
        cfg = RunConfig.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{run_dir / ckpt.CONFIG}: not a valid run config ({e})") from None
    try:
        vocab = Vocab.load(run_dir / ckpt.VOCAB)
    except RnnlmError as e:
        raise CheckpointError(str(e)) from None
    return cfg, vocab


def merge_resume(saved: RunConfig, overrides: dict[str, dict[str, Any]]) -> RunConfig:
    """The saved config with explicit overrides applied (each checked by check_resume)."""
    d = saved.to_dict()
    for section, values in overrides.items():
        d[section].update(values)
    wanted = RunConfig.from_dict(d)
    check_resume(saved, wanted, RESUMABLE)
    return wanted


def build_model(cfg: RunConfig, vocab: Vocab, weights: dict[str, torch.Tensor] | None = None) -> RNNLM:
    """A model for the config; with weights, loaded strictly, with a clear error on a mismatch."""
    model = RNNLM(cfg.model, len(vocab))
    if weights is not None:
        try:
            model.load_state_dict(upgrade_state_dict(weights, cfg.model), strict=True)
        except (RuntimeError, KeyError) as e:
            raise CheckpointError(
                f"the checkpoint does not fit the run's config.json ({str(e).splitlines()[0]}); "
                f"was the file copied from another run?"
            ) from None
    return model


def load_model(
    run_dir: str | Path, which: str = "best", device: str = "cpu", impl: str | None = None
) -> tuple[RNNLM, Vocab, RunConfig, dict[str, str]]:
    """Model (in eval mode, on device), vocabulary, config and checkpoint metadata of a run.

    ``impl`` computes the recurrence with another engine than the run was trained with.
    """
    cfg, vocab = read_run(run_dir)
    if impl is not None:
        cfg.model.impl = impl
        cfg.model.check()
    path = ckpt.checkpoint_path(run_dir, which)
    weights, meta = ckpt.load_weights(path)
    model = build_model(cfg, vocab, weights).to(resolve_device(device))
    model.eval()
    meta = {**meta, "path": str(path)}
    return model, vocab, cfg, meta


@dataclass
class TrainResult:
    """What a finished (or stopped) run leaves behind."""

    run_dir: Path
    model: RNNLM  # the weights at the end of training (last.safetensors)
    vocab: Vocab
    config: RunConfig
    metrics: dict[str, Any]  # the last line written to metrics.jsonl
    stop_reason: str


def train(cfg: RunConfig, resume: str | Path | None = None, log: Callable[[str], None] = print) -> TrainResult:
    """Train a language model as cfg says (a new run), or continue the run in `resume` exactly where it stopped.

    cfg is not modified. Every setting is checked before anything is read or written. For a resume,
    cfg must equal the run's saved config except for the fields in RESUMABLE (see merge_resume).
    """
    cfg = copy.deepcopy(cfg)
    cfg.check()
    state = weights = None
    if resume is not None:
        run_dir = Path(resume)
        saved, vocab = read_run(run_dir)
        check_resume(saved, cfg, RESUMABLE)
        weights, state = resume_checkpoint(run_dir)
        corpus = load_corpus(saved.data, vocab)
        cfg.data, cfg.train.out = saved.data, str(run_dir)
    else:
        run_dir = new_run_dir(cfg.train.out)  # before the corpus is read: a bad --out fails at once
        corpus = load_corpus(cfg.data)
        cfg.data.level = corpus.level
        # Absolute paths in config.json, so that `--resume` and `rnnlm eval` work from any directory.
        for field in ("paths", "val_paths", "test_paths"):
            setattr(cfg.data, field, [str(Path(p).expanduser().absolute()) for p in getattr(cfg.data, field)])
        cfg.train.out = str(run_dir)
    device = resolve_device(cfg.train.device)
    cfg.model.matmul_dtype = resolve_matmul_dtype(cfg.model.matmul_dtype, device)  # config.json says what ran
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, corpus.vocab, weights).to(device)
    task = LanguageModelTask(corpus, cfg.train, cfg.eval, device)

    def write_files() -> None:
        atomic_write_json(run_dir / ckpt.CONFIG, cfg.to_dict())  # on a resume: the new limits
        if resume is None:
            corpus.vocab.save(run_dir / ckpt.VOCAB)

    m = cfg.model
    val = f"{len(corpus.val):,}" if corpus.val is not None else "none"
    engine = m.impl
    if m.impl == "auto":
        engine = f"auto: {resolve_engine_name('auto', m.embed == 0, device, m.cell, m.matmul_dtype)}"
    header = [
        f"data: {corpus.description} | {corpus.level} level, vocab {len(corpus.vocab):,} | "
        f"train {len(corpus.train):,} tokens, val {val}",
        f"model: {m.cell}, {m.layers} x {m.hidden}, embed {m.embed or 'one-hot'}, engine {engine} | "
        f"{count_parameters(model):,} parameters | device {device} | run {run_dir}",
    ]
    trainer, reason, metrics = fit_run(model, task, cfg.train, run_dir, write_files, header, log, state)
    return TrainResult(run_dir, model, corpus.vocab, cfg, metrics, reason)
