"""Data-parallel training under torchrun (2 ranks, gloo, one thread each): each use's run equals a single process
with the same global batch, a resume continues exactly, and a rank killed mid-run stops the other with an error.

Each test starts torchrun in a subprocess (the launcher users run); the ranks run tests/training/dist_worker.py,
which trains in float64 through the Python API, and the metrics lines are compared with the same runs trained here
in one process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import rnnlm
import tiny
from rnnlm import frames, tagging
from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import CheckpointError

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("dist_worker.py")
# No dropout: each rank draws masks for its rows only, so with dropout the ranks could not equal one process.
LM = {
    **tiny.LM,
    "preset": "plain",
    "cell": "lstm",
    "engine": "scratch",
    "max_steps": 24,
    "log_every": 6,
    "save_every": 0,
}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    path = [str(ROOT / "src"), str(ROOT / "tests"), env.get("PYTHONPATH", "")]
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in path if p), "OMP_NUM_THREADS": "1"}


def torchrun(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout, **kwargs)


def run_ranks(tmp_path: Path, jobs: list[dict]) -> None:
    """Train ``jobs`` (dist_worker.py's spec) on two ranks."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"jobs": jobs}), encoding="utf-8")
    done = torchrun(str(WORKER), str(spec))
    errors = [line for line in done.stderr.splitlines() if "Error" in line or "error:" in line]
    assert done.returncode == 0, "\n".join(errors[:20]) or done.stderr[-3000:]


@contextlib.contextmanager
def float64():
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(torch.float32)


def losses(run: Path, keys: tuple[str, ...] = ("train_loss", "val_loss")) -> list[list[float]]:
    return [[row[k] for k in keys if k in row] for row in ckpt.read_metrics(run)]


def assert_close(a: list[list[float]], b: list[list[float]], tol: float = 1e-5) -> None:
    assert len(a) == len(b) and all(len(x) == len(y) for x, y in zip(a, b, strict=True))
    for x, y in zip(a, b, strict=True):
        assert x == pytest.approx(y, abs=tol), (a, b)


# No random draws (dropout, <unk> replacement), and float32 matmuls (not bfloat16), so that two ranks can equal one.
TAG = {**tiny.TAGGER, "dropout": 0.0, "unk_singletons": 0.0, "matmul_dtype": "float32", "epochs": 2}
TAG |= {"optimizer": "sgd", "lr": 0.1, "progress": False}
FRAMES = {**tiny.FRAMES, "dropout": 0.0, "ensemble": 1, "refit": False, "epochs": 2, "progress": False}
FRAMES |= {"optimizer": "sgd", "lr": 0.1}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> Path:
    """Every 2-rank run of the equality tests, trained in one torchrun launch (a start costs seconds): language
    models in float64; the tagger and frame model in float32 (their features are float32), with SGD, which does not
    magnify round-off as Adam's normalised steps do."""
    d = tmp_path_factory.mktemp("ranks")
    (d / "text.txt").write_text(tiny.LM_TEXT, encoding="utf-8")
    tiny.ner_file(d / "train.conll", 32, seed=0)
    tiny.ner_file(d / "dev.conll", 8, seed=1)
    tiny.write_ts(d / "train.ts", 60, seed=0)
    text, conll, ts = str(d / "text.txt"), str(d / "train.conll"), str(d / "train.ts")
    lm = [
        {"use": "lm", "data": text, "settings": {**LM, "sampling": "sequential", "out": str(d / "seq2")}},
        {"use": "lm", "data": text, "settings": {**LM, "sampling": "random", "out": str(d / "rand2")}},
        # stopped at step 12 and resumed: the resume must continue as the run trained straight through
        {
            "use": "lm",
            "data": text,
            "settings": {**LM, "sampling": "sequential", "max_steps": 12, "out": str(d / "res2")},
        },
        {"use": "lm", "data": None, "resume": str(d / "res2"), "settings": {"max_steps": 24}},
    ]
    others = [
        {"use": "tag", "data": conll, "settings": {**TAG, "dev": str(d / "dev.conll"), "out": str(d / "tag2")}},
        {"use": "frames", "data": ts, "settings": {**FRAMES, "out": str(d / "fr2")}},
    ]
    run_ranks(d, lm + [{**job, "dtype": "float32"} for job in others])
    return d


@pytest.mark.parametrize("sampling", ["sequential", "random"])
def test_language_model_two_ranks_equal_one_process(ranks, sampling, tmp_path):
    with float64():
        torch.set_num_threads(1)
        rnnlm.train(str(ranks / "text.txt"), **{**LM, "sampling": sampling, "out": str(tmp_path / "one")}, log=print)
    one, two = losses(tmp_path / "one"), losses(ranks / ("seq2" if sampling == "sequential" else "rand2"))
    assert len(one) == 4
    assert_close(two, one)


def test_language_model_two_ranks_resume_exactly(ranks):
    # the sequential lanes' carried state made it through the resume: the same losses as straight through
    assert_close(losses(ranks / "res2"), losses(ranks / "seq2"), tol=1e-12)
    state = ckpt.load_checkpoint(ranks / "res2" / ckpt.LAST)[2]
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    with pytest.raises(CheckpointError, match="written by a run of 2 process"):
        rnnlm.train(resume=str(ranks / "res2"), max_steps=30, log=lambda s: None)


def test_tagger_and_frame_classifier_two_ranks_equal_one_process(ranks, tmp_path):
    torch.set_num_threads(1)
    tag = {**TAG, "dev": str(ranks / "dev.conll"), "out": str(tmp_path / "tag1")}
    tagging.train(str(ranks / "train.conll"), **tag, log=lambda s: None)
    frames.train(str(ranks / "train.ts"), **FRAMES, out=str(tmp_path / "fr1"), log=lambda s: None)
    for one, two in ((tmp_path / "tag1", ranks / "tag2"), (tmp_path / "fr1", ranks / "fr2")):
        assert len(losses(one)) == 2
        assert_close(losses(two), losses(one), tol=1e-5)


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(p) for p in (task / "children").read_text().split()]
    return kids


def _rank_of(pid: int) -> int | None:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next((int(e[5:]) for e in env if e.startswith(b"RANK=")), None)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the ranks' processes through /proc")
def test_a_killed_rank_stops_the_other_with_a_clear_error(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(tiny.lm_text(400), encoding="utf-8")
    out = tmp_path / "run"
    args = [
        "-m",
        "rnnlm",
        "train",
        str(text),
        *tiny.flags({**LM, "max_steps": 10**6, "log_every": 20}),
        "--out",
        str(out),
    ]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    env = {**_env(), "RNNLM_DIST_TIMEOUT": "20"}
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as launcher:
        try:
            deadline = time.monotonic() + 90
            while not (out / ckpt.LAST).is_file():  # training is under way and has saved
                assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()[1][-3000:]
                time.sleep(0.2)
            rank1 = next(p for p in _children(launcher.pid) if _rank_of(p) == 1)
            os.kill(rank1, signal.SIGKILL)
            _, err = launcher.communicate(timeout=60)
        finally:
            if launcher.poll() is None:
                launcher.kill()
    assert launcher.returncode != 0
    # rank 0 says what happened; torchrun's summary names the rank that was killed
    assert "rnnlm: error: rank 0 of 2: another rank stopped answering" in err, err[-3000:]
    assert "Signal 9 (SIGKILL)" in err and "rank      : 1" in err, err[-3000:]
    assert ckpt.load_checkpoint(out / ckpt.LAST)[2]["world_size"] == 2  # what a resume continues from
