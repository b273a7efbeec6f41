/* The relay's messaging core: store, ack, deliver, receipt, expire. */
#include "relay/rcore.h"

#include <sodium.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/u64map.h"
#include "relay/devidx.h"
#include "wire/copies.h"
#include "wire/errcode.h"
#include "wire/frame.h"
#include "wire/outq.h"
#include "wire/channels.h"

/* The store's notice kinds travel as NOTICE_ACK kinds. */
_Static_assert((int)TERN__NOTICE_RECEIPT == (int)TERN__KIND_RECEIPT, "notice kinds");
_Static_assert((int)TERN__NOTICE_FAILED == (int)TERN__KIND_FAILED, "notice kinds");
_Static_assert(TERN__RS_CARBON == TERN__MSGF_CARBON, "the store's carbon flag is DELIVER's");

/* Room for a DELIVER frame with the largest body. */
#define FRAME_BUF (TERN_MESSAGE_MAX + 256)

/* What becomes of a held output if its round fails. */
typedef enum out_kind {
  OUT_DROP = 0, /* DELIVER, RECEIPT, FLOOR...: dropped, sent again later */
  OUT_ACK,      /* SERVER_ACK of `cmid`: replaced by BUSY (not stored now) */
  OUT_KEEP,     /* FAILED refusals, BUSY: true whatever the store did */
} out_kind;

/* A copy of a DELIVER, waiting for its time. */
typedef struct copy_item {
  struct copy_item *next;
  uint64_t seq, due_ms;
  uint64_t gap_ms;   /* d (copies.h: copy k leaves tern__copy_at(d, k) after) */
  uint32_t k;        /* this copy's number, from 1 */
  uint32_t left;     /* copies still to send, this one included */
  size_t len;
  uint8_t data[];
} copy_item;

/* Copies pending per session, at most (older ones are simply not copied). */
#define COPIES_MAX 2048

typedef struct conn {
  struct conn *next, **pprev; /* rc->conns */
  /* In rc->busy while the tick may have something to do for it (acks to
   * take in, copies, a repump, the budget, resends, notices): the tick and
   * the timeout walk only those, not every idle session. */
  struct conn *bnext, *bprev;
  int busy;
  /* In rc->rl while its cursor or registration has changed since the
   * last commit: the commit walks only those. */
  int in_round;
  tern__devidx_node bydev;  /* a session's (not a group stream's) entry in rc->bydev */
  tern__devidx_node byuser; /* its entry in rc->byuser, under ukey */
  uint8_t ukey[32];         /* BLAKE2b of user: the key it is found by */
  copy_item *copies, **copies_tail;
  size_t ncopies;
  uint64_t id;
  char user[TERN_USER_MAX + 1];
  uint8_t dev[32];
  int confirmed;          /* sent SYNC: live, may receive */
  uint64_t cursor;        /* highest seq this device acked cumulatively */
  uint64_t committed_cursor; /* cursor as of the last commit that succeeded */
  uint64_t ack_goal;      /* highest seq the device said it has: the cursor
                             follows it, in steps while the disk is full */
  int ack_more;           /* ack_goal not yet reached: a step is due */
  int registered;         /* its device row is committed (a failed round
                             may have rolled the registration back) */
  int reg_pending;        /* registered in the round that is open */
  uint64_t sent_upto;     /* highest seq sent on this connection */
  uint64_t progress_ms;   /* last ack progress or (re)send, for resends */
  int notices_out;        /* notices sent and not yet all acked */
  int repump;             /* a failed round dropped what was queued for it */
  uint64_t notices_ms;    /* when notices were last sent */
  uint32_t rtt_ms;        /* its RTT from the link; 0: unknown */
  /* The DELIVERs sent after the cursor, in seq order, with their sizes:
   * the byte window (deliver_window_bytes). Owned; grown on demand. */
  struct sent_item { uint64_t seq; uint32_t bytes; } *sent;
  size_t nsent, capsent;
  uint64_t sent_bytes;    /* sum of sent[].bytes */
  int budget_wait;        /* stopped at the relay-wide budget: pump when room */
  /* The send-rate buckets (send_rate_*), in thousandths of a message and
   * of a byte: a rate of R per second adds R per ms. May go below 0 (one
   * message larger than what is left still goes, and is paid back). */
  int64_t rate_msgs, rate_bytes;
  uint64_t rate_ms;       /* time the buckets were filled up to */
  int64_t eph_tokens;     /* ephemeral_rate's bucket, thousandths */
  uint64_t eph_ms;
  /* The device's settled floor (spec/messages.md §2, "Dedup"): it sends no
   * message with a cmid below it again; read at open, raised by SETTLED. */
  uint64_t settled;
  /* A group stream (spec/messages.md §14): the session `id`'s view of one
   * of its groups, delivered, acknowledged and resent as a session's inbox
   * is, with `user` the group's inbox ("@name"), `member` the session's
   * user, and `limit` the last seq it may get (the point its member left;
   * UINT64_MAX while a member). It sends and takes no notices: the
   * session does. */
  int group;
  char member[TERN_USER_MAX + 1];
  uint64_t limit;
} conn;

/* Presence: every user that was online since the core started, what its
 * watchers were last told, and a change that waits for presence_min_ms. */
typedef struct puser {
  char name[TERN_USER_MAX + 1];
  unsigned live;           /* confirmed sessions now */
  uint64_t since_ms;       /* online: since; offline: last seen (wall ms) */
  int told;                /* what watchers were last told: 1 online, 0 offline */
  uint64_t told_ms;        /* when (monotonic); the next change waits until
                              told_ms + presence_min_ms */
  int due;                 /* a change waits to go out */
} puser;

struct tern__rcore {
  tern__rcore_config cfg;
  tern__relay_store *store;
  conn *conns;
  conn *busy;                    /* the conns the tick visits (conn.busy) */
  conn **rl;                     /* the round's changed conns (conn.in_round) */
  size_t nrl, caprl;
  int rl_all;                    /* rl could not grow: the commit walks every conn */
  size_t ngroup_conns;           /* group streams open (closing a session looks
                                    for its streams only if there are any) */
  /* The sessions' conns (not group streams) by id and by device key: an
   * input, an output and a notice find theirs without a walk over every
   * session. */
  tern__u64map byid;
  tern__devidx bydev;
  tern__devidx byuser;           /* every conn by its user (a group stream: "@name") */
  tern__outq held;               /* waiting for the commit; kind: out_kind */
  tern__outq ready;              /* released */
  uint64_t busy_until_ms;
  uint64_t next_expire_ms;
  /* Messages one round may store, 0: any number. A failed round sets it to
   * half of what that round stored; a committed round that used half of it
   * doubles it, and 5 busy_ms without a failure lift it. A round too big
   * for what is left of a full disk would otherwise fail whole, again and
   * again. */
  uint64_t round_cap;
  uint64_t round_msgs;           /* messages stored in this round, in all the
                                    transactions it was committed in */
  uint64_t failed_ms;            /* the last store failure */
  unsigned fail_streak;          /* failures since the last commit that worked */
  /* Rounds are numbered: each commit (whole or in part) or rollback ends
   * the one open. Bit (n % 64) of round_done says whether round n ended
   * committed, for the last 64 rounds (tern__rcore_ticket). */
  uint64_t round_no;
  uint64_t round_done;
  uint64_t acks_at_ms;           /* acks left over (ack_more) are taken in from
                                    then: 50 ms after a failure, doubling with
                                    each failure in a row, up to busy_ms */
  uint8_t *buf;
  tern__rcore_stats stats;
  tern__rcore_stats round;       /* this round's stored/deduped/delivered/expired,
                                    added to stats when it commits */
  uint64_t log_ms;               /* last store failure reported */
  unsigned log_skipped;          /* failures since, not reported */
  tern__ratelim quota_log;       /* quota refusals: one line per 10 s */
  tern__ratelim rate_log;        /* rate refusals: one line per 10 s */
  tern__ratelim prev_log;        /* MSGs dropped for their prev_cmid (debug): one a second */
  tern__ratelim budget_log;      /* budget reached: one line per 10 s */
  uint64_t sent_total;           /* sum of every conn's sent_bytes */
  uint64_t link_bytes;           /* what the link still holds (set_link_bytes) */
  puser *pu;                     /* presence: users seen online (may_see set) */
  size_t npu, cappu;
  uint64_t wall_ms;              /* the wall clock as of the last input or tick */
  uint64_t now_ms;               /* ... and the monotonic one */
  /* track_stored: (to, from) of what the open round stored, and of what
   * committed rounds stored that the shell has not taken yet. */
  struct stored_note { char to[TERN_USER_MAX + 1], from[TERN_USER_MAX + 1]; } *notes;
  size_t nround, ncommitted, ntaken, capnotes; /* notes[0..ncommitted) committed,
                                                  [ncommitted..nround) the round's */
};

void tern__rcore_config_default(tern__rcore_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->retention_ms = 30ull * 24 * 3600 * 1000;
  cfg->max_message_size = 65536;
  cfg->deliver_window = 1024;
  cfg->deliver_window_bytes = 1048576;
  cfg->quota_to_msgs = cfg->quota_from_msgs = 100000;
  cfg->quota_to_bytes = cfg->quota_from_bytes = 1ull << 30;
  cfg->deliver_budget_bytes = 256ull << 20;
  cfg->send_rate_msgs = 1000;
  cfg->send_rate_bytes = 16ull << 20;
  cfg->presence_min_ms = 1000;
  cfg->ephemeral_rate = 20;
  cfg->resend_ms = 3000;
  cfg->expire_every_ms = 60000;
  cfg->busy_ms = 2000;
  cfg->copy_max_bytes = 512;
  cfg->copy_delay_ms = 30;
  cfg->copy_delay_min_ms = 5;
  cfg->copy_count = 2;
}

int tern__rcore_new(tern__rcore **out, tern__relay_store *store, const tern__rcore_config *cfg) {
  *out = NULL;
  tern__rcore *rc = calloc(1, sizeof(*rc));
  if (!rc) return TERN_ENOMEM;
  rc->buf = malloc(FRAME_BUF);
  if (!rc->buf) {
    free(rc);
    return TERN_ENOMEM;
  }
  rc->cfg = *cfg;
  tern__ratelim_init(&rc->quota_log, 1, 10000);
  tern__ratelim_init(&rc->rate_log, 1, 10000);
  tern__ratelim_init(&rc->prev_log, 1, 1000);
  tern__ratelim_init(&rc->budget_log, 1, 10000);
  /* Ten seconds of the byte rate must fit the buckets' int64. */
  if (rc->cfg.send_rate_bytes > (1ull << 40)) rc->cfg.send_rate_bytes = 1ull << 40;
  if (rc->cfg.max_message_size == 0 || rc->cfg.max_message_size > TERN_MESSAGE_MAX)
    rc->cfg.max_message_size = TERN_MESSAGE_MAX;
  if (rc->cfg.deliver_window == 0) rc->cfg.deliver_window = 1;
  if (rc->cfg.deliver_window_bytes == 0) rc->cfg.deliver_window_bytes = 1;
  rc->store = store;
  tern__u64map_init(&rc->byid);
  if (tern__devidx_init(&rc->bydev, 4096) < 0 || tern__devidx_init(&rc->byuser, 4096) < 0) {
    tern__devidx_free(&rc->bydev);
    free(rc->buf);
    free(rc);
    return TERN_ENOMEM;
  }
  tern__outq_init(&rc->held);
  tern__outq_init(&rc->ready);
  *out = rc;
  return 0;
}

static void drop_copies(conn *c) {
  while (c->copies) {
    copy_item *n = c->copies->next;
    free(c->copies);
    c->copies = n;
  }
  c->copies_tail = &c->copies;
  c->ncopies = 0;
}

void tern__rcore_free(tern__rcore *rc) {
  if (!rc) return;
  while (rc->conns) {
    conn *n = rc->conns->next;
    drop_copies(rc->conns);
    free(rc->conns->sent);
    free(rc->conns);
    rc->conns = n;
  }
  tern__outq_clear(&rc->held);
  tern__outq_clear(&rc->ready);
  tern__u64map_free(&rc->byid);
  tern__devidx_free(&rc->bydev);
  tern__devidx_free(&rc->byuser);
  free(rc->notes);
  free(rc->rl);
  free(rc->pu);
  free(rc->buf);
  free(rc);
}

/* The key a user's (or a group's) conns are indexed by in rc->byuser. */
static void user_key(const char *user, uint8_t key[32]) {
  crypto_generichash(key, 32, (const unsigned char *)user, strlen(user), NULL, 0);
}

/* Adds c to the index by user (its user is set and stays). */
static void index_user(tern__rcore *rc, conn *c) {
  user_key(c->user, c->ukey);
  tern__devidx_add(&rc->byuser, &c->byuser, c->ukey);
}

#define CONN_OF(node, field) ((conn *)((char *)(node) - offsetof(conn, field)))

static conn *find(tern__rcore *rc, uint64_t id) { return tern__u64map_get(&rc->byid, id); }

/* The list of every conn, with O(1) removal. */
static void conns_add(tern__rcore *rc, conn *c) {
  c->next = rc->conns;
  if (c->next) c->next->pprev = &c->next;
  c->pprev = &rc->conns;
  rc->conns = c;
}

static void conns_del(conn *c) {
  *c->pprev = c->next;
  if (c->next) c->next->pprev = c->pprev;
}

/* c may have something for the tick to do: it joins rc->busy. Called
 * wherever one of the fields conn_idle() reads is set. */
static void busy_mark(tern__rcore *rc, conn *c) {
  if (c->busy) return;
  c->busy = 1;
  c->bprev = NULL;
  c->bnext = rc->busy;
  if (c->bnext) c->bnext->bprev = c;
  rc->busy = c;
}

static void busy_drop(tern__rcore *rc, conn *c) {
  if (!c->busy) return;
  if (c->bprev) c->bprev->bnext = c->bnext;
  else rc->busy = c->bnext;
  if (c->bnext) c->bnext->bprev = c->bprev;
  c->busy = 0;
  c->bnext = c->bprev = NULL;
}

/* Nothing for the tick to do for c until an input or a wake sets one of
 * these again. */
static int conn_idle(const conn *c) {
  return !c->ack_more && !c->copies && !c->budget_wait && !c->repump && c->sent_upto <= c->cursor &&
         !c->notices_out;
}

/* c's cursor or registration changed in the open round: the commit makes
 * it the committed one. */
static void round_mark(tern__rcore *rc, conn *c) {
  if (c->in_round || rc->rl_all) return;
  if (rc->nrl == rc->caprl) {
    size_t cap = rc->caprl ? rc->caprl * 2 : 64;
    conn **n = realloc(rc->rl, cap * sizeof(*n));
    if (!n) {
      rc->rl_all = 1; /* correct, only slower */
      return;
    }
    rc->rl = n;
    rc->caprl = cap;
  }
  c->in_round = 1;
  rc->rl[rc->nrl++] = c;
}

static void round_clear(tern__rcore *rc) {
  for (size_t i = 0; i < rc->nrl; i++)
    if (rc->rl[i]) rc->rl[i]->in_round = 0;
  rc->nrl = 0;
  rc->rl_all = 0;
}

/* What the commit of a round makes of a conn it changed. */
static void conn_committed(conn *c) {
  c->committed_cursor = c->cursor;
  if (c->reg_pending) c->registered = 1;
  c->reg_pending = 0;
}

static conn *find_group(tern__rcore *rc, uint64_t id, const char *group) {
  for (conn *c = rc->conns; c; c = c->next)
    if (c->id == id && c->group && !strcmp(c->user, group)) return c;
  return NULL;
}

/* Queues frames (rc->buf[0..len)) for a connection; held until commit
 * unless `now`. Out of memory drops the output: every output is resent by
 * a timer or on reconnect, so a drop is a delay, never a loss. */
static void emit_kind(tern__rcore *rc, uint64_t id, uint8_t channel, int reliable,
                      const uint8_t *data, size_t len, int now, out_kind kind, uint64_t cmid) {
  tern__outq_item *it = tern__outq_push(now ? &rc->ready : &rc->held, id, channel, reliable, data, len);
  if (!it) return;
  it->kind = kind;
  it->cmid = cmid;
}

static void emit(tern__rcore *rc, uint64_t id, uint8_t channel, int reliable, const uint8_t *data,
                 size_t len, int now) {
  emit_kind(rc, id, channel, reliable, data, len, now, OUT_DROP, 0);
}

/* BUSY for `cmid`, or FAILED (a refusal) with `err`: held until the
 * commit like every output, but sent even if the round fails, since
 * neither says anything the store could take back. */
static void emit_answer(tern__rcore *rc, uint64_t id, uint8_t type, uint8_t channel, uint64_t cmid,
                        int err, int now) {
  uint8_t tmp[32];
  tern__wbuf w;
  tern__wbuf_init(&w, tmp, sizeof(tmp));
  tern__fr_failed f = {.cmid = cmid, .error = tern__wire_err(err)};
  tern__fr_failed_write(&w, type, &f);
  emit_kind(rc, id, channel, 1, w.p, w.len, now, OUT_KEEP, 0);
  if (type == TERN__FR_FAILED) rc->stats.refused++;
  else rc->stats.busy++;
  if (err == TERN_EQUOTA) rc->stats.over_quota++;
  if (err == TERN_ERATE) rc->stats.over_rate++;
}

static uint8_t conv_channel(const char *a, const char *b) {
  return tern__chat_channel((const uint8_t *)a, strlen(a), (const uint8_t *)b, strlen(b));
}

static int commit_txn(tern__rcore *rc, uint64_t now_ms, int whole);
static void start_group(tern__rcore *rc, conn *g, uint64_t now_ms);

/* How full the store is for a message of `body_len` bytes (0: an ack),
 * after committing the round so far if the store asks for that first (a
 * round may be committed in parts; the part's outputs are released).
 * TERN__RS_ROOM or TERN__RS_FULL, or -1 if that commit failed
 * (store_failed() has run). */
static int make_room(tern__rcore *rc, size_t body_len, uint64_t now_ms) {
  int r = rc->store->ops->room(rc->store, body_len);
  if (r != TERN__RS_COMMIT_FIRST) return r;
  if (commit_txn(rc, now_ms, 0) < 0) return -1;
  r = rc->store->ops->room(rc->store, body_len);
  return r == TERN__RS_COMMIT_FIRST ? TERN__RS_ROOM : r; /* an empty round always fits */
}

/* A store call or the commit failed: undo the round, tell the senders of
 * its messages to come back later, and refuse new messages for a while. */
static void store_failed(tern__rcore *rc, uint64_t now_ms) {
  rc->stats.store_errors++;
  char why[256];
  snprintf(why, sizeof(why), "%s", rc->store->ops->errmsg(rc->store));
  rc->store->ops->rollback(rc->store, now_ms);
  rc->round_cap = rc->round.stored > 1 ? rc->round.stored / 2 : 1;
  rc->round_msgs -= rc->round.stored; /* not stored after all */
  rc->failed_ms = now_ms;
  uint64_t wait = 50ull << (rc->fail_streak < 6 ? rc->fail_streak : 6);
  rc->acks_at_ms = now_ms + (wait < rc->cfg.busy_ms ? wait : rc->cfg.busy_ms);
  rc->fail_streak++;
  rc->round_done &= ~(1ull << (rc->round_no % 64));
  rc->round_no++;
  memset(&rc->round, 0, sizeof(rc->round));
  rc->nround = rc->ncommitted; /* what the round stored is not stored */
  /* Each message the round stored (or answered from a dedup record the
   * round may itself have written) is not stored now: BUSY, so its sender
   * keeps it and retries after its busy interval. Refusals stand. The rest
   * may name seqs or notices the rollback took back: dropped. */
  unsigned busy = 0;
  tern__outq_item *it;
  while ((it = tern__outq_take(&rc->held))) {
    if (it->kind == OUT_ACK) {
      emit_answer(rc, it->conn, TERN__FR_BUSY, it->channel, it->cmid, TERN_ESTORE, 1);
      busy++;
      free(it);
    } else if (it->kind == OUT_KEEP) {
      tern__outq_append(&rc->ready, it);
    } else {
      free(it);
    }
  }
  /* The acks, SYNCs and registrations of the round are gone from the store
   * too: go back to what is committed, take the acks in again from what
   * the devices said, and resend what the round dropped. */
  for (conn *c = rc->conns; c; c = c->next) {
    c->reg_pending = 0;
    c->cursor = c->committed_cursor;
    /* The device still has what it said it has: its ack is taken in again
     * by the next round, without asking it. */
    c->ack_more = c->ack_goal > c->cursor;
    c->sent_upto = c->ack_goal > c->cursor ? c->ack_goal : c->cursor;
    if (c->confirmed) c->repump = 1;
    drop_copies(c); /* they may carry seqs the rollback took back */
    if (!conn_idle(c)) busy_mark(rc, c);
  }
  round_clear(rc); /* every conn is back at what is committed */
  rc->busy_until_ms = now_ms + rc->cfg.busy_ms;
  if (!rc->log_ms || now_ms >= rc->log_ms + rc->cfg.busy_ms) {
    char more[64] = "";
    if (rc->log_skipped)
      snprintf(more, sizeof(more), " (and %u failure(s) not reported since the last)", rc->log_skipped);
    tern__logf(rc->cfg.log, rc->cfg.log_ctx, 0,
          "message store failed: %s; the round is rolled back, %u message(s) of it answered BUSY, "
          "new messages refused for %u ms%s",
          why, busy, rc->cfg.busy_ms, more);
    rc->log_ms = now_ms;
    rc->log_skipped = 0;
  } else {
    rc->log_skipped++;
  }
}

/* ---- presence (spec/messages.md §9.1) ------------------------------------ */

static puser *pu_find(tern__rcore *rc, const char *user) {
  for (size_t i = 0; i < rc->npu; i++)
    if (!strcmp(rc->pu[i].name, user)) return &rc->pu[i];
  return NULL;
}

/* Out of memory: NULL, and this user's presence is not told (a hint, like
 * an ephemeral message). */
static puser *pu_get(tern__rcore *rc, const char *user) {
  puser *u = pu_find(rc, user);
  if (u) return u;
  if (rc->npu == rc->cappu) {
    size_t cap = rc->cappu ? rc->cappu * 2 : 16;
    puser *n = realloc(rc->pu, cap * sizeof(*n));
    if (!n) return NULL;
    rc->pu = n;
    rc->cappu = cap;
  }
  u = &rc->pu[rc->npu++];
  memset(u, 0, sizeof(*u));
  snprintf(u->name, sizeof(u->name), "%s", user);
  return u;
}

static void emit_presence(tern__rcore *rc, uint64_t id, const puser *u) {
  uint8_t tmp[TERN_USER_MAX + 32];
  tern__wbuf w;
  tern__wbuf_init(&w, tmp, sizeof(tmp));
  tern__fr_presence f = {.user = (const uint8_t *)u->name, .user_len = strlen(u->name),
                         .online = u->live > 0, .since_ms = u->since_ms};
  tern__fr_presence_write(&w, &f);
  emit(rc, id, TERN__CH_SIGNAL, 0, w.p, w.len, 1); /* not the store's: now */
  rc->stats.presence_sent++;
}

/* Tells every live session that may see u what u is now. */
static void presence_broadcast(tern__rcore *rc, puser *u, uint64_t now_ms) {
  u->told = u->live > 0;
  u->told_ms = now_ms;
  u->due = 0;
  for (conn *w = rc->conns; w; w = w->next)
    if (w->confirmed && !w->group && strcmp(w->user, u->name) &&
        rc->cfg.may_see(rc->cfg.may_see_ctx, w->user, u->name))
      emit_presence(rc, w->id, u);
}

/* u came online or went offline: told now, or once presence_min_ms has
 * passed since the last change went out (a user whose sessions flap is
 * told at that pace, with the state it has then). */
static void presence_changed(tern__rcore *rc, puser *u, uint64_t now_ms) {
  int online = u->live > 0;
  if (online == u->told) {
    u->due = 0; /* back to what they were told: nothing to say */
    return;
  }
  if (u->told_ms && now_ms < u->told_ms + rc->cfg.presence_min_ms) {
    u->due = 1;
    return;
  }
  presence_broadcast(rc, u, now_ms);
}

/* Session c is live (its first SYNC): it learns who of those it may see
 * is online (and when the offline ones were last seen), and its user's
 * watchers learn it is online if this is its first session. */
static void presence_join(tern__rcore *rc, conn *c, uint64_t now_ms) {
  if (!rc->cfg.may_see) return;
  for (size_t i = 0; i < rc->npu; i++) {
    const puser *u = &rc->pu[i];
    if (strcmp(u->name, c->user) && rc->cfg.may_see(rc->cfg.may_see_ctx, c->user, u->name))
      emit_presence(rc, c->id, u);
  }
  puser *u = pu_get(rc, c->user);
  if (!u) return;
  if (u->live++ == 0) {
    u->since_ms = rc->wall_ms;
    presence_changed(rc, u, now_ms);
  }
}

static void presence_leave(tern__rcore *rc, const conn *c) {
  if (!rc->cfg.may_see || !c->confirmed || c->group) return;
  puser *u = pu_find(rc, c->user);
  if (!u || !u->live) return;
  if (--u->live == 0) {
    u->since_ms = rc->wall_ms; /* last seen */
    presence_changed(rc, u, rc->now_ms);
  }
}

/* Ephemeral messages (typing) per session: ephemeral_rate a second, in
 * bursts of two seconds' worth. 1 if this one may go. */
static int eph_take(tern__rcore *rc, conn *c, uint64_t now_ms) {
  uint32_t r = rc->cfg.ephemeral_rate;
  if (!r) return 1;
  if (now_ms > c->eph_ms) {
    uint64_t dt = now_ms - c->eph_ms;
    c->eph_tokens += (int64_t)(dt > 2000 ? 2000 : dt) * r;
    if (c->eph_tokens > 2000ll * r) c->eph_tokens = 2000ll * r;
    c->eph_ms = now_ms;
  }
  if (c->eph_tokens < 1000) return 0;
  c->eph_tokens -= 1000;
  return 1;
}

/* A new conn (a session's, or one of its group streams) whose registration
 * in the store is in the open round and whose cursor the store gave:
 * everything else it tracks starts from there. */
static void conn_start(tern__rcore *rc, conn *c, uint64_t now_ms) {
  c->committed_cursor = c->cursor;
  c->ack_goal = c->cursor;
  c->reg_pending = 1;
  round_mark(rc, c);
  c->sent_upto = c->cursor;
  c->progress_ms = now_ms;
  c->copies_tail = &c->copies;
}

int tern__rcore_open(tern__rcore *rc, uint64_t id, const char *user, const uint8_t dev[32],
                     uint64_t now_ms) {
  conn *c = calloc(1, sizeof(*c));
  if (!c) return TERN_ENOMEM;
  c->id = id;
  snprintf(c->user, sizeof(c->user), "%s", user);
  memcpy(c->dev, dev, 32);
  int rc2 = rc->store->ops->device(rc->store, user, dev, &c->cursor);
  if (rc2 < 0) {
    store_failed(rc, now_ms);
    free(c);
    return rc2;
  }
  if ((rc2 = rc->store->ops->settled_get(rc->store, dev, &c->settled)) < 0) {
    store_failed(rc, now_ms);
    free(c);
    return rc2;
  }
  c->limit = UINT64_MAX;
  c->rate_msgs = 10000ll * rc->cfg.send_rate_msgs; /* full: 10 s of the rate */
  c->rate_bytes = 10000ll * (int64_t)rc->cfg.send_rate_bytes;
  c->rate_ms = now_ms;
  c->eph_tokens = 2000ll * rc->cfg.ephemeral_rate; /* full: 2 s of the rate */
  c->eph_ms = now_ms;
  /* Ids are the shell's and unique; were one reused, the newest wins, as
   * it would in a walk from the list's head. */
  tern__u64map_del(&rc->byid, id);
  if (tern__u64map_put(&rc->byid, id, c) < 0) {
    free(c);
    return TERN_ENOMEM;
  }
  tern__devidx_add(&rc->bydev, &c->bydev, c->dev);
  index_user(rc, c);
  conns_add(rc, c);
  conn_start(rc, c, now_ms);
  return 0;
}

/* Unlinks c and frees it (a session's conn, or one of its group streams). */
static void drop_conn(tern__rcore *rc, conn *c) {
  conns_del(c);
  busy_drop(rc, c);
  if (c->in_round)
    for (size_t i = 0; i < rc->nrl; i++)
      if (rc->rl[i] == c) rc->rl[i] = NULL;
  if (c->group) rc->ngroup_conns--;
  if (!c->group) {
    if (find(rc, c->id) == c) tern__u64map_del(&rc->byid, c->id);
    tern__devidx_del(&rc->bydev, &c->bydev);
  }
  tern__devidx_del(&rc->byuser, &c->byuser);
  presence_leave(rc, c); /* after unlinking: it is told nothing */
  rc->sent_total -= c->sent_bytes;
  drop_copies(c);
  free(c->sent);
  free(c);
}

void tern__rcore_close(tern__rcore *rc, uint64_t id) {
  /* The session's conn and its group streams (a walk only if any group
   * stream is open). */
  if (!rc->ngroup_conns) {
    conn *c = find(rc, id);
    if (c) drop_conn(rc, c);
    return;
  }
  for (conn *c = rc->conns, *next; c; c = next) {
    next = c->next;
    if (c->id == id) drop_conn(rc, c);
  }
}

void tern__rcore_set_rtt(tern__rcore *rc, uint64_t id, uint32_t rtt_ms) {
  conn *c = find(rc, id);
  if (c) c->rtt_ms = rtt_ms;
}

/* ---- delivering ---------------------------------------------------------- */

typedef struct pump_ctx {
  tern__rcore *rc;
  conn *c;
  uint64_t now_ms;
  int sent;               /* DELIVERs this pump sent (or skipped as unencodable) */
} pump_ctx;

/* Puts `it` in c's queue, which is kept in due order. Almost always that
 * is the end; when the RTT has just dropped, or for a later copy, walk to
 * its place (at most COPIES_MAX). */
static void queue_copy(conn *c, copy_item *it) {
  copy_item **pp = &c->copies;
  if (c->copies) {
    copy_item *last = (copy_item *)((char *)c->copies_tail - offsetof(copy_item, next));
    if (last->due_ms <= it->due_ms) pp = c->copies_tail;
  }
  while (*pp && (*pp)->due_ms <= it->due_ms) pp = &(*pp)->next;
  it->next = *pp;
  *pp = it;
  if (!it->next) c->copies_tail = &it->next;
  c->ncopies++;
}

static void schedule_copy(tern__rcore *rc, conn *c, uint64_t seq, const uint8_t *data, size_t len,
                          uint64_t now_ms) {
  if (c->ncopies >= COPIES_MAX) return;
  /* The same schedule as the client's (copies.h). */
  uint32_t d = tern__copy_delay(c->rtt_ms, rc->cfg.copy_delay_min_ms, rc->cfg.copy_delay_ms);
  uint32_t n = tern__copies_before(c->rtt_ms, d, rc->cfg.copy_count);
  if (!n) return;
  copy_item *it = malloc(sizeof(*it) + len);
  if (!it) return; /* a copy is an optimisation; the original is reliable */
  it->seq = seq;
  it->gap_ms = d;
  it->k = 1;
  it->due_ms = now_ms + tern__copy_at(d, 1);
  it->left = n;
  it->len = len;
  memcpy(it->data, data, len);
  queue_copy(c, it);
  busy_mark(rc, c);
}

/* Sends the copies that are due and still unacknowledged, and queues the
 * next copy of each if there is one. */
static void send_copies(tern__rcore *rc, conn *c, uint64_t now_ms) {
  while (c->copies && c->copies->due_ms <= now_ms) {
    copy_item *it = c->copies;
    c->copies = it->next;
    if (!c->copies) c->copies_tail = &c->copies;
    c->ncopies--;
    if (it->seq <= c->cursor) {
      free(it);
      continue;
    }
    emit(rc, c->id, TERN__CH_COPY, 0, it->data, it->len, 0);
    if (--it->left) {
      uint32_t d = (uint32_t)it->gap_ms;
      it->due_ms += tern__copy_at(d, it->k + 1) - tern__copy_at(d, it->k);
      it->k++;
      queue_copy(c, it);
    } else {
      free(it);
    }
  }
}

/* Forgets the sizes of what is acknowledged (seq <= cursor) or will be
 * sent again (seq > sent_upto, after a resend from the cursor or a SYNC). */
static void sent_trim(tern__rcore *rc, conn *c) {
  size_t lo = 0, hi = c->nsent;
  uint64_t before = c->sent_bytes;
  while (lo < hi && c->sent[lo].seq <= c->cursor) c->sent_bytes -= c->sent[lo++].bytes;
  while (hi > lo && c->sent[hi - 1].seq > c->sent_upto) c->sent_bytes -= c->sent[--hi].bytes;
  rc->sent_total -= before - c->sent_bytes;
  if (lo) memmove(c->sent, c->sent + lo, (hi - lo) * sizeof(*c->sent));
  c->nsent = hi - lo;
  if (c->nsent == 0 && c->capsent > 64) { /* a burst is over: give its memory back */
    free(c->sent);
    c->sent = NULL;
    c->capsent = 0;
  }
}

static int sent_add(tern__rcore *rc, conn *c, uint64_t seq, size_t bytes) {
  if (c->nsent == c->capsent) {
    size_t cap = c->capsent ? c->capsent * 2 : 16;
    struct sent_item *n = realloc(c->sent, cap * sizeof(*n));
    if (!n) return TERN_ENOMEM;
    c->sent = n;
    c->capsent = cap;
  }
  c->sent[c->nsent].seq = seq;
  c->sent[c->nsent].bytes = (uint32_t)bytes;
  c->nsent++;
  c->sent_bytes += bytes;
  rc->sent_total += bytes;
  return 0;
}

/* 1 if `bytes` more DELIVER bytes for c would pass the relay-wide budget.
 * A session with nothing in flight may always have one, so that sessions
 * that do not acknowledge cannot starve the others. */
static int over_budget(const tern__rcore *rc, const conn *c, size_t bytes) {
  uint64_t b = rc->cfg.deliver_budget_bytes;
  return b && c->nsent && (rc->sent_total + bytes > b || rc->link_bytes >= b);
}

/* Room under the budget for the sessions waiting for it. */
static int budget_room(const tern__rcore *rc) {
  return rc->sent_total < rc->cfg.deliver_budget_bytes && rc->link_bytes < rc->cfg.deliver_budget_bytes;
}

void tern__rcore_set_link_bytes(tern__rcore *rc, uint64_t bytes) { rc->link_bytes = bytes; }

/* c stopped at the budget: it is pumped again when acks free room. Said
 * at most every 10 s. */
static void budget_stall(tern__rcore *rc, conn *c, uint64_t now_ms) {
  if (c->budget_wait) return;
  c->budget_wait = 1;
  busy_mark(rc, c);
  rc->stats.budget_stalls++;
  (void)tern__logf_limited(rc->cfg.log, rc->cfg.log_ctx, &rc->budget_log, now_ms, 1,
                           "delivery budget reached: %llu bytes of DELIVERs unacknowledged "
                           "(budget %llu); deliveries to %s wait in the store until acks free room",
                           (unsigned long long)rc->sent_total,
                           (unsigned long long)rc->cfg.deliver_budget_bytes, c->user);
}

static int pump_one(void *ctx, const tern__rmsg *m) {
  pump_ctx *p = ctx;
  if (m->seq > p->c->limit) return 1; /* a member that left gets nothing after its point */
  tern__wbuf w;
  tern__wbuf_init(&w, p->rc->buf, FRAME_BUF);
  tern__fr_msg d = {.seq = m->seq, .prev_seq = m->prev_seq, .ts = m->ts,
                    .peer = (const uint8_t *)m->from, .peer_len = strlen(m->from),
                    .flags = m->flags, .body = m->body, .body_len = m->body_len};
  const char *conv = m->from;
  if (p->c->group) {
    /* A group message: the group names the conversation; its sender's
     * device gets only its place (spec/messages.md §14). */
    conv = p->c->user;
    d.flags |= TERN__MSGF_GROUP;
    d.to = (const uint8_t *)p->c->user;
    d.to_len = strlen(p->c->user);
    if (memcmp(m->sender_dev, p->c->dev, 32) == 0) {
      d.flags |= TERN__MSGF_OWN;
      d.body_len = 0;
    }
  } else if (m->flags & TERN__MSGF_CARBON) {
    /* A carbon (spec/messages.md §13): its recipient names the
     * conversation; the device that sent it gets only its place. */
    conv = m->peer;
    d.to = (const uint8_t *)m->peer;
    d.to_len = strlen(m->peer);
    if (memcmp(m->sender_dev, p->c->dev, 32) == 0) {
      d.flags |= TERN__MSGF_OWN;
      d.body_len = 0;
    }
  }
  tern__fr_msg_write(&w, TERN__FR_DELIVER, &d);
  if (!w.overflow) {
    /* The byte window: stop before it overflows, but let one DELIVER out
     * whatever its size when nothing is in flight. */
    if (p->c->nsent && p->c->sent_bytes + w.len > p->rc->cfg.deliver_window_bytes) return 1;
    if (over_budget(p->rc, p->c, w.len)) {
      budget_stall(p->rc, p->c, p->now_ms);
      return 1;
    }
    if (sent_add(p->rc, p->c, m->seq, w.len) != 0) return 1; /* no memory: the resend timer retries */
    emit(p->rc, p->c->id, conv_channel(conv, p->c->user), 1, w.p, w.len, 0);
    if (d.body_len <= p->rc->cfg.copy_max_bytes && p->rc->cfg.copy_max_bytes)
      schedule_copy(p->rc, p->c, m->seq, w.p, w.len, p->now_ms);
  }
  p->c->sent_upto = m->seq;
  busy_mark(p->rc, p->c);
  p->sent++;
  return 0;
}

/* Sends what the connection's window allows after sent_upto. */
static void pump(tern__rcore *rc, conn *c, uint64_t now_ms) {
  if (!c->confirmed) return;
  sent_trim(rc, c);
  uint64_t inflight = c->sent_upto > c->cursor ? c->sent_upto - c->cursor : 0;
  if (inflight >= rc->cfg.deliver_window) return;
  if (c->nsent && c->sent_bytes >= rc->cfg.deliver_window_bytes) return;
  if (over_budget(rc, c, 1)) {
    budget_stall(rc, c, now_ms);
    return;
  }
  c->budget_wait = 0;
  pump_ctx p = {rc, c, now_ms, 0};
  int n = rc->store->ops->due(rc->store, c->user, c->sent_upto, rc->cfg.deliver_window - inflight,
                             pump_one, &p);
  if (n < 0) {
    store_failed(rc, now_ms);
    return;
  }
  if (p.sent > 0) c->progress_ms = now_ms;
}

/* ---- notices -------------------------------------------------------------- */

static void emit_notice(tern__rcore *rc, conn *c, int kind, uint64_t cmid, int64_t code) {
  tern__wbuf w;
  uint8_t tmp[64];
  tern__wbuf_init(&w, tmp, sizeof(tmp));
  if (kind == TERN__NOTICE_RECEIPT) {
    tern__fr_u64_write(&w, TERN__FR_RECEIPT, cmid);
  } else if (kind == TERN__NOTICE_GROUP_RECEIPT) {
    tern__fr_greceipt g = {.cmid = cmid, .got = (uint64_t)code >> 32, .of = (uint32_t)code};
    tern__fr_greceipt_write(&w, &g);
  } else {
    tern__fr_failed f = {.cmid = cmid, .error = tern__wire_err(code)};
    tern__fr_failed_write(&w, TERN__FR_FAILED, &f);
  }
  emit(rc, c->id, TERN__CH_CONTROL, 1, w.p, w.len, 0);
  c->notices_out = 1;
  busy_mark(rc, c);
}

typedef struct notice_ctx {
  tern__rcore *rc;
  conn *c;
  int count;
} notice_ctx;

static int notice_one(void *ctx, int kind, uint64_t cmid, int64_t code) {
  notice_ctx *n = ctx;
  emit_notice(n->rc, n->c, kind, cmid, code);
  n->count++;
  return 0;
}

static void send_notices(tern__rcore *rc, conn *c, uint64_t now_ms) {
  if (c->group) return; /* the session's own conn sends them */
  notice_ctx n = {rc, c, 0};
  if (rc->store->ops->notice_list(rc->store, c->dev, notice_one, &n) < 0) {
    store_failed(rc, now_ms);
    return;
  }
  c->notices_out = n.count > 0;
  c->notices_ms = now_ms;
}

/* Stores a notice for a sender device and sends it to its live sessions. */
static int notify(tern__rcore *rc, const uint8_t dev[32], int kind, uint64_t cmid, int64_t code) {
  int r = rc->store->ops->notice_put(rc->store, dev, kind, cmid, code);
  if (r < 0) return r;
  for (tern__devidx_node *n = tern__devidx_first(&rc->bydev, dev); n; n = tern__devidx_next(n)) {
    conn *c = CONN_OF(n, bydev);
    if (c->confirmed) emit_notice(rc, c, kind, cmid, code);
  }
  return 0;
}

typedef struct ack_ctx {
  tern__rcore *rc;
  int err;
} ack_ctx;

static void on_delivered(void *ctx, const uint8_t sender_dev[32], uint64_t cmid, uint64_t seq) {
  (void)seq;
  ack_ctx *a = ctx;
  a->rc->round.delivered++;
  int r = notify(a->rc, sender_dev, TERN__NOTICE_RECEIPT, cmid, 0);
  if (r < 0) a->err = r;
}

static void on_greceipt(void *ctx, const uint8_t sender_dev[32], uint64_t cmid, uint32_t got,
                        uint32_t of) {
  ack_ctx *a = ctx;
  a->rc->round.delivered++;
  int r = notify(a->rc, sender_dev, TERN__NOTICE_GROUP_RECEIPT, cmid, TERN__GRECEIPT_CODE(got, of));
  if (r < 0) a->err = r;
}

static void on_expired(void *ctx, const uint8_t sender_dev[32], uint64_t cmid) {
  ack_ctx *a = ctx;
  a->rc->round.expired++;
  int r = notify(a->rc, sender_dev, TERN__NOTICE_FAILED, cmid, TERN_EEXPIRED);
  if (r < 0) a->err = r;
}

/* ---- input ---------------------------------------------------------------- */

/* A message refused for a quota: said at most every 10 s, with how many
 * were not said since (a sender over quota retries nothing, but may keep
 * sending new ones). */
static void log_quota(tern__rcore *rc, const conn *c, const char *to, int recipient, uint64_t now_ms) {
  (void)tern__logf_limited(
      rc->cfg.log, rc->cfg.log_ctx, &rc->quota_log, now_ms, 1,
      "message from %s to %s refused (TERN_EQUOTA): %s", c->user, to,
      recipient ? "the recipient's inbox holds its quota" : "the relay holds the sender's quota");
}

/* The device's send rate: 1 if a message of `body_len` bytes may go now
 * (and it is charged), 0 if the device is over its rate. A bucket holds 10
 * s of its rate, and a message is taken while the bucket is not below 0,
 * whatever it costs, so that any message can pass. */
static int rate_take(tern__rcore *rc, conn *c, size_t body_len, uint64_t now_ms) {
  const tern__rcore_config *cfg = &rc->cfg;
  if (now_ms > c->rate_ms) {
    uint64_t dt = now_ms - c->rate_ms;
    if (dt > 10000) dt = 10000;
    int64_t capm = 10000ll * cfg->send_rate_msgs, capb = 10000ll * (int64_t)cfg->send_rate_bytes;
    c->rate_msgs += (int64_t)dt * cfg->send_rate_msgs;
    c->rate_bytes += (int64_t)dt * (int64_t)cfg->send_rate_bytes;
    if (c->rate_msgs > capm) c->rate_msgs = capm;
    if (c->rate_bytes > capb) c->rate_bytes = capb;
    c->rate_ms = now_ms;
  }
  if ((cfg->send_rate_msgs && c->rate_msgs < 0) || (cfg->send_rate_bytes && c->rate_bytes < 0))
    return 0;
  if (cfg->send_rate_msgs) c->rate_msgs -= 1000;
  if (cfg->send_rate_bytes) c->rate_bytes -= 1000ll * (int64_t)body_len;
  return 1;
}

static void log_rate(tern__rcore *rc, const conn *c, uint64_t now_ms) {
  (void)tern__logf_limited(rc->cfg.log, rc->cfg.log_ctx, &rc->rate_log, now_ms, 1,
                           "messages from %s answered BUSY (TERN_ERATE): the device sends "
                           "faster than %u messages or %llu bytes a second",
                           c->user, rc->cfg.send_rate_msgs,
                           (unsigned long long)rc->cfg.send_rate_bytes);
}

static void reply_failed(tern__rcore *rc, conn *c, uint8_t type, uint8_t channel, uint64_t cmid,
                         int err) {
  emit_answer(rc, c->id, type, channel, cmid, err, 0);
}

static void send_ack(tern__rcore *rc, conn *c, uint8_t channel, uint64_t cmid, uint64_t seq,
                     uint64_t ts) {
  uint8_t tmp[40];
  tern__wbuf w;
  tern__wbuf_init(&w, tmp, sizeof(tmp));
  tern__fr_sack a = {.cmid = cmid, .seq = seq, .ts = ts};
  tern__fr_sack_write(&w, &a);
#ifdef TERN_TEST_HOOKS
  int now = rc->cfg.fault_ack_before_commit;
#else
  int now = 0;
#endif
  emit_kind(rc, c->id, channel, 1, w.p, w.len, now, OUT_ACK, cmid);
}

/* An ephemeral message: straight to the recipient's live sessions. */
static void forward_ephemeral(tern__rcore *rc, conn *from, const tern__fr_msg *m, uint64_t wall) {
  char to[TERN_USER_MAX + 1];
  memcpy(to, m->peer, m->peer_len);
  to[m->peer_len] = 0;
  tern__wbuf w;
  tern__wbuf_init(&w, rc->buf, FRAME_BUF);
  tern__fr_msg d = {.ts = wall, .peer = (const uint8_t *)from->user, .peer_len = strlen(from->user),
                    .flags = m->flags, .body = m->body, .body_len = m->body_len};
  tern__fr_msg_write(&w, TERN__FR_DELIVER, &d);
  if (w.overflow) return;
  uint8_t key[32];
  user_key(to, key);
  for (tern__devidx_node *n = tern__devidx_first(&rc->byuser, key); n; n = tern__devidx_next(n)) {
    conn *c = CONN_OF(n, byuser);
    if (c->confirmed) emit(rc, c->id, TERN__CH_SIGNAL, 0, w.p, w.len, 1);
  }
}

/* Notes that the round stored a message for `to` from `from`. Out of
 * memory loses the note: a push notification is a hint, not a delivery. */
static void note_stored(tern__rcore *rc, const char *to, const char *from) {
  if (rc->nround > rc->ncommitted && !strcmp(rc->notes[rc->nround - 1].to, to)) {
    snprintf(rc->notes[rc->nround - 1].from, sizeof(rc->notes->from), "%s", from);
    return;
  }
  if (rc->nround == rc->capnotes) {
    size_t cap = rc->capnotes ? rc->capnotes * 2 : 16;
    struct stored_note *n = realloc(rc->notes, cap * sizeof(*n));
    if (!n) return;
    rc->notes = n;
    rc->capnotes = cap;
  }
  snprintf(rc->notes[rc->nround].to, sizeof(rc->notes->to), "%s", to);
  snprintf(rc->notes[rc->nround].from, sizeof(rc->notes->from), "%s", from);
  rc->nround++;
}

int tern__rcore_next_stored(tern__rcore *rc, const char **to, const char **from) {
  if (rc->ntaken == rc->ncommitted) {
    /* All taken: start again from the front, keeping the round's. */
    if (rc->ntaken) {
      memmove(rc->notes, rc->notes + rc->ntaken, (rc->nround - rc->ntaken) * sizeof(*rc->notes));
      rc->nround -= rc->ntaken;
      rc->ncommitted = rc->ntaken = 0;
    }
    return 0;
  }
  *to = rc->notes[rc->ntaken].to;
  *from = rc->notes[rc->ntaken].from;
  rc->ntaken++;
  return 1;
}

static void on_msg(tern__rcore *rc, conn *c, const tern__fr_msg *m, uint64_t now_ms,
                   uint64_t wall_ms) {
  char to[TERN_USER_MAX + 1];
  memcpy(to, m->peer, m->peer_len);
  to[m->peer_len] = 0;
  uint8_t ch = conv_channel(c->user, to);
  if (m->body_len > rc->cfg.max_message_size) {
    reply_failed(rc, c, TERN__FR_FAILED, ch, m->cmid, TERN_ETOOBIG);
    return;
  }
  int group = tern__is_group(to);
  /* Only a member writes to a group (spec/messages.md §14): the store
   * checks it after its dedup, so a resend of a stored message is answered
   * even if its sender has left since. */
  int allowed = group || !rc->cfg.may_send || rc->cfg.may_send(rc->cfg.may_send_ctx, c->user, to);
  if (group && (m->flags & TERN__MSGF_EPHEMERAL)) return; /* typing to a group: not carried */
  if (m->flags & TERN__MSGF_EPHEMERAL) {
    if (!allowed) return;
    if (eph_take(rc, c, now_ms) && rate_take(rc, c, m->body_len, now_ms)) forward_ephemeral(rc, c, m, wall_ms);
    else rc->stats.over_rate++; /* best effort: dropped, as the network may */
    return;
  }
  if (m->cmid < c->settled) {
    /* A copy from before the device settled it (another channel can
     * overtake): it was stored, or refused, and the device knows. Its
     * dedup row may be gone, so it is dropped, never stored again. */
    rc->stats.stale_msgs++;
    return;
  }
  if (!group && rc->cfg.user_exists && !rc->cfg.user_exists(rc->cfg.user_ctx, to)) {
    reply_failed(rc, c, TERN__FR_FAILED, ch, m->cmid, TERN_ENOENT);
    return;
  }
  if (!allowed) {
    reply_failed(rc, c, TERN__FR_FAILED, ch, m->cmid, TERN_EDENIED);
    return;
  }
  if (now_ms < rc->busy_until_ms || (rc->round_cap && rc->round_msgs >= rc->round_cap)) {
    reply_failed(rc, c, TERN__FR_BUSY, ch, m->cmid, TERN_ESTORE);
    return;
  }
  if (!rate_take(rc, c, m->body_len, now_ms)) {
    /* Not now: the client keeps it and sends it again after busy_retry_ms
     * (a resend of a stored message counts too: it costs the same). */
    reply_failed(rc, c, TERN__FR_BUSY, ch, m->cmid, TERN_ERATE);
    log_rate(rc, c, now_ms);
    return;
  }
  int room = make_room(rc, m->body_len, now_ms);
  if (room != TERN__RS_ROOM) {
    /* Full (the disk, say), or the commit that was to make room failed. */
    reply_failed(rc, c, TERN__FR_BUSY, ch, m->cmid, TERN_ESTORE);
    return;
  }
  /* Only the flags a MSG may carry are kept: a client cannot forge a carbon. */
  tern__rs_put put = {.to = to, .from = c->user, .sender_dev = c->dev, .cmid = m->cmid,
                      /* Below the settled floor: settled, so stored (or
                       * refused, and then not waited for). */
                      .prev_cmid = m->prev_cmid < c->settled ? 0 : m->prev_cmid, .ts = wall_ms, .flags = m->flags & TERN__MSGF_MSG_MASK,
                      .carbon = 1,
                      .body = m->body, .body_len = m->body_len,
                      .to_max_msgs = rc->cfg.quota_to_msgs, .to_max_bytes = rc->cfg.quota_to_bytes,
                      .from_max_msgs = rc->cfg.quota_from_msgs,
                      .from_max_bytes = rc->cfg.quota_from_bytes};
  if (rc->store->ops->put(rc->store, &put, 1) < 0) goto store_error;
  if (put.result == TERN__RS_EARLIER) {
    /* A resend: the same answer, never a second copy. */
    rc->round.deduped++;
    send_ack(rc, c, ch, m->cmid, put.seq, put.stored_ts);
    return;
  }
  if (put.result == TERN__RS_NOT_MEMBER || put.result == TERN__RS_NO_GROUP) {
    reply_failed(rc, c, TERN__FR_FAILED, ch, m->cmid,
                 put.result == TERN__RS_NOT_MEMBER ? TERN_EDENIED : TERN_ENOENT);
    return;
  }
  if (put.result == TERN__RS_OVER_TO || put.result == TERN__RS_OVER_FROM) {
    /* Final, like any FAILED: the app shows it; a later message may fit. */
    reply_failed(rc, c, TERN__FR_FAILED, ch, m->cmid, TERN_EQUOTA);
    log_quota(rc, c, to, put.result == TERN__RS_OVER_TO, now_ms);
    return;
  }
  /* Per-conversation order: the previous message must be stored first.
   * Without it, drop this one; the client resends both, in order. */
  if (put.result != TERN__RS_STORED) {
    rc->stats.no_prev++;
    (void)tern__logf_limited(rc->cfg.log, rc->cfg.log_ctx, &rc->prev_log, now_ms, 3,
                             "message %llu from %s dropped: the one before it to %s (%llu) is "
                             "not stored; the device sends both again",
                             (unsigned long long)m->cmid, c->user, to,
                             (unsigned long long)put.prev_cmid);
    return;
  }
  rc->round.stored++;
  rc->round_msgs++;
  if (rc->cfg.track_stored) note_stored(rc, to, c->user);
  send_ack(rc, c, ch, m->cmid, put.seq, wall_ms);
  /* Live sessions of the recipient (a group's streams, for a group) that
   * are caught up get it now, and the sender's other sessions its carbon. */
  uint8_t key[32];
  user_key(to, key);
  for (tern__devidx_node *n = tern__devidx_first(&rc->byuser, key); n; n = tern__devidx_next(n)) {
    conn *r = CONN_OF(n, byuser);
    if (r->confirmed && r->sent_upto + 1 == put.seq) pump(rc, r, now_ms);
  }
  for (tern__devidx_node *n = put.carbon_seq ? tern__devidx_first(&rc->byuser, c->ukey) : NULL; n;
       n = tern__devidx_next(n)) {
    conn *r = CONN_OF(n, byuser);
    if (r->confirmed && r->sent_upto + 1 == put.carbon_seq) pump(rc, r, now_ms);
  }
  return;
store_error:
  store_failed(rc, now_ms);
  reply_failed(rc, c, TERN__FR_BUSY, ch, m->cmid, TERN_ESTORE);
}

/* Opens the round's transaction and, if a failed round rolled back this
 * device's registration, registers it again (an ack from an unregistered
 * device would be refused). */
static int begin_for(tern__rcore *rc, conn *c) {
  int r = 0;
  if (!c->registered && !c->reg_pending) {
    uint64_t cur, limit;
    r = c->group ? rc->store->ops->gdevice(rc->store, c->user, c->member, c->dev, &cur, &limit)
                 : rc->store->ops->device(rc->store, c->user, c->dev, &cur);
    if (r == 0) {
      c->reg_pending = 1;
      round_mark(rc, c);
    }
  }
  return r;
}

/* Takes in what the device acknowledged (up to ack_goal, and the sacks):
 * all of it normally, in steps while the disk is full (each step must fit
 * in the room the reserve gave back; ack_more asks for the next). Returns
 * 0, or -1 after store_failed(). */
static int apply_acks(tern__rcore *rc, conn *c, const uint64_t *sacks, size_t n, uint64_t now_ms) {
  ack_ctx a = {rc, 0};
  /* A group its member left, passed to the point: the store has let go of
   * this device's cursor (relay_store.h, gacked); nothing more to take. */
  if (c->group && c->cursor >= c->limit) {
    c->ack_more = 0;
    return 0;
  }
  uint64_t reached = c->cursor;
  /* A step takes in at least one message: room for one first. */
  if (make_room(rc, 0, now_ms) < 0) return -1;
  int r = begin_for(rc, c);
  if (r == 0 && c->group) /* one step; sacks do not count for a group (relay_store.h) */
    r = rc->store->ops->gacked(rc->store, c->user, c->member, c->dev, c->ack_goal, &reached,
                               on_greceipt, &a);
  else if (r == 0)
    r = rc->store->ops->acked(rc->store, c->user, c->dev, c->ack_goal, sacks, n, &reached,
                              on_delivered, &a);
  if (r < 0 || a.err < 0) {
    store_failed(rc, now_ms);
    return -1;
  }
  c->ack_more = r == 1;
  if (c->ack_more) busy_mark(rc, c);
  if (reached > c->cursor) {
    c->cursor = reached;
    c->progress_ms = now_ms;
    round_mark(rc, c);
  }
  return 0;
}

/* Whether a write that a device's frame asks for waits: after a failed
 * round, until acks_at_ms. Without the wait a store that keeps failing
 * (a cluster without its quorum) fed a storm: each failure resends the
 * round's DELIVERs and notices, the devices ack them at once, and that
 * round fails too, thousands of times a second (spec/messages.md §5.7). */
static int acks_wait(const tern__rcore *rc, uint64_t now_ms) { return now_ms < rc->acks_at_ms; }

static void on_ack(tern__rcore *rc, conn *c, const tern__fr_seqlist *l, uint64_t now_ms) {
  if (l->last > c->ack_goal) c->ack_goal = l->last;
  if (acks_wait(rc, now_ms)) {
    /* Taken in by the tick at acks_at_ms (its sacks are not kept: what
     * they named is sent again and acked again). */
    if (c->ack_goal > c->cursor) {
      c->ack_more = 1;
      busy_mark(rc, c);
    }
    return;
  }
  if (apply_acks(rc, c, l->seqs, l->n, now_ms) < 0) return;
  if (c->sent_upto < c->cursor) c->sent_upto = c->cursor;
  pump(rc, c, now_ms);
}

/* ---- wakes from other relays sharing the store --------------------------- */

int tern__rcore_wake_user(tern__rcore *rc, const char *user, uint64_t now_ms) {
  uint8_t key[32];
  user_key(user, key);
  int n = 0;
  for (tern__devidx_node *it = tern__devidx_first(&rc->byuser, key); it; it = tern__devidx_next(it)) {
    conn *c = CONN_OF(it, byuser);
    if (!c->confirmed) continue;
    pump(rc, c, now_ms);
    n++;
  }
  return n;
}

int tern__rcore_wake_device(tern__rcore *rc, const uint8_t dev[32], uint64_t now_ms) {
  int n = 0;
  for (tern__devidx_node *it = tern__devidx_first(&rc->bydev, dev); it; it = tern__devidx_next(it)) {
    conn *c = CONN_OF(it, bydev);
    if (!c->confirmed) continue;
    send_notices(rc, c, now_ms);
    n++;
  }
  return n;
}

int tern__rcore_wake_all(tern__rcore *rc, uint64_t now_ms) {
  int n = 0;
  for (conn *c = rc->conns; c; c = c->next) {
    if (!c->confirmed) continue;
    pump(rc, c, now_ms);
    if (!c->group) send_notices(rc, c, now_ms);
    n++;
  }
  return n;
}

/* ---- groups (spec/messages.md §14) ---------------------------------------- */

/* The group stream of session c for `group`, opened (its device's group
 * cursor registered in the round) if it is not yet. NULL after a store
 * failure (store_failed has run) or without memory. */
static conn *open_group(tern__rcore *rc, conn *c, const char *group, uint64_t now_ms) {
  conn *g = find_group(rc, c->id, group);
  if (g) return g;
  if (!(g = calloc(1, sizeof(*g)))) return NULL;
  int r = rc->store->ops->gdevice(rc->store, group, c->user, c->dev, &g->cursor, &g->limit);
  if (r < 0) {
    free(g);
    if (r != TERN_ENOENT) store_failed(rc, now_ms);
    return NULL;
  }
  g->id = c->id;
  g->group = 1;
  snprintf(g->user, sizeof(g->user), "%s", group);
  snprintf(g->member, sizeof(g->member), "%s", c->user);
  memcpy(g->dev, c->dev, 32);
  index_user(rc, g);
  conns_add(rc, g);
  rc->ngroup_conns++;
  conn_start(rc, g, now_ms);
  return g;
}

/* Starts (or restarts, after a SYNC) the delivery of group stream g: tells
 * the device where the group starts for it (GROUP_FLOOR: its cursor, or
 * the group's floor if higher) and sends what follows. */
static void start_group(tern__rcore *rc, conn *g, uint64_t now_ms) {
  uint64_t floor = 0;
  if (rc->store->ops->floor(rc->store, g->user, &floor) < 0) {
    store_failed(rc, now_ms);
    return;
  }
  uint64_t from = g->cursor > floor ? g->cursor : floor;
  uint8_t tmp[96];
  tern__wbuf w;
  tern__wbuf_init(&w, tmp, sizeof(tmp));
  tern__fr_gack f = {.group = (const uint8_t *)g->user, .group_len = strlen(g->user), .list.last = from};
  tern__fr_gack_write(&w, TERN__FR_GROUP_FLOOR, &f);
  emit(rc, g->id, TERN__CH_CONTROL, 1, w.p, w.len, 0);
  g->confirmed = 1;
  g->sent_upto = from;
  busy_mark(rc, g);
  g->progress_ms = now_ms;
  pump(rc, g, now_ms);
}

typedef struct names {
  char (*v)[TERN_USER_MAX + 1];
  size_t n, cap;
  int nomem;
} names;

static int collect_name(void *ctx, const char *name) {
  names *ns = ctx;
  if (ns->n == ns->cap) {
    size_t cap = ns->cap ? ns->cap * 2 : 8;
    void *v = realloc(ns->v, cap * sizeof(*ns->v));
    if (!v) {
      ns->nomem = 1;
      return 1;
    }
    ns->v = v;
    ns->cap = cap;
  }
  snprintf(ns->v[ns->n++], sizeof(*ns->v), "%s", name);
  return 0;
}

/* After a SYNC: the session's groups, each started. */
static void sync_groups(tern__rcore *rc, conn *c, uint64_t now_ms) {
  names ns = {0};
  if (rc->store->ops->user_groups(rc->store, c->user, c->dev, collect_name, &ns) < 0) {
    free(ns.v);
    store_failed(rc, now_ms);
    return;
  }
  for (size_t i = 0; i < ns.n; i++) {
    conn *g = open_group(rc, c, ns.v[i], now_ms);
    if (g) start_group(rc, g, now_ms);
  }
  free(ns.v);
}

int tern__rcore_group_set(tern__rcore *rc, const char *group, const char *const *users, size_t n,
                          uint64_t now_ms, uint64_t *point) {
  uint64_t pt = 0;
  if (rc->store->ops->group_set(rc->store, group, users, n, &pt) < 0) {
    store_failed(rc, now_ms);
    return TERN_ESTORE;
  }
  /* Durable before any session acts on it: a change rolled back must not
   * have moved a session's limit. */
  if (commit_txn(rc, now_ms, 1) < 0) return TERN_ESTORE;
  if (point) *point = pt;
  /* Live sessions. The group's streams first (started or not): a removed
   * member's stops at the point; one left from an earlier membership of a
   * member added again is dropped, to start afresh from the store below. */
  for (conn *c = rc->conns, *next; c; c = next) {
    next = c->next;
    if (!c->group || strcmp(c->user, group)) continue;
    int in = 0;
    for (size_t i = 0; i < n && !in; i++) in = !strcmp(c->member, users[i]);
    if (!in && c->limit > pt) c->limit = pt;
    else if (in && c->limit != UINT64_MAX) drop_conn(rc, c);
  }
  /* Then an added member's sessions start getting the group. */
  for (conn *c = rc->conns; c; c = c->next) {
    if (c->group || !c->confirmed || find_group(rc, c->id, group)) continue;
    int in = 0;
    for (size_t i = 0; i < n && !in; i++) in = !strcmp(c->user, users[i]);
    if (!in) continue;
    conn *g = open_group(rc, c, group, now_ms);
    if (g) start_group(rc, g, now_ms);
  }
  return 0;
}

static void on_sync(tern__rcore *rc, conn *c, const tern__fr_seqlist *l, uint64_t now_ms) {
  if (!c->confirmed) {
    c->confirmed = 1;
    presence_join(rc, c, now_ms);
  }
  /* SYNC acknowledges what the device has, like DELIVERY_ACK ... */
  uint64_t floor = 0;
  if (l->last > c->ack_goal) c->ack_goal = l->last;
  if (apply_acks(rc, c, l->seqs, l->n, now_ms) < 0) return;
  if (rc->store->ops->floor(rc->store, c->user, &floor) < 0) {
    store_failed(rc, now_ms);
    return;
  }
  /* ... and says where to resume: after what it has, or after what is
   * gone. FLOOR always answers SYNC, so the client knows it arrived. */
  uint64_t from = l->last;
  uint8_t tmp[16];
  tern__wbuf w;
  tern__wbuf_init(&w, tmp, sizeof(tmp));
  tern__fr_u64_write(&w, TERN__FR_FLOOR, floor);
  emit(rc, c->id, TERN__CH_CONTROL, 1, w.p, w.len, 0);
  if (floor > from) from = floor;
  c->sent_upto = from;
  busy_mark(rc, c);
  c->progress_ms = now_ms;
  pump(rc, c, now_ms);
  send_notices(rc, c, now_ms);
  sync_groups(rc, c, now_ms);
}

int tern__rcore_input(tern__rcore *rc, uint64_t id, const uint8_t *frames, size_t len,
                      uint64_t now_ms, uint64_t wall_ms) {
  conn *c = find(rc, id);
  if (!c) return TERN_EINVAL;
  rc->wall_ms = wall_ms;
  rc->now_ms = now_ms;
  tern__rbuf r, body;
  tern__rbuf_init(&r, frames, len);
  uint8_t type;
  int more;
  while ((more = tern__frame_next(&r, &type, &body)) == 1) {
    switch (type) {
      case TERN__FR_MSG: {
        tern__fr_msg m;
        if (tern__fr_msg_read(&body, TERN__FR_MSG, &m) == 0) on_msg(rc, c, &m, now_ms, wall_ms);
        break;
      }
      case TERN__FR_DELIVERY_ACK:
      case TERN__FR_SYNC: {
        tern__fr_seqlist l;
        if (tern__fr_seqlist_read(&body, &l) != 0) break;
        if (type == TERN__FR_SYNC) on_sync(rc, c, &l, now_ms);
        else on_ack(rc, c, &l, now_ms);
        break;
      }
      case TERN__FR_SETTLED: {
        uint64_t below;
        if (tern__fr_u64_read(&body, &below) != 0 || below <= c->settled) break;
        /* The dedup rows below it go in this round; if it fails they stay,
         * which costs room, not correctness. */
        c->settled = below;
        if (rc->store->ops->settled(rc->store, c->dev, below) < 0) store_failed(rc, now_ms);
        break;
      }
      case TERN__FR_NOTICE_ACK: {
        uint64_t kind, cmid, code;
        int has_code;
        if (tern__fr_notice_ack_code_read(&body, &kind, &cmid, &has_code, &code) != 0) break;
        /* After a failed round: not now. The notice stays stored and is
         * sent again (resend_ms), and acked again. */
        if (acks_wait(rc, now_ms)) break;
        /* A GROUP_RECEIPT acked with the count the device saw: a newer
         * count (the row's code moved on) stays and is sent again. */
        int del = has_code ? rc->store->ops->notice_del_if(rc->store, c->dev, (int)kind, cmid, (int64_t)code)
                           : rc->store->ops->notice_del(rc->store, c->dev, (int)kind, cmid);
        if (del < 0) store_failed(rc, now_ms);
        break;
      }
      case TERN__FR_GROUP_ACK: {
        tern__fr_gack ga;
        char name[TERN_USER_MAX + 1];
        if (tern__fr_gack_read(&body, TERN__FR_GROUP_ACK, &ga) != 0) break;
        memcpy(name, ga.group, ga.group_len);
        name[ga.group_len] = 0;
        conn *g = find_group(rc, c->id, name);
        if (g) on_ack(rc, g, &ga.list, now_ms); /* a group it is not in: nothing to take */
        break;
      }
      default:
        break; /* unknown or not for the relay: skipped */
    }
  }
  return more < 0 ? TERN_EPROTO : 0;
}

/* Commits the open transaction and releases what it holds back. `whole`:
 * the end of the round (tern__rcore_commit); otherwise a part of it
 * (make_room), after which the round goes on. */
static int commit_txn(tern__rcore *rc, uint64_t now_ms, int whole) {
  if (rc->store->ops->commit(rc->store, now_ms) < 0) {
    store_failed(rc, now_ms);
    if (whole) rc->round_msgs = 0;
    return TERN_ESTORE;
  }
  /* Committed: what the round did now counts, and is where a later failed
   * round goes back to. */
  rc->stats.stored += rc->round.stored;
  rc->stats.deduped += rc->round.deduped;
  rc->stats.delivered += rc->round.delivered;
  rc->stats.expired += rc->round.expired;
  if (rc->round.stored || rc->round.delivered) rc->fail_streak = 0;
  rc->round_done |= 1ull << (rc->round_no % 64);
  rc->round_no++;
  rc->ncommitted = rc->nround;
  memset(&rc->round, 0, sizeof(rc->round));
  if (rc->rl_all) {
    for (conn *c = rc->conns; c; c = c->next) conn_committed(c);
  } else {
    for (size_t i = 0; i < rc->nrl; i++)
      if (rc->rl[i]) conn_committed(rc->rl[i]);
  }
  round_clear(rc);
  if (whole) {
    if (rc->round_cap && rc->round_msgs && rc->round_msgs * 2 >= rc->round_cap)
      rc->round_cap = rc->round_cap >= 65536 ? 0 : rc->round_cap * 2;
    if (rc->round_cap && now_ms >= rc->failed_ms + 5ull * rc->cfg.busy_ms) rc->round_cap = 0;
    rc->round_msgs = 0;
  }
  tern__outq_move_all(&rc->ready, &rc->held);
  return 0;
}

int tern__rcore_commit(tern__rcore *rc, uint64_t now_ms) { return commit_txn(rc, now_ms, 1); }

int tern__rcore_hello_fresh(tern__rcore *rc, const uint8_t dev[32], uint64_t time_us, uint64_t now_ms,
                            uint64_t *ticket) {
  int r = rc->store->ops->hello_fresh(rc->store, dev, time_us);
  if (r < 0) {
    store_failed(rc, now_ms);
    return TERN_ESTORE;
  }
  *ticket = rc->round_no;
  return r;
}

int tern__rcore_device_remove(tern__rcore *rc, const uint8_t dev[32], uint64_t now_ms) {
  char user[TERN_USER_MAX + 1];
  int r = rc->store->ops->device_remove(rc->store, dev, user);
  if (r < 0) {
    store_failed(rc, now_ms);
    return TERN_ESTORE;
  }
  return r;
}

int tern__rcore_ticket(const tern__rcore *rc, uint64_t ticket) {
  if (ticket == rc->round_no) return 0;
  if (ticket > rc->round_no || rc->round_no - ticket > 64) return TERN_ESTORE;
  return (rc->round_done >> (ticket % 64)) & 1 ? 1 : TERN_ESTORE;
}

int tern__rcore_next(tern__rcore *rc, tern__rcore_out *out) {
  const tern__outq_item *it = tern__outq_pop(&rc->ready);
  if (!it) return 0;
  out->conn = it->conn;
  out->channel = it->channel;
  out->reliable = it->reliable;
  out->data = it->data;
  out->len = it->len;
  return 1;
}

/* What a failed round dropped is sent again at once after one failure;
 * while the store goes on failing (a second failure in a row), only once
 * the failure's backoff (acks_at_ms) has passed: a store whose reads keep
 * failing (a cluster replica going back to a snapshot) was asked again in
 * a loop, millions of times a second. */
static int repump_due(const tern__rcore *rc, uint64_t now_ms) {
  return rc->fail_streak <= 1 || now_ms >= rc->acks_at_ms;
}

int tern__rcore_timeout(const tern__rcore *rc, uint64_t now_ms) {
  uint64_t best = rc->next_expire_ms;
  uint64_t wake = rc->store->ops->wake_ms(rc->store);
  if (wake < best) best = wake;
  for (size_t i = 0; i < rc->npu; i++)
    if (rc->pu[i].due && rc->pu[i].told_ms + rc->cfg.presence_min_ms < best)
      best = rc->pu[i].told_ms + rc->cfg.presence_min_ms;
  for (const conn *c = rc->busy; c; c = c->bnext) {
    if (c->ack_more && rc->acks_at_ms < best) best = rc->acks_at_ms;
    if (!c->confirmed) continue;
    if (c->repump) {
      if (repump_due(rc, now_ms)) return 0;
      if (rc->acks_at_ms < best) best = rc->acks_at_ms;
    }
    if (c->budget_wait && budget_room(rc)) return 0;
    if (c->copies && c->copies->due_ms < best) best = c->copies->due_ms;
    if (c->sent_upto > c->cursor && c->progress_ms + rc->cfg.resend_ms < best)
      best = c->progress_ms + rc->cfg.resend_ms;
    if (c->notices_out && c->notices_ms + rc->cfg.resend_ms < best)
      best = c->notices_ms + rc->cfg.resend_ms;
  }
  if (best <= now_ms) return 0;
  uint64_t d = best - now_ms;
  return d > 0x7fffffff ? 0x7fffffff : (int)d;
}

/* What the tick does for one conn: acks held back, copies, the budget, a
 * repump after a failure, resends, notices. */
static void tick_conn(tern__rcore *rc, conn *c, uint64_t now_ms) {
  if (c->ack_more && now_ms >= rc->acks_at_ms) {
    /* Acks held back by a failure (or a full disk's steps): taken in,
     * and the window they free is filled, as on_ack does. Without the
     * pump a session whose window was full stayed idle until another
     * message woke it. */
    uint64_t before = c->cursor;
    if (apply_acks(rc, c, NULL, 0, now_ms) == 0) {
      if (c->sent_upto < c->cursor) c->sent_upto = c->cursor;
      if (c->cursor > before && c->confirmed) pump(rc, c, now_ms);
    }
  }
  if (!c->confirmed) return;
  send_copies(rc, c, now_ms);
  if (c->budget_wait && budget_room(rc)) {
    c->budget_wait = 0; /* pump() sets it again if the room is taken first */
    pump(rc, c, now_ms);
  }
  if (c->repump && repump_due(rc, now_ms)) {
    c->repump = 0;
    /* A group's GROUP_FLOOR may have been dropped with the round. */
    if (c->group) start_group(rc, c, now_ms);
    else pump(rc, c, now_ms);
    send_notices(rc, c, now_ms);
    return;
  }
  if (c->sent_upto > c->cursor && now_ms >= c->progress_ms + rc->cfg.resend_ms) {
    /* No progress: send the unacked ones again (the device drops copies).
     * A group's GROUP_FLOOR goes again first: if it was lost, the device
     * holds back what names a predecessor below it. */
    c->sent_upto = c->cursor;
    if (c->group) start_group(rc, c, now_ms);
    else pump(rc, c, now_ms);
    c->progress_ms = now_ms;
  }
  if (c->notices_out && now_ms >= c->notices_ms + rc->cfg.resend_ms) send_notices(rc, c, now_ms);
}

void tern__rcore_tick(tern__rcore *rc, uint64_t now_ms, uint64_t wall_ms) {
  rc->wall_ms = wall_ms;
  rc->now_ms = now_ms;
  for (size_t i = 0; i < rc->npu; i++)
    if (rc->pu[i].due && now_ms >= rc->pu[i].told_ms + rc->cfg.presence_min_ms)
      presence_broadcast(rc, &rc->pu[i], now_ms);
  /* Only the busy conns: tick actions open and close no conn, and what
   * they mark busy (store_failed marks every conn) joins at the head, for
   * the next tick (the timeout is then 0). */
  for (conn *c = rc->busy, *next; c; c = next) {
    next = c->bnext;
    tick_conn(rc, c, now_ms);
    if (conn_idle(c)) busy_drop(rc, c);
  }
  if (now_ms >= rc->next_expire_ms) {
    rc->next_expire_ms = now_ms + rc->cfg.expire_every_ms;
    ack_ctx a = {rc, 0};
    uint64_t before = wall_ms > rc->cfg.retention_ms ? wall_ms - rc->cfg.retention_ms : 0;
    if (rc->store->ops->expire(rc->store, before, on_expired, &a) < 0 || a.err < 0)
      store_failed(rc, now_ms);
  }
}

void tern__rcore_get_stats(const tern__rcore *rc, tern__rcore_stats *st) {
  *st = rc->stats;
  st->deliver_bytes = rc->sent_total;
}
