/*
 * Two relays that share one store and know nothing of each other (the
 * shape of a cluster, spec/store.md): two relay cores, each with its own
 * connection to one SQLite file. A message sent through one reaches a
 * session on the other when that core is woken for its recipient, the
 * receipt travels back by a wake for the sender's device, a resend through
 * the other relay gets the seq of the first sending (one dedup for both),
 * and a receiver that moves from one relay to the other resumes from its
 * cursor.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "relay/rcore.h"
#include "store/rstore.h"
#include "tmpdir.h"
#include "wire/frame.h"

#define WALL 1700000000000ull

typedef struct relay {
  tern__relay_store *store;
  tern__rcore *rc;
} relay;

typedef struct seen {
  int acks, delivers, receipts;
  uint64_t ack_seq, deliver_seq[8], receipt_cmid;
} seen;

static char dir[256], path[300];

static void relay_open(relay *r) {
  char err[200];
  tern__rstore_config sc = {.path = path, .synchronous = 1};
  cr_assert_eq(tern__relay_sqlite_open(&r->store, &sc, NULL, NULL, err, sizeof err), 0, "%s", err);
  tern__rcore_config cfg;
  tern__rcore_config_default(&cfg);
  cr_assert_eq(tern__rcore_new(&r->rc, r->store, &cfg), 0);
}

static void relay_close(relay *r) {
  tern__rcore_free(r->rc);
  r->store->ops->close(r->store);
}

static void setup(void) {
  cr_assert_eq(tern__test_mkdtemp(dir, sizeof dir), 0);
  snprintf(path, sizeof path, "%s/relay.db", dir);
}

static void teardown(void) { tern__test_rmtree(dir); }

static void input(relay *r, uint64_t conn, const uint8_t *buf, size_t len, uint64_t now) {
  cr_assert_eq(tern__rcore_input(r->rc, conn, buf, len, now, WALL + now), 0);
}

static void send_msg(relay *r, uint64_t conn, uint64_t cmid, const char *to, uint64_t now) {
  uint8_t buf[256];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_msg m = {.cmid = cmid, .peer = (const uint8_t *)to, .peer_len = strlen(to),
                    .body = (const uint8_t *)"hello", .body_len = 5};
  tern__fr_msg_write(&w, TERN__FR_MSG, &m);
  input(r, conn, buf, w.len, now);
}

static void send_seqlist(relay *r, uint8_t type, uint64_t conn, uint64_t last, uint64_t now) {
  uint8_t buf[64];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_seqlist l = {.last = last};
  tern__fr_seqlist_write(&w, type, &l);
  input(r, conn, buf, w.len, now);
}

/* Commits the relay's round and collects what it released for `conn`. */
static void commit_take(relay *r, uint64_t conn, uint64_t now, seen *s) {
  memset(s, 0, sizeof *s);
  cr_assert_eq(tern__rcore_commit(r->rc, now), 0);
  tern__rcore_out out;
  while (tern__rcore_next(r->rc, &out) == 1) {
    if (out.conn != conn) continue;
    tern__rbuf rb, body;
    tern__rbuf_init(&rb, out.data, out.len);
    uint8_t type;
    while (tern__frame_next(&rb, &type, &body) == 1) {
      if (type == TERN__FR_SERVER_ACK) {
        tern__fr_sack a;
        cr_assert_eq(tern__fr_sack_read(&body, &a), 0);
        s->acks++, s->ack_seq = a.seq;
      } else if (type == TERN__FR_DELIVER) {
        tern__fr_msg m;
        cr_assert_eq(tern__fr_msg_read(&body, TERN__FR_DELIVER, &m), 0);
        if (s->delivers < 8) s->deliver_seq[s->delivers] = m.seq;
        s->delivers++;
      } else if (type == TERN__FR_RECEIPT) {
        cr_assert_eq(tern__fr_u64_read(&body, &s->receipt_cmid), 0);
        s->receipts++;
      }
    }
  }
}

Test(shared_store, two_relays_route_through_the_store_when_woken, .init = setup, .fini = teardown) {
  relay a, b;
  relay_open(&a);
  relay_open(&b);
  uint8_t alice[32], bob[32];
  memset(alice, 0xa1, 32);
  memset(bob, 0xb0, 32);
  seen s;

  /* alice on relay A, bob on relay B, both synced. */
  cr_assert_eq(tern__rcore_open(a.rc, 1, "alice", alice, 0), 0);
  send_seqlist(&a, TERN__FR_SYNC, 1, 0, 0);
  commit_take(&a, 1, 0, &s);
  cr_assert_eq(tern__rcore_open(b.rc, 7, "bob", bob, 0), 0);
  send_seqlist(&b, TERN__FR_SYNC, 7, 0, 0);
  commit_take(&b, 7, 0, &s);

  /* alice -> bob through A: SENT from A; B knows nothing until woken. */
  send_msg(&a, 1, 1, "bob", 10);
  commit_take(&a, 1, 10, &s);
  cr_assert_eq(s.acks, 1);
  cr_assert_eq(s.ack_seq, 1);
  tern__rcore_tick(b.rc, 20, WALL + 20);
  commit_take(&b, 7, 20, &s);
  cr_assert_eq(s.delivers, 0, "relay B stored nothing for bob and was not told");
  cr_assert_eq(tern__rcore_wake_user(b.rc, "bob", 20), 1);
  commit_take(&b, 7, 20, &s);
  cr_assert_eq(s.delivers, 1, "the wake sends what the store holds for bob");
  cr_assert_eq(s.deliver_seq[0], 1);
  cr_assert_eq(tern__rcore_wake_user(b.rc, "carol", 20), 0, "a wake for nobody here wakes nobody");

  /* bob acks on B: the receipt is stored for alice's device, and reaches
   * her session on A when A is woken for that device. */
  send_seqlist(&b, TERN__FR_DELIVERY_ACK, 7, 1, 30);
  commit_take(&b, 7, 30, &s);
  commit_take(&a, 1, 30, &s);
  cr_assert_eq(s.receipts, 0);
  cr_assert_eq(tern__rcore_wake_device(a.rc, alice, 30), 1);
  commit_take(&a, 1, 30, &s);
  cr_assert_eq(s.receipts, 1, "the receipt crosses by a wake for the device");
  cr_assert_eq(s.receipt_cmid, 1);

  /* alice's SENT was lost; she reconnects to B and sends cmid 1 again:
   * one dedup for both relays, so the same seq and nothing stored twice. */
  tern__rcore_close(a.rc, 1);
  cr_assert_eq(tern__rcore_open(b.rc, 8, "alice", alice, 40), 0);
  send_seqlist(&b, TERN__FR_SYNC, 8, 0, 40);
  send_msg(&b, 8, 1, "bob", 40);
  commit_take(&b, 8, 40, &s);
  cr_assert_eq(s.acks, 1);
  cr_assert_eq(s.ack_seq, 1, "the resend through the other relay gets the first seq");
  uint64_t n = 99;
  cr_assert_eq(b.store->ops->count(b.store, &n), 0);
  cr_assert_eq(n, 0, "stored once and, delivered, deleted");

  /* alice sends 2 and 3 through B; bob moves from B to A before taking
   * them and resumes on A after seq 1, his cursor. */
  send_msg(&b, 8, 2, "bob", 50);
  commit_take(&b, 8, 50, &s);
  tern__rcore_close(b.rc, 7);
  send_msg(&b, 8, 3, "bob", 51);
  commit_take(&b, 8, 51, &s);
  cr_assert_eq(s.acks, 1);
  cr_assert_eq(s.ack_seq, 3);
  cr_assert_eq(tern__rcore_open(a.rc, 9, "bob", bob, 60), 0);
  send_seqlist(&a, TERN__FR_SYNC, 9, 1, 60);
  commit_take(&a, 9, 60, &s);
  cr_assert_eq(s.delivers, 2, "bob gets on A what B stored after his cursor");
  cr_assert_eq(s.deliver_seq[0], 2);
  cr_assert_eq(s.deliver_seq[1], 3);

  relay_close(&a);
  relay_close(&b);
}
