#!/usr/bin/env bash
# Creates .venv with the CPU build of torch and everything the project needs, then builds and
# installs ctc_ext into it (editable).  Safe to run again: it only does what is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CTC_EXT_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# torch is pinned to the CPU build this machine has on disk; the extension is built against it
# without build isolation so that it imports under the same torch.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check torch==2.13.0 numpy ninja pybind11 \
  pytest expecttest hypothesis scikit-learn tqdm matplotlib ruff clang-format
echo "== building ctc_ext"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e "$ROOT"
"$VENV/bin/python" -c "import torch, ctc_ext; print('ctc_ext ready with torch', torch.__version__)"
