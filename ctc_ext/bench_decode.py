"""Throughput of the ctc_ext decoders and aligner on the CPU, in frames per second.

    python -m ctc_ext.bench_decode [--repeats 5] [--quick] [--threads N] [--thread-scaling PAIRS]
    ctc-bench --decode            (the same rows after the loss rows, in its table and --json)

Prints a markdown table, one row per (op, shape): median wall time over the repeats and
frames/s = N * T / time.  The greedy decoder is also timed against a plain-PyTorch best path
(argmax + unique_consecutive per sample) run alternately in the same process, since the CPU may
be shared and absolute times noisy.  `benchmark_rows()` returns the rows as dicts for ctc-bench.
"""

import argparse
import math
import statistics
import time
from typing import Callable, Dict, List

import torch

import ctc_ext

# (T, N, C): characters, word pieces and a large vocabulary, as in the loss benchmarks.
SHAPES = [(150, 16, 29), (500, 32, 29), (500, 32, 1024), (300, 32, 5000)]
QUICK_SHAPES = [(150, 16, 29), (500, 32, 1024)]
BEAM_WIDTHS = [4, 16]


def torch_greedy_decode(logits: torch.Tensor, blank: int = 0) -> List[torch.Tensor]:
    """Best path with plain PyTorch ops: the baseline the C++ greedy decoder is compared with."""
    best = logits.argmax(2).t()  # (N, T)
    decoded = []
    for row in best:
        merged = torch.unique_consecutive(row)
        decoded.append(merged[merged != blank])
    return decoded


def median_time(function: Callable[[], object], repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternating_times(functions: List[Callable[[], object]], repeats: int) -> List[List[float]]:
    """Wall times of `repeats` runs of each function after a warm-up, the functions alternating."""
    for function in functions:
        function()
    times = [[] for _ in functions]
    for _ in range(repeats):
        for i, function in enumerate(functions):
            start = time.perf_counter()
            function()
            times[i].append(time.perf_counter() - start)
    return times


def alternating_median_times(functions: List[Callable[[], object]], repeats: int) -> List[float]:
    return [statistics.median(t) for t in alternating_times(functions, repeats)]


def benchmark_rows(shapes=SHAPES, beam_widths=BEAM_WIDTHS, repeats: int = 5, seed: int = 0) -> List[Dict]:
    """One dict per measurement: op, T, N, C, beam_width (or None), seconds, frames_per_s, and for
    greedy the time of the plain-PyTorch best path (baseline_seconds).  A shape is (T, N, C), or
    (T, N, C, S) to align targets of length S (default T // 5)."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for shape in shapes:
        T, N, C = shape[:3]
        # At most (T + 1) // 2 labels, so that even a target of one repeated label can be aligned.
        target_length = min(shape[3] if len(shape) > 3 else max(1, T // 5), (T + 1) // 2)
        logits = torch.randn(T, N, C, generator=generator) * 3
        frames = T * N
        ours, baseline = alternating_median_times(
            [lambda: ctc_ext.greedy_decode(logits), lambda: torch_greedy_decode(logits)], repeats
        )
        rows.append(
            dict(
                op="greedy_decode",
                T=T,
                N=N,
                C=C,
                beam_width=None,
                seconds=ours,
                frames_per_s=frames / ours,
                baseline_seconds=baseline,
            )
        )
        for beam_width in beam_widths:
            seconds = median_time(lambda: ctc_ext.beam_search(logits, beam_width=beam_width), repeats)
            rows.append(
                dict(
                    op="beam_search",
                    T=T,
                    N=N,
                    C=C,
                    beam_width=beam_width,
                    seconds=seconds,
                    frames_per_s=frames / seconds,
                    baseline_seconds=None,
                )
            )
        targets = torch.randint(1, C, (N, target_length), generator=generator)
        seconds = median_time(lambda: ctc_ext.forced_align(logits, targets, [T] * N, [target_length] * N), repeats)
        rows.append(
            dict(
                op=f"forced_align (S={target_length})",
                T=T,
                N=N,
                C=C,
                beam_width=None,
                seconds=seconds,
                frames_per_s=frames / seconds,
                baseline_seconds=None,
            )
        )
    return rows


def format_table(rows: List[Dict]) -> str:
    lines = [
        "| op | T | N | C | beam | time | frames/s | plain PyTorch time / ours |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        beam = "" if row["beam_width"] is None else str(row["beam_width"])
        ratio = "" if row["baseline_seconds"] is None else f"{row['baseline_seconds'] / row['seconds']:.1f}x"
        lines.append(
            f"| {row['op']} | {row['T']} | {row['N']} | {row['C']} | {beam} | "
            f"{row['seconds'] * 1e3:.2f} ms | {row['frames_per_s']:,.0f} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="two small shapes only")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--thread-scaling",
        type=int,
        metavar="PAIRS",
        default=None,
        help="only CTCDecoder on 2 threads against 1: PAIRS alternating runs, with and without an LM",
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.thread_scaling is not None:
        rows = thread_scaling_rows(pairs=args.thread_scaling)
        print(format_thread_scaling_table(rows))
        for row in rows:
            runs = " ".join(
                f"{run['one_wall'] / run['many_wall']:.2f}@{run['many_cpu'] / run['many_wall']:.2f}"
                for run in row["runs"]
            )
            print(f"LM={row['lm']}: per pair ratio@CPU use of the 2-thread run: {runs}")
        return
    rows = benchmark_rows(QUICK_SHAPES if args.quick else SHAPES, repeats=args.repeats)
    print(f"ctc_ext decode throughput, torch {torch.__version__}, {torch.get_num_threads()} threads, float32")
    print(format_table(rows))


# ----------------------------------------------------------------------------------------------
# CTCDecoder with and without a language model, against pyctcdecode when installed.
LETTERS = [chr(ord("a") + i) for i in range(26)]


def synthetic_lm_task(vocabulary: str, T: int, N: int, workdir: str, seed: int = 0, confidence: float = 3.0):
    """A weak model's output on sentences of a toy language, and a 2-gram ARPA model of it.

    ``vocabulary``: "characters" (C = 30: blank, "|", a-z, "'", ".") or "word-pieces" (C = 500,
    SentencePiece style: "▁word" tokens and pieces).  Each token of the true text holds 1-3
    frames (blanks between), and the frames are noise plus ``confidence`` on the true class, so
    the greedy output has errors a language model can fix.  Returns (tokens, logits (T, N, C),
    arpa path, texts)."""
    import os
    import random

    from .lm import estimate_kneser_ney

    rng = random.Random(seed)
    words = sorted({"".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 7))) for _ in range(300)})
    successors = {w: rng.sample(words, 8) for w in words}
    sentences = []
    for _ in range(3000):
        word, sentence = rng.choice(words), []
        for _ in range(rng.randint(3, 15)):
            sentence.append(word)
            word = rng.choice(successors[word]) if rng.random() < 0.8 else rng.choice(words)
        sentences.append(" ".join(sentence))
    arpa = os.path.join(workdir, f"toy_{seed}.arpa")
    with open(arpa, "w", encoding="utf-8") as stream:
        estimate_kneser_ney(sentences, order=2).write_arpa(stream)
    if vocabulary == "characters":
        tokens = ["-", "|"] + LETTERS + ["'", "."]

        def spell(text):
            return [tokens.index("|" if ch == " " else ch) for ch in text]
    else:
        whole = ["▁" + w for w in words[:200]]
        pieces = ["▁" + ch for ch in LETTERS] + LETTERS
        extra = sorted({a + b for a in LETTERS for b in LETTERS} - set(whole))[: 500 - 1 - len(whole) - len(pieces)]
        tokens = ["-"] + whole + pieces + extra
        index = {t: i for i, t in enumerate(tokens)}

        def spell(text):
            out = []
            for word in text.split():
                if "▁" + word in index:
                    out.append(index["▁" + word])
                else:
                    out.append(index["▁" + word[0]])
                    out += [index[ch] for ch in word[1:]]
            return out

    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, N, len(tokens), generator=generator)
    texts = []
    for n in range(N):
        # Sentences' words until the spelling (at most 3 frames per token) would not fit.
        text, stream = [], iter(())
        while True:
            word = next(stream, None)
            if word is None:
                stream = iter(rng.choice(sentences).split())
                continue
            if 3 * len(spell(" ".join(text + [word]))) + 1 > T:
                break
            text.append(word)
        t = 0
        for label in spell(" ".join(text)):
            for _ in range(rng.randint(1, 2)):
                logits[t, n, label] += confidence
                t += 1
            logits[t, n, 0] += confidence
            t += 1
        logits[t:, n, 0] += confidence
        texts.append(" ".join(text))
    return tokens, logits, arpa, texts


def text_log_likelihood(frame_log_probs: torch.Tensor, labels: List[int], blank: int, delimiters=()) -> float:
    """log p_ctc of a hypothesis of ctc_ext.CTCDecoder: the sum over the frame paths of ``labels``
    and of every label sequence that differs from it only by delimiters ending no word (at the
    start, or after a delimiter), as the decoder scores it.  ``frame_log_probs``: (T, C)."""
    lp = frame_log_probs.double()
    delimiters = sorted(set(delimiters))
    absorbed = torch.logsumexp(lp[:, [blank] + delimiters], 1)  # a blank or a delimiter
    S = 2 * len(labels) + 1
    emit = torch.empty(lp.shape[0], S, dtype=torch.float64)
    stays = torch.ones(S, dtype=torch.bool)
    skips = torch.zeros(S, dtype=torch.bool)
    for s in range(S):
        if s % 2 == 0:  # a blank state: it absorbs delimiters at the start and after a delimiter
            emit[:, s] = absorbed if s == 0 or labels[s // 2 - 1] in delimiters else lp[:, blank]
        else:
            label = labels[s // 2]
            emit[:, s] = lp[:, label]
            stays[s] = label not in delimiters  # a repeated delimiter goes to the blank state after it
            skips[s] = s >= 3 and labels[s // 2 - 1] != label
    alpha = torch.full((S,), -math.inf, dtype=torch.float64)
    alpha[0] = emit[0, 0]
    if S > 1:
        alpha[1] = emit[0, 1]
    for t in range(1, lp.shape[0]):
        stay = torch.where(stays, alpha, torch.tensor(-math.inf, dtype=torch.float64))
        padded = torch.cat([torch.full((2,), -math.inf, dtype=torch.float64), alpha])
        step = padded[1:-1]
        skip = torch.where(skips, padded[:-2], torch.tensor(-math.inf, dtype=torch.float64))
        alpha = torch.logsumexp(torch.stack([stay, step, skip]), 0) + emit[t]
    return float(torch.logsumexp(alpha[-2:], 0)) if S > 1 else float(alpha[0])


def fused_score_of_text(text: str, frame_log_probs: torch.Tensor, tokens: List[str], lm, weights) -> float:
    """ctc_ext.CTCDecoder's fused score of a text (docs/decoding.md), its exact CTC part over the
    text's spellings: with and without a delimiter at the end (characters), or the spelling the
    synthetic posteriors were built from (word pieces: the whole-word token where there is one,
    else the first letter with "▁" and single letters)."""
    lm_weight, word_score, unk_score = weights
    words = text.split()
    index = {t: i for i, t in enumerate(tokens)}
    if "|" in index:
        core = [index[ch] for ch in "|".join(words)]
        spellings = [core, core + [index["|"]]] if core else [[]]
        delimiters = [index["|"]]
    else:
        core = []
        for word in words:
            core += (
                [index["▁" + word]] if "▁" + word in index else [index["▁" + word[0]]] + [index[c] for c in word[1:]]
            )
        spellings, delimiters = [core], []
    ctc = max(text_log_likelihood(frame_log_probs, spelling, 0, delimiters) for spelling in spellings)
    unknown = sum(1 for word in words if word not in lm)
    return ctc + lm_weight * lm.score(words) + word_score * len(words) + unk_score * unknown


def lm_benchmark_rows(
    repeats: int = 3, beam_widths=(10, 50, 100), N: int = 16, lm_weight: float = 0.5, word_score: float = 1.0
) -> List[Dict]:
    """Utterances per second of ctc_ext.CTCDecoder (1 thread and all threads) and pyctcdecode
    (when installed; one process), with and without the 2-gram LM, characters (T=200, C=30)
    and word pieces (T=500, C=500).  The unknown-word penalty is pyctcdecode's default
    (unk_score_offset -10, log10 inside alpha).  Ours on 1 thread and pyctcdecode are timed
    alternately, ``repeats`` runs each (pyctcdecode at most 3): the ratio is the median of the
    per-run ratios, with their min and max.  With the LM, each utterance's best text of both is
    scored under our fused score (fused_score_of_text): how many of ours are at least as high."""
    import tempfile

    from .lm import NgramLM

    try:
        import pyctcdecode
    except ImportError:
        pyctcdecode = None
    unk_offset = -10.0
    unk_score = lm_weight * unk_offset * math.log(10)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for vocabulary, T in (("characters", 200), ("word-pieces", 500)):
            tokens, logits, arpa, _ = synthetic_lm_task(vocabulary, T, N, workdir)
            log_probs = logits.log_softmax(2)
            per_sample = [log_probs[:, n].numpy() for n in range(N)]
            lm = NgramLM(arpa)
            for with_lm in (False, True):
                for beam_width in beam_widths:
                    row = dict(vocabulary=vocabulary, T=T, N=N, C=len(tokens), lm=with_lm, beam_width=beam_width)

                    def decoder(threads, **pruning):
                        return ctc_ext.CTCDecoder(
                            tokens,
                            lm=arpa if with_lm else None,
                            lm_weight=lm_weight,
                            word_score=word_score,
                            unk_score=unk_score,
                            beam_width=beam_width,
                            num_threads=threads,
                            **pruning,
                        )

                    ours = decoder(1)
                    many = decoder(torch.get_num_threads())
                    row[f"ours_{torch.get_num_threads()}_threads_utt_per_s"] = N / median_time(
                        lambda: many(log_probs), repeats
                    )
                    # pyctcdecode's default pruning (beam_prune_logp=-10, token_min_logp=-5), one thread.
                    pruned = decoder(1, beam_threshold=10.0, token_min_log_prob=-5.0)
                    row["ours_pruned_utt_per_s"] = N / median_time(lambda: pruned(log_probs), repeats)
                    row["threads"] = torch.get_num_threads()
                    if pyctcdecode is None:
                        row["ours_1_threads_utt_per_s"] = N / median_time(lambda: ours(log_probs), repeats)
                        row.update(pyctcdecode_utt_per_s=math.nan, ratio=math.nan, ratio_min=math.nan)
                        row.update(ratio_max=math.nan, fused_at_least_theirs=None)
                        rows.append(row)
                        continue
                    labels = [""] + [" " if t == "|" else t for t in tokens[1:]]
                    reference = pyctcdecode.build_ctcdecoder(
                        labels,
                        kenlm_model_path=arpa if with_lm else None,
                        alpha=lm_weight,
                        beta=word_score,
                        unk_score_offset=unk_offset,
                    )
                    runs = max(1, min(repeats, 3))
                    texts = []  # pyctcdecode's best texts, from its last run

                    def run_reference():
                        texts[:] = [" ".join(reference.decode(x, beam_width=beam_width).split()) for x in per_sample]

                    ours_times, theirs_times = alternating_times([lambda: ours(log_probs), run_reference], runs)
                    ratios = sorted(t / o for o, t in zip(ours_times, theirs_times))
                    row["ours_1_threads_utt_per_s"] = N / statistics.median(ours_times)
                    row["pyctcdecode_utt_per_s"] = N / statistics.median(theirs_times)
                    row.update(ratio=statistics.median(ratios), ratio_min=ratios[0], ratio_max=ratios[-1])
                    row["fused_at_least_theirs"] = None
                    if with_lm:
                        weights = (lm_weight, word_score, unk_score)
                        best = ours(log_probs)
                        at_least = 0
                        for n, theirs in enumerate(texts):
                            mine = fused_score_of_text(best[n][0].text, log_probs[:, n], tokens, lm, weights)
                            at_least += theirs == best[n][0].text or mine >= fused_score_of_text(
                                theirs, log_probs[:, n], tokens, lm, weights
                            )
                        row["fused_at_least_theirs"] = at_least
                    rows.append(row)
    return rows


def format_lm_table(rows: List[Dict]) -> str:
    threads = rows[0]["threads"] if rows else 1
    lines = [
        f"| vocabulary | T | C | LM | beam | ours 1 thread (utt/s) | ours {threads} threads | ours pruned as "
        "pyctcdecode, 1 thread | pyctcdecode | ours / pyctcdecode, 1 thread (min-max) | ours pruned / "
        "pyctcdecode | our fused score >= pyctcdecode's |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        one, many, ref = (
            row["ours_1_threads_utt_per_s"],
            row[f"ours_{threads}_threads_utt_per_s"],
            row["pyctcdecode_utt_per_s"],
        )
        pruned = row["ours_pruned_utt_per_s"]
        ratio = "" if ref != ref else f"{row['ratio']:.1f}x ({row['ratio_min']:.1f}-{row['ratio_max']:.1f})"
        pruned_ratio = "" if ref != ref else f"{pruned / ref:.1f}x"
        fused = "" if row["fused_at_least_theirs"] is None else f"{row['fused_at_least_theirs']}/{row['N']}"
        lines.append(
            f"| {row['vocabulary']} | {row['T']} | {row['C']} | {'2-gram' if row['lm'] else 'none'} | "
            f"{row['beam_width']} | {one:,.1f} | {many:,.1f} | {pruned:,.1f} | {ref:,.1f} | {ratio} | "
            f"{pruned_ratio} | {fused} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Thread scaling of CTCDecoder on a batch: 2 threads against 1, on a possibly shared machine.
# A run that got fewer cores than threads says nothing about the code, so every run records its
# CPU utilisation (process CPU time / wall time, all threads) next to its time.
FULL_CORES = 0.9  # a run "got its cores" when utilisation >= FULL_CORES * threads


def _quartiles(values: List[float]):
    if len(values) < 2:
        return (values[0], values[0], values[0]) if values else (math.nan,) * 3
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def thread_scaling_rows(
    pairs: int = 15, threads: int = 2, N: int = 32, T: int = 200, beam_width: int = 50, seed: int = 0
) -> List[Dict]:
    """CTCDecoder on a batch of N character utterances (C = 30), without and with the 2-gram LM:
    `pairs` runs on 1 thread and on `threads`, alternating (the order flips every pair), each
    timed with its CPU utilisation.  Per row: the median and quartiles of the per-pair ratio
    (1-thread time / threads time) over all pairs, and over the pairs whose multi-thread run got
    its cores (utilisation >= FULL_CORES * threads, the 1-thread run >= FULL_CORES); the median
    utilisations; the median CPU-time ratio (threads / 1 thread: the parallel run's own overhead,
    whatever the machine gave it)."""
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        tokens, logits, arpa, _ = synthetic_lm_task("characters", T, N, workdir, seed=seed)
        log_probs = logits.log_softmax(2)
        for with_lm in (False, True):
            decoders = {
                count: ctc_ext.CTCDecoder(
                    tokens, lm=arpa if with_lm else None, word_score=1.0, beam_width=beam_width, num_threads=count
                )
                for count in (1, threads)
            }
            runs = {1: [], threads: []}  # (wall seconds, CPU seconds)
            for decoder in decoders.values():
                decoder(log_probs)  # warm-up
            for pair in range(pairs):
                for count in (1, threads) if pair % 2 == 0 else (threads, 1):
                    cpu, wall = time.process_time(), time.perf_counter()
                    decoders[count](log_probs)
                    runs[count].append((time.perf_counter() - wall, time.process_time() - cpu))
            ratios = [one[0] / many[0] for one, many in zip(runs[1], runs[threads])]
            utilisation = {count: [cpu / wall for wall, cpu in runs[count]] for count in runs}
            full = [
                ratio
                for ratio, one, many in zip(ratios, utilisation[1], utilisation[threads])
                if one >= FULL_CORES and many >= FULL_CORES * threads
            ]
            rows.append(
                dict(
                    op=f"CTCDecoder {threads} threads / 1",
                    vocabulary="characters",
                    T=T,
                    N=N,
                    C=len(tokens),
                    lm=with_lm,
                    beam_width=beam_width,
                    threads=threads,
                    pairs=pairs,
                    seconds_1_thread=statistics.median(wall for wall, _ in runs[1]),
                    seconds_threads=statistics.median(wall for wall, _ in runs[threads]),
                    ratio_quartiles=_quartiles(ratios),
                    full_core_pairs=len(full),
                    full_core_ratio_quartiles=_quartiles(full),
                    utilisation_1_thread=statistics.median(utilisation[1]),
                    utilisation_threads=statistics.median(utilisation[threads]),
                    cpu_time_ratio=statistics.median(many[1] / one[1] for one, many in zip(runs[1], runs[threads])),
                    runs=[
                        dict(one_wall=one[0], one_cpu=one[1], many_wall=many[0], many_cpu=many[1])
                        for one, many in zip(runs[1], runs[threads])
                    ],
                )
            )
    return rows


def format_thread_scaling_table(rows: List[Dict]) -> str:
    def spread(quartiles):
        q1, median, q3 = quartiles
        return "none" if median != median else f"{median:.2f}x (IQR {q1:.2f}-{q3:.2f})"

    threads = rows[0]["threads"] if rows else 2
    lines = [
        f"| LM | N x T | beam | 1 thread | {threads} threads | ratio, all pairs | CPU use 1 / {threads} threads | "
        f"ratio, pairs with {threads} cores | CPU time {threads} / 1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {'2-gram' if row['lm'] else 'none'} | {row['N']} x {row['T']} | {row['beam_width']} | "
            f"{row['seconds_1_thread'] * 1e3:.0f} ms | {row['seconds_threads'] * 1e3:.0f} ms | "
            f"{spread(row['ratio_quartiles'])} | {row['utilisation_1_thread']:.2f} / "
            f"{row['utilisation_threads']:.2f} | {spread(row['full_core_ratio_quartiles'])} "
            f"({row['full_core_pairs']}/{row['pairs']}) | {row['cpu_time_ratio']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
