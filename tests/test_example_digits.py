"""examples/train_digits.py: line composition, the train/held-out split, edit distance, the model's
frame count, and (once ctc_ext has its decoders) a one-epoch run of the script itself."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ctc_ext

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import train_digits  # noqa: E402  (the example is a script, not a package)

HAS_DECODERS = all(hasattr(ctc_ext, name) for name in ("greedy_decode", "beam_search", "forced_align"))


def synthetic_digit_images(num_images=50, seed=0):
    """(images (M, 8, 8) float32 in (0, 1], digits (M,)): strictly positive pixels, so every
    column of a placed digit is non-zero and a misplaced digit cannot hide."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 1.0, size=(num_images, 8, 8)).astype(np.float32), rng.integers(0, 10, num_images)


def test_lines_have_fixed_width_and_valid_targets():
    images, digits = synthetic_digit_images()
    lines = train_digits.compose_lines(
        images, digits, np.arange(len(images)), 64, np.random.default_rng(1), min_digits=3, max_digits=10, max_gap=3
    )
    width = train_digits.line_width(10, 3)
    assert lines.images.shape == (64, 8, width) and lines.images.dtype == torch.float32
    assert lines.targets.shape == lines.image_indices.shape == (64, 10)
    assert lines.target_lengths.min() >= 3 and lines.target_lengths.max() <= 10
    assert (lines.widths <= width).all()
    for n in range(64):
        used = lines.image_indices[n, : lines.target_lengths[n]]
        assert (used >= 0).all() and (lines.image_indices[n, lines.target_lengths[n] :] == -1).all()
        # Classes are digit + 1 (0 is the blank) and padding is blank.
        assert lines.targets[n, : lines.target_lengths[n]].tolist() == (digits[used.numpy()] + 1).tolist()
        assert (lines.targets[n, lines.target_lengths[n] :] == train_digits.BLANK).all()


def test_each_digit_image_sits_at_its_start_column_and_nothing_else_is_drawn():
    images, digits = synthetic_digit_images()
    lines = train_digits.compose_lines(images, digits, np.arange(len(images)), 32, np.random.default_rng(2))
    for n in range(32):
        expected = torch.zeros_like(lines.images[n])
        previous_end = 0
        for k in range(int(lines.target_lengths[n])):
            start = int(lines.digit_starts[n, k])
            assert 0 <= start - previous_end <= 3, "gaps are 0 to max_gap columns"
            expected[:, start : start + 8] = torch.from_numpy(images[lines.image_indices[n, k]])
            previous_end = start + 8
        assert 0 <= int(lines.widths[n]) - previous_end <= 3
        torch.testing.assert_close(lines.images[n], expected, rtol=0, atol=0)


def test_split_is_disjoint_and_complete():
    train_pool, held_out_pool = train_digits.split_images(1797, 0.25, seed=0)
    assert len(held_out_pool) == 449
    assert not set(train_pool.tolist()) & set(held_out_pool.tolist())
    assert sorted(train_pool.tolist() + held_out_pool.tolist()) == list(range(1797))


def test_held_out_lines_use_only_held_out_images_of_the_real_data():
    pytest.importorskip("sklearn", reason="the example's data needs scikit-learn: pip install ctc_ext[examples]")
    images, digits = train_digits.load_digit_images()
    assert images.shape == (1797, 8, 8) and images.min() >= 0 and images.max() <= 1
    train_pool, held_out_pool = train_digits.split_images(len(images), 0.25, seed=0)
    train_lines = train_digits.compose_lines(images, digits, train_pool, 200, np.random.default_rng(0))
    held_out_lines = train_digits.compose_lines(images, digits, held_out_pool, 200, np.random.default_rng(1))
    used_in_training = set(train_lines.image_indices[train_lines.image_indices >= 0].tolist())
    used_held_out = set(held_out_lines.image_indices[held_out_lines.image_indices >= 0].tolist())
    assert used_in_training <= set(train_pool.tolist())
    assert used_held_out <= set(held_out_pool.tolist())
    assert not used_in_training & used_held_out


def test_composition_is_reproducible_from_the_seed():
    images, digits = synthetic_digit_images()
    first, second = (
        train_digits.compose_lines(images, digits, np.arange(50), 8, np.random.default_rng(5)) for _ in range(2)
    )
    assert torch.equal(first.images, second.images) and torch.equal(first.targets, second.targets)


@pytest.mark.parametrize(
    "hypothesis, reference, distance",
    [
        ([], [], 0),
        ([1, 2, 3], [1, 2, 3], 0),
        ([], [1, 2], 2),
        ([1, 2], [], 2),
        ([1, 3, 3], [1, 2, 3], 1),  # one substitution
        ([1, 2, 3, 4], [1, 2, 3], 1),  # one insertion
        ([2, 3], [1, 2, 3], 1),  # one deletion
        ([3, 2, 1], [1, 2, 3], 2),
        ([1, 1, 2, 2], [2, 2, 1, 1], 4),
    ],
)
def test_edit_distance(hypothesis, reference, distance):
    assert train_digits.edit_distance(hypothesis, reference) == distance
    assert train_digits.edit_distance(reference, hypothesis) == distance


def test_model_gives_one_frame_per_two_columns_and_lengths_cover_each_line():
    images, digits = synthetic_digit_images()
    lines = train_digits.compose_lines(images, digits, np.arange(50), 4, np.random.default_rng(3))
    logits = train_digits.LineReader()(lines.images)
    width = lines.images.shape[-1]
    assert logits.shape == ((width + 1) // 2, 4, train_digits.NUM_CLASSES)
    frames = train_digits.LineReader.frame_lengths(lines.widths)
    assert (2 * frames >= lines.widths).all() and (frames <= logits.shape[0]).all()
    # Enough frames for a blank between every pair of (possibly repeated) digits.
    assert (frames >= 2 * lines.target_lengths).all()


def test_one_training_step_with_ctc_ext_matches_the_builtin_loss():
    images, digits = synthetic_digit_images()
    lines = train_digits.compose_lines(images, digits, np.arange(50), 6, np.random.default_rng(4))
    model = train_digits.LineReader().double()
    lines.images = lines.images.double()
    ours = train_digits.training_loss(model, lines, train_digits.ctc_ext_loss(), torch.device("cpu"))
    ours_gradients = torch.autograd.grad(ours, list(model.parameters()))
    builtin = train_digits.training_loss(model, lines, train_digits.builtin_loss(), torch.device("cpu"))
    builtin_gradients = torch.autograd.grad(builtin, list(model.parameters()))
    torch.testing.assert_close(ours, builtin)
    for ours_gradient, builtin_gradient in zip(ours_gradients, builtin_gradients):
        torch.testing.assert_close(ours_gradient, builtin_gradient)


@pytest.mark.skipif(not HAS_DECODERS, reason="needs ctc_ext.greedy_decode, beam_search and forced_align")
def test_script_runs_one_short_epoch_and_writes_both_pictures(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("tqdm")
    pytest.importorskip("matplotlib")
    train_digits.main(
        [
            "--epochs",
            "1",
            "--lines-per-epoch",
            "64",
            "--batch-size",
            "16",
            "--held-out-lines",
            "16",
            "--beam-lines",
            "4",
            "--threads",
            "1",
            "--no-progress",
            "--out-dir",
            str(tmp_path),
        ]
    )
    output = capsys.readouterr().out
    assert "held-out label error rate" in output
    for name in ("alignment.png", "training_curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
