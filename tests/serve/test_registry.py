"""Run ids, kinds and the metrics reader of the server."""

from __future__ import annotations

import json
import shutil

import pytest

from rnnlm.core.errors import CheckpointError
from rnnlm.serve.registry import open_runs, read_curves

pytestmark = pytest.mark.e2e  # the runs are trained once per session (conftest.served_runs)


def test_ids_are_unique_names_and_a_folder_that_is_no_run_fails_at_start(served_runs, tmp_path):
    twin = tmp_path / "x" / "lm"
    shutil.copytree(served_runs["lm"], twin)
    runs = open_runs([served_runs["lm"], twin, served_runs["frames"]], load=False)
    assert list(runs) == ["lm", "lm-2", "fr"]
    assert [r.kind for r in runs.values()] == ["lm", "lm", "frames"]
    with pytest.raises(CheckpointError, match="no such run directory"):
        open_runs([tmp_path / "missing"], load=False)
    with pytest.raises(CheckpointError, match="config.json"):
        open_runs([tmp_path / "x"], load=False)


def test_a_run_without_a_checkpoint_is_served_for_its_curves(served_runs, tmp_path):
    run = tmp_path / "young"
    shutil.copytree(served_runs["lm"], run)
    for f in run.glob("*.safetensors"):
        f.unlink()
    (served,) = open_runs([run]).values()
    assert served.model is None and "cannot be loaded yet" in served.error
    assert read_curves(served)[0]["rows"]


def test_curves_skip_an_unfinished_line_and_a_damaged_one(served_runs, tmp_path):
    run = tmp_path / "live"
    shutil.copytree(served_runs["lm"], run)
    metrics = run / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    metrics.write_text(
        "\n".join(json.dumps(r) for r in rows) + '\n{"step": oops}\n' + json.dumps({"step": 999})[:-3], encoding="utf-8"
    )
    (served,) = open_runs([run], load=False).values()
    got = read_curves(served)[0]["rows"]
    assert [r["step"] for r in got] == [r["step"] for r in rows]


def test_curves_are_thinned_to_the_cap_keeping_the_last_row(served_runs, tmp_path):
    run = tmp_path / "long"
    shutil.copytree(served_runs["lm"], run)
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "train_loss": 1.0}) + "\n" for i in range(1001)))
    (served,) = open_runs([run], load=False).values()
    steps = [r["step"] for r in read_curves(served, max_points=100)[0]["rows"]]
    assert len(steps) <= 101 and steps[0] == 0 and steps[-1] == 1000


def test_ensemble_members_are_sources(served_runs, tmp_path):
    run = tmp_path / "ens"
    shutil.copytree(served_runs["tagger"], run)
    member = run / "members" / "0"
    member.mkdir(parents=True)
    shutil.copy(run / "metrics.jsonl", member / "metrics.jsonl")
    (served,) = open_runs([run], load=False).values()
    assert [s["source"] for s in read_curves(served)] == ["run", "members/0"]
