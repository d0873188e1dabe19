"""python -m ctc_ext.lm corpus.txt --order 3 -o lm.arpa: estimate an n-gram model, write ARPA."""

import argparse
import sys
from typing import Optional, Sequence

from .kneser_ney import build_arpa


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ctc_ext.lm",
        description="Estimate an interpolated modified Kneser-Ney n-gram model from text and write it as ARPA.",
    )
    parser.add_argument("corpus", help="text file, one sentence per line, words separated by whitespace ('-': stdin)")
    parser.add_argument("--order", type=int, default=3, help="n-gram order (default 3)")
    parser.add_argument("-o", "--output", required=True, help="ARPA file to write")
    args = parser.parse_args(argv)
    if args.order < 1:
        parser.error(f"--order must be at least 1, got {args.order}")
    try:
        model = build_arpa(args.corpus, args.output, args.order)
    except (OSError, ValueError) as error:
        parser.exit(2, f"python -m ctc_ext.lm: error: {error}\n")
    counts = " ".join(f"{n}-grams={len(table)}" for n, table in enumerate(model.ngrams, start=1))
    print(f"wrote {args.output}: order {model.order}, {counts}", file=sys.stderr)
    for n, d in enumerate(model.discounts, start=1):
        note = " (fallback: too few n-grams to estimate them)" if n in model.fallback_orders else ""
        print(f"  order {n} discounts D1={d[0]:.4f} D2={d[1]:.4f} D3+={d[2]:.4f}{note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
