"""The loss and its gradient against an enumeration of every frame-level path (tiny inputs).

Independent of the built-in: p(l | x) is the sum over all C^T label paths that collapse to l
(merge repeats, then drop blanks) of the product of per-frame softmax probabilities.
"""

import itertools

import pytest
import torch

import ctc_ext


def collapse(path, blank):
    labels, previous = [], None
    for symbol in path:
        if symbol != previous and symbol != blank:
            labels.append(symbol)
        previous = symbol
    return labels


def brute_force_nll(logits, target, blank):
    """-log p(target | logits) for one sample; logits (T, C) float64 raw activations."""
    T, C = logits.shape
    log_probs = logits.log_softmax(-1)
    path_scores = [
        log_probs[torch.arange(T), list(path)].sum()
        for path in itertools.product(range(C), repeat=T)
        if collapse(path, blank) == list(target)
    ]
    if not path_scores:
        return torch.tensor(float("inf"), dtype=logits.dtype)
    return -torch.logsumexp(torch.stack(path_scores), 0)


CASES = [
    # (T, C, target, blank)
    (4, 3, [1, 2], 0),
    (5, 3, [1, 1], 0),  # a repeat needs a blank between
    (5, 4, [3, 1, 3], 2),  # blank in the middle
    (4, 3, [0, 1], 2),  # blank last
    (3, 3, [], 0),  # empty target
    (2, 3, [1, 1], 0),  # impossible: repeat needs 3 frames
    (6, 3, [2, 1, 2], 0),
    (1, 2, [1], 0),
]


@pytest.mark.parametrize("T,C,target,blank", CASES)
def test_loss_equals_enumeration_of_all_paths(T, C, target, blank, device):
    generator = torch.Generator().manual_seed(T * 31 + C)
    logits = torch.randn(T, C, generator=generator, dtype=torch.float64) * 1.5
    expected = brute_force_nll(logits, target, blank)
    ours = ctc_ext.ctc_loss(
        logits.unsqueeze(1).to(device),
        torch.tensor([target], dtype=torch.long, device=device).reshape(1, -1),
        [T],
        [len(target)],
        blank=blank,
        reduction="none",
    )[0].cpu()
    if torch.isinf(expected):
        assert torch.isinf(ours) and ours > 0
    else:
        torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)


# The impossible case has no finite gradient; the rest are small enough for T * C enumerations.
@pytest.mark.parametrize("T,C,target,blank", [case for case in CASES if case[2] != [1, 1] or case[0] > 2])
def test_gradient_equals_finite_differences_of_enumeration(T, C, target, blank, device):
    generator = torch.Generator().manual_seed(T * 17 + C)
    logits = torch.randn(T, C, generator=generator, dtype=torch.float64)
    targets = torch.tensor([target], dtype=torch.long, device=device).reshape(1, -1)
    x = logits.unsqueeze(1).to(device).requires_grad_(True)
    ctc_ext.ctc_loss(x, targets, [T], [len(target)], blank=blank, reduction="sum").backward()
    step = 1e-6
    numeric = torch.zeros(T, C, dtype=torch.float64)
    for t, k in itertools.product(range(T), range(C)):
        plus, minus = logits.clone(), logits.clone()
        plus[t, k] += step
        minus[t, k] -= step
        numeric[t, k] = (brute_force_nll(plus, target, blank) - brute_force_nll(minus, target, blank)) / (2 * step)
    torch.testing.assert_close(x.grad[:, 0].cpu(), numeric, rtol=1e-6, atol=1e-7)


def test_ragged_batch_equals_per_sample_enumeration(device):
    generator = torch.Generator().manual_seed(7)
    T, C = 5, 3
    logits = torch.randn(T, 3, C, generator=generator, dtype=torch.float64)
    targets = [[1, 2], [2], []]
    input_lengths = [5, 3, 2]
    padded = torch.tensor([[1, 2], [2, 0], [0, 0]])
    ours = ctc_ext.ctc_loss(logits.to(device), padded.to(device), input_lengths, [2, 1, 0], reduction="none").cpu()
    for n in range(3):
        expected = brute_force_nll(logits[: input_lengths[n], n], targets[n], 0)
        torch.testing.assert_close(ours[n], expected, rtol=1e-12, atol=1e-12)
