/*
 * Two relays on one cluster store (a real nats-server with JetStream, which
 * the test starts), in this process, with real clients on loopback: a
 * message from a user on relay A reaches a user on relay B and its receipt
 * comes back to A; a device that moves from A to B resumes from its cursor
 * there (nothing delivered twice); a message stored while its recipient
 * was offline waits in the cluster for whichever relay it comes back to.
 * Relay A and the clients run in the test's thread (tests/support/loop.h),
 * relay B in a thread of its own. This is the path the chaos test drives
 * with processes (cluster_chaos_test.sh); here it also runs under the
 * sanitizers.
 */
#include <criterion/criterion.h>

#ifndef TERN_HAVE_CLUSTER
Test(cluster_relay, not_built) { cr_skip_test("libtern was built without the cluster store (TERN_CLUSTER)"); }
#else
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "loop.h"
#include "natsrv.h"
#include "tern/tern.h"
#include "tern_test.h"

typedef struct other {
  tern_relay *relay;
  atomic_int stop;
  pthread_t thread;
} other;

static void *serve(void *p) {
  other *o = p;
  while (!atomic_load(&o->stop))
    if (tern_relay_service(o->relay, 20) < 0) break;
  return NULL;
}

/* Relay A in l, relay B in o (same key, same cluster), both on sv. */
static void two_relays(natsrv *sv, loop *l, other *o) {
  nats_up(sv);
  tern_relay_config rc;
  loop_relay_config(l, &rc);
  rc.store_path = sv->url;
  loop_start_relay(l, &rc);
  int r = tern_relay_new(&o->relay, &rc);
  cr_assert_eq(r, 0, "relay B: %s", tern_strerror(r));
  atomic_store(&o->stop, 0);
  cr_assert_eq(pthread_create(&o->thread, NULL, serve, o), 0);
}

static void stop_all(natsrv *sv, loop *l, other *o) {
  atomic_store(&o->stop, 1);
  pthread_join(o->thread, NULL);
  loop_stop(l);
  tern_relay_free(o->relay);
  nats_down(sv);
}

/* A client of `user` with keypair kp (NULL: a new one) on relay B. */
static size_t on_b(loop *l, other *o, const char *user, const tern_keypair *kp) {
  tern_client_config c;
  loop_client_config(l, &c, user);
  c.relay_port = tern_relay_port(o->relay);
  if (kp) c.keypair = *kp;
  return loop_add_client(l, &c);
}

static size_t on_a(loop *l, const char *user, tern_keypair *kp_out) {
  tern_client_config c;
  loop_client_config(l, &c, user);
  if (kp_out) *kp_out = c.keypair;
  return loop_add_client(l, &c);
}

static void connected(loop *l, size_t i) {
  loop_event ev;
  cr_assert(loop_wait(l, i, TERN_EV_CONNECTED, 10000, &ev), "client %zu did not connect", i);
}

Test(cluster_relay, message_and_receipt_cross_relays, .timeout = 60) {
  natsrv sv;
  loop l;
  other o;
  two_relays(&sv, &l, &o);
  size_t a = on_a(&l, "alice", NULL), b = on_b(&l, &o, "bob", NULL);
  connected(&l, a);
  connected(&l, b);
  uint64_t cmid = 0;
  cr_assert_eq(tern_client_send(l.clients[a], "bob", (const uint8_t *)"across", 6, &cmid), 0);
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_SENT, 10000, &ev), "relay A did not store it");
  cr_assert_eq(ev.cmid, cmid);
  cr_assert(loop_wait(&l, b, TERN_EV_MESSAGE, 10000, &ev), "bob, on relay B, did not get it");
  cr_assert_str_eq(ev.user, "alice");
  cr_assert_eq(ev.body_len, 6);
  cr_assert_eq(memcmp(ev.body, "across", 6), 0);
  cr_assert(loop_wait(&l, a, TERN_EV_DELIVERED, 10000, &ev),
            "alice, on relay A, got no receipt for bob's ack on relay B");
  cr_assert_eq(ev.cmid, cmid);
  tern_relay_stats st;
  tern_relay_get_stats(l.relay, &st);
  cr_assert_eq(st.cluster, 1);
  cr_assert_eq(st.cluster_connected, 1);
  cr_assert_geq(st.cluster_applied, 1, "relay A applied relay B's entries");
  cr_assert_geq(st.cluster_published, 1);
  stop_all(&sv, &l, &o);
}

/* bob reads message 1 on relay A, goes away; message 2 is sent; bob's
 * same device comes back through relay B (a new client: no memory of
 * what it saw) and gets message 2 only. */
Test(cluster_relay, a_device_moves_to_another_relay, .timeout = 60) {
  natsrv sv;
  loop l;
  other o;
  two_relays(&sv, &l, &o);
  tern_keypair bob_kp;
  size_t a = on_a(&l, "alice", NULL), b = on_a(&l, "bob", &bob_kp);
  connected(&l, a);
  connected(&l, b);
  loop_event ev;
  cr_assert_eq(tern_client_send(l.clients[a], "bob", (const uint8_t *)"one", 3, NULL), 0);
  cr_assert(loop_wait(&l, b, TERN_EV_MESSAGE, 10000, &ev));
  cr_assert_eq(memcmp(ev.body, "one", 3), 0);
  cr_assert(loop_wait(&l, a, TERN_EV_DELIVERED, 10000, &ev), "bob's ack was not taken");
  tern_client_free(l.clients[b]);
  l.clients[b] = NULL;

  cr_assert_eq(tern_client_send(l.clients[a], "bob", (const uint8_t *)"two", 3, NULL), 0);
  cr_assert(loop_wait(&l, a, TERN_EV_SENT, 10000, &ev));
  size_t b2 = on_b(&l, &o, "bob", &bob_kp);
  cr_assert(loop_wait(&l, b2, TERN_EV_MESSAGE, 10000, &ev), "bob on relay B got nothing");
  cr_assert_eq(ev.body_len, 3);
  cr_assert_eq(memcmp(ev.body, "two", 3), 0, "got '%.*s': message one again?", (int)ev.body_len,
               (const char *)ev.body);
  cr_assert_not(loop_wait(&l, b2, TERN_EV_MESSAGE, 1500, &ev), "a second message arrived: '%.*s'",
                (int)ev.body_len, (const char *)ev.body);
  stop_all(&sv, &l, &o);
}
#endif
