"""The CUDA kernels and CUDA host code, executed on the CPU through the emulation header.

Every test compares the emulated CUDA ops with the CPU op (ctc_ext.ops, float64 to 1e-9) and,
where the semantics coincide, with torch.nn.functional.ctc_loss on log_softmax of the logits.
Run alone with `pytest -m cuda_emulation`.
"""

import os

import pytest
import torch
import torch.nn.functional as F
from ctc_cases import make_batch, unit_in_last_place

import ctc_ext

pytestmark = pytest.mark.cuda_emulation

SMALL_GPU = 2  # multiprocessor count given to the launch configuration: grid-stride loops run


def make_problem(
    T,
    N,
    C,
    lengths,
    target_lengths,
    blank=0,
    dtype=torch.float64,
    padded=True,
    seed=0,
    index_dtype=torch.int64,
    repeats=False,
):
    """The spec suite's random problem (tests/ctc_cases.make_batch, what the spec tests run on
    every device), as tensors: padding beyond each target length is out-of-range junk."""
    S = max(max(target_lengths), 1)
    batch = make_batch(
        T, N, C, S, blank=blank, dtype=dtype, seed=seed, input_lengths=lengths, target_lengths=target_lengths
    )
    targets = batch.padded_targets.to(index_dtype)
    if repeats:
        targets[:, 1::2] = targets[:, 0::2][:, : targets[:, 1::2].shape[1]]  # adjacent equal labels
    input_lengths = torch.tensor(lengths, dtype=torch.int64)
    target_lengths = torch.tensor(target_lengths, dtype=torch.int64)
    if not padded:
        targets = torch.cat([targets[n, : target_lengths[n]] for n in range(N)])
    logits = batch.logits
    return logits, targets, input_lengths, target_lengths


def run_both(
    emulated,
    logits,
    targets,
    input_lengths,
    target_lengths,
    blank=0,
    zero_infinity=False,
    grad_nll=None,
    multiprocessor_count=SMALL_GPU,
):
    """(nll, log_alpha, log_normalizer, grad) from the emulated CUDA ops and from the CPU op."""
    N = logits.shape[1]
    results = []
    for forward, backward, extra in (
        (emulated.forward, emulated.backward, (multiprocessor_count,)),
        (ctc_ext.ops.ctc_loss_forward, ctc_ext.ops.ctc_loss_backward, ()),
    ):
        nll, log_alpha, log_normalizer = forward(logits, targets, input_lengths, target_lengths, blank, True, *extra)
        scale = grad_nll if grad_nll is not None else torch.linspace(0.5, 1.5, N, dtype=nll.dtype)
        grad = backward(
            scale,
            logits,
            targets,
            input_lengths,
            target_lengths,
            nll,
            log_alpha,
            log_normalizer,
            blank,
            zero_infinity,
            *extra,
        )
        results.append((nll, log_alpha, log_normalizer, grad))
    return results


def assert_close_to_cpu(emulated_result, cpu_result, tol=1e-9):
    for name, got, want in zip(("nll", "log_alpha", "log_normalizer", "grad"), emulated_result, cpu_result):
        assert got.dtype == want.dtype and got.shape == want.shape, name
        torch.testing.assert_close(got, want, rtol=tol, atol=tol, equal_nan=True, msg=lambda m: f"{name}: {m}")


def builtin_loss_and_grad(logits, targets, input_lengths, target_lengths, blank, zero_infinity, grad_nll):
    x = logits.detach().clone().requires_grad_()
    loss = F.ctc_loss(
        x.log_softmax(2),
        targets,
        input_lengths,
        target_lengths,
        blank=blank,
        reduction="none",
        zero_infinity=zero_infinity,
    )
    (loss * grad_nll).sum().backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize(
    "T,N,C,lengths,target_lengths",
    [
        (12, 3, 6, [12, 10, 7], [4, 3, 1]),
        (30, 2, 20, [30, 25], [10, 12]),
        (8, 5, 3, [8, 8, 6, 4, 2], [3, 2, 2, 1, 1]),
        (40, 1, 50, [40], [15]),
    ],
)
def test_float64_matches_cpu_op_and_builtin(emulated, T, N, C, lengths, target_lengths):
    problem = make_problem(T, N, C, lengths, target_lengths)
    emulated_result, cpu_result = run_both(emulated, *problem)
    assert_close_to_cpu(emulated_result, cpu_result)
    grad_nll = torch.linspace(0.5, 1.5, N, dtype=torch.float64)
    loss, grad = builtin_loss_and_grad(*problem, 0, False, grad_nll)
    torch.testing.assert_close(emulated_result[0], loss, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(emulated_result[3], grad, rtol=1e-9, atol=1e-9)


def test_lattice_wider_than_a_block(emulated):
    # 2 * 150 + 1 = 301 states > 256 threads: threads loop over the lattice row
    problem = make_problem(170, 2, 12, [170, 160], [150, 140], seed=1)
    assert emulated.launch_shapes(170, 2, 12, problem[1].numel(), 150, 8, SMALL_GPU)[4] == 256
    emulated_result, cpu_result = run_both(emulated, *problem)
    assert torch.isfinite(emulated_result[0]).all()
    assert_close_to_cpu(emulated_result, cpu_result)
    loss, grad = builtin_loss_and_grad(*problem, 0, False, torch.linspace(0.5, 1.5, 2, dtype=torch.float64))
    torch.testing.assert_close(emulated_result[3], grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("blank", [3, 6])
def test_blank_not_zero(emulated, blank):
    problem = make_problem(15, 3, 7, [15, 12, 9], [5, 4, 2], blank=blank, seed=2)
    emulated_result, cpu_result = run_both(emulated, *problem, blank=blank)
    assert_close_to_cpu(emulated_result, cpu_result)
    loss, grad = builtin_loss_and_grad(*problem, blank, False, torch.linspace(0.5, 1.5, 3, dtype=torch.float64))
    torch.testing.assert_close(emulated_result[0], loss, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(emulated_result[3], grad, rtol=1e-9, atol=1e-9)


def test_empty_targets_and_empty_inputs(emulated):
    problem = make_problem(6, 4, 5, [6, 3, 0, 0], [0, 0, 0, 2], seed=3)
    emulated_result, cpu_result = run_both(emulated, *problem)
    assert_close_to_cpu(emulated_result, cpu_result)
    logits = problem[0]
    expected = -logits[:6, 0].log_softmax(-1)[:, 0].sum()
    torch.testing.assert_close(emulated_result[0][0], expected, rtol=1e-12, atol=1e-12)
    assert emulated_result[0][2] == 0 and emulated_result[0][3] == float("inf")


def test_impossible_samples_give_inf_loss_and_nan_gradient(emulated):
    # sample 1: 3 labels in 2 frames; sample 2: "a a" needs 3 frames, has 2
    logits, targets, input_lengths, target_lengths = make_problem(5, 3, 4, [5, 2, 2], [2, 3, 2], seed=4)
    targets[2, :2] = 1
    emulated_result, cpu_result = run_both(emulated, logits, targets, input_lengths, target_lengths)
    assert_close_to_cpu(emulated_result, cpu_result)
    nll, grad = emulated_result[0], emulated_result[3]
    assert torch.isfinite(nll[0]) and nll[1] == float("inf") and nll[2] == float("inf")
    assert grad[:2, 1:].isnan().all() and (grad[2:, 1:] == 0).all() and torch.isfinite(grad[:, 0]).all()


def test_zero_infinity(emulated):
    logits, targets, input_lengths, target_lengths = make_problem(6, 3, 5, [6, 2, 4], [3, 3, 1], seed=5)
    emulated_result, cpu_result = run_both(emulated, logits, targets, input_lengths, target_lengths, zero_infinity=True)
    assert_close_to_cpu(emulated_result, cpu_result)
    assert (emulated_result[3][:, 1] == 0).all()
    grad_nll = torch.linspace(0.5, 1.5, 3, dtype=torch.float64)
    _, grad = builtin_loss_and_grad(logits, targets, input_lengths, target_lengths, 0, True, grad_nll)
    torch.testing.assert_close(emulated_result[3], grad, rtol=1e-9, atol=1e-9)


def test_ragged_lengths_leave_padding_frames_zero(emulated):
    problem = make_problem(25, 4, 9, [25, 13, 7, 1], [8, 6, 3, 1], seed=6)
    emulated_result, cpu_result = run_both(emulated, *problem)
    assert_close_to_cpu(emulated_result, cpu_result)
    grad, log_normalizer = emulated_result[3], emulated_result[2]
    for n, length in enumerate([25, 13, 7, 1]):
        assert (grad[length:, n] == 0).all()
        assert (log_normalizer[n, length:] == 0).all()
        # the Eq. 16 gradient of the logits sums to zero over classes (times grad_nll)
        torch.testing.assert_close(
            grad[:length, n].sum(-1), torch.zeros(length, dtype=torch.float64), atol=1e-12, rtol=0
        )


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_concatenated_targets_and_repeated_labels(emulated, index_dtype):
    problem = make_problem(
        30, 3, 4, [30, 22, 28], [9, 7, 10], padded=False, seed=7, index_dtype=index_dtype, repeats=True
    )
    emulated_result, cpu_result = run_both(emulated, *problem)
    assert torch.isfinite(emulated_result[0]).all()
    assert_close_to_cpu(emulated_result, cpu_result)
    _, grad = builtin_loss_and_grad(*problem, 0, False, torch.linspace(0.5, 1.5, 3, dtype=torch.float64))
    torch.testing.assert_close(emulated_result[3], grad, rtol=1e-9, atol=1e-9)


def test_one_label_repeated_through_the_band(emulated):
    # every label equal: one class owns a long chain of states in every row
    logits, targets, input_lengths, target_lengths = make_problem(40, 2, 3, [40, 33], [12, 10], seed=8)
    targets.fill_(2)
    emulated_result, cpu_result = run_both(emulated, logits, targets, input_lengths, target_lengths)
    assert torch.isfinite(emulated_result[0]).all()
    assert_close_to_cpu(emulated_result, cpu_result)


def test_bitwise_deterministic_across_runs_and_grid_sizes(emulated):
    problem = make_problem(40, 3, 30, [40, 31, 20], [12, 9, 5], seed=9, dtype=torch.float32)
    reference = run_both(emulated, *problem)[0]
    for multiprocessor_count in (SMALL_GPU, SMALL_GPU, 1, 7):
        again = run_both(emulated, *problem, multiprocessor_count=multiprocessor_count)[0]
        for got, want in zip(again, reference):
            assert torch.equal(got.view(torch.int32), want.view(torch.int32))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_reduced_precision_matches_cpu_op(emulated, dtype, tol):
    problem = make_problem(20, 3, 11, [20, 16, 9], [6, 5, 3], dtype=dtype, seed=10)
    emulated_result, cpu_result = run_both(emulated, *problem)
    assert emulated_result[3].dtype == dtype and emulated_result[0].dtype == torch.float32
    assert_close_to_cpu(emulated_result, cpu_result, tol=tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_within_issue_bounds_of_float64(emulated, dtype):
    """Loss within 1e-4 relative of float64 on the same rounded inputs; gradient within one
    rounding of the dtype (plus float32 arithmetic), as on the CPU (tests/test_reduced_precision.py)."""
    logits, targets, input_lengths, target_lengths = make_problem(
        30, 4, 40, [30, 26, 21, 30], [8, 6, 5, 7], dtype=dtype, seed=14
    )
    grad_nll = torch.ones(4)
    nll, log_alpha, log_normalizer = emulated.forward(
        logits, targets, input_lengths, target_lengths, 0, True, SMALL_GPU
    )
    grad = emulated.backward(
        grad_nll, logits, targets, input_lengths, target_lengths, nll, log_alpha, log_normalizer, 0, False, SMALL_GPU
    )
    exact_loss, exact_grad = builtin_loss_and_grad(
        logits.double(), targets, input_lengths, target_lengths, 0, False, grad_nll.double()
    )
    assert nll.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(nll.double(), exact_loss, rtol=1e-4, atol=0)
    error = (grad.double() - exact_grad).abs()
    allowed = unit_in_last_place(exact_grad, dtype) + 64 * torch.finfo(torch.float32).eps
    assert (error <= allowed).all(), f"worst excess {(error - allowed).max().item():.3g}"


def test_forward_without_log_alpha(emulated):
    problem = make_problem(18, 3, 7, [18, 11, 5], [7, 4, 2], seed=11)
    nll, log_alpha, log_normalizer = emulated.forward(*problem, 0, False, SMALL_GPU)
    kept_nll, _, kept_normalizer = emulated.forward(*problem, 0, True, SMALL_GPU)
    assert log_alpha.numel() == 0
    assert torch.equal(nll, kept_nll) and torch.equal(log_normalizer, kept_normalizer)


def test_strided_logits(emulated):
    logits, targets, input_lengths, target_lengths = make_problem(10, 3, 6, [10, 8, 5], [4, 3, 2], seed=12)
    batch_first = logits.transpose(0, 1).contiguous().transpose(0, 1)  # strides (C, T*C, 1)
    class_strided = logits.transpose(0, 2).contiguous().transpose(0, 2)  # class stride != 1
    expected = run_both(emulated, logits, targets, input_lengths, target_lengths)[1]
    for view in (batch_first, class_strided):
        got = run_both(emulated, view, targets, input_lengths, target_lengths)[0]
        assert_close_to_cpu(got, expected)
        assert got[3].stride() == torch.empty_like(view).stride()


def test_invalid_values_give_nan_on_device_without_reading_out_of_range(emulated):
    logits, targets, input_lengths, target_lengths = make_problem(8, 6, 5, [8] * 6, [3] * 6, seed=13)
    targets[1, 0] = 5  # == C
    targets[2, 2] = -1  # negative
    targets[3, 1] = 0  # the blank
    input_lengths[4] = 9  # > T
    target_lengths[5] = 4  # > S
    nll, log_alpha, log_normalizer = emulated.forward(
        logits, targets, input_lengths, target_lengths, 0, True, SMALL_GPU
    )
    assert torch.isfinite(nll[0]) and nll[1:].isnan().all()
    grad = emulated.backward(
        torch.ones(6, dtype=torch.float64),
        logits,
        targets,
        input_lengths,
        target_lengths,
        nll,
        log_alpha,
        log_normalizer,
        0,
        True,
        SMALL_GPU,
    )
    assert torch.isfinite(grad[:, 0]).all() and grad[:, 1:].isnan().all()
    # the valid sample is unaffected
    want = run_both(emulated, logits[:, :1], targets[:1], input_lengths[:1], target_lengths[:1])[1]
    torch.testing.assert_close(nll[:1], want[0], rtol=1e-9, atol=1e-9)


def test_negative_concatenated_length_invalidates_later_samples(emulated):
    logits, targets, input_lengths, target_lengths = make_problem(8, 3, 5, [8] * 3, [2, 2, 2], padded=False, seed=14)
    target_lengths[1] = -1
    nll, _, _ = emulated.forward(logits, targets, input_lengths, target_lengths, 0, True, SMALL_GPU)
    assert torch.isfinite(nll[0]) and nll[1:].isnan().all()


def test_empty_batch_and_zero_frames(emulated):
    for T, N in ((5, 0), (0, 3)):
        logits = torch.randn(T, N, 4, dtype=torch.float64)
        targets = torch.ones(N, 2, dtype=torch.int64)
        input_lengths = torch.zeros(N, dtype=torch.int64)
        target_lengths = torch.tensor([0, 1, 2][:N], dtype=torch.int64)
        emulated_result, cpu_result = run_both(emulated, logits, targets, input_lengths, target_lengths)
        assert_close_to_cpu(emulated_result, cpu_result)


def test_launch_configuration_fills_a_gpu_for_small_batches(emulated):
    # T = 500, N = 1, C = 1024 on a 132-SM GPU: the gradient rows use many blocks, not one per sample
    normalizer, lattice, gradient = (
        emulated.launch_shapes(500, 1, 1024, 100, 100, 4, 132)[i : i + 3] for i in (0, 3, 6)
    )
    assert normalizer[0] == 500 and gradient[0] == 500
    assert lattice[0] == 1 and lattice[1] == 224  # 2 * 100 + 1 states, whole warps
    assert emulated.launch_shapes(500, 1, 1024, 3000, 3000, 4, 132)[4] == 256  # then threads loop
    # the normaliser reduces one row of 128 threads per block: shared memory for 32 warp results,
    # float32 or the int64 sample index of the emission gather's check of concatenated lengths
    assert normalizer[1] == 128 and normalizer[2] == 32 * 8 and gradient[2] == 0
    big = emulated.launch_shapes(1000, 64, 30000, 64 * 3000, 3000, 8, 132)
    assert big[0] == 32 * 132 and big[6] == 16 * 132  # grid-stride beyond this many blocks
    assert max(big[2], big[5], big[8]) <= 48 * 1024


# Issue 12, items 4, 6 and 12 on the CUDA kernels: the checks of tests/test_numerics.py and
# tests/test_memory_layout.py, against the CPU op and the built-in.


@pytest.mark.parametrize("kind", ["+inf", "nan", "+inf and nan", "all -inf"])
@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_non_finite_logits_give_nan_loss_and_gradient(emulated, kind, zero_infinity, dtype):
    logits, targets, input_lengths, target_lengths = make_problem(9, 3, 6, [9, 7, 9], [3, 2, 3], seed=21)
    poisoned = logits.clone()
    if kind in ("+inf", "+inf and nan"):
        poisoned[2, 0, 3] = float("inf")
    if kind in ("nan", "+inf and nan"):
        poisoned[2, 0, 1] = float("nan")
    if kind == "all -inf":
        poisoned[2, 0, :] = -float("inf")
    poisoned[8, 1, 2] = float("nan")  # beyond sample 1's input length: ignored
    poisoned = poisoned.to(dtype)
    emulated_result, cpu_result = run_both(
        emulated, poisoned, targets, input_lengths, target_lengths, zero_infinity=zero_infinity
    )
    nll, grad = emulated_result[0], emulated_result[3]
    assert nll[0].isnan() and grad[:, 0].isnan().all()
    assert nll[1:].isfinite().all() and grad[:, 1:].isfinite().all() and grad[7:, 1].eq(0).all()
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    for index in (0, 3):
        torch.testing.assert_close(emulated_result[index], cpu_result[index], rtol=tol, atol=tol, equal_nan=True)


@pytest.mark.parametrize("dtype,scale", [(torch.float32, 1e10), (torch.float32, 1e30), (torch.float64, 1e19)])
def test_huge_finite_logits_give_the_saturated_gradient(emulated, dtype, scale):
    logits, targets, input_lengths, target_lengths = make_problem(30, 3, 9, [30, 25, 30], [5, 3, 7], seed=22)
    huge = (logits * scale).to(dtype)
    emulated_result, cpu_result = run_both(emulated, huge, targets, input_lengths, target_lengths)
    grad = emulated_result[3]
    assert grad.isfinite().all()
    torch.testing.assert_close(grad, cpu_result[3], rtol=0, atol=1e-6)
    # The saturated reference (tests/test_numerics.py): the built-in in float64 at scale 1e6.
    grad_nll = torch.linspace(0.5, 1.5, 3, dtype=torch.float64)
    _, reference = builtin_loss_and_grad(
        huge.double() / scale * 1e6, targets, input_lengths, target_lengths, 0, False, grad_nll
    )
    torch.testing.assert_close(grad.double(), reference, rtol=0, atol=1e-6)


def test_backward_recomputes_an_empty_log_alpha(emulated):
    logits, targets, input_lengths, target_lengths = make_problem(20, 3, 7, [20, 17, 2], [4, 0, 3], seed=23)
    nll, log_alpha, log_normalizer = emulated.forward(logits, targets, input_lengths, target_lengths, 0, True, 2)
    scale = torch.linspace(0.5, 1.5, 3, dtype=torch.float64)
    args = (scale, logits, targets, input_lengths, target_lengths, nll)
    kept = emulated.backward(*args, log_alpha, log_normalizer, 0, True, SMALL_GPU)
    recomputed = emulated.backward(*args, log_alpha[:0], log_normalizer, 0, True, SMALL_GPU)
    assert torch.equal(kept, recomputed)


def log_alpha_slots(T, starts, slots):
    """[begin, end) of every sample's slot in the flat log_alpha buffer (ctc_math.h layout)."""
    N = len(starts)
    offsets = [T * (2 * starts[n] + n) for n in range(N)] + [T * (2 * slots + N)]
    return [(offsets[n], offsets[n + 1]) for n in range(N)]


@pytest.mark.parametrize("padded", [True, False])
def test_invalid_sample_fills_its_log_alpha_slot_with_nan(emulated, padded):
    # every entry of the returned log_alpha is written: NaN in an invalid sample's slot, the
    # lattice (finite or -inf, never NaN) elsewhere
    T = 7
    logits, targets, input_lengths, target_lengths = make_problem(T, 4, 5, [7, 7, 6, 5], [3, 2, 3, 1], padded=padded)
    if padded:
        targets[1, 1] = 5  # label == C
    else:
        targets[4] = 0  # second label of sample 1 is the blank
    log_alpha = emulated.forward(logits, targets, input_lengths, target_lengths, 0, True, SMALL_GPU)[1]
    starts = [n * targets.shape[1] for n in range(4)] if padded else [0, 3, 5, 8]
    slots = log_alpha_slots(T, starts, targets.numel())
    for n, (begin, end) in enumerate(slots):
        if n == 1:
            assert log_alpha[begin:end].isnan().all()
        else:
            assert not log_alpha[begin:end].isnan().any()
    assert slots[-1][1] == log_alpha.numel()


def test_negative_concatenated_length_fills_the_rest_of_log_alpha_with_nan(emulated):
    T = 6
    logits, targets, input_lengths, target_lengths = make_problem(T, 4, 5, [6] * 4, [2, 2, 2, 2], padded=False)
    target_lengths[1] = -1  # label starts of samples 2, 3 become 2 + -1 = 1 and 3: overlapping sample 0's
    log_alpha = emulated.forward(logits, targets, input_lengths, target_lengths, 0, True, SMALL_GPU)[1]
    begin_of_sample_1 = T * (2 * 2 + 1)
    assert log_alpha[begin_of_sample_1:].isnan().all()
    valid = emulated.forward(logits[:, :1], targets[:2], input_lengths[:1], target_lengths[:1], 0, True, SMALL_GPU)[1]
    assert torch.equal(log_alpha[: valid.numel()], valid)  # sample 0 is left intact


@pytest.mark.parametrize("target_length", [1, 2, 17, 37])
def test_many_repeated_labels_in_long_targets(emulated, target_length):
    # three classes over long targets: long chains of equal labels, linked by the bitonic sort of
    # positions (lengths at and off powers of two)
    T = 2 * target_length + 10
    problem = make_problem(T, 2, 4, [T, T - 3], [target_length, max(target_length - 1, 0)], seed=target_length)
    emulated_result, cpu_result = run_both(emulated, *problem)
    assert torch.isfinite(emulated_result[0]).all()
    assert_close_to_cpu(emulated_result, cpu_result)


# Issue 14, small batches: log_normalizer_kernel gathers the emissions of every frame into the
# kept log_alpha rows (frame-parallel over all SMs), the alpha sweep reads one contiguous row per
# frame and both sweeps hold the next frame's emissions in registers (kHeldStates = 4 states per
# thread; bands wider than 4 * 256 states load the rest in the frame that uses them).

HELD_STATES_WIDTH = 4 * 256  # states whose emissions a 256-thread lattice block holds a frame ahead


def emissions_reference(logits, targets, input_lengths, target_lengths, log_normalizer, blank, starts):
    """{(n, t): row} of what the sweep computed in-loop before: x_t(l'_s) - log_normalizer_t in the
    accumulation dtype on the band, -inf off it, for every row t < T_n of the valid samples."""
    acc = log_normalizer.dtype
    flat = targets.reshape(-1)
    rows = {}
    for n in range(logits.shape[1]):
        L, T_n = int(target_lengths[n]), int(input_lengths[n])
        W = 2 * L + 1
        labels = flat[starts[n] : starts[n] + L]
        classes = torch.full((W,), blank, dtype=torch.int64)
        classes[1::2] = labels
        for t in range(T_n):
            first, last = max(W - 2 * (T_n - t), 0), min(2 * t + 1, W - 1)
            row = torch.full((W,), float("-inf"), dtype=acc)
            band = slice(first, last + 1)
            row[band] = logits[t, n, classes[band]].to(acc) - log_normalizer[n, t]
            rows[(n, t)] = row
    return rows


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_gathered_emissions_are_what_the_sweep_computed(emulated, dtype):
    # ragged T_n < T, a zero-length target, an impossible target (empty band: -inf rows), a band
    # wider than a block
    T, lengths, target_lengths = 160, [160, 120, 60, 3], [140, 30, 0, 5]
    logits, targets, input_lengths, target_lengths = make_problem(T, 4, 13, lengths, target_lengths, dtype=dtype)
    sentinel = 12345.0
    log_alpha, log_normalizer = emulated.gathered_emissions(
        logits, targets, input_lengths, target_lengths, 0, sentinel, SMALL_GPU
    )
    want_normalizer = emulated.forward(logits, targets, input_lengths, target_lengths, 0, False, SMALL_GPU)[2]
    assert torch.equal(log_normalizer, want_normalizer)
    starts = [n * targets.shape[1] for n in range(4)]
    expected = emissions_reference(logits, targets, input_lengths, target_lengths, log_normalizer, 0, starts)
    written = torch.zeros_like(log_alpha, dtype=torch.bool)
    for (n, t), row in expected.items():
        begin = T * (2 * starts[n] + n) + t * row.numel()
        got = log_alpha[begin : begin + row.numel()]
        assert torch.equal(got, row), (n, t)  # bitwise: -inf off the band, the same rounding on it
        written[begin : begin + row.numel()] = True
    assert (log_alpha[~written] == sentinel).all()  # nothing else: rows t >= T_n are the sweep's


def test_gather_skips_samples_outside_their_slot(emulated):
    # concatenated targets: a negative length makes every later label start meaningless, so no row
    # of those samples may be written (it could land in sample 0's slot); an input length beyond
    # T has no rows either.  An invalid label inside the slot is written (NaN where out of range)
    # and later NaN-filled by the forward kernel.
    T = 6
    logits, targets, input_lengths, target_lengths = make_problem(
        T, 5, 5, [6, 6, 6, 6, 6], [2, 2, 2, 2, 2], padded=False
    )
    input_lengths[0] = 7
    targets[3] = 9  # sample 1's second label: out of range
    target_lengths[2] = -1
    sentinel = 777.0
    log_alpha, _ = emulated.gathered_emissions(logits, targets, input_lengths, target_lengths, 0, sentinel, SMALL_GPU)
    slots = log_alpha_slots(T, [0, 2, 4, 3, 5], targets.numel())
    assert (log_alpha[slots[0][0] : slots[0][1]] == sentinel).all()  # T_0 > T
    sample_1 = log_alpha[slots[1][0] : slots[1][1]]
    assert sample_1.isnan().any() and (sample_1 != sentinel).all()
    alone = emulated.gathered_emissions(
        logits[:, :2], targets[:4], input_lengths[:2], target_lengths[:2], 0, sentinel, 1
    )
    assert torch.equal(log_alpha[: slots[1][1]].view(torch.uint8), alone[0].view(torch.uint8))  # untouched by 3, 4
    assert (log_alpha[slots[2][0] :] == sentinel).all()  # from the negative length on
    forwarded = emulated.forward(logits, targets, input_lengths, target_lengths, 0, True, SMALL_GPU)[1]
    assert forwarded.isnan().all()  # samples 0, 1 invalid; from sample 2 on NaN to the end


def run_emulated(emulated, problem, keep_log_alpha, multiprocessor_count=SMALL_GPU):
    nll, log_alpha, log_normalizer = emulated.forward(*problem, 0, keep_log_alpha, multiprocessor_count)
    if not keep_log_alpha:
        return nll, log_alpha, log_normalizer
    grad_nll = torch.linspace(0.5, 1.5, nll.numel(), dtype=nll.dtype)
    grad = emulated.backward(grad_nll, *problem, nll, log_alpha, log_normalizer, 0, False, multiprocessor_count)
    return nll, log_alpha, log_normalizer, grad


def assert_bitwise_equal(got, want):
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def assert_forward_bitwise_equal(emulated, problem, kept_result, multiprocessor_count):
    """The forward again on another grid, with and without log_alpha kept: the same bits."""
    kept = run_emulated(emulated, problem, True, multiprocessor_count)[:3]
    assert_bitwise_equal(kept, kept_result[:3])
    rolling = run_emulated(emulated, problem, False, multiprocessor_count)  # gathered in the sweep
    assert rolling[1].numel() == 0
    assert_bitwise_equal((rolling[0], rolling[2]), (kept_result[0], kept_result[2]))


@pytest.mark.parametrize("N", [1, 2, 3])
def test_small_batch_with_bands_wider_than_a_block(emulated, N):
    # W = 261 states over 256 threads: threads own one or two states; then a short sample and a
    # zero-length target, T_n < T (short, since the emulation's cost is frames times threads)
    T = 140
    lengths, target_lengths = [140, 40, 20][:N], [130, 10, 0][:N]
    problem = make_problem(T, N, 40, lengths, target_lengths, seed=40 + N)
    emulated_result, cpu_result = run_both(emulated, *problem)
    assert torch.isfinite(emulated_result[0]).all()
    assert_close_to_cpu(emulated_result, cpu_result)
    assert_forward_bitwise_equal(emulated, problem, emulated_result, multiprocessor_count=7)


@pytest.mark.skipif(
    os.environ.get("CTC_EXT_EMULATION_ASAN") == "1" or os.environ.get("CTC_EXT_EMULATION_TSAN") == "1",
    reason="530 frames of 256 emulated threads take minutes; the release run covers it",
)
def test_band_wider_than_the_held_states(emulated):
    # W = 1031 > 4 * 256: each thread holds four states a frame ahead and loads a fifth in-frame
    T, L = 530, 515
    problem = make_problem(T, 1, 200, [T], [L], seed=44)
    assert 2 * L + 1 > HELD_STATES_WIDTH
    emulated_result, cpu_result = run_both(emulated, *problem)
    assert torch.isfinite(emulated_result[0]).all()
    assert_close_to_cpu(emulated_result, cpu_result)
    rolling = run_emulated(emulated, problem, False)
    assert_bitwise_equal((rolling[0], rolling[2]), (emulated_result[0], emulated_result[2]))


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_small_batch_wide_bands_in_half_precision(emulated, dtype, tol):
    problem = make_problem(140, 2, 40, [140, 30], [130, 10], dtype=dtype, seed=50)
    emulated_result, cpu_result = run_both(emulated, *problem)
    assert emulated_result[3].dtype == dtype
    assert_close_to_cpu(emulated_result, cpu_result, tol=tol)
    assert_forward_bitwise_equal(emulated, problem, emulated_result, multiprocessor_count=1)


def test_small_batch_invalid_sample_beside_a_wide_band(emulated):
    logits, targets, input_lengths, target_lengths = make_problem(140, 2, 30, [140, 100], [130, 60], seed=51)
    targets[1, 50] = 30  # == C
    nll, log_alpha, _ = emulated.forward(logits, targets, input_lengths, target_lengths, 0, True, SMALL_GPU)
    (begin_0, end_0), (begin_1, end_1) = log_alpha_slots(140, [0, 130], targets.numel())
    assert log_alpha[begin_1:end_1].isnan().all() and nll[1].isnan()
    want = run_both(emulated, logits[:, :1], targets[:1], input_lengths[:1], target_lengths[:1])
    assert_close_to_cpu(want[0], want[1])
    assert torch.equal(nll[:1], want[0][0]) and torch.equal(log_alpha[begin_0:end_0], want[0][1])
