"""Tagger ensembles: the combined scores against brute force, and ensemble runs (members trained one at a time
or in worker processes, saved together, loaded, resumed)."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnlm
from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import CheckpointError, ConfigError, OutputError
from rnnlm.tagging import api as tagging
from rnnlm.tagging import run as tag_run
from rnnlm.tagging.config import TaggerConfig
from rnnlm.tagging.encoding import EncodedSentence
from rnnlm.tagging.model import Tagger, TaggerEnsemble
from rnnlm.training import ensemble as ensembles
from rnnlm.training import runs
from rnnlm.training.ensemble import member_seed
from tag_checks import run_cli
from tiny import TAGGER, TAGGER_FLAGS

V, C, K = 30, 12, 4  # words, characters, tags


def members(head: str, n: int) -> list[Tagger]:
    torch.manual_seed(0)
    out = []
    for _ in range(n):
        m = Tagger(TaggerConfig(hidden=6, word_dim=5, char_dim=4, char_filters=3, head=head), V, C, K).eval()
        if head == "crf":  # scores far from zero, so that the transitions matter
            with torch.no_grad():
                for p in m.head.crf.parameters():
                    p.normal_(0, 2)
        out.append(m)
    return out


def batch(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    words = torch.randint(1, V, (len(lengths), T), generator=g)
    chars = torch.randint(1, C, (len(lengths), T, 5), generator=g)
    return words, chars, torch.tensor(lengths)


def test_crf_ensemble_decodes_the_best_summed_sequence_score_by_brute_force():
    ms = members("crf", 3)
    ens = TaggerEnsemble(ms).eval()
    words, chars, lengths = batch([4, 3, 1])
    mask = torch.arange(4)[None] < lengths[:, None]
    with torch.no_grad():
        got = ens.decode(ens(words, chars, lengths), mask)
        emissions = [m(words, chars, lengths) for m in ms]
        for b, n in enumerate(lengths.tolist()):
            seqs = torch.tensor(list(itertools.product(range(K), repeat=n)))  # every tag sequence
            total = torch.zeros(len(seqs))
            for m, e in zip(ms, emissions, strict=True):
                e_b = e[b : b + 1, :n].expand(len(seqs), n, K)
                total += m.head.crf.score(e_b, seqs, torch.ones(len(seqs), n, dtype=torch.bool))
            assert got[b, :n].tolist() == seqs[int(total.argmax())].tolist()
            assert (got[b, n:] == 0).all()
    # the members disagree somewhere, so the test can tell the ensemble from any one member
    alone = [m.decode(e, mask) for m, e in zip(ms, emissions, strict=True)]
    assert any(not torch.equal(a, got) for a in alone)


def test_softmax_ensemble_averages_log_probabilities():
    ms = members("softmax", 2)
    ens = TaggerEnsemble(ms).eval()
    words, chars, lengths = batch([5, 2])
    mask = torch.arange(5)[None] < lengths[:, None]
    with torch.no_grad():
        scores = ens(words, chars, lengths)
        want = sum(m(words, chars, lengths).log_softmax(-1) for m in ms) / 2
        torch.testing.assert_close(scores, want)
        assert torch.equal(ens.decode(scores, mask), want.argmax(-1).masked_fill(~mask, 0))


@pytest.mark.parametrize("head", ["crf", "softmax"])
def test_one_member_tags_as_the_member_does_and_padding_changes_nothing(head):
    (m,) = members(head, 1)
    ens2 = TaggerEnsemble(members(head, 2)).eval()
    words, chars, lengths = batch([6, 3, 2])
    mask = torch.arange(6)[None] < lengths[:, None]
    with torch.no_grad():
        assert torch.equal(TaggerEnsemble([m]).decode(TaggerEnsemble([m])(words, chars, lengths), mask),
                           m.decode(m(words, chars, lengths), mask))  # fmt: skip
        together = ens2.decode(ens2(words, chars, lengths), mask)
        for b, n in enumerate(lengths.tolist()):
            alone = ens2.decode(
                ens2(words[b : b + 1, :n], chars[b : b + 1, :n], lengths[b : b + 1]), mask[b : b + 1, :n]
            )
            assert torch.equal(alone[0], together[b, :n])


def test_members_need_one_kind_of_head():
    with pytest.raises(ValueError, match="one kind of head"):
        TaggerEnsemble([*members("crf", 1), *members("softmax", 1)])
    with pytest.raises(ValueError, match="at least one member"):
        TaggerEnsemble([])


# -- runs -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tiny_conll):
    return tiny_conll(train=40, dev=10)


def train(files, out, **kw):
    lines: list[str] = []
    settings = {**TAGGER, "dev": str(files / "dev.txt"), "epochs": 3, "progress": False, "threads": 1}
    tagger = tagging.train(files / "train.txt", out=str(out), log=lines.append, **{**settings, **kw})
    return tagger, "\n".join(lines)


@pytest.fixture(scope="module")
def ens_run(files):
    return train(files, files / "seq", ensemble=2, jobs=1)


@pytest.mark.e2e
def test_an_ensemble_run_saves_every_members_best_weights_together(ens_run, files):
    tagger, log = ens_run
    run = files / "seq"
    assert isinstance(tagger.model, TaggerEnsemble) and len(tagger.model.members) == 2
    assert tagger.checkpoint["path"] == str(run / tag_run.MODEL)
    weights, meta = ckpt.load_weights(run / tag_run.MODEL)
    assert meta["members"] == "2" and json.loads(meta["seeds"]) == [0, member_seed(0, 1)]
    for i in range(2):
        where = run / "members" / str(i)
        config = json.loads((where / ckpt.CONFIG).read_text(encoding="utf-8"))
        assert config["train"]["seed"] == member_seed(0, i) and config["train"]["ensemble"] == 1
        assert json.loads((where / ensembles.FINISHED).read_text())["reason"]
        best, _ = ckpt.load_weights(where / ckpt.BEST)
        for k, v in best.items():
            assert torch.equal(weights[f"members.{i}.{k}"], v), k
    first = ckpt.load_weights(run / "members/0" / ckpt.BEST)[0]
    second = ckpt.load_weights(run / "members/1" / ckpt.BEST)[0]
    assert not torch.equal(first["head.weight"], second["head.weight"])  # different seeds, different models
    assert "ensemble on dev" in log and "member 2/2 | " in log
    assert float(meta["val_f1"]) == tagger.evaluate(files / "dev.txt")["f1"]


@pytest.mark.e2e
def test_members_trained_in_worker_processes_match_members_trained_one_at_a_time(ens_run, files):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two CPU cores")
    tagger, _ = train(files, files / "par", ensemble=2, jobs=2)
    seq = ckpt.load_weights(files / "seq" / tag_run.MODEL)[0]
    par = ckpt.load_weights(files / "par" / tag_run.MODEL)[0]
    assert seq.keys() == par.keys()
    for k in seq:
        torch.testing.assert_close(par[k], seq[k], rtol=0, atol=0, msg=k)
    assert tagger.tag([["Anna", "visited", "Oslo", "."]]) == ens_run[0].tag([["Anna", "visited", "Oslo", "."]])


@pytest.mark.e2e
def test_resume_trains_only_unfinished_members(ens_run, files):
    run = files / "seq"
    lines: list[str] = []
    tag_run.train(runs.open_run(run, tag_run.KIND).config, resume=run, log=lines.append)
    assert any("nothing to do" in line for line in lines)
    before = ckpt.load_weights(run / "members/0" / ckpt.BEST)[0]
    (run / tag_run.MODEL).unlink()
    (run / "members/1" / ensembles.FINISHED).unlink()
    with pytest.raises(CheckpointError, match="has not finished.*--resume"):
        tagging.load(run)
    cfg = runs.open_run(run, tag_run.KIND).config
    cfg.train.epochs = 5
    lines.clear()
    tag_run.train(cfg, resume=run, log=lines.append)
    text = "\n".join(lines)
    assert "member 1/2: finished before" in text and "member 2/2 | resumed at step" in text
    rows = ckpt.read_metrics(run / "members/1")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert len(ckpt.read_metrics(run / "members/0")) == 3
    assert all(torch.equal(v, ckpt.load_weights(run / "members/0" / ckpt.BEST)[0][k]) for k, v in before.items())
    assert isinstance(tagging.load(run).model, TaggerEnsemble)


@pytest.mark.e2e
def test_ensemble_settings_are_checked(files, tmp_path):
    with pytest.raises(ConfigError, match="ensemble"):
        train(files, tmp_path / "a", ensemble=0)
    with pytest.raises(ConfigError, match="jobs"):
        train(files, tmp_path / "b", jobs=-1)
    _, _ = train(files, tmp_path / "c", epochs=1)
    cfg = runs.open_run(tmp_path / "c", tag_run.KIND).config
    cfg.train.ensemble = 2
    with pytest.raises(CheckpointError, match="ensemble"):
        tag_run.train(cfg, resume=tmp_path / "c", log=lambda _: None)


@pytest.mark.e2e
def test_cli_trains_evaluates_and_uses_one_member(files, tmp_path):
    run = tmp_path / "run"
    run_cli("tag", "train", str(files / "train.txt"), "--dev", str(files / "dev.txt"), *TAGGER_FLAGS, "--epochs", "2",
            "--ensemble", "2", "--jobs", "1", "--out", str(run))  # fmt: skip
    result = json.loads(run_cli("tag", "eval", str(run), str(files / "dev.txt")))
    assert result["checkpoint"].endswith(tag_run.MODEL)
    one = json.loads(
        run_cli("tag", "eval", str(run), str(files / "dev.txt"), "--checkpoint", "members/1/best.safetensors")
    )
    assert one["checkpoint"].endswith("members/1/best.safetensors") and one["sentences"] == result["sentences"]


@pytest.mark.e2e
def test_a_failing_member_stops_the_others(files, tmp_path):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two CPU cores")
    out, epochs = tmp_path / "run", 400  # 5 steps an epoch: 2,000 steps unless stopped
    first, second = (out / "members" / str(i) for i in (0, 1))

    def break_member_2() -> None:
        """Once both members train (each has logged an epoch), member 2 fails at its next metrics line."""
        deadline = time.monotonic() + 600  # only against a hang
        while not all((m / ckpt.METRICS).is_file() for m in (first, second)) and time.monotonic() < deadline:
            time.sleep(0.05)
        (second / ckpt.METRICS).unlink()
        (second / ckpt.METRICS).mkdir()

    saboteur = threading.Thread(target=break_member_2, daemon=True)
    saboteur.start()
    with pytest.raises(OutputError, match="Is a directory"):  # the member's error, as the user sees it
        train(files, out, ensemble=2, jobs=2, epochs=epochs, patience=0)
    saboteur.join(timeout=5)
    # Member 1 was training, and stopped: it saved where it stopped, long before its budget, and is not finished.
    rows = ckpt.read_metrics(first)
    _, meta = ckpt.load_weights(first / ckpt.LAST)
    assert rows and int(meta["step"]) == rows[-1]["step"] < epochs * 5
    assert not (first / ensembles.FINISHED).exists()


def subprocess_env() -> dict[str, str]:
    """The environment of a child Python that imports this rnnlm (installed or from PYTHONPATH)."""
    src = str(Path(rnnlm.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}


@pytest.mark.e2e
def test_ctrl_c_that_reaches_only_the_parent_stops_every_member(files, tmp_path):
    """Jupyter's interrupt and `kill -INT` reach the parent alone, not the workers (as a terminal's Ctrl-C does)."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two CPU cores")
    out, epochs = tmp_path / "run", 150
    args = ["tag", "train", str(files / "train.txt"), "--dev", str(files / "dev.txt"), *TAGGER_FLAGS, "--threads", "1",
            "--epochs", str(epochs), "--patience", "0", "--ensemble", "2", "--jobs", "2",
            "--out", str(out)]  # fmt: skip
    code = "import sys; from rnnlm.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=subprocess_env(), start_new_session=True,  # its own process group: the test's Ctrl-C stays here
    )  # fmt: skip
    try:
        metrics = [out / "members" / str(i) / ckpt.METRICS for i in (0, 1)]
        deadline = time.monotonic() + 600  # only against a hang
        while not all(m.is_file() for m in metrics) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGINT)  # the parent alone
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, stderr
    for i in (0, 1):
        where = out / "members" / str(i)
        step = int(ckpt.load_weights(where / ckpt.LAST)[1]["step"])
        assert step < epochs * 5 and not (where / ensembles.FINISHED).exists()
        assert f"member {i + 1}/2 saved {where / ckpt.LAST} at step {step}" in stderr  # the message is true
        assert f"member {i + 1}/2 | asked to stop by the ensemble run" in stdout
    assert f"continue with: rnnlm tag train --resume {out}" in stderr


def test_a_member_that_starts_after_the_stop_request_stops_at_once(files, tmp_path, monkeypatch):
    """The request can come while a worker is still setting its member up (building the model): the member
    must still stop, after its first step, and a member taken up later must not begin."""
    monkeypatch.setattr(ensembles, "_stop_asked", threading.Event())  # this process plays the worker
    stop, before = threading.Event(), set(threading.enumerate())
    ensembles._watch(stop, os.getppid(), every=0.01)
    (watcher,) = set(threading.enumerate()) - before
    build = tag_run.build_tagger

    def build_then_stop(*args, **kwargs):
        model = build(*args, **kwargs)
        stop.set()  # the run asks its members to stop while this one is being set up
        watcher.join(timeout=5)
        return model

    monkeypatch.setattr(tag_run, "build_tagger", build_then_stop)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt, match="member 1/2: saved"):
        train(files, out, ensemble=2, jobs=1, epochs=20)
    assert ckpt.load_weights(out / "members/0" / ckpt.LAST)[1]["step"] == "1"
    assert not (out / "members/0" / ensembles.FINISHED).exists() and not (out / "members/1").exists()
    with pytest.raises(KeyboardInterrupt, match="member 1/2: not begun"):
        tag_run.train(runs.open_run(out, tag_run.KIND).config, resume=out, log=lambda _: None)
    assert ckpt.load_weights(out / "members/0" / ckpt.LAST)[1]["step"] == "1"


@pytest.mark.e2e
def test_resuming_an_ensemble_starts_a_member_that_saved_nothing_from_the_word_vectors(files, tmp_path):
    rng = np.random.default_rng(0)
    words = sorted({w for line in (files / "train.txt").read_text().splitlines()[2:] if line for w in line.split()[:1]})
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("".join(f"{w} {' '.join(f'{x:.4f}' for x in rng.standard_normal(16))}\n" for w in words))
    run = tmp_path / "run"
    train(files, run, ensemble=2, jobs=1, epochs=1, word_vectors=str(vectors))
    want = ckpt.load_weights(run / "members/1" / ckpt.LAST)[0]
    shutil.rmtree(run / "members/1")  # member 2 had saved nothing when the run stopped
    (run / tag_run.MODEL).unlink()
    tag_run.train(runs.open_run(run, tag_run.KIND).config, resume=run, log=lambda _: None)
    got = ckpt.load_weights(run / "members/1" / ckpt.LAST)[0]
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)  # as if never stopped
    vectors.write_text(vectors.read_text() + "Zyzzyva " + " ".join(["0.5"] * 16) + "\n")
    shutil.rmtree(run / "members/1")
    (run / tag_run.MODEL).unlink()
    with pytest.raises(ConfigError, match="changed since the run began"):
        tag_run.train(runs.open_run(run, tag_run.KIND).config, resume=run, log=lambda _: None)


CPU, GPU = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    ("ensemble", "jobs", "threads", "device", "cores", "plan"),
    [
        (2, 0, -1, CPU, 2, (2, -1, 1)),  # timed threads: members still side by side, each timing within its core
        (4, 0, -1, CPU, 8, (4, -1, 2)),
        (2, 0, 1, CPU, 2, (2, 1, 1)),  # one thread per step: one member per core, not one member at a time
        (4, 0, 2, CPU, 4, (2, 2, 2)),  # two threads per step: as many members as the cores hold
        (3, 0, 0, CPU, 8, (3, 2, 2)),  # torch's default: the cores shared among the members
        (2, 1, 0, CPU, 8, (1, 0, 0)),  # --jobs 1: one at a time, with torch's default
        (2, 1, -1, CPU, 8, (1, -1, 0)),
        (2, 2, 4, CPU, 2, (2, 4, 4)),  # both given: honoured
        (2, 0, 0, GPU, 8, (1, 0, 0)),
        (5, 0, 0, CPU, 1, (1, 0, 0)),
    ],
)
def test_threads_are_per_step_and_jobs_are_members_at_a_time(ensemble, jobs, threads, device, cores, plan):
    assert ensembles.ensemble_plan(ensemble, jobs, threads, device, cores) == plan


@pytest.mark.e2e
@pytest.mark.parametrize(("threads", "want"), [(-1, "with 1 thread(s) each"), (1, "with 1 thread(s) each")])
def test_an_ensemble_with_one_or_timed_threads_trains_side_by_side(files, tmp_path, monkeypatch, threads, want):
    calls, lines = [], []

    class Started(Exception):
        pass

    def parallel(todo, n, *args):
        calls.append((n, [(job.cfg.train.threads, job.threads) for job in todo]))
        raise Started

    def one_at_a_time(job, write_files=None, log=None):
        calls.append("one at a time")
        raise Started

    monkeypatch.setattr(ensembles, "train_in_workers", parallel)
    monkeypatch.setattr(tag_run, "_train_member", one_at_a_time)
    monkeypatch.setattr(ensembles.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)  # two cores
    settings = {**TAGGER, "dev": str(files / "dev.txt"), "epochs": 1, "progress": False}
    with pytest.raises(Started):
        tagging.train(files / "train.txt", out=str(tmp_path / "run"), log=lines.append, ensemble=2, jobs=0,
                      threads=threads, **settings)  # fmt: skip
    assert calls == [(2, [(threads, 1), (threads, 1)])]
    (line,) = [x for x in lines if x.startswith("ensemble:")]
    assert line.endswith(f"2 to train, 2 at a time {want}"), line


@pytest.mark.e2e
def test_workers_receive_the_sentences_in_shared_memory(files, tmp_path, monkeypatch):
    """One copy of the encoded sentences (and word vectors) in shared memory, which every worker maps: pickled
    for a worker, the job holds handles, not the arrays."""
    rng = np.random.default_rng(0)
    sents = [
        EncodedSentence(rng.integers(0, 30, n), rng.integers(0, 12, (n, w)), rng.integers(-1, 4, n),
                        rng.standard_normal((n, 64)).astype(np.float16), rng.integers(0, 3, n))
        for n, w in [(3, 4), (5, 2), (1, 7), (6, 6)] * 250
    ]  # fmt: skip
    shared = tag_run.SharedSentences(sents)
    assert all(t.is_shared() for t in shared.flat.values())
    back = shared.unpack()
    for a, b in zip(sents, back, strict=True):
        for f in ("words", "chars", "tags", "lm", "aux"):
            x, y = getattr(a, f), getattr(b, f)
            assert x.dtype == y.dtype and np.array_equal(x, y) and np.shares_memory(y, shared.flat[f].numpy()), f
    features = sum(s.lm.nbytes for s in sents)
    assert len(ForkingPickler.dumps(shared)) < features / 10  # handles and shapes; pickle.dumps would copy it all
    assert tag_run.SharedSentences(sents[:3]).unpack()[0].aux is not None
    assert tag_run.SharedSentences([EncodedSentence(*(x for x in (sents[0].words,) * 3))]).unpack()[0].lm is None
    # What a real ensemble hands its workers: the same shared sentences for every member.
    jobs = []
    monkeypatch.setattr(ensembles, "train_in_workers", lambda todo, *args: jobs.extend(todo) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        train(files, tmp_path / "run", ensemble=2, jobs=2, epochs=1)
    assert isinstance(jobs[0].train, tag_run.SharedSentences) and jobs[0].train is jobs[1].train
    assert jobs[0].dev is jobs[1].dev and all(t.is_shared() for t in jobs[0].train.flat.values())
    assert len(ForkingPickler.dumps(jobs[0])) < len(pickle.dumps([jobs[0].train.unpack(), jobs[0].dev.unpack()]))


def test_a_worker_whose_parent_is_gone_stops_as_ctrl_c_would(monkeypatch):
    parent = os.getppid() + 1  # the pool's process id, as the worker was given it: not its parent now
    monkeypatch.setattr(ensembles, "_stop_asked", asked := threading.Event())
    before = set(threading.enumerate())
    ensembles._watch(threading.Event(), parent, every=0.01)
    (watcher,) = set(threading.enumerate()) - before
    watcher.join(timeout=5)
    assert asked.is_set()
    # With its parent alive, a worker waits for the stop event.
    monkeypatch.setattr(ensembles, "_stop_asked", asked := threading.Event())
    stop, before = threading.Event(), set(threading.enumerate())
    ensembles._watch(stop, os.getppid(), every=0.01)
    (watcher,) = set(threading.enumerate()) - before
    watcher.join(timeout=0.1)
    assert watcher.is_alive() and not asked.is_set()
    stop.set()
    watcher.join(timeout=5)
    assert asked.is_set()


@pytest.mark.e2e
def test_without_room_in_shared_memory_each_worker_gets_a_copy(files, tmp_path, monkeypatch):
    def no_room(self):
        raise RuntimeError("unable to allocate shared memory(shm) for file </torch_1>: No space left on device (28)")

    jobs, lines = [], []
    monkeypatch.setattr(torch.Tensor, "share_memory_", no_room)
    monkeypatch.setattr(ensembles, "train_in_workers", lambda todo, *args: jobs.extend(todo) or 1 / 0)
    settings = {**TAGGER, "dev": str(files / "dev.txt"), "epochs": 1, "progress": False, "threads": 1}
    with pytest.raises(ZeroDivisionError):
        tagging.train(files / "train.txt", out=str(tmp_path / "run"), log=lines.append, ensemble=2, jobs=2, **settings)
    assert [type(j.train) for j in jobs] == [list, list] and len(jobs[0].train) == 40
    assert any(line.startswith("note: no room in shared memory") and "--shm-size" in line for line in lines)
