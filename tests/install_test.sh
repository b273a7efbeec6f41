#!/usr/bin/env bash
# Installs the build into a temporary prefix, runs the installed tools from
# there and checks the man pages, then builds a program against it three
# ways (CMake find_package shared and static, pkg-config) and examples/.
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
for tool in ternd tern-keygen tern-chat tern-token; do
  bin=$tmp/prefix/bin/$tool
  test -x "$bin" || { echo "FAIL: $tool not installed"; exit 1; }
  # It runs from this custom prefix with no LD_LIBRARY_PATH (RUNPATH
  # relative to the binary), with the libtern of this prefix, not one
  # found elsewhere, and says which version it is.
  readelf -d "$bin" | grep -q 'RUNPATH.*\[\$ORIGIN/' \
    || { echo "FAIL: $tool has no \$ORIGIN RUNPATH: $(readelf -d "$bin" | grep -E 'R(UN)?PATH')"; exit 1; }
  lib=$(env -u LD_LIBRARY_PATH ldd "$bin" | awk '$1 ~ /^libtern\.so/ { print $3 }')
  [ -n "$lib" ] && [ "$(dirname "$(realpath "$lib")")" = "$(realpath "$libdir")" ] \
    || { echo "FAIL: installed $tool finds libtern at '$lib', not in $libdir"; exit 1; }
  out=$(env -u LD_LIBRARY_PATH "$bin" --version 2>&1) \
    || { echo "FAIL: installed $tool does not run: $out"; exit 1; }
  case "$out" in "$tool "*) ;; *) echo "FAIL: $tool --version said: $out"; exit 1 ;; esac
  out=$(env -u LD_LIBRARY_PATH "$bin" --help 2>&1) || { echo "FAIL: $tool --help failed: $out"; exit 1; }
  case "$out" in "usage: $tool "*) ;; *) echo "FAIL: $tool --help said: $out"; exit 1 ;; esac
done

# The manual pages, with the version filled in, where man(1) looks for them.
for page in man1/tern-chat.1 man1/tern-keygen.1 man1/tern-token.1 man8/ternd.8; do
  f=$tmp/prefix/share/man/$page
  test -s "$f" || { echo "FAIL: man page $page not installed"; exit 1; }
  grep -q '^\.TH .*"tern [0-9][0-9.]*"' "$f" || { echo "FAIL: $page: no version in .TH: $(grep '^\.TH' "$f")"; exit 1; }
done

# Test-only code stays out of what is shipped: the deliberate faults of the
# simulation and the failure tests are compiled into tern_internal only
# (lib/CMakeLists.txt). Their symbols are named *_fault* or *_hook_*; a
# symbol table that names one means a test hook was shipped.
for f in "$libdir/libtern.so" "$libdir/libtern.a" "$tmp/prefix/bin/ternd"; do
  hooks=$( { nm "$f" 2>/dev/null; nm -D "$f" 2>/dev/null; } | awk '{print $NF}' | grep -E '^tern_.*_(fault|hook_)' | sort -u || true)
  if [ -n "$hooks" ]; then echo "FAIL: $f ships fault hooks: $hooks"; exit 1; fi
done
# The check can fail: the test build's library has them.
internal=$(find "$build" -name 'libtern_internal.a' | head -1)
if [ -n "$internal" ] && [ -z "$(nm "$internal" | awk '{print $NF}' | grep -E '(^|_)fault' || true)" ]; then
  echo "FAIL: the fault-hook check found none in the test library either; is it looking right?"; exit 1
fi

# CMake package. Sanitizer flags of the outer build must not leak in here.
cmake -S "$src/tests/install" -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
  -DCMAKE_C_FLAGS="${TERN_CONSUMER_CFLAGS:-}" >"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log"; exit 1; }
cmake --build "$tmp/cmake" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
LD_LIBRARY_PATH="$libdir" "$tmp/cmake/consumer_shared"
"$tmp/cmake/consumer_static"

# The installed header compiles cleanly as strict C11 and as C++ (an app may
# include it from C++), with warnings as errors.
printf '#include <tern/tern.h>\nint main(void) { tern_client_config c; tern_client_config_default(&c); return c.struct_size == 0; }\n' >"$tmp/hdr.c"
cc -std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"$tmp/prefix/include" "$tmp/hdr.c" \
  || { echo "FAIL: tern.h is not clean C11 (-Wpedantic)"; exit 1; }
c++ -x c++ -std=c++11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"$tmp/prefix/include" "$tmp/hdr.c" \
  || { echo "FAIL: tern.h does not compile as C++"; exit 1; }

# examples/ builds on its own against the installed package, as an app
# would, and its chat runs (relay and two clients on loopback).
cmake -S "$src/examples" -B "$tmp/examples" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
  -DCMAKE_C_FLAGS="${TERN_CONSUMER_CFLAGS:-}" >"$tmp/examples.log" 2>&1 || { cat "$tmp/examples.log"; exit 1; }
cmake --build "$tmp/examples" >>"$tmp/examples.log" 2>&1 || { cat "$tmp/examples.log"; exit 1; }
LD_LIBRARY_PATH="$libdir" timeout 30 "$tmp/examples/chat" >"$tmp/chat.out" \
  || { echo "FAIL: examples/chat built against the install"; cat "$tmp/chat.out"; exit 1; }

# pkg-config.
export PKG_CONFIG_PATH="$libdir/pkgconfig"
# shellcheck disable=SC2046
cc ${TERN_CONSUMER_CFLAGS:-} -o "$tmp/consumer_pc" "$src/tests/install/consumer.c" \
  $(pkg-config --cflags --libs tern)
LD_LIBRARY_PATH="$libdir" "$tmp/consumer_pc"
echo "install_test: tools run from a custom prefix (RUNPATH) with --version and --help; man pages installed;" \
  "find_package(tern) shared+static, examples/ and pkg-config all work; tern.h is clean C11 and C++; no fault hooks shipped"
