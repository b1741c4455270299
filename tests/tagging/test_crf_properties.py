"""The CRF's log-partition and Viterbi against brute force on random small inputs, masks included (Hypothesis)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlm.tagging.crf import CRF

pytestmark = pytest.mark.e2e  # 200 examples per property
FEWER = settings(max_examples=max(1, settings().max_examples // 2))  # CI: 100, deep: 5,000

FLOATS = st.floats(-5, 5, allow_nan=False, width=64)


@st.composite
def problems(draw: st.DrawFn):
    """A CRF of K tags with drawn parameters, emissions (B, T, K) with garbage in the padding, and a prefix mask."""
    K = draw(st.integers(1, 4))
    lengths = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    T = max(lengths)
    crf = CRF(K).double()
    with torch.no_grad():
        crf.transitions.copy_(torch.tensor(draw(st.lists(FLOATS, min_size=K * K, max_size=K * K))).view(K, K))
        crf.start_transitions.copy_(torch.tensor(draw(st.lists(FLOATS, min_size=K, max_size=K))))
        crf.end_transitions.copy_(torch.tensor(draw(st.lists(FLOATS, min_size=K, max_size=K))))
    values = draw(st.lists(FLOATS, min_size=len(lengths) * T * K, max_size=len(lengths) * T * K))
    em = torch.tensor(values, dtype=torch.float64).view(len(lengths), T, K)
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    garbage = draw(st.sampled_from([float("nan"), float("inf"), -1e30, 0.0]))
    return crf, em.masked_fill(~mask.unsqueeze(-1), garbage), mask, lengths


def enumerate_paths(crf: CRF, em: torch.Tensor) -> dict[tuple[int, ...], float]:
    """Every tag sequence of em (L, K) and its score, summed term by term in Python floats."""
    tr, st_, en = crf.transitions.tolist(), crf.start_transitions.tolist(), crf.end_transitions.tolist()
    e = em.tolist()
    K = em.size(1)
    out = {}
    for tags in itertools.product(range(K), repeat=em.size(0)):
        total = st_[tags[0]] + en[tags[-1]]
        for t, y in enumerate(tags):
            total += e[t][y] + (tr[tags[t - 1]][y] if t else 0.0)
        out[tags] = total
    return out


@FEWER
@given(problems())
def test_log_partition_and_viterbi_match_brute_force(problem) -> None:
    crf, em, mask, lengths = problem
    log_z = crf.log_partition(em, mask)
    paths, best = crf.viterbi(em, mask)
    for b, n in enumerate(lengths):
        scores = enumerate_paths(crf, em[b, :n])
        top = max(scores.values())
        want_z = top + math.log(sum(math.exp(s - top) for s in scores.values()))
        assert log_z[b].item() == pytest.approx(want_z, abs=1e-9)
        assert best[b].item() == pytest.approx(top, abs=1e-9)
        path = tuple(paths[b, :n].tolist())
        assert scores[path] == pytest.approx(top, abs=1e-9)  # a best path (ties may pick either)
        assert not paths[b, n:].any()
        # The score of the decoded path, as the CRF computes it, agrees too.
        tags = paths[b : b + 1]
        assert crf.score(em[b : b + 1], tags, mask[b : b + 1]).item() == pytest.approx(top, abs=1e-9)
