"""The CRF against brute force over all K^T tag sequences, under padding, and with gradcheck."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rnnlm.tagging.crf import CRF

K = 3


def make_crf(seed: int = 0, num_tags: int = K) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(num_tags).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()  # larger than the default init, so that transitions matter to every answer
    return crf


def batch(lengths: list[int], seed: int = 1, garbage: float = float("nan")) -> tuple[torch.Tensor, torch.Tensor]:
    """Random float64 emissions (B, T, K) with `garbage` in the padding, and the prefix mask."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    em = torch.randn(len(lengths), T, K, generator=g, dtype=torch.float64)
    return em.masked_fill(~mask.unsqueeze(-1), garbage), mask


def path_score(crf: CRF, em: torch.Tensor, tags: tuple[int, ...]) -> float:
    """The score of one tag sequence over em (L, K), summed term by term in Python floats."""
    tr, st, en = crf.transitions.tolist(), crf.start_transitions.tolist(), crf.end_transitions.tolist()
    e = em.tolist()
    total = st[tags[0]] + en[tags[-1]]
    for t, y in enumerate(tags):
        total += e[t][y] + (tr[tags[t - 1]][y] if t else 0.0)
    return total


def brute_force(crf: CRF, em: torch.Tensor) -> tuple[float, float, tuple[int, ...]]:
    """log Z, the best score and the best path of em (L, K), by enumerating all K^L paths."""
    scores = {tags: path_score(crf, em, tags) for tags in itertools.product(range(K), repeat=em.size(0))}
    best = max(scores, key=scores.__getitem__)
    top = scores[best]
    return top + math.log(sum(math.exp(s - top) for s in scores.values())), top, best


LENGTHS = [[1], [4], [5, 3, 1], [2, 6, 6, 4]]


@pytest.mark.parametrize("lengths", LENGTHS)
def test_log_partition_and_viterbi_match_brute_force(lengths: list[int]) -> None:
    crf = make_crf()
    em, mask = batch(lengths)
    log_z = crf.log_partition(em, mask)
    paths, best_scores = crf.viterbi(em, mask)
    for b, n in enumerate(lengths):
        want_z, want_best, want_path = brute_force(crf, em[b, :n])
        assert log_z[b].item() == pytest.approx(want_z, abs=1e-10)
        assert best_scores[b].item() == pytest.approx(want_best, abs=1e-10)
        assert paths[b, :n].tolist() == list(want_path) and not paths[b, n:].any()


@pytest.mark.parametrize("lengths", LENGTHS)
def test_score_matches_term_by_term_sum(lengths: list[int]) -> None:
    crf = make_crf()
    em, mask = batch(lengths)
    tags = torch.randint(0, K, mask.shape, generator=torch.Generator().manual_seed(2))
    tags[~mask] = -100  # an ignore index in the padding must not matter
    got = crf.score(em, tags, mask)
    for b, n in enumerate(lengths):
        assert got[b].item() == pytest.approx(path_score(crf, em[b, :n], tuple(tags[b, :n].tolist())), abs=1e-12)


def test_probabilities_sum_to_one_and_nll_is_mean_of_differences() -> None:
    crf = make_crf()
    em, mask = batch([4])
    all_paths = torch.tensor(list(itertools.product(range(K), repeat=4)))  # (81, 4)
    n = len(all_paths)
    log_p = crf.score(em.expand(n, -1, -1), all_paths, mask.expand(n, -1)) - crf.log_partition(em, mask)
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-12)

    em, mask = batch([5, 3, 1])
    tags = torch.randint(0, K, mask.shape, generator=torch.Generator().manual_seed(3))
    nll = crf.neg_log_likelihood(em, tags, mask)
    assert nll.dim() == 0 and nll.item() >= 0
    assert nll.item() == pytest.approx((crf.log_partition(em, mask) - crf.score(em, tags, mask)).mean().item())


@pytest.mark.parametrize("garbage", [float("nan"), float("inf"), 1e6])
def test_padding_never_changes_a_sequence(garbage: float) -> None:
    crf = make_crf()
    lengths = [6, 2, 4, 1]
    em, mask = batch(lengths, garbage=garbage)
    tags = torch.randint(0, K, mask.shape, generator=torch.Generator().manual_seed(4))
    tags[~mask] = 12345
    em.requires_grad_(True)
    log_z, score = crf.log_partition(em, mask), crf.score(em, tags, mask)
    (log_z - score).sum().backward()
    paths, _ = crf.viterbi(em.detach(), mask)
    assert em.grad is not None and torch.isfinite(em.grad).all() and not em.grad[~mask].any()
    for b, n in enumerate(lengths):
        alone = em.detach()[b : b + 1, :n].clone().requires_grad_(True)
        one = torch.ones(1, n, dtype=torch.bool)
        alone_z, alone_score = crf.log_partition(alone, one), crf.score(alone, tags[b : b + 1, :n], one)
        (alone_z - alone_score).sum().backward()
        torch.testing.assert_close(log_z[b], alone_z[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(score[b], alone_score[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(em.grad[b, :n], alone.grad[0], rtol=0, atol=1e-12)
        assert paths[b, :n].tolist() == crf.viterbi(alone.detach(), one)[0][0].tolist()


def test_gradcheck() -> None:
    crf = make_crf()
    em, mask = batch([3, 2, 1], garbage=0.0)
    tags = torch.randint(0, K, mask.shape, generator=torch.Generator().manual_seed(5))
    names = ["transitions", "start_transitions", "end_transitions"]

    def nll(em: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        # functional_call runs crf(em, tags, mask), i.e. neg_log_likelihood, with these tensors as parameters.
        return torch.func.functional_call(crf, dict(zip(names, params, strict=True)), (em, tags, mask), strict=True)

    inputs = (em.clone().requires_grad_(True), *(getattr(crf, n).detach().clone().requires_grad_(True) for n in names))
    assert torch.autograd.gradcheck(nll, inputs)


def test_learns_transitions_from_tags_alone() -> None:
    # With uninformative emissions, only the transitions can explain a fixed 0,1,2,0,1,2,... pattern.
    torch.manual_seed(0)
    crf = CRF(K)
    em, mask = torch.zeros(2, 6, K), torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    tags = torch.tensor([[0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 0, 0]])
    opt = torch.optim.Adam(crf.parameters(), lr=0.1)
    for _ in range(100):
        opt.zero_grad()
        loss = crf.neg_log_likelihood(em, tags, mask)
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    assert crf.viterbi(em, mask)[0].tolist() == [[0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 0, 0]]  # padding: 0


def test_bad_inputs() -> None:
    crf = CRF(K)
    em = torch.zeros(2, 3, K)
    with pytest.raises(ValueError, match="prefix mask"):
        crf.log_partition(em, torch.tensor([[True, False, True], [True, True, True]]))
    with pytest.raises(ValueError, match="at least one step"):
        crf.viterbi(em, torch.tensor([[False] * 3, [True] * 3]))
    with pytest.raises(ValueError, match=r"emissions must be \(B, T, 3\)"):
        crf.log_partition(torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool tensor"):
        crf.log_partition(em, torch.ones(2, 3))
    with pytest.raises(ValueError, match="tags must have shape"):
        crf.score(em, torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool))
