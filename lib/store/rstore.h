/*
 * The SQLite engine of the relay's store: inboxes, dedup, device cursors and
 * pending notices, in SQLite (WAL), as plain operations. The relay core
 * does not call these: store/relay_sqlite.c puts them behind the relay
 * store interface (relay_store.h) with the disk-full policy. The relay
 * opens it on a file under its data directory; tests and the simulation
 * also open it on ":memory:". spec/store.md has the schema and the
 * durability rules.
 *
 * Transactions: the caller brackets a batch of writes with begin/commit. Every function returns 0 (or 1 where it says "found")
 * or a negative TERN_E* code; TERN_ESTORE means SQLite failed (disk full, I/O
 * error, corrupt file), and the caller must roll back.
 */
#ifndef TERN_RSTORE_H
#define TERN_RSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "store/relay_store.h"
#include "tern/tern.h"

typedef struct tern__rstore tern__rstore;

typedef struct tern__rstore_config {
  /* SQLite path, or ":memory:". */
  const char *path;
  /* PRAGMA synchronous: 2 FULL (fsync every commit, the default: nothing
   * acked is lost to a power cut), 1 NORMAL (WAL: survives a crash of the
   * process, not of the machine). */
  int synchronous;
  /* For tests: PRAGMA max_page_count (0: no limit) to make "disk full". */
  uint32_t max_pages;
  /* Bytes of disk to hold in reserve, in the file `path` + "-reserve"
   * (0: none; ignored for ":memory:"). A full disk stops every write,
   * including the small ones that acknowledge deliveries and delete what
   * was delivered, and a WAL store cannot even checkpoint: the reserve is
   * what is given back then (tern__rstore_release_reserve), so that those
   * go on. While it is given back, the relay accepts no new messages.
   * With a reserve, the store keeps what its WAL holds small enough that
   * the checkpoint after a full disk always fits in it: a transaction
   * should write at most a quarter of the reserve (tern__rstore_txn_full,
   * tern__rstore_ack_budget), and the store checkpoints after a commit
   * that leaves a quarter of the reserve in the WAL (reporting a
   * checkpoint that fails for want of room: tern__rstore_short_of_room).
   * This holds for messages up to an eighth of the reserve. */
  uint64_t reserve_bytes;
  /* For tests: the SQLite VFS to open the store with (NULL: the default),
   * and the room left on its disk (NULL: statvfs of the directory), so
   * that a test can run the store on a simulated small disk. */
  const char *vfs;
  uint64_t (*disk_free)(void *ctx);
  void *disk_ctx;
} tern__rstore_config;

/* Opens (creating or migrating) the store. Returns 0, TERN_ESTORE (with a
 * message in err[0..errcap)), TERN_ENOMEM. */
int tern__rstore_open(tern__rstore **out, const tern__rstore_config *cfg, char *err, size_t errcap);
void tern__rstore_close(tern__rstore *s);
/* Why the last call that failed failed (what was being done and SQLite's
 * message, e.g. "database or disk is full", or the refusal, e.g. "ack: the
 * device is not registered (TERN_ENOENT)"), for the relay's log. Never
 * NULL; valid until the next call on s. */
const char *tern__rstore_errmsg(const tern__rstore *s);
/* 1 if the last call that returned TERN_ESTORE failed because the disk (or
 * max_pages) was full (SQLITE_FULL), 0 otherwise. */
int tern__rstore_last_full(const tern__rstore *s);

/* The disk reserve (tern__rstore_config.reserve_bytes). */
/* 1 if the reserve is held, or none is configured. */
int tern__rstore_reserve_held(const tern__rstore *s);
/* Gives the reserve back to the file system (deletes the file), then
 * checkpoints the WAL into the database and truncates it, so that the
 * freed room serves acks, deletions and later checkpoints. Call after
 * tern__rstore_rollback(), outside a transaction. Returns the bytes given
 * back (0 if none was held). */
uint64_t tern__rstore_release_reserve(tern__rstore *s);
/* Checkpoints and truncates the WAL, gives the pages deletions freed back
 * to the file system (in steps, each checkpointed), then tries to take the
 * reserve back. Outside a transaction only. Returns 1 if it is held now (or
 * none is configured), 0 if the disk has not the room (errmsg says why), or
 * TERN_EINVAL inside a transaction. */
int tern__rstore_take_reserve(tern__rstore *s);
/* 1 if the checkpoint after the last commit could not finish for want of
 * room (SQLITE_FULL; errmsg says so): the commit holds, but the disk is
 * full, and the WAL must not grow further before its checkpoint fits.
 * Give the reserve back then. 0 once a checkpoint has finished, or the
 * reserve has been given back. */
int tern__rstore_short_of_room(const tern__rstore *s);
/* 1 if the open transaction has already written something and an append
 * of a `body_len`-byte body would take it past its budget (a quarter of
 * the reserve, counting each message's body and a page): commit first.
 * Always 0 without a reserve. */
int tern__rstore_txn_full(const tern__rstore *s, size_t body_len);

#ifdef TERN_TEST_HOOKS
/* For tests of the callers' failure paths: the next `n` calls of
 * tern__rstore_commit() fail as a full disk at COMMIT does in WAL mode (the
 * transaction is rolled back, TERN_ESTORE, tern__rstore_last_full() 1,
 * "COMMIT: database or disk is full (injected)"). Test builds only. */
void tern__rstore_fault_commit(tern__rstore *s, unsigned n);
#endif

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

/* What the inbox holds for recipient `who` (dir 0) or from sender `who`
 * (dir 1): messages and body bytes, 0 and 0 if nothing. */
int tern__rstore_held(tern__rstore *s, const char *who, int dir, uint64_t *msgs, uint64_t *bytes);

/* Appends a message to `to`'s inbox: assigns the next seq, links prev_seq
 * to the sender's previous message in that inbox, records (dev, cmid) for
 * dedup. m->seq and m->prev_seq are ignored on input; *seq and *prev_seq
 * receive them. */
int tern__rstore_append(tern__rstore *s, const char *to, const tern__rmsg *m, uint64_t *seq,
                        uint64_t *prev_seq);
/* As append, without a dedup row: the carbon of a message just appended,
 * in its sender's own inbox (m->flags carries TERN__RS_CARBON, m->peer its
 * recipient). */
int tern__rstore_append_carbon(tern__rstore *s, const char *user, const tern__rmsg *m,
                               uint64_t *seq, uint64_t *prev_seq);
/* Raises dev's settled floor to `below` (never lowers it) and deletes the
 * dedup rows of dev's cmids below the floor. */
int tern__rstore_settled(tern__rstore *s, const uint8_t dev[32], uint64_t below);
/* dev's settled floor, 0 if none. */
int tern__rstore_settled_get(tern__rstore *s, const uint8_t dev[32], uint64_t *below);
/* Groups: the relay store interface's ops of the same names
 * (relay_store.h), on this engine. group_count_others: the current members
 * of `group` other than `user`. */
int tern__rstore_group_set(tern__rstore *s, const char *group, const char *const *users, size_t n,
                           uint64_t *point);
int tern__rstore_group_role(tern__rstore *s, const char *group, const char *user);
int tern__rstore_group_members(tern__rstore *s, const char *group,
                               int (*cb)(void *ctx, const char *user), void *ctx);
int tern__rstore_user_groups(tern__rstore *s, const char *user, const uint8_t dev[32],
                             int (*cb)(void *ctx, const char *group), void *ctx);
int tern__rstore_gdevice(tern__rstore *s, const char *group, const char *user, const uint8_t dev[32],
                         uint64_t *cursor, uint64_t *limit);
int tern__rstore_gacked(tern__rstore *s, const char *group, const char *user, const uint8_t dev[32],
                        uint64_t up_to, uint64_t *reached, tern__rs_greceipt_fn cb, void *ctx);
int tern__rstore_group_devices(tern__rstore *s, const char *group,
                               int (*cb)(void *ctx, const char *user, const uint8_t dev[32],
                                         uint64_t waiting),
                               void *ctx);
int tern__rstore_group_count_others(tern__rstore *s, const char *group, const char *user,
                                    uint32_t *n);
int tern__rstore_notice_del_if(tern__rstore *s, const uint8_t dev[32], int kind, uint64_t cmid,
                               int64_t code);
/* 1 if `user` has a registered device other than `dev`, else 0. */
int tern__rstore_other_device(tern__rstore *s, const char *user, const uint8_t dev[32]);

#ifdef TERN_TEST_HOOKS
/* A deliberate fault, for showing that the simulation catches it: as
 * append, but a (dev, cmid) that is already stored is stored again, as a
 * relay without dedup would (its dedup record then names the new copy).
 * Test builds only. */
/* group_set closes a removed member one message before the point. */
void tern__rstore_fault_leave_early(tern__rstore *s, int on);
int tern__rstore_append_fault_dup(tern__rstore *s, const char *to, const tern__rmsg *m,
                                  uint64_t *seq, uint64_t *prev_seq);
#endif

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

/* As tern__rstore_ack, but takes in only as much of (cursor, up_to] as
 * costs at most max_bytes (each message its body and a page; at least one
 * message; UINT64_MAX: all of it), and the sacks only if it took in
 * everything: acknowledging and deleting rewrites about as many pages as
 * the messages fill, and one transaction must fit in the room the reserve
 * gives back.
 * *reached receives the device's cursor after. Returns 0 if it took in
 * everything, 1 if it stopped short (call again for the rest), or an
 * error. */
int tern__rstore_ack_some(tern__rstore *s, const char *user, const uint8_t dev[32], uint64_t up_to,
                          const uint64_t *sacks, size_t n, uint64_t max_bytes, uint64_t *reached,
                          void (*cb)(void *ctx, const uint8_t sender_dev[32], uint64_t cmid,
                                     uint64_t seq),
                          void *ctx);
/* The max_bytes for tern__rstore_ack_some: what is left of the open
 * transaction's budget (a quarter of the reserve, less what it has
 * written), UINT64_MAX without a reserve. */
uint64_t tern__rstore_ack_budget(const tern__rstore *s);

/* The highest seq of `user`'s inbox that is no longer stored (deleted after
 * acks, or expired): a device behind it can never get those. 0 if none. */
int tern__rstore_floor(tern__rstore *s, const char *user, uint64_t *floor);

/* Notices for a sender device (kinds: relay_store.h). */
int tern__rstore_notice_put(tern__rstore *s, const uint8_t dev[32], int kind, uint64_t cmid,
                            int64_t code);
/* Each device registered to `user`, with how many messages of its inbox
 * are past its cursor (stored, not yet acknowledged by it) and the sender
 * of the latest of them ("" if none). cb returning non-zero stops early.
 * Returns 0 or TERN_ESTORE. */
int tern__rstore_devices(tern__rstore *s, const char *user, tern__rs_device_fn cb, void *ctx);
/* Forgets device `dev`: its cursor and the notices owed to it; the
 * messages every remaining device of its user has passed are deleted.
 * Returns 1 (user receives its user), 0 if it is not registered, or
 * TERN_ESTORE. */
int tern__rstore_device_remove(tern__rstore *s, const uint8_t dev[32], char user[TERN_USER_MAX + 1]);
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

/* A HELLO from device `dev` carries `time_us`: 1 if it is above the largest
 * accepted before from that key (or the first), which it becomes; 0 if not
 * (a replay, or a clock behind: nothing is written). 0 and above
 * INT64_MAX are never fresh. */
int tern__rstore_hello_fresh(tern__rstore *s, const uint8_t dev[32], uint64_t time_us);

/* Counts, for tests and metrics: stored messages (all inboxes). */
int tern__rstore_count(tern__rstore *s, uint64_t *messages);

/* The whole database as bytes (an image: SQLite's serialization), outside
 * a transaction, for the cluster store's snapshots (spec/store.md, "The
 * cluster store"). *out is malloc()ed, the caller frees it. Returns 0,
 * TERN_EINVAL (in a transaction), TERN_ENOMEM. */
int tern__rstore_image(tern__rstore *s, uint8_t **out, size_t *len);
/* A digest of what the database holds (BLAKE2b-128 of every row of every
 * table, tables by name, rows in their key order), outside a transaction:
 * two stores that hold the same rows have the same digest whatever their
 * pages look like. For the cluster store's audit (spec/store.md). Returns
 * 0, TERN_EINVAL (in a transaction), TERN_ESTORE. */
int tern__rstore_digest(tern__rstore *s, uint8_t out[16]);
/* Replaces the database by an image of the same schema version. Outside
 * a transaction. Returns 0, TERN_EINVAL (in a transaction), TERN_ESTORE
 * (not an image of this schema: why in errmsg), TERN_ENOMEM. */
int tern__rstore_load_image(tern__rstore *s, const uint8_t *p, size_t len);

/* The reset rows (relay_store.h, reset_put/reset_del/reset_take). take
 * returns how many rows it gave to cb, or an error (then nothing is
 * deleted). */
int tern__rstore_reset_put(tern__rstore *s, const uint8_t dev[32], uint64_t time_us, const uint8_t addr[18]);
int tern__rstore_reset_del(tern__rstore *s, const uint8_t dev[32], uint64_t time_us);
int tern__rstore_reset_take(tern__rstore *s,
                            void (*cb)(void *ctx, const uint8_t dev[32], uint64_t time_us,
                                       const uint8_t addr[18]),
                            void *ctx);

/* Opens the relay store interface on this engine (store/relay_sqlite.c),
 * with the disk-full policy. `cfg->path` ":memory:" keeps it in memory.
 * `log` (may be NULL) hears about the disk reserve. Returns 0,
 * TERN_ESTORE (why in err), TERN_EINVAL, TERN_ENOMEM. */
int tern__relay_sqlite_open(tern__relay_store **out, const tern__rstore_config *cfg,
                            tern__log_fn log, void *log_ctx, char *err, size_t errcap);

/* The SQLite engine behind a store opened with tern__relay_sqlite_open
 * (relay_sqlite.c puts the relay_store interface and the disk-full policy
 * on top of this file's functions), for tests that look at the disk. */
tern__rstore *tern__relay_sqlite_engine(tern__relay_store *s);

#endif
