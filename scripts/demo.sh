#!/usr/bin/env bash
# The quick-start demo: installs what is missing, builds, makes keys, starts
# the relay ternd on loopback with an allow-list, and has two clients (alice
# and bob) exchange messages through it, printing what each side sees.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/setup.sh"
TARGETS="ternd tern-chat tern-keygen" bash "$here/scripts/build.sh" "$here/build" >/dev/null
bin="$here/build/tools"
demo="$here/build/demo"
rm -rf "$demo"; mkdir -p "$demo"
cd "$demo"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. keys: one for the relay, one per device (tern-keygen prints the public key)"
relay_pub=$("$bin/tern-keygen" relay.key 2>/dev/null)
alice_pub=$("$bin/tern-keygen" alice.key 2>/dev/null)
bob_pub=$("$bin/tern-keygen" bob.key 2>/dev/null)
echo "relay  $relay_pub"
echo "alice  $alice_pub"
echo "bob    $bob_pub"
carol_pub=$("$bin/tern-keygen" carol.key 2>/dev/null)
echo "carol  $carol_pub"
ls -l relay.key alice.key bob.key carol.key

step "2. allow-list: which device keys may connect, and as whom"
printf '# <client public key> <user>\n%s alice\n%s bob\n%s carol\n' "$alice_pub" "$bob_pub" "$carol_pub" | tee allow.txt

start_ternd() {
  "$bin/ternd/ternd" --key relay.key --allow allow.txt --listen 127.0.0.1:"${port:-0}" \
    --port-file port --data-dir data >>ternd.log 2>&1 &
  ternd_pid=$!
  for _ in $(seq 100); do [ -s port ] && break; sleep 0.05; done
  port=$(cat port)
}
chat() { # chat NAME [args...]: a tern-chat for NAME's key, its state in NAME.state
  local name=$1; shift
  "$bin/tern-chat" --relay 127.0.0.1:"$port" --relay-key "$relay_pub" --key "$name.key" \
    --state "$name.state" "$@"
}

step "3. start ternd on 127.0.0.1 with its store in $demo/data (log: ternd.log)"
start_ternd
trap 'kill $ternd_pid 2>/dev/null || true' EXIT
sed 's/^/  ternd| /' ternd.log

step "4. bob is online; alice sends him three messages: 'sent' = the relay stored it, 'delivered' = bob has it"
chat bob --expect 3 --linger 20 </dev/null >bob.out 2>bob.err &
bob_pid=$!
sleep 0.5
printf '@bob hello bob, this is alice\n@bob messages are sealed with ChaCha20-Poly1305\n@bob third and last\n' \
  | chat alice 2>/dev/null | sed 's/^/  alice| /'
wait $bob_pid || true
sed 's/^/  bob| /' bob.out
echo "  bob's keepalive: tern probes how long the network's NAT keeps an idle mapping (on"
echo "  loopback there is no NAT, so it only starts; spec/keepalive.md):"
grep -m2 keepalive bob.err | sed 's/^tern-chat: /  bob| /' || true

step "5. carol is offline: the relay keeps alice's message, survives kill -9, and hands it over later"
echo '@carol are you there? (sent while you were offline)' | chat alice 2>/dev/null | sed 's/^/  alice| /'
kill -KILL $ternd_pid; wait $ternd_pid 2>/dev/null || true
echo "  (ternd killed with SIGKILL and restarted on the same port)"
rm -f port; start_ternd
chat carol --linger 10 </dev/null 2>/dev/null | sed 's/^/  carol| /'
echo "  alice comes back and gets carol's delivery receipt:"
chat alice --linger 10 </dev/null 2>/dev/null | sed 's/^/  alice| /'

step "6. an unknown device is refused with its own error"
"$bin/tern-keygen" mallory.key >/dev/null 2>&1
echo "@bob let me in" | chat mallory --linger 10 2>&1 >/dev/null | grep disconnected | sed 's/^/  mallory| /' || true

step "7. a client that pins the wrong relay key is refused too"
echo "@bob hi" | "$bin/tern-chat" --relay 127.0.0.1:"$port" --relay-key "$alice_pub" \
  --key alice.key --linger 10 2>&1 >/dev/null | grep disconnected | sed 's/^/  alice (wrong relay key)| /' || true

step "8. the relay's view"
kill -TERM $ternd_pid; wait $ternd_pid || true
trap - EXIT
sed 's/^/  ternd| /' ternd.log
echo
echo "demo finished; files are in $demo"
