/*
 * The relay store interface (lib/store/relay_store.h), the same cases on
 * every backend: what the relay core relies on, whatever keeps the data.
 * The SQLite engine's own cases (schema, full disk, reserve) are in
 * rstore_test.c.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>
#include <stdlib.h>
#include <unistd.h>

#include "store/relay_store.h"
#include "store/rstore.h"
#include "tern_test.h"
#ifdef TERN_HAVE_CLUSTER
#include "cluster/relay_nats.h"
#endif

typedef struct backend {
  char name[8]; /* inline: criterion may hand parameters to a new process */
} backend;

static tern__relay_store *open_backend(const backend *b) {
  tern__relay_store *s = NULL;
#ifdef TERN_HAVE_CLUSTER
  if (!strcmp(b->name, "nats")) {
    /* A stream of its own per case, on the server cluster_store_test.sh
     * started. */
    char url[256], err[512];
    snprintf(url, sizeof url, "%s?stream=T%08x%08x", getenv("TERN_TEST_NATS_URL"),
             (unsigned)getpid(), (unsigned)randombytes_random());
    tern__nats_config nc = {.url = url};
    cr_assert_eq(tern__relay_nats_open(&s, &nc, err, sizeof err), 0, "%s", err);
    return s;
  }
#endif
  if (!strcmp(b->name, "memory")) {
    cr_assert_eq(tern__relay_mem_open(&s), 0);
  } else {
    char err[128];
    tern__rstore_config sc = {.path = ":memory:", .synchronous = 1};
    cr_assert_eq(tern__relay_sqlite_open(&s, &sc, NULL, NULL, err, sizeof err), 0, "%s", err);
  }
  return s;
}

static backend backends[] = {{"sqlite"}, {"memory"}};
static backend cluster[] = {{"nats"}};

/* A test that runs once per backend, with `b` naming it; with
 * TERN_TEST_NATS_URL set (tests/cluster_store_test.sh), on the cluster
 * store instead. */
#define STORE_TEST(name)                                                    \
  ParameterizedTestParameters(store, name) {                               \
    if (getenv("TERN_TEST_NATS_URL")) return cr_make_param_array(backend, cluster, 1); \
    return cr_make_param_array(backend, backends, 2);                      \
  }                                                                         \
  ParameterizedTest(backend *b, store, name)

static const uint8_t DEV_A[32] = {0xaa}, DEV_B[32] = {0xbb}, DEV_B2[32] = {0xb2};

static tern__rs_put msg(const char *from, const uint8_t *dev, const char *to, uint64_t cmid,
                        uint64_t prev_cmid, uint64_t ts, const char *body) {
  tern__rs_put p = {.to = to, .from = from, .sender_dev = dev, .cmid = cmid, .prev_cmid = prev_cmid,
                    .ts = ts, .body = (const uint8_t *)body, .body_len = strlen(body)};
  return p;
}

/* Collects what due() hands out. */
typedef struct seen {
  int n;
  uint64_t seq[16], prev[16], cmid[16];
  char body[16][16];
} seen;

static int see(void *ctx, const tern__rmsg *m) {
  seen *s = ctx;
  s->seq[s->n] = m->seq;
  s->prev[s->n] = m->prev_seq;
  s->cmid[s->n] = m->cmid;
  snprintf(s->body[s->n], sizeof s->body[0], "%.*s", (int)m->body_len, (const char *)m->body);
  s->n++;
  return 0;
}

typedef struct told {
  int n;
  uint64_t cmid[16];
} told;

static void on_delivered(void *ctx, const uint8_t dev[32], uint64_t cmid, uint64_t seq) {
  (void)dev, (void)seq;
  told *t = ctx;
  t->cmid[t->n++] = cmid;
}

static int count_notice(void *ctx, int kind, uint64_t cmid, int64_t code) {
  (void)kind, (void)cmid, (void)code;
  (*(int *)ctx)++;
  return 0;
}

static void on_expired(void *ctx, const uint8_t dev[32], uint64_t cmid) {
  (void)dev;
  told *t = ctx;
  t->cmid[t->n++] = cmid;
}

STORE_TEST(put_orders_dedups_and_links) {
  tern__relay_store *s = open_backend(b);
  tern__rs_put batch[4] = {
      msg("alice", DEV_A, "bob", 10, 0, 1000, "one"),
      msg("carol", DEV_B, "bob", 20, 0, 1001, "two"),
      msg("alice", DEV_A, "bob", 11, 10, 1002, "three"), /* depends on the first, same batch */
      msg("alice", DEV_A, "bob", 13, 12, 1003, "lost"),  /* 12 was never stored */
  };
  cr_assert_eq(s->ops->room(s, 5), TERN__RS_ROOM);
  cr_assert_eq(s->ops->put(s, batch, 4), 0);
  cr_assert_eq(batch[0].result, TERN__RS_STORED);
  cr_assert_eq(batch[0].seq, 1);
  cr_assert_eq(batch[0].prev_seq, 0);
  cr_assert_eq(batch[1].seq, 2, "seqs are per inbox and gap-free");
  cr_assert_eq(batch[2].result, TERN__RS_STORED);
  cr_assert_eq(batch[2].seq, 3);
  cr_assert_eq(batch[2].prev_seq, 1, "linked to alice's previous message in bob's inbox");
  cr_assert_eq(batch[3].result, TERN__RS_NO_PREV);
  cr_assert_eq(s->ops->commit(s, 0), 0);

  tern__rs_put again = msg("alice", DEV_A, "bob", 10, 0, 5000, "one");
  cr_assert_eq(s->ops->put(s, &again, 1), 0);
  cr_assert_eq(again.result, TERN__RS_EARLIER, "a resend is answered, not stored");
  cr_assert_eq(again.seq, 1);
  cr_assert_eq(again.stored_ts, 1000, "with the first one's time");
  tern__rs_put other = msg("dave", DEV_B2, "erin", 10, 0, 5000, "x");
  cr_assert_eq(s->ops->put(s, &other, 1), 0);
  cr_assert_eq(other.seq, 1, "another inbox counts from 1");
  cr_assert_eq(s->ops->commit(s, 0), 0);

  seen got = {0};
  cr_assert_eq(s->ops->due(s, "bob", 0, 10, see, &got), 3);
  cr_assert_eq(got.seq[0], 1);
  cr_assert_str_eq(got.body[1], "two");
  cr_assert_eq(got.prev[2], 1);
  memset(&got, 0, sizeof got);
  cr_assert_eq(s->ops->due(s, "bob", 1, 1, see, &got), 1, "after and limit");
  cr_assert_eq(got.seq[0], 2);
  uint64_t n;
  cr_assert_eq(s->ops->count(s, &n), 0);
  cr_assert_eq(n, 4);
  s->ops->close(s);
}

STORE_TEST(rollback_leaves_no_trace) {
  tern__relay_store *s = open_backend(b);
  tern__rs_put p = msg("alice", DEV_A, "bob", 1, 0, 1000, "kept");
  cr_assert_eq(s->ops->put(s, &p, 1), 0);
  cr_assert_eq(s->ops->commit(s, 0), 0);
  uint64_t cur;
  tern__rs_put q = msg("alice", DEV_A, "bob", 2, 0, 1001, "undone");
  cr_assert_eq(s->ops->put(s, &q, 1), 0);
  cr_assert_eq(s->ops->device(s, "bob", DEV_B, &cur), 0);
  cr_assert_eq(s->ops->notice_put(s, DEV_A, TERN__NOTICE_RECEIPT, 1, 0), 0);
  s->ops->rollback(s, 0);

  uint64_t n;
  s->ops->count(s, &n);
  cr_assert_eq(n, 1);
  tern__rs_put r = msg("alice", DEV_A, "bob", 2, 0, 1002, "again");
  cr_assert_eq(s->ops->put(s, &r, 1), 0);
  cr_assert_eq(r.result, TERN__RS_STORED, "its dedup record went with it");
  cr_assert_eq(r.seq, 2, "and its seq is given again: no gap");
  told none = {0};
  uint64_t reached;
  cr_assert_eq(s->ops->acked(s, "bob", DEV_B, 1, NULL, 0, &reached, on_delivered, &none), TERN_ENOENT,
               "the registration was rolled back too");
  int notices = 0;
  cr_assert_eq(s->ops->notice_list(s, DEV_A, count_notice, &notices), 0);
  cr_assert_eq(notices, 0, "and the notice");
  s->ops->close(s);
}

/* Acks: the cursor rises and never falls nor passes the end; each message
 * is reported delivered once, whichever device acked it first; sacks
 * deliver out of order; what every device of the user passed is deleted,
 * and the floor says so. */
STORE_TEST(acks_deliver_once_and_trim) {
  tern__relay_store *s = open_backend(b);
  for (uint64_t i = 1; i <= 5; i++) {
    tern__rs_put p = msg("alice", DEV_A, "bob", i, 0, 1000 + i, "m");
    cr_assert_eq(s->ops->put(s, &p, 1), 0);
  }
  uint64_t cur = 99, reached = 0, fl = 99;
  cr_assert_eq(s->ops->device(s, "bob", DEV_B, &cur), 0);
  cr_assert_eq(cur, 0, "a new device starts at 0");
  cr_assert_eq(s->ops->device(s, "bob", DEV_B2, &cur), 0);
  cr_assert_eq(s->ops->device(s, "mallory", DEV_B, &cur), TERN_EINVAL, "a key has one user");
  cr_assert_eq(s->ops->commit(s, 0), 0);

  told t = {0};
  uint64_t sacks[] = {5};
  cr_assert_eq(s->ops->acked(s, "bob", DEV_B, 2, sacks, 1, &reached, on_delivered, &t), 0);
  cr_assert_eq(reached, 2);
  cr_assert_eq(t.n, 3, "1, 2 and the sacked 5");
  cr_assert_eq(t.cmid[2], 5);
  uint64_t n;
  s->ops->count(s, &n);
  cr_assert_eq(n, 5, "the other device has nothing yet: all kept");
  cr_assert_eq(s->ops->floor(s, "bob", &fl), 0);
  cr_assert_eq(fl, 0);

  memset(&t, 0, sizeof t);
  cr_assert_eq(s->ops->acked(s, "bob", DEV_B2, 99, NULL, 0, &reached, on_delivered, &t), 0);
  cr_assert_eq(reached, 5, "not past the end of the inbox");
  cr_assert_eq(t.n, 2, "3 and 4: the rest were delivered already");
  s->ops->count(s, &n);
  cr_assert_eq(n, 3, "1 and 2 passed by both devices: deleted");
  cr_assert_eq(s->ops->floor(s, "bob", &fl), 0);
  cr_assert_eq(fl, 2);
  memset(&t, 0, sizeof t);
  cr_assert_eq(s->ops->acked(s, "bob", DEV_B, 1, NULL, 0, &reached, on_delivered, &t), 0);
  cr_assert_eq(reached, 2, "a cursor never goes down");
  cr_assert_eq(s->ops->acked(s, "bob", DEV_B, 5, NULL, 0, &reached, on_delivered, &t), 0);
  cr_assert_eq(t.n, 0);
  s->ops->count(s, &n);
  cr_assert_eq(n, 0);
  cr_assert_eq(s->ops->floor(s, "bob", &fl), 0);
  cr_assert_eq(fl, 5, "an empty inbox: its last seq");
  cr_assert_eq(s->ops->device(s, "bob", DEV_B, &cur), 0);
  cr_assert_eq(cur, 5);
  cr_assert_eq(s->ops->acked(s, "bob", DEV_A, 1, NULL, 0, &reached, on_delivered, &t), TERN_ENOENT);
  cr_assert_eq(s->ops->commit(s, 0), 0);
  s->ops->close(s);
}

/* Quotas: counted after the dedup, per recipient and per sender, over
 * what the store holds (trimmed messages free their room). */
STORE_TEST(quotas_count_what_is_held_after_the_dedup) {
  tern__relay_store *s = open_backend(b);
  uint64_t cur, reached;
  cr_assert_eq(s->ops->device(s, "bob", DEV_B, &cur), 0);
  int results[5];
  for (uint64_t i = 1; i <= 5; i++) {
    tern__rs_put p = msg("alice", DEV_A, "bob", i, 0, 1000 + i, "12345");
    p.to_max_msgs = 3;
    cr_assert_eq(s->ops->put(s, &p, 1), 0);
    results[i - 1] = p.result;
  }
  cr_assert_eq(results[2], TERN__RS_STORED);
  cr_assert_eq(results[3], TERN__RS_OVER_TO, "a 4th message for an inbox of 3 (result %d)", results[3]);
  cr_assert_eq(results[4], TERN__RS_OVER_TO);
  /* A resend of a stored one is still EARLIER, quota or not. */
  tern__rs_put again = msg("alice", DEV_A, "bob", 2, 0, 1002, "12345");
  again.to_max_msgs = 3;
  cr_assert_eq(s->ops->put(s, &again, 1), 0);
  cr_assert_eq(again.result, TERN__RS_EARLIER);
  /* Bytes, and the sender's side (alice holds 15 bytes, in bob's inbox). */
  tern__rs_put big = msg("alice", DEV_A, "carol", 10, 0, 1010, "123456");
  big.from_max_bytes = 20;
  cr_assert_eq(s->ops->put(s, &big, 1), 0);
  cr_assert_eq(big.result, TERN__RS_OVER_FROM, "15 + 6 bytes > 20 (result %d)", big.result);
  big.from_max_bytes = 21;
  cr_assert_eq(s->ops->put(s, &big, 1), 0);
  cr_assert_eq(big.result, TERN__RS_STORED);
  tern__rs_put to_bytes = msg("dave", DEV_B2, "carol", 1, 0, 1011, "1234567");
  to_bytes.to_max_bytes = 12;
  cr_assert_eq(s->ops->put(s, &to_bytes, 1), 0);
  cr_assert_eq(to_bytes.result, TERN__RS_OVER_TO, "carol holds 6, 6 + 7 > 12");
  /* bob's device takes all three: they are trimmed, the room is back. */
  cr_assert_eq(s->ops->acked(s, "bob", DEV_B, 3, NULL, 0, &reached, NULL, NULL), 0);
  tern__rs_put later = msg("alice", DEV_A, "bob", 4, 0, 1004, "12345");
  later.to_max_msgs = 3;
  cr_assert_eq(s->ops->put(s, &later, 1), 0);
  cr_assert_eq(later.result, TERN__RS_STORED, "room again once the inbox was read (result %d)", later.result);
  cr_assert_eq(s->ops->commit(s, 0), 0);
  s->ops->close(s);
}

typedef struct noticed {
  int n, kind[8];
  uint64_t cmid[8];
  int64_t code[8];
} noticed;

static int list_notice(void *ctx, int kind, uint64_t cmid, int64_t code) {
  noticed *x = ctx;
  x->kind[x->n] = kind;
  x->cmid[x->n] = cmid;
  x->code[x->n] = code;
  x->n++;
  return 0;
}

STORE_TEST(notices_are_kept_per_device_in_order) {
  tern__relay_store *s = open_backend(b);
  cr_assert_eq(s->ops->notice_put(s, DEV_A, TERN__NOTICE_FAILED, 9, TERN_ENOENT), 0);
  cr_assert_eq(s->ops->notice_put(s, DEV_A, TERN__NOTICE_RECEIPT, 3, 0), 0);
  cr_assert_eq(s->ops->notice_put(s, DEV_B, TERN__NOTICE_RECEIPT, 1, 0), 0);
  cr_assert_eq(s->ops->notice_put(s, DEV_A, TERN__NOTICE_FAILED, 9, TERN_EEXPIRED), 0);
  cr_assert_eq(s->ops->commit(s, 0), 0);
  noticed x = {0};
  cr_assert_eq(s->ops->notice_list(s, DEV_A, list_notice, &x), 0);
  cr_assert_eq(x.n, 2, "one per (kind, cmid), the later code replacing the earlier");
  cr_assert_eq(x.cmid[0], 3);
  cr_assert_eq(x.cmid[1], 9);
  cr_assert_eq(x.code[1], TERN_EEXPIRED);
  cr_assert_eq(s->ops->notice_del(s, DEV_A, TERN__NOTICE_RECEIPT, 3), 0);
  cr_assert_eq(s->ops->notice_del(s, DEV_A, TERN__NOTICE_RECEIPT, 3), 0, "deleting twice is fine");
  memset(&x, 0, sizeof x);
  s->ops->notice_list(s, DEV_A, list_notice, &x);
  cr_assert_eq(x.n, 1);
  memset(&x, 0, sizeof x);
  s->ops->notice_list(s, DEV_B, list_notice, &x);
  cr_assert_eq(x.n, 1, "another device's notices are its own");
  s->ops->close(s);
}

/* Expiry takes undelivered messages older than the bound, says which, and
 * forgets their resends; delivered ones wait for the user's other
 * devices. */
STORE_TEST(expire_removes_undelivered_and_forgets_resends) {
  tern__relay_store *s = open_backend(b);
  tern__rs_put p[3] = {msg("alice", DEV_A, "bob", 1, 0, 100, "old, read"),
                       msg("alice", DEV_A, "bob", 2, 0, 200, "old"),
                       msg("alice", DEV_A, "bob", 3, 0, 900, "new")};
  cr_assert_eq(s->ops->put(s, p, 3), 0);
  uint64_t cur, reached;
  s->ops->device(s, "bob", DEV_B, &cur);
  s->ops->device(s, "bob", DEV_B2, &cur);
  told t = {0};
  cr_assert_eq(s->ops->acked(s, "bob", DEV_B, 1, NULL, 0, &reached, on_delivered, &t), 0);
  cr_assert_eq(s->ops->commit(s, 0), 0);
  memset(&t, 0, sizeof t);
  cr_assert_eq(s->ops->expire(s, 500, on_expired, &t), 0);
  cr_assert_eq(t.n, 1);
  cr_assert_eq(t.cmid[0], 2);
  uint64_t n;
  s->ops->count(s, &n);
  cr_assert_eq(n, 2, "the delivered one waits for bob's other device");
  tern__rs_put again = msg("alice", DEV_A, "bob", 2, 0, 1000, "old");
  cr_assert_eq(s->ops->put(s, &again, 1), 0);
  cr_assert_eq(again.result, TERN__RS_STORED, "past retention a cmid is forgotten");
  tern__rs_put resend = msg("alice", DEV_A, "bob", 3, 0, 1000, "new");
  cr_assert_eq(s->ops->put(s, &resend, 1), 0);
  cr_assert_eq(resend.result, TERN__RS_EARLIER, "within it, remembered");
  s->ops->close(s);
}

/* The test builds' commit fault: the commit fails as a full disk does, and
 * the round is gone. */
STORE_TEST(a_failed_commit_undoes_the_round) {
  tern__relay_store *s = open_backend(b);
  tern__rs_put p = msg("alice", DEV_A, "bob", 1, 0, 100, "x");
  cr_assert_eq(s->ops->put(s, &p, 1), 0);
  s->ops->fault(s, TERN__RS_FAULT_COMMIT, 1);
  cr_assert_eq(s->ops->commit(s, 0), TERN_ESTORE);
  cr_assert(strstr(s->ops->errmsg(s), "full"), "says why: %s", s->ops->errmsg(s));
  s->ops->rollback(s, 0);
  uint64_t n;
  s->ops->count(s, &n);
  cr_assert_eq(n, 0);
  if (!strcmp(b->name, "nats")) /* the cluster's upkeep: its log poll, within a second */
    cr_assert_leq(s->ops->wake_ms(s), tt_now_ms() + 1000, "the cluster store asks for its poll");
  else
    cr_assert_eq(s->ops->wake_ms(s), UINT64_MAX, "no upkeep pending without a disk reserve");
  s->ops->close(s);
}

static void count_row(void *ctx, const uint8_t dev[32], uint64_t time_us, const uint8_t addr[18]) {
  (void)dev;
  (void)addr;
  uint64_t *sum = ctx;
  *sum += time_us;
}

/* Reset rows (spec/store.md, "resets"): one per key, replaced by a newer
 * session; a session's end removes its own row only; a rollback undoes a
 * write; take gives each committed row once. */
STORE_TEST(reset_rows_one_per_key_taken_once) {
  if (!strcmp(b->name, "nats"))
    cr_skip_test("the cluster store keeps no restart notices (spec/store.md, \"The cluster store\")");
  tern__relay_store *s = open_backend(b);
  const tern__relay_store_ops *o = s->ops;
  uint8_t at[18] = {0};
  cr_assert_eq(o->reset_put(s, DEV_A, 10, at), 0);
  cr_assert_eq(o->reset_put(s, DEV_A, 20, at), 0);
  cr_assert_eq(o->reset_put(s, DEV_B, 300, at), 0);
  cr_assert_eq(o->reset_del(s, DEV_A, 10), 0, "the older session's end");
  cr_assert_eq(o->commit(s, 0), 0);
  cr_assert_eq(o->reset_del(s, DEV_B, 300), 0);
  o->rollback(s, 0);
  uint64_t sum = 0;
  cr_assert_eq(o->reset_take(s, count_row, &sum), 2);
  cr_assert_eq(sum, 320);
  cr_assert_eq(o->commit(s, 0), 0);
  sum = 0;
  cr_assert_eq(o->reset_take(s, count_row, &sum), 0);
  o->close(s);
}

/* HELLO timestamps (handshake.md §6, "Freshness"): only a greater one is
 * fresh and becomes the largest, per key; a stale one writes nothing; a
 * rollback undoes a raise; 0 and values past INT64_MAX are never fresh. */
STORE_TEST(hello_timestamps_only_go_up_per_key) {
  tern__relay_store *s = open_backend(b);
  const tern__relay_store_ops *o = s->ops;
  cr_assert_eq(o->hello_fresh(s, DEV_A, 0), 0);
  cr_assert_eq(o->hello_fresh(s, DEV_A, (uint64_t)INT64_MAX + 1), 0);
  cr_assert_eq(o->hello_fresh(s, DEV_A, 1000), 1);
  cr_assert_eq(o->hello_fresh(s, DEV_A, 1000), 0);
  cr_assert_eq(o->hello_fresh(s, DEV_A, 999), 0);
  cr_assert_eq(o->hello_fresh(s, DEV_B, 1), 1, "keys are apart");
  cr_assert_eq(o->commit(s, 0), 0);
  cr_assert_eq(o->hello_fresh(s, DEV_A, 5000), 1);
  o->rollback(s, 0);
  cr_assert_eq(o->hello_fresh(s, DEV_A, 1000), 0, "the committed value stands");
  cr_assert_eq(o->hello_fresh(s, DEV_A, 4000), 1, "the rolled-back 5000 is gone");
  cr_assert_eq(o->commit(s, 0), 0);
  cr_assert_eq(o->hello_fresh(s, DEV_A, 4000), 0);
  o->close(s);
}

/* For push: each device of a user with what it has not acknowledged and
 * who sent the latest of it. */
typedef struct devs {
  int n;
  uint8_t first[8];
  uint64_t waiting[8];
  char last[8][16];
} devs;

static int see_device(void *ctx, const uint8_t dev[32], uint64_t waiting, const char *last) {
  devs *d = ctx;
  d->first[d->n] = dev[0];
  d->waiting[d->n] = waiting;
  snprintf(d->last[d->n], sizeof d->last[0], "%s", last);
  d->n++;
  return 0;
}

/* Issue 14: a removed device's cursor stops holding its user's messages;
 * devices() counts what each device has not acknowledged. */
STORE_TEST(a_removed_device_no_longer_holds_messages_back) {
  tern__relay_store *s = open_backend(b);
  uint64_t cur;
  cr_assert_eq(s->ops->device(s, "bob", DEV_B, &cur), 0);
  cr_assert_eq(s->ops->device(s, "bob", DEV_B2, &cur), 0);
  tern__rs_put batch[3] = {msg("alice", DEV_A, "bob", 1, 0, 1000, "one"),
                           msg("alice", DEV_A, "bob", 2, 1, 1001, "two"),
                           msg("carol", DEV_B, "bob", 3, 0, 1002, "three")};
  cr_assert_eq(s->ops->put(s, batch, 3), 0);
  told t = {0};
  uint64_t reached;
  cr_assert_eq(s->ops->acked(s, "bob", DEV_B, 3, NULL, 0, &reached, on_delivered, &t), 0);
  cr_assert_eq(s->ops->commit(s, 0), 0);
  devs d = {0};
  cr_assert_eq(s->ops->devices(s, "bob", see_device, &d), 0);
  cr_assert_eq(d.n, 2);
  int b2 = d.first[0] == 0xb2 ? 0 : 1;
  cr_assert_eq(d.waiting[b2], 3, "the second device has all three to get");
  cr_assert_str_eq(d.last[b2], "carol");
  cr_assert_eq(d.waiting[1 - b2], 0);
  uint64_t n;
  cr_assert_eq(s->ops->count(s, &n), 0);
  cr_assert_eq(n, 3, "held for the second device");
  char user[TERN_USER_MAX + 1];
  cr_assert_eq(s->ops->device_remove(s, DEV_B2, user), 1);
  cr_assert_str_eq(user, "bob");
  cr_assert_eq(s->ops->commit(s, 0), 0);
  cr_assert_eq(s->ops->count(s, &n), 0);
  cr_assert_eq(n, 0, "%llu messages still held for a removed device", (unsigned long long)n);
  memset(&d, 0, sizeof d);
  cr_assert_eq(s->ops->devices(s, "bob", see_device, &d), 0);
  cr_assert_eq(d.n, 1);
  cr_assert_eq(s->ops->device_remove(s, DEV_B2, user), 0, "gone already");
  /* The last device removed: the inbox waits for a next one. */
  tern__rs_put later = msg("alice", DEV_A, "bob", 4, 0, 2000, "four");
  cr_assert_eq(s->ops->put(s, &later, 1), 0);
  cr_assert_eq(s->ops->device_remove(s, DEV_B, user), 1);
  cr_assert_eq(s->ops->commit(s, 0), 0);
  cr_assert_eq(s->ops->count(s, &n), 0);
  cr_assert_eq(n, 1, "kept for the user's next device");
  s->ops->close(s);
}

/* Carbons (spec/messages.md §13): a copy in the sender's own inbox, only
 * when the sender has another device; resends store none; its ack and its
 * expiry tell the sender nothing. */
typedef struct carbons_seen {
  int n;
  uint64_t seq[8], flags[8];
  char peer[8][16], from[8][16];
} carbons_seen;

static int see_carbon(void *ctx, const tern__rmsg *m) {
  carbons_seen *s = ctx;
  s->seq[s->n] = m->seq;
  s->flags[s->n] = m->flags;
  snprintf(s->peer[s->n], sizeof s->peer[0], "%s", m->peer);
  snprintf(s->from[s->n], sizeof s->from[0], "%s", m->from);
  s->n++;
  return 0;
}

STORE_TEST(a_message_from_a_user_with_two_devices_leaves_a_carbon_in_its_own_inbox) {
  tern__relay_store *s = open_backend(b);
  static const uint8_t DEV_A2[32] = {0xa2};
  uint64_t cur;
  cr_assert_eq(s->ops->device(s, "alice", DEV_A, &cur), 0);
  tern__rs_put p = msg("alice", DEV_A, "bob", 1, 0, 1000, "solo");
  p.carbon = 1;
  cr_assert_eq(s->ops->put(s, &p, 1), 0);
  cr_assert_eq(p.result, TERN__RS_STORED);
  cr_assert_eq(p.carbon_seq, 0, "one device: nobody to copy to");

  cr_assert_eq(s->ops->device(s, "alice", DEV_A2, &cur), 0);
  tern__rs_put q = msg("alice", DEV_A, "bob", 2, 0, 1001, "two");
  q.carbon = 1;
  cr_assert_eq(s->ops->put(s, &q, 1), 0);
  cr_assert_eq(q.result, TERN__RS_STORED);
  cr_assert_eq(q.seq, 2, "bob's inbox");
  cr_assert_eq(q.carbon_seq, 1, "alice's own inbox");
  tern__rs_put self = msg("alice", DEV_A, "alice", 3, 0, 5000, "note");
  self.carbon = 1;
  cr_assert_eq(s->ops->put(s, &self, 1), 0);
  cr_assert_eq(self.carbon_seq, 0, "a message to oneself is its own copy");
  cr_assert_eq(s->ops->commit(s, 0), 0);

  tern__rs_put again = q;
  again.ts = 9000;
  cr_assert_eq(s->ops->put(s, &again, 1), 0);
  cr_assert_eq(again.result, TERN__RS_EARLIER);
  cr_assert_eq(again.carbon_seq, 0, "a resend stores no second carbon");
  cr_assert_eq(s->ops->commit(s, 0), 0);

  carbons_seen got = {0};
  cr_assert_eq(s->ops->due(s, "alice", 0, 10, see_carbon, &got), 2);
  cr_assert_eq(got.seq[0], 1);
  cr_assert_eq(got.flags[0], TERN__RS_CARBON);
  cr_assert_str_eq(got.peer[0], "bob");
  cr_assert_str_eq(got.from[0], "alice");
  cr_assert_eq(got.flags[1], 0, "the note to herself is a plain message");
  cr_assert_str_eq(got.peer[1], "");

  /* alice's other device acks the carbon: no receipt for anyone. */
  told t = {0};
  uint64_t reached = 0;
  cr_assert_eq(s->ops->acked(s, "alice", DEV_A2, 1, NULL, 0, &reached, on_delivered, &t), 0);
  cr_assert_eq(t.n, 0, "a carbon's ack is no receipt");
  cr_assert_eq(s->ops->commit(s, 0), 0);
  /* Bob acks the message itself: a receipt, once. */
  cr_assert_eq(s->ops->device(s, "bob", DEV_B, &cur), 0);
  cr_assert_eq(s->ops->acked(s, "bob", DEV_B, 2, NULL, 0, &reached, on_delivered, &t), 0);
  cr_assert_eq(t.n, 2);
  cr_assert_eq(t.cmid[1], 2);

  /* A carbon no device took expires silently; the message it copies was
   * delivered, so nothing expires with FAILED. */
  tern__rs_put late = msg("alice", DEV_A, "carol", 4, 0, 2000, "late");
  late.carbon = 1;
  cr_assert_eq(s->ops->put(s, &late, 1), 0);
  cr_assert_neq(late.carbon_seq, 0);
  cr_assert_eq(s->ops->commit(s, 0), 0);
  told ex = {0};
  cr_assert_eq(s->ops->expire(s, 3000, on_expired, &ex), 0);
  cr_assert_eq(ex.n, 1, "carol's undelivered message expires; its carbon says nothing");
  cr_assert_eq(ex.cmid[0], 4);
  s->ops->close(s);
}

/* The settled floor through the interface, on both stores: rows below it
 * go (a resend below it would be stored again, which is why the relay core
 * drops such MSGs: rcore_test), the floor never goes down, and a rollback
 * undoes it. */
STORE_TEST(settled_cmids_drop_their_dedup_rows_and_the_floor_only_rises) {
  tern__relay_store *s = open_backend(b);
  for (uint64_t c = 1; c <= 5; c++) {
    tern__rs_put p = msg("alice", DEV_A, "bob", c, 0, 1000 + c, "m");
    cr_assert_eq(s->ops->put(s, &p, 1), 0);
  }
  cr_assert_eq(s->ops->commit(s, 0), 0);
  uint64_t below = 99;
  cr_assert_eq(s->ops->settled_get(s, DEV_A, &below), 0);
  cr_assert_eq(below, 0);
  cr_assert_eq(s->ops->settled(s, DEV_A, 4), 0);
  s->ops->rollback(s, 0);
  cr_assert_eq(s->ops->settled_get(s, DEV_A, &below), 0);
  cr_assert_eq(below, 0, "rolled back");
  cr_assert_eq(s->ops->settled(s, DEV_A, 4), 0);
  cr_assert_eq(s->ops->settled(s, DEV_A, 2), 0);
  cr_assert_eq(s->ops->commit(s, 0), 0);
  cr_assert_eq(s->ops->settled_get(s, DEV_A, &below), 0);
  cr_assert_eq(below, 4, "never lowered");
  tern__rs_put again = msg("alice", DEV_A, "bob", 4, 0, 9000, "m");
  cr_assert_eq(s->ops->put(s, &again, 1), 0);
  cr_assert_eq(again.result, TERN__RS_EARLIER, "4 is not below the floor: still answered");
  tern__rs_put old = msg("alice", DEV_A, "bob", 3, 0, 9000, "m");
  cr_assert_eq(s->ops->put(s, &old, 1), 0);
  cr_assert_eq(old.result, TERN__RS_STORED, "3's row is gone (the core never lets this through)");
  s->ops->rollback(s, 0);
  s->ops->close(s);
}

/* ---- groups (spec/messages.md §14) ---- */

typedef struct greceipts {
  int n;
  uint64_t cmid[64];
  uint32_t got[64], of[64];
  uint32_t last_got, last_of;
} greceipts;

static void on_greceipt(void *ctx, const uint8_t dev[32], uint64_t cmid, uint32_t got, uint32_t of) {
  (void)dev;
  greceipts *r = ctx;
  if (r->n < 64) r->cmid[r->n] = cmid, r->got[r->n] = got, r->of[r->n] = of;
  r->last_got = got;
  r->last_of = of;
  r->n++;
}

static int count_cb(void *ctx, const char *s) {
  (void)s;
  (*(int *)ctx)++;
  return 0;
}

static void key_of(uint8_t key[32], int i) {
  memset(key, 0, 32);
  key[0] = (uint8_t)(i & 0xff);
  key[1] = (uint8_t)(i >> 8);
  key[31] = 0x77;
}

/* A message to a 500-member group is one stored row, whatever the group's
 * size, and goes once every member device has passed it. */
STORE_TEST(a_group_message_is_stored_once_for_500_members) {
  tern__relay_store *s = open_backend(b);
  static char names[500][16];
  const char *users[500];
  uint64_t cur, limit, point;
  for (int i = 0; i < 500; i++) {
    snprintf(names[i], sizeof names[i], "m%d", i);
    users[i] = names[i];
    uint8_t k[32];
    key_of(k, i);
    cr_assert_eq(s->ops->device(s, names[i], k, &cur), 0);
  }
  cr_assert_eq(s->ops->group_set(s, "@big", users, 500, &point), 0);
  cr_assert_eq(point, 0);
  uint8_t k0[32];
  key_of(k0, 0);
  tern__rs_put p = msg("m0", k0, "@big", 1, 0, 1000, "hello all");
  p.carbon = 1;
  cr_assert_eq(s->ops->put(s, &p, 1), 0);
  cr_assert_eq(p.result, TERN__RS_STORED);
  cr_assert_eq(p.seq, 1, "the group's own sequence");
  cr_assert_eq(p.carbon_seq, 0, "no carbons for groups: the sender's devices are members");
  cr_assert_eq(s->ops->commit(s, 0), 0);
  uint64_t rows;
  cr_assert_eq(s->ops->count(s, &rows), 0);
  cr_assert_eq(rows, 1, "one stored copy for 500 members");

  /* Half of them take it: still held for the other half. */
  greceipts r = {0};
  for (int i = 0; i < 500; i += 2) {
    uint8_t k[32];
    key_of(k, i);
    cr_assert_eq(s->ops->gdevice(s, "@big", names[i], k, &cur, &limit), 0);
    cr_assert_eq(cur, 0);
    cr_assert_eq(limit, UINT64_MAX);
    uint64_t reached;
    cr_assert_eq(s->ops->gacked(s, "@big", names[i], k, 1, &reached, on_greceipt, &r), 0);
    cr_assert_eq(reached, 1);
  }
  cr_assert_eq(s->ops->commit(s, 0), 0);
  cr_assert_eq(r.n, 249, "one receipt per member that got it, the sender not counted");
  cr_assert_eq(r.last_got, 249);
  cr_assert_eq(r.last_of, 499, "sent to the 499 members other than its sender");
  cr_assert_eq(s->ops->count(s, &rows), 0);
  cr_assert_eq(rows, 1);
  for (int i = 1; i < 500; i += 2) {
    uint8_t k[32];
    key_of(k, i);
    cr_assert_eq(s->ops->gdevice(s, "@big", names[i], k, &cur, &limit), 0);
    uint64_t reached;
    cr_assert_eq(s->ops->gacked(s, "@big", names[i], k, 1, &reached, on_greceipt, &r), 0);
  }
  cr_assert_eq(s->ops->commit(s, 0), 0);
  cr_assert_eq(r.n, 499);
  cr_assert_eq(r.got[63], 64);
  cr_assert_eq(r.last_got, 499, "every member has it");
  cr_assert_eq(s->ops->count(s, &rows), 0);
  cr_assert_eq(rows, 0, "gone once every member device passed it");
  s->ops->close(s);
}

/* Membership takes effect at a point of the group's order: a removed
 * member gets what is at or below it, an added one what is above it. */
STORE_TEST(membership_changes_take_effect_at_a_point_in_the_group_order) {
  tern__relay_store *s = open_backend(b);
  static const uint8_t DEV_C[32] = {0xcc};
  uint64_t cur, limit, point, reached;
  cr_assert_eq(s->ops->device(s, "alice", DEV_A, &cur), 0);
  cr_assert_eq(s->ops->device(s, "bob", DEV_B, &cur), 0);
  cr_assert_eq(s->ops->device(s, "carol", DEV_C, &cur), 0);
  cr_assert_eq(s->ops->group_role(s, "@g", "alice"), TERN_ENOENT, "no such group yet");
  const char *ab[] = {"alice", "bob"};
  cr_assert_eq(s->ops->group_set(s, "@g", ab, 2, &point), 0);
  cr_assert_eq(s->ops->group_role(s, "@g", "alice"), 1);
  cr_assert_eq(s->ops->group_role(s, "@g", "carol"), 0);
  for (uint64_t c = 1; c <= 3; c++) {
    tern__rs_put p = msg("alice", DEV_A, "@g", c, 0, 1000 + c, "x");
    cr_assert_eq(s->ops->put(s, &p, 1), 0);
    cr_assert_eq(p.seq, c);
  }
  /* bob out, carol in, after seq 3. */
  const char *ac[] = {"alice", "carol"};
  cr_assert_eq(s->ops->group_set(s, "@g", ac, 2, &point), 0);
  cr_assert_eq(point, 3);
  tern__rs_put p4 = msg("alice", DEV_A, "@g", 4, 0, 2000, "after");
  cr_assert_eq(s->ops->put(s, &p4, 1), 0);
  cr_assert_eq(p4.seq, 4);
  cr_assert_eq(s->ops->commit(s, 0), 0);
  int members = 0;
  cr_assert_eq(s->ops->group_members(s, "@g", count_cb, &members), 2);

  cr_assert_eq(s->ops->gdevice(s, "@g", "bob", DEV_B, &cur, &limit), 0);
  cr_assert_eq(cur, 0);
  cr_assert_eq(limit, 3, "bob gets up to the point, nothing after");
  cr_assert_eq(s->ops->gacked(s, "@g", "bob", DEV_B, 4, &reached, NULL, NULL), 0);
  cr_assert_eq(reached, 3, "an ack past the point stops at it");
  cr_assert_eq(s->ops->gdevice(s, "@g", "carol", DEV_C, &cur, &limit), 0);
  cr_assert_eq(cur, 3, "carol starts after the point");
  cr_assert_eq(limit, UINT64_MAX);
  int groups = 0;
  cr_assert_eq(s->ops->user_groups(s, "bob", DEV_B, count_cb, &groups), 0, "bob is done with @g");
  cr_assert_eq(s->ops->user_groups(s, "carol", DEV_C, count_cb, &groups), 1);
  cr_assert_eq(s->ops->gdevice(s, "@g", "dave", DEV_B2, &cur, &limit), TERN_ENOENT);
  s->ops->rollback(s, 0);
  s->ops->close(s);
}

/* A member counts once for a message's receipts, even when one of its
 * devices' cursors is gone (it left and passed its point) and another
 * device of it takes the same messages later; and a resend of a stored
 * group message is answered EARLIER though its sender has left since. */
STORE_TEST(a_member_counts_once_and_a_resend_after_leaving_is_earlier) {
  tern__relay_store *s = open_backend(b);
  static const uint8_t DEV_A2[32] = {0xa2}, DEV_C[32] = {0xcc};
  uint64_t cur, limit, point, reached;
  cr_assert_eq(s->ops->device(s, "alice", DEV_A, &cur), 0);
  cr_assert_eq(s->ops->device(s, "alice", DEV_A2, &cur), 0);
  cr_assert_eq(s->ops->device(s, "bob", DEV_B, &cur), 0);
  cr_assert_eq(s->ops->device(s, "carol", DEV_C, &cur), 0);
  const char *abc[] = {"alice", "bob", "carol"};
  cr_assert_eq(s->ops->group_set(s, "@t", abc, 3, &point), 0);
  tern__rs_put p = msg("bob", DEV_B, "@t", 1, 0, 1000, "x");
  cr_assert_eq(s->ops->put(s, &p, 1), 0);
  cr_assert_eq(p.result, TERN__RS_STORED);
  greceipts r = {0};
  cr_assert_eq(s->ops->gdevice(s, "@t", "alice", DEV_A, &cur, &limit), 0);
  cr_assert_eq(s->ops->gacked(s, "@t", "alice", DEV_A, 1, &reached, on_greceipt, &r), 0);
  cr_assert_eq(r.n, 1);
  /* alice leaves at 1: her phone is past the point, its cursor goes. */
  const char *bc[] = {"bob", "carol"};
  cr_assert_eq(s->ops->group_set(s, "@t", bc, 2, &point), 0);
  cr_assert_eq(point, 1);
  cr_assert_eq(s->ops->gdevice(s, "@t", "alice", DEV_A2, &cur, &limit), 0);
  cr_assert_eq(cur, 0, "her laptop still gets what came before");
  cr_assert_eq(s->ops->gacked(s, "@t", "alice", DEV_A2, 1, &reached, on_greceipt, &r), 0);
  cr_assert_eq(r.n, 1, "alice was counted already: not again");
  cr_assert_eq(s->ops->gdevice(s, "@t", "carol", DEV_C, &cur, &limit), 0);
  cr_assert_eq(s->ops->gacked(s, "@t", "carol", DEV_C, 1, &reached, on_greceipt, &r), 0);
  cr_assert_eq(r.n, 2);
  cr_assert_eq(r.last_got, 2);
  cr_assert_eq(r.last_of, 2, "never more than it went to");

  /* bob's resend of 1 after bob leaves: the first answer, not a refusal. */
  const char *c_only[] = {"carol"};
  cr_assert_eq(s->ops->group_set(s, "@t", c_only, 1, &point), 0);
  tern__rs_put again = msg("bob", DEV_B, "@t", 1, 0, 5000, "x");
  cr_assert_eq(s->ops->put(s, &again, 1), 0);
  cr_assert_eq(again.result, TERN__RS_EARLIER);
  tern__rs_put fresh = msg("bob", DEV_B, "@t", 2, 0, 5000, "y");
  cr_assert_eq(s->ops->put(s, &fresh, 1), 0);
  cr_assert_eq(fresh.result, TERN__RS_NOT_MEMBER, "a new one from a former member is refused");
  tern__rs_put none = msg("bob", DEV_B, "@nobody", 3, 0, 5000, "z");
  cr_assert_eq(s->ops->put(s, &none, 1), 0);
  cr_assert_eq(none.result, TERN__RS_NO_GROUP);
  s->ops->rollback(s, 0);
  s->ops->close(s);
}
