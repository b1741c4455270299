"""Real-valued frame sequences (speech frames, sensor series): the dataset object and its two file readers.

A ``FrameDataset`` holds N sequences of shape (T_i, F), float32, with T_i varying, and their labels as
integer ids into ``classes``: one id per sequence for ``task="classify"``, one per frame for ``task="label"``.

Missing values (``?`` in a ``.ts`` file, NaN in an ``.npz``) are kept as NaN here. Later steps deal with
them in one way: ``feature_stats`` ignores NaN when it computes the per-feature mean and std, and
``rnnlm.frames.layers.FrameInput`` standardizes and then replaces NaN by 0, which is the training
mean in standardized units. Infinite values are refused when a file is read.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from rnnlm.core.errors import DataError
from rnnlm.core.text import read_text

TASKS = ("classify", "label")
_FLAGS = ("@timestamps", "@missing", "@univariate", "@equallength")


@dataclass
class FrameDataset:
    """Variable-length frame sequences with labels; see the module docstring for the conventions."""

    sequences: list[np.ndarray]  # N arrays of shape (T_i, F), float32; NaN marks a missing value
    labels: np.ndarray | list[np.ndarray] | None  # classify: (N,) int64; label: N arrays (T_i,) int64; None: unlabelled
    classes: list[str]  # label names; an id is an index into this list
    task: str = "classify"  # "classify": one label per sequence; "label": one label per frame
    source: str = ""  # where the data came from, for messages
    waves: list[np.ndarray] | None = None  # audio only: each sequence's samples, for augmentation (frames/augment.py)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if not self.sequences:
            raise ValueError("a FrameDataset needs at least one sequence")
        features = {s.shape[1] if s.ndim == 2 else -1 for s in self.sequences}
        if len(features) != 1 or -1 in features:
            raise ValueError(f"every sequence must be (T_i, F) with one F; got feature counts {sorted(features)}")
        if min(len(s) for s in self.sequences) < 1:
            raise ValueError("every sequence needs at least one frame")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"class names must be distinct, got {self.classes}")
        if self.labels is None:
            return
        if self.task == "classify":
            ids = np.asarray(self.labels)
            if ids.shape != (len(self.sequences),):
                raise ValueError(f"classify labels must have shape ({len(self.sequences)},), got {ids.shape}")
        else:
            if len(self.labels) != len(self.sequences) or any(
                lab.shape != (len(s),) for lab, s in zip(self.labels, self.sequences, strict=False)
            ):
                raise ValueError("frame labels must be one (T_i,) array per sequence")
            ids = np.concatenate(self.labels)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.classes)):
            raise ValueError(f"label ids must lie in [0, {len(self.classes)}), got {ids.min()}..{ids.max()}")

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def num_features(self) -> int:
        """F, the number of values in one frame."""
        return self.sequences[0].shape[1]

    @property
    def lengths(self) -> np.ndarray:
        """(N,) int64: the number of frames in each sequence."""
        return np.array([len(s) for s in self.sequences], dtype=np.int64)

    def subset(self, indices: Sequence[int] | np.ndarray) -> FrameDataset:
        """The sequences at these indices, in this order, sharing the arrays and the classes."""
        indices = [int(i) for i in indices]
        if self.labels is None:
            labels = None
        elif self.task == "classify":
            labels = np.asarray(self.labels)[indices]
        else:
            labels = [self.labels[i] for i in indices]
        waves = None if self.waves is None else [self.waves[i] for i in indices]
        sequences = [self.sequences[i] for i in indices]
        return FrameDataset(sequences, labels, list(self.classes), self.task, self.source, waves)


def read_frames(path: str | Path, classes: Sequence[str] | None = None, labels: bool = True) -> FrameDataset:
    """Read a ``.ts`` or ``.npz`` file, chosen by its suffix; see ``read_ts`` and ``read_npz``.

    ``labels=False`` reads the frames alone, as prediction needs: the file's labels, if any, are
    neither read nor checked, so a label the model never saw is no error there.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".ts":
        return read_ts(path, classes, labels)
    if suffix == ".npz":
        return read_npz(path, classes, labels)
    raise DataError(f"{path}: unknown frame file type {suffix!r}; give a .ts (UEA/UCR) or an .npz file")


def _unknown_label(where: str, label: str, classes: Sequence[str], origin: str) -> DataError:
    return DataError(
        f"{where}: label {label!r} is not among the classes {list(classes)[:20]}, which were {origin}; "
        "correct the label or add it to that list"
    )


# ---------------------------------------------------------------- .ts (UEA/UCR time-series classification)


def read_ts(path: str | Path, classes: Sequence[str] | None = None, labels: bool = True) -> FrameDataset:
    """Read a UEA/UCR ``.ts`` classification file into a ``task="classify"`` FrameDataset.

    The header (``@problemName``, ``@dimensions``, ``@classLabel true <labels>`` ...) comes before
    ``@data``; each data line holds the dimensions separated by ``:`` (each a comma-separated series,
    all of one length) and then the class label. ``#`` lines and blank lines are skipped; ``?`` is a
    missing value (NaN). Label ids follow the order of ``@classLabel``, or of ``classes`` when given
    (so a test file can share the training file's ids). ``@classLabel false`` gives unlabelled data, as
    does ``labels=False`` (each line's label is then skipped unchecked: a file for prediction).
    Raises DataError naming the file, the 1-based line and the value for malformed input.
    """
    return parse_ts(read_text(path), str(path), classes, labels)


def parse_ts(text: str, path: str, classes: Sequence[str] | None = None, labels: bool = True) -> FrameDataset:
    """``read_ts`` on the text of a file (an upload read in memory); ``path`` names it in messages."""
    lines = text.split("\n")
    header: dict[str, object] = {}
    sequences: list[np.ndarray] = []
    ids: list[int] = []
    index: dict[str, int] = {}  # label name -> id, fixed when @data is reached
    in_data = False
    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}, line {n}"
        if in_data:
            if line.startswith("@"):
                raise DataError(f"{where}: header line {line[:40]!r} after @data; move every header line above @data")
            seq, label = _parse_case(where, line, header)
            if labels and header["@classlabel"] is not None:
                if label not in index:
                    origin = "passed as classes=" if classes is not None else "declared by @classLabel"
                    raise _unknown_label(where, label, list(index), origin)
                ids.append(index[label])
            sequences.append(seq)
        elif line.startswith("@"):
            in_data = _parse_header(where, line, header)
            if in_data and header["@classlabel"] is not None:
                names = list(classes) if classes is not None else header["@classlabel"]
                index = {c: i for i, c in enumerate(names)}
        else:
            raise DataError(
                f"{where}: data {line[:40]!r} before @data; the header must end with a line '@data' "
                "and the sequences follow it"
            )
    if not in_data:
        last = max((n for n, raw in enumerate(lines, start=1) if raw.strip()), default=1)
        raise DataError(f"{path}, line {last}: the header ends without an '@data' line; add it after the header")
    if not sequences:
        raise DataError(f"{path}: no sequences after @data; add one line per sequence")
    if not labels or header["@classlabel"] is None:
        return FrameDataset(sequences, None, [], "classify", str(path))
    return FrameDataset(sequences, np.array(ids, dtype=np.int64), list(index), "classify", str(path))


def _parse_header(where: str, line: str, header: dict[str, object]) -> bool:
    """Record one header line; True when it is @data."""
    tag, *args = line.split()
    tag = tag.lower()  # the archive's own files and readers treat the tags case-insensitively
    if tag == "@data":
        if "@classlabel" not in header:
            raise DataError(f"{where}: @data before @classLabel; add '@classLabel true <labels...>' to the header")
        return True
    if tag == "@problemname":
        header[tag] = " ".join(args)
    elif tag in _FLAGS:
        if len(args) != 1 or args[0].lower() not in ("true", "false"):
            raise DataError(f"{where}: {tag} takes true or false, got {' '.join(args)!r}")
        if tag == "@timestamps" and args[0].lower() == "true":
            raise DataError(f"{where}: time-stamped series are not supported; write the values without time stamps")
        header[tag] = args[0].lower() == "true"
    elif tag in ("@dimensions", "@serieslength"):
        if len(args) != 1 or not (args[0].isascii() and args[0].isdigit()) or int(args[0]) < 1:  # not '²'
            raise DataError(f"{where}: {tag} takes a positive whole number, got {' '.join(args)!r}")
        header[tag] = int(args[0])
    elif tag == "@classlabel":
        flag = args[0].lower() if args else ""
        if flag == "false" and len(args) == 1:
            header[tag] = None
        elif flag == "true" and len(args) > 1:
            if len(set(args[1:])) != len(args) - 1:
                raise DataError(f"{where}: @classLabel lists a label twice: {args[1:]}; list each label once")
            header[tag] = args[1:]
        else:
            raise DataError(
                f"{where}: expected '@classLabel true <label> <label> ...' or '@classLabel false', got {line!r}"
            )
    else:
        raise DataError(
            f"{where}: unknown header {tag!r}; rnnlm reads classification files with @problemName, @timeStamps, "
            "@missing, @univariate, @dimensions, @equalLength, @seriesLength, @classLabel and @data"
        )
    return False


def _parse_case(where: str, line: str, header: dict[str, object]) -> tuple[np.ndarray, str]:
    """One data line -> ((T, F) float32 frames, label)."""
    labelled = header["@classlabel"] is not None
    fields = line.split(":")
    label = fields.pop().strip() if labelled else ""
    want = header.get("@dimensions") or (1 if header.get("@univariate") else None)
    if want is None:
        header["@dimensions"] = want = len(fields)  # the first case fixes the count when the header does not
    if len(fields) != want or (labelled and not label):
        extra = " plus the class label" if labelled else ""
        raise DataError(
            f"{where}: {len(fields) + labelled} ':'-separated fields, expected {want} dimensions{extra}; "
            "check for a missing or extra ':'"
        )
    dims = [_parse_series(where, d, text) for d, text in enumerate(fields, start=1)]
    lengths = [len(v) for v in dims]
    if len(set(lengths)) != 1:
        raise DataError(
            f"{where}: the dimensions have different lengths {lengths}; every dimension of one sequence "
            "needs one value per frame (write ? for a missing value)"
        )
    fixed = header.get("@serieslength")
    if header.get("@equallength") and fixed is not None and lengths[0] != fixed:
        raise DataError(f"{where}: a series of length {lengths[0]}, but the header says @seriesLength {fixed}")
    return np.stack(dims, axis=1).astype(np.float32), label  # (T, F): frames are rows


def _parse_series(where: str, dim: int, text: str) -> np.ndarray:
    values = []
    for pos, tok in enumerate(text.split(","), start=1):
        tok = tok.strip()
        if tok == "?":
            values.append(np.nan)
            continue
        try:
            value = float(tok)
        except ValueError:
            value = None
        if value is None or not np.isfinite(value):
            raise DataError(
                f"{where}: dimension {dim}, value {pos} is {tok!r}, not a finite number; "
                "write numbers like 1.5 or -2e-3, and ? for a missing value"
            )
        values.append(value)
    return np.array(values, dtype=np.float64)


# ---------------------------------------------------------------- .npz (padded arrays)


def _check_npy_sizes(path: Path | BinaryIO, source: str | Path) -> None:
    """Refuse an .npz member whose .npy header claims more data than the member holds, before numpy allocates it.

    numpy allocates an array of the header's shape and then fills it from the file: a crafted header of a few bytes
    (shape (10**12,)) would ask for terabytes. Each member's header must describe exactly the bytes that follow it
    (the archive records each member's size), so that reading a file never takes much more memory than its own
    uncompressed size. Object arrays (which need pickle) are refused here too.
    """
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            where = f"{source}, member {info.filename}"
            with z.open(info) as f:
                try:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    else:  # 3.0 (a UTF-8 header) holds field names numpy.savez of plain arrays never writes
                        raise ValueError(f"format version {version} is not read here")
                except ValueError as e:
                    raise DataError(f"{where}: not a .npy array ({e}); save the arrays with numpy.savez") from None
                header_end = f.tell()
            if dtype.hasobject:
                raise DataError(
                    f"{where}: an object array, which needs pickle (it could run code from the file) and is refused; "
                    "save strings as fixed-width arrays, e.g. np.array(names)"
                )
            need = int(np.prod(shape, dtype=object)) * dtype.itemsize
            have = info.file_size - header_end
            if need != have:
                raise DataError(
                    f"{where}: the header says shape {shape} of {dtype} ({need:,} bytes) but the member holds "
                    f"{max(have, 0):,} bytes of data; the file is damaged or crafted"
                )


def read_npz(
    path: str | Path | BinaryIO, classes: Sequence[str] | None = None, labels: bool = True, name: str | None = None
) -> FrameDataset:
    """Read an ``.npz`` holding ``x`` (N, T, F) padded frames, ``lengths`` (N,) and labels, if any.

    Labels are either ``y`` (N,) for ``task="classify"`` or ``frame_labels`` (N, T) for ``task="label"``;
    they may be integers or strings. A file with neither (or ``labels=False``, which skips them unchecked,
    as prediction needs) gives unlabelled data. Values past a sequence's length are ignored. Label names come from
    ``classes`` when given, else from an optional ``classes`` array in the file, else from the sorted
    distinct labels (numerically for integers). NaN in ``x`` is a missing value; infinity is refused. ``path`` may
    also be an open binary file (an upload read in memory), which ``name`` names in messages.
    """
    if isinstance(path, (str, Path)):
        path = Path(path)
        if path.is_file() and not zipfile.is_zipfile(path):  # np.load would try to unpickle it instead
            raise DataError(f"{path}: not an .npz (zip) archive; save the arrays with numpy.savez")
        source: str | Path = path
    else:
        source = name or "the uploaded file"
        if not zipfile.is_zipfile(path):
            raise DataError(f"{source}: not an .npz (zip) archive; save the arrays with numpy.savez")
        path.seek(0)
    try:
        _check_npy_sizes(path, source)
        if not isinstance(path, Path):
            path.seek(0)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"{source}: no such file; check the path") from None
    except DataError:
        raise
    except ValueError as e:  # object arrays need pickle, which could run code from the file
        raise DataError(
            f"{source}: cannot load ({e}); save numbers and fixed-width strings (e.g. np.array(names)) with "
            "numpy.savez: object arrays need pickle, which could run code from the file, and are refused"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as e:
        # a damaged archive: a bad CRC or deflate stream, a compression method zipfile lacks, an encrypted member
        raise DataError(f"{source}: not a readable .npz file ({e}); save it with numpy.savez") from None

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise DataError(f"{source}: {msg}")

    need("x" in arrays and "lengths" in arrays, f"needs arrays 'x' and 'lengths', found {sorted(arrays)}")
    need(
        not ("y" in arrays and "frame_labels" in arrays),
        "holds both 'y' (one label per sequence) and 'frame_labels' (one per frame); keep only one",
    )
    x, lengths = arrays["x"], arrays["lengths"]
    need(x.ndim == 3 and x.dtype.kind in "fiu", f"'x' must be (N, T, F) numbers, got {x.dtype} {x.shape}")
    n, t, _ = x.shape
    need(n > 0 and t > 0, f"'x' holds no frames (shape {x.shape})")
    need(lengths.shape == (n,) and lengths.dtype.kind in "iu", f"'lengths' must be ({n},) ints, got {lengths.shape}")
    bad = np.flatnonzero((lengths < 1) | (lengths > t))
    if bad.size:
        need(False, f"'lengths' must lie in 1..{t} (the T of 'x'); sequence {bad[0]} has length {lengths[bad[0]]}")
    sequences = [x[i, : lengths[i]].astype(np.float32) for i in range(n)]
    for i, s in enumerate(sequences):
        need(not np.isinf(s).any(), f"sequence {i} holds an infinite value; use NaN for a missing value")
    if not labels or ("y" not in arrays and "frame_labels" not in arrays):
        return FrameDataset(sequences, None, [], "classify", str(source))

    task = "classify" if "y" in arrays else "label"
    raw = arrays["y"] if task == "classify" else arrays["frame_labels"]
    want = (n,) if task == "classify" else (n, t)
    name = "y" if task == "classify" else "frame_labels"
    need(
        raw.shape == want and raw.dtype.kind in "iuU",
        f"'{name}' must be {want} ints or strings, got {raw.dtype} {raw.shape}",
    )
    flat = raw if task == "classify" else np.concatenate([raw[i, : lengths[i]] for i in range(n)])
    given = classes is not None
    if classes is None and "classes" in arrays:
        classes = [str(c) for c in arrays["classes"].tolist()]
        need(len(set(classes)) == len(classes), f"'classes' must list distinct names, got {classes[:20]}")
        if flat.dtype.kind in "iu":  # integer labels are already ids into the file's classes
            need(flat.min() >= 0 and flat.max() < len(classes), f"'{name}' holds ids outside 0..{len(classes) - 1}")
            flat = np.array(classes)[flat]
    if classes is None:
        classes = [str(v) for v in np.unique(flat)]  # np.unique sorts, numerically for ints
    index = {c: i for i, c in enumerate(classes)}
    names = [str(v) for v in flat.tolist()]
    for k, label in enumerate(names):
        if label not in index:
            seq = k if task == "classify" else int(np.searchsorted(np.cumsum(lengths), k, side="right"))
            origin = "passed as classes=" if given else "taken from the file's 'classes' array"
            raise _unknown_label(f"{source}, sequence {seq}", label, classes, origin)
    ids = np.array([index[label] for label in names], dtype=np.int64)
    if task == "label":
        ids = np.split(ids, np.cumsum(lengths)[:-1])
    return FrameDataset(sequences, ids, list(classes), task, str(source))
