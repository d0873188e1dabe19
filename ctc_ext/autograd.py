"""CTCLossFunction: the CTC loss as a torch.autograd.Function over the forward and backward ops."""

from typing import Any, Optional, Tuple

import torch
from torch import Tensor

from ._ops import ops
from .errors import CTCArgumentError
from .functional import _REDUCTIONS


def _reduce(losses: Tensor, target_lengths: Tensor, reduction: str) -> Tensor:
    # losses: (N,) float;  target_lengths: (N,) int64.  'mean' as torch: each loss over
    # max(target_length, 1), then averaged.
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return (losses / target_lengths.to(losses.dtype).clamp_min(1)).mean()


def _zero_infinite(neg_log_likelihood: Tensor) -> Tensor:
    return neg_log_likelihood.masked_fill(neg_log_likelihood == float("inf"), 0)


class CTCLossFunction(torch.autograd.Function):
    r"""The CTC loss as a :class:`torch.autograd.Function`, in the operators' own layout.

    ``loss, *_ = CTCLossFunction.apply(logits, targets, input_lengths, target_lengths, blank,
    reduction, zero_infinity)`` equals :func:`ctc_ext.ctc_loss` on the same arguments (value and
    gradient).  The other outputs are the forward variables, not differentiable:
    ``neg_log_likelihood`` :math:`(N,)` (before ``zero_infinity``), ``log_alpha`` (flat) and
    ``log_normalizer`` :math:`(N, T)`; they are outputs rather than hidden state because
    ``torch.func`` transforms need a Function's forward to be free of ``ctx``.
    The forward runs ``ctc_ext::ctc_loss_forward`` and keeps its forward variables,
    the backward runs ``ctc_ext::ctc_loss_backward`` (the Graves Eq. 16 gradient with respect to
    the logits).  It supports ``torch.func`` transforms (``grad``, ``vjp``, ``vmap``, ``jvp``)
    and forward-mode AD.  :func:`ctc_ext.ctc_loss` itself goes through a C++ autograd node with
    the same formulas and less per-call cost; use this class to compose with other Functions or
    to read the Python form of the algorithm.

    Args (all positional):
        logits: :math:`(T, N, C)` float16, bfloat16, float32 or float64; raw logits or
            log-probabilities (log-softmax is applied inside).
        targets: :math:`(N, S)` padded or 1-D concatenated, int32 or int64.
        input_lengths, target_lengths: :math:`(N,)` integer tensors.
        blank: index of the blank class. Default: 0.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``. Default: ``'mean'``.
        zero_infinity: zero the infinite losses and their gradients. Default: ``False``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        logits: Tensor,
        targets: Tensor,
        input_lengths: Tensor,
        target_lengths: Tensor,
        blank: int = 0,
        reduction: str = "mean",
        zero_infinity: bool = False,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        if reduction not in _REDUCTIONS:
            raise CTCArgumentError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        neg_log_likelihood, log_alpha, log_normalizer = ops.ctc_loss_forward(
            logits, targets, input_lengths, target_lengths, blank, True
        )
        losses = _zero_infinite(neg_log_likelihood) if zero_infinity else neg_log_likelihood
        loss = _reduce(losses, target_lengths, reduction)
        if loss is neg_log_likelihood:  # 'none': the differentiable loss must be its own tensor
            loss = loss.clone()
        return loss, neg_log_likelihood, log_alpha, log_normalizer

    @staticmethod
    def setup_context(ctx: Any, inputs: Tuple[Any, ...], output: Tuple[Tensor, ...]) -> None:
        logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity = inputs  # defaults bound
        _, neg_log_likelihood, log_alpha, log_normalizer = output
        ctx.mark_non_differentiable(neg_log_likelihood, log_alpha, log_normalizer)
        # Copies: the backward must see the lengths and labels the forward saw, even if the
        # caller's tensors change in place behind autograd's back (memory shared with numpy).
        ctx.save_for_backward(
            logits,
            targets.clone(),
            input_lengths.clone(),
            target_lengths.clone(),
            neg_log_likelihood,
            log_alpha,
            log_normalizer,
        )
        ctx.save_for_forward(
            logits, targets, input_lengths, target_lengths, neg_log_likelihood, log_alpha, log_normalizer
        )
        ctx.options = (blank, reduction, zero_infinity)

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, *unused: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:
        nll, target_lengths = ctx.saved_tensors[4], ctx.saved_tensors[3]
        grad_nll = _per_sample_gradient(grad_loss, nll, target_lengths, ctx.options[1])
        return _logits_gradient(ctx, grad_nll), None, None, None, None, None, None

    @staticmethod
    def jvp(ctx: Any, logits_tangent: Tensor, *unused: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:
        nll, target_lengths = ctx.saved_tensors[4], ctx.saved_tensors[3]
        reduction = ctx.options[1]
        # d loss_n / d logits[:, n, :] for every sample, dotted with the tangent.
        jacobian = _logits_gradient(ctx, torch.ones_like(nll))
        nll_tangent = (jacobian.to(nll.dtype) * logits_tangent.to(nll.dtype)).sum((0, 2))
        return _reduce(nll_tangent, target_lengths, reduction), None, None, None


def _logits_gradient(ctx: Any, grad_nll: Tensor) -> Tensor:
    """ctc_loss_backward on the saved forward state: (T, N, C), grad_nll[n] times d loss_n / d logits."""
    logits, targets, input_lengths, target_lengths, nll, log_alpha, log_normalizer = ctx.saved_tensors
    blank, _, zero_infinity = ctx.options
    return ops.ctc_loss_backward(
        grad_nll, logits, targets, input_lengths, target_lengths, nll, log_alpha, log_normalizer, blank, zero_infinity
    )


def _per_sample_gradient(grad_loss: Tensor, nll: Tensor, target_lengths: Tensor, reduction: str) -> Tensor:
    # d(reduced loss) / d(loss_n) times the incoming gradient: (N,) like nll.
    if reduction == "none":
        return grad_loss
    if reduction == "sum":
        return grad_loss.expand_as(nll)
    return grad_loss / target_lengths.to(nll.dtype).clamp_min(1) / nll.shape[0]
