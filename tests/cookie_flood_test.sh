#!/usr/bin/env bash
# cookie_flood_test.sh BUILD_DIR: spoofed_connects_are_not_amplified
# (issue 13, finding 3, item 6; spec/wire.md §13) on real kernel paths in
# network namespaces the test makes and removes.
#
# A relay namespace (ternd on 10.95.1.1:7400) and a flood namespace
# (10.95.1.2) joined by one veth. spoof_flood sends ENet CONNECTs as fast as
# one raw socket goes, for FLOOD_SECONDS (default 10), from random sources
# in 10.95.128.0/17, an address range that exists nowhere: the relay's
# route sends replies to it back over the veth, where the flood namespace
# drops them. nftables counters in the relay namespace count the IP bytes
# in from and out to those sources. From 2 s into the flood, five real
# clients (talk_client, from 10.95.1.2), one every 1.5 s, connect and send
# one message each.
#
# Passes when: bytes out to the spoofed sources / bytes in from them <= 1.0;
# every reply to them is a COOKIE (50 IP bytes: 28 of header, 22 of
# COOKIE), so ENet never saw one of their CONNECTs and holds no slot for
# them; ternd made exactly five connections with a cookie (the clients');
# every client connected (CONNECT to authenticated session) within 1 s,
# the issue's bound, which holds the worst of the five, not only the median.
# What makes it hold (spec/wire.md §13, docs/socket-layer.md): the
# relay's socket for CONNECTs from strangers is one of two in an
# SO_REUSEPORT group, so the flood never fills the buffer the rest of a
# handshake arrives in, and a client spreads copies of an unanswered
# CONNECT over 150 ms, since the flooded socket drops in bursts. ternd
# runs with --cookies ${COOKIES:-always}; COOKIES=never shows the
# behaviour before cookies (the test then fails).
#
# Needs root, network namespaces and nftables; without them it exits 77
# (ctest: skipped) with a message, unless CI=true, where it fails instead.
set -uo pipefail

BUILD=${1:?usage: cookie_flood_test.sh BUILD_DIR}
TERND=$BUILD/tools/ternd/ternd
TALK=$BUILD/tests/talk_client
FLOOD=$BUILD/tests/spoof_flood
KEYGEN=$BUILD/tools/tern-keygen
SECS=${FLOOD_SECONDS:-10}
NCLIENTS=5
COOKIES=${COOKIES:-always}
NSTEST=cookie_flood_test
# shellcheck source=support/nstest.sh
source "$(dirname "$0")/support/nstest.sh"
nstest_need "$TERND" "$TALK" "$FLOOD" "$KEYGEN"
nstest_can_netns
command -v nft >/dev/null || skip "needs nft (scripts/setup.sh installs it)"

P="cf$$"
F="${P}f" R="${P}r"
TMP=$(mktemp -d)
cleanup() {
  local pid ns
  for pid in $(jobs -p); do kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  for ns in "$F" "$R"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for ns in "$F" "$R"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add f0 netns "$F" type veth peer name r0 netns "$R"
ip -n "$F" addr add 10.95.1.2/24 dev f0; ip -n "$R" addr add 10.95.1.1/24 dev r0
ip -n "$F" link set f0 up; ip -n "$R" link set r0 up
# Replies to the spoofed sources go back over the veth (and die there).
ip -n "$R" route add 10.95.128.0/17 via 10.95.1.2
ip netns exec "$R" nft -f - <<'EOF2'
table ip cookieflood {
  counter spoofed_in {}
  counter spoofed_out {}
  chain i { type filter hook input priority filter; ip saddr 10.95.128.0/17 counter name spoofed_in; }
  chain o { type filter hook output priority filter; ip daddr 10.95.128.0/17 counter name spoofed_out; }
}
EOF2
# The flood namespace neither forwards nor answers them (no ICMP back).
ip netns exec "$F" nft -f - <<'EOF2'
table ip sink {
  chain i { type filter hook prerouting priority raw; ip daddr 10.95.128.0/17 drop; }
}
EOF2

RELAY_KEY=$("$KEYGEN" "$TMP/relay.key" 2>/dev/null) || { echo "$NSTEST: FAIL: tern-keygen" >&2; exit 1; }
for i in $(seq "$NCLIENTS"); do "$KEYGEN" "$TMP/alice$i.key" >/dev/null 2>&1; done
ip netns exec "$R" "$TERND" --key "$TMP/relay.key" --open --listen 10.95.1.1:7400 \
  --cookies "$COOKIES" --data-dir "$TMP/data" >"$TMP/ternd.log" 2>&1 &
TERND_PID=$!
wait_for "$TMP/ternd.log" listening 10 || { cat "$TMP/ternd.log" >&2; fail "ternd did not start"; exit 1; }

# counter NAME FIELD: packets or bytes of a counter in the relay namespace.
counter() {
  ip netns exec "$R" nft list counter ip cookieflood "$1" |
    awk -v f="$2" '{ for (i = 1; i < NF; i++) if ($i == f) print $(i + 1) }'
}

echo "flooding for ${SECS} s (ternd --cookies $COOKIES)"
ip netns exec "$F" "$FLOOD" 10.95.1.1 7400 10.95.128.0 17 "$SECS" >"$TMP/flood.out" 2>&1 &
FLOOD_PID=$!
sleep 2
TALK_PIDS=()
for i in $(seq "$NCLIENTS"); do
  ip netns exec "$F" "$TALK" --relay 10.95.1.1:7400 --relay-key "$RELAY_KEY" --key "$TMP/alice$i.key" \
    --user "alice$i" --peer bob --rate 10 --seconds 0.1 --expect 0 >"$TMP/talk$i.out" 2>"$TMP/talk$i.err" &
  TALK_PIDS+=($!)
  sleep 1.5
done
wait "$FLOOD_PID" || fail "spoof_flood failed: $(cat "$TMP/flood.out")"
for i in $(seq "$NCLIENTS"); do
  wait "${TALK_PIDS[$((i - 1))]}" || fail "talk_client $i failed: $(cat "$TMP/talk$i.err")"
done
# What ENet would still send (VERIFY_CONNECT resends) comes within 17 s of
# a CONNECT; the first resend within about a second, which is enough to see
# whether any happen at all.
sleep 2
kill -INT "$TERND_PID"; wait "$TERND_PID"

echo "  flood: $(cat "$TMP/flood.out")"
MS=()
for i in $(seq "$NCLIENTS"); do
  line=$(tail -1 "$TMP/talk$i.out")
  echo "  client $i: $line"
  ms=$(field "$line" connect_ms)
  [[ -n $ms ]] || fail "client $i printed no summary"
  [[ $(field "$line" acked) == 1 ]] || fail "client $i's message was not acknowledged"
  MS+=("${ms:-99999}")
done
in_p=$(counter spoofed_in packets) in_b=$(counter spoofed_in bytes)
out_p=$(counter spoofed_out packets) out_b=$(counter spoofed_out bytes)
ratio=$(awk -v o="$out_b" -v i="$in_b" 'BEGIN { printf "%.3f", i ? o / i : 0 }')
cookies=$(grep -o "cookies: .*" "$TMP/ternd.log")
echo "  relay in from spoofed sources: $in_p datagrams, $in_b IP bytes"
echo "  relay out to spoofed sources: $out_p datagrams, $out_b IP bytes"
echo "  amplification (IP bytes out / in): $ratio"
echo "  ternd: $cookies"

(( in_p > 1000 )) || fail "the flood did not reach the relay ($in_p datagrams)"
awk -v r="$ratio" 'BEGIN { exit !(r <= 1.0) }' || fail "amplification $ratio > 1.0"
(( out_b == 50 * out_p )) || fail "replies other than COOKIEs went to spoofed sources ($out_b bytes in $out_p datagrams)"
[[ $cookies == *" $NCLIENTS connects with a cookie"* ]] ||
  fail "want exactly $NCLIENTS connections made with a cookie (the clients'): $cookies"
sorted=$(printf '%s\n' "${MS[@]}" | sort -n)
median=$(sed -n "$(( (NCLIENTS + 1) / 2 ))p" <<<"$sorted") worst=$(tail -1 <<<"$sorted")
echo "  connects during the flood (ms): $(tr '\n' ' ' <<<"$sorted")(median $median, worst $worst)"
(( worst < 1000 )) || fail "a client connected after ${worst} ms during the flood (want < 1000)"

if (( FAILS )); then
  echo "--- ternd.log"; tail -20 "$TMP/ternd.log"
  echo "--- talk*.err"; cat "$TMP"/talk*.err
  echo "$NSTEST: $FAILS failures"; exit 1
fi
echo "$NSTEST: PASS"
