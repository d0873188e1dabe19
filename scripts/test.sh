#!/usr/bin/env bash
# Sets up .venv (scripts/setup_env.sh) and runs the test suite; extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "${CTC_EXT_VENV:-$ROOT/.venv}/bin/python" -m pytest -q "$@"
