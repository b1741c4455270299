"""Learning curves: the plotted series are the metrics, the PNG is written, errors are clear."""

from __future__ import annotations

import builtins
import json
import math

import pytest

from rnnlm.cli import main
from rnnlm.core.errors import CheckpointError, RnnlmError
from rnnlm.core.plot import curves, plot_runs, read_metrics

ROWS = [
    {"step": 10, "epoch": 1, "elapsed_s": 1.0, "lr": 0.1, "train_loss": 2.0, "val_loss": 1.5},
    {"step": 20, "epoch": 2, "elapsed_s": 2.0, "lr": 0.05, "train_loss": 1.0, "val_loss": 1.2},
]


@pytest.fixture
def run(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return d


def test_curves_are_the_metrics_in_bits(run):
    c = curves(read_metrics(run), x="epoch")
    assert c["train"] == ([1, 2], [pytest.approx(2.0 / math.log(2)), pytest.approx(1.0 / math.log(2))])
    assert c["val"][1] == [pytest.approx(1.5 / math.log(2)), pytest.approx(1.2 / math.log(2))]
    assert c["lr"] == ([1, 2], [0.1, 0.05])


@pytest.mark.e2e
def test_plot_writes_a_png(run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["plot", str(run)]) == 0
    path = run / "metrics.png"
    assert capsys.readouterr().out.strip() == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    two = plot_runs([run, run], tmp_path / "both.png", x="elapsed_s")
    assert two.stat().st_size > 1000


def test_errors(tmp_path, run, monkeypatch):
    with pytest.raises(CheckpointError, match="no metrics yet"):
        read_metrics(tmp_path)
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write("{oops\n")
    with pytest.raises(CheckpointError, match="line 3"):
        read_metrics(run)
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(RnnlmError, match=r"pip install 'rnnlm\[plot\]'"):
        plot_runs([tmp_path])
