"""examples/decode_with_lm.py: word lines, the fusion scorer against the LM's own sentence score,
and a short run of the script."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ctc_ext.lm import NgramLM, build_arpa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import decode_with_lm as example  # noqa: E402  (the example is a script, not a package)


def synthetic_digit_images(num_images=60, seed=0):
    rng = np.random.default_rng(seed)
    digits = np.arange(num_images) % 10  # every digit present
    return rng.uniform(0.05, 1.0, size=(num_images, 8, 8)).astype(np.float32), digits


def test_word_lines_spell_their_sentences():
    images, digits = synthetic_digit_images()
    sentences = [["12", "3405"], ["9", "88", "017"], ["5"]]
    lines = example.compose_word_lines(images, digits, np.arange(len(images)), sentences, np.random.default_rng(0))
    assert lines.targets.shape == (3, 8) and lines.target_lengths.tolist() == [7, 8, 1]
    assert lines.targets[0, :7].tolist() == [2, 3, example.SEPARATOR, 4, 5, 1, 6]
    assert (lines.targets[2, 1:] == example.BLANK).all()
    for n, sentence in enumerate(sentences):
        assert example.words_of(lines.targets[n, : lines.target_lengths[n]].tolist()) == sentence
        # Every digit image is drawn: count the non-empty column runs of 8 (digits never overlap).
        drawn = (lines.images[n].abs().sum(0) > 0).int().tolist()
        assert sum(drawn) == 8 * sum(len(word) for word in sentence)
        assert lines.widths[n] >= len(drawn) - drawn[::-1].index(1)
    # Words are further apart than the digits inside them: one wide gap inside line 0, the others narrow.
    filled = "".join("x" if column else "." for column in (lines.images[0].abs().sum(0) > 0).tolist())
    interior_gaps = sorted(len(gap) for gap in filled.strip(".").split("x") if gap)
    assert interior_gaps[-1] >= 8 and all(gap <= 2 for gap in interior_gaps[:-1])


def test_fusion_scores_add_up_to_the_weighted_sentence_score(tmp_path):
    corpus = ["12 34 56", "34 56 12", "12 56", "56 34 34 12"]
    (tmp_path / "corpus.txt").write_text("\n".join(corpus) + "\n")
    build_arpa(tmp_path / "corpus.txt", tmp_path / "lm.arpa", order=3)
    lm = NgramLM(tmp_path / "lm.arpa")
    scorer = example.LanguageModelScorer(lm, lm_weight=0.7, word_score=0.3, unk_score=-5.0)
    for sentence, unknown_words in ((["12", "34"], 0), (["56", "12", "34", "56"], 0), (["12", "99"], 1)):
        labels = example.labels_of(sentence)
        total = sum(scorer(labels[:k], labels[k]) for k in range(len(labels))) + scorer.finish(labels)
        # lm_weight * ln p(words </s>) + word_score * #words + unk_score * #unknown words
        expected = 0.7 * lm.score(sentence) + 0.3 * len(sentence) + -5.0 * unknown_words
        assert total == pytest.approx(expected, rel=1e-9)
    assert scorer([], example.SEPARATOR) == -math.inf  # no empty words
    assert scorer(example.labels_of(["12"]), example.SEPARATOR) == pytest.approx(
        0.7 * lm.score_word(lm.begin_state(), "12")[0] + 0.3
    )


def test_word_frames_follow_the_forced_alignment():
    # Frames: 1 1 ε | 2 3 ε -> words "0" (frames 0-2) and "12" (frames 4-6).
    classes = [1, 1, 0, example.SEPARATOR, 2, 3, 0]
    log_probs = torch.full((len(classes), example.NUM_CLASSES), -20.0)
    log_probs[torch.arange(len(classes)), torch.tensor(classes)] = 0.0
    words = example.word_frames(log_probs, [1, example.SEPARATOR, 2, 3], len(classes))
    assert words == [("0", 0, 2), ("12", 4, 6)]


def test_script_runs_a_short_training_and_writes_the_picture(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    rows = example.main(
        [
            "--epochs",
            "1",
            "--lines-per-epoch",
            "64",
            "--batch-size",
            "16",
            "--test-lines",
            "6",
            "--corpus-sentences",
            "200",
            "--beam-width",
            "4",
            "--out-dir",
            str(tmp_path),
        ]
    )
    output = capsys.readouterr().out
    assert "| decoder | label error rate | word error rate |" in output
    assert len(rows) == 3 and all(0 <= rate for pair in rows.values() for rate in pair)
    assert NgramLM(tmp_path / "lm.arpa").order == 3
    assert (tmp_path / "alignment_lm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
