#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite through ctest.
#   bash scripts/test.sh              plain build in build/
#   bash scripts/test.sh --sanitize   ASan+UBSan build in build-asan/
# Tests that need root and network namespaces skip with a message when run
# without them; with CI=true they must run.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/setup.sh"
dir="$here/build"; extra=()
if [ "${1:-}" = "--sanitize" ]; then
  dir="$here/build-asan"; extra=(-DTERN_SANITIZE=ON)
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi
bash "$here/scripts/build.sh" "$dir" "${extra[@]}"
ctest --test-dir "$dir" --output-on-failure --timeout 900
