#!/usr/bin/env bash
# Creates the venv (.venv, or CTC_EXT_VENV) with torch and everything the project needs, and
# builds ctc_ext into the checkout.  Safe and quick to run again: it only does what is missing.
#   - torch: one already in the venv (>= 2.11) is kept; otherwise torch==2.13.0 is installed from
#     pip's configured indexes (CTC_EXT_TORCH overrides the requirement; see the README for
#     machines where pip would pick the CUDA build);
#   - the other packages are installed only when one of them does not import;
#   - the extension is built with `setup.py build_ext --inplace` when a source, setup.py or torch
#     is newer than the library: ninja keeps its objects in build/ and recompiles only what
#     changed; an unchanged tree is not built at all;
#   - the package (and the ctc-bench script) is registered in the venv once, editable, without a
#     second build of the extension (CTC_EXT_REGISTER_ONLY=1, see setup.py).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CTC_EXT_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_PIN="${CTC_EXT_TORCH:-torch==2.13.0}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
start=$(date +%s)
step() { echo "== [setup $(($(date +%s) - start)) s] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi

# The extension is compiled against the torch it will run with, so an existing torch is kept.
if ! "$VENV/bin/python" - <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version  # reads the installed version without importing torch
major, minor = (int(part) for part in version("torch").split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 11) else 1)
PY
  step "installing $TORCH_PIN"
  "${PIP[@]}" "$TORCH_PIN"
fi

# module name -> pip package; installed only when one does not import (checked in one interpreter).
missing=()
read -r -a missing < <("$VENV/bin/python" - <<'PY'
import importlib.util
modules = {"numpy": "numpy", "ninja": "ninja", "pybind11": "pybind11", "pytest": "pytest", "expecttest": "expecttest",
           "hypothesis": "hypothesis", "sklearn": "scikit-learn", "tqdm": "tqdm", "matplotlib": "matplotlib",
           "setuptools": "setuptools"}
print(" ".join(package for module, package in modules.items() if importlib.util.find_spec(module) is None))
PY
)
for tool in ruff clang-format; do
  [ -x "$VENV/bin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  # A constraint keeps pip from replacing the torch chosen above while it resolves the others.
  constraint="$(mktemp)"
  "$VENV/bin/python" -c "import torch; print('torch==' + torch.__version__)" >"$constraint"
  "${PIP[@]}" -c "$constraint" "${missing[@]}"
  rm -f "$constraint"
fi

# Skipped outright when no source, setup.py or the venv's torch is newer than the built library
# (a torch import alone costs seconds); otherwise ninja recompiles only what changed.
library=("$ROOT"/ctc_ext/_C*.so)
torch_version=("$VENV"/lib/python*/site-packages/torch/version.py)
if [ -e "${library[0]}" ] &&
  [ -z "$(find "$ROOT/csrc" "$ROOT/setup.py" "${torch_version[@]}" -newer "${library[0]}" -print -quit)" ]; then
  step "ctc_ext is up to date: nothing in csrc/, setup.py or torch is newer than ctc_ext/${library[0]##*/}"
else
  step "building ctc_ext (incremental, objects in build/)"
  (cd "$ROOT" && PATH="$VENV/bin:$PATH" "$VENV/bin/python" setup.py -q build_ext --inplace)
  (cd "$ROOT" && "$VENV/bin/python" -c "import torch, ctc_ext; print('ctc_ext built for torch', torch.__version__)")
fi

# Registered once: an editable install that points the venv at this checkout.
if [ ! -x "$VENV/bin/ctc-bench" ] || ! (cd / && "$VENV/bin/python" - "$ROOT" <<'PY' 2>/dev/null); then
import importlib.util, os, sys
spec = importlib.util.find_spec("ctc_ext")
assert spec is not None and os.path.samefile(os.path.dirname(spec.origin), os.path.join(sys.argv[1], "ctc_ext"))
PY
  step "registering ctc_ext in $VENV (editable)"
  CTC_EXT_REGISTER_ONLY=1 "${PIP[@]}" --no-build-isolation --no-deps -e "$ROOT"
fi
# Optional: pyctcdecode and kenlm, for the tests that compare the LM decoder with them
# (CTC_EXT_LM_COMPARE=1, as .ci/run sets; kenlm compiles from source, about 5 minutes the first
# time).  A failed install only skips those tests.
if [ "${CTC_EXT_LM_COMPARE:-0}" = "1" ] && ! "$VENV/bin/python" -c "import kenlm, pyctcdecode" 2>/dev/null; then
  step "installing pyctcdecode and kenlm (optional comparisons)"
  constraint="$(mktemp)"
  "$VENV/bin/python" -c "import torch; print('torch==' + torch.__version__)" >"$constraint"
  "${PIP[@]}" -c "$constraint" pyctcdecode kenlm || echo "warning: pyctcdecode / kenlm did not install; their comparisons skip"
  rm -f "$constraint"
fi
# KenLM's build_binary (pip's kenlm has none), for the KenLM binary-file tests: compiled once from
# the kenlm sdist into $VENV/kenlm-tools (scripts/build_kenlm_binary.sh; nothing to do once built).
if [ "${CTC_EXT_LM_COMPARE:-0}" = "1" ] && "$VENV/bin/python" -c "import kenlm" 2>/dev/null; then
  CTC_EXT_VENV="$VENV" bash "$ROOT/scripts/build_kenlm_binary.sh" >/dev/null ||
    echo "warning: KenLM's build_binary did not build; the binary-file tests skip"
fi
step "done"
