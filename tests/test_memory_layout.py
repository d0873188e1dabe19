"""Memory that follows the target lengths, not the padded width (issue 12, item 12).

log_alpha, an output of ctc_ext::ctc_loss_forward, gives each sample a block of the padded width
S (T * (2 N S + N) values: its fake kernel can state that size without reading the lengths).
When the targets are far shorter than S, the autograd node of ctc_ext.ctc_loss runs the forward
without log_alpha and the backward recomputes each sample's alpha.  Checked here: the backward
from an empty log_alpha equals the one from the kept log_alpha on every kernel path, and the
padded (16, 20000) case of the issue stays small in a fresh process (resident-set high-water mark).
"""

import json

import pytest
import torch
from isolation import assert_isolated_ok
from test_cpu_kernels import PATHS

import ctc_ext

ops = torch.ops.ctc_ext


def short_padded_targets(T, N, C, S, seed, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(T, N, C, generator=generator, dtype=torch.float64).to(dtype)
    targets = torch.randint(1, C, (N, S), generator=generator)
    targets[0, 1] = targets[0, 0]  # a repeat: needs a blank between
    input_lengths = torch.tensor([T, T - 3, 2, T][:N])
    target_lengths = torch.tensor([4, 0, 3, 5][:N])  # sample 2: three labels in two frames
    return x, targets, input_lengths, target_lengths


@pytest.mark.parametrize("kernel_path", PATHS, indirect=True)
@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("concatenated", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_backward_recomputes_an_empty_log_alpha(kernel_path, zero_infinity, concatenated, dtype):
    x, targets, input_lengths, target_lengths = short_padded_targets(20, 4, 7, 50, seed=1, dtype=dtype)
    if concatenated:
        targets = torch.cat([targets[n, : target_lengths[n]] for n in range(4)])
    nll, log_alpha, log_normalizer = ops.ctc_loss_forward(x, targets, input_lengths, target_lengths, 0, True)
    nll_only, no_alpha, normalizer_only = ops.ctc_loss_forward(x, targets, input_lengths, target_lengths, 0, False)
    assert no_alpha.numel() == 0
    assert torch.equal(nll, nll_only) and torch.equal(log_normalizer, normalizer_only)
    grad_nll = torch.linspace(0.5, 2.0, 4, dtype=nll.dtype)
    args = (x, targets, input_lengths, target_lengths, nll)
    kept = ops.ctc_loss_backward(grad_nll, *args, log_alpha, log_normalizer, 0, zero_infinity)
    recomputed = ops.ctc_loss_backward(grad_nll, *args, no_alpha, log_normalizer, 0, zero_infinity)
    # The same arithmetic on the same rows: bitwise equal, NaN where the sample has no path.
    assert torch.equal(kept.isnan(), recomputed.isnan())
    assert torch.equal(kept.nan_to_num(), recomputed.nan_to_num())
    assert kept[:, 0].isfinite().all() and kept[:, 1].isfinite().all()


def test_autograd_matches_with_and_without_the_padded_layout():
    """ctc_ext.ctc_loss on targets padded far beyond their lengths (T (2 N S + N) = 19 M values,
    so the node recomputes alpha) against the same targets concatenated (the node keeps
    log_alpha) and the built-in."""
    x, targets, input_lengths, target_lengths = short_padded_targets(120, 4, 9, 20000, seed=2)
    x = x.requires_grad_()
    concatenated = torch.cat([targets[n, : target_lengths[n]] for n in range(4)])
    results = []
    for labels in (targets, concatenated):
        loss = ctc_ext.ctc_loss(x, labels, input_lengths, target_lengths, reduction="sum", zero_infinity=True)
        (grad,) = torch.autograd.grad(loss, x)
        results.append((loss, grad))
    builtin = torch.nn.functional.ctc_loss(
        x.log_softmax(2), targets, input_lengths, target_lengths, reduction="sum", zero_infinity=True
    )
    (builtin_grad,) = torch.autograd.grad(builtin, x)
    for loss, grad in results:
        torch.testing.assert_close(loss, builtin.detach(), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(grad, builtin_grad, rtol=1e-9, atol=1e-9)


PEAK_STEP = """
    import json, resource, torch, ctc_ext
    T, N, C, S = 500, 16, 30, 20000
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(T, N, C, generator=generator).requires_grad_()
    targets = torch.randint(1, C, (N, S), generator=generator)
    lengths = torch.full((N,), T), torch.full((N,), 3)
    ctc_ext.ctc_loss(x[:8, :2], targets[:2, :8], [8, 8], [3, 3]).backward()  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ctc_ext.ctc_loss(x, targets, *lengths).backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_extra_mb": (after - before) / 1024}))
"""


def test_padded_targets_with_few_labels_take_little_memory():
    """The issue's case: padded (16, 20000) targets holding 3 labels each, T = 500.  The padded
    log_alpha alone would be 500 * (2 * 16 * 20000 + 16) floats = 1.2 GiB; the step's inputs and
    gradient are 1 MB, the targets 2.5 MB."""
    peak = json.loads(assert_isolated_ok(PEAK_STEP).strip().splitlines()[-1])["peak_extra_mb"]
    assert peak < 64, f"one step took {peak:.0f} MiB more than before it"
