#!/usr/bin/env bash
# Produces the README's CPU benchmark table: the issue's target shapes (small and large
# vocabularies, a tiny per-call-overhead case), float32, CPU, 2 threads, into
# benchmarks/results/readme_cpu_float32.json, then prints the markdown table of it.
# Usage: bash benchmarks/run_readme_table.sh [extra ctc-bench options, e.g. --repeat 9]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-${CTC_EXT_VENV:-$ROOT/.venv}/bin/python}"
OUT="$ROOT/benchmarks/results"
mkdir -p "$OUT"
"$PYTHON" -m ctc_ext.bench --device cpu --dtype float32 --threads 2 --repeat 7 \
  --shapes 50,1,29,10 500,32,29,100 1000,8,29,300 250,64,29,60 \
           500,32,1024,100 300,32,5000,60 200,16,8000,40 \
  --json "$OUT/readme_cpu_float32.json" "$@"
"$PYTHON" "$ROOT/benchmarks/json_to_markdown.py" "$OUT/readme_cpu_float32.json"
