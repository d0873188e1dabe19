"""Edge cases of the drop-in semantics: empty inputs, empty targets, non-finite inputs."""

import math

import pytest
import torch
from ctc_cases import builtin_loss, make_batch

import ctc_ext


def test_empty_target_costs_the_blank_path():
    logits = torch.randn(7, 1, 4, dtype=torch.float64)
    loss = ctc_ext.ctc_loss(logits, torch.zeros(1, 0, dtype=torch.long), [7], [0], reduction="none")
    expected = -logits.log_softmax(-1)[:, 0, 0].sum()
    torch.testing.assert_close(loss[0], expected, rtol=1e-14, atol=0)


def test_input_length_zero():
    logits = torch.randn(5, 2, 4, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 2], [1, 2]])
    loss = ctc_ext.ctc_loss(logits, targets, [0, 0], [0, 2], reduction="none")
    assert loss[0] == 0 and math.isinf(loss[1].item())
    theirs = builtin_loss(logits, targets, [0, 0], [0, 2], reduction="none")
    assert torch.equal(loss.isinf(), theirs.isinf())
    ctc_ext.ctc_loss(logits, targets, [0, 0], [0, 2], reduction="none", zero_infinity=True).sum().backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_empty_batch_returns_empty_losses():
    logits = torch.randn(10, 0, 5, requires_grad=True)
    targets = torch.zeros(0, 3, dtype=torch.long)
    losses = ctc_ext.ctc_loss(logits, targets, [], [], reduction="none")
    assert losses.shape == (0,)
    total = ctc_ext.ctc_loss(logits, targets, [], [], reduction="sum")
    assert total.item() == 0
    total.backward()
    assert logits.grad.shape == logits.shape
    assert math.isnan(ctc_ext.ctc_loss(logits, targets, [], [], reduction="mean").item())


def test_empty_time_axis():
    logits = torch.randn(0, 2, 5, requires_grad=True)
    losses = ctc_ext.ctc_loss(logits, torch.tensor([[1], [2]]), [0, 0], [1, 0], reduction="none")
    assert math.isinf(losses[0].item()) and losses[1].item() == 0


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_in_one_sample_leaves_the_others_exact(bad_value):
    batch = make_batch(T=12, N=3, C=5, S=3, seed=21, input_lengths=[12, 12, 12], target_lengths=[3, 2, 3])
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


def test_minus_infinity_logit_is_an_impossible_class_not_an_error():
    """A class with logit -inf has probability 0; paths through other classes are unaffected."""
    logits = torch.randn(6, 1, 4, dtype=torch.float64)
    logits[:, 0, 3] = -float("inf")
    ours = ctc_ext.ctc_loss(logits, torch.tensor([[1, 2]]), [6], [2], reduction="none")
    theirs = builtin_loss(logits, torch.tensor([[1, 2]]), [6], [2], reduction="none")
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)


def test_padding_beyond_target_length_is_never_read():
    batch = make_batch(T=10, N=2, C=5, S=4, seed=22, target_lengths=[4, 1])
    assert (batch.padded_targets[1, 1:] >= 5).all()  # out-of-range junk in the padding
    ctc_ext.ctc_loss(batch.logits, batch.padded_targets, batch.input_lengths, batch.target_lengths)


def test_extra_concatenated_labels_beyond_the_lengths_are_ignored():
    batch = make_batch(T=10, N=2, C=5, S=3, seed=23)
    extended = torch.cat([batch.concatenated_targets, torch.tensor([1, 2, 3])])
    a = ctc_ext.ctc_loss(batch.logits, batch.concatenated_targets, batch.input_lengths, batch.target_lengths)
    b = ctc_ext.ctc_loss(batch.logits, extended, batch.input_lengths, batch.target_lengths)
    assert torch.equal(a, b)


def test_loss_dtype_follows_input_dtype():
    batch = make_batch(T=8, N=2, C=4, S=2, seed=24)
    args = (batch.padded_targets, batch.input_lengths, batch.target_lengths)
    assert ctc_ext.ctc_loss(batch.logits, *args).dtype == torch.float64
    assert ctc_ext.ctc_loss(batch.logits.float(), *args).dtype == torch.float32


def test_lengths_of_any_integer_dtype_are_accepted():
    batch = make_batch(T=8, N=2, C=4, S=2, seed=25)
    a = ctc_ext.ctc_loss(
        batch.logits,
        batch.padded_targets,
        torch.tensor(batch.input_lengths, dtype=torch.int16),
        torch.tensor(batch.target_lengths, dtype=torch.uint8),
    )
    b = ctc_ext.ctc_loss(batch.logits, batch.padded_targets, batch.input_lengths, batch.target_lengths)
    assert torch.equal(a, b)
