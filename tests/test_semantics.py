"""Edge cases of the drop-in semantics: empty inputs, empty targets, non-finite inputs."""

import math
import warnings

import pytest
import torch
from ctc_cases import builtin_loss, make_batch

import ctc_ext


def test_empty_target_costs_the_blank_path(device):
    logits = torch.randn(7, 1, 4, dtype=torch.float64, device=device)
    loss = ctc_ext.ctc_loss(logits, torch.zeros(1, 0, dtype=torch.long, device=device), [7], [0], reduction="none")
    expected = -logits.log_softmax(-1)[:, 0, 0].sum()
    torch.testing.assert_close(loss[0], expected, rtol=1e-14, atol=0)


def test_input_length_zero(device):
    logits = torch.randn(5, 2, 4, dtype=torch.float64, device=device, requires_grad=True)
    targets = torch.tensor([[1, 2], [1, 2]], device=device)
    loss = ctc_ext.ctc_loss(logits, targets, [0, 0], [0, 2], reduction="none")
    assert loss[0] == 0 and math.isinf(loss[1].item())
    theirs = builtin_loss(logits, targets, [0, 0], [0, 2], reduction="none")
    assert torch.equal(loss.isinf(), theirs.isinf())
    ctc_ext.ctc_loss(logits, targets, [0, 0], [0, 2], reduction="none", zero_infinity=True).sum().backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_empty_batch_returns_empty_losses(device):
    logits = torch.randn(10, 0, 5, device=device, requires_grad=True)
    targets = torch.zeros(0, 3, dtype=torch.long, device=device)
    losses = ctc_ext.ctc_loss(logits, targets, [], [], reduction="none")
    assert losses.shape == (0,)
    total = ctc_ext.ctc_loss(logits, targets, [], [], reduction="sum")
    assert total.item() == 0
    total.backward()
    assert logits.grad.shape == logits.shape
    assert math.isnan(ctc_ext.ctc_loss(logits, targets, [], [], reduction="mean").item())


def test_empty_time_axis(device):
    logits = torch.randn(0, 2, 5, device=device, requires_grad=True)
    targets = torch.tensor([[1], [2]], device=device)
    losses = ctc_ext.ctc_loss(logits, targets, [0, 0], [1, 0], reduction="none")
    assert math.isinf(losses[0].item()) and losses[1].item() == 0


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_in_one_sample_leaves_the_others_exact(bad_value, device):
    batch = make_batch(
        T=12, N=3, C=5, S=3, seed=21, input_lengths=[12, 12, 12], target_lengths=[3, 2, 3], device=device
    )
    clean = ctc_ext.ctc_loss(
        batch.logits, batch.padded_targets, batch.input_lengths, batch.target_lengths, reduction="none"
    )
    poisoned = batch.logits.clone()
    poisoned[4, 1, 2] = bad_value
    poisoned.requires_grad_(True)
    losses = ctc_ext.ctc_loss(
        poisoned, batch.padded_targets, batch.input_lengths, batch.target_lengths, reduction="none"
    )
    assert torch.equal(losses[[0, 2]], clean[[0, 2]])
    losses[[0, 2]].sum().backward()
    assert torch.isfinite(poisoned.grad[:, [0, 2]]).all()
    if bad_value != -float("inf"):
        assert not torch.isfinite(losses[1])


def test_minus_infinity_logit_is_an_impossible_class_not_an_error(device):
    """A class with logit -inf has probability 0; paths through other classes are unaffected."""
    logits = torch.randn(6, 1, 4, dtype=torch.float64, device=device)
    logits[:, 0, 3] = -float("inf")
    targets = torch.tensor([[1, 2]], device=device)
    ours = ctc_ext.ctc_loss(logits, targets, [6], [2], reduction="none")
    theirs = builtin_loss(logits, targets, [6], [2], reduction="none")
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)


def test_padding_beyond_target_length_is_never_read(device):
    batch = make_batch(T=10, N=2, C=5, S=4, seed=22, target_lengths=[4, 1], device=device)
    assert (batch.padded_targets[1, 1:] >= 5).all()  # out-of-range junk in the padding
    loss = ctc_ext.ctc_loss(batch.logits, batch.padded_targets, batch.input_lengths, batch.target_lengths)
    assert torch.isfinite(loss)  # on a device, a label read out of range would make the loss NaN


def test_extra_concatenated_labels_beyond_the_lengths_are_ignored(device):
    batch = make_batch(T=10, N=2, C=5, S=3, seed=23, device=device)
    extended = torch.cat([batch.concatenated_targets, torch.tensor([1, 2, 3], device=device)])
    a = ctc_ext.ctc_loss(batch.logits, batch.concatenated_targets, batch.input_lengths, batch.target_lengths)
    b = ctc_ext.ctc_loss(batch.logits, extended, batch.input_lengths, batch.target_lengths)
    assert torch.equal(a, b)


def test_loss_dtype_follows_input_dtype(device):
    batch = make_batch(T=8, N=2, C=4, S=2, seed=24, device=device)
    args = (batch.padded_targets, batch.input_lengths, batch.target_lengths)
    assert ctc_ext.ctc_loss(batch.logits, *args).dtype == torch.float64
    assert ctc_ext.ctc_loss(batch.logits.float(), *args).dtype == torch.float32


def test_lengths_of_any_integer_dtype_are_accepted(device):
    batch = make_batch(T=8, N=2, C=4, S=2, seed=25, device=device)
    a = ctc_ext.ctc_loss(
        batch.logits,
        batch.padded_targets,
        torch.tensor(batch.input_lengths, dtype=torch.int16),
        torch.tensor(batch.target_lengths, dtype=torch.uint8),
    )
    b = ctc_ext.ctc_loss(batch.logits, batch.padded_targets, batch.input_lengths, batch.target_lengths)
    assert torch.equal(a, b)


def test_bitwise_deterministic_under_deterministic_algorithms(device):
    batch = make_batch(T=200, N=16, C=50, S=40, seed=26, dtype=torch.float32, device=device)
    args = (batch.padded_targets, batch.input_lengths, batch.target_lengths)
    torch.use_deterministic_algorithms(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "does not have a deterministic implementation" warning
            runs = []
            for _ in range(5):
                logits = batch.logits.clone().requires_grad_(True)
                loss = ctc_ext.ctc_loss(logits, *args)
                loss.backward()
                runs.append((loss.detach(), logits.grad))
    finally:
        torch.use_deterministic_algorithms(False)
    for loss, grad in runs[1:]:
        assert torch.equal(loss, runs[0][0]) and torch.equal(grad, runs[0][1])


# ----------------------------------------------------------------------------------------------
# On a CUDA device only: where the values live, streams, host synchronisation.


def test_invalid_values_on_the_device_give_nan_and_on_the_host_raise(cuda_device):
    batch = make_batch(T=10, N=3, C=5, S=3, seed=27, target_lengths=[3, 3, 3], device=cuda_device)
    targets = batch.padded_targets.clone()
    targets[1, 0] = 5  # == C: checked by the kernel, without a host synchronisation
    lengths = (torch.tensor(batch.input_lengths, device=cuda_device), torch.tensor(batch.target_lengths))
    loss = ctc_ext.ctc_loss(batch.logits, targets, lengths[0], lengths[1].to(cuda_device), reduction="none")
    assert torch.isfinite(loss[[0, 2]]).all() and loss[1].isnan()
    with pytest.raises(RuntimeError, match="targets must hold labels"):
        ctc_ext.ops.ctc_loss_forward(batch.logits, targets.cpu(), lengths[0].cpu(), lengths[1], 0, False)


def test_lengths_given_on_the_host_are_checked_there(cuda_device):
    batch = make_batch(T=10, N=2, C=5, S=3, seed=28, device=cuda_device)
    with pytest.raises(RuntimeError, match="input_lengths must be at most T"):
        ctc_ext.ctc_loss(batch.logits, batch.padded_targets.cpu(), [11, 10], batch.target_lengths)
    on_host = ctc_ext.ctc_loss(batch.logits, batch.padded_targets.cpu(), batch.input_lengths, batch.target_lengths)
    on_device = ctc_ext.ctc_loss(
        batch.logits,
        batch.padded_targets,
        torch.tensor(batch.input_lengths, device=cuda_device),
        torch.tensor(batch.target_lengths, device=cuda_device),
    )
    torch.testing.assert_close(on_host, on_device, rtol=0, atol=0)


def test_no_host_synchronisation(cuda_device):
    batch = make_batch(T=60, N=8, C=20, S=15, seed=29, dtype=torch.float32, device=cuda_device)
    input_lengths = torch.tensor(batch.input_lengths, device=cuda_device)
    target_lengths = torch.tensor(batch.target_lengths, device=cuda_device)
    logits = batch.logits.clone().requires_grad_(True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for reduction in ("none", "sum", "mean"):
            loss = ctc_ext.ctc_loss(
                logits, batch.padded_targets, input_lengths, target_lengths, reduction=reduction, zero_infinity=True
            )
            loss.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(logits.grad).all()


def test_runs_on_the_current_stream(cuda_device):
    batch = make_batch(T=30, N=4, C=10, S=8, seed=30, dtype=torch.float32, device=cuda_device)
    args = (batch.logits, batch.padded_targets, batch.input_lengths, batch.target_lengths)
    reference = ctc_ext.ctc_loss(*args, reduction="none")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        on_stream = ctc_ext.ctc_loss(*args, reduction="none")
    stream.synchronize()
    assert torch.equal(on_stream, reference)
