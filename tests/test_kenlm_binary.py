"""KenLM binary files (probing and trie) through ctc_ext.lm.KenLM: the same scores and the same
decoding as the ARPA file they were built from, read by kenlm and by ctc_ext's NgramLM.

pip's kenlm has no build_binary; scripts/build_kenlm_binary.sh compiles it from the kenlm sdist
(setup_env.sh does so under CTC_EXT_LM_COMPARE=1).  These tests skip unless kenlm is installed
and the tool is built, or can be built from an sdist already downloaded (no network here)."""

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ctc_ext
from ctc_ext.lm import KenLM, NgramLM
from ctc_ext.lm.__main__ import main as lm_command_line

pytest.importorskip("kenlm", reason="kenlm is optional: pip install kenlm")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_kenlm_binary.sh"
LETTERS = "abcde"


@pytest.fixture(scope="module")
def build_binary():
    """Path of KenLM's build_binary for the installed kenlm (the venv is this interpreter's)."""
    environment = dict(os.environ, CTC_EXT_VENV=sys.prefix)
    result = subprocess.run(
        ["bash", str(SCRIPT), "--no-download"], env=environment, capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        pytest.skip(f"KenLM's build_binary is not built ({result.stderr.strip()[-300:]})")
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def models(build_binary, tmp_path_factory):
    """(ARPA path, {"probing": path, "trie": path}, words) of a 3-gram model made by the
    `python -m ctc_ext.lm` command line from random sentences."""
    folder = tmp_path_factory.mktemp("kenlm_binary")
    rng = random.Random(7)
    words = sorted({"".join(rng.choice(LETTERS) for _ in range(rng.randint(1, 4))) for _ in range(60)})
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choices(words, k=rng.randint(1, 8))) for _ in range(400)) + "\n")
    arpa = folder / "lm.arpa"
    assert lm_command_line([str(corpus), "--order", "3", "-o", str(arpa)]) == 0  # python -m ctc_ext.lm
    binaries = {}
    for kind in ("probing", "trie"):
        binaries[kind] = folder / f"lm.{kind}"
        # -S: the trie's sort memory (default 80% of RAM).
        subprocess.run(
            [build_binary, "-S", "16M", kind, str(arpa), str(binaries[kind])], check=True, capture_output=True
        )
    return arpa, binaries, words


def sentences(words, count, seed):
    rng = random.Random(seed)
    pool = words + ["zz", "abcdea"]  # two words the model does not know
    return [rng.choices(pool, k=rng.randint(0, 7)) for _ in range(count)]


@pytest.mark.parametrize("kind", ["probing", "trie"])
def test_binary_file_scores_like_the_arpa_file(models, kind):
    arpa, binaries, words = models
    from_arpa, ngram = KenLM(arpa), NgramLM(arpa)
    binary = KenLM(binaries[kind], unigrams=from_arpa.vocabulary)
    assert binary.order == from_arpa.order == 3
    with open(binaries[kind], "rb") as stream:
        assert stream.read(4) == b"mmap"  # a KenLM binary file, not ARPA text
    for sentence in sentences(words, 150, seed=1):
        state, arpa_state, ngram_state = binary.begin_state(), from_arpa.begin_state(), ngram.begin_state()
        for word in sentence:
            log_prob, state = binary.score_word(state, word)
            arpa_log_prob, arpa_state = from_arpa.score_word(arpa_state, word)
            ngram_log_prob, ngram_state = ngram.score_word(ngram_state, word)
            assert log_prob == pytest.approx(arpa_log_prob, rel=1e-6, abs=1e-6)
            assert log_prob == pytest.approx(ngram_log_prob, rel=1e-5, abs=1e-4)
        assert binary.end_score(state) == pytest.approx(from_arpa.end_score(arpa_state), rel=1e-6, abs=1e-6)
        assert binary.sentence_score(sentence) == pytest.approx(ngram.score(sentence), rel=1e-5, abs=1e-4)
    for prefix in ("a", "ab", "eee", "f", "abcdea"):
        assert binary.is_word_prefix(prefix) == ngram.is_word_prefix(prefix), prefix


@pytest.mark.parametrize("kind", ["probing", "trie"])
def test_binary_file_decodes_like_the_arpa_file(models, kind):
    arpa, binaries, _ = models
    from_arpa = KenLM(arpa)
    tokens = ["-", "|"] + list(LETTERS)
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(40, 6, len(tokens), generator=generator) * 2
    lengths = [40, 33, 25, 40, 12, 0]

    def decode(lm):
        # The look-ahead needs unigram probabilities, which only NgramLM gives: off for all three,
        # so that the searches are the same.
        decoder = ctc_ext.CTCDecoder(
            tokens, lm=lm, lm_weight=0.8, word_score=0.5, beam_width=16, nbest=3, lm_lookahead=False
        )
        return decoder(logits, lengths)

    binary = decode(KenLM(binaries[kind], unigrams=from_arpa.vocabulary))
    for reference in (decode(from_arpa), decode(NgramLM(arpa))):
        for ours, theirs in zip(binary, reference):
            assert [h.text for h in ours] == [h.text for h in theirs]
            assert [h.score for h in ours] == pytest.approx([h.score for h in theirs], rel=1e-5, abs=1e-4)
    assert any(h.words for sample in binary for h in sample)  # the LM scored words
