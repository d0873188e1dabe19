#!/usr/bin/env bash
# Produces the CPU benchmark tables of docs/benchmarks.md (the README shows the first) (float32):
#  1. the issue's target shapes (small and large vocabularies) on 2 threads, then on 1 thread
#     -> benchmarks/results/readme_cpu_float32.json, readme_cpu_float32_1thread.json
#  2. the tiny per-call-overhead case (T=50 N=1 C=29 S=10) on 1 and 2 threads with many repeats
#     -> benchmarks/results/readme_cpu_tiny_1thread.json, readme_cpu_tiny_2thread.json
# then prints both as markdown.  Usage: bash benchmarks/run_readme_table.sh [extra ctc-bench options]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-${CTC_EXT_VENV:-$ROOT/.venv}/bin/python}"
OUT="$ROOT/benchmarks/results"
mkdir -p "$OUT"
SHAPES="500,32,29,100 1000,8,29,300 250,64,29,60 500,32,1024,100 300,32,5000,60 200,16,8000,40"
# shellcheck disable=SC2086
"$PYTHON" -m ctc_ext.bench --device cpu --dtype float32 --threads 2 --repeat 7 --shapes $SHAPES \
  --json "$OUT/readme_cpu_float32.json" "$@"
# The same on one thread: no OpenMP barrier in either pipeline, so the ratio is the least
# sensitive to other load on the machine.
# shellcheck disable=SC2086
"$PYTHON" -m ctc_ext.bench --device cpu --dtype float32 --threads 1 --repeat 5 --shapes $SHAPES \
  --json "$OUT/readme_cpu_float32_1thread.json" "$@"
for threads in 1 2; do
  "$PYTHON" -m ctc_ext.bench --device cpu --dtype float32 --threads "$threads" --repeat 51 \
    --shapes 50,1,29,10 --json "$OUT/readme_cpu_tiny_${threads}thread.json" "$@"
done
"$PYTHON" "$ROOT/benchmarks/json_to_markdown.py" "$OUT/readme_cpu_float32.json"
"$PYTHON" "$ROOT/benchmarks/json_to_markdown.py" "$OUT/readme_cpu_float32_1thread.json"
"$PYTHON" "$ROOT/benchmarks/json_to_markdown.py" "$OUT/readme_cpu_tiny_1thread.json" "$OUT/readme_cpu_tiny_2thread.json"
