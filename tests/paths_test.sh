#!/usr/bin/env bash
# paths_test.sh BUILD_DIR: sessions that move between paths, on real kernel
# paths in network namespaces the test makes and removes (spec/wire.md §11;
# the phone-networks issue, item 6). Two talk_clients hold a conversation at
# 50 messages a second each way through ternd while the network changes:
#
#   case 1, a new address: the client's namespace has two veths to the
#     relay's (10.91.N.2 and 10.92.N.2); its address on the first is removed
#     and the relay reached over the second, then the app says
#     tern_client_network_changed(). An attacker in a third namespace
#     (10.93.N.2) then replays 60 datagrams captured on the new path.
#   case 2, a NAT that rebinds: the client is behind a masquerading NAT
#     (random ports) whose conntrack table is flushed mid-conversation; the
#     app is told nothing.
#
# Checked in each case: every message arrives once and in order both ways,
# the session moved (migrations 1, no new handshake, no drop), and messages
# flow again within 150 ms of the change (50 ms spacing of the sender, one
# RTT, and the 50 ms the issue allows, with margin for a loaded CI box).
# For the attacker: the session does not move again, and the attacker's
# address receives at most 3x the bytes it sent.
#
# Needs root, network namespaces, nftables, tcpdump and conntrack. Without
# them it exits 77 (ctest: skipped) with a message, unless CI=true, where
# it fails instead.
set -uo pipefail

BUILD=${1:?usage: paths_test.sh BUILD_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../bench/natns.sh
source "$HERE/../bench/natns.sh"
TERND=$BUILD/tools/ternd/ternd
TALK=$BUILD/tests/talk_client
KEYGEN=$BUILD/tools/tern-keygen
NSTEST=paths_test
# shellcheck source=support/nstest.sh
source "$(dirname "$0")/support/nstest.sh"
nstest_need "$TERND" "$TALK" "$KEYGEN"

nstest_can_netns
for t in nft tcpdump conntrack; do command -v $t >/dev/null || skip "needs $t (scripts/setup.sh installs it)"; done

P="pt$$"
TMP=$(mktemp -d)
cleanup() {
  local pid ns
  for pid in $(jobs -p); do kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  for ns in "${P}c" "${P}r" "${P}a"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  done
  natns_down "$P" 2
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM




# check_talk WHO LINE: every message once, in order, on the same session.
check_talk() {
  local who=$1 line=$2 n
  [[ -n $line ]] || { fail "$who printed no summary"; return; }
  echo "  $who: $line"
  n=$(field "$line" sent)
  [[ $(field "$line" acked) == "$n" ]] || fail "$who: not every message was acknowledged"
  [[ $(field "$line" recv) == 500 ]] || fail "$who: received $(field "$line" recv) of 500"
  [[ $(field "$line" dups) == 0 ]] || fail "$who: duplicates"
  [[ $(field "$line" reordered) == 0 ]] || fail "$who: out of order"
  [[ $(field "$line" connects) == 1 ]] || fail "$who: $(field "$line" connects) sessions (a reconnect)"
  [[ $(field "$line" drops) == 0 ]] || fail "$who: the session dropped"
  local gap
  gap=$(field "$line" gap_after_mark_ms)
  (( gap > 0 && gap <= 150 )) || fail "$who: messages resumed ${gap} ms after the change (want <= 150)"
}

RELAY_KEY=$("$KEYGEN" "$TMP/relay.key" 2>/dev/null) || { echo "paths_test: FAIL: tern-keygen" >&2; exit 1; }
"$KEYGEN" "$TMP/a.key" >/dev/null 2>&1
"$KEYGEN" "$TMP/b.key" >/dev/null 2>&1

# talk NS RELAY USER PEER OUT: a talk_client in the background, 10 s at 50/s.
talk() {
  ip netns exec "$1" "$TALK" --relay "$2" --relay-key "$RELAY_KEY" --key "$TMP/$3.key" \
    --user "$3" --peer "$4" --rate 50 --seconds 10 >"$5" 2>"$5.err" &
}

stopped_line() { grep -E "stopped:|paths:" "$1" | tr '\n' ' '; }

# ---------------------------------------------------------------- case 1
echo "case 1: a new address on a second interface, then an attacker's replays"
C="${P}c" R="${P}r" A="${P}a"
for ns in "$C" "$R" "$A"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add c0 netns "$C" type veth peer name r0 netns "$R"
ip link add c1 netns "$C" type veth peer name r1 netns "$R"
ip link add a0 netns "$A" type veth peer name r2 netns "$R"
ip -n "$C" addr add 10.91.1.2/24 dev c0; ip -n "$R" addr add 10.91.1.1/24 dev r0
ip -n "$C" addr add 10.92.1.2/24 dev c1; ip -n "$R" addr add 10.92.1.1/24 dev r1
ip -n "$A" addr add 10.93.1.2/24 dev a0; ip -n "$R" addr add 10.93.1.1/24 dev r2
for l in c0 c1; do ip -n "$C" link set $l up; done
for l in r0 r1 r2; do ip -n "$R" link set $l up; done
ip -n "$A" link set a0 up
ip -n "$A" route add default via 10.93.1.1
# The relay answers for 10.91.1.1 on any of its interfaces.
ip netns exec "$R" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
  net.ipv4.conf.r0.rp_filter=0 net.ipv4.conf.r1.rp_filter=0 net.ipv4.conf.r2.rp_filter=0
# What the attacker's address sends to and gets from the relay's port.
ip netns exec "$A" nft -f - <<'EOF2'
table ip att {
  counter out {}
  counter in {}
  chain o { type filter hook output priority filter; udp dport 7400 counter name "out"; }
  chain i { type filter hook input priority filter; udp sport 7400 counter name "in"; }
}
EOF2
ip netns exec "$R" "$TERND" --key "$TMP/relay.key" --open --listen '[::]:7400' \
  --data-dir "$TMP/data1" -v >"$TMP/ternd1.log" 2>&1 &
TERND1=$!
wait_for "$TMP/ternd1.log" listening 10 || { cat "$TMP/ternd1.log" >&2; fail "ternd did not start"; exit 1; }
talk "$C" 10.91.1.1:7400 a b "$TMP/a1.out"; TA=$!
talk "$R" 127.0.0.1:7400 b a "$TMP/b1.out"; TB=$!
sleep 4
ip netns exec "$R" tcpdump -i r1 -n -U -c 60 -w "$TMP/cap.pcap" udp and src host 10.92.1.2 \
  >/dev/null 2>&1 &
TD=$!
sleep 0.5
# The change: the old address is gone, the relay is reached over c1.
ip -n "$C" addr flush dev c0
ip -n "$C" route add 10.91.1.1/32 via 10.92.1.1 dev c1
kill -USR2 "$TA" "$TB"; kill -USR1 "$TA"
sleep 2
wait "$TD" 2>/dev/null
# The attacker replays what it captured on the new path, from its own address.
n=0
while read -r hex; do
  [[ -n $hex ]] || continue
  ip netns exec "$A" bash -c "printf '$(sed 's/../\\x&/g' <<<"$hex")' >/dev/udp/10.91.1.1/7400" 2>/dev/null
  n=$((n + 1))
done < <(tcpdump -r "$TMP/cap.pcap" -n -x 2>/dev/null | awk '
  /^[0-9]/ { if (h != "") print substr(h, 57); h = ""; next }
  { for (i = 2; i <= NF; i++) h = h $i }
  END { if (h != "") print substr(h, 57) }')
echo "  attacker replayed $n captured datagrams"
(( n >= 20 )) || fail "the capture had only $n datagrams to replay"
wait "$TA" "$TB"
kill -TERM "$TERND1"; wait "$TERND1"
check_talk a "$(tail -1 "$TMP/a1.out")"
check_talk b "$(tail -1 "$TMP/b1.out")"
# The old socket's datagrams leave from the new address as soon as the
# routing changes: the relay's HINT can move the session before the app
# says anything, and network_changed moves it again to a new socket. Every
# move the relay made is one the client asked for: none is the attacker's.
m=$(field "$(tail -1 "$TMP/a1.out")" migrations)
(( m >= 1 )) || fail "client a never moved"
line=$(stopped_line "$TMP/ternd1.log")
echo "  ternd: $line"
grep -q "stopped: 2 handshakes ok" <<<"$line" || fail "ternd: a new handshake (want 2 in all)"
grep -q "paths: $m sessions moved" <<<"$line" || fail "ternd moved the session other than the $m times client a asked"
grep -q "moved from 10.91.1.2:" "$TMP/ternd1.log" || fail "ternd did not log the move from the old address"
! grep -q "to 10.93.1.2:" "$TMP/ternd1.log" || fail "the session moved to the attacker's address"
sent=$(ip netns exec "$A" nft list counter ip att out | awk '/bytes/ { print $NF }')
got=$(ip netns exec "$A" nft list counter ip att in | awk '/bytes/ { print $NF }')
echo "  attacker: sent $sent bytes, received $got"
(( sent > 0 )) || fail "the attacker sent nothing"
(( got <= 3 * sent )) || fail "the attacker received $got bytes for $sent (over 3x)"

# ---------------------------------------------------------------- case 2
echo "case 2: a NAT that rebinds (conntrack flushed, random ports)"
natns_up "$P" 2 60 >"$TMP/topo2.log" 2>&1 || { cat "$TMP/topo2.log" >&2; fail "set-up"; exit 1; }
N="${P}n2"
ip netns exec "$N" nft flush chain ip tnat post
ip netns exec "$N" nft add rule ip tnat post oifname n1 masquerade fully-random
ip netns exec "${P}r2" "$TERND" --key "$TMP/relay.key" --open --listen '[::]:7400' \
  --data-dir "$TMP/data2" -v >"$TMP/ternd2.log" 2>&1 &
TERND2=$!
wait_for "$TMP/ternd2.log" listening 10 || { cat "$TMP/ternd2.log" >&2; fail "ternd did not start"; exit 1; }
talk "${P}c2" 10.78.2.2:7400 a b "$TMP/a2.out"; TA=$!
talk "${P}r2" 127.0.0.1:7400 b a "$TMP/b2.out"; TB=$!
sleep 4.5
ip netns exec "$N" conntrack -F >/dev/null 2>&1 || fail "conntrack -F"
kill -USR2 "$TA" "$TB"
wait "$TA" "$TB"
kill -TERM "$TERND2"; wait "$TERND2"
check_talk a "$(tail -1 "$TMP/a2.out")"
check_talk b "$(tail -1 "$TMP/b2.out")"
m=$(field "$(tail -1 "$TMP/a2.out")" migrations)
(( m >= 1 )) || fail "client a never moved (the NAT did not rebind, or the HINT did not work)"
line=$(stopped_line "$TMP/ternd2.log")
echo "  ternd: $line"
grep -q "stopped: 2 handshakes ok" <<<"$line" || fail "ternd: a new handshake (want 2 in all)"

if (( FAILS )); then
  echo "--- ternd1.log"; tail -20 "$TMP/ternd1.log"
  echo "--- ternd2.log"; tail -20 "$TMP/ternd2.log"
  echo "paths_test: $FAILS failures"; exit 1
fi
echo "paths_test: PASS"
