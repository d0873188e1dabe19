"""Throughput of the ctc_ext decoders and aligner on the CPU, in frames per second.

    python -m ctc_ext.bench_decode [--repeats 5] [--quick] [--threads N]
    ctc-bench --decode            (the same rows after the loss rows, in its table and --json)

Prints a markdown table, one row per (op, shape): median wall time over the repeats and
frames/s = N * T / time.  The greedy decoder is also timed against a plain-PyTorch best path
(argmax + unique_consecutive per sample) run alternately in the same process, since the CPU may
be shared and absolute times noisy.  `benchmark_rows()` returns the rows as dicts for ctc-bench.
"""

import argparse
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


def alternating_median_times(functions: List[Callable[[], object]], repeats: int) -> List[float]:
    for function in functions:
        function()
    times = [[] for _ in functions]
    for _ in range(repeats):
        for i, function in enumerate(functions):
            start = time.perf_counter()
            function()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


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
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = benchmark_rows(QUICK_SHAPES if args.quick else SHAPES, repeats=args.repeats)
    print(f"ctc_ext decode throughput, torch {torch.__version__}, {torch.get_num_threads()} threads, float32")
    print(format_table(rows))


if __name__ == "__main__":
    main()
