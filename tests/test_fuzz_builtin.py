"""Differential fuzzing against torch.nn.functional.ctc_loss in float64.

Each case draws, from its own seed, a layout ((T, N, C), batch_first, unbatched), a target
format (padded or concatenated, int32 or int64), lengths (ragged, zero, too short to fit the
target), lengths given as tensors or lists, a reduction, zero_infinity, a blank, and logits
with non-unit strides; it compares the loss and the gradient of the logits with the built-in's
on log_softmax of the same logits.  The budget is a fixed number of cases
(CTC_FUZZ_CASES, default 300; CTC_FUZZ_SEED picks the first seed), so a run is reproducible and
a failure names the seed that reproduces it alone (CTC_FUZZ_CASES=1 CTC_FUZZ_SEED=<seed>).
"""

import os
import random

import torch
import torch.nn.functional as F

import ctc_ext

CASES = int(os.environ.get("CTC_FUZZ_CASES", "300"))
FIRST_SEED = int(os.environ.get("CTC_FUZZ_SEED", "0"))


def draw_case(seed):
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    unbatched = rng.random() < 0.1
    N = 1 if unbatched else rng.randint(1, 4)
    T = rng.randint(1, 12)  # the built-in refuses T = 0 (ours: tests/test_crash_isolation.py)
    C = rng.randint(2, 7)
    S = rng.randint(0, 5)
    blank = rng.randrange(C)
    target_lengths = [rng.randint(0, S) for _ in range(N)]
    # Mostly long enough for the target, sometimes too short (an infinite loss), sometimes 0.
    input_lengths = [rng.choice([T, rng.randint(0, T), min(T, 2 * length + 1)]) for length in target_lengths]
    labels = torch.randint(0, C - 1, (N, S), generator=generator)
    labels += (labels >= blank).long()
    if rng.random() < 0.3 and S >= 2:
        labels[:, 1] = labels[:, 0]  # adjacent repeats
    case = dict(
        seed=seed,
        shape=(T, N, C),
        blank=blank,
        input_lengths=input_lengths,
        target_lengths=target_lengths,
        reduction=rng.choice(["none", "mean", "sum"]),
        zero_infinity=rng.random() < 0.5,
        unbatched=unbatched,
        batch_first=not unbatched and rng.random() < 0.3,
        concatenated=not unbatched and rng.random() < 0.4,
        targets_dtype=rng.choice([torch.int32, torch.int64]),
        lengths_as=rng.choice(["list", "int64", "int32"]),
        strides=rng.choice(["contiguous", "sliced", "permuted"]),
        log_softmaxed=rng.random() < 0.3,
        scale=rng.choice([0.5, 2.0, 8.0]),
    )
    values = torch.randn(T, N, C, generator=generator, dtype=torch.float64) * case["scale"]
    return case, values, labels


def arguments(case, values, labels):
    """Our arguments (any layout, strides, formats) and the built-in's ((T, N, C), padded-safe)."""
    T, N, C = case["shape"]
    logits = values.log_softmax(-1) if case["log_softmaxed"] else values
    # (T, N, C) values held in the caller's layout, with the strides the case asks for.
    layout = logits.transpose(0, 1) if case["batch_first"] else logits
    if case["strides"] == "sliced":
        wide = torch.zeros(*layout.shape[:-1], 2 * C + 1, dtype=torch.float64)
        wide[..., 1::2] = layout
        layout = wide[..., 1::2]
    elif case["strides"] == "permuted":
        layout = layout.permute(2, 1, 0).contiguous().permute(2, 1, 0)
    ours = layout.clone().requires_grad_() if case["strides"] == "contiguous" else layout.detach().requires_grad_()
    lengths = {
        "list": lambda v: list(v),
        "int64": lambda v: torch.tensor(v, dtype=torch.int64),
        "int32": lambda v: torch.tensor(v, dtype=torch.int32),
    }[case["lengths_as"]]
    if case["concatenated"]:
        targets = torch.cat([labels[n, :length] for n, length in enumerate(case["target_lengths"])])
    else:
        targets = labels.clone()
        for n, length in enumerate(case["target_lengths"]):
            targets[n, length:] = C + 3  # junk padding: must never be read
    targets = targets.to(case["targets_dtype"])
    il, tl = case["input_lengths"], case["target_lengths"]
    if case["unbatched"]:
        our_args = (ours[:, 0], targets[0], il[0], tl[0])
    else:
        our_args = (ours, targets, lengths(il), lengths(tl))
    return our_args, labels


def run_case(seed):
    case, values, labels = draw_case(seed)
    (logits, targets, il, tl), labels = arguments(case, values, labels)
    loss = ctc_ext.ctc_loss(
        logits,
        targets,
        il,
        tl,
        case["blank"],
        case["reduction"],
        case["zero_infinity"],
        batch_first=case["batch_first"],
    )
    reference_input = values.clone().requires_grad_()
    reference = F.ctc_loss(
        reference_input.log_softmax(-1),
        labels,
        case["input_lengths"],
        case["target_lengths"],
        blank=case["blank"],
        reduction=case["reduction"],
        zero_infinity=case["zero_infinity"],
    )
    if case["unbatched"] and case["reduction"] == "none":
        reference = reference.squeeze(0)  # ours returns a 0-d loss for a (T, C) input
    torch.testing.assert_close(loss, reference, rtol=1e-9, atol=1e-10, equal_nan=True)
    upstream = torch.rand(loss.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    finite = torch.isfinite(reference).all()
    if not finite or reference_input.numel() == 0:
        return  # the built-in's gradients of infinite losses are not a convention we copy
    (grad,) = torch.autograd.grad(loss, logits, upstream)
    (reference_grad,) = torch.autograd.grad(reference, reference_input, upstream)
    # With log_softmaxed input, ours is differentiated at log_softmax(values): log_softmax is
    # idempotent and its Jacobian depends on the input only through softmax, which is the same.
    if case["unbatched"]:
        reference_grad = reference_grad[:, 0]
    elif case["batch_first"]:
        reference_grad = reference_grad.transpose(0, 1)
    torch.testing.assert_close(grad, reference_grad, rtol=1e-7, atol=1e-9)


def test_fuzz_against_the_builtin():
    for seed in range(FIRST_SEED, FIRST_SEED + CASES):
        try:
            run_case(seed)
        except Exception as error:
            case, _, _ = draw_case(seed)
            raise AssertionError(
                f"fuzz case seed={seed} failed (reproduce: CTC_FUZZ_CASES=1 CTC_FUZZ_SEED={seed}):\n"
                f"{case}\n{type(error).__name__}: {error}"
            ) from None
