"""Memory of ctc_ext.lm.NgramLM per n-gram: writes a random ARPA file with about --ngrams n-grams,
loads it in a fresh process and reports the growth of its resident set (Linux /proc), which counts
everything the model holds (arrays, vocabulary, allocator overhead) and the load time.

    python benchmarks/ngram_lm_memory.py --ngrams 1000000 --order 3 --vocabulary 20000

The numbers go into docs/lm.md.
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile

CHILD = r"""
import gc, sys, time
def rss_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
from ctc_ext.lm import NgramLM
gc.collect()
before = rss_kib()
start = time.perf_counter()
lm = NgramLM(sys.argv[1])
seconds = time.perf_counter() - start
print(rss_kib() - before, seconds, sum(lm.counts))
"""


def write_random_arpa(path: str, order: int, vocabulary_size: int, total_ngrams: int, seed: int) -> None:
    """Unigrams: the vocabulary; the rest of the budget split evenly over the higher orders, each
    n-gram extending a random listed (n-1)-gram, so every context is listed."""
    rng = random.Random(seed)
    words = ["<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(vocabulary_size)]
    levels = [[(w,) for w in words]]
    per_order = max(0, (total_ngrams - len(words)) // max(1, order - 1))
    for _ in range(2, order + 1):
        previous = [g for g in levels[-1] if g[-1] != "</s>"]
        level = set()
        while len(level) < per_order:
            level.add(rng.choice(previous) + (rng.choice(words[1:]),))
        levels.append(sorted(level))
    with open(path, "w") as stream:
        stream.write("\\data\\\n" + "".join(f"ngram {n}={len(level)}\n" for n, level in enumerate(levels, start=1)))
        for n, level in enumerate(levels, start=1):
            stream.write(f"\n\\{n}-grams:\n")
            backoff = n < order
            for ngram in level:
                tail = f"\t{-rng.random():.6f}" if backoff else ""
                stream.write(f"{-3 * rng.random():.6f}\t{' '.join(ngram)}{tail}\n")
        stream.write("\n\\end\\\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ngrams", type=int, default=1_000_000)
    parser.add_argument("--order", type=int, default=3)
    parser.add_argument("--vocabulary", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="fresh-process loads (median reported)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "random.arpa")
        write_random_arpa(path, args.order, args.vocabulary, args.ngrams, seed=0)
        runs = []
        for _ in range(args.repeat):
            output = subprocess.run([sys.executable, "-c", CHILD, path], check=True, capture_output=True, text=True)
            kib, seconds, count = output.stdout.split()
            runs.append((int(kib), float(seconds), int(count)))
        runs.sort()
        kib, seconds, count = runs[len(runs) // 2]
        file_mib = os.path.getsize(path) / 2**20
    print(
        f"order {args.order}, {count} n-grams, vocabulary {args.vocabulary + 3}: ARPA file {file_mib:.1f} MiB, "
        f"resident growth {kib / 1024:.1f} MiB = {kib * 1024 / count:.1f} bytes per n-gram "
        f"(runs: {', '.join(f'{r[0] * 1024 / r[2]:.1f}' for r in runs)}), load {seconds:.2f} s"
    )


if __name__ == "__main__":
    main()
