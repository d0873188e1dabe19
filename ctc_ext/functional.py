"""ctc_loss: the drop-in for torch.nn.functional.ctc_loss.

Everything about argument layouts lives here (unbatched input, batch_first, target formats,
lengths given as sequences or tensors, reductions); the operators below it see one layout.
"""

import operator
from typing import Sequence, Union

import torch
from torch import Tensor

from ._ops import ops
from .errors import CTCArgumentError

Lengths = Union[Tensor, Sequence[int], int]

_REDUCTIONS = ("none", "mean", "sum")  # in the order of torch's reduction codes 0, 1, 2
_INTEGER_DTYPES = frozenset(
    {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16, torch.uint32, torch.uint64}
)


def _as_length_tensor(lengths: Lengths, name: str, batch_size: int, device: torch.device) -> Tensor:
    """(N,) int64 on `device`, from a tensor (0-d allowed when N == 1), a sequence or an int."""
    if isinstance(lengths, Tensor):
        if lengths.dtype not in _INTEGER_DTYPES:
            raise CTCArgumentError(f"{name} must have an integer dtype, got {lengths.dtype}")
        if lengths.dim() > 1:
            raise CTCArgumentError(f"{name} must be 1-D of size N = {batch_size}, got shape {tuple(lengths.shape)}")
        if lengths.dim() != 1:
            lengths = lengths.reshape(-1)
    else:
        if isinstance(lengths, int):
            lengths = [lengths]
        try:
            values = [int(v) for v in lengths]
        except (TypeError, ValueError):
            raise CTCArgumentError(f"{name} must be a tensor or a sequence of ints, got {lengths!r}") from None
        if any(int(v) != v for v in lengths):
            raise CTCArgumentError(f"{name} must hold integers, got {lengths!r}")
        lengths = torch.tensor(values, dtype=torch.int64)
    if lengths.numel() != batch_size:
        raise CTCArgumentError(f"{name} must have N = {batch_size} entries, got {lengths.numel()}")
    if lengths.dtype == torch.int64 and lengths.device == device:
        return lengths  # the common case, without the cost of a no-op .to() call
    return lengths.to(device=device, dtype=torch.int64)


def _check_blank(blank: int, num_classes: int) -> int:
    """blank as a Python int in [0, C); any integer-like (numpy integers, 0-d integer tensors) is taken."""
    if type(blank) is not int:
        if isinstance(blank, bool):
            raise TypeError("blank must be an int, got bool")
        try:
            blank = operator.index(blank)
        except TypeError:
            raise TypeError(f"blank must be an int, got {type(blank).__name__}") from None
    if not 0 <= blank < num_classes:
        raise CTCArgumentError(f"blank must be in [0, C) = [0, {num_classes}), got {blank}")
    return blank


def ctc_loss(
    log_probs: Tensor,
    targets: Tensor,
    input_lengths: Lengths,
    target_lengths: Lengths,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
    *,
    batch_first: bool = False,
) -> Tensor:
    r"""The Connectionist Temporal Classification loss, a drop-in for
    :func:`torch.nn.functional.ctc_loss`.

    The input is normalised with log-softmax inside the kernel, so ``log_probs`` may be
    log-probabilities (the result then equals the built-in's, gradient included) or raw logits
    (the result is the loss of ``log_softmax(log_probs)`` and its exact gradient; no separate
    ``log_softmax`` is needed).

    Args:
        log_probs: :math:`(T, N, C)`, or :math:`(N, T, C)` with ``batch_first=True``, or
            :math:`(T, C)` for one unbatched sample. float16, bfloat16, float32 or float64.
        targets: :math:`(N, S)` padded, or 1-D concatenated of length ``sum(target_lengths)``
            (:math:`(S,)` for unbatched input). int32 or int64; labels in ``[0, C)``, never
            ``blank``.
        input_lengths: :math:`(N,)` tensor or sequence of ints, each in ``[0, T]``.
        target_lengths: :math:`(N,)` tensor or sequence of ints.
        blank: index of the blank class, in ``[0, C)``. Default: 0.
        reduction: ``'none'`` gives the :math:`(N,)` losses, ``'sum'`` their sum, ``'mean'``
            divides each loss by ``max(target_length, 1)`` and averages over the batch (NaN for
            an empty batch, like ``torch.mean``). Default: ``'mean'``.
        zero_infinity: turn infinite losses (targets that cannot be aligned) and their
            gradients into zeros. Default: ``False``.
        batch_first: take ``log_probs`` as :math:`(N, T, C)`. Default: ``False``.

    Returns:
        The loss: float64 for float64 input, float32 otherwise.

    Example::

        >>> logits = torch.randn(50, 4, 20, requires_grad=True)      # (T, N, C)
        >>> targets = torch.randint(1, 20, (4, 10))                  # (N, S)
        >>> loss = ctc_ext.ctc_loss(logits, targets, [50, 48, 45, 50], [10, 8, 10, 9])
        >>> loss.backward()
    """
    if not isinstance(log_probs, Tensor):
        raise TypeError(f"log_probs must be a tensor, got {type(log_probs).__name__}")
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a tensor, got {type(targets).__name__}")
    if not log_probs.is_floating_point():
        raise CTCArgumentError(f"log_probs must be floating point, got {log_probs.dtype}")
    if log_probs.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise CTCArgumentError(f"log_probs must be float16, bfloat16, float32 or float64, got {log_probs.dtype}")
    if targets.dtype not in (torch.int32, torch.int64):
        raise CTCArgumentError(f"targets must be int32 or int64, got {targets.dtype}")
    if reduction not in _REDUCTIONS:
        raise CTCArgumentError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")

    unbatched = log_probs.dim() == 2
    if unbatched:
        if targets.dim() != 1:
            raise CTCArgumentError(
                f"for unbatched (T, C) log_probs, targets must be 1-D (S,), got shape {tuple(targets.shape)}"
            )
        logits = log_probs.unsqueeze(1)
        targets = targets.unsqueeze(0)
    elif log_probs.dim() == 3:
        logits = log_probs.transpose(0, 1) if batch_first else log_probs
        if targets.dim() not in (1, 2):
            raise CTCArgumentError(
                f"targets must be (N, S) padded or 1-D concatenated, got shape {tuple(targets.shape)}"
            )
    else:
        layout = "(N, T, C)" if batch_first else "(T, N, C)"
        raise CTCArgumentError(f"log_probs must be {layout} or unbatched (T, C), got shape {tuple(log_probs.shape)}")

    T, N, C = logits.shape
    blank = _check_blank(blank, C)
    if targets.dim() == 2 and targets.shape[0] != N:
        raise CTCArgumentError(f"padded targets must be (N, S) with N = {N}, got shape {tuple(targets.shape)}")
    # Targets and lengths that come from the host stay there: the CUDA op then checks their
    # values on the host (a clear error) before copying them; on the device it checks them
    # without a synchronisation and marks an invalid sample's loss NaN.
    on_host = logits.is_cuda and all(
        not isinstance(value, Tensor) or value.device.type == "cpu"
        for value in (targets, input_lengths, target_lengths)
    )
    values_device = torch.device("cpu") if on_host else logits.device
    input_lengths = _as_length_tensor(input_lengths, "input_lengths", N, values_device)
    target_lengths = _as_length_tensor(target_lengths, "target_lengths", N, values_device)
    if targets.device != values_device:
        targets = targets.to(values_device)

    # Forward, zero_infinity, reduction and (with a gradient) the autograd node: one C++ call
    # (csrc/autograd/ctc_loss_autograd.cpp).
    losses = ops.ctc_loss(
        logits, targets, input_lengths, target_lengths, blank, _REDUCTIONS.index(reduction), zero_infinity
    )
    return losses.squeeze(0) if unbatched and reduction == "none" else losses
