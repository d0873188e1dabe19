"""ctc_ext: CTC loss for PyTorch with fused log-softmax and exact logit gradients."""
from ._ops import ops
from .autograd import CTCLossFunction
from .functional import ctc_loss
from .modules import CTCLoss
from .plot import plot_alignment  # imports matplotlib only when called

__all__ = ["CTCLoss", "CTCLossFunction", "ctc_loss", "ops", "plot_alignment"]
__version__ = "0.1.0"
