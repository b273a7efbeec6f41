#!/usr/bin/env bash
# nat_keepalive_test.sh BUILD_DIR: the keepalive learner against a real
# kernel NAT (spec/keepalive.md; issue "Adaptive keepalive").
#
# For each NAT timeout T_nat it builds three namespaces that it removes on
# every exit path:
#
#   <P>c<i>  client  10.77.<i>.2 --veth-- 10.77.<i>.1  <P>n<i>  NAT
#   <P>n<i>  NAT     10.78.<i>.1 --veth-- 10.78.<i>.2  <P>r<i>  relay
#
# The NAT namespace masquerades what leaves towards the relay, and its
# conntrack forgets an idle UDP mapping after T_nat seconds (both
# nf_conntrack_udp_timeout and nf_conntrack_udp_timeout_stream). ternd runs
# in the relay namespace; an idle tern-chat ("idle") in the client
# namespace learns the timeout; a second tern-chat ("pusher", in the relay
# namespace) sends it a message after each random silence longer than
# T_nat. Checked:
#   - the learner finishes, and its interval is within [0.7, 1.0) x T_nat;
#   - every push reaches the idle client within 5 s (a push that had to
#     wait for the next keepalive to reopen a dead mapping would be late),
#     during learning and at least twice after it;
#   - in the silences after learning, the NAT sees only the client's
#     keepalives (at most one per interval) and one answer to each: the
#     relay sends no idle traffic of its own;
#   - control: with keepalives off, a push after 1.5 x T_nat of silence does
#     not arrive within 15 s: the NAT really forgets mappings.
# T_nat is 20 s and 45 s, run side by side with the control (about 5
# minutes); TERN_NAT_LONG=1 runs 120 s and 300 s instead (about 40 minutes).
#
# Needs root, network namespaces and nftables. Without them it exits 77
# (ctest: skipped) with a message, unless CI=true, where it fails instead.
set -uo pipefail

BUILD=${1:?usage: nat_keepalive_test.sh BUILD_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../bench/natns.sh
source "$HERE/../bench/natns.sh"
TERND=$BUILD/tools/ternd/ternd
CHAT=$BUILD/tools/tern-chat
KEYGEN=$BUILD/tools/tern-keygen
for f in "$TERND" "$CHAT" "$KEYGEN"; do
  [[ -x $f ]] || { echo "nat_keepalive_test: FAIL: missing $f" >&2; exit 1; }
done

skip() {
  if [[ ${CI:-} == true ]]; then
    echo "nat_keepalive_test: FAIL: CI=true but $1" >&2
    exit 1
  fi
  echo "nat_keepalive_test: SKIP: $1" >&2
  exit 77
}
[[ $(id -u) -eq 0 ]] || skip "needs root (network namespaces, nftables, sysctl)"
command -v nft >/dev/null || skip "needs nft (Debian package nftables)"
ip netns add "nkprobe$$" 2>/dev/null || skip "cannot create network namespaces"
ip netns del "nkprobe$$"

P="nk$$"
TMP=$(mktemp -d)
NCASES=3

cleanup() {
  local i pid
  for i in $(seq 1 $NCASES); do natns_down "$P" "$i"; done
  for pid in $(jobs -p); do kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

RELAY_KEY=$("$KEYGEN" "$TMP/relay.key" 2>/dev/null) || { echo "nat_keepalive_test: FAIL: tern-keygen" >&2; exit 1; }
"$KEYGEN" "$TMP/idle.key" >/dev/null 2>&1
"$KEYGEN" "$TMP/pusher.key" >/dev/null 2>&1

# wait_for FILE REGEX SECONDS: 0 as soon as a line of FILE matches.
wait_for() {
  local end=$(( $(date +%s) + $3 ))
  while (( $(date +%s) <= end )); do
    grep -Eq "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# push I K: the pusher sends "push-K" to idle<I>; prints the seconds until
# idle<I> printed it, or "late" if not within 5 s.
push() {
  local i=$1 k=$2 t0
  t0=$(now)
  echo "@idle$i push-$k" | ip netns exec "${P}r$i" "$CHAT" --relay 127.0.0.1:7400 \
    --relay-key "$RELAY_KEY" --key "$TMP/pusher.key" --user "pusher$i" --linger 10 \
    >>"$TMP/push$i.out" 2>>"$TMP/push$i.err"
  if wait_for "$TMP/idle$i.out" "^recv pusher$i [0-9]+ push-$k\$" 5; then
    elapsed "$t0"
  else
    echo late
  fi
}

# start I T MODE: ternd and the idle client of case I.
start() {
  local i=$1 t=$2 mode=$3
  natns_up "$P" "$i" "$t" >"$TMP/topo$i.log" 2>&1 || { cat "$TMP/topo$i.log" >&2; return 1; }
  # --ping-interval: the control's client announces no keepalive, and the
  # relay's own ENet ping (60 s by default) would keep a long NAT's mapping
  # alive from the outside.
  ip netns exec "${P}r$i" "$TERND" --key "$TMP/relay.key" --open --listen 0.0.0.0:7400 \
    --data-dir "$TMP/data$i" --ping-interval 3600000 >"$TMP/ternd$i.log" 2>&1 &
  wait_for "$TMP/ternd$i.log" "listening" 10 || { echo "ternd did not start" >&2; return 1; }
  mkfifo "$TMP/in$i"
  ip netns exec "${P}c$i" "$CHAT" --relay "10.78.$i.2:7400" --relay-key "$RELAY_KEY" \
    --key "$TMP/idle.key" --user "idle$i" --state "$TMP/state$i" --network "nat$t" \
    --keepalive "$mode" <"$TMP/in$i" >"$TMP/idle$i.out" 2>"$TMP/idle$i.err" &
  exec {hold}>"$TMP/in$i" # the client reads a pipe that stays open: it idles
  wait_for "$TMP/idle$i.err" "connected as idle$i" 15 || { echo "idle client did not connect" >&2; return 1; }
}

# learn_case I T: the learner against a T-second NAT. Writes its verdict
# to $TMP/result$I (first word PASS or FAIL).
learn_case() {
  local i=$1 t=$2 out="$TMP/result$1"
  if ! start "$i" "$t" learn 2>"$TMP/start$i.err"; then
    echo "FAIL T_nat=${t}s: set-up: $(cat "$TMP/start$i.err")" >"$out"
    return
  fi
  local t0 k=0 after=0 gap lat line learned="" deadline iv_learned=0
  local counts=()
  t0=$(date +%s)
  deadline=$(( t0 + 6 * t + 120 ))
  local lats=()
  while :; do
    # A silence longer than the NAT's timeout: without keepalives the
    # mapping would be gone by the time the push comes.
    if [[ -z $learned ]]; then
      gap=$(( t * 12 / 10 + RANDOM % (t * 8 / 10 + 1) ))
      sleep "$gap"
    else
      # After learning, also count what crosses the NAT during the silence
      # (from 1 s after the last push, when its acks are done): only the
      # client's keepalives, one per interval, each answered by one ENet
      # acknowledgement; the relay sends nothing of its own.
      gap=$(( t * 11 / 10 + RANDOM % (t * 4 / 10 + 1) ))
      sleep 1
      natns_counts "$P" "$i" >/dev/null
      sleep $(( gap - 1 ))
      local up down pingdown most
      read -r up down pingdown < <(natns_counts "$P" "$i")
      most=$(( (gap - 1) * 1000 / iv_learned + 1 ))
      counts+=("${up}/${down}")
      if (( up < 1 || up > most || down != up || pingdown != 0 )); then
        echo "FAIL T_nat=${t}s: in ${gap}s of silence after learning, ${up} datagrams went to the" \
          "relay and ${down} came back, ${pingdown} of them relay pings (want 1..${most}" \
          "keepalives, each answered once, no relay ping; interval ${iv_learned} ms)" >"$out"
        return
      fi
    fi
    k=$((k + 1))
    lat=$(push "$i" "$k")
    lats+=("$lat")
    if [[ $lat == late ]]; then
      echo "FAIL T_nat=${t}s: push $k after ${gap}s of silence did not arrive within 5 s" \
        "(keepalive: $(grep keepalive "$TMP/idle$i.err" | tail -1))" >"$out"
      return
    fi
    line=$(grep -E "keepalive learned on network" "$TMP/idle$i.err" | tail -1)
    if [[ -n $line && -z $learned ]]; then
      learned=$line
      iv_learned=$(sed -E 's/.*every ([0-9]+) ms.*/\1/' <<<"$learned")
      continue
    fi
    [[ -n $learned ]] && after=$((after + 1))
    (( after >= 2 )) && break
    if [[ -z $learned ]] && (( $(date +%s) > deadline )); then
      echo "FAIL T_nat=${t}s: not learned after $(( $(date +%s) - t0 ))s:" \
        "$(grep keepalive "$TMP/idle$i.err" | tail -1)" >"$out"
      return
    fi
  done
  local iv proven failed lms
  iv=$(sed -E 's/.*every ([0-9]+) ms.*/\1/' <<<"$learned")
  proven=$(sed -E 's/.*proven ([0-9]+) ms.*/\1/' <<<"$learned")
  failed=$(sed -E 's/.*failed ([0-9]+) ms.*/\1/' <<<"$learned")
  lms=$(sed -E 's/.*learned in ([0-9]+) ms.*/\1/' <<<"$learned")
  local ratio
  ratio=$(awk -v a="$iv" -v t="$t" 'BEGIN { printf "%.3f", a / (t * 1000) }')
  local verdict=PASS
  awk -v r="$ratio" 'BEGIN { exit !(r >= 0.7 && r < 1.0) }' || verdict=FAIL
  echo "$verdict T_nat=${t}s: interval ${iv} ms = ${ratio} x T_nat (want [0.7, 1.0));" \
    "proven ${proven} ms, failed ${failed} ms, learned in $(( lms / 1000 )) s;" \
    "$k pushes all arrived (s: ${lats[*]}), $after after learning;" \
    "datagrams to/from the relay in those silences: ${counts[*]}" >"$out"
}

# control_case I T: keepalives off; the push after 1.5 x T of silence must
# not arrive.
control_case() {
  local i=$1 t=$2 out="$TMP/result$1"
  if ! start "$i" "$t" off 2>"$TMP/start$i.err"; then
    echo "FAIL control T_nat=${t}s: set-up: $(cat "$TMP/start$i.err")" >"$out"
    return
  fi
  sleep $(( t * 3 / 2 ))
  local lat
  lat=$(push "$i" 1)
  if ! grep -q "^sent " "$TMP/push$i.out"; then
    echo "FAIL control T_nat=${t}s: the relay did not accept the push" >"$out"
  elif [[ $lat == late ]] && ! wait_for "$TMP/idle$i.out" "^recv pusher$i [0-9]+ push-1\$" 10; then
    echo "PASS control T_nat=${t}s: keepalives off, the push after $(( t * 3 / 2 ))s of silence" \
      "did not arrive within 15 s: the NAT forgot the mapping" >"$out"
  else
    echo "FAIL control T_nat=${t}s: the push arrived without keepalives; the NAT did not expire" \
      "the mapping, so this test proves nothing" >"$out"
  fi
}

if [[ ${TERN_NAT_LONG:-} == 1 ]]; then CASES=(120 300); else CASES=(20 45); fi
echo "nat_keepalive_test: T_nat ${CASES[*]} s and a control at ${CASES[0]} s, side by side"
i=0
for t in "${CASES[@]}"; do
  i=$((i + 1))
  learn_case "$i" "$t" &
done
i=$((i + 1))
control_case "$i" "${CASES[0]}" &
wait

status=0
for f in "$TMP"/result*; do
  [[ -s $f ]] || { echo "FAIL: a case left no verdict" >&2; status=1; continue; }
  cat "$f"
  grep -q '^PASS' "$f" || status=1
done
if (( status )); then
  for f in "$TMP"/idle*.err "$TMP"/ternd*.log; do
    echo "---- $(basename "$f") (last 15 lines)"
    tail -15 "$f"
  done
fi
exit $status
