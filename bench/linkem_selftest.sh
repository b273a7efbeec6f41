#!/usr/bin/env bash
# linkem_selftest.sh LINKEM LKPROBE: checks that linkem does what it is told.
#
#   (a) RTT: with --delay D each way, the median UDP echo RTT of 200 probes is
#       within 1 ms of 2*D (D = 20 and 50 ms), once the path's own RTT is
#       taken off: the same probes through linkem at --delay 0, in the same
#       run. On this kind of VM that base is about 0.7 ms (six process
#       wake-ups per round trip: linkem twice each way, the echo, the probe),
#       and it varies with load; what linkem must get right is what it adds.
#   (b) loss: 100,000 one-way UDP datagrams at 20,000/s lose within 0.5
#       percentage points of the setting (Bernoulli 5 % and 2 %, and
#       Gilbert-Elliott with a mean of 4 %), and the sink's count agrees
#       exactly with linkem's own loss counter;
#   (c) rate: a 2,000 kbit/s limit delivers within 5 % of that rate;
#   (d) TCP: 4 MiB arrive intact through 10 ms each way and 1 % loss.
#
# Needs root, /dev/net/tun and network namespaces. Without them it exits 77
# (ctest: skipped) with a message, unless CI=true, where it fails instead.
# Namespaces are named lk<PID>a / lk<PID>b and are removed on every exit path.
set -uo pipefail

LINKEM=${1:?usage: linkem_selftest.sh LINKEM LKPROBE}
LKPROBE=${2:?usage: linkem_selftest.sh LINKEM LKPROBE}
HERE=$(cd "$(dirname "$0")" && pwd)
NETNS="$HERE/netns.sh"

if ! "$NETNS" check; then
  if [[ ${CI:-} == true ]]; then
    echo "linkem_selftest: FAIL: CI=true but namespaces/TUN are not available" >&2
    exit 1
  fi
  echo "linkem_selftest: SKIP: needs root, /dev/net/tun and network namespaces" >&2
  exit 77
fi

P="lk$$"
A="${P}a"
B="${P}b"
A_ADDR=10.201.0.1
B_ADDR=10.201.0.2
TMP=$(mktemp -d)
LKPID=""
FAILED=0

# Ends this shell's background children (linkem, probes) and reaps them.
# jobs -p lists only children that have not been reaped, so no unrelated
# process can be hit by a recycled PID.
stop_children() {
  local pid
  for pid in $(jobs -p); do
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  LKPID=""
}

cleanup() {
  stop_children
  "$NETNS" down "$P"
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# Waits up to 5 s for a file a child creates once it is ready.
wait_file() {
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -e $1 ]] && return 0
    sleep 0.05
  done
  echo "linkem_selftest: timed out waiting for $1" >&2
  return 1
}

json() { # json FILE KEY -> the first numeric or boolean value of "KEY"
  sed -n "s/.*\"$2\":\([-0-9.a-z]*\).*/\1/p" "$1" | head -n 1
}

json_dir() { # json_dir FILE DIRECTION KEY
  sed -n "s/.*\"$2\":{[^}]*\"$3\":\([0-9]*\).*/\1/p" "$1" | head -n 1
}

start_linkem() {
  rm -f "$TMP/lk.ready"
  "$LINKEM" --a "$A:lkb" --b "$B:lka" --ready-file "$TMP/lk.ready" "$@" \
    >"$TMP/linkem.json" 2>"$TMP/linkem.err" &
  LKPID=$!
  wait_file "$TMP/lk.ready" || { cat "$TMP/linkem.err" >&2; LKPID=""; return 1; }
}

stop_linkem() {
  kill -TERM "$LKPID"
  wait "$LKPID"
  LKPID=""
}

# bg NS OUTFILE CMD...: runs CMD in namespace NS in the background.
bg() {
  local ns=$1 out=$2
  shift 2
  ip netns exec "$ns" "$@" >"$out" &
  BGPID=$!
}

check() { # check NAME OK(0/1) MESSAGE
  if [[ $2 -eq 1 ]]; then
    echo "PASS $1: $3"
  else
    echo "FAIL $1: $3"
    FAILED=1
  fi
}

within() { # within VALUE TARGET TOLERANCE -> prints 1 or 0
  awk -v v="$1" -v t="$2" -v e="$3" 'BEGIN { d = v - t; if (d < 0) d = -d; print (v != "" && d <= e) ? 1 : 0 }'
}

"$NETNS" up "$P" || exit 1

BASE_RTT=""

# rtt_probe D: median RTT in ms of 200 probes through linkem at --delay D.
rtt_probe() {
  local d=$1
  start_linkem --delay "$d" --seed 1 || return 1
  rm -f "$TMP/echo.ready"
  bg "$B" "$TMP/echo.json" "$LKPROBE" echo --bind "$B_ADDR:7001" --duration 8 \
    --ready-file "$TMP/echo.ready"
  wait_file "$TMP/echo.ready" || return 1
  local echo=$BGPID
  ip netns exec "$A" "$LKPROBE" ping --to "$B_ADDR:7001" --count 200 --interval 10 \
    >"$TMP/ping.json"
  kill -TERM "$echo"
  wait "$echo"
  stop_linkem
}

rtt_base() {
  rtt_probe 0 || return 1
  BASE_RTT=$(json "$TMP/ping.json" median_ms)
  check "rtt base" "$([[ -n $BASE_RTT ]] && echo 1 || echo 0)" \
    "median RTT through linkem at delay 0: $BASE_RTT ms (the path's own cost, taken off below)"
}

rtt_test() {
  local d=$1
  rtt_probe "$d" || return 1
  local med added
  med=$(json "$TMP/ping.json" median_ms)
  added=$(awk -v m="$med" -v b="${BASE_RTT:-0}" 'BEGIN { printf "%.3f", m - b }')
  check "rtt delay=${d}ms" "$(within "$added" $((2 * d)) 1)" \
    "median RTT $med ms, $added ms above the delay-0 base, over $(json "$TMP/ping.json" received) probes (target $((2 * d)) +- 1 ms added; min $(json "$TMP/ping.json" min_ms), max $(json "$TMP/ping.json" max_ms))"
}

# one_way PORT COUNT RATE SIZE: blasts COUNT datagrams of SIZE bytes at RATE
# per second from A to a sink in B through the running linkem, then stops
# linkem so its counters land in linkem.json.
one_way() {
  rm -f "$TMP/sink.ready"
  bg "$B" "$TMP/sink.json" "$LKPROBE" sink --bind "$B_ADDR:$1" --count "$2" --duration 30 \
    --ready-file "$TMP/sink.ready"
  local sink=$BGPID
  wait_file "$TMP/sink.ready" || return 1
  ip netns exec "$A" "$LKPROBE" blast --to "$B_ADDR:$1" --count "$2" --rate "$3" --size "$4" \
    >"$TMP/blast.json"
  wait "$sink"
  stop_linkem
}

loss_test() {
  local name=$1 target=$2
  shift 2
  start_linkem --delay 5 "$@" || return 1
  one_way 7002 100000 20000 64 || return 1
  local loss recv lk_loss lk_rx
  loss=$(json "$TMP/sink.json" loss_pct)
  recv=$(json "$TMP/sink.json" received)
  lk_loss=$(json_dir "$TMP/linkem.json" a_to_b loss_pkts)
  lk_rx=$(json_dir "$TMP/linkem.json" a_to_b rx_pkts)
  check "loss $name" "$(within "$loss" "$target" 0.5)" \
    "$loss % lost ($recv of 100000 arrived; target $target +- 0.5)"
  check "loss $name counters" "$([[ $lk_rx == 100000 && $((100000 - recv)) == "$lk_loss" ]] && echo 1 || echo 0)" \
    "linkem read $lk_rx and dropped $lk_loss; the sink missed $((100000 - recv)); linkem used $(json "$TMP/linkem.json" cpu_s) s CPU in $(json "$TMP/linkem.json" elapsed_s) s"
}

rate_test() {
  # 1000-byte datagrams (1028 bytes of IP) offered at 4.1 Mbit/s for 4 s into
  # a 2,000 kbit/s bottleneck: the sink should see 2,000 kbit/s.
  start_linkem --delay 5 --rate 2000 --queue 20 || return 1
  one_way 7003 2000 500 1000 || return 1
  local secs tx kbit
  secs=$(json "$TMP/blast.json" seconds)
  tx=$(json_dir "$TMP/linkem.json" a_to_b tx_bytes)
  kbit=$(awk -v b="$tx" -v s="$secs" 'BEGIN { printf "%.0f", b * 8 / s / 1000 }')
  check "rate 2000kbit" "$(within "$kbit" 2000 100)" \
    "$kbit kbit/s delivered over ${secs} s ($(json_dir "$TMP/linkem.json" a_to_b queue_drop_pkts) tail drops)"
}

tcp_test() {
  local bytes=$((4 * 1024 * 1024))
  start_linkem --delay 10 --loss 1 --seed 3 || return 1
  rm -f "$TMP/tcp.ready"
  bg "$B" "$TMP/tcprecv.json" "$LKPROBE" tcp-recv --bind "$B_ADDR:7004" --bytes $bytes \
    --duration 60 --seed 9 --ready-file "$TMP/tcp.ready"
  local recv=$BGPID
  wait_file "$TMP/tcp.ready" || return 1
  ip netns exec "$A" "$LKPROBE" tcp-send --to "$B_ADDR:7004" --bytes $bytes --duration 60 --seed 9 \
    >"$TMP/tcpsend.json"
  wait "$recv"
  stop_linkem
  check "tcp 1% loss" "$([[ $(json "$TMP/tcprecv.json" ok) == true ]] && echo 1 || echo 0)" \
    "$(json "$TMP/tcprecv.json" bytes) bytes, $(json "$TMP/tcprecv.json" mismatched) mismatched, in $(json "$TMP/tcprecv.json" seconds) s; linkem dropped $(json_dir "$TMP/linkem.json" a_to_b loss_pkts)+$(json_dir "$TMP/linkem.json" b_to_a loss_pkts) packets"
}

# run TEST ARGS...: one check; whatever it leaves running is stopped after.
run() {
  "$@" || { FAILED=1; echo "FAIL $*: could not run (see above)"; }
  stop_children
}

SECONDS=0
run rtt_base
run rtt_test 20
run rtt_test 50
run loss_test "bernoulli 5%" 5 --loss 5 --seed 11
run loss_test "bernoulli 2%" 2 --loss 2 --seed 12
# Gilbert-Elliott: P(good->bad) 1 %, P(bad->good) 24 %, all lost in bad:
# mean loss 1/(1+24) = 4 %.
run loss_test "gilbert-elliott 4%" 4 --ge 1,24 --seed 13
run rate_test
run tcp_test
echo "linkem_selftest: $([[ $FAILED -eq 0 ]] && echo passed || echo FAILED) in ${SECONDS} s"
exit $FAILED
