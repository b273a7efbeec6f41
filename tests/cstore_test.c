/* The client store: next cmid, outbox, awaiting receipts, delivery state,
 * persistence and a crash in the middle of sending. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store/cstore.h"
#include "tmpdir.h"

static char dir[4096];
static char dbpath[4200];

static void make_dir(void) {
  cr_assert_eq(tern__test_mkdtemp(dir, sizeof dir), 0, "mkdtemp: %s", strerror(errno));
  snprintf(dbpath, sizeof dbpath, "%s/client.db", dir);
}
static void remove_dir(void) { cr_assert_eq(tern__test_rmtree(dir), 0, "rmtree %s: %s", dir, strerror(errno)); }

TestSuite(cstore, .init = make_dir, .fini = remove_dir);

static tern__cstore *open_at(const char *path) {
  tern__cstore *s = NULL;
  char err[256];
  int rc = tern__cstore_open(&s, path, 2, err, sizeof err);
  cr_assert_eq(rc, 0, "open %s: %d %s", path, rc, err);
  return s;
}

static uint64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t next_cmid(tern__cstore *s) {
  uint64_t n = 0;
  cr_assert_eq(tern__cstore_next_cmid(s, &n), 0);
  return n;
}

static void put(tern__cstore *s, uint64_t cmid, const char *to) {
  char body[32];
  int len = snprintf(body, sizeof body, "msg %llu", (unsigned long long)cmid);
  tern__outmsg m = {.cmid = cmid, .to = to, .flags = cmid % 3, .created_ms = 1000 + cmid,
                    .body = (const uint8_t *)body, .body_len = (size_t)len};
  int rc = tern__cstore_outbox_put(s, &m);
  cr_assert_eq(rc, 0, "outbox_put %llu: %d %s", (unsigned long long)cmid, rc, tern__cstore_errmsg(s));
}

typedef struct loaded {
  uint64_t cmid[64];
  char to[64][16];
  size_t n, stop_after;
  int any_body; /* bodies not written by put() */
} loaded;

static int on_out(void *ctx, const tern__outmsg *m) {
  loaded *l = ctx;
  char body[32];
  int len = snprintf(body, sizeof body, "msg %llu", (unsigned long long)m->cmid);
  if (!l->any_body) {
    cr_assert_eq(m->body_len, (size_t)len);
    cr_assert_eq(memcmp(m->body, body, (size_t)len), 0);
    cr_assert_eq(m->flags, m->cmid % 3);
    cr_assert_eq(m->created_ms, 1000 + m->cmid);
  } else {
    cr_assert_eq(m->body_len, 4096);
  }
  l->cmid[l->n] = m->cmid;
  snprintf(l->to[l->n], sizeof l->to[0], "%s", m->to);
  l->n++;
  return l->stop_after && l->n >= l->stop_after;
}

static loaded load(tern__cstore *s) {
  loaded l = {0};
  cr_assert_eq(tern__cstore_outbox_load(s, on_out, &l), 0);
  return l;
}

static uint64_t outbox_count(tern__cstore *s) {
  uint64_t n = 99;
  cr_assert_eq(tern__cstore_outbox_count(s, &n), 0);
  return n;
}

Test(cstore, new_store_starts_ids_at_wall_clock) {
  uint64_t before = wall_ms();
  tern__cstore *s = open_at(dbpath);
  uint64_t after = wall_ms();
  uint64_t n = next_cmid(s);
  cr_assert_geq(n, before << 16);
  cr_assert_leq(n, after << 16);
  tern__cstore_close(s);
  /* Reopening keeps the stored value rather than choosing again. */
  s = open_at(dbpath);
  cr_assert_eq(next_cmid(s), n);
  tern__cstore_close(s);
}

Test(cstore, next_cmid_only_goes_up) {
  tern__cstore *s = open_at(":memory:");
  uint64_t n = next_cmid(s);
  cr_assert_eq(tern__cstore_set_next_cmid(s, n + 100), 0);
  cr_assert_eq(next_cmid(s), n + 100);
  cr_assert_eq(tern__cstore_set_next_cmid(s, n), 0);
  cr_assert_eq(next_cmid(s), n + 100);
  put(s, n + 500, "bob");
  cr_assert_eq(next_cmid(s), n + 501);
  /* An older id put late does not pull it back. */
  put(s, n + 200, "bob");
  cr_assert_eq(next_cmid(s), n + 501);
  tern__cstore_close(s);
}

Test(cstore, outbox_put_load_del) {
  tern__cstore *s = open_at(":memory:");
  put(s, 30, "carol");
  put(s, 10, "bob");
  put(s, 20, "bob");
  cr_assert_eq(outbox_count(s), 3);
  tern__outmsg dup = {.cmid = 20, .to = "x"};
  cr_assert_eq(tern__cstore_outbox_put(s, &dup), TERN_EEXIST);
  loaded l = load(s);
  cr_assert_eq(l.n, 3);
  cr_assert_eq(l.cmid[0], 10);
  cr_assert_eq(l.cmid[1], 20);
  cr_assert_eq(l.cmid[2], 30);
  cr_assert_str_eq(l.to[2], "carol");
  l = (loaded){.stop_after = 2};
  cr_assert_eq(tern__cstore_outbox_load(s, on_out, &l), 0);
  cr_assert_eq(l.n, 2);
  cr_assert_eq(tern__cstore_outbox_del(s, 20, 0), 1);
  cr_assert_eq(tern__cstore_outbox_del(s, 20, 0), 0);
  cr_assert_eq(outbox_count(s), 2);
  l = load(s);
  cr_assert_eq(l.cmid[1], 30);
  /* Not awaited: no receipt pending. */
  cr_assert_eq(tern__cstore_await_take(s, 20), 0);
  tern__cstore_close(s);
}

Test(cstore, del_with_await_is_taken_once) {
  tern__cstore *s = open_at(":memory:");
  put(s, 10, "bob");
  cr_assert_eq(tern__cstore_outbox_del(s, 10, 1), 1);
  cr_assert_eq(outbox_count(s), 0);
  /* A repeated SERVER_ACK after the receipt must not re-arm it. */
  cr_assert_eq(tern__cstore_await_take(s, 10), 1);
  cr_assert_eq(tern__cstore_outbox_del(s, 10, 1), 0);
  cr_assert_eq(tern__cstore_await_take(s, 10), 0);
  cr_assert_eq(tern__cstore_await_take(s, 11), 0);
  tern__cstore_close(s);
}

Test(cstore, delivered_round_trip_and_replace) {
  tern__cstore *s = open_at(dbpath);
  uint64_t last = 9, extra[TERN__CSTORE_EXTRA_MAX];
  size_t n = 9;
  cr_assert_eq(tern__cstore_delivered_load(s, &last, extra, &n), 0);
  cr_assert_eq(last, 0);
  cr_assert_eq(n, 0);
  uint64_t e1[] = {9, 7, 12};
  cr_assert_eq(tern__cstore_delivered_save(s, 5, e1, 3), 0);
  cr_assert_eq(tern__cstore_delivered_load(s, &last, extra, &n), 0);
  cr_assert_eq(last, 5);
  cr_assert_eq(n, 3);
  cr_assert_eq(extra[0], 7);
  cr_assert_eq(extra[1], 9);
  cr_assert_eq(extra[2], 12);
  /* A save replaces the whole set. */
  uint64_t e2[] = {14};
  cr_assert_eq(tern__cstore_delivered_save(s, 12, e2, 1), 0);
  tern__cstore_close(s);
  s = open_at(dbpath);
  cr_assert_eq(tern__cstore_delivered_load(s, &last, extra, &n), 0);
  cr_assert_eq(last, 12);
  cr_assert_eq(n, 1);
  cr_assert_eq(extra[0], 14);
  cr_assert_eq(tern__cstore_delivered_save(s, 13, NULL, 0), 0);
  cr_assert_eq(tern__cstore_delivered_load(s, &last, extra, &n), 0);
  cr_assert_eq(last, 13);
  cr_assert_eq(n, 0);
  /* Too many: refused, and the saved state stays. */
  static uint64_t many[TERN__CSTORE_EXTRA_MAX + 1];
  cr_assert_eq(tern__cstore_delivered_save(s, 20, many, TERN__CSTORE_EXTRA_MAX + 1), TERN_EINVAL);
  cr_assert_eq(tern__cstore_delivered_load(s, &last, extra, &n), 0);
  cr_assert_eq(last, 13);
  tern__cstore_close(s);
}

Test(cstore, everything_survives_reopen) {
  tern__cstore *s = open_at(dbpath);
  uint64_t first = next_cmid(s);
  put(s, first, "bob");
  put(s, first + 1, "carol");
  put(s, first + 2, "bob");
  cr_assert_eq(tern__cstore_outbox_del(s, first + 1, 1), 1);
  uint64_t e[] = {8};
  cr_assert_eq(tern__cstore_delivered_save(s, 6, e, 1), 0);
  tern__cstore_close(s);

  s = open_at(dbpath);
  cr_assert_eq(next_cmid(s), first + 3);
  loaded l = load(s);
  cr_assert_eq(l.n, 2);
  cr_assert_eq(l.cmid[0], first);
  cr_assert_eq(l.cmid[1], first + 2);
  cr_assert_eq(tern__cstore_await_take(s, first + 1), 1);
  uint64_t last, extra[TERN__CSTORE_EXTRA_MAX];
  size_t n;
  cr_assert_eq(tern__cstore_delivered_load(s, &last, extra, &n), 0);
  cr_assert_eq(last, 6);
  cr_assert_eq(n, 1);
  tern__cstore_close(s);
}

/* An app killed while it sends and acks: each call is all or nothing, so
 * the outbox and the next id agree, and every message that left the outbox
 * with a receipt pending is in the awaiting set. */
Test(cstore, sigkill_leaves_a_consistent_store) {
  int pipefd[2];
  cr_assert_eq(pipe(pipefd), 0);
  pid_t pid = fork();
  cr_assert_neq(pid, -1);
  if (pid == 0) {
    close(pipefd[0]);
    tern__cstore *s = NULL;
    uint64_t next = 0;
    if (tern__cstore_open(&s, dbpath, 2, NULL, 0) || tern__cstore_next_cmid(s, &next)) _exit(2);
    static uint8_t body[4096];
    for (uint64_t i = 0;; i++) {
      tern__outmsg m = {.cmid = next + i, .to = "bob", .body = body, .body_len = sizeof body};
      if (tern__cstore_outbox_put(s, &m)) _exit(3);
      if (i >= 2 && tern__cstore_outbox_del(s, next + i - 2, 1) != 1) _exit(4);
      if (i == 50 && write(pipefd[1], "k", 1) != 1) _exit(5);
    }
  }
  close(pipefd[1]);
  char c = 0;
  cr_assert_eq(read(pipefd[0], &c, 1), 1, "the child died early");
  close(pipefd[0]);
  cr_assert_eq(kill(pid, SIGKILL), 0);
  int status = 0;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child status %d", status);

  tern__cstore *s = open_at(dbpath);
  loaded l = {.any_body = 1};
  cr_assert_eq(tern__cstore_outbox_load(s, on_out, &l), 0);
  /* Each round puts i and then deletes i - 2: two or three consecutive
   * messages remain, whichever call the kill fell between. */
  cr_assert(l.n == 2 || l.n == 3, "outbox holds %zu", l.n);
  uint64_t top = l.cmid[l.n - 1];
  for (size_t i = 1; i < l.n; i++) cr_assert_eq(l.cmid[i], l.cmid[0] + i);
  cr_assert_eq(next_cmid(s), top + 1);
  /* Every id below the outbox was deleted with await: each is awaited. */
  uint64_t awaited = 0;
  for (uint64_t id = l.cmid[0]; id-- > 0 && tern__cstore_await_take(s, id) == 1;) awaited++;
  cr_assert_geq(awaited, 49);
  tern__cstore_close(s);
}

Test(cstore, memory_store_works) {
  tern__cstore *a = open_at(":memory:");
  tern__cstore *b = open_at(":memory:");
  put(a, 1, "bob");
  cr_assert_eq(outbox_count(a), 1);
  /* Each in-memory store is its own. */
  cr_assert_eq(outbox_count(b), 0);
  cr_assert_eq(tern__cstore_outbox_del(a, 1, 1), 1);
  cr_assert_eq(tern__cstore_await_take(a, 1), 1);
  tern__cstore_close(a);
  tern__cstore_close(b);
}

Test(cstore, refuses_bad_arguments) {
  tern__cstore *s = NULL;
  cr_assert_eq(tern__cstore_open(&s, ":memory:", 9, NULL, 0), TERN_EINVAL);
  cr_assert_null(s);
  char bad[4300];
  snprintf(bad, sizeof bad, "%s/missing/client.db", dir);
  char err[128];
  cr_assert_eq(tern__cstore_open(&s, bad, 2, err, sizeof err), TERN_ESTORE);
  cr_assert_neq(err[0], 0);
  s = open_at(":memory:");
  tern__outmsg m = {.cmid = UINT64_MAX, .to = "bob"};
  cr_assert_eq(tern__cstore_outbox_put(s, &m), TERN_EINVAL);
  tern__cstore_close(s);
}

static void set_user_version(int v) {
  sqlite3 *db = NULL;
  char text[64];
  snprintf(text, sizeof text, "PRAGMA user_version = %d", v);
  cr_assert_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
  cr_assert_eq(sqlite3_exec(db, text, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
}

Test(cstore, migrates_v0_and_refuses_newer) {
  set_user_version(0);
  tern__cstore *s = open_at(dbpath);
  put(s, 5, "bob");
  tern__cstore_close(s);
  s = open_at(dbpath);
  cr_assert_eq(outbox_count(s), 1);
  tern__cstore_close(s);
  set_user_version(5);
  char err[256];
  cr_assert_eq(tern__cstore_open(&s, dbpath, 2, err, sizeof err), TERN_ESTORE);
  cr_assert_not_null(strstr(err, "newer"), "err: %s", err);
}

static int count_items(void *ctx, const tern__cstore_item *it) {
  tern__cstore_item *last = ctx;
  *last = *it;
  last->to = "";
  last->app_id = "";
  last->body_len++; /* counts the calls in a field the checks do not read */
  return 0;
}

/* A version-1 store (before keepalive learning, before the app's outbox
 * view) is upgraded in place: its outbox and the receipts it awaits are
 * kept, the networks table appears, and a receipt awaited from before
 * lists with no recipient. */
Test(cstore, migrates_v1_to_current) {
  tern__cstore *s = open_at(dbpath);
  put(s, 7, "bob");
  tern__cstore_close(s);
  sqlite3 *db = NULL;
  cr_assert_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
  cr_assert_eq(sqlite3_exec(db,
                            "DROP TABLE networks; DROP TABLE app_ids; DROP TABLE awaiting; DROP TABLE groups;"
                            "CREATE TABLE awaiting(cmid INTEGER PRIMARY KEY);"
                            "INSERT INTO awaiting(cmid) VALUES(3);"
                            "PRAGMA user_version = 1;",
                            NULL, NULL, NULL),
               SQLITE_OK);
  sqlite3_close(db);
  s = open_at(dbpath);
  cr_assert_eq(outbox_count(s), 1);
  tern__cstore_net n = {.proven_ms = 40000, .failed_ms = 44000, .learned_at = 123};
  cr_assert_eq(tern__cstore_net_put(s, "wifi:home", &n, 1000, 32), 0);
  tern__cstore_item last = {0};
  cr_assert_eq(tern__cstore_list(s, count_items, &last), 0);
  cr_assert_eq(last.cmid, 7);
  cr_assert_eq(tern__cstore_await_take(s, 3), 1, "the old awaited receipt was lost");
  tern__cstore_close(s);
}

struct listed {
  int n;
  uint64_t cmid[8];
  int sent[8];
  char to[8][16], app[8][16];
};

static int keep_items(void *ctx, const tern__cstore_item *it) {
  struct listed *l = ctx;
  if (l->n < 8) {
    l->cmid[l->n] = it->cmid;
    l->sent[l->n] = it->sent;
    snprintf(l->to[l->n], 16, "%s", it->to);
    snprintf(l->app[l->n], 16, "%s", it->app_id);
  }
  l->n++;
  return 0;
}

/* The app's view: what waits for the relay and what waits for its
 * receipt, with recipients and app ids, across a reopen; an app id finds
 * its message again. */
Test(cstore, lists_the_outbox_and_the_awaited_receipts_with_app_ids) {
  tern__cstore *s = open_at(dbpath);
  tern__outmsg a = {.cmid = 10, .to = "bob", .created_ms = 1000, .body = (const uint8_t *)"hi",
                    .body_len = 2, .app_id = "ui-1"};
  tern__outmsg b = {.cmid = 11, .to = "carol", .created_ms = 1001, .body = (const uint8_t *)"x",
                    .body_len = 1};
  cr_assert_eq(tern__cstore_outbox_put(s, &a), 0);
  cr_assert_eq(tern__cstore_outbox_put(s, &b), 0);
  tern__outmsg dup = a;
  dup.cmid = 12;
  cr_assert_eq(tern__cstore_outbox_put(s, &dup), TERN_ESTORE, "an app id given twice was taken");
  cr_assert_eq(tern__cstore_outbox_del(s, 10, 1), 1); /* SENT: awaits its receipt */
  tern__cstore_close(s);
  s = open_at(dbpath);
  struct listed l = {0};
  cr_assert_eq(tern__cstore_list(s, keep_items, &l), 0);
  cr_assert_eq(l.n, 2);
  cr_assert_eq(l.cmid[0], 10);
  cr_assert_eq(l.sent[0], 1);
  cr_assert_str_eq(l.to[0], "bob");
  cr_assert_str_eq(l.app[0], "ui-1");
  cr_assert_eq(l.cmid[1], 11);
  cr_assert_eq(l.sent[1], 0);
  cr_assert_str_eq(l.to[1], "carol");
  cr_assert_str_eq(l.app[1], "");
  uint64_t cmid = 0;
  cr_assert_eq(tern__cstore_app_find(s, "ui-1", &cmid), 1);
  cr_assert_eq(cmid, 10);
  cr_assert_eq(tern__cstore_app_find(s, "ui-2", &cmid), 0);
  cr_assert_eq(tern__cstore_await_take(s, 10), 1);
  l.n = 0;
  cr_assert_eq(tern__cstore_list(s, keep_items, &l), 0);
  cr_assert_eq(l.n, 1, "a delivered message is still listed");
  tern__cstore_close(s);
}

/* What was learned on a network survives a restart of the app, and only
 * the most recently used networks are kept. */
Test(cstore, networks_persist_and_evict_least_recently_used) {
  tern__cstore *s = open_at(dbpath);
  tern__cstore_net n;
  cr_assert_eq(tern__cstore_net_get(s, "wifi:home", &n, 1), 0);
  cr_assert_eq(n.proven_ms, 0);
  for (int i = 0; i < 5; i++) {
    char name[32];
    snprintf(name, sizeof name, "cell:%d", i);
    tern__cstore_net v = {.proven_ms = 20000 + (uint32_t)i, .failed_ms = 0, .learned_at = 0};
    cr_assert_eq(tern__cstore_net_put(s, name, &v, 100 + (uint64_t)i, 3), 0);
  }
  uint64_t count = 0;
  cr_assert_eq(tern__cstore_net_count(s, &count), 0);
  cr_assert_eq(count, 3);
  cr_assert_eq(tern__cstore_net_get(s, "cell:0", &n, 200), 0, "oldest evicted");
  cr_assert_eq(tern__cstore_net_get(s, "cell:1", &n, 200), 0, "second oldest evicted");
  /* Reading cell:2 makes it the most recently used: the next put evicts
   * cell:3 instead. */
  cr_assert_eq(tern__cstore_net_get(s, "cell:2", &n, 300), 1);
  cr_assert_eq(n.proven_ms, 20002);
  tern__cstore_net w = {.proven_ms = 44000, .failed_ms = 45000, .learned_at = 777};
  cr_assert_eq(tern__cstore_net_put(s, "wifi:home", &w, 400, 3), 0);
  cr_assert_eq(tern__cstore_net_get(s, "cell:3", &n, 500), 0);
  tern__cstore_close(s);
  s = open_at(dbpath);
  cr_assert_eq(tern__cstore_net_get(s, "wifi:home", &n, 600), 1);
  cr_assert_eq(n.proven_ms, 44000);
  cr_assert_eq(n.failed_ms, 45000);
  cr_assert_eq(n.learned_at, 777);
  cr_assert_eq(tern__cstore_net_get(s, "cell:2", &n, 600), 1);
  cr_assert_eq(tern__cstore_net_get(s, "cell:4", &n, 600), 1);
  tern__cstore_close(s);
}

/* The state is the owner's only: a new file is made 0600, an existing one
 * readable by others is tightened, and SQLite's -wal file follows. */
Test(cstore, the_state_files_are_the_owners_only) {
  int fd = open(dbpath, O_CREAT | O_WRONLY, 0644);
  cr_assert_geq(fd, 0);
  close(fd);
  cr_assert_eq(chmod(dbpath, 0644), 0);
  tern__cstore *s = open_at(dbpath);
  put(s, 1, "bob");
  struct stat st;
  cr_assert_eq(stat(dbpath, &st), 0);
  cr_assert_eq(st.st_mode & 0777, 0600, "mode %o", (unsigned)(st.st_mode & 0777));
  char wal[4300];
  snprintf(wal, sizeof wal, "%s-wal", dbpath);
  if (stat(wal, &st) == 0) cr_assert_eq(st.st_mode & 0777, 0600, "-wal mode %o", (unsigned)(st.st_mode & 0777));
  tern__cstore_close(s);
}

/* HELLO timestamps (spec/handshake.md §6, "Freshness"): max(now, last + 1),
 * stored before they are handed out, so they rise strictly across reopens
 * even when the clock goes back. */
Test(cstore, hello_timestamps_rise_strictly_across_reopens) {
  tern__cstore *s = open_at(dbpath);
  uint64_t t = 0;
  cr_assert_eq(tern__cstore_hello_time(s, 5000, &t), 0);
  cr_assert_eq(t, 5000, "the clock, the first time");
  cr_assert_eq(tern__cstore_hello_time(s, 5000, &t), 0);
  cr_assert_eq(t, 5001, "the same clock reading: one more");
  cr_assert_eq(tern__cstore_hello_time(s, 9000, &t), 0);
  cr_assert_eq(t, 9000);
  tern__cstore_close(s);
  s = open_at(dbpath);
  cr_assert_eq(tern__cstore_hello_time(s, 100, &t), 0);
  cr_assert_eq(t, 9001, "a clock gone back after a restart: the stored one, plus one");
  cr_assert_eq(tern__cstore_hello_time(s, (uint64_t)INT64_MAX + 1, &t), TERN_EINVAL);
  cr_assert_eq(t, 9001, "unchanged on a refusal");
  tern__cstore_close(s);
}

/* Schema 4: what of each group reached the app (spec/messages.md §14),
 * kept across a reopen, one row per group. */
typedef struct gseen {
  int n;
  char name[4][16];
  uint64_t last[4];
  size_t nextra[4];
  uint64_t extra0[4];
} gseen;

static int see_group(void *ctx, const char *group, uint64_t last, const uint64_t *extra, size_t n) {
  gseen *g = ctx;
  cr_assert_lt(g->n, 4);
  snprintf(g->name[g->n], sizeof g->name[0], "%s", group);
  g->last[g->n] = last;
  g->nextra[g->n] = n;
  g->extra0[g->n] = n ? extra[0] : 0;
  g->n++;
  return 0;
}

Test(cstore, group_delivery_state_is_kept_per_group) {
  tern__cstore *s = open_at(dbpath);
  uint64_t extra[] = {9, 12, 1ull << 40};
  cr_assert_eq(tern__cstore_group_save(s, "@team", 7, extra, 3), 0);
  cr_assert_eq(tern__cstore_group_save(s, "@band", 2, NULL, 0), 0);
  cr_assert_eq(tern__cstore_group_save(s, "@team", 8, extra + 1, 2), 0, "replaces, not adds");
  tern__cstore_close(s);
  s = open_at(dbpath);
  gseen g = {0};
  cr_assert_eq(tern__cstore_group_each(s, see_group, &g), 0);
  cr_assert_eq(g.n, 2);
  cr_assert_str_eq(g.name[0], "@band");
  cr_assert_eq(g.last[0], 2);
  cr_assert_eq(g.nextra[0], 0);
  cr_assert_str_eq(g.name[1], "@team");
  cr_assert_eq(g.last[1], 8);
  cr_assert_eq(g.nextra[1], 2);
  cr_assert_eq(g.extra0[1], 12);
  tern__cstore_close(s);
}
