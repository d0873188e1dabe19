"""CTCLoss: the nn.Module form of ctc_ext.ctc_loss, a drop-in for torch.nn.CTCLoss."""

from torch import Tensor, nn

from .functional import Lengths, ctc_loss


class CTCLoss(nn.Module):
    r"""The Connectionist Temporal Classification loss; see :func:`ctc_ext.ctc_loss`.

    Args:
        blank: index of the blank class. Default: 0.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
        zero_infinity: turn infinite losses and their gradients into zeros. Default: ``False``.
        batch_first: take input as :math:`(N, T, C)` instead of :math:`(T, N, C)`. Default: ``False``.

    Example::

        >>> criterion = ctc_ext.CTCLoss(blank=0)
        >>> logits = torch.randn(50, 4, 20, requires_grad=True)      # (T, N, C), raw logits are fine
        >>> loss = criterion(logits, torch.randint(1, 20, (4, 10)), [50] * 4, [10] * 4)
        >>> loss.backward()
    """

    def __init__(self, blank: int = 0, reduction: str = "mean", zero_infinity: bool = False, batch_first: bool = False):
        super().__init__()
        self.blank = blank
        self.reduction = reduction
        self.zero_infinity = zero_infinity
        self.batch_first = batch_first

    def forward(self, log_probs: Tensor, targets: Tensor, input_lengths: Lengths, target_lengths: Lengths) -> Tensor:
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
