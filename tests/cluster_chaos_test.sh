#!/usr/bin/env bash
# The cluster's chaos test (issue 16): three NATS JetStream nodes (one R3
# stream) and three ternd relays on it, with tern-load's senders on one
# relay and their receivers on another, while
#   - a relay is SIGKILLed mid-load (its clients reconnect to another relay
#     from their endpoint lists) and started again (it reads the log),
#   - a NATS node is SIGKILLed and started again on its store,
#   - a NATS node is cut off from the others (nftables drops everything in
#     its namespace) and then let back in.
# The relays snapshot the store every 500 entries and compact the log
# (spec/store.md, "Compaction"), so relay 1 restarts from a snapshot (if
# one was written before it: a slow machine makes bigger rounds, so fewer
# entries).
# It passes when tern-load reports, after its drain, every message sent
# delivered (lost 0), none twice (dups 0), each pair's in order
# (reordered 0), the clients of the killed relay reconnected, and the
# relays whose NATS server was killed or cut off noticed it.
#
# Each NATS node runs in a network namespace of its own (10.99.0.N on a
# bridge in a hub namespace, where the relays and tern-load run on
# loopback), so that a partition is one node's network going away. The
# test creates the namespaces and removes them. Root only; about 60 s.
# Usage: cluster_chaos_test.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
load="$build/bench/tern-load"
bin="$build/tools"
skip() {
  if [ "${CI:-}" = "true" ]; then echo "FAIL (CI must run this): $*"; exit 1; fi
  echo "SKIP: $*"; exit 77
}
[ "$(id -u)" -eq 0 ] || skip "needs root for network namespaces"
# tern-load is built on epoll only: the poll() build skips this test (its
# relays' cluster path runs in cluster_relay_test there).
[ -x "$load" ] || { echo "SKIP: $load is not built (tern-load needs Linux and TERN_POLLER=epoll)"; exit 77; }
command -v nats-server >/dev/null || skip "nats-server is not installed (scripts/setup.sh installs it)"
command -v nft >/dev/null || skip "nft is not installed (scripts/setup.sh installs nftables)"
"$bin/ternd/ternd" --version | grep -q "cluster store" || skip "ternd was built without the cluster store"

tag=tcc$$
hub=$tag-hub
tmp=$(mktemp -d /tmp/tern-cchaos-XXXXXX)
declare -A nats_pid relay_pid
load_pid=
cleanup() {
  [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
  for p in "${relay_pid[@]}" "${nats_pid[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in 1 2 3; do ip netns del "$tag-n$n" 2>/dev/null || true; done
  ip netns del "$hub" 2>/dev/null || true
  if [ -n "${TERN_KEEP:-}" ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
# Each relay's cluster counters (ternctl stats), one line each.
relay_stats() {
  local i
  for i in 1 2 3; do
    [ -S "$tmp/admin$i.sock" ] || continue
    echo "  relay $i: $("$bin/ternctl" --socket "$tmp/admin$i.sock" --timeout 2 stats 2>&1 |
      awk '/^(cluster_|messages_(stored|delivered|busy|out_of_order|stale)|store_errors|peers_connected)/ {printf "%s=%s ", $1, $2}')"
  done
}
# The relays' log positions, "P1 P2 P3" (ternctl stats).
positions() {
  local i out=
  for i in 1 2 3; do
    out="$out $("$bin/ternctl" --socket "$tmp/admin$i.sock" --timeout 2 stats 2>/dev/null |
      awk '$1 == "cluster_position" {print $2}')"
  done
  echo $out
}
# The replicas' audit (audit=100: each relay logs its replica's digest at
# every 100th log entry): replicas that applied the same entries hold the
# same rows. A relay that went back to a snapshot (it had taken entries
# the log does not have from entry X on: spec/store.md) voids the digests
# it logged from X on; the ones it logs again replace them. Prints "P
# digest relays" for each position where two relays differ, the first
# ones first.
audit_diff() {
  local i
  for i in 1 2 3; do
    { grep -o "replica at log entry [0-9]* has digest [0-9a-f]*\|digests it logged from log entry [0-9]*" \
        "$tmp/relay$i.log" 2>/dev/null || true; } |
      awk -v r="$i" '
        /has digest/ { d[$5] = $8 }                  # "replica at log entry P has digest D"
        /logged from/ { for (p in d) if (p + 0 >= $NF + 0) delete d[p] } # "... logged from log entry X"
        END { for (p in d) print p, d[p], r }'
  done | sort -n -k1,1 -s | awk '
    { if (!($1 in d)) { d[$1] = $2; who[$1] = $3; order[n++] = $1 }
      else if (d[$1] != $2 && !($1 in bad)) { bad[$1] = "relay " who[$1] " " d[$1] ", relay " $3 " " $2 } }
    END { for (k = 0; k < n; k++) if (order[k] in bad) print order[k] ": " bad[order[k]] }'
}
fail() {
  echo "FAIL: $*"
  relay_stats
  # What the cluster store said, whole (the error lines are rate-limited),
  # then each log's end: enough to tell a stalled relay from a stalled client.
  for f in "$tmp"/relay*.log; do
    echo "--- $(basename "$f"): cluster store lines (last 40, refusals and audit apart)"
    grep "cluster store" "$f" | grep -v "refused: its\|cluster store: audit:" | tail -40
    echo "--- $(basename "$f") (last 15 lines, audit apart)"; grep -v "cluster store: audit:" "$f" | tail -15
  done
  # Every replica refuses the same entries (a refused entry is one whose
  # calls answer differently on the state every replica meets it in); one
  # that refuses others' has a replica of its own. Which, if any:
  for i in 1 2 3; do
    { grep -o "log entry [0-9]*.* refused" "$tmp/relay$i.log" 2>/dev/null || true; } | awk '{print $3}' | sort -u >"$tmp/refused$i"
  done
  for i in 1 2 3; do
    for j in 1 2 3; do
      [ "$i" = "$j" ] && continue
      only=$(comm -23 "$tmp/refused$i" "$tmp/refused$j" | head -20 | tr '\n' ' ' || true)
      [ -n "$only" ] && echo "--- log entries relay $i refused and relay $j did not (first 20): $only"
    done
  done
  diff=$(audit_diff | head -5)
  if [ -n "$diff" ]; then
    echo "--- replicas that differ (audit: log entry: relay digest, relay digest; first 5):"
    echo "$diff"
    # The entries before the first differing audit point, where two relays'
    # traces disagree (applied or refused, and who wrote it).
    local upto=${diff%%:*} i
    for i in 1 2 3; do
      { grep -o "audit: entry [0-9]* [a-z]*, .*, writer [^,]*" "$tmp/relay$i.log" 2>/dev/null || true; } |
        awk -v r="$i" -v hi="$upto" '$3 > hi - 100 && $3 <= hi {print $3, $4, $NF, r, $0}'
    done | sort -n -k1,1 -s | awk '
      { k = $1; v = $2 " " $3; has[k, $4] = 1
        if (!($4 in lo) || k < lo[$4]) lo[$4] = k
        if (k > hi[$4]) hi[$4] = k
        if (!(k in first)) { first[k] = v; line[k] = $0; order[n++] = k }
        else if (first[k] != v && !(k in bad)) bad[k] = line[k] "\n    " $0 }
      END { for (j = 0; j < n; j++) {
              k = order[j]
              for (r = 1; r <= 3; r++)
                if ((r in lo) && k > lo[r] && k < hi[r] && !((k, r) in has) && !(k in bad))
                  bad[k] = line[k] "\n    relay " r " never took entry " k
            }
            for (j = 0; j < n; j++) if (order[j] in bad) { print "    " bad[order[j]]; if (++m == 20) break }
            if (!m) print "    (none: the same verdicts on the same writers'"'"' entries)" }' |
      sed '1i --- entries up to it that relays took differently (seq verdict writer relay: trace; first 20):'
  fi
  for f in "$tmp"/nats*.log; do echo "--- $(basename "$f") (last 12 lines)"; tail -12 "$f"; done
  echo "--- tern-load"; tail -20 "$tmp/load.err" 2>/dev/null; tail -1 "$tmp/load.json" 2>/dev/null
  exit 1
}

# The network: a bridge in the hub namespace, one veth to each node's.
ip netns add "$hub"
ip -n "$hub" link set lo up
ip -n "$hub" link add br0 type bridge
ip -n "$hub" addr add 10.99.0.100/24 dev br0
ip -n "$hub" link set br0 up
for n in 1 2 3; do
  ns=$tag-n$n
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "v$n" netns "$ns" type veth peer name "h$n" netns "$hub"
  ip -n "$hub" link set "h$n" master br0 up
  ip -n "$ns" addr add "10.99.0.$n/24" dev "v$n"
  ip -n "$ns" link set "v$n" up
done

routes() { # the other nodes' cluster URLs
  local out= m
  for m in 1 2 3; do [ "$m" = "$1" ] || out="$out${out:+,}nats://10.99.0.$m:6222"; done
  echo "$out"
}
start_nats() { # $1: node number; its store survives a restart
  local n=$1
  mkdir -p "$tmp/js$n"
  ip netns exec "$tag-n$n" nats-server -n "n$n" -a "10.99.0.$n" -p 4222 -js -sd "$tmp/js$n" \
    --cluster_name tern --cluster "nats://10.99.0.$n:6222" --routes "$(routes "$n")" \
    >>"$tmp/nats$n.log" 2>&1 &
  nats_pid[$n]=$!
}
for n in 1 2 3; do start_nats "$n"; done
# JetStream is ready when the cluster has elected its meta leader.
for _ in $(seq 200); do grep -q "JetStream cluster new metadata leader\|Self is new JetStream cluster metadata leader" "$tmp"/nats*.log 2>/dev/null && break; sleep 0.1; done
grep -q "metadata leader" "$tmp"/nats*.log || fail "the NATS cluster elected no JetStream leader"

cd "$tmp"
relay_pub=$("$bin/tern-keygen" relay.key 2>/dev/null)
start_relay() { # $1: relay number (port 1740N in the hub)
  local i=$1
  # Relay i tries NATS node i first: the node kill and the partition each
  # take one relay's server away.
  local store="nats://10.99.0.$i:4222" m
  for m in 1 2 3; do [ "$m" = "$i" ] || store="$store,nats://10.99.0.$m:4222"; done
  # One key for the three: to a client they are one relay (its endpoints).
  ip netns exec "$hub" "$bin/ternd/ternd" --key relay.key --open --listen "127.0.0.1:1740$i" \
    --data-dir "data$i" --store "$store?snapshot=500&audit=100" --send-rate 0 \
    --admin-socket "$tmp/admin$i.sock" >>"relay$i.log" 2>&1 &
  relay_pid[$i]=$!
  for _ in $(seq 300); do
    grep -q "listening on" "relay$i.log" 2>/dev/null && return 0
    kill -0 "${relay_pid[$i]}" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
for i in 1 2 3; do start_relay "$i" || fail "relay $i did not start"; done
grep -q "created stream TERN (R3" relay*.log || fail "no relay created an R3 stream"

# Senders try relay 1 first, then 3, then 2; receivers 2, then 3, then 1.
ip netns exec "$hub" "$load" --relay "127.0.0.1:17401,127.0.0.1:17403,127.0.0.1:17402" \
  --recv-relay "127.0.0.1:17402,127.0.0.1:17403,127.0.0.1:17401" --relay-key "$relay_pub" \
  --pairs 8 --rate 400 --duration 30 --drain 60 >load.json 2>load.err &
load_pid=$!

kills=0 node_kills=0 partitions=0
sleep 4
echo "t=4s: SIGKILL relay 1 (the senders' relay)"
kill -9 "${relay_pid[1]}"; wait "${relay_pid[1]}" 2>/dev/null || true; kills=$((kills + 1))
sleep 4
echo "t=8s: relay 1 starts again and reads the log"
snaps_before=$(cat relay*.log | grep -c "snapshot of the store at log entry" || true)
start_relay 1 || fail "relay 1 did not start again"
sleep 3
echo "t=11s: SIGKILL NATS node 1"
kill -9 "${nats_pid[1]}"; wait "${nats_pid[1]}" 2>/dev/null || true; node_kills=$((node_kills + 1))
sleep 4
echo "t=15s: NATS node 1 starts again on its store"
start_nats 1
sleep 4
echo "t=19s: NATS node 3 cut off (nftables drops all its traffic)"
ip netns exec "$tag-n3" nft -f - <<'NFT'
table inet cut {
  chain in { type filter hook input priority 0; policy drop; iif "lo" accept; }
  chain out { type filter hook output priority 0; policy drop; oif "lo" accept; }
}
NFT
partitions=$((partitions + 1))
sleep 6
echo "t=25s: NATS node 3 let back in"
ip netns exec "$tag-n3" nft delete table inet cut

rc=0
wait "$load_pid" || rc=$?
load_pid=
line=$(tail -1 load.json)
[ -n "$line" ] || fail "tern-load printed no result (exit $rc)"
read -r delivered lost dups reordered reconnects sent unacked busy < <(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
print(r["delivered"], r["lost"], r["dups"], r["reordered"], r["reconnects"], r["sent"],
      r["unacked"], r["busy"])' "$line") ||
  fail "tern-load's result is not what this test reads: $line"
echo "cluster chaos: $sent messages sent, $delivered delivered through 3 relays on a 3-node JetStream cluster (R3);"
echo "  relay kills $kills, NATS node kills $node_kills, NATS partitions $partitions, client reconnects $reconnects;"
echo "  lost $lost, duplicated $dups, out of order $reordered;"
echo "  answered BUSY $busy times; left unacknowledged in the senders' outboxes $unacked"
relay_stats
# Every relay follows the log, the one without clients too (an idle relay
# whose subscription stalled once stayed half the log behind): the three
# positions meet within 10 s of the drain's end.
for _ in $(seq 50); do
  read -r p1 p2 p3 < <(positions)
  [ -n "${p3:-}" ] && [ "$p1" = "$p2" ] && [ "$p2" = "$p3" ] && break
  sleep 0.2
done
[ -n "${p3:-}" ] && [ "$p1" = "$p2" ] && [ "$p2" = "$p3" ] ||
  fail "the relays' log positions differ at the end: ${p1:-?} ${p2:-?} ${p3:-?}"
echo "  every relay at log entry $p1"
# The replicas hold the same rows wherever two of them were audited at the
# same log entry (a replica of its own loses what the others hold).
audited=$(cat relay*.log | grep -o "replica at log entry [0-9]*" | sort -u | wc -l)
[ "$audited" -ge 10 ] || fail "the relays logged $audited audit points (audit=100): the audit did not run"
[ -z "$(audit_diff)" ] || fail "the replicas differ at log entry $(audit_diff | head -1 | cut -d: -f1)"
echo "  replicas audited at $audited log entries: the same rows wherever two were audited"
lostconn=$(cat relay*.log | grep -c "lost the NATS connection" || true)
[ "$lostconn" -ge 2 ] || fail "the relays of the killed and the cut-off NATS node did not notice ($lostconn)"
storefail=$(cat relay*.log | grep -c "cluster store:.*\(failed\|not connected\|changed\)" || true)
echo "  relays' NATS connections lost $lostconn times; store errors logged $storefail times (BUSY: the clients resent)"
snaps=$(cat relay*.log | grep -c "snapshot of the store at log entry" || true)
loaded=$(grep -h "loaded the snapshot at log entry" relay1.log | tail -1 | sed 's/.*log entry \([0-9]*\).*/\1/' || true)
echo "  snapshots written $snaps (every 500 entries), $snaps_before before relay 1's restart;" \
  "relay 1 restarted from the snapshot at entry ${loaded:-none}"
[ "$snaps" -ge 1 ] || fail "no snapshot was written"
[ "$snaps_before" -eq 0 ] || [ -n "$loaded" ] || fail "relay 1 did not start from the snapshot written before"
[ "$lost" -eq 0 ] || fail "$lost messages were never delivered"
[ "$dups" -eq 0 ] || fail "$dups messages were delivered twice"
[ "$reordered" -eq 0 ] || fail "$reordered messages arrived out of order"
[ "$sent" -ge 8000 ] || fail "only $sent messages sent: the load did not run"
[ "$reconnects" -gt 0 ] || fail "no client reconnected: the relay kill did not reach them"

[ "$rc" -eq 0 ] || fail "tern-load exited $rc"
echo "PASS"
