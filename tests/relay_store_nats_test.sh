#!/usr/bin/env bash
# The relay store interface's cases (tests/relay_store_test.c) on the
# cluster store: a nats-server with JetStream, started here on a free
# loopback port with its store in a temporary directory, and each case on
# a stream of its own. A few seconds.
# Usage: relay_store_nats_test.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
if ! command -v nats-server >/dev/null; then
  if [ "${CI:-}" = "true" ]; then echo "FAIL: nats-server missing (scripts/setup.sh installs it)"; exit 1; fi
  echo "SKIP: nats-server is not installed (scripts/setup.sh installs it)"
  exit 77
fi
tmp=$(mktemp -d /tmp/tern-rsnats-XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nats-server -a 127.0.0.1 -p "$port" -js -sd "$tmp" >"$tmp/nats.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.05
done
echo "nats-server (JetStream) on 127.0.0.1:$port"
TERN_TEST_NATS_URL="nats://127.0.0.1:$port" "$build/tests/relay_store_test" --jobs 1
