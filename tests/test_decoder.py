"""StepDecoder: one generation step from the model's weights, against the model's own forward pass."""

from __future__ import annotations

import pytest
import torch

from rnnlm.config import ModelConfig
from rnnlm.generate import generate_ids
from rnnlm.models import RNNLM
from rnnlm.models.decoder import StepDecoder


@pytest.mark.parametrize("embed,tie", [(0, False), (6, False), (6, True)])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_a_step_equals_the_forward_pass(cell: str, embed: int, tie: bool) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, layers=2, hidden=8, embed=embed, dropout=0.3, tie_weights=tie)  # tie: a projection
    model = RNNLM(cfg, 11).double()
    decode = model.decoder()
    g = torch.Generator().manual_seed(1)
    state = tuple(torch.randn(s.shape, generator=g, dtype=torch.float64) for s in model.begin_state(3))
    ids = torch.tensor([4, 0, 10])
    for _ in range(3):  # a few steps, each from the state the last one left
        logits, new = decode(ids, state)
        with torch.no_grad():
            ref_logits, ref_state = model.eval()(ids.view(3, 1), state)
        torch.testing.assert_close(logits, ref_logits[:, 0], atol=1e-12, rtol=0)
        for a, b in zip(new, ref_state, strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
        state, ids = new, logits.argmax(-1)


def test_greedy_generation_is_unchanged_by_the_decoder(monkeypatch) -> None:
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(cell="gru", layers=2, hidden=16, embed=0), 9)
    fast = [int(t) for t in generate_ids(model, [1, 2], 30, temperature=0.0)]
    monkeypatch.delattr(RNNLM, "decoder")
    slow = [int(t) for t in generate_ids(model, [1, 2], 30, temperature=0.0)]
    assert fast == slow


def test_a_bidirectional_encoder_is_refused() -> None:
    model = RNNLM(ModelConfig(cell="rnn", layers=1, hidden=4, embed=0), 5)
    model.encoder.bidirectional = True
    with pytest.raises(ValueError, match="bidirectional"):
        StepDecoder(model)
