"""The CUDA kernels on a real GPU: parity with the CPU op and the built-in, gradcheck,
determinism, no host synchronisation, long targets.  Skipped without CUDA.
(Without a GPU, tests/cuda_emulation runs the same kernel source on the CPU.)
"""

import warnings

import pytest
import torch
import torch.nn.functional as F

import ctc_ext

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def sample_inputs(T, N, C, S, device, dtype=torch.float64, seed=0, blank=0, min_length=None):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, N, C, generator=generator, dtype=torch.float64).to(dtype)
    labels = torch.tensor([c for c in range(C) if c != blank])
    targets = labels[torch.randint(0, C - 1, (N, S), generator=generator)]
    low = min_length if min_length is not None else max(1, T // 2)
    input_lengths = torch.randint(low, T + 1, (N,), generator=generator)
    input_lengths[0] = T
    target_lengths = torch.randint(0, S + 1, (N,), generator=generator)
    target_lengths[0] = S
    return [t.to(device) for t in (logits, targets, input_lengths, target_lengths)]


def loss_and_grad(fn, logits, *args, **kwargs):
    x = logits.detach().clone().requires_grad_()
    loss = fn(x, *args, **kwargs)
    loss.backward()
    return loss.detach(), x.grad


def builtin(x, *args, **kwargs):
    return F.ctc_loss(x.log_softmax(-1), *args, **kwargs)


@pytest.mark.parametrize("T,N,C,S", [(12, 3, 6, 4), (50, 8, 30, 20), (100, 2, 1000, 30)])
@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("blank", [0, 3])
def test_matches_builtin_and_cpu_in_float64(T, N, C, S, reduction, blank):
    inputs = sample_inputs(T, N, C, S, "cuda", blank=blank, seed=T + N)
    kwargs = dict(blank=blank, reduction=reduction, zero_infinity=True)
    loss, grad = loss_and_grad(lambda *a, **k: ctc_ext.ctc_loss(*a, **k).sum(), *inputs, **kwargs)
    want_loss, want_grad = loss_and_grad(lambda *a, **k: builtin(*a, **k).sum(), *inputs, **kwargs)
    cpu_loss, cpu_grad = loss_and_grad(
        lambda *a, **k: ctc_ext.ctc_loss(*a, **k).sum(), *[t.cpu() for t in inputs], **kwargs
    )
    torch.testing.assert_close(loss, want_loss, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(grad, want_grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(loss.cpu(), cpu_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad.cpu(), cpu_grad, rtol=1e-12, atol=1e-12)


def test_ops_match_cpu_ops_exactly_in_layout():
    logits, targets, input_lengths, target_lengths = sample_inputs(20, 4, 7, 6, "cuda", seed=1)
    args = (targets, input_lengths, target_lengths, 0, True)
    cuda_out = ctc_ext.ops.ctc_loss_forward(logits, *args)
    cpu_out = ctc_ext.ops.ctc_loss_forward(logits.cpu(), *[a.cpu() if torch.is_tensor(a) else a for a in args])
    for got, want in zip(cuda_out, cpu_out):
        torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_reduced_precision_matches_cpu(dtype, tol):
    inputs = sample_inputs(40, 6, 20, 10, "cuda", dtype=dtype, seed=2)
    fn = lambda *a: ctc_ext.ctc_loss(*a, reduction="sum")  # noqa: E731
    loss, grad = loss_and_grad(fn, *inputs)
    cpu_loss, cpu_grad = loss_and_grad(fn, *[t.cpu() for t in inputs])
    assert grad.dtype == dtype
    torch.testing.assert_close(loss.cpu(), cpu_loss, rtol=tol, atol=tol)
    torch.testing.assert_close(grad.cpu().float(), cpu_grad.float(), rtol=tol, atol=tol)


def test_gradcheck():
    logits, targets, input_lengths, target_lengths = sample_inputs(8, 3, 5, 3, "cuda", seed=3)
    logits.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: ctc_ext.ctc_loss(x, targets, input_lengths, target_lengths, reduction="none", zero_infinity=True),
        (logits,),
    )


def test_bitwise_deterministic_under_deterministic_algorithms():
    inputs = sample_inputs(200, 16, 50, 40, "cuda", dtype=torch.float32, seed=4)
    torch.use_deterministic_algorithms(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            runs = [loss_and_grad(lambda *a: ctc_ext.ctc_loss(*a), *inputs) for _ in range(5)]
    finally:
        torch.use_deterministic_algorithms(False)
    for loss, grad in runs[1:]:
        assert torch.equal(loss, runs[0][0]) and torch.equal(grad, runs[0][1])


def test_no_host_synchronisation():
    inputs = sample_inputs(60, 8, 20, 15, "cuda", dtype=torch.float32, seed=5)
    x = inputs[0].detach().clone().requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for reduction in ("none", "sum", "mean"):
            loss = ctc_ext.ctc_loss(x, *inputs[1:], reduction=reduction, zero_infinity=True)
            loss.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(x.grad).all()


def test_long_targets_beyond_any_block():
    # 2 S + 1 = 6001 states: threads loop over the lattice row
    inputs = sample_inputs(3200, 2, 40, 3000, "cuda", dtype=torch.float64, seed=6, min_length=3200)
    loss, grad = loss_and_grad(lambda *a: ctc_ext.ctc_loss(*a, reduction="sum"), *inputs)
    cpu_loss, cpu_grad = loss_and_grad(lambda *a: ctc_ext.ctc_loss(*a, reduction="sum"), *[t.cpu() for t in inputs])
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss.cpu(), cpu_loss, rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(grad.cpu(), cpu_grad, rtol=1e-9, atol=1e-9)


def test_invalid_labels_on_device_give_nan_and_on_host_raise():
    logits, targets, input_lengths, target_lengths = sample_inputs(10, 3, 5, 3, "cuda", seed=7)
    targets[1, 0] = 5
    target_lengths[1] = 3
    loss = ctc_ext.ctc_loss(logits, targets, input_lengths, target_lengths, reduction="none")
    assert torch.isfinite(loss[0]) and loss[1].isnan()
    with pytest.raises(RuntimeError, match="targets must hold labels"):
        ctc_ext.ops.ctc_loss_forward(logits, targets.cpu(), input_lengths.cpu(), target_lengths.cpu(), 0, False)


def test_empty_batch():
    logits = torch.randn(5, 0, 4, device="cuda", requires_grad=True)
    targets = torch.zeros(0, 2, dtype=torch.long, device="cuda")
    lengths = torch.zeros(0, dtype=torch.long, device="cuda")
    loss = ctc_ext.ctc_loss(logits, targets, lengths, lengths, reduction="sum")
    loss.backward()
    assert loss.item() == 0 and logits.grad.shape == logits.shape


def test_runs_on_the_tensors_device_and_current_stream():
    inputs = sample_inputs(30, 4, 10, 8, "cuda", dtype=torch.float32, seed=8)
    reference = ctc_ext.ctc_loss(*inputs, reduction="none")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        on_stream = ctc_ext.ctc_loss(*inputs, reduction="none")
    stream.synchronize()
    assert torch.equal(on_stream, reference)


def test_lengths_given_on_the_host_are_checked_there():
    logits, targets, input_lengths, target_lengths = sample_inputs(10, 2, 5, 3, "cuda", seed=9)
    with pytest.raises(RuntimeError, match="input_lengths must be at most T"):
        ctc_ext.ctc_loss(logits, targets.cpu(), [11, 10], target_lengths.cpu())
    loss = ctc_ext.ctc_loss(logits, targets.cpu(), input_lengths.tolist(), target_lengths.tolist(), reduction="mean")
    torch.testing.assert_close(loss, ctc_ext.ctc_loss(logits, targets, input_lengths, target_lengths))


# ---------------------------------------------------------------------------------------------
# Decoders: greedy_decode and forced_align have CUDA kernels (beam_search is CPU-only).


def test_decoders_have_cuda_kernels_and_beam_search_does_not():
    def has(op):
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"ctc_ext::{op}", "CUDA")

    assert has("greedy_decode") and has("forced_align") and not has("beam_search")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("blank", [0, 5])
def test_greedy_decode_on_gpu_matches_cpu(dtype, blank):
    # Quantised logits: many tied maxima, so the first-max rule is exercised too (comparisons are
    # exact, so the GPU must match the CPU bit for bit).
    generator = torch.Generator().manual_seed(3)
    logits = torch.randint(0, 4, (60, 6, 9), generator=generator).to(dtype)
    lengths = torch.tensor([60, 59, 31, 1, 0, 45])
    want = ctc_ext.ops.greedy_decode(logits, lengths, blank)
    got = ctc_ext.ops.greedy_decode(logits.cuda(), lengths, blank)
    assert got[0].is_cuda and got[1].is_cuda
    assert torch.equal(got[0].cpu(), want[0]) and torch.equal(got[1].cpu(), want[1])
    got_device_lengths = ctc_ext.ops.greedy_decode(logits.cuda(), lengths.cuda(), blank)
    assert torch.equal(got_device_lengths[0].cpu(), want[0])
    hypotheses = ctc_ext.greedy_decode(logits.cuda(), lengths, blank)
    assert all(h.is_cuda for h in hypotheses)
    assert [h.tolist() for h in hypotheses] == [h.tolist() for h in ctc_ext.greedy_decode(logits, lengths, blank)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("padded", [True, False])
def test_forced_align_on_gpu_matches_cpu(dtype, padded):
    logits, targets, input_lengths, target_lengths = sample_inputs(80, 6, 12, 25, "cpu", dtype=dtype, seed=4)
    if not padded:
        targets = torch.cat([targets[n, : target_lengths[n]] for n in range(targets.shape[0])])
    want = ctc_ext.ops.forced_align(logits, targets, input_lengths, target_lengths, 0)
    for device_targets in (targets, targets.cuda()):
        got = ctc_ext.ops.forced_align(logits.cuda(), device_targets, input_lengths, target_lengths, 0)
        # The GPU logsumexp may differ from the CPU's in the last bits; random scores have no
        # near ties, so the paths agree exactly and the scores to rounding.
        assert torch.equal(got[0].cpu(), want[0])
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(got[1].cpu(), want[1], rtol=tol, atol=tol)
        torch.testing.assert_close(got[2].cpu(), want[2], rtol=tol, atol=tol)
    alignment, frame_log_probs = ctc_ext.forced_align(logits.cuda(), targets, input_lengths, target_lengths)
    assert alignment.is_cuda and torch.equal(alignment.cpu(), want[0])


def test_forced_align_on_gpu_long_targets_and_impossible_samples():
    generator = torch.Generator().manual_seed(5)
    T, N, C, S = 700, 3, 40, 600  # 2 S + 1 states: several times the threads of a block
    logits = torch.randn(T, N, C, generator=generator, dtype=torch.float64)
    targets = torch.randint(1, C, (N, S), generator=generator)
    input_lengths, target_lengths = torch.tensor([700, 650, 100]), torch.tensor([600, 500, 200])
    want = ctc_ext.ops.forced_align(logits, targets, input_lengths, target_lengths, 0)
    got = ctc_ext.ops.forced_align(logits.cuda(), targets, input_lengths, target_lengths, 0)
    assert torch.equal(got[0].cpu(), want[0])
    torch.testing.assert_close(got[2].cpu(), want[2], rtol=1e-12, atol=1e-12)
    assert got[2][2].item() == float("-inf")
    with pytest.raises(ValueError, match="sample 2"):
        ctc_ext.forced_align(logits.cuda(), targets, input_lengths, target_lengths)


def test_forced_align_invalid_labels_on_device_raise_value_error():
    logits = torch.randn(10, 2, 5, device="cuda")
    targets = torch.tensor([[1, 2], [1, 9]], device="cuda")  # 9 >= C, checked on the device
    with pytest.raises(ValueError, match="sample 1"):
        ctc_ext.forced_align(logits, targets, [10, 10], [2, 2])
    with pytest.raises(RuntimeError, match="targets must hold labels"):
        ctc_ext.forced_align(logits, targets.cpu(), [10, 10], [2, 2])  # checked on the host


def test_decoders_are_deterministic_and_handle_empty_batches():
    logits = torch.randint(0, 3, (40, 5, 7), generator=torch.Generator().manual_seed(6)).double().cuda()
    lengths = torch.tensor([40, 30, 20, 10, 0])
    targets = torch.randint(1, 7, (5, 8), generator=torch.Generator().manual_seed(7))
    target_lengths = torch.tensor([8, 6, 4, 2, 0])
    for op, args in (
        (ctc_ext.ops.greedy_decode, (logits, lengths, 0)),
        (ctc_ext.ops.forced_align, (logits, targets, lengths, target_lengths, 0)),
    ):
        first, again = op(*args), op(*args)
        assert all(torch.equal(a, b) for a, b in zip(first, again))
    empty = torch.randn(5, 0, 4, device="cuda")
    assert ctc_ext.ops.greedy_decode(empty, torch.zeros(0, dtype=torch.long), 0)[0].shape == (0, 5)
    no_lengths = torch.zeros(0, dtype=torch.long)
    assert ctc_ext.ops.forced_align(empty, torch.zeros(0, 2, dtype=torch.long), no_lengths, no_lengths, 0)[2].shape == (
        0,
    )
