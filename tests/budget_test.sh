#!/usr/bin/env bash
# Issue 13, finding 4, with real processes: receivers that stop answering
# must not make ternd hold more memory than its delivery budget. One
# budget_client process holds 16 receivers and is stopped (SIGSTOP: their
# ENet answers nothing, as a phone that went dark); a sender then stores
# 16 x 30 messages of 60 KB for them (28 MB). ternd runs twice, side by
# side: without a budget (--deliver-budget 0: each receiver may hold its
# 1 MiB window, and each resend adds what ENet still holds of the last)
# and with --deliver-budget 4 MiB. The test samples ternd's RSS while the
# receivers are stopped and asserts that with the budget it grew by less
# than the budget plus 12 MiB (one 64 KB DELIVER per session past the budget, and
# malloc's and SQLite's own slack), and by less than without it; then the
# receivers are resumed and must get all 480 messages, once and intact.
# Usage: budget_test.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
bin="$build/tools"
client="$build/tests/budget_client"
tmp=$(mktemp -d /tmp/tern-budget-XXXXXX)
pids=()
ternd_pid=
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  [ -n "$ternd_pid" ] && kill -INT "$ternd_pid" 2>/dev/null && wait "$ternd_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- ternd log (last 20 lines)"; tail -20 "$tmp"/ternd*.log; exit 1; }

receivers=16 per=30 size=60000 budget=$((4 << 20)) slack=$((12 << 20))
cd "$tmp"
relay_pub=$("$bin/tern-keygen" relay.key 2>/dev/null)

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# One run: $1 the budget (0: none), $2 a name. Prints "growth KB".
run() {
  local b=$1 name=$2
  rm -f port
  # --send-rate 0: one sender storing 28 MB at once is the load here.
  "$bin/ternd/ternd" --key relay.key --open --listen 127.0.0.1:0 --port-file port \
    --data-dir "data-$name" --no-fsync --send-rate 0 --deliver-budget "$b" 2>"ternd-$name.log" &
  ternd_pid=$!
  for _ in $(seq 200); do [ -s port ] && break; sleep 0.05; done
  [ -s port ] || fail "ternd did not start"
  local port; port=$(cat port)
  "$client" recv 127.0.0.1 "$port" "$relay_pub" "$name" "$receivers" "$per" >"recv-$name.out" 2>"recv-$name.err" &
  local rpid=$!
  pids+=("$rpid")
  for _ in $(seq 200); do grep -q '^READY' "recv-$name.out" 2>/dev/null && break; sleep 0.05; done
  grep -q '^READY' "recv-$name.out" || fail "$name: receivers did not connect: $(cat "recv-$name.err")"
  sleep 0.5
  local base; base=$(rss_kb "$ternd_pid")
  kill -STOP "$rpid"
  "$client" send 127.0.0.1 "$port" "$relay_pub" "$name" "$receivers" "$per" "$size" \
    >"send-$name.out" 2>"send-$name.err" &
  local spid=$!
  pids+=("$spid")
  # While they are stopped (ENet gives up on them after its timeout, at
  # most 10 s: sample the 8 s before that).
  local peak=$base
  for _ in $(seq 80); do
    local r; r=$(rss_kb "$ternd_pid")
    [ "$r" -gt "$peak" ] && peak=$r
    sleep 0.1
  done
  wait "$spid" || fail "$name: the sender did not get all its messages stored: $(cat "send-$name.out" "send-$name.err")"
  kill -CONT "$rpid"
  wait "$rpid" || fail "$name: the receivers did not get everything: $(cat "recv-$name.out" "recv-$name.err")"
  pids=()
  echo "$name: ternd RSS $base KB -> peak $peak KB (+$((peak - base)) KB) while $receivers receivers were stopped; $(tail -1 "recv-$name.out")" >&2
  kill -INT "$ternd_pid"; wait "$ternd_pid" 2>/dev/null || true
  ternd_pid=
  echo $((peak - base))
}

without=$(run 0 nobudget)
with=$(run "$budget" budget)
echo "RSS growth: without a budget $without KB, with --deliver-budget $((budget >> 20)) MiB $with KB"
[ "$with" -lt $(((budget + slack) / 1024)) ] || fail "with the budget ternd grew by $with KB, over $(((budget + slack) / 1024)) KB"
[ "$with" -lt "$without" ] || fail "the budget did not lower the growth ($with KB vs $without KB)"
grep -q "delivery budget reached" ternd-budget.log || fail "ternd did not log reaching the budget"
echo "PASS"
