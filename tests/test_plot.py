"""ctc_ext.reference (the float64 lattice behind the pictures) and ctc_ext.plot_alignment."""

import sys

import pytest
import torch
import torch.nn.functional as F

import ctc_ext
from ctc_ext.plot import alignment_states
from ctc_ext.reference import ctc_lattice_reference, extended_target, occupancy_reference

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# (frames, target): plain, repeated labels (which forbid the skip), a single frame, an empty
# target, and the tightest fit (frames = labels + repeats).
CASES = [
    (12, [1, 2, 3]),
    (10, [2, 2, 3, 3]),
    (1, [4]),
    (6, []),
    (7, [1, 1, 2, 2]),
]


def random_logits(frames, num_classes=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(frames, num_classes, generator=generator, dtype=torch.float64) * 2


@pytest.mark.parametrize("frames, target", CASES)
@pytest.mark.parametrize("blank", [0, 4])
def test_reference_loss_equals_builtin(frames, target, blank):
    target = [label if blank == 0 else label - 1 for label in target]  # keep labels off the blank
    logits = random_logits(frames)
    _, _, neg_log_likelihood = ctc_lattice_reference(logits, torch.tensor(target), blank)
    builtin = F.ctc_loss(
        logits.log_softmax(-1)[:, None],
        torch.tensor([target + [1 if blank else 2]]),
        [frames],
        [len(target)],
        blank=blank,
        reduction="none",
    )
    torch.testing.assert_close(neg_log_likelihood, builtin[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("frames, target", CASES)
def test_alpha_beta_give_the_same_likelihood_at_every_frame(frames, target):
    logits = random_logits(frames, seed=1)
    log_alpha, log_beta, neg_log_likelihood = ctc_lattice_reference(logits, torch.tensor(target))
    emissions = logits.log_softmax(-1)[:, extended_target(torch.tensor(target))]
    per_frame = torch.logsumexp(log_alpha + log_beta - emissions, dim=1)  # (T,) log p(l|x) from frame t
    torch.testing.assert_close(
        per_frame, torch.full((frames,), -neg_log_likelihood.item(), dtype=torch.float64), rtol=1e-12, atol=1e-12
    )
    occupancy = occupancy_reference(logits, torch.tensor(target))
    torch.testing.assert_close(occupancy.sum(1), torch.ones(frames, dtype=torch.float64))


def test_occupancies_give_the_builtin_logit_gradient():
    """d nll / d x[t, k] = softmax(x)[t, k] - sum of the occupancies of the states labelled k."""
    frames, target = 15, torch.tensor([3, 1, 1, 4])
    logits = random_logits(frames, seed=2).requires_grad_()
    F.ctc_loss(logits.log_softmax(-1)[:, None], target[None], [frames], [4], reduction="sum").backward()
    occupancy = occupancy_reference(logits, target)
    per_class = torch.zeros(frames, 5, dtype=torch.float64).index_add_(1, extended_target(target), occupancy)
    torch.testing.assert_close(logits.softmax(-1).detach() - per_class, logits.grad)


def test_reference_reports_an_impossible_alignment():
    logits = random_logits(3)
    _, _, neg_log_likelihood = ctc_lattice_reference(logits, torch.tensor([1, 1, 2]))  # needs 4 frames
    assert neg_log_likelihood == float("inf")
    with pytest.raises(ValueError, match="cannot be aligned"):
        occupancy_reference(logits, torch.tensor([1, 1, 2]))


@pytest.mark.parametrize(
    "alignment, target, states",
    [
        ([0, 1, 1, 0, 2], [1, 2], [0, 1, 1, 2, 3]),
        ([1, 0, 1, 1, 0], [1, 1], [1, 2, 3, 3, 4]),  # a repeat needs the blank between
        ([2, 3, 3, 3], [2, 3], [1, 3, 3, 3]),  # label to label without a blank
        ([0, 0, 0], [], [0, 0, 0]),
    ],
)
def test_alignment_states(alignment, target, states):
    assert alignment_states(torch.tensor(alignment), torch.tensor(target)).tolist() == states


@pytest.mark.parametrize("alignment, target", [([1, 1], [1, 1]), ([0, 2, 0], [1]), ([1, 0], [1, 2])])
def test_alignment_states_rejects_an_alignment_of_another_target(alignment, target):
    with pytest.raises(ValueError, match="does not spell"):
        alignment_states(torch.tensor(alignment), torch.tensor(target))


def test_plot_alignment_names_the_extra_when_matplotlib_is_missing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` raise ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install ctc_ext\[plot\]"):
        ctc_ext.plot_alignment(random_logits(6), [1, 2], path=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_length": 0}, "input_length"),
        ({"input_length": 13}, "input_length"),
        ({"blank": 5}, "blank"),
        ({"labels": ["a", "b"]}, "labels"),
    ],
)
def test_plot_alignment_rejects_bad_arguments(kwargs, message, tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match=message):
        ctc_ext.plot_alignment(random_logits(12), [1, 2], path=tmp_path / "x.png", **kwargs)


def test_plot_alignment_rejects_a_blank_label(tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="target"):
        ctc_ext.plot_alignment(random_logits(12), [1, 0], path=tmp_path / "x.png")


@pytest.mark.skipif(not hasattr(ctc_ext, "forced_align"), reason="needs ctc_ext.forced_align")
@pytest.mark.parametrize("with_image", [False, True])
def test_plot_alignment_writes_a_png(tmp_path, with_image):
    image_module = pytest.importorskip("matplotlib.image", reason="plots need matplotlib: pip install ctc_ext[plot]")
    logits = random_logits(20, seed=3)
    path = ctc_ext.plot_alignment(
        logits,
        torch.tensor([1, 2, 2, 3]),
        input_length=16,
        path=tmp_path / "sub" / "a.png",
        labels=["_", "a", "b", "c", "d"],
        image=torch.rand(8, 32) if with_image else None,
        title="test",
    )
    assert path == tmp_path / "sub" / "a.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = image_module.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels[..., :3].std() > 0.05  # something was drawn


def test_plot_alignment_rejects_an_impossible_target(tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="cannot be aligned"):
        ctc_ext.plot_alignment(random_logits(3), [1, 1, 2], path=tmp_path / "x.png")
