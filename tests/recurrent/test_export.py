"""The reference encoder that exports trace (recurrent/export.py): torch.nn.RNN/GRU/LSTM with masks computes what
the encoder's reference engine computes, for padded batches in both directions and for a carried state."""

from __future__ import annotations

import pytest
import torch

from rnnlm.recurrent.encoder import RecurrentEncoder
from rnnlm.recurrent.export import ReferenceEncoder, reference_copy

TOL = {"atol": 1e-6, "rtol": 1e-5}


def encoder(cell: str, bidirectional: bool, input_size: int = 5) -> RecurrentEncoder:
    torch.manual_seed(0)
    return RecurrentEncoder(cell, input_size, 7, 2, bidirectional, engine="scratch").eval()


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_a_padded_batch_in_both_directions_gives_the_reference_engine_s_outputs(cell):
    enc = encoder(cell, bidirectional=True)
    x = torch.randn(4, 9, 5)
    lengths = torch.tensor([9, 1, 4, 7])
    x[torch.arange(9) >= lengths[:, None]] = 1e3  # padding that would show if any direction read it
    with torch.no_grad():
        want, _ = enc(x, lengths=lengths)
        got, state = ReferenceEncoder(enc)(x, lengths=lengths)
    torch.testing.assert_close(got, want, **TOL)
    assert state == ()  # the state after the padding would mean nothing: none is given


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_a_carried_state_gives_the_reference_engine_s_outputs_and_final_state(cell):
    enc = encoder(cell, bidirectional=False)
    x = torch.randn(3, 6, 5)
    state = tuple(torch.randn(2, 3, 7) for _ in range(enc.num_states))
    with torch.no_grad():
        want, want_state = enc(x, state)
        got, got_state = ReferenceEncoder(enc)(x, state)
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(got_state, want_state, **TOL)


def test_one_hot_ids_and_every_layer_s_outputs():
    enc = encoder("lstm", bidirectional=False, input_size=11)
    ids = torch.randint(0, 11, (2, 5))
    ref = ReferenceEncoder(enc, all_layers=True)
    with torch.no_grad():
        top, _ = enc(ids)
        both, _ = ref(ids)
    assert both.shape == (2, 5, 14)
    torch.testing.assert_close(both[..., 7:], top, **TOL)


def test_reference_copy_replaces_every_encoder_and_leaves_the_model_alone():
    model = torch.nn.Sequential(encoder("gru", True), torch.nn.ModuleList([encoder("rnn", False)]))
    copy = reference_copy(model)
    assert isinstance(copy[0], ReferenceEncoder) and isinstance(copy[1][0], ReferenceEncoder)
    assert isinstance(model[0], RecurrentEncoder) and isinstance(model[1][0], RecurrentEncoder)


@pytest.mark.e2e  # torch's scan runs its steps through a traced graph: a second or two each
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_the_scan_loop_computes_what_the_reference_engine_computes(cell):
    enc = encoder(cell, bidirectional=True)
    x = torch.randn(3, 8, 5)
    lengths = torch.tensor([8, 2, 5])
    one_way = encoder(cell, bidirectional=False)
    state = tuple(torch.randn(2, 3, 7) for _ in range(one_way.num_states))
    with torch.no_grad():
        torch.testing.assert_close(
            ReferenceEncoder(enc, loop="scan")(x, lengths=lengths)[0], enc(x, lengths=lengths)[0], **TOL
        )
        got, got_state = ReferenceEncoder(one_way, loop="scan")(x, state)
        want, want_state = one_way(x, state)
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(got_state, want_state, **TOL)
