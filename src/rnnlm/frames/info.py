"""What ``rnnlm info`` shows of a frame run (format ``rnnlm-frames-run``), an ensemble's members included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnlm.core import checkpoint as ckpt
from rnnlm.frames import run as frames_run
from rnnlm.frames.config import FORMAT
from rnnlm.frames.run import build_frame_model
from rnnlm.training import runs
from rnnlm.training.runinfo import Rows, common_rows, describe_files, engine_line, in_place, training_line

REPORTS = ("val", "test")  # RUN/<name>_report.json, written after training by the final model
SHOWN_CLASSES = 20


def describe(run_dir: str | Path) -> tuple[dict[str, Any], Rows]:
    """The run as JSON-ready values, and as label/value rows for people.

    The parameter count comes from the config and classes.json (each member's, times the members), so that a
    run without a checkpoint yet is still described; the scores are those of the reports saved after training.
    """
    run_dir = Path(run_dir)
    run = runs.open_run(run_dir, frames_run.KIND)
    cfg, classes = run.config, run.side
    d, m, t, fit = cfg.data, cfg.model, cfg.train, cfg.fit
    task = classes["task"]
    kind = "frame classifier" if task == "classify" else "frame labeler"
    one = runs.count_parameters(build_frame_model(cfg, classes))
    info: dict[str, Any] = {"kind": kind, **describe_files(run_dir)}
    info.update(
        parameters=one * fit.ensemble, task=task, num_features=classes["num_features"], classes=classes["classes"],
        reports={name: _report(run_dir / f"{name}_report.json") for name in REPORTS},
        config=cfg.to_dict(),
    )  # fmt: skip

    shape = f"{'bi' if m.bidirectional else 'uni'}directional {m.cell}, {m.layers} x {m.hidden}, proj {m.proj}"
    head = f"{m.pooling} pooling" if task == "classify" else "a softmax per frame"
    fcn = m.fcn_channels(task)
    names = classes["classes"]
    shown = ", ".join(names[:SHOWN_CLASSES]) + (", ..." if len(names) > SHOWN_CLASSES else "")

    rows: Rows = [
        ("run", str(run_dir)),
        ("kind", f"{kind} ({FORMAT})"),
        ("model", shape + (f", convolutional branch of {fcn} channels" if fcn else "") + f", {head}"),
        ("engine", engine_line(m.engine, None, t.device, run.resolved)),
        (
            "parameters",
            f"{one * fit.ensemble:,}" + (f" ({fit.ensemble} members of {one:,} each)" if fit.ensemble > 1 else ""),
        ),
        ("classes", f"{len(names)}: {shown}; {classes['num_features']} features per frame"),
        ("data", f"train {d.train_path or 'arrays'}, test {d.test or 'none'}, validation split {d.val_fraction:g}"),
        ("training", training_line(t)),
        ("fit", _fit_line(fit.ensemble, fit.refit and d.val_fraction > 0)),
    ]
    for name, report in info["reports"].items():
        if report:
            rows.append((f"{name} scores", report.get("error") or _scores(report)))
    return info, rows + common_rows(info)


def _report(path: Path) -> dict[str, Any] | None:
    """The summary of a saved report (loss, accuracy, macro-F1, count); None when there is none."""
    if not path.is_file():
        return None

    def read() -> dict[str, Any]:
        report = ckpt.read_json(path, "report")
        return {k: report[k] for k in ("count", "loss", "accuracy", "macro_f1") if k in report}

    return in_place(read)


def _scores(report: dict[str, Any]) -> str:
    parts = [f"accuracy {report['accuracy']:.4f}"] if "accuracy" in report else []
    parts += [f"macro-F1 {report['macro_f1']:.4f}"] if "macro_f1" in report else []
    parts += [f"loss {report['loss']:.4f}"] if "loss" in report else []
    return ", ".join(parts) + (f" ({report['count']:,} scored)" if "count" in report else "")


def _fit_line(ensemble: int, refit: bool) -> str:
    one = "one model" if ensemble == 1 else f"an ensemble of {ensemble} (seeded apart)"
    return one + (", each refit on all the training data" if refit else "")
