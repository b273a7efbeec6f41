/*
 * The relay store interface (relay_store.h) on the SQLite engine
 * (rstore.c), and the disk-full policy, which lives here and nowhere else
 * (spec/store.md, "A full disk"):
 *   - a round's transaction is opened by the first call that needs it;
 *   - a transaction writes at most the engine's budget (a quarter of the
 *     disk reserve): room() asks for a commit first when a message would
 *     take it past that, and acked() takes in acknowledgements in parts;
 *   - a failure that was a full disk, or a commit whose checkpoint found
 *     the disk full, gives the reserve back, so that deliveries, acks and
 *     receipts go on; room() answers FULL until it is taken again;
 *   - the reserve is tried again after a commit, every RETRY_MS.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "store/relay_store.h"
#include "store/rstore.h"

/* How often a store without its reserve tries to take it back. */
#define RETRY_MS 2000

typedef struct sqlite_store {
  tern__relay_store base;
  tern__rstore *db;
  tern__log_fn log;
  void *log_ctx;
  uint64_t retry_ms;   /* when to try taking the reserve again */
#ifdef TERN_TEST_HOOKS
  int fault_dup;
  int fault_carbon2;
  int fault_leave_early;
  int fault_due;
#endif
} sqlite_store;

static sqlite_store *S(tern__relay_store *s) { return (sqlite_store *)s; }
static const sqlite_store *CS(const tern__relay_store *s) { return (const sqlite_store *)s; }

tern__rstore *tern__relay_sqlite_engine(tern__relay_store *s) { return S(s)->db; }

static int ensure_txn(sqlite_store *s) {
  return tern__rstore_in_txn(s->db) ? 0 : tern__rstore_begin(s->db);
}

/* The disk is full: gives the reserve back (if held), so that acks,
 * receipts and deletions go on; new messages wait until it is taken
 * again. `why`: the reason. Outside a transaction only. */
static void give_back(sqlite_store *s, uint64_t now_ms, const char *why) {
  uint64_t freed = tern__rstore_release_reserve(s->db);
  if (!freed) return;
  s->retry_ms = now_ms + RETRY_MS;
  tern__logf(s->log, s->log_ctx, 0,
             "message store: the disk is full (%s); gave back the %llu-byte disk reserve so that "
             "deliveries, acks and receipts go on; new messages are refused (BUSY) until it can be "
             "taken again",
             why, (unsigned long long)freed);
}

static int sq_put(tern__relay_store *st, tern__rs_put *put, size_t n) {
  sqlite_store *s = S(st);
  int rc = ensure_txn(s);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    tern__rs_put *p = &put[i];
    uint64_t seq = 0, ts = 0, prev = 0;
    int found = 0;
    p->carbon_seq = 0;
#ifdef TERN_TEST_HOOKS
    if (!s->fault_dup)
#endif
      found = tern__rstore_dedup_get(s->db, p->sender_dev, p->cmid, &seq, &ts);
    if (found < 0) return found;
    if (found) {
      p->result = TERN__RS_EARLIER;
      p->seq = seq;
      p->stored_ts = ts;
      continue;
    }
    if (tern__is_group(p->to)) {
      int role = tern__rstore_group_role(s->db, p->to, p->from);
      if (role < 0 && role != TERN_ENOENT) return role;
      if (role != 1) {
        p->result = role == 0 ? TERN__RS_NOT_MEMBER : TERN__RS_NO_GROUP;
        continue;
      }
    }
    if (p->prev_cmid) {
      int have = tern__rstore_dedup_get(s->db, p->sender_dev, p->prev_cmid, &seq, &ts);
      if (have < 0) return have;
      if (!have) {
        p->result = TERN__RS_NO_PREV;
        continue;
      }
    }
    if (tern__rs_put_has_quota(p)) {
      uint64_t tm, tb, fm, fb;
      if ((rc = tern__rstore_held(s->db, p->to, 0, &tm, &tb)) < 0 ||
          (rc = tern__rstore_held(s->db, p->from, 1, &fm, &fb)) < 0)
        return rc;
      int over = tern__rs_quota(p, tm, tb, fm, fb);
      if (over) {
        p->result = over;
        continue;
      }
    }
    tern__rmsg m = {.ts = p->ts, .cmid = p->cmid, .flags = p->flags, .from = p->from,
                    .sender_dev = p->sender_dev, .body = p->body, .body_len = p->body_len};
    if (tern__is_group(p->to) &&
        (rc = tern__rstore_group_count_others(s->db, p->to, p->from, &m.gmembers)) < 0)
      return rc;
#ifdef TERN_TEST_HOOKS
    if (s->fault_dup) rc = tern__rstore_append_fault_dup(s->db, p->to, &m, &seq, &prev);
    else
#endif
      rc = tern__rstore_append(s->db, p->to, &m, &seq, &prev);
    if (rc < 0) return rc;
    p->result = TERN__RS_STORED;
    p->seq = seq;
    p->stored_ts = p->ts;
    p->prev_seq = prev;
    if (p->carbon && strcmp(p->to, p->from) && !tern__is_group(p->to)) {
      int other = tern__rstore_other_device(s->db, p->from, p->sender_dev);
      if (other < 0) return other;
      unsigned copies = other ? 1 : 0;
#ifdef TERN_TEST_HOOKS
      if (copies && s->fault_carbon2) copies = 2;
#endif
      m.flags |= TERN__RS_CARBON;
      m.peer = p->to;
      for (unsigned k = 0; k < copies; k++)
        if ((rc = tern__rstore_append_carbon(s->db, p->from, &m, &p->carbon_seq, &prev)) < 0) return rc;
    }
  }
  return rc;
}

static int sq_due(tern__relay_store *st, const char *user, uint64_t after, size_t limit,
                  int (*cb)(void *ctx, const tern__rmsg *m), void *ctx) {
  int rc = ensure_txn(S(st));
#ifdef TERN_TEST_HOOKS
  if (rc == 0 && S(st)->fault_due) return TERN_ESTORE;
#endif
  return rc < 0 ? rc : tern__rstore_fetch(S(st)->db, user, after, limit, cb, ctx);
}

static int sq_device(tern__relay_store *st, const char *user, const uint8_t dev[32],
                     uint64_t *cursor) {
  int rc = ensure_txn(S(st));
  return rc < 0 ? rc : tern__rstore_device(S(st)->db, user, dev, cursor);
}

static int sq_hello_fresh(tern__relay_store *st, const uint8_t dev[32], uint64_t time_us) {
  int rc = ensure_txn(S(st));
  return rc < 0 ? rc : tern__rstore_hello_fresh(S(st)->db, dev, time_us);
}

static int sq_reset_put(tern__relay_store *st, const uint8_t dev[32], uint64_t time_us,
                        const uint8_t addr[18]) {
  int rc = ensure_txn(S(st));
  return rc < 0 ? rc : tern__rstore_reset_put(S(st)->db, dev, time_us, addr);
}

static int sq_reset_del(tern__relay_store *st, const uint8_t dev[32], uint64_t time_us) {
  int rc = ensure_txn(S(st));
  return rc < 0 ? rc : tern__rstore_reset_del(S(st)->db, dev, time_us);
}

static int sq_reset_take(tern__relay_store *st,
                         void (*cb)(void *ctx, const uint8_t dev[32], uint64_t time_us,
                                    const uint8_t addr[18]),
                         void *ctx) {
  int rc = ensure_txn(S(st));
  return rc < 0 ? rc : tern__rstore_reset_take(S(st)->db, cb, ctx);
}

static int sq_acked(tern__relay_store *st, const char *user, const uint8_t dev[32], uint64_t up_to,
                    const uint64_t *sacks, size_t n, uint64_t *reached, tern__rs_delivered_fn cb,
                    void *ctx) {
  sqlite_store *s = S(st);
  int rc = ensure_txn(s);
  if (rc < 0) return rc;
  return tern__rstore_ack_some(s->db, user, dev, up_to, sacks, n, tern__rstore_ack_budget(s->db),
                               reached, cb, ctx);
}

static int sq_floor(tern__relay_store *st, const char *user, uint64_t *floor) {
  int rc = ensure_txn(S(st));
  return rc < 0 ? rc : tern__rstore_floor(S(st)->db, user, floor);
}

static int sq_devices(tern__relay_store *st, const char *user, tern__rs_device_fn cb, void *ctx) {
  int rc = ensure_txn(S(st));
  return rc < 0 ? rc : tern__rstore_devices(S(st)->db, user, cb, ctx);
}

static int sq_device_remove(tern__relay_store *st, const uint8_t dev[32], char user[TERN_USER_MAX + 1]) {
  int rc = ensure_txn(S(st));
  return rc < 0 ? rc : tern__rstore_device_remove(S(st)->db, dev, user);
}

static int sq_notice_put(tern__relay_store *st, const uint8_t dev[32], int kind, uint64_t cmid,
                         int64_t code) {
  int rc = ensure_txn(S(st));
  return rc < 0 ? rc : tern__rstore_notice_put(S(st)->db, dev, kind, cmid, code);
}

static int sq_notice_list(tern__relay_store *st, const uint8_t dev[32],
                          int (*cb)(void *ctx, int kind, uint64_t cmid, int64_t code), void *ctx) {
  int rc = ensure_txn(S(st));
  return rc < 0 ? rc : tern__rstore_notice_list(S(st)->db, dev, cb, ctx);
}

static int sq_notice_del(tern__relay_store *st, const uint8_t dev[32], int kind, uint64_t cmid) {
  int rc = ensure_txn(S(st));
  return rc < 0 ? rc : tern__rstore_notice_del(S(st)->db, dev, kind, cmid);
}

static int sq_expire(tern__relay_store *st, uint64_t before_ts, tern__rs_expired_fn cb, void *ctx) {
  int rc = ensure_txn(S(st));
  return rc < 0 ? rc : tern__rstore_expire(S(st)->db, before_ts, cb, ctx);
}

static int sq_settled(tern__relay_store *st, const uint8_t dev[32], uint64_t below) {
  sqlite_store *s = S(st);
  int rc = ensure_txn(s);
  return rc < 0 ? rc : tern__rstore_settled(s->db, dev, below);
}

static int sq_settled_get(tern__relay_store *st, const uint8_t dev[32], uint64_t *below) {
  return tern__rstore_settled_get(S(st)->db, dev, below);
}

static int sq_group_set(tern__relay_store *st, const char *group, const char *const *users, size_t n,
                        uint64_t *point) {
  int rc = ensure_txn(S(st));
  return rc < 0 ? rc : tern__rstore_group_set(S(st)->db, group, users, n, point);
}

static int sq_group_role(tern__relay_store *st, const char *group, const char *user) {
  return tern__rstore_group_role(S(st)->db, group, user);
}

static int sq_group_members(tern__relay_store *st, const char *group,
                            int (*cb)(void *ctx, const char *user), void *ctx) {
  return tern__rstore_group_members(S(st)->db, group, cb, ctx);
}

static int sq_user_groups(tern__relay_store *st, const char *user, const uint8_t dev[32],
                          int (*cb)(void *ctx, const char *group), void *ctx) {
  return tern__rstore_user_groups(S(st)->db, user, dev, cb, ctx);
}

static int sq_gdevice(tern__relay_store *st, const char *group, const char *user, const uint8_t dev[32],
                      uint64_t *cursor, uint64_t *limit) {
  int rc = ensure_txn(S(st));
  return rc < 0 ? rc : tern__rstore_gdevice(S(st)->db, group, user, dev, cursor, limit);
}

static int sq_gacked(tern__relay_store *st, const char *group, const char *user, const uint8_t dev[32],
                     uint64_t up_to, uint64_t *reached, tern__rs_greceipt_fn cb, void *ctx) {
  int rc = ensure_txn(S(st));
  return rc < 0 ? rc : tern__rstore_gacked(S(st)->db, group, user, dev, up_to, reached, cb, ctx);
}

static int sq_group_devices(tern__relay_store *st, const char *group,
                            int (*cb)(void *ctx, const char *user, const uint8_t dev[32], uint64_t waiting),
                            void *ctx) {
  return tern__rstore_group_devices(S(st)->db, group, cb, ctx);
}

static int sq_notice_del_if(tern__relay_store *st, const uint8_t dev[32], int kind, uint64_t cmid,
                            int64_t code) {
  int rc = ensure_txn(S(st));
  return rc < 0 ? rc : tern__rstore_notice_del_if(S(st)->db, dev, kind, cmid, code);
}

static int sq_room(tern__relay_store *st, size_t body_len) {
  sqlite_store *s = S(st);
  if (!tern__rstore_reserve_held(s->db)) return TERN__RS_FULL;
  if (tern__rstore_in_txn(s->db) && tern__rstore_txn_full(s->db, body_len))
    return TERN__RS_COMMIT_FIRST;
  return TERN__RS_ROOM;
}

static int sq_commit(tern__relay_store *st, uint64_t now_ms) {
  sqlite_store *s = S(st);
  if (tern__rstore_in_txn(s->db) && tern__rstore_commit(s->db) < 0) return TERN_ESTORE;
  /* The commit holds, but its checkpoint found the disk full: give the
   * reserve back now, while the checkpoint still fits in it. */
  if (tern__rstore_short_of_room(s->db)) give_back(s, now_ms, tern__rstore_errmsg(s->db));
  if (!tern__rstore_reserve_held(s->db) && now_ms >= s->retry_ms) {
    s->retry_ms = now_ms + RETRY_MS;
    if (tern__rstore_take_reserve(s->db) == 1)
      tern__logf(s->log, s->log_ctx, 2,
                 "message store: the disk has room for its reserve again; accepting new messages");
    else
      tern__logf(s->log, s->log_ctx, 3,
                 "message store: no room for the disk reserve yet (%s); retrying in %u ms",
                 tern__rstore_errmsg(s->db), (unsigned)RETRY_MS);
  }
  return 0;
}

static void sq_rollback(tern__relay_store *st, uint64_t now_ms) {
  sqlite_store *s = S(st);
  int full = tern__rstore_last_full(s->db);
  char why[256];
  snprintf(why, sizeof why, "%s", tern__rstore_errmsg(s->db));
  tern__rstore_rollback(s->db);
  if (full) give_back(s, now_ms, why);
}

static uint64_t sq_wake_ms(const tern__relay_store *st) {
  const sqlite_store *s = CS(st);
  return tern__rstore_reserve_held(s->db) ? UINT64_MAX : s->retry_ms;
}

static const char *sq_errmsg(const tern__relay_store *st) { return tern__rstore_errmsg(CS(st)->db); }

static int sq_count(tern__relay_store *st, uint64_t *messages) {
  return tern__rstore_count(S(st)->db, messages);
}

static void sq_close(tern__relay_store *st) {
  if (!st) return;
  tern__rstore_close(S(st)->db);
  free(st);
}

#ifdef TERN_TEST_HOOKS
static void sq_fault(tern__relay_store *st, int kind, unsigned n) {
  if (kind == TERN__RS_FAULT_COMMIT) tern__rstore_fault_commit(S(st)->db, n);
  else if (kind == TERN__RS_FAULT_DUP) S(st)->fault_dup = n != 0;
  else if (kind == TERN__RS_FAULT_CARBON2) S(st)->fault_carbon2 = n != 0;
  else if (kind == TERN__RS_FAULT_LEAVE_EARLY) tern__rstore_fault_leave_early(S(st)->db, n != 0);
  else if (kind == TERN__RS_FAULT_DUE) S(st)->fault_due = n != 0;
}
#endif

static const tern__relay_store_ops sqlite_ops = {
    .put = sq_put,
    .due = sq_due,
    .device = sq_device,
    .hello_fresh = sq_hello_fresh,
    .reset_put = sq_reset_put,
    .reset_del = sq_reset_del,
    .reset_take = sq_reset_take,
    .acked = sq_acked,
    .floor = sq_floor,
    .devices = sq_devices,
    .device_remove = sq_device_remove,
    .notice_put = sq_notice_put,
    .notice_list = sq_notice_list,
    .notice_del = sq_notice_del,
    .expire = sq_expire,
    .group_set = sq_group_set,
    .group_role = sq_group_role,
    .group_members = sq_group_members,
    .user_groups = sq_user_groups,
    .gdevice = sq_gdevice,
    .gacked = sq_gacked,
    .group_devices = sq_group_devices,
    .notice_del_if = sq_notice_del_if,
    .settled = sq_settled,
    .settled_get = sq_settled_get,
    .room = sq_room,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .wake_ms = sq_wake_ms,
    .errmsg = sq_errmsg,
    .count = sq_count,
    .close = sq_close,
#ifdef TERN_TEST_HOOKS
    .fault = sq_fault,
#endif
};

int tern__relay_sqlite_open(tern__relay_store **out, const tern__rstore_config *cfg,
                            tern__log_fn log, void *log_ctx, char *err, size_t errcap) {
  *out = NULL;
  sqlite_store *s = calloc(1, sizeof(*s));
  if (!s) return TERN_ENOMEM;
  int rc = tern__rstore_open(&s->db, cfg, err, errcap);
  if (rc < 0) {
    free(s);
    return rc;
  }
  s->base.ops = &sqlite_ops;
  s->log = log;
  s->log_ctx = log_ctx;
  if (!tern__rstore_reserve_held(s->db))
    tern__logf(log, log_ctx, 0,
               "message store: no room on the disk for its reserve (%s); new messages are "
               "refused (BUSY) until there is",
               tern__rstore_errmsg(s->db));
  *out = &s->base;
  return 0;
}
