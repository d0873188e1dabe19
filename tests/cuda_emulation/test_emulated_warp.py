"""The warp-level collectives of the emulation header (tests/cuda_emulation/cuda_emulation.h).

Expected values follow the definitions of the CUDA C++ Programming Guide ("Warp Shuffle
Functions", "Warp Vote Functions"), written out here lane by lane, independently of the
emulation: lanes are grouped by linear thread index into warps of 32; shuffles work in segments
of `width` lanes; a shuffle source before the segment (up) or past it (down, xor) returns the
caller's own value, xor may read an earlier segment.
"""

import pytest
import torch

pytestmark = pytest.mark.cuda_emulation

SHFL, SHFL_UP, SHFL_DOWN, SHFL_XOR, BALLOT, ANY, ALL, SHFL_XOR_DOUBLE = range(8)


class ReadsMissingLane(Exception):
    """The shuffle reads a lane the (partial) warp does not have: undefined in CUDA."""


def expected(values, op, arg, width):
    values = values.tolist()
    out = []

    def read(warp, lane):
        if lane >= len(warp):
            raise ReadsMissingLane
        return warp[lane]

    for thread, value in enumerate(values):
        warp_begin = thread // 32 * 32
        lanes = min(32, len(values) - warp_begin)
        lane = thread - warp_begin
        segment = lane // width * width
        warp = values[warp_begin : warp_begin + lanes]
        if op == SHFL:
            out.append(read(warp, segment + arg % width))
        elif op == SHFL_UP:
            out.append(read(warp, lane - arg) if lane - arg >= segment else value)
        elif op == SHFL_DOWN:
            out.append(read(warp, lane + arg) if lane + arg < segment + width else value)
        elif op in (SHFL_XOR, SHFL_XOR_DOUBLE):
            source = lane ^ arg
            out.append(read(warp, source) if source < segment + width else value)
        else:
            bits = sum(1 << i for i, v in enumerate(warp) if v & 1)
            full = (1 << lanes) - 1
            out.append(bits if op == BALLOT else int(bits != 0) if op == ANY else int(bits == full))
    return torch.tensor(out, dtype=torch.int64)


@pytest.mark.parametrize("threads", [32, 48, 96])
@pytest.mark.parametrize(
    "op,arg,width",
    [
        (SHFL, 0, 32),
        (SHFL, 7, 32),
        (SHFL, 35, 32),  # the source lane wraps modulo width
        (SHFL, 3, 8),
        (SHFL_UP, 1, 32),
        (SHFL_UP, 5, 16),
        (SHFL_DOWN, 1, 32),
        (SHFL_DOWN, 16, 32),
        (SHFL_DOWN, 3, 4),
        (SHFL_XOR, 1, 32),
        (SHFL_XOR, 16, 32),
        (SHFL_XOR, 31, 32),
        (SHFL_XOR, 2, 4),
        (SHFL_XOR, 8, 4),  # past the segment for some lanes, an earlier segment for others
        (SHFL_XOR_DOUBLE, 4, 32),
    ],
)
def test_shuffles(emulated, threads, op, arg, width):
    values = torch.randperm(1000, generator=torch.Generator().manual_seed(threads + op))[:threads] + 1
    try:
        want = expected(values, op, arg, width)
    except ReadsMissingLane:  # e.g. shuffle down past the 16 lanes of the second warp of 48 threads
        with pytest.raises(RuntimeError, match="outside the mask"):
            emulated.warp_collective(values, op, arg, width, 0)
        return
    got = emulated.warp_collective(values, op, arg, width, 0)
    if op == SHFL_XOR_DOUBLE:
        want = (want.double() + 0.5).long()
    assert torch.equal(got, want)


@pytest.mark.parametrize("threads", [32, 48, 64])
@pytest.mark.parametrize("pattern", ["random", "none", "all"])
@pytest.mark.parametrize("op", [BALLOT, ANY, ALL])
def test_votes(emulated, threads, pattern, op):
    values = {
        "random": torch.randint(0, 2, (threads,), generator=torch.Generator().manual_seed(threads)),
        "none": torch.zeros(threads, dtype=torch.int64),
        "all": torch.ones(threads, dtype=torch.int64),
    }[pattern]
    got = emulated.warp_collective(values, op, 0, 32, 0)
    want = expected(values, op, 0, 32)
    assert torch.equal(got, want)


@pytest.mark.parametrize(
    "misuse,message",
    [
        (1, "lane 5 of the mask did not take part"),
        (2, "the calling lane is not in the mask"),
        (3, "outside the mask"),
    ],
)
def test_misused_collectives_fail_the_launch(emulated, misuse, message):
    values = torch.arange(64, dtype=torch.int64)
    with pytest.raises(RuntimeError, match=message):
        emulated.warp_collective(values, SHFL, 0, 32, misuse)


def test_deterministic_under_repetition(emulated):
    values = torch.arange(96, dtype=torch.int64) * 7 + 3
    first = emulated.warp_collective(values, SHFL_XOR, 5, 32, 0)
    for _ in range(20):
        assert torch.equal(emulated.warp_collective(values, SHFL_XOR, 5, 32, 0), first)
