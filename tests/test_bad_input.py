"""Bad input raises a clear exception naming the argument; nothing is read out of bounds."""

import dataclasses

import numpy as np
import pytest
import torch
from ctc_cases import make_batch
from isolation import assert_isolated_ok

import ctc_ext


@pytest.fixture
def batch(device):
    # Logits on the device, targets on the host: values that come from the host are checked there,
    # before anything runs, on every device.  (Bad values already on a CUDA device are checked by
    # the kernels without a host synchronisation: test_semantics.py, invalid values on the device.)
    batch = make_batch(T=10, N=3, C=5, S=4, seed=31, input_lengths=[10, 8, 6], target_lengths=[4, 2, 3])
    return dataclasses.replace(batch, logits=batch.logits.to(device))


def call(batch, logits=None, targets=None, input_lengths=None, target_lengths=None, **kwargs):
    return ctc_ext.ctc_loss(
        batch.logits if logits is None else logits,
        batch.padded_targets if targets is None else targets,
        batch.input_lengths if input_lengths is None else input_lengths,
        batch.target_lengths if target_lengths is None else target_lengths,
        **kwargs,
    )


def padded_with(batch, value, position=(1, 1)):
    targets = batch.padded_targets.clone()
    targets[position] = value
    return targets


@pytest.mark.parametrize("value", [-1, 5, 1000, -(2**40)])
def test_label_outside_classes(batch, value):
    with pytest.raises(RuntimeError, match=r"targets must hold labels in \[0, C\)"):
        call(batch, targets=padded_with(batch, value))


@pytest.mark.parametrize("value", [-1, 5, 2**31 - 1])
def test_label_outside_classes_in_concatenated_int32_targets(batch, value):
    targets = batch.concatenated_targets.int()
    targets[-1] = value
    with pytest.raises(RuntimeError, match="targets must hold labels"):
        call(batch, targets=targets)


def test_label_equal_to_blank(batch):
    with pytest.raises(RuntimeError, match="targets must not contain the blank"):
        call(batch, targets=padded_with(batch, 2), blank=2)


@pytest.mark.parametrize("blank", [-1, 5, 100])
def test_blank_outside_classes(batch, blank):
    with pytest.raises(ValueError, match=r"blank must be in \[0, C\)"):
        call(batch, blank=blank)


def test_negative_input_length(batch):
    with pytest.raises(RuntimeError, match="input_lengths must be non-negative"):
        call(batch, input_lengths=[10, -1, 6])


def test_negative_target_length(batch):
    with pytest.raises(RuntimeError, match="target_lengths must be non-negative"):
        call(batch, target_lengths=[4, -2, 3])


def test_input_length_above_T(batch):
    with pytest.raises(RuntimeError, match="input_lengths must be at most T = 10"):
        call(batch, input_lengths=[11, 8, 6])


def test_target_length_above_padded_width(batch):
    with pytest.raises(RuntimeError, match="exceeds the padded targets width S = 4"):
        call(batch, target_lengths=[5, 2, 3])


def test_concatenated_targets_shorter_than_sum_of_lengths(batch):
    with pytest.raises(RuntimeError, match="concatenated targets have 8 labels but target_lengths sum to more"):
        call(batch, targets=batch.concatenated_targets[:8], target_lengths=[4, 2, 3])
    with pytest.raises(RuntimeError, match="concatenated targets have"):
        call(batch, targets=batch.concatenated_targets[:0])


@pytest.mark.parametrize("argument", ["input_lengths", "target_lengths"])
@pytest.mark.parametrize(
    "wrong",
    [
        [10, 8],
        [10, 8, 6, 6],
        torch.tensor([[10, 8, 6]]),
        torch.tensor([10.0, 8.0, 6.0]),
        torch.tensor([True, True, True]),
        [1.5, 2, 3],
        "abc",
    ],
)
def test_lengths_of_wrong_size_or_dtype(batch, argument, wrong):
    with pytest.raises(ValueError, match=argument):
        call(batch, **{argument: wrong})


@pytest.mark.parametrize(
    "targets", [torch.ones(3, 4), torch.ones(3, 4, dtype=torch.bool), torch.ones(3, 4, dtype=torch.int16)]
)
def test_non_integer_targets(batch, targets):
    with pytest.raises(ValueError, match="targets must be int32 or int64"):
        call(batch, targets=targets)


def test_targets_of_wrong_shape(batch):
    with pytest.raises(ValueError, match=r"padded targets must be \(N, S\) with N = 3"):
        call(batch, targets=batch.padded_targets[:2])
    with pytest.raises(ValueError, match="targets must be"):
        call(batch, targets=batch.padded_targets.unsqueeze(0))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_non_floating_input(batch, dtype):
    with pytest.raises(ValueError, match="log_probs must be floating point|log_probs must be float16"):
        call(batch, logits=batch.logits.to(dtype))


@pytest.mark.parametrize("shape", [(10,), (10, 3, 5, 1), ()])
def test_wrong_number_of_dims(batch, shape):
    with pytest.raises(ValueError, match="log_probs must be"):
        call(batch, logits=torch.zeros(shape))


def test_unknown_reduction(batch):
    with pytest.raises(ValueError, match="reduction must be one of"):
        call(batch, reduction="average")


def test_non_tensor_arguments(batch):
    with pytest.raises(TypeError, match="log_probs must be a tensor"):
        call(batch, logits=batch.logits.tolist())
    with pytest.raises(TypeError, match="targets must be a tensor"):
        call(batch, targets=[[1, 2]])
    with pytest.raises(TypeError, match="blank must be an int"):
        call(batch, blank=0.0)


def test_unbatched_input_with_2d_targets(batch):
    with pytest.raises(ValueError, match=r"for unbatched \(T, C\) log_probs, targets must be 1-D"):
        call(batch, logits=batch.logits[:, 0], targets=batch.padded_targets, input_lengths=[10], target_lengths=[4])


@pytest.mark.parametrize(
    "op_args",
    [
        dict(blank=7),
        dict(input_lengths=torch.tensor([10, 8])),
        dict(targets=torch.ones(3, 2, 2, dtype=torch.long)),
        dict(logits=torch.zeros(10, 3)),
        dict(input_lengths=torch.tensor([10.0, 8.0, 6.0])),
        dict(targets=padded_with(make_batch(T=10, N=3, C=5, S=4, seed=31), 9)),
    ],
)
def test_ops_called_directly_check_their_arguments_too(batch, op_args):
    """The raw ops are public (torch.ops.ctc_ext.*) and must be as safe as ctc_loss."""
    args = dict(
        logits=batch.logits,
        targets=batch.padded_targets,
        input_lengths=torch.tensor(batch.input_lengths),
        target_lengths=torch.tensor(batch.target_lengths),
        blank=0,
    )
    args.update(op_args)
    with pytest.raises(RuntimeError):
        ctc_ext.ops.ctc_loss_forward(
            args["logits"], args["targets"], args["input_lengths"], args["target_lengths"], args["blank"], True
        )


def test_backward_op_rejects_a_forward_state_of_another_problem(batch):
    lengths = (torch.tensor(batch.input_lengths), torch.tensor(batch.target_lengths))
    nll, log_alpha, normalizer = ctc_ext.ops.ctc_loss_forward(batch.logits, batch.padded_targets, *lengths, 0, True)
    log_alpha = log_alpha[:-1]  # neither the kept log_alpha nor the empty one of keep_log_alpha=False
    with pytest.raises(RuntimeError, match="needs the log_alpha of ctc_loss_forward"):
        ctc_ext.ops.ctc_loss_backward(
            torch.ones(3, dtype=torch.float64, device=batch.logits.device),
            batch.logits,
            batch.padded_targets,
            *lengths,
            nll,
            log_alpha,
            normalizer,
            0,
            False,
        )


# Hostile inputs that once crashed the process: each runs in a child interpreter, which must
# exit cleanly after the expected exception.


def test_concatenated_target_lengths_whose_sum_overflows_int64():
    assert_isolated_ok("""
        import torch, ctc_ext
        logits = torch.randn(6, 2, 5)
        targets = torch.ones(3, dtype=torch.int64)
        for lengths in ([2**63 - 1, 2], [2, 2**63 - 1], [1, 2**63 - 1]):
            try:
                ctc_ext.ctc_loss(logits, targets, [6, 6], lengths)
            except RuntimeError as error:
                assert "target_lengths sum to more" in str(error), error
            else:
                raise AssertionError(f"no error for target_lengths {lengths}")
            try:
                ctc_ext.forced_align(logits, targets, [6, 6], lengths)
            except RuntimeError as error:
                assert "target_lengths sum to more" in str(error), error
            else:
                raise AssertionError(f"forced_align: no error for target_lengths {lengths}")
    """)


def test_backward_op_given_a_finite_loss_for_a_target_that_cannot_fit():
    # Sample 1 has 4 labels in 2 frames: no path.  The backward op must not trust the loss it is
    # handed (a finite value, or NaN) and sweep an empty band.  A NaN loss (what non-finite input
    # gives) makes the gradient NaN whatever zero_infinity says; a finite one defers to the lengths.
    assert_isolated_ok("""
        import math, torch, ctc_ext
        ops = torch.ops.ctc_ext
        logits = torch.randn(6, 2, 5, dtype=torch.float64)
        targets = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4]])
        input_lengths = torch.tensor([6, 2])
        target_lengths = torch.tensor([4, 4])
        nll, log_alpha, log_normalizer = ops.ctc_loss_forward(logits, targets, input_lengths, target_lengths, 0, True)
        assert math.isinf(nll[1])
        for forged in (1.5, float("nan")):
            nll_forged = nll.clone()
            nll_forged[1] = forged
            for zero_infinity in (False, True):
                grad = ops.ctc_loss_backward(torch.ones(2, dtype=torch.float64), logits, targets, input_lengths,
                                             target_lengths, nll_forged, log_alpha, log_normalizer, 0, zero_infinity)
                sample = grad[:2, 1]
                zeroed = zero_infinity and not math.isnan(forged)
                assert (sample == 0).all() if zeroed else sample.isnan().all(), sample
                assert (grad[2:, 1] == 0).all()
    """)


def test_lengths_changed_in_place_between_forward_and_backward():
    # Memory shared with numpy changes without autograd's version counter noticing; the backward
    # must use the values the forward used (the built-in copies them too).
    out = assert_isolated_ok("""
        import numpy as np, torch, ctc_ext
        torch.manual_seed(0)
        logits = torch.randn(8, 2, 5, dtype=torch.float64, requires_grad=True)
        targets_np = np.array([[1, 2, 3], [2, 3, 4]])
        input_np = np.array([8, 5])
        target_np = np.array([3, 2])
        targets, input_lengths, target_lengths = map(torch.from_numpy, (targets_np, input_np, target_np))
        expected = torch.autograd.grad(ctc_ext.ctc_loss(logits, targets, input_lengths, target_lengths), logits)[0]
        loss = ctc_ext.ctc_loss(logits, targets, input_lengths, target_lengths)
        input_np[:] = [1, 8]
        target_np[:] = [3, 3]
        targets_np[:] = 4
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.equal(grad, expected)
        print("same gradient")
    """)
    assert "same gradient" in out


# ---------------------------------------------------------------------------------------------
# The error type: both ValueError (ctc_ext's past errors) and RuntimeError (the built-in's).


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(blank=7),
        dict(reduction="avg"),
        dict(input_lengths=[10, 8]),
        dict(targets=torch.zeros(3, 4)),
        dict(logits=torch.zeros(10, 3, 5, dtype=torch.int64)),
    ],
    ids=["blank", "reduction", "lengths", "targets_dtype", "logits_dtype"],
)
def test_argument_errors_catch_as_the_builtins_runtime_error_and_as_value_error(batch, kwargs):
    with pytest.raises(RuntimeError) as caught:
        call(batch, **kwargs)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, ctc_ext.CTCArgumentError)


def test_the_builtin_raises_runtime_error_for_the_same_mistake(batch):
    # What the error type is for: code written against the built-in catches RuntimeError.
    with pytest.raises(RuntimeError):
        torch.nn.functional.ctc_loss(
            batch.logits.log_softmax(-1), batch.padded_targets.clamp(0, 4), batch.input_lengths, batch.target_lengths, 7
        )


@pytest.mark.parametrize(
    "blank",
    [np.int64(2), np.int32(2), np.uint8(2), torch.tensor(2)],
    ids=["np.int64", "np.int32", "np.uint8", "tensor"],
)
def test_integer_like_blank_is_taken_like_the_builtin(batch, blank):
    targets = batch.padded_targets.masked_fill(batch.padded_targets == 2, 1)
    expected = call(batch, targets=targets, blank=2)
    torch.testing.assert_close(call(batch, targets=targets, blank=blank), expected)
    torch.testing.assert_close(
        ctc_ext.CTCLoss(blank=blank)(batch.logits, targets, batch.input_lengths, batch.target_lengths), expected
    )


@pytest.mark.parametrize("blank", [True, 2.0, "2"])
def test_blank_that_is_not_integer_like_is_refused(batch, blank):
    with pytest.raises(TypeError, match="blank must be an int"):
        call(batch, blank=blank)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_forced_align_names_a_nan_or_inf_logit(batch, value):
    logits = batch.logits.clone()
    logits[3, 1, 2] = value
    name = "NaN" if value != value else r"\+inf"
    with pytest.raises(ctc_ext.CTCArgumentError, match=rf"sample 1 hold {name} \(first at frame 3, class 2"):
        ctc_ext.forced_align(logits, batch.padded_targets, batch.input_lengths, batch.target_lengths)


def test_forced_align_ignores_nan_beyond_the_input_length(batch):
    logits = batch.logits.clone()
    logits[9, 2] = float("nan")  # sample 2 has input length 6
    alignment, _ = ctc_ext.forced_align(logits, batch.padded_targets, batch.input_lengths, batch.target_lengths)
    assert (alignment[2, 6:] == -1).all()


def test_forced_align_with_minus_inf_logits_still_blames_the_frames_count(batch):
    logits = batch.logits.clone()
    logits[:, 0, 1:] = -float("inf")  # only blank is possible for sample 0: no alignment, but no NaN either
    with pytest.raises(ctc_ext.CTCArgumentError, match="sample 0 .* has no alignment of non-zero probability"):
        ctc_ext.forced_align(logits, batch.padded_targets, batch.input_lengths, batch.target_lengths)
