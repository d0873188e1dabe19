"""The CPU kernels' own code paths: every compiled instruction set and both schedules (by sample
and by frame), forced with the _set_cpu_kernel_path test op (CTC_EXT_CPU_ISA and
CTC_EXT_CPU_SCHEDULE do the same for a whole process, read once), and the accuracy of
the vectorised exp / log against libm.  References: F.ctc_loss on log_softmax in float64, and
torch's exp / log in float64."""

import math

import pytest
import torch
import torch.nn.functional as F
from ctc_cases import forced_kernel_path
from isolation import assert_isolated_ok

import ctc_ext

ops = torch.ops.ctc_ext
ALL_ISAS = ["generic", "avx2", "avx512"]


def isa_supported(isa):
    try:
        ops._simd_math(torch.zeros(1), "exp", isa)
        return True
    except RuntimeError:
        return False


ISAS = [
    pytest.param(isa, marks=pytest.mark.skipif(not isa_supported(isa), reason=f"{isa} not on this CPU"))
    for isa in ALL_ISAS
]
SCHEDULES = ["sample", "frame"]


PATHS = [
    pytest.param((isa.values[0], schedule), marks=isa.marks, id=f"{isa.values[0]}-{schedule}")
    for isa in ISAS
    for schedule in SCHEDULES
]


# ------------------------------------------------------------------------------------------
# exp / log accuracy.


def ulp_error(result, reference):
    """|result - reference| in units of the last place of reference (float64 reference)."""
    spacing = torch.nextafter(reference.abs(), torch.tensor(math.inf, dtype=reference.dtype)) - reference.abs()
    return ((result - reference).abs() / spacing).max().item()


@pytest.mark.parametrize("isa", ISAS)
def test_exp_float64_is_accurate_to_a_few_ulp(isa):
    x = torch.cat(
        [
            torch.linspace(-708, 708, 200_001, dtype=torch.float64),
            torch.randn(10_000, dtype=torch.float64) * 1e-3,
            torch.tensor([0.0, -1e-300, 1e-300], dtype=torch.float64),
        ]
    )
    assert ulp_error(ops._simd_math(x, "exp", isa), torch.exp(x)) <= 3


@pytest.mark.parametrize("isa", ISAS)
def test_log_float64_is_accurate_to_a_few_ulp(isa):
    x = torch.cat(
        [
            torch.logspace(-300, 300, 200_001, dtype=torch.float64),
            1.0 + torch.rand(10_000, dtype=torch.float64) * 2.0,  # the kernels' log1p range
            1.0 + torch.rand(1_000, dtype=torch.float64) * 1e-6,
            1.0 - torch.rand(1_000, dtype=torch.float64) * 1e-6,
        ]
    )
    result, reference = ops._simd_math(x, "log", isa), torch.log(x)
    nonzero = reference != 0
    assert ulp_error(result[nonzero], reference[nonzero]) <= 3
    assert (result[~nonzero] == 0).all()


@pytest.mark.parametrize("isa", ISAS)
def test_exp_and_log_float32_are_accurate_to_a_few_ulp(isa):
    x = torch.linspace(-87, 88, 200_001, dtype=torch.float32)
    exp = ops._simd_math(x, "exp", isa)
    reference = torch.exp(x.double())
    assert ((exp.double() - reference).abs() / reference).max().item() < 3 * 2.0**-24
    y = torch.logspace(-37, 38, 200_001, dtype=torch.float32)
    log = ops._simd_math(y, "log", isa).double()
    log_reference = torch.log(y.double())
    # Absolute error within 3 ulp of the float result's magnitude (at least of 1).
    assert ((log - log_reference).abs() / log_reference.abs().clamp_min(1.0)).max().item() < 3 * 2.0**-24


@pytest.mark.parametrize("isa", ISAS)
def test_exp_nonpositive_float32_error_is_the_rounding_of_x_log2e(isa):
    # The row sums' exp works in base 2: besides the polynomial (2e-9) and its float evaluation
    # (about 2 ulp) it inherits the roundings of log2(e) and of y = x log2(e), each a relative
    # |x| 2^-24 at most in e^x.
    x = torch.cat(
        [torch.linspace(-87, 0, 400_001, dtype=torch.float32), -torch.rand(10_000, dtype=torch.float32) * 1e-3]
    )
    result = ops._simd_math(x, "exp_nonpositive", isa).double()
    reference = torch.exp(x.double())
    relative = (result - reference).abs() / reference
    bound = (2 * x.double().abs() + 3) * 2.0**-24
    assert (relative <= bound).all(), f"worst excess {(relative - bound).max().item():.3g}"
    # Near 0 (the terms that dominate a sum) that is vexp's few ulp.
    assert relative[x > -1].max().item() < 4 * 2.0**-24


@pytest.mark.parametrize("isa", ISAS)
def test_exp_nonpositive_special_values(isa):
    inf, nan = math.inf, math.nan
    result = ops._simd_math(torch.tensor([-inf, -1e4, nan, 0.0, -88.0], dtype=torch.float32), "exp_nonpositive", isa)
    # Below -87.3 the result is clamped at 2^-126 instead of underflowing (harmless in a sum >= 1).
    assert result[0] == 2.0**-126 and result[1] == 2.0**-126 and result[2].isnan() and result[3] == 1
    assert result[4] == 2.0**-126


def same_bits_or_both_nan(result, reference, bits_dtype):
    return (result.view(bits_dtype) == reference.view(bits_dtype)) | (result.isnan() & reference.isnan())


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("function,dtype", [("half_to_float", torch.float16), ("bfloat16_to_float", torch.bfloat16)])
def test_half_precision_rows_widen_exactly_like_torch(isa, function, dtype):
    # Every one of the 65536 bit patterns (subnormals, infinities, NaNs included).
    x = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(dtype)
    result = ops._simd_math(x, function, isa)
    assert same_bits_or_both_nan(result, x.float(), torch.int32).all()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("function,dtype", [("float_to_half", torch.float16), ("float_to_bfloat16", torch.bfloat16)])
def test_half_precision_rows_round_exactly_like_torch(isa, function, dtype):
    # Random float bit patterns (every exponent, NaNs included) and the rounding edges:
    # halfway cases, the largest finite half and what overflows it, the subnormal range.
    generator = torch.Generator().manual_seed(5)
    random_bits = torch.randint(-(2**31), 2**31, (1_000_000,), dtype=torch.int64, generator=generator)
    edges = torch.tensor(
        [
            0.0,
            -0.0,
            math.inf,
            -math.inf,
            math.nan,
            65504.0,
            65519.99,
            65520.0,
            -65520.0,
            6e-8,
            2.98e-8,
            2.99e-8,
            1e-45,
            1.0 + 2.0**-11,
            1.0 + 3 * 2.0**-11,
            1.0 + 2.0**-8,
            1.0 + 3 * 2.0**-8,
            3.4e38,
        ]
    )
    x = torch.cat([random_bits.to(torch.int32).view(torch.float32), edges, -edges, edges * 1e-5])
    result = ops._simd_math(x, function, isa)
    assert result.dtype == dtype
    assert same_bits_or_both_nan(result, x.to(dtype), torch.int16).all()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exp_and_log_special_values(isa, dtype):
    inf, nan = math.inf, math.nan
    x = torch.tensor([-inf, -1e4, inf, nan, 0.0], dtype=dtype)
    exp = ops._simd_math(x, "exp", isa)
    assert exp[0] == 0 and exp[1] == 0 and exp[2] == inf and exp[3].isnan() and exp[4] == 1
    log = ops._simd_math(torch.tensor([0.0, -1.0, inf, nan, 1.0], dtype=dtype), "log", isa)
    assert log[0] == -inf and log[1].isnan() and log[2] == inf and log[3].isnan() and log[4] == 0


def test_unknown_isa_and_schedule_are_rejected():
    with pytest.raises(RuntimeError, match="isa must be generic, avx2 or avx512, got 'sse9'"):
        ops._set_cpu_kernel_path("sse9", "")
    with pytest.raises(RuntimeError, match="schedule must be sample or frame, got 'diagonal'"):
        ops._set_cpu_kernel_path("", "diagonal")
    assert ops._cpu_kernel_isa() == [isa for isa in ALL_ISAS if isa_supported(isa)][-1]  # unchanged: the best


@pytest.mark.parametrize(
    "variable,value", [("CTC_EXT_CPU_ISA", "sse9"), ("CTC_EXT_CPU_SCHEDULE", "diagonal"), ("CTC_EXT_CPU_ISA", "")]
)
def test_environment_is_read_once_and_checked(monkeypatch, variable, value):
    """A bad value fails every call, naming the variable; a good one holds for the process even
    when the environment changes later (the kernels do not call getenv per call)."""
    monkeypatch.setenv("CTC_EXT_CPU_ISA", "generic")
    monkeypatch.setenv(variable, value)
    out = assert_isolated_ok(f"""
        import os, torch, ctc_ext
        call = lambda: ctc_ext.ctc_loss(torch.randn(5, 1, 3), torch.tensor([[1]]), [5], [1])
        for attempt in range(2):
            try:
                call()
                print("ok", ctc_ext.ops._cpu_kernel_isa())
            except RuntimeError as error:
                print("error", "{variable}" in str(error))
        os.environ["CTC_EXT_CPU_ISA"] = "sse9"
        try:
            print("later", ctc_ext.ops._cpu_kernel_isa())
        except RuntimeError as error:
            print("error", "{variable}" in str(error))
    """).split("\n")
    if value in ("sse9", "diagonal"):
        assert out[:2] == ["error True", "error True"] and out[2].startswith("error"), out
    else:  # CTC_EXT_CPU_ISA="" (the best) read at the first call; the later "sse9" is never seen
        best = [isa for isa in ALL_ISAS if isa_supported(isa)][-1]
        assert out == [f"ok {best}", f"ok {best}", f"later {best}", ""], out


# ------------------------------------------------------------------------------------------
# Losses and gradients on every path.


def random_problem(T, N, C, S, seed, dtype=torch.float64, scale=3.0, repeats=True):
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(T, N, C, generator=generator, dtype=torch.float64) * scale).to(dtype)
    input_lengths = torch.randint(max(1, (4 * T) // 5), T + 1, (N,), generator=generator)
    input_lengths[0] = T
    target_lengths = torch.randint(0, S + 1, (N,), generator=generator)
    target_lengths[0] = S
    targets = torch.randint(1, C, (N, S), generator=generator)
    if repeats and S >= 2:
        targets[:, 1] = targets[:, 0]  # a repeated label: no skip between them
    target_lengths = torch.minimum(target_lengths, (input_lengths - 1) // 2)
    return x, targets, input_lengths, target_lengths


def losses_and_grads(loss_fn, x, targets, input_lengths, target_lengths, **kwargs):
    x = x.detach().clone().requires_grad_()
    losses = loss_fn(x, targets, input_lengths, target_lengths, reduction="none", **kwargs)
    weights = torch.linspace(0.5, 1.5, losses.numel(), dtype=losses.dtype)  # distinct grad_nll per sample
    (losses * weights).sum().backward()
    return losses.detach(), x.grad


def builtin(x, targets, input_lengths, target_lengths, **kwargs):
    return F.ctc_loss(x.log_softmax(2), targets, input_lengths, target_lengths, **kwargs)


# Shapes that hit: a row narrower than one vector (W < 16), C narrower than a vector, C and W
# not multiples of any vector width, long rows, a single sample (the frame schedule's case).
SHAPES = [(12, 3, 5, 2), (30, 4, 7, 9), (40, 2, 33, 17), (64, 5, 130, 25), (80, 1, 29, 30), (25, 6, 2, 5)]


@pytest.mark.parametrize("kernel_path", PATHS, indirect=True)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_float64_matches_builtin_to_1e_9(kernel_path, shape):
    problem = random_problem(*shape, seed=sum(shape))
    ours_losses, ours_grad = losses_and_grads(ctc_ext.ctc_loss, *problem)
    ref_losses, ref_grad = losses_and_grads(builtin, *problem)
    torch.testing.assert_close(ours_losses, ref_losses, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours_grad, ref_grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kernel_path", PATHS, indirect=True)
def test_float32_error_is_within_a_small_multiple_of_the_builtins(kernel_path):
    x, *rest = random_problem(200, 4, 40, 50, seed=7)
    exact_losses, exact_grad = losses_and_grads(builtin, x, *rest)
    ours_losses, ours_grad = losses_and_grads(ctc_ext.ctc_loss, x.float(), *rest)
    builtin_losses, builtin_grad = losses_and_grads(builtin, x.float(), *rest)

    def error(value, exact):
        return (value.double() - exact).abs().max().item()

    assert error(ours_losses, exact_losses) <= 4 * error(builtin_losses, exact_losses) + 1e-5
    assert error(ours_grad, exact_grad) <= 4 * error(builtin_grad, exact_grad) + 1e-6


@pytest.mark.parametrize("kernel_path", PATHS, indirect=True)
def test_impossible_and_empty_samples_on_every_path(kernel_path):
    x = torch.randn(6, 4, 5, dtype=torch.float64)
    targets = torch.tensor([[1, 2, 3, 4], [1, 1, 1, 1], [2, 3, 0, 0], [0, 0, 0, 0]])
    input_lengths = torch.tensor([6, 6, 0, 4])
    target_lengths = torch.tensor([4, 4, 2, 0])  # fits; 4 repeats need 7 frames; no frames; empty
    for zero_infinity in (False, True):
        ours_losses, ours_grad = losses_and_grads(
            ctc_ext.ctc_loss, x, targets, input_lengths, target_lengths, zero_infinity=zero_infinity
        )
        ref_losses, ref_grad = losses_and_grads(
            builtin, x, targets, input_lengths, target_lengths, zero_infinity=zero_infinity
        )
        torch.testing.assert_close(ours_losses, ref_losses, rtol=1e-9, atol=1e-9)
        finite = [0, 3] if not zero_infinity else [0, 1, 2, 3]  # the built-in's grad is NaN-free only here
        torch.testing.assert_close(ours_grad[:, finite], ref_grad[:, finite], rtol=1e-9, atol=1e-9)
        if not zero_infinity:
            assert ours_grad[:, 1].isnan().all() and ours_grad[:, 2].eq(0).all()


@pytest.mark.parametrize("kernel_path", PATHS, indirect=True)
def test_log_alpha_is_the_same_on_every_path(kernel_path):
    x, targets, input_lengths, target_lengths = random_problem(50, 3, 11, 12, seed=3)
    nll, log_alpha, log_normalizer = ops.ctc_loss_forward(x, targets, input_lengths, target_lengths, 0, True)
    with forced_kernel_path("generic", "sample"):
        ref = ops.ctc_loss_forward(x, targets, input_lengths, target_lengths, 0, True)
    torch.testing.assert_close(nll, ref[0], rtol=1e-12, atol=1e-12)
    # Entries off the reachable band are -inf on both; the rest agree to rounding.
    assert torch.equal(log_alpha.isinf(), ref[1].isinf())
    finite = ~log_alpha.isinf()
    torch.testing.assert_close(log_alpha[finite], ref[1][finite], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_normalizer, ref[2], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("kernel_path", PATHS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32_on_every_path(kernel_path, dtype):
    x, targets, input_lengths, target_lengths = random_problem(40, 3, 20, 10, seed=5, scale=1.0)
    x_half = x.to(dtype)
    ours_losses, ours_grad = losses_and_grads(ctc_ext.ctc_loss, x_half, targets, input_lengths, target_lengths)
    ref_losses, ref_grad = losses_and_grads(builtin, x_half.double(), targets, input_lengths, target_lengths)
    assert ours_losses.dtype == torch.float32 and ours_grad.dtype == dtype
    torch.testing.assert_close(ours_losses.double(), ref_losses, rtol=1e-5, atol=1e-4)
    tolerance = 1e-2 if dtype == torch.bfloat16 else 2e-3  # one rounding to the input dtype
    torch.testing.assert_close(ours_grad.double(), ref_grad, rtol=0, atol=tolerance)


def test_a_single_sample_uses_all_threads_and_matches():
    """N = 1 < threads takes the frame schedule by default (no forced schedule): same result."""
    x, targets, input_lengths, target_lengths = random_problem(300, 1, 500, 40, seed=11)
    ours_losses, ours_grad = losses_and_grads(ctc_ext.ctc_loss, x, targets, input_lengths, target_lengths)
    ref_losses, ref_grad = losses_and_grads(builtin, x, targets, input_lengths, target_lengths)
    torch.testing.assert_close(ours_losses, ref_losses, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours_grad, ref_grad, rtol=1e-9, atol=1e-9)


def test_extreme_logits_stay_finite_and_match(monkeypatch):
    """Very peaky frames (log-probabilities far below float32's exp range) on the default path."""
    x, targets, input_lengths, target_lengths = random_problem(60, 4, 12, 15, seed=13, scale=60.0)
    ours_losses, ours_grad = losses_and_grads(ctc_ext.ctc_loss, x, targets, input_lengths, target_lengths)
    ref_losses, ref_grad = losses_and_grads(builtin, x, targets, input_lengths, target_lengths)
    torch.testing.assert_close(ours_losses, ref_losses, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours_grad, ref_grad, rtol=1e-9, atol=1e-9)
