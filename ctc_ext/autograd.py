"""CTCLossFunction: the autograd.Function over the ctc_ext forward and backward ops."""
import contextlib

import torch

from ._ops import ops


def _below_autograd():
    """Dispatch below the ops' own (Python) autograd kernels, which this Function replaces: saves a
    Python round trip per call.  Not under torch.compile, which traces the plain call."""
    if torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return torch._C._AutoDispatchBelowAutograd()


class CTCLossFunction(torch.autograd.Function):
    """Per-sample CTC negative log-likelihood with the exact gradient with respect to the logits.

    ``CTCLossFunction.apply(logits, targets, input_lengths, target_lengths, blank, zero_infinity)``
    takes normalised arguments (the checks and layouts of :func:`ctc_ext.ctc_loss`):

    * ``logits``: (T, N, C) floating, any strides; log-softmax is applied inside the kernel.
    * ``targets``: (N, S) padded or 1-D concatenated, int32 or int64.
    * ``input_lengths``, ``target_lengths``: (N,) int64 on the device of ``logits``.

    Returns (N,) losses, float64 for float64 logits and float32 otherwise.  Samples without any
    valid alignment have an infinite loss, or 0 (with zero gradient) when ``zero_infinity``.
    """

    @staticmethod
    def forward(ctx, logits, targets, input_lengths, target_lengths, blank, zero_infinity):
        # needs_input_grad ignores an enclosing no_grad(); ctc_loss calls ops._ctc_loss_no_grad there.
        keep_log_alpha = ctx.needs_input_grad[0]
        with _below_autograd():
            neg_log_likelihood, log_alpha, log_normalizer = ops.ctc_loss_forward(
                logits, targets, input_lengths, target_lengths, blank, keep_log_alpha)
        ctx.save_for_backward(logits, targets, input_lengths, target_lengths, neg_log_likelihood, log_alpha,
                              log_normalizer)
        ctx.blank = blank
        ctx.zero_infinity = zero_infinity
        if zero_infinity:
            return torch.where(neg_log_likelihood == float("inf"), 0.0, neg_log_likelihood)
        return neg_log_likelihood

    @staticmethod
    def backward(ctx, grad_loss):
        logits, targets, input_lengths, target_lengths, nll, log_alpha, log_normalizer = ctx.saved_tensors
        # The backward op has an autograd formula that raises, so create_graph=True followed by a
        # second backward fails with a clear message instead of returning zeros.
        # (With create_graph=True grad mode is on here and the op keeps that autograd formula.)
        with contextlib.nullcontext() if torch.is_grad_enabled() else _below_autograd():
            grad_logits = ops.ctc_loss_backward(grad_loss, logits, targets, input_lengths, target_lengths, nll,
                                                log_alpha, log_normalizer, ctx.blank, ctx.zero_infinity)
        return grad_logits, None, None, None, None, None
