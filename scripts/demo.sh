#!/usr/bin/env bash
# The quick-start demo: installs what is missing, builds, makes keys, starts
# the relay ternd on loopback with an allow-list, and has two clients (alice
# and bob) exchange messages through it, printing what each side sees.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/setup.sh"
bash "$here/scripts/build.sh" "$here/build" >/dev/null
bin="$here/build/tools"
demo="$here/build/demo"
rm -rf "$demo"; mkdir -p "$demo"
cd "$demo"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. keys: one for the relay, one per device (tern-keygen prints the public key)"
relay_pub=$("$bin/tern-keygen" relay.key)
alice_pub=$("$bin/tern-keygen" alice.key)
bob_pub=$("$bin/tern-keygen" bob.key)
echo "relay  $relay_pub"
echo "alice  $alice_pub"
echo "bob    $bob_pub"
ls -l relay.key alice.key bob.key

step "2. allow-list: which device keys may connect, and as whom"
printf '# <client public key> <user>\n%s alice\n%s bob\n' "$alice_pub" "$bob_pub" | tee allow.txt

step "3. start ternd on 127.0.0.1 (log: $demo/ternd.log)"
"$bin/ternd/ternd" --key relay.key --allow allow.txt --listen 127.0.0.1:0 --port-file port \
  >ternd.log 2>&1 &
ternd_pid=$!
trap 'kill $ternd_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s port ] && break; sleep 0.05; done
port=$(cat port)
sed 's/^/  ternd| /' ternd.log

step "4. bob connects and waits for 3 messages; alice sends them"
"$bin/tern-chat" --relay 127.0.0.1:"$port" --relay-key "$relay_pub" --key bob.key \
  --expect 3 --linger 10 </dev/null >bob.out 2>bob.err &
bob_pid=$!
sleep 0.5
printf '@bob hello bob, this is alice\n@bob messages are sealed with ChaCha20-Poly1305\n@bob third and last\n@carol is carol here?\n' \
  | tee /dev/stderr 2> >(sed 's/^/  alice typed| /' >&2) \
  | "$bin/tern-chat" --relay 127.0.0.1:"$port" --relay-key "$relay_pub" --key alice.key --linger 2 \
  | sed 's/^/  alice| /'
wait $bob_pid || true
sed 's/^/  bob| /' bob.out

step "5. an unknown device is refused with its own error"
"$bin/tern-keygen" mallory.key >/dev/null
echo "@bob let me in" | "$bin/tern-chat" --relay 127.0.0.1:"$port" --relay-key "$relay_pub" \
  --key mallory.key 2>/dev/null | sed 's/^/  mallory| /' || true

step "6. a client that pins the wrong relay key is refused too"
echo "@bob hi" | "$bin/tern-chat" --relay 127.0.0.1:"$port" --relay-key "$alice_pub" \
  --key alice.key 2>/dev/null | sed 's/^/  alice (wrong relay key)| /' || true

step "7. the relay's view"
kill -TERM $ternd_pid; wait $ternd_pid || true
trap - EXIT
sed 's/^/  ternd| /' ternd.log
echo
echo "demo finished; files are in $demo"
