"""ctc_ext.CTCLossFunction: the torch.autograd.Function over the forward and backward ops."""

import pytest
import torch
from ctc_cases import make_batch

import ctc_ext

REDUCTIONS = ["none", "mean", "sum"]


def lengths(batch):
    return torch.tensor(batch.input_lengths), torch.tensor(batch.target_lengths)


@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("concatenated", [False, True])
def test_equals_ctc_loss_value_and_gradient(reduction, zero_infinity, concatenated):
    # input_lengths [10, 2, 7] with target length 4 at sample 1: an infinite loss.
    batch = make_batch(T=10, N=3, C=6, S=4, seed=41, input_lengths=[10, 2, 7], target_lengths=[4, 4, 0])
    targets = batch.concatenated_targets if concatenated else batch.padded_targets
    il, tl = lengths(batch)
    x1 = batch.logits.clone().requires_grad_()
    x2 = batch.logits.clone().requires_grad_()
    loss, nll, log_alpha, log_normalizer = ctc_ext.CTCLossFunction.apply(
        x1, targets, il, tl, 0, reduction, zero_infinity
    )
    expected = ctc_ext.ctc_loss(x2, targets, il, tl, 0, reduction, zero_infinity)
    torch.testing.assert_close(loss, expected)
    assert not nll.requires_grad and not log_alpha.requires_grad and not log_normalizer.requires_grad
    upstream = torch.rand(loss.shape, dtype=loss.dtype, generator=torch.Generator().manual_seed(2))
    (grad,) = torch.autograd.grad(loss, x1, upstream)
    (expected_grad,) = torch.autograd.grad(expected, x2, upstream)
    torch.testing.assert_close(grad, expected_grad, equal_nan=True)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck(reduction):
    batch = make_batch(T=7, N=2, C=4, S=3, seed=43, input_lengths=[7, 5], target_lengths=[3, 1])
    il, tl = lengths(batch)
    x = batch.logits.clone().requires_grad_()

    def loss(logits):
        return ctc_ext.CTCLossFunction.apply(logits, batch.padded_targets, il, tl, 0, reduction, False)[0]

    assert torch.autograd.gradcheck(loss, (x,), check_forward_ad=True)


def test_defaults_are_those_of_ctc_loss():
    batch = make_batch(T=8, N=2, C=5, S=3, seed=44)
    il, tl = lengths(batch)
    loss = ctc_ext.CTCLossFunction.apply(batch.logits, batch.padded_targets, il, tl)[0]
    torch.testing.assert_close(loss, ctc_ext.ctc_loss(batch.logits, batch.padded_targets, il, tl))


def test_float32_input_gives_a_float32_loss_equal_to_ctc_loss():
    batch = make_batch(T=8, N=2, C=5, S=3, seed=45, dtype=torch.float32)
    il, tl = lengths(batch)
    loss = ctc_ext.CTCLossFunction.apply(batch.logits, batch.padded_targets, il, tl, 0, "sum", False)[0]
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ctc_ext.ctc_loss(batch.logits, batch.padded_targets, il, tl, reduction="sum"))


def test_unknown_reduction_is_an_argument_error():
    batch = make_batch(T=8, N=2, C=5, S=3, seed=46)
    with pytest.raises(ctc_ext.CTCArgumentError, match="reduction must be one of"):
        ctc_ext.CTCLossFunction.apply(batch.logits, batch.padded_targets, *lengths(batch), 0, "avg", False)
