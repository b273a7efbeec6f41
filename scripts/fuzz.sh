#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for SECONDS (default 20).
#   bash scripts/fuzz.sh [SECONDS]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-20}
bash "$here/scripts/setup.sh"
CC=clang bash "$here/scripts/build.sh" "$here/build-fuzz" -DTERN_FUZZ=ON -DTERN_BUILD_BENCH=OFF \
  -DTERN_FUZZ_SECONDS="$secs"
ctest --test-dir "$here/build-fuzz" --output-on-failure -R '^fuzz_'
