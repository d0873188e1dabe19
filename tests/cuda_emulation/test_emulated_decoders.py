"""The CUDA greedy decoder and forced aligner (csrc/cuda/decode_kernels.cuh, decode_host.h),
executed on the CPU through the emulation header.

The CPU ops (ctc_ext.ops.greedy_decode / forced_align, themselves tested against brute force in
tests/test_decode.py) are the reference, and the CUDA kernels must reproduce them bit for bit:
the same argmax tie rule, the same Viterbi comparisons and back-pointers, the same normaliser.
Run alone with `pytest -m cuda_emulation`.
"""

import pytest
import torch

import ctc_ext

pytestmark = pytest.mark.cuda_emulation

SMALL_GPU = 2  # multiprocessor count for the argmax grid: grid-stride loops run


def random_targets(generator, N, S, C, blank, repeats=False):
    labels = torch.tensor([c for c in range(C) if c != blank])
    targets = labels[torch.randint(0, labels.numel(), (N, S), generator=generator)]
    if repeats:
        targets[:, 1::2] = targets[:, 0::2][:, : targets[:, 1::2].shape[1]]  # adjacent equal labels
    return targets


def assert_greedy_equal(emulated, logits, input_lengths, blank, multiprocessor_count=SMALL_GPU):
    want_labels, want_lengths = ctc_ext.ops.greedy_decode(logits, input_lengths, blank)
    got_labels, got_lengths = emulated.greedy_decode(logits, input_lengths, blank, multiprocessor_count)
    assert torch.equal(got_lengths, want_lengths)
    assert torch.equal(got_labels, want_labels)
    return got_labels, got_lengths


def assert_align_equal(emulated, logits, targets, input_lengths, target_lengths, blank):
    want = ctc_ext.ops.forced_align(logits, targets, input_lengths, target_lengths, blank)
    got = emulated.forced_align(logits, targets, input_lengths, target_lengths, blank)
    for name, g, w in zip(("alignment", "frame_log_probs", "path_log_prob"), got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, name
        # bitwise: equal values and equal -inf, no tolerance
        assert torch.equal(g, w), f"{name}: emulated CUDA {g} vs CPU {w}"
    return got


# ---------------------------------------------------------------------------------------------
# greedy_decode


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("blank", [0, 4])
def test_greedy_matches_cpu_op_with_ragged_lengths(emulated, dtype, blank):
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(40, 5, 7, generator=generator).to(dtype)
    input_lengths = torch.tensor([40, 33, 1, 0, 17])
    assert_greedy_equal(emulated, logits, input_lengths, blank)


def test_greedy_ties_pick_the_first_largest_class_like_the_cpu_op(emulated):
    # Logits in {0, 1, 2}: most frames have tied maxima, and repeats and blanks are frequent.
    generator = torch.Generator().manual_seed(2)
    logits = torch.randint(0, 3, (60, 4, 5), generator=generator).to(torch.float32)
    labels, lengths = assert_greedy_equal(emulated, logits, torch.tensor([60, 60, 45, 30]), blank=1)
    assert (lengths > 0).all()
    # the tie rule matters here: taking the last largest class (the first one of the classes in
    # reverse order, mapped back) decodes differently
    flipped = ctc_ext.ops.greedy_decode(logits.flip(2), torch.tensor([60, 60, 45, 30]), 3)[0]
    assert not torch.equal(torch.where(flipped >= 0, 4 - flipped, flipped), labels)


def test_greedy_nan_and_infinite_frames_match_cpu_op(emulated):
    logits = torch.randn(20, 3, 6, generator=torch.Generator().manual_seed(3))
    logits[2, 0, 4] = float("nan")  # NaN wins the argmax, like at::argmax
    logits[5, 1, :] = float("-inf")  # all -inf: class 0
    logits[7, 2, 3] = float("inf")
    logits[8, 2, [1, 5]] = float("nan")  # the first NaN wins
    assert_greedy_equal(emulated, logits, torch.tensor([20, 20, 20]), blank=0)


@pytest.mark.parametrize("C", [300, 3000])
def test_greedy_ties_and_nans_across_warps_pick_the_lowest_class_like_the_cpu_op(emulated, C):
    # 128 or 256 threads per row: the argmax tree combines candidates of several warps, whose
    # tied maxima and NaNs lie in different warps (class k is first seen by thread k % threads)
    generator = torch.Generator().manual_seed(C + 1)
    logits = torch.randint(0, 4, (30, 3, C), generator=generator).to(torch.float32)
    logits[:, :, C - 2] = 3  # a tie of the last classes' thread with the others, every frame
    logits[4, 0, [C - 1, 200, 131]] = float("nan")  # the lowest NaN wins, found by another warp
    logits[9, 1, :] = float("-inf")
    logits[9, 1, [C - 1, 97]] = 5.0
    labels, _ = assert_greedy_equal(emulated, logits, torch.tensor([30, 30, 21]), blank=0)
    assert (labels >= 0).any()


@pytest.mark.parametrize("C", [3, 40, 300, 3000])
def test_greedy_many_classes_and_grid_stride_match_cpu_op(emulated, C):
    # C above the threads of a row and rows beyond the grid: both strided loops run.
    generator = torch.Generator().manual_seed(C)
    logits = torch.randn(25, 3, C, generator=generator, dtype=torch.float64)
    for multiprocessor_count in (1, 4):
        assert_greedy_equal(
            emulated, logits, torch.tensor([25, 11, 24]), blank=C - 1, multiprocessor_count=multiprocessor_count
        )


def test_greedy_strided_logits_match_cpu_op(emulated):
    generator = torch.Generator().manual_seed(5)
    batch_major = torch.randn(4, 30, 9, generator=generator)
    assert_greedy_equal(emulated, batch_major.transpose(0, 1), torch.tensor([30, 29, 2, 15]), blank=2)
    class_strided = torch.randn(9, 30, 4, generator=generator).permute(1, 2, 0)  # (T, N, C), class stride != 1
    assert_greedy_equal(emulated, class_strided, torch.tensor([30, 29, 2, 15]), blank=0)


def test_greedy_empty_shapes(emulated):
    labels, lengths = assert_greedy_equal(emulated, torch.randn(0, 3, 5), torch.zeros(3, dtype=torch.long), 0)
    assert labels.shape == (3, 0) and lengths.tolist() == [0, 0, 0]
    labels, lengths = assert_greedy_equal(emulated, torch.randn(7, 0, 5), torch.zeros(0, dtype=torch.long), 0)
    assert labels.shape == (0, 7) and lengths.shape == (0,)


def test_greedy_invalid_lengths_are_marked_on_the_device(emulated):
    # The emulated "device" is the CPU, so the host checks are skipped and the kernel must mark
    # an out-of-range input length (-1) without reading outside the logits.
    logits = torch.randn(10, 3, 4, generator=torch.Generator().manual_seed(6))
    labels, lengths = emulated.greedy_decode(logits, torch.tensor([10, 11, -1]), 0, SMALL_GPU)
    assert lengths[1:].tolist() == [-1, -1]
    assert (labels[1:] == -1).all()
    want_labels, want_lengths = ctc_ext.ops.greedy_decode(logits[:, :1], torch.tensor([10]), 0)
    assert lengths[0] == want_lengths[0] and torch.equal(labels[:1], want_labels)


def test_greedy_is_deterministic(emulated):
    logits = torch.randint(0, 2, (50, 6, 33), generator=torch.Generator().manual_seed(7)).double()
    lengths = torch.tensor([50, 49, 10, 0, 33, 50])
    first = emulated.greedy_decode(logits, lengths, 3, 1)
    for multiprocessor_count in (1, 3, 64):
        again = emulated.greedy_decode(logits, lengths, 3, multiprocessor_count)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


# ---------------------------------------------------------------------------------------------
# forced_align


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("padded", [True, False])
def test_align_matches_cpu_op_with_ragged_lengths(emulated, dtype, padded):
    generator = torch.Generator().manual_seed(10)
    N, T, C, S = 5, 30, 8, 9
    logits = torch.randn(T, N, C, generator=generator, dtype=torch.float64).to(dtype)
    input_lengths = torch.tensor([30, 25, 12, 9, 30])
    target_lengths = torch.tensor([9, 6, 3, 1, 0])
    targets = random_targets(generator, N, S, C, blank=0)
    if not padded:
        targets = torch.cat([targets[n, : target_lengths[n]] for n in range(N)])
    alignment, _, path_log_prob = assert_align_equal(emulated, logits, targets, input_lengths, target_lengths, 0)
    assert torch.isfinite(path_log_prob).all()
    assert (alignment[3, 9:] == -1).all() and (alignment[0] >= 0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_align_blank_not_zero_repeats_and_int32_targets_match_cpu_op(emulated, dtype):
    generator = torch.Generator().manual_seed(11)
    N, T, C, S = 4, 24, 6, 7
    blank = 3
    logits = torch.randn(T, N, C, generator=generator, dtype=torch.float64).to(dtype)
    targets = random_targets(generator, N, S, C, blank, repeats=True).to(torch.int32)
    assert_align_equal(emulated, logits, targets, torch.tensor([24, 20, 14, 24]), torch.tensor([7, 6, 4, 2]), blank)


def test_align_ties_break_like_the_cpu_op(emulated):
    # Equal logits everywhere: every path ties, so the alignment is decided by the tie rule alone
    # (stay before advance before skip).  Quantised logits add partial ties.
    N, T, C = 3, 16, 4
    flat = torch.zeros(T, N, C, dtype=torch.float64)
    targets = torch.tensor([[1, 2, 2, 3], [1, 1, 1, 1], [3, 2, 1, 0]])
    assert_align_equal(emulated, flat, targets, torch.tensor([16, 16, 13]), torch.tensor([4, 4, 3]), 0)
    quantised = torch.randint(0, 2, (T, N, C), generator=torch.Generator().manual_seed(12)).double()
    assert_align_equal(emulated, quantised, targets, torch.tensor([16, 16, 13]), torch.tensor([4, 4, 3]), 0)


def test_align_empty_targets_and_empty_inputs_match_cpu_op(emulated):
    logits = torch.randn(6, 3, 5, generator=torch.Generator().manual_seed(13))
    targets = torch.tensor([[1, 2], [1, 2], [1, 2]])
    alignment, frame_log_probs, path_log_prob = assert_align_equal(
        emulated, logits, targets, torch.tensor([6, 0, 0]), torch.tensor([0, 0, 2]), 0
    )
    assert (alignment[0] == 0).all()  # all blank
    assert path_log_prob[1] == 0 and path_log_prob[2] == float("-inf")


def test_align_impossible_samples_get_minus_inf_like_the_cpu_op(emulated):
    generator = torch.Generator().manual_seed(14)
    T, N, C = 8, 4, 5
    logits = torch.randn(T, N, C, generator=generator)
    logits[:, 3, 2] = float("-inf")  # sample 3 needs class 2, which has probability 0
    targets = torch.tensor(
        [
            [1, 2, 3, 4, 1, 2, 3, 4, 1],  # longer than its input
            [1, 1, 1, 1, 1, 0, 0, 0, 0],  # 5 repeats need 9 frames
            [1, 2, 3, 0, 0, 0, 0, 0, 0],  # possible
            [1, 2, 3, 0, 0, 0, 0, 0, 0],
        ]
    )  # zero probability
    alignment, frame_log_probs, path_log_prob = assert_align_equal(
        emulated, logits, targets, torch.tensor([8, 8, 8, 8]), torch.tensor([9, 5, 3, 3]), 0
    )
    assert path_log_prob.isneginf().tolist() == [True, True, False, True]
    assert (alignment[[0, 1, 3]] == -1).all() and (frame_log_probs[[0, 1, 3]] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_align_long_targets_wider_than_a_block_match_cpu_op(emulated, dtype):
    # 2 S + 1 = 301 states: more than the 256 threads of a block, so threads stride over states.
    generator = torch.Generator().manual_seed(15)
    N, T, C, S = 2, 170, 30, 150
    logits = torch.randn(T, N, C, generator=generator, dtype=torch.float64).to(dtype)
    targets = random_targets(generator, N, S, C, blank=0)
    _, _, path_log_prob = assert_align_equal(
        emulated, logits, targets, torch.tensor([170, 160]), torch.tensor([150, 140]), 0
    )
    assert torch.isfinite(path_log_prob).all()


def test_align_strided_and_batch_first_logits_match_cpu_op(emulated):
    generator = torch.Generator().manual_seed(16)
    N, T, C = 3, 20, 6
    batch_major = torch.randn(N, T, C, generator=generator)
    targets = random_targets(generator, N, 5, C, blank=0)
    args = (targets, torch.tensor([20, 17, 9]), torch.tensor([5, 4, 2]), 0)
    assert_align_equal(emulated, batch_major.transpose(0, 1), *args)
    class_strided = torch.randn(C, T, N, generator=generator).permute(1, 2, 0)
    assert_align_equal(emulated, class_strided, *args)


def test_align_invalid_labels_are_marked_on_the_device(emulated):
    # Host checks are skipped on the emulated device: the kernel marks the sample NaN and leaves
    # its rows untouched, while valid samples are aligned as usual.
    generator = torch.Generator().manual_seed(17)
    logits = torch.randn(10, 3, 5, generator=generator, dtype=torch.float64)
    targets = torch.tensor([[1, 2, 3], [1, 7, 2], [0, 1, 2]])  # label 7 >= C; blank 0
    alignment, frame_log_probs, path_log_prob = emulated.forced_align(
        logits, targets, torch.tensor([10, 10, 10]), torch.tensor([3, 3, 3]), 0
    )
    assert path_log_prob[1:].isnan().all()
    assert (alignment[1:] == -1).all() and (frame_log_probs[1:] == 0).all()
    want = ctc_ext.ops.forced_align(logits[:, :1], targets[:1], torch.tensor([10]), torch.tensor([3]), 0)
    assert torch.equal(alignment[:1], want[0]) and torch.equal(path_log_prob[:1], want[2])
    _, _, bad_length = emulated.forced_align(
        logits, targets[:, :2].clone().fill_(1), torch.tensor([10, 11, -1]), torch.tensor([2, 2, 2]), 0
    )
    assert bad_length[1:].isnan().all() and torch.isfinite(bad_length[0])


def test_align_empty_batch(emulated):
    got = emulated.forced_align(
        torch.randn(5, 0, 4),
        torch.zeros(0, 3, dtype=torch.long),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, dtype=torch.long),
        0,
    )
    assert [tuple(x.shape) for x in got] == [(0, 5), (0, 5), (0,)]


def test_align_is_deterministic(emulated):
    generator = torch.Generator().manual_seed(18)
    logits = torch.randint(0, 3, (40, 3, 7), generator=generator).float()
    targets = random_targets(generator, 3, 12, 7, blank=0, repeats=True)
    args = (logits, targets, torch.tensor([40, 35, 30]), torch.tensor([12, 10, 8]), 0)
    first = emulated.forced_align(*args)
    again = emulated.forced_align(*args)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
