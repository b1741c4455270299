"""Reading audio data sets (frames/audio.py): layouts, resampling, bad files, the short/silent rule, interval
labels on the frame grid, the feature cache, and augmentation (frames/augment.py)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from audio_checks import RATE, tone, tone_folders, write_wav
from rnnlm.core.errors import DataError
from rnnlm.core.paths import cache_root
from rnnlm.frames.audio import (
    energy_intervals,
    interval_labels,
    list_audio,
    read_audio,
    read_audio_dataset,
    read_intervals,
)
from rnnlm.frames.augment import AudioAugmenter, change_speed, mix_at_snr
from rnnlm.frames.config import FramesAudioConfig
from rnnlm.frames.features import FeatureExtractor

pytest.importorskip("soundfile")
CFG = FramesAudioConfig(sample_rate=8000, hop_ms=10)


def test_class_folders_give_one_label_per_file(tmp_path):
    tone_folders(tmp_path / "words", 3, seed=0)
    (tmp_path / "words" / "_background_noise_").mkdir()
    write_wav(tmp_path / "words" / "_background_noise_" / "n.wav", np.zeros(800))
    logs = []
    ds = read_audio_dataset(tmp_path / "words", CFG, log=logs.append)
    assert ds.classes == ["high", "low"] and ds.task == "classify" and len(ds) == 6 and not logs
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.num_features == 120 and ds.waves is None


def test_manifests_csv_and_jsonl_read_alike(tmp_path):
    tone_folders(tmp_path, 2, seed=1)
    rows = [("low/0.wav", "low"), ("high/1.wav", "high")]
    (tmp_path / "m.csv").write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in rows), encoding="utf-8")
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"path": p, "label": lab}) + "\n" for p, lab in rows))
    a, b = (read_audio_dataset(tmp_path / f"m.{s}", CFG) for s in ("csv", "jsonl"))
    assert a.classes == b.classes == ["high", "low"] and a.labels.tolist() == b.labels.tolist() == [1, 0]
    np.testing.assert_array_equal(a.sequences[0], b.sequences[0])


def test_resampling_stereo_and_flac(tmp_path):
    import soundfile as sf

    x = tone(500, 0.5, rate=RATE)
    stereo = np.stack([x, x], axis=1)
    write_wav(tmp_path / "s.wav", stereo, channels=2)
    sf.write(tmp_path / "s.flac", x, RATE, subtype="PCM_16")
    wav, flac = read_audio(tmp_path / "s.wav", RATE), read_audio(tmp_path / "s.flac", RATE)
    np.testing.assert_allclose(wav, flac, atol=1e-4)  # mono mix of two equal channels = the channel
    up = read_audio(tmp_path / "s.wav", 16000)
    assert len(up) == 2 * len(wav)
    spectrum = np.abs(np.fft.rfft(up))
    assert np.fft.rfftfreq(len(up), 1 / 16000)[spectrum.argmax()] == pytest.approx(500, abs=2)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not a sound file at all", "not a readable sound file"), (b"RIFF\x00\x00", "not a readable sound file")],
)
def test_a_bad_file_is_named(tmp_path, content, message):
    tone_folders(tmp_path, 1, seed=2)
    (tmp_path / "low" / "broken.wav").write_bytes(content)
    with pytest.raises(DataError, match=rf"broken\.wav: {message}"):
        read_audio_dataset(tmp_path, CFG)


def test_an_empty_file_is_named(tmp_path):
    write_wav(tmp_path / "a" / "empty.wav", np.zeros(0))
    with pytest.raises(DataError, match=r"empty\.wav: holds no samples"):
        read_audio_dataset(tmp_path, CFG)


def test_manifest_errors_name_the_line(tmp_path):
    (tmp_path / "m.csv").write_text("path,label\na.wav,yes\nb.wav,\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"m\.csv:3: needs a path and exactly one of label or intervals"):
        list_audio(tmp_path / "m.csv")
    (tmp_path / "m.jsonl").write_text('{"path": "a.wav", "label": "x"}\n{oops\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"m\.jsonl:2: not JSON"):
        list_audio(tmp_path / "m.jsonl")
    (tmp_path / "m2.csv").write_text("path,label\nmissing.wav,yes\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"missing\.wav: no such file"):
        read_audio_dataset(tmp_path / "m2.csv", CFG)


def test_short_and_silent_files_are_skipped_and_listed(tmp_path):
    tone_folders(tmp_path, 2, seed=3)
    write_wav(tmp_path / "low" / "silent.wav", np.zeros(RATE))
    write_wav(tmp_path / "low" / "short.wav", tone(300, 0.05))
    logs = []
    ds = read_audio_dataset(tmp_path, CFG, log=logs.append)
    assert len(ds) == 4
    assert len(logs) == 1 and "skipped 2 of 6 files" in logs[0] and "silent.wav" in logs[0] and "short.wav" in logs[0]
    write_wav(tmp_path / "only" / "silent.wav", np.zeros(RATE))
    with pytest.raises(DataError, match="every file is too short or silent"):
        read_audio_dataset(tmp_path / "only" / "silent.wav", CFG)


def test_intervals_land_on_frame_centres(tmp_path):
    """Frame t (centre t * 10 ms) takes the label of the interval [start, end) holding its centre."""
    x = np.concatenate([np.zeros(round(0.3 * RATE)), tone(1000, 0.3), np.zeros(round(0.2 * RATE))])
    write_wav(tmp_path / "a.wav", x + 1e-3)
    (tmp_path / "a.txt").write_text("start,end,label\n0.3,0.6,tone\n0.705,0.72,blip\n", encoding="utf-8")
    (tmp_path / "m.csv").write_text("path,intervals\na.wav,a.txt\n", encoding="utf-8")
    ds = read_audio_dataset(tmp_path / "m.csv", CFG)
    assert ds.task == "label" and ds.classes == ["_", "blip", "tone"]
    labels = np.array(ds.classes)[ds.labels[0]]
    assert len(labels) == len(ds.sequences[0]) == 1 + len(x) // 80
    brute = ["tone" if 0.3 <= t / 100 < 0.6 else "blip" if 0.705 <= t / 100 < 0.72 else "_" for t in range(len(labels))]
    assert labels.tolist() == brute
    assert labels[29:31].tolist() == ["_", "tone"] and labels[59:61].tolist() == ["tone", "_"]
    assert labels[70:73].tolist() == ["_", "blip", "_"]  # 0.70 is before 0.705, 0.72 is the end


def test_interval_errors(tmp_path):
    p = tmp_path / "i.txt"
    p.write_text("0.5\t0.2\tx\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"i\.txt:1: expected start,end,label"):
        read_intervals(p)
    p.write_text("0,0.5,a\n0.4,0.8,b\n", encoding="utf-8")
    with pytest.raises(DataError, match="overlap"):
        read_intervals(p)


def test_energy_intervals_find_the_tone():
    x = np.concatenate([np.zeros(2400), tone(700, 0.4), np.zeros(2400)]) + 1e-4
    spans = energy_intervals(x, RATE)
    assert len(spans) == 1 and spans[0][2] == "speech"
    assert spans[0][0] == pytest.approx(0.3, abs=0.011) and spans[0][1] == pytest.approx(0.7, abs=0.011)
    times = np.arange(100) / 100
    assert interval_labels(spans, times, "_")[29:32] == ["_", "speech", "speech"]


def test_the_cache_returns_what_was_computed_and_keys_on_settings(tmp_path, monkeypatch):
    tone_folders(tmp_path / "d", 2, seed=4)
    cached = dataclasses.replace(CFG, cache=True)
    first = read_audio_dataset(tmp_path / "d", cached)
    assert len(list((cache_root() / "audio_features").glob("*.npy"))) >= 4, "the cache was not written"
    # A poisoned cache entry is what a second read returns: it really reads the cache ...
    monkeypatch.setattr(FeatureExtractor, "__call__", lambda self, w: pytest.fail("computed again"))
    again = read_audio_dataset(tmp_path / "d", cached)
    for a, b in zip(first.sequences, again.sequences, strict=True):
        np.testing.assert_array_equal(a, b)
    # ... and other settings miss it.
    with pytest.raises(pytest.fail.Exception, match="computed again"):
        read_audio_dataset(tmp_path / "d", dataclasses.replace(cached, n_mels=20))


def test_mix_at_snr_and_speed():
    rng = np.random.default_rng(0)
    x = tone(440, 1.0).astype(np.float32)
    noise = rng.standard_normal(3000)
    y = mix_at_snr(x, noise, 15.0)
    added = y.astype(np.float64) - x
    assert 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(added**2)) == pytest.approx(15.0, abs=0.01)
    fast = change_speed(x, 1.25, RATE)
    assert len(fast) == pytest.approx(len(x) / 1.25, abs=2)


def test_augmenter_stretches_frame_labels_with_the_speed():
    cfg = dataclasses.replace(CFG, speed=0.3, noise_prob=0.0, volume_db=0.0, spec_time_masks=0, spec_freq_masks=0)
    aug = AudioAugmenter(cfg)
    x = tone(440, 1.0).astype(np.float32)
    labels = (np.arange(101) >= 50).astype(np.int64)  # the second half
    rng = np.random.default_rng(5)
    feats, out = aug([x], [labels], rng)
    factor = 101 / len(out[0])
    assert len(feats[0]) == len(out[0]) and abs(factor - 1) > 0.01
    switch = int(np.argmax(out[0]))
    assert switch == pytest.approx(50 / factor, abs=1)


def test_augmentation_is_seeded_and_leaves_clean_features_alone():
    aug = AudioAugmenter(CFG)
    x = tone(440, 0.5, rng=np.random.default_rng(1)).astype(np.float32)
    a, _ = aug([x], None, np.random.default_rng(7))
    b, _ = aug([x], None, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    clean = FeatureExtractor(CFG)(x)
    assert a[0].shape[1] == clean.shape[1] and not np.allclose(a[0][: len(clean)], clean[: len(a[0])])


def test_the_audio_recipe_applies_to_audio_under_explicit_settings(tmp_path):
    from rnnlm.frames.config import AUDIO_FCN, AUDIO_RECIPE, FramesRunConfig, build_frames_config

    tone_folders(tmp_path / "words", 1, seed=6)
    cfg = build_frames_config({"data": {"train_path": str(tmp_path / "words")}})
    assert (cfg.fit.ensemble, cfg.fit.refit, cfg.model.fcn) == (1, False, AUDIO_FCN)
    assert cfg.train.epochs == AUDIO_RECIPE["train"]["epochs"] and cfg.train.batch_size == 32
    mine = build_frames_config({"data": {"train_path": str(tmp_path / "words")}, "train": {"batch_size": 4}})
    assert mine.train.batch_size == 4
    budget = build_frames_config({"data": {"train_path": str(tmp_path / "words")}, "train": {"time_budget": 60}})
    assert budget.train.epochs is None  # a budget given alone governs alone
    (tmp_path / "m.csv").write_text("path,intervals\nwords/low/0.wav,i.txt\n", encoding="utf-8")
    labeler = build_frames_config({"data": {"train_path": str(tmp_path / "m.csv")}})
    assert labeler.model.fcn is None and labeler.fit.ensemble == 1  # no convolutional branch for per-frame labels
    assert build_frames_config({"data": {"train_path": "x.ts"}}).fit == FramesRunConfig().fit
