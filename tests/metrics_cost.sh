#!/usr/bin/env bash
# What scraping costs ternd's service loop: the CPU time of ternd's main
# thread (the relay's loop; /proc/PID/task/PID/schedstat, nanoseconds) per
# message of a conversation (alice sends N messages to bob, who is online),
# without a scraper and with curl hammering /metrics over keep-alive, in
# alternating rounds. A measurement, not a ctest test (the machine's noise
# decides the last digit). Usage: metrics_cost.sh BUILD_DIR [N] [ROUNDS]
set -euo pipefail
build=$(cd "$1" && pwd); n=${2:-2000}; rounds=${3:-3}
bin="$build/tools"
tmp=$(mktemp -d /tmp/tern-mcost-XXXXXX)
ternd_pid=; scraper_pid=
cleanup() {
  [ -n "$scraper_pid" ] && kill -- -"$scraper_pid" 2>/dev/null
  [ -n "$ternd_pid" ] && kill "$ternd_pid" 2>/dev/null && wait "$ternd_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
cd "$tmp"
relay_pub=$("$bin/tern-keygen" relay.key 2>/dev/null)
printf '%s alice\n%s bob\n' "$("$bin/tern-keygen" alice.key 2>/dev/null)" \
  "$("$bin/tern-keygen" bob.key 2>/dev/null)" >allow.txt
"$bin/ternd/ternd" --key relay.key --allow allow.txt --listen 127.0.0.1:0 --port-file port \
  --data-dir data --no-fsync --metrics 127.0.0.1:0 2>ternd.log &
ternd_pid=$!
for _ in $(seq 100); do [ -s port ] && break; sleep 0.05; done
port=$(cat port)
mport=$(sed -n 's|.*metrics on http://127\.0\.0\.1:\([0-9]*\)/metrics.*|\1|p' ternd.log)
url="http://127.0.0.1:$mport/metrics"
curl -sf "$url" >/dev/null || { echo "no metrics at $url"; exit 1; }
loop_ns() { awk '{ print $1 }' "/proc/$ternd_pid/task/$ternd_pid/schedstat"; }
skipped() { curl -s "$url" | awk '$1 == "ternd_metrics_publishes_skipped_total" { print $2 }'; }
scrapes() { curl -s "$url" | awk '$1 == "ternd_metrics_scrapes_total" { print $2 }'; }
urls=(); for _ in $(seq 200); do urls+=("$url"); done
chat() { "$bin/tern-chat" --relay 127.0.0.1:"$port" --relay-key "$relay_pub" --key "$1.key" \
  --keepalive off --linger 60 "${@:2}"; }
seq "$n" | sed 's/^/@bob m/' >input
round() { # round LABEL MODE: none, hammer (curl as fast as it goes), or 10/s
  case $2 in
    hammer) setsid bash -c 'while :; do curl -s "$@" >/dev/null; done' _ "${urls[@]}" & scraper_pid=$! ;;
    10/s) setsid bash -c 'while :; do curl -s "$1" >/dev/null; sleep 0.1; done' _ "$url" & scraper_pid=$! ;;
  esac
  [ "$2" = none ] || sleep 0.3
  local s0 c0 t0 c1 t1 s1
  s0=$(scrapes); c0=$(loop_ns); t0=$(date +%s%N)
  chat bob --expect "$n" </dev/null >bob.out 2>/dev/null & local bob=$!
  chat alice <input >/dev/null 2>&1
  wait $bob
  c1=$(loop_ns); t1=$(date +%s%N); s1=$(scrapes)
  if [ -n "$scraper_pid" ]; then kill -- -"$scraper_pid"; wait "$scraper_pid" 2>/dev/null || true; scraper_pid=; fi
  sleep 0.2
  awk -v l="$1" -v got="$(grep -c '^recv' bob.out)" -v n="$n" -v c="$((c1 - c0))" -v t="$((t1 - t0))" \
      -v s="$((s1 - s0 - 1))" -v sk="$(skipped)" 'BEGIN { printf "%-12s %6d msgs %7.2f s  loop CPU %7.1f us/msg  %6d scrapes (%5.0f/s)  %d skipped publishes so far\n",
      l, got, t / 1e9, c / 1000 / n, s, s / (t / 1e9), sk }'
}
for r in $(seq "$rounds"); do
  round "none #$r" none
  round "10/s #$r" 10/s
  round "hammer #$r" hammer
done
