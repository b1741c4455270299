"""LMHead.loss: the fused output layer and cross-entropy against F.linear + F.cross_entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnlm.lm.heads import LinearCrossEntropy, LMHead


def head_and_data(time_major: bool = False):
    torch.manual_seed(0)
    head = LMHead(5, 7).double()
    shape = (4, 3, 5) if time_major else (3, 4, 5)
    h = torch.randn(shape, dtype=torch.float64)
    h = (h.transpose(0, 1) if time_major else h).requires_grad_()  # (B, T, D) either way
    return head, h, torch.randint(0, 7, (3, 4))


@pytest.mark.parametrize("time_major", [False, True])
def test_loss_and_gradients_equal_cross_entropy_of_the_logits(time_major: bool) -> None:
    head, h, y = head_and_data(time_major)
    params = [h, head.weight, head.bias]
    ours = head.loss(h, y)
    grads = torch.autograd.grad(2.5 * ours, params)
    ref = F.cross_entropy(head(h).flatten(0, 1), y.flatten())
    torch.testing.assert_close(ours, ref, atol=1e-14, rtol=0)
    for a, b in zip(grads, torch.autograd.grad(2.5 * ref, params), strict=True):
        torch.testing.assert_close(a, b, atol=1e-14, rtol=0)


def test_gradcheck() -> None:
    head, h, y = head_and_data()
    args = (h.detach().flatten(0, 1).requires_grad_(), head.weight.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda a, w, b: LinearCrossEntropy.apply(a, w, b, y.flatten()), (*args, head.bias))
    assert torch.autograd.gradcheck(lambda a, w: LinearCrossEntropy.apply(a, w, None, y.flatten()), args)


def test_a_target_far_below_the_rest_keeps_an_exact_loss() -> None:
    """exp of -200 underflows in float32; the loss of that row comes from the logits instead."""
    h = torch.zeros(2, 3)
    h[:, 0] = 200.0
    W = torch.zeros(4, 3)
    W[0, 0] = 1.0
    y = torch.tensor([3, 0])
    ours = LinearCrossEntropy.apply(h, W, None, y)
    torch.testing.assert_close(ours, F.cross_entropy(h @ W.t(), y))
    assert ours.item() == pytest.approx(100.0)


def test_without_gradients_nothing_is_kept() -> None:
    head, h, y = head_and_data()
    with torch.no_grad():
        loss = head.loss(h, y)
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, F.cross_entropy(head(h).flatten(0, 1), y.flatten()))


def test_blocks_of_rows_give_the_same_loss_and_gradients(monkeypatch) -> None:
    """Forward runs in blocks of rows (to stay in cache); a block size of 2 rows changes nothing."""
    from rnnlm.lm import heads

    head, h, y = head_and_data()
    h = h.detach().clone()
    w0 = head.weight[0].detach()
    h[2, 1] = 1e3 * w0 / w0.norm()  # a row in a later block whose target is far off
    y[2, 1] = 1
    h.requires_grad_()
    whole = head.loss(h, y)
    grads = torch.autograd.grad(whole, [h, head.weight, head.bias])
    monkeypatch.setattr(heads, "_BLOCK", 2 * 7)  # V = 7: two rows per block
    blocks = head.loss(h, y)
    torch.testing.assert_close(blocks, whole, atol=1e-12, rtol=0)
    torch.testing.assert_close(blocks, F.cross_entropy(head(h).flatten(0, 1), y.flatten()), atol=1e-12, rtol=0)
    for a, b in zip(torch.autograd.grad(blocks, [h, head.weight, head.bias]), grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("far", [False, True])
def test_the_gpus_sync_free_loss_equals_the_cpus(far: bool) -> None:
    """On a GPU every row's loss comes from the logits (no host sync inside a CUDA graph); on a CPU only
    the rows whose probability underflows do. Both ways give the same loss and gradients."""
    from rnnlm.lm import heads

    head, h, y = head_and_data()
    if far:  # a row whose target's probability underflows
        h = h.detach().clone()
        w0 = head.weight[0].detach()
        h[2, 1] = 1e3 * w0 / w0.norm()
        y[2, 1] = 1
        h.requires_grad_()
    params = [h, head.weight, head.bias]
    cpu = head.loss(h, y)
    cpu_grads = torch.autograd.grad(cpu, params)
    with heads.no_host_sync():
        gpu = head.loss(h, y)
    torch.testing.assert_close(gpu, cpu, atol=1e-12, rtol=0)
    for a, b in zip(torch.autograd.grad(gpu, params), cpu_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
