/* The link adapter's retransmission timing (spec/wire.md, "Retransmission
 * timing"), over real loopback UDP through a small in-process proxy that
 * delays every datagram by 50 ms each way (a 100 ms round trip) and drops
 * the ones a test names. ENet on its own starts from a 500 ms RTT guess and
 * doubles each timeout: three lost transmissions of anything cost it
 * 0.5 + 1 + 2 = 3.5 s. The bounds below sit between what tern's timing
 * gives (well under a second) and that, with room for a busy machine. */
#include <criterion/criterion.h>
#include <string.h>
#include <time.h>

#include "io/link.h"
#include "udp_proxy.h"
#include "tern/tern.h"

static uint64_t now_ms(void) { return udp_proxy_now_ms(); }

/* ---- what the proxy drops ------------------------------------------------ */

enum { TO_RELAY = UDP_PROXY_TO_TARGET, TO_CLIENT = UDP_PROXY_TO_CLIENT };

/* Drop the first drop_first[dir] datagrams of a direction, and the first
 * drop_marked datagrams toward the relay that contain `marker`. */
typedef struct drops {
  unsigned drop_first[2];
  const uint8_t *marker;
  size_t marker_len;
  unsigned drop_marked, marked_seen;
} drops;

static int contains(const uint8_t *d, size_t n, const uint8_t *m, size_t mn) {
  for (size_t i = 0; mn && i + mn <= n; i++)
    if (memcmp(d + i, m, mn) == 0) return 1;
  return 0;
}

static int drop_rule(void *ctx, int dir, unsigned idx, const uint8_t *d, size_t n) {
  drops *r = ctx;
  if (idx < r->drop_first[dir]) return 1;
  if (dir == TO_RELAY && r->marker && contains(d, n, r->marker, r->marker_len))
    return r->marked_seen++ < r->drop_marked;
  return 0;
}

/* ---- a client link and a relay link through the proxy -------------------- */

typedef struct pair {
  tern__link *client, *relay;
  tern__link_peer *cpeer, *rpeer;
  udp_proxy px;
  drops dr;
  uint64_t client_up, relay_up; /* when each side saw CONNECT; 0: not yet */
  size_t relay_got;             /* packets the relay received */
  uint64_t relay_got_at;
} pair;

static void pair_start(pair *pr, unsigned delay_ms) {
  memset(pr, 0, sizeof *pr);
  cr_assert_eq(tern__link_new(&pr->relay, "127.0.0.1", 0, 4), 0);
  cr_assert_eq(tern__link_new(&pr->client, NULL, 0, 1), 0);
  udp_proxy_start(&pr->px, tern__link_port(pr->relay), delay_ms);
  pr->px.drop = drop_rule;
  pr->px.drop_ctx = &pr->dr;
}

static void pair_connect(pair *pr) {
  cr_assert_eq(tern__link_connect(pr->client, "127.0.0.1", pr->px.front_port, &pr->cpeer), 0);
  tern__link_flush(pr->client);
}

static void pair_stop(pair *pr) {
  tern__link_free(pr->client);
  tern__link_free(pr->relay);
  udp_proxy_stop(&pr->px);
}

/* Services both links and the proxy once, then waits about 1 ms. */
static void pair_step(pair *pr) {
  tern__link_event ev;
  /* Bounded per step: the rest waits for the next one. */
  for (int k = 0; k < 64 && tern__link_service(pr->client, 0, &ev) == 1; k++) {
    if (ev.type == TERN__LINK_EV_CONNECT && !pr->client_up) pr->client_up = now_ms();
    tern__link_event_done(&ev);
  }
  for (int k = 0; k < 64 && tern__link_service(pr->relay, 0, &ev) == 1; k++) {
    if (ev.type == TERN__LINK_EV_CONNECT && !pr->relay_up) {
      pr->relay_up = now_ms();
      pr->rpeer = ev.peer;
    }
    if (ev.type == TERN__LINK_EV_RECEIVE) {
      pr->relay_got++;
      pr->relay_got_at = now_ms();
    }
    tern__link_event_done(&ev);
  }
  (void)tern__link_next_timeout_ms(pr->client); /* what an app calls before it waits */
  (void)tern__link_next_timeout_ms(pr->relay);
  udp_proxy_pump(&pr->px);
  struct timespec ts = {0, 1000000};
  nanosleep(&ts, NULL);
}

/* Steps until *flag is non-zero or `ms` pass. Returns the time it took. */
static uint64_t pair_until(pair *pr, const uint64_t *flag, uint64_t start, uint64_t ms) {
  while (!*flag && now_ms() < start + ms) pair_step(pr);
  return *flag ? *flag - start : ms;
}

Test(link, lost_connect_requests_are_resent_within_a_second) {
  pair pr;
  pair_start(&pr, 50);
  /* the first three connect requests: each goes twice (dispatch.c's
   * CONNECT_COPIES, spec/wire.md §13), then once at each of the four
   * spread times before the next request */
  pr.dr.drop_first[TO_RELAY] = 18;
  uint64_t t0 = now_ms();
  pair_connect(&pr);
  uint64_t took = pair_until(&pr, &pr.client_up, t0, 6000);
  cr_assert_eq(pr.px.dropped[TO_RELAY], 18);
  cr_assert(pr.client_up, "connected at all");
  /* tern: resent after 200 ms (twice a 100 ms guess), then at most every
   * 2 x 100 + 50 ms: the fourth leaves at about 700 ms, connected at 800.
   * ENet alone: 0.5 + 1 + 2 s, connected at 3.6 s. */
  cr_assert_lt(took, 2000, "connect took %llu ms with 3 requests lost", (unsigned long long)took);
  cr_assert_geq(took, 500, "3 lost requests cannot cost less than 2 timeouts (%llu ms)",
                (unsigned long long)took);
  pair_stop(&pr);
}

Test(link, lost_connect_answers_are_resent_within_a_second) {
  pair pr;
  pair_start(&pr, 50);
  pr.dr.drop_first[TO_CLIENT] = 3; /* the relay's first three answers */
  uint64_t t0 = now_ms();
  pair_connect(&pr);
  uint64_t took = pair_until(&pr, &pr.client_up, t0, 6000);
  cr_assert_eq(pr.px.dropped[TO_CLIENT], 3);
  /* The relay's side has no RTT sample either: its answer is resent at
   * most every 250 ms (ENet: 0.5, 1, 2 s). The client's own resends do not
   * help: the relay ignores a repeated request from a peer it knows. */
  cr_assert_lt(took, 2000, "connect took %llu ms with 3 answers lost", (unsigned long long)took);
  pair_stop(&pr);
}

Test(link, the_connect_exchange_seeds_the_rtt) {
  pair pr;
  pair_start(&pr, 50);
  pair_connect(&pr);
  uint64_t t0 = now_ms();
  pair_until(&pr, &pr.client_up, t0, 3000);
  cr_assert(pr.client_up);
  /* Right after the connect, before any acknowledgement: ENet alone would
   * still say 500. */
  uint32_t rtt = tern__link_peer_rtt(pr.cpeer);
  cr_assert(rtt >= 90 && rtt <= 250, "RTT after connect %u ms (path: 100 ms)", rtt);
  pair_stop(&pr);
}

static const uint8_t MARK[16] = {0xa5, 0x5a, 0xa5, 0x5a, 't', 'e', 'r', 'n',
                                 'l', 'i', 'n', 'k', 0xa5, 0x5a, 0xa5, 0x5a};

/* Connects, lets the relay's side finish too, then sends one reliable
 * packet carrying MARK from the client. Returns when it was sent. */
static uint64_t connect_and_send(pair *pr) {
  pair_connect(pr);
  uint64_t t0 = now_ms();
  pair_until(pr, &pr->relay_up, t0, 3000);
  cr_assert(pr->client_up && pr->relay_up);
  uint8_t body[64];
  memset(body, 0x11, sizeof body);
  memcpy(body + 8, MARK, sizeof MARK);
  cr_assert_eq(tern__link_send(pr->client, pr->cpeer, TERN__CH_CHAT0, body, sizeof body,
                               TERN__LINK_RELIABLE),
               0);
  tern__link_flush(pr->client);
  return now_ms();
}

Test(link, a_reliable_packet_lost_three_times_arrives_within_a_second) {
  pair pr;
  pair_start(&pr, 50);
  pr.dr.marker = MARK;
  pr.dr.marker_len = sizeof MARK;
  pr.dr.drop_marked = 3;
  uint64_t sent = connect_and_send(&pr);
  uint64_t got = 0;
  while (!pr.relay_got && now_ms() < sent + 6000) pair_step(&pr);
  got = pr.relay_got ? pr.relay_got_at - sent : 6000;
  cr_assert_eq(pr.dr.marked_seen, 4, "three transmissions lost, the fourth through");
  /* Timeout 2 x 100 = 200 ms from the seeded RTT, then capped at 250:
   * through at about 700 + 50 ms. ENet alone (RTT still its 500 guess, as
   * no acknowledgement has come back yet): 0.5 + 1 + 2 s. */
  cr_assert_lt(got, 2000, "delivered %llu ms after send with 3 transmissions lost",
               (unsigned long long)got);
  pair_stop(&pr);
}

Test(link, backoff_resumes_after_the_fast_resends) {
  pair pr;
  pair_start(&pr, 50);
  pr.dr.marker = MARK;
  pr.dr.marker_len = sizeof MARK;
  pr.dr.drop_marked = 1000; /* a path that has died for this packet */
  uint64_t sent = connect_and_send(&pr);
  while (now_ms() < sent + 3000) pair_step(&pr);
  /* Five transmissions at most 250 ms apart (by about 0.95 s), then the
   * interval doubles: 0.5, 1 s: 7 by 3 s. Capped for good it would be 12. */
  cr_assert(pr.dr.marked_seen >= 6 && pr.dr.marked_seen <= 9,
            "%u transmissions in 3 s of a dead path", pr.dr.marked_seen);
  cr_assert_eq(pr.relay_got, 0);
  pair_stop(&pr);
}

/* Sends `n` bytes reliably from the client (fragmented past the MTU). */
static void send_big(pair *pr, size_t n) {
  static uint8_t body[40000];
  cr_assert_leq(n, sizeof body);
  memset(body, 0x22, n);
  cr_assert_eq(tern__link_send(pr->client, pr->cpeer, TERN__CH_CHAT0, body, n, TERN__LINK_RELIABLE), 0);
  tern__link_flush(pr->client);
}

/* The bounds of tern__link_set_packet_limits (docs/socket-layer.md,
 * "Fragments before authentication"): a peer not yet trusted gets no
 * reassembly over the pre-authentication bound, a trusted one none over
 * the host-wide bound. */
Test(link, fragments_are_bounded_before_trust_and_after) {
  pair pr;
  pair_start(&pr, 5);
  tern__link_set_packet_limits(pr.relay, 20000, 3000);
  pair_connect(&pr);
  uint64_t t0 = now_ms();
  pair_until(&pr, &pr.relay_up, t0, 3000);
  cr_assert(pr.client_up && pr.relay_up);
  send_big(&pr, 5000); /* over 3000: held back until the peer is trusted */
  t0 = now_ms();
  while (now_ms() < t0 + 700) pair_step(&pr);
  cr_assert_eq(pr.relay_got, 0, "an untrusted peer's 5000-byte packet was reassembled");
  cr_assert_gt(tern__link_frag_refused(pr.relay), 0);
  tern__link_peer_trust(pr.relay, pr.rpeer);
  t0 = now_ms();
  while (!pr.relay_got && now_ms() < t0 + 5000) pair_step(&pr);
  cr_assert_eq(pr.relay_got, 1, "ENet's resend passes once the peer is trusted");
  send_big(&pr, 30000); /* over the host-wide 20000: ENet refuses it */
  t0 = now_ms();
  while (now_ms() < t0 + 1000) pair_step(&pr);
  cr_assert_eq(pr.relay_got, 1, "a packet over maximumPacketSize was reassembled");
  pair_stop(&pr);
}
