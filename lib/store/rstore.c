/*
 * The relay's store in SQLite: schema v1 and its migration, cached prepared
 * statements, and the inbox/ack/expiry logic. spec/store.md has the schema
 * and the durability rules; rstore.h the contract.
 *
 * Every compound operation runs inside a SAVEPOINT, so it is atomic both
 * inside the caller's BEGIN ... COMMIT and on its own (autocommit), and a
 * failure half-way leaves nothing of it behind. Every statement is reset
 * (and its bindings cleared) before the function that stepped it returns.
 */
#include "store/rstore.h"

#include "store/seqcache.h"
#include "store/sqlite.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* The schema this code reads and writes (PRAGMA user_version). */
#define SCHEMA_VERSION 7

/* migrations[v] takes a store from version v to v + 1. */
static const char *const migrations[SCHEMA_VERSION] = {
    /* 0 -> 1: the first schema. */
    "CREATE TABLE users("
    "  user TEXT PRIMARY KEY,"
    "  next_seq INTEGER NOT NULL"       /* the seq the next append gets */
    ") WITHOUT ROWID;"
    "CREATE TABLE inbox("
    "  user TEXT NOT NULL, seq INTEGER NOT NULL, prev_seq INTEGER NOT NULL,"
    "  ts INTEGER NOT NULL, cmid INTEGER NOT NULL, flags INTEGER NOT NULL,"
    "  sender TEXT NOT NULL, sender_dev BLOB NOT NULL, body BLOB NOT NULL,"
    "  delivered INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY(user, seq));"
    "CREATE INDEX inbox_undelivered_ts ON inbox(ts) WHERE delivered = 0;"
    "CREATE TABLE chains("
    "  user TEXT NOT NULL, sender TEXT NOT NULL, last_seq INTEGER NOT NULL,"
    "  PRIMARY KEY(user, sender)) WITHOUT ROWID;"
    "CREATE TABLE dedup("
    "  dev BLOB NOT NULL, cmid INTEGER NOT NULL, user TEXT NOT NULL,"
    "  seq INTEGER NOT NULL, ts INTEGER NOT NULL,"
    "  PRIMARY KEY(dev, cmid)) WITHOUT ROWID;"
    "CREATE INDEX dedup_ts ON dedup(ts);"
    "CREATE TABLE devices("
    "  dev BLOB PRIMARY KEY, user TEXT NOT NULL, cursor INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE INDEX devices_user ON devices(user, cursor);"
    "CREATE TABLE notices("
    "  dev BLOB NOT NULL, kind INTEGER NOT NULL, cmid INTEGER NOT NULL,"
    "  code INTEGER NOT NULL,"
    "  PRIMARY KEY(dev, kind, cmid)) WITHOUT ROWID;",
    /* 1 -> 2: the largest HELLO timestamp accepted per device key, which
     * makes a recorded HELLO useless (spec/handshake.md §6). */
    "CREATE TABLE hellos("
    "  dev BLOB PRIMARY KEY, time_us INTEGER NOT NULL"
    ") WITHOUT ROWID;",
    /* 2 -> 3: what the inbox holds per recipient (dir 0) and per sender
     * (dir 1), kept by triggers, for the quotas (spec/store.md). */
    "CREATE TABLE held("
    "  who TEXT NOT NULL, dir INTEGER NOT NULL,"
    "  msgs INTEGER NOT NULL, bytes INTEGER NOT NULL,"
    "  PRIMARY KEY(who, dir)) WITHOUT ROWID;"
    "INSERT INTO held SELECT user, 0, count(*), sum(length(body)) FROM inbox GROUP BY user;"
    "INSERT INTO held SELECT sender, 1, count(*), sum(length(body)) FROM inbox GROUP BY sender;"
    "CREATE TRIGGER inbox_held_add AFTER INSERT ON inbox BEGIN"
    "  INSERT INTO held VALUES(NEW.user, 0, 1, length(NEW.body))"
    "    ON CONFLICT(who, dir) DO UPDATE SET msgs = msgs + 1, bytes = bytes + excluded.bytes;"
    "  INSERT INTO held VALUES(NEW.sender, 1, 1, length(NEW.body))"
    "    ON CONFLICT(who, dir) DO UPDATE SET msgs = msgs + 1, bytes = bytes + excluded.bytes;"
    "END;"
    "CREATE TRIGGER inbox_held_del AFTER DELETE ON inbox BEGIN"
    "  UPDATE held SET msgs = msgs - 1, bytes = bytes - length(OLD.body)"
    "    WHERE who = OLD.user AND dir = 0;"
    "  UPDATE held SET msgs = msgs - 1, bytes = bytes - length(OLD.body)"
    "    WHERE who = OLD.sender AND dir = 1;"
    "END;",
    /* 3 -> 4: where each live UDP session is and what its reset token
     * derives from, for the RESETs of the next start (spec/wire.md §14). */
    "CREATE TABLE resets("
    "  dev BLOB PRIMARY KEY, time_us INTEGER NOT NULL, addr BLOB NOT NULL"
    ") WITHOUT ROWID;",
    /* 4 -> 5: a carbon's recipient, in its sender's own inbox
     * (spec/messages.md §13); '' for every other message. */
    "ALTER TABLE inbox ADD COLUMN peer TEXT NOT NULL DEFAULT '';",
    /* 5 -> 6: per device key, the cmids below which it has settled every
     * message, so their dedup rows can go (spec/messages.md §2). */
    "ALTER TABLE hellos ADD COLUMN settled INTEGER NOT NULL DEFAULT 0;",
    /* 6 -> 7: groups (spec/messages.md §14): who is in a group from which
     * point to which, each member device's cursor in the group's inbox
     * ('@name'), and per group message how many members it went to and
     * how many have it. */
    "CREATE TABLE members("
    "  grp TEXT NOT NULL, user TEXT NOT NULL, joined INTEGER NOT NULL, left INTEGER,"
    "  counted INTEGER NOT NULL,"   /* the member's receipts are counted up to here */
    "  PRIMARY KEY(grp, user)) WITHOUT ROWID;"
    "CREATE INDEX members_user ON members(user);"
    "CREATE TABLE gcursors("
    "  grp TEXT NOT NULL, dev BLOB NOT NULL, user TEXT NOT NULL, cursor INTEGER NOT NULL,"
    "  PRIMARY KEY(grp, dev)) WITHOUT ROWID;"
    "CREATE INDEX gcursors_dev ON gcursors(dev);"
    "ALTER TABLE inbox ADD COLUMN gmembers INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE inbox ADD COLUMN gdelivered INTEGER NOT NULL DEFAULT 0;",
};

enum {
  Q_SP_BEGIN,
  Q_SP_RELEASE,
  Q_SP_ROLLBACK,
  Q_BEGIN,
  Q_COMMIT,
  Q_ROLLBACK,
  Q_DEDUP_GET,
  Q_DEDUP_PUT,
  Q_DEDUP_REPLACE,
  Q_SEQ_GET,
  Q_SEQ_SET,
  Q_DATA_VERSION,
  Q_CHAIN_GET,
  Q_CHAIN_PUT,
  Q_INBOX_PUT,
  Q_FETCH,
  Q_DEV_ADD,
  Q_DEV_GET,
  Q_DEV_SET,
  Q_DEV_MIN,
  Q_DELIVER,
  Q_TRIM,
  Q_ACK_SPAN,
  Q_MIN_SEQ,
  Q_NOTICE_PUT,
  Q_NOTICE_LIST,
  Q_NOTICE_DEL,
  Q_EXPIRE,
  Q_EXPIRE_DEDUP,
  Q_COUNT,
  Q_HELLO_RAISE,
  Q_HELD,
  Q_DEVICES,
  Q_DEV_DEL,
  Q_NOTICES_DEL,
  Q_RESET_PUT,
  Q_RESET_DEL,
  Q_RESET_LIST,
  Q_RESET_CLEAR,
  Q_DEV_OTHER,
  Q_SETTLED_RAISE,
  Q_SETTLED_GET,
  Q_DEDUP_TRIM,
  Q_MEM_CURRENT,
  Q_MEM_GET,
  Q_MEM_LEAVE,
  Q_MEM_JOIN,
  Q_GCUR_JOIN,
  Q_GMEMBERS_COUNT,
  Q_ROLE,
  Q_USER_GROUPS,
  Q_GCUR_ADD,
  Q_GCUR_GET,
  Q_GCUR_SET,
  Q_GCUR_MEMBER_MAX,
  Q_MEM_COUNT_SET,
  Q_GRECEIPT,
  Q_GTRIM_LOW,
  Q_GCUR_DONE,
  Q_GCUR_DEL_DEV,
  Q_NOTICE_DEL_IF,
  Q_GDEVICES,
  Q_N
};

static const char *const sql[Q_N] = {
    [Q_SP_BEGIN] = "SAVEPOINT rstore_op",
    [Q_SP_RELEASE] = "RELEASE rstore_op",
    [Q_SP_ROLLBACK] = "ROLLBACK TO rstore_op",
    [Q_BEGIN] = "BEGIN IMMEDIATE",
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
    [Q_DEDUP_GET] = "SELECT seq, ts FROM dedup WHERE dev = ?1 AND cmid = ?2",
    [Q_DEDUP_PUT] = "INSERT INTO dedup(dev, cmid, user, seq, ts) VALUES(?1, ?2, ?3, ?4, ?5)",
    [Q_DEDUP_REPLACE] = ("INSERT OR REPLACE INTO dedup(dev, cmid, user, seq, ts)"
                        " VALUES(?1, ?2, ?3, ?4, ?5)"),
    /* users and chains are read and written through the counter cache
     * (seqcache.h): read once, written back at COMMIT. */
    [Q_SEQ_GET] = "SELECT next_seq FROM users WHERE user = ?1",
    /* Changes when another connection commits (a second relay on the
     * same file): the cache is then read again. */
    [Q_DATA_VERSION] = "PRAGMA data_version",
    [Q_SEQ_SET] = ("INSERT INTO users(user, next_seq) VALUES(?1, ?2)"
                  " ON CONFLICT(user) DO UPDATE SET next_seq = excluded.next_seq"),
    [Q_CHAIN_GET] = "SELECT last_seq FROM chains WHERE user = ?1 AND sender = ?2",
    [Q_CHAIN_PUT] = ("INSERT INTO chains(user, sender, last_seq) VALUES(?1, ?2, ?3)"
                    " ON CONFLICT(user, sender) DO UPDATE SET last_seq = excluded.last_seq"),
    [Q_INBOX_PUT] = ("INSERT INTO inbox(user, seq, prev_seq, ts, cmid, flags, sender, sender_dev, body, peer,"
                    " gmembers) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
    [Q_FETCH] = ("SELECT seq, prev_seq, ts, cmid, flags, sender, sender_dev, body, peer FROM inbox"
                " WHERE user = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"),
    [Q_DEV_ADD] = "INSERT INTO devices(dev, user, cursor) VALUES(?1, ?2, 0) ON CONFLICT(dev) DO NOTHING",
    [Q_DEV_GET] = "SELECT user, cursor FROM devices WHERE dev = ?1",
    [Q_DEV_SET] = "UPDATE devices SET cursor = ?2 WHERE dev = ?1 AND cursor < ?2",
    [Q_DEV_MIN] = "SELECT min(cursor) FROM devices WHERE user = ?1",
    /* RETURNING: every row is updated by the first step, so the callbacks
     * made while stepping see (and may write to) a consistent store. */
    [Q_DELIVER] = ("UPDATE inbox SET delivered = 1"
                  " WHERE user = ?1 AND seq > ?2 AND seq <= ?3 AND delivered = 0"
                  " RETURNING sender_dev, cmid, seq, flags"),
    [Q_TRIM] = "DELETE FROM inbox WHERE user = ?1 AND seq <= ?2",
    [Q_ACK_SPAN] = ("SELECT seq, length(body) FROM inbox WHERE user = ?1 AND seq > ?2 AND seq <= ?3"
                   " ORDER BY seq"),
    [Q_MIN_SEQ] = "SELECT min(seq) FROM inbox WHERE user = ?1",
    [Q_DEV_DEL] = "DELETE FROM devices WHERE dev = ?1",
    [Q_NOTICES_DEL] = "DELETE FROM notices WHERE dev = ?1",
    [Q_DEVICES] = ("SELECT d.dev, (SELECT count(*) FROM inbox i WHERE i.user = d.user AND i.seq > d.cursor),"
                  " (SELECT sender FROM inbox i WHERE i.user = d.user AND i.seq > d.cursor"
                  "  ORDER BY seq DESC LIMIT 1)"
                  " FROM devices d WHERE d.user = ?1"),
    [Q_NOTICE_PUT] = ("INSERT INTO notices(dev, kind, cmid, code) VALUES(?1, ?2, ?3, ?4)"
                     " ON CONFLICT(dev, kind, cmid) DO UPDATE SET code = excluded.code"),
    [Q_NOTICE_LIST] = "SELECT kind, cmid, code FROM notices WHERE dev = ?1 ORDER BY cmid, kind",
    [Q_NOTICE_DEL] = "DELETE FROM notices WHERE dev = ?1 AND kind = ?2 AND cmid = ?3",
    [Q_EXPIRE] = "DELETE FROM inbox WHERE delivered = 0 AND ts < ?1 RETURNING sender_dev, cmid, seq, flags",
    [Q_EXPIRE_DEDUP] = "DELETE FROM dedup WHERE ts < ?1",
    [Q_COUNT] = "SELECT count(*) FROM inbox",
    /* A row comes back only if the value was inserted or raised. */
    [Q_HELLO_RAISE] = ("INSERT INTO hellos(dev, time_us) VALUES(?1, ?2)"
                      " ON CONFLICT(dev) DO UPDATE SET time_us = excluded.time_us"
                      " WHERE hellos.time_us < excluded.time_us RETURNING 1"),
    [Q_HELD] = "SELECT msgs, bytes FROM held WHERE who = ?1 AND dir = ?2",
    [Q_RESET_PUT] = ("INSERT INTO resets(dev, time_us, addr) VALUES(?1, ?2, ?3)"
                    " ON CONFLICT(dev) DO UPDATE SET time_us = excluded.time_us, addr = excluded.addr"),
    [Q_RESET_DEL] = "DELETE FROM resets WHERE dev = ?1 AND time_us = ?2",
    [Q_RESET_LIST] = "SELECT dev, time_us, addr FROM resets",
    [Q_RESET_CLEAR] = "DELETE FROM resets",
    [Q_DEV_OTHER] = "SELECT 1 FROM devices WHERE user = ?1 AND dev <> ?2 LIMIT 1",
    /* time_us 0 for a key without a row: 0 is never a fresh HELLO. */
    [Q_SETTLED_RAISE] = ("INSERT INTO hellos(dev, time_us, settled) VALUES(?1, 0, ?2)"
                        " ON CONFLICT(dev) DO UPDATE SET settled = excluded.settled"
                        " WHERE hellos.settled < excluded.settled"),
    [Q_SETTLED_GET] = "SELECT settled FROM hellos WHERE dev = ?1",
    [Q_DEDUP_TRIM] = "DELETE FROM dedup WHERE dev = ?1 AND cmid < ?2",
    [Q_MEM_CURRENT] = "SELECT user FROM members WHERE grp = ?1 AND left IS NULL ORDER BY user",
    [Q_MEM_GET] = "SELECT joined, left FROM members WHERE grp = ?1 AND user = ?2",
    [Q_MEM_LEAVE] = "UPDATE members SET left = ?3 WHERE grp = ?1 AND user = ?2 AND left IS NULL",
    /* A row back: the user joined now (new, or back after leaving). */
    [Q_MEM_JOIN] = ("INSERT INTO members(grp, user, joined, left, counted) VALUES(?1, ?2, ?3, NULL, ?3)"
                   " ON CONFLICT(grp, user) DO UPDATE SET joined = excluded.joined, left = NULL,"
                   " counted = max(members.counted, excluded.counted)"
                   " WHERE members.left IS NOT NULL RETURNING 1"),
    [Q_GCUR_JOIN] = ("INSERT INTO gcursors(grp, dev, user, cursor) SELECT ?1, dev, user, ?3 FROM devices"
                    " WHERE user = ?2 ON CONFLICT(grp, dev) DO UPDATE SET cursor = max(cursor, excluded.cursor)"),
    [Q_GMEMBERS_COUNT] = "SELECT count(*) FROM members WHERE grp = ?1 AND left IS NULL AND user <> ?2",
    [Q_ROLE] = "SELECT count(*), coalesce(max(user = ?2), 0) FROM members WHERE grp = ?1 AND left IS NULL",
    [Q_USER_GROUPS] = ("SELECT m.grp FROM members m WHERE m.user = ?1 AND (m.left IS NULL OR EXISTS("
                      "SELECT 1 FROM gcursors g WHERE g.grp = m.grp AND g.dev = ?2 AND g.cursor < m.left))"
                      " ORDER BY m.grp"),
    [Q_GCUR_ADD] = ("INSERT INTO gcursors(grp, dev, user, cursor) VALUES(?1, ?2, ?3, ?4)"
                   " ON CONFLICT(grp, dev) DO NOTHING"),
    [Q_GCUR_GET] = "SELECT cursor, user FROM gcursors WHERE grp = ?1 AND dev = ?2",
    [Q_GCUR_SET] = "UPDATE gcursors SET cursor = ?3 WHERE grp = ?1 AND dev = ?2 AND cursor < ?3",
    [Q_GCUR_MEMBER_MAX] = "SELECT counted FROM members WHERE grp = ?1 AND user = ?2",
    [Q_MEM_COUNT_SET] = "UPDATE members SET counted = ?3 WHERE grp = ?1 AND user = ?2 AND counted < ?3",
    /* min(): a member is counted once (members.counted), so never more than
     * it went to; the bound is only a safety net. */
    [Q_GRECEIPT] = ("UPDATE inbox SET gdelivered = min(gdelivered + 1, gmembers), delivered = 1"
                   " WHERE user = ?1 AND seq > ?2 AND seq <= ?3 AND sender <> ?4"
                   " RETURNING sender_dev, cmid, gdelivered, gmembers"),
    [Q_GTRIM_LOW] = ("SELECT min(g.cursor) FROM gcursors g JOIN members m ON m.grp = g.grp AND m.user = g.user"
                    " WHERE g.grp = ?1 AND (m.left IS NULL OR g.cursor < m.left)"),
    [Q_GCUR_DONE] = ("DELETE FROM gcursors WHERE grp = ?1 AND EXISTS(SELECT 1 FROM members m"
                    " WHERE m.grp = gcursors.grp AND m.user = gcursors.user AND m.left IS NOT NULL"
                    " AND gcursors.cursor >= m.left)"),
    [Q_GCUR_DEL_DEV] = "DELETE FROM gcursors WHERE dev = ?1",
    [Q_NOTICE_DEL_IF] = "DELETE FROM notices WHERE dev = ?1 AND kind = ?2 AND cmid = ?3 AND code = ?4",
    [Q_GDEVICES] = ("SELECT g.user, g.dev, (SELECT count(*) FROM inbox i WHERE i.user = g.grp AND i.seq > g.cursor"
                   " AND i.seq <= coalesce(m.left, 9223372036854775807))"
                   " FROM gcursors g JOIN members m ON m.grp = g.grp AND m.user = g.user"
                   " WHERE g.grp = ?1 AND m.left IS NULL"),
};

struct tern__rstore {
  sqlite3 *db;
  sqlite3_stmt *q[Q_N];
  /* The last SQLite failure, for logs: "what: sqlite message". */
  char err[256];
  tern__sqlerr e;         /* err, and whether that failure was SQLITE_FULL */
#ifdef TERN_TEST_HOOKS
  unsigned fault_commits; /* commits still to fail (tern__rstore_fault_commit) */
  int fault_leave_early;  /* tern__rstore_fault_leave_early */
#endif
  /* The disk reserve: a file of reserve_bytes next to the database, held
   * while reserve_held (always 1 when reserve_bytes is 0). */
  char *reserve_path;
  uint64_t reserve_bytes;
  int reserve_held;
  int secure_delete;      /* PRAGMA secure_delete as opened (restored with the reserve) */
  uint64_t (*disk_free)(void *ctx); /* tern__rstore_config.disk_free */
  void *disk_ctx;
  /* Bounds on what the WAL holds, with a reserve (spec/store.md, "A full
   * disk"): a transaction writes at most txn_budget (a quarter of the
   * reserve) in message bodies plus a page per message; txn_used is what
   * the open one has written so far. After a commit that leaves the WAL
   * with ckpt_pages frames or more, the store checkpoints, and a
   * checkpoint that fails for want of room sets short_of_room. */
  uint64_t page_size;
  uint64_t txn_budget;    /* UINT64_MAX: none (no reserve) */
  uint64_t txn_used;
  int ckpt_pages;         /* 0: SQLite's automatic checkpoint */
  int short_of_room;
  char ckpt_err[256];     /* why, for errmsg after the commit */
  /* The inboxes' next sequence numbers and the chains' last ones, written
   * back at COMMIT (seqcache.h); emptied by every rollback and failure. */
  tern__seqcache *counters;
  uint64_t data_version;  /* PRAGMA data_version when the cache was last checked */
  int counters_checked;   /* checked in the open transaction */
};

/* SQLite integers are signed: sequence numbers, times and ids beyond
 * INT64_MAX do not occur, and a bound above that is the same as INT64_MAX. */
static int64_t clamp(uint64_t v) { return v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v; }

/* Dirty counters live only inside the transaction that made them: when
 * none is open (SQLite rolled it back on a failure, or it ended), they are
 * forgotten, so that nothing the cache says outlives what the tables say,
 * and the next transaction checks the cache against other connections'
 * commits again (counter_get). */
static void forget_if_gone(tern__rstore *s) {
  if (!sqlite3_get_autocommit(s->db)) return;
  s->counters_checked = 0;
  if (s->counters && tern__seqcache_dirty(s->counters)) tern__seqcache_clear(s->counters);
}

/* Records why SQLite failed and maps its code to a TERN_E* code. */
static int fail(tern__rstore *s, int rc, const char *what) {
  int r = tern__sql_fail(s->db, &s->e, rc, what);
  forget_if_gone(s);
  return r;
}

/* A refusal that is not SQLite's: recorded like a failure, for the log. */
static int refuse(tern__rstore *s, int code, const char *what) {
  snprintf(s->err, sizeof s->err, "%s (%s)", what, tern_errname(code));
  s->e.last_full = 0;
  return code;
}

static void done(sqlite3_stmt *q) { tern__sql_done(q); }

/* Steps q, which must produce no row, and resets it. */
static int run(tern__rstore *s, int id) { return tern__sql_run(s->db, &s->e, s->q[id], sql[id]); }

/* Steps a query that returns at most one integer: 1 with *v set, 0 when
 * there is no row or the value is NULL. Resets it. */
static int get_int(tern__rstore *s, int id, uint64_t *v) {
  return tern__sql_u64(s->db, &s->e, s->q[id], sql[id], v);
}

static void bind_dev(sqlite3_stmt *q, int i, const uint8_t dev[32]) { sqlite3_bind_blob(q, i, dev, 32, SQLITE_STATIC); }
static void bind_text(sqlite3_stmt *q, int i, const char *t) { sqlite3_bind_text(q, i, t, -1, SQLITE_STATIC); }

/* The savepoint that makes one compound operation atomic. */
static int op_begin(tern__rstore *s) {
  forget_if_gone(s); /* an operation alone is a transaction of its own */
  return run(s, Q_SP_BEGIN);
}

/* Ends the operation: releases the savepoint if rc >= 0, otherwise rolls
 * it back first. If SQLite already rolled back the whole transaction (it
 * may on SQLITE_FULL or an I/O error), the savepoint is gone and the
 * failing statements change nothing. An operation outside a transaction
 * was a transaction of its own: nothing of the budget stays used.
 * Returns rc, or the release's error. */
static int op_end(tern__rstore *s, int rc) {
  if (rc < 0) {
    char keep[sizeof s->err];
    memcpy(keep, s->err, sizeof keep);
    if (!sqlite3_get_autocommit(s->db)) {
      (void)run(s, Q_SP_ROLLBACK);
      (void)run(s, Q_SP_RELEASE);
    }
    memcpy(s->err, keep, sizeof keep);
  } else {
    int r = run(s, Q_SP_RELEASE);
    if (r < 0) rc = r;
  }
  if (sqlite3_get_autocommit(s->db)) s->txn_used = 0;
  forget_if_gone(s);
  return rc;
}

/* An inbox's next sequence number (1 for a new inbox) or a chain's last
 * one (0 for a new chain): from the cache, else from the table (and then
 * cached, clean). */
static int counter_get(tern__rstore *s, int kind, const char *user, const char *sender, uint64_t *v) {
  forget_if_gone(s);
  /* Another connection to the same file (a second relay sharing the
   * store) may have moved a counter since the cache read it: once a
   * transaction (and on every read outside one), the store asks SQLite
   * whether anyone else committed, and forgets the cache if so. Inside
   * BEGIN IMMEDIATE nobody else can commit until this transaction ends. */
  if (!s->counters_checked) {
    uint64_t dv = 0;
    int rc = get_int(s, Q_DATA_VERSION, &dv);
    if (rc < 0) return rc;
    if (dv != s->data_version) {
      tern__seqcache_clear(s->counters);
      s->data_version = dv;
    }
    s->counters_checked = tern__rstore_in_txn(s);
  }
  if (tern__seqcache_get(s->counters, kind, user, sender, v)) return 0;
  int id = kind == TERN__SC_NEXT ? Q_SEQ_GET : Q_CHAIN_GET;
  bind_text(s->q[id], 1, user);
  if (sender) bind_text(s->q[id], 2, sender);
  *v = kind == TERN__SC_NEXT ? 1 : 0;
  int rc = get_int(s, id, v);
  if (rc < 0) return rc;
  /* Not cached for want of memory: read again next time. */
  (void)tern__seqcache_put(s->counters, kind, user, sender, *v, 0);
  return 0;
}

/* Writes one counter to its table. */
static int counter_write(void *ctx, int kind, const char *user, const char *sender, uint64_t v) {
  tern__rstore *s = ctx;
  int id = kind == TERN__SC_NEXT ? Q_SEQ_SET : Q_CHAIN_PUT;
  bind_text(s->q[id], 1, user);
  if (sender) bind_text(s->q[id], 2, sender);
  sqlite3_bind_int64(s->q[id], sender ? 3 : 2, clamp(v));
  return run(s, id);
}

/* Sets a counter inside the caller's transaction: in the cache (dirty,
 * written back at COMMIT), or, when the cache has no memory for a new key
 * (the key then stays out of the cache), in the table now. *cached says
 * which. */
static int counter_set(tern__rstore *s, int kind, const char *user, const char *sender, uint64_t v,
                       int *cached) {
  *cached = tern__seqcache_put(s->counters, kind, user, sender, v, 1) == 0;
  return *cached ? 0 : counter_write(s, kind, user, sender, v);
}

/* An append's two counters: the inbox's next seq past sq, the chain's last
 * at sq. Alone (no transaction of the caller's) they are written to the
 * tables inside the operation, and cached only once it has committed
 * (append_op); inside one, if the second cannot be set the first is put
 * back (a key already cached is set without failing), so that a failed
 * append leaves no counter moved behind the savepoint's rollback. */
static int counters_moved(tern__rstore *s, const char *to, const char *from, uint64_t sq,
                          int in_txn) {
  if (!in_txn) {
    int rc = counter_write(s, TERN__SC_NEXT, to, NULL, sq + 1);
    return rc < 0 ? rc : counter_write(s, TERN__SC_CHAIN, to, from, sq);
  }
  int next_cached = 0, chain_cached = 0;
  int rc = counter_set(s, TERN__SC_NEXT, to, NULL, sq + 1, &next_cached);
  if (rc == 0 && (rc = counter_set(s, TERN__SC_CHAIN, to, from, sq, &chain_cached)) < 0 && next_cached)
    (void)tern__seqcache_put(s->counters, TERN__SC_NEXT, to, NULL, sq, 1);
  return rc;
}

/* The last sequence number an inbox gave (0 if none). */
static int seq_last(tern__rstore *s, const char *user, uint64_t *last) {
  uint64_t next = 1;
  int rc = counter_get(s, TERN__SC_NEXT, user, NULL, &next);
  if (rc < 0) return rc;
  *last = next - 1;
  return 0;
}

static int exec(tern__rstore *s, const char *text, const char *what) {
  return tern__sql_exec(s->db, &s->e, text, what);
}

/* Brings the schema to SCHEMA_VERSION in one transaction: a crash during a
 * migration leaves the old version. A store newer than this code is refused
 * rather than misread. */
static int migrate(tern__rstore *s) {
  int rc = exec(s, "BEGIN IMMEDIATE", "begin migration");
  if (rc < 0) return rc;
  sqlite3_stmt *q = NULL;
  int64_t version = -1;
  int sr = sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &q, NULL);
  if (sr == SQLITE_OK && (sr = sqlite3_step(q)) == SQLITE_ROW) version = sqlite3_column_int64(q, 0);
  sqlite3_finalize(q);
  if (version < 0) {
    rc = fail(s, sr, "read user_version");
  } else if (version > SCHEMA_VERSION) {
    snprintf(s->err, sizeof s->err, "store schema version %lld is newer than this relay's (%d)",
             (long long)version, SCHEMA_VERSION);
    rc = TERN_ESTORE;
  }
  for (int64_t v = version; rc == 0 && v >= 0 && v < SCHEMA_VERSION; v++) {
    char set[64];
    snprintf(set, sizeof set, "PRAGMA user_version = %lld", (long long)(v + 1));
    rc = exec(s, migrations[v], "migrate");
    if (rc == 0) rc = exec(s, set, "set user_version");
  }
  if (rc == 0) return exec(s, "COMMIT", "commit migration");
  (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  return rc;
}

static int checkpoint_mode(tern__rstore *s, int mode, const char *what);

/* SQLite calls this after each commit with the frames the WAL holds. It
 * replaces the automatic checkpoint (see configure), which does the same
 * but ignores a failure: once the WAL holds ckpt_pages frames, it is
 * checkpointed (PASSIVE: without waiting for readers), and a checkpoint
 * that fails for want of room sets short_of_room, with the reason in
 * ckpt_err. The commit has happened either way. */
static int wal_hook(void *ctx, sqlite3 *db, const char *name, int frames) {
  (void)db, (void)name;
  tern__rstore *s = ctx;
  if (frames < s->ckpt_pages) return SQLITE_OK;
  char keep[sizeof s->err];
  int full = s->e.last_full;
  memcpy(keep, s->err, sizeof keep);
  if (checkpoint_mode(s, SQLITE_CHECKPOINT_PASSIVE, "checkpoint") < 0 && s->short_of_room)
    memcpy(s->ckpt_err, s->err, sizeof s->ckpt_err);
  memcpy(s->err, keep, sizeof keep); /* no call has failed */
  s->e.last_full = full;
  return SQLITE_OK;
}

/* Sets the pragmas that the durability rules rest on. */
static int configure(tern__rstore *s, const tern__rstore_config *cfg) {
  int sync = cfg->synchronous == 0 ? 2 : cfg->synchronous;
  if (sync < 1 || sync > 3) {
    snprintf(s->err, sizeof s->err, "synchronous must be 1 (NORMAL) or 2 (FULL), not %d", cfg->synchronous);
    return TERN_EINVAL;
  }
  int rc = sqlite3_busy_timeout(s->db, 5000);
  if (rc != SQLITE_OK) return fail(s, rc, "busy_timeout");
  /* A new store can give the pages freed by deletions back to the file
   * system (tern__rstore_take_reserve runs incremental_vacuum). This must
   * come before anything writes the file, WAL mode included; on an
   * existing store it changes nothing. */
  if ((rc = exec(s, "PRAGMA auto_vacuum = INCREMENTAL", "auto_vacuum")) < 0) return rc;
  /* Each operation is a SAVEPOINT inside the round's transaction, and
   * SQLite keeps the pages it changes in a statement journal so that the
   * operation alone can be undone. That journal is never needed after a
   * crash (the WAL is what recovers), yet in a temp file it cost a pwrite
   * per page per operation: about 20 syscalls a message under load, the
   * largest single cost of the relay (bench/NOTES.md, "The statement
   * journal"). In memory it costs a copy. */
  if ((rc = exec(s, "PRAGMA temp_store = MEMORY", "temp_store")) < 0) return rc;
  /* A file must really be in WAL mode, or readers would block the relay's
   * writes. */
  if ((rc = tern__sql_wal(s->db, &s->e)) < 0) return rc;
  sqlite3_stmt *q = NULL;
  char text[96];
  snprintf(text, sizeof text, "PRAGMA synchronous = %d", sync);
  rc = exec(s, text, "synchronous");
  if (rc == 0 && cfg->max_pages) {
    snprintf(text, sizeof text, "PRAGMA max_page_count = %lu", (unsigned long)cfg->max_pages);
    rc = exec(s, text, "max_page_count");
  }
  if (rc == 0) {
    rc = sqlite3_prepare_v2(s->db, "PRAGMA secure_delete", -1, &q, NULL);
    if (rc == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW) s->secure_delete = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    rc = rc == SQLITE_OK ? 0 : fail(s, rc, "secure_delete");
  }
  if (rc == 0) {
    s->page_size = 4096;
    rc = sqlite3_prepare_v2(s->db, "PRAGMA page_size", -1, &q, NULL);
    if (rc == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int64(q, 0) > 0)
      s->page_size = (uint64_t)sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    rc = rc == SQLITE_OK ? 0 : fail(s, rc, "page_size");
  }
  s->txn_budget = UINT64_MAX;
  if (rc == 0 && s->reserve_path) {
    /* After a full disk, the checkpoint that moves the committed WAL into
     * the database must fit in the room the reserve gives back. The WAL
     * holds, not yet checkpointed, less than a quarter of the reserve
     * before a commit (the store checkpoints after a commit that leaves
     * it with more), and a commit adds at most a transaction's budget,
     * another quarter (plus one message): together well within the
     * reserve. SQLite's own automatic checkpoint would fail silently on
     * a full disk, and the WAL would go on growing past what any
     * checkpoint could ever move; the store checkpoints itself
     * (wal_hook) and says when it could not. */
    s->txn_budget = cfg->reserve_bytes / 4;
    uint64_t pages = cfg->reserve_bytes / 4 / s->page_size;
    if (pages < 1) pages = 1;
    if (pages > 1000) pages = 1000; /* SQLite's default */
    s->ckpt_pages = (int)pages;
    sqlite3_wal_hook(s->db, wal_hook, s);
    /* A WAL that the checkpoint has emptied is cut back to that size when
     * it starts over, instead of keeping the room of its largest past. */
    snprintf(text, sizeof text, "PRAGMA journal_size_limit = %llu",
             (unsigned long long)(pages * (s->page_size + 24) + 32));
    rc = exec(s, text, "journal_size_limit");
  }
  return rc;
}

/* Takes the reserve: a file of reserve_bytes whose blocks are allocated,
 * so that deleting it really frees them. 1 held, 0 no room (s->err says). */
static int reserve_create(tern__rstore *s) {
  int fd = open(s->reserve_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  int err = fd < 0 ? errno : 0;
  if (fd >= 0) {
    struct stat st;
    if (fstat(fd, &st) == 0 && (uint64_t)st.st_size > s->reserve_bytes)
      err = ftruncate(fd, (off_t)s->reserve_bytes) == 0 ? 0 : errno;
    /* A simulated disk (tests) has its own idea of the room left. */
    if (err == 0 && s->disk_free && fstat(fd, &st) == 0 &&
        s->disk_free(s->disk_ctx) + (uint64_t)st.st_size < s->reserve_bytes)
      err = ENOSPC;
    if (err == 0) err = posix_fallocate(fd, 0, (off_t)s->reserve_bytes);
    if (err == EOPNOTSUPP || err == EINVAL) {
      /* No fallocate here: write the blocks. */
      static const char zeros[65536];
      err = 0;
      for (uint64_t off = 0; err == 0 && off < s->reserve_bytes;) {
        size_t n = s->reserve_bytes - off < sizeof zeros ? (size_t)(s->reserve_bytes - off) : sizeof zeros;
        ssize_t w = pwrite(fd, zeros, n, (off_t)off);
        if (w <= 0) err = w < 0 ? errno : ENOSPC;
        else off += (uint64_t)w;
      }
    }
    close(fd);
  }
  if (err) {
    (void)unlink(s->reserve_path);
    snprintf(s->err, sizeof s->err, "disk reserve %s (%llu bytes): %s", s->reserve_path,
             (unsigned long long)s->reserve_bytes, strerror(err));
    s->e.last_full = err == ENOSPC;
    return 0;
  }
  return 1;
}

/* Moves the WAL into the database and truncates it. Without waiting for
 * readers: an operator's reader must not stall the relay. A checkpoint that
 * could not finish for want of room leaves short_of_room set; one that
 * did clears it. */
static int checkpoint_mode(tern__rstore *s, int mode, const char *what) {
  /* A PASSIVE checkpoint never waits (and is the one run from wal_hook,
   * inside a commit, where the busy handler is best left alone). */
  if (mode != SQLITE_CHECKPOINT_PASSIVE) sqlite3_busy_timeout(s->db, 0);
  int log = -1, done = -1;
  int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, mode, &log, &done);
  if (mode != SQLITE_CHECKPOINT_PASSIVE) sqlite3_busy_timeout(s->db, 5000);
  if (rc == SQLITE_OK) {
    if (log == done) s->short_of_room = 0;
    return 0;
  }
  if ((rc & 0xff) == SQLITE_FULL) s->short_of_room = 1;
  return fail(s, rc, what);
}

static int checkpoint(tern__rstore *s) {
  return checkpoint_mode(s, SQLITE_CHECKPOINT_TRUNCATE, "wal_checkpoint(TRUNCATE)");
}

/* secure_delete: ON (Debian builds SQLite so) overwrites every deleted
 * page, so that deleting delivered messages writes as much as storing
 * them did; on a full disk that would stop the deletions and the acks
 * that cause them. FAST zeroes what it can without extra writes. */
static void set_secure_delete(tern__rstore *s, int fast) {
  char text[48];
  snprintf(text, sizeof text, "PRAGMA secure_delete = %s",
           fast ? "FAST" : s->secure_delete == 1 ? "ON" : s->secure_delete == 2 ? "FAST" : "OFF");
  (void)sqlite3_exec(s->db, text, NULL, NULL, NULL);
}

int tern__rstore_open(tern__rstore **out, const tern__rstore_config *cfg, char *err, size_t errcap) {
  *out = NULL;
  if (err && errcap) err[0] = 0;
  if (!cfg || !cfg->path) return TERN_EINVAL;
  tern__rstore *s = calloc(1, sizeof *s);
  if (!s) return TERN_ENOMEM;
  s->e.buf = s->err;
  s->e.cap = sizeof s->err;
  s->disk_free = cfg->disk_free;
  s->disk_ctx = cfg->disk_ctx;
  /* What is stored is nobody else's to read (a test's VFS has no files). */
  int rc = cfg->vfs ? 0 : tern__sql_private_file(cfg->path);
  if (rc < 0) {
    snprintf(s->err, sizeof s->err, "%s: cannot create or secure the file: %s", cfg->path, strerror(errno));
    if (err && errcap) snprintf(err, errcap, "%s", s->err);
    free(s);
    return TERN_ESTORE;
  }
  rc = sqlite3_open_v2(cfg->path, &s->db,
                       SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, cfg->vfs);
  if (rc != SQLITE_OK) {
    rc = s->db ? fail(s, rc, cfg->path) : TERN_ENOMEM;
    goto fail_db;
  }
  sqlite3_extended_result_codes(s->db, 1);
  if (!(s->counters = tern__seqcache_new())) {
    rc = TERN_ENOMEM;
    goto fail_db;
  }
  s->reserve_held = 1;
  if (cfg->reserve_bytes && strcmp(cfg->path, ":memory:") != 0) {
    size_t n = strlen(cfg->path) + sizeof "-reserve";
    if (!(s->reserve_path = malloc(n))) {
      rc = TERN_ENOMEM;
      goto fail_db;
    }
    snprintf(s->reserve_path, n, "%s-reserve", cfg->path);
    s->reserve_bytes = cfg->reserve_bytes;
  }
  rc = configure(s, cfg);
  if (rc == 0) rc = migrate(s);
  for (int i = 0; rc == 0 && i < Q_N; i++) {
    int r = sqlite3_prepare_v3(s->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->q[i], NULL);
    if (r != SQLITE_OK) rc = fail(s, r, sql[i]);
  }
  if (rc == 0) {
    /* A disk already too full for the reserve: the store opens (what it
     * holds can be delivered) but is short of room until it is taken. */
    if (s->reserve_path) s->reserve_held = reserve_create(s);
    *out = s;
    return 0;
  }
fail_db:
  if (err && errcap) snprintf(err, errcap, "%s", s->err);
  tern__rstore_close(s);
  return rc;
}

void tern__rstore_close(tern__rstore *s) {
  if (!s) return;
  for (int i = 0; i < Q_N; i++) sqlite3_finalize(s->q[i]);
  /* Closing with a transaction open rolls it back: nothing uncommitted
   * survives, as after a crash. */
  sqlite3_close(s->db);
  tern__seqcache_free(s->counters);
  free(s->reserve_path);
  free(s);
}

const char *tern__rstore_errmsg(const tern__rstore *s) { return s->err; }

int tern__rstore_last_full(const tern__rstore *s) { return s->e.last_full; }

int tern__rstore_reserve_held(const tern__rstore *s) { return s->reserve_held; }

uint64_t tern__rstore_release_reserve(tern__rstore *s) {
  if (!s->reserve_path || !s->reserve_held) return 0;
  char keep[sizeof s->err];
  memcpy(keep, s->err, sizeof keep); /* the failure that led here stays reported */
  int full = s->e.last_full;
  (void)unlink(s->reserve_path);
  s->reserve_held = 0;
  set_secure_delete(s, 1);
  if (sqlite3_get_autocommit(s->db)) (void)checkpoint(s);
  s->short_of_room = 0; /* told, and answered: the reserve is given back */
  memcpy(s->err, keep, sizeof keep);
  s->e.last_full = full;
  return s->reserve_bytes;
}

/* Frees the free pages of an incremental auto_vacuum store: gives them back
 * to the file system. Moving pages from the end of the file into the
 * holes is written to the WAL like any change, so it goes in steps that
 * fit in the room the reserve gave back (half a transaction's budget of
 * pages, each of which may move a page and rewrite its parent), with a
 * checkpoint after each: one vacuum of everything could need more room
 * than there is, fail, and fail again at every retry. At most 32 steps a
 * call, so that a relay that deleted a lot does not stall for long; the
 * next call goes on. */
static int vacuum(tern__rstore *s) {
  uint64_t step = s->txn_budget == UINT64_MAX ? 1000 : s->txn_budget / 2 / s->page_size;
  if (step < 1) step = 1;
  int64_t before = -1;
  for (int n = 0; n < 32; n++) {
    sqlite3_stmt *q = NULL;
    int64_t free_pages = -1;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA freelist_count", -1, &q, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) free_pages = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    if (free_pages < 0) return fail(s, rc, "freelist_count");
    /* Done, or no progress (not an incremental auto_vacuum store). */
    if (free_pages == 0 || free_pages == before) return 0;
    before = free_pages;
    char text[64];
    snprintf(text, sizeof text, "PRAGMA incremental_vacuum(%llu)", (unsigned long long)step);
    rc = sqlite3_exec(s->db, text, NULL, NULL, NULL);
    if (rc != SQLITE_OK) return fail(s, rc, "incremental_vacuum");
    if ((rc = checkpoint(s)) < 0) return rc;
  }
  return 0;
}

int tern__rstore_take_reserve(tern__rstore *s) {
  if (s->reserve_held) return 1;
  if (!sqlite3_get_autocommit(s->db)) return TERN_EINVAL;
  /* Give the pages that deletions freed back to the file system, and the
   * WAL's room too, then ask for twice the reserve: the reserve, and as
   * much again to work in, or the next commit would fail at once. */
  if (checkpoint(s) < 0) return 0;
  if (vacuum(s) < 0) return 0;
  uint64_t avail;
  if (s->disk_free) {
    avail = s->disk_free(s->disk_ctx);
  } else {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", s->reserve_path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = 0;
    else *slash = 0;
    struct statvfs vfs;
    if (statvfs(dir, &vfs) != 0) {
      snprintf(s->err, sizeof s->err, "statvfs %.200s: %s", dir, strerror(errno));
      s->e.last_full = 0;
      return 0;
    }
    avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
  }
  if (avail < 2 * s->reserve_bytes) {
    snprintf(s->err, sizeof s->err, "%llu bytes free on the store's disk; want %llu",
             (unsigned long long)avail, (unsigned long long)(2 * s->reserve_bytes));
    s->e.last_full = 1;
    return 0;
  }
  s->reserve_held = reserve_create(s);
  if (s->reserve_held) set_secure_delete(s, 0);
  return s->reserve_held;
}

#ifdef TERN_TEST_HOOKS
void tern__rstore_fault_commit(tern__rstore *s, unsigned n) { s->fault_commits = n; }
void tern__rstore_fault_leave_early(tern__rstore *s, int on) { s->fault_leave_early = on; }
#endif

int tern__rstore_begin(tern__rstore *s) {
  if (!sqlite3_get_autocommit(s->db)) return TERN_EINVAL;
  forget_if_gone(s);
  s->txn_used = 0;
  return run(s, Q_BEGIN);
}

int tern__rstore_commit(tern__rstore *s) {
  if (sqlite3_get_autocommit(s->db)) {
    snprintf(s->err, sizeof s->err, "commit without a transaction (rolled back by SQLite?)");
    s->e.last_full = 0;
    forget_if_gone(s);
    return TERN_ESTORE;
  }
  s->txn_used = 0;
  /* The counters the transaction changed go in with it. */
  int rc = tern__seqcache_each_dirty(s->counters, counter_write, s);
  if (rc < 0) return rc; /* the caller rolls back (fail() forgot them if SQLite did) */
#ifdef TERN_TEST_HOOKS
  if (s->fault_commits) {
    /* As SQLite does when the WAL cannot grow at COMMIT. */
    s->fault_commits--;
    (void)run(s, Q_ROLLBACK);
    tern__seqcache_clear(s->counters);
    snprintf(s->err, sizeof s->err, "COMMIT: database or disk is full (injected)");
    s->e.last_full = 1;
    return TERN_ESTORE;
  }
#endif
  rc = run(s, Q_COMMIT);
  /* A failed COMMIT leaves the transaction open (the caller rolls back)
   * or gone (forget_if_gone), its counters dirty or forgotten with it. */
  if (rc == 0) {
    tern__seqcache_clean(s->counters);
    s->counters_checked = 0; /* the next transaction checks again */
  } else {
    forget_if_gone(s);
  }
  /* Committed, but its checkpoint (wal_hook) found the disk full: the
   * caller gives the reserve back, and logs why. */
  if (rc == 0 && s->short_of_room) {
    memcpy(s->err, s->ckpt_err, sizeof s->err);
    s->e.last_full = 1;
  }
  return rc;
}

void tern__rstore_rollback(tern__rstore *s) {
  s->txn_used = 0;
  if (!sqlite3_get_autocommit(s->db)) (void)run(s, Q_ROLLBACK);
  tern__seqcache_clear(s->counters);
  s->counters_checked = 0;
}

int tern__rstore_short_of_room(const tern__rstore *s) { return s->short_of_room; }

/* What an append of a body of `len` bytes counts against the transaction's
 * budget: the body and a page (its row, its index and dedup entries, and
 * a page that a body of more than half a page fills alone). */
static uint64_t msg_cost(const tern__rstore *s, uint64_t len) { return len + s->page_size; }

int tern__rstore_txn_full(const tern__rstore *s, size_t body_len) {
  return s->txn_used > 0 && s->txn_budget != UINT64_MAX &&
         s->txn_used + msg_cost(s, body_len) > s->txn_budget;
}

int tern__rstore_in_txn(const tern__rstore *s) { return !sqlite3_get_autocommit(s->db); }

int tern__rstore_dedup_get(tern__rstore *s, const uint8_t dev[32], uint64_t cmid, uint64_t *seq,
                           uint64_t *ts) {
  sqlite3_stmt *q = s->q[Q_DEDUP_GET];
  bind_dev(q, 1, dev);
  sqlite3_bind_int64(q, 2, (int64_t)cmid);
  int rc = sqlite3_step(q), ret = 0;
  if (rc == SQLITE_ROW) {
    *seq = (uint64_t)sqlite3_column_int64(q, 0);
    *ts = (uint64_t)sqlite3_column_int64(q, 1);
    ret = 1;
  } else if (rc != SQLITE_DONE) {
    ret = fail(s, rc, "dedup_get");
  }
  done(q);
  return ret;
}

int tern__rstore_held(tern__rstore *s, const char *who, int dir, uint64_t *msgs, uint64_t *bytes) {
  sqlite3_stmt *q = s->q[Q_HELD];
  bind_text(q, 1, who);
  sqlite3_bind_int(q, 2, dir);
  *msgs = *bytes = 0;
  int rc = sqlite3_step(q), ret = 0;
  if (rc == SQLITE_ROW) {
    *msgs = (uint64_t)sqlite3_column_int64(q, 0);
    *bytes = (uint64_t)sqlite3_column_int64(q, 1);
  } else if (rc != SQLITE_DONE) {
    ret = fail(s, rc, "held");
  }
  done(q);
  return ret;
}

/* How an append writes its dedup row. */
enum { DEDUP_NONE, DEDUP_PUT, DEDUP_REPLACE };

/* The steps of an append, inside its savepoint. `dedup`: DEDUP_PUT;
 * DEDUP_NONE for a carbon; DEDUP_REPLACE for the fault that stores a
 * (dev, cmid) a second time. */
static int append(tern__rstore *s, const char *to, const tern__rmsg *m, uint64_t *seq, uint64_t *prev,
                  int dedup) {
  /* The two counters are set by the caller once the whole append holds. */
  int rc = counter_get(s, TERN__SC_NEXT, to, NULL, seq);
  if (rc < 0) return rc;
  if ((rc = counter_get(s, TERN__SC_CHAIN, to, m->from, prev)) < 0) return rc;

  sqlite3_stmt *q = s->q[Q_INBOX_PUT];
  bind_text(q, 1, to);
  sqlite3_bind_int64(q, 2, (int64_t)*seq);
  sqlite3_bind_int64(q, 3, (int64_t)*prev);
  sqlite3_bind_int64(q, 4, clamp(m->ts));
  sqlite3_bind_int64(q, 5, (int64_t)m->cmid);
  sqlite3_bind_int64(q, 6, (int64_t)m->flags);
  bind_text(q, 7, m->from);
  bind_dev(q, 8, m->sender_dev);
  /* A NULL pointer would bind SQL NULL; an empty body is an empty blob. */
  sqlite3_bind_blob64(q, 9, m->body_len ? (const void *)m->body : "", m->body_len, SQLITE_STATIC);
  bind_text(q, 10, m->peer ? m->peer : "");
  sqlite3_bind_int64(q, 11, (int64_t)m->gmembers);
  if ((rc = run(s, Q_INBOX_PUT)) < 0) return rc;
  if (dedup == DEDUP_NONE) return 0;

  q = s->q[dedup == DEDUP_REPLACE ? Q_DEDUP_REPLACE : Q_DEDUP_PUT];
  bind_dev(q, 1, m->sender_dev);
  sqlite3_bind_int64(q, 2, (int64_t)m->cmid);
  bind_text(q, 3, to);
  sqlite3_bind_int64(q, 4, (int64_t)*seq);
  sqlite3_bind_int64(q, 5, clamp(m->ts));
  rc = sqlite3_step(q);
  int ret = 0;
  if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
    /* The caller skipped dedup_get: storing it twice is what dedup is for. */
    snprintf(s->err, sizeof s->err, "(dev, cmid %llu) already stored", (unsigned long long)m->cmid);
    s->e.last_full = 0;
    ret = TERN_EEXIST;
  } else if (rc != SQLITE_DONE) {
    ret = fail(s, rc, "dedup_put");
  }
  done(q);
  return ret;
}

static int append_op(tern__rstore *s, const char *to, const tern__rmsg *m, uint64_t *seq,
                     uint64_t *prev_seq, int dedup) {
  if (!to || !m->from || !m->sender_dev || (m->body_len && !m->body)) return TERN_EINVAL;
  uint64_t sq = 0, pv = 0;
  int in_txn = tern__rstore_in_txn(s);
  int rc = op_begin(s);
  if (rc < 0) return rc;
  rc = append(s, to, m, &sq, &pv, dedup);
  if (rc == 0) rc = counters_moved(s, to, m->from, sq, in_txn);
  if (rc == 0) s->txn_used += msg_cost(s, m->body_len);
  int moved = rc == 0;
  rc = op_end(s, rc);
  if (!in_txn) {
    /* The operation was the transaction: what it committed is cached
     * (clean); after a failure nothing cached may be trusted. */
    if (rc == 0) {
      (void)tern__seqcache_put(s->counters, TERN__SC_NEXT, to, NULL, sq + 1, 0);
      (void)tern__seqcache_put(s->counters, TERN__SC_CHAIN, to, m->from, sq, 0);
    } else {
      tern__seqcache_clear(s->counters);
    }
  } else if (rc < 0 && moved) {
    /* The savepoint's RELEASE failed after the counters moved: put them
     * back (both keys are cached or were written in the rolled-back
     * savepoint; putting back a key not cached adds it, dirty, at the
     * value the tables give). */
    (void)tern__seqcache_put(s->counters, TERN__SC_NEXT, to, NULL, sq, 1);
    (void)tern__seqcache_put(s->counters, TERN__SC_CHAIN, to, m->from, pv, 1);
  }
  if (rc == 0) {
    *seq = sq;
    *prev_seq = pv;
  }
  return rc;
}

int tern__rstore_append(tern__rstore *s, const char *to, const tern__rmsg *m, uint64_t *seq,
                        uint64_t *prev_seq) {
  return append_op(s, to, m, seq, prev_seq, DEDUP_PUT);
}

int tern__rstore_append_carbon(tern__rstore *s, const char *user, const tern__rmsg *m,
                               uint64_t *seq, uint64_t *prev_seq) {
  return append_op(s, user, m, seq, prev_seq, DEDUP_NONE);
}

int tern__rstore_settled(tern__rstore *s, const uint8_t dev[32], uint64_t below) {
  sqlite3_stmt *q = s->q[Q_SETTLED_RAISE];
  bind_dev(q, 1, dev);
  sqlite3_bind_int64(q, 2, clamp(below));
  int rc = run(s, Q_SETTLED_RAISE);
  if (rc < 0) return rc;
  q = s->q[Q_DEDUP_TRIM];
  bind_dev(q, 1, dev);
  sqlite3_bind_int64(q, 2, clamp(below));
  return run(s, Q_DEDUP_TRIM);
}

int tern__rstore_settled_get(tern__rstore *s, const uint8_t dev[32], uint64_t *below) {
  *below = 0;
  bind_dev(s->q[Q_SETTLED_GET], 1, dev);
  int rc = get_int(s, Q_SETTLED_GET, below);
  return rc < 0 ? rc : 0;
}

int tern__rstore_other_device(tern__rstore *s, const char *user, const uint8_t dev[32]) {
  uint64_t one = 0;
  bind_text(s->q[Q_DEV_OTHER], 1, user);
  bind_dev(s->q[Q_DEV_OTHER], 2, dev);
  return get_int(s, Q_DEV_OTHER, &one);
}

#ifdef TERN_TEST_HOOKS
int tern__rstore_append_fault_dup(tern__rstore *s, const char *to, const tern__rmsg *m,
                                  uint64_t *seq, uint64_t *prev_seq) {
  return append_op(s, to, m, seq, prev_seq, DEDUP_REPLACE);
}
#endif

int tern__rstore_fetch(tern__rstore *s, const char *user, uint64_t after, size_t limit,
                       int (*cb)(void *ctx, const tern__rmsg *m), void *ctx) {
  sqlite3_stmt *q = s->q[Q_FETCH];
  bind_text(q, 1, user);
  sqlite3_bind_int64(q, 2, clamp(after));
  sqlite3_bind_int64(q, 3, limit > INT_MAX ? INT_MAX : (int64_t)limit);
  int n = 0, rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    tern__rmsg m = {
        .seq = (uint64_t)sqlite3_column_int64(q, 0),
        .prev_seq = (uint64_t)sqlite3_column_int64(q, 1),
        .ts = (uint64_t)sqlite3_column_int64(q, 2),
        .cmid = (uint64_t)sqlite3_column_int64(q, 3),
        .flags = (uint64_t)sqlite3_column_int64(q, 4),
        .from = (const char *)sqlite3_column_text(q, 5),
        .sender_dev = sqlite3_column_blob(q, 6),
        .body = sqlite3_column_blob(q, 7),
        .body_len = (size_t)sqlite3_column_bytes(q, 7),
        .peer = (const char *)sqlite3_column_text(q, 8),
    };
    if (!m.from || !m.peer || !m.sender_dev || sqlite3_column_bytes(q, 6) != 32) {
      rc = SQLITE_CORRUPT;
      break;
    }
    n++;
    if (cb(ctx, &m)) {
      rc = SQLITE_DONE;
      break;
    }
  }
  int ret = rc == SQLITE_DONE ? n : fail(s, rc, "fetch");
  done(q);
  return ret;
}

/* Looks up a device: 1 found (*user_matches, *cursor set), 0 unknown. */
static int device_get(tern__rstore *s, const char *user, const uint8_t dev[32], int *user_matches,
                      uint64_t *cursor) {
  sqlite3_stmt *q = s->q[Q_DEV_GET];
  bind_dev(q, 1, dev);
  int rc = sqlite3_step(q), ret = 0;
  if (rc == SQLITE_ROW) {
    const char *owner = (const char *)sqlite3_column_text(q, 0);
    *user_matches = owner && !strcmp(owner, user);
    *cursor = (uint64_t)sqlite3_column_int64(q, 1);
    ret = 1;
  } else if (rc != SQLITE_DONE) {
    ret = fail(s, rc, "device_get");
  }
  done(q);
  return ret;
}

int tern__rstore_device(tern__rstore *s, const char *user, const uint8_t dev[32], uint64_t *cursor) {
  sqlite3_stmt *q = s->q[Q_DEV_ADD];
  bind_dev(q, 1, dev);
  bind_text(q, 2, user);
  int rc = run(s, Q_DEV_ADD);
  if (rc < 0) return rc;
  int mine = 0;
  uint64_t c = 0;
  rc = device_get(s, user, dev, &mine, &c);
  if (rc < 0) return rc;
  if (rc == 0) return fail(s, SQLITE_INTERNAL, "device vanished");
  /* A device key belongs to one user; another user's key is a caller bug
   * (or an attack) and must not move that user's cursor. */
  if (!mine) return refuse(s, TERN_EINVAL, "device: the key is registered to another user");
  *cursor = c;
  return 0;
}

/* Deletes the messages of `user`'s inbox that every registered device of
 * the user has passed. With no device registered, nothing: the inbox
 * waits for the next device (or the retention). */
static int trim_passed(tern__rstore *s, const char *user) {
  uint64_t low = 0;
  bind_text(s->q[Q_DEV_MIN], 1, user);
  int rc = get_int(s, Q_DEV_MIN, &low);
  if (rc <= 0) return rc;
  sqlite3_stmt *q = s->q[Q_TRIM];
  bind_text(q, 1, user);
  sqlite3_bind_int64(q, 2, (int64_t)low);
  return run(s, Q_TRIM);
}

typedef void (*ack_cb)(void *ctx, const uint8_t sender_dev[32], uint64_t cmid, uint64_t seq);

/* Steps q, whose rows are (sender_dev, cmid, seq, flags), handing each
 * but carbons to cb (a carbon's sender is told nothing of it), and resets
 * it. `what` names it for errors. */
static int each_sender(tern__rstore *s, sqlite3_stmt *q, const char *what, ack_cb cb, void *ctx) {
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    const uint8_t *dev = sqlite3_column_blob(q, 0);
    if (!dev || sqlite3_column_bytes(q, 0) != 32) {
      rc = SQLITE_CORRUPT;
      break;
    }
    if (cb && !((uint64_t)sqlite3_column_int64(q, 3) & TERN__RS_CARBON))
      cb(ctx, dev, (uint64_t)sqlite3_column_int64(q, 1), (uint64_t)sqlite3_column_int64(q, 2));
  }
  int ret = rc == SQLITE_DONE ? 0 : fail(s, rc, what);
  done(q);
  return ret;
}

/* Marks the undelivered messages of (lo, hi] delivered, calling cb for each. */
static int deliver(tern__rstore *s, const char *user, uint64_t lo, uint64_t hi, ack_cb cb, void *ctx) {
  sqlite3_stmt *q = s->q[Q_DELIVER];
  bind_text(q, 1, user);
  sqlite3_bind_int64(q, 2, (int64_t)lo);
  sqlite3_bind_int64(q, 3, (int64_t)hi);
  return each_sender(s, q, "deliver", cb, ctx);
}

/* Lowers *up_to so that the messages in (cursor, *up_to] cost at most
 * max_bytes (msg_cost: their bodies and a page each; but keeps at least one
 * message). *cost receives what they cost. 1 if it lowered it. */
static int ack_span(tern__rstore *s, const char *user, uint64_t cursor, uint64_t *up_to,
                    uint64_t max_bytes, uint64_t *cost) {
  sqlite3_stmt *q = s->q[Q_ACK_SPAN];
  bind_text(q, 1, user);
  sqlite3_bind_int64(q, 2, clamp(cursor));
  sqlite3_bind_int64(q, 3, clamp(*up_to));
  uint64_t total = 0;
  int rc, cut = 0;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    uint64_t seq = (uint64_t)sqlite3_column_int64(q, 0);
    uint64_t c = msg_cost(s, (uint64_t)sqlite3_column_int64(q, 1));
    if (total + c > max_bytes && seq > cursor + 1) {
      *up_to = seq - 1;
      cut = 1;
      rc = SQLITE_DONE;
      break;
    }
    total += c;
  }
  *cost = total;
  int ret = rc == SQLITE_DONE ? cut : fail(s, rc, "ack span");
  done(q);
  return ret;
}

static int ack(tern__rstore *s, const char *user, const uint8_t dev[32], uint64_t up_to,
               const uint64_t *sacks, size_t n, uint64_t max_bytes, uint64_t *reached, ack_cb cb,
               void *ctx) {
  int mine = 0, cut = 0;
  uint64_t cursor = 0, last = 0, cost = 0;
  int rc = device_get(s, user, dev, &mine, &cursor);
  if (rc < 0) return rc;
  if (rc == 0) return refuse(s, TERN_ENOENT, "ack: the device is not registered");
  if (!mine) return refuse(s, TERN_EINVAL, "ack: the key is registered to another user");
  if ((rc = seq_last(s, user, &last)) < 0) return rc;
  /* A device cannot have what was never stored; a cursor past the end of
   * the inbox would let the trim below delete messages not yet sent. */
  if (up_to > last) up_to = last;
  if (up_to > cursor && (max_bytes != UINT64_MAX || s->txn_budget != UINT64_MAX)) {
    if ((cut = ack_span(s, user, cursor, &up_to, max_bytes, &cost)) < 0) return cut;
    if (cut) n = 0; /* the rest, sacks included, in a later call */
  }
  if (reached) *reached = up_to > cursor ? up_to : cursor;
  if (up_to > cursor) {
    if ((rc = deliver(s, user, cursor, up_to, cb, ctx)) < 0) return rc;
    sqlite3_stmt *q = s->q[Q_DEV_SET];
    bind_dev(q, 1, dev);
    sqlite3_bind_int64(q, 2, (int64_t)up_to);
    if ((rc = run(s, Q_DEV_SET)) < 0) return rc;
    cursor = up_to;
  }
  for (size_t i = 0; i < n; i++) {
    /* At or below the cursor is covered above; past the end is nothing. */
    if (sacks[i] > cursor && sacks[i] <= last && (rc = deliver(s, user, sacks[i] - 1, sacks[i], cb, ctx)) < 0)
      return rc;
  }
  /* A sacked message is rewritten too: about a page each (they are few). */
  cost += n * s->page_size;
  if ((rc = trim_passed(s, user)) < 0) return rc;
  s->txn_used += cost;
  return cut;
}

int tern__rstore_ack(tern__rstore *s, const char *user, const uint8_t dev[32], uint64_t up_to,
                     const uint64_t *sacks, size_t n, ack_cb cb, void *ctx) {
  if (n && !sacks) return TERN_EINVAL;
  int rc = op_begin(s);
  if (rc < 0) return rc;
  return op_end(s, ack(s, user, dev, up_to, sacks, n, UINT64_MAX, NULL, cb, ctx));
}

int tern__rstore_ack_some(tern__rstore *s, const char *user, const uint8_t dev[32], uint64_t up_to,
                          const uint64_t *sacks, size_t n, uint64_t max_bytes, uint64_t *reached,
                          ack_cb cb, void *ctx) {
  if (n && !sacks) return TERN_EINVAL;
  int rc = op_begin(s);
  if (rc < 0) return rc;
  return op_end(s, ack(s, user, dev, up_to, sacks, n, max_bytes, reached, cb, ctx));
}

uint64_t tern__rstore_ack_budget(const tern__rstore *s) {
  if (s->txn_budget == UINT64_MAX) return UINT64_MAX;
  return s->txn_used < s->txn_budget ? s->txn_budget - s->txn_used : 0;
}

/* Nothing at or below the floor is stored, so it is one less than the
 * lowest stored seq, or, with the inbox empty, the last seq assigned.
 * Computed, not stored: it cannot drift from the inbox, and it never goes
 * down, because appends only add seqs above every stored one. */
int tern__rstore_floor(tern__rstore *s, const char *user, uint64_t *floor) {
  uint64_t v = 0;
  bind_text(s->q[Q_MIN_SEQ], 1, user);
  int rc = get_int(s, Q_MIN_SEQ, &v);
  if (rc < 0) return rc;
  if (rc == 1) {
    *floor = v - 1;
    return 0;
  }
  if ((rc = seq_last(s, user, &v)) < 0) return rc;
  *floor = v;
  return 0;
}

int tern__rstore_notice_put(tern__rstore *s, const uint8_t dev[32], int kind, uint64_t cmid,
                            int64_t code) {
  sqlite3_stmt *q = s->q[Q_NOTICE_PUT];
  bind_dev(q, 1, dev);
  sqlite3_bind_int(q, 2, kind);
  sqlite3_bind_int64(q, 3, (int64_t)cmid);
  sqlite3_bind_int64(q, 4, code);
  return run(s, Q_NOTICE_PUT);
}

int tern__rstore_notice_list(tern__rstore *s, const uint8_t dev[32],
                             int (*cb)(void *ctx, int kind, uint64_t cmid, int64_t code), void *ctx) {
  sqlite3_stmt *q = s->q[Q_NOTICE_LIST];
  bind_dev(q, 1, dev);
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    if (cb(ctx, sqlite3_column_int(q, 0), (uint64_t)sqlite3_column_int64(q, 1), sqlite3_column_int64(q, 2))) {
      rc = SQLITE_DONE;
      break;
    }
  }
  int ret = rc == SQLITE_DONE ? 0 : fail(s, rc, "notice_list");
  done(q);
  return ret;
}

static int device_remove(tern__rstore *s, const uint8_t dev[32], char user[TERN_USER_MAX + 1]) {
  sqlite3_stmt *q = s->q[Q_DEV_GET];
  bind_dev(q, 1, dev);
  int rc = sqlite3_step(q);
  if (rc == SQLITE_ROW) snprintf(user, TERN_USER_MAX + 1, "%s", (const char *)sqlite3_column_text(q, 0));
  done(q);
  if (rc == SQLITE_DONE) return 0;
  if (rc != SQLITE_ROW) return fail(s, rc, "device_remove");
  bind_dev(s->q[Q_DEV_DEL], 1, dev);
  if ((rc = run(s, Q_DEV_DEL)) < 0) return rc;
  bind_dev(s->q[Q_NOTICES_DEL], 1, dev);
  if ((rc = run(s, Q_NOTICES_DEL)) < 0) return rc;
  bind_dev(s->q[Q_GCUR_DEL_DEV], 1, dev);
  if ((rc = run(s, Q_GCUR_DEL_DEV)) < 0) return rc;
  /* What the other devices of the user have all passed goes now. */
  return (rc = trim_passed(s, user)) < 0 ? rc : 1;
}

int tern__rstore_device_remove(tern__rstore *s, const uint8_t dev[32], char user[TERN_USER_MAX + 1]) {
  int rc = op_begin(s);
  if (rc < 0) return rc;
  return op_end(s, device_remove(s, dev, user));
}

int tern__rstore_devices(tern__rstore *s, const char *user,
                         tern__rs_device_fn cb, void *ctx) {
  sqlite3_stmt *q = s->q[Q_DEVICES];
  bind_text(q, 1, user);
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    const void *dev = sqlite3_column_blob(q, 0);
    if (!dev || sqlite3_column_bytes(q, 0) != 32) continue;
    const char *last = (const char *)sqlite3_column_text(q, 2);
    if (cb(ctx, dev, (uint64_t)sqlite3_column_int64(q, 1), last ? last : "")) {
      rc = SQLITE_DONE;
      break;
    }
  }
  int ret = rc == SQLITE_DONE ? 0 : fail(s, rc, "devices");
  done(q);
  return ret;
}

int tern__rstore_notice_del(tern__rstore *s, const uint8_t dev[32], int kind, uint64_t cmid) {
  sqlite3_stmt *q = s->q[Q_NOTICE_DEL];
  bind_dev(q, 1, dev);
  sqlite3_bind_int(q, 2, kind);
  sqlite3_bind_int64(q, 3, (int64_t)cmid);
  return run(s, Q_NOTICE_DEL);
}

typedef struct expired_ctx {
  void (*cb)(void *ctx, const uint8_t sender_dev[32], uint64_t cmid);
  void *ctx;
} expired_ctx;

static void on_expired_row(void *ctx, const uint8_t sender_dev[32], uint64_t cmid, uint64_t seq) {
  (void)seq;
  expired_ctx *e = ctx;
  if (e->cb) e->cb(e->ctx, sender_dev, cmid);
}

static int expire(tern__rstore *s, uint64_t before_ts, void (*cb)(void *ctx, const uint8_t sender_dev[32], uint64_t cmid),
                  void *ctx) {
  sqlite3_stmt *q = s->q[Q_EXPIRE];
  sqlite3_bind_int64(q, 1, clamp(before_ts));
  expired_ctx e = {cb, ctx};
  int ret = each_sender(s, q, "expire", on_expired_row, &e);
  if (ret < 0) return ret;
  sqlite3_bind_int64(s->q[Q_EXPIRE_DEDUP], 1, clamp(before_ts));
  return run(s, Q_EXPIRE_DEDUP);
}

int tern__rstore_expire(tern__rstore *s, uint64_t before_ts,
                        void (*cb)(void *ctx, const uint8_t sender_dev[32], uint64_t cmid), void *ctx) {
  int rc = op_begin(s);
  if (rc < 0) return rc;
  return op_end(s, expire(s, before_ts, cb, ctx));
}

int tern__rstore_count(tern__rstore *s, uint64_t *messages) {
  *messages = 0;
  int rc = get_int(s, Q_COUNT, messages);
  return rc < 0 ? rc : 0;
}

int tern__rstore_hello_fresh(tern__rstore *s, const uint8_t dev[32], uint64_t time_us) {
  /* SQLite integers are signed: a value above INT64_MAX is no timestamp. */
  if (time_us == 0 || time_us > (uint64_t)INT64_MAX) return 0;
  sqlite3_stmt *q = s->q[Q_HELLO_RAISE];
  bind_dev(q, 1, dev);
  sqlite3_bind_int64(q, 2, (sqlite3_int64)time_us);
  uint64_t one = 0;
  return get_int(s, Q_HELLO_RAISE, &one);
}

int tern__rstore_reset_put(tern__rstore *s, const uint8_t dev[32], uint64_t time_us, const uint8_t addr[18]) {
  sqlite3_stmt *q = s->q[Q_RESET_PUT];
  bind_dev(q, 1, dev);
  sqlite3_bind_int64(q, 2, clamp(time_us));
  sqlite3_bind_blob(q, 3, addr, 18, SQLITE_STATIC);
  return run(s, Q_RESET_PUT);
}

int tern__rstore_reset_del(tern__rstore *s, const uint8_t dev[32], uint64_t time_us) {
  sqlite3_stmt *q = s->q[Q_RESET_DEL];
  bind_dev(q, 1, dev);
  sqlite3_bind_int64(q, 2, clamp(time_us));
  return run(s, Q_RESET_DEL);
}

int tern__rstore_reset_take(tern__rstore *s,
                            void (*cb)(void *ctx, const uint8_t dev[32], uint64_t time_us,
                                       const uint8_t addr[18]),
                            void *ctx) {
  int rc = op_begin(s);
  if (rc < 0) return rc;
  sqlite3_stmt *q = s->q[Q_RESET_LIST];
  int n = 0, sr;
  while ((sr = sqlite3_step(q)) == SQLITE_ROW) {
    /* A row of another shape was not written by this code: skipped. */
    if (sqlite3_column_bytes(q, 0) != 32 || sqlite3_column_bytes(q, 2) != 18) continue;
    cb(ctx, sqlite3_column_blob(q, 0), (uint64_t)sqlite3_column_int64(q, 1), sqlite3_column_blob(q, 2));
    n++;
  }
  rc = sr == SQLITE_DONE ? 0 : fail(s, sr, sql[Q_RESET_LIST]);
  done(q);
  if (rc == 0) rc = run(s, Q_RESET_CLEAR);
  rc = op_end(s, rc);
  return rc < 0 ? rc : n;
}

/* ---- groups (spec/messages.md §14) ------------------------------------------ */

int tern__rstore_group_count_others(tern__rstore *s, const char *group, const char *user,
                                    uint32_t *n) {
  uint64_t v = 0;
  bind_text(s->q[Q_GMEMBERS_COUNT], 1, group);
  bind_text(s->q[Q_GMEMBERS_COUNT], 2, user);
  int rc = get_int(s, Q_GMEMBERS_COUNT, &v);
  *n = (uint32_t)v;
  return rc < 0 ? rc : 0;
}

/* Deletes what every member device of the group has passed, and the
 * cursors of devices whose member left and that reached the point. */
static int group_trim(tern__rstore *s, const char *group) {
  uint64_t low = 0;
  bind_text(s->q[Q_GTRIM_LOW], 1, group);
  int rc = get_int(s, Q_GTRIM_LOW, &low);
  if (rc < 0) return rc;
  if (rc == 1) {
    bind_text(s->q[Q_TRIM], 1, group);
    sqlite3_bind_int64(s->q[Q_TRIM], 2, (int64_t)low);
    if ((rc = run(s, Q_TRIM)) < 0) return rc;
  }
  bind_text(s->q[Q_GCUR_DONE], 1, group);
  return run(s, Q_GCUR_DONE);
}

static int group_set(tern__rstore *s, const char *group, const char *const *users, size_t n,
                     uint64_t *point) {
  uint64_t last = 0;
  int rc = seq_last(s, group, &last);
  if (rc < 0) return rc;
  *point = last;
  /* Who leaves: a current member not in the list. */
  char (*gone)[TERN_USER_MAX + 1] = NULL;
  size_t ngone = 0, cap = 0;
  sqlite3_stmt *q = s->q[Q_MEM_CURRENT];
  bind_text(q, 1, group);
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    const char *u = (const char *)sqlite3_column_text(q, 0);
    int keep = 0;
    for (size_t i = 0; u && i < n && !keep; i++) keep = !strcmp(u, users[i]);
    if (keep || !u) continue;
    if (ngone == cap) {
      cap = cap ? cap * 2 : 16;
      void *g = realloc(gone, cap * sizeof(*gone));
      if (!g) {
        done(q);
        free(gone);
        return refuse(s, TERN_ENOMEM, "group_set: out of memory");
      }
      gone = g;
    }
    snprintf(gone[ngone++], sizeof(*gone), "%s", u);
  }
  done(q);
  if (rc != SQLITE_DONE) {
    free(gone);
    return fail(s, rc, "group members");
  }
  rc = 0;
  uint64_t left = last;
#ifdef TERN_TEST_HOOKS
  if (s->fault_leave_early && left) left--; /* a member removed too early */
#endif
  for (size_t i = 0; rc >= 0 && i < ngone; i++) {
    q = s->q[Q_MEM_LEAVE];
    bind_text(q, 1, group);
    bind_text(q, 2, gone[i]);
    sqlite3_bind_int64(q, 3, (int64_t)left);
    rc = run(s, Q_MEM_LEAVE);
  }
  free(gone);
  for (size_t i = 0; rc >= 0 && i < n; i++) {
    uint64_t joined = 0;
    q = s->q[Q_MEM_JOIN];
    bind_text(q, 1, group);
    bind_text(q, 2, users[i]);
    sqlite3_bind_int64(q, 3, (int64_t)last);
    if ((rc = get_int(s, Q_MEM_JOIN, &joined)) <= 0) continue; /* already in, or an error */
    q = s->q[Q_GCUR_JOIN];
    bind_text(q, 1, group);
    bind_text(q, 2, users[i]);
    sqlite3_bind_int64(q, 3, (int64_t)last);
    rc = run(s, Q_GCUR_JOIN);
  }
  if (rc < 0) return rc;
  return group_trim(s, group);
}

int tern__rstore_group_set(tern__rstore *s, const char *group, const char *const *users, size_t n,
                           uint64_t *point) {
  int rc = op_begin(s);
  if (rc < 0) return rc;
  return op_end(s, group_set(s, group, users, n, point));
}

int tern__rstore_group_role(tern__rstore *s, const char *group, const char *user) {
  sqlite3_stmt *q = s->q[Q_ROLE];
  bind_text(q, 1, group);
  bind_text(q, 2, user);
  int rc = sqlite3_step(q), ret;
  if (rc == SQLITE_ROW) ret = sqlite3_column_int64(q, 0) == 0 ? TERN_ENOENT : sqlite3_column_int64(q, 1) != 0;
  else ret = fail(s, rc, "group role");
  done(q);
  return ret;
}

/* Steps q, whose rows are one text each, handing each to cb. */
static int each_text(tern__rstore *s, sqlite3_stmt *q, const char *what,
                     int (*cb)(void *ctx, const char *text), void *ctx) {
  int rc, n = 0;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    const char *t = (const char *)sqlite3_column_text(q, 0);
    if (!t) continue;
    n++;
    if (cb && cb(ctx, t)) {
      rc = SQLITE_DONE;
      break;
    }
  }
  int ret = rc == SQLITE_DONE ? n : fail(s, rc, what);
  done(q);
  return ret;
}

int tern__rstore_group_members(tern__rstore *s, const char *group,
                               int (*cb)(void *ctx, const char *user), void *ctx) {
  bind_text(s->q[Q_MEM_CURRENT], 1, group);
  return each_text(s, s->q[Q_MEM_CURRENT], "group members", cb, ctx);
}

int tern__rstore_user_groups(tern__rstore *s, const char *user, const uint8_t dev[32],
                             int (*cb)(void *ctx, const char *group), void *ctx) {
  bind_text(s->q[Q_USER_GROUPS], 1, user);
  bind_dev(s->q[Q_USER_GROUPS], 2, dev);
  return each_text(s, s->q[Q_USER_GROUPS], "user groups", cb, ctx);
}

/* The member's row: 1 (joined, *limit: left or UINT64_MAX), 0 never a member. */
static int member_get(tern__rstore *s, const char *group, const char *user, uint64_t *joined,
                      uint64_t *limit) {
  sqlite3_stmt *q = s->q[Q_MEM_GET];
  bind_text(q, 1, group);
  bind_text(q, 2, user);
  int rc = sqlite3_step(q), ret = 0;
  if (rc == SQLITE_ROW) {
    *joined = (uint64_t)sqlite3_column_int64(q, 0);
    *limit = sqlite3_column_type(q, 1) == SQLITE_NULL ? UINT64_MAX : (uint64_t)sqlite3_column_int64(q, 1);
    ret = 1;
  } else if (rc != SQLITE_DONE) {
    ret = fail(s, rc, "member");
  }
  done(q);
  return ret;
}

/* The device's group cursor: 1 (*cursor), 0 none. */
static int gcursor_get(tern__rstore *s, const char *group, const uint8_t dev[32], uint64_t *cursor) {
  bind_text(s->q[Q_GCUR_GET], 1, group);
  bind_dev(s->q[Q_GCUR_GET], 2, dev);
  return get_int(s, Q_GCUR_GET, cursor);
}

int tern__rstore_gdevice(tern__rstore *s, const char *group, const char *user, const uint8_t dev[32],
                         uint64_t *cursor, uint64_t *limit) {
  uint64_t joined = 0, floor = 0;
  int rc = member_get(s, group, user, &joined, limit);
  if (rc < 0) return rc;
  if (rc == 0) return refuse(s, TERN_ENOENT, "group device: the user never was a member");
  if ((rc = tern__rstore_floor(s, group, &floor)) < 0) return rc;
  sqlite3_stmt *q = s->q[Q_GCUR_ADD];
  bind_text(q, 1, group);
  bind_dev(q, 2, dev);
  bind_text(q, 3, user);
  sqlite3_bind_int64(q, 4, (int64_t)(floor > joined ? floor : joined));
  if ((rc = run(s, Q_GCUR_ADD)) < 0) return rc;
  if ((rc = gcursor_get(s, group, dev, cursor)) < 0) return rc;
  /* A device of a member that left, past the point: done with the group. */
  if (rc == 0) *cursor = *limit;
  return 0;
}

typedef struct greceipt_ctx {
  tern__rs_greceipt_fn cb;
  void *ctx;
} greceipt_ctx;

static int gacked(tern__rstore *s, const char *group, const char *user, const uint8_t dev[32],
                  uint64_t up_to, uint64_t *reached, tern__rs_greceipt_fn cb, void *ctx) {
  uint64_t cursor = 0, last = 0, joined = 0, limit = 0, mbefore = 0;
  int rc = gcursor_get(s, group, dev, &cursor);
  if (rc < 0) return rc;
  int has_cursor = rc;
  if ((rc = member_get(s, group, user, &joined, &limit)) < 0) return rc;
  if (!has_cursor && rc == 1 && limit != UINT64_MAX) {
    /* The member left and this device passed the point: it is done. */
    if (reached) *reached = limit;
    return 0;
  }
  if (!has_cursor) return refuse(s, TERN_ENOENT, "group ack: the device has no cursor in the group");
  if ((rc = seq_last(s, group, &last)) < 0) return rc;
  if (up_to > last) up_to = last;
  if (up_to > limit) up_to = limit;
  if (reached) *reached = up_to > cursor ? up_to : cursor;
  if (up_to <= cursor) return 0;
  bind_text(s->q[Q_GCUR_MEMBER_MAX], 1, group);
  bind_text(s->q[Q_GCUR_MEMBER_MAX], 2, user);
  if ((rc = get_int(s, Q_GCUR_MEMBER_MAX, &mbefore)) < 0) return rc;
  sqlite3_stmt *q = s->q[Q_GCUR_SET];
  bind_text(q, 1, group);
  bind_dev(q, 2, dev);
  sqlite3_bind_int64(q, 3, (int64_t)up_to);
  if ((rc = run(s, Q_GCUR_SET)) < 0) return rc;
  if (up_to > mbefore) {
    /* The member (not the device) has these for the first time. */
    q = s->q[Q_GRECEIPT];
    bind_text(q, 1, group);
    sqlite3_bind_int64(q, 2, (int64_t)mbefore);
    sqlite3_bind_int64(q, 3, (int64_t)up_to);
    bind_text(q, 4, user);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
      const uint8_t *sd = sqlite3_column_blob(q, 0);
      if (!sd || sqlite3_column_bytes(q, 0) != 32) {
        rc = SQLITE_CORRUPT;
        break;
      }
      if (cb)
        cb(ctx, sd, (uint64_t)sqlite3_column_int64(q, 1), (uint32_t)sqlite3_column_int64(q, 2),
           (uint32_t)sqlite3_column_int64(q, 3));
    }
    int ret = rc == SQLITE_DONE ? 0 : fail(s, rc, "group receipts");
    done(q);
    if (ret < 0) return ret;
    q = s->q[Q_MEM_COUNT_SET];
    bind_text(q, 1, group);
    bind_text(q, 2, user);
    sqlite3_bind_int64(q, 3, (int64_t)up_to);
    if ((rc = run(s, Q_MEM_COUNT_SET)) < 0) return rc;
  }
  s->txn_used += s->page_size;
  return group_trim(s, group);
}

int tern__rstore_gacked(tern__rstore *s, const char *group, const char *user, const uint8_t dev[32],
                        uint64_t up_to, uint64_t *reached, tern__rs_greceipt_fn cb, void *ctx) {
  int rc = op_begin(s);
  if (rc < 0) return rc;
  return op_end(s, gacked(s, group, user, dev, up_to, reached, cb, ctx));
}

int tern__rstore_notice_del_if(tern__rstore *s, const uint8_t dev[32], int kind, uint64_t cmid,
                               int64_t code) {
  sqlite3_stmt *q = s->q[Q_NOTICE_DEL_IF];
  bind_dev(q, 1, dev);
  sqlite3_bind_int(q, 2, kind);
  sqlite3_bind_int64(q, 3, (int64_t)cmid);
  sqlite3_bind_int64(q, 4, code);
  return run(s, Q_NOTICE_DEL_IF);
}

int tern__rstore_group_devices(tern__rstore *s, const char *group,
                               int (*cb)(void *ctx, const char *user, const uint8_t dev[32],
                                         uint64_t waiting),
                               void *ctx) {
  sqlite3_stmt *q = s->q[Q_GDEVICES];
  bind_text(q, 1, group);
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    const char *user = (const char *)sqlite3_column_text(q, 0);
    const uint8_t *dev = sqlite3_column_blob(q, 1);
    if (!user || !dev || sqlite3_column_bytes(q, 1) != 32) continue;
    if (cb(ctx, user, dev, (uint64_t)sqlite3_column_int64(q, 2))) {
      rc = SQLITE_DONE;
      break;
    }
  }
  int ret = rc == SQLITE_DONE ? 0 : fail(s, rc, "group devices");
  done(q);
  return ret;
}

int tern__rstore_image(tern__rstore *s, uint8_t **out, size_t *len) {
  if (tern__rstore_in_txn(s)) return TERN_EINVAL;
  sqlite3_int64 n = 0;
  unsigned char *p = sqlite3_serialize(s->db, "main", &n, 0);
  if (!p) return TERN_ENOMEM;
  *out = malloc(n > 0 ? (size_t)n : 1);
  if (!*out) {
    sqlite3_free(p);
    return TERN_ENOMEM;
  }
  memcpy(*out, p, (size_t)n);
  *len = (size_t)n;
  sqlite3_free(p);
  return 0;
}

/* Rows of a table in key order: a WITHOUT ROWID table's scan is in its
 * key's order, a rowid table's in rowid order (its key is a UNIQUE index
 * whose rowids are assigned the same way on every replica that applied
 * the same writes). */
static int digest_table(tern__rstore *s, crypto_generichash_state *h, const char *name) {
  char text[160];
  snprintf(text, sizeof text, "SELECT * FROM \"%s\"", name);
  sqlite3_stmt *q = NULL;
  int sr = sqlite3_prepare_v2(s->db, text, -1, &q, NULL);
  if (sr != SQLITE_OK) return fail(s, sr, "digest: prepare");
  crypto_generichash_update(h, (const uint8_t *)name, strlen(name) + 1);
  while ((sr = sqlite3_step(q)) == SQLITE_ROW) {
    int n = sqlite3_column_count(q);
    for (int i = 0; i < n; i++) {
      uint8_t t = (uint8_t)sqlite3_column_type(q, i);
      crypto_generichash_update(h, &t, 1);
      if (t == SQLITE_INTEGER) {
        int64_t v = sqlite3_column_int64(q, i);
        crypto_generichash_update(h, (const uint8_t *)&v, sizeof v);
      } else if (t == SQLITE_FLOAT) {
        double v = sqlite3_column_double(q, i);
        crypto_generichash_update(h, (const uint8_t *)&v, sizeof v);
      } else if (t != SQLITE_NULL) {
        const void *b = sqlite3_column_blob(q, i);
        uint64_t len = (uint64_t)sqlite3_column_bytes(q, i);
        crypto_generichash_update(h, (const uint8_t *)&len, sizeof len);
        if (len) crypto_generichash_update(h, b, (size_t)len);
      }
    }
  }
  sqlite3_finalize(q);
  return sr == SQLITE_DONE ? 0 : fail(s, sr, "digest: step");
}

int tern__rstore_digest(tern__rstore *s, uint8_t out[16]) {
  if (tern__rstore_in_txn(s)) return TERN_EINVAL;
  sqlite3_stmt *q = NULL;
  int sr = sqlite3_prepare_v2(s->db,
                              "SELECT name FROM sqlite_schema WHERE type = 'table'"
                              " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
                              -1, &q, NULL);
  if (sr != SQLITE_OK) return fail(s, sr, "digest: tables");
  crypto_generichash_state h;
  crypto_generichash_init(&h, NULL, 0, 16);
  int rc = 0;
  while (rc == 0 && (sr = sqlite3_step(q)) == SQLITE_ROW) {
    char name[128];
    snprintf(name, sizeof name, "%s", (const char *)sqlite3_column_text(q, 0));
    rc = digest_table(s, &h, name);
  }
  if (rc == 0 && sr != SQLITE_DONE) rc = fail(s, sr, "digest: tables");
  sqlite3_finalize(q);
  crypto_generichash_final(&h, out, 16);
  return rc;
}

int tern__rstore_load_image(tern__rstore *s, const uint8_t *p, size_t len) {
  if (tern__rstore_in_txn(s)) return TERN_EINVAL;
  unsigned char *buf = sqlite3_malloc64(len ? len : 1);
  if (!buf) return TERN_ENOMEM;
  memcpy(buf, p, len);
  int sr = sqlite3_deserialize(s->db, "main", buf, (sqlite3_int64)len, (sqlite3_int64)len,
                               SQLITE_DESERIALIZE_FREEONCLOSE | SQLITE_DESERIALIZE_RESIZEABLE);
  /* Whatever the load gives, the counters are the image's now. */
  tern__seqcache_clear(s->counters);
  if (sr != SQLITE_OK) return fail(s, sr, "load an image");
  uint64_t v = 0;
  sqlite3_stmt *q = NULL;
  sr = sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &q, NULL);
  if (sr == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW) v = (uint64_t)sqlite3_column_int64(q, 0);
  sqlite3_finalize(q);
  if (v != SCHEMA_VERSION) {
    snprintf(s->err, sizeof(s->err), "load an image: schema version %llu, this relay reads %d",
             (unsigned long long)v, SCHEMA_VERSION);
    return TERN_ESTORE;
  }
  return 0;
}
