# natns.sh: a client behind a real kernel NAT, in network namespaces.
# Sourced by tests/nat_keepalive_test.sh and bench/keepalive.sh.
#
#   natns_up PREFIX I T_NAT   makes PREFIXc<I> (client, 10.77.<I>.2),
#                             PREFIXn<I> (NAT: 10.77.<I>.1 | 10.78.<I>.1) and
#                             PREFIXr<I> (relay, 10.78.<I>.2); the NAT
#                             masquerades towards the relay and forgets an
#                             idle UDP mapping after T_NAT seconds (both
#                             conntrack UDP timeouts); named nft counters
#                             "up" and "down" count UDP datagrams to and from
#                             the relay's port 7400 in the NAT, and "pingdown"
#                             the relay's own ENet pings (UDP length 16: an
#                             ENet header with sent time and a PING command)
#   natns_counts PREFIX I     prints "UP DOWN PINGDOWN" and resets them
#   natns_down PREFIX I       removes the three namespaces and kills what
#                             runs in them (idempotent)
#
# Only the 10.77/10.78 addresses inside these namespaces are used.

natns_up() {
  local p=$1 i=$2 t=$3 c="$1c$2" n="$1n$2" r="$1r$2" ns
  ip netns add "$c" && ip netns add "$n" && ip netns add "$r" || return 1
  ip link add c0 netns "$c" type veth peer name n0 netns "$n" || return 1
  ip link add n1 netns "$n" type veth peer name r0 netns "$r" || return 1
  ip -n "$c" addr add "10.77.$i.2/24" dev c0
  ip -n "$n" addr add "10.77.$i.1/24" dev n0
  ip -n "$n" addr add "10.78.$i.1/24" dev n1
  ip -n "$r" addr add "10.78.$i.2/24" dev r0
  for ns in "$c" "$n" "$r"; do ip -n "$ns" link set lo up; done
  ip -n "$c" link set c0 up && ip -n "$n" link set n0 up && ip -n "$n" link set n1 up &&
    ip -n "$r" link set r0 up || return 1
  ip -n "$c" route add default via "10.77.$i.1" || return 1
  ip netns exec "$n" sysctl -qw net.ipv4.ip_forward=1 || return 1
  ip netns exec "$n" nft -f - <<EOF2 || return 1
table ip tnat {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "n1" masquerade
  }
}
table ip tcount {
  counter up {}
  counter down {}
  counter pingdown {}
  chain counting {
    type filter hook forward priority filter; policy accept;
    iifname "n0" udp dport 7400 counter name "up"
    iifname "n1" udp sport 7400 counter name "down"
    iifname "n1" udp sport 7400 udp length 16 counter name "pingdown"
  }
}
EOF2
  # The masquerade rule has loaded conntrack: its timeouts exist now.
  ip netns exec "$n" sysctl -qw "net.netfilter.nf_conntrack_udp_timeout=$t" \
    "net.netfilter.nf_conntrack_udp_timeout_stream=$t" || return 1
  local got
  got=$(ip netns exec "$n" sysctl -n net.netfilter.nf_conntrack_udp_timeout \
        net.netfilter.nf_conntrack_udp_timeout_stream | tr '\n' ' ')
  [[ $got == "$t $t " ]] || { echo "conntrack timeouts are '$got', not $t" >&2; return 1; }
}

natns_counts() {
  local n="$1n$2" up down pd
  up=$(ip netns exec "$n" nft reset counter ip tcount up | awk '/packets/ { print $2 }')
  down=$(ip netns exec "$n" nft reset counter ip tcount down | awk '/packets/ { print $2 }')
  pd=$(ip netns exec "$n" nft reset counter ip tcount pingdown | awk '/packets/ { print $2 }')
  echo "${up:-0} ${down:-0} ${pd:-0}"
}

natns_down() {
  local ns pid
  for ns in "$1c$2" "$1n$2" "$1r$2"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  return 0
}
