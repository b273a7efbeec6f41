/* The SQLite helpers both stores use (sqlite.h). */
#include "store/sqlite.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tern/tern.h"

int tern__sql_fail(sqlite3 *db, tern__sqlerr *e, int rc, const char *what) {
  snprintf(e->buf, e->cap, "%s: %s (%d)", what, sqlite3_errmsg(db), rc);
  e->last_full = (rc & 0xff) == SQLITE_FULL;
  return rc == SQLITE_NOMEM ? TERN_ENOMEM : TERN_ESTORE;
}

void tern__sql_done(sqlite3_stmt *q) {
  sqlite3_reset(q);
  sqlite3_clear_bindings(q);
}

int tern__sql_run(sqlite3 *db, tern__sqlerr *e, sqlite3_stmt *q, const char *what) {
  int rc = sqlite3_step(q);
  int ret = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : tern__sql_fail(db, e, rc, what);
  tern__sql_done(q);
  return ret;
}

int tern__sql_u64(sqlite3 *db, tern__sqlerr *e, sqlite3_stmt *q, const char *what, uint64_t *v) {
  int rc = sqlite3_step(q), ret = 0;
  if (rc == SQLITE_ROW && sqlite3_column_type(q, 0) != SQLITE_NULL) {
    *v = (uint64_t)sqlite3_column_int64(q, 0);
    ret = 1;
  } else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    ret = tern__sql_fail(db, e, rc, what);
  }
  tern__sql_done(q);
  return ret;
}

int tern__sql_exec(sqlite3 *db, tern__sqlerr *e, const char *text, const char *what) {
  int rc = sqlite3_exec(db, text, NULL, NULL, NULL);
  return rc == SQLITE_OK ? 0 : tern__sql_fail(db, e, rc, what);
}

int tern__sql_wal(sqlite3 *db, tern__sqlerr *e) {
  sqlite3_stmt *q = NULL;
  int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &q, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_step(q);
  const char *mode = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(q, 0) : NULL;
  int ret = 0;
  if (!mode) {
    ret = tern__sql_fail(db, e, rc, "journal_mode");
  } else if (strcmp(mode, "wal") && strcmp(mode, "memory")) {
    snprintf(e->buf, e->cap, "journal_mode is %s, not wal", mode);
    e->last_full = 0;
    ret = TERN_ESTORE;
  }
  sqlite3_finalize(q);
  return ret;
}

int tern__sql_private_file(const char *path) {
  if (strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0) return 0;
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return TERN_EIO;
  struct stat st;
  int rc = 0;
  if (fstat(fd, &st) == 0 && (st.st_mode & 077)) rc = fchmod(fd, st.st_mode & 0700) == 0 ? 1 : TERN_EIO;
  int e = errno;
  close(fd);
  errno = e;
  return rc;
}
