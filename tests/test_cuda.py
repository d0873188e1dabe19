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
    cpu_loss, cpu_grad = loss_and_grad(lambda *a, **k: ctc_ext.ctc_loss(*a, **k).sum(),
                                       *[t.cpu() for t in inputs], **kwargs)
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
        (logits,))


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
