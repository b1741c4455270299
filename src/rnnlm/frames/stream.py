"""Labelling audio that arrives in chunks (a microphone, a pipe): the state carried between chunks, and the
real-time factor.

``Streamer`` carries the last ``window`` seconds of audio (resampled to the run's rate as it arrives, by a
streaming resampler) and the count of samples heard. Every ``step`` seconds of audio it computes the features
of that window, exactly as for a file of that length, and runs the model on them, so any model streams, a
bidirectional one included, and a window labelled while streaming gets the label it gets as a file.

Latency. A label at time t has heard the audio up to t, and arrives once the step's computation is done (the
real-time factor times the step). A classifier labels the window: a word is labelled correctly once enough of
it is inside the window, at most ``window`` seconds after it starts, so the window should hold the longest word
(1 s for single words). A bidirectional labeler gives each frame of the last step a label that has seen the
future only up to t: at most ``step`` seconds of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from rnnlm.frames.features import FeatureExtractor
from rnnlm.frames.task import frame_logits
from rnnlm.training.threads import num_threads

if TYPE_CHECKING:
    from rnnlm.frames.api import FrameModel


@dataclass
class StreamLabel:
    """One step's result: the time heard (s), the window's label and its probability; for a labeler, the labels
    of the frames whose centres fell in the step (``frames``, from ``start`` s on)."""

    time: float
    label: str
    probability: float
    start: float = 0.0
    frames: list[str] | None = None


class Streamer:
    """Feed it chunks of samples with ``push``; it returns the labels of the steps they complete. ``flush``
    labels what is left at the end. ``rate`` is the rate of the chunks (default: the run's)."""

    def __init__(self, model: FrameModel, window: float = 1.0, step: float = 0.2, rate: int | None = None) -> None:
        if window <= 0 or step <= 0:
            raise ValueError(f"window and step must be > 0 seconds, got {window}, {step}")
        self.model = model
        self.extract = FeatureExtractor(model.config.audio)
        self.rate = self.extract.rate
        self.window, self.step = round(window * self.rate), max(1, round(step * self.rate))
        self.resampler = None
        if rate is not None and rate != self.rate:
            import soxr

            self.resampler = soxr.ResampleStream(rate, self.rate, 1, dtype="float32")
        self.buffer = np.zeros(0, dtype=np.float32)
        self.start = 0  # the sample number (since the stream began) of buffer[0]
        self.heard = 0  # samples heard so far
        self.labelled = 0  # the sample number of the last step labelled
        self.seconds = 0.0  # time spent computing, for the real-time factor

    def push(self, chunk: np.ndarray) -> list[StreamLabel]:
        """Take (L,) or (L, channels) float samples in [-1, 1]; return the labels of the steps now complete."""
        began = time.perf_counter()
        x = np.asarray(chunk, dtype=np.float32)
        x = x.mean(axis=1) if x.ndim == 2 else x
        if self.resampler is not None:
            x = self.resampler.resample_chunk(x)
        self.buffer = np.concatenate([self.buffer, x])
        self.heard += len(x)
        out = []
        while self.heard - self.labelled >= self.step:
            out.append(self._label(self.labelled + self.step))
        self._trim()
        self.seconds += time.perf_counter() - began
        return out

    def flush(self) -> list[StreamLabel]:
        """The label of the audio after the last complete step, if any."""
        if self.resampler is not None:
            self.buffer = np.concatenate([self.buffer, self.resampler.resample_chunk(np.zeros(0, np.float32), True)])
            self.heard = self.start + len(self.buffer)
        began = time.perf_counter()
        out = [self._label(self.heard, final=True)] if self.heard > self.labelled else []
        self.seconds += time.perf_counter() - began
        return out

    def real_time_factor(self) -> float:
        """Computing time over the duration of the audio heard (below 1: faster than real time)."""
        return self.seconds / max(self.heard / self.rate, 1e-9)

    def _trim(self) -> None:
        keep_from = max(self.start, self.labelled + self.step - self.window)
        self.buffer = self.buffer[keep_from - self.start :]
        self.start = keep_from

    def _label(self, end: int, final: bool = False) -> StreamLabel:
        begin = max(0, end - self.window)
        wave = self.buffer[begin - self.start : end - self.start]
        feats = self.extract(wave)
        m = self.model
        with num_threads(1):  # one short window: a second thread only waits (see FeatureExtractor.__call__)
            logits = frame_logits(m.model, [feats], 1, m.device)[0]  # (C,) or (T, C)
        probs = torch.softmax(logits, dim=-1)
        previous, self.labelled = self.labelled, end
        if m.task == "classify":
            p, k = probs.max(dim=-1)
            return StreamLabel(end / self.rate, m.classes[int(k)], float(p))
        times = begin / self.rate + self.extract.frame_times(len(feats))
        new = (times >= previous / self.rate) & ((times < end / self.rate) | final)
        best = probs.argmax(dim=-1).numpy()
        frames = [m.classes[int(k)] for k in best[new]]
        last = int(best[-1])
        return StreamLabel(end / self.rate, m.classes[last], float(probs[-1, last]), previous / self.rate, frames)


def stream(
    model: FrameModel,
    chunks: Iterable[np.ndarray],
    rate: int | None = None,
    window: float = 1.0,
    step: float = 0.2,
) -> Iterator[StreamLabel]:
    """Label chunks of samples as they arrive (see ``Streamer``)."""
    s = Streamer(model, window, step, rate)
    for chunk in chunks:
        yield from s.push(chunk)
    yield from s.flush()
