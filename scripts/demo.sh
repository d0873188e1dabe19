#!/usr/bin/env bash
# Sets up .venv (scripts/setup_env.sh) and runs a short comparison of ctc_ext with the built-in.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
exec "${CTC_EXT_VENV:-$ROOT/.venv}/bin/python" - <<'PY'
import time
import torch, torch.nn.functional as F
import ctc_ext

torch.manual_seed(0)
T, N, C, S = 500, 32, 29, 100
x = torch.randn(T, N, C)
targets = torch.randint(1, C, (N, S))
input_lengths = torch.randint(int(0.8 * T), T + 1, (N,))
target_lengths = torch.full((N,), S)

def run(fn):
    xs = x.clone().requires_grad_(True)
    start = time.perf_counter()
    loss = fn(xs)
    loss.backward()
    return loss.item(), xs.grad, time.perf_counter() - start

builtin = lambda xs: F.ctc_loss(xs.log_softmax(2), targets, input_lengths, target_lengths)
ours = lambda xs: ctc_ext.ctc_loss(xs, targets, input_lengths, target_lengths)
for _ in range(2): run(builtin); run(ours)
(lb, gb, tb), (lo, go, to) = run(builtin), run(ours)
print(f"T={T} N={N} C={C} S={S}, float32, forward + backward")
print(f"  built-in: loss {lb:.6f}  {tb * 1e3:.1f} ms")
print(f"  ctc_ext:  loss {lo:.6f}  {to * 1e3:.1f} ms")
print(f"  max |loss diff| {abs(lb - lo):.2e}, max |grad diff| {(gb - go).abs().max().item():.2e}")
PY
