"""CTCLoss: the nn.Module form of ctc_ext.ctc_loss, a drop-in for torch.nn.CTCLoss."""

import operator
from typing import List, Union

import torch
from torch import Tensor, nn

from .functional import ctc_loss

# What TorchScript can type of the lengths ctc_loss takes (eager calls take any sequence).
ScriptableLengths = Union[Tensor, List[int]]


class CTCLoss(nn.Module):
    r"""The Connectionist Temporal Classification loss; see :func:`ctc_ext.ctc_loss`.

    Args:
        blank: index of the blank class. Default: 0.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
        zero_infinity: turn infinite losses and their gradients into zeros. Default: ``False``.
        batch_first: take input as :math:`(N, T, C)` instead of :math:`(T, N, C)`. Default: ``False``.

    A module holding a ``CTCLoss`` can be compiled with :func:`torch.jit.script`; the scripted
    form calls the ``ctc_ext::ctc_loss`` operator (lengths as tensors or lists of ints), whose
    C++ checks raise ``RuntimeError`` for bad arguments.

    Example::

        >>> criterion = ctc_ext.CTCLoss(blank=0)
        >>> logits = torch.randn(50, 4, 20, requires_grad=True)      # (T, N, C), raw logits are fine
        >>> loss = criterion(logits, torch.randint(1, 20, (4, 10)), [50] * 4, [10] * 4)
        >>> loss.backward()
    """

    def __init__(self, blank: int = 0, reduction: str = "mean", zero_infinity: bool = False, batch_first: bool = False):
        super().__init__()
        self.blank = operator.index(blank)  # a Python int (numpy integers too), as TorchScript needs
        self.reduction = reduction
        self.zero_infinity = zero_infinity
        self.batch_first = batch_first

    def forward(
        self, log_probs: Tensor, targets: Tensor, input_lengths: ScriptableLengths, target_lengths: ScriptableLengths
    ) -> Tensor:
        if torch.jit.is_scripting():
            return _scripted_ctc_loss(
                log_probs,
                targets,
                input_lengths,
                target_lengths,
                self.blank,
                self.reduction,
                self.zero_infinity,
                self.batch_first,
            )
        return self._eager_forward(log_probs, targets, input_lengths, target_lengths)

    @torch.jit.unused
    def _eager_forward(
        self, log_probs: Tensor, targets: Tensor, input_lengths: ScriptableLengths, target_lengths: ScriptableLengths
    ) -> Tensor:
        return ctc_loss(
            log_probs,
            targets,
            input_lengths,
            target_lengths,
            self.blank,
            self.reduction,
            self.zero_infinity,
            batch_first=self.batch_first,
        )

    def extra_repr(self) -> str:
        return (
            f"blank={self.blank}, reduction={self.reduction!r}, zero_infinity={self.zero_infinity}, "
            f"batch_first={self.batch_first}"
        )


def _length_tensor(lengths: ScriptableLengths, device: torch.device) -> Tensor:
    if isinstance(lengths, Tensor):
        return lengths.reshape(-1).to(device=device, dtype=torch.int64)
    return torch.tensor(lengths, dtype=torch.int64, device=device)


def _scripted_ctc_loss(
    log_probs: Tensor,
    targets: Tensor,
    input_lengths: ScriptableLengths,
    target_lengths: ScriptableLengths,
    blank: int,
    reduction: str,
    zero_infinity: bool,
    batch_first: bool,
) -> Tensor:
    """The layouts of ctc_ext.ctc_loss in TorchScript; the operator checks the rest."""
    reductions = ["none", "mean", "sum"]  # torch's reduction codes 0, 1, 2
    if reduction not in reductions:
        raise RuntimeError("reduction must be one of ('none', 'mean', 'sum'), got " + reduction)
    unbatched = log_probs.dim() == 2
    if unbatched:
        logits = log_probs.unsqueeze(1)
        targets = targets.unsqueeze(0)
    elif batch_first:
        logits = log_probs.transpose(0, 1)
    else:
        logits = log_probs
    losses = torch.ops.ctc_ext.ctc_loss(
        logits,
        targets.to(logits.device),
        _length_tensor(input_lengths, logits.device),
        _length_tensor(target_lengths, logits.device),
        blank,
        reductions.index(reduction),
        zero_infinity,
    )
    if unbatched and reduction == "none":
        return losses.squeeze(0)
    return losses
