"""Audio files as frame sequences: reading sound files, finding them (a folder of class folders, or a CSV or
JSONL manifest), per-frame labels from interval files, and the feature cache.

Sound is read with ``soundfile`` (WAV, FLAC, OGG, ...) and resampled with ``soxr``; both come with the
``audio`` extra (``pip install 'rnnlm[audio]'``). Every file is mixed down to mono (the mean of its channels)
and resampled to the run's rate.

The data layouts:

- a folder of class folders (``words/yes/a.wav``, ``words/no/b.flac``; the Speech Commands layout): one label
  per file, the name of its folder. Folders whose name starts with ``_`` or ``.`` (``_background_noise_``) are
  not classes and are skipped.
- a manifest, ``.csv`` with a header line or ``.jsonl`` with one object per line, with a ``path`` (relative to
  the manifest's folder, or absolute) and either a ``label`` (one per file) or an ``intervals`` file (labels per
  frame). An interval file holds ``start,end,label`` lines in seconds (commas or tabs, as Audacity exports
  labels; an optional header line); frames whose centre no interval covers take ``audio.gap_label``.

The rule for files a model cannot learn from: training and evaluation skip files shorter than
``audio.min_duration`` and silence-only files (loudest sample below ``audio.silence_db``), and say which; an
empty or unreadable file is an error that names it. Prediction labels every readable file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnlm.core.atomic import atomic_write_bytes
from rnnlm.core.errors import DataError
from rnnlm.core.paths import cache_root
from rnnlm.frames.data import FrameDataset

if TYPE_CHECKING:
    from rnnlm.frames.config import FramesAudioConfig

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")
MANIFEST_SUFFIXES = (".csv", ".jsonl")
# Bump when the feature code changes what it computes, so that cached features are never stale.
FEATURES_VERSION = 1
# The settings that change a file's features (not its augmentation or the skip rule): the cache key.
_FEATURE_KEYS = (
    "sample_rate",
    "features",
    "n_mels",
    "n_mfcc",
    "win_ms",
    "hop_ms",
    "n_fft",
    "fmin",
    "fmax",
    "deltas",
    "delta_width",
    "normalize",
)


def is_audio_source(path: str | Path) -> bool:
    """Whether a data path names audio (a folder, a manifest or a sound file) rather than a feature file."""
    p = Path(path)
    return p.is_dir() or p.suffix.lower() in MANIFEST_SUFFIXES + AUDIO_SUFFIXES


def _soundfile() -> Any:
    try:
        import soundfile
    except ImportError:
        raise DataError("reading audio needs soundfile and soxr: pip install 'rnnlm[audio]'") from None
    return soundfile


def resample(wave: np.ndarray, rate: float, target: int) -> np.ndarray:
    """(L,) float32 samples at ``rate`` -> at ``target`` Hz (soxr, high quality)."""
    if rate == target:
        return wave
    try:
        import soxr
    except ImportError:
        raise DataError("resampling audio needs soxr: pip install 'rnnlm[audio]'") from None
    return soxr.resample(wave, rate, target).astype(np.float32)


def read_audio(path: str | Path, rate: int) -> np.ndarray:
    """(L,) float32 mono samples in [-1, 1] at ``rate`` Hz; a DataError names a file that cannot be read."""
    sf = _soundfile()
    if not Path(path).is_file():  # libsndfile reports a missing file as a "System error"
        raise DataError(f"{path}: no such file; check the path")
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)  # (L, channels)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check the path") from None
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
        raise DataError(f"{path}: not a readable sound file ({e}); give WAV, FLAC or OGG audio") from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: holds no samples; remove it or record it again")
    if not np.isfinite(data).all():
        raise DataError(f"{path}: holds NaN or infinite samples; write the file again")
    return resample(data.mean(axis=1), file_rate, rate)


@dataclass
class AudioItem:
    """One file of a data set: its path, and its label or the path of its interval file."""

    path: Path
    label: str | None = None
    intervals: Path | None = None


def list_audio(path: str | Path) -> list[AudioItem]:
    """The files of a folder of class folders, a manifest, or one sound file (unlabelled), in a fixed order."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: no such file or folder; check the path")
    if p.is_dir():
        return _class_folders(p)
    if p.suffix.lower() in MANIFEST_SUFFIXES:
        return _manifest(p)
    if p.suffix.lower() in AUDIO_SUFFIXES:
        return [AudioItem(p)]
    raise DataError(f"{path}: not audio; give a folder of class folders, a .csv or .jsonl manifest or a sound file")


def _class_folders(root: Path) -> list[AudioItem]:
    items = []
    for folder in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(("_", "."))):
        files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file())
        items += [AudioItem(f, folder.name) for f in files]
    if not items:
        raise DataError(
            f"{root}: no sound files ({', '.join(AUDIO_SUFFIXES)}) in class folders; put each class's files in a "
            "folder named after it (root/yes/a.wav), or give a manifest"
        )
    return items


def _manifest(path: Path) -> list[AudioItem]:
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path")
    text = path.read_text(encoding="utf-8")
    rows: list[tuple[str, dict[str, Any]]] = []
    if path.suffix.lower() == ".jsonl":
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: not JSON ({e.msg}); write one object per line") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{n}: a JSON object with path and label (or intervals), not {row!r}")
                rows.append((f"{path}:{n}", row))
    else:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise DataError(f"{path}: the first line must name the columns, with path and label (or intervals)")
        rows = [(f"{path}:{n}", row) for n, row in enumerate(reader, start=2)]
    items = []
    for where, row in rows:
        file, label, intervals = row.get("path"), row.get("label"), row.get("intervals")
        if not file or (label in (None, "")) == (intervals in (None, "")):
            raise DataError(f"{where}: needs a path and exactly one of label or intervals, got {dict(row)}")
        intervals_path = None if intervals in (None, "") else path.parent / str(intervals)
        items.append(AudioItem(path.parent / str(file), None if label in (None, "") else str(label), intervals_path))
    if not items:
        raise DataError(f"{path}: lists no files")
    if len({it.intervals is None for it in items}) > 1:
        raise DataError(f"{path}: mixes rows with a label and rows with intervals; a data set has one kind")
    return items


def read_intervals(path: str | Path) -> list[tuple[float, float, str]]:
    """``start,end,label`` lines (seconds; commas or tabs; an optional header) sorted by start, checked not
    to overlap."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{p}: no such interval file; check the manifest's intervals column") from None
    out = []
    for n, line in enumerate(lines, start=1):
        fields = [f.strip() for f in (line.split("\t") if "\t" in line else line.split(","))]
        if not line.strip() or (n == 1 and fields[:2] == ["start", "end"]):
            continue
        try:
            start, end = float(fields[0]), float(fields[1])
        except (ValueError, IndexError):
            start = end = float("nan")
        if len(fields) != 3 or not fields[2] or not 0 <= start < end:
            raise DataError(f"{p}:{n}: expected start,end,label in seconds with 0 <= start < end, got {line!r}")
        out.append((start, end, fields[2]))
    out.sort()
    for (s0, e0, _), (s1, _, _) in zip(out, out[1:], strict=False):
        if s1 < e0:
            raise DataError(f"{p}: the intervals starting at {s0} and {s1} s overlap; a frame takes one label")
    return out


def interval_labels(intervals: Sequence[tuple[float, float, str]], times: np.ndarray, gap: str) -> list[str]:
    """The label of each frame: the interval that holds its centre (start <= t < end), else ``gap``."""
    labels = [gap] * len(times)
    for start, end, label in intervals:
        for t in np.flatnonzero((times >= start) & (times < end)):
            labels[int(t)] = label
    return labels


def energy_intervals(
    wave: np.ndarray, rate: int, threshold_db: float = -35.0, frame_ms: float = 10.0, min_gap: float = 0.1
) -> list[tuple[float, float, str]]:
    """Voice activity of a clean recording: ``speech`` intervals where the energy of 10 ms blocks is within
    ``threshold_db`` of the loudest block; gaps shorter than ``min_gap`` seconds are closed. Labels a
    voice-activity data set with no annotation; it only works on clean audio, which is why a model is trained
    on it (with noise mixed in) for the rest."""
    n = max(1, round(frame_ms * rate / 1000))
    blocks = len(wave) // n
    if blocks == 0:
        return []
    energy = np.square(wave[: blocks * n].reshape(blocks, n)).mean(axis=1)
    db = 10 * np.log10(np.maximum(energy, 1e-12))
    active = db >= db.max() + threshold_db
    out: list[list[float]] = []
    for b in np.flatnonzero(active):
        start, end = b * n / rate, (b + 1) * n / rate
        if out and start - out[-1][1] < min_gap:
            out[-1][1] = end
        else:
            out.append([start, end])
    return [(s, e, "speech") for s, e in out]


def _cache_file(path: Path, settings: dict[str, Any]) -> Path:
    content = hashlib.sha256(path.read_bytes()).hexdigest()
    key = hashlib.sha256(json.dumps([FEATURES_VERSION, settings, content], sort_keys=True).encode()).hexdigest()
    return cache_root() / "audio_features" / f"{key[:40]}.npy"


def read_audio_dataset(
    path: str | Path,
    cfg: FramesAudioConfig,
    classes: Sequence[str] | None = None,
    labels: bool = True,
    keep_waves: bool = False,
    log: Callable[[str], None] = print,
) -> FrameDataset:
    """A FrameDataset of the features of the files at ``path`` (see the module docstring for the layouts and
    the rule for short and silent files). ``classes`` fixes the label ids (a
    trained model's). ``keep_waves`` keeps the resampled samples (``waves``) for augmentation."""
    from rnnlm.frames.features import FeatureExtractor

    items = list_audio(path)
    extract = FeatureExtractor(cfg)
    settings = {k: v for k, v in asdict(cfg).items() if k in _FEATURE_KEYS}
    sequences, waves, names, kept = [], [], [], []
    skipped: list[str] = []
    for item in items:
        wave = read_audio(item.path, cfg.sample_rate)
        peak = float(np.abs(wave).max())
        if len(wave) < cfg.min_duration * cfg.sample_rate or 20 * np.log10(max(peak, 1e-12)) < cfg.silence_db:
            skipped.append(str(item.path))
            continue
        cache = _cache_file(item.path, settings) if cfg.cache else None
        if cache is not None and cache.is_file():
            feats = np.load(cache, allow_pickle=False)
        else:
            feats = extract(wave)
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                buf = io.BytesIO()
                np.save(buf, feats, allow_pickle=False)
                atomic_write_bytes(cache, buf.getvalue())
        sequences.append(feats)
        waves.append(wave)
        kept.append(item)
        if labels and item.intervals is not None:
            names.append(
                interval_labels(read_intervals(item.intervals), extract.frame_times(len(feats)), cfg.gap_label)
            )
        elif labels:
            names.append(item.label)
    if skipped:
        log(
            f"{path}: skipped {len(skipped)} of {len(items)} files shorter than {cfg.min_duration} s or silent "
            f"(peak below {cfg.silence_db} dBFS): {', '.join(skipped[:3])}{' ...' if len(skipped) > 3 else ''}"
        )
    if not sequences:
        raise DataError(f"{path}: every file is too short or silent; see --min-duration and --silence-db")
    source = str(path)
    keep = waves if keep_waves else None
    if not labels or kept[0].label is None and kept[0].intervals is None:
        return FrameDataset(sequences, None, [], "classify", source, waves=keep)
    task = "label" if kept[0].intervals is not None else "classify"
    flat = [n for row in names for n in row] if task == "label" else names
    known = list(classes) if classes is not None else sorted(set(flat))
    index = {c: i for i, c in enumerate(known)}
    unknown = sorted(set(flat) - set(index))
    if unknown:
        raise DataError(f"{path}: labels {unknown[:10]} are not among the model's classes {known[:20]}")
    if task == "classify":
        ids: Any = np.array([index[n] for n in names], dtype=np.int64)
    else:
        ids = [np.array([index[n] for n in row], dtype=np.int64) for row in names]
    return FrameDataset(sequences, ids, known, task, source, waves=keep)


def read_noise(spec: str, rate: int) -> list[np.ndarray] | None:
    """The noise recordings of ``audio.noise`` (a folder or a file), or None for white noise."""
    if spec == "white":
        return None
    p = Path(spec)
    files = sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES) if p.is_dir() else [p]
    if not files:
        raise DataError(f"--noise {spec}: no sound files there; give a folder or file of noise, or white")
    return [read_audio(f, rate) for f in files]
