/*
 * The relay store's write-behind cache of the two counters every append
 * reads and writes (spec/store.md, "Counters cached per transaction"):
 *
 *   TERN__SC_NEXT   an inbox's next sequence number   (table users, key: user)
 *   TERN__SC_CHAIN  a chain's last sequence number    (table chains, key:
 *                                                      user and sender)
 *
 * An entry is clean (the store's table holds the same value) or dirty
 * (only the cache has it, inside the open transaction). The store writes
 * the dirty ones back just before COMMIT and forgets the whole cache when
 * a transaction is rolled back or anything fails, so a value the cache
 * gives is always the one the tables would give inside that transaction.
 *
 * The cache owns copies of its keys. It holds at most about
 * TERN__SC_MAX entries plus those dirty in one transaction: a clean cache
 * past that is emptied (by tern__seqcache_clean, or before a new key goes
 * in). Not thread-safe. May include: tern.h.
 */
#ifndef TERN_STORE_SEQCACHE_H
#define TERN_STORE_SEQCACHE_H

#include <stddef.h>
#include <stdint.h>

enum { TERN__SC_NEXT = 0, TERN__SC_CHAIN = 1 };

/* Past this many entries a clean cache is emptied (about 100 bytes an
 * entry with its key). */
#define TERN__SC_MAX 65536u

typedef struct tern__seqcache tern__seqcache;

/* A new, empty cache, or NULL (no memory). */
tern__seqcache *tern__seqcache_new(void);
void tern__seqcache_free(tern__seqcache *c);

/* The value for (kind, user[, sender]) into *val: 1 if cached, 0 if not.
 * sender is NULL for TERN__SC_NEXT. */
int tern__seqcache_get(const tern__seqcache *c, int kind, const char *user, const char *sender,
                       uint64_t *val);

/* Sets (kind, user[, sender]) to val, dirty or clean. A key already in
 * the cache is set without allocating and never fails; a new one may fail
 * with TERN_ENOMEM, the cache unchanged and the key still absent (the
 * caller writes the value through to its table). A new key when the cache
 * holds TERN__SC_MAX entries, none dirty, empties it first. */
int tern__seqcache_put(tern__seqcache *c, int kind, const char *user, const char *sender,
                       uint64_t val, int dirty);

/* Calls write(ctx, kind, user, sender, val) for each dirty entry, in the
 * order they became dirty, until one returns nonzero; returns that, or 0.
 * sender is NULL for TERN__SC_NEXT. Marks nothing clean. */
int tern__seqcache_each_dirty(const tern__seqcache *c,
                              int (*write)(void *ctx, int kind, const char *user, const char *sender,
                                           uint64_t val),
                              void *ctx);

/* Number of dirty entries. */
size_t tern__seqcache_dirty(const tern__seqcache *c);

/* After the dirty entries were committed: marks them clean, and empties
 * the cache if it holds more than TERN__SC_MAX entries. */
void tern__seqcache_clean(tern__seqcache *c);

/* Forgets every entry, dirty ones included (a rollback, a failure, a new
 * image loaded). */
void tern__seqcache_clear(tern__seqcache *c);

#endif
