"""Tag schemes: validation and conversion against chunkings rendered independently in each scheme."""

from __future__ import annotations

import itertools

import pytest

from rnnlm.tagging.schemes import (
    SCHEMES,
    TagSet,
    bioes_to_iob2,
    chunks,
    coerce,
    convert,
    detect_scheme,
    iob1_to_iob2,
    iob2_to_bioes,
    iob2_to_iob1,
    is_valid,
    scheme_violation,
    split_tag,
)

TYPES = ("A", "B")
Chunking = tuple[tuple[str, int], ...]  # segments: ("", 1) is an O token, ("A", 3) a 3-token chunk of type A


def chunkings(n: int) -> list[Chunking]:
    """Every way to cover n tokens with O tokens and typed chunks."""
    if n == 0:
        return [()]
    out: list[Chunking] = [(("", 1), *rest) for rest in chunkings(n - 1)]
    for k in range(1, n + 1):
        out += [((t, k), *rest) for t in TYPES for rest in chunkings(n - k)]
    return out


def render(chunks: Chunking, scheme: str) -> list[str]:
    """The tags of a chunking, written from each scheme's definition (not with the converters)."""
    tags: list[str] = []
    prev = ""
    for type_, k in chunks:
        if not type_:
            tags.append("O")
        elif scheme == "IOB2":
            tags += [f"B-{type_}"] + [f"I-{type_}"] * (k - 1)
        elif scheme == "IOB1":
            tags += [f"{'B' if prev == type_ else 'I'}-{type_}"] + [f"I-{type_}"] * (k - 1)
        else:
            tags += [f"S-{type_}"] if k == 1 else [f"B-{type_}"] + [f"I-{type_}"] * (k - 2) + [f"E-{type_}"]
        prev = type_
    return tags


ALL_CHUNKINGS = [c for n in range(6) for c in chunkings(n)]
RENDERED = {s: [render(c, s) for c in ALL_CHUNKINGS] for s in SCHEMES}


def test_chunkings_are_distinct_in_every_scheme() -> None:
    # The premise of the tests below: no scheme writes two different chunkings the same way.
    for scheme in SCHEMES:
        assert len({tuple(t) for t in RENDERED[scheme]}) == len(ALL_CHUNKINGS)


@pytest.mark.parametrize(("source", "target"), list(itertools.product(SCHEMES, SCHEMES)))
def test_convert_matches_rendering(source: str, target: str) -> None:
    for a, b in zip(RENDERED[source], RENDERED[target], strict=True):
        assert convert(a, source, target) == b


def test_named_converters_and_round_trips() -> None:
    for iob1, iob2, bioes in zip(RENDERED["IOB1"], RENDERED["IOB2"], RENDERED["BIOES"], strict=True):
        assert iob1_to_iob2(iob1) == iob2 and iob2_to_iob1(iob2) == iob1
        assert iob2_to_bioes(iob2) == bioes and bioes_to_iob2(bioes) == iob2
        assert bioes_to_iob2(iob2_to_bioes(iob2)) == iob2
        assert iob1_to_iob2(iob2_to_iob1(iob2)) == iob2


@pytest.mark.parametrize("scheme", ["IOB2", "BIOES"])
def test_valid_exactly_when_some_chunking_renders_it(scheme: str) -> None:
    alphabet = ["O"] + [f"{p}-{t}" for t in TYPES for p in "BIES"]
    for n in range(5):
        rendered = {tuple(render(c, scheme)) for c in chunkings(n)}
        for tags in itertools.product(alphabet, repeat=n):
            assert is_valid(tags, scheme) == (tags in rendered), tags


def test_iob1_reads_any_b_i_o_sequence_and_iob2_is_already_iob1() -> None:
    assert is_valid(["B-A", "O", "I-A", "B-A", "I-B"], "IOB1")
    assert not is_valid(["S-A"], "IOB1")
    assert all(is_valid(t, "IOB1") for t in RENDERED["IOB2"])
    # A redundant B- (not after a chunk of its type) is still a chunk start: canonical IOB1 drops it.
    assert iob1_to_iob2(["B-A", "I-A", "O", "B-A"]) == ["B-A", "I-A", "O", "B-A"]
    assert iob2_to_iob1(["B-A", "I-A", "O", "B-A"]) == ["I-A", "I-A", "O", "I-A"]


@pytest.mark.parametrize(
    ("tags", "scheme", "index", "reason"),
    [
        (["O", "I-PER"], "IOB2", 1, "continues no PER chunk"),
        (["B-LOC", "I-PER"], "IOB2", 1, "continues no PER chunk"),
        (["B-PER", "E-PER"], "IOB2", 1, "prefix that IOB2 does not use"),
        (["B-PER", "O"], "BIOES", 0, "not closed by E-"),
        (["B-PER", "I-PER"], "BIOES", 1, "ends inside a PER chunk"),
        (["S-PER", "E-PER"], "BIOES", 1, "continues no PER chunk"),
        (["B-PER", "E-LOC"], "BIOES", 1, "continues no LOC chunk"),
        (["O", "PER"], "IOB1", 1, "not a chunk tag"),
        (["B-"], "IOB2", 0, "not a chunk tag"),
    ],
)
def test_violation_position_and_reason(tags: list[str], scheme: str, index: int, reason: str) -> None:
    bad = scheme_violation(tags, scheme)
    assert bad is not None and bad[0] == index and reason in bad[1]


def test_converters_refuse_invalid_input() -> None:
    with pytest.raises(ValueError, match=r"tag 1 of \['O', 'I-PER'\] is not valid IOB2"):
        iob2_to_bioes(["O", "I-PER"])
    with pytest.raises(ValueError, match="not valid BIOES"):
        bioes_to_iob2(["B-PER"])
    with pytest.raises(ValueError, match="not valid IOB2"):
        convert(["I-PER"], "IOB2", "IOB2")
    with pytest.raises(ValueError, match="unknown tag scheme 'BILOU'"):
        convert(["O"], "IOB2", "BILOU")


def test_split_tag_keeps_hyphens_in_the_type() -> None:
    assert split_tag("O") == ("O", "")
    assert split_tag("B-GPE-LOC") == ("B", "GPE-LOC")
    assert convert(["B-GPE-LOC", "I-GPE-LOC"], "IOB2", "BIOES") == ["B-GPE-LOC", "E-GPE-LOC"]
    for bad in ["", "B", "B-", "X-PER", "o", "BPER"]:
        with pytest.raises(ValueError):
            split_tag(bad)


def test_detect_scheme() -> None:
    assert detect_scheme([["B-A", "I-A"], ["O"]]) == "IOB2"
    assert detect_scheme([["B-A", "I-A"], ["O", "I-B"]]) == "IOB1"
    assert detect_scheme([["B-A", "E-A"], ["S-B"]]) == "BIOES"
    assert detect_scheme([["O", "O"]]) == "IOB2"  # no chunks: every scheme fits, and converting changes nothing
    with pytest.raises(ValueError, match="fit none"):
        detect_scheme([["B-A", "E-A"], ["O", "I-A"]])  # BIOES in one sentence, IOB1 in another


def test_tag_set_is_sorted_and_round_trips() -> None:
    seqs = [["B-PER", "I-PER", "O"], ["S-LOC", "B-LOC", "E-LOC", "O"]]
    ts = TagSet.build(reversed(seqs))
    assert ts.tags == ["O", "B-LOC", "E-LOC", "S-LOC", "B-PER", "I-PER"]
    assert TagSet.build(seqs) == ts  # ids do not depend on data order
    assert ts.encode(["O", "I-PER", "S-LOC"]) == [0, 5, 3]
    assert ts.decode([0, 5, 3]) == ["O", "I-PER", "S-LOC"]
    assert TagSet.from_dict(ts.to_dict()) == ts and len(ts) == 6
    with pytest.raises(ValueError, match="'B-ORG' is not in the tag set"):
        ts.encode(["B-ORG"])
    with pytest.raises(ValueError, match="distinct"):
        TagSet(["O", "O"])


def spans(c: Chunking) -> list[tuple[str, int, int]]:
    """The (type, start, end) chunks of a chunking, from its segments."""
    out, at = [], 0
    for type_, k in c:
        if type_:
            out.append((type_, at, at + k))
        at += k
    return out


@pytest.mark.parametrize("scheme", SCHEMES)
def test_chunks_of_valid_tags_are_the_rendered_chunks_and_coerce_keeps_them(scheme: str) -> None:
    for c, tags in zip(ALL_CHUNKINGS, RENDERED[scheme], strict=True):
        assert chunks(tags) == spans(c)
        assert coerce(tags, scheme) == tags


def test_chunks_read_any_sequence_as_conlleval_does() -> None:
    """Ill-formed predictions, read by seqeval's conlleval rules; coerce writes the same chunks validly."""
    get_entities = pytest.importorskip("seqeval.metrics.sequence_labeling").get_entities
    alphabet = ["O"] + [f"{p}-{t}" for t in TYPES for p in "BIES"]
    for n in range(4):
        for tags in itertools.product(alphabet, repeat=n):
            expected = sorted((t, a, b + 1) for t, a, b in get_entities(list(tags)))
            assert sorted(chunks(tags)) == expected, tags
            for scheme in ("IOB2", "BIOES"):
                fixed = coerce(tags, scheme)
                assert is_valid(fixed, scheme) and chunks(fixed) == chunks(tags)
    assert chunks(["O", "I-A", "E-A", "E-A", "S-B", "I-B"]) == [("A", 1, 3), ("A", 3, 4), ("B", 4, 5), ("B", 5, 6)]
