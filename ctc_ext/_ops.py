"""Loads the compiled operators and registers what Python must add to them.

The C++ library defines the schemas (csrc/ops.cpp) and the CPU / CUDA kernels.  Here we add
the fake (meta) implementations, which torch.compile, torch.export and opcheck use to know
output shapes without running a kernel.  Autograd of every loss op is in C++
(csrc/autograd/ctc_loss_autograd.cpp), where functorch transforms can use it.
"""

import torch

from . import _C  # noqa: F401  (loading the library registers torch.ops.ctc_ext.*)

ops = torch.ops.ctc_ext


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute in, and of the loss: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def log_alpha_numel(max_input_length: int, batch_size: int, num_target_slots: int) -> int:
    # Mirrors ctc_ext::log_alpha_numel in csrc/ctc_math.h: a (T, 2 L_n + 1) block per sample.
    return max_input_length * (2 * num_target_slots + batch_size)


def _check_not_partly_meta(*tensors):
    # A meta tensor among real ones sends the call here (Meta outranks CPU in dispatch), and
    # these kernels return uninitialised tensors on the real device: refuse the mix instead.
    metas = [t.is_meta for t in tensors]
    torch._check(
        all(metas) or not any(metas),
        lambda: (
            "ctc_ext: tensors on the meta device can only be mixed with other meta tensors, got "
            + ", ".join(str(t.device) for t in tensors)
        ),
    )


@torch.library.register_fake("ctc_ext::ctc_loss_forward")
def _ctc_loss_forward_fake(logits, targets, input_lengths, target_lengths, blank, keep_log_alpha):
    _check_not_partly_meta(logits, targets, input_lengths, target_lengths)
    torch._check(logits.dim() == 3, lambda: f"logits must be 3-D (T, N, C), got {tuple(logits.shape)}")
    torch._check(targets.dim() in (1, 2), lambda: "targets must be 1-D or 2-D")
    T, N, _ = logits.shape
    acc = accumulate_dtype(logits.dtype)
    neg_log_likelihood = logits.new_empty((N,), dtype=acc)
    alpha_numel = log_alpha_numel(T, N, targets.numel()) if keep_log_alpha else 0
    log_alpha = logits.new_empty((alpha_numel,), dtype=acc)
    log_normalizer = logits.new_empty((N, T), dtype=acc)
    return neg_log_likelihood, log_alpha, log_normalizer


@torch.library.register_fake("ctc_ext::ctc_loss_backward")
def _ctc_loss_backward_fake(
    grad_nll,
    logits,
    targets,
    input_lengths,
    target_lengths,
    neg_log_likelihood,
    log_alpha,
    log_normalizer,
    blank,
    zero_infinity,
):
    _check_not_partly_meta(
        grad_nll, logits, targets, input_lengths, target_lengths, neg_log_likelihood, log_alpha, log_normalizer
    )
    torch._check(logits.dim() == 3, lambda: f"logits must be 3-D (T, N, C), got {tuple(logits.shape)}")
    return torch.empty_like(logits)


@torch.library.register_fake("ctc_ext::ctc_loss")
def _ctc_loss_fake(logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity):
    _check_not_partly_meta(logits, targets, input_lengths, target_lengths)
    torch._check(logits.dim() == 3, lambda: f"logits must be 3-D (T, N, C), got {tuple(logits.shape)}")
    torch._check(reduction in (0, 1, 2), lambda: f"reduction must be 0, 1 or 2, got {reduction}")
    shape = (logits.shape[1],) if reduction == 0 else ()
    return logits.new_empty(shape, dtype=accumulate_dtype(logits.dtype))


# Every decode op has outputs of static shape, so torch.compile and
# torch.export can trace through them.
@torch.library.register_fake("ctc_ext::greedy_decode")
def _greedy_decode_fake(logits, input_lengths, blank):
    _check_not_partly_meta(logits, input_lengths)
    torch._check(logits.dim() == 3, lambda: f"logits must be 3-D (T, N, C), got {tuple(logits.shape)}")
    T, N, _ = logits.shape
    return logits.new_empty((N, T), dtype=torch.int64), logits.new_empty((N,), dtype=torch.int64)


@torch.library.register_fake("ctc_ext::beam_search")
def _beam_search_fake(logits, input_lengths, blank, beam_width, top_k):
    _check_not_partly_meta(logits, input_lengths)
    torch._check(logits.dim() == 3, lambda: f"logits must be 3-D (T, N, C), got {tuple(logits.shape)}")
    torch._check(beam_width >= 1, lambda: f"beam_width must be at least 1, got {beam_width}")
    torch._check(top_k >= 1, lambda: f"top_k must be at least 1, got {top_k}")
    T, N, _ = logits.shape
    return (
        logits.new_empty((N, top_k, T), dtype=torch.int64),
        logits.new_empty((N, top_k), dtype=torch.int64),
        logits.new_empty((N, top_k), dtype=accumulate_dtype(logits.dtype)),
        logits.new_empty((N,), dtype=torch.int64),
    )


@torch.library.register_fake("ctc_ext::forced_align")
def _forced_align_fake(logits, targets, input_lengths, target_lengths, blank):
    _check_not_partly_meta(logits, targets, input_lengths, target_lengths)
    torch._check(logits.dim() == 3, lambda: f"logits must be 3-D (T, N, C), got {tuple(logits.shape)}")
    T, N, _ = logits.shape
    acc = accumulate_dtype(logits.dtype)
    return (
        logits.new_empty((N, T), dtype=torch.int64),
        logits.new_empty((N, T), dtype=acc),
        logits.new_empty((N,), dtype=acc),
    )
