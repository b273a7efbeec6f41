#!/usr/bin/env bash
# run.sh: the bench suite in one command (see bench/README.md).
#
#   sudo bash bench/run.sh [--quick|--full] [--build DIR] [--out DIR]
#                          [--transports "tcp enet tern"] [--only SCENARIO]
#                          [--workloads "chat burst big migrate"] [--chat-duration S]
#                          [--probes N] [--repeat N]
#
# Client A (namespace <P>a) -> relay (<P>b) -> client B (<P>c), one linkem
# per client link. "RTT R" means R ms round trip between a client and the
# relay (R/2 each way on each link), so a message A -> relay -> B has a
# propagation floor of R ms one way. "loss L" is Bernoulli L % on every
# direction of both links (a message crosses two lossy hops, its ack two
# more). Each run starts fresh linkems, a fresh relay (tern: a new data dir
# with its default fsync per group commit) and fresh clients; the results
# go to bench/results/<timestamp>/ and bench/results/latest points there.
# The "migrate" workload runs bench/migrate.sh (address change to the next
# delivered message: tern's migration, a tern reconnect, TCP; its own
# namespaces; 10 changes per system in --quick, 20 in --full; skipped with
# --only) into the same results.
#
# --repeat N runs the whole plan N times (fresh linkems, relays and clients
# each time; runs 2..N use other loss seeds); summary.md then reports each
# run's p99 and the spread of the tern/TCP p99 ratio (min/median/max).
# --quick (default) takes about 6.5 minutes on a 2-core VM; --full runs
# every scenario and workload, and tern twice: durable (default) and
# --no-fsync. Bounded everywhere: every wait has a deadline, and the
# namespaces and processes are removed on every exit path.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
MODE=quick
BUILD=$ROOT/build
OUT=
TRANSPORTS=
ONLY=
WORKLOADS="chat burst big migrate"
CHAT_DURATION=
PROBES_OPT=
REPEAT=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) MODE=quick ;;
    --full) MODE=full ;;
    --build) BUILD=$2; shift ;;
    --out) OUT=$2; shift ;;
    --transports) TRANSPORTS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --workloads) WORKLOADS=$2; shift ;;
    --chat-duration) CHAT_DURATION=$2; shift ;;
    --probes) PROBES_OPT=$2; shift ;;
    --repeat) REPEAT=$2; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

[[ $REPEAT =~ ^[1-9][0-9]?$ ]] || { echo "run.sh: --repeat takes 1 to 99" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "run.sh: needs root (namespaces, TUN)" >&2; exit 1; }
bash "$HERE/netns.sh" check || { echo "run.sh: namespaces/TUN unavailable" >&2; exit 1; }
if [[ ! -x $BUILD/bench/benchclient || ! -x $BUILD/bench/migclient || ! -x $BUILD/tools/ternd/ternd ]]; then
  echo "run.sh: building into $BUILD" >&2
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTERN_BUILD_TESTS=OFF >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" >/dev/null
fi
B=$BUILD/bench
TERND=$BUILD/tools/ternd/ternd
KEYGEN=$BUILD/tools/tern-keygen
for f in "$B/linkem" "$B/benchclient" "$B/tcp_relay" "$B/enet_relay" "$TERND" "$KEYGEN"; do
  [[ -x $f ]] || { echo "run.sh: missing $f" >&2; exit 1; }
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
[[ -n $OUT ]] || OUT=$HERE/results/$STAMP
mkdir -p "$OUT/raw" "$OUT/lat"
P=tb$$
WORK=$(mktemp -d /var/tmp/ternbench.XXXXXX) # on disk, so fsync costs what it costs
PIDS=()

cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  done
  bash "$HERE/netns.sh" down "$P" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bash "$HERE/netns.sh" up3 "$P" >/dev/null
RELAY_A=10.201.1.2 # the relay as seen from client A's namespace
RELAY_C=10.201.2.2 # ... and from client B's
RELAY_KEY=$("$KEYGEN" "$WORK/relay.key" 2>/dev/null)

# ---- the plan ---------------------------------------------------------------
# scenario ids: lo (loopback in the relay namespace, no linkem),
# r<RTT>l<LOSS> (Bernoulli), r<RTT>ge (Gilbert-Elliott, about 4 % mean loss
# in bursts of 4 packets: P(good->bad) 1.3 %, P(bad->good) 25 %, 100 % loss
# in the bad state).
if [[ $MODE == quick ]]; then
  CHAT_SCEN="lo r100l0 r100l2 r100l5 r100ge"
  BURST_SCEN="r100l0 r100l2"
  BIG_SCEN="r100l0 r100l2"
  # 8 pairs x 125 messages, Poisson at 10/s each: exactly 1,000 messages
  # (12.5 s), so a p99 rests on 1,000 latencies (the tenth largest).
  CHAT_ARGS="--pairs 8 --rate 10 --count 125 --duration 0"
  BURST_ARGS="--pairs 1 --count 1000"
  BIG_ARGS="--pairs 1 --count 6 --rate 3"
  PROBES=3
  MIG_CHANGES=10
  [[ -n $TRANSPORTS ]] || TRANSPORTS="tcp enet tern"
else
  ALL="lo"
  for r in 20 100 300; do for l in 0 1 2 5 10; do ALL="$ALL r${r}l${l}"; done; ALL="$ALL r${r}ge"; done
  CHAT_SCEN=$ALL
  BURST_SCEN=$ALL
  BIG_SCEN=$ALL
  CHAT_ARGS="--pairs 4 --rate 10 --duration 20"
  BURST_ARGS="--pairs 1 --count 1000"
  BIG_ARGS="--pairs 2 --count 20 --rate 2"
  PROBES=5
  MIG_CHANGES=20
  [[ -n $TRANSPORTS ]] || TRANSPORTS="tcp enet tern tern-nofsync"
fi

if [[ -n $CHAT_DURATION ]]; then
  CHAT_ARGS="${CHAT_ARGS%% --count *}"
  CHAT_ARGS="${CHAT_ARGS%% --duration *} --count 0 --duration $CHAT_DURATION"
fi
[[ -z $PROBES_OPT ]] || PROBES=$PROBES_OPT
[[ " $WORKLOADS " == *" chat "* ]] || CHAT_SCEN=
[[ " $WORKLOADS " == *" burst "* ]] || BURST_SCEN=
[[ " $WORKLOADS " == *" big "* ]] || BIG_SCEN=

scen_rtt() { case $1 in lo) echo 0 ;; *) local x=${1#r}; echo "${x%%[lg]*}" ;; esac; }
scen_loss() { case $1 in lo) echo 0 ;; *ge) echo ge ;; *) echo "${1##*l}" ;; esac; }

# wait_file, stop_pid
# shellcheck source=procs.sh
source "$HERE/procs.sh"

cpu_of() { # PID -> CPU seconds (utime + stime) from /proc
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0
}

# One run: TRANSPORT WORKLOAD SCENARIO "ARGS" [probes]. RUN (global) is the
# repeat's index; with --repeat the id ends in .RUN and the seeds move on.
RUN=1
run_one() {
  local tp=$1 wl=$2 sc=$3 args=$4 probes=${5:-0}
  local rtt loss id=$tp.$wl.$sc d tag seed=$((7 + 10 * (RUN - 1))) t_run=$SECONDS
  [[ $REPEAT -eq 1 ]] || id=$id.$RUN
  rtt=$(scen_rtt "$sc"); loss=$(scen_loss "$sc")
  local raw=$OUT/raw/$id
  local lk1= lk2= relay_pid nsA=${P}a nsC=${P}c nsR=${P}b ra=$RELAY_A rc=$RELAY_C
  rm -f "$WORK"/ready* "$WORK/port"
  if [[ $sc == lo ]]; then
    nsA=$nsR; nsC=$nsR; ra=127.0.0.1; rc=127.0.0.1
  else
    d=$(awk -v r="$rtt" 'BEGIN{printf "%g", r/2}')
    local lossargs=(--loss "$loss")
    [[ $loss == ge ]] && lossargs=(--ge 1.3,25)
    "$B/linkem" --a "${P}a:lkb" --b "${P}b:lka" --delay "$d" "${lossargs[@]}" --seed $seed \
      --ready-file "$WORK/ready.lk1" >"$raw.linkem1" 2>/dev/null &
    lk1=$!; PIDS+=("$lk1")
    "$B/linkem" --a "${P}c:lkb" --b "${P}b:lkc" --delay "$d" "${lossargs[@]}" --seed $((seed + 1)) \
      --ready-file "$WORK/ready.lk2" >"$raw.linkem2" 2>/dev/null &
    lk2=$!; PIDS+=("$lk2")
    wait_file "$WORK/ready.lk1" 5 any && wait_file "$WORK/ready.lk2" 5 any ||
      { echo "run.sh: linkem did not start" >&2; return 1; }
  fi
  local port key=() t=$tp
  case $tp in
    tcp) port=7500; ip netns exec "$nsR" "$B/tcp_relay" --bind 0.0.0.0:$port --duration 900 \
           --accept-log "$raw.accepts" >"$raw.relay" 2>&1 & ;;
    enet) port=7600; ip netns exec "$nsR" "$B/enet_relay" --bind 0.0.0.0:$port --duration 900 \
           --accept-log "$raw.accepts" >"$raw.relay" 2>&1 & ;;
    tern|tern-nofsync|tern-nocopies)
      # tern-nocopies: no redundant copies on either side (ternd --no-copies,
      # benchclient's tern-nocopies transport): the load issue's item 9
      # compares bytes and CPU with copies on and off.
      port=7400; t=tern; key=(--relay-key "$RELAY_KEY")
      local extra=(); [[ $tp == tern-nofsync ]] && extra=(--no-fsync)
      [[ $tp == tern-nocopies ]] && extra=(--no-copies) && t=tern-nocopies
      rm -rf "$WORK/data"
      ip netns exec "$nsR" "$TERND" --key "$WORK/relay.key" --open --listen 0.0.0.0:$port \
        --data-dir "$WORK/data" --port-file "$WORK/port" -q "${extra[@]}" >"$raw.relay" 2>&1 & ;;
  esac
  relay_pid=$!; PIDS+=("$relay_pid")
  if [[ $t == tern* ]]; then wait_file "$WORK/port" 5 || { echo "run.sh: ternd did not start" >&2; return 1; }
  else sleep 0.3; fi
  local prefix=x$RANDOM
  # shellcheck disable=SC2086
  timeout 180 ip netns exec "$nsC" "$B/benchclient" --transport "$t" --relay "$rc:$port" "${key[@]}" \
    --role recv --workload "$wl" $args --prefix "$prefix" --linger 0.5 --ready-file "$WORK/ready.recv" \
    --latencies "$OUT/lat/$id.txt" --label "$id" >"$raw.recv" 2>"$raw.recv.err" &
  local recv_pid=$!; PIDS+=("$recv_pid")
  if ! wait_file "$WORK/ready.recv" 25 any; then
    echo "run.sh: $id: receiver not ready" >&2
  else
    # shellcheck disable=SC2086
    timeout 180 ip netns exec "$nsA" "$B/benchclient" --transport "$t" --relay "$ra:$port" "${key[@]}" \
      --role send --workload "$wl" $args --prefix "$prefix" --end-wait 3 --label "$id" \
      >"$raw.send" 2>"$raw.send.err" || echo "run.sh: $id: sender failed (see raw/$id.send.err)" >&2
  fi
  wait "$recv_pid" || echo "run.sh: $id: receiver failed (see raw/$id.recv.err)" >&2
  # Wire counters now, before the connect probes add their own traffic.
  if [[ -n $lk1 ]]; then kill -USR1 "$lk1" "$lk2" 2>/dev/null || true; sleep 0.1; fi
  cpu_of "$relay_pid" >"$raw.relaycpu"
  local i
  : >"$raw.connect"
  for ((i = 0; i < probes; i++)); do
    timeout 40 ip netns exec "$nsA" "$B/benchclient" --transport "$t" --relay "$ra:$port" "${key[@]}" \
      --role send --workload connect --prefix "p$i$prefix" --label "$id" --accept-log "$raw.accepts" \
      >>"$raw.connect" 2>>"$raw.connect.err" || true
  done
  stop_pid "$relay_pid"
  if [[ -n $lk1 ]]; then stop_pid "$lk1"; stop_pid "$lk2"; fi
  PIDS=()
  printf '%-28s %-44s %3d s\n' "$id" "$(python3 -c '
import json,sys
try:
  j=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print("p50 %.1f p99 %.1f max %.1f lost %d" % (j["p50_ms"], j["p99_ms"], j["max_ms"], j["lost"]))
except Exception: print("FAILED")' "$raw.recv")" $((SECONDS - t_run))
}

T0=$(date +%s)
echo "bench $MODE -> $OUT (transports: $TRANSPORTS)"
for ((RUN = 1; RUN <= REPEAT; RUN++)); do
  [[ $REPEAT -eq 1 ]] || echo "-- run $RUN of $REPEAT ($(($(date +%s) - T0)) s so far)"
  for sc in $CHAT_SCEN; do
    [[ -z $ONLY || $ONLY == "$sc" ]] || continue
    for tp in $TRANSPORTS; do run_one "$tp" chat "$sc" "$CHAT_ARGS" "$PROBES"; done
  done
  for sc in $BURST_SCEN; do
    [[ -z $ONLY || $ONLY == "$sc" ]] || continue
    for tp in $TRANSPORTS; do run_one "$tp" burst "$sc" "$BURST_ARGS"; done
  done
  for sc in $BIG_SCEN; do
    [[ -z $ONLY || $ONLY == "$sc" ]] || continue
    for tp in $TRANSPORTS; do run_one "$tp" big "$sc" "$BIG_ARGS"; done
  done
done
if [[ " $WORKLOADS " == *" migrate "* && -z $ONLY ]]; then
  bash "$HERE/migrate.sh" --build "$BUILD" --out "$OUT" --changes "$MIG_CHANGES" ||
    echo "run.sh: the migration bench failed (see raw/migrate.*)" >&2
fi
echo "runs took $(($(date +%s) - T0)) s"

cat >"$OUT/meta.json" <<EOF
{"mode":"$MODE","stamp":"$STAMP","transports":"$TRANSPORTS","chat_args":"$CHAT_ARGS",
 "burst_args":"$BURST_ARGS","big_args":"$BIG_ARGS","probes":$PROBES,"repeat":$REPEAT,
 "host":"$(uname -srm)","cpus":$(nproc),"git":"$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"}
EOF
python3 "$HERE/summarize.py" "$OUT"
if [[ $OUT == "$HERE/results/$STAMP" ]]; then
  ln -sfn "$STAMP" "$HERE/results/latest"
fi
echo "done in $(($(date +%s) - T0)) s: $OUT/summary.md"
