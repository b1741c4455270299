"""Tagger ensembles: the combined scores against brute force, and ensemble runs (members trained one at a time
or in worker processes, saved together, loaded, resumed)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading

import pytest
import torch

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import CheckpointError, ConfigError
from rnnlm.tagging import run as tagging
from rnnlm.tagging.config import TaggerConfig
from rnnlm.tagging.model import Tagger, TaggerEnsemble
from rnnlm.training.runs import member_seed
from tag_checks import SMALL, TINY, ner_file, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

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
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ens")
    ner_file(d / "train.txt", 40, seed=0)
    ner_file(d / "dev.txt", 10, seed=1)
    return d


def train(files, out, **kw):
    lines: list[str] = []
    settings = {**SMALL, "dev": str(files / "dev.txt"), "epochs": 3, "progress": False, "threads": 1}
    tagger = tagging.train(files / "train.txt", out=str(out), log=lines.append, **{**settings, **kw})
    return tagger, "\n".join(lines)


@pytest.fixture(scope="module")
def ens_run(files):
    return train(files, files / "seq", ensemble=2, jobs=1)


def test_an_ensemble_run_saves_every_members_best_weights_together(ens_run, files):
    tagger, log = ens_run
    run = files / "seq"
    assert isinstance(tagger.model, TaggerEnsemble) and len(tagger.model.members) == 2
    assert tagger.checkpoint["path"] == str(run / tagging.MODEL)
    weights, meta = ckpt.load_weights(run / tagging.MODEL)
    assert meta["members"] == "2" and json.loads(meta["seeds"]) == [0, member_seed(0, 1)]
    for i in range(2):
        where = run / "members" / str(i)
        config = json.loads((where / ckpt.CONFIG).read_text(encoding="utf-8"))
        assert config["train"]["seed"] == member_seed(0, i) and config["train"]["ensemble"] == 1
        assert json.loads((where / tagging.FINISHED).read_text())["reason"]
        best, _ = ckpt.load_weights(where / ckpt.BEST)
        for k, v in best.items():
            assert torch.equal(weights[f"members.{i}.{k}"], v), k
    first = ckpt.load_weights(run / "members/0" / ckpt.BEST)[0]
    second = ckpt.load_weights(run / "members/1" / ckpt.BEST)[0]
    assert not torch.equal(first["head.weight"], second["head.weight"])  # different seeds, different models
    assert "ensemble on dev" in log and "member 2/2 | " in log
    assert float(meta["val_f1"]) == tagger.evaluate(files / "dev.txt")["f1"]


def test_members_trained_in_worker_processes_match_members_trained_one_at_a_time(ens_run, files):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two CPU cores")
    tagger, _ = train(files, files / "par", ensemble=2, jobs=2)
    seq = ckpt.load_weights(files / "seq" / tagging.MODEL)[0]
    par = ckpt.load_weights(files / "par" / tagging.MODEL)[0]
    assert seq.keys() == par.keys()
    for k in seq:
        torch.testing.assert_close(par[k], seq[k], rtol=0, atol=0, msg=k)
    assert tagger.tag([["Anna", "visited", "Oslo", "."]]) == ens_run[0].tag([["Anna", "visited", "Oslo", "."]])


def test_resume_trains_only_unfinished_members(ens_run, files):
    run = files / "seq"
    lines: list[str] = []
    tagging.fit(tagging.read_tag_run(run)[0], resume=run, log=lines.append)
    assert any("nothing to do" in line for line in lines)
    before = ckpt.load_weights(run / "members/0" / ckpt.BEST)[0]
    (run / tagging.MODEL).unlink()
    (run / "members/1" / tagging.FINISHED).unlink()
    with pytest.raises(CheckpointError, match="has not finished.*--resume"):
        tagging.load(run)
    cfg = tagging.read_tag_run(run)[0]
    cfg.train.epochs = 5
    lines.clear()
    tagging.fit(cfg, resume=run, log=lines.append)
    text = "\n".join(lines)
    assert "member 1/2: finished before" in text and "member 2/2 | resumed at step" in text
    rows = ckpt.read_metrics(run / "members/1")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert len(ckpt.read_metrics(run / "members/0")) == 3
    assert all(torch.equal(v, ckpt.load_weights(run / "members/0" / ckpt.BEST)[0][k]) for k, v in before.items())
    assert isinstance(tagging.load(run).model, TaggerEnsemble)


def test_ensemble_settings_are_checked(files, tmp_path):
    with pytest.raises(ConfigError, match="ensemble"):
        train(files, tmp_path / "a", ensemble=0)
    with pytest.raises(ConfigError, match="jobs"):
        train(files, tmp_path / "b", jobs=-1)
    _, _ = train(files, tmp_path / "c", epochs=1)
    cfg = tagging.read_tag_run(tmp_path / "c")[0]
    cfg.train.ensemble = 2
    with pytest.raises(CheckpointError, match="ensemble"):
        tagging.fit(cfg, resume=tmp_path / "c", log=lambda _: None)


def test_cli_trains_evaluates_and_uses_one_member(files, tmp_path):
    run = tmp_path / "run"
    run_cli("tag", "train", str(files / "train.txt"), "--dev", str(files / "dev.txt"), *TINY, "--epochs", "2",
            "--ensemble", "2", "--jobs", "1", "--out", str(run))  # fmt: skip
    result = json.loads(run_cli("tag", "eval", str(run), str(files / "dev.txt")))
    assert result["checkpoint"].endswith(tagging.MODEL)
    one = json.loads(
        run_cli("tag", "eval", str(run), str(files / "dev.txt"), "--checkpoint", "members/1/best.safetensors")
    )
    assert one["checkpoint"].endswith("members/1/best.safetensors") and one["sentences"] == result["sentences"]


def test_a_failing_member_stops_the_others(files, tmp_path):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two CPU cores")
    out = tmp_path / "run"
    (out / "members").mkdir(parents=True)
    (out / "members" / "1").write_text("in the way")  # member 2 cannot make its directory
    with pytest.raises(OSError):
        train(files, out, ensemble=2, jobs=2, epochs=400, patience=0)
    rows = ckpt.read_metrics(out / "members" / "0") if (out / "members" / "0" / ckpt.METRICS).is_file() else []
    assert len(rows) < 400  # member 1 was stopped, not left to train its 400 epochs


@pytest.mark.parametrize("training", [True, False])
def test_a_worker_whose_parent_is_gone_stops_as_ctrl_c_would(monkeypatch, training):
    parent, kills = os.getppid() + 1, []  # the pool's process id, as the worker was given it: not its parent now
    monkeypatch.setattr(tagging.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    monkeypatch.setattr(tagging._training, "is_set", lambda: training)
    before = set(threading.enumerate())
    tagging._watch(threading.Event(), parent, every=0.01)
    (watcher,) = set(threading.enumerate()) - before
    watcher.join(timeout=5)
    assert kills == ([(os.getpid(), signal.SIGINT)] if training else [])
    # With its parent alive, a worker waits for the stop event.
    stop, kills[:], before = threading.Event(), [], set(threading.enumerate())
    tagging._watch(stop, os.getppid(), every=0.01)
    (watcher,) = set(threading.enumerate()) - before
    watcher.join(timeout=0.1)
    assert watcher.is_alive() and kills == []
    stop.set()
    watcher.join(timeout=5)
    assert kills == ([(os.getpid(), signal.SIGINT)] if training else [])
