"""Peak extra memory of one CPU training step (forward + backward), ctc_ext against the built-in.

Each measurement runs in a fresh subprocess: inputs are created and a tiny warm-up step loads
every library, then the resident-set high-water mark (ru_maxrss) is compared before and after
one full step. The difference is the step's peak extra memory: activations kept for backward,
scratch space and the gradient.

    python benchmarks/memory.py                      # the rows of docs/design.md (Memory)
    python benchmarks/memory.py --shapes 8000,4,29,2000 --only ours
    python benchmarks/memory.py --shapes 500,16,30,20000 --labels 3   # padded far beyond the labels
"""

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys
import torch, torch.nn.functional as F
import ctc_ext
T, N, C, S, which, dtype = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
labels = int(sys.argv[8]) or S  # target length of every sample; the targets stay (N, S)
dtype = getattr(torch, dtype)
torch.set_num_threads(int(sys.argv[7]))
generator = torch.Generator().manual_seed(0)

def loss_fn(x, targets, input_lengths, target_lengths):
    if which == "builtin":
        # What users of the built-in do: log_softmax first (in float32 for reduced dtypes).
        return F.ctc_loss(x.float().log_softmax(2), targets, input_lengths, target_lengths)
    return ctc_ext.ctc_loss(x, targets, input_lengths, target_lengths)

def step(T, N, C, S, L):
    x = torch.randn(T, N, C, generator=generator).to(dtype).requires_grad_(True)
    targets = torch.randint(1, C, (N, S), generator=generator)
    input_lengths = torch.full((N,), T)
    target_lengths = torch.full((N,), L)
    return x, (targets, input_lengths, target_lengths)

x, rest = step(8, 2, C, 2, 2)
loss_fn(x, *rest).backward()                     # warm-up: libraries, thread pools
x, rest = step(T, N, C, S, labels)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
loss = loss_fn(x, *rest)
loss.backward()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_extra_mb": (after - before) / 1024, "loss": loss.item()}))
"""


def measure(T, N, C, S, which, dtype="float32", threads=2, labels=0):
    output = subprocess.run(
        [sys.executable, "-c", CHILD, str(T), str(N), str(C), str(S), which, dtype, str(threads), str(labels)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def parse_shape(text):
    values = tuple(int(v) for v in text.split(","))
    if len(values) != 4 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected T,N,C,S with positive ints, got {text!r}")
    return values


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--shapes",
        type=parse_shape,
        nargs="+",
        default=[(2000, 8, 29, 500), (4000, 4, 29, 1000), (8000, 4, 29, 2000), (500, 32, 1024, 100)],
    )
    parser.add_argument("--only", choices=["ours", "builtin"], help="measure one side only")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    parser.add_argument(
        "--labels", type=int, default=0, help="target length of every sample (default: S, the padded width)"
    )
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    rows = []
    print(f"{'T':>6} {'N':>3} {'C':>5} {'S':>5}  {'built-in MB':>11}  {'ctc_ext MB':>10}  ratio")
    for T, N, C, S in args.shapes:
        row = {"T": T, "N": N, "C": C, "S": S, "labels": args.labels or S, "dtype": args.dtype}
        for which in ("builtin", "ours"):
            if args.only and args.only != which:
                continue
            row[f"{which}_peak_mb"] = measure(T, N, C, S, which, args.dtype, labels=args.labels)["peak_extra_mb"]
        ratio = (
            row["ours_peak_mb"] / row["builtin_peak_mb"] if "ours_peak_mb" in row and "builtin_peak_mb" in row else None
        )
        row["ratio"] = ratio
        rows.append(row)
        fmt = lambda key: f"{row[key]:.0f}" if key in row else "-"
        print(
            f"{T:>6} {N:>3} {C:>5} {S:>5}  {fmt('builtin_peak_mb'):>11}  {fmt('ours_peak_mb'):>10}  "
            f"{'-' if ratio is None else f'{ratio:.2f}x'}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
