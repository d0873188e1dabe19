"""ctc_ext: CTC loss for PyTorch with fused log-softmax and exact logit gradients."""

from ._ops import ops
from .autograd import CTCLossFunction
from .decode import TokenSpan, beam_search, forced_align, greedy_decode, token_spans
from .decoder import CTCDecoder, CTCDecoderStream, Hypothesis, WordSpan
from .errors import CTCArgumentError
from .functional import ctc_loss
from .modules import CTCLoss
from .plot import plot_alignment  # imports matplotlib only when called

__all__ = [
    "CTCArgumentError",
    "CTCDecoder",
    "CTCDecoderStream",
    "CTCLoss",
    "CTCLossFunction",
    "Hypothesis",
    "TokenSpan",
    "WordSpan",
    "beam_search",
    "ctc_loss",
    "forced_align",
    "greedy_decode",
    "ops",
    "plot_alignment",
    "token_spans",
]
__version__ = "0.1.0"
