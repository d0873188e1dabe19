"""Hostile inputs to every entry point, each run in a child interpreter (tests/isolation.py):
a case that kills the process fails here, naming the case, instead of killing the test run.

Every case must end in a clean Python exception of the expected kind (or return normally where
the input is legal); none may crash, hang or read outside its tensors."""

import pytest
from isolation import run_hostile_cases

SETUP = """
import torch, ctc_ext
ops = ctc_ext.ops
T, N, C, S = 6, 2, 5, 3
x = torch.randn(T, N, C, dtype=torch.float64)
tg = torch.tensor([[1, 2, 3], [4, 1, 0]])
il = torch.tensor([6, 5])
tl = torch.tensor([3, 2])
nll, alpha, norm = ops.ctc_loss_forward(x, tg, il, tl, 0, True)
"""

# name -> (code, expected: "error" (a clean exception) or "ok" (returns normally)).
CASES = {
    "length_sum_overflow": (
        "ctc_ext.ctc_loss(x, tg.flatten(), il, torch.tensor([2**62, 2**62]))",
        "error",
    ),
    "negative_huge_target_length": ("ctc_ext.ctc_loss(x, tg.flatten(), il, torch.tensor([-(2**63), 3]))", "error"),
    "input_length_beyond_T": ("ctc_ext.ctc_loss(x, tg, torch.tensor([2**40, 5]), tl)", "error"),
    "label_int32_max": ("ctc_ext.ctc_loss(x, tg.int().fill_(2**31 - 1), il, tl)", "error"),
    "label_int64_min": ("ctc_ext.ctc_loss(x, tg.fill_(-(2**63)), il, tl)", "error"),
    "zero_classes": ("ctc_ext.ctc_loss(torch.randn(T, N, 0), tg, il, tl)", "error"),
    "zero_frames_empty_targets": (
        "ctc_ext.ctc_loss(torch.randn(0, N, C), tg, [0, 0], [0, 0], reduction='none')",
        "ok",
    ),
    "zero_batch": ("ctc_ext.ctc_loss(torch.randn(T, 0, C), torch.zeros(0, 3, dtype=torch.long), [], [])", "ok"),
    "nan_and_inf_logits": (
        "y = x.clone(); y[0, 0, 1] = float('nan'); y[1, 1, 2] = float('inf'); y[2, 0, 0] = -float('inf');"
        "ctc_ext.ctc_loss(y.requires_grad_(), tg, il, tl).backward()",
        "ok",
    ),
    "backward_with_forged_state": (
        "ops.ctc_loss_backward(torch.ones(N, dtype=torch.float64), x, tg, il, tl, nll, alpha[:5], norm, 0, False)",
        "error",
    ),
    "backward_with_forged_finite_loss": (
        "ops.ctc_loss_backward(torch.ones(N, dtype=torch.float64), x, tg, torch.tensor([1, 1]), tl,"
        " torch.zeros(N, dtype=torch.float64), alpha, norm, 0, False)",
        "ok",
    ),
    "backward_with_lengths_of_another_problem": (
        "ops.ctc_loss_backward(torch.ones(N, dtype=torch.float64), x, tg, il, torch.tensor([2, 1]), nll, alpha,"
        " norm, 0, False)",
        "ok",
    ),
    "backward_grad_of_wrong_size": (
        "ops.ctc_loss_backward(torch.ones(N + 5, dtype=torch.float64), x, tg, il, tl, nll, alpha, norm, 0, False)",
        "error",
    ),
    "backward_state_of_wrong_dtype": (
        "ops.ctc_loss_backward(torch.ones(N), x, tg, il, tl, nll.float(), alpha.float(), norm.float(), 0, False)",
        "error",
    ),
    "forward_op_blank_out_of_range": ("ops.ctc_loss_forward(x, tg, il, tl, 2**40, False)", "error"),
    "forward_op_negative_blank": ("ops.ctc_loss_forward(x, tg, il, tl, -1, False)", "error"),
    "strided_and_overlapping_logits": (
        "y = torch.randn(1, 1, C, dtype=torch.float64).expand(T, N, C);"
        "ctc_ext.ctc_loss(y.requires_grad_(), tg, il, tl).backward()",
        "ok",
    ),
    "lengths_mutated_during_backward": (
        "y = x.clone().requires_grad_(); lengths = il.clone();"
        "loss = ctc_ext.ctc_loss(y, tg, lengths, tl); lengths.fill_(2**40); loss.backward()",
        "ok",
    ),
    "float_lengths": ("ctc_ext.ctc_loss(x, tg, il.double(), tl)", "error"),
    "meta_tensors": (
        "ops.ctc_loss_forward(x.to('meta'), tg.to('meta'), il.to('meta'), tl.to('meta'), 0, True)",
        "ok",
    ),
    # A meta tensor "copied" to the CPU would be uninitialised memory read as lengths.
    "lengths_on_meta_with_cpu_logits": ("ops.ctc_loss(x, tg, il.to('meta'), tl, 0, 1, False)", "error"),
    "targets_on_meta_with_cpu_logits": ("ops.ctc_loss_forward(x, tg.to('meta'), il, tl, 0, False)", "error"),
    "logits_on_meta_with_cpu_lengths": ("ops.forced_align(x.to('meta'), tg, il, tl, 0)", "error"),
    "forced_align_nan": (
        "y = x.clone(); y[3, 0, 2] = float('nan'); ctc_ext.forced_align(y, tg, il, tl)",
        "error",
    ),
    "forced_align_impossible": ("ctc_ext.forced_align(x[:2], tg, [2, 2], tl)", "error"),
    "forced_align_huge_lengths": ("ctc_ext.forced_align(x, tg, il, [2**62, 2**62])", "error"),
    "greedy_decode_lengths_beyond_T": ("ctc_ext.greedy_decode(x, [2**40, 1])", "error"),
    "simd_math_unknown_function": ("ops._simd_math(torch.randn(4), 'nope', 'generic')", "error"),
}


@pytest.fixture(scope="module")
def outcomes():
    return run_hostile_cases(SETUP, [(name, code) for name, (code, _) in CASES.items()])


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input_ends_cleanly(outcomes, name):
    outcome = outcomes[name]
    assert "crashed" not in outcome, f"{name} killed the interpreter: {outcome['crashed']}"
    if CASES[name][1] == "ok":
        assert outcome["raised"] is None, f"{name} raised {outcome['raised']}: {outcome.get('message')}"
    else:
        assert outcome["raised"] in ("RuntimeError", "ValueError", "TypeError", "CTCArgumentError", "IndexError"), (
            f"{name}: expected a clean exception, got {outcome}"
        )


def test_harness_reports_a_crash_and_carries_on():
    # The harness itself: a case that aborts is reported by name, and the cases after it still run.
    outcomes = run_hostile_cases(
        "import os, signal",
        [
            ("fine", "x = 1"),
            ("segfault", "os.kill(os.getpid(), signal.SIGSEGV)"),
            ("raises", "raise ValueError('bad')"),
            ("abort", "os.abort()"),
            ("last", "x = 2"),
        ],
    )
    assert outcomes["fine"] == {"raised": None}
    assert outcomes["segfault"]["crashed"].startswith("signal 11")
    assert outcomes["raises"]["raised"] == "ValueError"
    assert outcomes["abort"]["crashed"].startswith("signal 6")
    assert outcomes["last"] == {"raised": None}
