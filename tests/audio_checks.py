"""Tiny sound files made here with numpy and the standard library's ``wave`` module: tones that a model tells
apart, for the audio tests."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

RATE = 8000
TONES = {"low": 300.0, "high": 1200.0}


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE, channels: int = 1) -> Path:
    """16-bit PCM WAV of float samples in [-1, 1] ((L,) or (L, channels))."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.clip(np.round(np.asarray(samples) * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def tone(freq: float, seconds: float, rate: int = RATE, rng: np.random.Generator | None = None) -> np.ndarray:
    """A sine at ``freq`` Hz of amplitude 0.5 with a little noise."""
    t = np.arange(round(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    if rng is not None:
        x = x * rng.uniform(0.5, 1.0) + 0.01 * rng.standard_normal(len(t))
    return x


def tone_folders(root: Path, per_class: int, seed: int) -> Path:
    """root/low/*.wav and root/high/*.wav: tones of 0.2 to 0.4 s at 8 kHz."""
    rng = np.random.default_rng(seed)
    for label, freq in TONES.items():
        for i in range(per_class):
            write_wav(root / label / f"{i}.wav", tone(freq * rng.uniform(0.9, 1.1), rng.uniform(0.2, 0.4), rng=rng))
    return root
