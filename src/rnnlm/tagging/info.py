"""What ``rnnlm info`` shows of a tagger run (format ``rnnlm-tag-run``), an ensemble's members included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rnnlm.tagging import run as tag_run
from rnnlm.tagging.config import FORMAT
from rnnlm.tagging.run import build_tagger, read_char_lm
from rnnlm.training import ensemble, runs
from rnnlm.training.runinfo import Rows, common_rows, describe_files, engine_line, in_place, training_line

KIND = "tagger"
SHOWN_TAGS = 20  # a POS tag set has about 50 tags; the JSON has them all


def describe(run_dir: str | Path) -> tuple[dict[str, Any], Rows]:
    """The run as JSON-ready values, and as label/value rows for people.

    The parameter count is the tagger's (each member's, times the members) from the config and vocabularies;
    the frozen character LMs that a tagger may read are counted apart, from the run's own copy of them.
    """
    run_dir = Path(run_dir)
    run = runs.open_run(run_dir, tag_run.KIND)
    cfg, enc = run.config, run.side
    d, m, t = cfg.data, cfg.model, cfg.train
    info: dict[str, Any] = {"kind": KIND, **describe_files(run_dir)}
    for member in info.get("members", []):
        member["finished"] = ensemble.is_finished(run_dir / member["dir"])
    char_lm = in_place(lambda: read_char_lm(run_dir, cfg, torch.device("cpu"))) if m.char_lm else None
    lm_ok = char_lm is None or not isinstance(char_lm, dict)
    one = runs.count_parameters(build_tagger(cfg, enc, None, char_lm.dim if char_lm else 0)) if lm_ok else None
    info.update(
        parameters=one * t.ensemble if one is not None else char_lm,
        column=d.column, scheme=d.scheme, model_scheme=d.model_scheme if d.scheme != "none" else "none",
        vocab_size=len(enc.words), chars=len(enc.chars), tags=list(enc.tags.tags),
        aux_tags=list(enc.aux.tags) if enc.aux is not None else None,
        config=cfg.to_dict(),
    )  # fmt: skip
    if m.char_lm:
        lms = None if not lm_ok else sum(runs.count_parameters(x.model) for x in (char_lm.forward, char_lm.backward))
        info["char_lm_parameters"] = lms if lm_ok else char_lm

    parts = [f"bidirectional {m.cell}, {m.layers} x {m.hidden}", f"words {m.word_dim}"]
    if m.char_dim:
        parts.append(f"character CNN {m.char_dim} -> {m.char_filters}")
    if m.char_lm:
        parts.append(f"character-LM features ({m.char_lm_context} context, {m.char_lm_layers} layers)")
    if m.word_vectors:
        parts.append(f"word vectors from {m.word_vectors}")
    parts.append(f"{m.head} head")
    if d.aux_column:
        parts.append(f"auxiliary {d.aux_column} head")
    scheme = "plain tags" if d.scheme == "none" else f"scheme {d.scheme}, learned as {info['model_scheme']}"
    tags = ", ".join(enc.tags.tags[:SHOWN_TAGS]) + (", ..." if len(enc.tags) > SHOWN_TAGS else "")
    rows: Rows = [
        ("run", str(run_dir)),
        ("kind", f"{KIND} ({FORMAT}): the {d.column} column of {d.format} files, {scheme}"),
        ("model", ", ".join(parts)),
        ("engine", engine_line(m.engine, m.matmul_dtype, t.device, run.resolved)),
        ("parameters", _parameters(info, t.ensemble)),
        ("vocabulary", f"{len(enc.words):,} words, {len(enc.chars):,} characters"),
        ("tags", f"{len(enc.tags)}: {tags}"),
        ("data", f"train {d.train}, dev {d.dev or 'none'}"),
        ("training", training_line(t)),
    ]
    if t.ensemble > 1:
        rows.append(("ensemble", f"{t.ensemble} members in {run_dir / 'members'}"))
    return info, rows + common_rows(info)


def _parameters(info: dict[str, Any], members: int) -> str:
    p = info["parameters"]
    if isinstance(p, dict):
        return p["error"]
    text = f"{p:,}" + (f" ({members} members of {p // members:,} each)" if members > 1 else "")
    lms = info.get("char_lm_parameters")
    if isinstance(lms, int):
        text += f", and {lms:,} in the two frozen character LMs (char_lm/)"
    return text
