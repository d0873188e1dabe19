"""ctc_ext.lm.NgramLM (the C++ ARPA model) against an independent back-off implementation
(tests/arpa_reference.py) and against kenlm where it is installed; malformed files."""

import itertools
import random

import pytest
from arpa_reference import LN_10, ReferenceArpa, random_arpa, random_sentences

from ctc_ext.lm import KenLM, NgramLM, _arpa_unigrams


def make_random_model(tmp_path, order, drop_suffixes, with_unknown):
    path = tmp_path / "random.arpa"
    words = random_arpa(path, order, 12, 60, seed=order, with_unknown=with_unknown, drop_suffixes=drop_suffixes)
    return path, words, ReferenceArpa(path)


# (order, some n-grams lack their suffix as in pruned models, <unk> listed)
@pytest.fixture(
    params=[(3, True, True), (4, True, False), (4, False, True)],
    ids=["order3-pruned", "order4-pruned-no-unk", "order4"],
)
def random_model(request, tmp_path):
    return make_random_model(tmp_path, *request.param)


# kenlm's hash tables refuse files with many missing suffixes ("avoid pruning n-grams like ...").
@pytest.fixture(params=[(3, False, True), (4, False, False)], ids=["order3", "order4-no-unk"])
def unpruned_model(request, tmp_path):
    return make_random_model(tmp_path, *request.param)


def test_every_listed_context_and_word_matches_the_reference(random_model):
    path, words, reference = random_model
    lm = NgramLM(path)
    contexts = [ngram for ngram in reference.probs if len(ngram) < reference.order] + [()]
    for context in contexts:
        state = lm.null_state()
        for word in context:
            _, state = lm.score_word(state, word)
        for word in reference.vocabulary + ["<unk>", "not-a-word"]:
            log_prob, _ = lm.score_word(state, word)
            assert log_prob == pytest.approx(reference.ln_prob(word, context), rel=1e-6, abs=1e-5), (context, word)


def test_sentences_match_the_reference(random_model):
    path, words, reference = random_model
    lm = NgramLM(path)
    for sentence in random_sentences(words + ["</s>"], 300, seed=1):
        for bos, eos in itertools.product((True, False), repeat=2):
            expected = reference.sentence_ln_prob(sentence, bos, eos)
            assert lm.score(sentence, bos=bos, eos=eos) == pytest.approx(expected, rel=1e-6, abs=1e-5)
    assert lm.score("w1 w2 w3") == pytest.approx(reference.sentence_ln_prob(["w1", "w2", "w3"]), rel=1e-6)


def test_states_are_the_longest_known_context(random_model):
    """Histories get the same state exactly when their longest listed suffix is the same."""
    path, words, reference = random_model
    lm = NgramLM(path)
    state_of_suffix = {}
    for sentence in random_sentences(words, 300, seed=2):
        state = lm.begin_state()
        history = ["<s>"]
        for word in sentence:
            _, state = lm.score_word(state, word)
            history.append(word)
            suffix = reference.longest_known_suffix(history)
            assert state_of_suffix.setdefault(suffix, state) == state, (history, suffix)
    states = list(state_of_suffix.values())
    assert len(set(states)) == len(states), "two different contexts share a state"


def test_word_indices_vocabulary_and_counts(random_model):
    path, words, reference = random_model
    lm = NgramLM(path)
    assert lm.order == reference.order
    assert lm.counts == [
        sum(len(ngram) == n for ngram in reference.probs) - (n == 1 and "<unk>" not in reference.vocabulary)
        for n in range(1, lm.order + 1)
    ]
    assert lm.vocabulary[: len(reference.vocabulary)] == reference.vocabulary  # file order
    assert set(lm.vocabulary) == set(reference.vocabulary) | {"<unk>"}
    for i, word in enumerate(lm.vocabulary):
        assert lm.word_index(word) == i and word in lm
    assert lm.word_index("not-a-word") == -1 and "not-a-word" not in lm
    state = lm.begin_state()
    for word in ("w3", "w5"):
        by_string = lm.score_word(state, word)
        assert lm.score_word(state, lm.word_index(word)) == by_string
        state = by_string[1]
    assert lm.score_word(state, -1) == lm.score_word(state, "<unk>") == lm.score_word(state, "never-seen")
    assert lm.end_score(state) == lm.score_word(state, "</s>")[0]


def test_begin_state_is_after_sentence_begin(random_model):
    path, _, reference = random_model
    lm = NgramLM(path)
    _, after_begin = lm.score_word(lm.null_state(), "<s>")
    assert after_begin == lm.begin_state() != lm.null_state()
    assert lm.end_score(lm.null_state()) == pytest.approx(reference.ln_prob("</s>", ()), rel=1e-6)


def test_word_prefixes_of_the_vocabulary(tmp_path):
    path = tmp_path / "words.arpa"
    write_arpa(path, [[(-1, "<s>"), (-1, "</s>"), (-1, "<unk>"), (-1, "cat"), (-1, "catalog"), (-1, "dog")]])
    lm = NgramLM(path)
    for prefix in ("", "c", "ca", "cat", "cata", "catalog", "d", "dog"):
        assert lm.is_word_prefix(prefix), prefix
    for prefix in ("catalogs", "cb", "e", "do g", "<", "<s", "</s>", "<unk>", "a"):
        assert not lm.is_word_prefix(prefix), prefix


def test_unigram_model_and_missing_unknown_word(tmp_path):
    path = tmp_path / "unigram.arpa"
    write_arpa(path, [[(-99, "<s>"), (-0.5, "</s>"), (-0.3, "a")]])
    lm = NgramLM(path)
    assert lm.order == 1 and lm.counts == [3]
    assert lm.begin_state() == lm.null_state()
    assert lm.score("a a") == pytest.approx(-(0.3 + 0.3 + 0.5) * LN_10, rel=1e-6)
    # No <unk> in the file: KenLM's log10 probability -100.
    assert lm.score_word(lm.null_state(), "b")[0] == pytest.approx(-100 * LN_10, rel=1e-6)


def test_bad_states_and_words_raise(random_model):
    path, _, _ = random_model
    lm = NgramLM(path)
    with pytest.raises(IndexError, match="state"):
        lm.score_word(2**31, "w1")
    with pytest.raises(IndexError, match="word index"):
        lm.score_word(lm.begin_state(), len(lm.vocabulary))
    with pytest.raises(IndexError, match="word index"):
        lm.score_word(lm.begin_state(), -2)
    with pytest.raises(IndexError, match="order"):
        lm.num_ngrams(lm.order + 1)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.arpa"):
        NgramLM(tmp_path / "nope.arpa")
    with pytest.raises(IsADirectoryError):
        NgramLM(tmp_path)


def write_arpa(path, levels, header=None, end="\\end\\"):
    """levels[n - 1]: (log10_prob, words[, log10_backoff]) tuples of order n."""
    lines = ["\\data\\"]
    counts = header if header is not None else [len(level) for level in levels]
    lines += [f"ngram {n}={count}" for n, count in enumerate(counts, start=1)]
    for n, level in enumerate(levels, start=1):
        lines += ["", f"\\{n}-grams:"]
        lines += ["\t".join(str(field) for field in entry) for entry in level]
    lines += ["", end] if end else []
    path.write_text("\n".join(lines) + "\n")


GOOD_UNIGRAMS = [(-99, "<s>", -0.2), (-1, "</s>"), (-1, "<unk>"), (-0.5, "a", -0.1), (-0.5, "b", -0.1)]
GOOD_BIGRAMS = [(-0.3, "<s> a"), (-0.4, "a b"), (-0.2, "b </s>")]


def test_well_formed_reference_file_loads(tmp_path):
    path = tmp_path / "good.arpa"
    write_arpa(path, [GOOD_UNIGRAMS, GOOD_BIGRAMS])
    lm = NgramLM(path)
    assert lm.counts == [5, 3]
    assert lm.score("a b") == pytest.approx((-0.3 - 0.4 - 0.2) * LN_10, rel=1e-6)
    # Unlisted bigram "b a": bow(b) + p(a).
    assert lm.score("b a", bos=False, eos=False) == pytest.approx((-0.5 - 0.1 - 0.5) * LN_10, rel=1e-6)


MALFORMED = {
    # name: (file text, line number, message pattern)
    "no data": ("hello\n", 1, r"no \\data\\ section"),
    "no counts": ("\\data\\\n\n\\1-grams:\n", 3, "lists no 'ngram"),
    "bad count": ("\\data\\\nngram 1=x\n", 2, "bad count line"),
    "order gap": ("\\data\\\nngram 2=3\n", 2, "orders must be listed"),
    "too few": (
        "\\data\\\nngram 1=4\n\n\\1-grams:\n-99\t<s>\n-1\t</s>\n-1\ta\n\n\\end\\\n",
        8,
        "announced 4 unigrams, the section has 3",
    ),
    "too many": (
        "\\data\\\nngram 1=2\n\n\\1-grams:\n-99\t<s>\n-1\t</s>\n-1\ta\n\n\\end\\\n",
        7,
        "more unigrams than the 2",
    ),
    "bad number": ("\\data\\\nngram 1=2\n\n\\1-grams:\n-99\t<s>\n-1x\t</s>\n\n\\end\\\n", 6, "bad probability '-1x'"),
    "bad backoff": (
        "\\data\\\nngram 1=2\nngram 2=1\n\n\\1-grams:\n-99\t<s>\tnan\n-1\t</s>\n",
        6,
        "bad back-off weight 'nan'",
    ),
    "positive": ("\\data\\\nngram 1=2\n\n\\1-grams:\n-99\t<s>\n0.5\t</s>\n\n\\end\\\n", 6, "above 0"),
    "fields": ("\\data\\\nngram 1=2\n\n\\1-grams:\n-99\t<s>\n-1\t</s>\t-0.5\n\n\\end\\\n", 6, "got 3 fields"),
    "duplicate unigram": (
        "\\data\\\nngram 1=3\n\n\\1-grams:\n-99\t<s>\n-1\t</s>\n-1\t</s>\n\n\\end\\\n",
        7,
        "listed twice .first on line 6",
    ),
    "no sentence begin": ("\\data\\\nngram 1=1\n\n\\1-grams:\n-1\t</s>\n\n", 6, "no <s>"),
    "no end": ("\\data\\\nngram 1=2\n\n\\1-grams:\n-99\t<s>\n-1\t</s>\n", 6, r"expected '\\end\\'"),
    "missing section": (
        "\\data\\\nngram 1=2\nngram 2=1\n\n\\1-grams:\n-99\t<s>\n-1\t</s>\n\n\\end\\\n",
        9,
        r"expected '\\2-grams:', got '\\end\\'",
    ),
    "missing context": (
        "\\data\\\nngram 1=3\nngram 2=1\nngram 3=1\n\n\\1-grams:\n-99\t<s>\n-1\t</s>\n-1\ta\n\n"
        "\\2-grams:\n-1\t<s> a\n\n\\3-grams:\n-1\ta a </s>\n\n\\end\\\n",
        15,
        "context 'a a' of this 3-gram is not itself an n-gram",
    ),
    "unknown word": (
        "\\data\\\nngram 1=2\nngram 2=1\n\n\\1-grams:\n-99\t<s>\n-1\t</s>\n\n\\2-grams:\n-1\t<s> zz\n\n\\end\\\n",
        10,
        "word 'zz' is not among the unigrams",
    ),
    "duplicate bigram": (
        "\\data\\\nngram 1=2\nngram 2=2\n\n\\1-grams:\n-99\t<s>\n-1\t</s>\n\n\\2-grams:\n-1\t<s> </s>\n-2\t<s> </s>\n"
        "\n\\end\\\n",
        11,
        "the same 2-gram as line 10",
    ),
    "backoff at top": (
        "\\data\\\nngram 1=2\nngram 2=1\n\n\\1-grams:\n-99\t<s>\n-1\t</s>\n\n\\2-grams:\n-1\t<s> </s>\t-0.1\n\n\\end\\\n",
        10,
        "no back-off at the highest order",
    ),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_files_name_the_path_and_line(tmp_path, name):
    text, line, pattern = MALFORMED[name]
    path = tmp_path / "bad.arpa"
    path.write_text(text)
    with pytest.raises(ValueError, match=pattern) as error:
        NgramLM(path)
    message = str(error.value)
    assert str(path) in message and f"line {line}" in message, message


def test_truncated_files_never_crash(tmp_path):
    """Every prefix of a valid file either loads or raises ValueError."""
    source = tmp_path / "full.arpa"
    random_arpa(source, 3, 5, 10, seed=3)
    text = source.read_text()
    rng = random.Random(0)
    for cut in sorted(rng.sample(range(len(text)), 60)) + [len(text) - 1]:
        path = tmp_path / "cut.arpa"
        path.write_text(text[:cut])
        try:
            NgramLM(path)
        except ValueError as error:
            assert "line" in str(error)


def test_agrees_with_kenlm(unpruned_model):
    kenlm = pytest.importorskip("kenlm", reason="kenlm is optional: pip install kenlm")
    path, words, reference = unpruned_model
    lm = NgramLM(path)
    model = kenlm.Model(str(path))
    for sentence in random_sentences(words, 200, seed=4):
        text = " ".join(sentence)
        for bos, eos in itertools.product((True, False), repeat=2):
            expected = model.score(text, bos=bos, eos=eos) * LN_10
            assert lm.score(sentence, bos=bos, eos=eos) == pytest.approx(expected, rel=1e-5, abs=1e-4)


def test_kenlm_adapter_has_the_same_interface(unpruned_model):
    pytest.importorskip("kenlm", reason="kenlm is optional: pip install kenlm")
    path, words, reference = unpruned_model
    lm, adapter = NgramLM(path), KenLM(path)
    assert adapter.order == lm.order
    for sentence in random_sentences(words, 50, seed=5):
        assert adapter.sentence_score(sentence) == pytest.approx(lm.score(sentence), rel=1e-5, abs=1e-4)
        state, history = adapter.begin_state(), ["<s>"]
        protocol_state, protocol_total = adapter.start(), 0.0
        for word in sentence:
            protocol_state, log_prob = adapter.score(protocol_state, word)
            protocol_total += log_prob
        protocol_total += adapter.finish(protocol_state)
        assert protocol_total == pytest.approx(lm.score(sentence), rel=1e-5, abs=1e-4)
        for word in sentence:
            log_prob, state = adapter.score_word(state, word)
            assert log_prob == pytest.approx(reference.ln_prob(word, history), rel=1e-5, abs=1e-4)
            history.append(word)
        assert adapter.end_score(state) == pytest.approx(reference.ln_prob("</s>", history), rel=1e-5, abs=1e-4)
    for prefix in ("w", "w1", "w12", "x", "<s"):
        assert adapter.is_word_prefix(prefix) == lm.is_word_prefix(prefix), prefix
    assert "w1" in adapter and "nope" not in adapter


def test_kenlm_adapter_vocabulary_for_prefix_checks(unpruned_model, tmp_path):
    pytest.importorskip("kenlm", reason="kenlm is optional: pip install kenlm")
    path, words, _ = unpruned_model
    given = KenLM(path, unigrams=["w1", "w2"])  # what a binary file needs: the words passed in
    assert given.vocabulary == ["w1", "w2"] and given.is_word_prefix("w") and not given.is_word_prefix("w3")
    read = KenLM(path)  # ARPA: the words are read from its \1-grams: section
    assert sorted(read.vocabulary) == sorted(NgramLM(path).vocabulary[: len(read.vocabulary)])
    assert _arpa_unigrams(str(path)) == read.vocabulary
    binary = tmp_path / "model.binary"
    binary.write_bytes(b"mmap lm http://kheafield.com/code format version 5\0" + bytes(64))
    assert _arpa_unigrams(str(binary)) is None
