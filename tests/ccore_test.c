/* The client messaging core, frame by frame on a virtual clock: what the
 * app sees, and what goes back to the relay. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "ccore.h"
#include "cstore.h"
#include "frame.h"
#include "link.h"

typedef struct fixture {
  tern__cstore *store;
  tern__ccore *cc;
} fixture;

static void open_fixture(fixture *f) {
  char err[128];
  cr_assert_eq(tern__cstore_open(&f->store, ":memory:", 1, err, sizeof(err)), 0, "%s", err);
  tern__ccore_config cfg;
  tern__ccore_config_default(&cfg);
  cr_assert_eq(tern__ccore_new(&f->cc, f->store, &cfg), 0);
}

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

static void deliver(fixture *f, uint64_t seq, uint64_t prev, const char *from, const char *text,
                    uint64_t now) {
  uint8_t buf[256];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof(buf));
  tern__fr_msg m = {.seq = seq, .prev_seq = prev, .peer = (const uint8_t *)from,
                    .peer_len = strlen(from), .ts = 1, .body = (const uint8_t *)text,
                    .body_len = strlen(text)};
  tern__fr_msg_write(&w, TERN__FR_DELIVER, &m);
  tern__ccore_input(f->cc, buf, w.len, now);
}

static void frame_u64(fixture *f, uint8_t type, uint64_t v, uint64_t now) {
  uint8_t buf[32];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof(buf));
  tern__fr_u64_write(&w, type, v);
  tern__ccore_input(f->cc, buf, w.len, now);
}

static void server_ack(fixture *f, uint64_t cmid, uint64_t seq, uint64_t now) {
  uint8_t buf[32];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof(buf));
  tern__fr_sack a = {.cmid = cmid, .seq = seq, .ts = 5};
  tern__fr_sack_write(&w, &a);
  tern__ccore_input(f->cc, buf, w.len, now);
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

Test(ccore, copy_waits_a_fifth_of_the_rtt_within_bounds) {
  fixture f;
  open_fixture(&f);
  tern__ccore_online(f.cc, "alice", 0);
  frame_u64(&f, TERN__FR_FLOOR, 0, 0); /* the SYNC arrived: no SYNC resend timer */
  (void)outputs_on(&f, 0);
  uint64_t id;
  const uint32_t rtts[] = {0, 100, 20, 600, 120};
  const int waits[] = {30, 20, 5, 30, 24};
  uint64_t now = 100;
  for (size_t i = 0; i < sizeof(rtts) / sizeof(rtts[0]); i++, now += 1000) {
    tern__ccore_set_rtt(f.cc, rtts[i]);
    tern__ccore_send(f.cc, "bob", "small", 5, 0, now, 1, &id);
    cr_assert_eq(tern__ccore_timeout(f.cc, now), waits[i], "RTT %u: copy after %d ms", rtts[i],
                 waits[i]);
    tern__ccore_tick(f.cc, now + (uint64_t)waits[i] - 1);
    cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 0, "RTT %u: not before", rtts[i]);
    tern__ccore_tick(f.cc, now + (uint64_t)waits[i]);
    cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 1, "RTT %u: then", rtts[i]);
    server_ack(&f, id, i + 1, now + 100);
  }
  close_fixture(&f);
}

Test(ccore, small_messages_get_a_second_copy_unless_acked_first) {
  fixture f;
  open_fixture(&f);
  tern__ccore_online(f.cc, "alice", 0);
  (void)outputs_on(&f, 0);
  uint64_t a, b;
  tern__ccore_send(f.cc, "bob", "small", 5, 0, 100, 1, &a);
  static uint8_t big[600];
  tern__ccore_send(f.cc, "bob", big, sizeof(big), 0, 100, 1, &b);
  cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 0, "no copy at once");
  cr_assert_eq(tern__ccore_timeout(f.cc, 100), 30, "the copy is due 30 ms later");
  tern__ccore_tick(f.cc, 130);
  cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 1, "one copy, for the small message only");
  uint64_t c;
  tern__ccore_send(f.cc, "bob", "acked fast", 10, 0, 200, 1, &c);
  server_ack(&f, c, 3, 210);
  tern__ccore_tick(f.cc, 240);
  cr_assert_eq(outputs_on(&f, TERN__CH_COPY), 0, "acked before its copy was due: no copy");
  close_fixture(&f);
}
