"""torch.func transforms and forward-mode AD through ctc_ext.ctc_loss and CTCLossFunction.

References: the built-in F.ctc_loss on log_softmax (reverse mode), and finite differences
of our own float64 loss (forward mode; the built-in has no forward-mode formula).
"""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from ctc_cases import builtin_loss, make_batch

import ctc_ext

REDUCTIONS = ["none", "mean", "sum"]


@pytest.fixture
def batch():
    return make_batch(T=12, N=3, C=6, S=4, seed=5, input_lengths=[12, 9, 7], target_lengths=[4, 0, 3])


def ours(batch, reduction="mean", zero_infinity=False, function=False):
    targets, il, tl = batch.padded_targets, torch.tensor(batch.input_lengths), torch.tensor(batch.target_lengths)
    if function:
        return lambda x: ctc_ext.CTCLossFunction.apply(x, targets, il, tl, batch.blank, reduction, zero_infinity)[0]
    return lambda x: ctc_ext.ctc_loss(x, targets, il, tl, batch.blank, reduction, zero_infinity)


def builtin(batch, reduction="mean", zero_infinity=False):
    # Lengths as tensors: the built-in's 'mean' with list lengths fails under torch.func.grad.
    il, tl = torch.tensor(batch.input_lengths), torch.tensor(batch.target_lengths)
    return lambda x: builtin_loss(x, batch.padded_targets, il, tl, batch.blank, reduction, zero_infinity)


def scalar(f):
    return lambda x: f(x).sum()


def test_grad_fn_called_directly_returns_one_tensor_like_the_builtin(batch):
    # ESPnet's builtin2 CTC calls loss.grad_fn(ones) and expects the logits' gradient.
    x = batch.logits.clone().requires_grad_()
    loss = ours(batch, "none")(x)
    expected_loss = builtin(batch, "none")(x)
    ones = torch.ones_like(loss)
    grad = loss.grad_fn(ones)
    assert isinstance(grad, torch.Tensor)
    (expected,) = torch.autograd.grad(expected_loss, x, ones)
    torch.testing.assert_close(grad, expected)


def test_grad_fn_has_a_clean_name(batch):
    x = batch.logits.clone().requires_grad_()
    node = ours(batch)(x).grad_fn
    assert node.name() == "CTCLossBackward"
    assert repr(node).startswith("<CTCLossBackward object")


@pytest.mark.parametrize("function", [False, True], ids=["ctc_loss", "CTCLossFunction"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_func_grad_and_vjp_match_the_builtin(batch, reduction, function):
    f, reference = scalar(ours(batch, reduction, function=function)), scalar(builtin(batch, reduction))
    x = batch.logits
    torch.testing.assert_close(torch.func.grad(f)(x), torch.func.grad(reference)(x))
    loss, vjp = torch.func.vjp(f, x)
    torch.testing.assert_close(loss, reference(x))
    torch.testing.assert_close(vjp(torch.tensor(1.0, dtype=loss.dtype))[0], torch.func.grad(reference)(x))


@pytest.mark.parametrize("function", [False, True], ids=["ctc_loss", "CTCLossFunction"])
def test_vmap_of_grad_matches_a_loop(batch, function):
    f = scalar(ours(batch, "mean", function=function))
    xs = torch.stack([batch.logits, batch.logits * 0.5, batch.logits.flip(0)])
    batched = torch.func.vmap(torch.func.grad(f))(xs)
    for x, grad in zip(xs, batched):
        torch.testing.assert_close(grad, torch.func.grad(scalar(builtin(batch)))(x))


def finite_difference(f, x, tangent, eps=1e-6):
    return (f(x + eps * tangent) - f(x - eps * tangent)) / (2 * eps)


@pytest.mark.parametrize("function", [False, True], ids=["ctc_loss", "CTCLossFunction"])
@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_forward_mode_tangent_is_the_directional_derivative(batch, reduction, zero_infinity, function):
    f = ours(batch, reduction, zero_infinity, function)
    x = batch.logits
    tangent = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    loss, loss_tangent = torch.func.jvp(f, (x,), (tangent,))
    torch.testing.assert_close(loss, f(x))
    expected = finite_difference(f, x, tangent)
    assert loss_tangent.abs().max() > 0
    torch.testing.assert_close(loss_tangent, expected, rtol=1e-6, atol=1e-7)
    # The same through torch.autograd.forward_ad.
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, tangent)
        torch.testing.assert_close(fwAD.unpack_dual(f(dual)).tangent, expected, rtol=1e-6, atol=1e-7)


def test_forward_mode_with_a_gradient_wanted_too(batch):
    # A dual input that also requires grad: the tangent is right, and the backward is right
    # once the dual level is closed.  Inside the level the backward would need the tangent of the
    # gradient (a second derivative): refused clearly rather than dropped.
    x = batch.logits.clone().requires_grad_()
    tangent = torch.randn_like(x)
    with fwAD.dual_level():
        loss = ours(batch)(fwAD.make_dual(x, tangent))
        loss_tangent = fwAD.unpack_dual(loss).tangent
        with pytest.raises(RuntimeError, match="forward-mode AD of the CTC gradient"):
            torch.autograd.grad(loss, x, retain_graph=True)
    (grad,) = torch.autograd.grad(loss, x)
    (expected_grad,) = torch.autograd.grad(builtin(batch)(x), x)
    torch.testing.assert_close(grad, expected_grad)
    torch.testing.assert_close(loss_tangent, (expected_grad * tangent).sum())


@pytest.mark.parametrize("function", [False, True], ids=["ctc_loss", "CTCLossFunction"])
def test_jacfwd_equals_jacrev_equals_the_builtin(batch, function):
    f = ours(batch, "none", function=function)
    x = batch.logits
    expected = torch.func.jacrev(builtin(batch, "none"))(x)
    torch.testing.assert_close(torch.func.jacfwd(f)(x), expected)
    torch.testing.assert_close(torch.func.jacrev(f)(x), expected)


def test_second_derivative_is_refused_clearly(batch):
    with pytest.raises(RuntimeError, match="double backward"):
        torch.func.jacrev(torch.func.grad(scalar(ours(batch))))(batch.logits)


def test_builtin_reference_really_is_the_builtin(batch):
    # Guards the references above: builtin() must be torch's ctc_loss, not ours.
    loss = builtin(batch, "none")(batch.logits.requires_grad_())
    assert loss.grad_fn.name() != "CTCLossBackward"
    assert F.ctc_loss is torch.nn.functional.ctc_loss
