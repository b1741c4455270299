"""OneSequenceLSTM (recurrent/one_sequence.py, csrc/lstm_infer.c) against the engines it stands in for: the same
outputs for one sequence, float32 to rounding, bfloat16 within what bfloat16 rounding of h allows."""

from __future__ import annotations

import pytest
import torch

from rnnlm.recurrent.encoder import RecurrentEncoder
from rnnlm.recurrent.one_sequence import OneSequenceLSTM, _kernel

pytestmark = pytest.mark.skipif(_kernel() is None, reason="no C compiler here: the fast path is off")


def encoder(in_size: int, layers: int, bidirectional: bool, engine: str, dtype: str = "float32", seed: int = 0):
    torch.manual_seed(seed)
    enc = RecurrentEncoder("lstm", in_size, 24, layers, bidirectional, 0.0, engine, dtype).eval()
    with torch.no_grad():  # larger than torch's init, so that the gates leave their linear range
        for p in enc.parameters():
            p.mul_(3.0)
    return enc


def reference(enc: RecurrentEncoder, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return enc(x.unsqueeze(0))[0][0]  # (T, dirs * H)


@pytest.mark.parametrize("engine", ["cpu", "scratch"])
@pytest.mark.parametrize(("layers", "bidirectional"), [(2, False), (1, True), (2, True)])
def test_float32_outputs_are_the_engines(engine, layers, bidirectional):
    enc = encoder(7, layers, bidirectional, engine)
    x = torch.randn(31, 7)
    got = OneSequenceLSTM.create(enc)(x)
    assert len(got) == layers and got[-1].shape == (31, 24 * (2 if bidirectional else 1))
    torch.testing.assert_close(got[-1], reference(enc, x), rtol=1e-5, atol=2e-6)
    if layers == 2:  # the bottom layer too: a one-layer encoder with the same first-layer weights
        bottom = RecurrentEncoder("lstm", 7, 24, 1, bidirectional, 0.0, engine).eval()
        bottom.load_state_dict({k: v for k, v in enc.state_dict().items() if "_l0" in k})
        torch.testing.assert_close(got[0], reference(bottom, x), rtol=1e-5, atol=2e-6)


def test_token_ids_read_as_one_hot_rows():
    enc = encoder(11, 2, False, "cpu")
    ids = torch.randint(0, 11, (40,))
    torch.testing.assert_close(OneSequenceLSTM.create(enc)(ids)[-1], reference(enc, ids), rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("pairs", [True, False])  # AVX512-BF16 where the build has it; the portable loop
def test_bfloat16_matmuls_follow_the_cpu_engine_within_bfloat16_rounding(pairs):
    enc = encoder(9, 2, False, "cpu", "bfloat16")
    x = torch.randn(50, 9)
    one = OneSequenceLSTM.create(enc, pairs)
    assert one.mode == (2 if pairs and _kernel().lstm_infer_pairs() else 1)
    got, want = one(x)[-1], reference(enc, x)
    # Both round h to bfloat16 before each product; their float32 sums differ in order, and a sum on the edge
    # of a bfloat16 rounding step moves by 2^-8 relative. Far below, the float32 path differs by 1e-6.
    assert (got - want).abs().max() < 1.5e-2 and (got - want).abs().mean() < 1.5e-3
    float32 = encoder(9, 2, False, "cpu", "float32")
    assert (got - reference(float32, x)).abs().max() > 1e-4  # the bfloat16 path did round


def test_the_kept_copy_is_made_again_after_a_weight_changes():
    enc = encoder(5, 1, True, "cpu")
    x = torch.randn(12, 5)
    first = OneSequenceLSTM.for_encoder(enc)
    assert OneSequenceLSTM.for_encoder(enc) is first
    with torch.no_grad():
        enc.weight_hh_l0_reverse.add_(0.5)
    again = OneSequenceLSTM.for_encoder(enc)
    assert again is not first
    torch.testing.assert_close(again(x)[-1], reference(enc, x), rtol=1e-5, atol=2e-6)


def test_other_cells_keep_their_engine():
    assert OneSequenceLSTM.create(RecurrentEncoder("gru", 4, 8, 1, False, 0.0, "cpu")) is None
    assert OneSequenceLSTM.create(RecurrentEncoder("lstm", 4, 8, 1, False, 0.0, "cpu").double()) is None


def test_an_encoder_that_ran_one_sequence_can_still_be_copied():
    import copy
    import pickle

    enc = encoder(5, 1, False, "cpu")
    assert OneSequenceLSTM.for_encoder(enc) is not None
    copy.deepcopy(enc)
    pickle.dumps(enc)
