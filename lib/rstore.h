/*
 * The relay's store: inboxes, dedup, device cursors and pending notices, in
 * SQLite (WAL). One implementation serves the real relay (a file under the
 * data directory) and the deterministic simulation (":memory:", kept across
 * a simulated crash while the core that used it is thrown away). spec/store.md
 * has the schema and the durability rules.
 *
 * Transactions: the caller brackets a batch of writes with begin/commit; the
 * relay core sends no SERVER_ACK for a message before the commit that holds
 * it has returned 0. Every function returns 0 (or 1 where it says "found")
 * or a negative TERN_E* code; TERN_ESTORE means SQLite failed (disk full, I/O
 * error, corrupt file), and the caller must roll back.
 */
#ifndef TERN_RSTORE_H
#define TERN_RSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "tern/tern.h"

typedef struct tern__rstore tern__rstore;

/* One stored message of an inbox. Pointers are valid during the callback. */
typedef struct tern__rmsg {
  uint64_t seq;        /* position in the recipient's inbox, from 1, gap-free */
  uint64_t prev_seq;   /* seq of the previous message from the same sender in
                          this inbox, 0 if none */
  uint64_t ts;         /* server time of acceptance, Unix ms */
  uint64_t cmid;       /* the sender device's id for it */
  uint64_t flags;
  const char *from;    /* sender user name */
  const uint8_t *sender_dev; /* sender device key, 32 bytes */
  const uint8_t *body;
  size_t body_len;
} tern__rmsg;

typedef struct tern__rstore_config {
  /* SQLite path, or ":memory:". */
  const char *path;
  /* PRAGMA synchronous: 2 FULL (fsync every commit, the default: nothing
   * acked is lost to a power cut), 1 NORMAL (WAL: survives a crash of the
   * process, not of the machine). */
  int synchronous;
  /* For tests: PRAGMA max_page_count (0: no limit) to make "disk full". */
  uint32_t max_pages;
} tern__rstore_config;

/* Opens (creating or migrating) the store. Returns 0, TERN_ESTORE (with a
 * message in err[0..errcap)), TERN_ENOMEM. */
int tern__rstore_open(tern__rstore **out, const tern__rstore_config *cfg, char *err, size_t errcap);
void tern__rstore_close(tern__rstore *s);
/* Why the last call that returned TERN_ESTORE failed (what was being done
 * and SQLite's message, e.g. "database or disk is full"), for the relay's
 * log. Never NULL; valid until the next call on s. */
const char *tern__rstore_errmsg(const tern__rstore *s);

int tern__rstore_begin(tern__rstore *s);
int tern__rstore_commit(tern__rstore *s);
/* Rolls back an open transaction; harmless without one. */
void tern__rstore_rollback(tern__rstore *s);
/* 1 while a transaction is open. */
int tern__rstore_in_txn(const tern__rstore *s);

/* The result of an earlier accepted (dev, cmid): 1 found (*seq, *ts set),
 * 0 not found. */
int tern__rstore_dedup_get(tern__rstore *s, const uint8_t dev[32], uint64_t cmid, uint64_t *seq,
                           uint64_t *ts);

/* Appends a message to `to`'s inbox: assigns the next seq, links prev_seq
 * to the sender's previous message in that inbox, records (dev, cmid) for
 * dedup. m->seq and m->prev_seq are ignored on input; *seq and *prev_seq
 * receive them. */
int tern__rstore_append(tern__rstore *s, const char *to, const tern__rmsg *m, uint64_t *seq,
                        uint64_t *prev_seq);

/* Calls cb for up to `limit` messages of `user` with seq > after, in seq
 * order; stops early if cb returns non-zero. Returns the number visited. */
int tern__rstore_fetch(tern__rstore *s, const char *user, uint64_t after, size_t limit,
                       int (*cb)(void *ctx, const tern__rmsg *m), void *ctx);

/* Registers device `dev` of `user` if new (cursor 0) and returns its cursor
 * (highest seq it acknowledged cumulatively). */
int tern__rstore_device(tern__rstore *s, const char *user, const uint8_t dev[32], uint64_t *cursor);

/* Device `dev` of `user` has everything up to `up_to` and also the seqs in
 * sacks[0..n). Raises its cursor (never lowers it); for each message in
 * (old cursor, up_to] or in sacks that no device had acknowledged before,
 * marks it delivered and calls cb with its sender device and cmid (so the
 * caller can queue a receipt). Then deletes messages every device of the
 * user has passed. */
int tern__rstore_ack(tern__rstore *s, const char *user, const uint8_t dev[32], uint64_t up_to,
                     const uint64_t *sacks, size_t n,
                     void (*cb)(void *ctx, const uint8_t sender_dev[32], uint64_t cmid,
                                uint64_t seq),
                     void *ctx);

/* The highest seq of `user`'s inbox that is no longer stored (deleted after
 * acks, or expired): a device behind it can never get those. 0 if none. */
int tern__rstore_floor(tern__rstore *s, const char *user, uint64_t *floor);

/* Notices for a sender device: receipts and failures it has not acked. */
enum { TERN__NOTICE_RECEIPT = 1, TERN__NOTICE_FAILED = 2 };
int tern__rstore_notice_put(tern__rstore *s, const uint8_t dev[32], int kind, uint64_t cmid,
                            int64_t code);
int tern__rstore_notice_list(tern__rstore *s, const uint8_t dev[32],
                             int (*cb)(void *ctx, int kind, uint64_t cmid, int64_t code),
                             void *ctx);
int tern__rstore_notice_del(tern__rstore *s, const uint8_t dev[32], int kind, uint64_t cmid);

/* Deletes undelivered messages accepted before `before_ts` (Unix ms) and
 * dedup records older than it; for each undelivered message calls cb (so
 * the caller can queue FAILED/expired to its sender). */
int tern__rstore_expire(tern__rstore *s, uint64_t before_ts,
                        void (*cb)(void *ctx, const uint8_t sender_dev[32], uint64_t cmid),
                        void *ctx);

/* Counts, for tests and metrics: stored messages (all inboxes). */
int tern__rstore_count(tern__rstore *s, uint64_t *messages);

#endif
