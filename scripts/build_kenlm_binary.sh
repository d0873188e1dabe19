#!/usr/bin/env bash
# Builds KenLM's build_binary (ARPA -> KenLM binary file) from the kenlm sdist, the one tool pip's
# kenlm package lacks, so that binary files can be made and tested.  Prints the tool's path.
#
#   scripts/build_kenlm_binary.sh [--no-download]
#
# - The sdist is that of the kenlm version installed in the venv (.venv, or CTC_EXT_VENV), fetched
#   with `pip download` into $VENV/kenlm-tools/ (CTC_EXT_KENLM_TOOLS overrides the folder);
#   --no-download builds only from an sdist already there (exit status 3 when there is none).
# - Only what build_binary needs is compiled (util/, util/double-conversion/, lm/ without the
#   tests and other mains; no Boost, no compressed ARPA), at -O1: the tool runs once per file.
# - Nothing is done when the tool for that version is built already.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CTC_EXT_VENV:-$ROOT/.venv}"
TOOLS="${CTC_EXT_KENLM_TOOLS:-$VENV/kenlm-tools}"
download=1
[ "${1:-}" = "--no-download" ] && download=0

if ! version="$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("kenlm"))' 2>/dev/null)"; then
  echo "kenlm is not installed in $VENV (pip install kenlm)" >&2
  exit 2
fi
tool="$TOOLS/kenlm-$version/bin/build_binary"
if [ -x "$tool" ]; then
  echo "$tool"
  exit 0
fi
mkdir -p "$TOOLS"
echo "building KenLM's build_binary $version in $TOOLS (once)" >&2
sdist="$TOOLS/kenlm-$version.tar.gz"
if [ ! -f "$sdist" ]; then
  if [ "$download" = 0 ]; then
    echo "no kenlm $version sdist in $TOOLS (run scripts/build_kenlm_binary.sh to fetch it)" >&2
    exit 3
  fi
  "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-binary kenlm --no-deps --no-build-isolation \
    -d "$TOOLS" "kenlm==$version" >&2
fi
src="$TOOLS/kenlm-$version"
rm -rf "$src.partial"
mkdir -p "$src.partial"
tar -xzf "$sdist" -C "$src.partial" --strip-components=1
start=$(date +%s)
cd "$src.partial"
# KenLM's own recipe (compile_query_only.sh): every .cc of these folders but the tests and mains.
sources=()
for file in util/double-conversion/*.cc util/*.cc lm/*.cc; do
  case "$file" in *test.cc | *main.cc) continue ;; esac
  sources+=("$file")
done
flags=(-I. -O1 -DNDEBUG -DKENLM_MAX_ORDER=6 -w)
printf '%s\n' "${sources[@]}" |
  xargs -P "$(nproc)" -I{} sh -c 'file=$1; shift; exec "$0" "$@" -c "$file" -o "${file%.cc}.o"' \
    "${CXX:-g++}" {} "${flags[@]}"
mkdir -p bin
"${CXX:-g++}" "${flags[@]}" lm/build_binary_main.cc "${sources[@]/%.cc/.o}" -o bin/build_binary -lrt -lpthread
cd "$TOOLS"
rm -rf "$src"
mv "$src.partial" "$src"
echo "built $tool in $(($(date +%s) - start)) s" >&2
echo "$tool"
