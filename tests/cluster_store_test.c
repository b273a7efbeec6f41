/*
 * The cluster store (lib/cluster/relay_nats.c) with several relays on one
 * log, on real nats-server processes this test starts and stops itself:
 * what one relay stores another serves and is woken for, writes that race
 * are ordered by the log (and refused when their answers would change),
 * a new relay reads the whole log, and a cluster that is off, gone or
 * without JetStream is a clear error, never a loss. The single relay's
 * rules run on this store in relay_store_test (cluster_store_test.sh).
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef TERN_HAVE_CLUSTER
Test(cluster, not_built) { cr_skip_test("libtern was built without the cluster store (TERN_CLUSTER)"); }
#else
#include "cluster/relay_nats.h"
#include "natsrv.h"
#include "tern_test.h"
#include "store/relay_store.h"

static const uint8_t DEV_A[32] = {0xaa}, DEV_B[32] = {0xbb};

typedef natsrv server;
#define server_up nats_up
#define server_down nats_down
#define free_port nats_free_port

static tern__relay_store *relay(const server *sv) {
  tern__relay_store *s = NULL;
  char err[512];
  tern__nats_config c = {.url = sv->url, .timeout_ms = 1000};
  cr_assert_eq(tern__relay_nats_open(&s, &c, err, sizeof err), 0, "%s", err);
  return s;
}

static tern__rs_put msg(const char *from, const uint8_t *dev, const char *to, uint64_t cmid,
                        const char *body) {
  tern__rs_put p = {.to = to, .from = from, .sender_dev = dev, .cmid = cmid, .ts = 1000,
                    .body = (const uint8_t *)body, .body_len = strlen(body)};
  return p;
}

/* alice's messages 1..n to bob in one conversation, each stored; a commit
 * every `every`, each followed by the relay loop's remote_take. */
static void no_inbox(void *ctx, const char *user) { (void)ctx, (void)user; }
static void no_device(void *ctx, const uint8_t dev[32]) { (void)ctx, (void)dev; }

static void alice_to_bob(tern__relay_store *s, uint64_t n, uint64_t every) {
  for (uint64_t i = 1; i <= n; i++) {
    tern__rs_put p = msg("alice", DEV_A, "bob", i, "m");
    p.prev_cmid = i - 1;
    cr_assert_eq(s->ops->put(s, &p, 1), 0);
    cr_assert_eq(p.result, TERN__RS_STORED);
    if (i % every) continue;
    cr_assert_eq(s->ops->commit(s, 0), 0);
    cr_assert(s->ops->remote_take(s, no_inbox, no_device, NULL) >= 0);
  }
}

/* alice's message `cmid` to bob again: a resend, answered with its seq. */
static void alice_resends(tern__relay_store *s, uint64_t cmid) {
  tern__rs_put again = msg("alice", DEV_A, "bob", cmid, "m");
  again.prev_cmid = cmid - 1;
  cr_assert_eq(s->ops->put(s, &again, 1), 0);
  cr_assert_eq(again.result, TERN__RS_EARLIER, "cmid %llu stored again", (unsigned long long)cmid);
  cr_assert_eq(again.seq, cmid);
}

typedef struct woken {
  int inboxes, devices;
  char inbox[8][16];
  uint8_t dev[8][32];
} woken;

static void on_inbox(void *ctx, const char *user) {
  woken *w = ctx;
  if (w->inboxes < 8) snprintf(w->inbox[w->inboxes], 16, "%s", user);
  w->inboxes++;
}
static void on_device(void *ctx, const uint8_t dev[32]) {
  woken *w = ctx;
  if (w->devices < 8) memcpy(w->dev[w->devices], dev, 32);
  w->devices++;
}

/* remote_take until something arrives (bounded: 5 s). */
static woken take(tern__relay_store *s) {
  woken w = {0};
  for (int i = 0; i < 500; i++) {
    int n = s->ops->remote_take(s, on_inbox, on_device, &w);
    cr_assert(n >= 0);
    if (n > 0) break;
    tt_sleep_ms(10);
  }
  return w;
}

static int see_body(void *ctx, const tern__rmsg *m) {
  snprintf(ctx, 16, "%llu:%.*s", (unsigned long long)m->seq, (int)m->body_len, (const char *)m->body);
  return 0;
}

static int count_notice(void *ctx, int kind, uint64_t cmid, int64_t code) {
  (void)kind, (void)cmid, (void)code;
  (*(int *)ctx)++;
  return 0;
}

static void stats(tern__relay_store *s, tern__nats_stats *st) { tern__relay_nats_stats(s, st); }

/* What relay A stores, relay B serves: B is told which inbox got it, its
 * reader's acknowledgement on B tells A's sender (a receipt notice for
 * A's device, named to A's wake), and a resend through B is a duplicate. */
Test(cluster, one_relay_stores_another_serves) {
  server sv;
  server_up(&sv);
  tern__relay_store *a = relay(&sv), *b = relay(&sv);
  uint64_t cur;
  cr_assert_eq(b->ops->device(b, "bob", DEV_B, &cur), 0);
  cr_assert_eq(b->ops->commit(b, 0), 0);
  tern__rs_put p = msg("alice", DEV_A, "bob", 7, "hi");
  cr_assert_eq(a->ops->put(a, &p, 1), 0);
  cr_assert_eq(p.result, TERN__RS_STORED);
  cr_assert_eq(p.seq, 1);
  cr_assert_eq(a->ops->commit(a, 0), 0);

  woken w = take(b);
  cr_assert_eq(w.inboxes, 1, "B is told bob's inbox grew");
  cr_assert_str_eq(w.inbox[0], "bob");
  char got[16] = "";
  cr_assert_eq(b->ops->due(b, "bob", 0, 10, see_body, got), 1);
  cr_assert_str_eq(got, "1:hi");
  uint64_t reached = 0;
  cr_assert_eq(b->ops->acked(b, "bob", DEV_B, 1, NULL, 0, &reached, NULL, NULL), 0);
  cr_assert_eq(b->ops->notice_put(b, DEV_A, TERN__NOTICE_RECEIPT, 7, 0), 0);
  cr_assert_eq(b->ops->commit(b, 0), 0);

  w = take(a);
  cr_assert_eq(w.devices, 1, "A is told alice's device has a notice");
  cr_assert_eq(memcmp(w.dev[0], DEV_A, 32), 0);
  int notices = 0;
  cr_assert(a->ops->notice_list(a, DEV_A, count_notice, &notices) >= 0);
  cr_assert_eq(notices, 1, "B's notice is on A's replica");
  uint64_t n = 99;
  cr_assert_eq(a->ops->count(a, &n), 0);
  cr_assert_eq(n, 0, "delivered to bob's only device: deleted on A's replica too");

  tern__rs_put again = msg("alice", DEV_A, "bob", 7, "hi");
  cr_assert_eq(b->ops->put(b, &again, 1), 0);
  cr_assert_eq(again.result, TERN__RS_EARLIER, "the dedup is the cluster's, not A's");
  cr_assert_eq(again.seq, 1);
  cr_assert_eq(b->ops->commit(b, 0), 0);

  tern__nats_stats sa, sb;
  stats(a, &sa);
  stats(b, &sb);
  cr_assert_eq(sa.refused + sb.refused, 0);
  cr_assert_lt(sa.position, sb.position, "A has not yet applied B's last entry");
  a->ops->close(a);
  b->ops->close(b);
  server_down(&sv);
}

/* Two relays write at once. Writes to different inboxes both land (the
 * second entry is run again on top of the first, with the same answers);
 * two messages for one inbox cannot both be seq 1: the second entry is
 * refused by every replica, its commit fails (BUSY for its sender) and
 * its retry is seq 2. */
Test(cluster, racing_rounds_are_ordered_by_the_log) {
  server sv;
  server_up(&sv);
  tern__relay_store *a = relay(&sv), *b = relay(&sv);
  tern__rs_put pa = msg("alice", DEV_A, "bob", 1, "a1");
  tern__rs_put pb = msg("bob", DEV_B, "carol", 1, "b1");
  cr_assert_eq(a->ops->put(a, &pa, 1), 0);
  cr_assert_eq(b->ops->put(b, &pb, 1), 0);
  cr_assert_eq(a->ops->commit(a, 0), 0);
  cr_assert_eq(b->ops->commit(b, 0), 0, "%s", b->ops->errmsg(b));
  tern__nats_stats st;
  stats(b, &st);
  cr_assert_eq(st.reruns, 1, "B's entry landed after A's");
  cr_assert_eq(st.published_after_rerun, 1, "and held: its answers did not change");

  tern__rs_put p1 = msg("alice", DEV_A, "dave", 2, "x");
  tern__rs_put p2 = msg("bob", DEV_B, "dave", 2, "y");
  cr_assert_eq(a->ops->put(a, &p1, 1), 0);
  cr_assert_eq(b->ops->put(b, &p2, 1), 0);
  cr_assert_eq(p1.seq, 1);
  cr_assert_eq(p2.seq, 1, "each relay's own view");
  cr_assert_eq(a->ops->commit(a, 0), 0);
  cr_assert_eq(b->ops->commit(b, 0), TERN_ESTORE);
  cr_assert(strstr(b->ops->errmsg(b), "changed this round's answers"), "%s", b->ops->errmsg(b));
  b->ops->rollback(b, 0);
  stats(b, &st);
  cr_assert_eq(st.refused, 1, "B's entry is in the log, refused");
  cr_assert_eq(b->ops->put(b, &p2, 1), 0);
  cr_assert_eq(p2.result, TERN__RS_STORED);
  cr_assert_eq(p2.seq, 2, "after A's: seqs stay gap-free and unique");
  cr_assert_eq(b->ops->commit(b, 0), 0);

  tern__nats_stats sb;
  stats(b, &sb);
  for (int i = 0; i < 100; i++) { /* until A has applied everything B has */
    tern__nats_stats sa;
    stats(a, &sa);
    if (sa.position >= sb.position) break;
    (void)take(a);
  }
  char got[16] = "";
  cr_assert_eq(a->ops->due(a, "dave", 1, 10, see_body, got), 1);
  cr_assert_str_eq(got, "2:y");
  a->ops->commit(a, 0);
  tern__nats_stats sa;
  stats(a, &sa);
  stats(b, &st);
  cr_assert_eq(sa.refused, 1, "A refused B's entry too: the replicas agree");
  a->ops->close(a);
  b->ops->close(b);
  server_down(&sv);
}

/* A relay started later (or restarted) reads the whole log: it has every
 * message, cursor and dedup record the others wrote. */
Test(cluster, a_new_relay_reads_the_whole_log) {
  server sv;
  server_up(&sv);
  tern__relay_store *a = relay(&sv);
  alice_to_bob(a, 50, 10);
  uint64_t cur;
  cr_assert_eq(a->ops->device(a, "bob", DEV_B, &cur), 0);
  uint64_t reached;
  cr_assert_eq(a->ops->acked(a, "bob", DEV_B, 20, NULL, 0, &reached, NULL, NULL), 0);
  cr_assert_eq(a->ops->commit(a, 0), 0);
  a->ops->close(a);

  tern__relay_store *c = relay(&sv);
  uint64_t n = 0;
  cr_assert_eq(c->ops->count(c, &n), 0);
  cr_assert_eq(n, 30, "50 stored, 20 delivered to bob's only device");
  cr_assert_eq(c->ops->device(c, "bob", DEV_B, &cur), 0);
  cr_assert_eq(cur, 20);
  alice_resends(c, 33);
  cr_assert_eq(c->ops->commit(c, 0), 0);
  tern__nats_stats st;
  stats(c, &st);
  cr_assert_eq(st.refused, 0);
  c->ops->close(c);
  server_down(&sv);
}

/* Losing the cluster while running: no new messages (room FULL: BUSY for
 * the senders, who keep them), a commit fails with the reason; the
 * server's return (same store) brings everything back. */
Test(cluster, losing_the_cluster_is_busy_not_loss) {
  server sv;
  server_up(&sv);
  tern__relay_store *a = relay(&sv);
  tern__rs_put p = msg("alice", DEV_A, "bob", 1, "kept");
  cr_assert_eq(a->ops->put(a, &p, 1), 0);
  cr_assert_eq(a->ops->commit(a, 0), 0);

  nats_kill(sv.pid);
  for (int i = 0; i < 300 && a->ops->room(a, 10) != TERN__RS_FULL; i++) tt_sleep_ms(10);
  cr_assert_eq(a->ops->room(a, 10), TERN__RS_FULL, "no new messages without the cluster");
  tern__rs_put q = msg("alice", DEV_A, "bob", 2, "lost?");
  q.prev_cmid = 1;
  cr_assert_eq(a->ops->put(a, &q, 1), 0);
  cr_assert_eq(a->ops->commit(a, 0), TERN_ESTORE);
  cr_assert(strstr(a->ops->errmsg(a), "NATS"), "%s", a->ops->errmsg(a));
  a->ops->rollback(a, 0);

  sv.pid = nats_start(sv.port, sv.dir, 1);
  for (int i = 0; i < 500 && a->ops->room(a, 10) != TERN__RS_ROOM; i++) tt_sleep_ms(10);
  cr_assert_eq(a->ops->room(a, 10), TERN__RS_ROOM, "back when the cluster is");
  int ok = -1;
  for (int i = 0; i < 50 && ok != 0; i++) { /* JetStream may need a moment after the restart */
    cr_assert_eq(a->ops->put(a, &q, 1), 0);
    ok = a->ops->commit(a, 0);
    if (ok != 0) {
      a->ops->rollback(a, 0);
      tt_sleep_ms(100);
    }
  }
  cr_assert_eq(ok, 0, "%s", a->ops->errmsg(a));
  cr_assert_eq(q.seq, 2);
  a->ops->close(a);
  tern__relay_store *c = relay(&sv);
  uint64_t n = 0;
  c->ops->count(c, &n);
  cr_assert_eq(n, 2, "both messages survived the server's SIGKILL");
  c->ops->close(c);
  server_down(&sv);
}

static tern__relay_store *relay_url(const char *url) {
  tern__relay_store *s = NULL;
  char err[512];
  tern__nats_config c = {.url = url, .timeout_ms = 1000};
  cr_assert_eq(tern__relay_nats_open(&s, &c, err, sizeof err), 0, "%s", err);
  return s;
}

/* Every `snapshot` entries a relay writes the store's image to the
 * cluster and purges the log before it; a relay starting later loads the
 * image and reads only the rest, and has the same messages, cursors and
 * dedup records. */
static void snapshots(int every, uint64_t want) {
  server sv;
  server_up(&sv);
  char url[256];
  snprintf(url, sizeof url, "%s?snapshot=%d&check=4", sv.url, every);
  tern__relay_store *a = relay_url(url);
  alice_to_bob(a, 100, 1);
  uint64_t cur, reached;
  cr_assert_eq(a->ops->device(a, "bob", DEV_B, &cur), 0);
  cr_assert_eq(a->ops->acked(a, "bob", DEV_B, 30, NULL, 0, &reached, NULL, NULL), 0);
  cr_assert_eq(a->ops->commit(a, 0), 0);
  tern__nats_stats st;
  stats(a, &st);
  cr_assert_eq(st.snapshots, want, "snapshots written: %llu", (unsigned long long)st.snapshots);
  if (want > 1) cr_assert_gt(st.log_first, (uint64_t)every, "the log up to the snapshot before the last is purged (first %llu)",
               (unsigned long long)st.log_first);
  a->ops->close(a);

  tern__relay_store *c = relay_url(url);
  stats(c, &st);
  cr_assert_geq(st.snapshot_loaded, (uint64_t)every, "started from a snapshot (%llu)",
                (unsigned long long)st.snapshot_loaded);
  uint64_t n = 0;
  cr_assert_eq(c->ops->count(c, &n), 0);
  cr_assert_eq(n, 70, "100 stored, 30 delivered to bob's only device");
  cr_assert_eq(c->ops->device(c, "bob", DEV_B, &cur), 0);
  cr_assert_eq(cur, 30);
  alice_resends(c, 50); /* the dedup record came with the snapshot */
  tern__rs_put next = msg("alice", DEV_A, "bob", 101, "m");
  next.prev_cmid = 100;
  cr_assert_eq(c->ops->put(c, &next, 1), 0);
  cr_assert_eq(next.result, TERN__RS_STORED);
  cr_assert_eq(next.seq, 101);
  cr_assert_eq(c->ops->commit(c, 0), 0);
  c->ops->close(c);
  server_down(&sv);
}

static void count_inbox(void *ctx, const char *user) {
  if (!user) ++*(int *)ctx;
}

/* A relay whose subscription stalls (the deaf fault) while another writes
 * and compacts the log past it notices the silence, finds its next entry
 * gone, reloads the newest snapshot, wakes every session, and goes on
 * with the same state as the writer. */
Test(cluster, a_relay_left_behind_by_compaction_catches_up) {
  server sv;
  server_up(&sv);
  char url[256];
  snprintf(url, sizeof url, "%s?snapshot=20&check=4", sv.url);
  tern__relay_store *a = relay_url(url), *b = relay_url(url);
  b->ops->fault(b, TERN__RS_FAULT_DEAF, 1);
  alice_to_bob(a, 100, 1);
  tern__nats_stats sa, sb;
  stats(a, &sa);
  cr_assert_geq(sa.snapshots, 3);
  cr_assert_gt(sa.log_first, 3, "the log is compacted past b (first %llu)", (unsigned long long)sa.log_first);
  int all = 0;
  /* b's loop as an idle relay runs it: nothing wakes it but the time its
   * store asks for (no clients, and its subscription delivers nothing). */
  for (int i = 0; i < 20; i++) {
    uint64_t now = tt_now_ms(), w = b->ops->wake_ms(b);
    cr_assert_leq(w, now + 1100, "b asks to be woken within a second of silence (in %lld ms)",
                  (long long)(w - now));
    if (w > now) tt_sleep_ms((int)(w - now));
    cr_assert(b->ops->remote_take(b, count_inbox, no_device, &all) >= 0, "%s", b->ops->errmsg(b));
    stats(b, &sb);
    if (sb.position >= sa.position) break;
  }
  cr_assert_eq(sb.position, sa.position, "b caught up (%llu of %llu)", (unsigned long long)sb.position,
               (unsigned long long)sa.position);
  cr_assert_eq(sb.snapshot_reloads, 1);
  cr_assert_eq(all, 1, "every session woken once");
  uint64_t n = 0;
  cr_assert_eq(b->ops->count(b, &n), 0);
  cr_assert_eq(n, 100);
  alice_resends(b, 7);
  cr_assert_eq(b->ops->commit(b, 0), 0);
  a->ops->close(a);
  b->ops->close(b);
  server_down(&sv);
}

/* alice's messages first..first+n-1 to bob, a commit each (and the
 * loop's remote_take after it, which writes snapshots, if `loop`). */
static void alice_more_(tern__relay_store *s, uint64_t first, uint64_t n, int loop) {
  for (uint64_t i = first; i < first + n; i++) {
    tern__rs_put p = msg("alice", DEV_A, "bob", i, "m");
    p.prev_cmid = i - 1;
    cr_assert_eq(s->ops->put(s, &p, 1), 0);
    cr_assert_eq(p.result, TERN__RS_STORED);
    cr_assert_eq(s->ops->commit(s, 0), 0, "%s", s->ops->errmsg(s));
    if (loop) cr_assert(s->ops->remote_take(s, no_inbox, no_device, NULL) >= 0);
  }
}
#define alice_more(s, first, n) alice_more_((s), (first), (n), 1)

/* b's loop, idle, until it holds what a holds with nothing left to
 * confirm (bounded: 15 s). */
static void settle_like(tern__relay_store *a, tern__relay_store *b) {
  tern__nats_stats sa, sb;
  stats(a, &sa);
  for (int i = 0; i < 150; i++) {
    cr_assert(b->ops->remote_take(b, no_inbox, no_device, NULL) >= 0, "%s", b->ops->errmsg(b));
    stats(b, &sb);
    uint8_t da[16], db[16];
    if (sb.position == sa.position && tern__relay_nats_digest(a, da) == 0 &&
        tern__relay_nats_digest(b, db) == 0 && memcmp(da, db, 16) == 0 && sb.resyncs > 0)
      return;
    tt_sleep_ms(100);
  }
  stats(b, &sb);
  cr_assert_fail("b did not come back to a's replica: position %llu of %llu, %llu resync(s)",
                 (unsigned long long)sb.position, (unsigned long long)sa.position,
                 (unsigned long long)sb.resyncs);
}

/* A relay whose read by sequence gets an entry the log does not have (a
 * server that lost its leadership served it; here the fault serves the
 * next entry in its place) diverges: every later message of the
 * conversation is refused there. Reading the entry again some seconds
 * later shows it; the relay goes back to the newest snapshot (`params`
 * has snapshots) or to entry 0 and reads on, and ends with a's replica.
 * Meanwhile it writes no snapshot (a writes none in that phase: b would
 * be the one to). */
static void stale_read(const char *params, int from_snapshot) {
  server sv;
  server_up(&sv);
  char url[256];
  snprintf(url, sizeof url, "%s%s", sv.url, params);
  tern__relay_store *a = relay_url(url), *b = relay_url(url);
  alice_more(a, 1, 10);
  tern__nats_stats sa, sb;
  stats(a, &sa);
  stats(b, &sb);
  for (int i = 0; i < 100 && sb.position < sa.position; i++) {
    (void)take(b);
    stats(b, &sb);
  }
  cr_assert_eq(sb.position, sa.position);
  b->ops->fault(b, TERN__RS_FAULT_DEAF, 1);
  b->ops->fault(b, TERN__RS_FAULT_STALE_READ, 1);
  alice_more_(a, 11, 5, 0);
  /* b hears nothing: after a second it reads the log by sequence, and
   * takes entry 12's for 11's: cmid 11 is never stored there. */
  stats(a, &sa);
  for (int i = 0; i < 50 && sb.position < sa.position; i++) {
    cr_assert(b->ops->remote_take(b, no_inbox, no_device, NULL) >= 0, "%s", b->ops->errmsg(b));
    stats(b, &sb);
    tt_sleep_ms(100);
  }
  cr_assert_eq(sb.position, sa.position, "b read the log by sequence");
  cr_assert_gt(sb.refused, sa.refused, "b diverged: it refused what a applied");
  cr_assert_eq(sb.resyncs, 0, "not found out yet");
  b->ops->fault(b, TERN__RS_FAULT_DEAF, 0);
  /* The first two tries to go back fail (the snapshot stream briefly
   * unavailable): b refuses rounds meanwhile, and tries again. */
  b->ops->fault(b, TERN__RS_FAULT_SNAP_LOAD, 2);
  for (int i = 0; i < 60 && sb.resyncs == 0; i++) {
    cr_assert(b->ops->remote_take(b, no_inbox, no_device, NULL) >= 0, "%s", b->ops->errmsg(b));
    stats(b, &sb);
    tt_sleep_ms(100);
  }
  cr_assert_eq(sb.resyncs, 1, "b found out by reading the entry again");
  cr_assert_eq(sb.snapshots, 0, "b wrote no snapshot of its diverged replica");
  tern__rs_put p = msg("alice", DEV_A, "bob", 16, "m");
  p.prev_cmid = 15;
  cr_assert_lt(b->ops->put(b, &p, 1), 0, "nothing is stored while going back");
  cr_assert(strstr(b->ops->errmsg(b), "going back"), "%s", b->ops->errmsg(b));
  b->ops->rollback(b, 0);
  settle_like(a, b);
  stats(b, &sb);
  cr_assert_eq(sb.resyncs, 1);
  if (from_snapshot) cr_assert_gt(sb.snapshot_loaded, 0, "b went back to a's snapshot");
  else cr_assert_eq(sb.snapshot_loaded, 0, "b went back to entry 0");
  uint64_t n = 0;
  cr_assert_eq(b->ops->count(b, &n), 0);
  cr_assert_eq(n, 15, "every message a stored is on b's replica");
  alice_resends(b, 11);
  cr_assert_eq(b->ops->commit(b, 0), 0);
  a->ops->close(a);
  b->ops->close(b);
  server_down(&sv);
}

Test(cluster, a_replica_that_took_an_entry_the_log_lacks_goes_back_to_a_snapshot, .timeout = 60) {
  stale_read("?snapshot=8&check=4", 1);
}
Test(cluster, a_replica_that_took_an_entry_the_log_lacks_goes_back_to_entry_0, .timeout = 60) {
  stale_read("?snapshot=0", 0);
}

/* bob's message 1 to carol again, through b: answered EARLIER (its entry
 * is in the log and applied, though its commit was refused). */
static void bob_resends_b1(tern__relay_store *b, const char *why) {
  tern__rs_put again = msg("bob", DEV_B, "carol", 1, "b1");
  cr_assert_eq(b->ops->put(b, &again, 1), 0);
  cr_assert_eq(again.result, TERN__RS_EARLIER, "%s", why);
  cr_assert_eq(b->ops->commit(b, 0), 0);
}

/* A relay acknowledged at a sequence the log gave another relay's entry
 * (a server that lost its leadership answered; here the fault names the
 * sequence before its own) sees the other entry delivered there and rolls
 * the round back instead of committing it in place; its entry, later in
 * the log, is applied by the usual rule, so the sender's resend is
 * EARLIER, and the replicas agree. */
Test(cluster, an_acknowledgement_the_log_contradicts_rolls_the_round_back) {
  server sv;
  server_up(&sv);
  tern__relay_store *a = relay(&sv), *b = relay(&sv);
  /* b's round is open before a's entry lands: b's replica does not have
   * it, and b's entry comes after it in the log. */
  tern__rs_put p = msg("bob", DEV_B, "carol", 1, "b1");
  cr_assert_eq(b->ops->put(b, &p, 1), 0);
  alice_more(a, 1, 1);
  b->ops->fault(b, TERN__RS_FAULT_ACK_EARLY, 1);
  cr_assert_eq(b->ops->commit(b, 0), TERN_ESTORE);
  cr_assert(strstr(b->ops->errmsg(b), "lost its leadership"), "%s", b->ops->errmsg(b));
  b->ops->rollback(b, 0);
  tern__nats_stats sb;
  stats(b, &sb);
  cr_assert_eq(sb.acks_refuted, 1);
  cr_assert_eq(sb.published, 1);
  for (int i = 0; i < 100 && sb.position < 2 + 1; i++) { /* the log's first entry, a's, b's */
    (void)take(b);
    stats(b, &sb);
  }
  bob_resends_b1(b, "b's entry is in the log and applied: nothing lost");
  tern__nats_stats sa;
  for (int i = 0; i < 100; i++) {
    (void)take(a);
    stats(a, &sa);
    stats(b, &sb);
    if (sa.position >= sb.position) break;
  }
  uint8_t da[16], db[16];
  cr_assert_eq(tern__relay_nats_digest(a, da), 0);
  cr_assert_eq(tern__relay_nats_digest(b, db), 0);
  cr_assert_eq(memcmp(da, db, 16), 0, "the replicas agree");
  a->ops->close(a);
  b->ops->close(b);
  server_down(&sv);
}

/* The same, where the acknowledgement names an entry further on (the
 * round is run again after the entries before it): b meets a's entry at
 * the acknowledged sequence, so its round is not stored, and says so. */
Test(cluster, an_acknowledgement_at_another_writers_later_entry_is_not_taken_for_ours) {
  server sv;
  server_up(&sv);
  tern__relay_store *a = relay(&sv), *b = relay(&sv);
  tern__rs_put p = msg("bob", DEV_B, "carol", 1, "b1");
  cr_assert_eq(b->ops->put(b, &p, 1), 0);
  alice_more(a, 1, 2); /* entries 2 and 3; b's lands at 4, acknowledged "3" */
  b->ops->fault(b, TERN__RS_FAULT_ACK_EARLY, 1);
  cr_assert_eq(b->ops->commit(b, 0), TERN_ESTORE);
  cr_assert(strstr(b->ops->errmsg(b), "lost its leadership"), "%s", b->ops->errmsg(b));
  b->ops->rollback(b, 0);
  tern__nats_stats sb;
  stats(b, &sb);
  cr_assert_eq(sb.acks_refuted, 1);
  cr_assert_eq(sb.published_after_rerun, 0, "not counted as held");
  for (int i = 0; i < 100 && sb.position < 4; i++) {
    (void)take(b);
    stats(b, &sb);
  }
  bob_resends_b1(b, "b's entry, further on, is applied: nothing lost");
  a->ops->close(a);
  b->ops->close(b);
  server_down(&sv);
}

/* b commits its round in place on an acknowledgement the log contradicts
 * while its subscription is silent (nothing to wait for): the round is
 * pending, and reading its entry again 3 s later finds a's there. b goes
 * back to entry 0, reads the log again (its own entry, further on, is
 * applied by the usual rule) and ends with a's replica. */
Test(cluster, an_own_round_committed_on_a_wrong_acknowledgement_is_found_and_undone, .timeout = 60) {
  server sv;
  server_up(&sv);
  tern__relay_store *a = relay(&sv), *b = relay(&sv);
  b->ops->fault(b, TERN__RS_FAULT_DEAF, 1);
  tern__rs_put p = msg("bob", DEV_B, "carol", 1, "b1");
  cr_assert_eq(b->ops->put(b, &p, 1), 0);
  alice_more(a, 1, 1);
  b->ops->fault(b, TERN__RS_FAULT_ACK_EARLY, 1);
  cr_assert_eq(b->ops->commit(b, 0), 0, "committed in place: nothing said otherwise yet");
  tern__nats_stats sb;
  stats(b, &sb);
  cr_assert_eq(sb.resyncs, 0);
  b->ops->fault(b, TERN__RS_FAULT_DEAF, 0);
  alice_more(a, 2, 1); /* a needs b's entry to be at b's position too */
  settle_like(a, b);
  stats(b, &sb);
  cr_assert_eq(sb.resyncs, 1);
  bob_resends_b1(b, "b's entry, further on, is applied");
  a->ops->close(a);
  b->ops->close(b);
  server_down(&sv);
}

/* Each relay's loop once, then 50 ms. */
static void spin(tern__relay_store **r, int n) {
  for (int i = 0; i < n; i++)
    cr_assert(r[i]->ops->remote_take(r[i], no_inbox, no_device, NULL) >= 0, "relay %d: %s", i,
              r[i]->ops->errmsg(r[i]));
  tt_sleep_ms(50);
}

/* A relay whose subscription delivers an entry the log does not have (a
 * server that lost its leadership; here the fault applies the next
 * delivered entry in its place) has nothing of its own to check it
 * against. The other two relays hash the same window of entries alike,
 * and differently from it: it goes back to the newest snapshot and ends
 * with their replica; they are not moved. */
Test(cluster, a_relay_the_others_outvote_goes_back, .timeout = 60) {
  server sv;
  server_up(&sv);
  char url[256];
  snprintf(url, sizeof url, "%s?snapshot=16&check=8", sv.url);
  tern__relay_store *r[3] = {relay_url(url), relay_url(url), relay_url(url)};
  tern__relay_store *a = r[0], *c = r[2];
  tern__nats_stats st[3];
  alice_more(a, 1, 4);
  for (int i = 0; i < 100; i++) {
    spin(r, 3);
    for (int k = 0; k < 3; k++) stats(r[k], &st[k]);
    if (st[1].position == st[0].position && st[2].position == st[0].position) break;
  }
  cr_assert_eq(st[2].position, st[0].position);
  c->ops->fault(c, TERN__RS_FAULT_SWAP_DELIVERY, 1);
  for (uint64_t m = 5; m <= 40; m++) { /* c's loop does not run: its queue fills */
    alice_more(a, m, 1);
    cr_assert(r[1]->ops->remote_take(r[1], no_inbox, no_device, NULL) >= 0);
  }
  tt_sleep_ms(200);
  uint8_t d[3][16];
  int same = 0;
  for (int i = 0; i < 200 && !same; i++) {
    spin(r, 3);
    for (int k = 0; k < 3; k++) stats(r[k], &st[k]);
    if (st[1].position != st[0].position || st[2].position != st[0].position || st[2].outvoted == 0)
      continue;
    for (int k = 0; k < 3; k++) cr_assert_eq(tern__relay_nats_digest(r[k], d[k]), 0);
    same = !memcmp(d[0], d[1], 16) && !memcmp(d[0], d[2], 16);
  }
  cr_assert_eq(st[2].outvoted, 1, "c went back once, outvoted (%llu)", (unsigned long long)st[2].outvoted);
  cr_assert_eq(st[0].outvoted + st[1].outvoted, 0, "a and b were not moved");
  cr_assert(same, "the three replicas agree at entry %llu", (unsigned long long)st[0].position);
  cr_assert_gt(st[2].snapshot_loaded, 0, "c went back to a snapshot");
  uint64_t n = 0;
  cr_assert_eq(c->ops->count(c, &n), 0);
  cr_assert_eq(n, 40, "every message is on c's replica");
  for (int k = 0; k < 3; k++) r[k]->ops->close(r[k]);
  server_down(&sv);
}

/* The same, when the newest snapshot cannot be read at first (the
 * snapshot stream briefly unavailable): b stores nothing meanwhile, tries
 * again every second, and catches up. */
Test(cluster, a_relay_behind_the_compacted_log_waits_for_a_readable_snapshot) {
  server sv;
  server_up(&sv);
  char url[256];
  snprintf(url, sizeof url, "%s?snapshot=20&check=4", sv.url);
  tern__relay_store *a = relay_url(url), *b = relay_url(url);
  b->ops->fault(b, TERN__RS_FAULT_DEAF, 1);
  alice_to_bob(a, 100, 1);
  b->ops->fault(b, TERN__RS_FAULT_SNAP_LOAD, 2);
  tern__nats_stats sa, sb;
  stats(a, &sa);
  int refused = 0;
  for (int i = 0; i < 100; i++) {
    cr_assert(b->ops->remote_take(b, no_inbox, no_device, NULL) >= 0, "%s", b->ops->errmsg(b));
    stats(b, &sb);
    if (sb.position >= sa.position) break;
    if (sb.position < 20 && !refused && b->ops->room(b, 1) == TERN__RS_FULL) refused = 1;
    tt_sleep_ms(100);
  }
  cr_assert_eq(sb.position, sa.position, "b caught up (%llu of %llu)", (unsigned long long)sb.position,
               (unsigned long long)sa.position);
  cr_assert(refused, "b had no room for messages while it could not read a snapshot");
  uint64_t n = 0;
  cr_assert_eq(b->ops->count(b, &n), 0);
  cr_assert_eq(n, 100);
  a->ops->close(a);
  b->ops->close(b);
  server_down(&sv);
}

/* Two snapshots: the log up to the first is purged. */
Test(cluster, snapshots_compact_the_log) { snapshots(40, 2); }
/* The first snapshot of a log, alone. */
Test(cluster, a_first_snapshot_starts_a_relay) { snapshots(70, 1); }

/* A relay refuses to start, saying why, when the cluster cannot serve. */
Test(cluster, refuses_to_start_without_a_cluster) {
  char err[512];
  tern__relay_store *s = NULL;
  char url[64];
  snprintf(url, sizeof url, "nats://127.0.0.1:%d", free_port());
  tern__nats_config c = {.url = url, .timeout_ms = 500};
  cr_assert_eq(tern__relay_nats_open(&s, &c, err, sizeof err), TERN_ESTORE);
  cr_assert(strstr(err, "cannot reach the NATS cluster"), "%s", err);

  int port = free_port();
  pid_t pid = nats_start(port, "/tmp", 0);
  snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
  cr_assert_eq(tern__relay_nats_open(&s, &c, err, sizeof err), TERN_ESTORE);
  nats_kill(pid);
  cr_assert(strstr(err, "JetStream is off"), "%s", err);

  tern__nats_config bad = {.url = "nats://127.0.0.1:4222?colour=blue"};
  cr_assert_eq(tern__relay_nats_open(&s, &bad, err, sizeof err), TERN_EINVAL);
  cr_assert(strstr(err, "unknown parameter"), "%s", err);
  tern__nats_config bad2 = {.url = "nats://127.0.0.1:4222?audit=ten"};
  cr_assert_eq(tern__relay_nats_open(&s, &bad2, err, sizeof err), TERN_EINVAL);
  cr_assert(strstr(err, "audit is a number of entries"), "%s", err);
}
/* ---- replicas agree, whatever the races and lost answers ------------------ */

/* A small deterministic generator, so that a failing seed can be run again. */
static uint64_t rnd(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

/* What one replica holds: every receiver's inbox as (seq, cmid, from) and
 * each device's notice count, in text, to compare replicas with. */
typedef struct image {
  char text[16384];
  size_t len;
} image;

static int image_msg(void *ctx, const tern__rmsg *m) {
  image *im = ctx;
  if (im->len + 64 < sizeof im->text)
    im->len += (size_t)snprintf(im->text + im->len, sizeof im->text - im->len, "%llu:%llu:%s ",
                                (unsigned long long)m->seq, (unsigned long long)m->cmid, m->from);
  return 0;
}

static void image_of(tern__relay_store *s, image *im) {
  static const char *const rcv[3] = {"r0", "r1", "r2"};
  im->len = 0;
  im->text[0] = 0;
  for (int j = 0; j < 3; j++) {
    im->len += (size_t)snprintf(im->text + im->len, sizeof im->text - im->len, "| %s: ", rcv[j]);
    cr_assert(s->ops->due(s, rcv[j], 0, 1000, image_msg, im) >= 0);
    uint64_t fl = 0;
    cr_assert_eq(s->ops->floor(s, rcv[j], &fl), 0);
    im->len += (size_t)snprintf(im->text + im->len, sizeof im->text - im->len, "floor %llu ",
                                (unsigned long long)fl);
  }
  for (int i = 0; i < 3; i++) {
    uint8_t dev[32] = {0x50, (uint8_t)i};
    int n = 0;
    cr_assert(s->ops->notice_list(s, dev, count_notice, &n) >= 0);
    im->len += (size_t)snprintf(im->text + im->len, sizeof im->text - im->len, "| s%d notices %d ", i, n);
  }
  uint64_t total = 0;
  cr_assert_eq(s->ops->count(s, &total), 0);
  im->len += (size_t)snprintf(im->text + im->len, sizeof im->text - im->len, "| count %llu",
                              (unsigned long long)total);
  s->ops->commit(s, 0);
}

/* Two relays write the same conversations (senders s0-s2 to receivers
 * r0-r2, the receivers acknowledging, receipts as notices) in rounds that
 * race each other through the log, and some of their appends land in the
 * log while the relay is told they failed (the cluster's answer lost: it
 * rolls the round back, and meets the entry later). A third relay only
 * reads. At the end every replica must hold the same inboxes, notices and
 * counts, and have refused the same entries: a replica that refuses an
 * entry the others applied has diverged (a chaos run once ended with a
 * receivers' relay refusing 207 entries where the others refused 3, and
 * 4,642 acknowledged messages never delivered). */
static void replicas_agree(uint64_t seed) {
  server sv;
  server_up(&sv);
  char url[256];
  snprintf(url, sizeof url, "%s?snapshot=20&check=4", sv.url);
  tern__relay_store *w[2] = {relay_url(url), relay_url(url)}, *rd = relay_url(url);
  static const char *const snd[3] = {"s0", "s1", "s2"}, *const rcv[3] = {"r0", "r1", "r2"};
  uint64_t next[3] = {1, 1, 1};      /* each sender's next cmid */
  uint64_t acked_to[3] = {0, 0, 0};  /* what each receiver acknowledged */
  uint64_t x = seed;
  int lost = 0, failed = 0, stored = 0;
  int deaf[3] = {0, 0, 0}, deafened = 0;
  int asleep[3] = {0, 0, 0}, slept = 0; /* iterations left in which relay r does nothing */
  for (int it = 0; it < 160; it++) {
    /* Now and then relay B or the reader sleeps (deaf, and doing nothing)
     * for 45-75 iterations: the log is compacted past it, and it wakes
     * into a snapshot, B in the middle of its next commit. */
    for (int r = 1; r < 3; r++) {
      if (asleep[r] && --asleep[r] == 0) {
        tern__relay_store *d = r < 2 ? w[r] : rd;
        d->ops->fault(d, TERN__RS_FAULT_DEAF, (unsigned)deaf[r]);
      }
    }
    if (it < 100 && rnd(&x) % 24 == 0) {
      int r = 1 + (int)(rnd(&x) % 2);
      if (!asleep[r]) {
        asleep[r] = 45 + (int)(rnd(&x) % 31);
        slept++;
        tern__relay_store *d = r < 2 ? w[r] : rd;
        d->ops->fault(d, TERN__RS_FAULT_DEAF, 1);
      }
    }
    /* Now and then a relay's subscription drops what it receives for a
     * while (a stalled consumer): it reads the gaps by sequence, or, once
     * the log is compacted past it, loads the newest snapshot. */
    if (rnd(&x) % 8 == 0) {
      int r = (int)(rnd(&x) % 3);
      deaf[r] = !deaf[r];
      deafened += deaf[r];
      tern__relay_store *d = r < 2 ? w[r] : rd;
      if (!asleep[r]) d->ops->fault(d, TERN__RS_FAULT_DEAF, (unsigned)deaf[r]);
    }
    /* Both relays open a round, then commit in either order: the second
     * to append meets the first's entry before its own (a rerun). */
    int ok[2] = {1, 1}, first = (int)(rnd(&x) % 2);
    for (int wi = 0; wi < 2; wi++) {
      tern__relay_store *s = w[wi];
      if (asleep[wi]) {
        ok[wi] = -1; /* no round */
        continue;
      }
      int nops = 1 + (int)(rnd(&x) % 4);
      for (int k = 0; k < nops && ok[wi]; k++) {
        int i = (int)(rnd(&x) % 3);
        uint8_t sdev[32] = {0x50, (uint8_t)i}, rdev[32] = {0x52, (uint8_t)i};
        switch (rnd(&x) % 4) {
          case 0:
          case 1: { /* a message, or the resend of one not yet known stored */
            char body[16];
            snprintf(body, sizeof body, "m%llu", (unsigned long long)next[i]);
            tern__rs_put p = msg(snd[i], sdev, rcv[i], next[i], body);
            p.prev_cmid = next[i] - 1;
            if (s->ops->put(s, &p, 1) < 0) ok[wi] = 0;
            break;
          }
          case 2: { /* the receiver's device, and its acknowledgement */
            uint64_t cur = 0, reached = 0;
            if (s->ops->device(s, rcv[i], rdev, &cur) < 0) {
              ok[wi] = 0;
              break;
            }
            uint64_t up = acked_to[i] + 1 + rnd(&x) % 3;
            if (s->ops->acked(s, rcv[i], rdev, up, NULL, 0, &reached, NULL, NULL) < 0) ok[wi] = 0;
            break;
          }
          default: /* a receipt for the sender */
            if (s->ops->notice_put(s, sdev, 1, next[i] > 1 ? next[i] - 1 : 1, 0) < 0) ok[wi] = 0;
            break;
        }
      }
    }
    int paused = 0;
    for (int c = 0; c < 2; c++) {
      tern__relay_store *s = w[(first + c) % 2];
      if (ok[(first + c) % 2] < 0) continue; /* asleep */
      int lose = ok[(first + c) % 2] && rnd(&x) % 5 == 0;
      if (lose) {
        s->ops->fault(s, TERN__RS_FAULT_LOST_ACK, 1);
        lost++;
      }
      int rc = ok[(first + c) % 2] ? s->ops->commit(s, 0) : -1;
      s->ops->fault(s, TERN__RS_FAULT_LOST_ACK, 0);
      if (rc < 0) {
        s->ops->rollback(s, 0);
        failed++;
        if (strstr(s->ops->errmsg(s), "lost") || strstr(s->ops->errmsg(s), "trying again")) paused = 1;
      } else {
        stored++;
      }
    }
    if (paused) tt_sleep_ms(260); /* the pause after a failed append */
    /* What is now in each conversation (either relay may have stored the
     * next message): a probe put, rolled back, says whether to move on. */
    for (int i = 0; i < 3; i++) {
      tern__relay_store *s = w[0];
      tern__rs_put p = msg(snd[i], (uint8_t[32]){0x50, (uint8_t)i}, rcv[i], next[i], "m");
      p.prev_cmid = next[i] - 1;
      (void)s->ops->remote_take(s, no_inbox, no_device, NULL);
      if (s->ops->put(s, &p, 1) >= 0 && p.result == TERN__RS_EARLIER) next[i]++;
      s->ops->rollback(s, 0);
      acked_to[i]++;
    }
    for (int r = 0; r < 3; r++)
      if (rnd(&x) % 3 == 0 && !asleep[r])
        (void)(r < 2 ? w[r] : rd)->ops->remote_take(r < 2 ? w[r] : rd, no_inbox, no_device, NULL);
  }
  /* Everyone hears again, and reads to the log's end. */
  tern__nats_stats st[3];
  tern__relay_store *all[3] = {w[0], w[1], rd};
  for (int r = 0; r < 3; r++) all[r]->ops->fault(all[r], TERN__RS_FAULT_DEAF, 0);
  for (int round = 0; round < 300; round++) {
    for (int r = 0; r < 3; r++) {
      (void)all[r]->ops->remote_take(all[r], no_inbox, no_device, NULL);
      stats(all[r], &st[r]);
    }
    if (st[0].position == st[1].position && st[1].position == st[2].position) break;
    tt_sleep_ms(10);
  }
  cr_assert(st[0].position == st[1].position && st[1].position == st[2].position,
            "seed %llu: positions %llu %llu %llu", (unsigned long long)seed,
            (unsigned long long)st[0].position, (unsigned long long)st[1].position,
            (unsigned long long)st[2].position);
  cr_assert(lost > 0 && failed > 0 && stored > 0, "seed %llu: the run had no lost answers (%d) or failures (%d)",
            (unsigned long long)seed, lost, failed);
  /* Refusals compare between replicas that read every entry (one that
   * loaded a snapshot while running skipped the entries in it). */
  int whole[3];
  for (int r = 0; r < 3; r++) whole[r] = st[r].snapshot_reloads == 0;
  cr_assert((!whole[0] || !whole[2] || st[0].refused == st[2].refused) &&
                (!whole[1] || !whole[2] || st[1].refused == st[2].refused) &&
                (!whole[0] || !whole[1] || st[0].refused == st[1].refused),
            "seed %llu: replicas refused different entries: %llu %llu %llu (of %llu)", (unsigned long long)seed,
            (unsigned long long)st[0].refused, (unsigned long long)st[1].refused,
            (unsigned long long)st[2].refused, (unsigned long long)st[2].position);
  cr_assert(!slept || st[1].snapshot_reloads + st[2].snapshot_reloads > 0,
            "seed %llu: %d relays slept past the compacted log, and none loaded a snapshot",
            (unsigned long long)seed, slept);
  fprintf(stderr, "seed %llx: %d slept; %d rounds stored, %d failed (%d answers lost), log %llu, refused %llu %llu %llu, reruns %llu/%llu, deaf %d, reloads %llu %llu %llu, snapshots %llu %llu %llu\n",
          (unsigned long long)seed, slept, stored, failed, lost, (unsigned long long)st[2].position,
          (unsigned long long)st[0].refused, (unsigned long long)st[1].refused,
          (unsigned long long)st[2].refused, (unsigned long long)st[0].reruns, (unsigned long long)st[1].reruns, deafened,
          (unsigned long long)st[0].snapshot_reloads, (unsigned long long)st[1].snapshot_reloads,
          (unsigned long long)st[2].snapshot_reloads, (unsigned long long)st[0].snapshots,
          (unsigned long long)st[1].snapshots, (unsigned long long)st[2].snapshots);
  static image im[3];
  for (int r = 0; r < 3; r++) image_of(all[r], &im[r]);
  /* Every row of every table, not only what the image shows. */
  uint8_t dg3[3][16];
  for (int r = 0; r < 3; r++) cr_assert_eq(tern__relay_nats_digest(all[r], dg3[r]), 0);
  cr_assert(memcmp(dg3[0], dg3[2], 16) == 0 && memcmp(dg3[1], dg3[2], 16) == 0,
            "seed %llu: the replicas' digests differ", (unsigned long long)seed);
  cr_assert_str_eq(im[0].text, im[2].text, "seed %llu: relay A's replica differs from the reader's", (unsigned long long)seed);
  cr_assert_str_eq(im[1].text, im[2].text, "seed %llu: relay B's replica differs from the reader's", (unsigned long long)seed);
  for (int r = 0; r < 3; r++) all[r]->ops->close(all[r]);
  server_down(&sv);
}

/* One seed (about 14 s: the pauses after failed appends); others by hand:
 * TERN_CLUSTER_SEED=N. */
Test(cluster, replicas_agree_through_races_and_lost_answers, .timeout = 120) {
  const char *v = getenv("TERN_CLUSTER_SEED");
  replicas_agree(v && *v ? strtoull(v, NULL, 0) : 0x9e3779b97f4a7c15ull);
}
#endif
