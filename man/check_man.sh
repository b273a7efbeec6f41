#!/usr/bin/env bash
# Checks the tools' manual pages: each renders with groff's man macros
# without a single warning (-ww), `man -l` shows it, and its OPTIONS name
# exactly the long options the tool's --help lists (a new option without a
# line in the manual, or a manual line for an option that is gone, fails).
# Usage: check_man.sh SOURCE_DIR PAGE TOOL [PAGE TOOL ...]
# Without groff it skips (77) with a message; under CI=true it fails instead
# if scripts/setup.sh claims to install groff-base.
set -euo pipefail
src=$1; shift
if ! command -v groff >/dev/null; then
  if [ "${CI:-}" = "true" ] && grep -qw 'groff-base' "$src/scripts/setup.sh"; then
    echo "FAIL: groff missing although scripts/setup.sh installs groff-base"; exit 1
  fi
  echo "SKIP: groff is not installed (Debian groff-base; not in scripts/setup.sh): man pages not checked"
  exit 77
fi
tmp=$(mktemp -d /tmp/tern-man-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
status=0
while [ $# -ge 2 ]; do
  page=$1; tool=$2; shift 2
  name=$(basename "$page")
  before=$status
  # Rendering: any warning (or error) on stderr fails.
  groff -man -Tutf8 -ww -z "$page" 2>"$tmp/warn" || { echo "FAIL: $name: groff failed"; status=1; }
  if [ -s "$tmp/warn" ]; then echo "FAIL: $name: groff warns:"; cat "$tmp/warn"; status=1; fi
  if command -v man >/dev/null; then
    MANWIDTH=80 man --warnings -E UTF-8 -l "$page" >"$tmp/text" 2>"$tmp/warn" \
      || { echo "FAIL: $name: man -l failed"; status=1; }
    if [ -s "$tmp/warn" ]; then echo "FAIL: $name: man -l warns:"; cat "$tmp/warn"; status=1; fi
    grep -q 'EXIT STATUS' "$tmp/text" || { echo "FAIL: $name: no EXIT STATUS section"; status=1; }
  fi
  # Options: the --help text against the tags of the page's .TP paragraphs.
  # Lines of --help that define an option start with it ("  -v, --verbose").
  "$tool" --help | sed -nE 's/^ +(-[a-zA-Z], )?(--[a-z][a-z-]*).*/\2/p' | sort -u >"$tmp/help"
  awk '/^\.TP/ { getline; print }' "$page" | grep -oE '\\-\\-[a-z][a-z\\-]*' \
    | sed 's/\\-/-/g' | sort -u >"$tmp/page"
  if ! diff -u "$tmp/help" "$tmp/page" >"$tmp/diff"; then
    echo "FAIL: $name: options differ from '$(basename "$tool") --help' (- help only, + page only):"
    cat "$tmp/diff"; status=1
  fi
  [ "$status" = "$before" ] && echo "ok: $name ($(wc -l <"$tmp/help") options)"
done
exit "$status"
