#!/usr/bin/env bash
# The cluster demo (spec/store.md, "The cluster store"): installs what is
# missing, builds, starts a 3-node NATS JetStream cluster and 3 ternd
# relays on it (all on loopback), and shows alice on one relay and bob on
# another talking; then alice's relay is killed with SIGKILL in the middle
# of the conversation and she carries on through another relay.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/setup.sh"
TARGETS="ternd tern-chat tern-keygen" bash "$here/scripts/build.sh" "$here/build" >/dev/null
bin="$here/build/tools"
"$bin/ternd/ternd" --version | grep -q "cluster store" || {
  echo "cluster-demo: ternd was built without the cluster store (libnats-dev missing?)" >&2; exit 1; }
demo="$here/build/cluster-demo"
rm -rf "$demo"; mkdir -p "$demo"
cd "$demo"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "1. a NATS cluster of three JetStream servers on 127.0.0.1 (logs: nats1.log ...)"
declare -a cport rport
for n in 1 2 3; do cport[$n]=$(free_port); rport[$n]=$(free_port); done
for n in 1 2 3; do
  routes=
  for m in 1 2 3; do [ "$m" = "$n" ] || routes="$routes${routes:+,}nats://127.0.0.1:${rport[$m]}"; done
  mkdir -p "js$n"
  nats-server -n "n$n" -a 127.0.0.1 -p "${cport[$n]}" -js -sd "js$n" --cluster_name demo \
    --cluster "nats://127.0.0.1:${rport[$n]}" --routes "$routes" >"nats$n.log" 2>&1 &
  pids+=($!)
  echo "  nats-server n$n: clients on 127.0.0.1:${cport[$n]}, cluster on ${rport[$n]}"
done
for _ in $(seq 100); do grep -q "metadata leader" nats*.log 2>/dev/null && break; sleep 0.1; done
grep -h "metadata leader" nats*.log | head -1 | sed 's/^/  /'

step "2. keys: one relay key, shared by the three relays (to a client they are one relay)"
relay_pub=$("$bin/tern-keygen" relay.key 2>/dev/null)
alice_pub=$("$bin/tern-keygen" alice.key 2>/dev/null)
bob_pub=$("$bin/tern-keygen" bob.key 2>/dev/null)
printf '%s alice\n%s bob\n' "$alice_pub" "$bob_pub" >allow.txt
echo "  relay $relay_pub"

step "3. three relays, each with the cluster as its store (--store nats://...)"
declare -a relay_pid uport
for i in 1 2 3; do
  store="nats://127.0.0.1:${cport[$i]}"
  for m in 1 2 3; do [ "$m" = "$i" ] || store="$store,nats://127.0.0.1:${cport[$m]}"; done
  uport[$i]=$(free_port)
  # A JetStream cluster that has just elected its leader may not yet place
  # a three-replica stream (JetStream error 10005): ternd then exits saying
  # so, and is started again a second later (at most 5 times).
  for attempt in 1 2 3 4 5; do
    "$bin/ternd/ternd" --key relay.key --allow allow.txt --listen "127.0.0.1:${uport[$i]}" \
      --data-dir "data$i" --store "$store" >>"relay$i.log" 2>&1 &
    relay_pid[$i]=$!
    pids+=($!)
    for _ in $(seq 100); do
      grep -q "listening on" "relay$i.log" 2>/dev/null && break
      kill -0 "${relay_pid[$i]}" 2>/dev/null || break
      sleep 0.05
    done
    grep -q "listening on" "relay$i.log" 2>/dev/null && break
    echo "  relay$i: could not open the cluster store yet (attempt $attempt; relay$i.log says why); again in 1 s"
    sleep 1
  done
  grep -h "cluster store" "relay$i.log" | sed "s/^/  relay$i| /"
done
A="127.0.0.1:${uport[1]}" B="127.0.0.1:${uport[2]}" C="127.0.0.1:${uport[3]}"

chat() { # chat NAME RELAYS [args...]
  local name=$1 relays=$2; shift 2
  "$bin/tern-chat" --relay "$relays" --relay-key "$relay_pub" --key "$name.key" --state "$name.state" "$@"
}

step "4. bob connects to relay 2 and waits; alice, on relay 1, sends him two messages"
chat bob "$B,$A,$C" --expect 3 --linger 40 </dev/null >bob.out 2>bob.err &
bob_pid=$!
pids+=($bob_pid)
sleep 0.5
printf '@bob hi bob, I am on relay 1\n@bob you are on relay 2, and this still reaches you\n' \
  | chat alice "$A,$C,$B" --linger 10 2>alice1.err | sed 's/^/  alice| /'

step "5. relay 1 is killed with SIGKILL; alice comes back through her next endpoint (relay 3)"
kill -9 "${relay_pid[1]}"; wait "${relay_pid[1]}" 2>/dev/null || true
echo "  (relay 1 killed)"
echo '@bob relay 1 is gone, this went through relay 3' \
  | chat alice "$A,$C,$B" --linger 10 2>alice2.err | sed 's/^/  alice| /'

step "6. what bob got, on relay 2 the whole time"
wait "$bob_pid" || true
sed 's/^/  bob| /' bob.out

step "7. the relays' view of the cluster"
for i in 1 2 3; do grep -h "cluster store\|user .* connected" "relay$i.log" | sed "s/^/  relay$i| /"; done
echo
echo "cluster demo finished; files are in $demo"
