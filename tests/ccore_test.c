/* The client messaging core, frame by frame on a virtual clock: what the
 * app sees, and what goes back to the relay. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/backoff.h"
#include "client/ccore.h"
#include "store/cstore.h"
#include "wire/frame.h"
#include "io/link.h"

typedef struct fixture {
  tern__cstore *store;
  tern__ccore *cc;
} fixture;

/* A core on an in-memory store, with `cfg` (NULL: the defaults). */
static void open_fixture_cfg(fixture *f, const tern__ccore_config *cfg) {
  char err[128];
  cr_assert_eq(tern__cstore_open(&f->store, ":memory:", 1, err, sizeof(err)), 0, "%s", err);
  tern__ccore_config def;
  tern__ccore_config_default(&def);
  cr_assert_eq(tern__ccore_new(&f->cc, f->store, cfg ? cfg : &def), 0);
}

static void open_fixture(fixture *f) { open_fixture_cfg(f, NULL); }

/* Throws the core away (an app crash) and loads a new one from the store. */
static void crash(fixture *f) {
  tern__ccore_free(f->cc);
  tern__ccore_config cfg;
  tern__ccore_config_default(&cfg);
  cr_assert_eq(tern__ccore_new(&f->cc, f->store, &cfg), 0);
}

static void close_fixture(fixture *f) {
  tern__ccore_free(f->cc);
  tern__cstore_close(f->store);
}

static int deliver(fixture *f, uint64_t seq, uint64_t prev, const char *from, const char *text,
                   uint64_t now) {
  uint8_t buf[256];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof(buf));
  tern__fr_msg m = {.seq = seq, .prev_seq = prev, .peer = (const uint8_t *)from,
                    .peer_len = strlen(from), .ts = 1, .body = (const uint8_t *)text,
                    .body_len = strlen(text)};
  tern__fr_msg_write(&w, TERN__FR_DELIVER, &m);
  return tern__ccore_input(f->cc, buf, w.len, now);
}

static int frame_u64(fixture *f, uint8_t type, uint64_t v, uint64_t now) {
  uint8_t buf[32];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof(buf));
  tern__fr_u64_write(&w, type, v);
  return tern__ccore_input(f->cc, buf, w.len, now);
}

static int server_ack(fixture *f, uint64_t cmid, uint64_t seq, uint64_t now) {
  uint8_t buf[32];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof(buf));
  tern__fr_sack a = {.cmid = cmid, .seq = seq, .ts = 5};
  tern__fr_sack_write(&w, &a);
  return tern__ccore_input(f->cc, buf, w.len, now);
}

/* Counts outputs of one frame type (and the last DELIVERY_ACK/SYNC). */
static int outputs_of(fixture *f, uint8_t want, tern__fr_seqlist *last_list) {
  int n = 0;
  tern__ccore_out o;
  while (tern__ccore_next_output(f->cc, &o) == 1) {
    tern__rbuf r, body;
    tern__rbuf_init(&r, o.data, o.len);
    uint8_t type;
    while (tern__frame_next(&r, &type, &body) == 1) {
      if (type != want) continue;
      n++;
      if (last_list && (type == TERN__FR_DELIVERY_ACK || type == TERN__FR_SYNC))
        cr_assert_eq(tern__fr_seqlist_read(&body, last_list), 0);
    }
  }
  return n;
}

/* Takes every event; writes the message texts in order into `texts`. */
static int take_messages(fixture *f, char texts[][32], int max, uint64_t now) {
  int n = 0;
  tern_event ev;
  while (tern__ccore_next_event(f->cc, &ev, now) == 1)
    if (ev.type == TERN_EV_MESSAGE && n < max)
      snprintf(texts[n++], 32, "%.*s", (int)ev.body_len, (const char *)ev.body);
  return n;
}

Test(ccore, per_sender_order_without_blocking_other_senders) {
  fixture f;
  open_fixture(&f);
  tern__ccore_online(f.cc, "bob", 0);
  /* Inbox: 1 alice "a1", 2 carol "c1", 3 alice "a2" (prev 1). Seq 1 is late. */
  deliver(&f, 3, 1, "alice", "a2", 10);
  deliver(&f, 2, 0, "carol", "c1", 10);
  char got[8][32];
  int n = take_messages(&f, got, 8, 10);
  cr_assert_eq(n, 1, "carol's message is not held back by alice's missing one");
  cr_assert_str_eq(got[0], "c1");
  deliver(&f, 1, 0, "alice", "a1", 20);
  n = take_messages(&f, got, 8, 20);
  cr_assert_eq(n, 2);
  cr_assert_str_eq(got[0], "a1");
  cr_assert_str_eq(got[1], "a2", "alice's messages in her order");
  close_fixture(&f);
}

Test(ccore, duplicates_are_dropped_but_acknowledged_again) {
  fixture f;
  open_fixture(&f);
  tern__ccore_online(f.cc, "bob", 0);
  (void)outputs_of(&f, 0, NULL);
  deliver(&f, 1, 0, "alice", "x", 10);
  char got[4][32];
  cr_assert_eq(take_messages(&f, got, 4, 10), 1);
  tern__ccore_tick(f.cc, 100);
  tern__fr_seqlist l;
  cr_assert_eq(outputs_of(&f, TERN__FR_DELIVERY_ACK, &l), 1);
  cr_assert_eq(l.last, 1);
  deliver(&f, 1, 0, "alice", "x", 200); /* the relay resends */
  cr_assert_eq(take_messages(&f, got, 4, 200), 0, "shown once");
  tern__ccore_tick(f.cc, 300);
  cr_assert_eq(outputs_of(&f, TERN__FR_DELIVERY_ACK, &l), 1, "acked again");
  close_fixture(&f);
}

Test(ccore, taken_message_is_not_shown_again_after_a_crash) {
  fixture f;
  open_fixture(&f);
  tern__ccore_online(f.cc, "bob", 0);
  deliver(&f, 1, 0, "alice", "once", 10);
  deliver(&f, 2, 1, "alice", "twice?", 10);
  char got[4][32];
  tern_event ev;
  cr_assert_eq(tern__ccore_next_event(f.cc, &ev, 10), 1, "the app takes the first only");
  crash(&f);
  tern__ccore_online(f.cc, "bob", 20);
  tern__fr_seqlist l;
  cr_assert_eq(outputs_of(&f, TERN__FR_SYNC, &l), 1);
  cr_assert_eq(l.last, 1, "the taken one is remembered; the untaken one is asked for again");
  deliver(&f, 1, 0, "alice", "once", 30);
  deliver(&f, 2, 1, "alice", "twice?", 30);
  cr_assert_eq(take_messages(&f, got, 4, 30), 1);
  cr_assert_str_eq(got[0], "twice?");
  close_fixture(&f);
}

Test(ccore, sent_survives_a_crash_before_the_app_took_it) {
  fixture f;
  open_fixture(&f);
  tern__ccore_online(f.cc, "alice", 0);
  uint64_t cmid;
  cr_assert_eq(tern__ccore_send(f.cc, "bob", "hi", 2, 0, 0, 1, &cmid), 0);
  server_ack(&f, cmid, 1, 10);
  cr_assert_eq(tern__ccore_pending_events(f.cc), 1, "SENT queued");
  crash(&f); /* before the app took SENT */
  cr_assert_eq(tern__ccore_outbox_size(f.cc), 1, "still in the outbox, so it is resent");
  tern__ccore_online(f.cc, "alice", 20);
  cr_assert_eq(outputs_of(&f, TERN__FR_MSG, NULL), 1);
  server_ack(&f, cmid, 1, 30);
  tern_event ev;
  cr_assert_eq(tern__ccore_next_event(f.cc, &ev, 30), 1);
  cr_assert_eq(ev.type, TERN_EV_SENT);
  cr_assert_eq(ev.cmid, cmid);
  cr_assert_eq(tern__ccore_outbox_size(f.cc), 0);
  /* Its receipt: DELIVERED once, even if the relay sends it twice. */
  frame_u64(&f, TERN__FR_RECEIPT, cmid, 40);
  frame_u64(&f, TERN__FR_RECEIPT, cmid, 40);
  int delivered = 0;
  while (tern__ccore_next_event(f.cc, &ev, 40) == 1) delivered += ev.type == TERN_EV_DELIVERED;
  cr_assert_eq(delivered, 1);
  frame_u64(&f, TERN__FR_RECEIPT, cmid, 50);
  while (tern__ccore_next_event(f.cc, &ev, 50) == 1) delivered += ev.type == TERN_EV_DELIVERED;
  cr_assert_eq(delivered, 1, "a late copy of the receipt is not shown");
  close_fixture(&f);
}

Test(ccore, sync_is_resent_until_answered_and_dead_link_is_noticed) {
  fixture f;
  open_fixture(&f);
  tern__ccore_online(f.cc, "alice", 0);
  cr_assert_eq(outputs_of(&f, TERN__FR_SYNC, NULL), 1);
  cr_assert_eq(tern__ccore_tick(f.cc, 3999), 0);
  cr_assert_eq(outputs_of(&f, TERN__FR_SYNC, NULL), 0);
  tern__ccore_tick(f.cc, 4000);
  cr_assert_eq(outputs_of(&f, TERN__FR_SYNC, NULL), 1, "no FLOOR yet: SYNC again");
  frame_u64(&f, TERN__FR_FLOOR, 0, 4100);
  tern__ccore_tick(f.cc, 9000);
  cr_assert_eq(outputs_of(&f, TERN__FR_SYNC, NULL), 0, "answered: no more SYNC");
  uint64_t cmid;
  tern__ccore_send(f.cc, "bob", "x", 1, 0, 10000, 1, &cmid);
  cr_assert_eq(tern__ccore_tick(f.cc, 17999), 0);
  cr_assert_eq(tern__ccore_tick(f.cc, 18000), 1, "8 s without an ack: the link is dead");
  close_fixture(&f);
}

Test(ccore, backoff_is_full_jitter_with_a_cap) {
  tern__backoff b;
  tern__backoff_init(&b, 500, 30000);
  cr_assert_eq(tern__backoff_next(&b, 0), 0);
  cr_assert_eq(tern__backoff_ceiling(&b), 1000);
  cr_assert_eq(tern__backoff_next(&b, UINT32_MAX), 1000, "the ceiling itself can be drawn");
  for (int i = 0; i < 20; i++) (void)tern__backoff_next(&b, UINT32_MAX);
  cr_assert_eq(tern__backoff_ceiling(&b), 30000, "capped");
  cr_assert_leq(tern__backoff_next(&b, UINT32_MAX), 30000);
  tern__backoff_reset(&b);
  cr_assert_eq(tern__backoff_ceiling(&b), 500, "a success resets it");
}

/* Counts outputs on one channel. */
static int outputs_on(fixture *f, uint8_t channel) {
  int n = 0;
  tern__ccore_out o;
  while (tern__ccore_next_output(f->cc, &o) == 1) n += o.channel == channel;
  return n;
}

/* Copy 1 leaves d / 2 after the transmission, copy 2 3 d after it, d a
 * fifth of the RTT within bounds (copies.h). */
Test(ccore, copies_wait_a_tenth_then_three_fifths_of_the_rtt_within_bounds) {
  fixture f;
  open_fixture(&f);
  tern__ccore_online(f.cc, "alice", 0);
  frame_u64(&f, TERN__FR_FLOOR, 0, 0); /* the SYNC arrived: no SYNC resend timer */
  (void)outputs_on(&f, 0);
  uint64_t id;
  const uint32_t rtts[] = {0, 100, 20, 600, 120};
  const int firsts[] = {15, 10, 2, 15, 12};   /* d / 2 */
  const int seconds[] = {90, 60, 15, 90, 72}; /* 3 d */
  uint64_t now = 100;
  for (size_t i = 0; i < sizeof(rtts) / sizeof(rtts[0]); i++, now += 1000) {
    tern__ccore_set_rtt(f.cc, rtts[i]);
    tern__ccore_send(f.cc, "bob", "small", 5, 0, now, 1, &id);
    cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 0, "RTT %u: not with the transmission", rtts[i]);
    cr_assert_eq(tern__ccore_timeout(f.cc, now), firsts[i], "RTT %u: copy 1 after %d ms", rtts[i],
                 firsts[i]);
    tern__ccore_tick(f.cc, now + (uint64_t)firsts[i] - 1);
    cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 0, "RTT %u: not before", rtts[i]);
    tern__ccore_tick(f.cc, now + (uint64_t)firsts[i]);
    cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 1, "RTT %u: copy 1", rtts[i]);
    cr_assert_eq(tern__ccore_timeout(f.cc, now + (uint64_t)firsts[i]), seconds[i] - firsts[i],
                 "RTT %u: copy 2 after %d ms", rtts[i], seconds[i]);
    tern__ccore_tick(f.cc, now + (uint64_t)seconds[i] - 1);
    cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 0, "RTT %u: not before", rtts[i]);
    tern__ccore_tick(f.cc, now + (uint64_t)seconds[i]);
    cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 1, "RTT %u: then copy 2", rtts[i]);
    server_ack(&f, id, i + 1, now + 100);
  }
  close_fixture(&f);
}

/* copy_max_bytes 0 (tern_client_config.no_copies): no message is copied,
 * whatever its size and the RTT; it is still resent by the resend rules. */
Test(ccore, no_copies_sends_each_message_once) {
  tern__ccore_config cfg;
  tern__ccore_config_default(&cfg);
  cfg.copy_max_bytes = 0;
  fixture f;
  open_fixture_cfg(&f, &cfg);
  tern__ccore_online(f.cc, "alice", 0);
  (void)outputs_on(&f, 0);
  tern__ccore_set_rtt(f.cc, 200);
  uint64_t a;
  tern__ccore_send(f.cc, "bob", "small", 5, 0, 100, 1, &a);
  cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 0, "no copy with the transmission");
  for (uint64_t t = 100; t <= 1000; t += 5) {
    tern__ccore_tick(f.cc, t);
    cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 0, "a copy at %llu ms", (unsigned long long)t);
  }
  close_fixture(&f);
}

Test(ccore, small_messages_get_two_copies_unless_acked_first) {
  fixture f;
  open_fixture(&f);
  tern__ccore_online(f.cc, "alice", 0);
  (void)outputs_on(&f, 0);
  uint64_t a, b;
  tern__ccore_send(f.cc, "bob", "small", 5, 0, 100, 1, &a);
  static uint8_t big[600];
  tern__ccore_send(f.cc, "bob", big, sizeof(big), 0, 100, 1, &b);
  cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 0, "no copy at once");
  cr_assert_eq(tern__ccore_timeout(f.cc, 100), 15, "the first copy is due d / 2 = 15 ms later");
  tern__ccore_tick(f.cc, 115);
  cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 1, "one copy, for the small message only");
  cr_assert_eq(tern__ccore_timeout(f.cc, 115), 75, "the second is due 3 d (d = 30 ms) after the send");
  tern__ccore_tick(f.cc, 189);
  cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 0, "not before");
  tern__ccore_tick(f.cc, 190);
  cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 1, "the second copy");
  tern__ccore_tick(f.cc, 400);
  cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 0, "and no third");
  uint64_t c;
  tern__ccore_send(f.cc, "bob", "acked fast", 10, 0, 500, 1, &c);
  server_ack(&f, c, 3, 510);
  tern__ccore_tick(f.cc, 540);
  tern__ccore_tick(f.cc, 600);
  cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 0, "acked before its copies were due: none");
  close_fixture(&f);
}

Test(ccore, copy_count_one_sends_one_copy) {
  fixture f;
  tern__ccore_config cfg;
  tern__ccore_config_default(&cfg);
  cfg.copy_count = 1;
  open_fixture_cfg(&f, &cfg);
  tern__ccore_online(f.cc, "alice", 0);
  (void)outputs_on(&f, 0);
  tern__ccore_set_rtt(f.cc, 50);
  uint64_t a;
  tern__ccore_send(f.cc, "bob", "small", 5, 0, 100, 1, &a);
  cr_assert_eq(tern__ccore_timeout(f.cc, 100), 5, "copy 1 after d / 2, d a fifth of the RTT");
  tern__ccore_tick(f.cc, 105);
  cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 1);
  tern__ccore_tick(f.cc, 200);
  cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 0, "copy_count 1: one copy only");
  close_fixture(&f);
}

/* Copy k is sent only if (2k - 1) d is below the RTT (copies.h): on a fast
 * link ENet's retransmission comes first and copies only cost. */
Test(ccore, fast_links_get_fewer_copies) {
  fixture f;
  open_fixture(&f);
  tern__ccore_online(f.cc, "alice", 0);
  (void)outputs_on(&f, 0);
  uint64_t a, b;
  tern__ccore_set_rtt(f.cc, 1); /* loopback */
  tern__ccore_send(f.cc, "bob", "one", 3, 0, 100, 1, &a);
  tern__ccore_tick(f.cc, 105);
  tern__ccore_tick(f.cc, 200);
  cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 0, "RTT 1 ms: no copy");
  tern__ccore_set_rtt(f.cc, 10); /* d = 5: the first (5 < 10), not the second (15) */
  tern__ccore_send(f.cc, "bob", "two", 3, 0, 300, 1, &b);
  tern__ccore_tick(f.cc, 305);
  cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 1, "RTT 10 ms: the first copy");
  tern__ccore_tick(f.cc, 400);
  cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 0, "and not the second");
  close_fixture(&f);
}

/* The cmids of the MSG frames sent, copies (the COPY channel) left out. */
static int msgs_sent(fixture *f, uint64_t *cmids, int max) {
  int n = 0;
  tern__ccore_out o;
  while (tern__ccore_next_output(f->cc, &o) == 1) {
    if (o.channel == TERN__CH_COPY) continue;
    tern__rbuf r, body;
    tern__rbuf_init(&r, o.data, o.len);
    uint8_t type;
    while (tern__frame_next(&r, &type, &body) == 1) {
      tern__fr_msg m;
      if (type != TERN__FR_MSG || tern__fr_msg_read(&body, TERN__FR_MSG, &m) != 0) continue;
      if (n < max) cmids[n] = m.cmid;
      n++;
    }
  }
  return n;
}

/* 1 if body[0..len) contains the string s. */
static int contains(const uint8_t *body, size_t len, const char *s) {
  size_t n = strlen(s);
  for (size_t i = 0; i + n <= len; i++)
    if (memcmp(body + i, s, n) == 0) return 1;
  return 0;
}

static int count_of(const uint64_t *v, int n, uint64_t x) {
  int c = 0;
  for (int i = 0; i < n; i++) c += v[i] == x;
  return c;
}

static void busy(fixture *f, uint64_t cmid, uint64_t now) {
  uint8_t buf[32];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof(buf));
  tern__fr_failed fl = {.cmid = cmid, .error = (uint64_t)-TERN_ESTORE};
  tern__fr_failed_write(&w, TERN__FR_BUSY, &fl);
  tern__ccore_input(f->cc, buf, w.len, now);
}

/* A MSG whose packet is lost (a forged ENet ack, a rolled-back relay
 * round) while the relay keeps answering the messages sent after it, in
 * another conversation: it is sent again resend_ms (4 s) after it went
 * out, not held until the relay goes quiet, which with a busy sender it
 * never does; then after 8 s more, not sooner. */
Test(ccore, lost_msg_is_resent_within_resend_ms_while_others_are_acked) {
  fixture f;
  open_fixture(&f);
  tern__ccore_online(f.cc, "alice", 0);
  frame_u64(&f, TERN__FR_FLOOR, 0, 0);
  uint64_t lost, other, seen[64];
  cr_assert_eq(tern__ccore_send(f.cc, "bob", "lost", 4, 0, 100, 1, &lost), 0);
  cr_assert_eq(msgs_sent(&f, seen, 64), 1, "sent once; the relay never gets it");
  uint64_t resent_at = 0, second_at = 0, seq = 1;
  for (uint64_t t = 200; t <= 20000; t += 100) {
    if (t % 500 == 0) { /* another conversation flows, answered at once */
      cr_assert_eq(tern__ccore_send(f.cc, "carol", "x", 1, 0, t, 1, &other), 0);
      server_ack(&f, other, seq++, t + 50);
    }
    tern_event ev;
    while (tern__ccore_next_event(f.cc, &ev, t) == 1) {
    }
    cr_assert_eq(tern__ccore_tick(f.cc, t), 0, "answers flow: the link is not dead");
    int n = msgs_sent(&f, seen, 64);
    if (count_of(seen, n < 64 ? n : 64, lost)) {
      if (!resent_at) resent_at = t;
      else if (!second_at) second_at = t;
    }
  }
  cr_assert_neq(resent_at, 0, "the lost message was sent again");
  cr_assert_leq(resent_at, 100 + 4000 + 100, "within resend_ms of its sending (at %llu ms)",
                (unsigned long long)resent_at);
  cr_assert_geq(resent_at, 100 + 4000, "not before resend_ms (at %llu ms)",
                (unsigned long long)resent_at);
  cr_assert_geq(second_at, resent_at + 8000, "then backing off: twice the interval (at %llu ms)",
                (unsigned long long)second_at);
  close_fixture(&f);
}

/* The other side of that rule (commit c60865d): a slow relay that answers
 * every message in the order they were sent, just late, gets no copies,
 * however long each waits. */
Test(ccore, slow_relay_answering_in_order_gets_no_resends) {
  fixture f;
  open_fixture(&f);
  tern__ccore_online(f.cc, "alice", 0);
  frame_u64(&f, TERN__FR_FLOOR, 0, 0);
  enum { N = 100 };
  uint64_t cmid[N], seen[4 * N];
  for (int i = 0; i < N; i++)
    cr_assert_eq(tern__ccore_send(f.cc, i % 2 ? "bob" : "carol", "m", 1, 0, 10, 1, &cmid[i]), 0);
  int sent = msgs_sent(&f, seen, 4 * N);
  cr_assert_eq(sent, 64, "the window holds %d in flight, not 64", sent);
  /* One answer every 150 ms: the last waits 15 s, far past resend_ms; each
   * answer lets one more into the window. */
  int acked = 0;
  for (uint64_t t = 20; t <= 20000; t += 10) {
    if (t % 150 == 0 && acked < N) server_ack(&f, cmid[acked], (uint64_t)acked + 1, t), acked++;
    tern_event ev;
    while (tern__ccore_next_event(f.cc, &ev, t) == 1) {
    }
    cr_assert_eq(tern__ccore_tick(f.cc, t), 0);
    sent += msgs_sent(&f, seen, 4 * N);
  }
  cr_assert_eq(acked, N);
  cr_assert_eq(sent, N, "no message was sent twice (%d sendings for %d messages)", sent, N);
  close_fixture(&f);
}

/* BUSY: the app hears of it (TERN_EV_ERROR, TERN_ESTORE, the message and
 * its recipient), the message stays in the outbox and goes out again
 * busy_retry_ms later; the next message to the same recipient, dropped by
 * the relay for naming the refused one as prev_cmid, goes out again as
 * soon as its predecessor is stored, not a resend interval later. */
Test(ccore, busy_is_an_error_event_then_a_retry_and_the_successor_follows) {
  fixture f;
  open_fixture(&f);
  tern__ccore_online(f.cc, "alice", 0);
  frame_u64(&f, TERN__FR_FLOOR, 0, 0);
  uint64_t a, b, seen[16];
  tern__ccore_send(f.cc, "bob", "first", 5, 0, 100, 1, &a);
  tern__ccore_send(f.cc, "bob", "second", 6, 0, 100, 1, &b);
  cr_assert_eq(msgs_sent(&f, seen, 16), 2);
  busy(&f, a, 150);
  busy(&f, a, 160); /* the copy's answer: one event per refusal, not two */
  tern_event ev;
  int errors = 0;
  while (tern__ccore_next_event(f.cc, &ev, 160) == 1) {
    cr_assert_eq(ev.type, TERN_EV_ERROR);
    cr_assert_eq(ev.error, TERN_ESTORE);
    cr_assert_eq(ev.cmid, a);
    cr_assert_str_eq(ev.user, "bob");
    cr_assert(ev.body_len > 0 && contains(ev.body, ev.body_len, "2000 ms"), "says when: %.*s",
              (int)ev.body_len, (const char *)ev.body);
    errors++;
  }
  cr_assert_eq(errors, 1);
  cr_assert_eq(tern__ccore_outbox_size(f.cc), 2, "kept");
  tern__ccore_tick(f.cc, 2149);
  cr_assert_eq(msgs_sent(&f, seen, 16), 0, "not before busy_retry_ms");
  tern__ccore_tick(f.cc, 2150);
  int n = msgs_sent(&f, seen, 16);
  cr_assert_eq(n, 1);
  cr_assert_eq(seen[0], a, "sent again after busy_retry_ms");
  /* The relay dropped `b` (its predecessor was not stored): once `a` is
   * acked, `b` follows at once. */
  server_ack(&f, a, 1, 2200);
  n = msgs_sent(&f, seen, 16);
  cr_assert_eq(n, 1, "the successor is sent again with the ack");
  cr_assert_eq(seen[0], b);
  close_fixture(&f);
}

/* A client store that fails to write: the app is told, once per failure,
 * with TERN_EV_ERROR/TERN_ESTORE and the store's reason, and the client
 * carries on. */
Test(ccore, client_store_write_failures_are_error_events) {
  fixture f;
  open_fixture(&f);
  tern__ccore_online(f.cc, "bob", 0);
  uint64_t cmid;
  cr_assert_eq(tern__ccore_send(f.cc, "alice", "hi", 2, 0, 0, 1, &cmid), 0);
  (void)outputs_of(&f, 0, NULL);
  server_ack(&f, cmid, 7, 10);
  deliver(&f, 1, 0, "alice", "hello", 10);
  cr_assert_eq(tern__cstore_fault_readonly(f.store, 1), 0);
  tern_event ev;
  int sent = 0, msgs = 0, store_errors = 0, with_cmid = 0;
  while (tern__ccore_next_event(f.cc, &ev, 20) == 1) {
    if (ev.type == TERN_EV_SENT) sent++;
    if (ev.type == TERN_EV_MESSAGE) msgs++;
    if (ev.type != TERN_EV_ERROR) continue;
    cr_assert_eq(ev.error, TERN_ESTORE);
    cr_assert_str_eq(ev.user, "", "not the relay's");
    cr_assert(contains(ev.body, ev.body_len, "readonly"), "the store's reason: %.*s",
              (int)ev.body_len, (const char *)ev.body);
    store_errors++;
    with_cmid += ev.cmid == cmid;
  }
  cr_assert_eq(sent, 1);
  cr_assert_eq(msgs, 1, "the message is still handed over");
  cr_assert_eq(store_errors, 2, "one for the outbox, one for the delivery record");
  cr_assert_eq(with_cmid, 1, "the outbox failure names the message");
  /* The store works again: the outbox still holds the message (sent again
   * after a restart), and the delivery record is written with the next one. */
  cr_assert_eq(tern__cstore_fault_readonly(f.store, 0), 0);
  uint64_t n;
  cr_assert_eq(tern__cstore_outbox_count(f.store, &n), 0);
  cr_assert_eq(n, 1);
  close_fixture(&f);
}

/* Counts NOTICE_ACK frames among the outputs (others are dropped). */
static int notice_acks(fixture *f) {
  return outputs_of(f, TERN__FR_NOTICE_ACK, NULL);
}

/* An event that finds no memory is not lost (the event queue's allocation
 * fails, as on a phone under memory pressure): the call says TERN_ENOMEM,
 * nothing is queued, nothing is acknowledged to the relay on its behalf,
 * and when the relay (or the core's own timer) brings it again the app
 * gets it, once. */
Test(ccore, events_without_memory_come_again_once) {
  fixture f;
  open_fixture(&f);
  tern__ccore_online(f.cc, "alice", 0);
  frame_u64(&f, TERN__FR_FLOOR, 0, 0);
  (void)outputs_of(&f, 0, NULL);
  tern_event ev;

  /* A message. */
  tern__ccore_fault_events(f.cc, 1);
  cr_assert_eq(deliver(&f, 1, 0, "bob", "one", 10), TERN_ENOMEM);
  cr_assert_eq(tern__ccore_next_event(f.cc, &ev, 10), 0, "nothing half-queued");
  tern__fr_seqlist l = {0};
  cr_assert_eq(tern__ccore_tick(f.cc, 500), 0);
  (void)outputs_of(&f, TERN__FR_DELIVERY_ACK, &l);
  cr_assert_eq(l.last, 0, "seq 1 is not acknowledged: the relay will send it again");
  cr_assert_eq(deliver(&f, 1, 0, "bob", "one", 3000), 0, "the relay's resend");
  cr_assert_eq(tern__ccore_next_event(f.cc, &ev, 3000), 1);
  cr_assert_eq(ev.type, TERN_EV_MESSAGE);
  cr_assert_eq(ev.seq, 1);
  cr_assert_eq(tern__ccore_next_event(f.cc, &ev, 3000), 0, "once");

  /* A SERVER_ACK: the message stays in the outbox and is sent again. */
  uint64_t cmid, seen[8];
  cr_assert_eq(tern__ccore_send(f.cc, "bob", "hi", 2, 0, 3100, 1, &cmid), 0);
  cr_assert_eq(msgs_sent(&f, seen, 8), 1);
  tern__ccore_fault_events(f.cc, 1);
  cr_assert_eq(server_ack(&f, cmid, 7, 3200), TERN_ENOMEM);
  cr_assert_eq(tern__ccore_next_event(f.cc, &ev, 3200), 0);
  cr_assert_eq(tern__ccore_outbox_size(f.cc), 1, "still in the outbox");
  tern__ccore_config def;
  tern__ccore_config_default(&def);
  int resent = 0;
  for (uint64_t t = 3300; t <= 3200 + def.busy_retry_ms + 200; t += 100) {
    (void)tern__ccore_tick(f.cc, t);
    int n = msgs_sent(&f, seen, 8);
    resent += n > 0 && count_of(seen, n < 8 ? n : 8, cmid);
  }
  cr_assert_geq(resent, 1, "sent again within busy_retry_ms");
  cr_assert_eq(server_ack(&f, cmid, 7, 6000), 0, "the relay answers from its dedup");
  cr_assert_eq(tern__ccore_next_event(f.cc, &ev, 6000), 1);
  cr_assert_eq(ev.type, TERN_EV_SENT);
  cr_assert_eq(ev.cmid, cmid);
  cr_assert_eq(ev.seq, 7);
  cr_assert_eq(tern__ccore_next_event(f.cc, &ev, 6000), 0, "once");
  cr_assert_eq(tern__ccore_outbox_size(f.cc), 0);

  /* A receipt: its notice stays unacknowledged, so the relay resends it. */
  tern__ccore_fault_events(f.cc, 1);
  cr_assert_eq(frame_u64(&f, TERN__FR_RECEIPT, cmid, 6100), TERN_ENOMEM);
  cr_assert_eq(tern__ccore_next_event(f.cc, &ev, 6100), 0);
  cr_assert_eq(notice_acks(&f), 0, "not acknowledged");
  cr_assert_eq(frame_u64(&f, TERN__FR_RECEIPT, cmid, 9100), 0, "the relay's resend");
  cr_assert_eq(tern__ccore_next_event(f.cc, &ev, 9100), 1);
  cr_assert_eq(ev.type, TERN_EV_DELIVERED);
  cr_assert_eq(ev.cmid, cmid);
  cr_assert_eq(tern__ccore_next_event(f.cc, &ev, 9100), 0, "once");
  cr_assert_eq(notice_acks(&f), 1, "acknowledged once taken");
  close_fixture(&f);
}

/* A client online and synced, with a window of `window` MSGs. */
static void open_synced_window(fixture *f, unsigned window) {
  tern__ccore_config cfg;
  tern__ccore_config_default(&cfg);
  cfg.window = window;
  open_fixture_cfg(f, &cfg);
  tern__ccore_online(f->cc, "alice", 0);
  frame_u64(f, TERN__FR_FLOOR, 0, 0);
}

/* spec/messages.md §5.9: at most `window` MSGs in flight; the rest wait in
 * the outbox and go out in cmid order as answers come, a new message never
 * ahead of an older one that waits. */
Test(ccore, a_busy_relay_gets_a_window_of_messages_in_order) {
  fixture f;
  open_synced_window(&f, 4);
  uint64_t cmid[10], seen[40];
  for (int i = 0; i < 10; i++)
    cr_assert_eq(tern__ccore_send(f.cc, "bob", "m", 1, 0, 10, 1, &cmid[i]), 0);
  cr_assert_eq(msgs_sent(&f, seen, 40), 4, "more than the window went out");
  cr_assert_eq(seen[0], cmid[0]);
  cr_assert_eq(seen[3], cmid[3]);
  cr_assert_eq(tern__ccore_in_flight(f.cc), 4);
  /* Two answers: the next two go out, in order, at the next tick. */
  server_ack(&f, cmid[0], 1, 20);
  server_ack(&f, cmid[1], 2, 20);
  /* A message sent now waits behind the six older ones. */
  uint64_t late;
  cr_assert_eq(tern__ccore_send(f.cc, "bob", "late", 4, 0, 21, 1, &late), 0);
  cr_assert_eq(msgs_sent(&f, seen, 40), 0, "a new message went out ahead of older ones");
  cr_assert_eq(tern__ccore_timeout(f.cc, 21), 0, "room in the window, and nothing due?");
  cr_assert_eq(tern__ccore_tick(f.cc, 21), 0);
  cr_assert_eq(msgs_sent(&f, seen, 40), 2);
  cr_assert_eq(seen[0], cmid[4]);
  cr_assert_eq(seen[1], cmid[5]);
  cr_assert_eq(tern__ccore_outbox_size(f.cc), 11);
  close_fixture(&f);
}

/* A message answered BUSY while later ones to the same recipient are in
 * flight keeps its place in the window. The relay drops those later ones
 * (their prev_cmid names the refused one) until it is stored; if a new
 * message took the place, the window was full of messages that could
 * never be answered and the refused one never went again (a cluster chaos
 * run: one sender stuck for the last 60 s, 64 in flight, 338 waiting). */
Test(ccore, a_message_answered_busy_keeps_its_place_in_the_window) {
  fixture f;
  open_synced_window(&f, 4);
  uint64_t cmid[4], seen[64], more;
  for (int i = 0; i < 4; i++)
    cr_assert_eq(tern__ccore_send(f.cc, "bob", "m", 1, 0, 10, 1, &cmid[i]), 0);
  cr_assert_eq(msgs_sent(&f, seen, 64), 4);
  busy(&f, cmid[0], 20);
  tern_event ev;
  while (tern__ccore_next_event(f.cc, &ev, 20) == 1) {
  }
  /* The app goes on sending: none of it may take the refused one's place. */
  cr_assert_eq(tern__ccore_send(f.cc, "bob", "m", 1, 0, 30, 1, &more), 0);
  cr_assert_eq(tern__ccore_send(f.cc, "carol", "m", 1, 0, 30, 1, &more), 0);
  cr_assert_eq(msgs_sent(&f, seen, 64), 0, "a new message went out with an older one waiting for its retry");
  /* The relay answers nothing more (it drops 1-3 for their prev_cmid). */
  int again = 0;
  for (uint64_t t = 40; t <= 20000 && !again; t += 10) {
    tern__ccore_set_heard(f.cc, t);
    cr_assert_eq(tern__ccore_tick(f.cc, t), 0);
    int n = msgs_sent(&f, seen, 64);
    for (int i = 0; i < n; i++)
      if (seen[i] == cmid[0]) again = (int)t;
  }
  cr_assert_geq(again, 20 + 2000, "sent again before busy_retry_ms");
  cr_assert_leq(again, 20 + 2000 + 10, "the refused message never went again (window full: %zu in flight)",
                tern__ccore_in_flight(f.cc));
  close_fixture(&f);
}

/* A relay heard from (its ENet acks) but not answering is busy, not dead:
 * no reconnect, resends that back off, one TERN_EBUSY event per stall.
 * Silence in every form for dead_link_ms is a dead link. */
Test(ccore, a_busy_relay_is_not_a_dead_link_but_a_silent_one_is) {
  fixture f;
  open_fixture(&f);
  tern__ccore_online(f.cc, "alice", 0);
  frame_u64(&f, TERN__FR_FLOOR, 0, 0);
  uint64_t cmid, seen[8];
  cr_assert_eq(tern__ccore_send(f.cc, "bob", "hello", 5, 0, 10, 1, &cmid), 0);
  cr_assert_eq(msgs_sent(&f, seen, 8), 1);
  cr_assert_eq(tern__ccore_waiting_since(f.cc), 10);
  int busy_events = 0, resent = 0;
  for (uint64_t t = 20; t <= 30000; t += 100) {
    tern__ccore_set_heard(f.cc, t - 50); /* the relay acks our pings */
    cr_assert_eq(tern__ccore_tick(f.cc, t), 0, "a relay heard %d ms ago taken for dead", 50);
    tern_event ev;
    while (tern__ccore_next_event(f.cc, &ev, t) == 1)
      if (ev.type == TERN_EV_ERROR && ev.error == TERN_EBUSY) busy_events++;
    resent += msgs_sent(&f, seen, 8);
  }
  /* At 4, 12 and 28 s: the interval doubles each time. */
  cr_assert_eq(resent, 3, "%d resends in 30 s to a busy relay (want 3, backing off)", resent);
  cr_assert_eq(busy_events, 1, "%d TERN_EBUSY events for one stall", busy_events);
  /* It answers: the stall ends; a later one is told again. */
  server_ack(&f, cmid, 1, 30000);
  tern_event ev;
  while (tern__ccore_next_event(f.cc, &ev, 30000) == 1) {
  }
  cr_assert_eq(tern__ccore_send(f.cc, "bob", "again", 5, 0, 30000, 1, &cmid), 0);
  (void)msgs_sent(&f, seen, 8);
  /* Now nothing at all comes: dead after dead_link_ms. */
  tern__ccore_set_heard(f.cc, 30000);
  cr_assert_eq(tern__ccore_tick(f.cc, 37999), 0);
  cr_assert_eq(tern__ccore_tick(f.cc, 38000), 1, "a silent relay was not taken for dead");
  close_fixture(&f);
}

/* The SETTLED floor (spec/messages.md §2, "Dedup") and its value. */
static uint64_t last_settled(fixture *f, int *n) {
  uint64_t v = 0;
  *n = 0;
  tern__ccore_out o;
  while (tern__ccore_next_output(f->cc, &o) == 1) {
    tern__rbuf r, body;
    tern__rbuf_init(&r, o.data, o.len);
    uint8_t type;
    while (tern__frame_next(&r, &type, &body) == 1)
      if (type == TERN__FR_SETTLED) {
        cr_assert_eq(tern__fr_u64_read(&body, &v), 0);
        (*n)++;
      }
  }
  return v;
}

/* The client tells the relay which of its cmids it will never send again:
 * everything below its outbox's oldest message, once the app has taken
 * the answers; at most once a second; never past a message whose removal
 * from the stored outbox failed (it is sent again after a restart). */
Test(ccore, settled_tells_the_floor_of_the_outbox_at_most_once_a_second) {
  fixture f;
  open_fixture(&f);
  tern__ccore_online(f.cc, "alice", 0);
  frame_u64(&f, TERN__FR_FLOOR, 0, 0);
  uint64_t a, b;
  cr_assert_eq(tern__ccore_send(f.cc, "bob", "one", 3, 0, 0, 1, &a), 0);
  cr_assert_eq(tern__ccore_send(f.cc, "bob", "two", 3, 0, 0, 1, &b), 0);
  int n;
  tern__ccore_tick(f.cc, 1);
  cr_assert_eq(last_settled(&f, &n), a, "below the oldest in the outbox");
  cr_assert_eq(n, 1);
  server_ack(&f, a, 1, 10);
  tern_event ev;
  while (tern__ccore_next_event(f.cc, &ev, 10) == 1) {
  }
  tern__ccore_tick(f.cc, 500);
  (void)last_settled(&f, &n);
  cr_assert_eq(n, 0, "not twice in a second");
  tern__ccore_tick(f.cc, 1001);
  cr_assert_eq(last_settled(&f, &n), b, "a is settled once the app took its SENT");
  cr_assert_eq(n, 1);
  tern__ccore_tick(f.cc, 3000);
  (void)last_settled(&f, &n);
  cr_assert_eq(n, 0, "nothing new, nothing sent");

  /* The stored outbox cannot drop b: the floor stays at b for good. */
  cr_assert_eq(tern__cstore_fault_readonly(f.store, 1), 0);
  server_ack(&f, b, 2, 3010);
  while (tern__ccore_next_event(f.cc, &ev, 3010) == 1) {
  }
  cr_assert_eq(tern__cstore_fault_readonly(f.store, 0), 0);
  tern__ccore_tick(f.cc, 5000);
  (void)last_settled(&f, &n);
  cr_assert_eq(n, 0, "b is still in the stored outbox: it may come again");
  close_fixture(&f);
}
