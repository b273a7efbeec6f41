/*
 * tern's socket layer under ENet (docs/socket-layer.md): the address type,
 * the address table, and real relays and clients over IPv4 and IPv6 on
 * loopback through one dual-stack port.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <enet/enet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "io/addr.h"
#include "io/addrtab.h"
#include "io/enet_platform.h"
#include "io/link.h"
#include "io/migrate.h"
#include "io/nat64.h"
#include "io/tcpframe.h"
#include "wire/path.h"
#include "wire/full.h"
#include "loop.h"
#include "tern/tern.h"

TestSuite(sockets, .timeout = 120);

/* ------------------------------------------------------------ addresses */

static void split_ok(const char *text, uint16_t dflt, const char *host, uint16_t port) {
  char h[64];
  uint16_t p = 0;
  int rc = tern__addr_split(text, dflt, h, sizeof h, &p);
  cr_assert_eq(rc, 0, "'%s': %s", text, tern_errname(rc));
  cr_assert_str_eq(h, host, "'%s'", text);
  cr_assert_eq(p, port, "'%s'", text);
}

static void split_bad(const char *text, uint16_t dflt) {
  char h[64];
  uint16_t p;
  cr_assert_neq(tern__addr_split(text, dflt, h, sizeof h, &p), 0, "'%s' was accepted", text);
}

Test(sockets, host_port_text_in_every_form) {
  split_ok("relay.example:7400", 0, "relay.example", 7400);
  split_ok("127.0.0.1:1", 0, "127.0.0.1", 1);
  split_ok("[::1]:7400", 0, "::1", 7400);
  split_ok("[64:ff9b::c000:201]:443", 0, "64:ff9b::c000:201", 443);
  split_ok("::1", 7400, "::1", 7400);
  split_ok("[::1]", 7400, "::1", 7400);
  split_ok("relay", 7400, "relay", 7400);
  split_bad("::1", 0);           /* no port and none by default */
  split_bad("[::1]:", 0);
  split_bad("[::1]7400", 0);
  split_bad("[::1:7400", 0);
  split_bad("relay:0", 0);
  split_bad("relay:65536", 0);
  split_bad("relay:74a", 0);
  split_bad(":7400", 0);
  split_bad("[]:7400", 0);
}

Test(sockets, addresses_compare_format_and_convert) {
  tern__addr a, b;
  cr_assert_eq(tern__addr_parse_ip(&a, "192.0.2.7", 9), 0);
  cr_assert(tern__addr_is_v4(&a));
  cr_assert_eq(tern__addr_v4(&a), 0xC0000207u);
  char t[TERN__ADDR_TEXT];
  tern__addr_format(&a, t, sizeof t);
  cr_assert_str_eq(t, "192.0.2.7:9");
  /* IPv4 and its IPv4-mapped IPv6 form are one address. */
  cr_assert_eq(tern__addr_parse_ip(&b, "::ffff:192.0.2.7", 9), 0);
  cr_assert(tern__addr_equal(&a, &b));
  cr_assert_eq(tern__addr_hash(&a), tern__addr_hash(&b));
  b.port = 10;
  cr_assert_not(tern__addr_equal(&a, &b));
  cr_assert_eq(tern__addr_parse_ip(&b, "[2001:db8::1]", 443), 0);
  cr_assert_not(tern__addr_is_v4(&b));
  tern__addr_format(&b, t, sizeof t);
  cr_assert_str_eq(t, "[2001:db8::1]:443");
  cr_assert_neq(tern__addr_parse_ip(&b, "relay.example", 1), 0, "a name is not a literal");
  cr_assert_neq(tern__addr_parse_ip(&b, "256.1.1.1", 1), 0);
  /* Into socket addresses: IPv4 either way, IPv6 only as AF_INET6. */
  struct sockaddr_storage ss;
  cr_assert_eq(tern__addr_to_sockaddr(&a, AF_INET, &ss), sizeof(struct sockaddr_in));
  cr_assert_eq(((struct sockaddr_in *)&ss)->sin_port, htons(9));
  cr_assert_eq(tern__addr_to_sockaddr(&a, AF_INET6, &ss), sizeof(struct sockaddr_in6));
  tern__addr back;
  cr_assert_eq(tern__addr_from_sockaddr(&back, (struct sockaddr *)&ss, sizeof ss), 0);
  cr_assert(tern__addr_equal(&back, &a), "v4-mapped round trip");
  cr_assert_eq(tern__addr_to_sockaddr(&b, AF_INET, &ss), 0, "IPv6 cannot be AF_INET");
}

/* ----------------------------------------------------- the address table */

static tern__addr addr_n(unsigned n) {
  tern__addr a;
  tern__addr_set_v4(&a, 0x0A000000u + n, (uint16_t)(1000 + n % 50000));
  return a;
}

Test(sockets, address_table_maps_handles_both_ways_and_reuses_slots_with_a_new_generation) {
  tern__atab *t;
  cr_assert_eq(tern__atab_new(&t, 3000), 0);
  uint32_t h[3000];
  uint16_t g[3000];
  for (unsigned i = 0; i < 3000; i++) {
    tern__addr a = addr_n(i);
    cr_assert_eq(tern__atab_add(t, &a, i % 4, 1000, &h[i], &g[i]), 0);
    cr_assert_neq(h[i], 0u);
    cr_assert_neq(h[i], 0xFFFFFFFFu, "ENet's broadcast address is never a handle");
  }
  tern__addr extra = addr_n(5000);
  uint32_t hx;
  uint16_t gx;
  cr_assert_eq(tern__atab_add(t, &extra, 0, 1000, &hx, &gx), TERN_ERESOURCE, "the table is bounded");
  tern__addr dup = addr_n(7);
  cr_assert_eq(tern__atab_add(t, &dup, 0, 1000, &hx, &gx), TERN_EEXIST);
  for (unsigned i = 0; i < 3000; i++) {
    tern__addr a = addr_n(i);
    cr_assert_eq(tern__atab_find(t, &a), h[i], "find %u", i);
    const tern__atab_entry *e = tern__atab_get(t, h[i], g[i]);
    cr_assert_not_null(e);
    cr_assert(tern__addr_equal(&e->addr, &a));
    cr_assert_eq(e->owner, i % 4);
  }
  /* Two connections share handle 0's address; it lives until both end. */
  cr_assert_eq(tern__atab_bind(t, h[0], g[0]), 0);
  cr_assert_eq(tern__atab_bind(t, h[0], g[0]), 0);
  cr_assert_eq(tern__atab_release(t, h[0], g[0]), 0);
  cr_assert_not_null(tern__atab_get(t, h[0], g[0]));
  cr_assert_eq(tern__atab_release(t, h[0], g[0]), 1);
  cr_assert_null(tern__atab_get(t, h[0], g[0]));
  tern__addr a0 = addr_n(0);
  cr_assert_eq(tern__atab_find(t, &a0), 0u);
  /* The slot comes back under a new generation: the old handle stays dead. */
  tern__addr a9 = addr_n(9000);
  cr_assert_eq(tern__atab_add(t, &a9, 1, 2000, &hx, &gx), 0);
  cr_assert_eq(hx, h[0]);
  cr_assert_neq(gx, g[0]);
  cr_assert_null(tern__atab_get(t, h[0], g[0]), "a stale generation reached the new owner");
  /* Unbound entries older than the limit are swept; bound ones stay. */
  cr_assert_eq(tern__atab_bind(t, h[1], g[1]), 0);
  cr_assert_eq(tern__atab_sweep(t, 1000 + 59999, 60000), 0u, "swept too early");
  cr_assert_eq(tern__atab_sweep(t, 1000 + 60000, 60000), 2998u);
  cr_assert_not_null(tern__atab_get(t, h[1], g[1]));
  cr_assert_not_null(tern__atab_get(t, hx, gx), "created at 2000: not yet old");
  cr_assert_eq(tern__atab_count(t), 2u);
  tern__atab_free(t);
}

Test(sockets, enet_connect_datagrams_are_recognised) {
  /* peer id 0xFFF with the sent-time flag, then a CONNECT command (2)
   * with its body (ENet 1.3.17's layout, as on the wire). */
  uint8_t c[4 + 48] = {0x8F, 0xFF, 0x12, 0x34, 0x82, 0xFF, 0x00, 0x01};
  cr_assert(tern__enet_is_connect(c, sizeof c));
  uint8_t other[sizeof c];
  memcpy(other, c, sizeof c);
  other[4] = 0x86; /* SEND_RELIABLE */
  cr_assert_not(tern__enet_is_connect(other, sizeof other));
  memcpy(other, c, sizeof c);
  other[1] = 0x05; /* to peer 5: a datagram of a live connection */
  cr_assert_not(tern__enet_is_connect(other, sizeof other));
  cr_assert_not(tern__enet_is_connect(c, 12), "truncated");
  uint8_t probe[] = {0xFF, 0xFF, 0x74, 0x6B};
  cr_assert_not(tern__enet_is_connect(probe, sizeof probe));
}

/* ------------------------------------------------- relays and clients */

static int have_ipv6_loopback(void) {
  int fd = socket(AF_INET6, SOCK_DGRAM, 0);
  if (fd < 0) return 0;
  struct sockaddr_in6 s = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
  int ok = bind(fd, (struct sockaddr *)&s, sizeof s) == 0;
  close(fd);
  return ok;
}

#define SKIP_WITHOUT_IPV6()                                                              \
  do {                                                                                   \
    if (!have_ipv6_loopback()) {                                                         \
      cr_log_warn("SKIPPED: this machine has no IPv6 loopback (::1)");                   \
      if (getenv("CI")) cr_assert_fail("IPv6 loopback is required in CI");                   \
      cr_skip_test("no IPv6 loopback");                                                  \
    }                                                                                    \
  } while (0)

typedef struct logbook {
  pthread_mutex_t mu;
  char text[16384];
  size_t len;
} logbook;

static void log_line(void *ctx, int level, const char *line) {
  (void)level;
  logbook *b = ctx;
  pthread_mutex_lock(&b->mu);
  size_t n = strlen(line);
  if (b->len + n + 2 < sizeof b->text) {
    memcpy(b->text + b->len, line, n);
    b->len += n;
    b->text[b->len++] = '\n';
    b->text[b->len] = 0;
  }
  pthread_mutex_unlock(&b->mu);
}

static logbook book = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void start_relay(loop *l, const char *bind_host) {
  tern_relay_config rc;
  loop_relay_config(l, &rc);
  rc.bind_host = bind_host;
  rc.log = log_line;
  rc.log_ctx = &book;
  loop_start_relay(l, &rc);
}

static size_t add_client(loop *l, const char *user, const char *host) {
  tern_client_config cfg;
  loop_client_config(l, &cfg, user);
  cfg.relay_host = host;
  return loop_add_client(l, &cfg);
}

static void say(loop *l, size_t from, const char *to, const char *text) {
  uint64_t cmid;
  int rc = tern_client_send(l->clients[from], to, text, strlen(text), &cmid);
  cr_assert_eq(rc, 0, "send: %s", tern_strerror(rc));
}

static void hear(loop *l, size_t at, const char *from, const char *text) {
  loop_event ev;
  cr_assert(loop_wait(l, at, TERN_EV_MESSAGE, 5000, &ev), "'%s' did not arrive", text);
  cr_assert_str_eq(ev.user, from);
  cr_assert_eq(ev.body_len, strlen(text));
  cr_assert_arr_eq(ev.body, text, ev.body_len);
}

Test(sockets, one_dual_stack_port_serves_ipv4_and_ipv6_clients) {
  SKIP_WITHOUT_IPV6();
  loop l;
  start_relay(&l, "::");
  size_t a = add_client(&l, "alice", "127.0.0.1");
  size_t b = add_client(&l, "bob", "[::1]");
  size_t c = add_client(&l, "carol", "::1");
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 5000, &ev), "IPv4 client did not connect");
  cr_assert(loop_wait(&l, b, TERN_EV_CONNECTED, 5000, &ev), "IPv6 client ([::1]) did not connect");
  cr_assert(loop_wait(&l, c, TERN_EV_CONNECTED, 5000, &ev), "IPv6 client (::1) did not connect");
  say(&l, a, "bob", "over v4 to v6");
  hear(&l, b, "alice", "over v4 to v6");
  say(&l, b, "alice", "over v6 to v4");
  hear(&l, a, "bob", "over v6 to v4");
  say(&l, c, "bob", "v6 to v6");
  hear(&l, b, "carol", "v6 to v6");
  /* The relay saw one IPv4 and two IPv6 sources on its one port. */
  pthread_mutex_lock(&book.mu);
  cr_assert(strstr(book.text, "peer 127.0.0.1:"), "no IPv4 peer in the relay's log:\n%s", book.text);
  cr_assert(strstr(book.text, "peer [::1]:"), "no IPv6 peer in the relay's log:\n%s", book.text);
  pthread_mutex_unlock(&book.mu);
  loop_stop(&l);
}

Test(sockets, an_ipv4_only_relay_refuses_to_bind_an_ipv6_name_and_ipv6_relays_bind_alone) {
  SKIP_WITHOUT_IPV6();
  loop l;
  start_relay(&l, "::1"); /* IPv6 only: an IPv4 client cannot reach it */
  size_t b = add_client(&l, "bob", "::1");
  loop_event ev;
  cr_assert(loop_wait(&l, b, TERN_EV_CONNECTED, 5000, &ev));
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "alice");
  cfg.relay_host = "127.0.0.1";
  cfg.handshake_timeout_ms = 500;
  size_t a = loop_add_client(&l, &cfg);
  cr_assert_not(loop_wait(&l, a, TERN_EV_CONNECTED, 1500, &ev), "IPv4 reached an IPv6-only bind");
  loop_stop(&l);
}

Test(sockets, keepalive_probes_are_answered_over_ipv6) {
  SKIP_WITHOUT_IPV6();
  loop l;
  start_relay(&l, "::");
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "phone");
  cfg.relay_host = "::1";
  cfg.keepalive_floor_ms = 1000;
  cfg.keepalive_min_ms = 1000;
  cfg.keepalive_ceiling_ms = 3000;
  cfg.network = "v6";
  size_t a = loop_add_client(&l, &cfg);
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 5000, &ev));
  tern_keepalive_info ki;
  int learned = 0;
  for (int i = 0; i < 400 && !learned; i++) {
    (void)loop_wait(&l, a, TERN_EV_NONE, 50, &ev);
    tern_client_keepalive(l.clients[a], &ki);
    learned = ki.state == TERN_KA_LEARNED;
  }
  tern_relay_stats rs;
  tern_relay_get_stats(l.relay, &rs);
  cr_assert(learned,
            "keepalive state %d after 20 s over IPv6: proven %u failed %u, %llu probes, %llu "
            "probe datagrams; relay: %llu requests %llu replies %llu rejected %llu limited",
            ki.state, ki.proven_ms, ki.failed_ms, (unsigned long long)ki.probes,
            (unsigned long long)ki.probe_datagrams, (unsigned long long)rs.probe_requests,
            (unsigned long long)rs.probe_replies, (unsigned long long)rs.probe_rejected,
            (unsigned long long)rs.probe_limited);
  cr_assert_geq(rs.probe_requests, 3);
  cr_assert_geq(rs.probe_replies, 3);
  cr_assert_eq(rs.probe_rejected, 0);
  loop_stop(&l);
}

/* ------------------------------------------------------- a full relay */

static size_t count_lines(const char *text, const char *what) {
  size_t n = 0;
  for (const char *p = text; (p = strstr(p, what)); p += strlen(what)) n++;
  return n;
}

Test(sockets, a_full_relay_answers_full_and_the_client_backs_off_then_gets_in, .timeout = 60) {
  pthread_mutex_lock(&book.mu);
  book.len = 0;
  book.text[0] = 0;
  pthread_mutex_unlock(&book.mu);
  loop l;
  tern_relay_config rc;
  loop_relay_config(&l, &rc);
  rc.max_peers = 1;
  rc.log = log_line;
  rc.log_ctx = &book;
  loop_start_relay(&l, &rc);
  size_t a = add_client(&l, "alice", "127.0.0.1");
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 5000, &ev));

  /* A second client is told at once, not left to time out. */
  size_t b = add_client(&l, "bob", "127.0.0.1");
  cr_assert(loop_wait(&l, b, TERN_EV_DISCONNECTED, 2000, &ev), "no answer from a full relay");
  cr_assert_eq(ev.error, TERN_EFULL, "got %s", tern_errname(ev.error));
  tern_relay_stats rs;
  tern_relay_get_stats(l.relay, &rs);
  cr_assert_geq(rs.connects_refused_full, 1);

  /* A burst of CONNECTs from one socket: each draws one FULL of fewer
   * bytes, and the relay logs the refusals at most once a second. */
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  cr_assert_geq(fd, 0);
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(tern_relay_port(l.relay)),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  uint8_t connect[52] = {0x8F, 0xFF, 0x00, 0x01, 0x82, 0xFF, 0x00, 0x01};
  struct timeval tv = {.tv_sec = 0, .tv_usec = 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  size_t sent = 0, got = 0, fulls = 0;
  for (int i = 0; i < 200; i++) {
    cr_assert_eq(sendto(fd, connect, sizeof connect, 0, (struct sockaddr *)&to, sizeof to),
                 (ssize_t)sizeof connect);
    sent += sizeof connect;
    loop_pump(&l);
    uint8_t in[64];
    ssize_t n;
    while ((n = recv(fd, in, sizeof in, MSG_DONTWAIT)) > 0) {
      got += (size_t)n;
      uint32_t retry;
      if (tern__full_parse(in, (size_t)n, &retry)) {
        fulls++;
        cr_assert_geq(retry, 5000);
        cr_assert_leq(retry, 10000);
      }
    }
    usleep(5000);
  }
  close(fd);
  cr_assert_geq(fulls, 150, "%zu of 200 CONNECTs answered", fulls);
  cr_assert_leq(got, sent / 5, "FULL amplified: %zu bytes back for %zu", got, sent);
  pthread_mutex_lock(&book.mu);
  size_t lines = count_lines(book.text, "relay full: refused");
  pthread_mutex_unlock(&book.mu);
  cr_assert_geq(lines, 1, "refusals were not logged");
  cr_assert_leq(lines, 4, "%zu log lines for about 1.5 s of refusals", lines);

  /* alice leaves; bob comes back by himself after the hint and gets in. */
  tern_client_disconnect(l.clients[a]);
  cr_assert(loop_wait(&l, b, TERN_EV_CONNECTED, 20000, &ev), "bob never got in after the slot freed");
  loop_stop(&l);
}

/* ------------------------------- ENet of the app's own, beside tern's */

/* libtern supplies ENet's platform functions for the whole process: an
 * app that uses ENet directly (real IPv4 sockets, its own addresses) must
 * see them behave as ENet's own, next to a tern relay in the same process. */
Test(sockets, an_apps_own_enet_hosts_keep_working_beside_tern) {
  loop l;
  loop_start(&l, NULL, NULL, 0); /* tern's virtual sockets in the same process */
  ENetAddress sa = {.host = ENET_HOST_ANY, .port = 0};
  cr_assert_eq(enet_address_set_host_ip(&sa, "127.0.0.1"), 0);
  ENetHost *server = enet_host_create(&sa, 4, 1, 0, 0);
  cr_assert_not_null(server, "a plain ENet host could not bind");
  cr_assert_gt(server->socket, -1, "a plain ENet host got a virtual socket");
  cr_assert_neq(server->address.port, 0, "enet_socket_get_address did not report the port");
  ENetHost *client = enet_host_create(NULL, 1, 1, 0, 0);
  cr_assert_not_null(client);
  ENetAddress to = server->address;
  cr_assert_eq(enet_address_set_host(&to, "localhost"), 0);
  char name[64];
  cr_assert_eq(enet_address_get_host_ip(&to, name, sizeof name), 0);
  cr_assert_str_eq(name, "127.0.0.1");
  ENetPeer *p = enet_host_connect(client, &to, 1, 0);
  cr_assert_not_null(p);
  int connected = 0, received = 0;
  for (int i = 0; i < 300 && !received; i++) {
    ENetEvent e;
    while (enet_host_service(client, &e, 0) > 0)
      if (e.type == ENET_EVENT_TYPE_CONNECT) {
        connected = 1;
        enet_peer_send(p, 0, enet_packet_create("ping", 4, ENET_PACKET_FLAG_RELIABLE));
      }
    while (enet_host_service(server, &e, 5) > 0)
      if (e.type == ENET_EVENT_TYPE_RECEIVE) {
        received = e.packet->dataLength == 4 && memcmp(e.packet->data, "ping", 4) == 0;
        enet_packet_destroy(e.packet);
      }
    loop_pump(&l);
  }
  cr_assert(connected, "the app's ENet client never connected");
  cr_assert(received, "the app's ENet packet never arrived");
  enet_host_destroy(client);
  enet_host_destroy(server);
  loop_stop(&l);
}

/* ------------------------------------------------------------- shards */

/* A relay with more slots than one ENet host holds runs several hosts
 * behind its one port. With 2 peers per host (a test hook; ENet's own is
 * 4,095), 6 slots are 3 shards: every client gets in, messages cross
 * shards both ways, and the seventh client is told FULL. */
Test(sockets, several_enet_hosts_share_one_port_and_route_between_each_other, .timeout = 60) {
  SKIP_WITHOUT_IPV6();
  tern__link_hook_shard_peers = 2;
  loop l;
  tern_relay_config rc;
  loop_relay_config(&l, &rc);
  rc.bind_host = "::";
  rc.max_peers = 6;
  loop_start_relay(&l, &rc);
  static const char *const names[] = {"u0", "u1", "u2", "u3", "u4", "u5"};
  size_t c[6];
  loop_event ev;
  for (int i = 0; i < 6; i++) {
    c[i] = add_client(&l, names[i], i % 2 ? "::1" : "127.0.0.1");
    cr_assert(loop_wait(&l, c[i], TERN_EV_CONNECTED, 5000, &ev), "%s did not connect", names[i]);
  }
  /* A ring: each sends to the next, so every pair of shards is crossed. */
  for (int i = 0; i < 6; i++) {
    char text[32];
    snprintf(text, sizeof text, "from %s", names[i]);
    say(&l, c[i], names[(i + 1) % 6], text);
  }
  for (int i = 0; i < 6; i++) {
    char text[32];
    snprintf(text, sizeof text, "from %s", names[(i + 5) % 6]);
    hear(&l, c[i], names[(i + 5) % 6], text);
  }
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "late");
  size_t late = loop_add_client(&l, &cfg);
  cr_assert(loop_wait(&l, late, TERN_EV_DISCONNECTED, 2000, &ev));
  cr_assert_eq(ev.error, TERN_EFULL, "got %s", tern_errname(ev.error));
  tern_relay_stats rs;
  tern_relay_get_stats(l.relay, &rs);
  cr_assert_eq(rs.peers_connected, 6);
  loop_stop(&l);
}

/* ---------------------------------------------------------- migration */

static void keys_for(tern__path_keys *k, uint8_t seed) {
  uint8_t c2s[32], s2c[32];
  memset(c2s, seed, sizeof c2s);
  memset(s2c, seed + 1, sizeof s2c);
  tern__path_derive(c2s, s2c, k);
}

static size_t make(const tern__path_keys *k, uint8_t type, uint64_t ctr, const char *a, uint8_t *out) {
  tern__path_pkt p = {.type = type, .counter = ctr};
  memcpy(p.id, k->id, 8);
  memcpy(p.a, a, 8);
  tern__path_write(&p, type == TERN__PATH_RESPONSE ? k->s2c : k->c2s, out);
  return TERN__PATH_BYTES;
}

Test(sockets, path_datagrams_are_sealed_and_every_byte_counts) {
  tern__path_keys k, other;
  keys_for(&k, 1);
  keys_for(&other, 7);
  cr_assert_neq(memcmp(k.id, other.id, 8), 0);
  uint8_t d[TERN__PATH_BYTES];
  make(&k, TERN__PATH_CHALLENGE, 5, "chal-123", d);
  tern__path_pkt p;
  cr_assert_eq(tern__path_peek(d, sizeof d, &p), 0);
  cr_assert_eq(p.type, TERN__PATH_CHALLENGE);
  cr_assert_eq(p.counter, 5);
  cr_assert_arr_eq(p.a, "chal-123", 8);
  cr_assert_eq(tern__path_open(d, sizeof d, k.c2s), 0);
  cr_assert_eq(tern__path_open(d, sizeof d, k.s2c), TERN_EDECRYPT, "opened under the other direction");
  cr_assert_eq(tern__path_open(d, sizeof d, other.c2s), TERN_EDECRYPT, "opened under another session");
  for (size_t i = 4; i < sizeof d; i++) {
    uint8_t t[TERN__PATH_BYTES];
    memcpy(t, d, sizeof t);
    t[i] ^= 0x20;
    tern__path_pkt q;
    cr_assert(tern__path_peek(t, sizeof t, &q) != 0 || tern__path_open(t, sizeof t, k.c2s) != 0,
              "byte %zu flipped and still accepted", i);
  }
  uint8_t h[TERN__PATH_HINT_BYTES];
  tern__path_write_hint(h);
  cr_assert(tern__path_is_hint(h, sizeof h));
  cr_assert(tern__path_looks_like(h, sizeof h));
  cr_assert_not(tern__enet_is_connect(d, sizeof d), "a path datagram read as ENet");
}

Test(sockets, the_relay_moves_a_session_only_after_a_confirm_from_the_new_address) {
  tern__mig *m;
  cr_assert_eq(tern__mig_new(&m), 0);
  tern__path_keys k;
  keys_for(&k, 3);
  cr_assert_eq(tern__mig_add(m, 42, 7, &k), 0);
  cr_assert_eq(tern__mig_add(m, 43, 1, &k), TERN_EEXIST);
  tern__addr x, y;
  tern__addr_set_v4(&x, 0x0A000002, 5000);
  tern__addr_set_v4(&y, 0x0A000099, 6000);
  uint8_t in[TERN__PATH_BYTES], out[64];
  const uint8_t rnd[8] = {9, 9, 9, 9, 9, 9, 9, 9};
  size_t olen;
  uint32_t h = 0;
  uint16_t g = 0;
  make(&k, TERN__PATH_CHALLENGE, 1, "client-c", in);
  cr_assert_eq(tern__mig_input(m, &x, in, sizeof in, rnd, out, &olen, &h, &g), TERN__MIG_ANSWER);
  cr_assert_eq(olen, TERN__PATH_BYTES, "the RESPONSE is no larger than the CHALLENGE");
  tern__path_pkt r;
  cr_assert_eq(tern__path_peek(out, olen, &r), 0);
  cr_assert_eq(r.type, TERN__PATH_RESPONSE);
  cr_assert_eq(tern__path_open(out, olen, k.s2c), 0);
  cr_assert_arr_eq(r.a, "client-c", 8, "the client's challenge is echoed");
  cr_assert_arr_eq(r.b, rnd, 8);
  /* The same CHALLENGE again, from anywhere: a replay, no answer. */
  cr_assert_eq(tern__mig_input(m, &y, in, sizeof in, rnd, out, &olen, &h, &g), TERN__MIG_NONE);
  cr_assert_eq(olen, 0);
  /* CONFIRM with a wrong echo, or from another address: no move. */
  make(&k, TERN__PATH_CONFIRM, 2, "wrong-ec", in);
  cr_assert_eq(tern__mig_input(m, &x, in, sizeof in, rnd, out, &olen, &h, &g), TERN__MIG_NONE);
  make(&k, TERN__PATH_CONFIRM, 3, (const char *)rnd, in);
  cr_assert_eq(tern__mig_input(m, &y, in, sizeof in, rnd, out, &olen, &h, &g), TERN__MIG_NONE);
  /* A forged one (another session's keys) and a RESPONSE sent to the relay. */
  tern__path_keys f;
  keys_for(&f, 11);
  memcpy(f.id, k.id, 8);
  make(&f, TERN__PATH_CONFIRM, 4, (const char *)rnd, in);
  cr_assert_eq(tern__mig_input(m, &x, in, sizeof in, rnd, out, &olen, &h, &g), TERN__MIG_NONE);
  make(&k, TERN__PATH_RESPONSE, 5, (const char *)rnd, in);
  cr_assert_eq(tern__mig_input(m, &x, in, sizeof in, rnd, out, &olen, &h, &g), TERN__MIG_NONE);
  /* The real CONFIRM from the candidate moves it. */
  make(&k, TERN__PATH_CONFIRM, 6, (const char *)rnd, in);
  cr_assert_eq(tern__mig_input(m, &x, in, sizeof in, rnd, out, &olen, &h, &g), TERN__MIG_MOVE);
  cr_assert_eq(h, 42);
  cr_assert_eq(g, 7);
  tern__mig_stats st;
  tern__mig_stats_get(m, &st);
  cr_assert_eq(st.moves, 1);
  cr_assert_eq(st.challenges, 1);
  cr_assert_geq(st.rejected, 5);
  /* Once the session ends, its datagrams are unknown. */
  tern__mig_remove(m, 42, 7);
  make(&k, TERN__PATH_CHALLENGE, 7, "client-c", in);
  cr_assert_eq(tern__mig_input(m, &x, in, sizeof in, rnd, out, &olen, &h, &g), TERN__MIG_NONE);
  tern__mig_free(m);
}

/* --------------------------------------------- signals during a service */

static void on_sig(int sig) { (void)sig; }

typedef struct kicker {
  pthread_t target;
} kicker;

static void *kick(void *arg) {
  kicker *k = arg;
  for (int i = 0; i < 10; i++) {
    usleep(30000);
    pthread_kill(k->target, SIGUSR1);
  }
  return NULL;
}

/* An app's own signal handler (no SA_RESTART) interrupting the client's
 * wait is not an I/O error: tern_client_service() carries on. */
Test(sockets, a_signal_during_a_service_wait_is_not_an_error) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sig; /* no SA_RESTART: the poller's wait fails with EINTR */
  sigaction(SIGUSR1, &sa, NULL);
  loop l;
  loop_start(&l, NULL, NULL, 0);
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "alice");
  size_t a = loop_add_client(&l, &cfg);
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 5000, &ev));
  kicker k = {.target = pthread_self()};
  pthread_t t;
  pthread_create(&t, NULL, kick, &k);
  for (int i = 0; i < 4; i++) {
    /* Long waits: the signals land inside the poller's wait. */
    int rc = tern_client_service(l.clients[a], 150);
    cr_assert_geq(rc, 0, "tern_client_service: %s after a signal", tern_strerror(rc));
    cr_assert_eq(tern_relay_service(l.relay, 0), 0);
  }
  pthread_join(t, NULL);
  loop_stop(&l);
}

/* --------------------------------------------------------------- NAT64 */

Test(sockets, nat64_prefix_is_learned_from_ipv4only_arpa_and_applied) {
  tern__addr wka, other, v4, out;
  uint8_t prefix[12];
  cr_assert_eq(tern__addr_parse_ip(&wka, "64:ff9b::192.0.0.170", 0), 0);
  cr_assert(tern__nat64_prefix_of(&wka, prefix));
  cr_assert_eq(tern__addr_parse_ip(&wka, "2001:db8:64::c000:ab", 0), 0);
  cr_assert(tern__nat64_prefix_of(&wka, prefix), "a network-specific /96 and 192.0.0.171");
  cr_assert_eq(tern__addr_parse_ip(&other, "2001:db8:64::c000:ac", 0), 0);
  cr_assert_not(tern__nat64_prefix_of(&other, prefix), "not one of ipv4only.arpa's addresses");
  cr_assert_eq(tern__addr_parse_ip(&other, "192.0.0.170", 0), 0);
  cr_assert_not(tern__nat64_prefix_of(&other, prefix), "an A record is not a prefix");
  cr_assert_eq(tern__addr_parse_ip(&wka, "64:ff9b::c000:aa", 0), 0);
  cr_assert(tern__nat64_prefix_of(&wka, prefix));
  cr_assert_eq(tern__addr_parse_ip(&v4, "198.51.100.2", 7400), 0);
  tern__nat64_apply(prefix, &v4, &out);
  char t[TERN__ADDR_TEXT];
  tern__addr_format(&out, t, sizeof t);
  cr_assert_str_eq(t, "[64:ff9b::c633:6402]:7400");
}

/* --- TCP (spec/wire.md §12) ---------------------------------------------- */

Test(sockets, tcp_frames_come_back_whole_from_any_split_and_bad_lengths_are_refused) {
  tern__tcpf_tx tx;
  tern__tcpf_tx_init(&tx, 3 * (2 + TERN__TCPF_MAX));
  uint8_t big[TERN__TCPF_MAX + 1];
  for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)i;
  struct iovec one = {.iov_base = big, .iov_len = 1}, max = {.iov_base = big, .iov_len = TERN__TCPF_MAX};
  struct iovec two[2] = {{.iov_base = big, .iov_len = 3}, {.iov_base = big + 3, .iov_len = 4}};
  cr_assert_eq(tern__tcpf_tx_put(&tx, &one, 1), 0);
  cr_assert_eq(tern__tcpf_tx_put(&tx, two, 2), 0);
  cr_assert_eq(tern__tcpf_tx_put(&tx, &max, 1), 0);
  struct iovec over = {.iov_base = big, .iov_len = TERN__TCPF_MAX + 1}, none = {.iov_base = big, .iov_len = 0};
  cr_assert_eq(tern__tcpf_tx_put(&tx, &over, 1), TERN_ETOOBIG);
  cr_assert_eq(tern__tcpf_tx_put(&tx, &none, 1), TERN_ETOOBIG);
  /* Full: a whole datagram is refused, none is cut. */
  cr_assert_eq(tern__tcpf_tx_put(&tx, &max, 1), 0);
  cr_assert_eq(tern__tcpf_tx_put(&tx, &max, 1), TERN_EAGAIN);
  size_t len;
  const uint8_t *p = tern__tcpf_tx_pending(&tx, &len);
  cr_assert_eq(len, 3 + 9 + 2 * (2 + TERN__TCPF_MAX));
  cr_assert(p[0] == 0 && p[1] == 1 && p[2] == 0 && p[3] == 0 && p[4] == 7);
  /* Read back one byte at a time: each datagram once, whole, in order. */
  static tern__tcpf_rx rx;
  memset(&rx, 0, sizeof rx);
  size_t want[] = {1, 7, TERN__TCPF_MAX, TERN__TCPF_MAX}, got = 0;
  for (size_t i = 0; i < len; i++) {
    size_t room;
    uint8_t *dst = tern__tcpf_rx_space(&rx, &room);
    cr_assert_gt(room, 0);
    *dst = p[i];
    tern__tcpf_rx_filled(&rx, 1);
    const uint8_t *d;
    size_t n;
    int r;
    while ((r = tern__tcpf_rx_next(&rx, &d, &n)) == 1) {
      cr_assert_lt(got, 4);
      cr_assert_eq(n, want[got], "datagram %zu: %zu bytes", got, n);
      cr_assert_arr_eq(d, big, n);
      got++;
    }
    cr_assert_eq(r, 0);
  }
  cr_assert_eq(got, 4);
  tern__tcpf_tx_consumed(&tx, len);
  cr_assert_eq((tern__tcpf_tx_pending(&tx, &len), len), 0);
  tern__tcpf_tx_free(&tx);
  /* A length of 0 or over the maximum is not this protocol. */
  const uint8_t zero[] = {0, 0, 1}, huge[] = {0x10, 0x01, 1};
  const uint8_t *bad[] = {zero, huge};
  for (int k = 0; k < 2; k++) {
    memset(&rx, 0, sizeof rx);
    size_t room;
    memcpy(tern__tcpf_rx_space(&rx, &room), bad[k], 3);
    tern__tcpf_rx_filled(&rx, 3);
    const uint8_t *d;
    size_t n;
    cr_assert_eq(tern__tcpf_rx_next(&rx, &d, &n), TERN_EPROTO);
  }
}

/* A UDP port that takes datagrams and never answers: a network that eats UDP. */
static int udp_sink(uint16_t *port) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  socklen_t sl = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  *port = ntohs(sa.sin_port);
  return fd;
}

static uint64_t ms_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

Test(sockets, a_client_whose_udp_goes_nowhere_talks_over_tcp, .timeout = 60) {
  loop l;
  start_relay(&l, "127.0.0.1");
  uint16_t tcp = 0;
  cr_assert_eq(tern_relay_listen_tcp(l.relay, 0, &tcp), 0);
  cr_assert_neq(tcp, 0);
  cr_assert_eq(tern_relay_listen_tcp(l.relay, 0, NULL), TERN_EEXIST);
  uint16_t sink_port;
  int sink = udp_sink(&sink_port);
  tern_client_config cfg;
  /* alice: UDP to the sink, TCP to the relay after the default 1 s. */
  loop_client_config(&l, &cfg, "alice");
  cfg.relay_port = sink_port;
  cfg.relay_tcp_port = tcp;
  uint64_t t0 = ms_now();
  size_t a = loop_add_client(&l, &cfg);
  /* bob: on UDP as usual. */
  size_t b = add_client(&l, "bob", "127.0.0.1");
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 5000, &ev), "alice did not connect over TCP");
  uint64_t took = ms_now() - t0;
  cr_assert_geq(took, 900, "connected after %llu ms: before the fallback delay?", (unsigned long long)took);
  cr_assert(loop_wait(&l, b, TERN_EV_CONNECTED, 5000, &ev));
  say(&l, a, "bob", "from tcp");
  hear(&l, b, "alice", "from tcp");
  say(&l, b, "alice", "to tcp");
  hear(&l, a, "bob", "to tcp");
  tern_client_stats cs;
  tern_client_get_stats(l.clients[a], &cs);
  cr_assert_eq(cs.on_tcp, 1);
  cr_assert_eq(cs.connects_tcp, 1);
  tern_relay_stats rs;
  tern_relay_get_stats(l.relay, &rs);
  cr_assert_eq(rs.tcp_connections, 1, "%llu TCP connections: the UDP attempt's?",
               (unsigned long long)rs.tcp_connections);
  pthread_mutex_lock(&book.mu);
  cr_assert(strstr(book.text, "peer tcp:127.0.0.1:"), "no TCP peer in the relay's log:\n%s", book.text);
  pthread_mutex_unlock(&book.mu);

  /* carol's app says UDP is blocked: TCP at once, not after 5 s. */
  loop_client_config(&l, &cfg, "carol");
  cfg.relay_port = sink_port;
  cfg.relay_tcp_port = tcp;
  cfg.tcp_fallback_ms = 5000;
  tern_client *c;
  cr_assert_eq(tern_client_new(&c, &cfg), 0);
  cr_assert_eq(tern_client_udp_blocked(c), 0);
  cr_assert_eq(tern_client_connect(c), 0);
  l.clients[l.nclients++] = c;
  cr_assert(loop_wait(&l, l.nclients - 1, TERN_EV_CONNECTED, 3000, &ev),
            "the app's hint did not race TCP at once");
  /* Without a TCP port there is nothing to hint. */
  tern_client_config plain;
  loop_client_config(&l, &plain, "dave");
  tern_client *d;
  cr_assert_eq(tern_client_new(&d, &plain), 0);
  cr_assert_eq(tern_client_udp_blocked(d), TERN_EINVAL);
  tern_client_free(d);
  close(sink);
  loop_stop(&l);
}

Test(sockets, a_tcp_stream_that_is_not_framed_is_closed_alone, .timeout = 60) {
  loop l;
  start_relay(&l, "127.0.0.1");
  uint16_t tcp = 0;
  cr_assert_eq(tern_relay_listen_tcp(l.relay, 0, &tcp), 0);
  size_t a, b;
  loop_add_pair(&l, &a, &b);
  /* A stranger's stream: a zero length, then a length over 4096. */
  const uint8_t bad[2][4] = {{0, 0, 0xAA, 0xBB}, {0xFF, 0xFF, 0xAA, 0xBB}};
  for (int k = 0; k < 2; k++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(tcp),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(write(fd, bad[k], sizeof bad[k]), (ssize_t)sizeof bad[k]);
    /* The relay reads it, closes the connection: the stranger sees EOF. */
    int closed = 0;
    for (int i = 0; i < 200 && !closed; i++) {
      loop_pump(&l);
      struct pollfd pf = {.fd = fd, .events = POLLIN};
      char x;
      if (poll(&pf, 1, 10) == 1) closed = read(fd, &x, 1) <= 0;
    }
    cr_assert(closed, "stream %d: the relay kept a connection that breaks the framing", k);
    close(fd);
  }
  tern_relay_stats rs;
  tern_relay_get_stats(l.relay, &rs);
  cr_assert_eq(rs.tcp_accepted, 2);
  cr_assert_eq(rs.tcp_connections, 0);
  /* Everyone else carries on. */
  say(&l, a, "bob", "still here");
  hear(&l, b, "alice", "still here");
  loop_stop(&l);
}

Test(sockets, a_list_of_endpoints_is_raced_in_order_until_one_answers, .timeout = 60) {
  loop l;
  start_relay(&l, "127.0.0.1");
  uint16_t sink_port;
  int sink = udp_sink(&sink_port);
  char list[128];
  /* The first endpoint eats datagrams; the second is the relay (the
   * default port). */
  snprintf(list, sizeof list, "127.0.0.1:%u, 127.0.0.1", sink_port);
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "alice");
  cfg.relay_host = list;
  uint64_t t0 = ms_now();
  size_t a = loop_add_client(&l, &cfg);
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 5000, &ev), "the second endpoint was never tried");
  uint64_t took = ms_now() - t0;
  cr_assert_geq(took, 240, "connected after %llu ms: before the 250 ms stagger?", (unsigned long long)took);
  /* Nothing usable in the list: a bad config, said at once. */
  tern_client_config bad;
  loop_client_config(&l, &bad, "bob");
  bad.relay_host = " , ,";
  tern_client *c;
  cr_assert_eq(tern_client_new(&c, &bad), TERN_EINVAL);
  cr_assert_null(c);
  close(sink);
  loop_stop(&l);
}

Test(sockets, a_relay_takes_the_largest_max_peers) {
  /* 65 ENet hosts behind one port: every shard gets a virtual socket. */
  loop l;
  tern_relay_config rc;
  loop_relay_config(&l, &rc);
  rc.max_peers = TERN_RELAY_MAX_PEERS;
  tern_relay *r;
  int e = tern_relay_new(&r, &rc);
  cr_assert_eq(e, 0, "tern_relay_new(max_peers %u): %s", TERN_RELAY_MAX_PEERS, tern_strerror(e));
  tern_relay_free(r);
}
