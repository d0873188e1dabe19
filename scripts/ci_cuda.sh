#!/usr/bin/env bash
# CUDA proof without a GPU, from scratch:
#   1. a venv with the CUDA build of torch (.venv-cuda, or CTC_EXT_CUDA_VENV);
#   2. ctc_ext built with its CUDA kernels (FORCE_CUDA=1), into build/cuda so that the CPU build of
#      .venv in the same checkout is left alone;
#   3. it imports, and every ctc_ext op with a CPU kernel has a CUDA kernel, except the listed
#      CPU-only ones (scripts/gpu_kernels_smoke.py: beam_search, the CPU test hook _simd_math);
#   4. the spec suite's CUDA cases (pytest -m cuda) run, and skip without a GPU;
#   5. the CUDA kernels run on the CPU through the emulation header, under AddressSanitizer
#      (and ThreadSanitizer with CTC_EXT_CI_TSAN=1).
# The emulated tests also run without ASan in the main suite (scripts/test.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CTC_EXT_CUDA_VENV:-$ROOT/.venv-cuda}"
PYTHON="${PYTHON:-python3}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0}"
export MAX_JOBS="${MAX_JOBS:-2}"
start=$(date +%s)
step() { echo "== [$(( $(date +%s) - start )) s] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
step "installing torch 2.14.1 (CUDA build) and test tools"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check torch==2.14.1 numpy pytest ninja setuptools

step "building ctc_ext with CUDA kernels (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"
BUILD="$ROOT/build/cuda"
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# CUDA library headers (cusparse.h, ...) of the pip wheels live only here.
export CPATH="$SITE/nvidia/cu13/include${CPATH:+:$CPATH}"
mkdir -p "$BUILD"
if ! (cd "$ROOT" && FORCE_CUDA=1 "$VENV/bin/python" setup.py -q build --build-base "$BUILD" > "$BUILD/build.log" 2>&1); then
  tail -n 60 "$BUILD/build.log"
  echo "CUDA build failed (full log: $BUILD/build.log)"
  exit 1
fi
grep -e "^ctc_ext:" "$BUILD/build.log"
LIB="$(ls -d "$BUILD"/lib.* | head -n 1)"
ls "$LIB"/ctc_ext/_C*.so
export PYTHONPATH="$LIB"

step "import and kernel coverage"
# One list of the CPU-only ops, in the script that calls every CUDA kernel on a GPU.
(cd "$LIB" && "$VENV/bin/python" - "$ROOT/scripts" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import torch
import ctc_ext
from gpu_kernels_smoke import CPU_ONLY_OPS, check_kernel_coverage
print(f"ctc_ext from {ctc_ext.__file__} with torch {torch.__version__}: CUDA kernels for",
      ", ".join(check_kernel_coverage()), "; CPU only:", ", ".join(sorted(CPU_ONLY_OPS)))
PY
)

cd "$ROOT"
PYTEST=("$VENV/bin/python" -m pytest -q -p no:cacheprovider --import-mode=importlib)
step "the spec suite's CUDA cases (skip without a GPU)"
(cd "$LIB" && "${PYTEST[@]}" --rootdir "$ROOT" -m cuda "$ROOT/tests" --ignore="$ROOT/tests/cuda_emulation" | tail -n 3)

step "emulated CUDA kernels under AddressSanitizer"
# libstdc++ preloaded with the sanitizer: python does not link it, and the sanitizer's
# __cxa_throw interceptor needs it at start-up, or the first C++ exception (an emulated launch
# error) aborts the interpreter.
LIBSTDCXX="$(g++ -print-file-name=libstdc++.so)"
LIBASAN="$(g++ -print-file-name=libasan.so)"
(cd "$LIB" && CTC_EXT_EMULATION_ASAN=1 LD_PRELOAD="$LIBASAN $LIBSTDCXX" ASAN_OPTIONS=detect_leaks=0 \
  "${PYTEST[@]}" --rootdir "$ROOT" -m cuda_emulation "$ROOT/tests/cuda_emulation")

# ThreadSanitizer over the same tests finds races between the threads of a block (a missing
# __syncthreads); opt-in because it adds about 3 minutes.  Built without the sanitizer preloaded
# (the compilers must not run under it), then run with it.
if [ "${CTC_EXT_CI_TSAN:-0}" = "1" ]; then
  step "emulated CUDA kernels under ThreadSanitizer"
  (cd "$ROOT/tests/cuda_emulation" && CTC_EXT_EMULATION_TSAN=1 "$VENV/bin/python" -c \
    "import conftest
try:
    conftest._build()
except (ImportError, OSError):
    pass  # libtsan must be preloaded to import it; the build is what we wanted here")
  (cd "$LIB" && CTC_EXT_EMULATION_TSAN=1 LD_PRELOAD="$(g++ -print-file-name=libtsan.so) $LIBSTDCXX" \
    TSAN_OPTIONS="halt_on_error=1" "${PYTEST[@]}" --rootdir "$ROOT" -m cuda_emulation "$ROOT/tests/cuda_emulation")
fi
step "CUDA CI done"
