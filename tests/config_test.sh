#!/usr/bin/env bash
# ternd's config file and --check-config: the installed example documents
# every key and, with every setting uncommented, is a valid config; each
# kind of mistake is an error naming the file, the line and the key; flags
# override the file; every tool answers --version.
# Usage: config_test.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
ternd="$build/tools/ternd/ternd"
example="$build/tools/ternd/ternd.conf"
tmp=$(mktemp -d /tmp/tern-config-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
cd "$tmp"
"$build/tools/tern-keygen" relay.key >/dev/null 2>&1
client=$("$build/tools/tern-keygen" client.key 2>/dev/null)
echo "$client alice" >allow.txt
"$build/tools/tern-token" keygen backend.key >/dev/null 2>&1
echo "# nothing revoked" >revoked.txt

# 1. Every key of the example, uncommented, with this test's files: valid,
# and every setting then comes from the file.
sed -e 's|^#\([a-z-]* = \)|\1|' -e "s|^key = .*|key = $tmp/relay.key|" \
    -e "s|^allow = .*|allow = $tmp/allow.txt|" -e "s|^data-dir = .*|data-dir = $tmp/data|" \
    -e "s|^token-key = .*|token-key = $tmp/backend.key.pub|" -e "s|^revoked = .*|revoked = $tmp/revoked.txt|" \
    "$example" >full.conf
"$ternd" --check-config --config full.conf >out 2>err || fail "the example does not check: $(cat err)"
grep -q '^# configuration OK' out || fail "no verdict: $(cat out)"
if grep -E '# (default|command line)$|not set' out; then fail "settings above not from the file"; fi

# 2. The example has every key ternd --help has (its long flags but
# --config, --check-config, --help, --version), and no other.
"$ternd" --help | grep -oE '^  (-[a-z], )?--[a-z-]+' | sed 's/.*--//' \
  | grep -vxE 'config|check-config|help|version' | sort >flags
grep -oE '^#?[a-z-]+ = ' "$example" | sed 's/^#//; s/ = //' | sort >keys
diff flags keys >/dev/null || fail "example keys differ from ternd's flags: $(diff flags keys)"

# 3. Mistakes: exit 1 under --check-config, 2 when starting; the message
# names file:line and the key.
bad() { # bad 'FILE TEXT' 'EXPECTED MESSAGE'
  printf "key = $tmp/relay.key\nopen = true\n$1" >bad.conf
  set +e; "$ternd" --check-config --config bad.conf >/dev/null 2>err; rc=$?; set -e
  [ "$rc" = 1 ] || fail "--check-config with '$1' exited $rc, want 1"
  grep -qF "bad.conf:$2" err || fail "for '$1' want 'bad.conf:$2' in: $(cat err)"
  set +e; "$ternd" --config bad.conf 2>/dev/null; rc=$?; set -e
  [ "$rc" = 2 ] || fail "starting with '$1' exited $rc, want 2"
}
bad 'max-peers = 10\nbogus = 1\n' "4: unknown key 'bogus'"
bad 'max-peers = lots\n' "3: key 'max-peers': must be a number from 1 to 262144, not 'lots'"
bad 'no-fsync = maybe\n' "3: key 'no-fsync': wants true or false, not 'maybe'"
bad 'listen = nowhere\n' "3: key 'listen': wants HOST:PORT"
bad 'metrics = localhost:9470\n' "3: key 'metrics': wants IP:PORT"
bad '\n\nmax-peers = 1\nmax-peers = 2\n' "6: key 'max-peers' given twice (first on line 5)"
bad '[relay]\nmax-peers = 1\n' "4: key 'max-peers' is in section [relay]"
bad '# fine\n  max-peers = 1\n' "4: a line may not start with a space or tab"
bad 'max-peers\n' "3: not a 'key = value' line"
bad "data-dir = $(printf 'd%.0s' $(seq 250))\n" "3: line longer than"
set +e; "$ternd" --check-config --config /nonexistent.conf 2>err; rc=$?; set -e
[ "$rc" = 1 ] && grep -q "cannot read config file /nonexistent.conf" err || fail "missing file: $rc $(cat err)"
# A file without the allow/open choice says so.
printf 'key = relay.key\n' >half.conf
set +e; "$ternd" --check-config --config half.conf 2>err; rc=$?; set -e
[ "$rc" = 1 ] && grep -q "exactly one of --allow or --open" err || fail "half config: $rc $(cat err)"
# A key that does not load is found by --check-config too.
printf 'key = nothere.key\nopen = true\n' >nokey.conf
set +e; "$ternd" --check-config --config nokey.conf 2>err; rc=$?; set -e
[ "$rc" = 1 ] && grep -q "cannot load relay key nothere.key" err || fail "no key: $rc $(cat err)"

# 4. Flags override the file, and the output says where each came from.
printf 'key = relay.key\nallow = allow.txt\nmax-peers = 10\nlisten = 127.0.0.1:1\n' >ok.conf
"$ternd" --check-config --config ok.conf --max-peers 7 -v >out 2>err || fail "$(cat err)"
grep -qx 'max-peers = 7  # command line' out || fail "override: $(cat out)"
grep -qx 'listen = 127.0.0.1:1  # ok.conf:4' out || fail "file line: $(cat out)"
grep -qx 'verbose = true  # command line' out || fail "-v: $(cat out)"
grep -qx 'retention-days = 30  # default' out || fail "default: $(cat out)"
grep -q 'allow-list allow.txt: 1 keys, 1 users' out || fail "allow-list summary: $(cat out)"

# 4b. --store: a cluster url or nothing; a cluster that is not there stops
# ternd at start, saying so (spec/store.md, "The cluster store").
set +e; "$ternd" --check-config --key relay.key --open --store /var/lib/x.db 2>err; rc=$?; set -e
[ "$rc" = 1 ] && grep -q "store: a cluster url nats://" err || fail "--store path: $rc $(cat err)"
if "$ternd" --version | grep -q "cluster store"; then
  nobody=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  set +e
  timeout 20 "$ternd" --key relay.key --open --listen 127.0.0.1:0 --data-dir data \
    --store "nats://127.0.0.1:$nobody" 2>err; rc=$?
  set -e
  [ "$rc" != 0 ] && [ "$rc" != 124 ] && grep -q "cannot reach the NATS cluster at nats://127.0.0.1:$nobody" err \
    || fail "no cluster: $rc $(cat err)"
fi

# 5. --version on every tool.
for t in tools/ternd/ternd tools/tern-chat tools/tern-keygen tools/tern-token; do
  v=$("$build/$t" --version) || fail "$t --version failed"
  case "$v" in "$(basename "$t") "[0-9]*" (libtern "*")") ;; *) fail "$t --version said: $v" ;; esac
done
echo "config_test: the example's $(wc -l <keys) keys match the flags and check; 10 kinds of mistake name file:line:key; flags override; --version on 4 tools"
