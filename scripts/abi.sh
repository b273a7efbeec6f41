#!/usr/bin/env bash
# Checks libtern's exported ABI against the committed baseline abi/libtern.abi
# with libabigail (Debian's abigail-tools), so that an accidental break of
# tern.h's promise (tern.h, "ABI and growing structs") fails the build.
#   bash scripts/abi.sh            build libtern.so (with debug info) in
#                                  build-abi/ and compare with the baseline:
#                                  any function or public struct removed or
#                                  changed (a field's type, place or size)
#                                  fails; functions only added are reported
#                                  and pass.
#   bash scripts/abi.sh --update   rewrite the baseline from this tree. Do it
#                                  deliberately, in the commit that changes the
#                                  ABI, and say why in its message.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir="$here/build-abi"
BUILD_TYPE=Debug TARGETS=tern bash "$here/scripts/build.sh" "$dir" \
  -DTERN_BUILD_TESTS=OFF -DTERN_BUILD_BENCH=OFF >/dev/null
lib="$dir/lib/libtern.so"
# Only what tern.h declares counts; the internal tern__ symbols are hidden anyway.
abidw --headers-dir "$here/include/tern" --drop-private-types --no-corpus-path --no-comp-dir-path \
  --no-show-locs "$lib" | sed "s|$here/||g" >"$dir/libtern.abi" # paths relative to the tree
base="$here/abi/libtern.abi"
if [ "${1:-}" = "--update" ]; then
  cp "$dir/libtern.abi" "$base"
  echo "abi: baseline $base rewritten ($(grep -c '<elf-symbol ' "$base") symbols)"
  exit 0
fi
[ -f "$base" ] || { echo "abi: no baseline at $base; run: bash scripts/abi.sh --update" >&2; exit 1; }
set +e
abidiff --suppressions "$here/abi/growing-structs.abignore" "$base" "$dir/libtern.abi" >"$dir/abidiff.txt" 2>&1
rc=$?
set -e
# abidiff's status is a bit field: 1 error, 2 usage, 4 a change, 8 an incompatible change.
if [ $((rc & 3)) -ne 0 ]; then
  cat "$dir/abidiff.txt" >&2; echo "abi: abidiff failed (status $rc)" >&2; exit 1
fi
# A status of 4 without 8 still covers a public struct whose field changed
# (abidiff calls that an indirect sub-type change): only functions and
# variables added, nothing removed or changed, passes.
summary=$(grep -E '^(Functions|Variables) changes summary' "$dir/abidiff.txt" || true)
broken=$(echo "$summary" | grep -Ev ': 0 Removed, 0 Changed' || true)
if [ $((rc & 8)) -ne 0 ] || [ -n "$broken" ]; then
  cat "$dir/abidiff.txt" >&2
  echo "abi: INCOMPATIBLE change against abi/libtern.abi (above). If it is meant, bump the" >&2
  echo "     soname's major version and run: bash scripts/abi.sh --update" >&2
  exit 1
fi
if [ $((rc & 4)) -ne 0 ]; then
  cat "$dir/abidiff.txt"
  echo "abi: compatible additions (above); record them with: bash scripts/abi.sh --update"
else
  echo "abi: libtern.so matches abi/libtern.abi"
fi
