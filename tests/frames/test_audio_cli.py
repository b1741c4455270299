"""`rnnlm frames train | eval | predict | stream` end to end on tiny WAV files made here; streaming against
prediction on the same audio."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import numpy as np
import pytest

from audio_checks import RATE, tone, tone_folders, write_wav
from rnnlm.cli import main
from rnnlm.frames import api as frames
from rnnlm.frames.audio import read_audio, read_audio_dataset
from rnnlm.frames.augment import AudioAugmenter
from rnnlm.frames.config import FramesAudioConfig, FramesTrainConfig
from rnnlm.frames.task import FrameTask
from tiny import FRAMES_FLAGS, run_frames_cli

pytest.importorskip("soundfile")
AUDIO = ["--sample-rate", str(RATE), "--n-mels", "20", "--fcn", "8", "--epochs", "4"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio_cli")
    tone_folders(d / "train", 8, seed=0)
    tone_folders(d / "test", 3, seed=1)
    code, log = run_frames_cli(
        "train", str(d / "train"), "--test", str(d / "test"), "--out", str(d / "run"), *FRAMES_FLAGS, *AUDIO
    )
    assert code == 0, log
    return d, log


@pytest.mark.e2e
def test_train_on_folders_records_the_audio_settings(trained):
    d, log = trained
    assert "20 classes" not in log and "test: accuracy" in log
    cfg = json.loads((d / "run" / "config.json").read_text())
    assert cfg["audio"]["sample_rate"] == RATE and cfg["audio"]["n_mels"] == 20
    assert cfg["fit"] == {"ensemble": 1, "refit": False} and cfg["model"]["fcn"] == 8  # the recipe, under --fcn
    assert cfg["train"]["batch_size"] == 8 and cfg["train"]["epochs"] == 4
    side = json.loads((d / "run" / "classes.json").read_text())
    assert side["input"] == "audio" and side["num_features"] == 60 and side["classes"] == ["high", "low"]


@pytest.mark.e2e
def test_predict_and_eval_read_sound_files(trained):
    d, _ = trained
    files = sorted(str(p) for p in (d / "test").rglob("*.wav"))
    code, out = run_frames_cli("predict", str(d / "run"), *files)
    assert code == 0
    lines = [line.split("\t") for line in out.splitlines()]
    assert [p for p, _ in lines] == files
    model = frames.load(d / "run")
    assert [lab for _, lab in lines] == model.predict(files).tolist()
    code, out = run_frames_cli("eval", str(d / "run"), str(d / "test"), "--json")
    assert code == 0 and json.loads(out)["accuracy"] == model.evaluate(d / "test")["accuracy"]


@pytest.mark.e2e
def test_streaming_a_file_gives_what_prediction_gives(trained, tmp_path):
    """A file shorter than the window: streaming's last label reads the whole file, as prediction does; in chunks
    at another rate (resampled as they come) it agrees to resampling's precision."""
    d, _ = trained
    model = frames.load(d / "run")
    x = tone(1200, 0.35, rng=np.random.default_rng(3))
    write_wav(tmp_path / "a.wav", x)
    want = model.predict_proba([read_audio(tmp_path / "a.wav", RATE)])[0]
    steps = list(model.stream(np.array_split(read_audio(tmp_path / "a.wav", RATE), 7), window=1.0, step=0.1))
    assert [s.time for s in model.stream([read_audio(tmp_path / "a.wav", RATE)])] == [0.2, 0.35]  # default step
    assert [round(s.time, 3) for s in steps] == [0.1, 0.2, 0.3, 0.35]
    assert steps[-1].label == model.classes[int(want.argmax())]
    assert steps[-1].probability == pytest.approx(float(want.max()), abs=1e-5)
    write_wav(tmp_path / "b.wav", np.repeat(x, 2), rate=2 * RATE)  # the same sound at twice the rate
    chunks = np.array_split(read_audio(tmp_path / "b.wav", 2 * RATE), 5)
    last = list(model.stream(chunks, rate=2 * RATE, window=1.0, step=0.1))[-1]
    assert last.label == steps[-1].label and last.probability == pytest.approx(steps[-1].probability, abs=0.05)
    # the CLI, from a file and from a WAV stream on standard input
    code, out = run_frames_cli("stream", str(d / "run"), str(tmp_path / "a.wav"))
    assert code == 0 and out.splitlines()[-1].split("\t")[:2] == ["0.350", steps[-1].label]
    stdin = io.TextIOWrapper(io.BytesIO((tmp_path / "a.wav").read_bytes()))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stdin", stdin)
        code, piped = run_frames_cli("stream", str(d / "run"), "--chunk", "0.03")
    assert code == 0 and piped == out


@pytest.mark.e2e
def test_predict_frames_of_a_classifier_follow_the_window(trained, tmp_path):
    d, _ = trained
    write_wav(tmp_path / "a.wav", tone(300, 0.3, rng=np.random.default_rng(4)))
    code, out = run_frames_cli("predict", str(d / "run"), str(tmp_path / "a.wav"), "--frames")
    lines = out.splitlines()
    assert code == 0 and lines[0] == str(tmp_path / "a.wav")
    assert len(lines) - 1 == round(0.3 / 0.02)  # one label a hop (20 ms) after the first
    assert lines[-1].split("\t") == ["0.300", frames.load(d / "run").predict([str(tmp_path / "a.wav")])[0]]


@pytest.mark.e2e
def test_a_labeler_learns_frames_from_intervals(tmp_path):
    """Voice activity: tones in silence, the intervals found from the energy of the clean files."""
    from rnnlm.frames.audio import energy_intervals

    rng = np.random.default_rng(0)
    rows = ["path,intervals"]
    for i in range(12):
        x = np.concatenate([np.zeros(rng.integers(800, 2400)), tone(600, 0.3, rng=rng), np.zeros(1600)])
        write_wav(tmp_path / f"{i}.wav", x + 1e-3 * rng.standard_normal(len(x)))
        spans = energy_intervals(read_audio(tmp_path / f"{i}.wav", RATE), RATE)
        (tmp_path / f"{i}.txt").write_text("".join(f"{s},{e},{lab}\n" for s, e, lab in spans), encoding="utf-8")
        rows.append(f"{i}.wav,{i}.txt")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    flags = [*FRAMES_FLAGS, "--sample-rate", str(RATE), "--n-mels", "20", "--epochs", "6", "--lr", "0.02"]
    code, log = run_frames_cli("train", str(tmp_path / "m.csv"), "--out", str(tmp_path / "run"), *flags)
    assert code == 0 and "label, 2 classes" in log
    code, out = run_frames_cli("predict", str(tmp_path / "run"), str(tmp_path / "0.wav"), "--frames")
    labels = [line.split("\t")[1] for line in out.splitlines()[1:]]
    assert code == 0 and len(labels) == 1 + len(read_audio(tmp_path / "0.wav", RATE)) // 160
    assert set(labels) <= {"_", "speech"}


def test_augmented_batches_repeat_for_a_resume(tmp_path):
    """An augmented epoch is drawn from (seed, epoch, batch) alone, so a resumed run sees the same batches."""
    tone_folders(tmp_path, 4, seed=2)
    cfg = FramesAudioConfig(sample_rate=RATE, n_mels=20)
    data = read_audio_dataset(tmp_path, cfg, keep_waves=True)
    task = FrameTask(data, None, FramesTrainConfig(batch_size=3), 8, "cpu", augment=AudioAugmenter(cfg))
    a, b = list(task.batches(2)), list(task.batches(2, start=1))
    assert len(a) == 3 and np.array_equal(a[1].frames.numpy(), b[0].frames.numpy())
    assert not np.array_equal(a[0].frames.numpy(), list(task.batches(3))[0].frames.numpy())


@pytest.mark.e2e
def test_an_augmented_audio_run_resumes_exactly(tmp_path):
    from rnnlm.core.checkpoint import load_weights

    tone_folders(tmp_path / "d", 4, seed=5)
    common = [str(tmp_path / "d"), *FRAMES_FLAGS, "--sample-rate", str(RATE), "--n-mels", "20", "--patience", "0"]
    assert run_frames_cli("train", *common, "--epochs", "3", "--out", str(tmp_path / "straight"))[0] == 0
    assert run_frames_cli("train", *common, "--epochs", "1", "--out", str(tmp_path / "resumed"))[0] == 0
    code, log = run_frames_cli("train", "--resume", str(tmp_path / "resumed"), "--epochs", "3")
    assert code == 0 and "resumed" in log
    a, _ = load_weights(tmp_path / "straight" / "last.safetensors")
    b, _ = load_weights(tmp_path / "resumed" / "last.safetensors")
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy(), err_msg=k)
    code, out = main_info(tmp_path / "resumed")
    assert code == 0 and "audio" in out


def main_info(run):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["info", str(run)])
    return code, out.getvalue()
