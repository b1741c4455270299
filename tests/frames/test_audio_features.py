"""Audio features (frames/features.py) against librosa's own functions, and the frame grid they sit on."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rnnlm.frames.config import FramesAudioConfig
from rnnlm.frames.features import FeatureExtractor, deltas, mel_filterbank, normalize_utterance

RAW = FramesAudioConfig(hop_ms=10, deltas=0, normalize="global")  # the static features alone, every 160 samples


def signal(n: int = 8000, seed: int = 0) -> np.ndarray:
    """Half a second of noise with a tone in it, at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def librosa():
    return pytest.importorskip("librosa")


def librosa_logmel(librosa, y: np.ndarray, **kw) -> np.ndarray:
    """librosa's log-mel dB, (n_mels, T), with the settings FramesAudioConfig's defaults stand for."""
    mel = librosa.feature.melspectrogram(
        y=y, sr=16000, n_fft=512, hop_length=160, win_length=400, window="hann", center=True, pad_mode="constant", **kw
    )
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)


@pytest.mark.e2e  # librosa compiles its numba functions on first use
@pytest.mark.parametrize("settings", [{}, {"n_mels": 64, "fmin": 50.0, "fmax": 7000.0}])
def test_filterbank_and_log_mel_match_librosa(librosa, settings):
    cfg = dataclasses.replace(RAW, **settings)
    n_mels, fmin, fmax = cfg.n_mels, cfg.fmin, cfg.fmax
    ours = mel_filterbank(16000, 512, n_mels, fmin, fmax)
    np.testing.assert_allclose(
        ours, librosa.filters.mel(sr=16000, n_fft=512, n_mels=n_mels, fmin=fmin, fmax=fmax), atol=1e-8
    )
    y = signal()
    want = librosa_logmel(librosa, y, n_mels=n_mels, fmin=fmin, fmax=fmax).T  # (T, n_mels)
    got = FeatureExtractor(cfg).static(y).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-3)  # dB; float32 FFT against float64


@pytest.mark.e2e
def test_mfcc_and_deltas_match_librosa(librosa):
    y = signal(seed=1)
    logmel = librosa_logmel(librosa, y, n_mels=40)
    want = librosa.feature.mfcc(S=logmel, n_mfcc=13).T
    got = FeatureExtractor(dataclasses.replace(RAW, features="mfcc")).static(y).numpy()
    np.testing.assert_allclose(got, want, atol=5e-3)
    # librosa's delta is a Savitzky-Golay slope; with the edges repeated (mode="nearest") it is the regression
    # slope over +-2 frames, and the second order here is the slope of the slope.
    d1 = librosa.feature.delta(want.T, width=5, order=1, mode="nearest").T
    d2 = librosa.feature.delta(d1.T, width=5, order=1, mode="nearest").T
    full = FeatureExtractor(dataclasses.replace(RAW, features="mfcc", deltas=2)).static(y)
    ours = FeatureExtractor(dataclasses.replace(RAW, features="mfcc", deltas=2)).finish(full).numpy()
    np.testing.assert_allclose(ours[:, 13:26], d1, atol=5e-3)
    np.testing.assert_allclose(ours[:, 26:], d2, atol=5e-3)


def test_deltas_are_the_least_squares_slope():
    """Against a brute-force fit of a line to each frame's neighbourhood (edges repeated)."""
    x = torch.tensor(np.random.default_rng(0).standard_normal((9, 3)), dtype=torch.float64)
    got = deltas(x, 2)
    padded = np.concatenate([x[:1].numpy()] * 2 + [x.numpy()] + [x[-1:].numpy()] * 2)
    for t in range(9):
        for f in range(3):
            slope = np.polyfit(np.arange(-2, 3), padded[t : t + 5, f], 1)[0]
            assert got[t, f].item() == pytest.approx(slope, abs=1e-12)


def test_frame_grid_and_feature_count():
    ex = FeatureExtractor(FramesAudioConfig(hop_ms=10))  # log-mel 40 + 2 orders of deltas
    for n in (1, 159, 160, 161, 8000):
        feats = ex(np.zeros(n, dtype=np.float32) + 0.1)
        assert feats.shape == (1 + n // 160, 120) == (ex.num_frames(n), ex.num_features)
    np.testing.assert_allclose(ex.frame_times(3), [0.0, 0.01, 0.02])


def test_a_tone_lands_in_its_mel_band():
    ex = FeatureExtractor(RAW)
    mel = ex.static(np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000).astype(np.float32)).numpy()
    fb = mel_filterbank(16000, 512, 40)
    assert mel[50].argmax() == fb[:, round(1000 / 16000 * 512)].argmax()


def test_utterance_normalization_and_digital_silence():
    x = torch.tensor(np.random.default_rng(0).standard_normal((50, 4)) * 7 + 3)
    z = normalize_utterance(x)
    np.testing.assert_allclose(z.mean(0).numpy(), 0, atol=1e-6)
    np.testing.assert_allclose(z.std(0, unbiased=False).numpy(), 1, atol=1e-6)
    silent = FeatureExtractor(FramesAudioConfig())(np.zeros(1600, dtype=np.float32))
    assert np.isfinite(silent).all() and np.abs(silent).max() == 0  # -100 dB everywhere, normalized to 0
