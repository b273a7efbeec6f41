/*
 * Tests of lib/relay/probesvc.c, the relay's probe service, on a virtual clock:
 * what a client that holds a probe key gets (an ACK at once, one REPLY
 * after exactly wait_ms of silence, to where it last sent from), what
 * anybody else gets (nothing), and the limits that keep the service from
 * being a reflector: per-key, per-address and global caps on pending
 * probes, a per-address token bucket, and, over a long seeded run of
 * valid, forged and replayed requests from a few addresses, never more
 * bytes to an address than that address sent.
 */
#include <criterion/criterion.h>

#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire/probe.h"
#include "relay/probesvc.h"
#include "tern/tern.h"

static void setup(void) { cr_assert_geq(sodium_init(), 0, "sodium_init failed"); }

TestSuite(probesvc, .init = setup);

#define T0 1000000ull /* the virtual clock starts here, in ms */
#define IP_A 0xC0000201u
#define IP_B 0xC6336402u

typedef struct ckey {
  uint64_t conn;
  uint8_t id[TERN__PROBE_ID_BYTES];
  uint8_t key[TERN__PROBE_KEY_BYTES];
} ckey;

static ckey make_key(uint64_t conn, uint8_t seed) {
  ckey k = {.conn = conn};
  for (size_t i = 0; i < sizeof k.id; i++) k.id[i] = (uint8_t)(seed * 31 + i);
  for (size_t i = 0; i < sizeof k.key; i++) k.key[i] = (uint8_t)(seed * 17 + 3 * i + 1);
  return k;
}

static tern__psvc *svc_with(const tern__psvc_config *cfg) {
  tern__psvc *s = NULL;
  cr_assert_eq(tern__psvc_new(&s, cfg), 0);
  cr_assert_not_null(s);
  return s;
}

static tern__psvc *svc_default(void) {
  tern__psvc_config cfg;
  tern__psvc_config_default(&cfg);
  return svc_with(&cfg);
}

static void add(tern__psvc *s, const ckey *k) {
  cr_assert_eq(tern__psvc_add_key(s, k->conn, k->id, k->key), 0);
}

static size_t datagram(const ckey *k, uint8_t type, uint64_t nonce, uint32_t wait_ms, uint8_t *out) {
  tern__probe_pkt p = {.type = type, .nonce = nonce, .wait_ms = wait_ms};
  memcpy(p.id, k->id, sizeof p.id);
  size_t n = tern__probe_write(&p, k->key, out, TERN__PROBE_REQUEST_BYTES);
  cr_assert_gt(n, 0);
  return n;
}

/* Hands data to the service, which must take it; returns the answer's
 * length (0: no answer). */
static size_t feed(tern__psvc *s, uint32_t ip, uint16_t port, const uint8_t *data, size_t len,
                   uint64_t now, uint8_t *answer) {
  size_t alen = 12345;
  tern__addr from;
  tern__addr_set_v4(&from, ip, port);
  cr_assert_eq(tern__psvc_input(s, &from, data, len, now, answer, 64, &alen), 1,
               "a probe datagram was not taken");
  cr_assert_leq(alen, 64);
  return alen;
}

/* Sends a REQUEST; returns 1 if it was acknowledged (and checks the ACK). */
static int ask(tern__psvc *s, const ckey *k, uint32_t ip, uint16_t port, uint64_t nonce,
               uint32_t wait_ms, uint64_t now) {
  uint8_t req[TERN__PROBE_REQUEST_BYTES], ans[64];
  size_t n = datagram(k, TERN__PROBE_REQUEST, nonce, wait_ms, req);
  size_t alen = feed(s, ip, port, req, n, now, ans);
  if (alen == 0) return 0;
  tern__probe_pkt a;
  cr_assert_eq(alen, TERN__PROBE_ANSWER_BYTES);
  cr_assert_eq(tern__probe_parse(ans, alen, &a), 0);
  cr_assert_eq(tern__probe_verify(ans, alen, k->key), 0, "the ACK is not under the session's key");
  cr_assert_eq(a.type, TERN__PROBE_ACK);
  cr_assert_arr_eq(a.id, k->id, sizeof a.id);
  cr_assert_eq(a.nonce, nonce);
  cr_assert_eq(a.wait_ms, wait_ms);
  return 1;
}

typedef struct reply {
  uint32_t ip;
  uint16_t port;
  tern__probe_pkt p;
  uint8_t bytes[64];
  size_t len;
} reply;

/* The next REPLY due at now, or 0. */
static int next_reply(tern__psvc *s, uint64_t now, reply *r) {
  memset(r, 0, sizeof *r);
  tern__addr to;
  if (!tern__psvc_next_reply(s, now, &to, r->bytes, sizeof r->bytes, &r->len)) return 0;
  cr_assert(tern__addr_is_v4(&to));
  r->ip = tern__addr_v4(&to);
  r->port = to.port;
  cr_assert_eq(r->len, TERN__PROBE_ANSWER_BYTES);
  cr_assert_eq(tern__probe_parse(r->bytes, r->len, &r->p), 0);
  cr_assert_eq(r->p.type, TERN__PROBE_REPLY);
  return 1;
}

static void check_reply(const reply *r, const ckey *k, uint32_t ip, uint16_t port, uint64_t nonce,
                        uint32_t wait_ms) {
  cr_assert_eq(tern__probe_verify(r->bytes, r->len, k->key), 0);
  cr_assert_arr_eq(r->p.id, k->id, TERN__PROBE_ID_BYTES);
  cr_assert_eq(r->p.nonce, nonce);
  cr_assert_eq(r->p.wait_ms, wait_ms);
  cr_assert_eq(r->ip, ip, "REPLY to %08x, want %08x", r->ip, ip);
  cr_assert_eq(r->port, port, "REPLY to port %u, want %u", r->port, port);
}

/* No REPLY is ever sent: not now, not in an hour. */
static void assert_no_reply_ever(tern__psvc *s, uint64_t now) {
  reply r;
  cr_assert_not(next_reply(s, now, &r));
  cr_assert_not(next_reply(s, now + 3600000, &r), "a REPLY went out for nonce %llx",
                (unsigned long long)r.p.nonce);
}

/* ------------------------------------------------------------ answers */

Test(probesvc, a_request_gets_an_ack_at_once_and_one_reply_after_wait_ms) {
  tern__psvc *s = svc_default();
  ckey k = make_key(1, 1);
  add(s, &k);
  cr_assert(ask(s, &k, IP_A, 40000, 77, 20000, T0));
  cr_assert_eq(tern__psvc_pending(s), 1);
  reply r;
  cr_assert_not(next_reply(s, T0, &r));
  cr_assert_not(next_reply(s, T0 + 19999, &r), "REPLY 1 ms early: the silence was not 20 s");
  cr_assert(next_reply(s, T0 + 20000, &r));
  check_reply(&r, &k, IP_A, 40000, 77, 20000);
  /* Exactly one. */
  cr_assert_not(next_reply(s, T0 + 20000, &r));
  cr_assert_not(next_reply(s, T0 + 10000000, &r));
  cr_assert_eq(tern__psvc_pending(s), 0);
  tern__psvc_stats st;
  tern__psvc_get_stats(s, &st);
  cr_assert_eq(st.requests, 1);
  cr_assert_eq(st.acks, 1);
  cr_assert_eq(st.replies, 1);
  tern__psvc_free(s);
}

Test(probesvc, a_late_poll_still_gets_the_reply_once) {
  tern__psvc *s = svc_default();
  ckey k = make_key(1, 1);
  add(s, &k);
  cr_assert(ask(s, &k, IP_A, 40000, 77, 1000, T0));
  reply r;
  cr_assert(next_reply(s, T0 + 500000, &r));
  check_reply(&r, &k, IP_A, 40000, 77, 1000);
  cr_assert_not(next_reply(s, T0 + 500000, &r));
  tern__psvc_free(s);
}

Test(probesvc, a_resend_restarts_the_silence_and_moves_the_reply_to_its_address) {
  tern__psvc *s = svc_default();
  ckey k = make_key(1, 1);
  add(s, &k);
  cr_assert(ask(s, &k, IP_A, 40000, 5, 30000, T0));
  /* The NAT gave the probe socket a new mapping: another port, even
   * another address. The resend is acknowledged too. */
  cr_assert(ask(s, &k, IP_B, 40001, 5, 30000, T0 + 1000));
  cr_assert_eq(tern__psvc_pending(s), 1, "a resend is the same probe, not a second one");
  reply r;
  cr_assert_not(next_reply(s, T0 + 30000, &r), "REPLY 30 s after the first request, 29 s after the resend");
  cr_assert_not(next_reply(s, T0 + 30999, &r));
  cr_assert(next_reply(s, T0 + 31000, &r));
  check_reply(&r, &k, IP_B, 40001, 5, 30000);
  cr_assert_not(next_reply(s, T0 + 100000, &r));
  tern__psvc_free(s);
}

Test(probesvc, the_reply_carries_the_wait_of_the_latest_request) {
  tern__psvc *s = svc_default();
  ckey k = make_key(1, 1);
  add(s, &k);
  cr_assert(ask(s, &k, IP_A, 40000, 5, 30000, T0));
  cr_assert(ask(s, &k, IP_A, 40000, 5, 10000, T0 + 1000));
  reply r;
  cr_assert_not(next_reply(s, T0 + 10999, &r));
  cr_assert(next_reply(s, T0 + 11000, &r));
  check_reply(&r, &k, IP_A, 40000, 5, 10000);
  assert_no_reply_ever(s, T0 + 11000);
  tern__psvc_free(s);
}

Test(probesvc, datagrams_that_are_not_probes_are_left_to_enet) {
  tern__psvc *s = svc_default();
  uint8_t ans[64];
  const uint8_t enet[] = {0x80, 0x00, 0x12, 0x34, 0x82, 0xFF, 0x00, 0x01, 0, 0, 0, 0};
  size_t alen = 99;
  tern__addr a1;
  tern__addr_set_v4(&a1, IP_A, 1);
  cr_assert_eq(tern__psvc_input(s, &a1, enet, sizeof enet, T0, ans, sizeof ans, &alen), 0);
  cr_assert_eq(alen, 0);
  const uint8_t three[] = {0xFF, 0xFF, 0x74};
  cr_assert_eq(tern__psvc_input(s, &a1, three, sizeof three, T0, ans, sizeof ans, &alen), 0);
  tern__psvc_stats st;
  tern__psvc_get_stats(s, &st);
  cr_assert_eq(st.rejected + st.limited + st.requests, 0, "ENet's datagrams are not counted as probes");
  tern__psvc_free(s);
}

Test(probesvc, forged_and_misdirected_datagrams_are_taken_and_not_answered) {
  tern__psvc *s = svc_default();
  ckey k = make_key(1, 1), stranger = make_key(2, 2);
  add(s, &k);
  uint8_t d[TERN__PROBE_REQUEST_BYTES + 8], ans[64];
  size_t n;
  uint64_t now = T0;

  /* An id the relay never gave out (correctly tagged under its own key). */
  n = datagram(&stranger, TERN__PROBE_REQUEST, 1, 20000, d);
  cr_assert_eq(feed(s, IP_A, 1, d, n, now++, ans), 0, "unknown id answered");
  /* The right id under another key. */
  memcpy(stranger.id, k.id, sizeof k.id);
  n = datagram(&stranger, TERN__PROBE_REQUEST, 2, 20000, d);
  cr_assert_eq(feed(s, IP_A, 1, d, n, now++, ans), 0, "wrong key answered");
  /* A valid request with one bit of its tag, header or padding flipped. */
  size_t spots[] = {6, 14, 22, 30, 60, 70, 83};
  for (size_t i = 0; i < sizeof spots / sizeof spots[0]; i++) {
    n = datagram(&k, TERN__PROBE_REQUEST, 3 + i, 20000, d);
    d[spots[i]] ^= 0x10;
    cr_assert_eq(feed(s, IP_A, 1, d, n, now++, ans), 0, "byte %zu flipped, answered", spots[i]);
  }
  /* A silence the service does not offer. */
  tern__psvc_config cfg;
  tern__psvc_config_default(&cfg);
  n = datagram(&k, TERN__PROBE_REQUEST, 20, cfg.min_wait_ms - 1, d);
  cr_assert_eq(feed(s, IP_A, 1, d, n, now++, ans), 0, "wait under min_wait_ms answered");
  n = datagram(&k, TERN__PROBE_REQUEST, 21, cfg.max_wait_ms + 1, d);
  cr_assert_eq(feed(s, IP_A, 1, d, n, now++, ans), 0, "wait over max_wait_ms answered");
  n = datagram(&k, TERN__PROBE_REQUEST, 22, 0, d);
  cr_assert_eq(feed(s, IP_A, 1, d, n, now++, ans), 0, "wait 0 answered");
  n = datagram(&k, TERN__PROBE_REQUEST, 23, UINT32_MAX, d);
  cr_assert_eq(feed(s, IP_A, 1, d, n, now++, ans), 0, "wait 2^32-1 answered");
  /* Answers sent to the service, validly tagged: reflecting them would
   * let two relays ping-pong. */
  n = datagram(&k, TERN__PROBE_ACK, 24, 20000, d);
  cr_assert_eq(feed(s, IP_A, 1, d, n, now++, ans), 0, "ACK answered");
  n = datagram(&k, TERN__PROBE_REPLY, 25, 20000, d);
  cr_assert_eq(feed(s, IP_A, 1, d, n, now++, ans), 0, "REPLY answered");
  /* Malformed: the magic alone, a request cut short, a wrong version. */
  n = datagram(&k, TERN__PROBE_REQUEST, 26, 20000, d);
  cr_assert_eq(feed(s, IP_A, 1, d, 4, now++, ans), 0);
  cr_assert_eq(feed(s, IP_A, 1, d, n - 1, now++, ans), 0);
  d[n] = 0;
  cr_assert_eq(feed(s, IP_A, 1, d, n + 1, now++, ans), 0);
  d[4] = 2;
  cr_assert_eq(feed(s, IP_A, 1, d, n, now++, ans), 0);

  cr_assert_eq(tern__psvc_pending(s), 0, "a refused datagram left a pending probe");
  assert_no_reply_ever(s, now);
  tern__psvc_stats st;
  tern__psvc_get_stats(s, &st);
  cr_assert_eq(st.acks + st.replies + st.requests, 0);
  cr_assert_eq(st.rejected, 2 + 7 + 4 + 2 + 4);

  /* The bounds themselves are offered. */
  cr_assert(ask(s, &k, IP_A, 1, 30, cfg.min_wait_ms, now));
  cr_assert(ask(s, &k, IP_A, 1, 31, cfg.max_wait_ms, now));
  tern__psvc_free(s);
}

/* ------------------------------------------------------------- replays */

Test(probesvc, a_completed_nonce_is_not_answered_again) {
  tern__psvc *s = svc_default();
  ckey k = make_key(1, 1);
  add(s, &k);
  uint8_t req[TERN__PROBE_REQUEST_BYTES], ans[64];
  size_t n = datagram(&k, TERN__PROBE_REQUEST, 0x1234, 5000, req);
  cr_assert_eq(feed(s, IP_A, 9, req, n, T0, ans), TERN__PROBE_ANSWER_BYTES);
  reply r;
  cr_assert(next_reply(s, T0 + 5000, &r));
  /* The same bytes again, from the same or any other address, at once or
   * much later: the probe is over. */
  cr_assert_eq(feed(s, IP_A, 9, req, n, T0 + 5001, ans), 0, "replay answered");
  cr_assert_eq(feed(s, IP_B, 7, req, n, T0 + 9000, ans), 0, "replay from elsewhere answered");
  cr_assert_eq(feed(s, IP_B, 7, req, n, T0 + 86400000, ans), 0, "replay a day later answered");
  cr_assert_eq(tern__psvc_pending(s), 0);
  assert_no_reply_ever(s, T0 + 86400000);
  tern__psvc_free(s);
}

/* Nonce 0 is a nonce like any other (the learner never picks it, but the
 * service must not rely on that). */
Test(probesvc, nonce_zero_is_not_answered_again_either) {
  tern__psvc *s = svc_default();
  ckey k = make_key(1, 1);
  add(s, &k);
  uint8_t req[TERN__PROBE_REQUEST_BYTES], ans[64];
  size_t n = datagram(&k, TERN__PROBE_REQUEST, 0, 5000, req);
  cr_assert_eq(feed(s, IP_A, 9, req, n, T0, ans), TERN__PROBE_ANSWER_BYTES);
  reply r;
  cr_assert(next_reply(s, T0 + 5000, &r));
  cr_assert_eq(feed(s, IP_A, 9, req, n, T0 + 6000, ans), 0, "replay of nonce 0 answered");
  assert_no_reply_ever(s, T0 + 6000);
  tern__psvc_free(s);
}

/* A client's whole round (TERN__PSVC_RECENT probes) completes, then every
 * one of its requests is replayed: none is answered. */
Test(probesvc, a_whole_round_replayed_is_not_answered) {
  tern__psvc *s = svc_default();
  ckey k = make_key(1, 1);
  add(s, &k);
  uint8_t req[TERN__PSVC_RECENT][TERN__PROBE_REQUEST_BYTES], ans[64];
  size_t n = 0;
  for (unsigned i = 0; i < TERN__PSVC_RECENT; i++) {
    n = datagram(&k, TERN__PROBE_REQUEST, 1000 + i, 1000 + 1000 * i, req[i]);
    cr_assert_gt(feed(s, IP_A, 9, req[i], n, T0, ans), 0, "probe %u of a round refused", i);
  }
  reply r;
  for (unsigned i = 0; i < TERN__PSVC_RECENT; i++) cr_assert(next_reply(s, T0 + 100000, &r));
  for (unsigned i = 0; i < TERN__PSVC_RECENT; i++)
    cr_assert_eq(feed(s, IP_B, 9, req[i], n, T0 + 200000 + i, ans), 0, "replay of probe %u answered", i);
  assert_no_reply_ever(s, T0 + 300000);
  tern__psvc_free(s);
}

/* --------------------------------------------------------------- keys */

Test(probesvc, remove_key_drops_the_sessions_pending_probes) {
  tern__psvc *s = svc_default();
  ckey a = make_key(1, 1), b = make_key(2, 2);
  add(s, &a);
  add(s, &b);
  for (uint64_t i = 1; i <= 3; i++) cr_assert(ask(s, &a, IP_A, 1, i, 5000, T0));
  cr_assert(ask(s, &b, IP_B, 2, 99, 6000, T0));
  cr_assert_eq(tern__psvc_pending(s), 4);
  tern__psvc_remove_key(s, a.conn);
  cr_assert_eq(tern__psvc_pending(s), 1);
  cr_assert_eq(tern__psvc_timeout(s, T0), 6000, "the removed session's probes still count");
  reply r;
  cr_assert(next_reply(s, T0 + 10000, &r));
  check_reply(&r, &b, IP_B, 2, 99, 6000);
  cr_assert_not(next_reply(s, T0 + 10000, &r));
  /* Its id is unknown now. */
  cr_assert_not(ask(s, &a, IP_A, 1, 10, 5000, T0 + 20000));
  cr_assert_eq(tern__psvc_pending(s), 0);
  /* Removing what is not there does nothing. */
  tern__psvc_remove_key(s, 12345);
  tern__psvc_free(s);
}

Test(probesvc, a_new_key_for_a_session_replaces_the_old_one_and_its_probes) {
  tern__psvc *s = svc_default();
  ckey old = make_key(1, 1), fresh = make_key(1, 7);
  add(s, &old);
  cr_assert(ask(s, &old, IP_A, 1, 1, 5000, T0));
  add(s, &fresh);
  cr_assert_eq(tern__psvc_pending(s), 0, "probes under the old key survived it");
  cr_assert_not(ask(s, &old, IP_A, 1, 2, 5000, T0 + 1), "the old key still works");
  cr_assert(ask(s, &fresh, IP_A, 1, 3, 5000, T0 + 2));
  reply r;
  cr_assert(next_reply(s, T0 + 5002, &r));
  check_reply(&r, &fresh, IP_A, 1, 3, 5000);
  assert_no_reply_ever(s, T0 + 5002);
  tern__psvc_free(s);
}

Test(probesvc, keys_beyond_max_keys_are_refused_until_one_is_removed) {
  tern__psvc_config cfg;
  tern__psvc_config_default(&cfg);
  cfg.max_keys = 3;
  tern__psvc *s = svc_with(&cfg);
  ckey k[4];
  for (int i = 0; i < 4; i++) k[i] = make_key((uint64_t)i + 1, (uint8_t)(i + 1));
  for (int i = 0; i < 3; i++) add(s, &k[i]);
  cr_assert_eq(tern__psvc_add_key(s, k[3].conn, k[3].id, k[3].key), TERN_ERESOURCE);
  /* Replacing the key of a session that has one needs no new room. */
  cr_assert_eq(tern__psvc_add_key(s, k[1].conn, k[1].id, k[1].key), 0);
  tern__psvc_remove_key(s, k[0].conn);
  add(s, &k[3]);
  cr_assert(ask(s, &k[3], IP_A, 1, 1, 1000, T0));
  cr_assert_not(ask(s, &k[0], IP_A, 1, 1, 1000, T0));
  tern__psvc_free(s);
}

Test(probesvc, bad_configs_are_refused) {
  tern__psvc_config cfg;
  tern__psvc *s = (tern__psvc *)1;
  tern__psvc_config_default(&cfg);
  cfg.max_keys = 0;
  cr_assert_eq(tern__psvc_new(&s, &cfg), TERN_EINVAL);
  cr_assert_null(s);
  tern__psvc_config_default(&cfg);
  cfg.min_wait_ms = cfg.max_wait_ms + 1;
  cr_assert_eq(tern__psvc_new(&s, &cfg), TERN_EINVAL);
  tern__psvc_config_default(&cfg);
  cfg.ip_refill_ms = 0;
  cr_assert_eq(tern__psvc_new(&s, &cfg), TERN_EINVAL);
}

/* --------------------------------------------------------------- limits */

/* A client has at most per_key_pending probes out; one more means it gave
 * up on its oldest (abandoned after a failure made it pointless), which
 * the new one replaces (spec/keepalive.md 2.2). */
Test(probesvc, per_key_cap_holds_a_ninth_replaces_the_oldest) {
  tern__psvc *s = svc_default();
  ckey k = make_key(1, 1);
  add(s, &k);
  tern__psvc_config cfg;
  tern__psvc_config_default(&cfg);
  uint64_t t = T0;
  for (uint64_t n = 1; n <= cfg.per_key_pending; n++)
    cr_assert(ask(s, &k, IP_A, 1, n, 10000, t++), "probe %llu refused", (unsigned long long)n);
  /* A resend makes probe 1 the youngest. */
  cr_assert(ask(s, &k, IP_A, 1, 1, 10000, t++));
  cr_assert_eq(tern__psvc_pending(s), cfg.per_key_pending, "a resend is no new probe");
  /* Two more: they replace 2 and 3, the oldest requests. */
  cr_assert(ask(s, &k, IP_A, 1, 100, 10000, t++));
  cr_assert(ask(s, &k, IP_B, 2, 101, 10000, t++));
  cr_assert_eq(tern__psvc_pending(s), cfg.per_key_pending, "the per-key cap did not hold");
  /* Another session is not affected. */
  ckey other = make_key(2, 2);
  add(s, &other);
  cr_assert(ask(s, &other, IP_A, 1, 2, 10000, t++));
  int got[128] = {0};
  reply r;
  while (next_reply(s, t + 100000, &r))
    if (memcmp(r.p.id, k.id, sizeof k.id) == 0) got[r.p.nonce < 128 ? r.p.nonce : 0]++;
  cr_assert_eq(got[2] + got[3], 0, "a replaced probe was answered");
  cr_assert_eq(got[1] + got[100] + got[101], 3);
  for (int n = 4; n <= (int)cfg.per_key_pending; n++) cr_assert_eq(got[n], 1, "probe %d", n);
  tern__psvc_free(s);
}

/* A request the service refuses must not cost the client a probe: the
 * oldest is replaced only when the newcomer is accepted. */
Test(probesvc, a_refused_request_replaces_nothing) {
  tern__psvc_config cfg;
  tern__psvc_config_default(&cfg);
  cfg.per_ip_pending = cfg.per_key_pending;
  tern__psvc *s = svc_with(&cfg);
  ckey full = make_key(1, 1), k = make_key(2, 2);
  add(s, &full);
  add(s, &k);
  for (uint64_t n = 1; n <= cfg.per_key_pending; n++) {
    cr_assert(ask(s, &full, IP_A, 1, n, 10000, T0));
    cr_assert(ask(s, &k, IP_B, 2, n, 10000, T0));
  }
  /* IP_A has no room left: k's ninth, from there, is refused... */
  cr_assert_not(ask(s, &k, IP_A, 3, 99, 10000, T0 + 1));
  /* ... and all of k's eight are still answered. */
  size_t answered = 0;
  reply r;
  while (next_reply(s, T0 + 10000, &r)) answered += memcmp(r.p.id, k.id, sizeof k.id) == 0;
  cr_assert_eq(answered, cfg.per_key_pending, "a refused request cost a pending probe");
  tern__psvc_free(s);
}

Test(probesvc, per_address_cap_holds_across_keys) {
  tern__psvc_config cfg;
  tern__psvc_config_default(&cfg);
  cfg.ip_burst = 10000; /* the bucket is not what is tested here */
  tern__psvc *s = svc_with(&cfg);
  size_t nkeys = cfg.per_ip_pending / cfg.per_key_pending + 2;
  ckey k[64];
  cr_assert_leq(nkeys, 64);
  for (size_t i = 0; i < nkeys; i++) {
    k[i] = make_key(i + 1, (uint8_t)(i + 1));
    add(s, &k[i]);
  }
  /* Many clients behind one address (ports differ): together at most
   * per_ip_pending probes. */
  size_t accepted = 0, asked = 0;
  for (size_t i = 0; i < nkeys; i++)
    for (uint64_t n = 1; n <= cfg.per_key_pending; n++, asked++)
      accepted += (size_t)ask(s, &k[i], IP_A, (uint16_t)(1000 + i), n, 5000, T0);
  cr_assert_gt(asked, cfg.per_ip_pending);
  cr_assert_eq(accepted, cfg.per_ip_pending);
  cr_assert_eq(tern__psvc_pending(s), cfg.per_ip_pending);
  /* Another address is not affected. */
  cr_assert(ask(s, &k[nkeys - 1], IP_B, 1, 1000, 5000, T0));
  tern__psvc_free(s);
}

Test(probesvc, global_cap_holds_across_keys_and_addresses) {
  tern__psvc_config cfg;
  tern__psvc_config_default(&cfg);
  cfg.max_pending = 10;
  tern__psvc *s = svc_with(&cfg);
  ckey k[6];
  size_t accepted = 0;
  for (size_t i = 0; i < 6; i++) {
    k[i] = make_key(i + 1, (uint8_t)(i + 1));
    add(s, &k[i]);
    for (uint64_t n = 1; n <= 3; n++)
      accepted += (size_t)ask(s, &k[i], IP_A + (uint32_t)i, 1, n, 5000 + (uint32_t)i, T0);
  }
  cr_assert_eq(accepted, 10);
  cr_assert_eq(tern__psvc_pending(s), 10);
  reply r;
  cr_assert(next_reply(s, T0 + 5000, &r));
  cr_assert(ask(s, &k[5], IP_A + 5, 1, 50, 5000, T0 + 5000), "no room after a REPLY");
  cr_assert_not(ask(s, &k[5], IP_A + 5, 1, 51, 5000, T0 + 5000));
  tern__psvc_free(s);
}

Test(probesvc, token_bucket_allows_a_burst_then_one_per_refill) {
  tern__psvc_config cfg;
  tern__psvc_config_default(&cfg);
  cfg.per_key_pending = cfg.per_ip_pending = cfg.max_pending = 1000; /* only the bucket limits */
  tern__psvc *s = svc_with(&cfg);
  ckey k = make_key(1, 1);
  add(s, &k);
  uint64_t nonce = 1;
  for (uint32_t i = 0; i < cfg.ip_burst; i++)
    cr_assert(ask(s, &k, IP_A, 1, nonce++, 5000, T0), "request %u of the burst refused", i);
  cr_assert_not(ask(s, &k, IP_A, 1, nonce++, 5000, T0), "more than a burst at once");
  cr_assert_not(ask(s, &k, IP_A, 2, nonce++, 5000, T0), "another port of the same address");
  cr_assert(ask(s, &k, IP_B, 1, nonce++, 5000, T0), "another address shares the bucket");
  /* One token per ip_refill_ms, not before. */
  uint64_t t = T0;
  for (int i = 0; i < 5; i++) {
    cr_assert_not(ask(s, &k, IP_A, 1, nonce++, 5000, t + cfg.ip_refill_ms - 1));
    t += cfg.ip_refill_ms;
    cr_assert(ask(s, &k, IP_A, 1, nonce++, 5000, t), "no token after %u ms", cfg.ip_refill_ms);
    cr_assert_not(ask(s, &k, IP_A, 1, nonce++, 5000, t));
  }
  /* A long rest fills the bucket to the burst, not beyond. */
  t += 1000000;
  for (uint32_t i = 0; i < cfg.ip_burst; i++) cr_assert(ask(s, &k, IP_A, 1, nonce++, 5000, t));
  cr_assert_not(ask(s, &k, IP_A, 1, nonce++, 5000, t));
  tern__psvc_free(s);
}

/* ------------------------------------------------------------- timers */

Test(probesvc, timeout_is_the_time_to_the_next_reply) {
  tern__psvc *s = svc_default();
  ckey k = make_key(1, 1);
  add(s, &k);
  cr_assert_eq(tern__psvc_timeout(s, T0), -1);
  cr_assert(ask(s, &k, IP_A, 1, 1, 5000, T0));
  cr_assert(ask(s, &k, IP_A, 1, 2, 2000, T0));
  cr_assert(ask(s, &k, IP_A, 1, 3, 9000, T0 + 100));
  cr_assert_eq(tern__psvc_timeout(s, T0), 2000);
  cr_assert_eq(tern__psvc_timeout(s, T0 + 1500), 500);
  cr_assert_eq(tern__psvc_timeout(s, T0 + 2500), 0, "overdue is 0");
  reply r;
  cr_assert(next_reply(s, T0 + 2500, &r));
  cr_assert_eq(r.p.nonce, 2);
  cr_assert_eq(tern__psvc_timeout(s, T0 + 2500), 2500);
  cr_assert(next_reply(s, T0 + 5000, &r));
  cr_assert_eq(tern__psvc_timeout(s, T0 + 5000), 4100);
  cr_assert(next_reply(s, T0 + 9100, &r));
  cr_assert_eq(tern__psvc_timeout(s, T0 + 9100), -1);
  /* The longest wait fits. */
  cr_assert(ask(s, &k, IP_A, 1, 4, 1200000, T0 + 10000));
  cr_assert_eq(tern__psvc_timeout(s, T0 + 10000), 1200000);
  tern__psvc_free(s);
}

/* ----------------------------------------------- a long adversarial run */

static uint64_t rng_state;
static uint64_t rnd(void) { /* splitmix64: the run is a function of the seed */
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

#define NADDR 6
#define NKEYS 3
#define CAPTURED 256

typedef struct addr {
  uint32_t ip;
  uint16_t port;
  uint64_t in, out; /* bytes of probe datagrams from it, and of answers to it */
} addr;

typedef struct run {
  tern__psvc *s;
  addr a[NADDR];
  ckey keys[NKEYS];
  uint8_t gen[NKEYS];                   /* bumps when a session gets a new key */
  uint8_t captured[CAPTURED][TERN__PROBE_REQUEST_BYTES]; /* valid requests seen */
  size_t ncaptured;
  uint8_t answers[CAPTURED][TERN__PROBE_ANSWER_BYTES];   /* answers seen */
  size_t nanswers;
  /* The nonces of the latest completed probes of each key, newest last. */
  uint64_t done[NKEYS][TERN__PSVC_RECENT];
  size_t ndone[NKEYS];
  uint64_t replies, acks, replays_refused;
} run;

static addr *find_addr(run *R, uint32_t ip, uint16_t port) {
  for (int i = 0; i < NADDR; i++)
    if (R->a[i].ip == ip && R->a[i].port == port) return &R->a[i];
  cr_assert_fail("an answer went to %08x:%u, which never sent anything", ip, port);
  return NULL;
}

static int key_of(run *R, const uint8_t *id) {
  for (int i = 0; i < NKEYS; i++)
    if (memcmp(R->keys[i].id, id, TERN__PROBE_ID_BYTES) == 0) return i;
  return -1;
}

static int recently_done(const run *R, int k, uint64_t nonce) {
  for (size_t i = 0; i < R->ndone[k]; i++)
    if (R->done[k][i] == nonce) return 1;
  return 0;
}

static void drain(run *R, uint64_t now) {
  reply r;
  while (next_reply(R->s, now, &r)) {
    addr *a = find_addr(R, r.ip, r.port);
    a->out += r.len;
    R->replies++;
    int k = key_of(R, r.p.id);
    cr_assert_geq(k, 0, "a REPLY under a key no session has");
    cr_assert_eq(tern__probe_verify(r.bytes, r.len, R->keys[k].key), 0);
    if (R->ndone[k] == TERN__PSVC_RECENT) {
      memmove(R->done[k], R->done[k] + 1, (TERN__PSVC_RECENT - 1) * sizeof(uint64_t));
      R->ndone[k]--;
    }
    R->done[k][R->ndone[k]++] = r.p.nonce;
    if (R->nanswers < CAPTURED) memcpy(R->answers[R->nanswers++], r.bytes, r.len);
  }
}

/* One datagram from address a; checks its answer and the byte account. */
static void input(run *R, addr *a, const uint8_t *d, size_t len, uint64_t now, int replay_of_done) {
  uint8_t ans[64];
  a->in += len;
  size_t alen = feed(R->s, a->ip, a->port, d, len, now, ans);
  if (replay_of_done) {
    cr_assert_eq(alen, 0, "a replay of a completed probe was answered");
    R->replays_refused++;
  }
  if (alen == 0) return;
  cr_assert_eq(alen, TERN__PROBE_ANSWER_BYTES);
  tern__probe_pkt p, q;
  cr_assert_eq(tern__probe_parse(ans, alen, &p), 0);
  cr_assert_eq(p.type, TERN__PROBE_ACK);
  /* Only a verified request of a live key is acknowledged. */
  cr_assert_eq(tern__probe_parse(d, len, &q), 0, "a malformed datagram was acknowledged");
  cr_assert_eq(q.type, TERN__PROBE_REQUEST);
  int k = key_of(R, q.id);
  cr_assert_geq(k, 0, "a request under a dead key was acknowledged");
  cr_assert_eq(tern__probe_verify(d, len, R->keys[k].key), 0, "a forged request was acknowledged");
  cr_assert_eq(tern__probe_verify(ans, alen, R->keys[k].key), 0);
  cr_assert_eq(p.nonce, q.nonce);
  a->out += alen;
  R->acks++;
  if (R->nanswers < CAPTURED) memcpy(R->answers[R->nanswers++], ans, alen);
}

static void check_accounts(const run *R, uint64_t step) {
  for (int i = 0; i < NADDR; i++)
    cr_assert_leq(R->a[i].out, R->a[i].in,
                  "step %llu: %08x:%u got %llu bytes for %llu sent", (unsigned long long)step,
                  R->a[i].ip, R->a[i].port, (unsigned long long)R->a[i].out,
                  (unsigned long long)R->a[i].in);
}

static void adversarial_run(uint64_t seed, uint64_t steps) {
  static run R;
  memset(&R, 0, sizeof R);
  rng_state = seed;
  tern__psvc_config cfg;
  tern__psvc_config_default(&cfg);
  R.s = svc_with(&cfg);
  for (int i = 0; i < NADDR; i++) {
    R.a[i].ip = 0xC0000200u + (uint32_t)(i / 2); /* three addresses, two ports each */
    R.a[i].port = (uint16_t)(40000 + i);
  }
  for (int i = 0; i < NKEYS; i++) {
    R.keys[i] = make_key((uint64_t)i + 1, (uint8_t)(i * 40 + 1));
    add(R.s, &R.keys[i]);
  }
  uint64_t now = T0;
  uint8_t d[TERN__PROBE_REQUEST_BYTES + 4];
  for (uint64_t step = 0; step < steps; step++) {
    now += rnd() % 700;
    drain(&R, now);
    check_accounts(&R, step);
    addr *a = &R.a[rnd() % NADDR];
    int k = (int)(rnd() % NKEYS);
    unsigned kind = (unsigned)(rnd() % 100);
    if (kind < 35) {
      /* A fresh probe, or a resend of one (small nonces collide often). */
      uint64_t nonce = rnd() % 64;
      uint32_t wait = (uint32_t)(cfg.min_wait_ms + rnd() % 15000);
      size_t n = datagram(&R.keys[k], TERN__PROBE_REQUEST, nonce, wait, d);
      if (R.ncaptured < CAPTURED) memcpy(R.captured[R.ncaptured++], d, n);
      else memcpy(R.captured[rnd() % CAPTURED], d, n);
      input(&R, a, d, n, now, recently_done(&R, k, nonce));
    } else if (kind < 55 && R.ncaptured) {
      /* A captured request replayed from anywhere, at any time. */
      memcpy(d, R.captured[rnd() % R.ncaptured], TERN__PROBE_REQUEST_BYTES);
      tern__probe_pkt q;
      cr_assert_eq(tern__probe_parse(d, TERN__PROBE_REQUEST_BYTES, &q), 0);
      int qk = key_of(&R, q.id);
      input(&R, a, d, TERN__PROBE_REQUEST_BYTES, now, qk >= 0 && recently_done(&R, qk, q.nonce));
    } else if (kind < 65) {
      /* Forged: a live id and random tag, or random bytes behind the magic. */
      size_t n = datagram(&R.keys[k], TERN__PROBE_REQUEST, rnd(), 5000, d);
      if (rnd() % 2) {
        for (size_t i = n - TERN__PROBE_TAG_BYTES; i < n; i++) d[i] = (uint8_t)rnd();
      } else {
        n = 4 + rnd() % (sizeof d - 4);
        for (size_t i = 4; i < n; i++) d[i] = (uint8_t)rnd();
        if (rnd() % 2) d[5] = TERN__PROBE_REQUEST;
      }
      input(&R, a, d, n, now, 0);
    } else if (kind < 75 && R.nanswers) {
      /* An ACK or REPLY sent back at the service. */
      memcpy(d, R.answers[rnd() % R.nanswers], TERN__PROBE_ANSWER_BYTES);
      input(&R, a, d, TERN__PROBE_ANSWER_BYTES, now, 0);
    } else if (kind < 77) {
      /* A session ends and another begins with a fresh key. */
      tern__psvc_remove_key(R.s, R.keys[k].conn);
      R.gen[k]++;
      R.keys[k] = make_key(R.keys[k].conn, (uint8_t)(k * 40 + 1 + R.gen[k]));
      R.ndone[k] = 0;
      add(R.s, &R.keys[k]);
    } else if (kind < 80) {
      /* A burst from one address: the bucket's turn. */
      for (int i = 0; i < 40; i++) {
        uint64_t nonce = 1000 + rnd() % 1000;
        size_t n = datagram(&R.keys[k], TERN__PROBE_REQUEST, nonce, 2000, d);
        input(&R, a, d, n, now, recently_done(&R, k, nonce));
      }
    } else {
      /* Quiet: time passes. */
      now += rnd() % 20000;
    }
    cr_assert_leq(tern__psvc_pending(R.s), cfg.max_pending);
    cr_assert_leq(tern__psvc_pending(R.s), NKEYS * cfg.per_key_pending);
    check_accounts(&R, step);
  }
  now += cfg.max_wait_ms + 1;
  drain(&R, now);
  check_accounts(&R, steps);
  cr_assert_eq(tern__psvc_pending(R.s), 0);
  tern__psvc_stats st;
  tern__psvc_get_stats(R.s, &st);
  cr_assert_eq(st.replies, R.replies);
  cr_assert_eq(st.acks, R.acks);
  /* The run exercised what it claims to: answers, refusals and limits. */
  cr_assert_gt(R.replies, steps / 20, "only %llu replies", (unsigned long long)R.replies);
  cr_assert_gt(R.replays_refused, 0);
  cr_assert_gt(st.rejected, steps / 20);
  cr_assert_gt(st.limited, 0);
  uint64_t in = 0, out = 0;
  for (int i = 0; i < NADDR; i++) in += R.a[i].in, out += R.a[i].out;
  printf("probesvc seed %llu: %llu steps, %llu bytes in, %llu out; %llu requests, %llu acks, "
         "%llu replies, %llu rejected, %llu limited, %llu replays refused\n",
         (unsigned long long)seed, (unsigned long long)steps, (unsigned long long)in,
         (unsigned long long)out, (unsigned long long)st.requests, (unsigned long long)st.acks,
         (unsigned long long)st.replies, (unsigned long long)st.rejected,
         (unsigned long long)st.limited, (unsigned long long)R.replays_refused);
  tern__psvc_free(R.s);
}

Test(probesvc, no_address_ever_gets_more_bytes_than_it_sent) {
  const uint64_t seeds[] = {1, 2, 0xC0FFEE, 20240601};
  for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) adversarial_run(seeds[i], 5000);
}

/* Forged requests (wrong tag) from a spoofed source are dropped before the
 * source's bucket is charged: they cannot use up a client's requests. */
Test(probesvc, forged_requests_do_not_drain_the_bucket) {
  tern__psvc *s = svc_default();
  ckey k = make_key(1, 1), forger = make_key(1, 1);
  forger.key[0] ^= 1; /* right id, wrong key */
  add(s, &k);
  uint8_t req[TERN__PROBE_REQUEST_BYTES], ans[64];
  for (uint64_t i = 0; i < 10000; i++) {
    size_t n = datagram(&forger, TERN__PROBE_REQUEST, 100 + i, 25000, req);
    cr_assert_eq(feed(s, IP_A, 9, req, n, T0, ans), 0);
  }
  cr_assert(ask(s, &k, IP_A, 9, 7, 25000, T0), "the real client was starved by forgeries");
  tern__psvc_stats st;
  tern__psvc_get_stats(s, &st);
  cr_assert_eq(st.rejected, 10000);
  cr_assert_eq(st.limited, 0);
  tern__psvc_free(s);
}

/* Every live key is found, through any number of sessions coming and
 * going (the id index keeps no stale entries). */
Test(probesvc, many_sessions_come_and_go) {
  tern__psvc_config cfg;
  tern__psvc_config_default(&cfg);
  cfg.max_keys = 512;
  cfg.ip_burst = 1u << 30;
  tern__psvc *s = svc_with(&cfg);
  static ckey keys[512];
  uint64_t seed = 1;
  for (int round = 0; round < 20; round++) {
    for (uint64_t c = 0; c < 512; c++) {
      if (round && (c + (uint64_t)round) % 3) continue; /* a third churns each round */
      if (round) tern__psvc_remove_key(s, c + 1);
      keys[c].conn = c + 1;
      for (size_t i = 0; i < sizeof keys[c].id; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        keys[c].id[i] = (uint8_t)(seed >> 56); /* an LCG's high bits: random enough */
      }
      for (size_t i = 0; i < sizeof keys[c].key; i++) keys[c].key[i] = (uint8_t)(seed >> (i % 8 * 8));
      add(s, &keys[c]);
    }
    for (uint64_t c = 0; c < 512; c += 17)
      cr_assert(ask(s, &keys[c], IP_A + (uint32_t)c, 9, 1000 + (uint64_t)round, 25000, T0),
                "round %d: session %llu's key not found", round, (unsigned long long)c + 1);
  }
  tern__psvc_free(s);
}
