"""plot_alignment: a picture of the CTC lattice of one sample (needs matplotlib: ctc_ext[plot])."""

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .reference import extended_target, occupancy_reference


def _require_matplotlib():
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("ctc_ext.plot_alignment needs matplotlib: pip install ctc_ext[plot]") from error
    return Figure


def alignment_states(alignment: Tensor, target: Tensor, blank: int = 0) -> Tensor:
    """Maps a frame-level alignment in classes to the states of the extended target.

    Args:
        alignment: (T,) int64 class per frame, as returned by :func:`ctc_ext.forced_align` for
            one sample (entries past the input length, ``-1``, must be cut off first).
        target: (L,) the labels the alignment spells.

    Returns:
        (T,) int64 state ``s`` in ``[0, 2L]`` per frame: ``2k`` for the blank after ``k``
        emitted labels, ``2k - 1`` while the k-th label is emitted (1-based ``k``). A repeat of
        the previous frame's label stays in its state; a new label advances. Raises
        ``ValueError`` when the alignment does not spell ``target``.
    """
    target = target.tolist()
    states = []
    labels_emitted = 0
    previous_class = blank
    for frame_class in alignment.tolist():
        if frame_class == blank:
            states.append(2 * labels_emitted)
        elif frame_class == previous_class:
            states.append(2 * labels_emitted - 1)
        else:
            if labels_emitted >= len(target) or target[labels_emitted] != frame_class:
                raise ValueError(f"alignment {alignment.tolist()} does not spell target {target}")
            labels_emitted += 1
            states.append(2 * labels_emitted - 1)
        previous_class = frame_class
    if labels_emitted != len(target):
        raise ValueError(f"alignment {alignment.tolist()} does not spell target {target}")
    return torch.tensor(states, dtype=torch.int64)


def plot_alignment(
    log_probs: Tensor,
    target: Union[Tensor, Sequence[int]],
    input_length: Optional[int] = None,
    blank: int = 0,
    path: Union[str, Path] = "ctc_alignment.png",
    labels: Optional[Sequence[str]] = None,
    *,
    image: Optional[Tensor] = None,
    title: Optional[str] = None,
    word_spans: Optional[Sequence[Tuple[str, int, int]]] = None,
    dpi: int = 120,
) -> Path:
    r"""Draws the CTC lattice of one sample into a PNG.

    Top to bottom: the input ``image`` if given (stretched over the frames), the occupancy
    lattice (extended target by frame; ``occupancy[t, s]``, the posterior probability that the
    alignment is in state ``s`` at frame ``t``, computed by the float64 reference in
    :mod:`ctc_ext.reference`) with the most likely alignment from :func:`ctc_ext.forced_align`
    drawn on it, and the argmax class of every frame.

    Args:
        log_probs: :math:`(T, C)` scores of one sample, log-probabilities or raw logits (they are
            normalised with ``log_softmax``).
        target: :math:`(L,)` labels of the sample.
        input_length: frames to use, at most ``T``. Default: all ``T``.
        blank: index of the blank class. Default: 0.
        path: where to write the PNG; parent folders are created.
        labels: :math:`C` class names for the axes. Default: class indices, blank as ``ε``.
        image: optional :math:`(H, W)` input drawn above the lattice, its width spanning the frames.
        title: optional figure title.
        word_spans: optional ``(word, start, end)`` frames ``start <= t < end`` of decoded words
            (word timestamps), shaded and labelled on the input (or the lattice without an image).
        dpi: resolution of the PNG.

    Returns:
        The path written.

    Raises:
        ImportError: matplotlib is missing (``pip install ctc_ext[plot]``).
        ValueError: the target cannot be aligned to the frames.

    Example::

        >>> logits = model(x)[:, 0]                      # (T, C) for sample 0
        >>> ctc_ext.plot_alignment(logits, target, path="alignment.png", labels=["ε", "a", "b"])
    """
    Figure = _require_matplotlib()
    import ctc_ext

    log_probs = torch.as_tensor(log_probs).detach().to("cpu", torch.float64)
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs must be (T, C) for one sample, got shape {tuple(log_probs.shape)}")
    num_frames_total, num_classes = log_probs.shape
    num_frames = num_frames_total if input_length is None else int(input_length)
    if not 0 < num_frames <= num_frames_total:
        raise ValueError(f"input_length must be in [1, T = {num_frames_total}], got {input_length}")
    if not 0 <= blank < num_classes:
        raise ValueError(f"blank must be in [0, C = {num_classes}), got {blank}")
    target = torch.as_tensor(target, dtype=torch.int64).reshape(-1).cpu()
    if ((target < 0) | (target >= num_classes) | (target == blank)).any():
        raise ValueError(f"target labels must be in [0, {num_classes}) and not blank ({blank}), got {target.tolist()}")
    word_spans = [(str(word), int(start), int(end)) for word, start, end in (word_spans or [])]
    for word, start, end in word_spans:
        if not 0 <= start < end <= num_frames:
            raise ValueError(f"word span {(word, start, end)} must satisfy 0 <= start < end <= {num_frames} frames")
    if labels is None:
        labels = ["ε" if k == blank else str(k) for k in range(num_classes)]
    elif len(labels) != num_classes:
        raise ValueError(f"labels must name all C = {num_classes} classes, got {len(labels)}")

    log_probs = torch.log_softmax(log_probs[:num_frames], dim=-1)
    occupancy = occupancy_reference(log_probs, target, blank)  # (T, 2L+1)
    alignment, _ = ctc_ext.forced_align(
        log_probs[:, None, :], target[None, :], torch.tensor([num_frames]), torch.tensor([target.numel()]), blank
    )
    path_states = alignment_states(alignment[0, :num_frames].cpu(), target, blank)
    best_classes = log_probs.argmax(dim=-1).tolist()
    extended = extended_target(target, blank).tolist()

    num_states = len(extended)
    width = min(max(6.0, 0.16 * num_frames + 2.0), 30.0)
    heights = ([1.2] if image is not None else []) + [max(1.6, 0.2 * num_states), 0.35]
    figure = Figure(figsize=(width, sum(heights) + 0.9), layout="constrained")
    axes = figure.subplots(len(heights), 1, sharex=True, gridspec_kw={"height_ratios": heights})
    image_axes, lattice_axes, argmax_axes = axes if image is not None else (None, *axes)
    frame_extent = (-0.5, num_frames - 0.5)

    if image_axes is not None:
        image = torch.as_tensor(image).detach().cpu().float()
        image_axes.imshow(
            image.numpy(),
            cmap="gray_r",
            aspect="auto",
            interpolation="nearest",
            extent=(*frame_extent, image.shape[0] - 0.5, -0.5),
        )
        image_axes.set_yticks([])
        image_axes.set_ylabel("input")

    heat_map = lattice_axes.imshow(
        occupancy.T.numpy(),
        cmap="magma",
        vmin=0.0,
        vmax=1.0,
        aspect="auto",
        interpolation="nearest",
        extent=(*frame_extent, num_states - 0.5, -0.5),
    )
    lattice_axes.plot(
        range(num_frames),
        path_states.tolist(),
        color="cyan",
        linewidth=1.4,
        marker=".",
        markersize=4,
        label="forced alignment",
    )
    lattice_axes.set_yticks(range(num_states))
    lattice_axes.set_yticklabels([labels[k] for k in extended], fontsize=8)
    lattice_axes.set_ylabel("extended target")
    lattice_axes.legend(loc="upper right", fontsize=7, framealpha=0.6)
    # Attached to every row so that the frames of all rows stay aligned.
    figure.colorbar(heat_map, ax=list(axes), label="occupancy", pad=0.01, fraction=0.03, aspect=30)

    words_axes = image_axes if image_axes is not None else lattice_axes
    for k, (word, start, end) in enumerate(word_spans):
        words_axes.axvspan(start - 0.5, end - 0.5, color=("tab:green", "tab:blue")[k % 2], alpha=0.25, linewidth=0)
        words_axes.text(
            (start + end - 1) / 2,
            1.0,
            word,
            transform=words_axes.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=9,
            color=("tab:green", "tab:blue")[k % 2],
            fontweight="bold",
        )
        for edge in (start - 0.5, end - 0.5):
            lattice_axes.axvline(edge, color="white", linestyle=":", linewidth=0.8, alpha=0.7)

    font_size = 8 if num_frames <= 80 else 6
    for t, k in enumerate(best_classes):
        argmax_axes.text(
            t,
            0.0,
            labels[k],
            ha="center",
            va="center",
            fontsize=font_size,
            color="lightgray" if k == blank else "black",
        )
    argmax_axes.set_ylim(-0.5, 0.5)
    argmax_axes.set_yticks([])
    argmax_axes.set_ylabel("argmax", rotation=0, ha="right", va="center")
    argmax_axes.set_xlim(*frame_extent)
    argmax_axes.set_xlabel("frame")
    for side in ("top", "right", "left"):
        argmax_axes.spines[side].set_visible(False)
    if title:
        figure.suptitle(title)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path
