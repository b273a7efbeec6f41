#!/usr/bin/env bash
# Runs examples/poll_client against a real ternd on loopback, the way its
# comment says a user would: a fixed message, lines from standard input, and
# a wrong relay key, each with the exit status and output it promises.
# Usage: poll_client_test.sh POLL_CLIENT TERND TERN_KEYGEN
set -euo pipefail
client=$1; ternd=$2; keygen=$3
tmp=$(mktemp -d /tmp/tern-example-XXXXXX)
relay_pid=
cleanup() {
  if [ -n "$relay_pid" ]; then kill "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.out "$tmp"/ternd.log; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; }; done; exit 1; }

relay_key=$("$keygen" "$tmp/relay.key" 2>/dev/null)
"$keygen" "$tmp/alice.key" >/dev/null 2>&1
"$ternd" --key "$tmp/relay.key" --open --listen 127.0.0.1:0 --port-file "$tmp/port" \
  --data-dir "$tmp/data" --no-fsync 2>"$tmp/ternd.log" &
relay_pid=$!
for _ in $(seq 100); do [ -s "$tmp/port" ] && break; sleep 0.1; done
[ -s "$tmp/port" ] || fail "ternd did not start"
port=$(cat "$tmp/port")

# A fixed message: it is stored by the relay (sent), then the client exits 0.
timeout 20 "$client" 127.0.0.1 "$port" "$relay_key" "$tmp/alice.key" bob "hello from the example" \
  >"$tmp/fixed.out" || fail "fixed message: exit $?"
grep -q '^connected as ' "$tmp/fixed.out" || fail "fixed message: no 'connected'"
[ "$(grep -c '^sent [0-9]* to bob$' "$tmp/fixed.out")" = 1 ] || fail "fixed message: not one 'sent'"

# Lines from standard input: one message each, all stored, then exit 0.
printf 'first line\nsecond line\nthird, no newline' |
  timeout 20 "$client" 127.0.0.1 "$port" "$relay_key" "$tmp/alice.key" bob >"$tmp/stdin.out" \
  || fail "stdin: exit $?"
[ "$(grep -c '^sent [0-9]* to bob$' "$tmp/stdin.out")" = 3 ] || fail "stdin: not three 'sent'"

# Pinning another relay's key: refused for good (the relay cannot prove
# it holds that key), exit 1.
wrong=$("$keygen" "$tmp/other-relay.key" 2>/dev/null)
set +e
timeout 20 "$client" 127.0.0.1 "$port" "$wrong" "$tmp/alice.key" bob "never" </dev/null >"$tmp/wrong.out"
rc=$?
set -e
[ "$rc" = 1 ] || fail "wrong relay key: exit $rc, want 1"
grep -q '^disconnected: TERN_ERELAYKEY' "$tmp/wrong.out" || fail "wrong relay key: no TERN_ERELAYKEY"
echo "poll_client: fixed message, 3 lines from stdin and a wrong relay key all behave as documented"
