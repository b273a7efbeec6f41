#!/usr/bin/env bash
# netns.sh: network namespaces wired through linkem TUN devices.
#
#   netns.sh check                 exit 0 if namespaces and TUN can be used here
#   netns.sh ns NAME               create namespace NAME with loopback up
#   netns.sh link NS1 DEV1 NS2 DEV2 NET
#                                  create persistent TUN devices DEV1 in NS1 and
#                                  DEV2 in NS2 with NET.1/24 and NET.2/24 (NET is
#                                  three octets inside 10.0.0.0/8, e.g. 10.201.1);
#                                  one linkem then joins them:
#                                    linkem --a NS1:DEV1 --b NS2:DEV2 ...
#   netns.sh up PREFIX             two namespaces: PREFIXa (client side, lkb =
#                                  10.201.0.1) and PREFIXb (relay side, lka =
#                                  10.201.0.2)
#   netns.sh up3 PREFIX            three namespaces, client A - relay - client B:
#                                  PREFIXa lkb 10.201.1.1 <-> PREFIXb lka 10.201.1.2
#                                  PREFIXc lkb 10.201.2.1 <-> PREFIXb lkc 10.201.2.2
#                                  (one linkem per client link)
#   netns.sh down PREFIX           delete PREFIXa, PREFIXb, PREFIXc (whichever
#                                  exist); deleting a namespace deletes its TUN
#                                  devices. Safe to run any number of times.
#
# The devices are persistent so that linkem can be restarted with other link
# parameters while the topology and the programs in it stay up. Until linkem
# attaches, a device has no carrier and the kernel drops what is routed to it.
# IPv6 is disabled on the devices so router solicitations and MLD reports do
# not show up in linkem's byte counts.
#
# Addresses in 10.0.0.0/8 are only ever configured inside the namespaces made
# here, never in the caller's namespace.
set -euo pipefail

die() {
  echo "netns.sh: $*" >&2
  exit 1
}

cmd_check() {
  [[ $(id -u) -eq 0 ]] || { echo "netns.sh: not root" >&2; return 1; }
  [[ -c /dev/net/tun ]] || { echo "netns.sh: no /dev/net/tun" >&2; return 1; }
  command -v ip >/dev/null || { echo "netns.sh: no ip(8)" >&2; return 1; }
  local probe="lkcheck$$"
  if ! ip netns add "$probe" 2>/dev/null; then
    echo "netns.sh: cannot create a network namespace" >&2
    return 1
  fi
  local ok=0
  ip netns exec "$probe" ip tuntap add dev lkprobe mode tun 2>/dev/null || ok=1
  ip netns del "$probe"
  [[ $ok -eq 0 ]] || echo "netns.sh: cannot create a TUN device in a namespace" >&2
  return $ok
}

cmd_ns() {
  local name=$1
  if ! ip netns list | awk '{print $1}' | grep -qx -- "$name"; then
    ip netns add "$name"
  fi
  ip -n "$name" link set lo up
}

valid_net() {
  [[ $1 =~ ^10\.([0-9]{1,3})\.([0-9]{1,3})$ ]] &&
    ((BASH_REMATCH[1] <= 255 && BASH_REMATCH[2] <= 255))
}

# One side of a link: a persistent TUN device with an address and a route to
# the peer's /24.
tun_side() {
  local ns=$1 dev=$2 addr=$3
  ip netns exec "$ns" ip tuntap add dev "$dev" mode tun
  ip netns exec "$ns" sysctl -qw "net.ipv6.conf.$dev.disable_ipv6=1"
  ip -n "$ns" link set "$dev" txqueuelen 1000
  ip -n "$ns" addr add "$addr/24" dev "$dev"
  ip -n "$ns" link set "$dev" up
}

cmd_link() {
  local ns1=$1 dev1=$2 ns2=$3 dev2=$4 net=$5
  valid_net "$net" || die "NET must look like 10.X.Y, got '$net'"
  ((${#dev1} <= 15 && ${#dev2} <= 15)) || die "device names are at most 15 characters"
  cmd_ns "$ns1"
  cmd_ns "$ns2"
  tun_side "$ns1" "$dev1" "$net.1"
  tun_side "$ns2" "$dev2" "$net.2"
}

cmd_down() {
  local prefix=$1 s
  for s in a b c; do
    if ip netns list | awk '{print $1}' | grep -qx -- "$prefix$s"; then
      ip netns del "$prefix$s" || true
    fi
  done
}

# Builds a topology; on any failure removes what was made so far.
with_cleanup() {
  local prefix=$1
  shift
  trap 'cmd_down "$prefix"' ERR
  "$@"
  trap - ERR
}

up2() {
  cmd_down "$1"
  cmd_link "${1}a" lkb "${1}b" lka 10.201.0
}

up3() {
  cmd_down "$1"
  cmd_link "${1}a" lkb "${1}b" lka 10.201.1
  cmd_link "${1}c" lkb "${1}b" lkc 10.201.2
}

[[ $# -ge 1 ]] || die "usage: netns.sh check|ns|link|up|up3|down ... (see the comment at the top)"
sub=$1
shift
case $sub in
check) cmd_check ;;
ns) [[ $# -eq 1 ]] || die "usage: netns.sh ns NAME"; cmd_ns "$1" ;;
link) [[ $# -eq 5 ]] || die "usage: netns.sh link NS1 DEV1 NS2 DEV2 NET"; cmd_link "$@" ;;
up) [[ $# -eq 1 ]] || die "usage: netns.sh up PREFIX"; with_cleanup "$1" up2 "$1" ;;
up3) [[ $# -eq 1 ]] || die "usage: netns.sh up3 PREFIX"; with_cleanup "$1" up3 "$1" ;;
down) [[ $# -eq 1 ]] || die "usage: netns.sh down PREFIX"; cmd_down "$1" ;;
*) die "unknown command '$sub'" ;;
esac
