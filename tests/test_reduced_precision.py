"""float16 / bfloat16 input: float32 arithmetic inside, gradient in the input's dtype, loss in float32."""

import pytest
import torch
from ctc_cases import builtin_loss, make_batch, unit_in_last_place

import ctc_ext


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("C", [6, 300])
@pytest.mark.parametrize("seed", range(2))
def test_loss_and_gradient_match_float64_on_the_same_rounded_inputs(dtype, C, seed, device):
    batch = make_batch(T=40, N=4, C=C, S=8, seed=60 + seed, dtype=torch.float64, device=device)
    logits = batch.logits.to(dtype).requires_grad_(True)
    args = (batch.padded_targets, batch.input_lengths, batch.target_lengths)
    losses = ctc_ext.ctc_loss(logits, *args, reduction="none")
    assert losses.dtype == torch.float32
    losses.sum().backward()
    assert logits.grad.dtype == dtype

    exact_logits = logits.detach().double().requires_grad_(True)  # the same, already rounded, inputs
    exact = builtin_loss(exact_logits, *args, reduction="none")
    exact.sum().backward()
    torch.testing.assert_close(losses.double(), exact, rtol=1e-4, atol=0)
    # One rounding of the dtype, on top of float32 arithmetic (grad rows are O(1)).
    error = (logits.grad.double() - exact_logits.grad).abs()
    allowed = unit_in_last_place(exact_logits.grad, dtype) + 64 * torch.finfo(torch.float32).eps
    assert (error <= allowed).all(), f"worst excess {(error - allowed).max().item():.3g}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_no_float32_copy_of_the_input_is_made(dtype, device):
    """The kernel reads the reduced-precision tensor itself: its result equals that of the float32
    kernel on the upcast input only up to float32 rounding, and no op upcasts the input."""
    batch = make_batch(T=12, N=2, C=5, S=3, seed=63, device=device)
    logits = batch.logits.to(dtype)
    seen_dtypes = []

    class RecordCalls(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.__name__.startswith("_to_copy") or func.__name__.startswith("ctc_loss_forward"):
                seen_dtypes.append((func.__name__, args[0].dtype))
            return func(*args, **(kwargs or {}))

    with RecordCalls():
        ctc_ext.ctc_loss(logits, batch.padded_targets, batch.input_lengths, batch.target_lengths)
    assert ("ctc_loss_forward.default", dtype) in seen_dtypes
    assert not [name for name, seen in seen_dtypes if name.startswith("_to_copy") and seen == dtype]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_keeps_reduced_precision_logits(dtype, device):
    torch.manual_seed(64)
    model = torch.nn.Linear(12, 7).to(device)
    features = torch.randn(20, 3, 12, device=device)
    targets = torch.randint(1, 7, (3, 4), device=device)
    with torch.autocast(device, dtype=dtype):
        logits = model(features)
        assert logits.dtype == dtype
        loss = ctc_ext.ctc_loss(logits, targets, [20, 18, 15], [4, 3, 2])
    assert loss.dtype == torch.float32
    loss.backward()
    assert model.weight.grad is not None and torch.isfinite(model.weight.grad).all()
    # The op saw the reduced-precision logits as they are: same loss as calling it outside autocast.
    outside = ctc_ext.ctc_loss(logits.detach(), targets, [20, 18, 15], [4, 3, 2])
    assert torch.equal(loss.detach(), outside)
