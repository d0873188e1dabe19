"""examples/decode_with_lm.py: word lines, the fusion scorer against the LM's own sentence score,
and a short run of the script."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ctc_ext
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


def test_decoder_with_the_language_model_corrects_a_misread_word(tmp_path):
    """Frames that read "12 35" (35 is no word) with "34" a close second: the LM picks "12 34"."""
    (tmp_path / "corpus.txt").write_text("12 34\n34 12\n12 34 12\n")
    build_arpa(tmp_path / "corpus.txt", tmp_path / "lm.arpa", order=2)
    lm = NgramLM(tmp_path / "lm.arpa")
    frames = [2, 0, 3, example.SEPARATOR, 4, 0, 6]  # 1 ε 2 | 3 ε 5
    log_probs = torch.full((len(frames), example.NUM_CLASSES), -12.0)
    log_probs[torch.arange(len(frames)), torch.tensor(frames)] = -0.1
    log_probs[6, 5] = -1.0  # "4" is the runner-up of the last frame
    decoder_args = dict(blank=example.BLANK, word_delimiter="|", beam_width=8)
    plain = ctc_ext.CTCDecoder(example.TOKENS, **decoder_args)(log_probs[:, None])[0][0]
    fused = ctc_ext.CTCDecoder(example.TOKENS, lm=lm, **decoder_args)(log_probs[:, None])[0][0]
    assert plain.text == "12 35" and fused.text == "12 34"
    assert [(span.word, span.start, span.end) for span in fused.words] == [("12", 0, 3), ("34", 4, 7)]


def test_script_runs_a_short_training_and_writes_the_picture(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    short_run = "--epochs 1 --lines-per-epoch 64 --batch-size 16 --test-lines 6 --corpus-sentences 200 --beam-width 4"
    rows = example.main(short_run.split() + ["--out-dir", str(tmp_path)])
    output = capsys.readouterr().out
    assert "| decoder | label error rate | word error rate |" in output
    assert len(rows) == 3 and all(0 <= rate for pair in rows.values() for rate in pair)
    assert NgramLM(tmp_path / "lm.arpa").order == 3
    assert (tmp_path / "alignment_lm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
