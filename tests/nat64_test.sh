#!/usr/bin/env bash
# nat64_test.sh BUILD_DIR: a client on an IPv6-only network reaches an
# IPv4-only relay through a real NAT64 (Debian's tayga, prefix
# 64:ff9b::/96), in namespaces the test makes and removes (the
# phone-networks issue, item 2):
#
#   <P>c  client: IPv6 only (2001:db8:64:1::2), default route to the NAT64
#   <P>n  NAT64: tayga on a TUN device, 11.64.0.1 towards the relay
#   <P>r  relay: IPv4 only (11.64.0.2), ternd --listen 0.0.0.0:7400
#
# tayga refuses, under the well-known prefix, IPv4 addresses that are not
# global (RFC 6052 §3.1: private and documentation ranges), so the relay
# has an address of a global block; it exists only inside these
# namespaces, which have no route out.
#
# /etc/netns/<P>c/hosts stands in for DNS64: relay64.test has only the
# synthesized AAAA, and ipv4only.arpa has 64:ff9b::192.0.0.170/171.
#   (a) the client is given the name relay64.test;
#   (b) the client is given the IPv4 literal 11.64.0.2, which it must
#       synthesize with the prefix it learns from ipv4only.arpa (RFC 7050).
# Each exchanges 100 messages both ways with a peer beside the relay; the
# relay must see the client come from tayga's IPv4 pool.
#
# Needs root, network namespaces and tayga; skips (77) without them unless
# CI=true.
set -uo pipefail

BUILD=${1:?usage: nat64_test.sh BUILD_DIR}
TERND=$BUILD/tools/ternd/ternd
TALK=$BUILD/tests/talk_client
KEYGEN=$BUILD/tools/tern-keygen
NSTEST=nat64_test
# shellcheck source=support/nstest.sh
source "$(dirname "$0")/support/nstest.sh"
nstest_need "$TERND" "$TALK" "$KEYGEN"
nstest_can_netns
command -v tayga >/dev/null || skip "needs tayga (scripts/setup.sh installs it)"
[[ -c /dev/net/tun ]] || skip "needs /dev/net/tun"

P="n6$$"
C="${P}c" N="${P}n" R="${P}r"
TMP=$(mktemp -d)
cleanup() {
  local pid ns
  for pid in $(jobs -p); do kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  for ns in "$C" "$N" "$R"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "/etc/netns/$C" "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

set -e
for ns in "$C" "$N" "$R"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add c0 netns "$C" type veth peer name n0 netns "$N"
ip link add n1 netns "$N" type veth peer name r0 netns "$R"
ip -n "$C" addr add 2001:db8:64:1::2/64 dev c0 nodad
ip -n "$N" addr add 2001:db8:64:1::1/64 dev n0 nodad
ip -n "$N" addr add 11.64.0.1/24 dev n1
ip -n "$R" addr add 11.64.0.2/24 dev r0
ip -n "$C" link set c0 up; ip -n "$N" link set n0 up; ip -n "$N" link set n1 up; ip -n "$R" link set r0 up
ip -n "$C" -6 route add default via 2001:db8:64:1::1
ip -n "$R" route add 192.168.255.0/24 via 11.64.0.1
ip netns exec "$N" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
mkdir -p "$TMP/tayga"
cat >"$TMP/tayga.conf" <<EOF2
tun-device t64
ipv4-addr 192.168.255.1
ipv6-addr 2001:db8:64:ff::2
prefix 64:ff9b::/96
dynamic-pool 192.168.255.0/24
data-dir $TMP/tayga
EOF2
ip netns exec "$N" tayga -c "$TMP/tayga.conf" --mktun >"$TMP/mktun.log" 2>&1
ip -n "$N" link set t64 up
ip -n "$N" addr add 192.168.0.1 dev t64
ip -n "$N" addr add 2001:db8:64:ff::1 dev t64
ip -n "$N" route add 64:ff9b::/96 dev t64
ip -n "$N" route add 192.168.255.0/24 dev t64
ip netns exec "$N" tayga -c "$TMP/tayga.conf" -d >"$TMP/tayga.log" 2>&1 &
mkdir -p "/etc/netns/$C"
cat >"/etc/netns/$C/hosts" <<'EOF2'
::1 localhost
64:ff9b::b40:2 relay64.test
64:ff9b::c000:aa ipv4only.arpa
64:ff9b::c000:ab ipv4only.arpa
EOF2
set +e

# The client's namespace really has no IPv4: a datagram to the relay's
# IPv4 address has no route.
if ip netns exec "$C" bash -c 'exec 3>/dev/udp/11.64.0.2/7400' 2>/dev/null; then
  fail "the client's namespace reaches IPv4 directly; the test would prove nothing"
fi

RELAY_KEY=$("$KEYGEN" "$TMP/relay.key" 2>/dev/null)
for k in a b c d; do "$KEYGEN" "$TMP/$k.key" >/dev/null 2>&1; done
ip netns exec "$R" "$TERND" --key "$TMP/relay.key" --open --listen 0.0.0.0:7400 \
  --data-dir "$TMP/data" -v >"$TMP/ternd.log" 2>&1 &
TERND_PID=$!
wait_for "$TMP/ternd.log" listening 10 || { cat "$TMP/ternd.log" >&2; fail "ternd did not start"; exit 1; }

# run CASE RELAY USER PEER: both sides, 2 s at 50/s; checks the summaries.
run() {
  local name=$1 relay=$2 u=$3 p=$4
  ip netns exec "$C" "$TALK" --relay "$relay" --relay-key "$RELAY_KEY" --key "$TMP/$u.key" \
    --user "$u" --peer "$p" --rate 50 --seconds 2 >"$TMP/$u.out" 2>"$TMP/$u.err" &
  local ta=$!
  ip netns exec "$R" "$TALK" --relay 127.0.0.1:7400 --relay-key "$RELAY_KEY" --key "$TMP/$p.key" \
    --user "$p" --peer "$u" --rate 50 --seconds 2 >"$TMP/$p.out" 2>"$TMP/$p.err" &
  local tb=$!
  wait "$ta" "$tb"
  local la lb
  la=$(tail -1 "$TMP/$u.out") lb=$(tail -1 "$TMP/$p.out")
  echo "  $name: $u: $la"
  echo "  $name: $p: $lb"
  [[ $(field "$la" recv) == 100 && $(field "$lb" recv) == 100 ]] || fail "$name: messages lost ($(cat "$TMP/$u.err"))"
  [[ $(field "$la" acked) == 100 && $(field "$lb" acked) == 100 ]] || fail "$name: not all acknowledged"
  [[ $(field "$la" dups) == 0 && $(field "$lb" dups) == 0 ]] || fail "$name: duplicates"
  grep -Eq "user $u connected from 192\.168\.255\.[0-9]+:" "$TMP/ternd.log" ||
    fail "$name: the relay did not see $u come through the NAT64 pool"
}
echo "case a: a name with only a synthesized AAAA"
run a relay64.test:7400 a b
echo "case b: an IPv4 literal, synthesized with the prefix from ipv4only.arpa"
run b 11.64.0.2:7400 c d

kill -TERM "$TERND_PID"; wait "$TERND_PID"
if (( FAILS )); then
  echo "--- ternd"; tail -20 "$TMP/ternd.log"; echo "--- tayga"; tail -20 "$TMP/tayga.log"
  echo "nat64_test: $FAILS failures"; exit 1
fi
echo "nat64_test: PASS"
