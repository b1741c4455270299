"""What ``rnnlm info`` shows of a language-model run (format ``rnnlm-run``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnlm.lm.run import KIND as LM_RUN
from rnnlm.lm.run import build_model
from rnnlm.training import runs
from rnnlm.training.runinfo import Rows, common_rows, describe_files, engine_line, training_line

KIND = "language model"


def describe(run_dir: str | Path) -> tuple[dict[str, Any], Rows]:
    """The run as JSON-ready values, and as label/value rows for people.

    The parameter count comes from the config and vocabulary alone (no checkpoint is loaded), so that a run
    without a checkpoint yet, or with a damaged one, is still described.
    """
    run_dir = Path(run_dir)
    run = runs.open_run(run_dir, LM_RUN)
    cfg, vocab = run.config, run.side
    info: dict[str, Any] = {"kind": KIND, **describe_files(run_dir)}
    info.update(
        vocab_size=len(vocab), level=vocab.level, parameters=runs.count_parameters(build_model(cfg, vocab)),
        config=cfg.to_dict(),
    )  # fmt: skip
    m, t = cfg.model, cfg.train
    rows: Rows = [
        ("run", str(run_dir)),
        ("kind", f"{KIND} ({cfg.to_dict()['format']})"),
        ("model", f"{m.cell}, {m.layers} x {m.hidden}, embed {m.embed or 'one-hot'}"),
        ("engine", engine_line(m.engine, m.matmul_dtype, t.device, run.resolved)),
        ("parameters", f"{info['parameters']:,}"),
        ("vocabulary", f"{vocab.level} level, {len(vocab):,} tokens"),
        ("data", ", ".join(cfg.data.paths) or cfg.data.corpus or "python-docs"),
        ("training", training_line(t, f"batch {t.batch_size} x {t.seq_len}")),
        *common_rows(info),
    ]
    return info, rows
