"""The CRF marginals of the Tag page against brute force over every tag sequence."""

from __future__ import annotations

import itertools

import torch

from rnnlm.serve.tag import crf_marginals
from rnnlm.tagging.crf import CRF


def test_marginals_are_the_brute_force_sums():
    torch.manual_seed(0)
    K, T = 3, 4
    crf = CRF(K)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    emissions = torch.randn(T, K)
    mask = torch.ones(1, T, dtype=torch.bool)
    want = torch.zeros(T, K, dtype=torch.float64)
    for tags in itertools.product(range(K), repeat=T):
        score = crf.score(emissions[None], torch.tensor([tags]), mask)[0].double()
        for t, k in enumerate(tags):
            want[t, k] += score.exp()
    want /= want[0].sum()
    torch.testing.assert_close(crf_marginals(crf, emissions), want, atol=1e-5, rtol=1e-5)


def test_one_token_marginals_are_a_softmax():
    crf = CRF(4)
    e = torch.randn(1, 4)
    want = torch.softmax((crf.start_transitions + e[0] + crf.end_transitions).double(), -1)
    torch.testing.assert_close(crf_marginals(crf, e)[0], want)
