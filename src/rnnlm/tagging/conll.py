"""Readers for tagged corpora: CoNLL-2003 column files and CoNLL-U, with errors that name the file and line.

Both give a list of ``Sentence``: the tokens, one tag column per annotation layer, and the 1-based line
of every token, so that a later check (``check_tags``) can point at the line to fix.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rnnlm.core.errors import DataError
from rnnlm.core.text import read_text
from rnnlm.tagging import schemes as tagschemes

CONLL2003_COLUMNS = ("pos", "chunk", "ner")
DOCSTART = "-DOCSTART-"
_SHOWN = 80  # characters of an offending line quoted in an error
_UD_RANGE = re.compile(r"[1-9][0-9]*-[1-9][0-9]*")
_UD_EMPTY = re.compile(r"(?:0|[1-9][0-9]*)\.[1-9][0-9]*")


@dataclass
class Sentence:
    """One sentence: tokens, tag columns (name -> one tag per token), comments, and where each token came from."""

    tokens: list[str]
    tags: dict[str, list[str]]
    lines: list[int]  # 1-based line number of each token in `path`
    path: str = ""
    meta: dict[str, str] = field(default_factory=dict)  # CoNLL-U "# key = value" comments (sent_id, text, ...)
    doc: int = 0  # which document of the file the sentence belongs to, counting from 0 (-DOCSTART-, # newdoc)

    def __len__(self) -> int:
        return len(self.tokens)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    # read_text decodes strictly and reports a bad byte with its line; split on "\n" only, because
    # str.splitlines would also break at \x85 or \u2028 inside a token and shift every line number after it.
    text = read_text(path)
    for number, line in enumerate(text.split("\n"), start=1):
        yield number, line.rstrip("\r")


def _where(path: Path, number: int, line: str) -> str:
    shown = line if len(line) <= _SHOWN else line[:_SHOWN] + "..."
    return f"{path}, line {number}: {shown!r}"


def read_conll2003(path: str | Path) -> list[Sentence]:
    """Read a CoNLL-2003 file: ``token POS chunk NER`` per line, a blank line between sentences.

    ``-DOCSTART-`` lines are skipped; each starts a new document (``Sentence.doc``). The tags are returned
    as written (columns ``pos``, ``chunk``, ``ner``); use ``detect_scheme``/``check_tags``/``convert_tags``
    to learn or change their scheme.
    """
    path = Path(path)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    numbers: list[int] = []
    columns: list[list[str]] = [[] for _ in CONLL2003_COLUMNS]
    doc = 0

    def flush() -> None:
        if tokens:
            tags = {name: col.copy() for name, col in zip(CONLL2003_COLUMNS, columns, strict=True)}
            sentences.append(Sentence(tokens.copy(), tags, numbers.copy(), str(path), doc=doc))
        for col in (tokens, numbers, *columns):
            col.clear()

    width = 1 + len(CONLL2003_COLUMNS)
    for number, line in _lines(path):
        fields = line.split()
        if not fields:
            flush()
        elif fields[0] == DOCSTART:
            flush()  # a document boundary is a sentence boundary even without the blank line
            if sentences and sentences[-1].doc == doc:
                doc += 1
        elif len(fields) != width:
            raise DataError(
                f"{_where(path, number, line)} has {len(fields)} field(s), expected {width} separated by spaces "
                f"(token {' '.join(c.upper() for c in CONLL2003_COLUMNS)}); fix the line, or check that the file "
                "is in CoNLL-2003 format (CoNLL-U files go to read_conllu)"
            )
        else:
            tokens.append(fields[0])
            numbers.append(number)
            for col, value in zip(columns, fields[1:], strict=True):
                col.append(value)
    flush()
    if not sentences:
        raise DataError(f"{path} holds no sentences; check that it is a CoNLL-2003 file")
    return sentences


def read_conllu(path: str | Path) -> list[Sentence]:
    """Read a CoNLL-U file: 10 tab-separated fields per word, ``#`` comments, a blank line after each sentence.

    The tokens are the syntactic words, which are what UPOS and XPOS annotate: a multi-word token's
    range line (``1-2  don't``) is left out and its parts (``do``, ``n't``) are kept, so a tagger sees
    the same split as the treebank's annotation. Empty nodes (``8.1``) belong to the enhanced graph, carry
    no surface word, and are skipped. ``# key = value`` comments are kept in ``Sentence.meta``; a ``# newdoc``
    comment starts a new document (``Sentence.doc``).
    """
    path = Path(path)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    numbers: list[int] = []
    upos: list[str] = []
    xpos: list[str] = []
    meta: dict[str, str] = {}
    comment_at = 0  # line of the current block's first comment (0: none yet)
    doc, new_doc = 0, False

    def flush() -> None:
        nonlocal comment_at, doc, new_doc
        if tokens:
            tags = {"upos": upos.copy(), "xpos": xpos.copy()}
            if new_doc and sentences:
                doc += 1
            sentences.append(Sentence(tokens.copy(), tags, numbers.copy(), str(path), dict(meta), doc))
            new_doc = False
        elif comment_at:
            raise DataError(
                f"{path}, line {comment_at}: comments with no words after them; remove the stray comments, "
                "or add the sentence's words"
            )
        for col in (tokens, numbers, upos, xpos):
            col.clear()
        meta.clear()
        comment_at = 0

    for number, line in _lines(path):
        if not line.strip():
            flush()
        elif line.startswith("#"):
            comment_at = comment_at or number
            key, eq, value = line[1:].partition("=")
            new_doc = new_doc or key.split() in (["newdoc"], ["newdoc", "id"])
            if eq:
                meta[key.strip()] = value.strip()
        else:
            fields = line.split("\t")
            if len(fields) != 10:
                raise DataError(
                    f"{_where(path, number, line)} has {len(fields)} tab-separated field(s), expected 10 "
                    "(ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC); fix the line (spaces do not separate "
                    "fields in CoNLL-U), or check that the file is CoNLL-U"
                )
            word_id = fields[0]
            if _UD_RANGE.fullmatch(word_id) or _UD_EMPTY.fullmatch(word_id):
                continue
            if word_id != str(len(tokens) + 1):
                raise DataError(
                    f"{_where(path, number, line)} has word ID {word_id!r}, expected {len(tokens) + 1} (IDs count "
                    "1, 2, 3, ... in each sentence, with ranges like 3-4 and empty nodes like 5.1 as the only "
                    "other IDs); fix the ID, or add the missing blank line before a new sentence"
                )
            if not fields[1] or not fields[3]:
                raise DataError(f"{_where(path, number, line)} has an empty FORM or UPOS; write _ for a missing value")
            tokens.append(fields[1])
            numbers.append(number)
            upos.append(fields[3])
            xpos.append(fields[4])
    flush()
    if not sentences:
        raise DataError(f"{path} holds no sentences; check that it is a CoNLL-U file")
    return sentences


def check_tags(sentences: Sequence[Sentence], column: str, scheme: str) -> None:
    """Raise DataError at the first tag of ``column`` that ``scheme`` forbids, naming its file and line."""
    for sent in sentences:
        tags = _column(sent, column)
        bad = tagschemes.scheme_violation(tags, scheme)
        if bad is not None:
            i, why = bad
            raise DataError(
                f"{sent.path}, line {sent.lines[i]}: the {column} tag {tags[i]!r} (token {sent.tokens[i]!r}) is not "
                f"valid {scheme}: {why}. Fix the tag, or read the column with the scheme it is written in "
                f"(this column looks like {_guess(sentences, column)})"
            )


def _guess(sentences: Sequence[Sentence], column: str) -> str:
    try:
        return tagschemes.detect_scheme(_column(s, column) for s in sentences)
    except ValueError:
        return "no known scheme"


def _column(sent: Sentence, column: str) -> list[str]:
    try:
        return sent.tags[column]
    except KeyError:
        raise DataError(
            f"{sent.path}: sentences have no {column!r} column; the columns are {', '.join(sent.tags)}"
        ) from None


def convert_tags(sentences: Sequence[Sentence], column: str, source: str, target: str) -> list[Sentence]:
    """Copies of the sentences with ``column`` converted from scheme ``source`` to ``target``.

    The column is checked first, so a tag that ``source`` forbids gives a DataError naming its line.
    """
    check_tags(sentences, column, source)
    return [
        dataclasses.replace(s, tags={**s.tags, column: tagschemes.convert(s.tags[column], source, target)})
        for s in sentences
    ]
