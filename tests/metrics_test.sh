#!/usr/bin/env bash
# ternd --metrics during a scripted conversation: ternd runs from a config
# file with its metrics on 127.0.0.1, alice writes to bob while he is away,
# bob comes online and gets them, an unknown device is refused; the test
# scrapes /metrics before, during and after with curl, checks that the
# counters moved by what happened, and runs promtool check metrics on every
# scrape. Usage: metrics_test.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
bin="$build/tools"
tmp=$(mktemp -d /tmp/tern-metrics-XXXXXX)
ternd_pid=
cleanup() {
  [ -n "$ternd_pid" ] && kill "$ternd_pid" 2>/dev/null && wait "$ternd_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- ternd log"; cat "$tmp/ternd.log"; exit 1; }

if ! command -v promtool >/dev/null; then
  # scripts/setup.sh installs it (Debian package prometheus).
  [ "${CI:-}" = "true" ] && { echo "FAIL: promtool missing (scripts/setup.sh installs prometheus)"; exit 1; }
  echo "SKIP metrics_test: promtool not installed (apt-get install prometheus)"; exit 77
fi
command -v curl >/dev/null || { echo "FAIL: curl missing (scripts/setup.sh installs it)"; exit 1; }

cd "$tmp"
relay_pub=$("$bin/tern-keygen" relay.key 2>/dev/null)
alice_pub=$("$bin/tern-keygen" alice.key 2>/dev/null)
bob_pub=$("$bin/tern-keygen" bob.key 2>/dev/null)
"$bin/tern-keygen" mallory.key >/dev/null 2>&1
printf '%s alice\n%s bob\n' "$alice_pub" "$bob_pub" >allow.txt
cat >ternd.conf <<EOF
key = relay.key
allow = allow.txt
listen = 127.0.0.1:0
port-file = port
data-dir = data
no-fsync = true
metrics = 127.0.0.1:0
EOF
"$bin/ternd/ternd" --config ternd.conf 2>ternd.log &
ternd_pid=$!
for _ in $(seq 100); do [ -s port ] && break; sleep 0.05; done
[ -s port ] || fail "ternd did not start"
port=$(cat port)
mport=$(sed -n 's|.*metrics on http://127\.0\.0\.1:\([0-9]*\)/metrics.*|\1|p' ternd.log)
[ -n "$mport" ] || fail "ternd did not log its metrics address"
url="http://127.0.0.1:$mport/metrics"

n=0
scrape() { # scrape: fetch, check with promtool, keep as scrape.N
  n=$((n + 1))
  curl -sf --max-time 5 "$url" >"scrape.$n" || fail "curl $url"
  promtool check metrics <"scrape.$n" >"promtool.$n" 2>&1 || { cat "promtool.$n"; fail "promtool check metrics on scrape $n"; }
}
value() { # value FILE METRIC (with labels, as written)
  awk -v m="$2" '$1 == m { print $2; found = 1 } END { if (!found) print "missing" }' "$1"
}
# wait_for METRIC WANT: scrapes until METRIC reads WANT (5 s at most).
wait_for() {
  for _ in $(seq 50); do
    scrape
    [ "$(value "scrape.$n" "$1")" = "$2" ] && return 0
    sleep 0.1
  done
  fail "$1 is $(value "scrape.$n" "$1"), want $2"
}
chat() { # chat NAME [args...]
  local name=$1; shift
  "$bin/tern-chat" --relay 127.0.0.1:"$port" --relay-key "$relay_pub" --key "$name.key" \
    --keepalive off --linger 15 "$@"
}

scrape
before=scrape.$n
for m in tern_relay_messages_stored_total tern_relay_messages_delivered_total \
         tern_relay_handshakes_ok_total tern_relay_peers_connected \
         'tern_relay_handshakes_failed_total{reason="refused"}' tern_relay_store_commit_seconds_count \
         process_cpu_seconds_total process_resident_memory_bytes; do
  [ "$(value "$before" "$m")" != missing ] || fail "$m missing from the first scrape"
done
[ "$(value "$before" tern_relay_messages_stored_total)" = 0 ] || fail "a fresh relay has stored messages"

# 1. alice sends 5 messages to bob, who is away: 5 stored, none delivered.
printf '@bob message %d\n' 1 2 3 4 5 | chat alice >alice.out 2>alice.err
[ "$(grep -c '^sent ' alice.out)" = 5 ] || fail "alice: $(cat alice.out alice.err)"
wait_for tern_relay_messages_stored_total 5
[ "$(value "scrape.$n" tern_relay_messages_delivered_total)" = 0 ] || fail "delivered before bob came"

# 2. bob is online (a scrape sees him connected), gets the 5.
chat bob --expect 5 </dev/null >bob.out 2>bob.err &
bob_pid=$!
wait_for tern_relay_peers_connected 1
wait $bob_pid || fail "bob: $(cat bob.err)"
[ "$(grep -c '^recv alice' bob.out)" = 5 ] || fail "bob got: $(cat bob.out)"
wait_for tern_relay_messages_delivered_total 5

# 3. an unknown device is refused.
echo '@bob let me in' | chat mallory >/dev/null 2>&1 || true
wait_for 'tern_relay_handshakes_failed_total{reason="refused"}' 1
wait_for tern_relay_peers_connected 0
after=scrape.$n

# The counters moved by what happened, and only by that.
[ "$(value "$after" tern_relay_handshakes_ok_total)" = 2 ] || fail "handshakes ok: want 2 (alice, bob), got $(value "$after" tern_relay_handshakes_ok_total)"
commits=$(value "$after" tern_relay_store_commit_seconds_count)
[ "$commits" -ge 2 ] || fail "store commits: $commits, want at least 2 (the store, the delivery)"
[ "$(value "$after" 'tern_relay_store_commit_seconds_bucket{le="+Inf"}')" = "$commits" ] || fail "+Inf bucket != count"
rx=$(value "$after" tern_relay_received_bytes_total); tx=$(value "$after" tern_relay_sent_bytes_total)
[ "$rx" -gt 5 ] && [ "$tx" -gt 5 ] || fail "bytes: received $rx, sent $tx"
scrapes=$(value "$after" ternd_metrics_scrapes_total)
[ "$scrapes" = "$n" ] || fail "ternd counted $scrapes scrapes, the test made $n"

# Other paths and methods are refused.
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$mport/")
[ "$code" = 404 ] || fail "GET / answered $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$url")
[ "$code" = 405 ] || fail "POST answered $code"

# ternd stops cleanly with its metrics thread running (under the
# sanitizers: no leak, no race report).
kill -TERM "$ternd_pid"
rc=0; wait "$ternd_pid" || rc=$?
ternd_pid=
[ "$rc" = 0 ] || fail "ternd exited $rc on SIGTERM"

echo "metrics_test: $n scrapes passed promtool; stored 0 -> $(value "$after" tern_relay_messages_stored_total)," \
     "delivered 0 -> $(value "$after" tern_relay_messages_delivered_total), refused handshakes 0 -> 1," \
     "$commits store commits, $rx bytes in, $tx bytes out"
