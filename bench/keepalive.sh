#!/usr/bin/env bash
# keepalive.sh: what keeping an idle link alive costs, measured at a real
# kernel NAT (spec/keepalive.md; bench/README.md, "Keepalive").
#
#   sudo bash bench/keepalive.sh [--nat SECONDS] [--window SECONDS]
#                                [--build DIR] [--out FILE]
#
# Three idle clients, side by side, each behind its own NAT that forgets an
# idle UDP mapping after --nat seconds (default 45), each talking to its own
# relay (namespaces from bench/natns.sh, removed on every exit path):
#   enet      raw ENet with its defaults (enet_idle -> enet_relay): a ping
#             every 500 ms from both sides
#   fixed25   tern with a fixed 25 s keepalive (WireGuard's advice)
#   tern      tern learning the NAT's timeout (the default)
# Once each is settled (connected; tern: done learning), the NAT's nft
# counters count UDP datagrams to and from the relay for --window seconds
# (default 600); the table gives datagrams per hour each way, and tern's
# learning time. Prints the table; --out also writes it to FILE.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=natns.sh
source "$HERE/natns.sh"
NAT=45
WINDOW=600
BUILD=$ROOT/build
OUT=
while [[ $# -gt 0 ]]; do
  case $1 in
    --nat) NAT=$2; shift ;;
    --window) WINDOW=$2; shift ;;
    --build) BUILD=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "keepalive.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $NAT =~ ^[0-9]+$ && $NAT -ge 5 && $WINDOW =~ ^[0-9]+$ && $WINDOW -ge 60 ]] ||
  { echo "keepalive.sh: --nat >= 5 and --window >= 60 seconds" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "keepalive.sh: needs root (namespaces, nftables)" >&2; exit 1; }
command -v nft >/dev/null || { echo "keepalive.sh: needs nft (apt-get install nftables)" >&2; exit 1; }
if [[ ! -x $BUILD/bench/enet_idle || ! -x $BUILD/tools/ternd/ternd ]]; then
  echo "keepalive.sh: building into $BUILD" >&2
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTERN_BUILD_TESTS=OFF >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" >/dev/null
fi
TERND=$BUILD/tools/ternd/ternd
CHAT=$BUILD/tools/tern-chat
KEYGEN=$BUILD/tools/tern-keygen

P="kb$$"
TMP=$(mktemp -d)
cleanup() {
  set +e
  local i
  for i in 1 2 3; do natns_down "$P" "$i"; done
  for pid in $(jobs -p); do kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # FILE REGEX SECONDS
  local end=$(( $(date +%s) + $3 ))
  while (( $(date +%s) <= end )); do
    grep -Eq "$2" "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

RELAY_KEY=$("$KEYGEN" "$TMP/relay.key" 2>/dev/null)
"$KEYGEN" "$TMP/client.key" >/dev/null 2>&1
for i in 1 2 3; do natns_up "$P" "$i" "$NAT" >"$TMP/topo$i.log" 2>&1 || { cat "$TMP/topo$i.log" >&2; exit 1; }; done
LIFE=$(( WINDOW + 30 * NAT + 300 ))

# 1: raw ENet, defaults.
ip netns exec "${P}r1" "$BUILD/bench/enet_relay" --bind 0.0.0.0:7400 --duration "$LIFE" \
  >"$TMP/relay1.log" 2>&1 &
sleep 0.5
ip netns exec "${P}c1" "$BUILD/bench/enet_idle" --relay 10.78.1.2:7400 --duration "$LIFE" \
  >"$TMP/client1.log" 2>&1 &
# 2 and 3: ternd and an idle tern-chat (fixed 25 s, then learning).
tern_case() { # I MODE
  local i=$1
  mkfifo "$TMP/in$i"
  ip netns exec "${P}r$i" "$TERND" --key "$TMP/relay.key" --open --listen 0.0.0.0:7400 \
    --data-dir "$TMP/data$i" >"$TMP/relay$i.log" 2>&1 &
  wait_for "$TMP/relay$i.log" listening 10
  ip netns exec "${P}c$i" "$CHAT" --relay "10.78.$i.2:7400" --relay-key "$RELAY_KEY" \
    --key "$TMP/client.key" --user "idle$i" --state "$TMP/state$i" --network "bench-nat" \
    --keepalive "$2" <"$TMP/in$i" >"$TMP/client$i.out" 2>"$TMP/client$i.log" &
  exec {hold}>"$TMP/in$i"
}
tern_case 2 25000
tern_case 3 learn

echo "keepalive.sh: NAT timeout ${NAT} s, window ${WINDOW} s; waiting for the clients to settle" >&2
wait_for "$TMP/client1.log" "connected" 15 || { echo "keepalive.sh: enet_idle did not connect" >&2; exit 1; }
wait_for "$TMP/client2.log" "connected as" 15 || { echo "keepalive.sh: fixed-25s client did not connect" >&2; exit 1; }
wait_for "$TMP/client3.log" "connected as" 15 || { echo "keepalive.sh: tern client did not connect" >&2; exit 1; }
wait_for "$TMP/client3.log" "keepalive (learned|bad) on" $(( 12 * NAT + 120 )) ||
  { echo "keepalive.sh: tern did not finish learning:" >&2; tail -3 "$TMP/client3.log" >&2; exit 1; }
LEARNED=$(grep -E "keepalive (learned|bad) on" "$TMP/client3.log" | tail -1)
LEARN_PROBE=$(natns_counts "$P" 3) # datagrams of the learning phase (live link and probes)

# The window: reset every counter, wait, read.
for i in 1 2 3; do natns_counts "$P" "$i" >/dev/null; done
echo "keepalive.sh: counting for ${WINDOW} s" >&2
sleep "$WINDOW"
declare -A UP DOWN
for i in 1 2 3; do
  read -r UP[$i] DOWN[$i] _ < <(natns_counts "$P" "$i")
done
for i in 2 3; do
  if grep -q "disconnected" "$TMP/client$i.log"; then
    echo "keepalive.sh: WARNING: client $i lost its link during the run:" >&2
    grep disconnected "$TMP/client$i.log" >&2
  fi
done

per_hour() { awk -v n="$1" -v w="$WINDOW" 'BEGIN { printf "%.0f", n * 3600 / w }'; }
iv=$(sed -E 's/.*every ([0-9]+) ms.*/\1/' <<<"$LEARNED")
lms=$(sed -E 's/.*learned in ([0-9]+) ms.*/\1/' <<<"$LEARNED")
probes=$(sed -E 's/.*, ([0-9]+) probes.*/\1/' <<<"$LEARNED")
{
  echo "Idle link behind a NAT with a ${NAT} s UDP timeout; datagrams counted at the NAT over ${WINDOW} s, per hour."
  echo
  echo "| client | keepalive | up / h | down / h | total / h |"
  echo "|---|---|---|---|---|"
  names=("" "raw ENet, defaults" "tern, fixed 25 s" "tern, learned")
  kas=("" "ENet ping every 500 ms, both sides" "25000 ms" "${iv} ms")
  for i in 1 2 3; do
    echo "| ${names[$i]} | ${kas[$i]} | $(per_hour "${UP[$i]}") | $(per_hour "${DOWN[$i]}") | $(per_hour $(( UP[$i] + DOWN[$i] ))) |"
  done
  echo
  echo "tern learned an interval of ${iv} ms ($(awk -v a="$iv" -v t="$NAT" 'BEGIN { printf "%.2f", a / (t * 1000) }') x the NAT timeout) in $(( lms / 1000 )) s with ${probes} probes;"
  echo "the learning phase (connect to learned, live link and probes) crossed the NAT as $(awk '{ print $1 " datagrams up and " $2 " down" }' <<<"$LEARN_PROBE")."
  echo "Learner: ${LEARNED#tern-chat: }"
} | tee "${OUT:-/dev/null}"
