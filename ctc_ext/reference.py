"""The slow float64 reference of the CTC lattice, for one sample.

Pure torch, written for reading rather than speed: one Python step per frame, vectorised over
the states of the extended target.  :func:`ctc_ext.plot_alignment` draws its occupancies, and
the tests use it as an independent recomputation of the loss.  Use :func:`ctc_ext.ctc_loss`
for anything else.

Notation (see the project notes): the extended target ``l'`` puts a blank before, between and
after the labels, so it has ``2L + 1`` states; ``log_alpha[t, s]`` and ``log_beta[t, s]`` both
include the emission of state ``s`` at frame ``t``.
"""

from typing import Tuple

import torch
from torch import Tensor


def extended_target(target: Tensor, blank: int = 0) -> Tensor:
    """(2L+1,) int64: ``blank, l1, blank, l2, ..., lL, blank`` for a (L,) ``target``."""
    target = torch.as_tensor(target, dtype=torch.int64).reshape(-1)
    extended = torch.full((2 * target.numel() + 1,), blank, dtype=torch.int64)
    extended[1::2] = target
    return extended


def _skip_allowed(extended: Tensor, blank: int) -> Tensor:
    """(2L+1,) bool: may a path jump from state s-2 straight to state s?

    Only onto a label that differs from the label two states before (otherwise the blank
    between two equal labels could be skipped and they would merge)."""
    allowed = torch.zeros(extended.shape, dtype=torch.bool)
    allowed[2:] = (extended[2:] != blank) & (extended[2:] != extended[:-2])
    return allowed


def ctc_lattice_reference(log_probs: Tensor, target: Tensor, blank: int = 0) -> Tuple[Tensor, Tensor, Tensor]:
    """Forward and backward variables of one sample, in float64 log space.

    Args:
        log_probs: (T, C) per-frame scores of one sample, only its first ``T`` frames (cut it
            to the input length first). Normalised here with ``log_softmax``, so raw logits and
            log-probabilities give the same lattice.
        target: (L,) labels, none equal to ``blank``.
        blank: index of the blank class.

    Returns:
        ``(log_alpha, log_beta, neg_log_likelihood)``: (T, 2L+1) float64 each (``-inf`` where no
        path passes) and a 0-d float64 (``inf`` when no alignment exists).
    """
    log_probs = torch.log_softmax(torch.as_tensor(log_probs).detach().to("cpu", torch.float64), dim=-1)
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs must be (T, C) for one sample, got shape {tuple(log_probs.shape)}")
    num_frames = log_probs.shape[0]
    extended = extended_target(target, blank)
    num_states = extended.numel()
    if num_frames == 0:
        empty = torch.empty(0, num_states, dtype=torch.float64)
        return empty, empty.clone(), torch.tensor(0.0 if num_states == 1 else float("inf"), dtype=torch.float64)
    skip_allowed = _skip_allowed(extended, blank)
    emissions = log_probs[:, extended]  # (T, 2L+1): log y[t, l'_s]
    minus_inf = torch.tensor([float("-inf")], dtype=torch.float64)

    log_alpha = torch.full((num_frames, num_states), float("-inf"), dtype=torch.float64)
    log_alpha[0, :2] = emissions[0, :2]
    for t in range(1, num_frames):
        padded = torch.cat([minus_inf.expand(2), log_alpha[t - 1]])  # padded[s + 2] = log_alpha[t-1, s]
        stay, from_left = padded[2:], padded[1:-1]
        from_two_left = torch.where(skip_allowed, padded[:-2], minus_inf)
        log_alpha[t] = emissions[t] + torch.logsumexp(torch.stack([stay, from_left, from_two_left]), dim=0)

    # Mirror image: a jump from s+2 back to s is allowed exactly when the forward jump onto s+2 is.
    skip_allowed_backward = torch.cat([skip_allowed[2:], torch.zeros(2, dtype=torch.bool)])[:num_states]
    log_beta = torch.full((num_frames, num_states), float("-inf"), dtype=torch.float64)
    log_beta[-1, -2:] = emissions[-1, -2:]
    for t in range(num_frames - 2, -1, -1):
        padded = torch.cat([log_beta[t + 1], minus_inf.expand(2)])  # padded[s] = log_beta[t+1, s]
        stay, from_right = padded[:-2], padded[1:-1]
        from_two_right = torch.where(skip_allowed_backward, padded[2:], minus_inf)
        log_beta[t] = emissions[t] + torch.logsumexp(torch.stack([stay, from_right, from_two_right]), dim=0)

    neg_log_likelihood = -torch.logsumexp(log_alpha[-1, -2:], dim=0)
    return log_alpha, log_beta, neg_log_likelihood


def occupancy_reference(log_probs: Tensor, target: Tensor, blank: int = 0) -> Tensor:
    """(T, 2L+1) float64 posterior probability that the path sits in state s at frame t.

    ``occupancy[t, s] = exp(log_alpha + log_beta - log y[t, l'_s] + nll)``; each row sums to 1.
    Arguments as in :func:`ctc_lattice_reference`. Raises ``ValueError`` when the target cannot
    be aligned to the frames (no path, so no posterior).
    """
    log_alpha, log_beta, neg_log_likelihood = ctc_lattice_reference(log_probs, target, blank)
    if not torch.isfinite(neg_log_likelihood):
        raise ValueError("target cannot be aligned to log_probs: too few frames for its labels and repeats")
    log_probs = torch.log_softmax(torch.as_tensor(log_probs).detach().to("cpu", torch.float64), dim=-1)
    emissions = log_probs[:, extended_target(target, blank)]
    return torch.exp(log_alpha + log_beta - emissions + neg_log_likelihood)
