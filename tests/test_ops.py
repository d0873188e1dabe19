"""torch.library.opcheck on every operator: schema, fake kernels, autograd registration, AOT dispatch."""

import pytest
import torch
from ctc_cases import make_batch

import ctc_ext


def forward_inputs(target_format, keep_log_alpha, dtype, requires_grad, device):
    """Every tensor on `device`, lengths included (on CUDA: the path without a host synchronisation)."""
    batch = make_batch(
        T=9, N=3, C=5, S=3, seed=41, dtype=dtype, input_lengths=[9, 7, 6], target_lengths=[3, 1, 2], device=device
    )
    targets = batch.padded_targets if target_format == "padded" else batch.concatenated_targets
    logits = batch.logits.clone().requires_grad_(requires_grad)
    lengths = [torch.tensor(values, device=device) for values in (batch.input_lengths, batch.target_lengths)]
    return (logits, targets, *lengths, 0, keep_log_alpha)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("target_format", ["padded", "concatenated"])
@pytest.mark.parametrize("keep_log_alpha,requires_grad", [(True, True), (False, False), (True, False)])
def test_opcheck_forward(dtype, target_format, keep_log_alpha, requires_grad, device):
    torch.library.opcheck(
        torch.ops.ctc_ext.ctc_loss_forward, forward_inputs(target_format, keep_log_alpha, dtype, requires_grad, device)
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("target_format", ["padded", "concatenated"])
@pytest.mark.parametrize("zero_infinity", [False, True])
def test_opcheck_backward(dtype, target_format, zero_infinity, device):
    logits, targets, input_lengths, target_lengths, blank, _ = forward_inputs(target_format, True, dtype, False, device)
    nll, log_alpha, log_normalizer = ctc_ext.ops.ctc_loss_forward(
        logits, targets, input_lengths, target_lengths, blank, True
    )
    grad_nll = torch.linspace(0.5, 1.5, 3, dtype=nll.dtype, device=device)
    torch.library.opcheck(
        torch.ops.ctc_ext.ctc_loss_backward,
        (
            grad_nll,
            logits,
            targets,
            input_lengths,
            target_lengths,
            nll,
            log_alpha,
            log_normalizer,
            blank,
            zero_infinity,
        ),
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("target_format", ["padded", "concatenated"])
@pytest.mark.parametrize("reduction", [0, 1, 2])
@pytest.mark.parametrize("requires_grad", [True, False])
def test_opcheck_loss(dtype, target_format, reduction, requires_grad, device):
    logits, targets, input_lengths, target_lengths, blank, _ = forward_inputs(
        target_format, True, dtype, requires_grad, device
    )
    torch.library.opcheck(
        torch.ops.ctc_ext.ctc_loss, (logits, targets, input_lengths, target_lengths, blank, reduction, reduction == 1)
    )


def test_forward_op_is_differentiable_on_its_own(device):
    logits, targets, input_lengths, target_lengths, blank, _ = forward_inputs(
        "padded", True, torch.float64, True, device
    )
    assert torch.autograd.gradcheck(
        lambda x: ctc_ext.ops.ctc_loss_forward(x, targets, input_lengths, target_lengths, blank, True)[0], (logits,)
    )
