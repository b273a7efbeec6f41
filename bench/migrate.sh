#!/usr/bin/env bash
# migrate.sh: time from a client's address change to the next delivered
# message, at RTT 100 ms, for three systems side by side in one run
# (the phone-networks issue, item 7; bench/README.md, "Migration"):
#
#   migrate    tern: the app calls tern_client_network_changed(), the
#              session moves without a new handshake (spec/wire.md §11)
#   reconnect  tern as before migration: the link is dropped and rebuilt at
#              once with a full handshake (tern_client_set_network() with a
#              new name, which reconnects at once, without backoff)
#   tcp        the bench's TCP baseline: a new connection, key exchange and
#              BP_HELLO, then the next message
#
#   sudo bash bench/migrate.sh [--build DIR] [--out DIR] [--changes N (15)]
#                              [--interval S (1.5)] [--rate R (50)] [--rtt MS (100)]
#                              [--size B (100)] [--systems "migrate reconnect tcp"]
#
# Topology (namespaces made here and removed on every exit path): the
# client's namespace <P>c has two TUN links to the relay's <P>r, each joined
# by a linkem with RTT/2 each way:
#     <P>c lk0 10.211.1.1 <-> <P>r lka0 10.211.1.2   (path 0)
#     <P>c lk1 10.211.2.1 <-> <P>r lka1 10.211.2.2   (path 1)
# The relay listens on every address and is reached at 10.211.9.1 (on its
# loopback) over one path at a time. A change moves the route to the other
# path, gives the client its address there and deletes the old one, so the
# relay sees a new source address and the old path is dead both ways. The
# mover (migclient --role mover) runs in <P>c and changes paths itself, so
# its clock marks the moment; its peer (--role fixed) runs in the relay's
# namespace, on loopback. Both send 50 messages a second to each other.
#
# Output: OUT/raw/migrate.<system>.{mover,fixed,relay,linkem0,linkem1} and,
# through summarize.py, the "migration" section of OUT/summary.md and its
# records in OUT/summary.json. Without --out: bench/results/<UTC stamp>/.
# Bounded: every process runs under timeout, every wait has a deadline.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
BUILD=$ROOT/build
OUT=
CHANGES=15
INTERVAL=1.5
RATE=50
RTT=100
SIZE=100
SYSTEMS="migrate reconnect tcp"
while [[ $# -gt 0 ]]; do
  case $1 in
    --build) BUILD=$2; shift ;;
    --out) OUT=$2; shift ;;
    --changes) CHANGES=$2; shift ;;
    --interval) INTERVAL=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --rtt) RTT=$2; shift ;;
    --size) SIZE=$2; shift ;;
    --systems) SYSTEMS=$2; shift ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) echo "migrate.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $CHANGES =~ ^[0-9]+$ && $CHANGES -ge 1 && $CHANGES -le 200 ]] || { echo "migrate.sh: --changes 1..200" >&2; exit 2; }

[[ $(id -u) -eq 0 ]] || { echo "migrate.sh: needs root (namespaces, TUN)" >&2; exit 1; }
bash "$HERE/netns.sh" check || { echo "migrate.sh: namespaces/TUN unavailable" >&2; exit 1; }
B=$BUILD/bench
TERND=$BUILD/tools/ternd/ternd
KEYGEN=$BUILD/tools/tern-keygen
for f in "$B/linkem" "$B/migclient" "$B/tcp_relay" "$TERND" "$KEYGEN"; do
  [[ -x $f ]] || { echo "migrate.sh: missing $f (bash scripts/build.sh build)" >&2; exit 1; }
done

STANDALONE=0
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
if [[ -z $OUT ]]; then OUT=$HERE/results/$STAMP; STANDALONE=1; fi
mkdir -p "$OUT/raw"
P=tm$$
NC=${P}c
NR=${P}r
WORK=$(mktemp -d /var/tmp/ternmig.XXXXXX) # on disk: ternd's fsync costs what it costs
PIDS=()

cleanup() {
  set +e
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  for ns in "$NC" "$NR"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_file, stop_pid
# shellcheck source=procs.sh
source "$HERE/procs.sh"

# ---- topology ----------------------------------------------------------------
RELAY=10.211.9.1
bash "$HERE/netns.sh" link "$NC" lk0 "$NR" lka0 10.211.1 >/dev/null
bash "$HERE/netns.sh" link "$NC" lk1 "$NR" lka1 10.211.2 >/dev/null
ip -n "$NR" addr add "$RELAY/32" dev lo
for k in all default lka0 lka1; do ip netns exec "$NR" sysctl -qw "net.ipv4.conf.$k.rp_filter=0"; done
# The client starts on path 0 only.
ip -n "$NC" addr del 10.211.2.1/24 dev lk1
ip -n "$NC" route add "$RELAY/32" dev lk0 src 10.211.1.1
cat >"$WORK/to1" <<EOF
addr add 10.211.2.1/24 dev lk1
route replace $RELAY/32 dev lk1 src 10.211.2.1
addr del 10.211.1.1/24 dev lk0
EOF
cat >"$WORK/to0" <<EOF
addr add 10.211.1.1/24 dev lk0
route replace $RELAY/32 dev lk0 src 10.211.1.1
addr del 10.211.2.1/24 dev lk1
EOF
# Back on path 0 between systems, whatever the last one left.
reset_paths() {
  ip -n "$NC" addr replace 10.211.1.1/24 dev lk0
  ip -n "$NC" route replace "$RELAY/32" dev lk0 src 10.211.1.1
  ip -n "$NC" addr del 10.211.2.1/24 dev lk1 2>/dev/null || true
}

D=$(awk -v r="$RTT" 'BEGIN{printf "%g", r/2}')
RELAY_KEY=$("$KEYGEN" "$WORK/relay.key" 2>/dev/null)
RUN_S=$(awk -v c="$CHANGES" -v i="$INTERVAL" 'BEGIN{printf "%d", 2 + c * i + 40}')

# One system: fresh linkems, relay and clients.
run_system() {
  local sys=$1 raw=$OUT/raw/migrate.$1 t_run=$SECONDS port key=() relay_pid lk0 lk1 fixed_pid mover_pid
  rm -f "$WORK"/ready* "$WORK/port"
  reset_paths
  "$B/linkem" --a "$NC:lk0" --b "$NR:lka0" --delay "$D" --seed 1 --ready-file "$WORK/ready.lk0" \
    >"$raw.linkem0" 2>/dev/null &
  lk0=$!; PIDS+=("$lk0")
  "$B/linkem" --a "$NC:lk1" --b "$NR:lka1" --delay "$D" --seed 2 --ready-file "$WORK/ready.lk1" \
    >"$raw.linkem1" 2>/dev/null &
  lk1=$!; PIDS+=("$lk1")
  if ! wait_file "$WORK/ready.lk0" 5 any || ! wait_file "$WORK/ready.lk1" 5 any; then
    echo "migrate.sh: linkem did not start" >&2
    return 1
  fi
  if [[ $sys == tcp ]]; then
    port=7500
    ip netns exec "$NR" "$B/tcp_relay" --bind 0.0.0.0:$port --duration "$RUN_S" >"$raw.relay" 2>&1 &
    relay_pid=$!; PIDS+=("$relay_pid")
    sleep 0.3
  else
    port=7400; key=(--relay-key "$RELAY_KEY")
    rm -rf "$WORK/data"
    ip netns exec "$NR" "$TERND" --key "$WORK/relay.key" --open --listen 0.0.0.0:$port \
      --data-dir "$WORK/data" --port-file "$WORK/port" >"$raw.relay" 2>&1 &
    relay_pid=$!; PIDS+=("$relay_pid")
    wait_file "$WORK/port" 5 || { echo "migrate.sh: ternd did not start" >&2; return 1; }
  fi
  local pre=m$RANDOM
  timeout "$RUN_S" ip netns exec "$NR" "$B/migclient" --system "$sys" --role fixed --relay 127.0.0.1:$port \
    "${key[@]}" --name "${pre}f" --peer "${pre}m" --rate "$RATE" --size "$SIZE" --timeout $((RUN_S - 5)) \
    --ready-file "$WORK/ready.fixed" >"$raw.fixed" 2>"$raw.fixed.err" &
  fixed_pid=$!; PIDS+=("$fixed_pid")
  wait_file "$WORK/ready.fixed" 15 any || { echo "migrate.sh: $sys: the fixed end did not connect" >&2; return 1; }
  timeout "$RUN_S" ip netns exec "$NC" "$B/migclient" --system "$sys" --role mover --relay "$RELAY:$port" \
    "${key[@]}" --name "${pre}m" --peer "${pre}f" --rate "$RATE" --size "$SIZE" --changes "$CHANGES" \
    --interval "$INTERVAL" --warmup 2 --timeout $((RUN_S - 5)) \
    --switch "ip -batch $WORK/to1" --switch "ip -batch $WORK/to0" \
    >"$raw.mover" 2>"$raw.mover.err" &
  # In the background, so that a signal's trap runs at once, not after it.
  mover_pid=$!; PIDS+=("$mover_pid")
  wait "$mover_pid" || echo "migrate.sh: $sys: the mover failed (see raw/migrate.$sys.mover.err)" >&2
  wait "$fixed_pid" || echo "migrate.sh: $sys: the fixed end failed (see raw/migrate.$sys.fixed.err)" >&2
  stop_pid "$relay_pid"
  stop_pid "$lk0"
  stop_pid "$lk1"
  PIDS=()
  printf 'migrate %-10s %s %3d s\n' "$sys" "$(python3 -c '
import json, statistics, sys
try:
  m = json.loads(open(sys.argv[1]).read().splitlines()[-1])
  f = json.loads(open(sys.argv[2]).read().splitlines()[-1])
  up = [x for x in f["up_ms"] if x is not None]
  print("up p50 %.1f max %.1f ms (%d/%d changes), connects %s, lost %d/%d" % (statistics.median(up), max(up),
        len(up), m["changes"], m.get("connects"), f["lost"], m["lost"]))
except Exception: print("FAILED")' "$raw.mover" "$raw.fixed")" $((SECONDS - t_run))
}

T0=$SECONDS
echo "migration bench: RTT $RTT ms, $CHANGES changes every $INTERVAL s, $RATE msg/s of $SIZE B each way -> $OUT"
for sys in $SYSTEMS; do run_system "$sys"; done
cat >"$OUT/raw/migrate.meta" <<EOF
{"rtt_ms":$RTT,"changes":$CHANGES,"interval_s":$INTERVAL,"rate":$RATE,"size":$SIZE,"systems":"$SYSTEMS"}
EOF
if ((STANDALONE)); then
  cat >"$OUT/meta.json" <<EOF
{"mode":"migrate","stamp":"$STAMP","host":"$(uname -srm)","cpus":$(nproc),"git":"$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"}
EOF
  python3 "$HERE/summarize.py" "$OUT"
  echo "done in $((SECONDS - T0)) s: $OUT/summary.md"
else
  echo "migration bench took $((SECONDS - T0)) s"
fi
