"""Training-time augmentation of audio: speed and volume perturbation and noise mixing on the samples, then
SpecAugment's time and frequency masks on the features, before deltas and normalization.

A training batch of an audio run is computed afresh from its samples by ``AudioAugmenter``, with a generator
seeded by (seed, epoch, batch), so that a resumed run sees the batches of a run trained straight through.
Validation, test and prediction read clean features. ``mix_at_snr`` is also what the benchmark uses to build a
noisy test set, so that "15 dB" means one thing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rnnlm.frames.config import FramesAudioConfig
from rnnlm.frames.features import FeatureExtractor
from rnnlm.training.threads import num_threads


def mix_at_snr(wave: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``wave`` plus ``noise`` (looped or cut to its length) scaled so that the mean power of the wave over the
    whole file is ``snr_db`` dB above the noise's."""
    if len(noise) < len(wave):
        noise = np.tile(noise, -(-len(wave) // len(noise)))
    noise = noise[: len(wave)].astype(np.float64)
    p_signal = float(np.mean(np.square(wave, dtype=np.float64)))
    p_noise = max(float(np.mean(np.square(noise))), 1e-20)
    scale = np.sqrt(p_signal / (p_noise * 10 ** (snr_db / 10)))
    return (wave + scale * noise).astype(np.float32)


def change_speed(wave: np.ndarray, factor: float, rate: int) -> np.ndarray:
    """The wave played ``factor`` times as fast (tempo and pitch together, as a tape would): len / factor samples."""
    from rnnlm.frames.audio import resample

    return resample(wave, rate * factor, rate) if factor != 1 else wave


def mask_spans(x: torch.Tensor, dim: int, count: int, width: int, rng: np.random.Generator) -> torch.Tensor:
    """SpecAugment: ``count`` spans of 0..``width`` rows (dim 0: frames) or columns (dim 1: bands) of a (T, F)
    feature matrix set to the utterance's mean of each band, which per-utterance normalization maps to 0."""
    x = x.clone()
    fill = x.mean(dim=0)  # (F,)
    size = x.shape[dim]
    for _ in range(count):
        w = min(int(rng.integers(0, width + 1)), size)
        start = int(rng.integers(0, size - w + 1))
        if dim == 0:
            x[start : start + w] = fill
        else:
            x[:, start : start + w] = fill[start : start + w]
    return x


class AudioAugmenter:
    """Augmented features (and per-frame labels, stretched with the speed) of a batch of waveforms."""

    def __init__(self, cfg: FramesAudioConfig, noises: list[np.ndarray] | None = None) -> None:
        self.cfg, self.noises = cfg, noises
        self.extract = FeatureExtractor(cfg)

    def wave(self, wave: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """One utterance's perturbed samples and its speed factor."""
        c = self.cfg
        factor = float(rng.uniform(1 - c.speed, 1 + c.speed)) if c.speed else 1.0
        wave = change_speed(wave, factor, c.sample_rate)
        if c.volume_db:
            wave = wave * np.float32(10 ** (rng.uniform(-c.volume_db, c.volume_db) / 20))
        if c.noise_prob and rng.random() < c.noise_prob:
            if self.noises is None:
                noise = rng.standard_normal(len(wave))
            else:
                source = self.noises[int(rng.integers(len(self.noises)))]
                noise = np.roll(source, -int(rng.integers(len(source))))
            wave = mix_at_snr(wave, noise, float(rng.uniform(c.noise_snr_min, c.noise_snr_max)))
        return wave, factor

    def __call__(
        self, waves: Sequence[np.ndarray], labels: Sequence[np.ndarray] | None, rng: np.random.Generator
    ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """Features of each wave after augmentation; with per-frame labels, each frame takes the label of the
        original frame at the same point of the utterance."""
        c = self.cfg
        out, out_labels = [], []
        with torch.no_grad(), num_threads(1):  # see FeatureExtractor.__call__
            for i, wave in enumerate(waves):
                wave, factor = self.wave(wave, rng)
                static = self.extract.static(wave)
                static = mask_spans(static, 0, c.spec_time_masks, c.spec_time_width, rng)
                static = mask_spans(static, 1, c.spec_freq_masks, c.spec_freq_width, rng)
                out.append(self.extract.finish(static).numpy())
                if labels is not None:
                    old = labels[i]
                    where = np.minimum(np.round(np.arange(len(static)) * factor).astype(np.int64), len(old) - 1)
                    out_labels.append(old[where])
        return out, (out_labels if labels is not None else None)
