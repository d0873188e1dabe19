"""Non-finite and extreme logits on every CPU kernel path (issue 12, items 4 and 6).

References: F.ctc_loss on log_softmax in float64 (the built-in), and for logits beyond what float64
can run through the built-in, the same logits scaled down to where it is exact but the softmax is
already saturated.  The emulated CUDA kernels get the same checks in tests/cuda_emulation.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from test_cpu_kernels import PATHS

import ctc_ext


def problem(T=8, N=3, C=6, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(T, N, C, generator=generator, dtype=torch.float64).to(dtype)
    targets = torch.tensor([[1, 2, 1], [2, 3, 0], [4, 4, 5]])
    input_lengths = torch.tensor([T, T - 2, T])
    target_lengths = torch.tensor([3, 2, 3])
    return x, targets, input_lengths, target_lengths


def losses_and_grad(loss_fn, x, targets, input_lengths, target_lengths, zero_infinity=False):
    x = x.detach().clone().requires_grad_()
    losses = loss_fn(x, targets, input_lengths, target_lengths, reduction="none", zero_infinity=zero_infinity)
    losses.sum().backward()
    return losses.detach(), x.grad


def builtin(x, targets, input_lengths, target_lengths, **kwargs):
    return F.ctc_loss(x.double().log_softmax(2), targets, input_lengths, target_lengths, **kwargs)


def poison(x, kind, t, n):
    x = x.clone()
    if kind == "+inf":
        x[t, n, 1] = math.inf
    elif kind == "nan":
        x[t, n, 4] = math.nan
    elif kind == "+inf and nan":  # the +inf used to hide the NaN of its frame
        x[t, n, 3] = math.inf
        x[t, n, 1] = math.nan
    elif kind == "all -inf":
        x[t, n, :] = -math.inf
    return x


NON_FINITE = ["+inf", "nan", "+inf and nan", "all -inf"]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("kernel_path", PATHS, indirect=True)
@pytest.mark.parametrize("kind", NON_FINITE)
@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_logits_give_nan_loss_and_gradient(kernel_path, kind, zero_infinity, dtype):
    """As the built-in: NaN loss and NaN gradient rows for the sample, whatever zero_infinity says
    (it is for targets that cannot be aligned); the other samples are untouched."""
    x, targets, input_lengths, target_lengths = problem(dtype=dtype)
    x = poison(x, kind, t=2, n=0)
    losses, grad = losses_and_grad(ctc_ext.ctc_loss, x, targets, input_lengths, target_lengths, zero_infinity)
    ref_losses, ref_grad = losses_and_grad(builtin, x, targets, input_lengths, target_lengths, zero_infinity)
    assert ref_losses[0].isnan() and ref_grad[:, 0].isnan().all()  # what the built-in does
    assert losses[0].isnan()
    assert grad[:, 0].isnan().all()
    tolerance = 1e-9 if dtype == torch.float64 else 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(losses[1:].double(), ref_losses[1:], rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(grad[:, 1:].double(), ref_grad[:, 1:].double(), rtol=tolerance, atol=tolerance)
    # The reductions carry the NaN too.
    for reduction in ("mean", "sum"):
        reduced = ctc_ext.ctc_loss(
            x, targets, input_lengths, target_lengths, reduction=reduction, zero_infinity=zero_infinity
        )
        assert reduced.isnan()


@pytest.mark.parametrize("kernel_path", PATHS, indirect=True)
@pytest.mark.parametrize("kind", NON_FINITE)
def test_non_finite_logits_beyond_the_input_length_are_ignored(kernel_path, kind):
    x, targets, input_lengths, target_lengths = problem()
    x = poison(x, kind, t=7, n=1)  # sample 1 has 6 frames
    losses, grad = losses_and_grad(ctc_ext.ctc_loss, x, targets, input_lengths, target_lengths)
    ref_losses, ref_grad = losses_and_grad(builtin, x, targets, input_lengths, target_lengths)
    torch.testing.assert_close(losses, ref_losses, rtol=1e-9, atol=1e-9)
    # The built-in's log_softmax backward turns the unused frame's 0 into NaN; ours stays 0.
    assert grad[6:, 1].eq(0).all()
    torch.testing.assert_close(grad[:6], ref_grad[:6], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kernel_path", PATHS, indirect=True)
def test_zero_infinity_still_zeroes_unalignable_targets(kernel_path):
    x, targets, input_lengths, target_lengths = problem()
    target_lengths = torch.tensor([3, 2, 3])
    input_lengths = torch.tensor([8, 1, 8])  # sample 1: two labels in one frame
    x = poison(x, "+inf", t=2, n=0)
    losses, grad = losses_and_grad(ctc_ext.ctc_loss, x, targets, input_lengths, target_lengths, True)
    assert losses[0].isnan() and grad[:, 0].isnan().all()
    assert losses[1] == 0 and grad[:, 1].eq(0).all()
    assert losses[2].isfinite() and grad[:, 2].isfinite().all()


def saturated_reference(x, targets, input_lengths, target_lengths, scale):
    """The built-in in float64 on x / scale * 1e6: differences between classes of 1e6 in log space
    saturate the softmax and the alignment posterior exactly as at x itself (exp(-1e4) is 0 in
    float64), while the built-in's own rounding (1e-8 here) stays far inside its exp range."""
    return losses_and_grad(builtin, x.double() / scale * 1e6, targets, input_lengths, target_lengths)


@pytest.mark.parametrize("kernel_path", PATHS, indirect=True)
@pytest.mark.parametrize(
    "dtype,scale", [(torch.float32, 1e10), (torch.float32, 1e30), (torch.float64, 1e19), (torch.float64, 1e300)]
)
def test_huge_finite_logits_give_the_saturated_gradient(kernel_path, dtype, scale):
    x, targets, input_lengths, target_lengths = problem(T=30, C=9, seed=1)
    x = (x * scale).to(dtype)
    losses, grad = losses_and_grad(ctc_ext.ctc_loss, x, targets, input_lengths, target_lengths)
    assert grad.isfinite().all()
    _, ref_grad = saturated_reference(x, targets, input_lengths, target_lengths, scale)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=0, atol=1e-6)
    # The loss itself: the built-in in float64 on the logits as given, where it is exact enough.
    if scale <= 1e10:
        ref_losses, ref_direct_grad = losses_and_grad(builtin, x, targets, input_lengths, target_lengths)
        torch.testing.assert_close(losses.double(), ref_losses, rtol=1e-6, atol=0)
        torch.testing.assert_close(grad.double(), ref_direct_grad.double(), rtol=0, atol=1e-6)
    assert losses.isfinite().all()


@pytest.mark.parametrize("kernel_path", PATHS, indirect=True)
@pytest.mark.parametrize("dtype,largest", [(torch.float16, 16384.0), (torch.bfloat16, 1e10)])
def test_large_half_precision_logits_give_the_saturated_gradient(kernel_path, dtype, largest):
    """float16 up to a quarter of its range; bfloat16 as large as float32 above (it accumulates in
    float32, so the float32 limits apply)."""
    x, targets, input_lengths, target_lengths = problem(T=30, C=9, seed=2)
    x = (x / x.abs().max() * largest).to(dtype)
    losses, grad = losses_and_grad(ctc_ext.ctc_loss, x, targets, input_lengths, target_lengths)
    assert grad.isfinite().all() and losses.isfinite().all()
    _, ref_grad = saturated_reference(x, targets, input_lengths, target_lengths, largest)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=0, atol=1e-3)
