"""Tests for rnnlm.lm.generate against tiny models whose output distribution is known exactly.

* Bigram: logits depend only on the last token fed, read from a transition table (an
  nn.Embedding(V, V)), so every step's distribution is a row of the table.
* Counter: the state counts the tokens fed so far and the logits point at count % V, which shows
  whether the whole prefix went through the model and whether the state is carried.
* TinyRNN: a small random GRU/LSTM, the stand-in for a real model, checked against a d2l-style
  one-token-at-a-time loop and against brute-force enumeration.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor, nn

from rnnlm.lm.generate import beam_search, filter_logits, generate_ids, sample_next

State = tuple[Tensor, ...]
NEG_INF = float("-inf")


# ----------------------------------------------------------------------------- fake models


class Bigram(nn.Module):
    """logits[b, t] = table[X[b, t]]; the state is a dummy (1, B, 1) tensor that the model ignores."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.table = nn.Embedding.from_pretrained(table.float(), freeze=True)  # (V, V)
        self.modes: list[bool] = []  # the training flag seen by each forward call

    def forward(self, X: Tensor, state: State | None) -> tuple[Tensor, State]:
        self.modes.append(self.training)
        if state is None:
            state = self.begin_state(X.shape[0], X.device)
        return self.table(X), state

    def begin_state(self, batch_size: int, device: torch.device) -> State:
        return (torch.zeros(1, batch_size, 1, device=device),)


class Counter(nn.Module):
    """The state counts the tokens fed; after n tokens the logits are one-hot at n % V."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(()))  # gives the model a device

    def forward(self, X: Tensor, state: State | None) -> tuple[Tensor, State]:
        (count,) = state if state is not None else self.begin_state(X.shape[0], X.device)  # (1, B, 1)
        steps = torch.arange(1, X.shape[1] + 1, device=X.device)  # (T,)
        counts = count[0] + steps  # (B, T): tokens seen after each step
        logits = 10.0 * nn.functional.one_hot(counts.long() % self.vocab, self.vocab).float()  # (B, T, V)
        return logits, (counts[:, -1:].unsqueeze(0),)

    def begin_state(self, batch_size: int, device: torch.device) -> State:
        return (torch.zeros(1, batch_size, 1, device=device),)


class TinyRNN(nn.Module):
    """Embedding -> 2-layer GRU or LSTM -> linear head, with seeded random weights."""

    def __init__(self, vocab: int, cell: str = "lstm", hidden: int = 8, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.emb = nn.Embedding(vocab, 6)
            self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(6, hidden, num_layers=2, batch_first=True, dropout=0.5)
            self.head = nn.Linear(hidden, vocab)
            self.head.weight.data *= 8  # spread the log-probabilities so that no two sequences nearly tie
        self.hidden = hidden
        self.lstm = cell == "lstm"

    def forward(self, X: Tensor, state: State | None) -> tuple[Tensor, State]:
        if state is None:
            state = self.begin_state(X.shape[0], X.device)
        out, new = self.rnn(self.emb(X), state if self.lstm else state[0])
        return self.head(out), (tuple(new) if self.lstm else (new,))

    def begin_state(self, batch_size: int, device: torch.device) -> State:
        zeros = torch.zeros(2, batch_size, self.hidden, device=device)
        return (zeros, zeros.clone()) if self.lstm else (zeros,)


def probs_table(rows: list[list[float]]) -> Tensor:
    """A bigram logit table from rows of probabilities (0 becomes -inf)."""
    return torch.tensor(rows, dtype=torch.float64).log()


def collect(model: nn.Module, prefix: list[int], length: int, **kw) -> Tensor:
    """All steps of generate_ids stacked: (num_samples, length)."""
    steps = list(generate_ids(model, prefix, length, **kw))
    assert len(steps) == length
    return torch.stack(steps, dim=1) if steps else torch.empty(0)


# A 5-token table whose argmax chain from 0 is 0 -> 3 -> 1 -> 4 -> 2 -> 0 -> ...
CHAIN = torch.tensor(
    [
        [0.0, 1.0, 0.5, 2.0, -1.0],
        [1.0, 0.0, 0.3, -2.0, 1.5],
        [3.0, 1.0, 0.0, 2.0, 0.5],
        [0.1, 2.5, 1.0, 0.0, 2.0],
        [0.0, 0.5, 1.2, 1.1, 0.0],
    ]
)


# ----------------------------------------------------------------------------- greedy


def test_greedy_follows_the_argmax_chain() -> None:
    out = collect(Bigram(CHAIN), [0], 7, temperature=0.0)
    assert out.tolist() == [[3, 1, 4, 2, 0, 3, 1]]


def test_first_token_depends_on_the_last_prefix_token() -> None:
    out = collect(Bigram(CHAIN), [0, 3, 2], 3, temperature=0.0)
    assert out.tolist() == [[0, 3, 1]]  # argmax of row 2 is 0, whatever came before


def test_whole_prefix_is_fed_and_the_state_carried() -> None:
    # After the 6-token prefix the counter has seen 6 tokens: 6 % 4 = 2, then 3, 0, 1, 2 as it goes on.
    out = collect(Counter(4), [1, 1, 1, 1, 1, 1], 5, temperature=0.0, num_samples=3)
    assert out.tolist() == [[2, 3, 0, 1, 2]] * 3


def test_length_zero_yields_nothing() -> None:
    model = Bigram(CHAIN)
    assert list(generate_ids(model, [0], 0)) == []
    assert model.modes == []


def test_greedy_equals_d2l_predict_loop() -> None:
    """The d2l loop feeds the prefix one token at a time, then appends and feeds back the argmax."""
    model = TinyRNN(7, "gru").eval()
    prefix, length = [3, 0, 6, 2], 12
    outputs, state = [prefix[0]], model.begin_state(1, torch.device("cpu"))
    with torch.no_grad():
        for t in range(len(prefix) - 1 + length):
            logits, state = model(torch.tensor([[outputs[-1]]]), state)
            outputs.append(prefix[t + 1] if t < len(prefix) - 1 else int(logits[0, -1].argmax()))
    ours = collect(model, prefix, length, temperature=0.0)
    assert ours.tolist() == [outputs[len(prefix) :]]


def test_temperature_zero_is_argmax_and_ignores_the_generator() -> None:
    logits = torch.tensor([[0.0, 2.0, 1.0], [5.0, -1.0, 4.9]])
    assert sample_next(logits, temperature=0.0).tolist() == [1, 0]
    gen = torch.Generator().manual_seed(1)
    assert sample_next(logits, temperature=0.0, generator=gen).tolist() == [1, 0]


# ----------------------------------------------------------------------------- filter_logits


def kept(logits: list[float], **kw) -> list[int]:
    out = filter_logits(torch.tensor([logits]), **kw)[0]
    return [i for i, v in enumerate(out.tolist()) if v != NEG_INF]


def test_filter_keeps_values_unchanged_and_sets_the_rest_to_minus_inf() -> None:
    out = filter_logits(torch.tensor([[0.5, 3.0, -1.0, 2.0]]), top_k=2)
    assert out.tolist() == [[NEG_INF, 3.0, NEG_INF, 2.0]]


@pytest.mark.parametrize(
    ("k", "expected"),
    [(0, [0, 1, 2, 3, 4]), (1, [1]), (2, [1, 3]), (3, [0, 1, 3, 4]), (4, [0, 1, 3, 4]), (9, [0, 1, 2, 3, 4])],
)
def test_top_k_kept_sets_keep_ties(k: int, expected: list[int]) -> None:
    # Logits 3 > 2 > 1 = 1 > -1: k = 3 cuts through the tie at 1 and keeps both tokens.
    assert kept([1.0, 3.0, -1.0, 2.0, 1.0], top_k=k) == expected


# Probabilities 1/2, 1/4, 1/8, 1/8 (the last two tied), shuffled so that order in the row does not matter.
NUCLEUS = [math.log(0.125), math.log(0.5), math.log(0.125), math.log(0.25)]


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (0.01, [1]),
        (0.5, [1]),  # p exactly covers the top token
        (0.5001, [1, 3]),
        (0.75, [1, 3]),  # p exactly covers the top two
        (0.76, [0, 1, 2, 3]),  # needs one of the tied 1/8 tokens, and so keeps both
        (1.0, [0, 1, 2, 3]),
    ],
)
def test_top_p_kept_sets(p: float, expected: list[int]) -> None:
    assert kept(NUCLEUS, top_p=p) == expected


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (1e-9, [1]),  # the top token survives any p
        (0.4, [1]),  # the float sum of the top token comes out a hair below 0.4 and must still count as 0.4
        (0.7, [1, 3]),
        (0.7001, [1, 2, 3]),
        (0.9, [1, 2, 3]),
    ],
)
def test_top_p_boundaries_despite_rounding(p: float, expected: list[int]) -> None:
    assert kept([math.log(q) for q in (0.1, 0.4, 0.2, 0.3)], top_p=p) == expected


def test_top_p_applies_after_top_k_and_per_row() -> None:
    # After top_k=2 row 0 is [2/3, 1/3] over tokens 1 and 3, so p = 0.6 keeps token 1 alone...
    logits = torch.tensor([NUCLEUS, [0.0, 0.0, 0.0, 0.0]])
    out = filter_logits(logits, top_k=2, top_p=0.6)
    assert [[i for i, v in enumerate(r) if v != NEG_INF] for r in out.tolist()] == [[1], [0, 1, 2, 3]]
    # ...while p = 0.7 needs both (all four tokens of the uniform row are tied).
    out = filter_logits(logits, top_k=2, top_p=0.7)
    assert [[i for i, v in enumerate(r) if v != NEG_INF] for r in out.tolist()] == [[1, 3], [0, 1, 2, 3]]


def test_filter_does_not_modify_its_input() -> None:
    logits = torch.tensor([NUCLEUS])
    before = logits.clone()
    filter_logits(logits, top_k=1, top_p=0.3)
    assert torch.equal(logits, before)


# ----------------------------------------------------------------------------- sampling


def chi_square(counts: Tensor, probs: Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_sample_frequencies_match_the_tempered_softmax(temperature: float) -> None:
    n = 20_000
    gen = torch.Generator().manual_seed(0)
    (ids,) = generate_ids(Bigram(CHAIN), [0], 1, temperature=temperature, num_samples=n, generator=gen)
    counts = torch.bincount(ids, minlength=5).double()
    target = torch.softmax(CHAIN[0].double() / temperature, dim=-1)
    # 4 degrees of freedom: P(chi2 > 18.47) = 0.001. The untempered softmax must be rejected by far,
    # so this test would notice a temperature that is ignored or applied the wrong way round.
    assert chi_square(counts, target) < 18.47
    assert chi_square(counts, torch.softmax(CHAIN[0].double(), dim=-1)) > 200
    assert (counts / n - target).abs().max() < 0.015


def test_top_k_and_top_p_sampling_stay_in_the_kept_set_with_renormalised_frequencies() -> None:
    n = 20_000
    gen = torch.Generator().manual_seed(1)
    row = torch.tensor([NUCLEUS]).expand(n, -1)
    ids = sample_next(row, top_k=2, generator=gen)  # tokens 1 and 3, in ratio 2 : 1
    counts = torch.bincount(ids, minlength=4).double()
    assert counts[0] == counts[2] == 0
    assert chi_square(counts[[1, 3]], torch.tensor([2 / 3, 1 / 3], dtype=torch.float64)) < 10.83  # 1 dof, p=0.001
    ids = sample_next(row, top_p=0.75, generator=gen)
    assert set(ids.tolist()) == {1, 3}


def test_same_seed_same_samples_and_rows_are_independent() -> None:
    def run(seed: int) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        return collect(Bigram(torch.zeros(6, 6)), [0], 30, num_samples=4, generator=gen)

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len({tuple(r) for r in a.tolist()}) == 4  # four uniform rows of 30 draws never coincide


def test_every_sampled_row_follows_the_table() -> None:
    # Each token may only be followed by the two tokens after it (mod 6), each with probability 1/2.
    table = torch.full((6, 6), NEG_INF)
    for i in range(6):
        table[i, (i + 1) % 6] = table[i, (i + 2) % 6] = 0.0
    gen = torch.Generator().manual_seed(3)
    prefix = [4, 0, 5]
    out = collect(Bigram(table), prefix, 40, num_samples=8, generator=gen)
    assert len({tuple(r) for r in out.tolist()}) == 8
    for row in out.tolist():
        prev = [prefix[-1], *row[:-1]]
        assert all((t - p) % 6 in (1, 2) for p, t in zip(prev, row, strict=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_generator_gives_the_same_samples_on_gpu() -> None:
    def run(device: str) -> Tensor:
        gen = torch.Generator().manual_seed(11)
        return collect(Bigram(CHAIN).to(device), [0], 50, num_samples=4, generator=gen)

    assert torch.equal(run("cpu"), run("cuda"))


def test_sample_next_without_generator_uses_the_global_rng() -> None:
    logits = torch.zeros(50, 10)
    torch.manual_seed(5)
    a = sample_next(logits)
    torch.manual_seed(5)
    assert torch.equal(a, sample_next(logits))


# ----------------------------------------------------------------------------- beam search


def brute_force(model: nn.Module, prefix: list[int], length: int, vocab: int) -> list[tuple[list[int], float]]:
    """Every continuation of the given length with its total log-probability, best first."""
    seqs = [list(s) for s in itertools.product(range(vocab), repeat=length)]
    X = torch.tensor([prefix + s for s in seqs])  # (vocab**length, T)
    with torch.no_grad():
        logits, _ = model.eval()(X, None)
    logp = torch.log_softmax(logits.double(), dim=-1)
    start = len(prefix) - 1  # logits at position start predict the first new token
    totals = [sum(float(logp[i, start + j, t]) for j, t in enumerate(s)) for i, s in enumerate(seqs)]
    return sorted(zip(seqs, totals, strict=True), key=lambda h: h[1], reverse=True)


def assert_same_ranking(got: list[tuple[list[int], float]], want: list[tuple[list[int], float]]) -> None:
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [sc for _, sc in got] == pytest.approx([sc for _, sc in want], abs=1e-5)


def test_beam_one_is_greedy() -> None:
    model = TinyRNN(6, "lstm")
    greedy = collect(model, [2, 5, 1], 10, temperature=0.0)
    ((seq, _),) = beam_search(model, [2, 5, 1], 10, beam=1)
    assert seq == greedy[0].tolist()


# From token 0 greedy takes 1 (p 0.5) but no token after 1 has p above 0.28; 2 (p 0.4) then 3 (p 0.9) is better.
TRAP = probs_table(
    [
        [0.01, 0.5, 0.4, 0.09],
        [0.28, 0.24, 0.24, 0.24],
        [0.04, 0.03, 0.03, 0.9],
        [0.25, 0.25, 0.25, 0.25],
    ]
)


def test_beam_two_beats_greedy_with_the_exact_score() -> None:
    model = Bigram(TRAP)
    assert collect(model, [0], 2, temperature=0.0).tolist() == [[1, 0]]
    ((seq, score),) = beam_search(model, [0], 2, beam=2)
    assert seq == [2, 3]
    assert score == pytest.approx(math.log(0.4) + math.log(0.9), abs=1e-6)
    best, second = beam_search(model, [0], 2, beam=2, num_return=2)
    assert best[0] == [2, 3]
    assert second == ([1, 0], pytest.approx(math.log(0.5) + math.log(0.28), abs=1e-6))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_beam_search_matches_brute_force(cell: str) -> None:
    model, prefix = TinyRNN(4, cell, seed=1), [1, 3]
    everything = brute_force(model, prefix, 3, 4)
    # A beam as wide as all 4**2 two-token prefixes is exhaustive: its 16 results are the true top 16.
    assert_same_ranking(beam_search(model, prefix, 3, beam=16, num_return=16), everything[:16])
    assert_same_ranking(beam_search(model, prefix, 3, beam=64, num_return=64), everything)
    # A narrower beam still returns exact scores for what it finds, ranked.
    for seq, score in beam_search(model, prefix, 3, beam=3, num_return=3):
        assert score == pytest.approx(dict((tuple(s), sc) for s, sc in everything)[tuple(seq)], abs=1e-5)


def test_length_penalty_without_stop_id_changes_nothing() -> None:
    model = TinyRNN(4, "gru", seed=2)
    plain = beam_search(model, [0], 4, beam=3, num_return=3)
    assert beam_search(model, [0], 4, beam=3, num_return=3, length_penalty=2.0) == plain


# Stop token 0. From 2: stop at once (p 0.5) or go on to 1 (p 0.45), after which 1 again has p 0.8.
STOPPER = probs_table(
    [
        [1 / 3, 1 / 3, 1 / 3],
        [0.1, 0.8, 0.1],
        [0.5, 0.45, 0.05],
    ]
)


def test_stop_id_and_length_penalty_choose_between_short_and_long() -> None:
    model = Bigram(STOPPER)
    # A plain sum favours the one-token [stop]: log 0.5 > log 0.45 + log 0.8.
    assert beam_search(model, [2], 2, beam=2, stop_id=0) == [([0], pytest.approx(math.log(0.5)))]
    # Per-token mean (penalty 1) favours [1, 1]: (log 0.45 + log 0.8) / 2 > log 0.5; the score stays the sum.
    assert beam_search(model, [2], 2, beam=2, length_penalty=1.0, stop_id=0) == [
        ([1, 1], pytest.approx(math.log(0.45) + math.log(0.8)))
    ]


@pytest.mark.parametrize("penalty", [0.0, 1.0])
def test_stop_id_matches_brute_force(penalty: float) -> None:
    model, prefix, stop, vocab, length = TinyRNN(3, "lstm", seed=3), [2, 1], 0, 3, 3
    # Every valid continuation: full length without a stop, or ended by the first stop.
    pool = {}
    for n in range(1, length + 1):
        for seq, score in brute_force(model, prefix, n, vocab):
            if stop not in seq[:-1] and (seq[-1] == stop or n == length):
                pool[tuple(seq)] = score
    want = sorted(((list(s), sc) for s, sc in pool.items()), key=lambda h: h[1] / len(h[0]) ** penalty, reverse=True)
    got = beam_search(model, prefix, length, beam=8, num_return=8, length_penalty=penalty, stop_id=stop)
    assert_same_ranking(got, want[:8])


def test_beam_search_length_zero_and_small_vocabulary() -> None:
    model = Bigram(TRAP)
    assert beam_search(model, [0], 0, beam=3, num_return=2) == [([], 0.0)]
    # Only 4 one-token continuations exist, so a beam of 6 returns 4.
    got = beam_search(model, [0], 1, beam=6, num_return=6)
    assert [s for s, _ in got] == [[1], [2], [3], [0]]


# ----------------------------------------------------------------------------- modes and arguments


def test_training_flag_restored_and_eval_used_for_every_forward() -> None:
    model = Bigram(CHAIN).train()
    stream = generate_ids(model, [0, 1], 3, temperature=0.0)
    next(stream)
    assert model.training  # paused between steps, the model is back in the caller's mode
    list(stream)
    beam_search(model, [0, 1], 3, beam=2)
    assert model.training
    assert model.modes and not any(model.modes)
    model.eval()
    list(generate_ids(model, [0], 2))
    beam_search(model, [0], 2, beam=2)
    assert not model.training


def test_dropout_is_off_during_generation() -> None:
    model = TinyRNN(5, "gru").train()  # dropout 0.5 between layers: in train mode repeated runs would differ
    runs = [collect(model, [1, 2], 8, temperature=0.0) for _ in range(3)]
    assert all(torch.equal(r, runs[0]) for r in runs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prefix_ids": []}, "prefix of at least one token"),
        ({"prefix_ids": [0, -1]}, "non-negative"),
        ({"length": -1}, "length"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"num_samples": 0}, "num_samples"),
    ],
)
def test_generate_rejects_bad_arguments_at_call_time(kwargs: dict, message: str) -> None:
    args = {"prefix_ids": [0], "length": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_ids(Bigram(CHAIN), args.pop("prefix_ids"), args.pop("length"), **args)  # no next() needed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prefix_ids": []}, "prefix of at least one token"),
        ({"length": -2}, "length"),
        ({"beam": 0}, "beam"),
        ({"num_return": 3}, "num_return"),
        ({"num_return": 0}, "num_return"),
        ({"stop_id": 5}, "stop_id"),
    ],
)
def test_beam_search_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    args = {"prefix_ids": [0], "length": 3, "beam": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        beam_search(Bigram(CHAIN), args.pop("prefix_ids"), args.pop("length"), args.pop("beam"), **args)


@pytest.mark.parametrize(("kwargs", "message"), [({"top_k": -3}, "top_k"), ({"top_p": -0.5}, "top_p")])
def test_filter_and_sample_reject_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        filter_logits(torch.zeros(1, 3), **kwargs)
    with pytest.raises(ValueError, match=message):
        sample_next(torch.zeros(1, 3), **kwargs)


def test_beam_search_when_the_only_continuation_is_the_stop_token() -> None:
    """Every hypothesis ends at the first step: beam search returns the stopped one (it used to crash)."""
    only_stop = probs_table([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # every token -> stop (0)
    assert beam_search(Bigram(only_stop), [2], 5, beam=3, stop_id=0) == [([0], 0.0)]
