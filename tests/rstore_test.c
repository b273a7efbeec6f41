/* The relay store: inbox seqs, dedup, acks and trimming, notices, expiry,
 * transactions, persistence, crashes, a full disk and schema migration. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/rstore.h"
#include "simdisk.h"
#include "tmpdir.h"

static char dir[4096];
static char dbpath[4200];

static void make_dir(void) {
  cr_assert_eq(tern__test_mkdtemp(dir, sizeof dir), 0, "mkdtemp: %s", strerror(errno));
  snprintf(dbpath, sizeof dbpath, "%s/relay.db", dir);
}
static void remove_dir(void) { cr_assert_eq(tern__test_rmtree(dir), 0, "rmtree %s: %s", dir, strerror(errno)); }

TestSuite(rstore, .init = make_dir, .fini = remove_dir);

static tern__rstore *open_at(const char *path, uint32_t max_pages) {
  tern__rstore_config cfg = {.path = path, .synchronous = 2, .max_pages = max_pages};
  tern__rstore *s = NULL;
  char err[256];
  int rc = tern__rstore_open(&s, &cfg, err, sizeof err);
  cr_assert_eq(rc, 0, "open %s: %d %s", path, rc, err);
  return s;
}

static tern__rstore *open_mem(void) { return open_at(":memory:", 0); }

static const uint8_t *dev(int n) {
  static uint8_t keys[16][32];
  memset(keys[n], 0xa0 + n, 32);
  return keys[n];
}

/* Appends a message from `from` (device n) with a body naming cmid. */
static uint64_t put(tern__rstore *s, const char *to, const char *from, int n, uint64_t cmid, uint64_t ts,
                    uint64_t *prev) {
  char body[64];
  int len = snprintf(body, sizeof body, "body %llu", (unsigned long long)cmid);
  tern__rmsg m = {.ts = ts, .cmid = cmid, .flags = 9, .from = from, .sender_dev = dev(n),
                  .body = (const uint8_t *)body, .body_len = (size_t)len};
  uint64_t seq = 0, pv = 99;
  int rc = tern__rstore_append(s, to, &m, &seq, &pv);
  cr_assert_eq(rc, 0, "append: %d %s", rc, tern__rstore_errmsg(s));
  if (prev) *prev = pv;
  return seq;
}

static uint64_t count(tern__rstore *s) {
  uint64_t n = 0;
  cr_assert_eq(tern__rstore_count(s, &n), 0);
  return n;
}

static uint64_t floor_of(tern__rstore *s, const char *user) {
  uint64_t f = 12345;
  cr_assert_eq(tern__rstore_floor(s, user, &f), 0);
  return f;
}

/* What fetch handed over. */
typedef struct seen {
  uint64_t seq[64], prev[64], cmid[64];
  size_t n, stop_after;
} seen;

static int on_msg(void *ctx, const tern__rmsg *m) {
  seen *v = ctx;
  char body[64];
  int len = snprintf(body, sizeof body, "body %llu", (unsigned long long)m->cmid);
  cr_assert_eq(m->body_len, (size_t)len);
  cr_assert_eq(memcmp(m->body, body, (size_t)len), 0);
  cr_assert_eq(m->flags, 9);
  v->seq[v->n] = m->seq;
  v->prev[v->n] = m->prev_seq;
  v->cmid[v->n] = m->cmid;
  v->n++;
  return v->stop_after && v->n >= v->stop_after;
}

static seen fetch(tern__rstore *s, const char *user, uint64_t after, size_t limit) {
  seen v = {0};
  int rc = tern__rstore_fetch(s, user, after, limit, on_msg, &v);
  cr_assert_eq(rc, (int)v.n, "fetch returned %d, visited %zu", rc, v.n);
  return v;
}

/* The seqs ack reported as newly delivered. */
typedef struct acked {
  uint64_t seq[64], cmid[64];
  size_t n;
} acked;

static void on_ack(void *ctx, const uint8_t sender_dev[32], uint64_t cmid, uint64_t seq) {
  acked *a = ctx;
  cr_assert_eq(memcmp(sender_dev, dev(1), 32), 0);
  a->seq[a->n] = seq;
  a->cmid[a->n] = cmid;
  a->n++;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* Acks and returns the newly delivered seqs, sorted. */
static acked ack(tern__rstore *s, const char *user, int n, uint64_t up_to, const uint64_t *sacks, size_t ns) {
  acked a = {0};
  int rc = tern__rstore_ack(s, user, dev(n), up_to, sacks, ns, on_ack, &a);
  cr_assert_eq(rc, 0, "ack: %d %s", rc, tern__rstore_errmsg(s));
  qsort(a.seq, a.n, sizeof a.seq[0], cmp_u64);
  return a;
}

static uint64_t device(tern__rstore *s, const char *user, int n) {
  uint64_t c = 999;
  cr_assert_eq(tern__rstore_device(s, user, dev(n), &c), 0);
  return c;
}

Test(rstore, append_numbers_each_inbox_from_one) {
  tern__rstore *s = open_mem();
  cr_assert_eq(put(s, "alice", "carol", 1, 10, 1000, NULL), 1);
  cr_assert_eq(put(s, "alice", "carol", 1, 11, 1000, NULL), 2);
  cr_assert_eq(put(s, "bob", "carol", 1, 12, 1000, NULL), 1);
  cr_assert_eq(put(s, "alice", "dave", 2, 10, 1000, NULL), 3);
  cr_assert_eq(put(s, "bob", "dave", 2, 11, 1000, NULL), 2);
  cr_assert_eq(count(s), 5);
  tern__rstore_close(s);
}

Test(rstore, prev_seq_chains_per_sender_and_inbox) {
  tern__rstore *s = open_mem();
  uint64_t p;
  cr_assert_eq(put(s, "alice", "carol", 1, 1, 1, &p), 1);
  cr_assert_eq(p, 0);
  cr_assert_eq(put(s, "alice", "dave", 2, 1, 1, &p), 2);
  cr_assert_eq(p, 0);
  cr_assert_eq(put(s, "alice", "carol", 1, 2, 1, &p), 3);
  cr_assert_eq(p, 1);
  /* Another device of carol continues carol's chain in alice's inbox. */
  cr_assert_eq(put(s, "alice", "carol", 3, 1, 1, &p), 4);
  cr_assert_eq(p, 3);
  /* Carol's chain in bob's inbox is separate. */
  cr_assert_eq(put(s, "bob", "carol", 1, 3, 1, &p), 1);
  cr_assert_eq(p, 0);
  seen v = fetch(s, "alice", 0, 10);
  cr_assert_eq(v.n, 4);
  cr_assert_eq(v.prev[0], 0);
  cr_assert_eq(v.prev[2], 1);
  cr_assert_eq(v.prev[3], 3);
  tern__rstore_close(s);
}

Test(rstore, dedup_finds_only_that_device_and_cmid) {
  tern__rstore *s = open_mem();
  put(s, "alice", "carol", 1, 10, 5000, NULL);
  put(s, "bob", "carol", 1, 11, 6000, NULL);
  uint64_t seq = 0, ts = 0;
  cr_assert_eq(tern__rstore_dedup_get(s, dev(1), 11, &seq, &ts), 1);
  cr_assert_eq(seq, 1);
  cr_assert_eq(ts, 6000);
  cr_assert_eq(tern__rstore_dedup_get(s, dev(1), 12, &seq, &ts), 0);
  cr_assert_eq(tern__rstore_dedup_get(s, dev(2), 10, &seq, &ts), 0);
  tern__rstore_close(s);
}

Test(rstore, duplicate_append_is_refused_and_leaves_no_trace) {
  tern__rstore *s = open_mem();
  put(s, "alice", "carol", 1, 10, 1, NULL);
  tern__rmsg m = {.cmid = 10, .from = "carol", .sender_dev = dev(1)};
  uint64_t seq = 0, prev = 0;
  cr_assert_eq(tern__rstore_append(s, "alice", &m, &seq, &prev), TERN_EEXIST);
  cr_assert_eq(count(s), 1);
  /* The refused append did not use up seq 2. */
  cr_assert_eq(put(s, "alice", "carol", 1, 11, 1, &prev), 2);
  cr_assert_eq(prev, 1);
  tern__rstore_close(s);
}

Test(rstore, fetch_order_after_limit_and_early_stop) {
  tern__rstore *s = open_mem();
  for (uint64_t i = 1; i <= 6; i++) put(s, "alice", "carol", 1, 100 + i, 1, NULL);
  put(s, "bob", "carol", 1, 200, 1, NULL);
  seen v = fetch(s, "alice", 0, 100);
  cr_assert_eq(v.n, 6);
  for (size_t i = 0; i < 6; i++) {
    cr_assert_eq(v.seq[i], i + 1);
    cr_assert_eq(v.cmid[i], 101 + i);
  }
  v = fetch(s, "alice", 4, 100);
  cr_assert_eq(v.n, 2);
  cr_assert_eq(v.seq[0], 5);
  v = fetch(s, "alice", 1, 3);
  cr_assert_eq(v.n, 3);
  cr_assert_eq(v.seq[2], 4);
  v = (seen){.stop_after = 2};
  cr_assert_eq(tern__rstore_fetch(s, "alice", 0, 100, on_msg, &v), 2);
  cr_assert_eq(v.n, 2);
  cr_assert_eq(fetch(s, "alice", 6, 10).n, 0);
  cr_assert_eq(fetch(s, "nobody", 0, 10).n, 0);
  cr_assert_eq(fetch(s, "alice", UINT64_MAX, 10).n, 0);
  tern__rstore_close(s);
}

Test(rstore, device_registration_keeps_cursor) {
  tern__rstore *s = open_mem();
  put(s, "alice", "carol", 1, 1, 1, NULL);
  put(s, "alice", "carol", 1, 2, 1, NULL);
  cr_assert_eq(device(s, "alice", 5), 0);
  ack(s, "alice", 5, 1, NULL, 0);
  cr_assert_eq(device(s, "alice", 5), 1);
  /* One key cannot be a device of two users. */
  uint64_t c;
  cr_assert_eq(tern__rstore_device(s, "bob", dev(5), &c), TERN_EINVAL);
  cr_assert_eq(tern__rstore_ack(s, "bob", dev(5), 1, NULL, 0, on_ack, &(acked){0}), TERN_EINVAL);
  cr_assert_eq(tern__rstore_ack(s, "alice", dev(6), 1, NULL, 0, on_ack, &(acked){0}), TERN_ENOENT);
  tern__rstore_close(s);
}

Test(rstore, ack_reports_each_message_once) {
  tern__rstore *s = open_mem();
  for (uint64_t i = 1; i <= 6; i++) put(s, "alice", "carol", 1, 100 + i, 1, NULL);
  device(s, "alice", 5);
  device(s, "alice", 6);
  uint64_t sacks[] = {4, 1, 4, 99};
  acked a = ack(s, "alice", 5, 2, sacks, 4);
  cr_assert_eq(a.n, 3);
  cr_assert_eq(a.seq[0], 1);
  cr_assert_eq(a.seq[1], 2);
  cr_assert_eq(a.seq[2], 4);
  /* The same ack again, and the other device acking them: nothing new. */
  cr_assert_eq(ack(s, "alice", 5, 2, sacks, 4).n, 0);
  cr_assert_eq(ack(s, "alice", 6, 2, sacks, 2).n, 0);
  /* A cursor never goes back. */
  cr_assert_eq(ack(s, "alice", 5, 1, NULL, 0).n, 0);
  cr_assert_eq(device(s, "alice", 5), 2);
  a = ack(s, "alice", 6, 5, NULL, 0);
  cr_assert_eq(a.n, 2);
  cr_assert_eq(a.seq[0], 3);
  cr_assert_eq(a.seq[1], 5);
  cr_assert_eq(a.cmid[0] + a.cmid[1], 103 + 105);
  /* A cursor past the end stops at the last message stored. */
  a = ack(s, "alice", 6, 1000, NULL, 0);
  cr_assert_eq(a.n, 1);
  cr_assert_eq(device(s, "alice", 6), 6);
  tern__rstore_close(s);
}

typedef struct notes {
  int kind[8];
  uint64_t cmid[8];
  int64_t code[8];
  size_t n, stop_after;
} notes;

static int on_notice(void *ctx, int kind, uint64_t cmid, int64_t code) {
  notes *v = ctx;
  v->kind[v->n] = kind;
  v->cmid[v->n] = cmid;
  v->code[v->n] = code;
  v->n++;
  return v->stop_after && v->n >= v->stop_after;
}

/* The relay queues a receipt from inside the ack callback: a write while
 * the ack's own statement is being stepped. */
static void receipt_from_cb(void *ctx, const uint8_t sender_dev[32], uint64_t cmid, uint64_t seq) {
  (void)seq;
  cr_assert_eq(tern__rstore_notice_put(ctx, sender_dev, TERN__NOTICE_RECEIPT, cmid, 0), 0);
}

Test(rstore, ack_callback_may_write_notices) {
  tern__rstore *s = open_mem();
  for (uint64_t i = 1; i <= 3; i++) put(s, "alice", "carol", 1, 40 + i, 1, NULL);
  device(s, "alice", 5);
  cr_assert_eq(tern__rstore_begin(s), 0);
  cr_assert_eq(tern__rstore_ack(s, "alice", dev(5), 3, NULL, 0, receipt_from_cb, s), 0);
  cr_assert_eq(tern__rstore_commit(s), 0);
  notes v = {0};
  cr_assert_eq(tern__rstore_notice_list(s, dev(1), on_notice, &v), 0);
  cr_assert_eq(v.n, 3);
  cr_assert_eq(v.cmid[0], 41);
  cr_assert_eq(v.cmid[2], 43);
  cr_assert_eq(count(s), 0);
  tern__rstore_close(s);
}

Test(rstore, messages_go_when_every_device_passed) {
  tern__rstore *s = open_mem();
  for (uint64_t i = 1; i <= 3; i++) put(s, "alice", "carol", 1, i, 1, NULL);
  device(s, "alice", 5);
  device(s, "alice", 6);
  cr_assert_eq(floor_of(s, "alice"), 0);
  ack(s, "alice", 5, 3, NULL, 0);
  cr_assert_eq(count(s), 3);
  cr_assert_eq(floor_of(s, "alice"), 0);
  ack(s, "alice", 6, 2, NULL, 0);
  cr_assert_eq(count(s), 1);
  cr_assert_eq(floor_of(s, "alice"), 2);
  cr_assert_eq(fetch(s, "alice", 0, 10).seq[0], 3);
  ack(s, "alice", 6, 3, NULL, 0);
  cr_assert_eq(count(s), 0);
  cr_assert_eq(floor_of(s, "alice"), 3);
  /* Numbering goes on after an emptied inbox, and the floor stays. */
  cr_assert_eq(put(s, "alice", "carol", 1, 4, 1, NULL), 4);
  cr_assert_eq(floor_of(s, "alice"), 3);
  cr_assert_eq(floor_of(s, "nobody"), 0);
  tern__rstore_close(s);
}

Test(rstore, late_device_keeps_the_rest) {
  tern__rstore *s = open_mem();
  for (uint64_t i = 1; i <= 3; i++) put(s, "alice", "carol", 1, i, 1, NULL);
  device(s, "alice", 5);
  ack(s, "alice", 5, 1, NULL, 0);
  cr_assert_eq(floor_of(s, "alice"), 1);
  cr_assert_eq(device(s, "alice", 6), 0);
  ack(s, "alice", 5, 3, NULL, 0);
  cr_assert_eq(count(s), 2);
  seen v = fetch(s, "alice", 0, 10);
  cr_assert_eq(v.n, 2);
  cr_assert_eq(v.seq[0], 2);
  cr_assert_eq(floor_of(s, "alice"), 1);
  /* Already delivered (by device 5): no second receipt. */
  cr_assert_eq(ack(s, "alice", 6, 3, NULL, 0).n, 0);
  cr_assert_eq(count(s), 0);
  tern__rstore_close(s);
}

Test(rstore, notices_put_list_del) {
  tern__rstore *s = open_mem();
  cr_assert_eq(tern__rstore_notice_put(s, dev(1), TERN__NOTICE_RECEIPT, 20, 0), 0);
  cr_assert_eq(tern__rstore_notice_put(s, dev(1), TERN__NOTICE_RECEIPT, 20, 0), 0);
  cr_assert_eq(tern__rstore_notice_put(s, dev(1), TERN__NOTICE_FAILED, 10, TERN_EEXPIRED), 0);
  cr_assert_eq(tern__rstore_notice_put(s, dev(2), TERN__NOTICE_RECEIPT, 5, 0), 0);
  notes v = {0};
  cr_assert_eq(tern__rstore_notice_list(s, dev(1), on_notice, &v), 0);
  cr_assert_eq(v.n, 2);
  cr_assert_eq(v.kind[0], TERN__NOTICE_FAILED);
  cr_assert_eq(v.cmid[0], 10);
  cr_assert_eq(v.code[0], TERN_EEXPIRED);
  cr_assert_eq(v.kind[1], TERN__NOTICE_RECEIPT);
  cr_assert_eq(v.cmid[1], 20);
  v = (notes){.stop_after = 1};
  cr_assert_eq(tern__rstore_notice_list(s, dev(1), on_notice, &v), 0);
  cr_assert_eq(v.n, 1);
  cr_assert_eq(tern__rstore_notice_del(s, dev(1), TERN__NOTICE_FAILED, 10), 0);
  cr_assert_eq(tern__rstore_notice_del(s, dev(1), TERN__NOTICE_FAILED, 10), 0);
  /* Wrong kind: stays. */
  cr_assert_eq(tern__rstore_notice_del(s, dev(1), TERN__NOTICE_FAILED, 20), 0);
  v = (notes){0};
  cr_assert_eq(tern__rstore_notice_list(s, dev(1), on_notice, &v), 0);
  cr_assert_eq(v.n, 1);
  cr_assert_eq(v.cmid[0], 20);
  tern__rstore_close(s);
}

typedef struct expired {
  uint64_t cmid[16];
  size_t n;
} expired;

static void on_expire(void *ctx, const uint8_t sender_dev[32], uint64_t cmid) {
  expired *e = ctx;
  cr_assert_eq(memcmp(sender_dev, dev(1), 32), 0);
  e->cmid[e->n++] = cmid;
}

Test(rstore, expire_removes_old_undelivered_only) {
  tern__rstore *s = open_mem();
  put(s, "alice", "carol", 1, 1, 100, NULL);  /* old, undelivered: expires */
  put(s, "alice", "carol", 1, 2, 150, NULL);  /* old, delivered (sacked): stays */
  put(s, "alice", "carol", 1, 3, 300, NULL);  /* new: stays */
  put(s, "bob", "carol", 1, 4, 120, NULL);    /* old, other inbox: expires */
  device(s, "alice", 5);
  uint64_t sack = 2;
  cr_assert_eq(ack(s, "alice", 5, 0, &sack, 1).n, 1);
  expired e = {0};
  cr_assert_eq(tern__rstore_expire(s, 250, on_expire, &e), 0);
  qsort(e.cmid, e.n, sizeof e.cmid[0], cmp_u64);
  cr_assert_eq(e.n, 2);
  cr_assert_eq(e.cmid[0], 1);
  cr_assert_eq(e.cmid[1], 4);
  cr_assert_eq(count(s), 2);
  seen v = fetch(s, "alice", 0, 10);
  cr_assert_eq(v.seq[0], 2);
  cr_assert_eq(v.seq[1], 3);
  cr_assert_eq(floor_of(s, "alice"), 1);
  cr_assert_eq(floor_of(s, "bob"), 1);
  /* Dedup records older than the limit go too. */
  uint64_t seq, ts;
  cr_assert_eq(tern__rstore_dedup_get(s, dev(1), 2, &seq, &ts), 0);
  cr_assert_eq(tern__rstore_dedup_get(s, dev(1), 3, &seq, &ts), 1);
  /* Nothing more to expire: no callback. */
  e = (expired){0};
  cr_assert_eq(tern__rstore_expire(s, 250, on_expire, &e), 0);
  cr_assert_eq(e.n, 0);
  tern__rstore_close(s);
}

Test(rstore, expiry_hole_above_the_floor) {
  tern__rstore *s = open_mem();
  put(s, "alice", "carol", 1, 1, 100, NULL);
  put(s, "alice", "carol", 1, 2, 100, NULL);
  put(s, "alice", "carol", 1, 3, 900, NULL);
  device(s, "alice", 5);
  uint64_t sack = 1;
  ack(s, "alice", 5, 0, &sack, 1);
  cr_assert_eq(tern__rstore_expire(s, 500, NULL, NULL), 0);
  /* 1 is still stored, so the floor cannot pass it; 2 is a hole that
   * fetch skips. */
  cr_assert_eq(floor_of(s, "alice"), 0);
  seen v = fetch(s, "alice", 0, 10);
  cr_assert_eq(v.n, 2);
  cr_assert_eq(v.seq[0], 1);
  cr_assert_eq(v.seq[1], 3);
  acked a = ack(s, "alice", 5, 3, NULL, 0);
  cr_assert_eq(a.n, 1);
  cr_assert_eq(a.seq[0], 3);
  cr_assert_eq(floor_of(s, "alice"), 3);
  tern__rstore_close(s);
}

Test(rstore, rollback_undoes_append_without_a_gap) {
  tern__rstore *s = open_mem();
  cr_assert_eq(tern__rstore_in_txn(s), 0);
  cr_assert_eq(tern__rstore_begin(s), 0);
  cr_assert_eq(tern__rstore_in_txn(s), 1);
  cr_assert_eq(tern__rstore_begin(s), TERN_EINVAL);
  put(s, "alice", "carol", 1, 1, 1, NULL);
  cr_assert_eq(tern__rstore_commit(s), 0);
  cr_assert_eq(tern__rstore_begin(s), 0);
  cr_assert_eq(put(s, "alice", "carol", 1, 2, 1, NULL), 2);
  cr_assert_eq(put(s, "alice", "dave", 2, 3, 1, NULL), 3);
  tern__rstore_rollback(s);
  cr_assert_eq(tern__rstore_in_txn(s), 0);
  tern__rstore_rollback(s); /* harmless without a transaction */
  cr_assert_eq(count(s), 1);
  uint64_t seq, ts, prev;
  cr_assert_eq(tern__rstore_dedup_get(s, dev(1), 2, &seq, &ts), 0);
  cr_assert_eq(tern__rstore_dedup_get(s, dev(2), 3, &seq, &ts), 0);
  /* The next append takes seq 2 again, and carol's chain points at 1. */
  cr_assert_eq(put(s, "alice", "carol", 1, 2, 1, &prev), 2);
  cr_assert_eq(prev, 1);
  cr_assert_eq(put(s, "alice", "dave", 2, 3, 1, &prev), 3);
  cr_assert_eq(prev, 0);
  cr_assert_eq(tern__rstore_commit(s), TERN_ESTORE);
  tern__rstore_close(s);
}

Test(rstore, file_store_is_in_wal_mode) {
  tern__rstore *s = open_at(dbpath, 0);
  put(s, "alice", "carol", 1, 1, 1, NULL);
  sqlite3 *db = NULL;
  cr_assert_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
  sqlite3_stmt *q = NULL;
  cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
  cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
  cr_assert_str_eq((const char *)sqlite3_column_text(q, 0), "wal");
  sqlite3_finalize(q);
  sqlite3_close(db);
  char wal[4300];
  snprintf(wal, sizeof wal, "%s-wal", dbpath);
  cr_assert_eq(access(wal, F_OK), 0, "no %s", wal);
  tern__rstore_close(s);
}

Test(rstore, everything_survives_close_and_reopen) {
  tern__rstore *s = open_at(dbpath, 0);
  for (uint64_t i = 1; i <= 4; i++) put(s, "alice", "carol", 1, i, 1000 + i, NULL);
  device(s, "alice", 5);
  ack(s, "alice", 5, 2, NULL, 0);
  cr_assert_eq(tern__rstore_notice_put(s, dev(1), TERN__NOTICE_RECEIPT, 2, 0), 0);
  tern__rstore_close(s);

  s = open_at(dbpath, 0);
  cr_assert_eq(count(s), 2);
  cr_assert_eq(floor_of(s, "alice"), 2);
  cr_assert_eq(device(s, "alice", 5), 2);
  seen v = fetch(s, "alice", 0, 10);
  cr_assert_eq(v.n, 2);
  cr_assert_eq(v.seq[0], 3);
  cr_assert_eq(v.prev[0], 2);
  uint64_t seq, ts, prev;
  cr_assert_eq(tern__rstore_dedup_get(s, dev(1), 4, &seq, &ts), 1);
  cr_assert_eq(seq, 4);
  cr_assert_eq(ts, 1004);
  notes nv = {0};
  cr_assert_eq(tern__rstore_notice_list(s, dev(1), on_notice, &nv), 0);
  cr_assert_eq(nv.n, 1);
  cr_assert_eq(put(s, "alice", "carol", 1, 5, 1, &prev), 5);
  cr_assert_eq(prev, 4);
  tern__rstore_close(s);
}

/* A relay killed in the middle of a transaction: what it committed is
 * there, and nothing of the open transaction, even though the transaction
 * was big enough for SQLite to spill pages into the WAL before commit. */
Test(rstore, sigkill_before_commit_loses_only_the_open_transaction) {
  int pipefd[2];
  cr_assert_eq(pipe(pipefd), 0);
  pid_t pid = fork();
  cr_assert_neq(pid, -1);
  if (pid == 0) {
    tern__rstore_config cfg = {.path = dbpath, .synchronous = 2};
    tern__rstore *s = NULL;
    static uint8_t big[8192];
    tern__rmsg m = {.ts = 1, .from = "carol", .sender_dev = dev(1), .body = big, .body_len = sizeof big};
    uint64_t seq, prev;
    int ok = tern__rstore_open(&s, &cfg, NULL, 0) == 0 && tern__rstore_begin(s) == 0;
    for (m.cmid = 1; ok && m.cmid <= 3; m.cmid++) ok = tern__rstore_append(s, "alice", &m, &seq, &prev) == 0;
    ok = ok && tern__rstore_commit(s) == 0 && tern__rstore_begin(s) == 0;
    for (; ok && m.cmid <= 500; m.cmid++) ok = tern__rstore_append(s, "alice", &m, &seq, &prev) == 0;
    char c = ok ? 'k' : 'f';
    if (write(pipefd[1], &c, 1) != 1) _exit(2);
    for (;;) pause();
  }
  close(pipefd[1]);
  char c = 0;
  cr_assert_eq(read(pipefd[0], &c, 1), 1);
  close(pipefd[0]);
  cr_assert_eq(c, 'k', "the child failed to write");
  char wal[4300];
  snprintf(wal, sizeof wal, "%s-wal", dbpath);
  FILE *f = fopen(wal, "rb");
  cr_assert_not_null(f);
  fseek(f, 0, SEEK_END);
  long wal_size = ftell(f);
  fclose(f);
  cr_assert_gt(wal_size, 3 * 8192 * 2, "the open transaction did not spill (WAL %ld bytes)", wal_size);
  cr_assert_eq(kill(pid, SIGKILL), 0);
  int status = 0;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

  tern__rstore *s = open_at(dbpath, 0);
  cr_assert_eq(count(s), 3);
  uint64_t seq, ts;
  cr_assert_eq(tern__rstore_dedup_get(s, dev(1), 3, &seq, &ts), 1);
  cr_assert_eq(tern__rstore_dedup_get(s, dev(1), 4, &seq, &ts), 0);
  tern__rmsg m = {.cmid = 4, .from = "carol", .sender_dev = dev(1)};
  uint64_t prev;
  cr_assert_eq(tern__rstore_append(s, "alice", &m, &seq, &prev), 0);
  cr_assert_eq(seq, 4);
  cr_assert_eq(prev, 3);
  tern__rstore_close(s);
}

/* For the disk-full test: bodies of 2000 bytes, each byte cmid & 0xff. */
static int on_full(void *ctx, const tern__rmsg *m) {
  seen *v = ctx;
  cr_assert_eq(m->body_len, 2000);
  for (size_t i = 0; i < m->body_len; i++) cr_assert_eq(m->body[i], m->cmid & 0xff);
  cr_assert_eq(m->seq, m->cmid);
  v->n++;
  return 0;
}

Test(rstore, disk_full_refuses_new_and_keeps_old) {
  tern__rstore *s = open_at(dbpath, 48);
  static uint8_t body[2000];
  uint64_t stored = 0, seq, prev, ts;
  int rc = 0;
  for (uint64_t cmid = 1; cmid < 10000; cmid++) {
    memset(body, (int)(cmid & 0xff), sizeof body);
    tern__rmsg m = {.ts = cmid, .cmid = cmid, .from = "carol", .sender_dev = dev(1), .body = body,
                    .body_len = sizeof body};
    cr_assert_eq(tern__rstore_begin(s), 0);
    rc = tern__rstore_append(s, "alice", &m, &seq, &prev);
    if (rc == 0) rc = tern__rstore_commit(s);
    if (rc < 0) {
      tern__rstore_rollback(s);
      break;
    }
    stored = cmid;
  }
  cr_assert_eq(rc, TERN_ESTORE, "never full: %d", rc);
  cr_assert_not_null(strstr(tern__rstore_errmsg(s), "full"), "message: %s", tern__rstore_errmsg(s));
  cr_assert_gt(stored, 10);
  cr_assert_eq(tern__rstore_in_txn(s), 0);
  cr_assert_eq(tern__rstore_dedup_get(s, dev(1), stored + 1, &seq, &ts), 0);

  /* Still full for the next one, still readable. */
  tern__rmsg m = {.cmid = stored + 1, .from = "carol", .sender_dev = dev(1), .body = body, .body_len = sizeof body};
  cr_assert_eq(tern__rstore_append(s, "alice", &m, &seq, &prev), TERN_ESTORE);
  uint64_t n = 0;
  cr_assert_eq(tern__rstore_count(s, &n), 0);
  cr_assert_eq(n, stored);
  cr_assert_eq(tern__rstore_dedup_get(s, dev(1), stored, &seq, &ts), 1);
  cr_assert_eq(seq, stored);
  seen v = {0};
  cr_assert_eq(tern__rstore_fetch(s, "alice", 0, 10000, on_full, &v), (int)stored);

  /* Acks still work on a full disk, and what they delete makes room. */
  cr_assert_eq(device(s, "alice", 5), 0);
  cr_assert_eq(ack(s, "alice", 5, stored / 2, NULL, 0).n, stored / 2);
  cr_assert_eq(tern__rstore_append(s, "alice", &m, &seq, &prev), 0, "%s", tern__rstore_errmsg(s));
  cr_assert_eq(seq, stored + 1);
  tern__rstore_close(s);

  /* With room again, every stored message is intact and numbering goes on. */
  s = open_at(dbpath, 0);
  cr_assert_eq(count(s), stored - stored / 2 + 1);
  v = (seen){0};
  cr_assert_eq(tern__rstore_fetch(s, "alice", 0, 10000, on_full, &v), (int)(stored - stored / 2 + 1));
  m.cmid++;
  cr_assert_eq(tern__rstore_append(s, "alice", &m, &seq, &prev), 0);
  cr_assert_eq(seq, stored + 2);
  tern__rstore_close(s);
}

static int64_t user_version(const char *path) {
  sqlite3 *db = NULL;
  sqlite3_stmt *q = NULL;
  cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
  cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL), SQLITE_OK);
  cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(q, 0);
  sqlite3_finalize(q);
  sqlite3_close(db);
  return v;
}

static void set_user_version(const char *path, int v) {
  sqlite3 *db = NULL;
  char text[64];
  snprintf(text, sizeof text, "PRAGMA user_version = %d", v);
  cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
  cr_assert_eq(sqlite3_exec(db, text, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
}

Test(rstore, migrates_v0_and_opens_v7) {
  /* v0: an existing, empty database file (as sqlite3 leaves it). */
  set_user_version(dbpath, 0);
  cr_assert_eq(user_version(dbpath), 0);
  tern__rstore *s = open_at(dbpath, 0);
  put(s, "alice", "carol", 1, 1, 1, NULL);
  tern__rstore_close(s);
  cr_assert_eq(user_version(dbpath), 7);
  /* v4: opened as it is, data kept. */
  s = open_at(dbpath, 0);
  cr_assert_eq(count(s), 1);
  cr_assert_eq(put(s, "alice", "carol", 1, 2, 1, NULL), 2);
  tern__rstore_close(s);
  cr_assert_eq(user_version(dbpath), 7);
}

static void held(tern__rstore *s, const char *who, int side, uint64_t msgs, uint64_t bytes) {
  uint64_t m = 99, b = 99;
  cr_assert_eq(tern__rstore_held(s, who, side, &m, &b), 0);
  cr_assert_eq(m, msgs, "%s (%s): %llu messages held, not %llu", who, side ? "sender" : "recipient",
               (unsigned long long)m, (unsigned long long)msgs);
  cr_assert_eq(b, bytes, "%s (%s): %llu bytes held, not %llu", who, side ? "sender" : "recipient",
               (unsigned long long)b, (unsigned long long)bytes);
}

/* The quotas' counts (schema v3) follow every insert and delete, and a v2
 * store gets them from what its inbox holds. */
Test(rstore, held_counts_follow_the_inbox_and_a_v2_store_gets_them) {
  tern__rstore *s = open_at(dbpath, 0);
  put(s, "bob", "alice", 1, 1, 1, NULL);   /* "body 1": 6 bytes */
  put(s, "bob", "alice", 1, 2, 1, NULL);
  put(s, "carol", "alice", 1, 3, 1, NULL);
  put(s, "alice", "bob", 2, 4, 1, NULL);
  held(s, "bob", 0, 2, 12);
  held(s, "alice", 1, 3, 18);
  held(s, "alice", 0, 1, 6);
  held(s, "dave", 0, 0, 0);
  device(s, "bob", 3);
  acked a = ack(s, "bob", 3, 2, NULL, 0); /* bob's only device has both: they go */
  cr_assert_eq(a.n, 2);
  held(s, "bob", 0, 0, 0);
  held(s, "alice", 1, 1, 6);
  tern__rstore_close(s);
  /* Back to v2: no counts. Opening migrates and counts the inbox. */
  sqlite3 *db = NULL;
  cr_assert_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
  cr_assert_eq(sqlite3_exec(db, "DROP TRIGGER inbox_held_add; DROP TRIGGER inbox_held_del;"
                                "DROP TABLE members; DROP TABLE gcursors; ALTER TABLE inbox DROP COLUMN gmembers;"
                                "ALTER TABLE inbox DROP COLUMN gdelivered;"
                                "DROP TABLE held; DROP TABLE resets; ALTER TABLE inbox DROP COLUMN peer;"
                                "ALTER TABLE hellos DROP COLUMN settled;"
                                "PRAGMA user_version = 2;", NULL,
                            NULL, NULL),
               SQLITE_OK);
  sqlite3_close(db);
  s = open_at(dbpath, 0);
  cr_assert_eq(user_version(dbpath), 7);
  held(s, "alice", 1, 1, 6);
  held(s, "carol", 0, 1, 6);
  held(s, "alice", 0, 1, 6);
  held(s, "bob", 1, 1, 6);
  held(s, "bob", 0, 0, 0);
  tern__rstore_close(s);
}

/* A store of schema 1 (before HELLO timestamps and quotas) gets the
 * hellos table and keeps its messages. */
Test(rstore, migrates_v1_to_v7_with_hello_timestamps) {
  tern__rstore *s = open_at(dbpath, 0);
  put(s, "alice", "carol", 1, 1, 1, NULL);
  tern__rstore_close(s);
  sqlite3 *db;
  cr_assert_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
  cr_assert_eq(sqlite3_exec(db, "DROP TABLE hellos; DROP TRIGGER inbox_held_add;"
                                "DROP TABLE members; DROP TABLE gcursors; ALTER TABLE inbox DROP COLUMN gmembers;"
                                "ALTER TABLE inbox DROP COLUMN gdelivered;"
                                "DROP TRIGGER inbox_held_del; DROP TABLE held; DROP TABLE resets;"
                                "ALTER TABLE inbox DROP COLUMN peer; PRAGMA user_version = 1", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
  s = open_at(dbpath, 0);
  cr_assert_eq(user_version(dbpath), 7);
  cr_assert_eq(count(s), 1);
  uint8_t dev[32] = {7};
  cr_assert_eq(tern__rstore_begin(s), 0);
  cr_assert_eq(tern__rstore_hello_fresh(s, dev, 1000), 1);
  cr_assert_eq(tern__rstore_commit(s), 0);
  tern__rstore_close(s);
}

/* The largest HELLO timestamp per device key: only a greater one is fresh
 * (and becomes the largest); it survives a reopen; a rollback undoes it;
 * 0 and values past INT64_MAX are never fresh. */
Test(rstore, hello_timestamps_only_go_up_and_are_durable) {
  uint8_t a[32] = {1}, b[32] = {2};
  tern__rstore *s = open_at(dbpath, 0);
  cr_assert_eq(tern__rstore_begin(s), 0);
  cr_assert_eq(tern__rstore_hello_fresh(s, a, 0), 0, "0 is never fresh");
  cr_assert_eq(tern__rstore_hello_fresh(s, a, (uint64_t)INT64_MAX + 1), 0);
  cr_assert_eq(tern__rstore_hello_fresh(s, a, 1000), 1, "the first is fresh");
  cr_assert_eq(tern__rstore_hello_fresh(s, a, 1000), 0, "the same again is not");
  cr_assert_eq(tern__rstore_hello_fresh(s, a, 999), 0, "nor an older one");
  cr_assert_eq(tern__rstore_hello_fresh(s, b, 5), 1, "keys are apart");
  cr_assert_eq(tern__rstore_hello_fresh(s, a, 1001), 1);
  cr_assert_eq(tern__rstore_commit(s), 0);
  tern__rstore_close(s);
  s = open_at(dbpath, 0);
  cr_assert_eq(tern__rstore_begin(s), 0);
  cr_assert_eq(tern__rstore_hello_fresh(s, a, 1001), 0, "kept across a reopen");
  cr_assert_eq(tern__rstore_hello_fresh(s, a, 2000), 1);
  tern__rstore_rollback(s);
  cr_assert_eq(tern__rstore_begin(s), 0);
  cr_assert_eq(tern__rstore_hello_fresh(s, a, 1500), 1, "the rolled back 2000 is gone");
  cr_assert_eq(tern__rstore_commit(s), 0);
  tern__rstore_close(s);
}

Test(rstore, refuses_a_newer_schema) {
  tern__rstore *s = open_at(dbpath, 0);
  tern__rstore_close(s);
  set_user_version(dbpath, 8);
  tern__rstore_config cfg = {.path = dbpath};
  char err[256];
  cr_assert_eq(tern__rstore_open(&s, &cfg, err, sizeof err), TERN_ESTORE);
  cr_assert_null(s);
  cr_assert_not_null(strstr(err, "newer"), "err: %s", err);
  cr_assert_eq(user_version(dbpath), 8);
}

/* ---- reset rows (spec/store.md, "resets"; spec/wire.md §14) ---- */

typedef struct rows {
  int n;
  uint8_t dev[4][32];
  uint64_t time_us[4];
  uint8_t addr[4][18];
} rows;

static void take_row(void *ctx, const uint8_t dev[32], uint64_t time_us, const uint8_t addr[18]) {
  rows *r = ctx;
  cr_assert_lt(r->n, 4);
  memcpy(r->dev[r->n], dev, 32);
  r->time_us[r->n] = time_us;
  memcpy(r->addr[r->n], addr, 18);
  r->n++;
}

/* One row per key, replaced by its next session or by a move; a session's
 * end removes its own row only; the rows survive a reopen (what a kill -9
 * leaves is what was committed); take gives them all once and clears them. */
Test(rstore, reset_rows_are_durable_and_taken_once) {
  uint8_t a[32] = {1}, b[32] = {2}, at1[18] = {9, 1}, at2[18] = {9, 2};
  tern__rstore *s = open_at(dbpath, 0);
  cr_assert_eq(tern__rstore_begin(s), 0);
  cr_assert_eq(tern__rstore_reset_put(s, a, 100, at1), 0);
  cr_assert_eq(tern__rstore_reset_put(s, a, 200, at1), 0, "a's next session replaces its row");
  cr_assert_eq(tern__rstore_reset_put(s, a, 200, at2), 0, "and moves");
  cr_assert_eq(tern__rstore_reset_put(s, b, 300, at1), 0);
  cr_assert_eq(tern__rstore_reset_del(s, a, 100), 0, "the old session's end leaves the new row");
  cr_assert_eq(tern__rstore_commit(s), 0);
  cr_assert_eq(tern__rstore_begin(s), 0);
  cr_assert_eq(tern__rstore_reset_del(s, b, 300), 0);
  tern__rstore_rollback(s); /* uncommitted: b's row stays */
  tern__rstore_close(s);
  s = open_at(dbpath, 0);
  rows r = {0};
  cr_assert_eq(tern__rstore_begin(s), 0);
  cr_assert_eq(tern__rstore_reset_take(s, take_row, &r), 2);
  cr_assert_eq(tern__rstore_commit(s), 0);
  cr_assert_eq(r.n, 2);
  int ia = r.dev[0][0] == 1 ? 0 : 1;
  cr_assert_eq(r.time_us[ia], 200);
  cr_assert_eq(memcmp(r.addr[ia], at2, 18), 0);
  cr_assert_eq(r.time_us[1 - ia], 300);
  tern__rstore_close(s);
  s = open_at(dbpath, 0);
  memset(&r, 0, sizeof(r));
  cr_assert_eq(tern__rstore_reset_take(s, take_row, &r), 0, "taken rows are gone");
  tern__rstore_close(s);
}

/* A v3 store (before reset rows) gets the table, messages kept. */
Test(rstore, migrates_v3_to_v7_with_reset_rows) {
  tern__rstore *s = open_at(dbpath, 0);
  put(s, "alice", "carol", 1, 1, 1, NULL);
  tern__rstore_close(s);
  sqlite3 *db;
  cr_assert_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
  cr_assert_eq(sqlite3_exec(db, "DROP TABLE resets; ALTER TABLE inbox DROP COLUMN peer;"
                                "DROP TABLE members; DROP TABLE gcursors; ALTER TABLE inbox DROP COLUMN gmembers;"
                                "ALTER TABLE inbox DROP COLUMN gdelivered;"
                                "ALTER TABLE hellos DROP COLUMN settled; PRAGMA user_version = 3", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
  s = open_at(dbpath, 0);
  cr_assert_eq(user_version(dbpath), 7);
  cr_assert_eq(count(s), 1);
  uint8_t dev[32] = {7}, at[18] = {0};
  cr_assert_eq(tern__rstore_reset_put(s, dev, 1, at), 0);
  tern__rstore_close(s);
}

/* A v4 store (before carbons) gets the peer column; its messages read
 * back as plain messages (peer ""). */
static int peer_is_empty(void *ctx, const tern__rmsg *m) {
  cr_assert_str_eq(m->peer, "");
  (*(int *)ctx)++;
  return 0;
}

Test(rstore, migrates_v4_to_v7_and_old_messages_are_no_carbons) {
  tern__rstore *s = open_at(dbpath, 0);
  put(s, "alice", "carol", 1, 1, 1, NULL);
  tern__rstore_close(s);
  sqlite3 *db;
  cr_assert_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
  cr_assert_eq(sqlite3_exec(db, "ALTER TABLE inbox DROP COLUMN peer; ALTER TABLE hellos DROP COLUMN settled;"
                                "DROP TABLE members; DROP TABLE gcursors; ALTER TABLE inbox DROP COLUMN gmembers;"
                                "ALTER TABLE inbox DROP COLUMN gdelivered;"
                                "PRAGMA user_version = 4", NULL,
                            NULL, NULL),
               SQLITE_OK);
  sqlite3_close(db);
  s = open_at(dbpath, 0);
  cr_assert_eq(user_version(dbpath), 7);
  int n = 0;
  cr_assert_eq(tern__rstore_fetch(s, "alice", 0, 10, peer_is_empty, &n), 1);
  cr_assert_eq(n, 1);
  tern__rstore_close(s);
}

Test(rstore, refuses_bad_config) {
  tern__rstore *s = NULL;
  tern__rstore_config cfg = {.path = ":memory:", .synchronous = 7};
  cr_assert_eq(tern__rstore_open(&s, &cfg, NULL, 0), TERN_EINVAL);
  cr_assert_null(s);
  char notdir[4300];
  snprintf(notdir, sizeof notdir, "%s/missing/relay.db", dir);
  cfg = (tern__rstore_config){.path = notdir};
  char err[256];
  cr_assert_eq(tern__rstore_open(&s, &cfg, err, sizeof err), TERN_ESTORE);
  cr_assert_neq(err[0], 0);
}

static long long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* A full disk at COMMIT (as WAL mode fails) rolls the transaction back and
 * says so; the disk reserve is given back (its file deleted), deletions
 * still commit, and taking the reserve again first gives the pages the
 * deletions freed back to the file system (a new store is incremental
 * auto_vacuum). */
Test(rstore, full_commit_and_the_disk_reserve) {
  tern__rstore_config cfg = {.path = dbpath, .synchronous = 1, .reserve_bytes = 256 * 1024};
  tern__rstore *s = NULL;
  char err[256], reserve[4300];
  cr_assert_eq(tern__rstore_open(&s, &cfg, err, sizeof err), 0, "%s", err);
  snprintf(reserve, sizeof reserve, "%s-reserve", dbpath);
  cr_assert_eq(file_size(reserve), 256 * 1024, "the reserve is taken at open");
  cr_assert_eq(tern__rstore_reserve_held(s), 1);
  static uint8_t body[3000];
  uint64_t seq, prev;
  cr_assert_eq(tern__rstore_begin(s), 0);
  for (uint64_t cmid = 1; cmid <= 200; cmid++) {
    tern__rmsg m = {.ts = 1, .cmid = cmid, .from = "carol", .sender_dev = dev(1), .body = body,
                    .body_len = sizeof body};
    cr_assert_eq(tern__rstore_append(s, "alice", &m, &seq, &prev), 0);
  }
  cr_assert_eq(tern__rstore_commit(s), 0);
  /* The commit itself fails: nothing of the transaction stays. */
  cr_assert_eq(tern__rstore_begin(s), 0);
  tern__rmsg m = {.ts = 1, .cmid = 201, .from = "carol", .sender_dev = dev(1), .body = body,
                  .body_len = sizeof body};
  cr_assert_eq(tern__rstore_append(s, "alice", &m, &seq, &prev), 0);
  tern__rstore_fault_commit(s, 1);
  cr_assert_eq(tern__rstore_commit(s), TERN_ESTORE);
  cr_assert_eq(tern__rstore_last_full(s), 1);
  cr_assert_not_null(strstr(tern__rstore_errmsg(s), "COMMIT: database or disk is full"), "%s",
                     tern__rstore_errmsg(s));
  tern__rstore_rollback(s);
  cr_assert_eq(tern__rstore_in_txn(s), 0);
  cr_assert_eq(count(s), 200);
  /* Given back: the file is gone, and the failure is still the one reported. */
  cr_assert_eq(tern__rstore_release_reserve(s), 256 * 1024);
  cr_assert_eq(file_size(reserve), -1);
  cr_assert_eq(tern__rstore_reserve_held(s), 0);
  cr_assert_eq(tern__rstore_release_reserve(s), 0, "once");
  cr_assert_not_null(strstr(tern__rstore_errmsg(s), "COMMIT"), "%s", tern__rstore_errmsg(s));
  /* Deliveries go on and delete; taking the reserve back shrinks the file. */
  device(s, "alice", 5);
  cr_assert_eq(tern__rstore_ack(s, "alice", dev(5), 200, NULL, 0, NULL, NULL), 0, "%s",
               tern__rstore_errmsg(s));
  cr_assert_eq(count(s), 0);
  cr_assert_eq(tern__rstore_begin(s), 0);
  cr_assert_eq(tern__rstore_take_reserve(s), TERN_EINVAL, "not inside a transaction");
  tern__rstore_rollback(s);
  long long before = file_size(dbpath);
  cr_assert_eq(tern__rstore_take_reserve(s), 1, "%s", tern__rstore_errmsg(s));
  cr_assert_eq(tern__rstore_reserve_held(s), 1);
  cr_assert_eq(file_size(reserve), 256 * 1024);
  long long after = file_size(dbpath);
  cr_assert_lt(after, before / 4, "freed pages went back to the disk: %lld -> %lld bytes", before,
               after);
  cr_assert_eq(put(s, "alice", "carol", 1, 202, 1, NULL), 201, "numbering goes on");
  tern__rstore_close(s);
  /* Without a reserve configured, it is always "held". */
  s = open_mem();
  cr_assert_eq(tern__rstore_reserve_held(s), 1);
  cr_assert_eq(tern__rstore_release_reserve(s), 0);
  cr_assert_eq(tern__rstore_take_reserve(s), 1);
  tern__rstore_close(s);
}

Test(rstore, fault_dup_append_stores_a_cmid_again) {
  tern__rstore *s = open_mem();
  cr_assert_eq(put(s, "bob", "alice", 1, 9, 1, NULL), 1);
  tern__rmsg m = {.ts = 2, .cmid = 9, .from = "alice", .sender_dev = dev(1),
                  .body = (const uint8_t *)"body 9", .body_len = 6};
  uint64_t seq, prev, ts;
  cr_assert_eq(tern__rstore_append(s, "bob", &m, &seq, &prev), TERN_EEXIST);
  cr_assert_eq(tern__rstore_append_fault_dup(s, "bob", &m, &seq, &prev), 0);
  cr_assert_eq(seq, 2);
  cr_assert_eq(count(s), 2);
  cr_assert_eq(tern__rstore_dedup_get(s, dev(1), 9, &seq, &ts), 1);
  cr_assert_eq(seq, 2, "the dedup record names the new copy");
  tern__rstore_close(s);
}

Test(rstore, refusals_say_why) {
  tern__rstore *s = open_mem();
  cr_assert_eq(tern__rstore_ack(s, "alice", dev(3), 1, NULL, 0, NULL, NULL), TERN_ENOENT);
  cr_assert_not_null(strstr(tern__rstore_errmsg(s), "not registered"), "%s", tern__rstore_errmsg(s));
  cr_assert_eq(tern__rstore_last_full(s), 0);
  device(s, "bob", 3);
  uint64_t c;
  cr_assert_eq(tern__rstore_device(s, "alice", dev(3), &c), TERN_EINVAL);
  cr_assert_not_null(strstr(tern__rstore_errmsg(s), "another user"), "%s", tern__rstore_errmsg(s));
  tern__rstore_close(s);
}

/* On a full disk the relay takes a device's ack in steps that fit in the
 * room it has: ack_some stops where the bodies exceed its budget (but
 * always takes at least one message), and leaves the sacks for the last
 * step. */
Test(rstore, ack_some_takes_acks_in_steps_by_body_size) {
  tern__rstore *s = open_mem();
  static uint8_t body[1000];
  uint64_t seq, prev;
  for (uint64_t cmid = 1; cmid <= 10; cmid++) {
    tern__rmsg m = {.ts = 1, .cmid = cmid, .from = "carol", .sender_dev = dev(1), .body = body,
                    .body_len = sizeof body};
    cr_assert_eq(tern__rstore_append(s, "alice", &m, &seq, &prev), 0);
  }
  device(s, "alice", 5);
  uint64_t reached = 0, sack = 12;
  acked a = {0};
  /* Each message costs its body and a page (4096 bytes). */
  uint64_t two = 2 * (1000 + 4096);
  cr_assert_eq(tern__rstore_ack_some(s, "alice", dev(5), 10, &sack, 1, two + 500, &reached, on_ack,
                                     &a), 1);
  cr_assert_eq(reached, 2, "two messages fit, three do not");
  cr_assert_eq(a.n, 2);
  cr_assert_eq(count(s), 8, "and what it took in is deleted");
  cr_assert_eq(tern__rstore_ack_some(s, "alice", dev(5), 10, NULL, 0, 10, &reached, on_ack, &a), 1);
  cr_assert_eq(reached, 3, "at least one message per step");
  cr_assert_eq(tern__rstore_ack_some(s, "alice", dev(5), 10, NULL, 0, UINT64_MAX, &reached, on_ack,
                                     &a), 0);
  cr_assert_eq(reached, 10);
  cr_assert_eq(a.n, 10, "each message reported once");
  cr_assert_eq(count(s), 0);
  cr_assert_eq(tern__rstore_ack_budget(s), UINT64_MAX, "no reserve: no limit");
  tern__rstore_close(s);
}

/* With a reserve, a transaction's budget is a quarter of it, counting each
 * message's body and a page: txn_full says when to commit first, and
 * ack_budget is what is left (for ack_some). */
Test(rstore, transactions_are_bounded_by_a_quarter_of_the_reserve) {
  tern__rstore_config cfg = {.path = dbpath, .synchronous = 1, .reserve_bytes = 96 * 1024};
  tern__rstore *s = NULL;
  char err[256];
  cr_assert_eq(tern__rstore_open(&s, &cfg, err, sizeof err), 0, "%s", err);
  static uint8_t body[3000];
  uint64_t seq, prev;
  cr_assert_eq(tern__rstore_begin(s), 0);
  cr_assert_eq(tern__rstore_txn_full(s, 100000), 0, "an empty transaction takes any message");
  cr_assert_eq(tern__rstore_ack_budget(s), 24 * 1024);
  for (uint64_t cmid = 1; cmid <= 3; cmid++) {
    cr_assert_eq(tern__rstore_txn_full(s, sizeof body), 0, "message %llu fits",
                 (unsigned long long)cmid);
    tern__rmsg m = {.ts = 1, .cmid = cmid, .from = "carol", .sender_dev = dev(1), .body = body,
                    .body_len = sizeof body};
    cr_assert_eq(tern__rstore_append(s, "alice", &m, &seq, &prev), 0);
  }
  /* 3 x (3000 + 4096) = 21288 of 24576. */
  cr_assert_eq(tern__rstore_ack_budget(s), 24 * 1024 - 3 * (3000 + 4096));
  cr_assert_eq(tern__rstore_txn_full(s, sizeof body), 1, "a fourth does not");
  cr_assert_eq(tern__rstore_txn_full(s, 0), 1, "nor any other: each costs a page at least");
  cr_assert_eq(tern__rstore_commit(s), 0);
  cr_assert_eq(tern__rstore_ack_budget(s), 24 * 1024, "a new transaction, a new budget");
  /* An ack counts what it takes in. */
  device(s, "alice", 5);
  cr_assert_eq(tern__rstore_begin(s), 0);
  uint64_t reached = 0;
  cr_assert_eq(tern__rstore_ack_some(s, "alice", dev(5), 3, NULL, 0, tern__rstore_ack_budget(s),
                                     &reached, NULL, NULL), 0);
  cr_assert_eq(reached, 3);
  cr_assert_eq(tern__rstore_ack_budget(s), 24 * 1024 - 3 * (3000 + 4096));
  tern__rstore_rollback(s);
  cr_assert_eq(tern__rstore_ack_budget(s), 24 * 1024);
  /* Outside a transaction nothing accumulates. */
  cr_assert_eq(tern__rstore_ack(s, "alice", dev(5), 1, NULL, 0, NULL, NULL), 0);
  cr_assert_eq(tern__rstore_ack_budget(s), 24 * 1024);
  tern__rstore_close(s);
}

/* On a (simulated) 512 KiB disk with a 96 KiB reserve, transactions that
 * keep to their budget fill the disk until a commit, or the checkpoint
 * after one, finds it full. A checkpoint that does is reported
 * (short_of_room, the commit itself holding); a commit that does fails
 * whole. Either way, once the reserve is given back, the checkpoint fits
 * and acks commit in steps within their budget, which deletes what they
 * acknowledge, and the reserve can be taken again: what ternd_test found
 * stuck for ever. Twice over, with bodies of 1000, 3000 and 5000 bytes,
 * 1 to 3 a transaction; between them, both kinds of failure happen. */
Test(rstore, a_full_disk_always_leaves_room_for_the_checkpoint_and_the_acks) {
  int commit_failed = 0, checkpoint_failed = 0;
  for (int run = 0; run < 9; run++) {
    int per_txn = 1 + run % 3;
    size_t size = run < 3 ? 3000 : run < 6 ? 1000 : 5000;
    char sub[4200], path[4300];
    snprintf(sub, sizeof sub, "%s/%d", dir, run);
    cr_assert_eq(mkdir(sub, 0700), 0);
    snprintf(path, sizeof path, "%s/relay.db", sub);
    tt_simdisk *disk = tt_simdisk_new(path, 512 * 1024);
    cr_assert_not_null(disk);
    tern__rstore_config cfg = {.path = path, .synchronous = 1, .reserve_bytes = 96 * 1024,
                               .vfs = tt_simdisk_vfs(disk), .disk_free = tt_simdisk_free_bytes,
                               .disk_ctx = disk};
    tern__rstore *s = NULL;
    char err[256];
    cr_assert_eq(tern__rstore_open(&s, &cfg, err, sizeof err), 0, "%s", err);
    device(s, "alice", 5);
    static uint8_t body[5000];
    uint64_t seq, prev, cmid = 0, stored = 0, deleted = 0;
    for (int cycle = 0; cycle < 2; cycle++) {
      int full = 0;
      uint64_t refused = tt_simdisk_refused(disk);
      while (!full) {
        cr_assert_lt(cmid, 1000, "the disk never filled up");
        cr_assert_eq(tern__rstore_begin(s), 0);
        int k = 0, rc = 0;
        for (; k < per_txn && rc == 0 && !tern__rstore_txn_full(s, size); k++) {
          tern__rmsg m = {.ts = 1, .cmid = ++cmid, .from = "carol", .sender_dev = dev(1),
                          .body = body, .body_len = size};
          rc = tern__rstore_append(s, "alice", &m, &seq, &prev);
        }
        if (rc == 0) rc = tern__rstore_commit(s);
        if (rc < 0) {
          cr_assert_eq(tern__rstore_last_full(s), 1, "%s", tern__rstore_errmsg(s));
          tern__rstore_rollback(s);
          cmid -= (uint64_t)k;
          commit_failed++;
          full = 1;
        } else {
          stored += (uint64_t)k;
          if (tern__rstore_short_of_room(s)) {
            cr_assert_not_null(strstr(tern__rstore_errmsg(s), "checkpoint: database or disk is full"),
                               "%s", tern__rstore_errmsg(s));
            checkpoint_failed++;
            full = 1;
          }
        }
      }
      cr_assert_eq(count(s), stored - deleted, "every committed message is there, no other");
      cr_assert_gt(tt_simdisk_refused(disk), refused);
      cr_assert_eq(tern__rstore_release_reserve(s), 96 * 1024);
      cr_assert_eq(tern__rstore_short_of_room(s), 0, "the checkpoint fit in the reserve");
      /* The acks, in steps, commit; what they take in is deleted. */
      uint64_t reached = 0;
      int more = 1, steps = 0;
      while (more) {
        cr_assert_lt(steps++, 1000);
        cr_assert_eq(tern__rstore_begin(s), 0);
        more = tern__rstore_ack_some(s, "alice", dev(5), stored, NULL, 0, tern__rstore_ack_budget(s),
                                     &reached, NULL, NULL);
        cr_assert_geq(more, 0, "run %d, ack step %d: %s", run, steps, tern__rstore_errmsg(s));
        cr_assert_eq(tern__rstore_commit(s), 0, "run %d, ack step %d: %s", run, steps,
                     tern__rstore_errmsg(s));
      }
      cr_assert_eq(reached, stored);
      cr_assert_eq(count(s), 0);
      deleted = stored;
      cr_assert_eq(tern__rstore_take_reserve(s), 1, "run %d: %s", run, tern__rstore_errmsg(s));
    }
    cr_assert_eq(put(s, "alice", "carol", 1, ++cmid, 1, NULL), stored + 1, "and it goes on");
    tern__rstore_close(s);
    tt_simdisk_free(disk);
  }
  cr_assert_gt(commit_failed, 0, "a COMMIT found the disk full");
  cr_assert_gt(checkpoint_failed, 0, "a checkpoint found the disk full");
}

/* Dedup rows do not outlive what the sender may resend (issue 17, item 8):
 * after SETTLED, a device's rows below its floor are gone, the floor is
 * kept across a reopen and never goes down, and other devices keep
 * theirs. */
/* One integer read by another connection (0 without a row). */
static uint64_t read_u64(const char *path, const char *q_text) {
  sqlite3 *db = NULL;
  cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
  sqlite3_stmt *q = NULL;
  cr_assert_eq(sqlite3_prepare_v2(db, q_text, -1, &q, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
  uint64_t v = 0;
  if (sqlite3_step(q) == SQLITE_ROW) v = (uint64_t)sqlite3_column_int64(q, 0);
  sqlite3_finalize(q);
  sqlite3_close(db);
  return v;
}

static int64_t dedup_rows(const char *path) { return (int64_t)read_u64(path, "SELECT count(*) FROM dedup"); }

Test(rstore, settled_cmids_leave_no_dedup_rows) {
  tern__rstore *s = open_at(dbpath, 0);
  cr_assert_eq(tern__rstore_begin(s), 0);
  for (uint64_t c = 1; c <= 1000; c++) put(s, "bob", "alice", 1, c, 1, NULL);
  for (uint64_t c = 1; c <= 10; c++) put(s, "alice", "bob", 2, c, 1, NULL);
  cr_assert_eq(tern__rstore_commit(s), 0);
  cr_assert_eq(dedup_rows(dbpath), 1010, "one row per message while it may come again");

  cr_assert_eq(tern__rstore_begin(s), 0);
  cr_assert_eq(tern__rstore_settled(s, dev(1), 998), 0);
  cr_assert_eq(tern__rstore_commit(s), 0);
  cr_assert_eq(dedup_rows(dbpath), 3 + 10, "alice's device keeps only 998..1000; bob's all");
  uint64_t seq, ts, below;
  cr_assert_eq(tern__rstore_dedup_get(s, dev(1), 999, &seq, &ts), 1, "an unsettled one still answers");
  cr_assert_eq(seq, 999);
  cr_assert_eq(tern__rstore_dedup_get(s, dev(1), 997, &seq, &ts), 0);

  cr_assert_eq(tern__rstore_begin(s), 0);
  cr_assert_eq(tern__rstore_settled(s, dev(1), 5), 0, "a lower floor is no news");
  cr_assert_eq(tern__rstore_commit(s), 0);
  tern__rstore_close(s);
  s = open_at(dbpath, 0);
  cr_assert_eq(tern__rstore_settled_get(s, dev(1), &below), 0);
  cr_assert_eq(below, 998, "kept across a reopen, never lowered");
  cr_assert_eq(tern__rstore_settled_get(s, dev(3), &below), 0);
  cr_assert_eq(below, 0, "a device that never settled");
  cr_assert_eq(tern__rstore_begin(s), 0);
  cr_assert_eq(tern__rstore_settled(s, dev(1), 1001), 0);
  cr_assert_eq(tern__rstore_commit(s), 0);
  cr_assert_eq(dedup_rows(dbpath), 10);
  tern__rstore_close(s);
}

/* The cluster store's audit compares replicas by tern__rstore_digest: the
 * same rows give the same digest whatever history made them (one
 * transaction or several, a rolled-back one between, an image loaded),
 * and one row more gives another. */
Test(rstore, digest_follows_the_rows_not_the_history) {
  tern__rstore *a = open_mem(), *b = open_mem(), *c = open_mem();
  uint8_t da[16], db[16], dc[16];
  cr_assert_eq(tern__rstore_begin(a), 0);
  for (uint64_t i = 1; i <= 3; i++) put(a, "alice", "carol", 1, i, 10 * i, NULL);
  cr_assert_eq(tern__rstore_digest(a, da), TERN_EINVAL, "not inside a transaction");
  cr_assert_eq(tern__rstore_commit(a), 0);
  for (uint64_t i = 1; i <= 3; i++) {
    cr_assert_eq(tern__rstore_begin(c), 0);
    put(c, "alice", "carol", 1, i, 10 * i, NULL);
    cr_assert_eq(tern__rstore_commit(c), 0);
    cr_assert_eq(tern__rstore_begin(c), 0);
    put(c, "bob", "dave", 2, 100 + i, 5, NULL);
    tern__rstore_rollback(c);
  }
  cr_assert_eq(tern__rstore_digest(a, da), 0, "%s", tern__rstore_errmsg(a));
  cr_assert_eq(tern__rstore_digest(c, dc), 0, "%s", tern__rstore_errmsg(c));
  cr_assert_eq(memcmp(da, dc, 16), 0, "the same rows by another history");
  uint8_t *img = NULL;
  size_t len = 0;
  cr_assert_eq(tern__rstore_image(a, &img, &len), 0);
  cr_assert_eq(tern__rstore_load_image(b, img, len), 0);
  free(img);
  cr_assert_eq(tern__rstore_digest(b, db), 0);
  cr_assert_eq(memcmp(da, db, 16), 0, "an image of a has a's digest");
  cr_assert_eq(tern__rstore_begin(b), 0);
  put(b, "alice", "carol", 1, 4, 40, NULL);
  cr_assert_eq(tern__rstore_commit(b), 0);
  cr_assert_eq(tern__rstore_digest(b, db), 0);
  cr_assert_neq(memcmp(da, db, 16), 0, "a row more, another digest");
  /* A device's cursor is a row too. */
  cr_assert_eq(tern__rstore_begin(c), 0);
  device(c, "alice", 3);
  cr_assert_eq(tern__rstore_commit(c), 0);
  cr_assert_eq(tern__rstore_digest(c, dc), 0);
  cr_assert_neq(memcmp(da, dc, 16), 0);
  tern__rstore_close(a);
  tern__rstore_close(b);
  tern__rstore_close(c);
}

/* The counters every append moves (an inbox's next seq, a chain's last)
 * are cached and written back at COMMIT (spec/store.md, "Counters cached
 * per transaction"): another connection sees them after the commit, and
 * neither a failed commit nor a loaded image leaves the cache ahead of
 * the tables. */

Test(rstore, cached_counters_reach_the_tables_at_commit) {
  tern__rstore *s = open_at(dbpath, 0);
  cr_assert_eq(tern__rstore_begin(s), 0);
  for (uint64_t i = 1; i <= 3; i++) put(s, "alice", "carol", 1, i, 1, NULL);
  put(s, "alice", "dave", 2, 1, 1, NULL);
  cr_assert_eq(read_u64(dbpath, "SELECT count(*) FROM users"), 0, "nothing before the commit");
  cr_assert_eq(tern__rstore_commit(s), 0);
  cr_assert_eq(read_u64(dbpath, "SELECT next_seq FROM users WHERE user = 'alice'"), 5);
  cr_assert_eq(read_u64(dbpath, "SELECT last_seq FROM chains WHERE user = 'alice' AND sender = 'carol'"), 3);
  cr_assert_eq(read_u64(dbpath, "SELECT last_seq FROM chains WHERE user = 'alice' AND sender = 'dave'"), 4);
  /* Alone (no transaction), an append writes its counters at once. */
  put(s, "bob", "carol", 1, 9, 1, NULL);
  cr_assert_eq(read_u64(dbpath, "SELECT next_seq FROM users WHERE user = 'bob'"), 2);
  tern__rstore_close(s);
  s = open_at(dbpath, 0);
  uint64_t prev = 0;
  cr_assert_eq(put(s, "alice", "carol", 1, 4, 1, &prev), 5);
  cr_assert_eq(prev, 3);
  tern__rstore_close(s);
}

Test(rstore, a_failed_commit_forgets_the_cached_counters) {
  tern__rstore *s = open_mem();
  cr_assert_eq(tern__rstore_begin(s), 0);
  put(s, "alice", "carol", 1, 1, 1, NULL);
  cr_assert_eq(tern__rstore_commit(s), 0);
  cr_assert_eq(tern__rstore_begin(s), 0);
  cr_assert_eq(put(s, "alice", "carol", 1, 2, 1, NULL), 2);
  tern__rstore_fault_commit(s, 1);
  cr_assert_eq(tern__rstore_commit(s), TERN_ESTORE);
  cr_assert_eq(tern__rstore_in_txn(s), 0);
  uint64_t prev = 0;
  cr_assert_eq(tern__rstore_begin(s), 0);
  cr_assert_eq(put(s, "alice", "carol", 1, 2, 1, &prev), 2, "seq 2 again: the failed commit took it back");
  cr_assert_eq(prev, 1);
  cr_assert_eq(tern__rstore_commit(s), 0);
  tern__rstore_close(s);
}

Test(rstore, a_loaded_image_brings_its_own_counters) {
  tern__rstore *s = open_mem();
  put(s, "alice", "carol", 1, 1, 1, NULL);
  put(s, "alice", "carol", 1, 2, 1, NULL);
  uint8_t *img = NULL;
  size_t len = 0;
  cr_assert_eq(tern__rstore_image(s, &img, &len), 0);
  cr_assert_eq(tern__rstore_begin(s), 0);
  for (uint64_t i = 3; i <= 5; i++) put(s, "alice", "carol", 1, i, 1, NULL);
  cr_assert_eq(tern__rstore_commit(s), 0);
  cr_assert_eq(tern__rstore_load_image(s, img, len), 0);
  free(img);
  uint64_t prev = 0;
  cr_assert_eq(put(s, "alice", "carol", 1, 3, 1, &prev), 3, "the image's next seq, not the cache's 6");
  cr_assert_eq(prev, 2);
  tern__rstore_close(s);
}

/* Two connections to one file (two relays sharing a store): each sees the
 * counters the other committed, not what its own cache read before. */
Test(rstore, a_second_connection_moves_the_counters_the_first_had_cached) {
  tern__rstore *a = open_at(dbpath, 0), *b = open_at(dbpath, 0);
  uint64_t prev = 0;
  cr_assert_eq(tern__rstore_begin(a), 0);
  cr_assert_eq(put(a, "alice", "carol", 1, 1, 1, NULL), 1);
  cr_assert_eq(tern__rstore_commit(a), 0);
  cr_assert_eq(tern__rstore_begin(b), 0);
  cr_assert_eq(put(b, "alice", "carol", 1, 2, 1, &prev), 2);
  cr_assert_eq(prev, 1);
  cr_assert_eq(tern__rstore_commit(b), 0);
  cr_assert_eq(tern__rstore_begin(a), 0);
  cr_assert_eq(put(a, "alice", "carol", 1, 3, 1, &prev), 3, "not the 2 a cached");
  cr_assert_eq(prev, 2);
  cr_assert_eq(tern__rstore_commit(a), 0);
  put(b, "alice", "carol", 1, 4, 1, &prev); /* alone, outside a transaction */
  cr_assert_eq(prev, 3);
  tern__rstore_close(a);
  tern__rstore_close(b);
}
