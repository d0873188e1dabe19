"""python -m ctc_ext.lm (interpolated modified Kneser-Ney to ARPA): normalisation of every
context, an independent estimator written from the definitions, kenlm where installed, the CLI."""

import math
import random
import subprocess
import sys
from collections import Counter

import pytest
from arpa_reference import LN_10, ReferenceArpa

from ctc_ext.lm import NgramLM, build_arpa, estimate_kneser_ney
from ctc_ext.lm.kneser_ney import DISCOUNT_FALLBACK


def markov_corpus(num_sentences, seed, vocabulary_size=200):
    """Sentences from a random first-order Markov chain over Zipf-distributed words, so that higher
    orders have structure and every order has n-grams seen once, twice, three and four times."""
    rng = random.Random(seed)
    words = [f"v{i}" for i in range(vocabulary_size)]
    zipf = [1 / (rank + 1) for rank in range(vocabulary_size)]
    successors = {w: rng.sample(words, 3) for w in words}
    sentences = []
    for _ in range(num_sentences):
        sentence = rng.choices(words, zipf)
        while len(sentence) < 10 and rng.random() < 0.85:
            follow = rng.random() < 0.7
            sentence.append(rng.choice(successors[sentence[-1]]) if follow else rng.choices(words, zipf)[0])
        sentences.append(" ".join(sentence))
    return sentences


class DefinitionKneserNey:
    """Interpolated modified Kneser-Ney computed per query straight from its definitions on the
    padded sentences (no tables shared with the builder)."""

    def __init__(self, sentences, order):
        self.order = order
        self.padded = [["<s>"] + s.split() + ["</s>"] for s in sentences if s.split()]
        self.vocabulary = sorted({w for s in self.padded for w in s[1:]} | {"<unk>"})  # all but <s>
        self.ngrams = [set() for _ in range(order + 1)]
        for s in self.padded:
            for n in range(1, order + 1):
                for i in range(len(s) - n + 1):
                    self.ngrams[n].add(tuple(s[i : i + n]))
        self.raw = Counter(
            tuple(s[i : i + n]) for s in self.padded for n in range(1, order + 1) for i in range(len(s) - n + 1)
        )

        self.left_words = Counter(g[1:] for n in range(2, order + 1) for g in self.ngrams[n])
        self.discounts = {}  # order -> [D1, D2, D3+]
        self.extensions = {}  # history -> the n-grams that extend it by one word
        for n in range(1, order + 1):
            for g in self.ngrams[n]:
                if g != ("<s>",):
                    self.extensions.setdefault(g[:-1], []).append(g)

    def adjusted(self, ngram):
        if len(ngram) == self.order or ngram[0] == "<s>":
            return self.raw[ngram]
        return self.left_words[ngram]  # distinct words seen before it

    def discount(self, n, count):
        if count == 0:
            return 0.0
        if n not in self.discounts:
            self.discounts[n] = self.estimate_discounts(n)
        return self.discounts[n][min(count, 3) - 1]

    def estimate_discounts(self, n):
        counts = [g for g in self.ngrams[n] if g != ("<s>",)]
        t = [sum(1 for g in counts if self.adjusted(g) == k) for k in range(5)]
        y = t[1] / (t[1] + 2 * t[2]) if t[1] else 0
        d = [k - (k + 1) * y * t[k + 1] / t[k] if t[k] else -1 for k in (1, 2, 3)]
        if 0 in t[1:] or not all(0 < d[k - 1] <= k for k in (1, 2, 3)):  # lmplz's fallback rule
            d = list(DISCOUNT_FALLBACK)
        return d

    def prob(self, word, history):
        history = tuple(history)[max(0, len(history) - self.order + 1) :] if self.order > 1 else ()
        n = len(history) + 1
        extensions = self.extensions.get(history, [])
        total = sum(self.adjusted(g) for g in extensions)
        lower = 1 / len(self.vocabulary) if n == 1 else self.prob(word, history[1:])
        if total == 0:  # never seen as a context: back off with weight 1
            return lower
        gamma = sum(self.discount(n, self.adjusted(g)) for g in extensions) / total
        count = self.adjusted(history + (word,)) if history + (word,) in self.ngrams[n] else 0
        return (count - self.discount(n, count)) / total + gamma * lower


def build(tmp_path, sentences, order):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentences) + "\n")
    arpa = tmp_path / "lm.arpa"
    model = build_arpa(corpus, arpa, order)
    return arpa, model


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_matches_the_definitions(tmp_path, order):
    sentences = markov_corpus(150, seed=order)  # discounts estimated at some orders, fallback at others
    arpa, model = build(tmp_path, sentences, order)
    reference = ReferenceArpa(arpa)
    definitions = DefinitionKneserNey(sentences, order)
    rng = random.Random(0)
    histories = [s.split()[: rng.randint(0, 5)] for s in sentences[:40]] + [["v1", "v1", "v1"], ["nope", "v2"]]
    words = rng.sample(definitions.vocabulary, 30) + ["</s>", "<unk>"]
    for history in histories:
        history = ["<s>"] + history
        for word in words:
            known = [w if w in definitions.vocabulary or w == "<s>" else "<unk>" for w in history]
            expected = definitions.prob(word, known)
            assert 10 ** reference.log10_prob(word, history) == pytest.approx(expected, rel=1e-6), (history, word)


def test_discounts_are_estimated_when_the_counts_allow_and_fall_back_otherwise(tmp_path):
    _, model = build(tmp_path, markov_corpus(600, seed=1), 4)
    assert model.fallback_orders == []
    for d in model.discounts:
        assert 0 < d[0] <= 1 and 0 < d[1] <= 2 and 0 < d[2] <= 3
    _, tiny = build(tmp_path, ["a b", "b c"], 2)
    assert tiny.fallback_orders == [1, 2] and tiny.discounts == [DISCOUNT_FALLBACK] * 2


def test_unigram_probabilities_derived_by_hand(tmp_path):
    """Corpus "a b", order 1: counts a, b, </s> = 1 each, fallback D1 = 0.5, so
    p(w) = (1 - 0.5) / 3 + (3 * 0.5 / 3) / 4 for a, b, </s> and 0.5 / 4 for <unk>."""
    arpa, _ = build(tmp_path, ["a b"], 1)
    reference = ReferenceArpa(arpa)
    for word in ("a", "b", "</s>"):
        assert 10 ** reference.probs[(word,)] == pytest.approx(1 / 6 + 1 / 8, rel=1e-7)
    assert 10 ** reference.probs[("<unk>",)] == pytest.approx(1 / 8, rel=1e-7)
    assert reference.probs[("<s>",)] == -99


@pytest.mark.parametrize("order", [2, 3, 4])
def test_every_context_sums_to_one(tmp_path, order):
    arpa, _ = build(tmp_path, markov_corpus(300, seed=10 + order), order)
    reference = ReferenceArpa(arpa)
    lm = NgramLM(arpa)
    predicted = [w for w in reference.vocabulary if w != "<s>"]
    contexts = [ngram for ngram in reference.probs if len(ngram) < order and ngram[-1] != "</s>"]
    contexts += [(), ("v3", "v3", "v3")[: order - 1], ("<unk>",)]
    for context in contexts:
        assert sum(10 ** reference.log10_prob(w, context) for w in predicted) == pytest.approx(1, abs=1e-6), context
        state = lm.null_state()
        for word in context:
            _, state = lm.score_word(state, word)
        total = sum(math.exp(lm.score_word(state, w)[0]) for w in predicted)
        assert total == pytest.approx(1, abs=1e-6), context


def test_kenlm_reads_the_builders_files_alike(tmp_path):
    kenlm = pytest.importorskip("kenlm", reason="kenlm is optional: pip install kenlm")
    sentences = markov_corpus(200, seed=7)
    arpa, _ = build(tmp_path, sentences, 3)
    model, lm, reference = kenlm.Model(str(arpa)), NgramLM(arpa), ReferenceArpa(arpa)
    for sentence in sentences[:100] + ["v1 nope v2", ""]:
        expected = model.score(sentence, bos=True, eos=True) * LN_10
        assert lm.score(sentence) == pytest.approx(expected, rel=1e-5, abs=1e-4)
        assert reference.sentence_ln_prob(sentence.split()) == pytest.approx(expected, rel=1e-5, abs=1e-4)


def test_sentence_boundaries_and_blank_lines(tmp_path):
    model = estimate_kneser_ney(["a b", "", "   ", "b a"], 2)
    assert set(model.ngrams[0]) == {("<s>",), ("</s>",), ("<unk>",), ("a",), ("b",)}
    assert ("<s>", "a") in model.ngrams[1] and ("a", "</s>") in model.ngrams[1]
    assert model.ngrams[0][("</s>",)][1] is None  # </s> is never a context: no back-off
    with pytest.raises(ValueError, match="sentence 2 contains <s>"):
        estimate_kneser_ney(["a", "<s> b"], 2)
    with pytest.raises(ValueError, match="no words"):
        estimate_kneser_ney(["", " "], 2)
    with pytest.raises(ValueError, match="order"):
        estimate_kneser_ney(["a"], 0)


def test_command_line(tmp_path):
    sentences = markov_corpus(50, seed=3)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentences) + "\n")
    out = tmp_path / "sub" / "lm.arpa"
    result = subprocess.run(
        [sys.executable, "-m", "ctc_ext.lm", str(corpus), "--order", "3", "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "order 3" in result.stderr and "discounts" in result.stderr
    expected = tmp_path / "expected.arpa"
    build_arpa(corpus, expected, 3)
    assert out.read_text() == expected.read_text()
    assert NgramLM(out).counts == [len(t) for t in estimate_kneser_ney(sentences, 3).ngrams]

    missing = subprocess.run(
        [sys.executable, "-m", "ctc_ext.lm", str(tmp_path / "none.txt"), "-o", str(out)], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "none.txt' does not exist" in missing.stderr
    bad_order = subprocess.run(
        [sys.executable, "-m", "ctc_ext.lm", str(corpus), "--order", "0", "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert bad_order.returncode == 2 and "--order must be at least 1" in bad_order.stderr
