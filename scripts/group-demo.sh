#!/usr/bin/env bash
# The IM-service demo (README, "Groups, all devices, push"): installs what is
# missing, builds, starts ternd on loopback with an allow-list, its admin
# socket and push notifications to a small backend of the demo's own; then
# a group of three users: alice with two devices (phone and laptop), bob
# online, carol offline. alice writes to the group from her phone: bob and
# her laptop get it at once, the backend gets a push notification for
# carol's device (who, which device, from whom, how many; never the text),
# carol connects and gets it, and alice's phone sees "2 of 2 members".
# Bounded: every client has --linger, and ternd and the backend are stopped
# on every exit path.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/setup.sh"
TARGETS="ternd tern-chat tern-keygen ternctl" bash "$here/scripts/build.sh" "$here/build" >/dev/null
bin="$here/build/tools"
demo="$here/build/group-demo"
rm -rf "$demo"; mkdir -p "$demo"
cd "$demo"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

step "1. keys: the relay's, and one per device: alice has two (phone and laptop)"
relay_pub=$("$bin/tern-keygen" relay.key 2>/dev/null)
declare -A pub
for d in alice-phone alice-laptop bob carol; do
  pub[$d]=$("$bin/tern-keygen" "$d.key" 2>/dev/null)
  printf '  %-13s %s\n' "$d" "${pub[$d]}"
done
printf '%s alice\n%s alice\n%s bob\n%s carol\n' "${pub[alice-phone]}" "${pub[alice-laptop]}" \
  "${pub[bob]}" "${pub[carol]}" >allow.txt

step "2. the app's backend: takes ternd's push notifications (a real one wakes the phone via APNs/FCM)"
cat >backend.py <<'PY'
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        with open("pushes.log", "a") as f:
            f.write(body + "\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
open("backend.port", "w").write(str(s.server_port))
s.serve_forever()
PY
python3 backend.py &
pids+=($!)
for _ in $(seq 100); do [ -s backend.port ] && break; sleep 0.05; done
echo "  backend on http://127.0.0.1:$(cat backend.port)/push"

step "3. ternd with its store, the allow-list, an admin socket and push to the backend (log: ternd.log)"
"$bin/ternd/ternd" --key relay.key --allow allow.txt --listen 127.0.0.1:0 --port-file port \
  --data-dir data --admin-socket "$demo/admin.sock" \
  --push-url "http://127.0.0.1:$(cat backend.port)/push" --push-interval 2 >ternd.log 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s port ] && break; sleep 0.05; done
port=$(cat port)
chat() { # chat DEVICE [args...]: a tern-chat for DEVICE's key, its state in DEVICE.state
  local d=$1; shift
  "$bin/tern-chat" --relay 127.0.0.1:"$port" --relay-key "$relay_pub" --key "$d.key" \
    --state "$d.state" "$@"
}
ctl() { "$bin/ternctl" --socket "$demo/admin.sock" "$@"; }

step "4. carol's phone has used the app before, and is now asleep (offline)"
chat carol --linger 2 </dev/null 2>&1 | grep connected | sed 's/^/  carol| /'

step "5. the backend makes the group: ternctl group-set @team alice bob carol"
ctl group-set @team alice bob carol | sed 's/^/  ternctl| /'
ctl group-show @team | sed 's/^/  @team member: /'

step "6. bob and alice's laptop are online; alice writes to #team from her phone"
chat bob --expect 1 --linger 15 </dev/null >bob.out 2>/dev/null &
bob_pid=$!
chat alice-laptop --expect 1 --linger 15 </dev/null >laptop.out 2>/dev/null &
laptop_pid=$!
sleep 1
echo '#team dinner at 8?' | chat alice-phone --linger 3 2>/dev/null | sed 's/^/  alice (phone)| /'
wait $bob_pid $laptop_pid || true
sed 's/^/  bob| /' bob.out
sed 's/^/  alice (laptop)| /' laptop.out

step "7. carol is offline: the backend got a push notification for her device (no text in it)"
for _ in $(seq 50); do [ -s pushes.log ] && break; sleep 0.1; done
sed 's/^/  backend| POST \/push /' pushes.log

step "8. the push woke carol's phone: it connects and gets the message"
chat carol --expect 1 --linger 10 </dev/null 2>/dev/null | sed 's/^/  carol| /'

step "9. alice's phone, back online: delivered to 2 of the 2 other members"
chat alice-phone --linger 3 </dev/null 2>/dev/null | sed 's/^/  alice (phone)| /'

step "10. the relay's view"
sleep 0.5
grep -E "group @team|push" ternd.log | sed 's/^/  ternd| /' || true
echo
echo "group demo finished; files are in $demo"
