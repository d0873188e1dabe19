"""No label-length limit: long utterances and large vocabularies agree with the built-in in float64."""

import pytest
import torch
from ctc_cases import builtin_loss, random_labels

import ctc_ext


def compare_with_builtin(T, N, C, target_lengths, seed, device):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, N, C, generator=generator, dtype=torch.float64).to(device).requires_grad_(True)
    targets = random_labels(generator, (N, max(target_lengths)), C, blank=0).to(device)
    input_lengths = [T] + [T - 7 * n for n in range(1, N)]
    ours = ctc_ext.ctc_loss(logits, targets, input_lengths, target_lengths, reduction="sum")
    (our_grad,) = torch.autograd.grad(ours, logits)
    theirs = builtin_loss(logits, targets, input_lengths, target_lengths, reduction="sum")
    (their_grad,) = torch.autograd.grad(theirs, logits)
    assert torch.isfinite(ours)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=0)
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-9, atol=1e-9)


@pytest.mark.slow
def test_4000_frames_with_1200_labels(device):
    # 2 S + 1 = 2401 lattice states: more than the threads of one CUDA block
    compare_with_builtin(T=4000, N=2, C=30, target_lengths=[1200, 1100], seed=51, device=device)


@pytest.mark.slow
def test_700_labels_with_5000_classes(device):
    compare_with_builtin(T=1600, N=2, C=5000, target_lengths=[700, 650], seed=52, device=device)
