"""Agreement with torch.nn.functional.ctc_loss (on log_softmax input), the reference we replace.

Losses are compared directly; gradients are compared with respect to the raw logits, through
the built-in's usual `log_softmax` pipeline.
"""

import itertools

import pytest
import torch
from ctc_cases import builtin_loss, make_batch

import ctc_ext

REDUCTIONS = ["none", "sum", "mean"]


def lengths_as(kind, values):
    if kind == "tensor":
        return torch.tensor(values)
    if kind == "int32_tensor":
        return torch.tensor(values, dtype=torch.int32)
    if kind == "list":
        return list(values)
    return tuple(values)


def loss_and_grad(function, logits, *args, **kwargs):
    logits = logits.detach().requires_grad_(True)
    loss = function(logits, *args, **kwargs)
    weights = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype, device=loss.device).reshape(loss.shape)
    (grad,) = torch.autograd.grad((loss * weights).sum(), logits)
    return loss.detach(), grad


def assert_close_f64(ours, reference, what):
    finite = torch.isfinite(reference)
    assert torch.equal(finite, torch.isfinite(ours)), f"{what}: inf/nan pattern differs"
    torch.testing.assert_close(ours[finite], reference[finite], rtol=1e-9, atol=1e-9, msg=what)


@pytest.mark.parametrize("blank_position", ["first", "middle", "last"])
@pytest.mark.parametrize("target_format", ["padded", "concatenated", "concatenated_int32"])
@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_float64_matches_builtin(reduction, zero_infinity, target_format, blank_position, device):
    C = 7
    blank = {"first": 0, "middle": C // 2, "last": C - 1}[blank_position]
    # Sample 2 is impossible (8 labels, 5 frames); sample 3 has an empty target; sample 4 has
    # adjacent repeats, which need an extra frame.
    batch = make_batch(
        T=16,
        N=6,
        C=C,
        S=8,
        blank=blank,
        seed=sum(map(ord, f"{reduction}{target_format}{blank}")),
        input_lengths=[16, 12, 5, 9, 14, 16],
        target_lengths=[8, 3, 8, 0, 6, 5],
        repeat_labels=True,
        device=device,
    )
    targets = batch.padded_targets if target_format == "padded" else batch.concatenated_targets
    if target_format == "concatenated_int32":
        targets = targets.int()
    for length_kind in ["tensor", "int32_tensor", "list", "tuple"]:
        input_lengths = lengths_as(length_kind, batch.input_lengths)
        target_lengths = lengths_as(length_kind, batch.target_lengths)
        kwargs = dict(blank=blank, reduction=reduction, zero_infinity=zero_infinity)
        ours, our_grad = loss_and_grad(ctc_ext.ctc_loss, batch.logits, targets, input_lengths, target_lengths, **kwargs)
        theirs, their_grad = loss_and_grad(builtin_loss, batch.logits, targets, input_lengths, target_lengths, **kwargs)
        assert ours.dtype == torch.float64
        assert_close_f64(ours, theirs, f"loss ({length_kind} lengths)")
        assert_close_f64(our_grad, their_grad, f"gradient ({length_kind} lengths)")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("seed", range(3))
def test_float32_error_within_small_multiple_of_builtin_error(reduction, seed, device):
    """float32 results are judged by their error against float64, relative to the built-in's."""
    batch = make_batch(T=60, N=8, C=20, S=15, seed=seed, dtype=torch.float64, device=device)
    args = (batch.padded_targets, batch.input_lengths, batch.target_lengths)
    exact_loss, exact_grad = loss_and_grad(builtin_loss, batch.logits, *args, reduction=reduction)
    logits32 = batch.logits.float()
    our_loss, our_grad = loss_and_grad(ctc_ext.ctc_loss, logits32, *args, reduction=reduction)
    their_loss, their_grad = loss_and_grad(builtin_loss, logits32, *args, reduction=reduction)
    assert our_loss.dtype == torch.float32 and our_grad.dtype == torch.float32
    eps = torch.finfo(torch.float32).eps
    loss_scale = exact_loss.abs().max().item()
    our_loss_error = (our_loss.double() - exact_loss).abs().max().item()
    their_loss_error = (their_loss.double() - exact_loss).abs().max().item()
    assert our_loss_error <= 4 * their_loss_error + 8 * eps * loss_scale
    our_grad_error = (our_grad.double() - exact_grad).abs().max().item()
    their_grad_error = (their_grad.double() - exact_grad).abs().max().item()
    assert our_grad_error <= 4 * their_grad_error + 8 * eps


@pytest.mark.parametrize("layout", ["batch_first", "strided_batch", "strided_time", "transposed_classes"])
def test_non_contiguous_inputs_match_contiguous(layout, device):
    batch = make_batch(T=18, N=4, C=9, S=5, seed=3, device=device)
    args = (batch.padded_targets, batch.input_lengths, batch.target_lengths)
    expected_loss, expected_grad = loss_and_grad(builtin_loss, batch.logits, *args, reduction="none")
    if layout == "batch_first":
        storage = batch.logits.transpose(0, 1).contiguous()  # (N, T, C) in memory
        ours, grad = loss_and_grad(ctc_ext.ctc_loss, storage, *args, reduction="none", batch_first=True)
        grad = grad.transpose(0, 1)
    elif layout == "strided_batch":
        wide = torch.zeros(18, 8, 9, dtype=torch.float64, device=device)
        wide[:, ::2] = batch.logits
        view = wide[:, ::2]
        ours, grad = loss_and_grad(ctc_ext.ctc_loss, view, *args, reduction="none")
    elif layout == "strided_time":
        long = torch.zeros(36, 4, 9, dtype=torch.float64, device=device)
        long[::2] = batch.logits
        ours, grad = loss_and_grad(ctc_ext.ctc_loss, long[::2], *args, reduction="none")
    else:
        storage = batch.logits.permute(2, 0, 1).contiguous().permute(1, 2, 0)  # classes not unit-stride
        assert storage.stride(2) != 1
        ours, grad = loss_and_grad(ctc_ext.ctc_loss, storage, *args, reduction="none")
    assert_close_f64(ours, expected_loss, "loss")
    assert_close_f64(grad, expected_grad, "gradient")


def test_unbatched_input_matches_builtin(device):
    batch = make_batch(T=12, N=1, C=5, S=4, seed=4, device=device)
    logits = batch.logits[:, 0]  # (T, C)
    target = batch.padded_targets[0]
    for input_length, target_length in [(torch.tensor(12), torch.tensor(4)), ([12], [4]), (12, 4)]:
        for reduction in REDUCTIONS:
            ours, our_grad = loss_and_grad(
                ctc_ext.ctc_loss, logits, target, input_length, target_length, reduction=reduction
            )
            theirs, their_grad = loss_and_grad(
                builtin_loss,
                logits,
                target,
                torch.as_tensor(input_length),
                torch.as_tensor(target_length),
                reduction=reduction,
            )
            assert ours.shape == theirs.shape
            assert_close_f64(ours, theirs, "loss")
            assert_close_f64(our_grad, their_grad, "gradient")


def test_log_probability_input_gives_builtin_loss_and_gradient(device):
    """Fed log-probabilities, as the built-in is, the loss and the gradient are the built-in's."""
    batch = make_batch(T=15, N=3, C=6, S=4, seed=5, device=device)
    log_probs = batch.logits.log_softmax(-1).detach().requires_grad_(True)
    args = (batch.padded_targets.clamp(0, 5), batch.input_lengths, batch.target_lengths)
    ours = ctc_ext.ctc_loss(log_probs, *args)
    theirs = torch.nn.functional.ctc_loss(log_probs, *args)
    (our_grad,) = torch.autograd.grad(ours, log_probs)
    (their_grad,) = torch.autograd.grad(theirs, log_probs)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("T,N,C,S", [(1, 1, 2, 1), (3, 2, 3, 1), (50, 3, 4, 24), (33, 7, 40, 10), (100, 2, 1000, 30)])
def test_varied_shapes_match_builtin(T, N, C, S, device):
    batch = make_batch(T=T, N=N, C=C, S=S, blank=C - 1, seed=T * N, device=device)
    args = (batch.padded_targets, batch.input_lengths, batch.target_lengths)
    for reduction in REDUCTIONS:
        ours, our_grad = loss_and_grad(ctc_ext.ctc_loss, batch.logits, *args, blank=C - 1, reduction=reduction)
        theirs, their_grad = loss_and_grad(builtin_loss, batch.logits, *args, blank=C - 1, reduction=reduction)
        assert_close_f64(ours, theirs, "loss")
        assert_close_f64(our_grad, their_grad, "gradient")


def test_module_matches_functional(device):
    batch = make_batch(T=14, N=3, C=6, S=4, seed=6, device=device)
    args = (batch.logits, batch.padded_targets, batch.input_lengths, batch.target_lengths)
    for blank, reduction, zero_infinity in itertools.product([0], REDUCTIONS, [False, True]):
        module = ctc_ext.CTCLoss(blank=blank, reduction=reduction, zero_infinity=zero_infinity)
        assert torch.equal(module(*args), ctc_ext.ctc_loss(*args, blank, reduction, zero_infinity))
    module = ctc_ext.CTCLoss(batch_first=True)
    assert "batch_first=True" in repr(module)
    batch_first_logits = batch.logits.transpose(0, 1)
    assert torch.equal(module(batch_first_logits, *args[1:]), ctc_ext.ctc_loss(*args))


# ----------------------------------------------------------------------------------------------
# On a CUDA device only: the same numbers as the CPU op, and agreement with cuDNN.


@pytest.mark.parametrize("blank", [0, 3])
@pytest.mark.parametrize("target_format", ["padded", "concatenated"])
def test_cuda_op_matches_the_cpu_op_to_rounding(cuda_device, blank, target_format):
    batch = make_batch(T=50, N=8, C=30, S=20, blank=blank, seed=7 + blank)
    targets = batch.padded_targets if target_format == "padded" else batch.concatenated_targets
    lengths = (torch.tensor(batch.input_lengths), torch.tensor(batch.target_lengths))
    cpu_out = ctc_ext.ops.ctc_loss_forward(batch.logits, targets, *lengths, blank, True)
    for moved in ((targets, *lengths), (targets.cuda(), *[length.cuda() for length in lengths])):
        cuda_out = ctc_ext.ops.ctc_loss_forward(batch.logits.to(cuda_device), *moved, blank, True)
        for got, want in zip(cuda_out, cpu_out):  # nll, log_alpha (same layout), log_normalizer
            assert got.is_cuda
            torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-12)
    kwargs = dict(blank=blank, reduction="none", zero_infinity=True)
    cpu_loss, cpu_grad = loss_and_grad(ctc_ext.ctc_loss, batch.logits, targets, *lengths, **kwargs)
    cuda_loss, cuda_grad = loss_and_grad(ctc_ext.ctc_loss, batch.logits.to(cuda_device), targets, *lengths, **kwargs)
    torch.testing.assert_close(cuda_loss.cpu(), cpu_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cuda_grad.cpu(), cpu_grad, rtol=1e-12, atol=1e-12)


def test_float32_matches_cudnn(cuda_device):
    # The built-in takes cuDNN for float32 with blank 0, int32 concatenated targets on the host and
    # every input length equal to T; both are judged against float64 on the same inputs.
    T = 80
    batch = make_batch(T=T, N=6, C=28, S=20, seed=8, input_lengths=[T] * 6)
    targets = batch.concatenated_targets.int()
    input_lengths = torch.tensor(batch.input_lengths, dtype=torch.int32)
    target_lengths = torch.tensor(batch.target_lengths, dtype=torch.int32)
    args = (targets, input_lengths, target_lengths)
    exact_loss, exact_grad = loss_and_grad(builtin_loss, batch.logits, *args, reduction="sum")
    logits32 = batch.logits.float().to(cuda_device)
    our_loss, our_grad = loss_and_grad(ctc_ext.ctc_loss, logits32, *args, reduction="sum")
    with torch.profiler.profile() as profile:
        cudnn_loss, _ = loss_and_grad(builtin_loss, logits32, *args, reduction="sum")
    if not any("cudnn" in event.name.lower() for event in profile.events()):
        pytest.skip(
            f"the built-in did not take cuDNN here (torch {torch.__version__}, cuDNN enabled: "
            f"{torch.backends.cudnn.enabled}): nothing to compare with"
        )
    scale = exact_loss.abs().item()
    our_error = (our_loss.double().cpu() - exact_loss).abs().item()
    cudnn_error = (cudnn_loss.double().cpu() - exact_loss).abs().item()
    assert our_error <= 4 * cudnn_error + 64 * torch.finfo(torch.float32).eps * scale
    # The gradient against float64 only: cuDNN's own gradient has a history of disagreeing with the
    # built-in's native kernels, so it is no reference.
    our_grad_error = (our_grad.double().cpu() - exact_grad).abs().max().item()
    assert our_grad_error <= 256 * torch.finfo(torch.float32).eps
