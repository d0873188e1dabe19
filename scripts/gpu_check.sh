#!/usr/bin/env bash
# The one-shot device check: on a machine with an NVIDIA GPU and a CUDA build of torch already
# installed (no network needed), prove on the GPU what the CPU emulation cannot.
#
#   scripts/gpu_check.sh [--dry-run] [--budget S] [--test-timeout S] [--arch X.Y] [--skip A,B] OUT_DIR
#
# Stages, in order; each has its own timeout, all together at most --budget seconds (default
# 470: under 8 minutes on one H200), and the first that fails ends the run:
#   env        torch in the supported range, a GPU visible; TORCH_CUDA_ARCH_LIST from its
#              compute capability (or --arch)
#   build      ctc_ext with its CUDA kernels, for that GPU only, in place
#   tests      the spec suite's CUDA cases (pytest -m cuda: every test with device=cuda or
#              cuda_device), each test limited to --test-timeout seconds (default 90)
#   memcheck   compute-sanitizer memcheck over scripts/gpu_kernels_smoke.py (every CUDA kernel
#              once, results checked against the CPU op), torch's caching allocator off
#   racecheck  compute-sanitizer racecheck (shared-memory hazards) over the same script
#   bench      ctc-bench CUDA rows: ours against the built-in and cuDNN, float32 and float16
#   torchaudio forced_align / cuda_ctc_decoder against ctc_ext where torchaudio has them
# Writes OUT_DIR/summary.json (always, also after a failure or an interrupt), one log per stage
# (bench and torchaudio share bench.log), bench.json and torchaudio.json: at most 8 files.
# A sanitizer that cannot run on the machine (not installed, or "Device not supported" under
# gVisor) marks its stage "unsupported" and the run goes on.  --dry-run prints every command
# without running any (no GPU needed) and still writes summary.json.  PYTHON picks the
# interpreter (default python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
DRY_RUN=0
BUDGET=470
TEST_TIMEOUT=90
ARCH=""
SKIP=","
OUT_DIR=""
STAGE_NAMES="env build tests memcheck racecheck bench torchaudio"

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

die_usage() {
  echo "gpu_check.sh: $1" >&2
  echo "usage: scripts/gpu_check.sh [--dry-run] [--budget S] [--test-timeout S] [--arch X.Y] [--skip A,B] OUT_DIR" >&2
  exit 2
}

positive_int() {  # name value
  [[ "$2" =~ ^[1-9][0-9]*$ ]] || die_usage "$1 needs a positive number of seconds, got '$2'"
}

while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    --budget | --test-timeout | --arch | --skip)
      [ $# -ge 2 ] || die_usage "$1 needs a value"
      case "$1" in
        --budget) positive_int "$1" "$2"; BUDGET="$2" ;;
        --test-timeout) positive_int "$1" "$2"; TEST_TIMEOUT="$2" ;;
        --arch)
          [[ "$2" =~ ^[0-9]+\.[0-9]+a?$ ]] || die_usage "--arch needs a compute capability such as 9.0, got '$2'"
          ARCH="$2" ;;
        --skip)
          for name in ${2//,/ }; do
            [[ " $STAGE_NAMES " == *" $name "* ]] || die_usage "--skip: unknown stage '$name' (stages: $STAGE_NAMES)"
            [ "$name" != env ] || die_usage "--skip: the env stage cannot be skipped"
          done
          SKIP=",$2," ;;
      esac
      shift ;;
    -*) die_usage "unknown option $1" ;;
    *)
      [ -z "$OUT_DIR" ] || die_usage "one OUT_DIR only, got '$OUT_DIR' and '$1'"
      OUT_DIR="$1" ;;
  esac
  shift
done
[ -n "$OUT_DIR" ] || die_usage "OUT_DIR is required"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"

START=$(date +%s)
STATUS="running"
FAILED_STAGE=""
MESSAGE=""
STAGES_JSON=""
declare -A FACTS=()

stamp() { date -u +%H:%M:%S; }
elapsed() { echo $(($(date +%s) - START)); }

json_string() {
  local s="$1"
  s="${s//\\/\\\\}"
  s="${s//\"/\\\"}"
  s="${s//$'\n'/\\n}"
  s="${s//$'\t'/\\t}"
  s="${s//$'\r'/}"
  printf '"%s"' "$s"
}

write_summary() {
  local facts="" key
  for key in "${!FACTS[@]}"; do
    facts+="${facts:+, }$(json_string "$key"): $(json_string "${FACTS[$key]}")"
  done
  {
    printf '{\n'
    printf '  "status": %s,\n' "$(json_string "$STATUS")"
    printf '  "failed_stage": %s,\n' "$([ -n "$FAILED_STAGE" ] && json_string "$FAILED_STAGE" || echo null)"
    printf '  "message": %s,\n' "$(json_string "$MESSAGE")"
    printf '  "dry_run": %s,\n' "$([ "$DRY_RUN" = 1 ] && echo true || echo false)"
    printf '  "budget_s": %s,\n' "$BUDGET"
    printf '  "test_timeout_s": %s,\n' "$TEST_TIMEOUT"
    printf '  "elapsed_s": %s,\n' "$(elapsed)"
    printf '  "finished_utc": %s,\n' "$(json_string "$(date -u +%Y-%m-%dT%H:%M:%SZ)")"
    printf '  "environment": {%s},\n' "$facts"
    printf '  "stages": [%s\n  ]\n' "$STAGES_JSON"
    printf '}\n'
  } >"$OUT_DIR/summary.json.tmp"
  mv "$OUT_DIR/summary.json.tmp" "$OUT_DIR/summary.json"
}

on_exit() {
  local rc=$?
  if [ "$STATUS" = running ]; then
    STATUS="failed"
    [ -n "$MESSAGE" ] || MESSAGE="interrupted (exit status $rc)"
  fi
  write_summary
  echo "== [$(stamp)] $STATUS after $(elapsed) s; summary: $OUT_DIR/summary.json"
}
trap on_exit EXIT
trap 'MESSAGE="interrupted by a signal"; exit 130' INT TERM

record_stage() {  # name status rc seconds log note
  STAGES_JSON+="${STAGES_JSON:+,}
    {\"name\": $(json_string "$1"), \"status\": $(json_string "$2"), \"exit_status\": $3, \"seconds\": $4, \"log\": $(json_string "$5"), \"note\": $(json_string "$6")}"
}

fail() {  # stage message
  STATUS="failed"
  FAILED_STAGE="$1"
  MESSAGE="$2"
  echo "== [$(stamp)] FAILED at $1: $2" >&2
  exit 1
}

# run_stage NAME LOG LIMIT UNSUPPORTED_PATTERN COMMAND...: runs COMMAND with its output in
# OUT_DIR/LOG (appended), under the smaller of LIMIT and what is left of the budget.
run_stage() {
  local name="$1" log="$2" limit="$3" unsupported="$4"
  shift 4
  local printed
  printed="$(printf '%q ' "$@")"
  if [[ "$SKIP" == *",$name,"* ]]; then
    echo "== [$(stamp)] $name: skipped (--skip)"
    record_stage "$name" skipped null 0 "" "--skip"
    return 0
  fi
  local remaining=$((BUDGET - $(elapsed)))
  if [ "$remaining" -lt "$limit" ]; then limit="$remaining"; fi
  if [ "$limit" -le 0 ]; then
    record_stage "$name" "not run" null 0 "" "the budget of $BUDGET s is spent"
    fail "$name" "the budget of $BUDGET s was spent before this stage"
  fi
  echo "== [$(stamp)] $name (at most $limit s): $printed"
  if [ "$DRY_RUN" = 1 ]; then
    record_stage "$name" dry-run null 0 "$log" "$printed"
    return 0
  fi
  local t0 rc=0 seconds
  t0=$(date +%s)
  echo "\$ $printed" >>"$OUT_DIR/$log"
  (cd "$ROOT" && timeout --kill-after=10 "$limit" "$@") >>"$OUT_DIR/$log" 2>&1 || rc=$?
  seconds=$(($(date +%s) - t0))
  if [ "$rc" = 0 ]; then
    record_stage "$name" passed 0 "$seconds" "$log" ""
    echo "== [$(stamp)] $name passed in $seconds s"
    return 0
  fi
  if [ -n "$unsupported" ] && grep -qE "$unsupported" "$OUT_DIR/$log"; then
    record_stage "$name" unsupported "$rc" "$seconds" "$log" "the tool cannot run on this machine: $(grep -m1 -oE "$unsupported" "$OUT_DIR/$log")"
    echo "== [$(stamp)] $name: unsupported on this machine (see $log); going on"
    return 0
  fi
  tail -n 40 "$OUT_DIR/$log" >&2 || true
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    record_stage "$name" timeout "$rc" "$seconds" "$log" "stopped after $limit s"
    fail "$name" "timed out after $limit s (log: $log)"
  fi
  record_stage "$name" failed "$rc" "$seconds" "$log" ""
  fail "$name" "exit status $rc (log: $log)"
}

# ---- env: what torch and which GPU (a clear failure outside the supported torch range).
echo "== [$(stamp)] env: $PYTHON scripts/gpu_check_env.py"
env_args=()
[ "$DRY_RUN" = 0 ] || env_args+=(--no-gpu-ok)
env_rc=0
env_t0=$(date +%s)
env_out="$(cd "$ROOT" && "$PYTHON" scripts/gpu_check_env.py "${env_args[@]}" 2>&1)" || env_rc=$?
while IFS= read -r line; do
  if [[ "$line" =~ ^([A-Z_]+)=(.*)$ ]]; then
    FACTS["${BASH_REMATCH[1]}"]="$(eval "printf '%s' ${BASH_REMATCH[2]}")"
  fi
done <<<"$env_out"
echo "$env_out"
if [ "$env_rc" != 0 ]; then
  record_stage env failed "$env_rc" $(($(date +%s) - env_t0)) "" "${FACTS[ERROR]:-$env_out}"
  fail env "${FACTS[ERROR]:-gpu_check_env.py failed: $env_out}"
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  FACTS[NVIDIA_SMI]="$(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader 2>&1 | head -n 1)"
fi
if command -v nvcc >/dev/null 2>&1; then
  FACTS[NVCC]="$(nvcc --version | tail -n 1)"
fi
ARCH="${ARCH:-${FACTS[GPU_ARCH]:-}}"
if [ -z "$ARCH" ]; then
  [ "$DRY_RUN" = 1 ] || fail env "no compute capability read from the GPU; give --arch"
  ARCH="<compute capability of the GPU>"
fi
FACTS[TORCH_CUDA_ARCH_LIST]="$ARCH"
record_stage env passed 0 $(($(date +%s) - env_t0)) "" ""
echo "== [$(stamp)] env passed: TORCH_CUDA_ARCH_LIST=$ARCH"

# ---- the stages.
JOBS="$(nproc 2>/dev/null || echo 4)"
run_stage build build.log 240 "" \
  env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="$JOBS" "$PYTHON" setup.py build_ext --inplace

run_stage tests tests.log 210 "" \
  env CTC_EXT_TEST_TIMEOUT="$TEST_TIMEOUT" PYTHONUNBUFFERED=1 "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda \
  -rfE tests --ignore=tests/cuda_emulation

SANITIZER="$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")"
# gVisor machines refuse the device to the sanitizer: that is the machine, not our kernels.
SANITIZER_UNSUPPORTED="Device not supported"
for tool in memcheck racecheck; do
  if [ "$DRY_RUN" = 0 ] && [ ! -x "$SANITIZER" ] && [[ "$SKIP" != *",$tool,"* ]]; then
    record_stage "$tool" unsupported null 0 "" "compute-sanitizer not found (PATH, \$CUDA_HOME/bin)"
    echo "== [$(stamp)] $tool: unsupported, compute-sanitizer not found; going on"
    continue
  fi
  if [ "$tool" = memcheck ]; then
    # Without torch's caching allocator every tensor is its own allocation, so that a read past
    # its end is outside any allocation and reported.
    run_stage memcheck memcheck.log 90 "$SANITIZER_UNSUPPORTED" \
      env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool memcheck --error-exitcode 1 --print-limit 20 \
      "$PYTHON" scripts/gpu_kernels_smoke.py
  else
    run_stage racecheck racecheck.log 90 "$SANITIZER_UNSUPPORTED" \
      "$SANITIZER" --tool racecheck --error-exitcode 1 --print-limit 20 "$PYTHON" scripts/gpu_kernels_smoke.py
  fi
done

run_stage bench bench.log 120 "" \
  "$PYTHON" -m ctc_ext.bench --device cuda --dtype float32,float16 --repeat 7 --json "$OUT_DIR/bench.json"
run_stage torchaudio bench.log 45 "" \
  "$PYTHON" scripts/gpu_bench_torchaudio.py --json "$OUT_DIR/torchaudio.json"

if [ "$DRY_RUN" = 1 ]; then
  STATUS="dry-run"
  MESSAGE="commands printed, none run"
else
  STATUS="passed"
  MESSAGE="no stage failed"
fi
