#!/usr/bin/env bash
# The load issue's chaos case: ternd is SIGKILLed three times while it is
# saturated, and nothing it acknowledged is lost. tern-load (bench/, the
# public API) drives 8 sender/receiver pairs as fast as their windows let
# them (64 messages each not yet acknowledged) through ternd with its
# default durability (fsync per group commit); while they do, ternd is
# killed with SIGKILL and started again on the same port and store, three
# times. tern-load's clients keep their outboxes in memory (their processes
# live on), reconnect, and resend what was not acknowledged. The test
# passes when tern-load reports, after its drain, every message sent
# delivered (lost 0: a message the relay acknowledged and then lost would
# be missing) and none twice (dups 0), and ternd was busy before the first
# kill. About 40 s.
# Usage: saturated_chaos_test.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
load="$build/bench/tern-load"
if [ ! -x "$load" ]; then
  echo "SKIP: $load is not built (tern-load needs Linux and TERN_POLLER=epoll)"
  exit 77
fi
bin="$build/tools"
tmp=$(mktemp -d /tmp/tern-satchaos-XXXXXX)
ternd_pid= load_pid=
cleanup() {
  [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
  [ -n "$ternd_pid" ] && kill -9 "$ternd_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- ternd logs (last 20 lines)"; tail -20 "$tmp"/ternd*.log; echo "--- tern-load"; tail -20 "$tmp/load.err"; exit 1; }

cd "$tmp"
relay_pub=$("$bin/tern-keygen" relay.key 2>/dev/null)
starts=0
start_ternd() { # $1: the listen address
  starts=$((starts + 1))
  rm -f port
  # --send-rate 0: each tern-load sender is one device sending thousands a
  # second, far past the per-device default meant for people.
  "$bin/ternd/ternd" --key relay.key --open --listen "$1" --port-file port --data-dir data \
    --send-rate 0 -q 2>"ternd$starts.log" &
  ternd_pid=$!
  for _ in $(seq 200); do [ -s port ] && return 0; kill -0 "$ternd_pid" 2>/dev/null || break; sleep 0.05; done
  return 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start_ternd 127.0.0.1:0 || fail "ternd did not start"
port=$(cat port)
"$load" --relay "127.0.0.1:$port" --relay-key "$relay_pub" --pairs 8 --window 64 --rate 0 \
  --duration 14 --drain 40 >load.json 2>load.err &
load_pid=$!

sleep 2
t0=$(cpu_ticks "$ternd_pid")
sleep 1
busy=$(( $(cpu_ticks "$ternd_pid") - t0 ))
hz=$(getconf CLK_TCK)
echo "ternd before the first kill: $((100 * busy / hz)) % of a core"
[ $((100 * busy / hz)) -ge 40 ] || fail "ternd was not busy ($((100 * busy / hz)) % of a core): not a saturated relay"

kills=0
for gap in 1.5 3.0 3.5; do
  sleep "$gap"
  kill -9 "$ternd_pid"
  wait "$ternd_pid" 2>/dev/null || true
  kills=$((kills + 1))
  sleep 0.$((RANDOM % 3))
  # The port may be held for a moment after the kill: try again.
  ok=0
  for _ in 1 2 3 4 5; do
    if start_ternd "127.0.0.1:$port"; then ok=1; break; fi
    sleep 0.2
  done
  [ $ok -eq 1 ] || fail "ternd did not start again on port $port"
done

rc=0
wait "$load_pid" || rc=$?
load_pid=
line=$(tail -1 load.json)
[ -n "$line" ] || fail "tern-load printed no result (exit $rc)"
read -r delivered lost dups reconnects sent < <(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
print(r["delivered"], r["lost"], r["dups"], r["reconnects"], r["sent"])' "$line") ||
  fail "tern-load's result is not what this test reads: $line"
echo "saturated chaos: $sent messages sent, $delivered delivered, ternd SIGKILLed $kills times while saturated, $reconnects reconnects, lost $lost, duplicated $dups"
[ "$lost" -eq 0 ] || fail "$lost messages were never delivered"
[ "$dups" -eq 0 ] || fail "$dups messages were delivered twice"
[ "$delivered" -gt 10000 ] || fail "only $delivered messages delivered: the relay was not under load"
[ "$rc" -eq 0 ] || fail "tern-load exited $rc"
echo "PASS"
