#!/usr/bin/env bash
# Sets up .venv (scripts/setup_env.sh) and runs the benchmark CLI, ctc-bench; extra arguments go
# to it (ctc-bench --help lists them).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
exec "${CTC_EXT_VENV:-$ROOT/.venv}/bin/ctc-bench" "$@"
