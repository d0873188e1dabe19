"""The performance model of docs/cuda.md: one float32 training step (forward + backward) of the
README shapes on an H200, kernel by kernel, for ctc_ext's CUDA kernels and for the built-in
pipeline (log_softmax + F.ctc_loss, native CUDA kernels), on paper until gpu_check.sh measures it.

    python benchmarks/cuda_model.py [--bandwidth 4.3e12] [--frame-latency-us 1.0]
                                    [--held-frame-latency-us 0.3] [--launch-us 3.0] [--kernels]

Per kernel: DRAM bytes read and written (each counted once: a row re-read within one block is
taken to hit L1/L2), launches, block barriers per frame.  Its time is the larger of bytes over
the copy bandwidth and, for a lattice sweep (T dependent steps, one block per sample), T times the
latency of one step; every launch adds a gap.  A step that gathers its emissions from the logits
in the frame that uses them waits for that load (--frame-latency-us: the built-in's sweeps); a
step whose emissions were loaded a frame ahead waits only for the previous row of its own
lattice (--held-frame-latency-us: ours).  The floor is the logits read once and the gradient
written once.  The latencies are assumptions to be replaced by measurements.
"""

import argparse
import math
from dataclasses import dataclass
from typing import List

README_SHAPES = [  # T, N, C, S: benchmarks/run_readme_table.sh
    (500, 32, 29, 100),
    (1000, 8, 29, 300),
    (250, 64, 29, 60),
    (500, 32, 1024, 100),
    (300, 32, 5000, 60),
    (200, 16, 8000, 40),
]
ELEMENT = 4  # float32 logits and gradient
ACC = 4  # float32 lattice values
SECTOR = 32  # bytes a scattered load brings from DRAM


@dataclass
class Kernel:
    name: str
    read: float  # bytes
    written: float  # bytes
    launches: int
    barriers_per_frame: float  # per block, per frame (or per row, for row kernels)
    sequential_frames: int = 0  # dependent steps of a lattice sweep (0: a bandwidth-bound kernel)
    held_emissions: bool = False  # a sweep whose steps load their emissions a frame ahead


def gathers(T, N, C, S):
    """Bytes a lattice sweep loads from the logits: the blank and S labels of every frame, one
    sector each, at most the whole row."""
    return T * N * min((S + 1) * SECTOR, math.ceil(C * ELEMENT / SECTOR) * SECTOR)


def ours(T, N, C, S) -> List[Kernel]:
    W = 2 * S + 1
    rows = T * N
    lattice = T * N * W * ACC  # log_alpha, (T, 2 S_n + 1) per sample
    tnc = rows * C * ELEMENT
    links = 3 * N * S * 8  # sorted positions, previous and next equal label
    return [
        # the emissions of each row are gathered from the row just read (L1) into the log_alpha rows
        Kernel("log_normalizer_kernel (+ emission gather)", tnc, rows * ACC + lattice, 1, 4),
        # reads its emission row, a frame ahead, and overwrites it with alpha
        Kernel("forward_lattice_kernel", lattice + rows * ACC, lattice + N * ACC, 1, 1, T, True),
        Kernel("backward_prepare_kernel", N * S * 8, links + N * 4, 1, 0),
        Kernel("gradient_rows_kernel", tnc + rows * ACC, tnc, 1, 0),
        # gathers frame t - 1's emissions while it finishes frame t; overwrites the path's classes
        Kernel(
            "backward_lattice_kernel", gathers(T, N, C, S) + lattice + rows * ACC, gathers(T, N, C, S), 1, 7, T, True
        ),
        Kernel("lengths to the device, reduction, its gradient", 0, 0, 5, 0),
    ]


def builtin(T, N, C, S) -> List[Kernel]:
    """log_softmax, then aten/src/ATen/native/cuda/LossCTC.cu; every README shape takes its
    'large' backward branch (2 T + 2.4 N + 0.2 C > 450)."""
    W = 2 * S + 1
    tnc = T * N * C * ELEMENT
    lattice = N * T * W * ACC  # padded to the longest target
    half_lattice = N * T * (S + 1) * ACC
    return [
        Kernel("log_softmax forward", tnc, tnc, 1, 0),
        Kernel("ctc_loss_log_alpha_gpu_kernel", gathers(T, N, C, S), lattice, 1, 1, T),
        Kernel("grad = full_like(log_probs, -inf)", 0, tnc, 1, 0),
        Kernel("ctc_loss_backward_log_beta_gpu_kernel", gathers(T, N, C, S), lattice, 1, 1, T),
        Kernel("exp_out(grad, log_probs)", tnc, tnc, 1, 0),
        Kernel("blank column: logsumexp(alpha + beta) ...", 2 * half_lattice, 2 * half_lattice, 6, 0),
        Kernel("grad *= grad_out", tnc, tnc, 1, 0),
        Kernel("ctc_loss_backward_collect_nonblank_gpu_kernel", 2 * lattice, gathers(T, N, C, S), 1, 0),
        Kernel("log_softmax backward", 2 * tnc, tnc, 1, 0),
        Kernel("targets, lengths, reduction, its gradient", 0, 0, 8, 0),
    ]


def kernel_time(kernel, bandwidth, frame_latency, launch_gap, held_frame_latency=None):
    """held_frame_latency: the step latency of a sweep with held emissions (frame_latency if None)."""
    memory = (kernel.read + kernel.written) / bandwidth
    step = held_frame_latency if kernel.held_emissions and held_frame_latency is not None else frame_latency
    return max(memory, kernel.sequential_frames * step) + kernel.launches * launch_gap


def summarise(kernels, bandwidth, frame_latency, launch_gap, held_frame_latency=None):
    moved = sum(k.read + k.written for k in kernels)
    return {
        "bytes": moved,
        "launches": sum(k.launches for k in kernels),
        "barriers_per_frame": sum(k.barriers_per_frame for k in kernels if k.sequential_frames),
        "time": sum(kernel_time(k, bandwidth, frame_latency, launch_gap, held_frame_latency) for k in kernels),
    }


def megabytes(value):
    return f"{value / 1e6:.0f}" if value >= 1e7 else f"{value / 1e6:.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bandwidth", type=float, default=4.3e12, help="copy bandwidth, bytes/s (H200 measured)")
    parser.add_argument(
        "--frame-latency-us", type=float, default=1.0, help="a lattice step that gathers its emissions (assumed)"
    )
    parser.add_argument(
        "--held-frame-latency-us",
        type=float,
        default=0.3,
        help="a lattice step whose emissions were loaded a frame ahead (assumed)",
    )
    parser.add_argument("--launch-us", type=float, default=3.0, help="gap per launch (assumed)")
    parser.add_argument("--kernels", action="store_true", help="also print every kernel of every shape")
    options = parser.parse_args(argv)
    args = (
        options.bandwidth,
        options.frame_latency_us * 1e-6,
        options.launch_us * 1e-6,
        options.held_frame_latency_us * 1e-6,
    )
    print(
        f"float32 training step, {options.bandwidth / 1e12:.1f} TB/s, lattice steps {options.frame_latency_us:g} us "
        f"(gathered emissions) and {options.held_frame_latency_us:g} us (held a frame ahead), "
        f"{options.launch_us:g} us per launch\n"
    )
    print(
        "| T x N x C x S | floor MB | floor us | ours MB | ours launches | ours us | built-in MB "
        "| built-in launches | built-in us | predicted x |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for T, N, C, S in README_SHAPES:
        floor = 2 * T * N * C * ELEMENT
        a = summarise(ours(T, N, C, S), *args)
        b = summarise(builtin(T, N, C, S), *args)
        print(
            f"| {T}x{N}x{C}x{S} | {megabytes(floor)} | {1e6 * floor / options.bandwidth:.0f} "
            f"| {megabytes(a['bytes'])} | {a['launches']} | {1e6 * a['time']:.0f} "
            f"| {megabytes(b['bytes'])} | {b['launches']} | {1e6 * b['time']:.0f} | {b['time'] / a['time']:.1f} |"
        )
    if options.kernels:
        for T, N, C, S in README_SHAPES:
            for label, kernels in (("ours", ours(T, N, C, S)), ("built-in", builtin(T, N, C, S))):
                print(f"\n{T}x{N}x{C}x{S} {label}")
                print("| kernel | read MB | written MB | launches | barriers per frame | us |")
                print("|---|---|---|---|---|---|")
                for k in kernels:
                    print(
                        f"| {k.name} | {megabytes(k.read)} | {megabytes(k.written)} | {k.launches} "
                        f"| {k.barriers_per_frame:g} | {1e6 * kernel_time(k, *args):.0f} |"
                    )


if __name__ == "__main__":
    main()
