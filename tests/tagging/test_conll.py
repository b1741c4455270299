"""CoNLL-2003 and CoNLL-U readers: small files with exact expectations, error messages, and the shared corpora."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from rnnlm.core.errors import DataError
from rnnlm.tagging.conll import check_tags, convert_tags, read_conll2003, read_conllu
from rnnlm.tagging.schemes import bioes_to_iob2, detect_scheme, iob1_to_iob2, iob2_to_bioes, iob2_to_iob1, is_valid

CONLL2003 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC


Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O
BRUSSELS NNP B-NP B-LOC"""

CONLLU = """# newdoc id = d1
# sent_id = s1
# text = I don't know.
1\tI\tI\tPRON\tPRP\t_\t4\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_
4.1\tknow\tknow\tVERB\tVB\t_\t_\t_\t4:conj\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

# sent_id = s2
# comment without an equals sign
1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def test_conll2003_sentences_columns_and_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "x.conll", CONLL2003)
    sents = read_conll2003(path)
    assert [s.tokens for s in sents] == [["EU", "rejects", "German"], ["Peter", "Blackburn"], ["BRUSSELS"]]
    assert sents[0].tags == {
        "pos": ["NNP", "VBZ", "JJ"],
        "chunk": ["B-NP", "B-VP", "B-NP"],
        "ner": ["B-ORG", "O", "B-MISC"],
    }
    assert [s.lines for s in sents] == [[3, 4, 5], [8, 9], [11]]  # a -DOCSTART- line ends a sentence too
    assert sents[2].path == str(path) and len(sents[1]) == 2
    # Windows line ends and a byte order mark read the same.
    assert read_conll2003(write(tmp_path / "crlf.conll", "\ufeff" + CONLL2003.replace("\n", "\r\n"))) == [
        s.__class__(s.tokens, s.tags, s.lines, str(tmp_path / "crlf.conll"), doc=s.doc) for s in sents
    ]


def test_documents_are_counted_from_docstart_and_newdoc(tmp_path: Path) -> None:
    # The -DOCSTART- at the top opens document 0; the one before BRUSSELS opens document 1.
    assert [s.doc for s in read_conll2003(write(tmp_path / "x.conll", CONLL2003))] == [0, 0, 1]
    twice = CONLL2003.replace(
        "-DOCSTART- -X- -X- O\nBRUSSELS", "-DOCSTART- -X- -X- O\n\n-DOCSTART- -X- -X- O\nBRUSSELS"
    )
    assert [s.doc for s in read_conll2003(write(tmp_path / "y.conll", twice))] == [0, 0, 1]  # no empty document
    # "# newdoc" with or without an id opens a document; the first sentence is in document 0 either way.
    text = CONLLU + "\n# newdoc\n1\tBye\tbye\tINTJ\tUH\t_\t0\troot\t_\t_\n"
    text += "\n# newdoc id = d3\n1\tNo\tno\tINTJ\tUH\t_\t0\troot\t_\t_\n"
    assert [s.doc for s in read_conllu(write(tmp_path / "x.conllu", text))] == [0, 0, 1, 2]
    no_first = write(tmp_path / "y.conllu", text.replace("# newdoc id = d1\n", ""))
    assert [s.doc for s in read_conllu(no_first)] == [0, 0, 1, 2]


def test_conll2003_wrong_field_count_names_file_line_and_fix(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.conll", "EU NNP B-NP B-ORG\nrejects VBZ O\n")
    with pytest.raises(DataError) as e:
        read_conll2003(path)
    msg = str(e.value)
    assert f"{path}, line 2: 'rejects VBZ O' has 3 field(s), expected 4" in msg and "fix the line" in msg


def test_conll2003_reports_bad_utf8_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "latin1.conll", b"EU NNP B-NP B-ORG\n\n" + "Müller NNP B-NP B-PER\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.conll is not valid UTF-8: the bytes 0xfc .*\(line 3\).*iconv"):
        read_conll2003(path)


@pytest.mark.parametrize("text", ["-DOCSTART- -X- -X- O\n\n", "\n\n"])
def test_conll2003_without_sentences(tmp_path: Path, text: str) -> None:
    with pytest.raises(DataError, match="holds no sentences"):
        read_conll2003(write(tmp_path / "empty.conll", text))


def test_conllu_words_metadata_and_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "x.conllu", CONLLU)
    a, b = read_conllu(path)
    assert a.tokens == ["I", "do", "n't", "know", "."]  # the syntactic words, not the surface token "don't"
    assert a.tags == {"upos": ["PRON", "AUX", "PART", "VERB", "PUNCT"], "xpos": ["PRP", "VBP", "RB", "VB", "."]}
    assert a.lines == [4, 6, 7, 8, 10]  # the range line (5) and the empty node (9) are skipped
    assert a.meta == {"newdoc id": "d1", "sent_id": "s1", "text": "I don't know."}
    assert (b.tokens, b.meta, b.lines) == (["Hi"], {"sent_id": "s2"}, [14])


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("1 I I PRON PRP _ 0 root _ _", "has 1 tab-separated field(s), expected 10"),
        ("1\tI\tI\tPRON\tPRP\t_\t0\troot\t_", "has 9 tab-separated field(s), expected 10"),
        ("2\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_", "has word ID '2', expected 1"),
        ("1\tI\tI\t\tPRP\t_\t0\troot\t_\t_", "empty FORM or UPOS"),
    ],
)
def test_conllu_malformed_word_lines(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path / "bad.conllu", f"# sent_id = s1\n{line}\n\n")
    with pytest.raises(DataError) as e:
        read_conllu(path)
    assert f"{path}, line 2: " in str(e.value) and expected in str(e.value)


def test_conllu_missing_blank_line_between_sentences(tmp_path: Path) -> None:
    text = CONLLU.replace("_\n\n# sent_id = s2", "_\n# sent_id = s2")  # s2's word 1 now follows s1's word 5
    with pytest.raises(DataError, match=r"line 13: .* has word ID '1', expected 6 .*missing blank line"):
        read_conllu(write(tmp_path / "joined.conllu", text))


def test_conllu_stray_comment_after_last_sentence(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"line 16: comments with no words after them"):
        read_conllu(write(tmp_path / "x.conllu", CONLLU + "\n# sent_id = s3\n"))


def test_check_and_convert_tags(tmp_path: Path) -> None:
    sents = read_conll2003(write(tmp_path / "x.conll", CONLL2003))
    check_tags(sents, "ner", "IOB2")
    bioes = convert_tags(sents, "ner", "IOB2", "BIOES")
    assert [s.tags["ner"] for s in bioes] == [["S-ORG", "O", "S-MISC"], ["B-PER", "E-PER"], ["S-LOC"]]
    assert sents[1].tags["ner"] == ["B-PER", "I-PER"] and bioes[1].tags["chunk"] == ["B-NP", "I-NP"]
    assert bioes[1].lines == [8, 9]

    iob1 = write(tmp_path / "iob1.conll", CONLL2003.replace("B-PER", "I-PER"))
    with pytest.raises(DataError) as e:
        check_tags(read_conll2003(iob1), "ner", "IOB2")
    msg = str(e.value)
    assert f"{iob1}, line 8: the ner tag 'I-PER' (token 'Peter') is not valid IOB2" in msg
    assert "this column looks like IOB1" in msg
    with pytest.raises(DataError, match="no 'upos' column; the columns are pos, chunk, ner"):
        check_tags(sents, "upos", "IOB2")


# -- the shared corpora ---------------------------------------------------------------------------------------

CONLL_FILES = {"eng.train": (14041, 203621), "eng.testa": (3250, 51362), "eng.testb": (3453, 46435)}


@pytest.fixture(scope="module")
def conll2003(shared_data: Path) -> dict[str, list]:
    return {name: read_conll2003(shared_data / "conll2003" / name) for name in CONLL_FILES}


@pytest.mark.e2e
def test_conll2003_corpus_sizes_and_scheme(conll2003: dict[str, list]) -> None:
    for name, (n_sents, n_tokens) in CONLL_FILES.items():
        sents = conll2003[name]
        assert (len(sents), sum(len(s) for s in sents)) == (n_sents, n_tokens), name
        for column in ("ner", "chunk"):
            assert detect_scheme(s.tags[column] for s in sents) == "IOB2", (name, column)
            check_tags(sents, column, "IOB2")
    train = conll2003["eng.train"]
    assert train[0].tokens[:3] == ["EU", "rejects", "German"] and train[0].lines[0] == 1
    starts = [t[2:] for s in train for t in s.tags["ner"] if t.startswith("B-")]
    assert {k: starts.count(k) for k in ("PER", "LOC", "ORG", "MISC")} == {
        "PER": 6600,
        "LOC": 7140,
        "ORG": 6321,
        "MISC": 3438,
    }


@pytest.mark.e2e
def test_conll2003_round_trips(conll2003: dict[str, list]) -> None:
    for sents in conll2003.values():
        for s in sents:
            for column in ("ner", "chunk"):
                tags = s.tags[column]
                bioes = iob2_to_bioes(tags)
                assert is_valid(bioes, "BIOES") and bioes_to_iob2(bioes) == tags
                assert iob1_to_iob2(iob2_to_iob1(tags)) == tags
                # Both schemes mark each chunk start once: B- in IOB2, B- or S- in BIOES.
                assert sum(t[0] == "B" for t in tags) == sum(t[0] in "BS" for t in bioes)


@pytest.mark.e2e
def test_conllu_corpus(shared_data: Path) -> None:
    upos = {"ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT"}
    upos |= {"SCONJ", "SYM", "VERB", "X"}  # the 17 universal part-of-speech tags
    for split in ("dev", "test"):
        path = shared_data / "ud_en_ewt" / f"en_ewt-ud-{split}.conllu"
        sents = read_conllu(path)
        raw = path.read_text(encoding="utf-8").split("\n")
        words = [i for i, line in enumerate(raw, start=1) if re.match(r"\d+\t", line)]
        assert [n for s in sents for n in s.lines] == words  # every plain-ID line, in order, and nothing else
        assert len(sents) == sum(line.startswith("# sent_id = ") for line in raw)
        assert all(s.meta["sent_id"] and s.meta["text"] for s in sents)
        newdocs = [s.doc for s in sents if "newdoc id" in s.meta]
        assert newdocs == list(range(sum(line.startswith("# newdoc") for line in raw)))  # each opens the next
        assert all(b.doc - a.doc == ("newdoc id" in b.meta) for a, b in itertools.pairwise(sents))
        assert {t for s in sents for t in s.tags["upos"]} == upos
        for s in sents:
            assert [raw[n - 1].split("\t")[1] for n in s.lines] == s.tokens
    dev = read_conllu(shared_data / "ud_en_ewt" / "en_ewt-ud-dev.conllu")
    assert (len(dev), sum(len(s) for s in dev)) == (2001, 25147)
    assert dev[0].tokens == ["From", "the", "AP", "comes", "this", "story", ":"]
