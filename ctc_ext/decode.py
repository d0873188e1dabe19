"""Decoding and forced alignment: greedy (best path), CTC prefix beam search, Viterbi alignment.

The kernels are C++ on the CPU (csrc/cpu/) and, for greedy decoding and forced alignment,
CUDA (csrc/cuda/decode_kernels.cuh); these functions normalise the arguments the way
:func:`ctc_ext.ctc_loss` does (layouts, lengths as tensors or sequences) and turn the padded
outputs of the operators into per-sample Python lists.  CUDA tensors are decoded on the GPU when
the build has the op's CUDA kernel (results stay on the GPU); otherwise (beam search, or a
CPU-only build) they are moved to the CPU and results come back on the CPU.
"""

import math
from typing import Callable, List, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor

from . import _C
from ._ops import ops
from .errors import CTCArgumentError
from .functional import Lengths, _as_length_tensor, _check_blank

__all__ = ["greedy_decode", "beam_search", "forced_align", "token_spans", "TokenSpan", "PrefixScorer"]

# scorer(prefix_labels, next_label) -> log-score of appending next_label to prefix_labels.
PrefixScorer = Callable[[List[int], int], float]

# The most hypotheses a beam may hold; wider beams are refused.
_MAX_BEAM_WIDTH = 1 << 20

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class TokenSpan(NamedTuple):
    """One emitted token of an alignment: frames ``start <= t < end`` (end exclusive)."""

    label: int
    start: int
    end: int


# ----------------------------------------------------------------------------------------------
# Argument normalisation shared by the public functions.
def _has_cuda_kernel(op_name: str) -> bool:
    """Whether ctc_ext::<op_name> has a CUDA kernel in this build (False for CPU-only builds)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"ctc_ext::{op_name}", "CUDA")


def _time_major(log_probs: Tensor, batch_first: bool, op_name: str) -> Tensor:
    """(T, N, C) detached view of ``log_probs`` after the checks every decoder shares, on the
    device where ctc_ext::<op_name> runs: CUDA tensors stay there when the op has a CUDA kernel,
    everything else goes to the CPU."""
    if not isinstance(log_probs, Tensor):
        raise TypeError(f"log_probs must be a tensor, got {type(log_probs).__name__}")
    if log_probs.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"log_probs must be float16, bfloat16, float32 or float64, got {log_probs.dtype}")
    if log_probs.dim() != 3:
        layout = "(N, T, C)" if batch_first else "(T, N, C)"
        raise ValueError(f"log_probs must be 3-D {layout}, got shape {tuple(log_probs.shape)}")
    if log_probs.shape[2] == 0:
        raise ValueError("log_probs must have at least one class (C > 0)")
    logits = log_probs.detach()
    if batch_first:
        logits = logits.transpose(0, 1)
    if logits.is_cuda and _has_cuda_kernel(op_name):
        return logits
    return logits.cpu()


def _check_positive_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")


def _input_lengths_or_full(input_lengths: Optional[Lengths], logits: Tensor) -> Tensor:
    T, N, _ = logits.shape
    if input_lengths is None:
        return torch.full((N,), T, dtype=torch.int64)
    return _as_length_tensor(input_lengths, "input_lengths", N, torch.device("cpu"))


# ----------------------------------------------------------------------------------------------
def greedy_decode(
    log_probs: Tensor, input_lengths: Optional[Lengths] = None, blank: int = 0, *, batch_first: bool = False
) -> List[Tensor]:
    r"""Best-path decoding: the most likely class of every frame, repeats merged, blanks removed.

    Args:
        log_probs: :math:`(T, N, C)`, or :math:`(N, T, C)` with ``batch_first=True``; raw
            logits or log-probabilities (the argmax is the same). CPU, or CUDA (decoded on the
            GPU; on the CPU in a build without CUDA kernels).
        input_lengths: :math:`(N,)` tensor or sequence of ints in ``[0, T]``. Default: every
            sample has all ``T`` frames.
        blank: index of the blank class. Default: 0.
        batch_first: take ``log_probs`` as :math:`(N, T, C)`. Default: ``False``.

    Returns:
        A list of ``N`` int64 tensors, the decoded labels of each sample, on the device the
        decoding ran on (that of ``log_probs`` when it has a kernel there, else the CPU).

    Example::

        >>> logits = torch.randn(50, 4, 20)                         # (T, N, C)
        >>> hypotheses = ctc_ext.greedy_decode(logits, [50, 48, 45, 50])
        >>> [h.tolist() for h in hypotheses]
    """
    logits = _time_major(log_probs, batch_first, "greedy_decode")
    blank = _check_blank(blank, logits.shape[2])
    # Lengths stay on the CPU: the op checks their values there, without a device round trip.
    lengths = _input_lengths_or_full(input_lengths, logits)
    labels, label_lengths = ops.greedy_decode(logits, lengths, blank)
    return [labels[n, :length] for n, length in enumerate(label_lengths.tolist())]


def beam_search(
    log_probs: Tensor,
    input_lengths: Optional[Lengths] = None,
    beam_width: int = 16,
    blank: int = 0,
    top_k: int = 1,
    *,
    batch_first: bool = False,
    scorer: Optional[PrefixScorer] = None,
    scorer_weight: float = 1.0,
) -> List[List[Tuple[Tensor, float]]]:
    r"""CTC prefix beam search.

    Keeps, for every prefix (collapsed label sequence) in the beam, the probability that the
    frames so far end in a blank and that they end in the prefix's last label, so that all the
    frame paths that collapse to the same prefix are summed.  After the last frame the
    ``top_k`` most likely prefixes are returned.  With a beam wide enough to keep every prefix
    the search is exact: the first hypothesis is the most likely label sequence
    :math:`\arg\max_l p(l \mid x)` and every ``log_prob`` equals ``-ctc_loss`` of its labels
    (``reduction='none'``).  Classes outside the ``beam_width + 2`` most likely of a frame cannot
    start a prefix that survives the pruning, so they are skipped; this shortcut changes no
    result.

    Args:
        log_probs: :math:`(T, N, C)`, or :math:`(N, T, C)` with ``batch_first=True``; raw
            logits or log-probabilities (log-softmax is applied per frame). Any device: the
            search is sequential per sample, so CUDA tensors are copied to the host once and
            decoded there (docs/cuda.md).
        input_lengths: :math:`(N,)` tensor or sequence of ints in ``[0, T]``. Default: every
            sample has all ``T`` frames.
        beam_width: number of prefixes kept after every frame, at least 1. Default: 16.
        blank: index of the blank class. Default: 0.
        top_k: number of hypotheses returned per sample, at least 1. Default: 1.
        batch_first: take ``log_probs`` as :math:`(N, T, C)`. Default: ``False``.
        scorer: optional prefix scorer (e.g. a language model), called as
            ``scorer(prefix_labels: list[int], next_label: int) -> float`` with the log-score of
            appending ``next_label``; the C++ search calls it (with the GIL) once per distinct
            extended prefix.  ``-inf`` forbids the extension; NaN or ``+inf`` raise ValueError.
            Prefixes are then ranked by ``log p_ctc(prefix | x) + scorer_weight * sum of the
            scorer's log-scores along the prefix``, and that combined score is the returned
            ``log_prob``.  The class shortcut above is then a heuristic, as the scorer can favour
            an unlikely class.  For word-level language models, lexicons and hotwords use
            :class:`ctc_ext.CTCDecoder`.
        scorer_weight: weight of the scorer's log-scores. Default: 1.

    Raises:
        ValueError: naming the sample and frame, when a frame holds NaN or ``+inf`` or gives every
            class probability 0; when ``beam_width`` would hold more than 2**20 hypotheses.

    Returns:
        For each of the ``N`` samples, a list of up to ``top_k`` ``(labels, log_prob)`` pairs,
        best first: ``labels`` an int64 CPU tensor, ``log_prob`` a float.  Prefixes of zero
        probability are never returned, so a list may be shorter than ``top_k`` (for example
        when ``T`` is small).  A sample with input length 0 gets ``[(empty, 0.0)]``.

    Example::

        >>> logits = torch.randn(50, 4, 20)                          # (T, N, C)
        >>> results = ctc_ext.beam_search(logits, beam_width=8, top_k=3)
        >>> best_labels, best_log_prob = results[0][0]
    """
    logits = _time_major(log_probs, batch_first, "beam_search")
    blank = _check_blank(blank, logits.shape[2])
    _check_positive_int(beam_width, "beam_width")
    _check_positive_int(top_k, "top_k")
    lengths = _input_lengths_or_full(input_lengths, logits)
    if scorer is not None:
        if not callable(scorer):
            raise TypeError(f"scorer must be callable(prefix_labels, next_label) -> float, got {scorer!r}")
        if isinstance(scorer_weight, bool) or not isinstance(scorer_weight, (int, float)):
            raise TypeError(f"scorer_weight must be a float, got {type(scorer_weight).__name__}")
        if math.isnan(scorer_weight):
            raise ValueError("scorer_weight must be a number, got nan")
    # A search never holds more than beam_width hypotheses, nor more than there are label
    # sequences of at most T labels: no need for wider padded outputs.
    slots = _count_label_sequences(logits.shape[0], logits.shape[2] - 1, limit=min(top_k, beam_width))
    held = _count_label_sequences(logits.shape[0], logits.shape[2] - 1, limit=beam_width)
    if held > _MAX_BEAM_WIDTH:
        raise ValueError(
            f"beam_width {beam_width} would hold up to {held} hypotheses per frame; at most {_MAX_BEAM_WIDTH} "
            "can be held (a beam that wide enumerates label sequences for minutes)"
        )
    if scorer is not None:
        # The shared C++ search, calling the scorer (with the GIL) once per new prefix.  Classes
        # outside a frame's beam_width + 2 likeliest do not extend prefixes: a heuristic here.
        max_tokens = beam_width + 2 if beam_width + 2 < logits.shape[2] else 0
        decoder = _C.PrefixDecoder(
            logits.shape[2],
            blank,
            beam_width,
            slots,
            math.inf,
            -math.inf,
            max_tokens,
            [_C.PythonPrefixScorer(scorer, float(scorer_weight))],
            None,
        )
        return [
            [(torch.tensor(tokens, dtype=torch.int64), score) for tokens, _, _, _, score, _, _ in sample]
            for sample in decoder.decode(logits, lengths, 1)
        ]
    labels, label_lengths, hypothesis_log_probs, num_hypotheses = ops.beam_search(
        logits, lengths, blank, beam_width, slots
    )
    label_lengths = label_lengths.tolist()
    hypothesis_log_probs = hypothesis_log_probs.tolist()
    return [
        [(labels[n, k, : label_lengths[n][k]], hypothesis_log_probs[n][k]) for k in range(count)]
        for n, count in enumerate(num_hypotheses.tolist())
    ]


def _count_label_sequences(max_length: int, num_labels: int, limit: int) -> int:
    """min(limit, number of sequences of at most max_length labels out of num_labels)."""
    count, sequences_of_length = 0, 1
    for _ in range(max_length + 1):
        count += sequences_of_length
        if count >= limit or num_labels == 0:
            break
        sequences_of_length *= num_labels
    return min(count, limit)


# ----------------------------------------------------------------------------------------------
def forced_align(
    log_probs: Tensor,
    targets: Tensor,
    input_lengths: Lengths,
    target_lengths: Lengths,
    blank: int = 0,
    *,
    batch_first: bool = False,
) -> Tuple[Tensor, Tensor]:
    r"""The most likely frame-level path of each known target (Viterbi alignment), batched.

    The Viterbi form of the CTC forward recursion: max instead of logsumexp over the extended
    target ``b l1 b l2 ... b lL b``, with back-pointers.  Every returned path collapses to its
    target and has the largest probability among the paths that do.

    Args:
        log_probs: :math:`(T, N, C)`, or :math:`(N, T, C)` with ``batch_first=True``; raw
            logits or log-probabilities (log-softmax is applied per frame). CPU, or CUDA
            (aligned on the GPU; on the CPU in a build without CUDA kernels).
        targets: :math:`(N, S)` padded, or 1-D concatenated of length ``sum(target_lengths)``;
            int32 or int64; labels in ``[0, C)``, never ``blank``.
        input_lengths: :math:`(N,)` tensor or sequence of ints in ``[0, T]``.
        target_lengths: :math:`(N,)` tensor or sequence of ints.
        blank: index of the blank class. Default: 0.
        batch_first: take ``log_probs`` as :math:`(N, T, C)`. Default: ``False``.

    Returns:
        ``(alignment, frame_log_probs)``, both :math:`(N, T)` whatever the layout of
        ``log_probs``, on the device the alignment ran on (that of ``log_probs`` when it has a
        kernel there, else the CPU).  ``alignment`` (int64) holds the class of the path at every frame: a label,
        ``blank`` where the path is in a blank state, and ``-1`` from the input length on.
        ``frame_log_probs`` (float64 for float64 input, float32 otherwise) holds the
        log-probability of that class at that frame, and ``0`` from the input length on, so
        ``frame_log_probs.sum(1)`` is the log-probability of each path.

    Raises:
        CTCArgumentError: (a ``ValueError`` and a ``RuntimeError``) naming the sample, when its
            log_probs hold NaN or +inf within its input length.
        CTCArgumentError: naming the sample, when a target has no alignment of non-zero probability
            (its length plus its number of adjacent repeated labels exceeds the input length, or
            the frames give probability 0 to what it needs).
        CTCArgumentError: naming the sample, when targets on the GPU hold a label outside ``[0, C)``
            or the blank (labels on the CPU are checked before the alignment, with the op's
            messages).

    Example::

        >>> logits = torch.randn(50, 2, 20)                          # (T, N, C)
        >>> targets = torch.tensor([[3, 5, 5, 7], [2, 9, 0, 0]])     # (N, S) padded
        >>> alignment, frame_log_probs = ctc_ext.forced_align(logits, targets, [50, 40], [4, 2])
        >>> ctc_ext.token_spans(alignment)[0]          # [(label, start, end), ...], end exclusive
    """
    logits = _time_major(log_probs, batch_first, "forced_align")
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a tensor, got {type(targets).__name__}")
    if targets.dtype not in (torch.int32, torch.int64):
        raise CTCArgumentError(f"targets must be int32 or int64, got {targets.dtype}")
    T, N, C = logits.shape
    if targets.dim() not in (1, 2):
        raise CTCArgumentError(f"targets must be (N, S) padded or 1-D concatenated, got shape {tuple(targets.shape)}")
    if targets.dim() == 2 and targets.shape[0] != N:
        raise CTCArgumentError(f"padded targets must be (N, S) with N = {N}, got shape {tuple(targets.shape)}")
    blank = _check_blank(blank, C)
    cpu = torch.device("cpu")
    input_lengths = _as_length_tensor(input_lengths, "input_lengths", N, cpu)
    target_lengths = _as_length_tensor(target_lengths, "target_lengths", N, cpu)
    # Targets may stay on the GPU for a GPU alignment (their labels are then checked there, and
    # a sample with invalid labels gets a NaN score); lengths stay on the CPU, checked there.
    if not logits.is_cuda:
        targets = targets.cpu()
    alignment, frame_log_probs, path_log_prob = ops.forced_align(logits, targets, input_lengths, target_lengths, blank)
    path_log_prob = path_log_prob.cpu()
    invalid = torch.nonzero(path_log_prob.isnan()).flatten().tolist()
    if invalid:
        _check_frames_finite(logits, invalid[0], int(input_lengths[invalid[0]]))
        raise CTCArgumentError(
            f"forced_align: targets of sample {invalid[0]} hold a label outside [0, C) = [0, {C}) "
            f"or the blank ({blank})"
        )
    impossible = torch.nonzero(path_log_prob == -math.inf).flatten().tolist()
    if impossible:
        n = impossible[0]
        _check_frames_finite(logits, n, int(input_lengths[n]))
        raise CTCArgumentError(
            f"forced_align: sample {n} (target length {int(target_lengths[n])}, input length "
            f"{int(input_lengths[n])}) has no alignment of non-zero probability; a target needs at least "
            f"its length plus its number of adjacent repeated labels frames"
            + (f" (samples {impossible} are all impossible)" if len(impossible) > 1 else "")
        )
    return alignment, frame_log_probs


def _check_frames_finite(logits: Tensor, n: int, input_length: int) -> None:
    """Names the NaN or +inf logit that leaves sample n of (T, N, C) logits without a scored path."""
    frames = logits[:input_length, n].detach()
    # -inf is a probability of 0 (fine); NaN or +inf makes the log-softmax of the frame NaN.
    bad = torch.nonzero(frames.isnan() | (frames == math.inf))
    if bad.numel():
        t, c = bad[0].tolist()
        value = "NaN" if frames[t, c].isnan() else "+inf"
        raise CTCArgumentError(
            f"forced_align: log_probs of sample {n} hold {value} (first at frame {t}, class {c}; "
            f"{bad.shape[0]} such values within its input length {input_length}); no path can be scored"
        )


def token_spans(alignment: Tensor, blank: int = 0) -> Union[List[List[TokenSpan]], List[TokenSpan]]:
    r"""The emitted tokens of frame-level alignments, with the frames each one occupies.

    A token is a maximal run of frames holding the same label (neither ``blank`` nor the ``-1``
    padding of :func:`forced_align`); two equal labels in a row are always separated by a blank
    in a CTC path, so each run is one token.

    Args:
        alignment: :math:`(N, T)` or :math:`(T,)` integer tensor, e.g. from :func:`forced_align`
            or a per-frame argmax.
        blank: index of the blank class. Default: 0.

    Returns:
        For :math:`(N, T)` input, a list per sample of :class:`TokenSpan` ``(label, start,
        end)`` with frames ``start <= t < end`` (end exclusive); for :math:`(T,)` input, that
        list for the one sample.
    """
    if not isinstance(alignment, Tensor):
        raise TypeError(f"alignment must be a tensor, got {type(alignment).__name__}")
    if alignment.is_floating_point() or alignment.is_complex() or alignment.dtype == torch.bool:
        raise ValueError(f"alignment must have an integer dtype, got {alignment.dtype}")
    if alignment.dim() not in (1, 2):
        raise ValueError(f"alignment must be (N, T) or (T,), got shape {tuple(alignment.shape)}")
    if isinstance(blank, bool) or not isinstance(blank, int):
        raise TypeError(f"blank must be an int, got {type(blank).__name__}")
    rows = alignment.detach().cpu().to(torch.int64)
    if rows.dim() == 1:
        return _spans_of_row(rows, blank)
    return [_spans_of_row(row, blank) for row in rows]


def _spans_of_row(row: Tensor, blank: int) -> List[TokenSpan]:
    values, counts = torch.unique_consecutive(row, return_counts=True)
    ends = counts.cumsum(0)
    starts = ends - counts
    emitted = (values != blank) & (values != -1)
    return [
        TokenSpan(label, start, end)
        for label, start, end in zip(values[emitted].tolist(), starts[emitted].tolist(), ends[emitted].tolist())
    ]
