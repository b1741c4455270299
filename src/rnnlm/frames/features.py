"""Acoustic features computed in torch from a waveform: log-mel filterbanks or MFCCs, their deltas, and
per-utterance normalization.

Training, evaluation, prediction and streaming all call ``FeatureExtractor``, built from the run's saved
``audio`` settings, so a trained model always reads the features it was trained on.

The frame grid: with a hop of H samples, frame t is centred on sample t * H (time t * H / rate); the signal is
padded with zeros by half a window's FFT length on each side (``torch.stft(center=True)``), so a signal of L
samples has 1 + L // H frames. ``frame_times`` gives those centres, and per-frame labels are aligned to them.

The definitions follow the usual ones (those of librosa's defaults, which the tests compare against): a periodic
Hann window of ``win`` samples centred in an FFT of ``n_fft``; the power spectrum; a mel filterbank on the
Slaney mel scale with Slaney's area normalization; ``10 * log10(max(power, 1e-10))`` (dB); MFCCs as the
orthonormal DCT-II of the log-mel dB; deltas as the least-squares slope over +-N frames with the edge frames
repeated.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from rnnlm.training.threads import num_threads

if TYPE_CHECKING:
    from rnnlm.frames.config import FramesAudioConfig

AMIN = 1e-10  # power floor before the log: -100 dB, so digital silence stays finite
STD_FLOOR = 1e-3  # per-utterance normalization never divides by less (a constant feature stays 0)


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-12) / min_log_hz) / logstep, hz / f_sp)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """The inverse of ``hz_to_mel``."""
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, equally spaced in mels, each scaled to unit area in Hz
    (Slaney's normalization), so that a band's energy does not grow with its width."""
    fmax = rate / 2 if fmax is None else fmax
    fft_hz = np.linspace(0.0, rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))  # (n_mels + 2,)
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_in, n_out) orthonormal DCT-II: ``x @ D`` gives the first n_out coefficients of each row x."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    d = np.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    d[:, 0] /= math.sqrt(2.0)
    return d


def deltas(x: torch.Tensor, n: int = 2) -> torch.Tensor:
    """(T, F) -> (T, F): the least-squares slope of each feature over frames t-n..t+n, the first and last
    frames repeated past the edges (``sum_k k (x[t+k] - x[t-k]) / (2 sum_k k^2)``)."""
    padded = torch.cat([x[:1].expand(n, -1), x, x[-1:].expand(n, -1)])  # (T + 2n, F)
    T = x.shape[0]
    out = torch.zeros_like(x)
    for k in range(1, n + 1):
        out = out + k * (padded[n + k : n + k + T] - padded[n - k : n - k + T])
    return out / (2 * sum(k * k for k in range(1, n + 1)))


def normalize_utterance(x: torch.Tensor) -> torch.Tensor:
    """(T, F) -> (T, F) with zero mean and unit std per feature over the utterance's frames (std floored)."""
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False).clamp_min(STD_FLOOR)
    return (x - mean) / std


class FeatureExtractor:
    """The features of one run's audio settings: ``static`` (log-mel or MFCC per frame) and ``finish`` (deltas
    and normalization); ``__call__`` does both. Waveforms are 1-D float arrays at ``rate``."""

    def __init__(self, cfg: FramesAudioConfig) -> None:
        self.cfg = cfg
        self.rate = cfg.sample_rate
        self.win = round(cfg.win_ms * self.rate / 1000)
        self.hop = round(cfg.hop_ms * self.rate / 1000)
        self.n_fft = cfg.n_fft or 1 << (self.win - 1).bit_length()  # the next power of two
        self.window = torch.hann_window(self.win, periodic=True, dtype=torch.float32)
        fb = mel_filterbank(self.rate, self.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
        self.fbank = torch.tensor(fb.T, dtype=torch.float32)  # (n_fft // 2 + 1, n_mels)
        self.dct = torch.tensor(dct_matrix(cfg.n_mels, cfg.n_mfcc), dtype=torch.float32)  # (n_mels, n_mfcc)

    @property
    def num_static(self) -> int:
        """Values per frame before deltas: n_mels for log-mel, n_mfcc for MFCC."""
        return self.cfg.n_mels if self.cfg.features == "logmel" else self.cfg.n_mfcc

    @property
    def num_features(self) -> int:
        """Values per frame the model reads: the static features and each order of deltas."""
        return self.num_static * (1 + self.cfg.deltas)

    def num_frames(self, samples: int) -> int:
        """Frames of a signal of this many samples (see the module docstring)."""
        return 1 + samples // self.hop

    def frame_times(self, frames: int) -> np.ndarray:
        """(frames,) seconds: the centre of each frame."""
        return np.arange(frames) * self.hop / self.rate

    def power(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(L,) samples -> (T, n_fft // 2 + 1) power spectrum."""
        x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
        spec = torch.stft(
            x,
            self.n_fft,
            hop_length=self.hop,
            win_length=self.win,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # (n_fft // 2 + 1, T)
        return spec.abs().square().T

    def logmel(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(L,) samples -> (T, n_mels) log-mel energies in dB."""
        return 10.0 * torch.log10((self.power(wave) @ self.fbank).clamp_min(AMIN))

    def static(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(L,) samples -> (T, num_static): log-mel dB, or MFCCs of it."""
        mel = self.logmel(wave)
        return mel if self.cfg.features == "logmel" else mel @ self.dct

    def finish(self, static: torch.Tensor) -> torch.Tensor:
        """(T, num_static) -> (T, num_features): deltas appended, then normalized per utterance if asked (a
        global normalization is the model's own, with the training set's statistics)."""
        parts = [static]
        for _ in range(self.cfg.deltas):
            parts.append(deltas(parts[-1], self.cfg.delta_width))
        x = torch.cat(parts, dim=1)
        return normalize_utterance(x) if self.cfg.normalize == "utterance" else x

    def __call__(self, wave: np.ndarray | torch.Tensor) -> np.ndarray:
        """(L,) samples -> (T, num_features) float32 frames, as the model reads them. One thread: an utterance is
        too small to share, and on a busy machine a second thread makes it tens of times slower."""
        with torch.no_grad(), num_threads(1):
            return self.finish(self.static(wave)).numpy()
