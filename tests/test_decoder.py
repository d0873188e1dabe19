"""ctc_ext.CTCDecoder against brute force: on tiny inputs every label sequence is enumerated, its
CTC log-likelihood taken from the built-in F.ctc_loss (float64) and its fused score computed here
from the words it spells (split by this file's own rules) and an independent ARPA reader
(tests/arpa_reference.py).  With pruning off and a beam that holds every prefix, the decoder's
n-best list must be that ranking.  Also: streams, threads, text conventions, bad input."""

import itertools
import math

import pytest
import torch
from arpa_reference import ReferenceArpa
from test_decode import log_add, random_logits, reference_beam, sequence_log_likelihoods

import ctc_ext
from ctc_ext.decoder import CTCDecoder

ARPA = """\\data\\
ngram 1=6
ngram 2=5

\\1-grams:
-1.0\t<s>\t-0.3
-0.9\t</s>
-2.0\t<unk>
-0.5\ta\t-0.2
-0.7\tab\t-0.4
-0.8\tbb\t-0.1

\\2-grams:
-0.2\t<s> a
-0.3\ta ab
-0.4\tab </s>
-0.6\tbb bb
-0.1\ta </s>

\\end\\
"""


@pytest.fixture(scope="module")
def arpa_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "tiny.arpa"
    path.write_text(ARPA)
    return str(path)


class ReferenceLM:
    """The Python language-model protocol over the reference ARPA reader."""

    def __init__(self, path):
        self.reference = ReferenceArpa(path)
        self.vocabulary = [w for w in self.reference.vocabulary if w not in ("<s>", "</s>", "<unk>")]

    def start(self):
        return ("<s>",)

    def score(self, state, word):
        return state + (word,), self.reference.ln_prob(word, state)

    def finish(self, state):
        return self.reference.ln_prob("</s>", state)


def words_of(tokens, labels, convention):
    """The words a label sequence spells, by this file's reading of each convention."""
    pieces = [tokens[c] for c in labels]
    if convention == "delimiter":
        return [w for w in "".join(pieces).split("|") if w]
    if convention == "sentencepiece":
        return "".join(p.replace("▁", " ") for p in pieces).split()
    return list(pieces)  # characters


def fused_score(words, reference, lm_weight, word_score, unk_score, known=(), hotword_gains=None):
    vocabulary = set(reference.vocabulary) - {"<s>", "</s>", "<unk>"}
    history, total = ["<s>"], 0.0
    for word in words:
        total += lm_weight * reference.ln_prob(word, history) + word_score
        if word not in vocabulary and word not in known:
            total += unk_score
        history.append(word)
    total += lm_weight * reference.ln_prob("</s>", history)
    return total + (hotword_gains(words) if hotword_gains else 0.0)


def without_empty_words(sequence, delimiters):
    """The label sequence less the delimiters that end no word (at the start or after another)."""
    kept = []
    for label in sequence:
        if label in delimiters and (not kept or kept[-1] in delimiters):
            continue
        kept.append(label)
    return kept


def brute_force_ranking(logits, tokens, blank, score_of_words, convention, allowed=lambda words: True):
    """Every label sequence ranked by CTC + score_of_words; with a delimiter, the sequences that
    differ only by delimiters ending no word are one hypothesis (their probabilities summed), as
    the decoder treats them (docs/decoding.md)."""
    labels = [c for c in range(len(tokens)) if c != blank]
    T = logits.shape[0]
    sequences = [list(s) for n in range(T + 1) for s in itertools.product(labels, repeat=n)]
    ctc = sequence_log_likelihoods(logits.log_softmax(-1), sequences, blank)
    delimiters = {tokens.index("|")} if convention == "delimiter" else set()
    merged = {}
    for sequence, ctc_score in zip(sequences, ctc):
        key = tuple(without_empty_words(sequence, delimiters))
        merged[key] = log_add(merged.get(key, -math.inf), ctc_score)
    ranked = []
    for sequence, ctc_score in merged.items():
        words = words_of(tokens, sequence, convention)
        if ctc_score > -math.inf and allowed(words):
            ranked.append((ctc_score + score_of_words(words), ctc_score, list(sequence)))
    ranked.sort(key=lambda item: -item[0])
    return ranked, len(sequences)


def assert_nbest_is_ranking(hypotheses, ranked, count):
    # 1e-6: the C++ n-gram model holds its log-probabilities in float32.
    assert len(hypotheses) == min(count, len(ranked))
    for hypothesis, (score, ctc_score, sequence) in zip(hypotheses, ranked):
        assert hypothesis.tokens == sequence
        assert hypothesis.score == pytest.approx(score, abs=1e-6)
        assert hypothesis.ctc_score == pytest.approx(ctc_score, abs=1e-6)
        assert hypothesis.lm_score == pytest.approx(score - ctc_score, abs=1e-6)


CASES = [
    ("delimiter", ["-", "|", "a", "b"], 5),
    ("sentencepiece", ["-", "▁a", "▁b", "a", "b"], 4),
    ("characters", ["-", "a", "b", "c"], 4),
]


@pytest.mark.parametrize("convention,tokens,T", CASES)
@pytest.mark.parametrize("lm_kind", ["arpa", "python"])
@pytest.mark.parametrize("seed", [0, 1])
def test_nbest_equals_brute_force_fused_ranking(arpa_path, convention, tokens, T, lm_kind, seed):
    logits = random_logits(T, 1, len(tokens), seed=50 + seed) * 0.6
    lm_weight, word_score, unk_score = 0.8, 0.4 - seed, -1.5
    reference = ReferenceArpa(arpa_path)
    ranked, count = brute_force_ranking(
        logits[:, 0],
        tokens,
        0,
        lambda words: fused_score(words, reference, lm_weight, word_score, unk_score),
        convention,
    )
    lm = arpa_path if lm_kind == "arpa" else ReferenceLM(arpa_path)
    decoder = CTCDecoder(
        tokens, lm=lm, lm_weight=lm_weight, word_score=word_score, unk_score=unk_score, beam_width=count, nbest=12
    )
    assert decoder.word_convention == convention
    assert_nbest_is_ranking(decoder(logits)[0], ranked, 12)


@pytest.mark.parametrize("seed", range(3))
def test_text_log_likelihood_sums_the_spellings_with_empty_words(seed):
    # bench_decode.text_log_likelihood (the exact CTC score of the pyctcdecode comparisons) against
    # enumeration: the sum over every label sequence that differs only by delimiters ending no word.
    from ctc_ext.bench_decode import text_log_likelihood

    frame_log_probs = random_logits(6, 1, 4, seed=70 + seed)[:, 0].log_softmax(-1)
    sequences = [list(s) for n in range(7) for s in itertools.product([1, 2, 3], repeat=n)]
    merged = {}
    for sequence, ctc in zip(sequences, sequence_log_likelihoods(frame_log_probs, sequences, 0)):
        key = tuple(without_empty_words(sequence, {1}))
        merged[key] = log_add(merged.get(key, -math.inf), ctc)
        assert text_log_likelihood(frame_log_probs, sequence, 0) == pytest.approx(ctc, abs=1e-9)
    for sequence, ctc in merged.items():
        assert text_log_likelihood(frame_log_probs, list(sequence), 0, [1]) == pytest.approx(ctc, abs=1e-9)


@pytest.mark.parametrize("convention,tokens,T", CASES)
@pytest.mark.parametrize("with_lm", [False, True])
@pytest.mark.parametrize("beam_width", [1, 2, 4])
def test_ctc_score_of_every_hypothesis_is_exact_at_narrow_beams(arpa_path, convention, tokens, T, with_lm, beam_width):
    # Narrow beams prune paths of the hypotheses they keep; the final beam is rescored exactly, so
    # ctc_score is the sum over every frame path (with the spellings with empty words), against
    # enumeration and bench_decode.text_log_likelihood, and the n-best is ranked by it.
    from ctc_ext.bench_decode import text_log_likelihood

    logits = random_logits(T + 2, 1, len(tokens), seed=90 + beam_width) * 0.6
    ranked, _ = brute_force_ranking(logits[:, 0], tokens, 0, lambda words: 0.0, convention)
    enumerated = {tuple(sequence): ctc_score for _, ctc_score, sequence in ranked}
    lm = dict(lm=arpa_path, lm_weight=0.8, word_score=0.4, unk_score=-1.5) if with_lm else {}
    hypotheses = CTCDecoder(tokens, beam_width=beam_width, nbest=beam_width, **lm)(logits)[0]
    delimiters = [tokens.index("|")] if convention == "delimiter" else []
    assert hypotheses
    for h in hypotheses:
        assert h.ctc_score == pytest.approx(enumerated[tuple(h.tokens)], abs=1e-9)
        exact = text_log_likelihood(logits[:, 0].log_softmax(-1), h.tokens, 0, delimiters)
        assert h.ctc_score == pytest.approx(exact, abs=1e-9)
        assert h.score == pytest.approx(h.ctc_score + h.lm_score, abs=1e-12)
    assert [h.score for h in hypotheses] == sorted((h.score for h in hypotheses), reverse=True)


def search_score_of_words(tokens, labels, convention, reference, lm_weight, word_score, unk_score, lookahead):
    """What a prefix adds to its CTC score during the search: its finished words' fused score and,
    for its partial word, unk_score once it is no prefix of a vocabulary word, plus its look-ahead
    (lm_weight * the best unigram log-probability of the vocabulary words it begins; "<unk>"'s
    when none)."""
    text = "".join(tokens[c] for c in labels)
    if convention == "delimiter":
        *finished, partial = text.split("|")
        finished = [w for w in finished if w]
    else:  # sentencepiece: the last word is unfinished
        words = text.replace("▁", " ").split()
        finished, partial = words[:-1], (words[-1] if words else "")
    vocabulary = set(reference.vocabulary) - {"<s>", "</s>", "<unk>"}
    history, total = ["<s>"], 0.0
    for word in finished:
        total += lm_weight * reference.ln_prob(word, history) + word_score + (0 if word in vocabulary else unk_score)
        history.append(word)
    if partial:
        below = [w for w in vocabulary if w.startswith(partial)]
        total += 0 if below else unk_score
        if lookahead:
            total += lm_weight * max(reference.ln_prob(w, []) for w in below or ["<unk>"])
    return total


def reference_fused_beam_search(frame_log_probs, beam_width, prefix_score, final_score, delimiters=()):
    """The textbook search (blank 0) ranking prefixes by CTC + prefix_score(labels); its last beam
    ranked by exact CTC (bench_decode.text_log_likelihood, tested against enumeration above) +
    final_score(labels)."""
    from ctc_ext.bench_decode import text_log_likelihood

    beam = reference_beam(frame_log_probs, 0, beam_width, prefix_score, delimiters)
    final = [(text_log_likelihood(frame_log_probs, list(p), 0, delimiters) + final_score(p), list(p)) for p in beam]
    return sorted(final, key=lambda item: -item[0])


@pytest.mark.parametrize(
    "convention,tokens", [("delimiter", ["-", "|", "a", "b"]), ("sentencepiece", ["-", "▁a", "▁b", "a", "b"])]
)
@pytest.mark.parametrize("lookahead", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_narrow_beams_with_lm_match_textbook_search_over_every_class(arpa_path, convention, tokens, lookahead, seed):
    # The C++ search skips extensions whose bound (the scorers' state-aware extension_bound) cannot
    # reach the cutoff: with exact bounds the beams are those of the textbook search, look-ahead
    # included in the ranking and taken back in the final scores.
    reference = ReferenceArpa(arpa_path)
    lm_weight, word_score, unk_score = 0.8, [1.0, -0.5][seed % 2], [-1.5, -4.0][seed // 2]
    logits = random_logits(14, 1, len(tokens), seed=80 + seed) * 1.5
    for beam_width in (1, 3, 6):
        expected = reference_fused_beam_search(
            logits[:, 0].log_softmax(-1),
            beam_width,
            lambda p: search_score_of_words(
                tokens, p, convention, reference, lm_weight, word_score, unk_score, lookahead
            ),
            lambda p: fused_score(words_of(tokens, p, convention), reference, lm_weight, word_score, unk_score),
            delimiters={1} if convention == "delimiter" else (),
        )
        decoder = CTCDecoder(
            tokens,
            lm=arpa_path,
            lm_weight=lm_weight,
            word_score=word_score,
            unk_score=unk_score,
            lm_lookahead=lookahead,
            beam_width=beam_width,
            nbest=beam_width,
        )
        hypotheses = decoder(logits)[0]
        assert [h.tokens for h in hypotheses] == [labels for _, labels in expected]
        assert [h.score for h in hypotheses] == pytest.approx([score for score, _ in expected], abs=1e-6)


def test_python_lm_without_vocabulary_gives_no_unknown_penalty():
    tokens, T = ["-", "|", "a", "b"], 4
    logits = random_logits(T, 1, 4, seed=60)

    class BigramCount:  # favours short words, knows nothing of a vocabulary
        def start(self):
            return 0

        def score(self, state, word):
            return state + 1, -0.5 * len(word) - 0.1 * state

        def finish(self, state):
            return -0.2 * state

    def lm_score(words):
        return 0.9 * (sum(-0.5 * len(w) - 0.1 * i for i, w in enumerate(words)) - 0.2 * len(words))

    ranked, count = brute_force_ranking(logits[:, 0], tokens, 0, lm_score, "delimiter")
    decoder = CTCDecoder(tokens, lm=BigramCount(), lm_weight=0.9, unk_score=-100.0, beam_width=count, nbest=8)
    assert_nbest_is_ranking(decoder(logits)[0], ranked, 8)


def test_lexicon_constrains_words_exactly(arpa_path):
    tokens, T = ["-", "|", "a", "b"], 5
    logits = random_logits(T, 1, 4, seed=61)
    lexicon = ["ab", "b", "bab"]
    reference = ReferenceArpa(arpa_path)
    for lm in (None, arpa_path):

        def score(words):
            return fused_score(words, reference, 0.5, 0.2, -3.0, known=lexicon) if lm else 0.0

        ranked, count = brute_force_ranking(
            logits[:, 0], tokens, 0, score, "delimiter", allowed=lambda words: all(w in lexicon for w in words)
        )
        decoder = CTCDecoder(
            tokens, lm=lm, lexicon=lexicon, lm_weight=0.5, word_score=0.2, unk_score=-3.0, beam_width=count, nbest=6
        )
        assert_nbest_is_ranking(decoder(logits)[0], ranked, 6)


def test_hotwords_gain_their_weight_per_occurrence_even_outside_the_lm_vocabulary(arpa_path):
    tokens, T = ["-", "|", "a", "b"], 5
    logits = random_logits(T, 1, 4, seed=62)
    reference = ReferenceArpa(arpa_path)
    weights = {"ba": 2.5, "bb": 1.0}  # "ba" is not in the model

    def gains(words):
        return sum(weights.get(w, 0.0) for w in words)

    ranked, count = brute_force_ranking(
        logits[:, 0],
        tokens,
        0,
        lambda words: fused_score(words, reference, 0.7, 0.0, -4.0, known=weights, hotword_gains=gains),
        "delimiter",
    )
    decoder = CTCDecoder(
        tokens, lm=arpa_path, hotwords=list(weights.items()), lm_weight=0.7, unk_score=-4.0, beam_width=count, nbest=8
    )
    assert_nbest_is_ranking(decoder(logits)[0], ranked, 8)


def test_multi_word_hotword_gains_only_when_whole():
    tokens, T = ["-", "|", "a", "b"], 5
    logits = random_logits(T, 1, 4, seed=63)

    def gains(words):
        return 3.0 * sum(1 for i in range(len(words) - 1) if words[i : i + 2] == ["a", "b"])

    ranked, count = brute_force_ranking(logits[:, 0], tokens, 0, gains, "delimiter")
    decoder = CTCDecoder(tokens, hotwords=[("a b", 3.0)], beam_width=count, nbest=8)
    assert_nbest_is_ranking(decoder(logits)[0], ranked, 8)


# ----------------------------------------------------------------------------------------------
# Text, words and frames
def peaked(tokens, path, low=-8.0):
    """(T, 1, C) logits whose best path is `path` (token strings, '-' for blank)."""
    logits = torch.full((len(path), 1, len(tokens)), low, dtype=torch.float64)
    for t, token in enumerate(path):
        logits[t, 0, tokens.index(token)] = 8.0
    return logits


def test_text_keeps_repeated_letters_and_gives_word_frames():
    tokens = ["-", "|", "h", "e", "l", "o", "w", "r", "d"]
    path = ["h", "e", "l", "-", "l", "o", "|", "|", "w", "o", "r", "l", "d", "-"]
    best = CTCDecoder(tokens, beam_width=4)(peaked(tokens, path))[0][0]
    assert best.text == "hello world"
    assert [(w.word, w.start, w.end) for w in best.words] == [("hello", 0, 6), ("world", 8, 13)]
    assert best.token_frames[3] == (4, 5)  # the second "l", after the blank


@pytest.mark.parametrize(
    "tokens,path,text",
    [
        (["<pad>", "▁the", "▁ca", "t", "s"], ["▁the", "▁ca", "t", "s"], "the cats"),
        (["[PAD]", "the", "ca", "##t", "##s"], ["the", "ca", "##t", "##s"], "the cats"),
        (["-", "北", "京"], ["北", "-", "京"], "北京"),
    ],
)
def test_word_conventions(tokens, path, text):
    best = CTCDecoder(tokens, beam_width=4)(peaked(tokens, path))[0][0]
    assert best.text == text


def test_stream_fed_in_chunks_equals_whole_utterance(arpa_path):
    tokens = ["-", "|", "a", "b"]
    logits = random_logits(40, 1, 4, seed=64, dtype=torch.float32)
    decoder = CTCDecoder(tokens, lm=arpa_path, hotwords=["ba"], beam_width=6, nbest=3)
    whole = decoder(logits)[0]
    for cuts in ([0, 40], [0, 1, 7, 8, 30, 40], list(range(41))):
        stream = decoder.stream()
        for begin, end in zip(cuts, cuts[1:]):
            stream.feed(logits[begin:end, 0])
        assert stream.finish() == whole
    from ctc_ext.bench_decode import text_log_likelihood

    for h in whole:  # exact, though the beam of 6 prunes
        assert h.ctc_score == pytest.approx(
            text_log_likelihood(logits[:, 0].log_softmax(-1), h.tokens, 0, [1]), abs=1e-6
        )


def test_two_threads_equal_one_and_batch_equals_samples_alone(arpa_path):
    tokens = ["-", "|", "a", "b"]
    logits = random_logits(30, 7, 4, seed=65, dtype=torch.float32)
    lengths = [30, 0, 5, 29, 17, 30, 1]
    one = CTCDecoder(tokens, lm=arpa_path, beam_width=8, nbest=2, num_threads=1)(logits, lengths)
    decoder = CTCDecoder(tokens, lm=arpa_path, beam_width=8, nbest=2, num_threads=2)
    batch_first = decoder(logits.transpose(0, 1), torch.tensor(lengths), batch_first=True)
    for n, length in enumerate(lengths):
        assert batch_first[n] == one[n] == decoder(logits[:length, n : n + 1])[0]
    # A Python model (no look-ahead: it gives no unigram probabilities) on 2 threads, against the
    # C++ model without look-ahead on 1.
    one = CTCDecoder(tokens, lm=arpa_path, lm_lookahead=False, beam_width=8, nbest=2, num_threads=1)(logits, lengths)
    two = CTCDecoder(tokens, lm=ReferenceLM(arpa_path), beam_width=8, nbest=2, num_threads=2)(logits, lengths)
    for a, b in zip(one, two):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-6)  # float32 model


def test_pruning_knobs_off_by_default_and_wide_threshold_changes_nothing(arpa_path):
    tokens = ["-", "|", "a", "b"]
    logits = random_logits(30, 3, 4, seed=66)
    plain = CTCDecoder(tokens, lm=arpa_path, beam_width=5, nbest=5)(logits)
    loose = CTCDecoder(tokens, lm=arpa_path, beam_width=5, nbest=5, beam_threshold=1e6, token_min_log_prob=-1e6)(logits)
    assert plain == loose
    tight = CTCDecoder(tokens, lm=arpa_path, beam_width=5, nbest=5, beam_threshold=0.5)(logits)
    assert all(h.score >= sample[0].score - 0.5 - 1e-9 for sample in tight for h in sample)


def test_without_scorers_the_decoder_equals_beam_search():
    tokens = ["-"] + [chr(ord("a") + i) for i in range(11)]
    logits = random_logits(25, 3, 12, seed=67)
    expected = ctc_ext.beam_search(logits, beam_width=7, top_k=3)
    for sample, reference in zip(CTCDecoder(tokens, beam_width=7, nbest=3)(logits), expected):
        assert [h.tokens for h in sample] == [labels.tolist() for labels, _ in reference]
        assert [h.score for h in sample] == pytest.approx([p for _, p in reference], abs=1e-9)


# ----------------------------------------------------------------------------------------------
# Bad input
TOKENS = ["-", "|", "a", "b"]


@pytest.mark.parametrize(
    "make,error,message",
    [
        (lambda: CTCDecoder(TOKENS, blank=4), ValueError, "blank must be in"),
        (lambda: CTCDecoder(TOKENS, blank="_"), ValueError, "blank token '_' is not among the tokens"),
        (lambda: CTCDecoder("abc"), TypeError, "tokens must be a list of strings"),
        (lambda: CTCDecoder(TOKENS, hotwords=["abc"]), ValueError, r"hotword 'abc' has characters that no token"),
        (lambda: CTCDecoder(TOKENS, lexicon=["ax"]), ValueError, "lexicon word 'ax' has characters"),
        (lambda: CTCDecoder(TOKENS, lm_weight=math.nan), ValueError, "lm_weight must be a finite number"),
        (lambda: CTCDecoder(TOKENS, word_score=math.nan), ValueError, "word_score must be"),
        (lambda: CTCDecoder(TOKENS, unk_score=math.nan), ValueError, "unk_score must be a number"),
        (lambda: CTCDecoder(TOKENS, hotwords=[("ab", math.nan)]), ValueError, "the weight of hotword 'ab'"),
        (lambda: CTCDecoder(TOKENS, hotwords=[("ab", -1.0)]), ValueError, "must be positive"),
        (lambda: CTCDecoder(TOKENS, beam_width=0), ValueError, "beam_width must be at least 1"),
        (lambda: CTCDecoder(TOKENS, beam_width=2**40), ValueError, "beam_width must be at most"),
        (lambda: CTCDecoder(TOKENS, nbest=1.5), TypeError, "nbest must be an int"),
        (lambda: CTCDecoder(TOKENS, word_convention="bpe"), ValueError, "word_convention must be one of"),
        (lambda: CTCDecoder(TOKENS, lm=object()), TypeError, "it has no start"),
        (lambda: CTCDecoder(TOKENS, lm="/nonexistent.arpa"), (ValueError, FileNotFoundError), "nonexistent"),
    ],
)
def test_bad_decoder_arguments_raise_clear_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_bad_decode_inputs_raise_clear_errors():
    decoder = CTCDecoder(TOKENS)
    with pytest.raises(ValueError, match="log_probs has C = 5 classes but the decoder has 4 tokens"):
        decoder(torch.randn(5, 1, 5))
    bad = torch.randn(6, 2, 4)
    bad[3, 1, 2] = math.nan
    with pytest.raises(ValueError, match="log_probs of sample 1 at frame 3 hold NaN"):
        decoder(bad)
    with pytest.raises(ValueError, match="log_probs of sample 1 at frame 3 hold NaN"):
        ctc_ext.beam_search(bad)
    with pytest.raises(ValueError, match="log_probs of sample 0 at frame 1 give every class probability 0"):
        ctc_ext.beam_search(torch.tensor([[[0.0, 1.0]], [[-math.inf, -math.inf]]]))
    with pytest.raises(ValueError, match="a chunk must be"):
        decoder.stream().feed(torch.randn(3, 5))
    stream = decoder.stream()
    stream.finish()
    with pytest.raises(RuntimeError, match="stream is finished"):
        stream.feed(torch.randn(3, 4))


class BadLM:
    def __init__(self, result):
        self.result = result

    def start(self):
        return None

    def score(self, state, word):
        return self.result

    def finish(self, state):
        return 0.0


@pytest.mark.parametrize(
    "result,error,message",
    [
        ((None, math.nan), ValueError, "log-probabilities must be numbers <= 0"),
        ((None, 0.5), ValueError, "log-probabilities must be numbers <= 0"),
        ((None, "x"), TypeError, "must return a float"),
        (-1.0, TypeError, r"must return a \(next_state, log_prob\) tuple"),
    ],
)
def test_python_lm_returning_a_non_number_is_rejected(result, error, message):
    logits = peaked(TOKENS, ["a", "|", "b"])
    with pytest.raises(error, match=message):
        CTCDecoder(TOKENS, lm=BadLM(result))(logits)


@pytest.mark.parametrize("value", [math.nan, math.inf, "x", None])
def test_beam_search_scorer_returning_a_non_number_is_rejected(value):
    with pytest.raises((ValueError, TypeError), match="must return a float|must be numbers below"):
        ctc_ext.beam_search(random_logits(5, 1, 4, seed=68), scorer=lambda prefix, label: value)


def test_beam_width_beyond_what_can_be_held_is_refused():
    with pytest.raises(ValueError, match="at most 1048576 can be held"):
        ctc_ext.beam_search(random_logits(50, 1, 20, seed=69), beam_width=2**62)


# ----------------------------------------------------------------------------------------------
# Against pyctcdecode (optional: pip install 'ctc_ext[lm-compare]')
def test_same_text_as_pyctcdecode_or_a_higher_fused_score(tmp_path):
    pyctcdecode = pytest.importorskip("pyctcdecode")
    pytest.importorskip("kenlm")
    from ctc_ext.bench_decode import synthetic_lm_task, text_log_likelihood
    from ctc_ext.lm import NgramLM

    tokens, logits, arpa, _ = synthetic_lm_task("characters", T=80, N=50, workdir=str(tmp_path), seed=3)
    log_probs = logits.double().log_softmax(2)
    alpha, beta, unk_offset, beam_width = 0.5, 1.0, -10.0, 16
    unk_score = alpha * unk_offset * math.log(10)  # pyctcdecode's offset is log10, inside alpha
    # At equal beams one of these 50 is a search miss (n = 13, 0.27 nats, docs/decoding.md): a last
    # word likely after its predecessor but rare alone, which the unigram look-ahead underrates, so
    # it leaves a beam of 16 while partial.  At twice pyctcdecode's beam none is lost.
    our_beam_width = 2 * beam_width
    ours = CTCDecoder(
        tokens, lm=arpa, lm_weight=alpha, word_score=beta, unk_score=unk_score, beam_width=our_beam_width, nbest=4
    )(log_probs)
    labels = [""] + [" " if t == "|" else t for t in tokens[1:]]
    reference = pyctcdecode.build_ctcdecoder(
        labels, kenlm_model_path=arpa, alpha=alpha, beta=beta, unk_score_offset=unk_offset
    )
    lm = NgramLM(arpa)
    bar = tokens.index("|")

    def fused(spellings, frame_log_probs):
        """Our fused score of the best of these token sequences (all spelling the same words)."""
        words = "".join(tokens[c] for c in spellings[0]).replace("|", " ").split()
        ctc = max(text_log_likelihood(frame_log_probs, spelling, 0, [bar]) for spelling in spellings)
        unknown = sum(1 for w in words if w not in lm)
        return ctc + alpha * lm.score(words) + beta * len(words) + unk_score * unknown

    def spellings_of(text):  # with or without a delimiter at the end (one at the start is absorbed)
        core = [tokens.index(ch) for ch in "|".join(text.split())]
        return [core, core + [bar]] if core else [[]]

    worse, different = [], 0
    for n in range(50):
        theirs = " ".join(reference.decode(log_probs[:, n].numpy(), beam_width=beam_width).split())
        best = ours[n][0]
        ours_exact = fused([best.tokens], log_probs[:, n])
        # The final beam is rescored exactly: ctc_score is the exact CTC log-likelihood.
        assert best.ctc_score == pytest.approx(text_log_likelihood(log_probs[:, n], best.tokens, 0, [bar]), abs=1e-9)
        assert best.score == pytest.approx(ours_exact, abs=1e-6)
        if theirs != best.text:
            different += 1
            margin = ours_exact - fused(spellings_of(theirs), log_probs[:, n])
            if margin < -1e-9:
                worse.append((n, best.text, theirs, margin))
    assert different > 10  # the two searches do differ on this task
    assert not worse, f"pyctcdecode's text scores higher under our fused score: {worse}"
