#!/usr/bin/env bash
# Configures and builds tern. Usage: scripts/build.sh BUILD_DIR [cmake args...]
# BUILD_TYPE (default RelWithDebInfo) and TERN_WERROR (ON under CI=true) from the environment.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=$1; shift
mkdir -p "$dir"
# Warnings are errors in CI (and when TERN_WERROR=ON is in the environment).
werror=${TERN_WERROR:-OFF}
[ "${CI:-}" = "true" ] && werror=ON
cmake -S "$here" -B "$dir" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" -DTERN_WERROR="$werror" "$@" >"$dir/configure.log" 2>&1 \
  || { cat "$dir/configure.log"; exit 1; }
# TARGETS="a b" builds only those (the demo needs only the tools).
targets=()
for t in ${TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$dir" -j"$(nproc)" "${targets[@]}"
