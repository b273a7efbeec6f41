#!/usr/bin/env bash
# Installs the build into a temporary prefix, then builds a program against
# it three ways: CMake find_package (shared and static) and pkg-config.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1; src=$2
tmp=$(mktemp -d /tmp/tern-install-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log"
test -f "$tmp/prefix/include/tern/tern.h" || { echo "FAIL: tern.h not installed"; exit 1; }
test -f "$tmp/prefix/include/tern/version.h" || { echo "FAIL: version.h not installed"; exit 1; }
libdir=$(dirname "$(find "$tmp/prefix" -name 'libtern.so' | head -1)")
test -n "$libdir" || { echo "FAIL: libtern.so not installed"; exit 1; }
test -f "$libdir/libtern.a" || { echo "FAIL: libtern.a not installed"; exit 1; }
for tool in ternd tern-keygen tern-chat; do
  test -x "$tmp/prefix/bin/$tool" || { echo "FAIL: $tool not installed"; exit 1; }
done

# CMake package. Sanitizer flags of the outer build must not leak in here.
cmake -S "$src/tests/install" -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
  -DCMAKE_C_FLAGS="${TERN_CONSUMER_CFLAGS:-}" >"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log"; exit 1; }
cmake --build "$tmp/cmake" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
LD_LIBRARY_PATH="$libdir" "$tmp/cmake/consumer_shared"
"$tmp/cmake/consumer_static"

# pkg-config.
export PKG_CONFIG_PATH="$libdir/pkgconfig"
# shellcheck disable=SC2046
cc ${TERN_CONSUMER_CFLAGS:-} -o "$tmp/consumer_pc" "$src/tests/install/consumer.c" \
  $(pkg-config --cflags --libs tern)
LD_LIBRARY_PATH="$libdir" "$tmp/consumer_pc"
echo "install_test: find_package(tern) shared+static and pkg-config all work"
