"""The gradient is the exact derivative with respect to the raw logits (Eq. 16 of Graves)."""

import pytest
import torch
from ctc_cases import make_batch

import ctc_ext


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_gradcheck_on_raw_logits(seed, reduction, device):
    batch = make_batch(T=8, N=3, C=5, S=3, seed=seed, blank=seed % 5, device=device)
    logits = batch.logits.clone().requires_grad_(True)

    def loss(x):
        return ctc_ext.ctc_loss(
            x, batch.padded_targets, batch.input_lengths, batch.target_lengths, blank=batch.blank, reduction=reduction
        )

    assert torch.autograd.gradcheck(loss, (logits,), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gradcheck_batch_first_concatenated_targets(device):
    batch = make_batch(T=7, N=3, C=4, S=3, seed=11, input_lengths=[7, 6, 5], target_lengths=[3, 2, 1], device=device)
    logits = batch.logits.transpose(0, 1).contiguous().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: ctc_ext.ctc_loss(
            x, batch.concatenated_targets, batch.input_lengths, batch.target_lengths, reduction="sum", batch_first=True
        ),
        (logits,),
    )


def test_gradient_rows_sum_to_zero_inside_length_and_are_exactly_zero_beyond(device):
    batch = make_batch(T=30, N=5, C=8, S=6, seed=12, input_lengths=[30, 22, 15, 30, 9], device=device)
    for dtype in (torch.float64, torch.float32):
        logits = batch.logits.detach().to(dtype).requires_grad_(True)
        ctc_ext.ctc_loss(
            logits, batch.padded_targets, batch.input_lengths, batch.target_lengths, reduction="sum"
        ).backward()
        grad = logits.grad
        for n, length in enumerate(batch.input_lengths):
            row_sums = grad[:length, n].double().sum(-1)
            # Occupancies sum to 1 up to the rounding of alpha and beta, which grows with the length.
            tolerance = 8 * length * torch.finfo(dtype).eps
            assert row_sums.abs().max().item() <= tolerance
            assert torch.count_nonzero(grad[length:, n]) == 0


def test_zero_infinity_gives_zero_loss_and_zero_gradient_for_impossible_samples(device):
    batch = make_batch(T=6, N=3, C=5, S=5, seed=13, input_lengths=[6, 3, 6], target_lengths=[2, 5, 4], device=device)
    logits = batch.logits.clone().requires_grad_(True)
    losses = ctc_ext.ctc_loss(
        logits, batch.padded_targets, batch.input_lengths, batch.target_lengths, reduction="none", zero_infinity=True
    )
    assert losses[1] == 0 and torch.isfinite(losses).all() and (losses[[0, 2]] > 0).all()
    losses.sum().backward()
    assert torch.count_nonzero(logits.grad[:, 1]) == 0
    assert torch.count_nonzero(logits.grad[:3, 0]) > 0


def test_impossible_sample_without_zero_infinity_has_inf_loss_and_nan_gradient_like_builtin(device):
    batch = make_batch(T=6, N=2, C=5, S=5, seed=14, input_lengths=[6, 3], target_lengths=[2, 5], device=device)
    logits = batch.logits.clone().requires_grad_(True)
    losses = ctc_ext.ctc_loss(logits, batch.padded_targets, batch.input_lengths, batch.target_lengths, reduction="none")
    assert torch.isinf(losses[1]) and torch.isfinite(losses[0])
    losses.sum().backward()
    assert torch.isnan(logits.grad[:3, 1]).all()
    assert torch.count_nonzero(logits.grad[3:, 1]) == 0
    assert torch.isfinite(logits.grad[:, 0]).all()


def test_double_backward_raises_a_clear_error(device):
    batch = make_batch(T=6, N=2, C=4, S=2, seed=15, device=device)
    logits = batch.logits.clone().requires_grad_(True)
    loss = ctc_ext.ctc_loss(logits, batch.padded_targets, batch.input_lengths, batch.target_lengths)
    (grad,) = torch.autograd.grad(loss, logits, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        grad.sum().backward()


def test_per_sample_losses_pass_gradcheck_through_the_op(device):
    # reduction='none' through ctc_ext::ctc_loss: the C++ autograd node with an (N,) gradient.
    batch = make_batch(T=9, N=2, C=5, S=3, seed=16, device=device)
    logits = batch.logits.clone().requires_grad_(True)
    lengths = (torch.tensor(batch.input_lengths), torch.tensor(batch.target_lengths))
    assert torch.autograd.gradcheck(
        lambda x: ctc_ext.ops.ctc_loss(x, batch.padded_targets, *lengths, 0, 0, False), (logits,)
    )


def test_no_log_alpha_is_kept_when_no_gradient_is_needed(device):
    batch = make_batch(T=10, N=2, C=4, S=3, seed=17, device=device)
    lengths = (torch.tensor(batch.input_lengths), torch.tensor(batch.target_lengths))
    _, log_alpha, _ = ctc_ext.ops.ctc_loss_forward(batch.logits, batch.padded_targets, *lengths, 0, False)
    assert log_alpha.numel() == 0
    nll_kept, log_alpha, _ = ctc_ext.ops.ctc_loss_forward(batch.logits, batch.padded_targets, *lengths, 0, True)
    assert log_alpha.numel() == 10 * (2 * batch.padded_targets.numel() + 2)
    # The profiler sees the calls the C++ op makes; which of them kept log_alpha?
    logits = batch.logits.clone().requires_grad_(True)
    with torch.profiler.profile(record_shapes=True) as profile:
        with torch.no_grad():
            nll = ctc_ext.ctc_loss(
                logits, batch.padded_targets, batch.input_lengths, batch.target_lengths, reduction="none"
            )
        ctc_ext.ctc_loss(batch.logits, batch.padded_targets, batch.input_lengths, batch.target_lengths)
        ctc_ext.ctc_loss(logits, batch.padded_targets, batch.input_lengths, batch.target_lengths)
    kept_flags = [event.concrete_inputs[5] for event in profile.events() if event.name == "ctc_ext::ctc_loss_forward"]
    assert kept_flags == [False, False, True]
    torch.testing.assert_close(nll, nll_kept, rtol=0, atol=0)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cpu_reduction_and_its_gradient_are_host_loops(reduction):
    # On plain CPU tensors the reduction and the per-sample weights of its gradient are loops in
    # csrc/autograd/ctc_loss_autograd.cpp, not ATen ops (each costs microseconds, more than a tiny batch's
    # kernels); the values are those of the ATen expression.
    batch = make_batch(T=10, N=3, C=5, S=3, seed=18)
    logits = batch.logits.clone().requires_grad_(True)
    with torch.profiler.profile() as profile:
        loss = ctc_ext.ctc_loss(
            logits, batch.padded_targets, batch.input_lengths, batch.target_lengths, reduction=reduction
        )
        loss.backward()
    called = {event.name for event in profile.events()}
    assert not called & {"aten::mean", "aten::sum", "aten::div", "aten::clamp_min"}, called
    losses = ctc_ext.ctc_loss(
        batch.logits, batch.padded_targets, batch.input_lengths, batch.target_lengths, reduction="none"
    )
    lengths = torch.tensor(batch.target_lengths).clamp_min(1)
    expected = (losses / lengths).mean() if reduction == "mean" else losses.sum()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-12, atol=0)
    reference = logits.detach().clone().requires_grad_(True)
    per_sample = ctc_ext.ctc_loss(
        reference, batch.padded_targets, batch.input_lengths, batch.target_lengths, reduction="none"
    )
    ((per_sample / lengths).mean() if reduction == "mean" else per_sample.sum()).backward()
    torch.testing.assert_close(logits.grad, reference.grad, rtol=1e-12, atol=1e-15)


class _Wrapped(torch.Tensor):
    """A tensor subclass that runs every op on the tensor it wraps: it has no data of its own,
    like the CUDA tensors and the tracing tensors that take the op's ATen reduction."""

    @staticmethod
    def __new__(cls, inner):
        return torch.Tensor._make_wrapper_subclass(
            cls,
            inner.shape,
            strides=inner.stride(),
            dtype=inner.dtype,
            device=inner.device,
            requires_grad=inner.requires_grad,
        )

    def __init__(self, inner):
        self.inner = inner

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        unwrap = lambda value: value.inner if isinstance(value, _Wrapped) else value  # noqa: E731
        wrap = lambda value: _Wrapped(value) if isinstance(value, torch.Tensor) else value  # noqa: E731
        result = func(*torch.utils._pytree.tree_map(unwrap, args), **torch.utils._pytree.tree_map(unwrap, kwargs or {}))
        return torch.utils._pytree.tree_map(wrap, result)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("zero_infinity", [False, True])
def test_the_aten_reduction_path_matches_the_host_loops(reduction, zero_infinity):
    # The reduction and its gradient weights as ATen expressions (what CUDA runs), on the CPU
    # through a wrapper subclass, against the host loops of plain CPU tensors.
    batch = make_batch(T=10, N=3, C=5, S=3, seed=19, input_lengths=[10, 9, 2], target_lengths=[3, 0, 3])
    args = (batch.padded_targets, torch.tensor(batch.input_lengths), torch.tensor(batch.target_lengths))
    code = ctc_ext.functional._REDUCTIONS.index(reduction)
    plain = batch.logits.clone().requires_grad_(True)
    wrapped = _Wrapped(batch.logits.clone()).requires_grad_(True)
    expected = ctc_ext.ops.ctc_loss(plain, *args, 0, code, zero_infinity)
    result = ctc_ext.ops.ctc_loss(wrapped, *[_Wrapped(a) for a in args], 0, code, zero_infinity)
    assert isinstance(result, _Wrapped)
    torch.testing.assert_close(result.inner.detach(), expected.detach(), rtol=1e-12, atol=0, equal_nan=True)
    (grad_plain,) = torch.autograd.grad(expected.sum(), plain)
    (grad_wrapped,) = torch.autograd.grad(result.sum(), wrapped)
    torch.testing.assert_close(grad_wrapped.inner, grad_plain, rtol=1e-12, atol=1e-15, equal_nan=True)
