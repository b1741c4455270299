"""A language-model run as a whole: setting it up and training it, resuming it, and loading what it trained.

``train(cfg, resume, log)`` is where a run is assembled (config checks, data, model, task, run directory) and
trained; ``rnnlm train`` and ``rnnlm.train`` both call it. What every kind of run shares is in
rnnlm.training.runs (``train_model`` trains the one model with the standard callbacks); the loop itself is
``Trainer.fit`` in training/trainer.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.fields import renamed_keyword
from rnnlm.core.vocab import Vocab
from rnnlm.lm import sizing
from rnnlm.lm.config import RunConfig
from rnnlm.lm.data.dataset import load_corpus
from rnnlm.lm.model import RNNLM, upgrade_state_dict
from rnnlm.lm.task import LanguageModelTask
from rnnlm.recurrent.engines import resolve_engine
from rnnlm.training import runs
from rnnlm.training.runs import RESUMABLE_TRAIN, count_parameters, resume_checkpoint, train_model

# Fields that may change when a run is resumed: how long it goes on, where, and what it prints.
# Everything else defines the run; changing it would silently train a different model.
RESUMABLE = {
    "train": RESUMABLE_TRAIN | {"pred_period", "pred_len", "prefixes", "pred_temperature"},
    "model": {"engine", "matmul_dtype"},  # every engine, at either precision, reads the same weights
    "eval": {"eval_batch_size", "eval_seq_len"},
}


def build_model(
    cfg: RunConfig, vocab: Vocab, weights: dict[str, torch.Tensor] | None = None, extra: Any = None
) -> RNNLM:
    """A model for the config; with weights (rnnlm 0.1's layout too), loaded strictly, with a clear error on a
    mismatch."""
    model = RNNLM(cfg.model, len(vocab))
    return model if weights is None else runs.load_strict(model, upgrade_state_dict(weights, cfg.model))


def _engine(cfg: RunConfig, device: torch.device) -> tuple[str, str]:
    """A language model's recurrence reads one-hot ids (embed 0) or embeddings, never padded batches."""
    m = cfg.model
    return resolve_engine(m.engine, m.matmul_dtype, device, m.cell, one_hot=m.embed == 0, padded=False)


KIND = runs.register_kind(
    runs.RunKind(
        noun="language-model run",
        command="rnnlm train",
        config=RunConfig,
        resumable=RESUMABLE,
        read_side=lambda run_dir, cfg: Vocab.load(run_dir / ckpt.VOCAB),
        build_model=build_model,
        resolve_engine=_engine,
        pin_matmul_dtype=True,
    )
)


def read_run(run_dir: str | Path) -> tuple[RunConfig, Vocab]:
    """The config and vocabulary of a run directory (runs.open_run)."""
    run = runs.open_run(run_dir, KIND)
    return run.config, run.side


def load_model(
    run_dir: str | Path,
    which: str = "best",
    device: str = "cpu",
    engine: str | None = None,
    *,
    impl: str | None = None,
) -> tuple[RNNLM, Vocab, RunConfig, dict[str, str]]:
    """Model (in eval mode, on device), vocabulary, config and checkpoint metadata of a run (runs.load).

    ``engine`` computes the recurrence with another engine than the run was trained with; ``impl`` is its
    deprecated name.
    """
    engine = renamed_keyword(engine, impl, "impl", "engine", "load_model")
    loaded = runs.load(run_dir, KIND, which, device, engine)
    return loaded.model, loaded.run.side, loaded.run.config, loaded.meta


@dataclass
class LMTrainResult(runs.TrainResult):
    """What a finished (or stopped) language-model run leaves behind: besides the run directory, config and stop
    reason, the weights at the end of training (last.safetensors), the vocabulary and the last metrics line."""

    model: RNNLM
    vocab: Vocab
    metrics: dict[str, Any]  # the last line written to metrics.jsonl


def train(
    cfg: RunConfig,
    resume: str | Path | runs.Run | None = None,
    log: Callable[[str], None] = print,
    extra: Sequence[Any] | None = None,
) -> LMTrainResult:
    """Train a language model as cfg says (a new run), or continue the run in `resume` exactly where it stopped.

    cfg is not modified. Every setting is checked before anything is read or written. For a resume,
    cfg must equal the run's saved config except for the fields in RESUMABLE (runs.resume_config); ``resume``
    may be the run already opened (runs.open_run), which is then not read again. ``extra``: trainer callbacks
    beside the standard ones (a character LM trained for a tagger stops with its pair: tagging/char_lms.py).
    """
    cfg, run_dir, run = runs.begin(cfg, resume, KIND)
    state = weights = None
    if run is not None:
        weights, state = resume_checkpoint(run_dir)
        corpus = load_corpus(run.config.data, run.side)
        cfg.data = run.config.data
    else:
        corpus = load_corpus(cfg.data)
        cfg.data.level = corpus.level
        # Absolute paths in config.json, so that `--resume` and `rnnlm eval` work from any directory.
        for field in ("paths", "val_paths", "test_paths"):
            setattr(cfg.data, field, [str(Path(p).expanduser().absolute()) for p in getattr(cfg.data, field)])
    resolved = runs.resolve_run(cfg, KIND)  # config.json says what ran
    device = resolved.device
    sized = sizing.resolve(cfg, corpus, device, log) if run is None else None  # --size auto: the machine decides
    if sized is not None:
        resolved = dataclasses.replace(resolved, extra=sized.record())
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, corpus.vocab, weights).to(device)
    task = LanguageModelTask(corpus, cfg.train, cfg.eval, device)

    def write_files() -> None:  # config.json last: it makes the folder a run (see tagging/run.py's _write_files)
        if run is None:
            corpus.vocab.save(run_dir / ckpt.VOCAB)
        runs.write_config(run_dir, cfg, resolved)  # on a resume: the new limits

    m = cfg.model
    val = f"{len(corpus.val):,}" if corpus.val is not None else "none"
    header = [
        f"data: {corpus.description} | {corpus.level} level, vocab {len(corpus.vocab):,} | "
        f"train {len(corpus.train):,} tokens, val {val}",
        f"model: {m.cell}, {m.layers} x {m.hidden}, embed {m.embed or 'one-hot'}, engine "
        f"{resolved.engine_text(m.engine)} | {count_parameters(model):,} parameters | device {device} | run {run_dir}",
    ]
    if sized is not None:
        header.insert(1, sized.describe())
    trainer, reason, metrics = train_model(
        model,
        task,
        cfg.train,
        run_dir,
        write_files,
        header,
        log,
        state,
        extra_callbacks=extra or (),
        spent=sized.probe_s if sized is not None else 0.0,
    )
    return LMTrainResult(run_dir, cfg, reason, model=model, vocab=corpus.vocab, metrics=metrics)
