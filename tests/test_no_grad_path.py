"""ctc_ext.ctc_loss without a gradient takes the op's no-grad branch (no log_alpha, no autograd
node); it must give exactly what the differentiable path gives, and the built-in's value."""

import pytest
import torch
import torch.nn.functional as F

import ctc_ext


def problem(device):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(30, 4, 9, generator=generator, dtype=torch.float64)
    targets = torch.randint(1, 9, (4, 6), generator=generator)
    input_lengths = torch.tensor([30, 28, 3, 25])
    target_lengths = torch.tensor([6, 0, 5, 4])  # an empty target and an impossible one
    return tuple(tensor.to(device) for tensor in (x, targets, input_lengths, target_lengths))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("zero_infinity", [False, True])
def test_no_grad_equals_the_differentiable_path_and_the_builtin(reduction, zero_infinity, device):
    x, targets, input_lengths, target_lengths = problem(device)
    with torch.no_grad():
        fast = ctc_ext.ctc_loss(
            x, targets, input_lengths, target_lengths, reduction=reduction, zero_infinity=zero_infinity
        )
    slow = ctc_ext.ctc_loss(
        x.clone().requires_grad_(),
        targets,
        input_lengths,
        target_lengths,
        reduction=reduction,
        zero_infinity=zero_infinity,
    )
    reference = F.ctc_loss(
        x.log_softmax(2), targets, input_lengths, target_lengths, reduction=reduction, zero_infinity=zero_infinity
    )
    assert not fast.requires_grad and fast.shape == slow.shape == reference.shape
    torch.testing.assert_close(fast, slow.detach(), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(fast, reference, rtol=1e-9, atol=1e-9, equal_nan=True)


def test_no_grad_unbatched_none_has_no_batch_dimension(device):
    x, targets, input_lengths, target_lengths = problem(device)
    with torch.no_grad():
        loss = ctc_ext.ctc_loss(x[:, 0], targets[0], 30, 6, reduction="none")
    assert loss.shape == ()
    torch.testing.assert_close(loss, F.ctc_loss(x[:, 0].log_softmax(1), targets[0], [30], [6], reduction="none"))


@pytest.mark.parametrize("reduction", [0, 1, 2])
def test_the_op_rejects_an_unknown_reduction_code(reduction, device):
    x, targets, input_lengths, target_lengths = problem(device)
    with pytest.raises(RuntimeError, match="reduction must be 0"):
        torch.ops.ctc_ext.ctc_loss(x, targets, input_lengths, target_lengths, 0, reduction + 3, False)
    with pytest.raises(RuntimeError, match="reduction must be 0"):
        torch.ops.ctc_ext.ctc_loss(x.clone().requires_grad_(), targets, input_lengths, target_lengths, 0, -1, False)
