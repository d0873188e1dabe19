"""Greedy decoding, prefix beam search, forced alignment and token spans against brute force.

References are independent of the code under test: label sequences and frame paths are
enumerated exhaustively on tiny inputs and scored with the built-in F.ctc_loss (float64) or by
summing frame log-probabilities.
"""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ctc_cases import make_batch

import ctc_ext


def collapse(path, blank):
    """Merge repeats, then drop blanks (and the -1 padding)."""
    labels, previous = [], None
    for c in path:
        if c != blank and c != -1 and c != previous:
            labels.append(c)
        previous = c
    return labels


def sequence_log_likelihoods(frame_log_probs, sequences, blank):
    """log p(sequence | x) for every sequence, from the built-in ctc_loss in float64.

    frame_log_probs: (T_n, C) float64 log-probabilities of one sample.
    """
    T, C = frame_log_probs.shape
    M = len(sequences)
    width = max(1, max(len(s) for s in sequences))
    targets = torch.ones(M, width, dtype=torch.int64) * (1 if blank != 1 else 2)
    for m, s in enumerate(sequences):
        targets[m, : len(s)] = torch.tensor(s, dtype=torch.int64)
    batch = frame_log_probs.unsqueeze(1).expand(T, M, C).contiguous()
    loss = F.ctc_loss(batch, targets, [T] * M, [len(s) for s in sequences], blank=blank, reduction="none")
    return (-loss).tolist()


def all_label_sequences(num_classes, blank, max_length):
    labels = [c for c in range(num_classes) if c != blank]
    return [list(s) for length in range(max_length + 1) for s in itertools.product(labels, repeat=length)]


def random_logits(T, N, C, seed, dtype=torch.float64, device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    return (2 * torch.randn(T, N, C, generator=generator)).to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Greedy
@pytest.mark.parametrize("blank", [0, 3])
def test_greedy_equals_collapsed_argmax_path(blank, device):
    logits = random_logits(20, 6, 5, seed=1, dtype=torch.float32, device=device)
    lengths = [20, 0, 7, 19, 1, 12]
    decoded = ctc_ext.greedy_decode(logits, lengths, blank=blank)
    assert len(decoded) == 6
    for n, length in enumerate(lengths):
        best_path = [max(range(5), key=lambda c: logits[t, n, c].item()) for t in range(length)]
        assert decoded[n].dtype == torch.int64
        assert decoded[n].tolist() == collapse(best_path, blank)


def test_greedy_merges_repeats_only_without_a_blank_between(device):
    path = [1, 1, 0, 1, 2, 2, 0, 0, 2]
    logits = F.one_hot(torch.tensor(path, device=device), 3).double().unsqueeze(1) * 10  # (T, 1, C)
    assert ctc_ext.greedy_decode(logits)[0].tolist() == [1, 1, 2, 2]


def test_greedy_defaults_to_full_length_and_accepts_batch_first(device):
    logits = random_logits(15, 4, 6, seed=2, device=device)
    full = ctc_ext.greedy_decode(logits)
    explicit = ctc_ext.greedy_decode(logits, torch.tensor([15, 15, 15, 15], dtype=torch.int32))
    batch_first = ctc_ext.greedy_decode(logits.transpose(0, 1).contiguous(), batch_first=True)
    for a, b, c in zip(full, explicit, batch_first):
        assert a.tolist() == b.tolist() == c.tolist()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_greedy_reduced_precision_matches_float32_of_same_values(dtype, device):
    logits = random_logits(30, 3, 7, seed=3, dtype=dtype, device=device)
    expected = ctc_ext.greedy_decode(logits.float())
    for a, b in zip(ctc_ext.greedy_decode(logits), expected):
        assert a.tolist() == b.tolist()


# ----------------------------------------------------------------------------------------------
# Prefix beam search
@pytest.mark.parametrize("num_classes,blank,T", [(3, 0, 4), (3, 2, 5), (4, 1, 4)])
def test_wide_beam_is_exact_against_enumeration(num_classes, blank, T, device):
    N = 3
    logits = random_logits(T, N, num_classes, seed=10 + num_classes + T)
    lengths = [T, T - 1, 2]
    sequences = all_label_sequences(num_classes, blank, T)
    # Beam search decodes on the host: CUDA input is copied there once, results come back there.
    results = ctc_ext.beam_search(logits.to(device), lengths, beam_width=len(sequences), blank=blank, top_k=4)
    for n, length in enumerate(lengths):
        frame_log_probs = logits[:length, n].log_softmax(-1)
        candidates = [s for s in sequences if len(s) <= length]
        scores = sequence_log_likelihoods(frame_log_probs, candidates, blank)
        ranked = sorted(zip(scores, candidates), key=lambda item: -item[0])
        assert len(results[n]) == 4
        for (labels, log_prob), (expected_score, expected_labels) in zip(results[n], ranked):
            assert labels.tolist() == expected_labels
            assert log_prob == pytest.approx(expected_score, abs=1e-9)


def test_wide_beam_score_equals_ctc_ext_loss_in_float32():
    logits = random_logits(5, 2, 3, seed=4, dtype=torch.float32)
    results = ctc_ext.beam_search(logits, beam_width=64, top_k=3)
    for n in range(2):
        for labels, log_prob in results[n]:
            loss = ctc_ext.ctc_loss(logits[:, n : n + 1], labels.unsqueeze(0), [5], [len(labels)], reduction="none")
            assert log_prob == pytest.approx(-loss.item(), abs=1e-4)


def log_add(a, b):
    return float(torch.logaddexp(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)))


def reference_beam(frame_log_probs, blank, beam_width, prefix_score=lambda prefix: 0.0, delimiters=()):
    """Textbook prefix beam search over every class (no class shortcut), prefixes as tuples ranked
    by CTC + prefix_score(prefix); after the start or a delimiter, a delimiter counts as a blank.
    Returns the last beam: prefix -> (log p ending in blank, log p ending in its last label)."""
    beam = {(): (0.0, -math.inf)}
    for frame in frame_log_probs.tolist():
        following = {}

        def add(prefix, blank_part, nonblank_part):
            old = following.get(prefix, (-math.inf, -math.inf))
            following[prefix] = (log_add(old[0], blank_part), log_add(old[1], nonblank_part))

        for prefix, (log_blank, log_nonblank) in beam.items():
            total = log_add(log_blank, log_nonblank)
            add(prefix, total + frame[blank], -math.inf)
            absorbs = not prefix or prefix[-1] in delimiters
            if absorbs:
                for d in delimiters:
                    add(prefix, total + frame[d], -math.inf)
            elif prefix:
                add(prefix, -math.inf, log_nonblank + frame[prefix[-1]])
            for c in range(len(frame)):
                if c == blank or (absorbs and c in delimiters):
                    continue
                from_score = log_blank if prefix and prefix[-1] == c else total
                add(prefix + (c,), -math.inf, from_score + frame[c])
        ranked = sorted(
            ((log_add(*scores) + prefix_score(prefix), prefix, scores) for prefix, scores in following.items()),
            key=lambda item: -item[0],
        )
        beam = {prefix: scores for score, prefix, scores in ranked[:beam_width] if score > -math.inf}
    return beam


def reference_prefix_beam_search(frame_log_probs, blank, beam_width):
    """The textbook search's last beam, rescored with the exact CTC score (the built-in ctc_loss)
    and re-ranked, as the decoder does after the last frame."""
    prefixes = [list(p) for p in reference_beam(frame_log_probs, blank, beam_width)]
    exact = sequence_log_likelihoods(frame_log_probs, prefixes, blank)
    return sorted(zip(prefixes, exact), key=lambda item: -item[1])


@pytest.mark.parametrize("beam_width", [1, 2, 4])
def test_narrow_beam_matches_textbook_search_over_every_class(beam_width):
    # C = 12 > beam_width + 2, so the C++ search skips unlikely classes: results must not change.
    T, C, blank = 12, 12, 0
    logits = random_logits(T, 2, C, seed=20 + beam_width) * 0.7
    results = ctc_ext.beam_search(logits, beam_width=beam_width, top_k=beam_width)
    for n in range(2):
        expected = reference_prefix_beam_search(logits[:, n].log_softmax(-1), blank, beam_width)
        assert [labels.tolist() for labels, _ in results[n]] == [labels for labels, _ in expected]
        for (_, log_prob), (_, expected_log_prob) in zip(results[n], expected):
            assert log_prob == pytest.approx(expected_log_prob, abs=1e-9)


@pytest.mark.parametrize("seed", range(40))
def test_random_narrow_beams_match_textbook_search(seed):
    # Peaky and flat frames, beams narrower and wider than C, any blank: prefixes whose last label is
    # not among a frame's beam_width + 2 likeliest classes still receive their parent's extension.
    generator = torch.Generator().manual_seed(100 + seed)
    T, C, beam_width = [int(v) for v in torch.randint(1, 10, (3,), generator=generator)]
    C, beam_width = C + 1, (beam_width + 1) // 2
    blank = int(torch.randint(0, C, (1,), generator=generator))
    scale = [0.5, 2.0, 6.0][seed % 3]
    logits = scale * torch.randn(T, 1, C, generator=generator, dtype=torch.float64)
    results = ctc_ext.beam_search(logits, beam_width=beam_width, top_k=beam_width, blank=blank)[0]
    expected = reference_prefix_beam_search(logits[:, 0].log_softmax(-1), blank, beam_width)
    assert [labels.tolist() for labels, _ in results] == [labels for labels, _ in expected]
    assert [p for _, p in results] == pytest.approx([p for _, p in expected], abs=1e-9)


@pytest.mark.parametrize("blank", [0, 2])
def test_narrow_beam_log_probs_are_exact_ctc_log_likelihoods(blank):
    # A beam of 3 over 30 frames prunes many paths of the prefixes it keeps; the final beam is
    # rescored exactly (the built-in ctc_loss in float64) and ranked by it.
    logits = random_logits(30, 2, 5, seed=31 + blank) * 0.5
    results = ctc_ext.beam_search(logits, [30, 23], beam_width=3, top_k=3, blank=blank)
    for n, length in enumerate([30, 23]):
        labels = [labels.tolist() for labels, _ in results[n]]
        expected = sequence_log_likelihoods(logits[:length, n].log_softmax(-1), labels, blank)
        assert [log_prob for _, log_prob in results[n]] == pytest.approx(expected, abs=1e-9)
        assert expected == sorted(expected, reverse=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_inputs_decode_and_align_like_float32_of_same_values(dtype):
    logits = random_logits(20, 2, 6, seed=21, dtype=dtype)
    expected = ctc_ext.beam_search(logits.float(), beam_width=4, top_k=2)
    for a, b in zip(ctc_ext.beam_search(logits, beam_width=4, top_k=2), expected):
        assert [(labels.tolist(), p) for labels, p in a] == [(labels.tolist(), p) for labels, p in b]
    targets = torch.tensor([[1, 2, 3], [5, 5, 4]])
    alignment, frame_log_probs = ctc_ext.forced_align(logits, targets, [20, 20], [3, 3])
    expected_alignment, expected_frame_log_probs = ctc_ext.forced_align(logits.float(), targets, [20, 20], [3, 3])
    assert frame_log_probs.dtype == torch.float32
    assert torch.equal(alignment, expected_alignment)
    assert torch.equal(frame_log_probs, expected_frame_log_probs)


def test_beam_search_batched_equals_per_sample_and_batch_first(device):
    logits = random_logits(25, 5, 8, seed=5, dtype=torch.float32, device=device)
    lengths = torch.tensor([25, 3, 0, 17, 24])
    batched = ctc_ext.beam_search(logits, lengths, beam_width=5, top_k=3, blank=2)
    batch_first = ctc_ext.beam_search(logits.transpose(0, 1), lengths, beam_width=5, top_k=3, blank=2, batch_first=True)
    for n in range(5):
        alone = ctc_ext.beam_search(logits[: int(lengths[n]), n : n + 1], beam_width=5, top_k=3, blank=2)[0]
        for results in (batched[n], batch_first[n]):
            assert [(labels.tolist(), log_prob) for labels, log_prob in results] == [
                (labels.tolist(), log_prob) for labels, log_prob in alone
            ]


def test_beam_search_empty_input_gives_empty_hypothesis_and_few_prefixes_give_fewer_than_top_k():
    logits = random_logits(1, 2, 3, seed=6)
    results = ctc_ext.beam_search(logits, [0, 1], beam_width=8, top_k=5)
    assert [(labels.tolist(), log_prob) for labels, log_prob in results[0]] == [([], 0.0)]
    assert sorted(labels.tolist() for labels, _ in results[1]) == [[], [1], [2]]  # every possible prefix


def test_huge_beam_width_and_top_k_are_accepted():
    logits = random_logits(3, 1, 3, seed=22)
    results = ctc_ext.beam_search(logits, beam_width=2**62, top_k=2**62)[0]
    sequences = all_label_sequences(3, 0, 3)
    possible = [
        s
        for s, score in zip(sequences, sequence_log_likelihoods(logits[:, 0].log_softmax(-1), sequences, 0))
        if score > -math.inf
    ]
    assert len(possible) == 9  # [1, 1, 2] and the like need more than 3 frames
    assert sorted(labels.tolist() for labels, _ in results) == sorted(possible)


def test_beam_search_log_probs_are_float64_for_float64_input_and_ranked():
    logits = random_logits(10, 1, 6, seed=7)
    results = ctc_ext.beam_search(logits, beam_width=6, top_k=6)[0]
    log_probs = [log_prob for _, log_prob in results]
    assert log_probs == sorted(log_probs, reverse=True)
    assert all(isinstance(p, float) for p in log_probs)


# Prefix scorer hook
def test_zero_scorer_gives_the_same_results_as_the_cpp_search():
    logits = random_logits(15, 3, 9, seed=8)
    plain = ctc_ext.beam_search(logits, [15, 9, 4], beam_width=4, top_k=4)
    scored = ctc_ext.beam_search(logits, [15, 9, 4], beam_width=4, top_k=4, scorer=lambda prefix, label: 0.0)
    for a, b in zip(plain, scored):
        assert [labels.tolist() for labels, _ in a] == [labels.tolist() for labels, _ in b]
        assert [p for _, p in a] == pytest.approx([p for _, p in b], abs=1e-9)


def test_wide_beam_with_scorer_maximises_ctc_plus_weighted_scorer(device):
    T, C, blank, weight = 4, 3, 0, 0.7
    logits = random_logits(T, 1, C, seed=9)

    def scorer(prefix, label):  # favours alternating labels, a bigram-like score
        return 0.0 if not prefix or prefix[-1] != label else -2.0

    sequences = all_label_sequences(C, blank, T)
    ctc_scores = sequence_log_likelihoods(logits[:, 0].log_softmax(-1), sequences, blank)
    combined = []
    for s, ctc_score in zip(sequences, ctc_scores):
        combined.append(ctc_score + weight * sum(scorer(s[:i], s[i]) for i in range(len(s))))
    ranked = sorted(zip(combined, sequences), key=lambda item: -item[0])
    results = ctc_ext.beam_search(
        logits.to(device), beam_width=len(sequences), top_k=3, scorer=scorer, scorer_weight=weight
    )[0]
    for (labels, log_prob), (expected_score, expected_labels) in zip(results, ranked):
        assert labels.tolist() == expected_labels
        assert log_prob == pytest.approx(expected_score, abs=1e-9)


def test_scorer_returning_minus_inf_forbids_a_label():
    logits = random_logits(12, 2, 5, seed=11)
    logits[:, :, 3] += 4  # label 3 dominates without the scorer
    assert 3 in ctc_ext.beam_search(logits, beam_width=4)[0][0][0].tolist()
    results = ctc_ext.beam_search(
        logits, beam_width=4, top_k=4, scorer=lambda prefix, label: -math.inf if label == 3 else 0.0
    )
    for sample in results:
        assert sample and all(3 not in labels.tolist() for labels, _ in sample)


# ----------------------------------------------------------------------------------------------
# Forced alignment
def best_valid_path_score(frame_log_probs, target, blank):
    """max over all C^T frame paths that collapse to target of the path's log-probability."""
    T, C = frame_log_probs.shape
    best = -math.inf
    for path in itertools.product(range(C), repeat=T):
        if collapse(path, blank) == target:
            best = max(best, sum(frame_log_probs[t, c].item() for t, c in enumerate(path)))
    return best


@pytest.mark.parametrize("blank", [0, 2])
def test_alignment_is_a_best_valid_path_against_enumeration(blank, device):
    T, C = 6, 3
    labels = [c for c in range(C) if c != blank]
    a, b = labels
    targets_list = [[], [a], [a, a], [a, b, a], [b, b, a], [a, a, a]]
    N = len(targets_list)
    logits = random_logits(T, N, C, seed=30 + blank)
    input_lengths = [6, 5, 6, 4, 6, 5]
    targets = torch.zeros(N, 3, dtype=torch.int64)
    for n, target in enumerate(targets_list):
        targets[n, : len(target)] = torch.tensor(target, dtype=torch.int64)
    alignment, frame_log_probs = ctc_ext.forced_align(
        logits.to(device), targets, input_lengths, [len(t) for t in targets_list], blank=blank
    )
    alignment, frame_log_probs = alignment.cpu(), frame_log_probs.cpu()
    assert alignment.shape == frame_log_probs.shape == (N, T)
    assert frame_log_probs.dtype == torch.float64
    for n, target in enumerate(targets_list):
        length = input_lengths[n]
        lp = logits[:length, n].log_softmax(-1)
        path = alignment[n, :length].tolist()
        assert collapse(path, blank) == target
        assert frame_log_probs[n, :length].tolist() == pytest.approx([lp[t, c].item() for t, c in enumerate(path)])
        assert frame_log_probs[n].sum().item() == pytest.approx(best_valid_path_score(lp, target, blank), abs=1e-9)
        assert alignment[n, length:].tolist() == [-1] * (T - length)
        assert frame_log_probs[n, length:].tolist() == [0.0] * (T - length)


def test_alignment_score_is_at_most_the_total_log_likelihood_on_longer_inputs(device):
    T, N, C, S = 60, 4, 10, 20
    generator = torch.Generator().manual_seed(12)
    logits = random_logits(T, N, C, seed=12, dtype=torch.float32, device=device)
    targets = torch.randint(1, C, (N, S), generator=generator).to(device)
    input_lengths, target_lengths = [60, 55, 41, 60], [20, 15, 20, 0]
    alignment, frame_log_probs = ctc_ext.forced_align(logits, targets, input_lengths, target_lengths)
    total = -ctc_ext.ctc_loss(logits, targets, input_lengths, target_lengths, reduction="none")
    for n in range(N):
        assert collapse(alignment[n].tolist(), 0) == targets[n, : target_lengths[n]].tolist()
        assert frame_log_probs[n].sum().item() <= total[n].item() + 1e-4
    assert alignment[3, :60].tolist() == [0] * 60  # an empty target aligns to blanks only


def test_alignment_batched_equals_per_sample_in_every_target_format(device):
    T, N, C = 30, 4, 7
    generator = torch.Generator().manual_seed(13)
    logits = random_logits(T, N, C, seed=13, dtype=torch.float32, device=device)
    target_lengths = [5, 0, 9, 3]
    input_lengths = [30, 12, 25, 3]
    padded = torch.randint(1, C, (N, 10), generator=generator).to(device)
    concatenated = torch.cat([padded[n, : target_lengths[n]] for n in range(N)])
    reference = ctc_ext.forced_align(logits, padded, input_lengths, target_lengths)
    variants = [
        ctc_ext.forced_align(logits, concatenated, input_lengths, target_lengths),
        ctc_ext.forced_align(logits, padded.int(), torch.tensor(input_lengths), torch.tensor(target_lengths)),
        ctc_ext.forced_align(
            logits.transpose(0, 1).contiguous(), padded, input_lengths, target_lengths, batch_first=True
        ),
    ]
    for alignment, frame_log_probs in variants:
        assert torch.equal(alignment, reference[0])
        assert torch.equal(frame_log_probs, reference[1])
    for n in range(N):
        alone = ctc_ext.forced_align(
            logits[: input_lengths[n], n : n + 1], padded[n : n + 1], [input_lengths[n]], [target_lengths[n]]
        )
        assert torch.equal(alone[0][0], reference[0][n, : input_lengths[n]])
        assert torch.allclose(alone[1][0], reference[1][n, : input_lengths[n]])


def test_alignment_with_no_frames_and_empty_target_is_all_padding(device):
    alignment, frame_log_probs = ctc_ext.forced_align(
        random_logits(4, 1, 3, seed=14, device=device), torch.zeros(1, 0, device=device).long(), [0], [0]
    )
    assert alignment.tolist() == [[-1] * 4]
    assert frame_log_probs.tolist() == [[0.0] * 4]


@pytest.mark.parametrize("targets,input_length", [([1, 1], 2), ([1, 2, 1], 2), ([1], 0)])
def test_impossible_alignment_raises_naming_the_sample(targets, input_length, device):
    logits = random_logits(4, 2, 3, seed=15, device=device)
    padded = torch.tensor([[2, 0, 0], targets + [1] * (3 - len(targets))])
    with pytest.raises(ValueError, match="sample 1 .*no alignment"):
        ctc_ext.forced_align(logits, padded, [4, input_length], [1, len(targets)])


def test_alignment_through_zero_probability_frames_raises(device):
    logits = random_logits(3, 1, 3, seed=16, device=device)
    logits[:, 0, 2] = -math.inf  # label 2 can never be emitted
    with pytest.raises(ValueError, match="sample 0"):
        ctc_ext.forced_align(logits, torch.tensor([[2]]), [3], [1])


# ----------------------------------------------------------------------------------------------
# Token spans
def test_token_spans_of_a_hand_written_alignment():
    alignment = torch.tensor([0, 1, 1, 0, 2, 0, 0, 2, 3, 3, -1, -1])
    assert ctc_ext.token_spans(alignment) == [(1, 1, 3), (2, 4, 5), (2, 7, 8), (3, 8, 10)]
    spans = ctc_ext.token_spans(alignment.unsqueeze(0).repeat(2, 1), blank=3)
    assert spans[0] == [(0, 0, 1), (1, 1, 3), (0, 3, 4), (2, 4, 5), (0, 5, 7), (2, 7, 8)]


def test_token_spans_of_forced_alignment_spell_the_target_and_cover_its_frames():
    logits = random_logits(40, 2, 6, seed=17, dtype=torch.float32)
    targets = torch.tensor([[1, 1, 2, 5, 5, 5], [3, 4, 0, 0, 0, 0]].copy())
    targets[1, 2:] = 1
    alignment, _ = ctc_ext.forced_align(logits, targets, [40, 30], [6, 2])
    for n, spans in enumerate(ctc_ext.token_spans(alignment)):
        assert [span.label for span in spans] == targets[n, : [6, 2][n]].tolist()
        for span in spans:
            assert span.start < span.end
            assert (alignment[n, span.start : span.end] == span.label).all()


# ----------------------------------------------------------------------------------------------
# Bad input
LOGITS = random_logits(5, 2, 4, seed=18)


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda: ctc_ext.greedy_decode(LOGITS[:, 0]), ValueError, "log_probs must be 3-D"),
        (lambda: ctc_ext.greedy_decode(LOGITS.long()), ValueError, "log_probs must be float"),
        (lambda: ctc_ext.greedy_decode([1.0]), TypeError, "log_probs must be a tensor"),
        (lambda: ctc_ext.greedy_decode(LOGITS, blank=4), ValueError, "blank must be in"),
        (lambda: ctc_ext.greedy_decode(LOGITS, blank=-1), ValueError, "blank must be in"),
        (lambda: ctc_ext.greedy_decode(LOGITS, [5]), ValueError, "input_lengths must have N = 2"),
        (lambda: ctc_ext.greedy_decode(LOGITS, [5, 6]), RuntimeError, "input_lengths must be at most T"),
        (lambda: ctc_ext.greedy_decode(LOGITS, [5, -1]), RuntimeError, "input_lengths must be non-negative"),
        (lambda: ctc_ext.greedy_decode(LOGITS, torch.tensor([5.0, 5.0])), ValueError, "input_lengths must have an int"),
        (lambda: ctc_ext.beam_search(LOGITS, beam_width=0), ValueError, "beam_width must be at least 1"),
        (lambda: ctc_ext.beam_search(LOGITS, top_k=0), ValueError, "top_k must be at least 1"),
        (lambda: ctc_ext.beam_search(LOGITS, beam_width=2.5), TypeError, "beam_width must be an int"),
        (lambda: ctc_ext.beam_search(LOGITS, blank=7), ValueError, "blank must be in"),
        (lambda: ctc_ext.beam_search(LOGITS, [9, 1]), RuntimeError, "input_lengths must be at most T"),
        (
            lambda: ctc_ext.beam_search(LOGITS, [9, 1], scorer=lambda p, c: 0.0),
            RuntimeError,
            "input_lengths must be at most T",
        ),
        (lambda: ctc_ext.beam_search(LOGITS, scorer=3), TypeError, "scorer must be callable"),
        (
            lambda: ctc_ext.forced_align(LOGITS, torch.tensor([[1], [4]]), [5, 5], [1, 1]),
            RuntimeError,
            r"targets must hold labels in \[0, C\)",
        ),
        (
            lambda: ctc_ext.forced_align(LOGITS, torch.tensor([[1], [0]]), [5, 5], [1, 1]),
            RuntimeError,
            "targets must not contain the blank",
        ),
        (
            lambda: ctc_ext.forced_align(LOGITS, torch.tensor([[1.0], [2.0]]), [5, 5], [1, 1]),
            ValueError,
            "targets must be int32 or int64",
        ),
        (
            lambda: ctc_ext.forced_align(LOGITS, torch.tensor([[1], [2], [3]]), [5, 5], [1, 1]),
            ValueError,
            "padded targets must be",
        ),
        (
            lambda: ctc_ext.forced_align(LOGITS, torch.tensor([[1], [2]]), [5, 5], [1, 2]),
            RuntimeError,
            "exceeds the padded targets width",
        ),
        (
            lambda: ctc_ext.forced_align(LOGITS, torch.tensor([1, 2]), [5, 5], [1, 2]),
            RuntimeError,
            "concatenated targets have 2 labels",
        ),
        (
            lambda: ctc_ext.forced_align(LOGITS, torch.tensor([[1], [2]]), [5, 8], [1, 1]),
            RuntimeError,
            "input_lengths must be at most T",
        ),
        (
            lambda: ctc_ext.forced_align(LOGITS, torch.tensor([[1], [2]]), [5, 5], [1]),
            ValueError,
            "target_lengths must have N = 2",
        ),
        (lambda: ctc_ext.token_spans(torch.zeros(2, 2, 2, dtype=torch.long)), ValueError, "alignment must be"),
        (lambda: ctc_ext.token_spans(torch.zeros(3)), ValueError, "alignment must have an integer dtype"),
    ],
)
def test_bad_input_raises_a_clear_error_naming_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_raw_ops_check_their_arguments_too():
    lengths = torch.tensor([5, 5])
    with pytest.raises(RuntimeError, match="beam_width must be at least 1"):
        ctc_ext.ops.beam_search(LOGITS, lengths, 0, 0, 1)
    with pytest.raises(RuntimeError, match="blank must be in"):
        ctc_ext.ops.greedy_decode(LOGITS, lengths, 9)
    with pytest.raises(RuntimeError, match="logits must be 3-D"):
        ctc_ext.ops.forced_align(LOGITS[0], torch.tensor([[1], [2]]), lengths, torch.tensor([1, 1]), 0)


def decoder_results(blank):
    """Every decoder's output at this blank, as plain lists (LOGITS has C = 4)."""
    targets = torch.tensor([[1], [3]]) if int(blank) == 2 else torch.tensor([[1], [2]])
    return (
        [labels.tolist() for labels in ctc_ext.greedy_decode(LOGITS, blank=blank)],
        [[(labels.tolist(), score) for labels, score in sample] for sample in ctc_ext.beam_search(LOGITS, blank=blank)],
        ctc_ext.forced_align(LOGITS, targets, [5, 5], [1, 1], blank=blank)[0].tolist(),
        ctc_ext.CTCDecoder(["a", "b", "c", "d"], blank=blank)(LOGITS),
    )


@pytest.mark.parametrize("blank", [np.int64(2), np.int32(2), torch.tensor(2)], ids=["np.int64", "np.int32", "tensor"])
def test_decoders_take_an_integer_like_blank_like_the_loss(blank):
    assert decoder_results(blank) == decoder_results(2)


@pytest.mark.parametrize(
    "blank,error,message",
    [
        (2.0, TypeError, "blank must be an int, got float"),
        (True, TypeError, "blank must be an int, got bool"),
        (np.float64(2), TypeError, "blank must be an int, got float64"),
        (np.int64(4), ValueError, r"blank must be in \[0, C\) = \[0, 4\), got 4"),
        (-1, ValueError, r"blank must be in \[0, C\) = \[0, 4\), got -1"),
    ],
)
@pytest.mark.parametrize(
    "decode",
    [
        lambda blank: ctc_ext.greedy_decode(LOGITS, blank=blank),
        lambda blank: ctc_ext.beam_search(LOGITS, blank=blank),
        lambda blank: ctc_ext.CTCDecoder(["a", "b", "c", "d"], blank=blank),
    ],
    ids=["greedy_decode", "beam_search", "CTCDecoder"],
)
def test_decoders_refuse_a_blank_that_is_no_integer_or_out_of_range(decode, blank, error, message):
    with pytest.raises(error, match=message):
        decode(blank)


def prefix_decode(logits, lengths, blank):
    return ctc_ext.CTCDecoder(["a", "b", "c", "d"], blank=blank)._decoder.decode(logits, lengths, 1)


# The C++ check of every decoder's input_lengths, reached through the raw ops (the Python
# functions normalise lengths first).
@pytest.mark.parametrize(
    "op", [ctc_ext.ops.greedy_decode, lambda *args: ctc_ext.ops.beam_search(*args, 3, 1), prefix_decode]
)
@pytest.mark.parametrize(
    "lengths,message",
    [
        (torch.tensor([[5, 5]]), r"input_lengths must be 1-D of size N = 2, got shape \[1, 2\]"),
        (torch.tensor([5, 5, 5]), "input_lengths must have N = 2 entries, got 3"),
        (torch.tensor([5.0, 5.0]), "input_lengths must have an integer dtype, got Float"),
        (torch.tensor([True, True]), "input_lengths must have an integer dtype, got Bool"),
        (torch.tensor([5, -1]), "input_lengths must be non-negative, got -1 for sample 1"),
        (torch.tensor([6, 5], dtype=torch.int32), "input_lengths must be at most T = 5, got 6 for sample 0"),
    ],
)
def test_decode_ops_check_input_lengths_directly(op, lengths, message):
    with pytest.raises(RuntimeError, match=message):
        op(LOGITS, lengths, 0)


def test_decoder_refuses_input_lengths_on_another_device():
    with pytest.raises(RuntimeError, match=r"input_lengths must be on the CPU or on the device of logits \(cpu\)"):
        prefix_decode(LOGITS, torch.tensor([5, 5], device="meta"), 0)
    with pytest.raises(RuntimeError, match="ctc_ext decoders run on the CPU, got logits on meta"):
        prefix_decode(LOGITS.to("meta"), torch.tensor([5, 5]), 0)


# ----------------------------------------------------------------------------------------------
# Operator registration (schemas, fake kernels for torch.compile / export) and devices
def test_opcheck_on_every_decode_op(device):
    logits = random_logits(7, 3, 5, seed=19, dtype=torch.float32, device=device)
    lengths = torch.tensor([7, 4, 0], device=device)
    torch.library.opcheck(ctc_ext.ops.greedy_decode.default, (logits, lengths, 0))
    if device == "cpu":  # the beam search op has a CPU kernel only (ctc_ext.beam_search copies CUDA input)
        torch.library.opcheck(ctc_ext.ops.beam_search.default, (logits, lengths, 0, 3, 2))
    targets = torch.tensor([[1, 2], [3, 3], [0, 0]], device=device)
    target_lengths = torch.tensor([2, 2, 0], device=device)
    torch.library.opcheck(ctc_ext.ops.forced_align.default, (logits, targets, lengths, target_lengths, 0))


def test_inputs_that_require_grad_are_decoded_without_recording_a_graph(device):
    logits = random_logits(8, 2, 4, seed=23, dtype=torch.float32, device=device).requires_grad_()
    assert not any(h.requires_grad for h in ctc_ext.greedy_decode(logits))
    assert not ctc_ext.beam_search(logits)[0][0][0].requires_grad
    alignment, frame_log_probs = ctc_ext.forced_align(logits, torch.tensor([[1, 2], [3, 3]]), [8, 8], [2, 2])
    assert not frame_log_probs.requires_grad


# ----------------------------------------------------------------------------------------------
# On a CUDA device only: greedy decoding and forced alignment run there and give the CPU's results;
# beam search copies the input to the host once and decodes there.
def test_decoders_have_cuda_kernels_and_beam_search_does_not(cuda_device):
    def has(op):
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"ctc_ext::{op}", "CUDA")

    assert has("greedy_decode") and has("forced_align") and not has("beam_search")


def test_cuda_inputs_are_decoded_on_the_gpu_except_by_beam_search(cuda_device):
    logits = random_logits(20, 3, 6, seed=20, dtype=torch.float32)
    targets = torch.tensor([[1, 2, 3], [4, 4, 5], [1, 1, 1]])
    on_cpu, on_cuda = ctc_ext.greedy_decode(logits), ctc_ext.greedy_decode(logits.cuda())
    assert all(h.is_cuda for h in on_cuda)
    assert [h.tolist() for h in on_cpu] == [h.tolist() for h in on_cuda]
    assert repr(ctc_ext.beam_search(logits)) == repr(ctc_ext.beam_search(logits.cuda()))  # CPU-only
    expected = ctc_ext.forced_align(logits, targets, [20, 20, 20], [3, 3, 3])
    actual = ctc_ext.forced_align(logits.cuda(), targets.cuda(), torch.tensor([20, 20, 20]).cuda(), [3, 3, 3])
    assert all(a.is_cuda for a in actual)
    assert torch.equal(actual[0].cpu(), expected[0])
    # the GPU's logsumexp may round differently from the CPU's
    torch.testing.assert_close(actual[1].cpu(), expected[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("blank", [0, 5])
def test_greedy_decode_on_gpu_matches_cpu_bit_for_bit(cuda_device, dtype, blank):
    # Quantised logits: many tied maxima, so the first-max rule is exercised too.
    generator = torch.Generator().manual_seed(3)
    logits = torch.randint(0, 4, (60, 6, 9), generator=generator).to(dtype)
    lengths = torch.tensor([60, 59, 31, 1, 0, 45])
    want = ctc_ext.ops.greedy_decode(logits, lengths, blank)
    for device_lengths in (lengths, lengths.to(cuda_device)):
        got = ctc_ext.ops.greedy_decode(logits.to(cuda_device), device_lengths, blank)
        assert got[0].is_cuda and got[1].is_cuda
        assert torch.equal(got[0].cpu(), want[0]) and torch.equal(got[1].cpu(), want[1])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("padded", [True, False])
def test_forced_align_on_gpu_matches_cpu(cuda_device, dtype, padded):
    batch = make_batch(T=80, N=6, C=12, S=25, seed=4, dtype=dtype, input_lengths=[80, 75, 70, 66, 80, 79])
    targets = batch.padded_targets if padded else batch.concatenated_targets
    lengths = (torch.tensor(batch.input_lengths), torch.tensor(batch.target_lengths))
    want = ctc_ext.ops.forced_align(batch.logits, targets, *lengths, 0)
    for device_targets in (targets, targets.to(cuda_device)):
        got = ctc_ext.ops.forced_align(batch.logits.to(cuda_device), device_targets, *lengths, 0)
        # The GPU's logsumexp may round differently from the CPU's; random scores have no near
        # ties, so the paths agree exactly and the scores to rounding.
        assert torch.equal(got[0].cpu(), want[0])
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(got[1].cpu(), want[1], rtol=tol, atol=tol)
        torch.testing.assert_close(got[2].cpu(), want[2], rtol=tol, atol=tol)


def test_forced_align_on_gpu_long_targets_and_impossible_samples(cuda_device):
    # 2 S + 1 states: several times the threads of a block; sample 2 cannot fit its target.
    batch = make_batch(T=700, N=3, C=40, S=600, seed=5, input_lengths=[700, 650, 100], target_lengths=[600, 500, 200])
    lengths = (torch.tensor(batch.input_lengths), torch.tensor(batch.target_lengths))
    want = ctc_ext.ops.forced_align(batch.logits, batch.padded_targets, *lengths, 0)
    got = ctc_ext.ops.forced_align(batch.logits.to(cuda_device), batch.padded_targets, *lengths, 0)
    assert torch.equal(got[0].cpu(), want[0])
    torch.testing.assert_close(got[2].cpu(), want[2], rtol=1e-12, atol=1e-12)
    assert got[2][2].item() == float("-inf")
    with pytest.raises(ValueError, match="sample 2"):
        ctc_ext.forced_align(batch.logits.to(cuda_device), batch.padded_targets, *lengths)


def test_forced_align_invalid_labels_on_the_device_raise_value_error(cuda_device):
    logits = random_logits(10, 2, 5, seed=24, device=cuda_device)
    targets = torch.tensor([[1, 2], [1, 9]], device=cuda_device)  # 9 >= C, checked on the device
    with pytest.raises(ValueError, match="sample 1"):
        ctc_ext.forced_align(logits, targets, [10, 10], [2, 2])
    with pytest.raises(RuntimeError, match="targets must hold labels"):
        ctc_ext.forced_align(logits, targets.cpu(), [10, 10], [2, 2])  # checked on the host


def test_gpu_decoders_are_deterministic_and_handle_empty_batches(cuda_device):
    logits = torch.randint(0, 3, (40, 5, 7), generator=torch.Generator().manual_seed(6)).double().to(cuda_device)
    lengths = torch.tensor([40, 30, 20, 10, 0])
    targets = torch.randint(1, 7, (5, 8), generator=torch.Generator().manual_seed(7))
    target_lengths = torch.tensor([8, 6, 4, 2, 0])
    for op, args in (
        (ctc_ext.ops.greedy_decode, (logits, lengths, 0)),
        (ctc_ext.ops.forced_align, (logits, targets, lengths, target_lengths, 0)),
    ):
        first, again = op(*args), op(*args)
        assert all(torch.equal(a, b) for a, b in zip(first, again))
    empty = torch.randn(5, 0, 4, device=cuda_device)
    no_lengths = torch.zeros(0, dtype=torch.long)
    assert ctc_ext.ops.greedy_decode(empty, no_lengths, 0)[0].shape == (0, 5)
    no_targets = torch.zeros(0, 2, dtype=torch.long)
    assert ctc_ext.ops.forced_align(empty, no_targets, no_lengths, no_lengths, 0)[2].shape == (0,)


def test_batch_samples_are_decoded_longest_first():
    # Sample n's first frame holds label n + 1, so with a beam of one the first prefix the scorer
    # is asked to extend in sample n is [n + 1]: the order of those prefixes is the order in which
    # the samples were decoded (the scorer path decodes on one thread, in queue order).
    lengths = [3, 9, 5, 9, 7]
    logits = torch.full((9, 5, 6), -20.0)
    logits[:, :, 0] = 0.0
    for n in range(5):
        logits[0, n, n + 1] = 10.0
    started = []

    def scorer(prefix, label):
        if prefix and prefix[0] not in started:
            started.append(prefix[0])
        return 0.0

    ctc_ext.beam_search(logits, lengths, beam_width=1, scorer=scorer)
    assert [label - 1 for label in started] == [1, 3, 4, 2, 0]  # equal lengths keep batch order
