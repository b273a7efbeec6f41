#!/usr/bin/env bash
# load.sh: ternd and mosquitto under load, side by side, in one command
# (see bench/README.md, "Load").
#
#   bash bench/load.sh [--quick|--full] [--build DIR] [--out DIR]
#                      [--pairs "1 4 16 64 256"] [--duration S] [--drain S]
#                      [--window W] [--systems "tern mosquitto"] [--cluster]
#
# Installs mosquitto and libmosquitto-dev if missing (scripts/setup.sh),
# builds ternd, tern-keygen, tern-load and mqtt-load, starts ternd (--open,
# its default fsync per group commit, a fresh data dir) and mosquitto
# (QoS 1 persistence on, in a temp dir) on loopback ports, raises the fd
# limit, and for each N runs, alternating the systems: tern saturated,
# mosquitto saturated, then each at half of the peak it just measured. One
# relay of each for the whole run, as an operator would run it. Results:
# bench/results/<UTC timestamp>/load.json (one record per system x N x
# mode), meta.json (how and where it ran), load.md (the tables) and
# load.svg (the plot); raw/ keeps every generator's JSON line and stderr
# and both relays' logs.
#
# --quick (default): N = 1 16 64 256, 3 s per run, under 5 minutes.
# --full: N = 1 4 16 64 256, 15 s per run (the README's table).
# --cluster: also the cluster store (spec/store.md, "The cluster store"):
# a 3-node NATS JetStream cluster (R3) on loopback, and on it 1, 2, then 3
# ternd --store nats://... (a fresh stream each), tern-load --spread (pair
# i's sender on relay i mod K, its receiver on relay i+1 mod K), each N
# saturated and at half its peak, beside the single relay on SQLite (the
# "tern" runs) in the same run. Their CPU is the relays' and the NATS
# servers' together, over the whole run, per delivered message
# ("cpu_us_per_msg_all", measured the same way for the single relay).
# Default then: systems "tern", N = 16 64.
# Bounded: every run has a timeout, both relays are stopped and the temp
# dir removed on every exit path. Root is not needed (as root, mosquitto
# drops to its own user; the script gives it its directory).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
COMMAND="bash bench/load.sh${*:+ $*}"
MODE=quick
BUILD=$ROOT/build
OUT=
PAIRS=
DURATION=
DRAIN=
WINDOW=64
SYSTEMS="tern mosquitto"
SYSTEMS_GIVEN=0
CLUSTER=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) MODE=quick ;;
    --full) MODE=full ;;
    --build) BUILD=$2; shift ;;
    --out) OUT=$2; shift ;;
    --pairs) PAIRS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --drain) DRAIN=$2; shift ;;
    --window) WINDOW=$2; shift ;;
    --systems) SYSTEMS=$2; SYSTEMS_GIVEN=1; shift ;;
    --cluster) CLUSTER=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "load.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [[ $CLUSTER == 1 ]]; then
  [[ $SYSTEMS_GIVEN == 1 ]] || SYSTEMS=tern
  : "${PAIRS:=16 64}"
fi
if [[ $MODE == quick ]]; then
  : "${PAIRS:=1 16 64 256}" "${DURATION:=3}" "${DRAIN:=8}"
else
  : "${PAIRS:=1 4 16 64 256}" "${DURATION:=15}" "${DRAIN:=20}"
fi
T0=$(date +%s)

# ---- packages and build -----------------------------------------------------
if ! command -v mosquitto >/dev/null 2>&1 && [[ -x /usr/sbin/mosquitto ]]; then PATH=$PATH:/usr/sbin; fi
if ! command -v mosquitto >/dev/null 2>&1 || ! pkg-config --exists libmosquitto; then
  echo "load.sh: installing mosquitto and libmosquitto-dev (scripts/setup.sh)" >&2
  bash "$ROOT/scripts/setup.sh"
  [[ -x /usr/sbin/mosquitto ]] && PATH=$PATH:/usr/sbin
fi
MOSQUITTO=$(command -v mosquitto) || { echo "load.sh: mosquitto not installed" >&2; exit 1; }
TARGETS="ternd tern-keygen tern-load mqtt-load" bash "$ROOT/scripts/build.sh" "$BUILD" >/dev/null
TERND=$BUILD/tools/ternd/ternd
KEYGEN=$BUILD/tools/tern-keygen
TLOAD=$BUILD/bench/tern-load
MLOAD=$BUILD/bench/mqtt-load
for f in "$TERND" "$KEYGEN" "$TLOAD" "$MLOAD"; do
  [[ -x $f ]] || { echo "load.sh: missing $f (is libmosquitto-dev installed?)" >&2; exit 1; }
done

# 2 clients a pair, a few descriptors a client (tern: epoll, eventfd,
# sockets), plus the relays' own.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
need=$(( $(echo "$PAIRS" | tr ' ' '\n' | sort -n | tail -1) * 2 * 6 + 256 ))
if [[ $(ulimit -n) != unlimited && $(ulimit -n) -lt $need ]]; then
  echo "load.sh: the fd limit is $(ulimit -n), the largest run needs about $need" >&2
  exit 1
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
[[ -n $OUT ]] || OUT=$HERE/results/$STAMP
mkdir -p "$OUT/raw"
WORK=$(mktemp -d /var/tmp/ternload.XXXXXX) # on disk, so fsync costs what it costs
PIDS=()
cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  done
  [[ -f $WORK/ternd.log ]] && cp "$WORK/ternd.log" "$OUT/raw/ternd.log"
  [[ -f $WORK/mosquitto.log ]] && cp "$WORK/mosquitto.log" "$OUT/raw/mosquitto.log"
  for f in "$WORK"/nats*.log "$WORK"/cternd*.log; do [[ -f $f ]] && cp "$f" "$OUT/raw/"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_file() { # FILE SECONDS
  local i
  for ((i = 0; i < $2 * 10; i++)); do [[ -s $1 ]] && return 0; sleep 0.1; done
  return 1
}
free_tcp_port() { # the first port from $1 up with no TCP listener on loopback
  local p
  for ((p = $1; p < $1 + 100; p++)); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}

# ---- the relays ---------------------------------------------------------------
RELAY_KEY=$("$KEYGEN" "$WORK/relay.key" 2>/dev/null)
# --send-rate 0: each generator session is one "device" sending thousands of
# messages a second, far past the per-device default meant for people.
"$TERND" --key "$WORK/relay.key" --open --listen 127.0.0.1:0 --data-dir "$WORK/ternd" --send-rate 0 \
  --port-file "$WORK/ternd.port" -q >"$WORK/ternd.log" 2>&1 &
TERND_PID=$!; PIDS+=("$TERND_PID")
wait_file "$WORK/ternd.port" 10 || { echo "load.sh: ternd did not start" >&2; cat "$WORK/ternd.log" >&2; exit 1; }
TERN_PORT=$(cat "$WORK/ternd.port")

MQTT_PORT=$(free_tcp_port 18830) || { echo "load.sh: no free TCP port" >&2; exit 1; }
mkdir -p "$WORK/mosquitto"
if [[ $(id -u) -eq 0 ]] && id mosquitto >/dev/null 2>&1; then
  chmod 711 "$WORK" # mosquitto drops root for its own user: let it reach its dir
  chown mosquitto "$WORK/mosquitto"
fi
# Durability: QoS 1 messages and sessions persist, but mosquitto keeps
# them in memory and writes its whole state to mosquitto.db every
# autosave_interval seconds (default 1800) and at shutdown, without an fsync
# per message: a crash loses what arrived since the last save. ternd stores
# each message (fsync of its group commit) before the sender's SENT.
# max_queued_messages 0: never drop a subscriber's QoS 1 messages (the
# default, 1000, drops past it); ternd drops none either.
cat >"$WORK/mosquitto.conf" <<EOF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $WORK/mosquitto/
autosave_interval 1800
max_queued_messages 0
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
EOF
"$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
MOSQ_PID=$!; PIDS+=("$MOSQ_PID")
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$MQTT_PORT") 2>/dev/null && break; sleep 0.1; done
(exec 3<>"/dev/tcp/127.0.0.1/$MQTT_PORT") 2>/dev/null ||
  { echo "load.sh: mosquitto did not start" >&2; cat "$WORK/mosquitto.log" >&2; exit 1; }
MOSQ_VERSION=$({ "$MOSQUITTO" -h 2>/dev/null || true; } | sed -n "1s/.*version \([0-9.]*\).*/\1/p")

echo "load.sh: $MODE: N = $PAIRS, ${DURATION} s a run; ternd on udp/$TERN_PORT (pid $TERND_PID), mosquitto $MOSQ_VERSION on tcp/$MQTT_PORT (pid $MOSQ_PID); results in $OUT"

# ---- the runs -------------------------------------------------------------------
RAW=$OUT/raw/runs.jsonl
: >"$RAW"
CPU_PIDS= # the processes whose CPU a cluster comparison adds up (ternd's, or the cluster's)
ticks() { local t=0 p; for p in $CPU_PIDS; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
HZ=$(getconf CLK_TCK)
run_one() { # SYSTEM PAIRS MODE RATE: appends the generator's JSON line to $RAW
  local sys=$1 n=$2 mode=$3 rate=$4 id="$1-$2-$3" line rc=0
  local common=(--pairs "$n" --duration "$DURATION" --drain "$DRAIN" --window "$WINDOW" --rate "$rate")
  local limit=$((${DURATION%.*} + ${DRAIN%.*} + 90))
  local t0 t1
  t0=$(ticks)
  if [[ $sys == tern ]]; then
    line=$(timeout "$limit" "$TLOAD" --relay "127.0.0.1:$TERN_PORT" --relay-key "$RELAY_KEY" \
      --relay-pid "$TERND_PID" "${common[@]}" 2>"$OUT/raw/$id.err") || rc=$?
  elif [[ $sys == tern-cluster-* ]]; then
    line=$(timeout "$limit" "$TLOAD" --relay "$CLUSTER_RELAYS" --spread --relay-key "$RELAY_KEY" \
      --relay-pid "$CLUSTER_PID1" "${common[@]}" 2>"$OUT/raw/$id.err") || rc=$?
    [[ -z $line ]] || line=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["system"]=sys.argv[2]; r["relays"]=int(sys.argv[3]); print(json.dumps(r))' "$line" "$sys" "${sys##*-}")
  else
    line=$(timeout "$limit" "$MLOAD" --relay "127.0.0.1:$MQTT_PORT" --relay-pid "$MOSQ_PID" \
      "${common[@]}" 2>"$OUT/raw/$id.err") || rc=$?
  fi
  if [[ -z $line ]]; then
    echo "load.sh: $id: no result (exit $rc, see raw/$id.err)" >&2
    printf '{"system":"%s","pairs":%d,"mode":"%s","offered_per_s":%s,"error":"exit %d, see raw/%s.err"}\n' \
      "$sys" "$n" "$mode" "$rate" "$rc" "$id" >>"$RAW"
    return 1
  fi
  t1=$(ticks)
  if [[ $CLUSTER == 1 && -n $CPU_PIDS && $sys == tern* ]]; then
    line=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); d=r.get("delivered",0); r["cpu_us_per_msg_all"]=round((int(sys.argv[2])/int(sys.argv[3]))*1e6/d,2) if d else None; print(json.dumps(r))' "$line" "$((t1 - t0))" "$HZ")
  fi
  echo "$line" >>"$RAW"
  grep -h -- '-load: [0-9]* pairs' "$OUT/raw/$id.err" | sed 's/^/  /' || true
  [[ $rc -eq 0 ]] || echo "load.sh: $id: lost, duplicated or refused messages (exit $rc)" >&2
  return 0
}
peak_of() { # SYSTEM PAIRS: delivered_per_s of that saturated run, or nothing
  python3 - "$RAW" "$1" "$2" <<'EOF'
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["system"] == sys.argv[2] and r["pairs"] == int(sys.argv[3]) and r["mode"] == "saturate" \
            and "error" not in r and r["delivered_per_s"] > 0:
        print("%.0f" % r["delivered_per_s"])
EOF
}

CPU_PIDS=$TERND_PID
for n in $PAIRS; do
  for sys in $SYSTEMS; do run_one "$sys" "$n" saturate 0 || true; done
  for sys in $SYSTEMS; do
    peak=$(peak_of "$sys" "$n")
    if [[ -z $peak ]]; then echo "load.sh: $sys-$n: no peak measured, no half-load run" >&2; continue; fi
    run_one "$sys" "$n" open "$((peak / 2))" || true
  done
done

# ---- the cluster (--cluster) ------------------------------------------------------
if [[ $CLUSTER == 1 ]]; then
  command -v nats-server >/dev/null || bash "$ROOT/scripts/setup.sh"
  "$TERND" --version | grep -q "cluster store" || { echo "load.sh: ternd has no cluster store (libnats-dev?)" >&2; exit 1; }
  NATS_PIDS=()
  declare -a NPORT RPORT
  for i in 1 2 3; do NPORT[$i]=$(free_tcp_port $((14400 + 10 * i))); RPORT[$i]=$(free_tcp_port $((14500 + 10 * i))); done
  for i in 1 2 3; do
    routes=
    for j in 1 2 3; do [[ $j == "$i" ]] || routes="$routes${routes:+,}nats://127.0.0.1:${RPORT[$j]}"; done
    nats-server -n "n$i" -a 127.0.0.1 -p "${NPORT[$i]}" -js -sd "$WORK/js$i" --cluster_name load \
      --cluster "nats://127.0.0.1:${RPORT[$i]}" --routes "$routes" >"$WORK/nats$i.log" 2>&1 &
    NATS_PIDS+=($!); PIDS+=($!)
  done
  for _ in $(seq 1 100); do grep -q "metadata leader" "$WORK"/nats*.log 2>/dev/null && break; sleep 0.1; done
  grep -q "metadata leader" "$WORK"/nats*.log || { echo "load.sh: the NATS cluster elected no leader" >&2; exit 1; }
  NATS_VERSION=$(nats-server --version | awk '{print $NF}')
  for k in 1 2 3; do
    RELAYS=() CLUSTER_RELAYS=
    for i in $(seq 1 "$k"); do
      store="nats://127.0.0.1:${NPORT[$i]}"
      for j in 1 2 3; do [[ $j == "$i" ]] || store="$store,nats://127.0.0.1:${NPORT[$j]}"; done
      rm -f "$WORK/c$i.port"
      "$TERND" --key "$WORK/relay.key" --open --listen 127.0.0.1:0 --data-dir "$WORK/c$k-$i" \
        --store "$store?stream=LOAD$k" --send-rate 0 --port-file "$WORK/c$i.port" -q \
        >>"$WORK/cternd$k-$i.log" 2>&1 &
      RELAYS+=($!); PIDS+=($!)
      wait_file "$WORK/c$i.port" 20 || { echo "load.sh: cluster relay $i did not start" >&2; cat "$WORK/cternd$k-$i.log" >&2; exit 1; }
      CLUSTER_RELAYS="$CLUSTER_RELAYS${CLUSTER_RELAYS:+,}127.0.0.1:$(cat "$WORK/c$i.port")"
    done
    CLUSTER_PID1=${RELAYS[0]}
    CPU_PIDS="${RELAYS[*]} ${NATS_PIDS[*]}"
    echo "load.sh: cluster: $k relay(s) on 3 NATS servers (stream LOAD$k, R3): $CLUSTER_RELAYS"
    for n in $PAIRS; do
      run_one "tern-cluster-$k" "$n" saturate 0 || true
      peak=$(peak_of "tern-cluster-$k" "$n")
      [[ -n $peak ]] && { run_one "tern-cluster-$k" "$n" open "$((peak / 2))" || true; }
    done
    for p in "${RELAYS[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; done
  done
  CPU_PIDS=
fi

# What ternd's store keeps per delivered message once the runs are over
# (issue 17, item 8): read-only, beside the running relay (WAL). Clients
# settle their cmids at most once a second, so the last second's dedup
# rows may remain.
sleep 2
STORE=$(python3 - "$WORK/ternd/relay.db" "$RAW" <<'PY'
import json, os, sqlite3, sys
db, raw = sys.argv[1], sys.argv[2]
delivered = sum(r.get("delivered", 0) for r in map(json.loads, open(raw))
                if r.get("system") == "tern" and "error" not in r)
c = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
one = lambda q: c.execute(q).fetchone()[0]
dedup, inbox = one("SELECT count(*) FROM dedup"), one("SELECT count(*) FROM inbox")
size = os.path.getsize(db) + (os.path.getsize(db + "-wal") if os.path.exists(db + "-wal") else 0)
per = lambda x: round(x / delivered, 4) if delivered else None
print(json.dumps({"tern_delivered": delivered, "store_dedup_rows": dedup, "store_inbox_rows": inbox,
                  "store_bytes": size, "dedup_rows_per_delivered": per(dedup),
                  "store_bytes_per_delivered": per(size)}))
PY
) || STORE='{}'
echo "load.sh: ternd's store after the runs: $STORE"

cat >"$OUT/meta.json" <<EOF
{"mode":"$MODE","stamp":"$STAMP","pairs":"$PAIRS","duration_s":$DURATION,"drain_s":$DRAIN,
 "window":$WINDOW,"host":"$(uname -srm)","cpus":$(nproc),"mosquitto":"$MOSQ_VERSION",
 "cluster":$CLUSTER,"nats_server":"${NATS_VERSION:-}",
 "git":"$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)",
 "command":"$COMMAND","seconds":$(($(date +%s) - T0)),"store":$STORE}
EOF
python3 "$HERE/load_report.py" "$OUT"
echo "load.sh: done in $(($(date +%s) - T0)) s: $OUT/load.md"
