"""A synthetic per-frame labeling task that a left-to-right model cannot solve and a bidirectional one can.

Each frame t of a sequence shows a random symbol s_t in {0..K-1}: channel s_t of the first K channels is 1,
the others 0, plus Gaussian noise on every channel, plus ``extra_features`` channels of pure noise. The
frame's label is the symbol shown ``lookahead`` frames LATER::

    frames   s0  s1  s2  s3  s4  s5        (lookahead = 2)
    labels   s2  s3  s4  s5  s5  s5        the last frames take the last symbol

Symbols are drawn independently and uniformly, so for every frame with t + lookahead < T the label is
independent of frames 0..t: a causal model (one that has read only the past and the present) is right
with probability 1/K there, whatever it learns. A model that also reads the frames after t can read the
label off frame t + lookahead and be right every time (up to the noise, which is small by default).
"""

from __future__ import annotations

import numpy as np

from rnnlm.frames.data import FrameDataset


def future_symbol_dataset(
    num_sequences: int,
    seed: int,
    *,
    num_symbols: int = 4,
    lookahead: int = 3,
    min_len: int = 8,
    max_len: int = 20,
    noise: float = 0.1,
    extra_features: int = 2,
) -> FrameDataset:
    """Generate the task above as a ``task="label"`` FrameDataset with classes ``"0".."K-1"``.

    Frames are (T_i, num_symbols + extra_features) float32 with T_i uniform in [min_len, max_len].
    The same arguments always give the same data (numpy's default generator seeded with ``seed``).
    """
    if num_sequences < 1 or num_symbols < 2 or lookahead < 1:
        raise ValueError("need num_sequences >= 1, num_symbols >= 2 and lookahead >= 1")
    if not lookahead < min_len <= max_len:
        raise ValueError(f"need lookahead < min_len <= max_len, got {lookahead}, {min_len}, {max_len}")
    rng = np.random.default_rng(seed)
    sequences, labels = [], []
    for _ in range(num_sequences):
        length = int(rng.integers(min_len, max_len + 1))
        symbols = rng.integers(0, num_symbols, size=length)
        frames = np.zeros((length, num_symbols + extra_features))
        frames[np.arange(length), symbols] = 1.0
        frames += noise * rng.standard_normal(frames.shape)
        later = np.minimum(np.arange(length) + lookahead, length - 1)
        sequences.append(frames.astype(np.float32))
        labels.append(symbols[later].astype(np.int64))
    classes = [str(k) for k in range(num_symbols)]
    return FrameDataset(sequences, labels, classes, "label", f"future_symbol(seed={seed})")
