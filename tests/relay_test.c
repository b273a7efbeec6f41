/* The relay endpoint over real loopback UDP: handshake outcomes, routing,
 * refusals, timeouts and shutdown, as a client app would see them. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <enet/enet.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"
#include "tern_test.h"
#include "udp_proxy.h"
#include "tern/tern.h"

/* An allow-list of one key, for the auth callback. */
typedef struct one_key {
  uint8_t key[TERN_KEY_BYTES];
  int allowed;
} one_key;

static int auth_one(void *ctx, const uint8_t key[TERN_KEY_BYTES], const char *requested,
                    char user[TERN_USER_MAX + 1]) {
  (void)requested;
  one_key *k = ctx;
  if (!k->allowed || memcmp(key, k->key, TERN_KEY_BYTES) != 0) return TERN_EUNKNOWNKEY;
  strcpy(user, "listed");
  return 0;
}

Test(relay, two_clients_exchange_messages_both_ways) {
  loop l;
  loop_start(&l, NULL, NULL, 0);
  size_t a, b;
  loop_add_pair(&l, &a, &b);
  loop_event ev;

  uint64_t cmid = 0;
  cr_assert_eq(tern_client_send(l.clients[a], "bob", "hi bob", 6, &cmid), 0);
  cr_assert_neq(cmid, 0);
  cr_assert(loop_wait(&l, b, TERN_EV_MESSAGE, 5000, &ev));
  cr_assert_str_eq(ev.user, "alice");
  cr_assert_eq(ev.body_len, 6);
  cr_assert_arr_eq(ev.body, "hi bob", 6);

  cr_assert_eq(tern_client_send(l.clients[b], "alice", "", 0, NULL), 0);
  cr_assert(loop_wait(&l, a, TERN_EV_MESSAGE, 5000, &ev), "an empty body is a message too");
  cr_assert_eq(ev.body_len, 0);

  cr_assert(loop_wait(&l, a, TERN_EV_DELIVERED, 5000, &ev), "alice's message was delivered");
  cr_assert_eq(ev.cmid, cmid);
  tern_relay_stats st;
  tern_relay_get_stats(l.relay, &st);
  cr_assert_eq(st.handshakes_ok, 2);
  cr_assert_eq(st.messages_stored, 2);
  cr_assert_eq(st.peers_connected, 2);
  loop_stop(&l);
}

Test(relay, large_message_arrives_whole) {
  loop l;
  loop_start(&l, NULL, NULL, 0);
  size_t a, b;
  loop_add_pair(&l, &a, &b);
  loop_event ev;
  size_t n = 65536;
  uint8_t *big = malloc(n);
  for (size_t i = 0; i < n; i++) big[i] = (uint8_t)(i * 31 + 7);
  cr_assert_eq(tern_client_send(l.clients[a], "bob", big, n, NULL), 0);
  cr_assert(loop_wait(&l, b, TERN_EV_MESSAGE, 5000, &ev));
  cr_assert_eq(ev.body_len, n);
  cr_assert_arr_eq(ev.body, big, n);
  cr_assert_eq(tern_client_send(l.clients[a], "bob", big, n + 1, NULL), TERN_ETOOBIG,
               "over max_message_size is refused at send");
  free(big);
  loop_stop(&l);
}

Test(relay, offline_recipient_gets_it_later_and_sender_gets_ticks) {
  loop l;
  loop_start(&l, NULL, NULL, 0);
  tern_client_config ca, cb;
  loop_client_config(&l, &ca, "alice");
  size_t a = loop_add_client(&l, &ca);
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 5000, &ev));
  uint64_t c1, c2;
  cr_assert_eq(tern_client_send(l.clients[a], "bob", "while you were out", 18, &c1), 0);
  cr_assert_eq(tern_client_send(l.clients[a], "bob", "second", 6, &c2), 0);
  cr_assert_neq(c1, c2);
  cr_assert(loop_wait(&l, a, TERN_EV_SENT, 5000, &ev), "the relay stores it for bob");
  cr_assert_eq(ev.cmid, c1);
  cr_assert_str_eq(ev.user, "bob");
  cr_assert_eq(ev.seq, 1, "first message in bob's inbox");
  cr_assert(loop_wait(&l, a, TERN_EV_SENT, 5000, &ev));
  cr_assert_eq(ev.cmid, c2);
  cr_assert_eq(tern_client_outbox_size(l.clients[a]), 0);

  loop_client_config(&l, &cb, "bob");
  size_t b = loop_add_client(&l, &cb);
  cr_assert(loop_wait(&l, b, TERN_EV_MESSAGE, 5000, &ev), "bob gets it on connect");
  cr_assert_str_eq(ev.user, "alice");
  cr_assert_eq(ev.seq, 1);
  cr_assert_arr_eq(ev.body, "while you were out", 18);
  cr_assert(loop_wait(&l, b, TERN_EV_MESSAGE, 5000, &ev));
  cr_assert_eq(ev.seq, 2);
  cr_assert(loop_wait(&l, a, TERN_EV_DELIVERED, 5000, &ev), "alice gets the second tick");
  cr_assert_eq(ev.cmid, c1);
  cr_assert(loop_wait(&l, a, TERN_EV_DELIVERED, 5000, &ev));
  cr_assert_eq(ev.cmid, c2);
  tern_relay_stats st;
  tern_relay_get_stats(l.relay, &st);
  cr_assert_eq(st.messages_stored, 2);
  cr_assert_eq(st.messages_delivered, 2);
  loop_stop(&l);
}

Test(relay, messages_sent_before_connecting_ride_in_the_handshake) {
  loop l;
  loop_start(&l, NULL, NULL, 0);
  tern_client_config ca;
  loop_client_config(&l, &ca, "alice");
  tern_client *c;
  cr_assert_eq(tern_client_new(&c, &ca), 0);
  uint64_t c1, c2;
  cr_assert_eq(tern_client_send(c, "bob", "early one", 9, &c1), 0, "offline: into the outbox");
  cr_assert_eq(tern_client_send(c, "bob", "early two", 9, &c2), 0);
  cr_assert_eq(tern_client_outbox_size(c), 2);
  cr_assert_eq(tern_client_connect(c), 0);
  l.clients[l.nclients++] = c;
  loop_event ev;
  cr_assert(loop_wait(&l, 0, TERN_EV_SENT, 5000, &ev));
  cr_assert_eq(ev.cmid, c1);
  cr_assert(loop_wait(&l, 0, TERN_EV_SENT, 5000, &ev));
  cr_assert_eq(ev.cmid, c2);
  tern_relay_stats st;
  tern_relay_get_stats(l.relay, &st);
  cr_assert_eq(st.messages_early, 2, "both came inside handshake message 1");
  cr_assert_eq(st.messages_stored, 2);
  cr_assert_eq(st.messages_deduped, 0, "and were not sent a second time after the handshake");
  loop_stop(&l);
}

Test(relay, too_big_for_the_relay_fails_with_a_reason) {
  loop l;
  loop_start(&l, NULL, NULL, 0);
  tern_client_config ca;
  loop_client_config(&l, &ca, "alice");
  ca.max_message_size = 200000; /* the client allows more than the relay */
  size_t a = loop_add_client(&l, &ca);
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 5000, &ev));
  uint8_t *big = calloc(1, 70000);
  uint64_t cmid;
  cr_assert_eq(tern_client_send(l.clients[a], "bob", big, 70000, &cmid), 0);
  cr_assert(loop_wait(&l, a, TERN_EV_FAILED, 5000, &ev));
  cr_assert_eq(ev.cmid, cmid);
  cr_assert_eq(ev.error, TERN_ETOOBIG, "got %s", tern_errname(ev.error));
  cr_assert_eq(tern_client_outbox_size(l.clients[a]), 0, "a failed message leaves the outbox");
  free(big);
  loop_stop(&l);
}

Test(relay, unknown_client_key_is_refused_with_its_own_code) {
  one_key k = {.allowed = 1};
  loop l;
  loop_start(&l, auth_one, &k, 0);
  tern_client_config good, bad;
  loop_client_config(&l, &good, NULL);
  loop_client_config(&l, &bad, NULL);
  memcpy(k.key, good.keypair.public_key, TERN_KEY_BYTES);
  size_t g = loop_add_client(&l, &good), x = loop_add_client(&l, &bad);
  loop_event ev;
  cr_assert(loop_wait(&l, x, TERN_EV_DISCONNECTED, 5000, &ev));
  cr_assert_eq(ev.error, TERN_EUNKNOWNKEY, "got %s", tern_errname(ev.error));
  cr_assert(loop_wait(&l, g, TERN_EV_CONNECTED, 5000, &ev));
  cr_assert_str_eq(ev.user, "listed", "the allow-list names the user");
  tern_relay_stats st;
  tern_relay_get_stats(l.relay, &st);
  cr_assert_eq(st.handshakes_failed, 1);
  loop_stop(&l);
}

Test(relay, revoked_key_is_disconnected_on_recheck) {
  one_key k = {.allowed = 1};
  loop l;
  loop_start(&l, auth_one, &k, 0);
  tern_client_config cfg;
  loop_client_config(&l, &cfg, NULL);
  memcpy(k.key, cfg.keypair.public_key, TERN_KEY_BYTES);
  size_t c = loop_add_client(&l, &cfg);
  loop_event ev;
  cr_assert(loop_wait(&l, c, TERN_EV_CONNECTED, 5000, &ev));
  cr_assert_eq(tern_relay_recheck_auth(l.relay), 0, "still allowed: nobody dropped");
  k.allowed = 0;
  cr_assert_eq(tern_relay_recheck_auth(l.relay), 1);
  cr_assert(loop_wait(&l, c, TERN_EV_DISCONNECTED, 5000, &ev));
  cr_assert_eq(ev.error, TERN_EUNKNOWNKEY, "got %s", tern_errname(ev.error));
  loop_stop(&l);
}

Test(relay, wrong_pinned_relay_key_fails_with_its_own_code) {
  loop l;
  loop_start(&l, NULL, NULL, 0);
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "alice");
  tern_keypair other;
  cr_assert_eq(tern_keypair_generate(&other), 0);
  memcpy(cfg.relay_public_key, other.public_key, TERN_KEY_BYTES);
  size_t c = loop_add_client(&l, &cfg);
  loop_event ev;
  cr_assert(loop_wait(&l, c, TERN_EV_DISCONNECTED, 5000, &ev));
  cr_assert_eq(ev.error, TERN_ERELAYKEY, "got %s", tern_errname(ev.error));
  tern_relay_stats st;
  tern_relay_get_stats(l.relay, &st);
  cr_assert_eq(st.handshakes_failed, 1);
  cr_assert_eq(st.peers_connected, 0);
  loop_stop(&l);
}

Test(relay, graceful_disconnect_and_shutdown_reasons) {
  loop l;
  loop_start(&l, NULL, NULL, 0);
  size_t a, b;
  loop_add_pair(&l, &a, &b);
  loop_event ev;
  cr_assert_eq(tern_client_disconnect(l.clients[a]), 0);
  cr_assert(loop_wait(&l, a, TERN_EV_DISCONNECTED, 5000, &ev));
  cr_assert_eq(ev.error, TERN_ECLOSED);
  cr_assert_eq(tern_client_send(l.clients[a], "bob", "x", 1, NULL), 0,
               "offline, send still accepts into the outbox");
  cr_assert_eq(tern_client_outbox_size(l.clients[a]), 1);
  cr_assert_eq(tern_client_send_ephemeral(l.clients[a], "bob", "typing", 6), TERN_ECLOSED,
               "an ephemeral message needs a live session");
  tern_relay_free(l.relay);
  l.relay = NULL;
  cr_assert(loop_wait(&l, b, TERN_EV_DISCONNECTED, 5000, &ev));
  cr_assert_eq(ev.error, TERN_ESHUTDOWN, "got %s", tern_errname(ev.error));
  loop_stop(&l);
}

/* spec/wire.md §8.1: a second session of one device key replaces the
 * first; the replaced client is told why and stays offline (two copies of
 * an app must not take turns), the new one gets what was queued. */
Test(relay, a_newer_session_of_the_same_key_replaces_the_older) {
  loop l;
  loop_start(&l, NULL, NULL, 0);
  tern_client_config ca, cb;
  loop_client_config(&l, &ca, "alice");
  loop_client_config(&l, &cb, "bob");
  size_t a = loop_add_client(&l, &ca), b1 = loop_add_client(&l, &cb);
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 5000, &ev));
  cr_assert(loop_wait(&l, b1, TERN_EV_CONNECTED, 5000, &ev));
  size_t b2 = loop_add_client(&l, &cb); /* a second copy: the same key */
  cr_assert(loop_wait(&l, b2, TERN_EV_CONNECTED, 5000, &ev), "the newer session is served");
  cr_assert(loop_wait(&l, b1, TERN_EV_DISCONNECTED, 5000, &ev), "the older one is closed");
  cr_assert_eq(ev.error, TERN_EREPLACED, "got %s", tern_errname(ev.error));
  cr_assert_eq(ev.retry_ms, 0, "a replaced client does not reconnect by itself");
  cr_assert_eq(tern_client_send(l.clients[a], "bob", "to the new one", 14, NULL), 0);
  cr_assert(loop_wait(&l, b2, TERN_EV_MESSAGE, 5000, &ev));
  cr_assert_arr_eq(ev.body, "to the new one", 14);
  cr_assert_not(loop_wait(&l, b1, TERN_EV_CONNECTED, 1500, &ev), "the replaced copy came back");
  tern_relay_stats st;
  tern_relay_get_stats(l.relay, &st);
  cr_assert_eq(st.sessions_replaced, 1);
  cr_assert_eq(st.peers_connected, 2);
  loop_stop(&l);
}

Test(relay, unreachable_relay_times_out) {
  loop l;
  loop_start(&l, NULL, NULL, 0);
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "alice");
  tern_relay_free(l.relay); /* nothing listens on that port now */
  l.relay = NULL;
  cfg.handshake_timeout_ms = 800;
  size_t c = loop_add_client(&l, &cfg);
  uint64_t t0 = tt_now_ms();
  loop_event ev;
  cr_assert(loop_wait(&l, c, TERN_EV_DISCONNECTED, 5000, &ev));
  uint64_t took = tt_now_ms() - t0;
  cr_assert_eq(ev.error, TERN_ETIMEDOUT, "got %s", tern_errname(ev.error));
  cr_assert_geq(took, 700);
  cr_assert_lt(took, 3000, "the handshake timeout bounds the attempt (took %llu ms)",
               (unsigned long long)took);
  loop_stop(&l);
}

/* The connectID of an ENet connect request, or 0 if `d` is not one. The
 * request is reliable, so the header carries a sent time: peer id and flags
 * (2 bytes), sent time (2), then the command. */
static uint32_t connect_id(const uint8_t *d, size_t n) {
  size_t off = sizeof(enet_uint16) * 2;
  if (n < off + sizeof(ENetProtocolConnect)) return 0;
  ENetProtocolConnect cmd;
  memcpy(&cmd, d + off, sizeof cmd);
  if ((cmd.header.command & ENET_PROTOCOL_COMMAND_MASK) != ENET_PROTOCOL_COMMAND_CONNECT) return 0;
  return cmd.connectID;
}

Test(relay, silent_attempt_is_given_up_after_3_s_and_retried_at_once, .timeout = 30) {
  /* A port that swallows everything: no relay, no ICMP, only silence. */
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  cr_assert(fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t al = sizeof a;
  cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &al), 0);
  tern_keypair relay_kp;
  cr_assert_eq(tern_keypair_generate(&relay_kp), 0);
  tern_client_config cfg;
  tern_client_config_default(&cfg); /* handshake_timeout_ms 10 s */
  cfg.relay_host = "127.0.0.1";
  cfg.relay_port = ntohs(a.sin_port);
  memcpy(cfg.relay_public_key, relay_kp.public_key, TERN_KEY_BYTES);
  cr_assert_eq(tern_keypair_generate(&cfg.keypair), 0);
  tern_client *c;
  cr_assert_eq(tern_client_new(&c, &cfg), 0);
  uint64_t t0 = tt_now_ms(), gave_up = 0;
  cr_assert_eq(tern_client_connect(c), 0);
  uint32_t first_id = 0, second_id = 0;
  uint64_t second_at = 0;
  unsigned first_requests = 0;
  while (tt_now_ms() < t0 + 8000 && !second_id) {
    cr_assert_geq(tern_client_service(c, 2), 0);
    tern_event ev;
    while (tern_client_next_event(c, &ev) == 1) {
      if (ev.type != TERN_EV_DISCONNECTED || gave_up) continue;
      cr_assert_eq(ev.error, TERN_ETIMEDOUT, "got %s", tern_errname(ev.error));
      gave_up = tt_now_ms();
    }
    uint8_t buf[1500];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof buf, 0)) > 0) {
      uint32_t id = connect_id(buf, (size_t)n);
      if (!id) continue;
      if (!first_id) first_id = id;
      if (id == first_id) first_requests++;
      else if (!second_id) {
        second_id = id;
        second_at = tt_now_ms();
      }
    }
  }
  tern_client_free(c);
  close(fd);
  cr_assert(gave_up, "the attempt was given up");
  uint64_t took = gave_up - t0;
  cr_assert(took >= 2800 && took < 4500, "given up after %llu ms (3000 expected, not 10000)",
            (unsigned long long)took);
  /* The link resent its request at most every 250 ms meanwhile, then
   * backed off: more than ENet alone (0, 0.5, 1.5 s: 3 by 3 s). */
  cr_assert_geq(first_requests, 6, "%u requests in the first attempt", first_requests);
  cr_assert(second_id, "a new attempt with a new connect id followed");
  cr_assert_lt(second_at - gave_up, 500, "the next attempt started %llu ms later",
               (unsigned long long)(second_at - gave_up));
}

/* Drops the first datagram toward the client that carries WELCOME (a
 * reliable packet on channel 0 starting with 0x02). */
static int drop_first_welcome(void *ctx, int dir, unsigned idx, const uint8_t *d, size_t n) {
  (void)idx;
  int *done = ctx;
  if (dir != UDP_PROXY_TO_CLIENT || *done || !udp_proxy_enet_has(d, n, 0, 0x02)) return 0;
  *done = 1;
  return 1;
}

Test(relay, early_data_answer_that_overtakes_a_lost_welcome_is_kept, .timeout = 30) {
  /* The relay sends WELCOME as soon as it has read HELLO, and the
   * SERVER_ACK for the early message after its store commit, in a later
   * datagram. With WELCOME lost, the SERVER_ACK arrives first, before the
   * client has its session keys; ENet has acknowledged it, so it is not
   * sent again. The client keeps it and opens it after WELCOME. */
  loop l;
  loop_start(&l, NULL, NULL, 0);
  int dropped = 0;
  udp_proxy px;
  udp_proxy_start(&px, tern_relay_port(l.relay), 20);
  px.drop = drop_first_welcome;
  px.drop_ctx = &dropped;
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "alice");
  cfg.relay_port = px.front_port;
  tern_client *c;
  cr_assert_eq(tern_client_new(&c, &cfg), 0);
  uint64_t t0 = tt_now_ms(), cmid = 0, sent_at = 0, up_at = 0;
  cr_assert_eq(tern_client_connect(c), 0);
  cr_assert_eq(tern_client_send(c, "bob", "early", 5, &cmid), 0); /* rides in HELLO */
  while (!sent_at && tt_now_ms() < t0 + 8000) {
    cr_assert_eq(tern_relay_service(l.relay, 0), 0);
    cr_assert_geq(tern_client_service(c, 0), 0);
    udp_proxy_pump(&px);
    tern_event ev;
    while (tern_client_next_event(c, &ev) == 1) {
      if (ev.type == TERN_EV_CONNECTED) up_at = tt_now_ms();
      if (ev.type == TERN_EV_SENT && ev.cmid == cmid) sent_at = tt_now_ms();
    }
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  tern_relay_stats st;
  tern_relay_get_stats(l.relay, &st);
  tern_client_free(c);
  udp_proxy_stop(&px);
  loop_stop(&l);
  cr_assert_eq(dropped, 1, "a WELCOME was dropped");
  cr_assert_eq(st.messages_early, 1, "the message came as early data");
  cr_assert(up_at, "connected");
  cr_assert(sent_at, "the early message was acknowledged");
  /* Without the stash: only the client's resend timer (4 s) brings it. */
  cr_assert_lt(sent_at - up_at, 100, "SENT %llu ms after CONNECTED",
               (unsigned long long)(sent_at - up_at));
  cr_assert_lt(sent_at - t0, 2000, "SENT %llu ms after connect", (unsigned long long)(sent_at - t0));
}

/* A raw ENet peer: connects at the ENet level and then does what it likes. */
typedef struct raw_peer {
  ENetHost *host;
  ENetPeer *peer;
} raw_peer;

static void raw_connect(raw_peer *r, uint16_t port) {
  cr_assert_eq(enet_initialize(), 0);
  r->host = enet_host_create(NULL, 1, 7, 0, 0);
  cr_assert_not_null(r->host);
  ENetAddress addr;
  enet_address_set_host_ip(&addr, "127.0.0.1");
  addr.port = port;
  r->peer = enet_host_connect(r->host, &addr, 7, 0);
  cr_assert_not_null(r->peer);
}

/* Services the raw peer for up to ms; returns the ENet event type seen
 * (CONNECT or DISCONNECT), or NONE. */
static ENetEventType raw_service(raw_peer *r, loop *l, int ms, uint32_t *data) {
  uint64_t end = tt_now_ms() + (uint64_t)ms;
  while (tt_now_ms() < end) {
    loop_pump(l);
    ENetEvent e;
    if (enet_host_service(r->host, &e, 1) > 0) {
      if (e.type == ENET_EVENT_TYPE_RECEIVE) enet_packet_destroy(e.packet);
      if (data) *data = e.data;
      if (e.type == ENET_EVENT_TYPE_CONNECT || e.type == ENET_EVENT_TYPE_DISCONNECT) return e.type;
    }
  }
  return ENET_EVENT_TYPE_NONE;
}

Test(relay, silent_peer_is_dropped_after_handshake_timeout) {
  loop l;
  loop_start(&l, NULL, NULL, 600);
  raw_peer r;
  raw_connect(&r, tern_relay_port(l.relay));
  cr_assert_eq(raw_service(&r, &l, 3000, NULL), ENET_EVENT_TYPE_CONNECT);
  uint64_t t0 = tt_now_ms();
  uint32_t data = 0;
  cr_assert_eq(raw_service(&r, &l, 4000, &data), ENET_EVENT_TYPE_DISCONNECT,
               "a peer that never sends HELLO must lose its slot");
  uint64_t took = tt_now_ms() - t0;
  cr_assert_lt(took, 2000, "dropped %llu ms after connect; timeout is 600",
               (unsigned long long)took);
  cr_assert_eq(data, 4 /* TERN__DISC_HS_TIMEOUT */);
  tern_relay_stats st;
  tern_relay_get_stats(l.relay, &st);
  cr_assert_eq(st.handshakes_failed, 1);
  enet_host_destroy(r.host);
  loop_stop(&l);
}

Test(relay, garbage_hello_is_refused_and_relay_keeps_serving) {
  loop l;
  loop_start(&l, NULL, NULL, 0);
  uint8_t junk[300];
  for (size_t i = 0; i < sizeof(junk); i++) junk[i] = (uint8_t)(i * 7 + 0x77);
  /* Three kinds of bad first packet: garbage, a HELLO with a future version,
   * and a HELLO that is too short to hold Noise message 1. */
  uint8_t future[120] = {0x01, 0x09};
  uint8_t shorty[10] = {0x01, 0x01};
  struct { const uint8_t *p; size_t n; uint32_t code; } cases[] = {
      {junk, sizeof(junk), 5}, {future, sizeof(future), 6}, {shorty, sizeof(shorty), 5}};
  for (size_t k = 0; k < 3; k++) {
    raw_peer r;
    raw_connect(&r, tern_relay_port(l.relay));
    cr_assert_eq(raw_service(&r, &l, 3000, NULL), ENET_EVENT_TYPE_CONNECT);
    ENetPacket *p = enet_packet_create(cases[k].p, cases[k].n, ENET_PACKET_FLAG_RELIABLE);
    cr_assert_eq(enet_peer_send(r.peer, 0, p), 0);
    uint32_t data = 0;
    cr_assert_eq(raw_service(&r, &l, 3000, &data), ENET_EVENT_TYPE_DISCONNECT, "case %zu", k);
    cr_assert_eq(data, cases[k].code, "case %zu: disconnect code %u", k, data);
    enet_host_destroy(r.host);
  }
  size_t a, b;
  loop_add_pair(&l, &a, &b);
  loop_event ev;
  cr_assert_eq(tern_client_send(l.clients[a], "bob", "still here", 10, NULL), 0);
  cr_assert(loop_wait(&l, b, TERN_EV_MESSAGE, 5000, &ev));
  cr_assert_arr_eq(ev.body, "still here", 10);
  tern_relay_stats st;
  tern_relay_get_stats(l.relay, &st);
  cr_assert_eq(st.handshakes_failed, 3);
  loop_stop(&l);
}

/* An app's poll loop: after sends and a service call, the descriptor must
 * not stay readable, or the loop spins a core. Sends between two service
 * calls make it readable once (one wake-up, not one per send), and the
 * first send after a service call makes it readable again: from this
 * thread, and from another while this one waits in poll(). */
static void *send_later(void *arg) {
  tt_sleep_ms(50);
  cr_assert_eq(tern_client_send(arg, "bob", "late", 4, NULL), 0);
  return NULL;
}

Test(relay, client_fd_quiet_after_service_and_woken_by_the_next_send) {
  loop l;
  loop_start(&l, NULL, NULL, 0);
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "alice");
  tern_client *c;
  cr_assert_eq(tern_client_new(&c, &cfg), 0);
  struct pollfd pf[64];
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 3; i++) cr_assert_eq(tern_client_send(c, "bob", "x", 1, NULL), 0);
    int n = tern_client_pollfds(c, pf, 64);
    cr_assert(n >= 1 && n <= 64, "%d descriptors", n);
    cr_assert_geq(poll(pf, (nfds_t)n, 0), 1, "round %d: the sends wake the loop", round);
    cr_assert_geq(tern_client_service(c, 0), 0);
    n = tern_client_pollfds(c, pf, 64);
    cr_assert_eq(poll(pf, (nfds_t)n, 0), 0, "round %d: one service call quiets it", round);
  }
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, send_later, c), 0);
  int n = tern_client_pollfds(c, pf, 64);
  uint64_t t0 = tt_now_ms();
  cr_assert_geq(poll(pf, (nfds_t)n, 5000), 1, "a send from another thread ends the wait");
  cr_assert_lt(tt_now_ms() - t0, 4000);
  pthread_join(th, NULL);
  cr_assert_geq(tern_client_service(c, 0), 0);
  tern_client_free(c);
  loop_stop(&l);
}

/* tern_client_pollfds/tern_relay_pollfds work on every build and say how
 * many entries they need; tern_client_fd/tern_relay_fd give the single
 * descriptor where the build has one (epoll, kqueue), TERN_ENOTSUP where
 * it has none (poll()). */
Test(relay, pollfds_and_fd_agree_with_the_backend) {
  loop l;
  loop_start(&l, NULL, NULL, 0);
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "alice");
  tern_client *c;
  cr_assert_eq(tern_client_new(&c, &cfg), 0);
  struct pollfd pf[64];
  int need = tern_client_pollfds(c, NULL, 0);
  cr_assert_geq(need, 1);
  cr_assert_eq(tern_client_pollfds(c, pf, 1), need, "a short array still gets the count");
  cr_assert_eq(tern_client_pollfds(c, pf, 64), need);
  int fd = tern_client_fd(c);
  if (fd >= 0) {
    cr_assert_eq(need, 1);
    cr_assert_eq(pf[0].fd, fd);
    cr_assert_eq(pf[0].events, POLLIN);
  } else {
    cr_assert_eq(fd, TERN_ENOTSUP);
    cr_assert_str_eq(tern_errname(fd), "TERN_ENOTSUP");
    /* The wake-up and the UDP socket at least. */
    cr_assert_geq(need, 2);
    for (int i = 0; i < need; i++) cr_assert_geq(pf[i].fd, 0);
  }
  int rneed = tern_relay_pollfds(l.relay, pf, 64);
  cr_assert(rneed >= 1 && rneed <= 64);
  int rfd = tern_relay_fd(l.relay);
  if (fd >= 0) cr_assert(rfd >= 0 && rneed == 1 && pf[0].fd == rfd);
  else cr_assert_eq(rfd, TERN_ENOTSUP);
  tern_client_free(c);
  loop_stop(&l);
}

/* The defaults that tern.h, the README and the spec quote. */
Test(relay, public_config_defaults_are_the_documented_ones) {
  tern_client_config c;
  memset(&c, 0xab, sizeof c);
  tern_client_config_default(&c);
  cr_assert_eq(c.reconnect_base_ms, 500);
  cr_assert_eq(c.reconnect_cap_ms, 30000);
  cr_assert_eq(c.dead_link_ms, 8000);
  cr_assert_eq(c.handshake_timeout_ms, 10000);
  cr_assert_eq(c.max_message_size, 65536);
  cr_assert_eq(c.struct_size, sizeof c);
  cr_assert_eq(c.timeout_min_ms, 3000);
  cr_assert_eq(c.timeout_max_ms, 10000);
  cr_assert_eq(c.durable_fsync, 0, "survives an app crash, not a power cut, by default");
  cr_assert_null(c.state_dir);
  cr_assert_null(c.relay_host);
  tern_relay_config r;
  memset(&r, 0xab, sizeof r);
  tern_relay_config_default(&r);
  cr_assert_str_eq(r.bind_host, "::");
  cr_assert_eq(r.port, 7400);
  cr_assert_eq(r.handshake_timeout_ms, 5000);
  cr_assert_eq(r.max_peers, 4095);
  cr_assert_eq(r.max_message_size, 65536);
  cr_assert_eq(r.retention_ms, 30ull * 24 * 3600 * 1000, "30 days");
  cr_assert_eq(r.durable_fsync, 1, "fsync per group commit by default");
  cr_assert_eq(r.store_reserve_bytes, 16ull << 20);
  cr_assert_eq(r.ping_interval_ms, 60000);
  cr_assert_eq(r.timeout_min_ms, 3000);
  cr_assert_eq(r.timeout_max_ms, 10000);
  cr_assert_eq(r.probes, 1);
  cr_assert_null(r.auth);
  cr_assert_null(r.user_exists);
  cr_assert_null(r.may_send);
  cr_assert_null(r.store_path);
  cr_assert_null(r.log);
}

/* A state directory whose parents do not exist yet is created with them;
 * one under a regular file cannot be, and says so. */
Test(relay, state_dir_is_created_with_its_parents) {
  loop l;
  loop_start(&l, NULL, NULL, 0);
  char *dir = tt_tempdir();
  char nested[4200];
  snprintf(nested, sizeof nested, "%s/app/data/tern", dir);
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "alice");
  cfg.state_dir = nested;
  tern_client *c = NULL;
  cr_assert_eq(tern_client_new(&c, &cfg), 0);
  tern_client_free(c);
  char db[4300];
  snprintf(db, sizeof db, "%s/client.db", nested);
  cr_assert_eq(access(db, F_OK), 0, "the store is in the nested directory");
  char file[4200];
  snprintf(file, sizeof file, "%s/plain", dir);
  tt_write_file(file, "x");
  snprintf(nested, sizeof nested, "%s/plain/tern", dir);
  cr_assert_eq(tern_client_new(&c, &cfg), TERN_EIO);
  cr_assert_null(c);
  cr_assert_eq(errno, ENOTDIR, "errno says why");
  tt_rmtree(dir);
  free(dir);
  loop_stop(&l);
}

/* ---------------------------------------------------------------- tokens */

static int revoked_flag;
static int token_revoked(void *ctx, const uint8_t id[TERN_TOKEN_ID_BYTES],
                         const uint8_t device_key[TERN_KEY_BYTES]) {
  (void)ctx, (void)id, (void)device_key;
  return revoked_flag;
}

/* A token for `user` bound to `device`, valid for an hour, from the seed
 * of spec/tokens.md's example. */
static void token_for(const char *user, const uint8_t device[TERN_KEY_BYTES],
                      char out[TERN_TOKEN_TEXT_MAX]) {
  uint8_t seed[32], id[TERN_TOKEN_ID_BYTES] = {1};
  for (int i = 0; i < 32; i++) seed[i] = (uint8_t)(0x81 + i);
  cr_assert_eq(tern_token_mint(seed, user, device, (uint64_t)time(NULL) + 3600, id, out), 0);
}

/* spec/tokens.md §4.1: beside an auth callback (an allow-list), a token is
 * decisive (a bad one refuses even a listed key; a good one admits a key
 * the list does not know, as the token's user), a client without one goes
 * to the list, and a recheck drops list sessions by the list and token
 * sessions by revocation only. A relay without a token key ignores tokens. */
Test(relay, tokens_beside_the_auth_callback) {
  one_key k = {.allowed = 1};
  loop l;
  tern_relay_config rc;
  loop_relay_config(&l, &rc);
  uint8_t seed[32], backend_pk[32];
  for (int i = 0; i < 32; i++) seed[i] = (uint8_t)(0x81 + i);
  cr_assert_eq(tern_token_public_key(seed, backend_pk), 0);
  rc.auth = auth_one;
  rc.auth_ctx = &k;
  rc.token_key = backend_pk;
  rc.token_revoked = token_revoked;
  revoked_flag = 0;
  loop_start_relay(&l, &rc);

  tern_client_config listed, tok, stale, asks;
  loop_client_config(&l, &listed, NULL);
  loop_client_config(&l, &tok, NULL);
  loop_client_config(&l, &stale, NULL);
  loop_client_config(&l, &asks, "someone");
  memcpy(k.key, listed.keypair.public_key, TERN_KEY_BYTES);
  stale.keypair = listed.keypair; /* listed, but with a token for another key */
  char t_tok[TERN_TOKEN_TEXT_MAX], t_stale[TERN_TOKEN_TEXT_MAX], t_asks[TERN_TOKEN_TEXT_MAX];
  token_for("tokuser", tok.keypair.public_key, t_tok);
  token_for("listed", tok.keypair.public_key, t_stale);
  token_for("asker", asks.keypair.public_key, t_asks);
  tok.token = t_tok;
  stale.token = t_stale;
  asks.token = t_asks;
  size_t a = loop_add_client(&l, &listed), b = loop_add_client(&l, &tok);
  size_t c = loop_add_client(&l, &stale), d = loop_add_client(&l, &asks);
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 5000, &ev));
  cr_assert_str_eq(ev.user, "listed");
  cr_assert(loop_wait(&l, b, TERN_EV_CONNECTED, 5000, &ev));
  cr_assert_str_eq(ev.user, "tokuser", "the token names the user; the list was not asked");
  cr_assert(loop_wait(&l, c, TERN_EV_DISCONNECTED, 5000, &ev));
  cr_assert_eq(ev.error, TERN_ETOKENKEY, "a listed key with a bad token: %s", tern_errname(ev.error));
  cr_assert(loop_wait(&l, d, TERN_EV_DISCONNECTED, 5000, &ev));
  cr_assert_eq(ev.error, TERN_ETOKENKEY, "asked for another user: %s", tern_errname(ev.error));

  /* Messages flow between a list session and a token session. */
  uint64_t cmid;
  cr_assert_eq(tern_client_send(l.clients[a], "tokuser", "hi", 2, &cmid), 0);
  cr_assert(loop_wait(&l, b, TERN_EV_MESSAGE, 5000, &ev));
  cr_assert_str_eq(ev.user, "listed");

  /* Recheck: the list no longer has the key: only the list session goes. */
  k.allowed = 0;
  cr_assert_eq(tern_relay_recheck_auth(l.relay), 1);
  cr_assert(loop_wait(&l, a, TERN_EV_DISCONNECTED, 5000, &ev));
  cr_assert_eq(ev.error, TERN_EUNKNOWNKEY);
  revoked_flag = 1;
  cr_assert_eq(tern_relay_recheck_auth(l.relay), 1);
  cr_assert(loop_wait(&l, b, TERN_EV_DISCONNECTED, 5000, &ev));
  cr_assert_eq(ev.error, TERN_ETOKENREVOKED, "got %s", tern_errname(ev.error));
  loop_stop(&l);

  /* No token key: the token is ignored and the open relay names the client
   * as it asks. */
  loop_start(&l, NULL, NULL, 0);
  tern_client_config plain;
  loop_client_config(&l, &plain, "plainname");
  char t_plain[TERN_TOKEN_TEXT_MAX];
  token_for("tokenname", plain.keypair.public_key, t_plain);
  plain.token = t_plain;
  size_t p = loop_add_client(&l, &plain);
  cr_assert(loop_wait(&l, p, TERN_EV_CONNECTED, 5000, &ev));
  cr_assert_str_eq(ev.user, "plainname");

  /* A token that does not decode is refused by tern_client_new. */
  plain.token = "not a token";
  tern_client *cl = NULL;
  cr_assert_eq(tern_client_new(&cl, &plain), TERN_EINVAL);
  cr_assert_null(cl);
  loop_stop(&l);
}

/* An app whose token expired gets TERN_ETOKENEXPIRED, asks its backend for
 * a fresh one and hands it over with tern_client_set_token(): the client
 * connects with it (the backoff's jitter makes "at once" untestable here
 * without a fake clock; the code resets it). */
Test(relay, a_fresh_token_set_after_expiry_connects) {
  loop l;
  tern_relay_config rc;
  loop_relay_config(&l, &rc);
  uint8_t seed[32], backend_pk[32], id[TERN_TOKEN_ID_BYTES] = {2};
  for (int i = 0; i < 32; i++) seed[i] = (uint8_t)(0x81 + i);
  cr_assert_eq(tern_token_public_key(seed, backend_pk), 0);
  rc.token_key = backend_pk;
  loop_start_relay(&l, &rc);
  tern_client_config cfg;
  loop_client_config(&l, &cfg, NULL);
  char old[TERN_TOKEN_TEXT_MAX], fresh[TERN_TOKEN_TEXT_MAX];
  cr_assert_eq(tern_token_mint(seed, "erin", cfg.keypair.public_key, (uint64_t)time(NULL) - 1, id, old), 0);
  cfg.token = old;
  size_t c = loop_add_client(&l, &cfg);
  loop_event ev;
  cr_assert(loop_wait(&l, c, TERN_EV_DISCONNECTED, 5000, &ev));
  cr_assert_eq(ev.error, TERN_ETOKENEXPIRED, "got %s", tern_errname(ev.error));
  cr_assert_eq(tern_client_set_token(l.clients[c], "not a token"), TERN_EINVAL);
  cr_assert_eq(tern_token_mint(seed, "erin", cfg.keypair.public_key, (uint64_t)time(NULL) + 600, id, fresh), 0);
  cr_assert_eq(tern_client_set_token(l.clients[c], fresh), 0);
  cr_assert(loop_wait(&l, c, TERN_EV_CONNECTED, 5000, &ev));
  cr_assert_str_eq(ev.user, "erin");
  loop_stop(&l);
}

/* Services relay a, relay b and every client for up to `ms`, until client
 * i yields an event of `type`; 1 and the event (no body) if it did. */
static int wait_two(loop *l, tern_relay *b, size_t i, tern_event_type type, int ms, loop_event *out) {
  uint64_t end = tt_now_ms() + (uint64_t)ms;
  while (tt_now_ms() < end) {
    cr_assert_eq(tern_relay_service(l->relay, 1), 0);
    cr_assert_eq(tern_relay_service(b, 0), 0);
    for (size_t k = 0; k < l->nclients; k++) cr_assert_geq(tern_client_service(l->clients[k], 0), 0);
    tern_event ev;
    while (tern_client_next_event(l->clients[i], &ev) == 1) {
      if (ev.type != type) continue;
      memset(out, 0, sizeof(*out));
      out->type = ev.type;
      out->error = ev.error;
      out->retry_ms = ev.retry_ms;
      return 1;
    }
  }
  return 0;
}

/* The drain (spec/wire.md §6.14): GOAWAY gives each of the two sessions its
 * delay (1000 and 2000 ms of a 2 s window), the client reconnects after
 * exactly that at the next endpoint of its relay_host, and a client that
 * comes back to the draining relay is refused with TERN_ESHUTDOWN and a
 * retry time within two windows; then the drain completes. */
Test(relay, drain_sends_clients_elsewhere_after_their_delay, .timeout = 30) {
  loop l;
  loop_start(&l, NULL, NULL, 0);
  tern_relay_config rc;
  tern_relay_config_default(&rc);
  rc.bind_host = "127.0.0.1";
  rc.keypair = l.relay_kp; /* the same relay key: another endpoint of it */
  tern_relay *b;
  cr_assert_eq(tern_relay_new(&b, &rc), 0);
  char hosts[64];
  snprintf(hosts, sizeof(hosts), "127.0.0.1:%u,127.0.0.1:%u", tern_relay_port(l.relay),
           tern_relay_port(b));
  tern_client_config ca, cb;
  loop_client_config(&l, &ca, "alice");
  ca.relay_host = hosts;
  loop_client_config(&l, &cb, "bob"); /* the draining relay only */
  size_t a = loop_add_client(&l, &ca), bo = loop_add_client(&l, &cb);
  loop_event ev;
  cr_assert(wait_two(&l, b, a, TERN_EV_CONNECTED, 5000, &ev));
  cr_assert(wait_two(&l, b, bo, TERN_EV_CONNECTED, 5000, &ev));
  tern_relay_stats st;
  tern_relay_get_stats(l.relay, &st);
  cr_assert_eq(st.peers_connected, 2, "both on the first endpoint");
  cr_assert_eq(st.draining, 0);

  cr_assert_eq(tern_relay_drain(l.relay, 2000), 2, "two sessions told");
  cr_assert_eq(tern_relay_drain(l.relay, 2000), 0, "none left to tell");
  cr_assert(wait_two(&l, b, a, TERN_EV_DISCONNECTED, 3000, &ev));
  uint64_t down = tt_now_ms();
  cr_assert_eq(ev.error, TERN_ESHUTDOWN, "got %s", tern_errname(ev.error));
  cr_assert(ev.retry_ms == 1000 || ev.retry_ms == 2000, "alice's delay %llu: 1000 or 2000",
            (unsigned long long)ev.retry_ms);
  uint64_t alice_delay = ev.retry_ms;
  cr_assert(wait_two(&l, b, a, TERN_EV_CONNECTED, 5000, &ev), "alice back");
  uint64_t took = tt_now_ms() - down;
  cr_assert(took + 20 >= alice_delay && took <= alice_delay + 500,
            "alice came back after %llu ms, told %llu", (unsigned long long)took,
            (unsigned long long)alice_delay);
  tern_relay_get_stats(b, &st);
  cr_assert_eq(st.handshakes_ok, 1, "alice went elsewhere: the second endpoint");

  /* Bob has only the draining relay: back there after his delay, he is
   * refused with a retry time within two windows. */
  int refused = 0;
  for (int k = 0; k < 3 && !refused; k++) {
    cr_assert(wait_two(&l, b, bo, TERN_EV_DISCONNECTED, 5000, &ev));
    cr_assert_eq(ev.error, TERN_ESHUTDOWN, "got %s", tern_errname(ev.error));
    cr_assert_leq(ev.retry_ms, 4000);
    tern_relay_get_stats(l.relay, &st);
    refused = st.hs_failed_draining > 0;
  }
  cr_assert(refused, "bob's reconnect to the draining relay was refused");
  cr_assert_eq(st.draining, 1);
  uint64_t end = tt_now_ms() + 5000;
  while (!tern_relay_drained(l.relay) && tt_now_ms() < end) loop_pump(&l);
  cr_assert(tern_relay_drained(l.relay), "the drain completes");
  tern_relay_free(b);
  loop_stop(&l);
}

/* What ENet allocates, seen through the allocator ENet takes from
 * enet_initialize_with_callbacks (libenet's callbacks.c, process-wide):
 * a fragmented packet's reassembly is one enet_malloc of its totalLength
 * (protocol.c, enet_protocol_handle_send_fragment). */
static _Atomic size_t enet_biggest;

static void *counting_malloc(size_t n) {
  size_t b = atomic_load(&enet_biggest);
  while (n > b && !atomic_compare_exchange_weak(&enet_biggest, &b, n)) {
  }
  return malloc(n);
}

/* Finding 7 of issue 13: before the handshake, ENet accepted fragments of
 * packets up to 32 MB and reserved each one's whole length at its first
 * fragment. A peer that has not finished the tern handshake now gets no
 * reassembly larger than the largest HELLO, and no peer one larger than
 * the largest DATA packet. */
Test(relay, fragments_before_authentication_are_bounded, .timeout = 60) {
  ENetCallbacks cb = {.malloc = counting_malloc, .free = free, .no_memory = abort};
  cr_assert_eq(enet_initialize_with_callbacks(ENET_VERSION, &cb), 0);
  tern_relay_config rc;
  loop l;
  memset(&l, 0, sizeof(l));
  loop_relay_config(&l, &rc);
  rc.handshake_timeout_ms = 1500;
  rc.max_message_size = TERN_MESSAGE_MAX;
  loop_start_relay(&l, &rc);
  raw_peer r;
  raw_connect(&r, tern_relay_port(l.relay));
  cr_assert_eq(raw_service(&r, &l, 3000, NULL), ENET_EVENT_TYPE_CONNECT);
  /* An 8 MB packet: ENet sends it as fragments whose totalLength is 8 MB. */
  size_t huge = 8u << 20;
  ENetPacket *p = enet_packet_create(NULL, huge, ENET_PACKET_FLAG_RELIABLE);
  cr_assert_not_null(p);
  memset(p->data, 0x5a, huge);
  cr_assert_eq(enet_peer_send(r.peer, 0, p), 0);
  atomic_store(&enet_biggest, 0); /* from here, the relay's allocations */
  uint32_t data = 0;
  cr_assert_eq(raw_service(&r, &l, 4000, &data), ENET_EVENT_TYPE_DISCONNECT,
               "the peer is dropped at its handshake timeout");
  size_t biggest = atomic_load(&enet_biggest);
  cr_assert_leq(biggest, 98 + 2048, "ENet allocated %zu bytes at once for an unauthenticated peer",
                biggest);
  enet_host_destroy(r.host);
  /* A real client still connects and sends the largest message there is. */
  tern_client_config ca, cbob;
  loop_client_config(&l, &ca, "alice");
  loop_client_config(&l, &cbob, "bob");
  ca.max_message_size = cbob.max_message_size = TERN_MESSAGE_MAX;
  size_t a = loop_add_client(&l, &ca), b = loop_add_client(&l, &cbob);
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 5000, &ev));
  cr_assert(loop_wait(&l, b, TERN_EV_CONNECTED, 5000, &ev));
  uint8_t *big = malloc(TERN_MESSAGE_MAX);
  for (size_t i = 0; i < TERN_MESSAGE_MAX; i++) big[i] = (uint8_t)(i * 13 + 1);
  cr_assert_eq(tern_client_send(l.clients[a], "bob", big, TERN_MESSAGE_MAX, NULL), 0);
  cr_assert(loop_wait(&l, b, TERN_EV_MESSAGE, 20000, &ev));
  cr_assert_eq(ev.body_len, TERN_MESSAGE_MAX);
  cr_assert_arr_eq(ev.body, big, TERN_MESSAGE_MAX);
  free(big);
  loop_stop(&l);
}

/* What the relay logged about failed handshakes. */
typedef struct hs_log {
  unsigned lines;          /* "peer ...: handshake failed: ..." lines */
  unsigned long long held; /* the counts of suppressed lines they and the summaries gave */
} hs_log;

static void count_hs_lines(void *ctx, int level, const char *line) {
  (void)level;
  hs_log *h = ctx;
  if (!strstr(line, "handshake failed")) return;
  if (strncmp(line, "peer ", 5) == 0) h->lines++;
  const char *s = strstr(line, " similar line");
  if (!s) return;
  const char *d = s;
  while (d > line && d[-1] >= '0' && d[-1] <= '9') d--;
  h->held += strtoull(d, NULL, 10);
}

/* Finding 6 of issue 13: every failed handshake wrote a line, so 20,000
 * garbage HELLOs wrote 20,001 warnings. Now a burst of 10 and one a
 * second, and the count of the rest is exact. */
Test(relay, failed_handshakes_do_not_flood_the_log, .timeout = 60) {
  hs_log h = {0, 0};
  tern_relay_config rc;
  loop l;
  memset(&l, 0, sizeof(l));
  loop_relay_config(&l, &rc);
  rc.log = count_hs_lines;
  rc.log_ctx = &h;
  loop_start_relay(&l, &rc);
  cr_assert_eq(enet_initialize(), 0);
  enum { PEERS = 32 };
  ENetHost *host = enet_host_create(NULL, PEERS, 7, 0, 0);
  cr_assert_not_null(host);
  ENetAddress addr;
  enet_address_set_host_ip(&addr, "127.0.0.1");
  addr.port = tern_relay_port(l.relay);
  for (int i = 0; i < PEERS; i++) cr_assert_not_null(enet_host_connect(host, &addr, 7, 0));
  uint8_t junk[300];
  for (size_t i = 0; i < sizeof(junk); i++) junk[i] = (uint8_t)(i * 7 + 0x77);
  /* Garbage HELLOs for 3 s: each connection sends one, is refused, and
   * connects again. */
  uint64_t t0 = tt_now_ms();
  while (tt_now_ms() < t0 + 3000) {
    loop_pump(&l);
    ENetEvent e;
    while (enet_host_service(host, &e, 0) > 0) {
      if (e.type == ENET_EVENT_TYPE_CONNECT)
        (void)enet_peer_send(e.peer, 0, enet_packet_create(junk, sizeof(junk), ENET_PACKET_FLAG_RELIABLE));
      else if (e.type == ENET_EVENT_TYPE_DISCONNECT)
        (void)enet_host_connect(host, &addr, 7, 0);
      else if (e.type == ENET_EVENT_TYPE_RECEIVE)
        enet_packet_destroy(e.packet);
    }
  }
  enet_host_destroy(host);
  uint64_t flood_s = (tt_now_ms() - t0 + 999) / 1000;
  /* The relay sums up what it held back within a second or two. */
  uint64_t t1 = tt_now_ms();
  while (tt_now_ms() < t1 + 2500) {
    loop_pump(&l);
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  tern_relay_stats st;
  tern_relay_get_stats(l.relay, &st);
  cr_log_info("%llu failed handshakes in %llu s: %u lines, %llu suppressed",
              (unsigned long long)st.handshakes_failed, (unsigned long long)flood_s, h.lines, h.held);
  cr_assert_geq(st.handshakes_failed, 200, "only %llu garbage HELLOs in 3 s",
                (unsigned long long)st.handshakes_failed);
  cr_assert_leq(h.lines, 10 + flood_s + 1, "%u lines for %llu failed handshakes", h.lines,
                (unsigned long long)st.handshakes_failed);
  cr_assert_eq(h.lines + h.held, st.handshakes_failed, "%u lines + %llu suppressed != %llu failed",
               h.lines, h.held, (unsigned long long)st.handshakes_failed);
  loop_stop(&l);
}
