#!/usr/bin/env bash
# ternctl against a running ternd: ternd runs with --admin-socket in a temp
# dir (mode 0600 checked), alice and bob connect with tern-chat; ternctl
# status, stats and sessions answer (both users listed; --json parses), kick
# ends alice's session (ternd logs it, her tern-chat stops, sessions lists
# bob alone), reload re-reads the allow-list, a bad command and a missing
# socket fail with a clear message, and the socket is gone after ternd
# exits. Usage: ternctl_test.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
bin="$build/tools"
tmp=$(mktemp -d /tmp/tern-ctl-XXXXXX)
pids=()
ternd_pid=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$ternd_pid" ] && kill "$ternd_pid" 2>/dev/null && wait "$ternd_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- ternd log"; cat "$tmp/ternd.log"; exit 1; }
ctl() { "$bin/ternctl" --socket "$tmp/admin.sock" --timeout 5 "$@"; }

cd "$tmp"
relay_pub=$("$bin/tern-keygen" relay.key 2>/dev/null)
alice_pub=$("$bin/tern-keygen" alice.key 2>/dev/null)
bob_pub=$("$bin/tern-keygen" bob.key 2>/dev/null)
printf '%s alice\n%s bob\n' "$alice_pub" "$bob_pub" >allow.txt
"$bin/ternd/ternd" --key relay.key --allow allow.txt --listen 127.0.0.1:0 --port-file port \
  --data-dir data --no-fsync --admin-socket "$tmp/admin.sock" 2>ternd.log &
ternd_pid=$!
for _ in $(seq 100); do [ -s port ] && break; sleep 0.05; done
[ -s port ] || fail "ternd did not start"
port=$(cat port)
[ -S admin.sock ] || fail "no socket at $tmp/admin.sock"
mode=$(stat -c %a admin.sock)
[ "$mode" = 600 ] || fail "socket mode $mode, want 600"

# alice and bob stay online until the test ends: their input is a fifo the
# test holds open (closed when it exits).
chat() { # chat NAME: online in the background, output in NAME.out
  mkfifo "$1.in"
  "$bin/tern-chat" --relay 127.0.0.1:"$port" --relay-key "$relay_pub" --key "$1.key" \
    --keepalive off --linger 1 <"$1.in" >"$1.out" 2>"$1.err" &
  pids+=($!)
  exec {fd}>"$1.in"
}
chat alice; alice_pid=${pids[-1]}
chat bob
for _ in $(seq 100); do
  [ "$(ctl --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["peers_connected"])')" = 2 ] && break
  sleep 0.1
done

# status: text and JSON
ctl status >status.txt || fail "ternctl status"
grep -q "^version  *ternd " status.txt || fail "status: $(cat status.txt)"
grep -q "^peers  *2 connected" status.txt || fail "status peers: $(cat status.txt)"
grep -q "^listening  *udp 127.0.0.1:$port" status.txt || fail "status listening: $(cat status.txt)"
ctl --json status >status.json
python3 -m json.tool status.json >/dev/null || fail "status --json does not parse: $(cat status.json)"
python3 - status.json "$port" <<'PY' || fail "status --json: $(cat status.json)"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["peers_connected"] == 2, s
assert s["listen_udp"] == "127.0.0.1:" + sys.argv[2], s
assert s["uptime_s"] >= 0 and s["version"], s
PY

# stats
ctl stats >stats.txt || fail "ternctl stats"
grep -q "^handshakes_ok  *2$" stats.txt || fail "stats: $(cat stats.txt)"
ctl --json stats >stats.json
python3 -m json.tool stats.json >/dev/null || fail "stats --json does not parse"
python3 -c 'import json,sys; s=json.load(open("stats.json")); assert s["peers_connected"] == 2 and s["handshakes_ok"] == 2, s' \
  || fail "stats --json: $(cat stats.json)"

# sessions: both users, with their device keys
ctl sessions >sessions.txt || fail "ternctl sessions"
grep -q "^alice  *${alice_pub:0:16} " sessions.txt || fail "sessions (alice): $(cat sessions.txt)"
grep -q "^bob  *${bob_pub:0:16} " sessions.txt || fail "sessions (bob): $(cat sessions.txt)"
ctl --json sessions >sessions.json
python3 -m json.tool sessions.json >/dev/null || fail "sessions --json does not parse"
python3 - sessions.json "$alice_pub" "$bob_pub" <<'PY' || fail "sessions --json: $(cat sessions.json)"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["count"] == 2, s
users = {x["user"]: x for x in s["sessions"]}
assert set(users) == {"alice", "bob"}, s
assert users["alice"]["device"] == sys.argv[2].lower() and users["bob"]["device"] == sys.argv[3].lower(), s
assert all(x["address"].startswith("127.0.0.1:") and x["transport"] == "udp" for x in s["sessions"]), s
PY

# kick alice: her session ends, ternd logs it, bob stays
ctl kick alice >kick.txt || fail "ternctl kick alice"
grep -q "kicked 1 session of alice" kick.txt || fail "kick: $(cat kick.txt)"
for _ in $(seq 50); do kill -0 "$alice_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$alice_pid" 2>/dev/null && fail "alice's tern-chat still runs after the kick"
grep -q "user alice (.*): kicked by the operator" ternd.log || fail "ternd did not log the kick"
ctl --json sessions >sessions2.json
python3 -c 'import json; s=json.load(open("sessions2.json")); assert s["count"] == 1 and s["sessions"][0]["user"] == "bob", s' \
  || fail "sessions after the kick: $(cat sessions2.json)"
if ctl kick alice 2>kick2.err; then fail "a second kick of alice succeeded"; fi
grep -q "no session of user 'alice'" kick2.err || fail "second kick: $(cat kick2.err)"

# remove-device: the relay forgets alice's device (it knew it: she
# connected); a second time it does not know it; a bad key is refused
ctl remove-device "$alice_pub" >remove.txt || fail "ternctl remove-device"
grep -q "device ${alice_pub:0:16}... removed" remove.txt || fail "remove-device: $(cat remove.txt)"
grep -q "device ${alice_pub:0:16}\.\.\. removed: its cursor no longer holds messages back" ternd.log \
  || fail "ternd did not log the removal"
ctl remove-device "$alice_pub" >remove2.txt || fail "second ternctl remove-device"
grep -q "was not known" remove2.txt || fail "second remove-device: $(cat remove2.txt)"
if ctl remove-device 12ab 2>remove3.err; then fail "remove-device with a bad key succeeded"; fi
grep -q "64 hex digits" remove3.err || fail "bad key: $(cat remove3.err)"

# group-set / group-show (spec/messages.md §14): members from the command
# line and from stdin; a name without '@' is refused
ctl group-set @team alice bob >gset.txt || fail "ternctl group-set"
grep -q "group @team: 2 members" gset.txt || fail "group-set: $(cat gset.txt)"
ctl group-show @team >gshow.txt || fail "ternctl group-show"
[ "$(cat gshow.txt)" = "$(printf 'alice\nbob')" ] || fail "group-show: $(cat gshow.txt)"
seq 1 600 | sed 's/^/user/' | ctl group-set @big - >gbig.txt || fail "group-set from stdin"
grep -q "group @big: 600 members" gbig.txt || fail "group-set from stdin: $(cat gbig.txt)"
ctl --json group-show @big >gbig.json || fail "group-show --json"
python3 -c 'import json; s=json.load(open("gbig.json")); assert len(s["members"]) == 600, s' \
  || fail "group-show --json: $(head -c 200 gbig.json)"
if ctl group-set team alice 2>gbad.err; then fail "group-set without '@' succeeded"; fi
grep -q "a group is '@name'" gbad.err || fail "group-set without '@': $(cat gbad.err)"
grep -q "group @big: 600 member(s)" ternd.log || fail "ternd did not log the group change"

# reload: the SIGHUP path; bob taken off the list is disconnected
printf '%s alice\n' "$alice_pub" >allow.txt
ctl --json reload >reload.json || fail "ternctl reload"
python3 -c 'import json; s=json.load(open("reload.json")); assert s["keys"] == 1 and s["disconnected"] == 1, s' \
  || fail "reload: $(cat reload.json)"
grep -q "allow-list reloaded: 1 keys, 1 users" ternd.log || fail "ternd did not log the reload"

# errors: an unknown command, a missing socket, a bad request on the socket
if "$bin/ternctl" --socket admin.sock frobnicate 2>unknown.err; then fail "unknown command succeeded"; fi
grep -q "unknown command 'frobnicate'" unknown.err || fail "unknown command: $(cat unknown.err)"
if "$bin/ternctl" --socket "$tmp/nothing.sock" status 2>missing.err; then fail "missing socket succeeded"; fi
grep -q "no admin socket at $tmp/nothing.sock" missing.err || fail "missing socket: $(cat missing.err)"
answer=$(python3 - "$tmp/admin.sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
s.sendall(b"text frobnicate\n"); print(s.recv(512).decode().strip())
PY
)
[ "$answer" = "error unknown command 'frobnicate' (status, stats, sessions, kick, reload, drain, remove-device, group-set, group-show)" ] || fail "raw request: $answer"
# A client that sends a line too long is told so; one that sends nothing
# does not hold up others, and is closed after ternd's 5 s deadline.
python3 - "$tmp/admin.sock" "$bin/ternctl" <<'PY' || fail "bad clients"
import socket, subprocess, sys, time
idle = socket.socket(socket.AF_UNIX); idle.settimeout(10); idle.connect(sys.argv[1])
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
s.sendall(b"x" * 80000); assert s.recv(512).startswith(b"error request longer"), "no error"
subprocess.run([sys.argv[2], "--socket", sys.argv[1], "--timeout", "2", "status"], check=True,
               stdout=subprocess.DEVNULL)
t0 = time.monotonic(); assert idle.recv(16) == b"", "idle client got an answer"
assert 3 < time.monotonic() - t0 + 0.5 < 7, "idle client closed after %.1f s" % (time.monotonic() - t0)
PY
ctl status >/dev/null || fail "status after the bad clients"

# The socket is removed when ternd exits.
kill "$ternd_pid"
rc=0; wait "$ternd_pid" || rc=$?
ternd_pid=
[ "$rc" = 0 ] || fail "ternd exited with status $rc (a sanitizer report is in its log)"
[ -e admin.sock ] && fail "socket left after ternd exited"
echo "ternctl_test: OK"
