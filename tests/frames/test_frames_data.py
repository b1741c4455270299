"""Frame data: the .ts and .npz readers, statistics, the stratified split, padding and the synthetic task."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from rnnlm.core.errors import DataError
from rnnlm.frames.data import FrameDataset, read_frames, read_npz, read_ts
from rnnlm.frames.prep import (
    IGNORE_INDEX,
    feature_stats,
    make_batch,
    pad_frames,
    pad_labels,
    stratified_folds,
    stratified_split,
)
from rnnlm.frames.synth import future_symbol_dataset

# ---------------------------------------------------------------- the real Japanese Vowels files


@pytest.fixture(scope="module")
def vowels(shared_data):
    root = shared_data / "japanese_vowels"
    train = read_ts(root / "JapaneseVowels_TRAIN.ts")
    return train, read_ts(root / "JapaneseVowels_TEST.ts", classes=train.classes)


def test_japanese_vowels_match_the_description(vowels):
    train, test = vowels
    assert (len(train), len(test)) == (270, 370)
    assert train.classes == test.classes == [str(k) for k in range(1, 10)]
    assert train.num_features == test.num_features == 12
    # 7 to 29 frames overall; the longest sequences are all in the test file.
    assert (train.lengths.min(), train.lengths.max(), test.lengths.min(), test.lengths.max()) == (7, 26, 7, 29)
    assert (train.lengths.sum(), test.lengths.sum()) == (4274, 5687)
    assert Counter(train.labels.tolist()) == {k: 30 for k in range(9)}
    assert [Counter(test.labels.tolist())[k] for k in range(9)] == [31, 35, 88, 44, 29, 24, 40, 50, 29]
    # The first values on the file's first data line: dimension 1 is column 0, dimension 2 column 1.
    first = train.sequences[0]
    assert first.shape == (20, 12) and first.dtype == np.float32
    assert first[0, 0] == np.float32(1.860936) and first[1, 0] == np.float32(1.891651)
    assert first[0, 1] == np.float32(-0.207383)
    assert train.labels[0] == 0 and train.labels[-1] == 8 and len(train.sequences[-1]) == 9
    assert not any(np.isnan(s).any() for s in train.sequences + test.sequences)
    assert read_frames(train.source).labels.tolist() == train.labels.tolist()


def test_npz_round_trip_of_the_real_data(vowels, tmp_path):
    train, _ = vowels
    frames, lengths, _ = pad_frames(train.sequences, pad_value=np.nan)
    path = tmp_path / "jv.npz"
    np.savez(path, x=frames.numpy(), lengths=lengths.numpy(), y=np.array(train.classes)[train.labels])
    back = read_frames(path)
    assert back.task == "classify" and back.classes == train.classes
    assert back.labels.tolist() == train.labels.tolist()
    assert all(np.array_equal(a, b) for a, b in zip(back.sequences, train.sequences, strict=True))


def test_feature_stats_on_the_real_training_set(vowels):
    train, _ = vowels
    mean, std = feature_stats(train.sequences)
    frames = np.concatenate(train.sequences).astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), frames.mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(std.numpy(), frames.std(0), rtol=1e-6)


# ---------------------------------------------------------------- hand-written .ts files

GOOD = """# a comment before the header
@problemName Tiny
@timeStamps false
@MISSING true
@univariate false
@dimensions 2
@equalLength false
@classLabel true b a

@data
1,2,3:4,5,6:a
# a comment among the cases
 7 : ? :b
1e-3,-2:?,0.5:a
"""


def write(tmp_path, text, name="x.ts"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_ts_variable_lengths_missing_values_comments(tmp_path):
    data = read_ts(write(tmp_path, GOOD))
    assert data.classes == ["b", "a"]  # the order of @classLabel, not sorted
    assert data.labels.tolist() == [1, 0, 1]
    assert data.lengths.tolist() == [3, 1, 2]
    np.testing.assert_array_equal(data.sequences[0], [[1, 4], [2, 5], [3, 6]])
    assert data.sequences[1][0, 0] == 7 and np.isnan(data.sequences[1][0, 1])
    np.testing.assert_array_equal(data.sequences[2][:, 0], np.float32([1e-3, -2]))
    assert np.isnan(data.sequences[2][0, 1]) and data.sequences[2][1, 1] == 0.5


def test_ts_crlf_univariate_unlabelled_and_forced_classes(tmp_path):
    uni = read_ts(write(tmp_path, "@univariate true\r\n@classLabel false\r\n@data\r\n1,2\r\n3\r\n"))
    assert uni.labels is None and uni.classes == [] and uni.num_features == 1
    assert [s[:, 0].tolist() for s in uni.sequences] == [[1, 2], [3]]
    forced = read_ts(write(tmp_path, GOOD), classes=["a", "b", "c"])
    assert forced.classes == ["a", "b", "c"] and forced.labels.tolist() == [0, 1, 0]


HEAD = "@dimensions 2\n@classLabel true a b\n@data\n"  # data starts on line 4


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        (HEAD + "1:2:3:a\n", 4, "4 ':'-separated fields, expected 2 dimensions"),
        (HEAD + "1,2:3,4:a\n1:a\n", 5, "2 ':'-separated fields"),
        ("@classLabel true a\n@data\n1:2:a\n1:a\n", 4, "expected 2 dimensions"),  # the first case sets the count
        (HEAD + "1,x2:3,4:a\n", 4, "dimension 1, value 2 is 'x2'"),
        (HEAD + "1,2:3,inf:a\n", 4, "dimension 2, value 2 is 'inf'"),
        (HEAD + "1,,2:3,4,5:a\n", 4, "value 2 is ''"),
        (HEAD + "1:2:a\n\n1:2:c\n", 6, "label 'c' is not among the classes ['a', 'b']"),
        (HEAD + "1,2:3,4,5:b\n", 4, "different lengths [2, 3]"),
        ("@dimensions 2\n1:2:a\n@data\n", 2, "data '1:2:a' before @data"),
        ("@dimensions 2\n@classLabel true a\n", 2, "ends without an '@data' line"),
        (HEAD + "1:2:a\n@dimensions 2\n", 5, "header line '@dimensions 2' after @data"),
        ("@targetLabel true\n@data\n", 1, "unknown header '@targetlabel'"),
        ("@dimensions two\n", 1, "positive whole number, got 'two'"),
        ("@timeStamps true\n", 1, "time-stamped series are not supported"),
        ("@classLabel true a a\n", 1, "lists a label twice"),
        ("@classLabel maybe\n", 1, "expected '@classLabel true"),
        ("@dimensions 1\n@data\n1:a\n", 2, "@data before @classLabel"),
        ("@equalLength true\n@seriesLength 2\n@classLabel true a\n@data\n1,2:a\n1:a\n", 6, "@seriesLength 2"),
    ],
)
def test_ts_malformed_names_file_line_and_value(tmp_path, text, line, fragment):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as e:
        read_ts(path)
    assert f"{path}, line {line}:" in str(e.value)
    assert fragment in str(e.value)


def test_ts_label_outside_forced_classes_and_empty_data(tmp_path):
    with pytest.raises(DataError, match=r"x\.ts, line 13: label 'b' .*passed as classes="):
        read_ts(write(tmp_path, GOOD), classes=["a"])
    with pytest.raises(DataError, match="no sequences after @data"):
        read_ts(write(tmp_path, HEAD))
    with pytest.raises(DataError, match="no such file"):
        read_ts(tmp_path / "absent.ts")
    with pytest.raises(DataError, match="unknown frame file type '.csv'"):
        read_frames(tmp_path / "x.csv")


# ---------------------------------------------------------------- .npz files


def test_npz_int_labels_padding_ignored_nan_kept(tmp_path):
    x = np.full((3, 4, 2), np.inf)  # infinity in the padding must not matter
    x[0, :2] = [[1, 2], [3, np.nan]]
    x[1, :4] = np.arange(8).reshape(4, 2)
    x[2, :1] = [[5, 6]]
    np.savez(tmp_path / "a.npz", x=x, lengths=np.array([2, 4, 1]), y=np.array([7, 3, 7]))
    data = read_npz(tmp_path / "a.npz")
    assert data.classes == ["3", "7"] and data.labels.tolist() == [1, 0, 1]
    assert data.lengths.tolist() == [2, 4, 1] and data.sequences[0].dtype == np.float32
    assert np.isnan(data.sequences[0][1, 1]) and data.sequences[2].tolist() == [[5, 6]]
    forced = read_npz(tmp_path / "a.npz", classes=["7", "5", "3"])
    assert forced.labels.tolist() == [0, 2, 0]
    with pytest.raises(DataError, match=r"a\.npz, sequence 1: label '3' is not among the classes \['7'\]"):
        read_npz(tmp_path / "a.npz", classes=["7"])


def test_npz_frame_labels_strings_and_classes_array(tmp_path):
    x = np.zeros((2, 3, 1))
    frame_labels = np.array([["on", "off", "off"], ["off", "??", "??"]])  # "??" sits in the padding
    np.savez(tmp_path / "f.npz", x=x, lengths=np.array([3, 1]), frame_labels=frame_labels)
    data = read_npz(tmp_path / "f.npz")
    assert data.task == "label" and data.classes == ["off", "on"]
    assert [lab.tolist() for lab in data.labels] == [[1, 0, 0], [0]]
    ids = np.array([[2, 0, -1], [1, -1, -1]])
    np.savez(tmp_path / "g.npz", x=x, lengths=np.array([2, 1]), frame_labels=ids, classes=np.array(["a", "b", "c"]))
    data = read_npz(tmp_path / "g.npz")
    assert data.classes == ["a", "b", "c"] and [lab.tolist() for lab in data.labels] == [[2, 0], [1]]
    np.savez(tmp_path / "h.npz", x=x, lengths=np.array([3, 1]), frame_labels=ids, classes=np.array(["a", "b", "c"]))
    with pytest.raises(DataError, match="ids outside 0..2"):
        read_npz(tmp_path / "h.npz")


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        ({"lengths": [1], "y": [0]}, "needs arrays 'x' and 'lengths'"),
        ({"x": np.zeros((1, 2, 1)), "lengths": [1], "y": [0], "frame_labels": [[0, 0]]}, "holds both 'y'"),
        ({"x": np.zeros((2, 3)), "lengths": [1, 1], "y": [0, 0]}, "'x' must be (N, T, F)"),
        ({"x": np.zeros((2, 3, 1)), "lengths": [1, 4], "y": [0, 0]}, "sequence 1 has length 4"),
        ({"x": np.zeros((2, 3, 1)), "lengths": [0, 1], "y": [0, 0]}, "lie in 1..3"),
        ({"x": np.zeros((2, 3, 1)), "lengths": [1.0, 1.0], "y": [0, 0]}, "'lengths' must be (2,) ints"),
        ({"x": np.array([[[0.0], [np.inf]]]), "lengths": [2], "y": [0]}, "sequence 0 holds an infinite value"),
        ({"x": np.zeros((2, 3, 1)), "lengths": [1, 1], "y": [0.5, 1.0]}, "'y' must be (2,) ints or strings"),
        ({"x": np.zeros((2, 3, 1)), "lengths": [1, 1], "y": [0, 1, 1]}, "'y' must be (2,)"),
        ({"x": np.zeros((2, 3, 1)), "lengths": [1, 1], "frame_labels": [0, 1]}, "'frame_labels' must be (2, 3)"),
        ({"x": np.zeros((1, 1, 1)), "lengths": [1], "y": np.array([{}], dtype=object)}, "needs pickle"),
        ({"x": np.zeros((1, 1, 1)), "lengths": [1], "y": [0], "classes": ["a", "a"]}, "distinct names"),
    ],
)
def test_npz_malformed(tmp_path, arrays, fragment):
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    with pytest.raises(DataError) as e:
        read_npz(path)
    assert str(path) in str(e.value) and fragment in str(e.value)


def test_npz_not_an_archive(tmp_path):
    with pytest.raises(DataError, match=r"not an .npz \(zip\) archive"):
        read_npz(write(tmp_path, "hello", "t.npz"))


# ---------------------------------------------------------------- statistics, split, padding


def test_feature_stats_by_hand_and_against_numpy():
    seqs = [np.array([[1, 2, 4], [3, np.nan, 4]]), np.array([[5, 4, 4]])]
    mean, std = feature_stats(seqs)
    assert mean.dtype == std.dtype == torch.float32
    assert mean.tolist() == [3.0, 3.0, 4.0]
    assert std[0].item() == pytest.approx(math.sqrt(8 / 3)) and std[1].item() == 1.0
    assert std[2].item() == pytest.approx(1e-4)  # a constant feature: the floor, not 0
    rng = np.random.default_rng(0)
    seqs = [rng.normal(3, 2, (int(t), 5)) for t in rng.integers(1, 9, 20)]
    for s in seqs:
        s[rng.random(s.shape) < 0.2] = np.nan
    mean, std = feature_stats(seqs)
    frames = np.concatenate(seqs)
    np.testing.assert_allclose(mean.numpy(), np.nanmean(frames, 0), rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), np.nanstd(frames, 0), rtol=1e-6)
    mean, std = feature_stats([np.array([[np.nan, 1.0]])], min_std=0.5)
    assert mean.tolist() == [0.0, 1.0] and std.tolist() == [1.0, 0.5]  # never-seen feature; floored std


def test_stratified_split_counts_and_determinism():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2 + [3])
    train, val = stratified_split(labels, 0.2, seed=7)
    assert train.dtype == val.dtype == np.int64 and np.all(np.diff(val) > 0)
    assert sorted(train.tolist() + val.tolist()) == list(range(len(labels)))
    assert Counter(labels[val].tolist()) == {0: 2, 1: 1, 2: 1}  # round(0.2 * n), at least 1, never all
    assert 17 in train  # the only item of class 3 stays in training
    again = stratified_split(labels, 0.2, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(again, (train, val), strict=True))
    others = {tuple(stratified_split(labels, 0.2, seed=s)[1]) for s in range(10)}
    assert len(others) > 1  # the seed matters
    _, val = stratified_split(labels, 0.9, seed=0)
    assert Counter(labels[val].tolist()) == {0: 9, 1: 4, 2: 1}
    for bad in (0.0, 1.0):
        with pytest.raises(DataError, match="strictly between 0 and 1"):
            stratified_split(labels, bad, seed=0)
    with pytest.raises(DataError, match="no class has two or more"):
        stratified_split([0, 1, 2], 0.5, seed=0)


def test_stratified_folds_deal_each_class_round_robin():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2)
    folds = stratified_folds(labels, 3, seed=7)
    assert folds.dtype == np.int64 and np.array_equal(folds, stratified_folds(labels, 3, seed=7))
    for cls, counts in ((0, [4, 3, 3]), (1, [2, 2, 1]), (2, [1, 1, 0])):
        assert np.bincount(folds[labels == cls], minlength=3).tolist() == counts
    assert not np.array_equal(folds, stratified_folds(labels, 3, seed=8))
    with pytest.raises(DataError, match="k >= 2"):
        stratified_folds(labels, 1, seed=0)


def test_pad_frames_and_labels():
    frames, lengths, mask = pad_frames([np.ones((2, 3)), np.full((1, 3), np.nan), torch.zeros(3, 3)], pad_value=-9)
    assert frames.shape == (3, 3, 3) and frames.dtype == torch.float32
    assert lengths.tolist() == [2, 1, 3]
    assert mask.tolist() == [[True, True, False], [True, False, False], [True, True, True]]
    assert frames[0, 2].tolist() == [-9] * 3 and frames[1, 0].isnan().all() and frames[1, 1:].eq(-9).all()
    assert pad_labels([np.array([1, 2]), np.array([0])]).tolist() == [[1, 2], [0, IGNORE_INDEX]]
    with pytest.raises(ValueError, match="one F"):
        pad_frames([np.ones((2, 3)), np.ones((2, 4))])


def test_make_batch_both_tasks():
    seqs = [np.full((n, 2), n, dtype=np.float32) for n in (3, 1, 2)]
    data = FrameDataset(seqs, np.array([2, 0, 1]), ["a", "b", "c"])
    batch = make_batch(data, [2, 0])
    assert batch.lengths.tolist() == [2, 3] and batch.targets.tolist() == [1, 2]
    assert batch.frames[0, :, 0].tolist() == [2, 2, 0] and batch.mask.sum().item() == 5
    frame_level = FrameDataset(seqs, [np.array([0, 1, 1]), np.array([1]), np.array([0, 0])], ["x", "y"], "label")
    assert make_batch(frame_level, [1, 2]).targets.tolist() == [[1, IGNORE_INDEX], [0, 0]]
    assert make_batch(frame_level.subset([2]), [0]).targets.tolist() == [[0, 0]]
    with pytest.raises(ValueError, match=r"label ids must lie in \[0, 2\)"):
        FrameDataset(seqs, np.array([0, 1, 2]), ["a", "b"])


# ---------------------------------------------------------------- the synthetic task


def symbols_of(data):
    return [s[:, : len(data.classes)].argmax(1) for s in data.sequences]


def test_future_symbol_labels_are_the_symbol_lookahead_frames_later():
    data = future_symbol_dataset(50, seed=3, lookahead=2, noise=0.0, extra_features=1)
    assert data.task == "label" and data.classes == ["0", "1", "2", "3"] and data.num_features == 5
    assert data.lengths.min() >= 8 and data.lengths.max() <= 20
    for s, lab in zip(symbols_of(data), data.labels, strict=True):
        assert lab.tolist() == s[2:].tolist() + [s[-1]] * 2
    same = future_symbol_dataset(50, seed=3, lookahead=2, noise=0.0, extra_features=1)
    assert all(np.array_equal(a, b) for a, b in zip(same.sequences, data.sequences, strict=True))
    other = future_symbol_dataset(50, seed=4, lookahead=2, noise=0.0, extra_features=1)
    assert not all(np.array_equal(a, b) for a, b in zip(other.sequences, data.sequences, strict=False))


def test_future_symbol_defeats_the_best_causal_rule_but_not_a_bidirectional_one():
    d = 3

    def causal_keys(data):  # what a left-to-right reader knows at frame t: here the last two symbols
        for s, lab in zip(symbols_of(data), data.labels, strict=True):
            for t in range(1, len(s) - d):
                yield (s[t - 1], s[t], t), lab[t]

    counts: dict = {}
    for key, y in causal_keys(future_symbol_dataset(3000, seed=0, lookahead=d)):
        counts.setdefault(key, Counter())[y] += 1
    test = future_symbol_dataset(1000, seed=1, lookahead=d)
    hits = [counts[k].most_common(1)[0][0] == y for k, y in causal_keys(test) if k in counts]
    assert len(hits) > 5000 and abs(np.mean(hits) - 0.25) < 0.03  # chance, for K = 4 symbols
    future = [
        np.array_equal(s[np.minimum(np.arange(len(s)) + d, len(s) - 1)], lab)
        for s, lab in zip(symbols_of(test), test.labels, strict=True)
    ]
    assert all(future)  # reading frame t + d gives every label, with the default noise


def test_npz_and_ts_without_labels_or_with_labels_skipped(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(2, 3, 2)
    np.savez(tmp_path / "bare.npz", x=x, lengths=np.array([3, 1]))
    bare = read_npz(tmp_path / "bare.npz")
    assert bare.labels is None and bare.classes == [] and bare.lengths.tolist() == [3, 1]
    assert bare.sequences[1].tolist() == [[6, 7]]
    np.savez(tmp_path / "y.npz", x=x, lengths=np.array([3, 1]), y=np.array(["a", "zzz"]))
    with pytest.raises(DataError, match="label 'zzz' is not among"):
        read_frames(tmp_path / "y.npz", classes=["a"])
    skipped = read_frames(tmp_path / "y.npz", classes=["a"], labels=False)  # prediction: labels unread
    assert skipped.labels is None
    assert all(np.array_equal(a, b) for a, b in zip(skipped.sequences, bare.sequences, strict=True))
    ts = write(tmp_path, "@classLabel true a\n@data\n1,2:a\n3,4:b\n", "t.ts")
    with pytest.raises(DataError, match="label 'b' is not among"):
        read_frames(ts)
    data = read_frames(ts, labels=False)
    assert data.labels is None and [s[:, 0].tolist() for s in data.sequences] == [[1, 2], [3, 4]]
