"""Training loop: metrics contract, checkpoints, exact resume, interruption, failure modes."""

from __future__ import annotations

import json
import math
import os
import signal
import time

import pytest
import torch

from rnnlm.core import atomic
from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import CheckpointError, ConfigError, OutputError, TrainingError
from rnnlm.lm.config import build_config, split_settings
from rnnlm.lm.run import KIND, read_run, train
from rnnlm.lm.task import LanguageModelTask
from rnnlm.training.runs import resume_config
from rnnlm.training.trainer import Trainer
from tiny import LM_TEXT


def quiet(_msg: str) -> None:
    pass


def weights(run_dir, which=ckpt.LAST):
    return ckpt.load_weights(run_dir / which)[0]


def saved_step(run_dir) -> int:
    """The step of the trainer state inside the last checkpoint."""
    return ckpt.load_checkpoint(run_dir / ckpt.LAST)[2]["step"]


@pytest.mark.e2e
def test_metrics_contract_and_files(tiny_corpus, tiny_lm_config, tmp_path):
    result = train(tiny_lm_config(tmp_path / "run"), log=quiet)
    run = tmp_path / "run"
    lines = [json.loads(x) for x in (run / ckpt.METRICS).read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    for m in lines:
        for key in (
            "step",
            "epoch",
            "elapsed_s",
            "lr",
            "tokens_per_s",
            "train_loss",
            "train_ppl",
            "val_loss",
            "val_ppl",
            "val_bpc",
        ):
            assert key in m, key
        assert m["train_ppl"] == pytest.approx(math.exp(m["train_loss"]))
        assert m["val_bpc"] == pytest.approx(m["val_loss"] / math.log(2))
    assert lines[1]["train_loss"] < lines[0]["train_loss"]
    for name in (ckpt.CONFIG, ckpt.VOCAB, ckpt.LAST, ckpt.BEST):
        assert (run / name).is_file(), name
    cfg, vocab = read_run(run)
    assert cfg.data.level == "char" and len(vocab) == len(set(LM_TEXT))
    assert cfg.data.paths == [str(tiny_corpus.absolute())]  # resumable from any working directory
    assert result.metrics == lines[-1]
    # No temporary files are left behind by the atomic writes.
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.e2e
def test_refuses_to_overwrite_a_run(tiny_lm_config, tmp_path):
    train(tiny_lm_config(tmp_path / "run", epochs=1), log=quiet)
    with pytest.raises(Exception, match="already holds a run"):
        train(tiny_lm_config(tmp_path / "run", epochs=1), log=quiet)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("sampling", "stop", "temperature", "ema"),
    [
        ("sequential", 5, 0.0, 0.0),
        ("random", 5, 0.0, 0.0),
        ("sequential", "epoch", 0.0, 0.0),
        ("random", "epoch", 0.8, 0.0),
        ("sequential", 5, 0.0, 0.9),
    ],
)
def test_resume_continues_exactly(tiny_lm_config, tmp_path, sampling, stop, temperature, ema):
    """Stopping (mid-epoch or at its end) and resuming gives bit-identical weights to training straight through.

    Sampled (temperature > 0) text between epochs must not disturb the training RNG either; with --ema
    the weight average resumes exactly too.
    """
    common = dict(
        ema=ema,
        sampling=sampling,
        dropout=0.2,
        optimizer="adamw",
        layers=2,
        pred_period=1,
        pred_len=5,
        pred_temperature=temperature,
    )
    train(tiny_lm_config(tmp_path / "straight", **common), log=quiet)
    if stop == "epoch":
        stop = json.loads((tmp_path / "straight" / ckpt.METRICS).read_text().splitlines()[0])["step"]
    train(tiny_lm_config(tmp_path / "split", max_steps=stop, **common), log=quiet)
    saved, _ = read_run(tmp_path / "split")
    assert saved_step(tmp_path / "split") == stop
    cfg = resume_config(saved, split_settings({"max_steps": None}), KIND)
    train(cfg, resume=tmp_path / "split", log=quiet)
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    averages = [ckpt.load_checkpoint(tmp_path / run / ckpt.LAST)[2].get("average") for run in ("straight", "split")]
    assert (averages[0] is None) == (ema == 0)
    if ema:
        assert averages[0]["updates"] == averages[1]["updates"] > 0
        assert all(torch.equal(x, y) for x, y in zip(averages[0]["average"], averages[1]["average"], strict=True))
    straight = [json.loads(x) for x in (tmp_path / "straight" / ckpt.METRICS).read_text().splitlines()]
    split = [json.loads(x) for x in (tmp_path / "split" / ckpt.METRICS).read_text().splitlines()]
    # The epoch lines report the same whole-epoch training loss although the epoch was cut in two.
    assert [m["train_loss"] for m in split if isinstance(m["epoch"], int)] == pytest.approx(
        [m["train_loss"] for m in straight]
    )


@pytest.mark.e2e
def test_with_ema_evaluation_and_the_best_checkpoint_see_the_average(tiny_lm_config, tmp_path):
    train(tiny_lm_config(tmp_path / "run", ema=0.9, optimizer="adamw"), log=quiet)
    run = tmp_path / "run"
    raw, _, state = ckpt.load_checkpoint(run / ckpt.LAST)
    best, meta = ckpt.load_weights(run / ckpt.BEST)
    lines = [json.loads(x) for x in (run / ckpt.METRICS).read_text().splitlines()]
    assert int(meta["step"]) == state["step"] == state["average"]["updates"]  # the best is the last step's
    assert (
        float(meta["val_loss"]) == pytest.approx(lines[-1]["val_loss"]) and lines[-1]["val_loss"] < lines[0]["val_loss"]
    )
    cfg, vocab = read_run(run)
    from rnnlm.lm.model import RNNLM

    names = [name for name, p in RNNLM(cfg.model, len(vocab)).named_parameters() if p.requires_grad]
    assert len(names) == len(state["average"]["average"])
    for name, average in zip(names, state["average"]["average"], strict=True):
        assert torch.equal(best[name], average), name  # the saved best is the average ...
    assert any(not torch.equal(best[name], raw[name]) for name in names)  # ... not the trained weights
    with pytest.raises(ConfigError, match="ema"):
        tiny_lm_config(tmp_path / "bad", ema=1.0).check()


@pytest.mark.e2e
def test_ctrl_c_saves_and_resumes(tiny_lm_config, tmp_path, monkeypatch):
    train(tiny_lm_config(tmp_path / "straight"), log=quiet)
    original = Trainer.train_step
    calls = {"n": 0}

    def step_then_interrupt(self, batch):
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C mid-training
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt, match="--resume"):
        train(tiny_lm_config(tmp_path / "run"), log=quiet)
    monkeypatch.setattr(Trainer, "train_step", original)
    assert saved_step(tmp_path / "run") == 7
    saved, _ = read_run(tmp_path / "run")
    train(saved, resume=tmp_path / "run", log=quiet)
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nonfinite_loss_stops_with_advice(tiny_lm_config, tmp_path):
    cfg = tiny_lm_config(tmp_path / "run", optimizer="sgd", lr=float("inf"), clip=0.0)
    with pytest.raises(TrainingError, match=r"(?s)loss became nan.*--lr.*--clip"):
        train(cfg, log=quiet)
    assert not (tmp_path / "run" / ckpt.LAST).exists()  # nothing non-finite was saved


@pytest.mark.e2e
def test_stops_on_max_steps_and_time_budget(tiny_lm_config, tmp_path):
    lines = []
    r = train(tiny_lm_config(tmp_path / "a", max_steps=3, epochs=None), log=lines.append)
    assert r.metrics["step"] == 3 and r.stop_reason == "--max-steps 3 reached"
    assert lines[-1].startswith("stopped: --max-steps 3 reached at step 3, epoch 0.")  # the run says which limit
    r = train(tiny_lm_config(tmp_path / "b", time_budget=0.5, epochs=None), log=quiet)
    assert r.stop_reason == "--time-budget 0.5 s reached" and r.metrics["step"] >= 1


def test_a_time_budget_is_not_cut_short_by_the_default_epochs():
    """--time-budget without --epochs governs alone; the default 10 epochs once stopped a 300 s run at 195 s."""
    assert build_config(split_settings({"time_budget": 300.0})).train.epochs is None
    assert build_config(split_settings({"max_steps": 50})).train.epochs is None
    assert build_config(split_settings({"time_budget": 300.0}), preset="d2l").train.epochs is None
    assert build_config(split_settings({"time_budget": 300.0, "epochs": 3})).train.epochs == 3
    assert build_config().train.epochs == 10


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"eval_batch_size": 0}, "--eval-batch-size must be at least 1"),
        ({"pred_len": -1}, "--pred-len must be at least 0"),
        ({"pred_temperature": -1.0}, "--pred-temperature must be at least 0"),
        ({"lr": 0.0}, "--lr must be positive"),
        ({"device": "gpu7"}, "--device 'gpu7' is not a device"),
    ],
)
def test_bad_settings_fail_before_the_run_directory_exists(tiny_lm_config, tmp_path, setting, message):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        train(tiny_lm_config(out, **setting), log=quiet)
    assert not out.exists()
    train(tiny_lm_config(out, epochs=1), log=quiet)  # so the same --out is still free


@pytest.mark.e2e
def test_train_leaves_the_callers_config_alone(tiny_corpus, tiny_lm_config, tmp_path, monkeypatch):
    cfg = tiny_lm_config(tmp_path / "a", epochs=1, paths=["corpus.txt"])
    before = cfg.to_dict()
    monkeypatch.chdir(tiny_corpus.parent)
    train(cfg, log=quiet)
    assert cfg.to_dict() == before  # level, absolute paths and out are the run's, not the caller's
    cfg.train.out = str(tmp_path / "b")
    train(cfg, log=quiet)  # the same config serves a second run


@pytest.mark.e2e
def test_incompatible_resume_is_refused(tiny_lm_config, tmp_path):
    train(tiny_lm_config(tmp_path / "run", epochs=1), log=quiet)
    saved, _ = read_run(tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"--hidden is 32 but the run used 16"):
        resume_config(saved, split_settings({"hidden": 32}), KIND)
    cfg = resume_config(saved, split_settings({"epochs": 2}), KIND)  # longer training is fine
    assert cfg.train.epochs == 2


@pytest.mark.e2e
def test_damaged_checkpoints_are_reported(tiny_lm_config, tmp_path):
    run = tmp_path / "run"
    train(tiny_lm_config(run, epochs=1), log=quiet)
    data = (run / ckpt.LAST).read_bytes()
    (run / ckpt.LAST).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ckpt.load_weights(run / ckpt.LAST)
    with pytest.raises(CheckpointError, match="corrupt or truncated checkpoint"):
        train(read_run(run)[0], resume=run, log=quiet)
    (run / ckpt.CONFIG).write_text("{ broken", encoding="utf-8")
    with pytest.raises(CheckpointError, match="config.json.*corrupt"):
        read_run(run)
    with pytest.raises(CheckpointError, match="no such run directory"):
        read_run(tmp_path / "missing")


@pytest.mark.e2e
def test_a_crash_while_saving_never_breaks_the_resume(tiny_lm_config, tmp_path, monkeypatch):
    """The last checkpoint is one file: a crash in the middle of a save leaves the previous one whole.

    rnnlm 0.1 wrote the trainer state and the weights as two files; a crash between the two renames
    left a pair that could never resume.
    """
    train(tiny_lm_config(tmp_path / "straight", epochs=3), log=quiet)
    run = tmp_path / "run"
    real_replace, calls = atomic.os.replace, []

    def crash_on_the_second_last_save(src, dst):
        if str(dst).endswith(ckpt.LAST):
            calls.append(dst)
            if len(calls) == 2:
                raise KeyboardInterrupt("power cut")  # not an Exception: nothing may catch it
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", crash_on_the_second_last_save)
    with pytest.raises(KeyboardInterrupt, match="power cut"):
        train(tiny_lm_config(run, epochs=3, save_every=0), log=quiet)
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert saved_step(run) == json.loads((run / ckpt.METRICS).read_text().splitlines()[0])["step"]
    train(read_run(run)[0], resume=run, log=quiet)
    a, b = weights(tmp_path / "straight"), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ckpt.save_weights(run / ckpt.LAST, b, {"step": 1})  # weights without a trainer state
    with pytest.raises(CheckpointError, match="holds no trainer state"):
        train(read_run(run)[0], resume=run, log=quiet)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    atomic.atomic_write_json(path, {"v": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OutputError, match="disk full"):  # a clear error (tests/core/test_atomic_faults.py)
        atomic.atomic_write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert list(tmp_path.iterdir()) == [path]
    monkeypatch.undo()
    umask = os.umask(0)
    os.umask(umask)
    atomic.atomic_write_json(tmp_path / "g.json", {})
    assert (tmp_path / "g.json").stat().st_mode & 0o777 == 0o666 & ~umask  # like a file from open(), not private


@pytest.mark.e2e
def test_importing_rnnlm_leaves_the_process_alone():
    """No umask, matplotlib backend or warning hook is changed by importing or plotting."""
    import subprocess
    import sys

    code = (
        "import os, warnings; os.umask(0o027); hook = warnings.showwarning\n"
        "import matplotlib; backend = matplotlib.get_backend()\n"
        "import rnnlm, rnnlm.core.plot, rnnlm.cli\n"
        "rnnlm.cli.main(['info', '--corpora'])\n"
        "assert os.umask(0o027) == 0o027 and warnings.showwarning is hook and matplotlib.get_backend() == backend\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.e2e
def test_random_sampling_resets_state_and_sequential_carries_it(tiny_lm_config, tmp_path, monkeypatch):
    seen = []
    original = LanguageModelTask.loss

    def spy(self, model, batch):
        seen.append((self.sampler.carries_state, self.carry is not None, len(seen)))
        return original(self, model, batch)

    monkeypatch.setattr(LanguageModelTask, "loss", spy)
    train(tiny_lm_config(tmp_path / "seq", sampling="sequential", epochs=1), log=quiet)
    assert seen[0] == (True, False, 0)  # each epoch starts from a zero state
    assert all(carried for _, carried, b in seen[1:])
    seen.clear()
    train(tiny_lm_config(tmp_path / "rnd", sampling="random", epochs=1), log=quiet)
    assert seen and not any(carries for carries, _, _ in seen)


@pytest.mark.e2e
def test_d2l_preset_config(shared_data, tmp_path):
    cfg = build_config(
        split_settings(
            {
                "paths": [str(shared_data / "jaychou_lyrics.txt")],
                "epochs": 1,
                "progress": False,
                "out": str(tmp_path / "d2l"),
            }
        ),
        preset="d2l",
    )
    lines = []
    result = train(cfg, log=lines.append)
    assert len(result.vocab) == 1027
    assert result.config.model.cell == "rnn" and result.config.model.engine == "scratch"
    assert result.config.model.embed == 0 and result.config.train.lr == 100.0
    assert result.metrics["step"] == 8  # (10,000 - 1) // 35 = 285 windows -> 285 // 32 = 8 batches
    assert not (tmp_path / "d2l" / ckpt.BEST).exists()  # no validation text in the recipe


@pytest.mark.e2e
def test_resume_after_a_crash_keeps_the_better_best_and_clean_metrics(tiny_lm_config, tmp_path, monkeypatch):
    """A hard crash can leave metrics and `best` newer than the saved state; resuming must not undo them."""
    run = tmp_path / "run"
    original = Trainer.train_step

    def crash_at_step_40(self, batch):
        if self.step == 40:
            raise RuntimeError("simulated crash")
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", crash_at_step_40)
    cfg = tiny_lm_config(run, log_every=10, save_every=1e9, epochs=3)  # state saved once, at step 10
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, log=quiet)
    monkeypatch.setattr(Trainer, "train_step", original)
    assert saved_step(run) == 10
    best_before = float(ckpt.load_weights(run / ckpt.BEST)[1]["val_loss"])
    saved, _ = read_run(run)
    train(saved, resume=run, log=quiet)
    steps = [json.loads(x)["step"] for x in (run / ckpt.METRICS).read_text().splitlines()]
    assert steps == sorted(set(steps))  # no step logged twice
    assert float(ckpt.load_weights(run / ckpt.BEST)[1]["val_loss"]) <= best_before


@pytest.mark.e2e
def test_elapsed_is_wall_clock_and_lines_cover_their_interval(tiny_lm_config, tmp_path, monkeypatch):
    losses = []
    original = Trainer.train_step

    def record(self, batch):
        result = original(self, batch)
        losses.append(result)  # (loss, targets): variable-length batches differ in their counts
        return result

    monkeypatch.setattr(Trainer, "train_step", record)
    t0 = time.perf_counter()
    train(tiny_lm_config(tmp_path / "run", log_every=7, epochs=2), log=quiet)
    wall = time.perf_counter() - t0
    lines = [json.loads(x) for x in (tmp_path / "run" / ckpt.METRICS).read_text().splitlines()]
    assert lines[-1]["elapsed_s"] <= wall
    assert [m["elapsed_s"] for m in lines] == sorted(m["elapsed_s"] for m in lines)
    prev = 0
    for m in lines:  # every line, the epoch-end ones included, averages the steps since the line before
        chunk = losses[prev : m["step"]]
        assert m["train_loss"] == pytest.approx(sum(v * n for v, n in chunk) / sum(n for _, n in chunk))
        prev = m["step"]
