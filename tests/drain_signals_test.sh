#!/usr/bin/env bash
# ternd's drain signals: a client that stops answering (SIGSTOPped
# tern-chat) keeps its session from closing, so the drain ends at
# --drain-deadline (ternd exits 0 about then, saying so), and a second
# SIGTERM during a drain ends it at once (exit 0, well before the deadline).
# drain_test covers the drain under load. Usage: drain_signals_test.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
bin="$build/tools"
tmp=$(mktemp -d /tmp/tern-drainsig-XXXXXX)
ternd_pid=
chat_pid=
cleanup() {
  [ -n "$chat_pid" ] && { kill -CONT "$chat_pid" 2>/dev/null; kill "$chat_pid" 2>/dev/null || true; }
  [ -n "$ternd_pid" ] && kill -KILL "$ternd_pid" 2>/dev/null && wait "$ternd_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- ternd log"; cat "$tmp/ternd.log"; exit 1; }
now() { date +%s%N | cut -c1-13; } # ms

cd "$tmp"
relay_pub=$("$bin/tern-keygen" relay.key 2>/dev/null)
"$bin/tern-keygen" carol.key >/dev/null 2>&1

# Starts ternd with --drain-deadline $1 and a tern-chat client, then stops
# the client (SIGSTOP) so that it never acknowledges its disconnect.
start() {
  rm -f port
  "$bin/ternd/ternd" --key relay.key --open --listen 127.0.0.1:0 --port-file port --data-dir data \
    --no-fsync --drain-deadline "$1" 2>ternd.log &
  ternd_pid=$!
  for _ in $(seq 100); do [ -s port ] && break; sleep 0.05; done
  [ -s port ] || fail "ternd did not start"
  rm -f chat.in; mkfifo chat.in
  "$bin/tern-chat" --relay "127.0.0.1:$(cat port)" --relay-key "$relay_pub" \
    --key carol.key --user carol <chat.in >chat.out 2>chat.err &
  chat_pid=$!
  exec 3>chat.in # its input stays open: it stays online
  for _ in $(seq 100); do grep -q "connected as carol" chat.err && break; sleep 0.05; done
  grep -q "connected as carol" chat.err || fail "tern-chat did not connect: $(cat chat.err)"
  kill -STOP "$chat_pid"
}
# Waits for ternd to exit (at most $1 s); sets took: how long it took, ms.
finish() {
  local t0=$2 rc=0
  for _ in $(seq $(($1 * 20))); do kill -0 "$ternd_pid" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$ternd_pid" 2>/dev/null && fail "ternd still running $1 s after SIGTERM"
  wait "$ternd_pid" || rc=$?
  ternd_pid=
  [ "$rc" = 0 ] || fail "ternd exited with status $rc"
  took=$(($(now) - t0))
  kill -CONT "$chat_pid"; kill "$chat_pid" 2>/dev/null || true; wait "$chat_pid" 2>/dev/null || true
  chat_pid=
  exec 3>&-
}

# 1. The deadline: 2 s.
start 2
t0=$(now); kill -TERM "$ternd_pid"
finish 10 "$t0"
grep -q "drain deadline (2 s) passed with 1 peer left; stopping" ternd.log || fail "no deadline line"
[ "$took" -ge 1900 ] && [ "$took" -le 4000 ] || fail "exited $took ms after SIGTERM, deadline 2000"
echo "drain_signals_test: deadline 2 s: ternd exited 0 after $took ms"

# 2. A second SIGTERM ends a drain (deadline 30 s) at once.
start 30
t0=$(now); kill -TERM "$ternd_pid"
sleep 0.5
kill -TERM "$ternd_pid"
finish 10 "$t0"
grep -q "signal 15 while draining: shutting down now" ternd.log || fail "no 'while draining: shutting down now' line"
[ "$took" -le 3000 ] || fail "a second SIGTERM took $took ms"
echo "drain_signals_test: second SIGTERM 0.5 s into a 30 s drain: ternd exited 0 after $took ms"
echo "drain_signals_test: OK"
