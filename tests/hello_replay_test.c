/* Replayed HELLOs (issue 13, findings 1 and 2): a recorded handshake
 * message 1, sent again over new ENet connections, must neither deliver
 * its early data again (even after the dedup rows have expired) nor open
 * sessions that hold the relay's slots; and the HELLO timestamps that make
 * this so survive restarts of the client and of the relay. The HELLOs are
 * built here from the client's key, as a recording would hold them, and
 * sent by a raw ENet peer. */
#include <criterion/criterion.h>
#include <enet/enet.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loop.h"
#include "store/cstore.h"
#include "tern/tern.h"
#include "tern_test.h"
#include "wire/frame.h"
#include "wire/session.h"

/* The relays' wall clock: the system's, moved forward by clock_shift_ms. */
static uint64_t clock_shift_ms;
static uint64_t test_wall_ms(void *ctx) {
  (void)ctx;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 + clock_shift_ms;
}

static uint64_t wall_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* A relay on `store` (a file) with the shifted clock. */
static void start_relay(loop *l, const char *store, uint32_t max_peers, const tern_keypair *key) {
  tern_relay_config rc;
  /* loop_relay_config() starts the loop afresh: the last event's body of
   * a loop restarted here is freed first. */
  free(l->last_body);
  l->last_body = NULL;
  loop_relay_config(l, &rc);
  if (key) {
    l->relay_kp = *key;
    rc.keypair = *key;
  }
  rc.store_path = store;
  rc.durable_fsync = 0;
  rc.wall_clock_ms = test_wall_ms;
  if (max_peers) rc.max_peers = max_peers;
  loop_start_relay(l, &rc);
}

/* Handshake message 1 of device `kp` to the relay `relay_pub`, with HELLO
 * timestamp `time_us` and, if `early` is not NULL, one MSG to "bob" as
 * early data. *sess keeps the handshake, to read the WELCOME. */
static size_t make_hello(uint8_t *out, size_t cap, tern__session *sess, const tern_keypair *kp,
                         const uint8_t relay_pub[32], uint64_t time_us, const char *early) {
  uint8_t payload[TERN__HS_PAYLOAD_MAX], e[32];
  tern__wbuf w;
  tern__wbuf_init(&w, payload, sizeof payload);
  tern__fr_hello h = {.user = (const uint8_t *)"alice", .user_len = 5, .ping_interval_ms = 0,
                      .time_us = time_us};
  tern__fr_hello_write(&w, &h);
  if (early) {
    tern__fr_msg m = {.cmid = 1, .peer = (const uint8_t *)"bob", .peer_len = 3,
                      .body = (const uint8_t *)early, .body_len = strlen(early)};
    tern__fr_msg_write(&w, TERN__FR_MSG, &m);
  }
  cr_assert_not(w.overflow);
  randombytes_buf(e, sizeof e);
  size_t n = 0;
  cr_assert_eq(tern__session_client_hello(sess, kp, relay_pub, e, payload, w.len, out, cap, &n), 0);
  return n;
}

/* A raw ENet peer that sends a recorded HELLO and answers ENet's pings. */
typedef struct raw {
  ENetHost *host;
  ENetPeer *peer;
  int connected, disconnected;
  uint32_t disc_code;
  uint8_t welcome[512];
  size_t welcome_len;
} raw;

static void raw_open(raw *r, uint16_t port) {
  memset(r, 0, sizeof *r);
  r->host = enet_host_create(NULL, 1, 7, 0, 0);
  cr_assert_not_null(r->host);
  ENetAddress a;
  enet_address_set_host_ip(&a, "127.0.0.1");
  a.port = port;
  r->peer = enet_host_connect(r->host, &a, 7, 0);
  cr_assert_not_null(r->peer);
}

static void raw_poll(raw *r) {
  ENetEvent e;
  while (r->host && enet_host_service(r->host, &e, 0) > 0) {
    if (e.type == ENET_EVENT_TYPE_CONNECT) r->connected = 1;
    if (e.type == ENET_EVENT_TYPE_DISCONNECT) {
      r->disconnected = 1;
      r->disc_code = e.data;
    }
    if (e.type == ENET_EVENT_TYPE_RECEIVE) {
      if (e.channelID == 0 && !r->welcome_len && e.packet->dataLength <= sizeof r->welcome) {
        memcpy(r->welcome, e.packet->data, e.packet->dataLength);
        r->welcome_len = e.packet->dataLength;
      }
      enet_packet_destroy(e.packet);
    }
  }
}

static void raw_send(raw *r, const uint8_t *pkt, size_t n) {
  ENetPacket *p = enet_packet_create(pkt, n, ENET_PACKET_FLAG_RELIABLE);
  cr_assert_eq(enet_peer_send(r->peer, 0, p), 0);
}

static void raw_close(raw *r) {
  if (!r->host) return;
  if (!r->disconnected) {
    enet_peer_disconnect_now(r->peer, 1);
    enet_host_flush(r->host);
  }
  enet_host_destroy(r->host);
  r->host = NULL;
}

/* Pumps the loop and the raw peers for `ms`, or until done(ctx) says 1. */
static int pump_until(loop *l, raw *rs, size_t nr, int ms, int (*done)(void *), void *ctx) {
  uint64_t end = tt_now_ms() + (uint64_t)ms;
  while (tt_now_ms() < end) {
    loop_pump(l);
    for (size_t i = 0; i < nr; i++) raw_poll(&rs[i]);
    if (done && done(ctx)) return 1;
    tt_sleep_ms(1);
  }
  return 0;
}

static int raw_connected(void *ctx) { return ((raw *)ctx)->connected; }
static int raw_answered(void *ctx) {
  raw *r = ctx;
  return r->welcome_len > 0 || r->disconnected;
}

/* Connects a raw peer, sends `hello`, and waits for the relay's answer (a
 * WELCOME, or a disconnect). */
static void raw_hello(loop *l, raw *r, const uint8_t *hello, size_t n) {
  raw_open(r, tern_relay_port(l->relay));
  cr_assert(pump_until(l, r, 1, 3000, raw_connected, r), "ENet connect");
  raw_send(r, hello, n);
  cr_assert(pump_until(l, r, 1, 3000, raw_answered, r), "an answer to HELLO");
}

/* The status of the WELCOME r got, read with the handshake state `sess`. */
static int welcome_status(raw *r, tern__session *sess) {
  uint8_t pl[TERN__HS_PAYLOAD_MAX];
  size_t n = 0;
  cr_assert(r->welcome_len, "a WELCOME came");
  cr_assert_eq(tern__session_client_welcome(sess, r->welcome, r->welcome_len, pl, sizeof pl, &n), 0);
  tern__rbuf rb, body;
  tern__rbuf_init(&rb, pl, n);
  uint8_t type;
  cr_assert_eq(tern__frame_next(&rb, &type, &body), 1);
  tern__fr_welcome wf;
  cr_assert_eq(tern__fr_welcome_read(&body, &wf), 0);
  return -(int)wf.status;
}

static tern_relay_stats stats(loop *l) {
  tern_relay_stats st;
  tern_relay_get_stats(l->relay, &st);
  return st;
}

static void init(void) { cr_assert_eq(enet_initialize(), 0); }

TestSuite(hello_replay, .init = init);

/* A temporary directory with a relay on its store (dir/relay.db) at the
 * system's time, and a device key for the recorded HELLO. */
static char *setup(loop *l, char store[512], uint32_t max_peers, tern_keypair *device) {
  char *dir = tt_tempdir();
  memset(l, 0, sizeof(*l));
  snprintf(store, 512, "%s/relay.db", dir);
  clock_shift_ms = 0;
  start_relay(l, store, max_peers, NULL);
  cr_assert_eq(tern_keypair_generate(device), 0);
  return dir;
}

Test(hello_replay, a_hello_replayed_after_the_retention_is_not_delivered, .timeout = 60) {
  char store[512];
  loop l;
  tern_keypair alice;
  char *dir = setup(&l, store, 0, &alice);
  tern_keypair relay_key = l.relay_kp;
  tern_client_config bob_cfg;
  loop_client_config(&l, &bob_cfg, "bob");
  size_t b = loop_add_client(&l, &bob_cfg);
  loop_event ev;
  cr_assert(loop_wait(&l, b, TERN_EV_CONNECTED, 5000, &ev));

  /* The real HELLO, with a message as early data: recorded on the wire. */
  uint8_t hello[512];
  tern__session sess;
  size_t n = make_hello(hello, sizeof hello, &sess, &alice, relay_key.public_key, wall_us(), "only once");
  raw r;
  raw_hello(&l, &r, hello, n);
  cr_assert_eq(welcome_status(&r, &sess), 0, "the first HELLO is admitted");
  cr_assert(loop_wait(&l, b, TERN_EV_MESSAGE, 5000, &ev));
  cr_assert_eq(ev.body_len, 9);
  cr_assert_eq(stats(&l).messages_stored, 1);
  raw_close(&r);
  pump_until(&l, NULL, 0, 200, NULL, NULL); /* bob's ack is taken in */
  tern_client_free(l.clients[b]);
  l.clients[b] = NULL;
  tern_relay_free(l.relay);

  /* The retention later (31 days): the relay, restarted on its store,
   * expires the message's dedup row at its first tick. */
  clock_shift_ms = 31ull * 24 * 3600 * 1000;
  start_relay(&l, store, 0, &relay_key);
  bob_cfg.relay_port = tern_relay_port(l.relay);
  b = loop_add_client(&l, &bob_cfg);
  cr_assert(loop_wait(&l, b, TERN_EV_CONNECTED, 5000, &ev));

  /* The replay: refused, nothing stored, nothing delivered, no session. */
  raw_hello(&l, &r, hello, n);
  pump_until(&l, &r, 1, 1000, NULL, NULL);
  cr_assert_not(loop_wait(&l, b, TERN_EV_MESSAGE, 1000, &ev), "delivered again");
  tern_relay_stats st = stats(&l);
  cr_assert_eq(st.messages_early, 0);
  cr_assert_eq(st.messages_stored, 0);
  cr_assert_eq(st.handshakes_ok, 1, "bob's only");
  cr_assert_eq(st.hs_failed_stale, 1);
  cr_assert_eq(st.peers_held, 1, "bob's only");
  cr_assert(r.disconnected, "the replayer is disconnected");
  cr_assert_eq(r.disc_code, 10 /* TERN__DISC_STALE */);
  cr_assert_eq(r.welcome_len, 0, "no WELCOME");
  raw_close(&r);
  loop_stop(&l);
  tt_rmtree(dir);
  free(dir);
}

static int all_answered(void *ctx) {
  raw *rs = ctx;
  for (size_t i = 0; i < 8; i++)
    if (!raw_answered(&rs[i])) return 0;
  return 1;
}
static int all_connected(void *ctx) {
  raw *rs = ctx;
  for (size_t i = 0; i < 8; i++)
    if (!rs[i].connected) return 0;
  return 1;
}

Test(hello_replay, replayed_hellos_make_no_ghost_sessions, .timeout = 60) {
  char store[512];
  loop l;
  tern_keypair alice;
  char *dir = setup(&l, store, 8, &alice);
  uint8_t hello[512];
  tern__session sess;
  size_t n = make_hello(hello, sizeof hello, &sess, &alice, l.relay_kp.public_key, wall_us(), NULL);
  raw r;
  raw_hello(&l, &r, hello, n);
  cr_assert_eq(welcome_status(&r, &sess), 0, "the first HELLO is admitted");
  raw_close(&r);

  /* Five rounds of 8 replays at once, every slot the relay has; the
   * replayers stay up and answer ENet. */
  raw rs[8];
  for (int round = 0; round < 5; round++) {
    for (size_t i = 0; i < 8; i++) raw_open(&rs[i], tern_relay_port(l.relay));
    cr_assert(pump_until(&l, rs, 8, 3000, all_connected, rs), "round %d: ENet connects", round);
    for (size_t i = 0; i < 8; i++) raw_send(&rs[i], hello, n);
    cr_assert(pump_until(&l, rs, 8, 3000, all_answered, rs), "round %d: answers", round);
    pump_until(&l, rs, 8, 100, NULL, NULL);
    for (size_t i = 0; i < 8; i++) cr_assert(rs[i].disconnected, "round %d: replayer %zu still held", round, i);
    if (round < 4)
      for (size_t i = 0; i < 8; i++) raw_close(&rs[i]);
  }
  tern_relay_stats st = stats(&l);
  cr_assert_eq(st.hs_failed_stale, 40);
  cr_assert_eq(st.handshakes_ok, 1);
  cr_assert_eq(st.peers_connected, 0);

  /* The last 8 replayers are still up: a real client gets a slot. */
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "carol");
  size_t c = loop_add_client(&l, &cfg);
  loop_event ev;
  uint64_t end = tt_now_ms() + 5000;
  int up = 0;
  while (!up && tt_now_ms() < end) {
    for (size_t i = 0; i < 8; i++) raw_poll(&rs[i]);
    up = loop_wait(&l, c, TERN_EV_CONNECTED, 20, &ev);
  }
  cr_assert(up, "a real client connects beside the replayers");
  for (size_t i = 0; i < 8; i++) raw_close(&rs[i]);
  loop_stop(&l);
  tt_rmtree(dir);
  free(dir);
}

/* The client's and the relay's timestamps survive restarts: a client
 * restarted on its state_dir and a relay restarted on its store still
 * connect; a device whose clock is behind what the relay holds is told
 * TERN_ESTALE; a client store whose last timestamp is ahead of the clock
 * goes on from it. */
Test(hello_replay, timestamps_survive_restarts_of_client_and_relay, .timeout = 60) {
  char *dir = tt_tempdir();
  char store[512], state[512], state2[512], cdb[600];
  snprintf(store, sizeof store, "%s/relay.db", dir);
  snprintf(state, sizeof state, "%s/client", dir);
  snprintf(state2, sizeof state2, "%s/reinstalled", dir);
  snprintf(cdb, sizeof cdb, "%s/client.db", state);
  clock_shift_ms = 0;
  loop l;
  start_relay(&l, store, 0, NULL);
  tern_keypair relay_key = l.relay_kp;
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "alice");
  cfg.state_dir = state;
  size_t a = loop_add_client(&l, &cfg);
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 5000, &ev));
  tern_client_free(l.clients[a]);
  l.clients[a] = NULL;
  tern_relay_free(l.relay);

  /* Both restarted. */
  start_relay(&l, store, 0, &relay_key);
  cfg.relay_port = tern_relay_port(l.relay);
  a = loop_add_client(&l, &cfg);
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 5000, &ev), "restarted client and relay connect");
  tern_client_free(l.clients[a]);
  l.clients[a] = NULL;

  /* The relay holds a timestamp an hour ahead of the device's clock. */
  uint8_t hello[512];
  tern__session sess;
  uint64_t ahead = wall_us() + 3600ull * 1000000;
  size_t n = make_hello(hello, sizeof hello, &sess, &cfg.keypair, relay_key.public_key, ahead, NULL);
  raw r;
  raw_hello(&l, &r, hello, n);
  cr_assert_eq(welcome_status(&r, &sess), 0);
  raw_close(&r);
  pump_until(&l, NULL, 0, 100, NULL, NULL);

  /* The app reinstalled (a new state_dir), its clock behind: TERN_ESTALE. */
  tern_client_config re = cfg;
  re.state_dir = state2;
  a = loop_add_client(&l, &re);
  cr_assert(loop_wait(&l, a, TERN_EV_DISCONNECTED, 5000, &ev));
  cr_assert_eq(ev.error, TERN_ESTALE, "%s", tern_errname(ev.error));
  tern_client_free(l.clients[a]);
  l.clients[a] = NULL;
  cr_assert_eq(stats(&l).hs_failed_stale, 1);

  /* A client store whose last HELLO timestamp is past the relay's (as
   * when the clock that wrote it was ahead): the client goes on from it. */
  tern__cstore *cs;
  char err[256];
  cr_assert_eq(tern__cstore_open(&cs, cdb, 1, err, sizeof err), 0, "%s", err);
  uint64_t t = 0;
  cr_assert_eq(tern__cstore_hello_time(cs, ahead + 1000, &t), 0);
  cr_assert_eq(t, ahead + 1000);
  tern__cstore_close(cs);
  a = loop_add_client(&l, &cfg);
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 5000, &ev), "the stored timestamp is used");
  loop_stop(&l);
  tt_rmtree(dir);
  free(dir);
}
