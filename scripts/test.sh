#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite through ctest.
#   bash scripts/test.sh              plain build in build/
#   bash scripts/test.sh --sanitize   ASan+UBSan build in build-asan/, without
#                                     the two long real-network runs (below)
#   bash scripts/test.sh --tsan       ThreadSanitizer build in build-tsan/: the
#                                     tests that run client threads outside
#                                     Criterion (its runner does not survive
#                                     TSan): thread_check
#   bash scripts/test.sh --poll       TERN_POLLER=poll build in build-poll/ (plain
#                                     POSIX poll(), pipes and fcntl: what a
#                                     system without epoll runs), the whole
#                                     suite less the long runs --sanitize
#                                     skips and the cluster store's own
#                                     tests (they do not touch the poller)
#   bash scripts/test.sh --kqueue     TERN_POLLER=kqueue build in build-kqueue/
#                                     against libkqueue (not in Debian 12: set
#                                     PKG_CONFIG_PATH to where it is installed),
#                                     the client and relay tests
# Tests that need root and network namespaces skip with a message when run
# without them; with CI=true they must run.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/setup.sh"
dir="$here/build"; extra=(); skip=()
if [ "${1:-}" = "--sanitize" ]; then
  dir="$here/build-asan"; extra=(-DTERN_SANITIZE=ON)
  # nat_keepalive_test (about 4.5 min of real NAT timeouts) and
  # linkem_selftest (the bench's delay emulator) run once, in the plain
  # build: the library code they drive (probes, the learner, the link) is
  # run under the sanitizers by kalearn_test, probesvc_test, keepalive_test,
  # link_test and the fuzzers. paths_test, nat64_test and tcp_test
  # (namespaces, about 50 s together) do run under the sanitizers: they
  # drive the socket layer, which parses what arrives from the network (TCP
  # streams included).
  # budget_test measures ternd's RSS, which ASan's quarantine of freed
  # memory makes meaningless; the accounting it checks is run under the
  # sanitizers by rcore_test. cookie_flood_test measures connect times
  # under a flood faster than the relay reads, which a sanitized relay
  # (several times slower) cannot meet; the cookie path runs under the
  # sanitizers in cookie_test and fuzz_cookie. The cluster store's code
  # runs under the sanitizers in cluster_store_test, cluster_relay_test and
  # relay_store_nats_test, against real servers; cluster_chaos_test (3 NATS
  # nodes and 3 relays as processes, about 40 s) drives the same code and
  # runs once, in the plain build. drain_test (1,000 clients, about 37 s
  # here) measures how reconnects spread in time, which a sanitized relay
  # and clients distort (it failed here once on a one-second burst); the
  # drain path runs under the sanitizers in drain_signals_test.
  skip=(-E 'nat_keepalive_test|linkem_selftest|budget_test|cookie_flood_test|cluster_chaos_test|drain_test')
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
elif [ "${1:-}" = "--poll" ]; then
  dir="$here/build-poll"; extra=(-DTERN_POLLER=poll)
  # budget_test (about 20 s) tests the relay core's budget, not the poller;
  # cookie_flood_test (about 14 s) the socket layer's cookies, the same on
  # both pollers. cluster_store_test (about 40 s: the cluster store's log,
  # snapshots, confirmations and cross-check against a real nats-server)
  # and cluster_chaos_test (about 40 s, processes in namespaces) exercise
  # the store, not the poller; the store's wake-up on the poll() build's
  # pipe runs here in cluster_relay_test and relay_store_nats_test.
  # sim_test (about 30 s) drives the sans-I/O cores and the client store
  # only: no socket, no poller. saturated_chaos_test drives the relay with
  # bench/tern-load, which is built with epoll only (it would only say
  # "skipped" here).
  skip=(-E 'nat_keepalive_test|linkem_selftest|budget_test|cookie_flood_test|cluster_store_test|cluster_chaos_test|sim_test|saturated_chaos_test')
elif [ "${1:-}" = "--kqueue" ]; then
  pkg-config --exists libkqueue || {
    echo "test.sh --kqueue: libkqueue not found (pkg-config libkqueue); Debian 12 does not" \
         "package it: build it and point PKG_CONFIG_PATH at its lib/pkgconfig" >&2; exit 1; }
  # The library finds libkqueue through its RUNPATH; the tests' helper
  # programs run from the build tree too.
  export LD_LIBRARY_PATH="$(pkg-config --variable=libdir libkqueue)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  dir="$here/build-kqueue"; extra=(-DTERN_POLLER=kqueue -DTERN_BUILD_BENCH=OFF)
  skip=(-R '^(poller_test|relay_test|messaging_test|ternd_test|resolve_test|race_test|link_test|thread_check|tcp_test|config_test|notify_test|ternctl_test|example_.*)$')
elif [ "${1:-}" = "--tsan" ]; then
  dir="$here/build-tsan"; extra=(-DTERN_TSAN=ON -DTERN_BUILD_BENCH=OFF)
  skip=(-R '^thread_check$')
  export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
fi
bash "$here/scripts/build.sh" "$dir" "${extra[@]}"
if [ "${1:-}" = "--poll" ]; then
  # What a system without them would miss: the poll() build must not call
  # any of Linux's own waiting or descriptor-flag interfaces.
  if nm -D --undefined-only "$dir/lib/libtern.so" | grep -E ' (epoll_|eventfd|signalfd|accept4|pipe2)'; then
    echo "test.sh --poll: libtern.so still calls the Linux interfaces above" >&2; exit 1
  fi
fi
if [ -z "${1:-}" ]; then
  # The plain build: nat_keepalive_test spends its 4-5 minutes waiting for
  # a kernel NAT to forget mappings (a few idle processes, almost no CPU),
  # so it runs beside the rest of the suite instead of after it; its
  # output comes at the end. Its namespaces are its own (named after its
  # pid), like every namespace test's.
  nat_out="$dir/nat_keepalive_test.out"
  # (Run directly, not by a second ctest in the same build directory: the
  # two would write the same Testing/ logs.)
  timeout 900 bash "$here/tests/nat_keepalive_test.sh" "$dir" >"$nat_out" 2>&1 &
  nat_pid=$!
  rc=0
  ctest --test-dir "$dir" --output-on-failure --timeout 900 -E '^nat_keepalive_test$' || rc=$?
  nat_rc=0
  wait "$nat_pid" || nat_rc=$?
  echo "== nat_keepalive_test (run beside the suite above) =="
  cat "$nat_out"
  case $nat_rc in
    0) echo "nat_keepalive_test: passed" ;;
    77) echo "nat_keepalive_test: skipped (see above)" ;;
    124) echo "nat_keepalive_test: FAILED: still running after 900 s" ; rc=1 ;;
    *) echo "nat_keepalive_test: FAILED (exit $nat_rc)" ; rc=1 ;;
  esac
  (( rc == 0 )) || exit 1
  exit 0
fi
ctest --test-dir "$dir" --output-on-failure --timeout 900 "${skip[@]}"
