"""benchmarks/cuda_model.py: its counts against a direct count, and docs/cuda.md shows its output."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import cuda_model  # noqa: E402


def model_output(*args):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "cuda_model.py"), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout


def table_rows(text):
    """The per-shape rows (first cell T x N x C x S, such as 500x32x29x100)."""
    return [line for line in text.splitlines() if re.match(r"\| \d+x\d+x\d+x\d+ \|", line)]


def test_docs_show_the_models_table_at_every_latency():
    with open(os.path.join(ROOT, "docs", "cuda.md")) as file:
        docs = file.read()
    for row in table_rows(model_output()):
        assert row.replace(" us ", " µs ") in docs, row
    for latencies in (("--held-frame-latency-us", "1"), ("--frame-latency-us", "0.3")):
        for row in table_rows(model_output(*latencies)):
            cells = [cell.strip() for cell in row.strip("|").split("|")]
            short = f"| {cells[0]} | {cells[5]} | {cells[8]} | {cells[9]} |"  # shape, ours, built-in, ratio
            assert short in docs, (latencies, short)


def test_bandwidth_passes_of_the_two_pipelines():
    # T N C 4 bytes per pass: ours reads the logits twice and writes the gradient once; the built-in
    # makes ten passes (log_softmax 2, -inf fill 1, exp 2, scale 2, log_softmax backward 3).
    T, N, C, S = 300, 32, 5000, 60
    tnc = T * N * C * cuda_model.ELEMENT
    ours = {k.name.split(" (")[0]: k for k in cuda_model.ours(T, N, C, S)}
    assert ours["log_normalizer_kernel"].read == tnc
    assert ours["gradient_rows_kernel"].written == tnc
    ours_passes = sum(k.read + k.written for k in ours.values() if not k.sequential_frames) // tnc
    assert ours_passes == 3
    builtin_passes = sum(
        (k.read + k.written) // tnc for k in cuda_model.builtin(T, N, C, S) if (k.read + k.written) >= tnc
    )
    assert builtin_passes == 10


def test_a_lattice_sweep_costs_t_steps_unless_its_bytes_take_longer():
    sweep = cuda_model.Kernel("sweep", read=0, written=0, launches=1, barriers_per_frame=1, sequential_frames=500)
    assert cuda_model.kernel_time(sweep, 4.3e12, 1e-6, 3e-6) == 500e-6 + 3e-6
    heavy = cuda_model.Kernel("sweep", read=4.3e12, written=0, launches=0, barriers_per_frame=1, sequential_frames=500)
    assert cuda_model.kernel_time(heavy, 4.3e12, 1e-6, 3e-6) == 1.0


def test_held_emissions_shorten_only_our_sweeps():
    # ours: both sweeps hold their loads a frame ahead (held latency); the built-in's gather
    T, N, C, S = 500, 32, 29, 100
    for kernel in cuda_model.ours(T, N, C, S):
        assert kernel.held_emissions == bool(kernel.sequential_frames)
        if kernel.sequential_frames:
            assert cuda_model.kernel_time(kernel, 4.3e12, 1e-6, 0, 0.3e-6) == T * 0.3e-6
    for kernel in cuda_model.builtin(T, N, C, S):
        assert not kernel.held_emissions
        if kernel.sequential_frames:
            assert cuda_model.kernel_time(kernel, 4.3e12, 1e-6, 0, 0.3e-6) == T * 1e-6
