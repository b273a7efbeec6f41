/*
 * The client's store: the outbox (accepted by send, not yet server-acked),
 * what has been delivered to the app, messages awaiting their receipt, and
 * the next client message id. SQLite in WAL mode in the state directory, or
 * ":memory:" without one (the same guarantees for the life of the process).
 * Each call is its own transaction (autocommit) unless noted; spec/store.md
 * has the schema.
 *
 * Every function returns 0 (or 1 for "found") or a negative TERN_E* code;
 * TERN_ESTORE means SQLite failed.
 */
#ifndef TERN_CSTORE_H
#define TERN_CSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "tern/tern.h"

typedef struct tern__cstore tern__cstore;

typedef struct tern__outmsg {
  uint64_t cmid;
  const char *to;
  uint64_t flags;
  uint64_t created_ms;   /* wall clock when send() accepted it */
  const uint8_t *body;
  size_t body_len;
  const char *app_id;    /* the app's own id for it, or NULL (put only) */
} tern__outmsg;

/* One message as the app's outbox list shows it. */
typedef struct tern__cstore_item {
  uint64_t cmid;
  int sent;              /* 0: in the outbox; 1: SENT, awaiting its receipt */
  const char *to;        /* "" for a receipt awaited since before schema 3 */
  uint64_t created_ms;
  size_t body_len;
  const char *app_id;    /* "" if none */
} tern__cstore_item;

/* How long an app id is remembered (the relay's default retention). */
#define APP_ID_KEEP_MS (30ull * 86400000ull)

/* Opens `path` (a file, or ":memory:"). synchronous as for the relay store. */
int tern__cstore_open(tern__cstore **out, const char *path, int synchronous, char *err,
                      size_t errcap);
void tern__cstore_close(tern__cstore *s);
/* Why the last call that returned TERN_ESTORE failed, for the client's log.
 * Never NULL; valid until the next call on s. */
const char *tern__cstore_errmsg(const tern__cstore *s);
#ifdef TERN_TEST_HOOKS
/* For tests of the callers' failure paths (test builds only): with `on`,
 * every write fails (TERN_ESTORE, SQLite's "attempt to write a readonly
 * database"), as on a failing disk; reads still work. Returns 0 or
 * TERN_ESTORE. */
int tern__cstore_fault_readonly(tern__cstore *s, int on);
#endif

/* Next cmid to use: the stored value, or, for a new store, one chosen so
 * that it cannot collide with ids an earlier store of the same key used
 * (Unix ms << 16). */
int tern__cstore_next_cmid(tern__cstore *s, uint64_t *next);
/* Reserves ids: stores `next` as the next unused id. */
int tern__cstore_set_next_cmid(tern__cstore *s, uint64_t next);

/* The timestamp of the next HELLO (spec/handshake.md §6): max(now_us, the
 * last one + 1), stored as the last one before it is returned, so that
 * the device's HELLO timestamps increase strictly across restarts even if
 * its clock goes back. Returns 0, TERN_ESTORE, TERN_EINVAL (past
 * INT64_MAX). */
int tern__cstore_hello_time(tern__cstore *s, uint64_t now_us, uint64_t *out);

/* Adds a message to the outbox (and advances the stored next cmid past it,
 * in the same transaction). */
int tern__cstore_outbox_put(tern__cstore *s, const tern__outmsg *m);
/* Removes it; 1 if it was there. If `await_receipt`, records cmid as
 * awaiting its receipt in the same transaction. */
int tern__cstore_outbox_del(tern__cstore *s, uint64_t cmid, int await_receipt);
/* Calls cb for each outbox message in cmid order. */
int tern__cstore_outbox_load(tern__cstore *s, int (*cb)(void *ctx, const tern__outmsg *m),
                             void *ctx);
int tern__cstore_outbox_count(tern__cstore *s, uint64_t *n);

/* The cmid given to app id `app_id` (within APP_ID_KEEP_MS): 1 with
 * *cmid, 0 if none, TERN_ESTORE. */
int tern__cstore_app_find(tern__cstore *s, const char *app_id, uint64_t *cmid);
/* Calls cb for every message in the outbox and every one awaiting its
 * receipt, in cmid order (cb returns nonzero to stop). The pointers are
 * valid during the call. 0 or TERN_ESTORE. */
int tern__cstore_list(tern__cstore *s, int (*cb)(void *ctx, const tern__cstore_item *it), void *ctx);

/* Takes cmid out of the awaiting-receipt set: 1 if it was there. */
int tern__cstore_await_take(tern__cstore *s, uint64_t cmid);

/* Delivery state: `last` is the highest inbox seq below which everything
 * has been handed to the app; `extra` the seqs above it handed over out of
 * order (at most TERN__CSTORE_EXTRA_MAX). */
#define TERN__CSTORE_EXTRA_MAX 4096
int tern__cstore_delivered_load(tern__cstore *s, uint64_t *last, uint64_t *extra, size_t *n);
int tern__cstore_delivered_save(tern__cstore *s, uint64_t last, const uint64_t *extra, size_t n);
/* The same, per group the device gets messages of ("@name", spec/messages.md
 * §14): save one group's; each gives every saved group to cb (extra valid
 * during the call; non-zero from cb stops and is returned). */
int tern__cstore_group_save(tern__cstore *s, const char *group, uint64_t last, const uint64_t *extra,
                            size_t n);
int tern__cstore_group_each(tern__cstore *s,
                            int (*cb)(void *ctx, const char *group, uint64_t last,
                                      const uint64_t *extra, size_t n),
                            void *ctx);

/* What the keepalive learner knows of one network (spec/keepalive.md,
 * "Persistence"), by the name the app gives it. */
typedef struct tern__cstore_net {
  uint32_t proven_ms, failed_ms;
  uint64_t learned_at;  /* wall ms, 0: the search has not finished */
} tern__cstore_net;

/* Loads network `name` and marks it used at now_wall: 1 if known, 0 if
 * not (*n zeroed). */
int tern__cstore_net_get(tern__cstore *s, const char *name, tern__cstore_net *n, uint64_t now_wall);
/* Stores it as used at now_wall, then forgets all but the max_names most
 * recently used networks, in one transaction. */
int tern__cstore_net_put(tern__cstore *s, const char *name, const tern__cstore_net *n,
                         uint64_t now_wall, size_t max_names);
/* Networks remembered. */
int tern__cstore_net_count(tern__cstore *s, uint64_t *count);

#endif
