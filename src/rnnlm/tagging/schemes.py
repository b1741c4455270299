"""Chunk tag schemes (IOB1, IOB2, BIOES): validation, detection, conversion, and a tag <-> id mapping.

A tag is ``O`` or ``<prefix>-<TYPE>``, e.g. ``B-PER``; the type may itself hold hyphens. The schemes:

* IOB2: every chunk starts with ``B-``; ``I-X`` only continues a chunk of type X.
* IOB1: ``I-X`` starts a chunk unless it continues one of type X; ``B-X`` marks a chunk that directly
  follows another of the same type. Read this way every B/I/O sequence has one meaning, and a valid
  IOB2 sequence means the same chunks in IOB1, so IOB1 accepts any B/I/O sequence (the original
  CoNLL-2003 files use ``B-`` only where needed, which ``iob2_to_iob1`` reproduces).
* BIOES: ``S-X`` is a one-token chunk; longer chunks are ``B-X (I-X)* E-X``.

The converters are strict: they raise ValueError on a sequence their source scheme forbids rather than
guess, because a silently repaired gold file would change the scores. ``check_tags`` in ``conll`` turns
that into a DataError with the file and line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

SCHEMES = ("IOB2", "IOB1", "BIOES")  # in the order detect_scheme prefers them
_PREFIXES = {"IOB1": "BI", "IOB2": "BI", "BIOES": "BIES"}


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``. ValueError for anything else."""
    if tag == "O":
        return "O", ""
    if len(tag) < 3 or tag[1] != "-" or tag[0] not in "BIES":
        raise ValueError(f"{tag!r} is not a chunk tag; expected O or B-, I-, E-, S- followed by a type")
    return tag[0], tag[2:]


def scheme_violation(tags: Sequence[str], scheme: str) -> tuple[int, str] | None:
    """The first position that ``scheme`` forbids and why, or None when the whole sequence is valid."""
    _check_scheme_name(scheme)
    allowed = _PREFIXES[scheme]
    inside = ""  # the type of the chunk the previous tag left open ("" = none)
    for i, tag in enumerate(tags):
        try:
            prefix, type_ = split_tag(tag)
        except ValueError as e:
            return i, str(e)
        if prefix != "O" and prefix not in allowed:
            return i, f"{tag!r} has a prefix that {scheme} does not use (it uses {', '.join(allowed)} and O)"
        if scheme == "IOB2" and prefix == "I" and inside != type_:
            return i, f"{tag!r} continues no {type_} chunk (previous tag {_prev(tags, i)}); IOB2 starts chunks with B-"
        if scheme == "BIOES":
            if prefix in "IE" and inside != type_:
                return i, f"{tag!r} continues no {type_} chunk (previous tag {_prev(tags, i)})"
            if prefix in "OBS" and inside:
                return i - 1, f"the {inside} chunk ending at {tags[i - 1]!r} is not closed by E- (next tag {tag!r})"
            inside = type_ if prefix in "BI" else ""
        else:
            inside = type_
    if scheme == "BIOES" and inside:
        return len(tags) - 1, f"the sequence ends inside a {inside} chunk ({tags[-1]!r}); BIOES closes it with E-"
    return None


def _prev(tags: Sequence[str], i: int) -> str:
    return repr(tags[i - 1]) if i else "none: it is the first"


def is_valid(tags: Sequence[str], scheme: str) -> bool:
    """Whether every tag is allowed by ``scheme`` where it stands."""
    return scheme_violation(tags, scheme) is None


def detect_scheme(sequences: Iterable[Sequence[str]]) -> str:
    """The first of IOB2, IOB1, BIOES that every sequence is valid in.

    Valid IOB2 is also valid IOB1, with the same chunks, so the stricter name wins. Data without chunks
    (all ``O``) fits all three, and every converter leaves it as it is.
    """
    candidates = list(SCHEMES)
    for tags in sequences:
        candidates = [s for s in candidates if is_valid(tags, s)]
        if not candidates:
            raise ValueError(f"the tags fit none of {', '.join(SCHEMES)}, e.g. {list(tags)}")
    return candidates[0]


def _check_scheme_name(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tag scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")


def _require(tags: Sequence[str], scheme: str) -> None:
    bad = scheme_violation(tags, scheme)
    if bad is not None:
        raise ValueError(f"tag {bad[0]} of {list(tags)} is not valid {scheme}: {bad[1]}")


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """Put ``B-`` on every chunk start."""
    _require(tags, "IOB1")
    out: list[str] = []
    prev_type = ""
    for tag in tags:
        prefix, type_ = split_tag(tag)
        if prefix == "I" and prev_type != type_:
            tag = f"B-{type_}"
        out.append(tag)
        prev_type = type_
    return out


def iob2_to_iob1(tags: Sequence[str]) -> list[str]:
    """Keep ``B-`` only where a chunk directly follows one of the same type."""
    _require(tags, "IOB2")
    out: list[str] = []
    prev_type = ""
    for tag in tags:
        prefix, type_ = split_tag(tag)
        if prefix == "B" and prev_type != type_:
            tag = f"I-{type_}"
        out.append(tag)
        prev_type = type_
    return out


def iob2_to_bioes(tags: Sequence[str]) -> list[str]:
    """Mark one-token chunks ``S-`` and chunk ends ``E-``."""
    _require(tags, "IOB2")
    out: list[str] = []
    for i, tag in enumerate(tags):
        prefix, type_ = split_tag(tag)
        # An IOB2 chunk goes on exactly when the next tag is I- (validity guarantees the same type).
        goes_on = i + 1 < len(tags) and tags[i + 1][0] == "I"
        if prefix == "B" and not goes_on:
            tag = f"S-{type_}"
        elif prefix == "I" and not goes_on:
            tag = f"E-{type_}"
        out.append(tag)
    return out


def bioes_to_iob2(tags: Sequence[str]) -> list[str]:
    """Turn ``S-`` into ``B-`` and ``E-`` into ``I-``."""
    _require(tags, "BIOES")
    return [{"S": "B", "E": "I"}.get(t[0], t[0]) + t[1:] for t in tags]


def convert(tags: Sequence[str], source: str, target: str) -> list[str]:
    """Convert between any two of IOB1, IOB2 and BIOES (through IOB2)."""
    _check_scheme_name(source)
    _check_scheme_name(target)
    iob2 = {"IOB1": iob1_to_iob2, "IOB2": _checked_iob2, "BIOES": bioes_to_iob2}[source](tags)
    return {"IOB1": iob2_to_iob1, "IOB2": list, "BIOES": iob2_to_bioes}[target](iob2)


def _checked_iob2(tags: Sequence[str]) -> list[str]:
    _require(tags, "IOB2")
    return list(tags)


def chunks(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The chunks of any B/I/E/S/O sequence as (type, start, end) with ``end`` exclusive, read leniently.

    A model's predictions need not be valid in any scheme, so this reads them the way conlleval.pl does:
    a chunk starts at B- or S-, or at I-/E- that does not continue an open chunk of its type (after O,
    after another type, or after a chunk closed by E- or S-); it ends after E- or S- and before anything
    that does not continue it. A valid sequence in any scheme gives exactly its chunks.
    """
    out: list[tuple[str, int, int]] = []
    open_type, start = "", 0  # the chunk being read ("" = none) and where it began
    for i, tag in enumerate(tags):
        prefix, type_ = split_tag(tag)
        continues = prefix in "IE" and type_ == open_type
        if open_type and not continues:
            out.append((open_type, start, i))
            open_type = ""
        if prefix != "O" and not continues:
            open_type, start = type_, i
        if prefix in "ES" and open_type:
            out.append((open_type, start, i + 1))
            open_type = ""
    if open_type:
        out.append((open_type, start, len(tags)))
    return out


def from_chunks(spans: Sequence[tuple[str, int, int]], length: int, scheme: str) -> list[str]:
    """Tags of ``length`` tokens in ``scheme`` for non-overlapping chunks (type, start, end exclusive)."""
    _check_scheme_name(scheme)
    iob2 = ["O"] * length
    for type_, start, end in spans:
        iob2[start:end] = [f"B-{type_}"] + [f"I-{type_}"] * (end - start - 1)
    return convert(iob2, "IOB2", scheme)


def coerce(tags: Sequence[str], scheme: str) -> list[str]:
    """Any B/I/E/S/O sequence as valid tags of ``scheme``, with the chunks that ``chunks`` reads in it."""
    return from_chunks(chunks(tags), len(tags), scheme)


@dataclass
class TagSet:
    """Tags and their ids (id = index in ``tags``); ``build`` sorts them, so ids never depend on data order."""

    tags: list[str]
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(set(self.tags)) != len(self.tags) or not self.tags:
            raise ValueError(f"a tag set needs distinct tags, at least one: {self.tags}")
        self.index = {t: i for i, t in enumerate(self.tags)}

    @classmethod
    def build(cls, sequences: Iterable[Sequence[str]]) -> TagSet:
        """Every tag that occurs, ``O`` (if present) first, the rest sorted by type and then prefix."""
        seen = {t for tags in sequences for t in tags}
        rest = sorted(seen - {"O"}, key=lambda t: (t[2:], t[:2]) if t[1:2] == "-" else (t, ""))
        return cls((["O"] if "O" in seen else []) + rest)

    def __len__(self) -> int:
        return len(self.tags)

    def encode(self, tags: Sequence[str]) -> list[int]:
        """Ids of the tags; ValueError names a tag the set lacks (e.g. one seen only in the test data)."""
        try:
            return [self.index[t] for t in tags]
        except KeyError as e:
            raise ValueError(f"tag {e.args[0]!r} is not in the tag set {self.tags}") from None

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tags of the ids."""
        return [self.tags[i] for i in ids]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return {"tags": list(self.tags)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TagSet:
        """Inverse of to_dict."""
        return cls(list(d["tags"]))
