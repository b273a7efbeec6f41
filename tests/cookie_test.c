/*
 * The stateless cookie before any state (issue 13, finding 3; spec/wire.md
 * §13): the cookie jar (address, port and time slot bound, rotation keeps
 * the previous secret), the datagrams' sizes, and a real relay on loopback
 * that answers CONNECTs from unproven sources with one COOKIE smaller than
 * the CONNECT and no ENet state, under each policy.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io/addr.h"
#include "io/cookie.h"
#include "io/enet_platform.h"
#include "loop.h"
#include "tern/tern.h"

TestSuite(cookie, .timeout = 60);

static tern__addr addr(const char *ip, uint16_t port) {
  tern__addr a;
  cr_assert_eq(tern__addr_parse_ip(&a, ip, port), 0);
  return a;
}

static void fresh(uint8_t s[TERN__COOKIE_SECRET_BYTES], uint8_t v) {
  memset(s, v, TERN__COOKIE_SECRET_BYTES);
}

Test(cookie, a_cookie_from_another_address_port_or_time_slot_is_refused) {
  uint8_t s[TERN__COOKIE_SECRET_BYTES];
  fresh(s, 1);
  tern__cookie_jar j;
  uint64_t t0 = 10 * (uint64_t)TERN__COOKIE_ROTATE_MS + 5;
  tern__cookie_jar_init(&j, t0, s);
  tern__addr a = addr("192.0.2.7", 4000), a6 = addr("[2001:db8::7]", 4000);
  uint8_t c[TERN__COOKIE_BYTES], c6[TERN__COOKIE_BYTES];
  tern__cookie_make(&j, &a, c);
  tern__cookie_make(&j, &a6, c6);
  cr_assert(tern__cookie_check(&j, &a, c));
  cr_assert(tern__cookie_check(&j, &a6, c6));
  cr_assert_not(tern__cookie_check(&j, &a6, c), "another address");
  tern__addr p = a;
  p.port = 4001;
  cr_assert_not(tern__cookie_check(&j, &p, c), "another port");
  tern__addr b = addr("192.0.2.8", 4000);
  cr_assert_not(tern__cookie_check(&j, &b, c), "another address");
  uint8_t bad[TERN__COOKIE_BYTES];
  memcpy(bad, c, sizeof bad);
  bad[15] ^= 1;
  cr_assert_not(tern__cookie_check(&j, &a, bad), "a flipped bit");

  /* Another relay (another secret) does not take it. */
  tern__cookie_jar other;
  fresh(s, 2);
  tern__cookie_jar_init(&other, t0, s);
  cr_assert_not(tern__cookie_check(&other, &a, c));

  /* Rotation keeps the previous secret for one slot, not two. */
  cr_assert_not(tern__cookie_jar_due(&j, t0 + TERN__COOKIE_ROTATE_MS - 10));
  cr_assert(tern__cookie_jar_due(&j, t0 + TERN__COOKIE_ROTATE_MS));
  fresh(s, 3);
  tern__cookie_jar_rotate(&j, t0 + TERN__COOKIE_ROTATE_MS, s);
  cr_assert(tern__cookie_check(&j, &a, c), "the previous slot's cookie is still taken");
  uint8_t c2[TERN__COOKIE_BYTES];
  tern__cookie_make(&j, &a, c2);
  cr_assert_neq(memcmp(c, c2, sizeof c), 0, "a new slot gives a new cookie");
  fresh(s, 4);
  tern__cookie_jar_rotate(&j, t0 + 2 * TERN__COOKIE_ROTATE_MS, s);
  cr_assert_not(tern__cookie_check(&j, &a, c), "two slots old");
  cr_assert(tern__cookie_check(&j, &a, c2));
  /* After a gap of more than a slot neither old secret is kept. */
  fresh(s, 5);
  tern__cookie_jar_rotate(&j, t0 + 4 * TERN__COOKIE_ROTATE_MS, s);
  cr_assert_not(tern__cookie_check(&j, &a, c2));

  /* The same secret in another slot is another cookie: the time slot is
   * inside the MAC, not only in the choice of secret. */
  tern__cookie_jar k1, k2;
  fresh(s, 9);
  tern__cookie_jar_init(&k1, 0, s);
  tern__cookie_jar_init(&k2, 5 * (uint64_t)TERN__COOKIE_ROTATE_MS, s);
  uint8_t x1[TERN__COOKIE_BYTES];
  tern__cookie_make(&k1, &a, x1);
  cr_assert_not(tern__cookie_check(&k2, &a, x1));
}

/* spec/wire.md §13's example. */
Test(cookie, the_spec_example_is_what_the_code_makes) {
  uint8_t s[TERN__COOKIE_SECRET_BYTES];
  for (int i = 0; i < TERN__COOKIE_SECRET_BYTES; i++) s[i] = (uint8_t)i;
  tern__cookie_jar j;
  tern__cookie_jar_init(&j, 1796400000000ull, s);
  cr_assert_eq(j.slot, 14970000);
  tern__addr a = addr("192.0.2.7", 40000);
  uint8_t c[TERN__COOKIE_BYTES], r[TERN__COOKIE_REPLY_BYTES];
  tern__cookie_make(&j, &a, c);
  tern__cookie_write_reply(r, c);
  const uint8_t want[TERN__COOKIE_REPLY_BYTES] = {0xff, 0xff, 0x74, 0x63, 0x01, 0x01, 0x0c, 0x08,
                                                  0xe8, 0x11, 0xb7, 0xd9, 0x1c, 0xeb, 0xab, 0xb9,
                                                  0xeb, 0xcf, 0x63, 0x23, 0x03, 0xa1};
  cr_assert_eq(memcmp(r, want, sizeof want), 0, "the COOKIE differs from spec/wire.md §13");
}

Test(cookie, a_cookie_reply_is_never_larger_than_the_connect_and_parses_strictly) {
  /* The smallest ENet CONNECT (no sent time) is 2 + 48 bytes. */
  cr_assert_leq(TERN__COOKIE_REPLY_BYTES, 50);
  uint8_t c[TERN__COOKIE_BYTES];
  memset(c, 0xAB, sizeof c);
  uint8_t r[TERN__COOKIE_REPLY_BYTES];
  tern__cookie_write_reply(r, c);
  const uint8_t want[6] = {0xFF, 0xFF, 0x74, 0x63, 1, 1};
  cr_assert_eq(memcmp(r, want, 6), 0);
  uint8_t got[TERN__COOKIE_BYTES];
  const uint8_t *inner;
  size_t len;
  cr_assert_eq(tern__cookie_parse(r, sizeof r, got, &inner, &len), TERN__COOKIE_KIND_REPLY);
  cr_assert_eq(memcmp(got, c, sizeof c), 0);
  cr_assert_eq(tern__cookie_parse(r, sizeof r - 1, got, &inner, &len), 0, "short");
  uint8_t w[128];
  const uint8_t connect[52] = {0x8F, 0xFF, 0, 1, 0x82, 0xFF, 0, 1};
  size_t n = tern__cookie_wrap(w, sizeof w, c, connect, sizeof connect);
  cr_assert_eq(n, 22 + 52);
  cr_assert_eq(tern__cookie_parse(w, n, got, &inner, &len), TERN__COOKIE_KIND_CONNECT);
  cr_assert_eq(len, sizeof connect);
  cr_assert_eq(memcmp(inner, connect, len), 0);
  cr_assert_eq(tern__cookie_wrap(w, 60, c, connect, sizeof connect), 0, "no room");
  cr_assert_eq(tern__cookie_parse(w, 22, got, &inner, &len), 0, "a CONNECT with nothing inside");
  w[4] = 2;
  cr_assert_eq(tern__cookie_parse(w, n, got, &inner, &len), 0, "unknown version");
  w[4] = 1;
  w[5] = 3;
  cr_assert_eq(tern__cookie_parse(w, n, got, &inner, &len), 0, "unknown kind");
  cr_assert_not(tern__enet_is_connect(w, n), "a COOKIE read as ENet");
}

/* --------------------------------------------------- a relay on loopback */

/* A valid ENet 1.3.17 CONNECT (with sent time): MTU 1400, window 32768,
 * one channel, so that ENet answers it when it sees it. */
static void enet_connect(uint8_t c[52]) {
  memset(c, 0, 52);
  c[0] = 0x8F, c[1] = 0xFF, c[4] = 0x82, c[5] = 0xFF, c[7] = 1;
  c[14] = 0x05, c[15] = 0x78; /* mtu 1400 */
  c[18] = 0x80;               /* window 32768 */
  c[23] = 1;                  /* channels */
}

static int udp_to(loop *l, struct sockaddr_in *to) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  cr_assert_geq(fd, 0);
  *to = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(tern_relay_port(l->relay)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  return fd;
}

typedef struct replies {
  size_t n, bytes, cookies;
  uint8_t last_cookie[TERN__COOKIE_REPLY_BYTES];
} replies;

/* Pumps the relay for ms and reads what came back to fd. */
static void collect(loop *l, int fd, int ms, replies *r) {
  for (int t = 0; t < ms; t += 5) {
    loop_pump(l);
    uint8_t in[256];
    ssize_t n;
    while ((n = recv(fd, in, sizeof in, MSG_DONTWAIT)) > 0) {
      r->n++;
      r->bytes += (size_t)n;
      if (n == TERN__COOKIE_REPLY_BYTES && tern__cookie_looks_like(in, (size_t)n)) {
        r->cookies++;
        memcpy(r->last_cookie, in, sizeof r->last_cookie);
      }
    }
    usleep(5000);
  }
}

/* A relay with cookie policy `mode`; a socket to it (returned), its
 * address and a CONNECT to send. */
static int start(loop *l, int mode, struct sockaddr_in *to, uint8_t c[52]) {
  tern_relay_config rc;
  loop_relay_config(l, &rc);
  rc.cookies = mode;
  loop_start_relay(l, &rc);
  enet_connect(c);
  return udp_to(l, to);
}

Test(cookie, spoofed_connects_are_not_amplified) {
  loop l;
  struct sockaddr_in to;
  uint8_t c[52];
  int fd = start(&l, TERN_RELAY_COOKIES_ALWAYS, &to, c);
  replies r = {0};
  for (int i = 0; i < 20; i++) {
    cr_assert_eq(sendto(fd, c, sizeof c, 0, (struct sockaddr *)&to, sizeof to), (ssize_t)sizeof c);
    collect(&l, fd, 10, &r);
  }
  /* Wait past ENet's first resend (about 500 ms): nothing else comes. */
  collect(&l, fd, 1500, &r);
  cr_assert_eq(r.n, 20, "%zu replies to 20 CONNECTs", r.n);
  cr_assert_eq(r.cookies, 20, "only COOKIEs: %zu", r.cookies);
  cr_assert_leq(r.bytes, 20 * sizeof c, "amplified: %zu bytes for %zu", r.bytes, 20 * sizeof c);
  tern_relay_stats st;
  tern_relay_get_stats(l.relay, &st);
  cr_assert_eq(st.cookies_sent, 20);
  cr_assert_eq(st.cookie_connects, 0);

  /* A wrong cookie is dropped and draws a fresh COOKIE. */
  uint8_t w[128];
  uint8_t wrong[TERN__COOKIE_BYTES] = {0};
  size_t wn = tern__cookie_wrap(w, sizeof w, wrong, c, sizeof c);
  cr_assert_eq(sendto(fd, w, wn, 0, (struct sockaddr *)&to, sizeof to), (ssize_t)wn);
  replies r2 = {0};
  collect(&l, fd, 200, &r2);
  cr_assert_eq(r2.n, 1);
  cr_assert_eq(r2.cookies, 1);
  tern_relay_get_stats(l.relay, &st);
  cr_assert_eq(st.cookies_bad, 1);

  /* The right cookie gets ENet's answer (VERIFY_CONNECT), not a COOKIE. */
  wn = tern__cookie_wrap(w, sizeof w, r2.last_cookie + TERN__COOKIE_HDR, c, sizeof c);
  cr_assert_eq(sendto(fd, w, wn, 0, (struct sockaddr *)&to, sizeof to), (ssize_t)wn);
  replies r3 = {0};
  collect(&l, fd, 200, &r3);
  cr_assert_geq(r3.n, 1, "no answer to a valid cookie");
  cr_assert_eq(r3.cookies, 0);
  tern_relay_get_stats(l.relay, &st);
  cr_assert_eq(st.cookie_connects, 1);
  close(fd);

  /* A real client gets in through the cookie round trip, at once. */
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "alice");
  size_t a = loop_add_client(&l, &cfg);
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 1000, &ev), "no connect within 1 s");
  tern_relay_get_stats(l.relay, &st);
  cr_assert_eq(st.cookie_connects, 2);
  loop_stop(&l);
}

/* AUTO: no cookie round trip while few connects are pending; cookies once
 * TERN__COOKIES_AUTO_PENDING (64) handles wait for their first connection. */
Test(cookie, auto_asks_for_cookies_only_under_a_flood_of_pending_connects) {
  loop l;
  struct sockaddr_in to;
  uint8_t c[52];
  close(start(&l, TERN_RELAY_COOKIES_AUTO, &to, c));
  enum { N = 80 };
  int fds[N];
  size_t cookies = 0, first_cookie = N;
  for (int i = 0; i < N; i++) {
    fds[i] = udp_to(&l, &to);
    cr_assert_eq(sendto(fds[i], c, sizeof c, 0, (struct sockaddr *)&to, sizeof to), (ssize_t)sizeof c);
    replies r = {0};
    collect(&l, fds[i], 10, &r);
    if (r.cookies && first_cookie == N) first_cookie = (size_t)i;
    cookies += r.cookies;
  }
  cr_assert_eq(first_cookie, 64, "first COOKIE for CONNECT %zu", first_cookie);
  cr_assert_eq(cookies, N - 64);
  for (int i = 0; i < N; i++) close(fds[i]);
  loop_stop(&l);
}

Test(cookie, never_keeps_the_old_behaviour) {
  loop l;
  struct sockaddr_in to;
  uint8_t c[52];
  int fd = start(&l, TERN_RELAY_COOKIES_NEVER, &to, c);
  cr_assert_eq(sendto(fd, c, sizeof c, 0, (struct sockaddr *)&to, sizeof to), (ssize_t)sizeof c);
  replies r = {0};
  collect(&l, fd, 200, &r);
  cr_assert_geq(r.n, 1);
  cr_assert_eq(r.cookies, 0);
  close(fd);
  loop_stop(&l);
  loop other;
  tern_relay_config rc;
  loop_relay_config(&other, &rc);
  rc.cookies = 3;
  tern_relay *bad = NULL;
  cr_assert_eq(tern_relay_new(&bad, &rc), TERN_EINVAL, "an unknown policy");
}

/* A relay's UDP port is two sockets in one SO_REUSEPORT group on Linux
 * (docs/socket-layer.md: CONNECTs from strangers and the rest apart), and
 * still its own: a second relay, or any socket bound without joining the
 * group, gets EADDRINUSE as before, and the relay answers on its port. */
Test(cookie, a_relays_two_sockets_keep_the_port_its_own) {
  loop l;
  struct sockaddr_in to;
  uint8_t c[52];
  tern_relay_config rc;
  int fd = start(&l, TERN_RELAY_COOKIES_ALWAYS, &to, c);
  loop_relay_config(&(loop){0}, &rc);
  rc.port = tern_relay_port(l.relay);
  tern_relay *again = NULL;
  int e = tern_relay_new(&again, &rc);
  cr_assert_lt(e, 0, "a second relay on the port: %d", e);
  int plain = socket(AF_INET, SOCK_DGRAM, 0);
  cr_assert_geq(plain, 0);
  cr_assert_neq(bind(plain, (struct sockaddr *)&to, sizeof to), 0);
  cr_assert_eq(errno, EADDRINUSE);
  close(plain);
  /* A CONNECT (the first socket) and a wrapped one with a wrong cookie
   * (the second) are both read: each draws a COOKIE. */
  uint8_t wrapped[TERN__COOKIE_REPLY_BYTES + 52], zero[TERN__COOKIE_BYTES] = {0};
  size_t wn = tern__cookie_wrap(wrapped, sizeof wrapped, zero, c, 52);
  cr_assert_eq(sendto(fd, c, 52, 0, (struct sockaddr *)&to, sizeof to), 52);
  cr_assert_eq(sendto(fd, wrapped, wn, 0, (struct sockaddr *)&to, sizeof to), (ssize_t)wn);
  replies r = {0};
  collect(&l, fd, 200, &r);
  cr_assert_eq(r.cookies, 2);
  close(fd);
  loop_stop(&l);
}
