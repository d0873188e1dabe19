#!/usr/bin/env bash
# Lint and format checks (.ci/run runs this): ruff for Python, clang-format for C++ / CUDA.
# `bash scripts/lint.sh --fix` rewrites the files in place instead.  Uses the tools of .venv
# (scripts/setup_env.sh installs them), or of CTC_EXT_VENV.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CTC_EXT_VENV:-$ROOT/.venv}/bin"
cd "$ROOT"
mapfile -t cxx < <(git ls-files --cached --others --exclude-standard -- '*.cpp' '*.h' '*.cu' '*.cuh')
if [ "${1:-}" = "--fix" ]; then
  "$BIN/ruff" check --fix .
  "$BIN/ruff" format .
  "$BIN/clang-format" -i "${cxx[@]}"
else
  "$BIN/ruff" check .
  "$BIN/ruff" format --check .
  "$BIN/clang-format" --dry-run -Werror "${cxx[@]}"
fi
echo "lint: ok (${#cxx[@]} C++ / CUDA files, ruff on Python)"
