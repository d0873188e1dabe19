"""Every CUDA kernel of ctc_ext once, on small inputs, each result checked against the CPU op.

Run by scripts/gpu_check.sh under compute-sanitizer (memcheck, racecheck), so it is small and
goes through the public ops only: whatever kernels csrc/cuda holds, these calls reach all of them
(the loss forward and backward in every dtype and both index widths, a lattice wider than one
block, greedy decoding, forced alignment).  Exits non-zero on a mismatch or a missing CUDA kernel.

    python scripts/gpu_kernels_smoke.py            # needs a CUDA device and ctc_ext built with CUDA

Run it with PYTORCH_NO_CUDA_MEMORY_CACHING=1 under memcheck: with torch's caching allocator a read
past the end of a tensor lands in the allocator's own block and is not reported.
"""

import sys

import torch

import ctc_ext

# CPU-only by design: the prefix beam search is sequential per sample over a hash map of
# prefixes (ctc_ext.beam_search copies CUDA input to the host once); _simd_math is the test hook
# of the CPU kernels' vectorised exp / log.
CPU_ONLY_OPS = {"ctc_ext::beam_search", "ctc_ext::_simd_math"}

TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def check_kernel_coverage():
    ops = sorted(name for name in torch._C._dispatch_get_all_op_names() if name.startswith("ctc_ext::"))
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    missing = [op for op in ops if has(op, "CPU") and not has(op, "CUDA") and op not in CPU_ONLY_OPS]
    stale = [op for op in CPU_ONLY_OPS if op in ops and has(op, "CUDA")]
    if missing or stale:
        raise AssertionError(f"ops with a CPU kernel but no CUDA kernel: {missing}; CPU-only with one: {stale}")
    return [op for op in ops if op not in CPU_ONLY_OPS]


def problem(T, N, C, S, dtype, seed, index_dtype=torch.int64):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, N, C, generator=generator, dtype=torch.float64).to(dtype)
    targets = torch.randint(1, C, (N, S), generator=generator, dtype=torch.int64).to(index_dtype)
    input_lengths = torch.randint(T // 2 + S, T + 1, (N,), generator=generator)
    input_lengths[0] = T
    target_lengths = torch.randint(0, S + 1, (N,), generator=generator)
    target_lengths[0] = S
    return logits, targets, input_lengths, target_lengths


def assert_close(got, want, dtype, what):
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(got.cpu().double(), want.double(), rtol=tol, atol=tol, equal_nan=True, msg=what)


def loss_and_grad(logits, targets, input_lengths, target_lengths):
    x = logits.detach().clone().requires_grad_(True)
    losses = ctc_ext.ctc_loss(x, targets, input_lengths, target_lengths, reduction="none", zero_infinity=True)
    losses.sum().backward()
    return losses.detach(), x.grad


def check_loss(T, N, C, S, dtype, seed, index_dtype=torch.int64, concatenated=False, device="cuda"):
    logits, targets, input_lengths, target_lengths = problem(T, N, C, S, dtype, seed, index_dtype)
    if concatenated:
        targets = torch.cat([targets[n, : target_lengths[n]] for n in range(N)])
    want = loss_and_grad(logits, targets, input_lengths, target_lengths)
    # Everything on the device: the path that checks values there, without a host synchronisation.
    on_device = [t.to(device) for t in (logits, targets, input_lengths, target_lengths)]
    got = loss_and_grad(*on_device)
    what = f"ctc_loss T={T} N={N} C={C} S={S} {dtype} {index_dtype} concatenated={concatenated}"
    assert_close(got[0], want[0], dtype, what + " loss")
    assert_close(got[1], want[1], dtype, what + " gradient")
    return what


def check_decoders(dtype, seed, device="cuda"):
    logits, targets, input_lengths, target_lengths = problem(40, 4, 9, 6, dtype, seed)
    want = ctc_ext.ops.greedy_decode(logits, input_lengths, 0)
    got = ctc_ext.ops.greedy_decode(logits.to(device), input_lengths.to(device), 0)
    for a, b in zip(got, want):
        if not torch.equal(a.cpu(), b):
            raise AssertionError(f"greedy_decode {dtype}: the GPU result differs from the CPU's")
    want = ctc_ext.ops.forced_align(logits, targets, input_lengths, target_lengths, 0)
    moved = [t.to(device) for t in (logits, targets, input_lengths, target_lengths)]
    got = ctc_ext.ops.forced_align(*moved, 0)
    if not torch.equal(got[0].cpu(), want[0]):
        raise AssertionError(f"forced_align {dtype}: the GPU path differs from the CPU's")
    assert_close(got[2], want[2], dtype, f"forced_align {dtype} path score")
    return f"greedy_decode and forced_align {dtype}"


def run_checks(device):
    """Every check on `device` against the CPU op; the descriptions of those that passed."""
    done = []
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        done.append(check_loss(12, 3, 7, 4, dtype, seed=1, device=device))
    done.append(check_loss(12, 3, 7, 4, torch.float32, 2, torch.int32, concatenated=True, device=device))
    done.append(check_loss(30, 2, 300, 8, torch.float32, seed=3, device=device))  # classes wider than a block
    done.append(check_loss(1200, 1, 6, 600, torch.float32, seed=4, device=device))  # 1201 states: over a block
    for dtype in (torch.float32, torch.float16):
        done.append(check_decoders(dtype, seed=5, device=device))
    return done


def main():
    if not torch.cuda.is_available():
        print("gpu_kernels_smoke: no CUDA device", file=sys.stderr)
        return 2
    cuda_ops = check_kernel_coverage()
    print(f"CUDA kernels registered for: {', '.join(cuda_ops)}")
    done = run_checks("cuda")
    torch.cuda.synchronize()
    for line in done:
        print(f"ok  {line}")
    print(f"gpu_kernels_smoke: {len(done)} checks passed on {torch.cuda.get_device_name()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
