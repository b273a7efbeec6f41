/*
 * The client's store in SQLite: outbox, awaiting receipts, delivery state
 * and the next client message id. Each public call is one transaction;
 * the ones with several statements bracket them with BEGIN IMMEDIATE and
 * COMMIT so a crash leaves all of a call or none of it. spec/store.md has
 * the schema; cstore.h the contract.
 */
#include "store/cstore.h"
#include "store/sqlite.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/clock.h"

#define SCHEMA_VERSION 4

/* Keys of the meta table. */
#define NEXT_CMID "next_cmid"
#define HELLO_US "hello_us" /* the last HELLO timestamp sent; no row: none yet */
#define DELIVERED_LAST "delivered_last"

enum {
  C_BEGIN,
  C_COMMIT,
  C_ROLLBACK,
  C_META_GET,
  C_META_SET,
  C_META_RAISE,
  C_OUT_PUT,
  C_OUT_DEL,
  C_OUT_LOAD,
  C_OUT_COUNT,
  C_AWAIT_PUT,
  C_AWAIT_TAKE,
  C_APP_FIND,
  C_APP_PUT,
  C_APP_PRUNE,
  C_LIST,
  C_EXTRA_LOAD,
  C_EXTRA_CLEAR,
  C_EXTRA_PUT,
  C_NET_GET,
  C_NET_TOUCH,
  C_NET_PUT,
  C_NET_EVICT,
  C_GROUP_PUT,
  C_GROUP_LIST,
  C_N
};

static const char *const sql[C_N] = {
    [C_GROUP_PUT] = ("INSERT INTO groups(grp, last, extra) VALUES(?1, ?2, ?3)"
                    " ON CONFLICT(grp) DO UPDATE SET last = excluded.last, extra = excluded.extra"),
    [C_GROUP_LIST] = "SELECT grp, last, extra FROM groups ORDER BY grp",
    [C_BEGIN] = "BEGIN IMMEDIATE",
    [C_COMMIT] = "COMMIT",
    [C_ROLLBACK] = "ROLLBACK",
    [C_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [C_META_SET] = ("INSERT INTO meta(key, value) VALUES(?1, ?2)"
                   " ON CONFLICT(key) DO UPDATE SET value = excluded.value"),
    /* Ids are never handed out twice: the stored next id only goes up. */
    [C_META_RAISE] = "UPDATE meta SET value = max(value, ?2) WHERE key = ?1",
    [C_OUT_PUT] = "INSERT INTO outbox(cmid, to_user, flags, created_ms, body) VALUES(?1, ?2, ?3, ?4, ?5)",
    [C_OUT_DEL] = "DELETE FROM outbox WHERE cmid = ?1",
    [C_OUT_LOAD] = "SELECT cmid, to_user, flags, created_ms, body FROM outbox ORDER BY cmid",
    [C_OUT_COUNT] = "SELECT count(*) FROM outbox",
    /* What the app's list shows of a message awaiting its receipt comes
     * from its outbox row, copied before the row goes. */
    [C_AWAIT_PUT] = ("INSERT OR IGNORE INTO awaiting(cmid, to_user, created_ms, body_len)"
                     " SELECT cmid, to_user, created_ms, length(body) FROM outbox WHERE cmid = ?1"),
    [C_AWAIT_TAKE] = "DELETE FROM awaiting WHERE cmid = ?1",
    [C_APP_FIND] = "SELECT cmid FROM app_ids WHERE app_id = ?1",
    [C_APP_PUT] = "INSERT INTO app_ids(app_id, cmid, at_ms) VALUES(?1, ?2, ?3)",
    [C_APP_PRUNE] = "DELETE FROM app_ids WHERE at_ms < ?1",
    [C_LIST] = ("SELECT o.cmid, 1, o.to_user, o.created_ms, length(o.body), a.app_id FROM outbox o"
                " LEFT JOIN app_ids a ON a.cmid = o.cmid"
                " UNION ALL SELECT w.cmid, 2, w.to_user, w.created_ms, w.body_len, a.app_id"
                " FROM awaiting w LEFT JOIN app_ids a ON a.cmid = w.cmid ORDER BY 1"),
    [C_EXTRA_LOAD] = "SELECT seq FROM delivered_extra ORDER BY seq LIMIT ?1",
    [C_EXTRA_CLEAR] = "DELETE FROM delivered_extra",
    [C_EXTRA_PUT] = "INSERT OR IGNORE INTO delivered_extra(seq) VALUES(?1)",
    [C_NET_GET] = "SELECT proven_ms, failed_ms, learned_at FROM networks WHERE name = ?1",
    [C_NET_TOUCH] = "UPDATE networks SET used_at = ?2 WHERE name = ?1",
    [C_NET_PUT] = ("INSERT INTO networks(name, proven_ms, failed_ms, learned_at, used_at)"
                   " VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(name) DO UPDATE SET"
                   " proven_ms = excluded.proven_ms, failed_ms = excluded.failed_ms,"
                   " learned_at = excluded.learned_at, used_at = excluded.used_at"),
    /* Keeps the ?1 most recently used networks. */
    [C_NET_EVICT] = ("DELETE FROM networks WHERE name NOT IN"
                     " (SELECT name FROM networks ORDER BY used_at DESC, name LIMIT ?1)"),
};

struct tern__cstore {
  sqlite3 *db;
  sqlite3_stmt *q[C_N]; /* prepared on first use (stmt()) */
  char err[256]; /* the last SQLite failure, for logs */
  tern__sqlerr e; /* err, for the shared helpers */
};

static int sqlfail(tern__cstore *s, int rc, const char *what) { return tern__sql_fail(s->db, &s->e, rc, what); }

/* Statement `id`, prepared the first time it is needed: an idle client
 * uses a few of them, and each prepared one holds a few KB (a process
 * running hundreds of clients, like the load generator, pays that per
 * client). NULL if it cannot be prepared; *rc is then the error. */
static sqlite3_stmt *stmt(tern__cstore *s, int id, int *rc) {
  if (s->q[id]) return s->q[id];
  int r = sqlite3_prepare_v3(s->db, sql[id], -1, SQLITE_PREPARE_PERSISTENT, &s->q[id], NULL);
  if (r == SQLITE_OK) return s->q[id];
  *rc = sqlfail(s, r, sql[id]);
  return NULL;
}

/* Steps statement `id` to its end and resets it; a row it yields is
 * ignored. Returns 0 or a TERN_E* code. */
static int step(tern__cstore *s, int id) {
  int rc = 0;
  sqlite3_stmt *q = stmt(s, id, &rc);
  return q ? tern__sql_run(s->db, &s->e, q, sql[id]) : rc;
}

/* Like step(), and then 1 if it changed a row, 0 if not. */
static int step_changed(tern__cstore *s, int id) {
  int rc = step(s, id);
  return rc < 0 ? rc : sqlite3_changes(s->db) > 0;
}

/* Reads the first column of statement `id`'s one row into *v: 1, or 0
 * without a row (or with NULL). */
static int step_value(tern__cstore *s, int id, uint64_t *v) {
  int rc = 0;
  sqlite3_stmt *q = stmt(s, id, &rc);
  return q ? tern__sql_u64(s->db, &s->e, q, sql[id], v) : rc;
}

/* Ends a transaction begun with C_BEGIN: commits if rc >= 0, else rolls
 * back (if SQLite has not already). Returns rc, or the commit's error. */
static int finish(tern__cstore *s, int rc) {
  if (rc >= 0) {
    int c = step(s, C_COMMIT);
    if (c == 0) return rc;
    rc = c;
  }
  if (!sqlite3_get_autocommit(s->db)) {
    char keep[sizeof s->err];
    memcpy(keep, s->err, sizeof keep);
    (void)step(s, C_ROLLBACK);
    memcpy(s->err, keep, sizeof keep);
  }
  return rc;
}

static int sqlexec(tern__cstore *s, const char *text) { return tern__sql_exec(s->db, &s->e, text, text); }

/* Switches to WAL (a file that cannot be is refused). */
static int wal(tern__cstore *s) { return tern__sql_wal(s->db, &s->e); }

/* Creates or upgrades the schema in one transaction. A new store starts its
 * ids at (Unix ms << 16): an earlier store for the same key (lost with its
 * state directory) began at an earlier ms and would have had to send 65,536
 * messages per millisecond of its life to reach ids this one uses. */
static int upgrade(tern__cstore *s) {
  int64_t from = -1;
  int rc = sqlexec(s, "BEGIN IMMEDIATE");
  if (rc < 0) return rc;
  sqlite3_stmt *uv = NULL;
  rc = sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &uv, NULL);
  if (rc == SQLITE_OK && sqlite3_step(uv) == SQLITE_ROW) from = sqlite3_column_int64(uv, 0);
  rc = from < 0 ? sqlfail(s, sqlite3_errcode(s->db), "user_version") : 0;
  sqlite3_finalize(uv);
  if (from > SCHEMA_VERSION) {
    snprintf(s->err, sizeof s->err, "client store schema %lld is newer than this library's (%d)",
             (long long)from, SCHEMA_VERSION);
    rc = TERN_ESTORE;
  }
  /* Each version adds a block "if (from < N)" that upgrades N-1 to N. */
  if (rc == 0 && from < 1) {
    char v1[768];
    snprintf(v1, sizeof v1,
             "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
             "CREATE TABLE delivered_extra(seq INTEGER PRIMARY KEY);"
             "CREATE TABLE outbox(cmid INTEGER PRIMARY KEY, to_user TEXT NOT NULL,"
             "  flags INTEGER NOT NULL, created_ms INTEGER NOT NULL, body BLOB NOT NULL);"
             "CREATE TABLE awaiting(cmid INTEGER PRIMARY KEY);"
             "INSERT INTO meta(key, value) VALUES('" NEXT_CMID "', %lld), ('" DELIVERED_LAST "', 0);"
             "PRAGMA user_version = 1;",
             (long long)(tern__wall_ms() << 16));
    rc = sqlexec(s, v1);
  }
  if (rc == 0 && from < 2) {
    /* 2: what the keepalive learner knows per network. */
    rc = sqlexec(s,
                 "CREATE TABLE networks(name TEXT PRIMARY KEY, proven_ms INTEGER NOT NULL,"
                 "  failed_ms INTEGER NOT NULL, learned_at INTEGER NOT NULL,"
                 "  used_at INTEGER NOT NULL) WITHOUT ROWID;"
                 "PRAGMA user_version = 2;");
  }
  if (rc == 0 && from < 3) {
    /* 3: the app's view of its outbox (what a message awaiting its receipt
     * was), and the app's own message ids. */
    rc = sqlexec(s,
                 "ALTER TABLE awaiting ADD COLUMN to_user TEXT;"
                 "ALTER TABLE awaiting ADD COLUMN created_ms INTEGER;"
                 "ALTER TABLE awaiting ADD COLUMN body_len INTEGER;"
                 "CREATE TABLE app_ids(app_id TEXT PRIMARY KEY, cmid INTEGER NOT NULL UNIQUE,"
                 "  at_ms INTEGER NOT NULL) WITHOUT ROWID;"
                 "PRAGMA user_version = 3;");
  }
  if (rc == 0 && from < 4) {
    /* 4: what was handed to the app of each group's messages (spec/messages.md
     * §14), as delivered_last and delivered_extra are for the user's inbox:
     * extra is the out-of-order seqs, 8 bytes each, little-endian. */
    rc = sqlexec(s,
                 "CREATE TABLE groups(grp TEXT PRIMARY KEY, last INTEGER NOT NULL,"
                 "  extra BLOB NOT NULL) WITHOUT ROWID;"
                 "PRAGMA user_version = 4;");
  }
  if (rc == 0) return sqlexec(s, "COMMIT");
  (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  return rc;
}

int tern__cstore_open(tern__cstore **out, const char *path, int synchronous, char *err, size_t errcap) {
  *out = NULL;
  if (err && errcap) err[0] = 0;
  /* 0 is "the default", FULL, as for the relay store: never OFF. */
  if (synchronous == 0) synchronous = 2;
  if (!path || synchronous < 1 || synchronous > 3) return TERN_EINVAL;
  tern__cstore *s = calloc(1, sizeof *s);
  if (!s) return TERN_ENOMEM;
  s->e.buf = s->err;
  s->e.cap = sizeof s->err;
  /* The outbox and delivery state are nobody else's to read. */
  if (tern__sql_private_file(path) < 0) {
    if (err && errcap) snprintf(err, errcap, "%s: cannot create or secure the file: %s", path, strerror(errno));
    free(s);
    return TERN_ESTORE;
  }
  int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    rc = s->db ? sqlfail(s, rc, path) : TERN_ENOMEM;
    goto out_err;
  }
  sqlite3_extended_result_codes(s->db, 1);
  sqlite3_busy_timeout(s->db, 5000);
  char pragmas[128];
  snprintf(pragmas, sizeof pragmas, "PRAGMA synchronous = %d;", synchronous);
  rc = wal(s);
  if (rc == 0) rc = sqlexec(s, pragmas);
  if (rc == 0) rc = upgrade(s);
  if (rc == 0) {
    *out = s;
    return 0;
  }
out_err:
  if (err && errcap) snprintf(err, errcap, "%s", s->err);
  tern__cstore_close(s);
  return rc;
}

void tern__cstore_close(tern__cstore *s) {
  if (!s) return;
  for (int i = 0; i < C_N; i++) sqlite3_finalize(s->q[i]);
  sqlite3_close(s->db);
  free(s);
}

const char *tern__cstore_errmsg(const tern__cstore *s) { return s->err; }

#ifdef TERN_TEST_HOOKS
int tern__cstore_fault_readonly(tern__cstore *s, int on) {
  int rc = sqlite3_exec(s->db, on ? "PRAGMA query_only = 1" : "PRAGMA query_only = 0", NULL, NULL,
                        NULL);
  if (rc == SQLITE_OK) return 0;
  snprintf(s->err, sizeof s->err, "query_only: %s (%d)", sqlite3_errmsg(s->db), rc);
  return TERN_ESTORE;
}
#endif

int tern__cstore_next_cmid(tern__cstore *s, uint64_t *next) {
  int rc = 0;
  sqlite3_stmt *q = stmt(s, C_META_GET, &rc);
  if (!q) return rc;
  sqlite3_bind_text(q, 1, NEXT_CMID, -1, SQLITE_STATIC);
  rc = step_value(s, C_META_GET, next);
  if (rc == 0) return sqlfail(s, SQLITE_CORRUPT, "next_cmid missing");
  return rc < 0 ? rc : 0;
}

static int raise_next(tern__cstore *s, uint64_t next) {
  int rc = 0;
  sqlite3_stmt *q = stmt(s, C_META_RAISE, &rc);
  if (!q) return rc;
  sqlite3_bind_text(q, 1, NEXT_CMID, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 2, (int64_t)next);
  return step(s, C_META_RAISE);
}

/* Never lowers the stored value: handing out an id twice would make the
 * relay drop the second message as a resend of the first. */
int tern__cstore_set_next_cmid(tern__cstore *s, uint64_t next) {
  if (next > INT64_MAX) return TERN_EINVAL;
  return raise_next(s, next);
}

int tern__cstore_hello_time(tern__cstore *s, uint64_t now_us, uint64_t *out) {
  uint64_t last = 0;
  int rc = 0;
  sqlite3_stmt *g = stmt(s, C_META_GET, &rc);
  if (!g) return rc;
  sqlite3_bind_text(g, 1, HELLO_US, -1, SQLITE_STATIC);
  rc = step_value(s, C_META_GET, &last);
  if (rc < 0) return rc;
  uint64_t t = now_us > last ? now_us : last + 1;
  if (t > INT64_MAX) return TERN_EINVAL;
  sqlite3_stmt *q = stmt(s, C_META_SET, &rc);
  if (!q) return rc;
  sqlite3_bind_text(q, 1, HELLO_US, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 2, (int64_t)t);
  rc = step(s, C_META_SET);
  if (rc < 0) return rc;
  *out = t;
  return 0;
}

int tern__cstore_outbox_put(tern__cstore *s, const tern__outmsg *m) {
  /* cmid + 1 must still be a SQLite integer. */
  if (!m->to || (m->body_len && !m->body) || m->cmid >= INT64_MAX) return TERN_EINVAL;
  int rc = step(s, C_BEGIN);
  if (rc < 0) return rc;
  sqlite3_stmt *q = stmt(s, C_OUT_PUT, &rc);
  if (!q) return finish(s, rc);
  sqlite3_bind_int64(q, 1, (int64_t)m->cmid);
  sqlite3_bind_text(q, 2, m->to, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 3, (int64_t)m->flags);
  sqlite3_bind_int64(q, 4, (int64_t)m->created_ms);
  sqlite3_bind_blob64(q, 5, m->body_len ? (const void *)m->body : "", m->body_len, SQLITE_STATIC);
  rc = sqlite3_step(q);
  if (rc == SQLITE_DONE) {
    rc = 0;
  } else if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
    snprintf(s->err, sizeof s->err, "cmid %llu is already in the outbox", (unsigned long long)m->cmid);
    rc = TERN_EEXIST;
  } else {
    rc = sqlfail(s, rc, "outbox_put");
  }
  sqlite3_reset(q);
  sqlite3_clear_bindings(q);
  sqlite3_stmt *a = rc == 0 && m->app_id ? stmt(s, C_APP_PUT, &rc) : NULL;
  /* An app id is remembered as long as the relay keeps messages. */
  sqlite3_stmt *pr = a ? stmt(s, C_APP_PRUNE, &rc) : NULL;
  if (a && pr) {
    sqlite3_bind_text(a, 1, m->app_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(a, 2, (int64_t)m->cmid);
    sqlite3_bind_int64(a, 3, (int64_t)m->created_ms);
    rc = step(s, C_APP_PUT);
    sqlite3_bind_int64(pr, 1, (int64_t)m->created_ms - APP_ID_KEEP_MS);
    if (rc >= 0) rc = step(s, C_APP_PRUNE);
    if (rc > 0) rc = 0;
  }
  if (rc == 0) rc = raise_next(s, m->cmid + 1);
  return finish(s, rc);
}

int tern__cstore_app_find(tern__cstore *s, const char *app_id, uint64_t *cmid) {
  int rc = 0;
  sqlite3_stmt *q = stmt(s, C_APP_FIND, &rc);
  if (!q) return rc;
  sqlite3_bind_text(q, 1, app_id, -1, SQLITE_STATIC);
  return step_value(s, C_APP_FIND, cmid);
}

int tern__cstore_list(tern__cstore *s, int (*cb)(void *ctx, const tern__cstore_item *it), void *ctx) {
  int rc = 0;
  sqlite3_stmt *q = stmt(s, C_LIST, &rc);
  if (!q) return rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    const char *to = (const char *)sqlite3_column_text(q, 2);
    const char *app = (const char *)sqlite3_column_text(q, 5);
    tern__cstore_item it = {.cmid = (uint64_t)sqlite3_column_int64(q, 0),
                            .sent = sqlite3_column_int(q, 1) == 2,
                            .to = to ? to : "",
                            .created_ms = (uint64_t)sqlite3_column_int64(q, 3),
                            .body_len = (size_t)sqlite3_column_int64(q, 4),
                            .app_id = app ? app : ""};
    if (cb(ctx, &it)) {
      rc = SQLITE_DONE;
      break;
    }
  }
  rc = rc == SQLITE_DONE ? 0 : sqlfail(s, rc, "list");
  sqlite3_reset(q);
  return rc;
}

int tern__cstore_outbox_del(tern__cstore *s, uint64_t cmid, int await_receipt) {
  int rc = step(s, C_BEGIN);
  if (rc < 0) return rc;
  /* Only a message that was there awaits a receipt (the copy selects its
   * outbox row): a repeated SERVER_ACK after its receipt came must not
   * leave a stale entry behind. */
  sqlite3_stmt *aw = await_receipt ? stmt(s, C_AWAIT_PUT, &rc) : NULL;
  if (aw) {
    sqlite3_bind_int64(aw, 1, (int64_t)cmid);
    rc = step(s, C_AWAIT_PUT);
  }
  sqlite3_stmt *del = rc < 0 ? NULL : stmt(s, C_OUT_DEL, &rc);
  if (del) sqlite3_bind_int64(del, 1, (int64_t)cmid);
  int found = rc < 0 ? rc : step_changed(s, C_OUT_DEL);
  if (found < 0) rc = found;
  rc = finish(s, rc);
  return rc < 0 ? rc : found;
}

int tern__cstore_outbox_load(tern__cstore *s, int (*cb)(void *ctx, const tern__outmsg *m), void *ctx) {
  int rc = 0;
  sqlite3_stmt *q = stmt(s, C_OUT_LOAD, &rc);
  if (!q) return rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    tern__outmsg m = {
        .cmid = (uint64_t)sqlite3_column_int64(q, 0),
        .to = (const char *)sqlite3_column_text(q, 1),
        .flags = (uint64_t)sqlite3_column_int64(q, 2),
        .created_ms = (uint64_t)sqlite3_column_int64(q, 3),
        .body = sqlite3_column_blob(q, 4),
        .body_len = (size_t)sqlite3_column_bytes(q, 4),
    };
    if (!m.to) {
      rc = SQLITE_CORRUPT;
      break;
    }
    if (cb(ctx, &m)) {
      rc = SQLITE_DONE;
      break;
    }
  }
  rc = rc == SQLITE_DONE ? 0 : sqlfail(s, rc, "outbox_load");
  sqlite3_reset(q);
  return rc;
}

int tern__cstore_outbox_count(tern__cstore *s, uint64_t *n) {
  *n = 0;
  int rc = step_value(s, C_OUT_COUNT, n);
  return rc < 0 ? rc : 0;
}

int tern__cstore_await_take(tern__cstore *s, uint64_t cmid) {
  int rc = 0;
  sqlite3_stmt *q = stmt(s, C_AWAIT_TAKE, &rc);
  if (!q) return rc;
  sqlite3_bind_int64(q, 1, (int64_t)cmid);
  return step_changed(s, C_AWAIT_TAKE);
}

/* `extra` must have room for TERN__CSTORE_EXTRA_MAX seqs: save never
 * stores more, and load never returns more. */
int tern__cstore_delivered_load(tern__cstore *s, uint64_t *last, uint64_t *extra, size_t *n) {
  *n = 0;
  *last = 0;
  /* One read transaction, so last and extra come from the same save. */
  int rc = step(s, C_BEGIN);
  if (rc < 0) return rc;
  sqlite3_stmt *g = stmt(s, C_META_GET, &rc);
  if (g) {
    sqlite3_bind_text(g, 1, DELIVERED_LAST, -1, SQLITE_STATIC);
    rc = step_value(s, C_META_GET, last);
    if (rc == 0) rc = sqlfail(s, SQLITE_CORRUPT, "delivered_last missing");
  }
  sqlite3_stmt *q = rc < 0 ? NULL : stmt(s, C_EXTRA_LOAD, &rc);
  size_t k = 0;
  if (q) {
    sqlite3_bind_int(q, 1, TERN__CSTORE_EXTRA_MAX);
    int r = SQLITE_DONE;
    while ((r = sqlite3_step(q)) == SQLITE_ROW) extra[k++] = (uint64_t)sqlite3_column_int64(q, 0);
    if (r != SQLITE_DONE) rc = sqlfail(s, r, "delivered_load");
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
  }
  rc = finish(s, rc);
  if (rc < 0) return rc;
  *n = k;
  return 0;
}

int tern__cstore_delivered_save(tern__cstore *s, uint64_t last, const uint64_t *extra, size_t n) {
  if (n > TERN__CSTORE_EXTRA_MAX || (n && !extra) || last > INT64_MAX) return TERN_EINVAL;
  int rc = step(s, C_BEGIN);
  if (rc < 0) return rc;
  sqlite3_stmt *q = stmt(s, C_META_SET, &rc);
  sqlite3_stmt *put = q ? stmt(s, C_EXTRA_PUT, &rc) : NULL;
  if (!put) return finish(s, rc);
  sqlite3_bind_text(q, 1, DELIVERED_LAST, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 2, (int64_t)last);
  rc = step(s, C_META_SET);
  if (rc == 0) rc = step(s, C_EXTRA_CLEAR);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    if (extra[i] > INT64_MAX) {
      rc = TERN_EINVAL;
      break;
    }
    sqlite3_bind_int64(put, 1, (int64_t)extra[i]);
    rc = step(s, C_EXTRA_PUT);
  }
  return finish(s, rc);
}

int tern__cstore_net_get(tern__cstore *s, const char *name, tern__cstore_net *n, uint64_t now_wall) {
  memset(n, 0, sizeof(*n));
  int rc = 0;
  sqlite3_stmt *q = stmt(s, C_NET_GET, &rc), *touch = q ? stmt(s, C_NET_TOUCH, &rc) : NULL;
  if (!touch) return rc;
  sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
  rc = sqlite3_step(q);
  if (rc == SQLITE_ROW) {
    int64_t p = sqlite3_column_int64(q, 0), f = sqlite3_column_int64(q, 1);
    int64_t at = sqlite3_column_int64(q, 2);
    /* Values out of range are a damaged row: treat it as unknown. */
    if (p >= 0 && p <= UINT32_MAX && f >= 0 && f <= UINT32_MAX && at >= 0) {
      n->proven_ms = (uint32_t)p;
      n->failed_ms = (uint32_t)f;
      n->learned_at = (uint64_t)at;
      rc = 1;
    } else {
      rc = 0;
    }
  } else {
    rc = rc == SQLITE_DONE ? 0 : sqlfail(s, rc, "net_get");
  }
  sqlite3_reset(q);
  sqlite3_clear_bindings(q);
  if (rc == 1) {
    sqlite3_bind_text(touch, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(touch, 2, (int64_t)now_wall);
    int t = step(s, C_NET_TOUCH);
    if (t < 0) return t;
  }
  return rc;
}

int tern__cstore_net_put(tern__cstore *s, const char *name, const tern__cstore_net *n,
                         uint64_t now_wall, size_t max_names) {
  if (!name || max_names == 0 || n->learned_at > INT64_MAX) return TERN_EINVAL;
  int rc = step(s, C_BEGIN);
  if (rc < 0) return rc;
  sqlite3_stmt *q = stmt(s, C_NET_PUT, &rc), *evict = q ? stmt(s, C_NET_EVICT, &rc) : NULL;
  if (!evict) return finish(s, rc);
  sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 2, n->proven_ms);
  sqlite3_bind_int64(q, 3, n->failed_ms);
  sqlite3_bind_int64(q, 4, (int64_t)n->learned_at);
  sqlite3_bind_int64(q, 5, (int64_t)now_wall);
  rc = step(s, C_NET_PUT);
  if (rc == 0) {
    sqlite3_bind_int64(evict, 1, (int64_t)max_names);
    rc = step(s, C_NET_EVICT);
  }
  return finish(s, rc);
}

int tern__cstore_net_count(tern__cstore *s, uint64_t *count) {
  sqlite3_stmt *q = NULL;
  *count = 0;
  int rc = sqlite3_prepare_v2(s->db, "SELECT count(*) FROM networks", -1, &q, NULL);
  if (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
    *count = (uint64_t)sqlite3_column_int64(q, 0);
    rc = 0;
  } else {
    rc = sqlfail(s, rc, "net_count");
  }
  sqlite3_finalize(q);
  return rc;
}

int tern__cstore_group_save(tern__cstore *s, const char *group, uint64_t last, const uint64_t *extra,
                            size_t n) {
  if (n > TERN__CSTORE_EXTRA_MAX || (n && !extra) || last > INT64_MAX) return TERN_EINVAL;
  uint8_t *blob = malloc(n ? n * 8 : 1);
  if (!blob) return TERN_ENOMEM;
  for (size_t i = 0; i < n; i++)
    for (int b = 0; b < 8; b++) blob[i * 8 + (size_t)b] = (uint8_t)(extra[i] >> (8 * b));
  int rc = 0;
  sqlite3_stmt *q = stmt(s, C_GROUP_PUT, &rc);
  if (!q) {
    free(blob);
    return rc;
  }
  sqlite3_bind_text(q, 1, group, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 2, (int64_t)last);
  sqlite3_bind_blob(q, 3, blob, (int)(n * 8), SQLITE_STATIC);
  rc = step(s, C_GROUP_PUT);
  free(blob);
  return rc;
}

int tern__cstore_group_each(tern__cstore *s,
                            int (*cb)(void *ctx, const char *group, uint64_t last,
                                      const uint64_t *extra, size_t n),
                            void *ctx) {
  uint64_t *extra = malloc(TERN__CSTORE_EXTRA_MAX * sizeof(uint64_t));
  if (!extra) return TERN_ENOMEM;
  int rc = 0, ret = 0;
  sqlite3_stmt *q = stmt(s, C_GROUP_LIST, &rc);
  if (!q) {
    free(extra);
    return rc;
  }
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    const char *g = (const char *)sqlite3_column_text(q, 0);
    const uint8_t *blob = sqlite3_column_blob(q, 2);
    size_t bytes = (size_t)sqlite3_column_bytes(q, 2), n = bytes / 8;
    if (!g || bytes % 8 || n > TERN__CSTORE_EXTRA_MAX) {
      rc = SQLITE_CORRUPT;
      break;
    }
    for (size_t i = 0; i < n; i++) {
      uint64_t v = 0;
      for (int b = 0; b < 8; b++) v |= (uint64_t)blob[i * 8 + (size_t)b] << (8 * b);
      extra[i] = v;
    }
    if ((ret = cb(ctx, g, (uint64_t)sqlite3_column_int64(q, 1), extra, n)) != 0) {
      rc = SQLITE_DONE;
      break;
    }
  }
  if (ret == 0 && rc != SQLITE_DONE) ret = sqlfail(s, rc, "group_each");
  sqlite3_reset(q);
  free(extra);
  return ret;
}
