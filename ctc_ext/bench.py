"""ctc-bench: ctc_ext.ctc_loss against the built-in torch.nn.functional.ctc_loss.

Run ``ctc-bench`` (or ``python -m ctc_ext.bench``) with no arguments for a built-in set of
ASR- and OCR-like shapes; ``ctc-bench --help`` lists the options.  What is compared:

* built-in: ``F.ctc_loss(x.log_softmax(2), ...)``, the pipeline users run today;
* ours:     ``ctc_ext.ctc_loss(x, ...)`` on the same raw activations ``x`` (it normalises itself);

both with reduction='mean', input lengths ragged (80-100% of T, the longest = T), target lengths
80-100% of S, random labels, blank 0.  For float16 / bfloat16 the built-in (which does not take
them) runs on ``x.float()``, as users do today; ours runs on the half-precision input itself.
"""

import argparse
import ctypes
import gc
import json
import math
import os
import statistics
import sys
import textwrap
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}

DEFAULT_REPEAT = 5
# A row whose per-run speedups spread wider than this (interquartile range over the median) is
# flagged: the machine was busy (other processes, stalled threads) and its ratio is not to be trusted.
UNSTEADY_SPREAD = 0.25
# A CPU row is also flagged when a pipeline's runs got less CPU time (all threads) than half their
# wall-clock time: the process waited for a core.  Then every run can stall alike (a 2-thread call
# waiting ~10-20 ms for its second thread), which leaves the spread narrow and the ratio wrong.
MIN_CPU_SHARE = 0.5

# (T, N, C, S, what it stands for).  T frames, N batch, C classes, S (max) target length.
DEFAULT_SHAPES = [
    (50, 1, 29, 10, "tiny: one short utterance, per-call overhead"),
    (150, 16, 29, 40, "ASR characters, short utterances"),
    (500, 32, 29, 100, "ASR characters (issue target)"),
    (1000, 8, 29, 300, "ASR characters, long utterances (issue target)"),
    (250, 64, 29, 60, "ASR characters, large batch (issue target)"),
    (100, 64, 96, 25, "OCR text lines, Latin"),
    (500, 32, 1024, 100, "ASR word pieces (issue target)"),
    (300, 32, 5000, 60, "ASR large word-piece vocabulary (issue target)"),
    (200, 16, 8000, 40, "OCR Chinese characters (issue target)"),
]

MEMORY_METHOD = (
    "Peak memory: CUDA: torch.cuda.max_memory_allocated() over one training step minus the memory "
    "allocated before it.  CPU (Linux): the rise of the process's resident-set high-water mark "
    "(VmHWM, reset through /proc/self/clear_refs) over the resident set before one training step, "
    "with glibc's mmap threshold pinned at 64 KiB during that step so that every freed tensor goes back to the OS; "
    "it counts every allocation of the step (the kernels' own scratch included), after a warm-up "
    "step.  Where /proc is not available it is reported as null."
)


@dataclass
class Shape:
    T: int
    N: int
    C: int
    S: int
    note: str = ""

    def label(self):
        return f"T={self.T} N={self.N} C={self.C} S={self.S}"


def parse_shape(text):
    """'T,N,C,S' -> Shape, or an argparse error that says what is wrong."""
    parts = text.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"shape {text!r} must be four integers T,N,C,S (e.g. 500,32,29,100)")
    try:
        T, N, C, S = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r} must be four integers T,N,C,S") from None
    if min(T, N, S) < 1 or C < 2:
        raise argparse.ArgumentTypeError(f"shape {text!r}: need T, N, S >= 1 and C >= 2")
    if S > math.floor(0.8 * T):
        raise argparse.ArgumentTypeError(
            f"shape {text!r}: S must be at most 0.8 T so every ragged sample can be aligned"
        )
    return Shape(T, N, C, S)


def parse_list(choices, what):
    def parse(text):
        items = [item.strip() for item in text.split(",")]
        bad = [item for item in items if item not in choices]  # an empty entry is bad too
        if bad:
            raise argparse.ArgumentTypeError(
                f"{what} must be a comma-separated list of {', '.join(choices)}; got {text!r}"
            )
        return items

    return parse


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="ctc-bench",
        description=__doc__.split("\n\n", 1)[1],
        epilog=textwrap.fill(
            "Times are medians over --repeat runs after a warm-up, the two pipelines alternating in one "
            "process; forward is timed under torch.no_grad(), fwd+bwd is loss.backward() included.  On "
            "CUDA, float32 shapes with targets shorter than 256 also time the built-in's cuDNN path "
            "(int32 concatenated targets and lengths on the CPU).",
            100,
        )
        + "\n\n"
        + textwrap.fill(MEMORY_METHOD, 100),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--device",
        type=parse_list(["cpu", "cuda"], "--device"),
        default=None,
        help="comma-separated devices (default: cpu, and cuda when available)",
    )
    parser.add_argument(
        "--dtype",
        type=parse_list(list(DTYPES), "--dtype"),
        default=["float32"],
        help="comma-separated dtypes of x: float32 (default), float64, float16, bfloat16",
    )
    parser.add_argument(
        "--shapes",
        type=parse_shape,
        nargs="+",
        default=None,
        metavar="T,N,C,S",
        help="shapes to run instead of the built-in set, e.g. --shapes 500,32,29,100 300,32,5000,60",
    )
    parser.add_argument(
        "--repeat",
        type=positive_int,
        default=DEFAULT_REPEAT,
        help=f"timed runs per pipeline and measurement (default {DEFAULT_REPEAT}; medians are reported, "
        "with the interquartile range of the per-run speedups)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch.set_num_threads for the CPU runs (default: torch's default)",
    )
    parser.add_argument(
        "--json", metavar="PATH", default=None, help="write the rows (one per shape, device and dtype) as a JSON list"
    )
    parser.add_argument(
        "--plot",
        metavar="PATH",
        default=None,
        help="write a PNG of the speedups against T and against C (needs matplotlib: pip install 'ctc_ext[plot]')",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the inputs (default 0)")
    parser.add_argument(
        "--decode",
        action="store_true",
        help="also time the decoders (greedy_decode, beam_search widths 4 and 16, forced_align of "
        "targets of length S) on the T,N,C,S of each shape, CPU float32, in frames/s, and CTCDecoder "
        "on 2 threads against 1 (with and without an LM, with each run's CPU utilisation)",
    )
    parser.add_argument(
        "--decode-thread-pairs",
        type=int,
        default=15,
        metavar="PAIRS",
        help="with --decode: alternating 1- and 2-thread runs of CTCDecoder for the thread-scaling rows "
        "(default 15; 0 leaves the rows out)",
    )
    parser.add_argument(
        "--decode-lm",
        action="store_true",
        help="with --decode: also time ctc_ext.CTCDecoder with and without a 2-gram LM at beams 10, 50, 100 "
        "(characters C=30, word pieces C=500), against pyctcdecode when installed (pip install 'ctc_ext[lm-compare]')",
    )
    return parser


# ------------------------------------------------------------------------------------------
# Inputs and the two pipelines.


def make_inputs(shape, dtype, device, seed):
    generator = torch.Generator().manual_seed(seed)
    T, N, C, S = shape.T, shape.N, shape.C, shape.S
    x = torch.randn(T, N, C, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)
    input_lengths = torch.randint(math.floor(0.8 * T), T + 1, (N,), generator=generator)
    input_lengths[0] = T
    target_lengths = torch.randint(max(1, math.floor(0.8 * S)), S + 1, (N,), generator=generator)
    target_lengths = torch.minimum(target_lengths, input_lengths // 2 + 1)  # leaves room for repeats
    targets = torch.randint(1, C, (N, S), generator=generator)
    return x, targets.to(device), input_lengths.to(device), target_lengths.to(device)


def builtin_loss(x, targets, input_lengths, target_lengths, reduction="mean"):
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # the built-in takes float32 / float64 only; this is what users do
    return F.ctc_loss(x.log_softmax(2), targets, input_lengths, target_lengths, reduction=reduction)


def cudnn_inputs(targets, input_lengths, target_lengths):
    """The argument forms that make the built-in take its cuDNN path on CUDA (blank 0, float32,
    int32 concatenated targets and lengths on the CPU, targets shorter than 256)."""
    if int(target_lengths.max()) >= 256:
        return None
    concatenated = torch.cat([targets[n, : int(target_lengths[n])] for n in range(targets.shape[0])])
    return (
        concatenated.to("cpu", torch.int32),
        input_lengths.to("cpu", torch.int32),
        target_lengths.to("cpu", torch.int32),
    )


def ours_loss(x, targets, input_lengths, target_lengths, reduction="mean"):
    import ctc_ext

    return ctc_ext.ctc_loss(x, targets, input_lengths, target_lengths, reduction=reduction)


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def forward_step(loss_fn, x, args):
    with torch.no_grad():
        return loss_fn(x, *args)


def train_step(loss_fn, x, args):
    x.grad = None
    loss = loss_fn(x, *args)
    loss.backward()
    return loss


def time_alternating(pipelines, device, repeat):
    """Runs `pipelines` (name -> thunk) alternately after a warm-up.  Returns (wall, cpu):
    name -> the `repeat` wall-clock seconds of its runs (the i-th runs of all pipelines next to each
    other in time), and name -> the CPU seconds of the process (all threads) over those runs."""
    for thunk in pipelines.values():
        thunk()
    synchronize(device)
    wall = {name: [] for name in pipelines}
    cpu = {name: 0.0 for name in pipelines}
    for _ in range(repeat):
        for name, thunk in pipelines.items():
            synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            thunk()
            synchronize(device)
            cpu[name] += time.process_time() - start_cpu
            wall[name].append(time.perf_counter() - start)
    return wall, cpu


def speedup_stats(builtin_seconds, ours_seconds):
    """The speedup of medians, and the quartiles of the per-run speedups (builtin_i / ours_i of runs
    that were next to each other in time): how far one run's ratio strays when the machine is busy."""
    ratios = [b / o for b, o in zip(builtin_seconds, ours_seconds)]
    if len(ratios) > 1:
        q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    else:
        q1 = q3 = ratios[0]
    speedup = statistics.median(builtin_seconds) / statistics.median(ours_seconds)
    return speedup, [q1, q3], (q3 - q1) / statistics.median(ratios)


# ------------------------------------------------------------------------------------------
# Peak memory.


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


# glibc malloc thresholds (bytes).  Timing runs with large ones, as a training process settles into
# by itself (glibc raises its mmap threshold up to 32 MiB as tensors are freed), so that tensors
# reuse warm pages; memory measurements with small ones, so that freed tensors return to the OS
# and the resident set follows what is allocated.
TIMING_MALLOC_THRESHOLDS = (32 * 2**20, 64 * 2**20)
MEMORY_MALLOC_THRESHOLDS = (64 * 1024, 64 * 1024)


def set_malloc_thresholds(thresholds):
    """Fix glibc's mmap and trim thresholds (no-op without glibc)."""
    libc = _libc()
    if libc is not None:
        mmap_threshold, trim_threshold = thresholds
        libc.mallopt(-3, mmap_threshold)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, trim_threshold)  # M_TRIM_THRESHOLD


def _status_bytes(key):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{key} not in /proc/self/status")


def peak_memory_mb(step, device):
    """Peak memory of one call of `step` above what was in use before it, in MiB (None if unknown)."""
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    set_malloc_thresholds(MEMORY_MALLOC_THRESHOLDS)
    try:
        libc = _libc()
        if libc is not None:
            libc.malloc_trim(0)  # what earlier steps freed leaves the resident set first
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM to the current RSS
        before = _status_bytes("VmRSS")
        step()
        return max(0, _status_bytes("VmHWM") - before) / 2**20
    except OSError:
        return None
    finally:
        set_malloc_thresholds(TIMING_MALLOC_THRESHOLDS)


# ------------------------------------------------------------------------------------------
# One row.


def max_abs_diff(a, b):
    a, b = a.double(), b.double()
    both_inf = torch.isinf(a) & torch.isinf(b) & (a.sign() == b.sign())
    diff = (a - b).abs().masked_fill(both_inf, 0)
    return float(diff.max()) if diff.numel() else 0.0


def measure(shape, device, dtype_name, repeat, seed):
    dtype = DTYPES[dtype_name]
    x, targets, input_lengths, target_lengths = make_inputs(shape, dtype, device, seed)
    args = (targets, input_lengths, target_lengths)
    row = {
        "T": shape.T,
        "N": shape.N,
        "C": shape.C,
        "S": shape.S,
        "device": device,
        "dtype": dtype_name,
        "builtin": "F.ctc_loss(x.log_softmax(2))" + (" on x.float()" if dtype_name in ("float16", "bfloat16") else ""),
        "note": shape.note,
    }
    if device == "cpu":
        row["isa"] = torch.ops.ctc_ext._cpu_kernel_isa()
        row["threads"] = torch.get_num_threads()

    # Accuracy first, on per-sample losses and on the gradient of the mean loss.
    x_builtin = x.detach().clone().requires_grad_()
    x_ours = x.detach().clone().requires_grad_()
    builtin_losses = builtin_loss(x_builtin, *args, reduction="none")
    ours_losses = ours_loss(x_ours, *args, reduction="none")
    row["max_loss_diff"] = max_abs_diff(ours_losses.detach(), builtin_losses.detach())
    row["max_loss_rel_diff"] = float(
        (
            (ours_losses.detach().double() - builtin_losses.detach().double()).abs()
            / builtin_losses.detach().double().abs().clamp_min(1e-30)
        ).max()
    )
    train_step(builtin_loss, x_builtin, args)
    train_step(ours_loss, x_ours, args)
    row["max_grad_diff"] = max_abs_diff(ours_losses.new_tensor(0) + x_ours.grad.double(), x_builtin.grad.double())

    x_train = x.detach().clone().requires_grad_()
    forward_times, forward_cpu = time_alternating(
        {
            "builtin": lambda: forward_step(builtin_loss, x, args),
            "ours": lambda: forward_step(ours_loss, x, args),
        },
        device,
        repeat,
    )
    train_times, train_cpu = time_alternating(
        {
            "builtin": lambda: train_step(builtin_loss, x_train, args),
            "ours": lambda: train_step(ours_loss, x_train, args),
        },
        device,
        repeat,
    )
    x_train.grad = None
    for step, times in (("fwd", forward_times), ("train", train_times)):
        row[f"builtin_{step}_ms"] = 1e3 * statistics.median(times["builtin"])
        row[f"ours_{step}_ms"] = 1e3 * statistics.median(times["ours"])
        speedup, quartiles, spread = speedup_stats(times["builtin"], times["ours"])
        row[f"speedup_{step}"] = speedup
        row[f"speedup_{step}_iqr"] = quartiles
        row[f"speedup_{step}_spread"] = spread
    row["cpu_share"] = None
    if device == "cpu":
        row["cpu_share"] = min(
            cpu[name] / sum(wall[name])
            for wall, cpu in ((forward_times, forward_cpu), (train_times, train_cpu))
            for name in wall
        )
    row["unsteady"] = max(row["speedup_fwd_spread"], row["speedup_train_spread"]) > UNSTEADY_SPREAD or (
        row["cpu_share"] is not None and row["cpu_share"] < MIN_CPU_SHARE
    )

    # Peak memory of one training step each (after the warm-ups above).
    row["builtin_peak_mb"] = peak_memory_mb(lambda: train_step(builtin_loss, x_train, args), device)
    x_train.grad = None
    row["ours_peak_mb"] = peak_memory_mb(lambda: train_step(ours_loss, x_train, args), device)
    x_train.grad = None

    if device == "cuda" and dtype == torch.float32:
        cudnn_args = cudnn_inputs(*args)
        if cudnn_args is not None:
            cudnn_times, _ = time_alternating(
                {
                    "cudnn": lambda: train_step(builtin_loss, x_train, cudnn_args),
                    "ours": lambda: train_step(ours_loss, x_train, args),
                },
                device,
                repeat,
            )
            row["builtin_cudnn_train_ms"] = 1e3 * statistics.median(cudnn_times["cudnn"])
            row["speedup_train_vs_cudnn"] = speedup_stats(cudnn_times["cudnn"], cudnn_times["ours"])[0]
    return row


# ------------------------------------------------------------------------------------------
# Output.


def speedup_cell(row, step):
    q1, q3 = row[f"speedup_{step}_iqr"]
    return f"{row[f'speedup_{step}']:.1f} ({q1:.1f}-{q3:.1f})"


COLUMNS = [
    ("shape", lambda r: f"{r['T']}x{r['N']}x{r['C']}x{r['S']}"),
    ("dev", lambda r: r["device"]),
    ("dtype", lambda r: r["dtype"]),
    ("fwd ms (built-in/ours)", lambda r: f"{r['builtin_fwd_ms']:.2f}/{r['ours_fwd_ms']:.2f}"),
    ("x (IQR)", lambda r: speedup_cell(r, "fwd")),
    ("fwd+bwd ms (built-in/ours)", lambda r: f"{r['builtin_train_ms']:.2f}/{r['ours_train_ms']:.2f}"),
    ("x (IQR)", lambda r: speedup_cell(r, "train")),
    (
        "peak MiB (built-in/ours)",
        lambda r: "n/a" if r["builtin_peak_mb"] is None else f"{r['builtin_peak_mb']:.1f}/{r['ours_peak_mb']:.1f}",
    ),
    ("max |dloss|", lambda r: f"{r['max_loss_diff']:.1e}"),
    ("max |dgrad|", lambda r: f"{r['max_grad_diff']:.1e}"),
    ("", lambda r: "unsteady" if r["unsteady"] else ""),
]

UNSTEADY_WARNING = (
    "warning: {count} row(s) marked unsteady: their per-run speedups spread more than {limit:.0%} of the median "
    "(interquartile range over median), or a pipeline's runs had the CPU less than {share:.0%} of their time: the "
    "machine was busy while they ran and their ratios are not to be trusted; rerun them on a quieter machine, "
    "with more --repeat or with --threads 1."
)


def format_table(rows):
    cells = [[name for name, _ in COLUMNS]] + [[fmt(row) for _, fmt in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_plot(rows, path, plt):
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, key, label in ((axes[0], "T", "T (frames)"), (axes[1], "C", "C (classes)")):
        for series, marker in (("speedup_train", "o"), ("speedup_fwd", "s")):
            for device, dtype in sorted({(r["device"], r["dtype"]) for r in rows}):
                points = sorted((r[key], r[series]) for r in rows if r["device"] == device and r["dtype"] == dtype)
                axis.scatter(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    marker=marker,
                    label=f"{'fwd+bwd' if series == 'speedup_train' else 'fwd'} {device} {dtype}",
                )
        axis.axhline(1.0, color="gray", linewidth=0.8)
        axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.set_ylabel("speedup over F.ctc_loss (x)")
        axis.grid(True, alpha=0.3)
    axes[1].legend(fontsize=8)
    figure.suptitle("ctc_ext.ctc_loss vs log_softmax + F.ctc_loss")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def parse_options(argv):
    """The parsed options, with every check that needs more than one option or the machine."""
    parser = build_parser()
    options = parser.parse_args(argv)
    options.device = options.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in options.device and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available in this torch / on this machine")
    options.pyplot = None
    if options.plot is not None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            parser.error("--plot needs matplotlib, which is not installed: pip install 'ctc_ext[plot]'")
        options.pyplot = plt
    for path in (options.json, options.plot):
        if path is not None and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            parser.error(f"cannot write {path}: its directory does not exist")
    options.shapes = options.shapes or [Shape(*shape) for shape in DEFAULT_SHAPES]
    return options


def measure_all(options):
    """One row per (shape, device, dtype) that this build can run, with progress on stderr."""
    jobs = [(shape, device, dtype) for device in options.device for dtype in options.dtype for shape in options.shapes]
    print(
        f"ctc-bench: {len(jobs)} measurements, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"repeat {options.repeat}",
        file=sys.stderr,
    )
    rows = []
    started = time.perf_counter()
    for index, (shape, device, dtype) in enumerate(jobs, 1):
        print(f"[{index}/{len(jobs)}] {device} {dtype} {shape.label()} ...", end="", flush=True, file=sys.stderr)
        try:
            row = measure(shape, device, dtype, options.repeat, options.seed)
        except (RuntimeError, NotImplementedError) as error:
            # e.g. a build without kernels for this device: say so and go on with the other rows.
            print(f" skipped: {str(error).splitlines()[0]}", file=sys.stderr, flush=True)
            continue
        rows.append(row)
        print(
            f" fwd {row['speedup_fwd']:.1f}x, fwd+bwd {row['speedup_train']:.1f}x "
            f"({time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    return rows


def print_report(rows):
    print(format_table(rows))
    if any(r["dtype"] in ("float16", "bfloat16") for r in rows):
        print(
            "float16 / bfloat16 rows: the built-in ran on x.float() (it takes no half precision); "
            "differences are against that float32 result."
        )
    unsteady = sum(row["unsteady"] for row in rows)
    if unsteady:
        print(UNSTEADY_WARNING.format(count=unsteady, limit=UNSTEADY_SPREAD, share=MIN_CPU_SHARE))


def decode_rows(options):
    """Throughput rows of the decoders on the T, N, C, S of each shape (CPU, float32)."""
    from . import bench_decode

    shapes = sorted({(shape.T, shape.N, shape.C, shape.S) for shape in options.shapes})
    print(f"decoders, cpu float32, {torch.get_num_threads()} threads ...", file=sys.stderr, flush=True)
    rows = bench_decode.benchmark_rows(shapes, repeats=options.repeat, seed=options.seed)
    print(bench_decode.format_table(rows))
    rows = [dict(row, device="cpu", dtype="float32") for row in rows]
    if options.decode_thread_pairs > 0:
        print("CTCDecoder on 2 threads against 1, alternating ...", file=sys.stderr, flush=True)
        scaling_rows = bench_decode.thread_scaling_rows(pairs=options.decode_thread_pairs)
        print(bench_decode.format_thread_scaling_table(scaling_rows))
        rows += [dict(row, device="cpu", dtype="float32") for row in scaling_rows]
    if options.decode_lm:
        print("CTCDecoder with and without a language model ...", file=sys.stderr, flush=True)
        lm_rows = bench_decode.lm_benchmark_rows(repeats=options.repeat)
        print(bench_decode.format_lm_table(lm_rows))
        rows += [dict(row, op="CTCDecoder", device="cpu", dtype="float32") for row in lm_rows]
    return rows


def main(argv=None):
    options = parse_options(argv)
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    set_malloc_thresholds(TIMING_MALLOC_THRESHOLDS)

    import ctc_ext  # noqa: F401  (fails here, not mid-run, if the extension is not built)

    rows = measure_all(options)
    if not rows:
        print("ctc-bench: no measurement succeeded", file=sys.stderr)
        return 1
    print_report(rows)
    if options.decode:
        rows += decode_rows(options)
    if options.json is not None:
        with open(options.json, "w") as out:
            json.dump(rows, out, indent=1)
        print(f"wrote {options.json}", file=sys.stderr)
    if options.plot is not None:
        write_plot([row for row in rows if "op" not in row], options.plot, options.pyplot)  # loss rows only
        print(f"wrote {options.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
