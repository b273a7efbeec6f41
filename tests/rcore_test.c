/* The relay messaging core, driven frame by frame: what a client sees for
 * stores, resends, refusals, a full disk, and ghost sessions. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire/frame.h"
#include "io/link.h"
#include "relay/rcore.h"
#include "store/rstore.h"
#include "simdisk.h"
#include "tmpdir.h"

#define WALL 1700000000000ull

typedef struct fixture {
  tern__relay_store *store;
  tern__rcore *rc;
  uint8_t dev_a[32], dev_b[32];
} fixture;

/* cfg NULL: the core's defaults. */
static void open_fixture_with(fixture *f, uint32_t max_pages, const tern__rcore_config *cfg) {
  memset(f, 0, sizeof(*f));
  char err[128];
  tern__rstore_config sc = {.path = ":memory:", .synchronous = 1, .max_pages = max_pages};
  cr_assert_eq(tern__relay_sqlite_open(&f->store, &sc, NULL, NULL, err, sizeof(err)), 0, "%s", err);
  tern__rcore_config dflt;
  tern__rcore_config_default(&dflt);
  cr_assert_eq(tern__rcore_new(&f->rc, f->store, cfg ? cfg : &dflt), 0);
  memset(f->dev_a, 0xaa, 32);
  memset(f->dev_b, 0xbb, 32);
}

static void open_fixture(fixture *f, uint32_t max_pages) { open_fixture_with(f, max_pages, NULL); }

static void close_fixture(fixture *f) {
  tern__rcore_free(f->rc);
  f->store->ops->close(f->store);
}

static void input_msg(fixture *f, uint64_t conn, uint64_t cmid, uint64_t prev, const char *to,
                      const void *body, size_t len, uint64_t now) {
  uint8_t buf[70000];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof(buf));
  tern__fr_msg m = {.cmid = cmid, .prev_cmid = prev, .peer = (const uint8_t *)to,
                    .peer_len = strlen(to), .body = body, .body_len = len};
  tern__fr_msg_write(&w, TERN__FR_MSG, &m);
  cr_assert_eq(tern__rcore_input(f->rc, conn, buf, w.len, now, WALL + now), 0);
}

/* A SYNC or DELIVERY_ACK up to `last` from `conn`. */
static void input_seqlist(fixture *f, uint8_t type, uint64_t conn, uint64_t last, uint64_t now) {
  uint8_t buf[64];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof(buf));
  tern__fr_seqlist l = {.last = last, .n = 0};
  tern__fr_seqlist_write(&w, type, &l);
  cr_assert_eq(tern__rcore_input(f->rc, conn, buf, w.len, now, WALL + now), 0);
}

static void input_sync(fixture *f, uint64_t conn, uint64_t last, uint64_t now) {
  input_seqlist(f, TERN__FR_SYNC, conn, last, now);
}

/* What the core released, summarised per frame type and connection. */
typedef struct outputs {
  int acks, delivers, busy, failed, floors, receipts;
  uint64_t ack_cmid[16], ack_seq[16];
  uint64_t deliver_seq[16];
  uint64_t failed_err;
  uint64_t busy_err;
} outputs;

static void take(fixture *f, uint64_t conn, outputs *o) {
  memset(o, 0, sizeof(*o));
  tern__rcore_out out;
  while (tern__rcore_next(f->rc, &out) == 1) {
    if (out.conn != conn) continue;
    tern__rbuf r, body;
    tern__rbuf_init(&r, out.data, out.len);
    uint8_t type;
    while (tern__frame_next(&r, &type, &body) == 1) {
      if (type == TERN__FR_SERVER_ACK) {
        tern__fr_sack a;
        cr_assert_eq(tern__fr_sack_read(&body, &a), 0);
        if (o->acks < 16) o->ack_cmid[o->acks] = a.cmid, o->ack_seq[o->acks] = a.seq;
        o->acks++;
      } else if (type == TERN__FR_DELIVER) {
        tern__fr_msg m;
        cr_assert_eq(tern__fr_msg_read(&body, TERN__FR_DELIVER, &m), 0);
        if (o->delivers < 16) o->deliver_seq[o->delivers] = m.seq;
        o->delivers++;
      } else if (type == TERN__FR_BUSY || type == TERN__FR_FAILED) {
        tern__fr_failed fl;
        cr_assert_eq(tern__fr_failed_read(&body, &fl), 0);
        if (type == TERN__FR_BUSY) o->busy++, o->busy_err = fl.error;
        else o->failed++, o->failed_err = fl.error;
      } else if (type == TERN__FR_FLOOR) {
        o->floors++;
      } else if (type == TERN__FR_RECEIPT) {
        o->receipts++;
      }
    }
  }
}

Test(rcore, ack_only_after_commit_and_resend_gets_the_same_ack) {
  fixture f;
  open_fixture(&f, 0);
  cr_assert_eq(tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0), 0);
  input_msg(&f, 1, 77, 0, "bob", "hi", 2, 10);
  outputs o;
  take(&f, 1, &o);
  cr_assert_eq(o.acks, 0, "nothing leaves before the commit");
  cr_assert_eq(tern__rcore_commit(f.rc, 10), 0);
  take(&f, 1, &o);
  cr_assert_eq(o.acks, 1);
  cr_assert_eq(o.ack_cmid[0], 77);
  cr_assert_eq(o.ack_seq[0], 1);
  /* The same message again (the ack was lost): same answer, not stored twice. */
  input_msg(&f, 1, 77, 0, "bob", "hi", 2, 20);
  tern__rcore_commit(f.rc, 20);
  take(&f, 1, &o);
  cr_assert_eq(o.acks, 1);
  cr_assert_eq(o.ack_seq[0], 1, "the resend gets the original seq");
  uint64_t n;
  cr_assert_eq(f.store->ops->count(f.store, &n), 0);
  cr_assert_eq(n, 1);
  tern__rcore_stats st;
  tern__rcore_get_stats(f.rc, &st);
  cr_assert_eq(st.deduped, 1);
  close_fixture(&f);
}

Test(rcore, out_of_order_msg_waits_for_its_predecessor) {
  fixture f;
  open_fixture(&f, 0);
  tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0);
  /* Message 6 names 5 as its predecessor, which the relay has not got. */
  input_msg(&f, 1, 6, 5, "bob", "second", 6, 10);
  tern__rcore_commit(f.rc, 10);
  outputs o;
  take(&f, 1, &o);
  cr_assert_eq(o.acks, 0, "not stored ahead of its predecessor");
  tern__rcore_stats st;
  tern__rcore_get_stats(f.rc, &st);
  cr_assert_eq(st.no_prev, 1, "counted (ternd's messages_out_of_order)");
  input_msg(&f, 1, 5, 0, "bob", "first", 5, 20);
  input_msg(&f, 1, 6, 5, "bob", "second", 6, 20);
  tern__rcore_commit(f.rc, 20);
  take(&f, 1, &o);
  cr_assert_eq(o.acks, 2);
  cr_assert_eq(o.ack_seq[0], 1);
  cr_assert_eq(o.ack_seq[1], 2, "stored in send order");
  close_fixture(&f);
}

Test(rcore, nothing_reaches_a_session_before_its_sync) {
  fixture f;
  open_fixture(&f, 0);
  tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0);
  tern__rcore_open(f.rc, 2, "bob", f.dev_b, 0);
  input_msg(&f, 1, 1, 0, "bob", "hello", 5, 10);
  tern__rcore_commit(f.rc, 10);
  outputs o;
  take(&f, 2, &o);
  cr_assert_eq(o.delivers, 0, "a session that never sent SYNC may be a replayed HELLO");
  input_sync(&f, 2, 0, 20);
  tern__rcore_commit(f.rc, 20);
  take(&f, 2, &o);
  cr_assert_eq(o.floors, 1, "SYNC is always answered");
  cr_assert_eq(o.delivers, 1);
  cr_assert_eq(o.deliver_seq[0], 1);
  close_fixture(&f);
}

Test(rcore, full_disk_answers_busy_and_keeps_what_it_has) {
  fixture f;
  open_fixture(&f, 40);
  tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0);
  tern__rcore_commit(f.rc, 0);
  static uint8_t body[8000];
  memset(body, 'x', sizeof(body));
  uint64_t t = 10, cmid = 0, stored = 0;
  int busy = 0;
  outputs o;
  /* Fill the disk one message per round until the store refuses. */
  for (int i = 0; i < 200 && !busy; i++, t += 10) {
    cmid++;
    input_msg(&f, 1, cmid, cmid - 1, "bob", body, sizeof(body), t);
    tern__rcore_commit(f.rc, t);
    take(&f, 1, &o);
    stored += (uint64_t)o.acks;
    busy = o.busy;
    cr_assert_eq(o.acks + o.busy, 1, "each message gets exactly one answer");
  }
  cr_assert(busy, "the store filled up");
  cr_assert_gt(stored, 0);
  uint64_t n;
  f.store->ops->count(f.store, &n);
  cr_assert_eq(n, stored, "every acked message is stored, nothing else");
  /* While busy, new messages are refused at once, without touching the store. */
  input_msg(&f, 1, ++cmid, 0, "bob", "small", 5, t);
  tern__rcore_commit(f.rc, t);
  take(&f, 1, &o);
  cr_assert_eq(o.busy, 1);
  cr_assert_eq(o.acks, 0);
  /* What was stored is still delivered. */
  tern__rcore_open(f.rc, 2, "bob", f.dev_b, t);
  input_sync(&f, 2, 0, t);
  tern__rcore_commit(f.rc, t);
  take(&f, 2, &o);
  cr_assert_eq((uint64_t)o.delivers, stored, "all %llu stored messages go out",
               (unsigned long long)stored);
  tern__rcore_stats st;
  tern__rcore_get_stats(f.rc, &st);
  cr_assert_geq(st.store_errors, 1);
  close_fixture(&f);
}

Test(rcore, too_big_fails_with_a_reason) {
  fixture f;
  open_fixture(&f, 0);
  tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0);
  static uint8_t big[65537];
  input_msg(&f, 1, 1, 0, "bob", big, sizeof(big), 10);
  tern__rcore_commit(f.rc, 10);
  outputs o;
  take(&f, 1, &o);
  cr_assert_eq(o.failed, 1);
  cr_assert_eq(o.failed_err, (uint64_t)-TERN_ETOOBIG);
  cr_assert_eq(o.acks, 0);
  close_fixture(&f);
}

static void input_ack(fixture *f, uint64_t conn, uint64_t last, uint64_t now) {
  input_seqlist(f, TERN__FR_DELIVERY_ACK, conn, last, now);
}

/* What the core logged. */
typedef struct logbook {
  char text[4096];
  int lines;
} logbook;

static void log_line(void *ctx, int level, const char *line) {
  logbook *b = ctx;
  (void)level;
  size_t n = strlen(b->text);
  snprintf(b->text + n, sizeof(b->text) - n, "%s\n", line);
  b->lines++;
}

/* A fixture whose core logs into `book`, on the store `sc` (NULL: in
 * memory). */
static void open_logged(fixture *f, logbook *book, const tern__rstore_config *sc) {
  memset(f, 0, sizeof(*f));
  memset(book, 0, sizeof(*book));
  char err[256];
  tern__rstore_config mem = {.path = ":memory:", .synchronous = 1};
  cr_assert_eq(tern__relay_sqlite_open(&f->store, sc ? sc : &mem, log_line, book, err, sizeof(err)), 0,
               "%s", err);
  tern__rcore_config cfg;
  tern__rcore_config_default(&cfg);
  cfg.log = log_line;
  cfg.log_ctx = book;
  cr_assert_eq(tern__rcore_new(&f->rc, f->store, &cfg), 0);
  memset(f->dev_a, 0xaa, 32);
  memset(f->dev_b, 0xbb, 32);
}

/* A store whose reads keep failing (a cluster replica going back to a
 * snapshot) after a failed round: what the round dropped is sent again
 * once at once, then only as the failure's backoff allows, not in a loop
 * (it once failed millions of times a second). */
Test(rcore, a_store_that_keeps_failing_is_not_asked_again_in_a_loop) {
  fixture f;
  logbook book;
  open_logged(&f, &book, NULL);
  cr_assert_eq(tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0), 0);
  cr_assert_eq(tern__rcore_open(f.rc, 2, "bob", f.dev_b, 0), 0);
  input_sync(&f, 1, 0, 0);
  input_sync(&f, 2, 0, 0);
  cr_assert_eq(tern__rcore_commit(f.rc, 0), 0);
  outputs o;
  take(&f, 0, &o);
  input_msg(&f, 1, 10, 0, "bob", "one", 3, 10);
  f.store->ops->fault(f.store, TERN__RS_FAULT_COMMIT, 1);
  f.store->ops->fault(f.store, TERN__RS_FAULT_DUE, 1);
  cr_assert_eq(tern__rcore_commit(f.rc, 10), TERN_ESTORE);
  take(&f, 0, &o);
  /* Simulated time stands still at 20 ms: each service the relay's loop
   * would run at once (timeout 0) is counted. */
  int at_once = 0;
  for (int i = 0; i < 1000 && tern__rcore_timeout(f.rc, 20) == 0; i++) {
    tern__rcore_tick(f.rc, 20, WALL + 20);
    (void)tern__rcore_commit(f.rc, 20);
    take(&f, 0, &o);
    at_once++;
  }
  cr_assert_leq(at_once, 2, "serviced again at once %d times", at_once);
  tern__rcore_stats st;
  tern__rcore_get_stats(f.rc, &st);
  cr_assert_leq(st.store_errors, 3, "%llu store errors", (unsigned long long)st.store_errors);
  /* Over 10 s of failing reads, a bounded number of tries. */
  for (uint64_t t = 20; t <= 10020; t += 10) {
    if (tern__rcore_timeout(f.rc, t) != 0) continue;
    tern__rcore_tick(f.rc, t, WALL + t);
    (void)tern__rcore_commit(f.rc, t);
    take(&f, 0, &o);
  }
  tern__rcore_get_stats(f.rc, &st);
  cr_assert_leq(st.store_errors, 30, "%llu store errors in 10 s", (unsigned long long)st.store_errors);
  /* The store is back: the message reaches bob. */
  f.store->ops->fault(f.store, TERN__RS_FAULT_DUE, 0);
  int got = 0;
  for (uint64_t t = 10030; t <= 14030 && !got; t += 10) {
    input_msg(&f, 1, 10, 0, "bob", "one", 3, t);
    tern__rcore_tick(f.rc, t, WALL + t);
    (void)tern__rcore_commit(f.rc, t);
    take(&f, 2, &o);
    got = o.delivers > 0;
  }
  cr_assert(got, "delivered once the store answers again");
  close_fixture(&f);
}

/* The COMMIT itself fails (a full disk in WAL mode fails there, not at
 * the append): the round's message gets BUSY, not silence; the failure is
 * logged with the store's reason; the device's ack in the same round is
 * not lost for good: the relay resends from the committed cursor, the
 * device acks again, and the receipt follows. The stats count only what
 * was committed. */
Test(rcore, failed_commit_answers_busy_and_the_acks_of_the_round_are_redone) {
  fixture f;
  logbook book;
  open_logged(&f, &book, NULL);
  cr_assert_eq(tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0), 0);
  cr_assert_eq(tern__rcore_open(f.rc, 2, "bob", f.dev_b, 0), 0);
  input_sync(&f, 1, 0, 0);
  input_sync(&f, 2, 0, 0);
  cr_assert_eq(tern__rcore_commit(f.rc, 0), 0);
  outputs o;
  take(&f, 0, &o);
  input_msg(&f, 1, 10, 0, "bob", "one", 3, 10);
  cr_assert_eq(tern__rcore_commit(f.rc, 10), 0);
  take(&f, 0, &o);
  tern__rcore_stats st;
  tern__rcore_get_stats(f.rc, &st);
  cr_assert_eq(st.stored, 1);
  /* One round: bob acks seq 1, alice sends another; the commit fails. */
  input_ack(&f, 2, 1, 20);
  input_msg(&f, 1, 11, 10, "bob", "two", 3, 20);
  f.store->ops->fault(f.store, TERN__RS_FAULT_COMMIT, 1);
  cr_assert_eq(tern__rcore_commit(f.rc, 20), TERN_ESTORE);
  tern__rcore_out out;
  int busy_for_alice = 0, acks = 0, receipts = 0;
  while (tern__rcore_next(f.rc, &out) == 1) {
    tern__rbuf r, body;
    tern__rbuf_init(&r, out.data, out.len);
    uint8_t type;
    while (tern__frame_next(&r, &type, &body) == 1) {
      if (type == TERN__FR_BUSY && out.conn == 1) {
        tern__fr_failed fl;
        cr_assert_eq(tern__fr_failed_read(&body, &fl), 0);
        cr_assert_eq(fl.cmid, 11);
        cr_assert_eq(fl.error, (uint64_t)-TERN_ESTORE);
        busy_for_alice++;
      }
      acks += type == TERN__FR_SERVER_ACK;
      receipts += type == TERN__FR_RECEIPT;
    }
  }
  cr_assert_eq(busy_for_alice, 1, "the message of the failed round gets BUSY");
  cr_assert_eq(acks, 0, "and no SERVER_ACK: it is not stored");
  cr_assert_eq(receipts, 0, "the receipt of the rolled-back ack is not sent");
  cr_assert(strstr(book.text, "COMMIT: database or disk is full"), "logged with the reason: %s",
            book.text);
  cr_assert(strstr(book.text, "1 message(s) of it answered BUSY"), "%s", book.text);
  tern__rcore_get_stats(f.rc, &st);
  cr_assert_eq(st.stored, 1, "the rolled-back message is not counted");
  cr_assert_eq(st.delivered, 0, "nor the rolled-back ack");
  cr_assert_eq(st.busy, 1);
  cr_assert_eq(st.store_errors, 1);
  uint64_t n;
  cr_assert_eq(f.store->ops->count(f.store, &n), 0);
  cr_assert_eq(n, 1);
  /* Inside the busy window a new message is refused without a store call. */
  input_msg(&f, 1, 11, 10, "bob", "two", 3, 30);
  tern__rcore_commit(f.rc, 30);
  take(&f, 1, &o);
  cr_assert_eq(o.busy, 1);
  /* bob's ack is not lost with the round: the relay takes it in again by
   * itself, 50 ms later, without resending what bob has, and alice gets
   * her receipt. */
  int delivers_to_bob = 0;
  receipts = 0;
  for (uint64_t t = 40; t <= 70; t += 10) {
    int due = tern__rcore_timeout(f.rc, t);
    cr_assert(due >= 0 && (uint64_t)due <= 70 - t, "the ack is due again by 70 ms (t %llu: %d)",
              (unsigned long long)t, due);
    tern__rcore_tick(f.rc, t, WALL + t);
    cr_assert_eq(tern__rcore_commit(f.rc, t), 0);
    while (tern__rcore_next(f.rc, &out) == 1) {
      tern__rbuf r, body;
      tern__rbuf_init(&r, out.data, out.len);
      uint8_t type;
      while (tern__frame_next(&r, &type, &body) == 1) {
        delivers_to_bob += type == TERN__FR_DELIVER && out.conn == 2;
        receipts += type == TERN__FR_RECEIPT && out.conn == 1;
      }
    }
  }
  cr_assert_eq(receipts, 1, "the receipt follows the redone ack");
  cr_assert_eq(delivers_to_bob, 0, "bob is not sent what he has");
  /* After the busy window the resent message is stored. */
  input_msg(&f, 1, 11, 10, "bob", "two", 3, 2100);
  cr_assert_eq(tern__rcore_commit(f.rc, 2100), 0);
  take(&f, 1, &o);
  cr_assert_eq(o.acks, 1);
  cr_assert_eq(o.ack_seq[0], 2);
  tern__rcore_get_stats(f.rc, &st);
  cr_assert_eq(st.stored, 2);
  cr_assert_eq(st.delivered, 1);
  close_fixture(&f);
}

/* A session whose device was registered in a round that failed is
 * registered again: its acks are not refused as from an unknown device
 * (which made every later round fail). */
Test(rcore, registration_rolled_back_by_a_failed_commit_is_redone) {
  fixture f;
  logbook book;
  open_logged(&f, &book, NULL);
  cr_assert_eq(tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0), 0);
  input_msg(&f, 1, 5, 0, "bob", "hi", 2, 0);
  cr_assert_eq(tern__rcore_commit(f.rc, 0), 0);
  cr_assert_eq(tern__rcore_open(f.rc, 2, "bob", f.dev_b, 10), 0);
  f.store->ops->fault(f.store, TERN__RS_FAULT_COMMIT, 1);
  cr_assert_eq(tern__rcore_commit(f.rc, 10), TERN_ESTORE);
  cr_assert_eq(tern__rcore_commit(f.rc, 20), 0, "an empty round commits");
  input_sync(&f, 2, 0, 30);
  cr_assert_eq(tern__rcore_commit(f.rc, 30), 0);
  outputs o;
  take(&f, 2, &o);
  cr_assert_eq(o.delivers, 1);
  /* An ack that comes within 50 ms of the failure waits for then (the
   * tick takes it in). */
  input_ack(&f, 2, 1, 40);
  cr_assert_eq(tern__rcore_commit(f.rc, 40), 0);
  tern__rcore_tick(f.rc, 60, WALL + 60);
  cr_assert_eq(tern__rcore_commit(f.rc, 60), 0, "bob's ack is taken: %s", book.text);
  tern__rcore_stats st;
  tern__rcore_get_stats(f.rc, &st);
  cr_assert_eq(st.delivered, 1);
  cr_assert_eq(st.store_errors, 1, "only the injected failure: %s", book.text);
  close_fixture(&f);
}

/* A store that keeps failing (a cluster without its quorum): the devices'
 * acks after a failure wait for the backoff instead of each opening a
 * round that fails at once (a storm of thousands a second in the cluster
 * chaos runs), and when the tick takes them in, what the window held back
 * goes out (it once stayed in the store until the next message woke the
 * session: the messages still waiting at the end of a load were never
 * delivered). */
Test(rcore, acks_after_a_failure_wait_and_then_the_window_moves_on) {
  tern__rcore_config cfg;
  tern__rcore_config_default(&cfg);
  cfg.deliver_window = 2;
  fixture f;
  open_fixture_with(&f, 0, &cfg);
  cr_assert_eq(tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0), 0);
  cr_assert_eq(tern__rcore_open(f.rc, 2, "bob", f.dev_b, 0), 0);
  input_sync(&f, 1, 0, 0);
  input_sync(&f, 2, 0, 0);
  cr_assert_eq(tern__rcore_commit(f.rc, 0), 0);
  outputs o;
  take(&f, 0, &o);
  for (uint64_t k = 1; k <= 4; k++) input_msg(&f, 1, k, k - 1, "bob", "m", 1, 10);
  cr_assert_eq(tern__rcore_commit(f.rc, 10), 0);
  take(&f, 2, &o);
  cr_assert_eq(o.delivers, 2, "the window: 2 of 4 (%d)", o.delivers);
  /* bob's ack of both, in a round whose commit fails. */
  input_ack(&f, 2, 2, 20);
  f.store->ops->fault(f.store, TERN__RS_FAULT_COMMIT, 1);
  cr_assert_eq(tern__rcore_commit(f.rc, 20), TERN_ESTORE);
  take(&f, 2, &o);
  /* bob says it again at once (he got what the failure made the relay
   * send again): it waits, no round for it. */
  tern__rcore_stats st0, st;
  tern__rcore_get_stats(f.rc, &st0);
  for (uint64_t t = 21; t < 70; t += 7) {
    input_ack(&f, 2, 2, t);
    tern__rcore_tick(f.rc, t, WALL + t);
    tern__rcore_commit(f.rc, t);
    take(&f, 2, &o);
  }
  tern__rcore_get_stats(f.rc, &st);
  cr_assert_eq(st.store_errors, st0.store_errors);
  cr_assert_eq(st.delivered, 0, "taken in before the backoff's end");
  /* At 70 (50 ms after the failure) the tick takes the ack in, and
   * messages 3 and 4 go out without anything else waking bob. */
  int delivers = 0;
  uint64_t last = 0;
  for (uint64_t t = 70; t <= 200; t += 10) {
    tern__rcore_tick(f.rc, t, WALL + t);
    cr_assert_eq(tern__rcore_commit(f.rc, t), 0);
    take(&f, 2, &o);
    for (int i = 0; i < o.delivers && i < 16; i++)
      if (o.deliver_seq[i] > last) last = o.deliver_seq[i];
    delivers += o.delivers;
  }
  tern__rcore_get_stats(f.rc, &st);
  cr_assert_eq(st.delivered, 2, "bob's ack taken in once (%llu)", (unsigned long long)st.delivered);
  cr_assert_eq(last, 4, "messages 3 and 4 went out after the ack (last seq sent %llu, %d DELIVERs)",
               (unsigned long long)last, delivers);
  close_fixture(&f);
}

static int only_bob(void *ctx, const char *from, const char *to) {
  (void)ctx;
  return strcmp(from, "alice") != 0 || strcmp(to, "bob") == 0;
}

/* may_send refuses with FAILED TERN_EDENIED; an ephemeral message that is
 * not allowed is dropped without a word. */
Test(rcore, not_allowed_fails_with_edenied) {
  fixture f;
  memset(&f, 0, sizeof(f));
  char err[128];
  tern__rstore_config sc = {.path = ":memory:", .synchronous = 1};
  cr_assert_eq(tern__relay_sqlite_open(&f.store, &sc, NULL, NULL, err, sizeof(err)), 0, "%s", err);
  tern__rcore_config cfg;
  tern__rcore_config_default(&cfg);
  cfg.may_send = only_bob;
  cr_assert_eq(tern__rcore_new(&f.rc, f.store, &cfg), 0);
  memset(f.dev_a, 0xaa, 32);
  memset(f.dev_b, 0xbb, 32);
  tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0);
  tern__rcore_open(f.rc, 2, "carol", f.dev_b, 0);
  input_sync(&f, 2, 0, 0);
  tern__rcore_commit(f.rc, 0);
  outputs o;
  take(&f, 0, &o);
  input_msg(&f, 1, 1, 0, "carol", "no", 2, 10);
  input_msg(&f, 1, 2, 0, "bob", "yes", 3, 10);
  tern__rcore_commit(f.rc, 10);
  take(&f, 1, &o);
  cr_assert_eq(o.failed, 1);
  cr_assert_eq(o.failed_err, (uint64_t)-TERN_EDENIED);
  cr_assert_eq(o.acks, 1);
  cr_assert_eq(o.ack_cmid[0], 2);
  uint8_t buf[64];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof(buf));
  tern__fr_msg m = {.peer = (const uint8_t *)"carol", .peer_len = 5, .flags = TERN__MSGF_EPHEMERAL,
                    .body = (const uint8_t *)"typing", .body_len = 6};
  tern__fr_msg_write(&w, TERN__FR_MSG, &m);
  cr_assert_eq(tern__rcore_input(f.rc, 1, buf, w.len, 20, WALL + 20), 0);
  tern__rcore_commit(f.rc, 20);
  tern__rcore_out out;
  int any = 0;
  while (tern__rcore_next(f.rc, &out) == 1) any++;
  cr_assert_eq(any, 0, "the ephemeral message goes nowhere and is not answered");
  close_fixture(&f);
}

/* The simulation's "skip the dedup" fault really stores a resend again. */
Test(rcore, skip_dedup_fault_stores_a_duplicate) {
  fixture f;
  memset(&f, 0, sizeof(f));
  char err[128];
  tern__rstore_config sc = {.path = ":memory:", .synchronous = 1};
  cr_assert_eq(tern__relay_sqlite_open(&f.store, &sc, NULL, NULL, err, sizeof(err)), 0, "%s", err);
  tern__rcore_config cfg;
  tern__rcore_config_default(&cfg);
  f.store->ops->fault(f.store, TERN__RS_FAULT_DUP, 1);
  cr_assert_eq(tern__rcore_new(&f.rc, f.store, &cfg), 0);
  memset(f.dev_a, 0xaa, 32);
  tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0);
  input_msg(&f, 1, 7, 0, "bob", "hi", 2, 10);
  input_msg(&f, 1, 7, 0, "bob", "hi", 2, 10);
  cr_assert_eq(tern__rcore_commit(f.rc, 10), 0);
  outputs o;
  take(&f, 1, &o);
  cr_assert_eq(o.acks, 2);
  cr_assert_eq(o.ack_seq[1], 2, "stored twice, under two seqs");
  cr_assert_eq(o.busy, 0);
  uint64_t n;
  f.store->ops->count(f.store, &n);
  cr_assert_eq(n, 2);
  close_fixture(&f);
}

/* Counts released outputs to `conn` on `channel`. */
static int count_on(fixture *f, uint64_t conn, uint8_t channel) {
  int n = 0;
  tern__rcore_out out;
  while (tern__rcore_next(f->rc, &out) == 1) n += out.conn == conn && out.channel == channel;
  return n;
}

/* A small DELIVER's copies leave d / 2 and 3 d after it, d a fifth of the
 * recipient's RTT (5 to 30 ms), and stop once the device has acked it. */
Test(rcore, deliver_copies_wait_a_tenth_then_three_fifths_of_the_recipients_rtt) {
  fixture f;
  open_fixture(&f, 0);
  cr_assert_eq(tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0), 0);
  cr_assert_eq(tern__rcore_open(f.rc, 2, "bob", f.dev_b, 0), 0);
  input_sync(&f, 2, 0, 0);
  tern__rcore_tick(f.rc, 0, WALL); /* the first expiry sweep: next one in a minute */
  tern__rcore_commit(f.rc, 0);
  (void)count_on(&f, 2, TERN__CH_COPY);
  /* RTT unknown: d = 30 ms, copies at 115 and 190. */
  input_msg(&f, 1, 10, 0, "bob", "one", 3, 100);
  tern__rcore_commit(f.rc, 100);
  cr_assert_eq(count_on(&f, 2, TERN__CH_COPY), 0, "no copy at once");
  cr_assert_eq(tern__rcore_timeout(f.rc, 100), 15);
  tern__rcore_tick(f.rc, 114, WALL + 114);
  tern__rcore_commit(f.rc, 114);
  cr_assert_eq(count_on(&f, 2, TERN__CH_COPY), 0, "not before");
  tern__rcore_tick(f.rc, 115, WALL + 115);
  tern__rcore_commit(f.rc, 115);
  cr_assert_eq(count_on(&f, 2, TERN__CH_COPY), 1, "the first copy, d / 2 after");
  /* bob's link measures 50 ms: d = 10 ms, copies at 125 and 150. */
  tern__rcore_set_rtt(f.rc, 2, 50);
  input_msg(&f, 1, 11, 10, "bob", "two", 3, 120);
  tern__rcore_commit(f.rc, 120);
  uint64_t at[] = {125, 150, 190};
  for (size_t i = 0; i < sizeof(at) / sizeof(*at); i++) {
    uint64_t now = i ? at[i - 1] : 120;
    cr_assert_eq(tern__rcore_timeout(f.rc, now), (int)(at[i] - now), "a copy due at %llu",
                 (unsigned long long)at[i]);
    tern__rcore_tick(f.rc, at[i] - 1, WALL + at[i] - 1);
    tern__rcore_commit(f.rc, at[i] - 1);
    cr_assert_eq(count_on(&f, 2, TERN__CH_COPY), 0, "not before %llu", (unsigned long long)at[i]);
    tern__rcore_tick(f.rc, at[i], WALL + at[i]);
    tern__rcore_commit(f.rc, at[i]);
    cr_assert_eq(count_on(&f, 2, TERN__CH_COPY), 1, "the copy due at %llu", (unsigned long long)at[i]);
  }
  tern__rcore_tick(f.rc, 400, WALL + 400);
  tern__rcore_commit(f.rc, 400);
  cr_assert_eq(count_on(&f, 2, TERN__CH_COPY), 0, "two copies each, no third");
  /* Bounds: a 20 ms path gets d = 5 ms (not 4), a 600 ms path 30 ms (not
   * 120): copies 2 and 15, and 15 and 90 ms after. */
  tern__rcore_set_rtt(f.rc, 2, 20);
  input_msg(&f, 1, 12, 11, "bob", "three", 5, 500);
  tern__rcore_commit(f.rc, 500);
  cr_assert_eq(tern__rcore_timeout(f.rc, 500), 2);
  tern__rcore_tick(f.rc, 502, WALL + 502);
  tern__rcore_commit(f.rc, 502);
  cr_assert_eq(count_on(&f, 2, TERN__CH_COPY), 1);
  cr_assert_eq(tern__rcore_timeout(f.rc, 502), 13);
  tern__rcore_tick(f.rc, 515, WALL + 515);
  tern__rcore_commit(f.rc, 515);
  cr_assert_eq(count_on(&f, 2, TERN__CH_COPY), 1);
  tern__rcore_set_rtt(f.rc, 2, 600);
  input_msg(&f, 1, 13, 12, "bob", "four", 4, 600);
  tern__rcore_commit(f.rc, 600);
  cr_assert_eq(tern__rcore_timeout(f.rc, 600), 15);
  tern__rcore_tick(f.rc, 615, WALL + 615);
  tern__rcore_commit(f.rc, 615);
  cr_assert_eq(count_on(&f, 2, TERN__CH_COPY), 1, "the first copy of four");
  cr_assert_eq(tern__rcore_timeout(f.rc, 615), 75, "the second 3 d = 90 ms after");
  /* bob acks everything: the second copy (due at 690) is not sent. */
  input_ack(&f, 2, 4, 640);
  tern__rcore_commit(f.rc, 640);
  tern__rcore_tick(f.rc, 700, WALL + 700);
  tern__rcore_commit(f.rc, 700);
  cr_assert_eq(count_on(&f, 2, TERN__CH_COPY), 0, "acked: no second copy");
  /* A fast link: no copy that would leave after one RTT (copies.h). */
  tern__rcore_set_rtt(f.rc, 2, 1);
  input_msg(&f, 1, 14, 13, "bob", "five", 4, 800);
  tern__rcore_commit(f.rc, 800);
  tern__rcore_tick(f.rc, 900, WALL + 900);
  tern__rcore_commit(f.rc, 900);
  cr_assert_eq(count_on(&f, 2, TERN__CH_COPY), 0, "RTT 1 ms: no copy");
  close_fixture(&f);
}

/* ---- a real full disk, simulated: the 512 KiB tmpfs of ternd_test ------- */

/* alice sends bob NMSG messages of 3000 bytes (more than the disk holds)
 * over a relay whose store is on a 512 KiB disk with a 96 KiB reserve, as
 * tests/ternd_test.c does with ternd and a tmpfs, but deterministically:
 * simulated time, a simulated disk (simdisk.h), and alice sending in
 * bursts of `burst` messages per round (10 ms), as a client with a full
 * outbox does after a BUSY. Each message gets one answer per send; BUSY is
 * sent again after 2 s. bob acknowledges what he has every second, so that
 * the disk fills up. */
enum { NMSG = 150, MSIZE = 3000 };

typedef struct disk_run {
  int acked[NMSG + 1];     /* SERVER_ACK seen: seq */
  uint64_t due[NMSG + 1];  /* when alice (re)sends it; 0: sent, waiting */
  int receipts[NMSG + 1];
  int got[NMSG + 1];       /* bob: times received, by cmid */
  uint64_t bob_seq_cmid[4 * NMSG];
  uint64_t bob_last;       /* bob: every seq up to it received */
  int nacked, nreceipts, ngot, busy, dup_acks;
  uint64_t done_ms;        /* when everything was through */
  uint64_t last_ack_ms;    /* the last SERVER_ACK */
  uint64_t busy_after;     /* BUSYs after the last SERVER_ACK */
} disk_run;

static void body_of(uint64_t cmid, uint8_t *b) {
  for (int k = 0; k < MSIZE; k++) b[k] = (uint8_t)('a' + (cmid + (uint64_t)k) % 26);
  memcpy(b, &cmid, sizeof cmid);
}

static void input_notice_ack(fixture *f, uint64_t cmid, uint64_t now) {
  uint8_t buf[32];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof(buf));
  tern__fr_notice_ack_write(&w, TERN__NOTICE_RECEIPT, cmid);
  cr_assert_eq(tern__rcore_input(f->rc, 1, buf, w.len, now, WALL + now), 0);
}

/* Takes every released output: alice's answers, bob's deliveries. */
static void drain(fixture *f, disk_run *d, uint64_t now) {
  tern__rcore_out out;
  uint64_t notice_acks[NMSG];
  int nn = 0;
  while (tern__rcore_next(f->rc, &out) == 1) {
    tern__rbuf r, body;
    tern__rbuf_init(&r, out.data, out.len);
    uint8_t type;
    while (tern__frame_next(&r, &type, &body) == 1) {
      if (out.conn == 1 && type == TERN__FR_SERVER_ACK) {
        tern__fr_sack a;
        cr_assert_eq(tern__fr_sack_read(&body, &a), 0);
        cr_assert(a.cmid >= 1 && a.cmid <= NMSG);
        if (d->acked[a.cmid]) {
          cr_assert_eq((uint64_t)d->acked[a.cmid], a.seq, "a resend gets the same seq");
          d->dup_acks++;
        } else {
          d->acked[a.cmid] = (int)a.seq;
          d->nacked++;
        }
        d->due[a.cmid] = UINT64_MAX;
        d->last_ack_ms = now;
        d->busy_after = 0;
      } else if (out.conn == 1 && type == TERN__FR_BUSY) {
        tern__fr_failed fl;
        cr_assert_eq(tern__fr_failed_read(&body, &fl), 0);
        cr_assert_eq(fl.error, (uint64_t)-TERN_ESTORE);
        cr_assert_eq(d->acked[fl.cmid], 0, "BUSY for a message already stored");
        d->due[fl.cmid] = now + 2000;
        d->busy++;
        d->busy_after++;
      } else if (out.conn == 1 && type == TERN__FR_RECEIPT) {
        uint64_t cmid;
        cr_assert_eq(tern__fr_u64_read(&body, &cmid), 0);
        cr_assert(cmid >= 1 && cmid <= NMSG);
        cr_assert_neq(d->got[cmid], 0, "a receipt for %llu, which bob has not got",
                      (unsigned long long)cmid);
        if (!d->receipts[cmid]++) d->nreceipts++;
        if (nn < NMSG) notice_acks[nn++] = cmid;
      } else if (out.conn == 2 && type == TERN__FR_DELIVER) {
        tern__fr_msg m;
        cr_assert_eq(tern__fr_msg_read(&body, TERN__FR_DELIVER, &m), 0);
        cr_assert_eq(m.body_len, MSIZE);
        uint64_t cmid;
        memcpy(&cmid, m.body, sizeof cmid);
        uint8_t want[MSIZE];
        body_of(cmid, want);
        cr_assert(memcmp(want, m.body, MSIZE) == 0, "body of %llu", (unsigned long long)cmid);
        cr_assert_lt(m.seq, 4 * NMSG);
        if (m.seq <= d->bob_last || d->bob_seq_cmid[m.seq]) continue; /* a copy */
        d->bob_seq_cmid[m.seq] = cmid;
        if (!d->got[cmid]++) d->ngot++;
        while (d->bob_seq_cmid[d->bob_last + 1]) d->bob_last++;
      }
    }
  }
  for (int i = 0; i < nn; i++) input_notice_ack(f, notice_acks[i], now);
}

/* Runs the exchange for at most `limit_ms` of simulated time. */
static void run_disk(fixture *f, disk_run *d, int burst, uint64_t limit_ms) {
  static uint8_t body[MSIZE];
  uint64_t bob_acked = 0;
  for (int i = 1; i <= NMSG; i++) d->due[i] = 0;
  for (uint64_t t = 10; t <= limit_ms; t += 10) {
    int sent = 0;
    for (uint64_t c = 1; c <= NMSG && sent < burst; c++) {
      if (d->acked[c] || d->due[c] > t) continue;
      body_of(c, body);
      input_msg(f, 1, c, 0, "bob", body, MSIZE, t);
      d->due[c] = UINT64_MAX; /* until its answer */
      sent++;
    }
    if (d->bob_last > bob_acked && t % 1000 == 0) {
      input_ack(f, 2, d->bob_last, t);
      bob_acked = d->bob_last;
    }
    tern__rcore_tick(f->rc, t, WALL + t);
    tern__rcore_commit(f->rc, t);
    drain(f, d, t);
    /* Every message got its answer in the round it was sent in. */
    for (int i = 1; i <= NMSG; i++)
      cr_assert(d->acked[i] || d->due[i] != UINT64_MAX, "message %d got no answer", i);
    if (d->nacked == NMSG && d->ngot == NMSG && d->nreceipts == NMSG) {
      d->done_ms = t;
      return;
    }
  }
}

static void open_on_disk(fixture *f, logbook *book, tt_simdisk **disk, char *dirbuf, size_t cap) {
  cr_assert_eq(tern__test_mkdtemp(dirbuf, cap), 0);
  char path[4200];
  snprintf(path, sizeof(path), "%s/relay.db", dirbuf);
  *disk = tt_simdisk_new(path, 512 * 1024);
  cr_assert_not_null(*disk);
  tern__rstore_config sc = {.path = path, .synchronous = 1, .reserve_bytes = 96 * 1024,
                            .vfs = tt_simdisk_vfs(*disk), .disk_free = tt_simdisk_free_bytes,
                            .disk_ctx = *disk};
  open_logged(f, book, &sc);
  cr_assert_eq(tern__rstore_reserve_held(tern__relay_sqlite_engine(f->store)), 1);
  cr_assert_eq(tern__rcore_open(f->rc, 1, "alice", f->dev_a, 0), 0);
  cr_assert_eq(tern__rcore_open(f->rc, 2, "bob", f->dev_b, 0), 0);
  input_sync(f, 1, 0, 0);
  input_sync(f, 2, 0, 0);
  cr_assert_eq(tern__rcore_commit(f->rc, 0), 0);
  outputs o;
  take(f, 0, &o);
}

/* The livelock ternd_test.c found one run in three: a round of many
 * messages committed into the WAL; the checkpoint that should have moved
 * them into the database then failed for want of room, silently (SQLite
 * ignores a failed automatic checkpoint), and the next commit failed. The
 * reserve was given back, but the checkpoint needed more than it: the
 * committed WAL held more new pages than the reserve, and the database
 * cannot grow by them while the WAL still holds them. So no checkpoint
 * could finish, no commit could append to the WAL, bob's acks were never
 * written, nothing was deleted, and the relay answered BUSY for ever.
 * Every burst size must get through: all stored, once, delivered, with
 * their receipts, and no ack for anything not stored. */
static void full_disk_case(int burst) {
  fixture f;
  logbook book;
  tt_simdisk *disk;
  char d_dir[4096];
  open_on_disk(&f, &book, &disk, d_dir, sizeof(d_dir));
  static disk_run d;
  memset(&d, 0, sizeof(d));
  run_disk(&f, &d, burst, 120000);
  cr_assert_neq(d.done_ms, 0,
                "burst %d: not through in 120 s: %d stored, %d received, %d receipts, %llu BUSY "
                "since the last store at %llu ms; disk %llu bytes used; log:\n%s",
                burst, d.nacked, d.ngot, d.nreceipts, (unsigned long long)d.busy_after,
                (unsigned long long)d.last_ack_ms, (unsigned long long)tt_simdisk_used(disk),
                book.text);
  cr_assert_gt(tt_simdisk_refused(disk), 0, "burst %d: the disk did fill up", burst);
  cr_assert_gt(d.busy, 0, "burst %d: and the relay answered BUSY", burst);
  for (int i = 1; i <= NMSG; i++) cr_assert_eq(d.got[i], 1, "bob got %d once", i);
  uint64_t n;
  cr_assert_eq(f.store->ops->count(f.store, &n), 0);
  cr_assert_eq(n, 0, "everything bob acknowledged is deleted");
  tern__rcore_stats st;
  tern__rcore_get_stats(f.rc, &st);
  cr_assert_eq(st.stored, NMSG, "stored once each (%llu)", (unsigned long long)st.stored);
  cr_assert_eq(st.delivered, NMSG);
  close_fixture(&f);
  tt_simdisk_free(disk);
  tern__test_rmtree(d_dir);
}

Test(rcore, full_disk_recovers_after_a_big_round, .timeout = 120) {
  int bursts[] = {1, 3, 10, 45, 150};
  for (size_t i = 0; i < sizeof(bursts) / sizeof(*bursts); i++) full_disk_case(bursts[i]);
}

/* Issue 13, finding 4: a stalled device held up to 1,024 DELIVERs of up to
 * 64 KB each (64 MB a session) in the relay's link queues. The window is
 * in bytes too now. */
Test(rcore, one_stalled_session_holds_at_most_the_byte_window) {
  fixture f;
  open_fixture(&f, 0);
  tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0);
  tern__rcore_open(f.rc, 2, "bob", f.dev_b, 0);
  static uint8_t body[60000];
  memset(body, 'x', sizeof body);
  for (uint64_t i = 1; i <= 40; i++) input_msg(&f, 1, i, i - 1, "bob", body, sizeof body, 10);
  cr_assert_eq(tern__rcore_commit(f.rc, 10), 0);
  input_sync(&f, 2, 0, 20);
  cr_assert_eq(tern__rcore_commit(f.rc, 20), 0);
  outputs o;
  take(&f, 2, &o);
  /* 1 MiB of 60 KB DELIVERs: 17 (18 would be 1.08 MB). */
  cr_assert_eq(o.delivers, 17, "%d DELIVERs out to a device that acknowledges nothing", o.delivers);
  /* Nothing more while it stays silent, however long, but the same again
   * after resend_ms (from its cursor). */
  input_msg(&f, 1, 41, 40, "bob", body, sizeof body, 30);
  tern__rcore_commit(f.rc, 30);
  take(&f, 2, &o);
  cr_assert_eq(o.delivers, 0, "a new message went past the byte window");
  tern__rcore_tick(f.rc, 20 + 3000, WALL + 20 + 3000);
  tern__rcore_commit(f.rc, 20 + 3000);
  take(&f, 2, &o);
  cr_assert_eq(o.delivers, 17, "the resend from the cursor is the window again");
  cr_assert_eq(o.deliver_seq[0], 1);
  /* Acknowledging 10 opens room for 10 more. */
  input_ack(&f, 2, 10, 3100);
  tern__rcore_commit(f.rc, 3100);
  take(&f, 2, &o);
  cr_assert_eq(o.delivers, 10, "%d DELIVERs after 10 were acknowledged", o.delivers);
  cr_assert_eq(o.deliver_seq[0], 18);
  /* Everything arrives in the end. */
  for (uint64_t upto = 27, now = 3200; upto < 41; now += 100) {
    input_ack(&f, 2, upto, now);
    tern__rcore_commit(f.rc, now);
    take(&f, 2, &o);
    upto += (uint64_t)o.delivers;
    cr_assert(o.delivers > 0 || upto == 41, "stuck at %llu", (unsigned long long)upto);
  }
  close_fixture(&f);
}

Test(rcore, a_deliver_larger_than_the_byte_window_still_goes_out_alone) {
  tern__rcore_config cfg;
  tern__rcore_config_default(&cfg);
  cfg.deliver_window_bytes = 1000;
  fixture f;
  open_fixture_with(&f, 0, &cfg);
  tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0);
  tern__rcore_open(f.rc, 2, "bob", f.dev_b, 0);
  static uint8_t body[5000];
  memset(body, 'y', sizeof body);
  input_msg(&f, 1, 1, 0, "bob", body, sizeof body, 10);
  input_msg(&f, 1, 2, 1, "bob", "small", 5, 10);
  tern__rcore_commit(f.rc, 10);
  input_sync(&f, 2, 0, 20);
  tern__rcore_commit(f.rc, 20);
  outputs o;
  take(&f, 2, &o);
  cr_assert_eq(o.delivers, 1, "the big one alone (%d)", o.delivers);
  input_ack(&f, 2, 1, 30);
  tern__rcore_commit(f.rc, 30);
  take(&f, 2, &o);
  cr_assert_eq(o.delivers, 1);
  cr_assert_eq(o.deliver_seq[0], 2);
  close_fixture(&f);
}

/* Issue 13, finding 5: one account stored 1,500 x 65 KB (97 MB) for one
 * offline user in 8 s; nothing bounded what a sender could park. */
Test(rcore, one_account_cannot_park_more_than_its_quota) {
  tern__rcore_config cfg;
  tern__rcore_config_default(&cfg);
  cfg.quota_to_msgs = 10;
  cfg.quota_from_bytes = 3 * 60000;
  fixture f;
  open_fixture_with(&f, 0, &cfg);
  tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0);
  static uint8_t body[60000];
  memset(body, 'q', sizeof body);
  /* Bytes from one sender: 3 of 60 KB, the 4th (to anyone) is refused. */
  const char *to[] = {"bob", "carol", "dave", "erin"};
  outputs o;
  for (uint64_t i = 1; i <= 4; i++) {
    input_msg(&f, 1, i, 0, to[i - 1], body, sizeof body, 10);
    tern__rcore_commit(f.rc, 10);
    take(&f, 1, &o);
    if (i <= 3) {
      cr_assert_eq(o.acks, 1, "message %llu under the quota", (unsigned long long)i);
    } else {
      cr_assert_eq(o.acks, 0);
      cr_assert_eq(o.failed, 1, "over the sender's bytes");
      cr_assert_eq(o.failed_err, (uint64_t)-TERN_EQUOTA);
    }
  }
  /* Messages for one inbox: 10, then FAILED/TERN_EQUOTA, from anyone. */
  tern__rcore_open(f.rc, 2, "mallory", f.dev_b, 0);
  int acks = 0, over = 0;
  for (uint64_t i = 1; i <= 15; i++) {
    input_msg(&f, 2, i, 0, "bob", "x", 1, 20);
    tern__rcore_commit(f.rc, 20);
    take(&f, 2, &o);
    acks += o.acks;
    if (o.failed) {
      over++;
      cr_assert_eq(o.failed_err, (uint64_t)-TERN_EQUOTA);
    }
  }
  cr_assert_eq(acks, 9, "bob's inbox holds 10: alice's 1 and 9 of mallory's (%d acks)", acks);
  cr_assert_eq(over, 6);
  /* A resend of a stored one still gets its ack, not FAILED. */
  input_msg(&f, 2, 3, 0, "bob", "x", 1, 30);
  tern__rcore_commit(f.rc, 30);
  take(&f, 2, &o);
  cr_assert_eq(o.acks, 1);
  cr_assert_eq(o.failed, 0);
  tern__rcore_stats st;
  tern__rcore_get_stats(f.rc, &st);
  cr_assert_eq(st.over_quota, 7);
  /* bob reads his inbox: the room comes back. */
  uint8_t dev_bob[32];
  memset(dev_bob, 0xb0, sizeof dev_bob);
  tern__rcore_open(f.rc, 3, "bob", dev_bob, 40);
  input_sync(&f, 3, 0, 40);
  tern__rcore_commit(f.rc, 40);
  input_ack(&f, 3, 10, 50);
  tern__rcore_commit(f.rc, 50);
  input_msg(&f, 2, 100, 0, "bob", "x", 1, 60);
  tern__rcore_commit(f.rc, 60);
  take(&f, 2, &o);
  cr_assert_eq(o.acks, 1, "room again after bob read his inbox");
  close_fixture(&f);
}

/* A HELLO timestamp's round (handshake.md §6, "Freshness"): its ticket is
 * open until the round ends, 1 once committed, TERN_ESTORE if the commit
 * failed (the raise is gone: the same timestamp is fresh again). */
Test(rcore, hello_ticket_says_whether_its_round_was_committed) {
  fixture f;
  open_fixture(&f, 0);
  uint64_t t1 = 0, t2 = 0;
  cr_assert_eq(tern__rcore_hello_fresh(f.rc, f.dev_a, 1000, 0, &t1), 1);
  cr_assert_eq(tern__rcore_ticket(f.rc, t1), 0, "still open");
  cr_assert_eq(tern__rcore_hello_fresh(f.rc, f.dev_a, 1000, 0, &t2), 0, "a replay in the same round");
  cr_assert_eq(tern__rcore_commit(f.rc, 0), 0);
  cr_assert_eq(tern__rcore_ticket(f.rc, t1), 1);
  cr_assert_eq(tern__rcore_hello_fresh(f.rc, f.dev_a, 2000, 10, &t2), 1);
  f.store->ops->fault(f.store, TERN__RS_FAULT_COMMIT, 1);
  cr_assert_eq(tern__rcore_commit(f.rc, 10), TERN_ESTORE);
  cr_assert_eq(tern__rcore_ticket(f.rc, t2), TERN_ESTORE);
  cr_assert_eq(tern__rcore_ticket(f.rc, t1), 1, "an older round stays committed");
  cr_assert_eq(tern__rcore_hello_fresh(f.rc, f.dev_a, 2000, 20, &t2), 1, "the lost raise is gone");
  for (int i = 0; i < 70; i++) cr_assert_eq(tern__rcore_commit(f.rc, 30), 0);
  cr_assert_eq(tern__rcore_ticket(f.rc, t2), TERN_ESTORE, "too long ago to know");
  close_fixture(&f);
}

/* ---- the relay-wide delivery budget and the send rate (issue 13, item 3) -- */

#define NRCV 8

/* Every released output: DELIVERs and their bytes per connection (1..NRCV+1),
 * and the highest seq delivered to each. */
typedef struct all_out {
  int delivers[NRCV + 2];
  size_t bytes[NRCV + 2];
  uint64_t top[NRCV + 2];
} all_out;

static void take_all(fixture *f, all_out *o) {
  memset(o, 0, sizeof(*o));
  tern__rcore_out out;
  while (tern__rcore_next(f->rc, &out) == 1) {
    tern__rbuf r, body;
    tern__rbuf_init(&r, out.data, out.len);
    uint8_t type;
    size_t start = r.pos;
    while (tern__frame_next(&r, &type, &body) == 1) {
      if (type != TERN__FR_DELIVER || out.conn > NRCV + 1) {
        start = r.pos;
        continue;
      }
      tern__fr_msg m;
      cr_assert_eq(tern__fr_msg_read(&body, TERN__FR_DELIVER, &m), 0);
      o->delivers[out.conn]++;
      o->bytes[out.conn] += r.pos - start;
      if (m.seq > o->top[out.conn]) o->top[out.conn] = m.seq;
      start = r.pos;
    }
  }
}

enum { PER = 20 };              /* messages to each receiver */
static uint8_t big_body[60000]; /* 60 KB: 17 fill a 1 MiB window */

/* alice (conn 1) and NRCV receivers r2..r9 (conns 2..NRCV+1), synced and
 * acknowledging nothing; alice sends each PER messages of 60 KB at t=10,
 * and *o has what the core released for them. */
static void flood_receivers(fixture *f, const tern__rcore_config *cfg, all_out *o) {
  open_fixture_with(f, 0, cfg);
  char user[NRCV + 2][8];
  uint8_t dev[NRCV + 2][32];
  tern__rcore_open(f->rc, 1, "alice", f->dev_a, 0);
  for (int i = 2; i <= NRCV + 1; i++) {
    snprintf(user[i], sizeof user[i], "r%d", i);
    memset(dev[i], i, 32);
    cr_assert_eq(tern__rcore_open(f->rc, (uint64_t)i, user[i], dev[i], 0), 0);
    input_sync(f, (uint64_t)i, 0, 5);
  }
  tern__rcore_commit(f->rc, 5);
  take_all(f, o);
  memset(big_body, 'z', sizeof big_body);
  uint64_t cmid = 0;
  for (int k = 0; k < PER; k++) /* alice's conversation with r_i: cmids i-1, i-1+NRCV, ... */
    for (int i = 2; i <= NRCV + 1; i++, cmid++)
      input_msg(f, 1, cmid + 1, k ? cmid + 1 - NRCV : 0, user[i], big_body, sizeof big_body, 10);
  cr_assert_eq(tern__rcore_commit(f->rc, 10), 0);
  take_all(f, o);
}

/* Finding 4 with many keys: eight receivers that acknowledge nothing, each
 * within its own 1 MiB window, would hold 8 MiB; the relay-wide budget (3
 * MiB here) holds them all to it, plus one DELIVER for each session that had
 * none in flight (so that none starves). Acks free room, and everything
 * arrives in the end. */
Test(rcore, stalled_receivers_of_many_keys_hold_at_most_the_relay_budget) {
  tern__rcore_config cfg;
  tern__rcore_config_default(&cfg);
  cfg.deliver_budget_bytes = 3u << 20;
  fixture f;
  all_out o;
  flood_receivers(&f, &cfg, &o);
  size_t total = 0;
  for (int i = 2; i <= NRCV + 1; i++) {
    total += o.bytes[i];
    cr_assert(o.delivers[i] >= 1, "receiver %d starved: no DELIVER at all", i);
  }
  size_t one = sizeof big_body + 64;
  cr_assert(total <= cfg.deliver_budget_bytes + NRCV * one,
            "%zu bytes of DELIVERs unacknowledged, budget %llu", total,
            (unsigned long long)cfg.deliver_budget_bytes);
  tern__rcore_stats st;
  tern__rcore_get_stats(f.rc, &st);
  cr_assert_eq(st.deliver_bytes, total, "the gauge says %llu, %zu went out",
               (unsigned long long)st.deliver_bytes, total);
  cr_assert(st.budget_stalls > 0);
  /* However long they stay silent, nothing more (the resends from each
   * cursor are the same DELIVERs again, within the budget). */
  tern__rcore_tick(f.rc, 1000, WALL + 1000);
  tern__rcore_commit(f.rc, 1000);
  take_all(&f, &o);
  for (int i = 2; i <= NRCV + 1; i++) cr_assert_eq(o.delivers[i], 0, "receiver %d got more while silent", i);
  /* They acknowledge what they have, and the rest follows, each message
   * once per round of acks, until all are there. */
  uint64_t have[NRCV + 2] = {0}; /* highest seq each receiver was sent */
  uint64_t upto[NRCV + 2] = {0}; /* ... and acknowledged */
  /* After resend_ms the same DELIVERs go again, from each cursor: what
   * each receiver has in hand from then on. */
  tern__rcore_tick(f.rc, 1000 + 3000, WALL + 4000);
  tern__rcore_commit(f.rc, 4000);
  take_all(&f, &o); /* the resend from each cursor */
  for (int i = 2; i <= NRCV + 1; i++) have[i] = o.top[i];
  uint64_t now = 4100;
  for (int round = 0; round < 200; round++, now += 10) {
    int done = 1;
    for (int i = 2; i <= NRCV + 1; i++) {
      if (have[i] > upto[i]) {
        input_seqlist(&f, TERN__FR_DELIVERY_ACK, (uint64_t)i, have[i], now);
        upto[i] = have[i];
      }
      if (upto[i] < PER) done = 0;
    }
    tern__rcore_tick(f.rc, now, WALL + now);
    tern__rcore_commit(f.rc, now);
    take_all(&f, &o);
    for (int i = 2; i <= NRCV + 1; i++)
      if (o.top[i] > have[i]) have[i] = o.top[i];
    tern__rcore_get_stats(f.rc, &st);
    cr_assert(st.deliver_bytes <= cfg.deliver_budget_bytes + NRCV * one, "over the budget: %llu",
              (unsigned long long)st.deliver_bytes);
    if (done) break;
  }
  for (int i = 2; i <= NRCV + 1; i++)
    cr_assert_eq(upto[i], (uint64_t)PER, "receiver %d has %llu of %d", i, (unsigned long long)upto[i], PER);
  close_fixture(&f);
}

/* Without the budget (0) the same receivers take their whole windows: the
 * bound above is the budget's doing. */
Test(rcore, without_a_budget_each_stalled_receiver_takes_its_window) {
  tern__rcore_config cfg;
  tern__rcore_config_default(&cfg);
  cfg.deliver_budget_bytes = 0;
  fixture f;
  all_out o;
  flood_receivers(&f, &cfg, &o);
  for (int i = 2; i <= NRCV + 1; i++) cr_assert_eq(o.delivers[i], 17);
  close_fixture(&f);
}

/* A device over its send rate gets BUSY with TERN_ERATE, keeps its message
 * and has it stored when it sends again after the bucket refilled; a
 * refused message takes no token. */
Test(rcore, a_device_past_its_send_rate_gets_busy_with_erate) {
  tern__rcore_config cfg;
  tern__rcore_config_default(&cfg);
  cfg.send_rate_msgs = 10; /* bursts of 100 */
  fixture f;
  open_fixture_with(&f, 0, &cfg);
  tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0);
  tern__rcore_open(f.rc, 2, "bob", f.dev_b, 0);
  for (uint64_t i = 1; i <= 150; i++) input_msg(&f, 1, i, i - 1, "bob", "hi", 2, 10);
  tern__rcore_commit(f.rc, 10);
  outputs o;
  take(&f, 1, &o);
  /* 100 within the burst, one more on the last token's credit. */
  cr_assert_eq(o.acks, 101, "%d stored", o.acks);
  cr_assert_eq(o.busy, 49, "%d BUSY", o.busy);
  cr_assert_eq(o.busy_err, (uint64_t)-TERN_ERATE);
  tern__rcore_stats st;
  tern__rcore_get_stats(f.rc, &st);
  cr_assert_eq(st.over_rate, 49);
  /* 5 s later the bucket holds 50 - 1: the client's retry of 102..150 fits. */
  for (uint64_t i = 102; i <= 150; i++) input_msg(&f, 1, i, i - 1, "bob", "hi", 2, 5010);
  tern__rcore_commit(f.rc, 5010);
  take(&f, 1, &o);
  cr_assert_eq(o.acks, 49, "%d stored on the retry", o.acks);
  cr_assert_eq(o.busy, 0);
  close_fixture(&f);
}

/* The byte rate: 100 KB/s (bursts of 1 MB) lets 17 messages of 60 KB
 * through, then BUSY, and ephemeral messages past it are dropped. */
Test(rcore, the_byte_rate_holds_big_messages_and_drops_ephemeral_ones) {
  tern__rcore_config cfg;
  tern__rcore_config_default(&cfg);
  cfg.send_rate_bytes = 100000;
  fixture f;
  open_fixture_with(&f, 0, &cfg);
  tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0);
  tern__rcore_open(f.rc, 2, "bob", f.dev_b, 0);
  input_sync(&f, 2, 0, 5);
  tern__rcore_commit(f.rc, 5);
  outputs o;
  take(&f, 2, &o);
  static uint8_t body[60000];
  for (uint64_t i = 1; i <= 20; i++) input_msg(&f, 1, i, i - 1, "bob", body, sizeof body, 10);
  tern__rcore_commit(f.rc, 10);
  take(&f, 1, &o);
  cr_assert_eq(o.acks, 17, "%d stored", o.acks);
  cr_assert_eq(o.busy, 3);
  /* An ephemeral message now: over the rate, dropped, counted. */
  uint8_t buf[128];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_msg m = {.peer = (const uint8_t *)"bob", .peer_len = 3, .flags = TERN__MSGF_EPHEMERAL,
                    .body = (const uint8_t *)"typing", .body_len = 6};
  tern__fr_msg_write(&w, TERN__FR_MSG, &m);
  cr_assert_eq(tern__rcore_input(f.rc, 1, buf, w.len, 20, WALL + 20), 0);
  tern__rcore_commit(f.rc, 20);
  tern__rcore_stats st;
  tern__rcore_get_stats(f.rc, &st);
  cr_assert_eq(st.over_rate, 4);
  close_fixture(&f);
}

/* A resend from the cursor does not take back what ENet still holds of the
 * first sending (a peer that stopped answering at all): what the link
 * reports holding counts against the budget too, and when it falls the
 * waiting session goes on at once. */
Test(rcore, what_the_link_still_holds_counts_against_the_budget) {
  tern__rcore_config cfg;
  tern__rcore_config_default(&cfg);
  cfg.deliver_budget_bytes = 2u << 20;
  fixture f;
  open_fixture_with(&f, 0, &cfg);
  tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0);
  tern__rcore_open(f.rc, 2, "bob", f.dev_b, 0);
  memset(big_body, 'l', sizeof big_body);
  for (uint64_t i = 1; i <= 40; i++) input_msg(&f, 1, i, i - 1, "bob", big_body, sizeof big_body, 10);
  tern__rcore_commit(f.rc, 10);
  input_sync(&f, 2, 0, 20);
  tern__rcore_commit(f.rc, 20);
  outputs o;
  take(&f, 2, &o);
  cr_assert_eq(o.delivers, 17);
  /* The link holds 3 MiB (say, two sendings of the window to a peer whose
   * ENet went silent): an ack makes room in the core's count, but nothing
   * more goes out. */
  tern__rcore_set_link_bytes(f.rc, 3u << 20);
  input_ack(&f, 2, 10, 100);
  tern__rcore_commit(f.rc, 100);
  take(&f, 2, &o);
  cr_assert_eq(o.delivers, 0, "%d DELIVERs while the link holds more than the budget", o.delivers);
  tern__rcore_tick(f.rc, 100, WALL + 100); /* (the first expiry sweep, too) */
  tern__rcore_commit(f.rc, 100);
  take(&f, 2, &o);
  cr_assert_eq(o.delivers, 0, "the timer sent %d past the budget", o.delivers);
  cr_assert_neq(tern__rcore_timeout(f.rc, 100), 0, "no busy loop while there is no room");
  /* ENet let go of them: the session is pumped by the timer. */
  tern__rcore_set_link_bytes(f.rc, 0);
  cr_assert_eq(tern__rcore_timeout(f.rc, 110), 0);
  tern__rcore_tick(f.rc, 110, WALL + 110);
  tern__rcore_commit(f.rc, 110);
  take(&f, 2, &o);
  cr_assert_eq(o.delivers, 10, "%d DELIVERs once the link had room", o.delivers);
  cr_assert_eq(o.deliver_seq[0], 18);
  close_fixture(&f);
}

/* ---- presence and typing (issue 14, item 5) -------------------------------- */

/* Who may see whom: everyone but carol, who sees and is seen by nobody. */
static int see_all_but_carol(void *ctx, const char *watcher, const char *user) {
  (void)ctx;
  return strcmp(watcher, "carol") && strcmp(user, "carol");
}

typedef struct presences {
  int n;
  char user[8][TERN_USER_MAX + 1];
  int online[8];
  uint64_t since[8];
} presences;

/* The PRESENCE frames released, per connection id (0..7; the rest is
 * dropped). */
static void take_presence_all(fixture *f, presences by_conn[8]) {
  memset(by_conn, 0, 8 * sizeof(*by_conn));
  tern__rcore_out out;
  while (tern__rcore_next(f->rc, &out) == 1) {
    tern__rbuf r, body;
    tern__rbuf_init(&r, out.data, out.len);
    uint8_t type;
    while (tern__frame_next(&r, &type, &body) == 1) {
      if (type != TERN__FR_PRESENCE || out.conn >= 8) continue;
      cr_assert_eq(out.reliable, 0, "presence goes unreliably");
      tern__fr_presence fp;
      cr_assert_eq(tern__fr_presence_read(&body, &fp), 0);
      presences *p = &by_conn[out.conn];
      if (p->n < 8) {
        memcpy(p->user[p->n], fp.user, fp.user_len);
        p->online[p->n] = (int)fp.online;
        p->since[p->n] = fp.since_ms;
      }
      p->n++;
    }
  }
}

static void take_presence(fixture *f, uint64_t conn, presences *p) {
  presences all[8];
  take_presence_all(f, all);
  *p = all[conn];
}

static void open_synced(fixture *f, uint64_t id, const char *user, uint8_t fill, uint64_t now) {
  uint8_t dev[32];
  memset(dev, fill, sizeof dev);
  cr_assert_eq(tern__rcore_open(f->rc, id, user, dev, now), 0);
  input_sync(f, id, 0, now);
  tern__rcore_commit(f->rc, now);
}

Test(rcore, contacts_learn_who_is_online_and_when_they_were_last_seen) {
  tern__rcore_config cfg;
  tern__rcore_config_default(&cfg);
  cfg.may_see = see_all_but_carol;
  fixture f;
  open_fixture_with(&f, 0, &cfg);
  presences p;
  open_synced(&f, 1, "alice", 0xa1, 100);
  take_presence(&f, 1, &p);
  cr_assert_eq(p.n, 0, "alice alone: nobody to tell about");
  /* bob comes: alice is told he is online; bob learns alice is. */
  open_synced(&f, 2, "bob", 0xb1, 200);
  presences all[8];
  take_presence_all(&f, all);
  presences pa = all[1], pb = all[2];
  cr_assert_eq(pa.n, 1);
  cr_assert_str_eq(pa.user[0], "bob");
  cr_assert_eq(pa.online[0], 1);
  cr_assert_eq(pa.since[0], WALL + 200);
  cr_assert_eq(pb.n, 1);
  cr_assert_str_eq(pb.user[0], "alice");
  cr_assert_eq(pb.since[0], WALL + 100);
  /* carol comes and goes: nobody hears of her, she hears of nobody. */
  open_synced(&f, 3, "carol", 0xc1, 300);
  take_presence(&f, 3, &p);
  cr_assert_eq(p.n, 0, "carol was told about %d users", p.n);
  tern__rcore_close(f.rc, 3);
  take_presence(&f, 1, &p);
  cr_assert_eq(p.n, 0, "alice was told about carol");
  /* bob's second device changes nothing; his last session going does. */
  open_synced(&f, 4, "bob", 0xb2, 2000);
  take_presence(&f, 1, &p);
  cr_assert_eq(p.n, 0, "a second device of bob is no news");
  tern__rcore_close(f.rc, 2);
  take_presence(&f, 1, &p);
  cr_assert_eq(p.n, 0, "bob still has a session");
  input_sync(&f, 1, 0, 2500); /* (the core's clock) */
  tern__rcore_close(f.rc, 4);
  take_presence(&f, 1, &p);
  cr_assert_eq(p.n, 1);
  cr_assert_eq(p.online[0], 0);
  cr_assert_eq(p.since[0], WALL + 2500, "last seen %llu", (unsigned long long)p.since[0]);
  /* dave connects later: he learns alice is online and bob was last seen then. */
  open_synced(&f, 5, "dave", 0xd1, 3000);
  take_presence(&f, 5, &p);
  cr_assert_eq(p.n, 2, "dave was told about %d users", p.n);
  int bob = strcmp(p.user[0], "bob") == 0 ? 0 : 1;
  cr_assert_str_eq(p.user[bob], "bob");
  cr_assert_eq(p.online[bob], 0);
  cr_assert_eq(p.since[bob], WALL + 2500);
  cr_assert_eq(p.online[1 - bob], 1);
  close_fixture(&f);
}

/* A user whose sessions flap is told at most once per presence_min_ms,
 * with the state it has then; a flap back within it is no news at all. */
Test(rcore, presence_of_a_flapping_user_is_paced) {
  tern__rcore_config cfg;
  tern__rcore_config_default(&cfg);
  cfg.may_see = see_all_but_carol;
  fixture f;
  open_fixture_with(&f, 0, &cfg);
  presences p;
  open_synced(&f, 1, "alice", 0xa1, 100);
  open_synced(&f, 2, "bob", 0xb1, 200);
  take_presence(&f, 1, &p);
  cr_assert_eq(p.n, 1); /* bob online, at 200 */
  /* Gone at 300 and back at 400: within the second, nothing. */
  tern__rcore_close(f.rc, 2);
  open_synced(&f, 3, "bob", 0xb1, 400);
  take_presence(&f, 1, &p);
  cr_assert_eq(p.n, 0, "a flap within the second told alice %d times", p.n);
  tern__rcore_tick(f.rc, 1300, WALL + 1300);
  take_presence(&f, 1, &p);
  cr_assert_eq(p.n, 0, "nothing changed in the end");
  /* Gone at 1500 (told at once: the last change was at 200) ... */
  input_sync(&f, 1, 0, 1500);
  tern__rcore_close(f.rc, 3);
  take_presence(&f, 1, &p);
  cr_assert_eq(p.n, 1);
  cr_assert_eq(p.online[0], 0);
  /* ... back at 1600: held until 2500, then told. */
  open_synced(&f, 4, "bob", 0xb1, 1600);
  take_presence(&f, 1, &p);
  cr_assert_eq(p.n, 0, "told within the second");
  cr_assert_eq(tern__rcore_timeout(f.rc, 1600) <= 900, 1, "the timer is set for the held change");
  tern__rcore_tick(f.rc, 2500, WALL + 2500);
  take_presence(&f, 1, &p);
  cr_assert_eq(p.n, 1);
  cr_assert_eq(p.online[0], 1);
  close_fixture(&f);
}

/* Typing indicators and other ephemeral messages: 20 a second per session,
 * in bursts of 40; the rest are dropped (best effort), counted. */
Test(rcore, typing_is_rate_limited) {
  fixture f;
  open_fixture(&f, 0);
  tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0);
  open_synced(&f, 2, "bob", 0xbb, 0);
  outputs o;
  take(&f, 2, &o);
  uint8_t buf[128];
  tern__wbuf w;
  int got = 0;
  for (int i = 0; i < 100; i++) {
    tern__wbuf_init(&w, buf, sizeof buf);
    tern__fr_msg m = {.peer = (const uint8_t *)"bob", .peer_len = 3, .flags = TERN__MSGF_EPHEMERAL,
                      .body = (const uint8_t *)"typing", .body_len = 6};
    tern__fr_msg_write(&w, TERN__FR_MSG, &m);
    cr_assert_eq(tern__rcore_input(f.rc, 1, buf, w.len, 10, WALL + 10), 0);
  }
  tern__rcore_commit(f.rc, 10);
  take(&f, 2, &o);
  got = o.delivers;
  cr_assert_eq(got, 40, "%d of 100 typing messages in one instant went through", got);
  tern__rcore_stats st;
  tern__rcore_get_stats(f.rc, &st);
  cr_assert_eq(st.over_rate, 60);
  close_fixture(&f);
}

static void input_settled(fixture *f, uint64_t conn, uint64_t below, uint64_t now) {
  uint8_t buf[16];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof(buf));
  tern__fr_u64_write(&w, TERN__FR_SETTLED, below);
  cr_assert_eq(tern__rcore_input(f->rc, conn, buf, w.len, now, WALL + now), 0);
}

/* SETTLED (spec/messages.md §2, "Dedup"): the dedup rows below the floor
 * go, and what can no longer be deduplicated is never stored again: a MSG
 * below the floor (a stale copy) is dropped without an answer, on this
 * session and on the device's next one; a MSG naming a predecessor below
 * the floor is not held back for it. */
Test(rcore, a_msg_below_the_settled_floor_is_never_stored_again) {
  fixture f;
  open_fixture(&f, 0);
  cr_assert_eq(tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0), 0);
  input_msg(&f, 1, 10, 0, "bob", "one", 3, 10);
  input_msg(&f, 1, 11, 10, "bob", "two", 3, 10);
  cr_assert_eq(tern__rcore_commit(f.rc, 10), 0);
  outputs o;
  take(&f, 1, &o);
  cr_assert_eq(o.acks, 2);
  input_settled(&f, 1, 12, 20);
  cr_assert_eq(tern__rcore_commit(f.rc, 20), 0);

  input_msg(&f, 1, 11, 10, "bob", "two", 3, 30); /* a stale copy */
  input_msg(&f, 1, 12, 11, "bob", "three", 5, 30); /* its predecessor is settled */
  cr_assert_eq(tern__rcore_commit(f.rc, 30), 0);
  take(&f, 1, &o);
  cr_assert_eq(o.acks, 1, "the stale copy gets no answer; the next one is stored");
  cr_assert_eq(o.ack_cmid[0], 12);
  cr_assert_eq(o.ack_seq[0], 3);
  uint64_t n;
  cr_assert_eq(f.store->ops->count(f.store, &n), 0);
  cr_assert_eq(n, 3, "nothing stored twice");

  /* The device's next session knows the floor from the store. */
  tern__rcore_close(f.rc, 1);
  cr_assert_eq(tern__rcore_open(f.rc, 2, "alice", f.dev_a, 40), 0);
  input_msg(&f, 2, 10, 0, "bob", "one", 3, 40);
  cr_assert_eq(tern__rcore_commit(f.rc, 40), 0);
  take(&f, 2, &o);
  cr_assert_eq(o.acks, 0);
  cr_assert_eq(f.store->ops->count(f.store, &n), 0);
  cr_assert_eq(n, 3);
  tern__rcore_stats st;
  tern__rcore_get_stats(f.rc, &st);
  cr_assert_eq(st.stale_msgs, 2);
  close_fixture(&f);
}

/* ---- groups (spec/messages.md §14) ---- */

typedef struct gout {
  int delivers, own, floors, greceipts, failed;
  uint64_t seq[16];
  char body[16][16], to[16][16];
  uint64_t floor_at, got, of, failed_err;
} gout;

/* Takes every released output, for conns 1..3 (o[conn]). */
static void take_groups(fixture *f, gout o[4]) {
  memset(o, 0, 4 * sizeof(*o));
  tern__rcore_out out;
  while (tern__rcore_next(f->rc, &out) == 1) {
    cr_assert_lt(out.conn, 4);
    gout *g = &o[out.conn];
    tern__rbuf r, body;
    tern__rbuf_init(&r, out.data, out.len);
    uint8_t type;
    while (tern__frame_next(&r, &type, &body) == 1) {
      if (type == TERN__FR_DELIVER) {
        tern__fr_msg m;
        cr_assert_eq(tern__fr_msg_read(&body, TERN__FR_DELIVER, &m), 0);
        if (!(m.flags & TERN__MSGF_GROUP)) continue;
        if (m.flags & TERN__MSGF_OWN) g->own++;
        int i = g->delivers++;
        if (i < 16) {
          g->seq[i] = m.seq;
          snprintf(g->body[i], sizeof g->body[i], "%.*s", (int)m.body_len, (const char *)m.body);
          snprintf(g->to[i], sizeof g->to[i], "%.*s", (int)m.to_len, (const char *)m.to);
        }
      } else if (type == TERN__FR_GROUP_FLOOR) {
        tern__fr_gack ga;
        cr_assert_eq(tern__fr_gack_read(&body, type, &ga), 0);
        g->floors++;
        g->floor_at = ga.list.last;
      } else if (type == TERN__FR_GROUP_RECEIPT) {
        tern__fr_greceipt gr;
        cr_assert_eq(tern__fr_greceipt_read(&body, &gr), 0);
        g->greceipts++;
        g->got = gr.got;
        g->of = gr.of;
      } else if (type == TERN__FR_FAILED) {
        tern__fr_failed fl;
        cr_assert_eq(tern__fr_failed_read(&body, &fl), 0);
        g->failed++;
        g->failed_err = fl.error;
      }
    }
  }
}

static void input_gack(fixture *f, uint64_t conn, const char *group, uint64_t last, uint64_t now) {
  uint8_t buf[128];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof(buf));
  tern__fr_gack g = {.group = (const uint8_t *)group, .group_len = strlen(group), .list = {.last = last}};
  tern__fr_gack_write(&w, TERN__FR_GROUP_ACK, &g);
  cr_assert_eq(tern__rcore_input(f->rc, conn, buf, w.len, now, WALL + now), 0);
}

Test(rcore, a_group_message_reaches_every_member_session_and_counts_its_members) {
  fixture f;
  open_fixture(&f, 0);
  uint8_t dev_c[32];
  memset(dev_c, 0xcc, 32);
  cr_assert_eq(tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0), 0);
  cr_assert_eq(tern__rcore_open(f.rc, 2, "bob", f.dev_b, 0), 0);
  cr_assert_eq(tern__rcore_open(f.rc, 3, "carol", dev_c, 0), 0);
  const char *ab[] = {"alice", "bob"};
  uint64_t point;
  cr_assert_eq(tern__rcore_group_set(f.rc, "@team", ab, 2, 0, &point), 0);
  for (uint64_t id = 1; id <= 3; id++) input_sync(&f, id, 0, 1);
  cr_assert_eq(tern__rcore_commit(f.rc, 1), 0);
  gout o[4];
  take_groups(&f, o);
  cr_assert_eq(o[1].floors, 1, "alice is told where @team starts for her");
  cr_assert_eq(o[3].floors, 0, "carol is not in @team");

  input_msg(&f, 1, 10, 0, "@team", "hi team", 7, 10);
  input_msg(&f, 3, 20, 0, "@team", "let me in", 9, 10);
  input_msg(&f, 3, 21, 0, "@nobody", "hello?", 6, 10);
  cr_assert_eq(tern__rcore_commit(f.rc, 10), 0);
  take_groups(&f, o);
  cr_assert_eq(o[3].failed, 2);
  cr_assert_eq(o[2].delivers, 1);
  cr_assert_str_eq(o[2].body[0], "hi team");
  cr_assert_str_eq(o[2].to[0], "@team");
  cr_assert_eq(o[2].seq[0], 1, "the group's own sequence");
  cr_assert_eq(o[1].delivers, 1, "the sender's device gets its place");
  cr_assert_eq(o[1].own, 1);
  cr_assert_str_eq(o[1].body[0], "", "without the body");
  uint64_t n;
  cr_assert_eq(f.store->ops->count(f.store, &n), 0);
  cr_assert_eq(n, 1, "stored once");

  input_gack(&f, 2, "@team", 1, 20);
  cr_assert_eq(tern__rcore_commit(f.rc, 20), 0);
  take_groups(&f, o);
  cr_assert_eq(o[1].greceipts, 1, "alice learns that 1 of 1 other members has it");
  cr_assert_eq(o[1].got, 1);
  cr_assert_eq(o[1].of, 1);
  close_fixture(&f);
}

Test(rcore, membership_changes_reach_live_sessions_at_the_point) {
  fixture f;
  open_fixture(&f, 0);
  uint8_t dev_c[32];
  memset(dev_c, 0xcc, 32);
  cr_assert_eq(tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0), 0);
  cr_assert_eq(tern__rcore_open(f.rc, 2, "bob", f.dev_b, 0), 0);
  cr_assert_eq(tern__rcore_open(f.rc, 3, "carol", dev_c, 0), 0);
  const char *ab[] = {"alice", "bob"};
  cr_assert_eq(tern__rcore_group_set(f.rc, "@g", ab, 2, 0, NULL), 0);
  for (uint64_t id = 1; id <= 3; id++) input_sync(&f, id, 0, 1);
  input_msg(&f, 1, 1, 0, "@g", "one", 3, 5);
  cr_assert_eq(tern__rcore_commit(f.rc, 5), 0);
  gout o[4];
  take_groups(&f, o);
  cr_assert_eq(o[2].delivers, 1);
  /* bob out, carol in: after seq 1. */
  const char *ac[] = {"alice", "carol"};
  uint64_t point;
  cr_assert_eq(tern__rcore_group_set(f.rc, "@g", ac, 2, 10, &point), 0);
  cr_assert_eq(point, 1);
  input_msg(&f, 1, 2, 1, "@g", "two", 3, 10);
  cr_assert_eq(tern__rcore_commit(f.rc, 10), 0);
  take_groups(&f, o);
  cr_assert_eq(o[2].delivers, 0, "bob gets nothing after the point");
  cr_assert_eq(o[3].floors, 1);
  cr_assert_eq(o[3].floor_at, 1, "carol's group starts after the point");
  cr_assert_eq(o[3].delivers, 1);
  cr_assert_str_eq(o[3].body[0], "two");
  cr_assert_eq(o[3].seq[0], 2);
  close_fixture(&f);
}

/* A member removed and added again while its session stays up goes on
 * getting the group, from the new point, without reconnecting. */
Test(rcore, a_member_added_back_while_online_gets_what_follows) {
  fixture f;
  open_fixture(&f, 0);
  cr_assert_eq(tern__rcore_open(f.rc, 1, "alice", f.dev_a, 0), 0);
  cr_assert_eq(tern__rcore_open(f.rc, 2, "bob", f.dev_b, 0), 0);
  const char *ab[] = {"alice", "bob"}, *a[] = {"alice"};
  cr_assert_eq(tern__rcore_group_set(f.rc, "@g", ab, 2, 0, NULL), 0);
  for (uint64_t id = 1; id <= 2; id++) input_sync(&f, id, 0, 1);
  input_msg(&f, 1, 1, 0, "@g", "one", 3, 5);
  cr_assert_eq(tern__rcore_commit(f.rc, 5), 0);
  input_gack(&f, 2, "@g", 1, 6);
  cr_assert_eq(tern__rcore_commit(f.rc, 6), 0);
  cr_assert_eq(tern__rcore_group_set(f.rc, "@g", a, 1, 10, NULL), 0);
  input_msg(&f, 1, 2, 1, "@g", "two", 3, 11);
  cr_assert_eq(tern__rcore_commit(f.rc, 11), 0);
  cr_assert_eq(tern__rcore_group_set(f.rc, "@g", ab, 2, 20, NULL), 0);
  input_msg(&f, 1, 3, 2, "@g", "three", 5, 21);
  cr_assert_eq(tern__rcore_commit(f.rc, 21), 0);
  gout o[4];
  take_groups(&f, o);
  int saw_three = 0, saw_two = 0;
  for (int i = 0; i < o[2].delivers && i < 16; i++) {
    saw_three |= !strcmp(o[2].body[i], "three");
    saw_two |= !strcmp(o[2].body[i], "two");
  }
  cr_assert(saw_three, "bob, back in, gets what follows");
  cr_assert(!saw_two, "nothing from while he was out");
  close_fixture(&f);
}
