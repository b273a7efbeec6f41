/*
 * The SQLite helpers both stores use (store/rstore.c for the relay,
 * store/cstore.c for the client): one way to report a failure ("what:
 * SQLite's message (code)" into the store's error buffer, mapped to a
 * TERN_E* code), to step a statement to its end or to its one integer, to
 * run a script, and to switch a database to WAL. May include: tern.h,
 * SQLite.
 */
#ifndef TERN_SQLITE_H
#define TERN_SQLITE_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

/* Where a store keeps the reason of its last failure. */
typedef struct tern__sqlerr {
  char *buf;     /* the store's error buffer */
  size_t cap;
  int last_full; /* that failure was SQLITE_FULL (a full disk or max_page_count) */
} tern__sqlerr;

/* Records "what: message (rc)" and returns TERN_ENOMEM for SQLITE_NOMEM,
 * TERN_ESTORE otherwise. */
int tern__sql_fail(sqlite3 *db, tern__sqlerr *e, int rc, const char *what);

/* Resets a statement and clears its bindings. */
void tern__sql_done(sqlite3_stmt *q);

/* Steps q to its end (a row it yields is ignored) and resets it. 0 or an
 * error, recorded under `what`. */
int tern__sql_run(sqlite3 *db, tern__sqlerr *e, sqlite3_stmt *q, const char *what);

/* Steps q, which returns at most one integer: 1 with *v set, 0 when there
 * is no row or the value is NULL, or an error. Resets it. */
int tern__sql_u64(sqlite3 *db, tern__sqlerr *e, sqlite3_stmt *q, const char *what, uint64_t *v);

/* Runs SQL text (no results). 0 or an error, recorded under `what`. */
int tern__sql_exec(sqlite3 *db, tern__sqlerr *e, const char *text, const char *what);

/* Switches the database to WAL. A file that cannot be (a file system
 * without shared memory) is refused, rather than silently keeping a
 * rollback journal; an in-memory database answers "memory" and is fine. */
int tern__sql_wal(sqlite3 *db, tern__sqlerr *e);

/* Makes the database file at `path` readable by its owner only before
 * SQLite opens it: created 0600 if missing, and an existing one with
 * group or other bits tightened to 0600 (SQLite gives its -wal and -shm
 * files the database's mode). ":memory:" and "file:" URIs are left alone.
 * Returns 1 if an existing file was tightened, 0, or TERN_EIO (errno). */
int tern__sql_private_file(const char *path);

#endif
