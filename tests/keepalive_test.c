/*
 * The keepalive learner inside a real client and relay, on loopback
 * (spec/keepalive.md): probes go out on their own sockets to the relay's
 * ENet port, the relay's probe service answers, the client's interval,
 * state and events follow, and what was learned is kept per network in the
 * state directory. Loopback has no NAT, so every probe is answered: the
 * tests use a tiny ceiling (3 s) to finish a search in seconds. Real NAT
 * timeouts are tests/nat_keepalive_test.sh's.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "loop.h"
#include "tmpdir.h"
#include "tern/tern.h"

static char dir[4096];

static void setup(void) { cr_assert_eq(tern__test_mkdtemp(dir, sizeof dir), 0); }
static void teardown(void) { tern__test_rmtree(dir); }

TestSuite(keepalive, .init = setup, .fini = teardown, .timeout = 120);

static void small_search(tern_client_config *cfg) {
  cfg->keepalive_floor_ms = 1000;
  cfg->keepalive_min_ms = 1000;
  cfg->keepalive_ceiling_ms = 3000;
}

static tern_keepalive_info info_of(loop *l, size_t i) {
  tern_keepalive_info ki;
  tern_client_keepalive(l->clients[i], &ki);
  return ki;
}

static uint64_t mono_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

/* Pumps until client i's keepalive state is `state` (its events are
 * drained), or timeout_ms passes. */
static int wait_state(loop *l, size_t i, tern_keepalive_state state, int timeout_ms) {
  loop_event ev;
  uint64_t end = mono_ms() + (uint64_t)timeout_ms;
  while (info_of(l, i).state != state && mono_ms() < end)
    (void)loop_wait(l, i, TERN_EV_KEEPALIVE, 100, &ev);
  return info_of(l, i).state == state;
}

/* A relay on 127.0.0.1 as loop_start makes it, with probes on or off and
 * ENet timeouts (0: the defaults). */
static void relay_with(loop *l, int probes, uint32_t timeout_min, uint32_t timeout_max) {
  tern_relay_config rc;
  loop_relay_config(l, &rc);
  rc.probes = probes;
  if (timeout_min) rc.timeout_min_ms = timeout_min;
  if (timeout_max) rc.timeout_max_ms = timeout_max;
  loop_start_relay(l, &rc);
}

/* Services everything for about ms milliseconds, dropping client i's events. */
static void settle(loop *l, size_t i, int ms) {
  loop_event ev;
  for (int t = 0; t < ms; t += 50) (void)loop_wait(l, i, TERN_EV_NONE, 50, &ev);
}

Test(keepalive, client_learns_through_the_relay_and_reports_it) {
  loop l;
  loop_start(&l, NULL, NULL, 0);
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "phone");
  small_search(&cfg);
  cfg.network = "wifi:home";
  size_t a = loop_add_client(&l, &cfg);
  tern_keepalive_info ki = info_of(&l, a);
  cr_assert_eq(ki.state, TERN_KA_UNKNOWN);
  cr_assert_str_eq(ki.network, "wifi:home");
  cr_assert_eq(ki.interval_ms, 1000, "unproven: floor x 3/5, at least 1 s");
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 5000, &ev));
  /* The first KEEPALIVE event: probes are out. */
  cr_assert(loop_wait(&l, a, TERN_EV_KEEPALIVE, 5000, &ev));
  cr_assert_str_eq(ev.user, "wifi:home");
  cr_assert(wait_state(&l, a, TERN_KA_LEARNED, 30000), "state %d", info_of(&l, a).state);
  ki = info_of(&l, a);
  /* Every probe is answered on loopback, up to the ceiling (3 s); a REPLY
   * credits the silence since the ACK came, which may be a ms or so less. */
  cr_assert(ki.proven_ms >= 2900 && ki.proven_ms <= 3000, "proven %u ms", ki.proven_ms);
  cr_assert_eq(ki.interval_ms, ki.proven_ms - 1000, "proven minus max(1 s, 10 %%)");
  cr_assert_neq(ki.learned_at_ms, 0);
  cr_assert_geq(ki.probes, 3);
  cr_assert_geq(ki.probe_datagrams, 2 * ki.probes, "a REQUEST and at least its ACK each");
  tern_relay_stats rs;
  tern_relay_get_stats(l.relay, &rs);
  cr_assert_geq(rs.probe_requests, 3);
  cr_assert_geq(rs.probe_replies, 3);
  cr_assert_eq(rs.probe_rejected, 0);
  /* The foreground caps the interval only above the cap. */
  tern_client_set_foreground(l.clients[a], 1);
  cr_assert_eq(info_of(&l, a).interval_ms, ki.interval_ms);
  cr_assert(info_of(&l, a).foreground);
  loop_stop(&l);
}

/* What was learned on a network is kept in the state directory, reused
 * when the app comes back on that network (no probes), and a new network
 * is learned on its own. */
Test(keepalive, learned_values_are_kept_per_network) {
  loop l;
  loop_start(&l, NULL, NULL, 0);
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "phone");
  small_search(&cfg);
  cfg.state_dir = dir;
  cfg.network = "wifi:home";
  size_t a = loop_add_client(&l, &cfg);
  cr_assert(wait_state(&l, a, TERN_KA_LEARNED, 30000));
  uint64_t learned_at = info_of(&l, a).learned_at_ms;
  uint32_t proven = info_of(&l, a).proven_ms;
  tern_client_free(l.clients[a]);
  l.clients[a] = NULL;

  /* The app restarts on the same network: learned, at once, no probes. */
  size_t b = loop_add_client(&l, &cfg);
  tern_keepalive_info ki = info_of(&l, b);
  cr_assert_eq(ki.state, TERN_KA_LEARNED);
  cr_assert_eq(ki.proven_ms, proven);
  cr_assert_eq(ki.learned_at_ms, learned_at);
  loop_event ev;
  cr_assert(loop_wait(&l, b, TERN_EV_CONNECTED, 5000, &ev));
  settle(&l, b, 1000);
  cr_assert_eq(info_of(&l, b).probes, 0, "a fresh learned value is not probed again");

  /* Another network: nothing known there, so it learns... */
  cr_assert_eq(tern_client_set_network(l.clients[b], "cell:carrier"), 0);
  ki = info_of(&l, b);
  cr_assert_str_eq(ki.network, "cell:carrier");
  cr_assert_neq(ki.state, TERN_KA_LEARNED);
  cr_assert_eq(ki.interval_ms, 1000);
  cr_assert(loop_wait(&l, b, TERN_EV_CONNECTED, 5000, &ev), "the link is rebuilt on the new network");
  cr_assert(wait_state(&l, b, TERN_KA_LEARNED, 30000));
  uint64_t probes = info_of(&l, b).probes;
  cr_assert_geq(probes, 3);
  /* ... and back home the old value is there again without probing. */
  cr_assert_eq(tern_client_set_network(l.clients[b], "wifi:home"), 0);
  ki = info_of(&l, b);
  cr_assert_eq(ki.state, TERN_KA_LEARNED);
  cr_assert_eq(ki.learned_at_ms, learned_at);
  cr_assert(loop_wait(&l, b, TERN_EV_CONNECTED, 5000, &ev));
  settle(&l, b, 1000);
  cr_assert_eq(info_of(&l, b).probes, probes);

  char longname[TERN_NETWORK_MAX + 2];
  memset(longname, 'x', sizeof longname - 1);
  longname[sizeof longname - 1] = 0;
  cr_assert_eq(tern_client_set_network(l.clients[b], longname), TERN_EINVAL);
  cr_assert_str_eq(info_of(&l, b).network, "wifi:home");
  loop_stop(&l);
}

/* A relay that does not answer probes: the client says so and keeps the
 * conservative interval; its messages are not affected. */
Test(keepalive, relay_without_probes_is_unavailable) {
  loop l;
  relay_with(&l, 0, 0, 0);
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "phone");
  small_search(&cfg);
  size_t a = loop_add_client(&l, &cfg);
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 5000, &ev));
  /* No PROBE_KEY comes: after 10 s the client stops asking for a while. */
  cr_assert(wait_state(&l, a, TERN_KA_UNAVAILABLE, 32000), "state %d", info_of(&l, a).state);
  tern_keepalive_info ki = info_of(&l, a);
  cr_assert_eq(ki.interval_ms, 1000);
  cr_assert_eq(ki.proven_ms, 0);
  tern_relay_stats rs;
  tern_relay_get_stats(l.relay, &rs);
  cr_assert_eq(rs.probe_requests, 0);
  /* The probe datagrams never reached ENet as garbage either: the link
   * still works. */
  tern_client_config other;
  loop_client_config(&l, &other, "friend"); /* its own key: one session per key */
  size_t b = loop_add_client(&l, &other);
  cr_assert(loop_wait(&l, b, TERN_EV_CONNECTED, 5000, &ev));
  cr_assert_eq(tern_client_send(l.clients[b], "phone", "still here", 10, NULL), 0);
  cr_assert(loop_wait(&l, a, TERN_EV_MESSAGE, 5000, &ev));
  loop_stop(&l);
}

/* Keepalives off and fixed: no probes at all, and the relay is told. */
Test(keepalive, off_and_fixed_never_probe) {
  loop l;
  loop_start(&l, NULL, NULL, 0);
  tern_client_config off, fixed;
  loop_client_config(&l, &off, "quiet");
  off.keepalive_off = 1;
  loop_client_config(&l, &fixed, "steady");
  fixed.keepalive_fixed_ms = 25000;
  size_t a = loop_add_client(&l, &off), b = loop_add_client(&l, &fixed);
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 5000, &ev));
  cr_assert(loop_wait(&l, b, TERN_EV_CONNECTED, 5000, &ev));
  settle(&l, a, 2000);
  cr_assert_eq(info_of(&l, a).state, TERN_KA_OFF);
  cr_assert_eq(info_of(&l, a).interval_ms, 0);
  cr_assert_eq(info_of(&l, b).state, TERN_KA_FIXED);
  cr_assert_eq(info_of(&l, b).interval_ms, 25000);
  tern_client_set_foreground(l.clients[b], 1);
  cr_assert_eq(info_of(&l, b).interval_ms, 25000, "below the foreground cap");
  cr_assert_eq(info_of(&l, a).probes + info_of(&l, b).probes, 0);
  tern_relay_stats rs;
  tern_relay_get_stats(l.relay, &rs);
  cr_assert_eq(rs.probe_requests, 0);
  loop_stop(&l);
}

/* spec/keepalive.md, "Dead peers": a client that vanishes without a word
 * is dropped by the relay within I + max(5 s, I/4) + timeout_max (+ RTT),
 * and not before its keepalive was due; the relay sends it nothing until
 * then. */
Test(keepalive, relay_notices_a_vanished_client_within_the_bound) {
  loop l;
  relay_with(&l, 1, 1000, 3000);
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "phone");
  cfg.keepalive_fixed_ms = 2000;
  size_t a = loop_add_client(&l, &cfg);
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 5000, &ev));
  settle(&l, a, 1000);
  /* Alive and idle for three intervals: the client's keepalives keep it. */
  settle(&l, a, 6500);
  tern_relay_stats st;
  tern_relay_get_stats(l.relay, &st);
  cr_assert_eq(st.peers_connected, 1);
  cr_assert_geq(info_of(&l, a).keepalives, 2, "%llu keepalives in 6.5 s at 2 s",
                (unsigned long long)info_of(&l, a).keepalives);
  /* The app is frozen (no service calls): its socket is silent. */
  uint64_t frozen = mono_ms();
  uint64_t gone = 0;
  while (mono_ms() < frozen + 20000) {
    cr_assert_eq(tern_relay_service(l.relay, 20), 0);
    tern_relay_get_stats(l.relay, &st);
    if (st.peers_connected == 0) {
      gone = mono_ms() - frozen;
      break;
    }
  }
  /* Bound: I (2 s) + max(5 s, I/4) + timeout_max (3 s) + slack for RTOs. */
  cr_assert_neq(gone, 0, "the relay still holds a client silent for 20 s");
  cr_assert_geq(gone, 5000, "dropped after %llu ms: before its keepalive was even late",
                (unsigned long long)gone);
  cr_assert_leq(gone, 2000 + 5000 + 3000 + 1500, "dropped after %llu ms", (unsigned long long)gone);
  cr_log_info("relay dropped the silent client after %llu ms", (unsigned long long)gone);
  loop_stop(&l);
}

/* The client notices a dead relay on an idle link within I + timeout_max
 * (+ RTT), and says why. */
Test(keepalive, client_notices_a_dead_relay_within_the_bound) {
  loop l;
  loop_start(&l, NULL, NULL, 0);
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "phone");
  cfg.keepalive_fixed_ms = 2000;
  cfg.timeout_min_ms = 1000;
  cfg.timeout_max_ms = 3000;
  size_t a = loop_add_client(&l, &cfg);
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 5000, &ev));
  settle(&l, a, 1000);
  /* The relay freezes: nothing answers the client's keepalives. */
  tern_relay *frozen = l.relay;
  l.relay = NULL;
  uint64_t t0 = mono_ms();
  cr_assert(loop_wait(&l, a, TERN_EV_DISCONNECTED, 15000, &ev), "no disconnect in 15 s");
  uint64_t took = mono_ms() - t0;
  cr_assert_eq(ev.error, TERN_ETIMEDOUT, "reason %s", tern_errname(ev.error));
  cr_assert_leq(took, 2000 + 3000 + 1500, "noticed after %llu ms", (unsigned long long)took);
  cr_log_info("client noticed the dead relay after %llu ms", (unsigned long long)took);
  l.relay = frozen;
  loop_stop(&l);
}
