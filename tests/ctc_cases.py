"""Shared builders for the test suite: random CTC problems in every layout the API accepts.

A plain module rather than conftest.py: tests/cuda_emulation has a conftest of its own, and
`from conftest import ...` would pick whichever comes first on sys.path.
"""

import contextlib
import dataclasses
from typing import List

import torch


@dataclasses.dataclass
class CtcBatch:
    logits: torch.Tensor  # (T, N, C)
    padded_targets: torch.Tensor  # (N, S), padding beyond each target length is junk (never read)
    input_lengths: List[int]  # (N,)
    target_lengths: List[int]  # (N,)
    blank: int

    @property
    def concatenated_targets(self) -> torch.Tensor:
        """1-D targets of length sum(target_lengths)."""
        return torch.cat([row[:length] for row, length in zip(self.padded_targets, self.target_lengths)])


def random_labels(generator, shape, num_classes, blank):
    """Labels in [0, C) other than blank, repeats included."""
    labels = torch.randint(0, num_classes - 1, shape, generator=generator)
    return labels + (labels >= blank).long()


def make_batch(
    T=20,
    N=5,
    C=6,
    S=6,
    blank=0,
    dtype=torch.float64,
    seed=0,
    input_lengths=None,
    target_lengths=None,
    repeat_labels=False,
    device="cpu",
) -> CtcBatch:
    """A random batch with ragged lengths; the first sample always uses the full T and S.

    The values are drawn on the CPU (the same numbers whatever the device), then the logits and
    targets are moved to `device`; the lengths stay Python lists."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, N, C, generator=generator, dtype=torch.float64).mul_(2).to(dtype)
    if input_lengths is None:
        input_lengths = [T] + torch.randint(max(T // 2, 0), T + 1, (N - 1,), generator=generator).tolist()
    if target_lengths is None:
        target_lengths = [S] + torch.randint(0, S + 1, (N - 1,), generator=generator).tolist()
    padded = random_labels(generator, (N, S), C, blank)
    if repeat_labels and S >= 2:
        padded[:, 1] = padded[:, 0]  # adjacent repeats need a blank between them
    # Junk in the padding must never be read: make it out of range on purpose.
    for n, length in enumerate(target_lengths):
        padded[n, length:] = C + 7
    return CtcBatch(logits.to(device), padded.to(device), list(input_lengths), list(target_lengths), blank)


def builtin_loss(logits, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False):
    """torch.nn.functional.ctc_loss on log_softmax of the logits, with padding made valid."""
    if targets.dim() == 2:
        targets = targets.clamp(0, logits.shape[-1] - 1)
    return torch.nn.functional.ctc_loss(
        logits.log_softmax(-1),
        targets,
        input_lengths,
        target_lengths,
        blank=blank,
        reduction=reduction,
        zero_infinity=zero_infinity,
    )


MANTISSA_BITS = {torch.float16: 10, torch.bfloat16: 7}
SMALLEST_SUBNORMAL_EXPONENT = {torch.float16: -24, torch.bfloat16: -133}


def unit_in_last_place(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The spacing of `dtype` numbers around each float64 value: the size of one rounding step."""
    exponent = torch.floor(torch.log2(values.abs().clamp_min(1e-300)))
    spacing = torch.exp2(exponent - MANTISSA_BITS[dtype])
    return spacing.clamp_min(2.0 ** SMALLEST_SUBNORMAL_EXPONENT[dtype])


@contextlib.contextmanager
def forced_kernel_path(isa, schedule):
    """The CPU kernels on instruction set `isa` and `schedule` inside the block ("" for automatic)."""
    import ctc_ext  # noqa: F401  (registers the op)

    torch.ops.ctc_ext._set_cpu_kernel_path(isa, schedule)
    try:
        yield
    finally:
        torch.ops.ctc_ext._set_cpu_kernel_path("", "")
