/*
 * The relay store on a NATS JetStream cluster: a replicated log of rounds,
 * applied by every relay to an in-memory replica (relay_nats.h has the
 * design, spec/store.md "The cluster store" the rules).
 *
 * Inside. Every store call that writes is encoded (op code, inputs) into
 * the round's entry, then run on the replica by exec_op(), the one path
 * that also replays it from the log (another relay's entry, or our own
 * when others came before it). exec_op() hashes each call's answers
 * (return value, outputs, callback arguments) into a digest of its own;
 * an entry carries the hash of its calls' digests, and a replica applies
 * it only if its own run gives the same (apply_entry()).
 * Calls may nest (the relay core stores a receipt from inside acked's
 * callback): each has its own digest slot, taken in call order, and
 * exec_op() decodes its inputs before it runs, as a nested call may grow
 * the entry's buffer.
 */
#include "cluster/relay_nats.h"

#include <errno.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdarg.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/u64map.h"
#include "cluster/confirm.h"
#include "cluster/xcheck.h"
#include "os/wake.h"
#include "store/rstore.h"

/* The entry format (spec/store.md): version, hash of the calls' digests,
 * then the calls. */
#define ENTRY_VERSION 1
#define ENTRY_HEAD (1 + 16)
/* JetStream's dedup window for our message ids: a commit retries its
 * publish (same id) within 2 timeouts; two minutes is far above that. */
#define DEDUP_WINDOW_NS (120ll * 1000 * 1000 * 1000)
/* Room kept in an entry for the calls a round makes without asking room()
 * (a device's registration, notices, a HELLO's freshness). */
#define ENTRY_MARGIN (64u * 1024u)
/* Confirming entries (spec/store.md): how long a commit in place waits for
 * the subscription to deliver its own entry, and how long after it was
 * taken an entry the subscription has not delivered is read again. */
#define CONFIRM_WAIT_MS 100
#define CONFIRM_REREAD_MS 3000
/* The cross-check (spec/store.md): a relay that has heard no other relay's
 * hashes for this long writes snapshots on its own judgement. */
#define XCHECK_QUIET_MS 30000
/* How long the server keeps this relay's (ephemeral, ordered) consumer
 * once nobody listens on it: close() does not delete it (see n_close), and
 * a relay cut off from NATS this long gets a new one when it comes back,
 * as an ordered consumer does after any gap. */
#define INACTIVE_NS (30ll * 1000 * 1000 * 1000)

enum {
  OP_PUT = 1,
  OP_DEVICE,
  OP_ACKED,
  OP_NOTICE_PUT,
  OP_NOTICE_DEL,
  OP_NOTICE_DEL_IF,
  OP_DEVICE_REMOVE,
  OP_EXPIRE,
  OP_HELLO_FRESH,
  OP_GROUP_SET,
  OP_GDEVICE,
  OP_GACKED,
  OP_SETTLED,
};

/* ---- bytes ---------------------------------------------------------------- */

typedef struct buf {
  uint8_t *p;
  size_t len, cap;
  int oom;
} buf;

static void b_raw(buf *b, const void *d, size_t n) {
  if (b->oom) return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, d, n);
  b->len += n;
}
static void put64(uint8_t x[8], uint64_t v) {
  for (int i = 0; i < 8; i++) x[i] = (uint8_t)(v >> (8 * i));
}
static void b_u8(buf *b, uint8_t v) { b_raw(b, &v, 1); }
static void b_u64(buf *b, uint64_t v) {
  uint8_t x[8];
  put64(x, v);
  b_raw(b, x, 8);
}
/* A string, NUL included, so that a reader hands out a pointer into it. */
static void b_str(buf *b, const char *s) {
  size_t n = strlen(s);
  b_u64(b, n);
  b_raw(b, s, n + 1);
}
static void b_blob(buf *b, const void *d, size_t n) {
  b_u64(b, n);
  if (n) b_raw(b, d, n);
}

typedef struct rd {
  const uint8_t *p;
  size_t left;
  int bad;
} rd;

static const uint8_t *r_raw(rd *r, size_t n) {
  if (r->bad || r->left < n) {
    r->bad = 1;
    return NULL;
  }
  const uint8_t *p = r->p;
  r->p += n;
  r->left -= n;
  return p;
}
static uint8_t r_u8(rd *r) {
  const uint8_t *p = r_raw(r, 1);
  return p ? p[0] : 0;
}
static uint64_t r_u64(rd *r) {
  const uint8_t *p = r_raw(r, 8);
  uint64_t v = 0;
  if (p)
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}
static const char *r_str(rd *r) {
  uint64_t n = r_u64(r);
  if (n >= r->left) {
    r->bad = 1;
    return "";
  }
  const uint8_t *p = r_raw(r, (size_t)n + 1);
  if (!p || p[n] != 0 || memchr(p, 0, (size_t)n)) {
    r->bad = 1;
    return "";
  }
  return (const char *)p;
}
static const uint8_t *r_blob(rd *r, size_t *n) {
  uint64_t k = r_u64(r);
  if (k > r->left) {
    r->bad = 1;
    *n = 0;
    return NULL;
  }
  *n = (size_t)k;
  return r_raw(r, (size_t)k);
}
static void r_copy_str(rd *r, char *out, size_t cap) {
  const char *s = r_str(r);
  if (strlen(s) >= cap) r->bad = 1;
  snprintf(out, cap, "%s", r->bad ? "" : s);
}

/* ---- digests -------------------------------------------------------------- */

typedef struct dg {
  crypto_generichash_state st;
} dg;

static void dg_init(dg *d) { crypto_generichash_init(&d->st, NULL, 0, 16); }
static void dg_bytes(dg *d, const void *p, size_t n) { crypto_generichash_update(&d->st, p, n); }
static void dg_u64(dg *d, uint64_t v) {
  uint8_t x[8];
  put64(x, v);
  dg_bytes(d, x, 8);
}
static void dg_str(dg *d, const char *s) { dg_bytes(d, s, strlen(s) + 1); }
static void dg_final(dg *d, uint8_t out[16]) { crypto_generichash_final(&d->st, out, 16); }

/* ---- the store ------------------------------------------------------------ */

typedef struct qent {
  natsMsg *m;
  uint64_t seq;
} qent;

/* A set of names (inboxes) or keys (devices), once each, in order. */
typedef struct touched {
  tern__u64map idx; /* hash -> index + 1 */
  char (*name)[TERN_USER_MAX + 2];
  size_t n, cap;
} touched;

typedef struct ns {
  tern__relay_store base;
  tern__relay_store *rep;
  tern__log_fn log;
  void *log_ctx;
  natsConnection *nc;
  jsCtx *js;
  natsSubscription *sub;
  char url[512];
  char stream[64];
  char subject[96];
  /* Snapshots (spec/store.md, "Compaction"): stream <stream>_SNAP, a head
   * subject (one message per snapshot) and a chunk subject. */
  char snap_stream[80], snap_head[112], snap_chunk[112];
  int replicas;
  uint64_t snap_every; /* entries between snapshots (0: none) */
  uint64_t snap_pos;   /* the newest snapshot's position known here */
  uint64_t snap_retry_ms;
  uint64_t audit;        /* log the replica's digest at every multiple of it (0: never) */
  int wake_all;          /* a snapshot replaced the replica: wake every session */
  atomic_int deaf;       /* test builds: drop what the subscription delivers */
  atomic_ullong rx_ms;   /* when the subscription last delivered (mono ms) */
  uint64_t poll_ms;      /* when the log's end may next be asked for */
  char idprefix[24];
  uint32_t timeout_ms;
  size_t max_entry; /* the servers' max_payload */
  uint64_t pos; /* the last log sequence the replica holds */
  uint64_t own_seq; /* our entry, being applied after others' (0: none) */
  int own_ok;       /* its verdict: 1 applied, 0 refused, -1 not yet, 2
                       another writer's entry is there */
  char own_id[TERN__CONFIRM_ID_MAX + 1];    /* our entry's writer id */
  char own_other[TERN__CONFIRM_ID_MAX + 1]; /* the writer found there (2) */
  /* The round. */
  int in_round;
  buf ops; /* ENTRY_HEAD bytes, then the calls */
  uint8_t (*dig)[16];
  size_t ndig, capdig;
  uint64_t round_id;
  unsigned fault_commit;
  unsigned fault_lost_ack; /* TERN__RS_FAULT_LOST_ACK */
  unsigned fault_stale;    /* TERN__RS_FAULT_STALE_READ */
  unsigned fault_ack_early; /* TERN__RS_FAULT_ACK_EARLY */
  unsigned fault_snap_load; /* TERN__RS_FAULT_SNAP_LOAD */
  /* Entries taken on one server's word, until the log confirms them
   * (confirm.h), and the replica's image at entry 0 (kept while no
   * snapshot exists: what a replica that took a wrong entry goes back
   * to). */
  tern__confirm unconf;
  uint8_t *base_img;
  size_t base_len;
  /* Set while the replica must go back (it took an entry the log does not
   * have) and has not yet: the position it was at; when to try again, and
   * to say so again. */
  uint64_t back_from, back_retry_ms, back_said_ms;
  uint64_t back_void; /* the first entry that may have been wrong (0: none) */
  uint64_t reread_retry_ms; /* a second read failed: not before then */
  /* The cross-check with the other relays (xcheck.h): subject
   * tern.check.<stream>, what the NATS thread heard (under mu). */
  tern__xcheck xc;
  uint64_t check_every, my_tag;
  char xsubject[96];
  natsSubscription *xsub;
  int xsub_done;
  tern__xcheck_heard *xq;
  size_t xqlen, xqcap;
  unsigned fault_swap; /* TERN__RS_FAULT_SWAP_DELIVERY */
  /* With the cross-check on, a snapshot is the replica's image at the end
   * of a window, kept until another relay agreed with that window. */
  uint8_t *snap_img;
  size_t snap_len;
  uint64_t snap_img_pos;
  /* The window this relay last went back for, outvoted, and its hash then:
   * the same hash again after reading the log again means the log has
   * those entries, and it does not go back again for it. */
  uint64_t out_end;
  uint8_t out_h[16];
  /* Said once every entry up to their position is confirmed (a relay that
   * commits in place faster than its subscription delivers has entries
   * pending nearly all the time, each for a moment): window hashes to
   * tell, and audit digests to log. */
  struct {
    uint64_t end;
    uint8_t h[16];
  } untold[16];
  size_t nuntold;
  struct {
    uint64_t pos;
    uint8_t d[16];
  } unsaid[4];
  size_t nunsaid;
  /* What the NATS thread queues. */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  qent *q;
  size_t qlen, qcap;
  uint64_t q_seen; /* highest sequence queued */
  int sub_done;    /* the subscription will call nothing more */
  int nc_closed;   /* the connection will call nothing more (its closed
                      callback ran: libnats calls them in order, on a
                      thread of its own, after natsConnection_Close) */
  tern__wake wake;
  atomic_int connected;
  atomic_uint drops, returns; /* connections lost, and got back */
  unsigned said_drops, said_returns;
  /* After a failed publish, commits fail at once until pause_until (the
   * relay's loop must not wait on a cluster that is electing a leader). */
  uint64_t pause_until, pause_ms;
  /* What other relays' entries touched, for remote_take. */
  touched t_inbox, t_dev;
  tern__nats_stats st;
  char broken[512]; /* set: the replica cannot follow the log any more */
  char err[512];
  int err_mine;
} ns;

static ns *N(tern__relay_store *s) { return (ns *)s; }
static const ns *CN(const tern__relay_store *s) { return (const ns *)s; }

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int fail(ns *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(ns *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->err, sizeof(s->err), fmt, ap);
  va_end(ap);
  s->err_mine = 1;
  return TERN_ESTORE;
}

static uint64_t fnv(const void *p, size_t n) {
  const uint8_t *b = p;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

/* Notes `key` (len bytes: a name, or a 32-byte key) once. */
static void touch(touched *t, const void *key, size_t len) {
  if (len > TERN_USER_MAX + 1) return;
  uint64_t h = fnv(key, len);
  uintptr_t at = (uintptr_t)tern__u64map_get(&t->idx, h);
  if (at && !memcmp(t->name[at - 1], key, len)) return;
  if (t->n == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 64;
    void *p = realloc(t->name, cap * sizeof(*t->name));
    if (!p) return; /* a wake lost to memory: the session's own timers catch up */
    t->name = p;
    t->cap = cap;
  }
  memset(t->name[t->n], 0, sizeof(t->name[0]));
  memcpy(t->name[t->n], key, len);
  t->n++;
  if (!at) (void)tern__u64map_put(&t->idx, h, (void *)(uintptr_t)t->n);
}

/* Hands t's contents to the caller (who frees them), leaving t empty. */
static touched touched_take(touched *t) {
  touched out = *t;
  memset(t, 0, sizeof(*t));
  tern__u64map_init(&t->idx);
  return out;
}

static void touched_free(touched *t) {
  tern__u64map_free(&t->idx);
  free(t->name);
}

/* ---- one call: run, hash, replay ------------------------------------------ */

/* What a call hands back to its original caller (NULL fields: a replay). */
typedef struct xctx {
  int remote; /* another relay's entry: note what it touched */
  tern__rs_put *put;
  uint64_t *u1, *u2;
  char *user;
  tern__rs_delivered_fn dcb;
  tern__rs_expired_fn ecb;
  tern__rs_greceipt_fn gcb;
  void *cbctx;
  dg d;
} xctx;

static void x_delivered(void *c, const uint8_t dev[32], uint64_t cmid, uint64_t seq) {
  xctx *x = c;
  dg_bytes(&x->d, dev, 32);
  dg_u64(&x->d, cmid);
  dg_u64(&x->d, seq);
  if (x->dcb) x->dcb(x->cbctx, dev, cmid, seq);
}

static void x_expired(void *c, const uint8_t dev[32], uint64_t cmid) {
  xctx *x = c;
  dg_bytes(&x->d, dev, 32);
  dg_u64(&x->d, cmid);
  if (x->ecb) x->ecb(x->cbctx, dev, cmid);
}

static void x_greceipt(void *c, const uint8_t dev[32], uint64_t cmid, uint32_t got, uint32_t of) {
  xctx *x = c;
  dg_bytes(&x->d, dev, 32);
  dg_u64(&x->d, cmid);
  dg_u64(&x->d, got);
  dg_u64(&x->d, of);
  if (x->gcb) x->gcb(x->cbctx, dev, cmid, got, of);
}

/* Runs the call encoded at r on the replica, hashing its answers into
 * x->d. Returns the call's own return value; r->bad if it was malformed
 * (nothing run). */
static int exec_op(ns *s, rd *r, xctx *x) {
  tern__relay_store *rep = s->rep;
  const tern__relay_store_ops *o = rep->ops;
  uint8_t op = r_u8(r);
  int rc = TERN_EINVAL;
  switch (op) {
    case OP_PUT: {
      uint64_t n = r_u64(r);
      if (r->bad || n == 0 || n > r->left / 8) {
        r->bad = 1;
        return TERN_EINVAL;
      }
      tern__rs_put *p = calloc((size_t)n, sizeof(*p));
      if (!p) return TERN_ENOMEM;
      for (size_t i = 0; i < n; i++) {
        p[i].to = r_str(r);
        p[i].from = r_str(r);
        p[i].sender_dev = r_raw(r, 32);
        p[i].cmid = r_u64(r);
        p[i].prev_cmid = r_u64(r);
        p[i].ts = r_u64(r);
        p[i].flags = r_u64(r);
        p[i].to_max_msgs = r_u64(r);
        p[i].to_max_bytes = r_u64(r);
        p[i].from_max_msgs = r_u64(r);
        p[i].from_max_bytes = r_u64(r);
        p[i].carbon = r_u8(r);
        p[i].body = r_blob(r, &p[i].body_len);
      }
      if (r->bad) {
        free(p);
        return TERN_EINVAL;
      }
      rc = o->put(rep, p, (size_t)n);
      dg_u64(&x->d, (uint64_t)(int64_t)rc);
      for (size_t i = 0; i < n; i++) {
        dg_u64(&x->d, (uint64_t)p[i].result);
        dg_u64(&x->d, p[i].seq);
        dg_u64(&x->d, p[i].stored_ts);
        dg_u64(&x->d, p[i].prev_seq);
        dg_u64(&x->d, p[i].carbon_seq);
        if (x->put) {
          x->put[i].result = p[i].result;
          x->put[i].seq = p[i].seq;
          x->put[i].stored_ts = p[i].stored_ts;
          x->put[i].prev_seq = p[i].prev_seq;
          x->put[i].carbon_seq = p[i].carbon_seq;
        }
        if (x->remote && rc >= 0 && p[i].result == TERN__RS_STORED) {
          touch(&s->t_inbox, p[i].to, strlen(p[i].to) + 1);
          if (p[i].carbon_seq) touch(&s->t_inbox, p[i].from, strlen(p[i].from) + 1);
        }
      }
      free(p);
      return rc;
    }
    case OP_DEVICE: {
      const char *user = r_str(r);
      const uint8_t *dev = r_raw(r, 32);
      if (r->bad) return TERN_EINVAL;
      uint64_t cur = 0;
      rc = o->device(rep, user, dev, &cur);
      dg_u64(&x->d, (uint64_t)(int64_t)rc);
      dg_u64(&x->d, cur);
      if (x->u1) *x->u1 = cur;
      return rc;
    }
    case OP_ACKED: {
      char user[TERN_USER_MAX + 2];
      uint8_t dev[32];
      r_copy_str(r, user, sizeof(user));
      const uint8_t *d = r_raw(r, 32);
      uint64_t up_to = r_u64(r), n = r_u64(r);
      if (r->bad || n > r->left / 8) {
        r->bad = 1;
        return TERN_EINVAL;
      }
      memcpy(dev, d, 32);
      uint64_t *sacks = n ? malloc((size_t)n * sizeof(*sacks)) : NULL;
      if (n && !sacks) return TERN_ENOMEM;
      for (size_t i = 0; i < n; i++) sacks[i] = r_u64(r);
      uint64_t reached = 0;
      rc = o->acked(rep, user, dev, up_to, sacks, (size_t)n, &reached, x_delivered, x);
      free(sacks);
      dg_u64(&x->d, (uint64_t)(int64_t)rc);
      dg_u64(&x->d, reached);
      if (x->u1) *x->u1 = reached;
      return rc;
    }
    case OP_NOTICE_PUT:
    case OP_NOTICE_DEL:
    case OP_NOTICE_DEL_IF: {
      const uint8_t *dev = r_raw(r, 32);
      int kind = (int)r_u64(r);
      uint64_t cmid = r_u64(r);
      int64_t code = op == OP_NOTICE_DEL ? 0 : (int64_t)r_u64(r);
      if (r->bad) return TERN_EINVAL;
      if (op == OP_NOTICE_PUT) rc = o->notice_put(rep, dev, kind, cmid, code);
      else if (op == OP_NOTICE_DEL) rc = o->notice_del(rep, dev, kind, cmid);
      else rc = o->notice_del_if(rep, dev, kind, cmid, code);
      dg_u64(&x->d, (uint64_t)(int64_t)rc);
      if (x->remote && op == OP_NOTICE_PUT && rc >= 0) touch(&s->t_dev, dev, 32);
      return rc;
    }
    case OP_DEVICE_REMOVE: {
      const uint8_t *dev = r_raw(r, 32);
      if (r->bad) return TERN_EINVAL;
      char user[TERN_USER_MAX + 1] = {0};
      rc = o->device_remove(rep, dev, user);
      dg_u64(&x->d, (uint64_t)(int64_t)rc);
      dg_str(&x->d, user);
      if (x->user) memcpy(x->user, user, sizeof(user));
      return rc;
    }
    case OP_EXPIRE: {
      uint64_t before = r_u64(r);
      if (r->bad) return TERN_EINVAL;
      rc = o->expire(rep, before, x_expired, x);
      dg_u64(&x->d, (uint64_t)(int64_t)rc);
      return rc;
    }
    case OP_HELLO_FRESH: {
      const uint8_t *dev = r_raw(r, 32);
      uint64_t t = r_u64(r);
      if (r->bad) return TERN_EINVAL;
      rc = o->hello_fresh(rep, dev, t);
      dg_u64(&x->d, (uint64_t)(int64_t)rc);
      return rc;
    }
    case OP_GROUP_SET: {
      const char *group = r_str(r);
      uint64_t n = r_u64(r);
      if (r->bad || n > r->left / 9) {
        r->bad = 1;
        return TERN_EINVAL;
      }
      const char **users = n ? calloc((size_t)n, sizeof(*users)) : NULL;
      if (n && !users) return TERN_ENOMEM;
      for (size_t i = 0; i < n; i++) users[i] = r_str(r);
      uint64_t point = 0;
      if (!r->bad) rc = o->group_set(rep, group, users, (size_t)n, &point);
      if (!r->bad && x->remote && rc >= 0) {
        touch(&s->t_inbox, group, strlen(group) + 1);
        for (size_t i = 0; i < n; i++) touch(&s->t_inbox, users[i], strlen(users[i]) + 1);
      }
      free(users);
      if (r->bad) return TERN_EINVAL;
      dg_u64(&x->d, (uint64_t)(int64_t)rc);
      dg_u64(&x->d, point);
      if (x->u1) *x->u1 = point;
      return rc;
    }
    case OP_GDEVICE: {
      const char *group = r_str(r);
      const char *user = r_str(r);
      const uint8_t *dev = r_raw(r, 32);
      if (r->bad) return TERN_EINVAL;
      uint64_t cur = 0, limit = 0;
      rc = o->gdevice(rep, group, user, dev, &cur, &limit);
      dg_u64(&x->d, (uint64_t)(int64_t)rc);
      dg_u64(&x->d, cur);
      dg_u64(&x->d, limit);
      if (x->u1) *x->u1 = cur;
      if (x->u2) *x->u2 = limit;
      return rc;
    }
    case OP_GACKED: {
      char group[TERN_USER_MAX + 2], user[TERN_USER_MAX + 2];
      uint8_t dev[32];
      r_copy_str(r, group, sizeof(group));
      r_copy_str(r, user, sizeof(user));
      const uint8_t *d = r_raw(r, 32);
      uint64_t up_to = r_u64(r);
      if (r->bad) return TERN_EINVAL;
      memcpy(dev, d, 32);
      uint64_t reached = 0;
      rc = o->gacked(rep, group, user, dev, up_to, &reached, x_greceipt, x);
      dg_u64(&x->d, (uint64_t)(int64_t)rc);
      dg_u64(&x->d, reached);
      if (x->u1) *x->u1 = reached;
      return rc;
    }
    case OP_SETTLED: {
      const uint8_t *dev = r_raw(r, 32);
      uint64_t below = r_u64(r);
      if (r->bad) return TERN_EINVAL;
      rc = o->settled(rep, dev, below);
      dg_u64(&x->d, (uint64_t)(int64_t)rc);
      return rc;
    }
    default:
      r->bad = 1;
      return TERN_EINVAL;
  }
}

/* ---- applying the log ------------------------------------------------------ */

static void set_broken(ns *s, const char *why) {
  if (!s->broken[0]) {
    snprintf(s->broken, sizeof(s->broken), "%s", why);
    tern__logf(s->log, s->log_ctx, 0,
               "cluster store: %s; this relay stops accepting messages (restart it to read the "
               "log again)",
               why);
  }
}

/* The audit (URL parameter audit=N): at every log position that is a
 * multiple of N the replica's digest is logged, so that relays can be
 * compared line by line; replicas that applied the same entries have the
 * same digest. Called where the position has just moved, outside a round. */
/* 1 if every entry up to `seq` is confirmed (none pending). */
static int confirmed_to(const ns *s, uint64_t seq) {
  const tern__confirm_ent *p = tern__confirm_due(&s->unconf, UINT64_MAX);
  return !p || p->seq > seq;
}

static void say_digest(ns *s, uint64_t pos, const uint8_t d[16]) {
  char hex[33];
  sodium_bin2hex(hex, sizeof hex, d, 16);
  tern__logf(s->log, s->log_ctx, 2, "cluster store: audit: replica at log entry %llu has digest %s",
             (unsigned long long)pos, hex);
}

static void audited(ns *s) {
  if (!s->audit || s->pos % s->audit != 0 || s->back_from) return;
  uint8_t d[16];
  if (tern__rstore_digest(tern__relay_sqlite_engine(s->rep), d) != 0) return;
  /* Said only of a confirmed replica: one that took an entry the log does
   * not have finds out, and goes back, within seconds (resync()); until
   * then the digest waits (said_pending()). */
  if (confirmed_to(s, s->pos)) {
    say_digest(s, s->pos, d);
  } else if (s->nunsaid < sizeof s->unsaid / sizeof s->unsaid[0]) {
    s->unsaid[s->nunsaid].pos = s->pos;
    memcpy(s->unsaid[s->nunsaid++].d, d, 16);
  }
}

/* An entry's first op codes for a log line: "1,4,4" (nopc of its nops
 * calls known), ",..." after them if there are more. */
#define OPS_SHOWN 12
static void ops_text(char out[4 * OPS_SHOWN + 8], const uint8_t *opc, size_t nopc, size_t nops) {
  size_t opl = 0, cap = 4 * OPS_SHOWN + 8;
  out[0] = 0;
  for (size_t i = 0; i < nopc && i < OPS_SHOWN; i++)
    opl += (size_t)snprintf(out + opl, cap - opl, "%s%u", i ? "," : "", opc[i]);
  if (nops > nopc || nops > OPS_SHOWN) snprintf(out + opl, cap - opl, ",...");
}

/* The writer's message id of a log entry (its round: r<instance>-<n>). */
static const char *entry_id(natsMsg *m) {
  const char *id = NULL;
  return natsMsgHeader_Get(m, "Nats-Msg-Id", &id) == NATS_OK && id ? id : "?";
}

/* With the audit on, every entry this relay takes is said too: where it
 * came from (delivered by the subscription, read by sequence, or this
 * relay's own round committed in place), who wrote it (the writer's
 * message id) and what became of it, so that two relays' lines can be
 * compared entry by entry. Off by default: a line per entry. The writer
 * is m's, or `id` (this relay's own round, m NULL). */
static void trace(ns *s, uint64_t seq, const char *how, natsMsg *m, const char *id, int verdict,
                  size_t nops, const uint8_t *opc, size_t nopc) {
  if (!s->audit) return;
  if (m) id = entry_id(m);
  char ops[4 * OPS_SHOWN + 8];
  ops_text(ops, opc, nopc, nops);
  tern__logf(s->log, s->log_ctx, 2, "cluster store: audit: entry %llu %s, %s, writer %s, %zu call(s) (ops %s)",
             (unsigned long long)seq, verdict ? "applied" : "refused", how, id ? id : "?", nops, ops);
}

/* Applies one entry of the log to the replica, in a round of its own, if
 * its calls answer here as they did for the relay that wrote it (the
 * hash of their digests in its head): 1 applied, 0 refused (undone: every
 * replica refuses it, as every one meets it in the same state), or
 * TERN_ESTORE. */
static int apply_entry(ns *s, natsMsg *m, uint64_t seq, const char *how) {
  const uint8_t *data = (const uint8_t *)natsMsg_GetData(m);
  size_t len = (size_t)natsMsg_GetDataLength(m);
  rd r = {data, len, 0};
  uint8_t ver = r_u8(&r);
  const uint8_t *want = r_raw(&r, 16);
  if (r.bad || ver != ENTRY_VERSION) {
    char why[160];
    snprintf(why, sizeof why,
             "log entry %llu is not one this relay can read (version %u, %zu bytes): a newer "
             "relay wrote it",
             (unsigned long long)seq, ver, len);
    set_broken(s, why);
    return TERN_ESTORE;
  }
  if (r.left == 0) { /* the log's first entry: no calls */
    trace(s, seq, how, m, NULL, 1, 0, NULL, 0);
    return 1;
  }
  dg all;
  dg_init(&all);
  uint8_t opc[OPS_SHOWN]; /* the first calls' op codes, for the log */
  size_t nops = 0;
  while (r.left) {
    if (nops < sizeof opc) opc[nops] = r.p[0];
    nops++;
    xctx x = {.remote = 1};
    dg_init(&x.d);
    int rc = exec_op(s, &r, &x);
    if (r.bad) {
      char why[160];
      snprintf(why, sizeof why, "log entry %llu is malformed", (unsigned long long)seq);
      set_broken(s, why);
      return TERN_ESTORE;
    }
    if (rc == TERN_ESTORE || rc == TERN_ENOMEM) {
      char why[400];
      snprintf(why, sizeof why, "applying log entry %llu failed: %s", (unsigned long long)seq,
               s->rep->ops->errmsg(s->rep));
      set_broken(s, why);
      return TERN_ESTORE;
    }
    uint8_t one[16];
    dg_final(&x.d, one);
    dg_bytes(&all, one, 16);
  }
  uint8_t got[16];
  dg_final(&all, got);
  if (memcmp(got, want, 16) != 0) {
    s->rep->ops->rollback(s->rep, mono_ms());
    s->st.refused++;
    /* Normal when two relays raced (the later one's calls were decided on
     * a state without the earlier one's): every replica refuses it alike.
     * Said, so that replicas refusing different entries can be seen. */
    char ops[4 * OPS_SHOWN + 8];
    ops_text(ops, opc, nops < OPS_SHOWN ? nops : OPS_SHOWN, nops);
    tern__logf(s->log, s->log_ctx, 2,
               "cluster store: log entry %llu%s refused: its %zu call(s) (ops %s) answer differently "
               "here than where they were decided",
               (unsigned long long)seq, seq == s->own_seq ? " (this relay's)" : "", nops, ops);
    trace(s, seq, how, m, NULL, 0, nops, opc, nops < OPS_SHOWN ? nops : OPS_SHOWN);
    return 0;
  }
  if (s->rep->ops->commit(s->rep, mono_ms()) < 0) {
    char why[400];
    snprintf(why, sizeof why, "the replica failed to commit: %s", s->rep->ops->errmsg(s->rep));
    set_broken(s, why);
    return TERN_ESTORE;
  }
  trace(s, seq, how, m, NULL, 1, nops, opc, nops < OPS_SHOWN ? nops : OPS_SHOWN);
  return 1;
}

static int snap_recover(ns *s, uint64_t need);
static int read_by_seq(ns *s, uint64_t upto, int drain);
static int resync(ns *s, uint64_t seq, const char *took, const char *has, const char *how);
static int log_bounds(ns *s, uint64_t *first, uint64_t *last);

/* Waits on s->cv (s->mu held) until deadline_ms, 100 ms at most. */
static void cv_wait(ns *s, uint64_t deadline_ms) {
  uint64_t now = mono_ms();
  if (now >= deadline_ms) return;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t wait = deadline_ms - now;
  if (wait > 100) wait = 100;
  ts.tv_nsec += (long)(wait * 1000000u);
  ts.tv_sec += ts.tv_nsec / 1000000000;
  ts.tv_nsec %= 1000000000;
  pthread_cond_timedwait(&s->cv, &s->mu, &ts);
}

/* The log delivered entry `seq` (at or below the replica's position) with
 * writer `id`: if the replica took that entry on one server's word, this
 * confirms it, or shows it took another (then resync()). 0 or
 * TERN_ESTORE. */
static int confirm(ns *s, uint64_t seq, const char *id, const char *how) {
  const char *took = NULL;
  if (tern__confirm_check(&s->unconf, seq, id, &took) >= 0) return 0;
  char t[TERN__CONFIRM_ID_MAX + 1];
  snprintf(t, sizeof t, "%s", took);
  return resync(s, seq, t, id, how);
}

/* Entry `seq` (m) was just applied (rc 1) or refused (0). Where our round
 * was acknowledged, its verdict is our round's, if it is ours: another
 * writer's entry there means the acknowledgement was wrong (spec/store.md,
 * "Confirming entries"). */
static void took(ns *s, uint64_t seq, natsMsg *m, int rc) {
  if (seq == s->own_seq && strcmp(entry_id(m), s->own_id) == 0) {
    s->own_ok = rc;
    return;
  }
  if (seq == s->own_seq) {
    s->own_ok = 2;
    snprintf(s->own_other, sizeof s->own_other, "%s", entry_id(m));
  }
  s->st.applied++;
}

/* The replica took entry `seq` (writer `id`, applied 1 or refused 0): into
 * the cross-check's window, whose hash, when the window ends, the other
 * relays are told (core NATS, no answer awaited; a lost one only leaves a
 * window unchecked). */
static void tell(ns *s, uint64_t end, const uint8_t h[16]) {
  if (!s->nc) return;
  uint8_t m[4 + 8 + 16 + 8 + 8];
  memcpy(m, "TXC1", 4);
  put64(m + 4, end);
  memcpy(m + 12, h, 16);
  put64(m + 28, s->my_tag);
  put64(m + 36, s->check_every);
  (void)natsConnection_Publish(s->nc, s->xsubject, m, (int)sizeof m);
}

static void taken(ns *s, uint64_t seq, const char *id, int verdict) {
  uint64_t end = 0;
  uint8_t h[16];
  if (!tern__xcheck_take(&s->xc, seq, id, verdict, &end, h)) return;
  /* A snapshot due: the image at this window's end, written once another
   * relay agrees with the window and every entry up to it is confirmed
   * (snap_take). */
  if (s->snap_every && !s->snap_img && end >= s->snap_pos + s->snap_every &&
      tern__rstore_image(tern__relay_sqlite_engine(s->rep), &s->snap_img, &s->snap_len) == 0)
    s->snap_img_pos = end;
  /* A window with an entry not yet confirmed is told once it is (a hash
   * of an entry the log may not have must not outvote anyone). */
  if (confirmed_to(s, end)) tell(s, end, h);
  else if (s->nuntold < sizeof s->untold / sizeof s->untold[0]) {
    s->untold[s->nuntold].end = end;
    memcpy(s->untold[s->nuntold++].h, h, 16);
  }
}

/* The window hashes and audit digests that waited for their entries to be
 * confirmed: told and said, in order, as far as the entries are. */
static void said_pending(ns *s) {
  size_t k = 0;
  while (k < s->nuntold && confirmed_to(s, s->untold[k].end)) {
    tell(s, s->untold[k].end, s->untold[k].h);
    k++;
  }
  memmove(s->untold, s->untold + k, (s->nuntold - k) * sizeof s->untold[0]);
  s->nuntold -= k;
  k = 0;
  while (k < s->nunsaid && confirmed_to(s, s->unsaid[k].pos)) {
    say_digest(s, s->unsaid[k].pos, s->unsaid[k].d);
    k++;
  }
  memmove(s->unsaid, s->unsaid + k, (s->nunsaid - k) * sizeof s->unsaid[0]);
  s->nunsaid -= k;
}

/* Takes what the NATS thread queued and applies it (outside a round),
 * waiting until the log position reaches `upto` or `deadline_ms` passes
 * (upto 0: no wait). The verdict on entry s->own_seq (ours) goes to
 * s->own_ok. Returns how many entries it took, or TERN_ESTORE. */
static int apply_queued(ns *s, uint64_t upto, uint64_t deadline_ms) {
  int applied = 0;
  for (;;) {
    pthread_mutex_lock(&s->mu);
    while (upto && s->q_seen < upto && s->qlen == 0 && mono_ms() < deadline_ms) cv_wait(s, deadline_ms);
    qent *q = s->q;
    size_t n = s->qlen;
    s->q = NULL;
    s->qlen = s->qcap = 0;
    pthread_mutex_unlock(&s->mu);
    int rc = 0;
    /* Going back and not there yet: what came is read again later. */
    for (size_t i = 0; i < n && rc >= 0 && !s->back_from; i++) {
      if (q[i].seq <= s->pos) {
        /* Ours, seen before a consumer reset, or taken on one server's
         * word: then this confirms it (or the replica goes back). */
        rc = confirm(s, q[i].seq, entry_id(q[i].m), "delivered");
        continue;
      }
      if (q[i].seq != s->pos + 1) {
        /* A gap (a delivery dropped, or the log compacted past this
         * relay): the missing entries are read by sequence, or the newest
         * snapshot replaces them. */
        if (read_by_seq(s, q[i].seq - 1, 0) < 0) {
          rc = TERN_ESTORE;
          break;
        }
        if (q[i].seq <= s->pos) continue; /* in the snapshot */
        if (s->back_from || q[i].seq != s->pos + 1) break; /* the gap is still open */
      }
      natsMsg *use = q[i].m;
#ifdef TERN_TEST_HOOKS
      /* A server that delivers what the log does not have. */
      if (s->fault_swap && i + 1 < n && q[i + 1].seq == q[i].seq + 1) {
        s->fault_swap--;
        use = q[i + 1].m;
      }
#endif
      rc = apply_entry(s, use, q[i].seq, "delivered");
      if (rc >= 0) {
        took(s, q[i].seq, use, rc);
        taken(s, q[i].seq, entry_id(use), rc);
        s->pos = q[i].seq;
        audited(s);
        applied++;
      }
    }
    for (size_t k = 0; k < n; k++) natsMsg_Destroy(q[k].m);
    free(q);
    said_pending(s);
    if (rc < 0) {
      s->rep->ops->rollback(s->rep, mono_ms());
      return rc;
    }
    if (!upto || s->pos >= upto || mono_ms() >= deadline_ms) break;
  }
  return applied;
}

/* Reads the entries after the replica's position up to `upto` one by one
 * (js_GetMsg) and applies them; entries compacted away are replaced by
 * the newest snapshot (snap_recover). `drain`: between two, also take what
 * the subscription queued. Returns 0 or TERN_ESTORE. */
static int read_by_seq(ns *s, uint64_t upto, int drain) {
  while (s->pos < upto && !s->back_from) {
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    uint64_t want = s->pos + 1, get = want;
#ifdef TERN_TEST_HOOKS
    if (s->fault_stale) { /* a server that serves what the log does not have */
      s->fault_stale--;
      get = want + 1;
    }
#endif
    natsStatus st = js_GetMsg(&m, s->js, s->stream, get, NULL, &jerr);
    if ((st == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) && !m) {
      /* Compacted away (the newest snapshot must cover it), or a server
       * whose store is behind said so of an entry the log has (seen just
       * after a cut-off server came back): the log's first entry tells. */
      uint64_t first = 0, last = 0;
      if (log_bounds(s, &first, &last) != 0)
        return fail(s, "cluster store: log entry %llu was not found, and the log's bounds could not "
                       "be asked for; trying again",
                    (unsigned long long)want);
      if (want >= first)
        return fail(s,
                    "cluster store: log entry %llu was not found, though the log starts at %llu: "
                    "the server that answered is behind; trying again",
                    (unsigned long long)want, (unsigned long long)first);
      if (snap_recover(s, want + 1) < 0) return TERN_ESTORE;
      continue;
    }
    if (st != NATS_OK || !m) {
      fail(s, "cluster store: reading log entry %llu failed: %s (JetStream error %d)",
           (unsigned long long)want, natsStatus_GetText(st), (int)jerr);
      return TERN_ESTORE;
    }
    int rc = apply_entry(s, m, want, "read by sequence");
    /* Taken on one server's word: the subscription's delivery, or a read
     * some seconds later, must confirm it. */
    if (rc >= 0 && tern__confirm_add(&s->unconf, want, entry_id(m), mono_ms()) != 0) {
      natsMsg_Destroy(m);
      set_broken(s, "out of memory noting a log entry read by sequence");
      return TERN_ESTORE;
    }
    if (rc >= 0) {
      took(s, want, m, rc);
      taken(s, want, entry_id(m), rc);
    }
    natsMsg_Destroy(m);
    if (rc < 0) return rc;
    s->pos = want;
    audited(s);
    s->st.fetched++;
    if (drain && apply_queued(s, 0, 0) < 0) return TERN_ESTORE;
  }
  return 0;
}

/* Brings the replica to log sequence `upto`: from what the subscription
 * delivers, and when it lags (its consumer is being recreated after a
 * server was lost), by reading each missing entry. Returns 0 or a
 * negative code. */
static int catch_up(ns *s, uint64_t upto) {
  if (apply_queued(s, upto, mono_ms() + 20) < 0) return TERN_ESTORE;
  return read_by_seq(s, upto, 1);
}

/* ---- snapshots: compacting the log ----------------------------------------- */

/* A snapshot (spec/store.md, "Compaction") is the replica's image at log
 * position P, in chunks on the stream <stream>_SNAP (subject ...chunk),
 * then one head message (subject ...head) that names them: "TSH1", P,
 * the image's length, the chunk count, its BLAKE2b-256, each chunk's
 * sequence. Only the head that follows the previous one is accepted
 * (ExpectLastSubjectSeq), so two relays never both compact; the winner
 * then purges the log up to the previous snapshot's position (a relay
 * lagging by less than an interval still finds its entries) and the older
 * chunks and heads. A relay starting loads the newest head's image and
 * reads the log from P + 1. */
#define SNAP_HEAD_MAGIC "TSH1"
#define SNAP_CHUNK_MAGIC "TSC1"

static uint64_t get64(const uint8_t *p) {
  rd r = {p, 8, 0};
  return r_u64(&r);
}

/* The snapshot stream, created if missing. */
static int snap_stream(ns *s, char *err, size_t errcap) {
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus st = js_GetStreamInfo(&si, s->js, s->snap_stream, NULL, &jerr);
  if (st != NATS_OK && jerr == JSStreamNotFoundErr) {
    jsStreamConfig c;
    jsStreamConfig_Init(&c);
    const char *subj[2] = {s->snap_head, s->snap_chunk};
    c.Name = s->snap_stream;
    c.Subjects = subj;
    c.SubjectsLen = 2;
    c.Storage = js_FileStorage;
    c.Replicas = s->replicas;
    jerr = 0;
    st = js_AddStream(&si, s->js, &c, NULL, &jerr);
  }
  if (st != NATS_OK || !si) {
    snprintf(err, errcap, "cannot find or create the snapshot stream %s: %s (JetStream error %d)",
             s->snap_stream, natsStatus_GetText(st), (int)jerr);
    if (si) jsStreamInfo_Destroy(si);
    return TERN_ESTORE;
  }
  jsStreamInfo_Destroy(si);
  return 0;
}

/* The newest head: 1 with *m (the caller destroys it), 0 if none, or
 * TERN_ESTORE. */
static int snap_last_head(ns *s, natsMsg **m) {
  jsErrCode jerr = 0;
  *m = NULL;
  natsStatus st = js_GetLastMsg(m, s->js, s->snap_stream, s->snap_head, NULL, &jerr);
  if (st == NATS_OK && *m) return 1;
  if (st == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) return 0;
  fail(s, "cluster store: reading the newest snapshot failed: %s (JetStream error %d)",
       natsStatus_GetText(st), (int)jerr);
  return TERN_ESTORE;
}

/* Parses a head: 0 with its fields (seqs points into the message), or -1. */
static int snap_parse(natsMsg *m, uint64_t *pos, uint64_t *len, uint64_t *n, const uint8_t **hash,
                      const uint8_t **seqs) {
  const uint8_t *d = (const uint8_t *)natsMsg_GetData(m);
  size_t k = (size_t)natsMsg_GetDataLength(m);
  if (k < 4 + 24 + 32 || memcmp(d, SNAP_HEAD_MAGIC, 4) != 0) return -1;
  *pos = get64(d + 4);
  *len = get64(d + 12);
  *n = get64(d + 20);
  *hash = d + 28;
  *seqs = d + 60;
  return *n <= (k - 60) / 8 && (k - 60) == *n * 8 ? 0 : -1;
}

/* Loads the newest snapshot into the replica. Returns 0 (s->pos is its
 * position; *loaded 0 and nothing changed if there is none) or
 * TERN_ESTORE (why in err). */
static int snap_load(ns *s, int *loaded, char *err, size_t errcap) {
  natsMsg *h = NULL;
  err[0] = 0;
  *loaded = 0;
#ifdef TERN_TEST_HOOKS
  if (s->fault_snap_load) {
    s->fault_snap_load--;
    snprintf(err, errcap, "cluster store: reading the newest snapshot failed (test fault)");
    return TERN_ESTORE;
  }
#endif
  int r = snap_last_head(s, &h);
  if (r < 0) {
    snprintf(err, errcap, "%s", s->err);
    return TERN_ESTORE;
  }
  if (r == 0) return 0;
  uint64_t pos, len, n;
  const uint8_t *hash, *seqs;
  uint8_t *img = NULL;
  int rc = TERN_ESTORE;
  if (snap_parse(h, &pos, &len, &n, &hash, &seqs) != 0 || len > ((uint64_t)1 << 40)) {
    snprintf(err, errcap, "the newest snapshot's head in %s is malformed", s->snap_stream);
    goto out;
  }
  img = malloc(len ? (size_t)len : 1);
  if (!img) {
    rc = TERN_ENOMEM;
    goto out;
  }
  size_t at = 0;
  for (uint64_t i = 0; i < n; i++) {
    natsMsg *c = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetMsg(&c, s->js, s->snap_stream, get64(seqs + 8 * i), NULL, &jerr);
    const uint8_t *d = c ? (const uint8_t *)natsMsg_GetData(c) : NULL;
    size_t k = c ? (size_t)natsMsg_GetDataLength(c) : 0;
    if (st != NATS_OK || k < 20 || memcmp(d, SNAP_CHUNK_MAGIC, 4) != 0 || get64(d + 4) != pos ||
        get64(d + 12) != i || at + (k - 20) > len) {
      snprintf(err, errcap, "chunk %llu of the snapshot at entry %llu cannot be read: %s",
               (unsigned long long)i, (unsigned long long)pos, natsStatus_GetText(st));
      natsMsg_Destroy(c);
      goto out;
    }
    memcpy(img + at, d + 20, k - 20);
    at += k - 20;
    natsMsg_Destroy(c);
  }
  uint8_t got[32];
  crypto_generichash(got, sizeof got, img, (size_t)len, NULL, 0);
  if (at != len || memcmp(got, hash, 32) != 0) {
    snprintf(err, errcap, "the snapshot at entry %llu does not match its hash", (unsigned long long)pos);
    goto out;
  }
  rc = tern__rstore_load_image(tern__relay_sqlite_engine(s->rep), img, (size_t)len);
  if (rc != 0) {
    snprintf(err, errcap, "loading the snapshot at entry %llu: %s", (unsigned long long)pos,
             s->rep->ops->errmsg(s->rep));
    goto out;
  }
  s->pos = s->snap_pos = pos;
  s->st.snapshot_loaded = pos;
  tern__confirm_clear(&s->unconf);
  tern__xcheck_reset(&s->xc, s->check_every, pos);
  free(s->snap_img);
  s->snap_img = NULL;
  *loaded = 1;
  tern__logf(s->log, s->log_ctx, 2, "cluster store: loaded the snapshot at log entry %llu (%llu bytes)",
             (unsigned long long)pos, (unsigned long long)len);
out:
  free(img);
  natsMsg_Destroy(h);
  return rc;
}

/* Going back failed for now: it is tried again a second later. Returns 1
 * if that is to be said now (at most every 10 s). */
static int back_later(ns *s) {
  uint64_t now = mono_ms();
  s->back_retry_ms = now + 1000;
  if (now < s->back_said_ms) return 0;
  s->back_said_ms = now + 10000;
  return 1;
}

/* This relay lags behind the compacted log (its next entry, `need` - 1 or
 * before, is gone): loads the newest snapshot, which must reach need - 1,
 * and has every session woken. If none can be read that does, the relay
 * goes back (s->back_from) and tries again every second. Outside a round.
 * Returns 0. */
static int snap_recover(ns *s, uint64_t need) {
  char e[512];
  uint64_t was = s->pos;
  int loaded = 0;
  s->rep->ops->rollback(s->rep, mono_ms());
  if (snap_load(s, &loaded, e, sizeof e) != 0 || s->pos + 1 < need) {
    /* No snapshot that reaches the gap can be read now (a server behind,
     * the snapshot stream unavailable, or truly none): nothing is applied
     * or stored, and it is tried again every second (go_back()). */
    s->back_from = was ? was : 1;
    if (back_later(s))
      tern__logf(s->log, s->log_ctx, 0,
                 "cluster store: the log was compacted past this relay (at entry %llu, next %llu) "
                 "and no snapshot covers the gap%s%.300s; new messages are refused (BUSY, the "
                 "clients keep them) until one does; trying again every second",
                 (unsigned long long)was, (unsigned long long)need, e[0] ? ": " : "", e);
    return 0;
  }
  s->wake_all = 1;
  s->st.snapshot_reloads++;
  tern__logf(s->log, s->log_ctx, 1,
             "cluster store: this relay fell behind the compacted log (at entry %llu); it "
             "reloaded the snapshot at entry %llu and goes on from there",
             (unsigned long long)was, (unsigned long long)s->pos);
  return 0;
}

/* The replica went back (or could not yet: s->back_from stays set, and
 * remote_take tries again a second later): to the newest snapshot or, with
 * none, to entry 0; the log after it is read again from there and every
 * session is woken. Outside a round. Returns 0, or TERN_ESTORE (the first
 * image cannot be loaded: the relay stops accepting messages). */
static int go_back(ns *s) {
  int loaded = 0;
  char e[512];
  s->rep->ops->rollback(s->rep, mono_ms());
  int rc = snap_load(s, &loaded, e, sizeof e);
  if (rc == 0 && !loaded && !s->base_img) {
    /* It started from a snapshot, so one exists: the server that answered
     * is behind. */
    snprintf(e, sizeof e, "no snapshot was found");
    rc = TERN_ESTORE;
  }
  if (rc == 0 && !loaded) {
    if (tern__rstore_load_image(tern__relay_sqlite_engine(s->rep), s->base_img, s->base_len) != 0) {
      char why[480];
      snprintf(why, sizeof why, "going back to the replica's first image failed: %.400s",
               s->rep->ops->errmsg(s->rep));
      set_broken(s, why);
      return TERN_ESTORE;
    }
    s->pos = 0;
    tern__xcheck_reset(&s->xc, s->check_every, 0);
    free(s->snap_img);
    s->snap_img = NULL;
  }
  if (rc != 0) {
    if (back_later(s))
      tern__logf(s->log, s->log_ctx, 0,
                 "cluster store: going back to the newest snapshot failed (%.300s); new messages "
                 "are refused (BUSY, the clients keep them) until it has; trying again every "
                 "second",
                 e);
    return 0;
  }
  tern__confirm_clear(&s->unconf);
  s->wake_all = 1;
  tern__wake_signal(&s->wake);
  if (s->audit && s->back_void)
    tern__logf(s->log, s->log_ctx, 2,
               "cluster store: audit: replica went back to log entry %llu: the digests it logged "
               "from log entry %llu on are void",
               (unsigned long long)s->pos, (unsigned long long)s->back_void);
  s->back_void = 0;
  tern__logf(s->log, s->log_ctx, 1,
             "cluster store: the replica went back to %s %llu (from %llu) and reads the log again "
             "from there",
             loaded ? "the snapshot at entry" : "entry", (unsigned long long)s->pos,
             (unsigned long long)s->back_from);
  s->back_from = 0;
  return 0;
}

/* The replica took an entry the log does not have (at `seq` it took
 * writer `took`'s, the log has `has`'s, or none if NULL; `how` the log
 * said so: delivered, or read again): said, counted, and the replica goes back (go_back()).
 * Snapshots are written only of confirmed replicas, so the one it loads
 * holds entries the log has. Until it is back it applies nothing and
 * commits nothing. Outside a round. Returns 0 or TERN_ESTORE. */
/* The replica must go back (counted; go_back() does it): the entries from
 * `wrong` on may not be the log's. */
static void must_go_back(ns *s, uint64_t wrong) {
  /* What waited to be said describes the replica it leaves. */
  s->nuntold = s->nunsaid = 0;
  s->st.resyncs++;
  s->back_from = s->pos ? s->pos : 1;
  s->back_said_ms = 0;
  s->back_void = wrong ? wrong : 1;
}

static int resync(ns *s, uint64_t seq, const char *took, const char *has, const char *how) {
  int own = strncmp(took, s->idprefix, strlen(s->idprefix)) == 0;
  must_go_back(s, seq);
  tern__logf(s->log, s->log_ctx, 0,
             "cluster store: this replica took log entry %llu (writer %s) where the log has %s%s%s "
             "(%s): a NATS server that had lost its leadership answered; it goes back to the "
             "newest snapshot and reads the log again from there%s",
             (unsigned long long)seq, took, has ? "writer " : "no entry", has ? has : "",
             has ? "'s" : "", how,
             own ? "; the round was this relay's own: the messages of it this relay acknowledged "
                   "may be lost unless their senders send them again"
                 : "");
  return go_back(s);
}

/* Takes the other relays' window hashes the NATS thread heard; if two or
 * more hashed one of this replica's windows differently and none alike,
 * the replica took entries the log does not have (delivered by a server
 * that had lost its leadership: nothing else tells): it goes back.
 * Outside a round. Returns 0 or TERN_ESTORE. */
static int heard(ns *s) {
  pthread_mutex_lock(&s->mu);
  tern__xcheck_heard *q = s->xq;
  size_t n = s->xqlen;
  s->xq = NULL;
  s->xqlen = s->xqcap = 0;
  pthread_mutex_unlock(&s->mu);
  uint64_t now = mono_ms();
  for (size_t i = 0; i < n; i++) tern__xcheck_heard_one(&s->xc, q[i].end, q[i].h, q[i].from, now);
  free(q);
  uint64_t bad = tern__xcheck_outvoted(&s->xc);
  if (!bad || s->back_from) return 0;
  uint8_t h[16];
  int have = tern__xcheck_own(&s->xc, bad, h);
  if (have && bad == s->out_end && memcmp(h, s->out_h, 16) == 0) {
    /* Read again, the same entries: the log has them. The others hold a
     * replica of their own (or hashed entries that were not yet
     * confirmed); going back again would change nothing. */
    tern__xcheck_settle(&s->xc, bad);
    tern__logf(s->log, s->log_ctx, 0,
               "cluster store: after reading the log again this replica still hashes log entries "
               "%llu-%llu as before, while two or more other relays hash them otherwise: the log "
               "has what this replica took, and it does not go back again (the others may hold "
               "entries the log does not have)",
               (unsigned long long)(bad - s->check_every + 1), (unsigned long long)bad);
    return 0;
  }
  s->out_end = have ? bad : 0;
  if (have) memcpy(s->out_h, h, 16);
  must_go_back(s, bad > s->check_every ? bad - s->check_every + 1 : 1);
  s->st.outvoted++;
  tern__logf(s->log, s->log_ctx, 0,
             "cluster store: two or more other relays hashed log entries %llu-%llu differently from "
             "this replica, and none alike: it took entries the log does not have (a NATS server "
             "that had lost its leadership delivered them); it goes back to the newest snapshot "
             "and reads the log again from there",
             (unsigned long long)(bad - s->check_every + 1), (unsigned long long)bad);
  return go_back(s);
}

/* Entries taken on one server's word that the subscription has not
 * delivered for CONFIRM_REREAD_MS are read again: the log's answer
 * confirms them, or shows the replica took another entry (resync()). At
 * most 1,000 a call; a read that fails is tried on a later call. Outside
 * a round. Returns 0 or TERN_ESTORE. */
static int reread(ns *s) {
  if (mono_ms() < s->reread_retry_ms) return 0;
  for (int k = 0; k < 1000 && !s->back_from; k++) {
    uint64_t now = mono_ms();
    const tern__confirm_ent *e =
        now > CONFIRM_REREAD_MS ? tern__confirm_due(&s->unconf, now - CONFIRM_REREAD_MS) : NULL;
    if (!e) return 0;
    uint64_t seq = e->seq;
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetMsg(&m, s->js, s->stream, seq, NULL, &jerr);
    if ((st == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) && !m) {
      /* Compacted away (a snapshot covers it, written by a relay whose
       * replica the log had confirmed), or never in the log: the stream's
       * bounds say which. */
      uint64_t first = 0, last = 0;
      if (log_bounds(s, &first, &last) != 0) break;
      if (seq < first) {
        tern__confirm_drop(&s->unconf, seq);
        continue;
      }
      char t[TERN__CONFIRM_ID_MAX + 1];
      snprintf(t, sizeof t, "%s", e->id);
      return resync(s, seq, t, NULL, seq > last ? "read again: past the log's end" : "read again");
    }
    if (st != NATS_OK || !m) break;
    s->st.reread++;
    int rc = confirm(s, seq, entry_id(m), "read again");
    natsMsg_Destroy(m);
    if (rc < 0) return rc;
  }
  /* The cluster did not answer, or 1,000 were read: the rest a second
   * later (n_wake_ms must not stay in the past). */
  s->reread_retry_ms = mono_ms() + 1000;
  return 0;
}

/* The log's first and last sequences, asked of the cluster: 0, or -1 on
 * failure. */
static int log_bounds(ns *s, uint64_t *first, uint64_t *last) {
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  if (js_GetStreamInfo(&si, s->js, s->stream, NULL, &jerr) != NATS_OK || !si) return -1;
  *first = si->State.FirstSeq;
  *last = si->State.LastSeq;
  jsStreamInfo_Destroy(si);
  return 0;
}

/* The log's last sequence, asked of the cluster; 0 on failure. */
static uint64_t log_last(ns *s) {
  uint64_t first, last;
  return log_bounds(s, &first, &last) == 0 ? last : 0;
}

/* Publishes p[0..n) on `subject` and waits for JetStream's answer: 0 with
 * *seq, or -1 with *jerr and *status (if not NULL) saying why. */
static int publish_to(ns *s, const char *subject, const uint8_t *p, size_t n, jsPubOptions *po,
                      uint64_t *seq, jsErrCode *jerr, natsStatus *status) {
  natsMsg *m = NULL;
  jsPubAck *pa = NULL;
  natsStatus st = natsMsg_Create(&m, subject, NULL, (const char *)p, (int)n);
  if (st == NATS_OK) st = js_PublishMsg(&pa, s->js, m, po, jerr);
  natsMsg_Destroy(m);
  if (st == NATS_OK && !pa) st = NATS_ERR;
  if (st == NATS_OK) *seq = pa->Sequence;
  if (pa) jsPubAck_Destroy(pa);
  if (status) *status = st;
  return st == NATS_OK ? 0 : -1;
}

/* Writes a snapshot if the log has grown snap_every entries past the
 * newest one, and compacts the log (outside a round). Failures are logged
 * and retried 10 s later; they lose nothing (the log is whole). */
static void snap_take(ns *s) {
  if (!s->snap_every || s->in_round || s->broken[0] || s->back_from) return;
  uint64_t at = s->pos; /* the image's position */
  if (s->check_every) {
    /* The image kept at a window's end, once another relay agreed with
     * that window (or none is heard); one never agreed 16 windows on, or
     * disputed, is dropped, and the next window's end taken. */
    if (!s->snap_img) return;
    at = s->snap_img_pos;
    int ok = tern__xcheck_may_snapshot(&s->xc, at, mono_ms(), XCHECK_QUIET_MS);
    if (!ok && (s->pos >= at + 16 * s->check_every || tern__xcheck_disputed(&s->xc, at))) {
      free(s->snap_img);
      s->snap_img = NULL;
    }
    if (!ok) return;
  } else if (s->pos < s->snap_pos + s->snap_every) {
    return;
  }
  /* Only a confirmed replica is written: a snapshot must not spread an
   * entry the log does not have. */
  const tern__confirm_ent *p = tern__confirm_due(&s->unconf, UINT64_MAX);
  if (p && p->seq <= at) return;
  uint64_t now = mono_ms();
  if (now < s->snap_retry_ms || !atomic_load(&s->connected)) return;
  s->snap_retry_ms = now + 10000;
  natsMsg *h = NULL;
  int r = snap_last_head(s, &h);
  if (r < 0) {
    tern__logf(s->log, s->log_ctx, 1, "%s", s->err);
    return;
  }
  uint64_t head_seq = 0, prev = 0;
  if (r == 1) {
    uint64_t pos, len, n;
    const uint8_t *hash, *seqs;
    head_seq = natsMsg_GetSequence(h);
    if (snap_parse(h, &pos, &len, &n, &hash, &seqs) == 0) prev = pos;
    if (prev > s->snap_pos) s->snap_pos = prev;
    natsMsg_Destroy(h);
    if (at < s->snap_pos + s->snap_every) { /* another relay did it */
      s->snap_retry_ms = 0;
      free(s->snap_img);
      s->snap_img = NULL;
      return;
    }
  }
  uint8_t *img = s->snap_img;
  size_t len = s->snap_len;
  s->snap_img = NULL;
  if (!img && tern__rstore_image(tern__relay_sqlite_engine(s->rep), &img, &len) != 0) return;
  uint64_t pos = at;
  size_t chunk = s->max_entry - 4096, nchunks = len ? (len + chunk - 1) / chunk : 1;
  uint8_t *part = malloc(20 + chunk), *head = malloc(60 + 8 * nchunks);
  uint64_t first = 0;
  int ok = part && head;
  jsErrCode jerr = 0;
  for (size_t i = 0; ok && i < nchunks; i++) {
    size_t k = len - i * chunk < chunk ? len - i * chunk : chunk;
    memcpy(part, SNAP_CHUNK_MAGIC, 4);
    put64(part + 4, pos);
    put64(part + 12, i);
    if (k) memcpy(part + 20, img + i * chunk, k);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = s->timeout_ms;
    uint64_t seq = 0;
    ok = publish_to(s, s->snap_chunk, part, 20 + k, &po, &seq, &jerr, NULL) == 0;
    if (ok) put64(head + 60 + 8 * i, seq);
    if (i == 0) first = seq;
  }
  if (ok) {
    memcpy(head, SNAP_HEAD_MAGIC, 4);
    put64(head + 4, pos);
    put64(head + 12, len);
    put64(head + 20, nchunks);
    crypto_generichash(head + 28, 32, img, len, NULL, 0);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = s->timeout_ms;
    if (head_seq) po.ExpectLastSubjectSeq = head_seq;
    else po.ExpectNoMessage = true;
    uint64_t seq = 0;
    ok = publish_to(s, s->snap_head, head, 60 + 8 * nchunks, &po, &seq, &jerr, NULL) == 0;
  }
  free(part);
  free(head);
  free(img);
  if (!ok) {
    if (jerr != JSStreamWrongLastSequenceErr)
      tern__logf(s->log, s->log_ctx, 1,
                 "cluster store: writing a snapshot failed (JetStream error %d); the log stays whole, "
                 "trying again in 10 s",
                 (int)jerr);
    return;
  }
  /* Ours is the newest head. The log goes up to the previous snapshot
   * only: a relay that lags this one by less than `snapshot` entries
   * still finds every entry it has not applied. */
  s->snap_retry_ms = 0;
  s->snap_pos = pos;
  s->st.snapshots++;
  jsOptions o;
  natsStatus st = NATS_OK;
  if (prev) {
    jsOptions_Init(&o);
    o.Wait = s->timeout_ms;
    o.Stream.Purge.Subject = s->subject;
    o.Stream.Purge.Sequence = prev + 1;
    st = js_PurgeStream(s->js, s->stream, &o, &jerr);
  }
  /* (A purge by subject up to sequence 1 purges the whole subject: JetStream
   * reads a sequence of 0 or 1 as none. There is nothing below 1 anyway.) */
  jsOptions_Init(&o);
  o.Wait = s->timeout_ms;
  o.Stream.Purge.Subject = s->snap_chunk;
  o.Stream.Purge.Sequence = first;
  if (st == NATS_OK && first > 1) st = js_PurgeStream(s->js, s->snap_stream, &o, &jerr);
  jsOptions_Init(&o);
  o.Wait = s->timeout_ms;
  o.Stream.Purge.Subject = s->snap_head;
  o.Stream.Purge.Keep = 1;
  if (st == NATS_OK) st = js_PurgeStream(s->js, s->snap_stream, &o, &jerr);
  if (st == NATS_OK && prev) s->st.log_first = prev + 1;
  if (st == NATS_OK)
    tern__logf(s->log, s->log_ctx, 2,
               "cluster store: snapshot of the store at log entry %llu (%zu bytes in %zu "
               "chunk(s)); the log is kept from entry %llu",
               (unsigned long long)pos, len, nchunks,
               (unsigned long long)(prev ? prev + 1 : s->st.log_first));
  else
    tern__logf(s->log, s->log_ctx, 1,
               "cluster store: snapshot of the store at log entry %llu (%zu bytes in %zu "
               "chunk(s)); purging what it covers failed (%s, JetStream error %d): the next "
               "snapshot purges it",
               (unsigned long long)pos, len, nchunks, natsStatus_GetText(st), (int)jerr);
}

/* ---- rounds ------------------------------------------------------------------ */

static void report_state(ns *s) {
  unsigned d = atomic_load(&s->drops), r = atomic_load(&s->returns);
  if (d != s->said_drops) {
    tern__logf(s->log, s->log_ctx, 0,
               "cluster store: lost the NATS connection (%u time(s) so far); new messages are "
               "refused (BUSY, the clients keep them) until it is back",
               d);
    s->said_drops = d;
  }
  if (r != s->said_returns) {
    tern__logf(s->log, s->log_ctx, 2, "cluster store: connected to NATS again (log at %llu)",
               (unsigned long long)s->pos);
    s->said_returns = r;
  }
}

/* Opens our round if none is open: first applies what has arrived, so the
 * round starts from the newest state this relay has. */
static int begin(ns *s) {
  if (s->in_round) return 0;
  if (s->broken[0]) return fail(s, "cluster store: %s", s->broken);
  int rc = apply_queued(s, 0, 0);
  /* Broken, or a read that failed (s->err already says which). */
  if (rc < 0) return s->broken[0] ? fail(s, "cluster store: %s", s->broken) : TERN_ESTORE;
  if (s->back_from)
    return fail(s, "cluster store: the replica took a log entry the log does not have and is going "
                   "back to a snapshot; nothing is read or stored until it has");
  s->in_round = 1;
  s->ops.len = 0;
  s->ops.oom = 0;
  s->ndig = 0;
  uint8_t head[ENTRY_HEAD] = {ENTRY_VERSION};
  b_raw(&s->ops, head, sizeof head);
  return s->ops.oom ? TERN_ENOMEM : 0;
}

/* Starts recording a call: opens the round, takes the call's digest slot
 * (in call order) and writes its op code. Returns 0 or a negative code. */
static int rec_start(ns *s, uint8_t op, size_t *off, size_t *slot) {
  int rc = begin(s);
  if (rc < 0) return rc;
  if (s->ndig == s->capdig) {
    size_t cap = s->capdig ? s->capdig * 2 : 256;
    void *p = realloc(s->dig, cap * 16);
    if (!p) return TERN_ENOMEM;
    s->dig = p;
    s->capdig = cap;
  }
  *slot = s->ndig++;
  *off = s->ops.len;
  b_u8(&s->ops, op);
  return 0;
}

/* Runs the call recorded at `off` for its caller, keeping its digest. */
static int rec_run(ns *s, size_t off, size_t slot, xctx *x) {
  if (s->ops.oom) {
    s->ndig--;
    s->ops.len = off;
    s->ops.oom = 0;
    return TERN_ENOMEM;
  }
  rd r = {s->ops.p + off, s->ops.len - off, 0};
  dg_init(&x->d);
  int rc = exec_op(s, &r, x);
  dg_final(&x->d, s->dig[slot]);
  return rc;
}

/* The writer id of the entry the subscription delivered at `seq`, waiting
 * up to wait_ms for it if the subscription has delivered the one before
 * (nothing is taken from the queue): 1 with the id in out, 0 if it has not
 * come. */
static int delivered_id(ns *s, uint64_t seq, uint32_t wait_ms, char *out, size_t cap) {
  uint64_t deadline = mono_ms() + wait_ms;
  int found = 0;
  pthread_mutex_lock(&s->mu);
  for (;;) {
    for (size_t i = 0; i < s->qlen && !found; i++)
      if (s->q[i].seq == seq) {
        snprintf(out, cap, "%s", entry_id(s->q[i].m));
        found = 1;
      }
    /* Not waited for: a subscription that has not delivered the entry
     * before (it lags: the entry stays pending and is confirmed later), or
     * one that went past it (a consumer reset). */
    if (found || s->q_seen + 1 < seq || s->q_seen >= seq || mono_ms() >= deadline) break;
    cv_wait(s, deadline);
  }
  pthread_mutex_unlock(&s->mu);
  return found;
}

/* Appends the round's entry to the log. Returns 0 with *seq its sequence,
 * or TERN_ESTORE. */
static int publish(ns *s, const char *id, uint64_t *seq) {
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MsgId = id;
  po.MaxWait = s->timeout_ms;
  natsStatus st = NATS_OK;
  jsErrCode jerr = 0;
  if (publish_to(s, s->subject, s->ops.p, s->ops.len, &po, seq, &jerr, &st) == 0) {
#ifdef TERN_TEST_HOOKS
    if (s->fault_lost_ack) { /* in the log, and said to have failed */
      s->fault_lost_ack--;
      s->st.publish_errors++;
      return fail(s, "cluster store: appending to the log failed: its answer was lost (test fault; entry %llu)",
                  (unsigned long long)*seq);
    }
    if (s->fault_ack_early && *seq > 1) {
      s->fault_ack_early--;
      --*seq;
    }
#endif
    return 0;
  }
  s->st.publish_errors++;
  return fail(s, "cluster store: appending to the log failed: %s (JetStream error %d)%s",
              natsStatus_GetText(st), (int)jerr,
              st == NATS_TIMEOUT ? "; the cluster may have lost its quorum" : "");
}

static int n_commit(tern__relay_store *st, uint64_t now_ms) {
  ns *s = N(st);
  s->err_mine = 0;
  report_state(s);
  if (!s->in_round) return 0;
  if (s->ndig == 0) { /* reads only */
    s->in_round = 0;
    int rc = s->rep->ops->commit(s->rep, now_ms);
    if (rc < 0) s->rep->ops->rollback(s->rep, now_ms);
    return rc;
  }
  if (s->fault_commit) {
    s->fault_commit--;
    return fail(s, "cluster store: appending to the log failed: the stream is full (test fault)");
  }
  if (!atomic_load(&s->connected))
    return fail(s, "cluster store: not connected to NATS; the round is not stored");
  if (s->back_from)
    return fail(s, "cluster store: the replica took a log entry the log does not have and is going "
                   "back to a snapshot; the round is not stored");
  uint64_t now = mono_ms();
  if (now < s->pause_until)
    return fail(s, "cluster store: the cluster failed the last write; trying again in %llu ms",
                (unsigned long long)(s->pause_until - now));
  /* The entry's head: version, then the hash of the calls' digests. */
  dg all;
  dg_init(&all);
  for (size_t i = 0; i < s->ndig; i++) dg_bytes(&all, s->dig[i], 16);
  dg_final(&all, s->ops.p + 1);
  char id[48];
  snprintf(id, sizeof id, "%s-%llu", s->idprefix, (unsigned long long)++s->round_id);
  uint64_t seq = 0;
  if (publish(s, id, &seq) < 0) {
    /* A publish that timed out may still be in the log; then the replica
     * meets it there and applies it by the same rule as any entry. */
    s->pause_ms = s->pause_ms ? (s->pause_ms * 2 < 2000 ? s->pause_ms * 2 : 2000) : 250;
    s->pause_until = mono_ms() + s->pause_ms;
    return TERN_ESTORE;
  }
  s->pause_ms = 0;
  s->st.published++;
  if (seq == s->pos + 1) {
    /* Nothing came between: the replica's state is the log's, if the log
     * agrees. The subscription delivers entry seq within a moment; it
     * must be ours. A server that lost its leadership can acknowledge a
     * round the log does not have (spec/store.md, "Confirming entries"). */
    char there[TERN__CONFIRM_ID_MAX + 1];
    int seen = delivered_id(s, seq, CONFIRM_WAIT_MS, there, sizeof there);
    if (seen && strcmp(there, id) != 0) {
      s->rep->ops->rollback(s->rep, now_ms);
      s->in_round = 0;
      s->st.acks_refuted++;
      return fail(s,
                  "cluster store: the cluster acknowledged this round as log entry %llu, but the log "
                  "has writer %s's entry there: a NATS server that had lost its leadership "
                  "answered; the round is rolled back",
                  (unsigned long long)seq, there);
    }
    if (s->rep->ops->commit(s->rep, now_ms) < 0) {
      char why[400];
      snprintf(why, sizeof why, "the replica failed to commit a published round: %s",
               s->rep->ops->errmsg(s->rep));
      set_broken(s, why);
      return fail(s, "cluster store: %s", s->broken);
    }
    s->pos = seq;
    s->in_round = 0;
    taken(s, seq, id, 1);
    if (!seen && tern__confirm_add(&s->unconf, seq, id, mono_ms()) != 0)
      tern__logf(s->log, s->log_ctx, 1,
                 "cluster store: out of memory noting log entry %llu: it is not checked against "
                 "the log",
                 (unsigned long long)seq);
    /* The round's calls are not delimited: its first op code only. */
    trace(s, seq, "this relay's round in place", NULL, id, 1, s->ndig, s->ops.p + ENTRY_HEAD,
          s->ops.len > ENTRY_HEAD ? 1 : 0);
    audited(s);
    return 0;
  }
  /* Other relays' entries came first: apply them, then ours, which holds
   * only if its calls answer as they did here (every replica decides the
   * same). */
  s->st.reruns++;
  s->rep->ops->rollback(s->rep, now_ms);
  s->in_round = 0;
  s->own_seq = seq;
  s->own_ok = -1;
  snprintf(s->own_id, sizeof s->own_id, "%s", id);
  int rc = catch_up(s, seq);
  s->own_seq = 0;
  if (rc < 0) {
    if (s->broken[0]) return fail(s, "cluster store: %s", s->broken);
    return TERN_ESTORE; /* catch_up() said why */
  }
  if (s->own_ok < 0)
    return fail(s, "cluster store: the log's entries up to %llu could not be read",
                (unsigned long long)seq);
  if (s->own_ok == 2) {
    s->st.acks_refuted++;
    return fail(s,
                "cluster store: the cluster acknowledged this round as log entry %llu, but the log "
                "has writer %s's entry there: a NATS server that had lost its leadership "
                "answered; the round is not stored",
                (unsigned long long)seq, s->own_other);
  }
  if (!s->own_ok) return fail(s, "cluster store: another relay's writes changed this round's answers");
  s->st.published_after_rerun++;
  return 0;
}

static void n_rollback(tern__relay_store *st, uint64_t now_ms) {
  ns *s = N(st);
  s->rep->ops->rollback(s->rep, now_ms);
  s->in_round = 0;
  s->ndig = 0;
  s->ops.len = 0;
}

/* ---- the interface: writes -------------------------------------------------- */

static int n_put(tern__relay_store *st, tern__rs_put *put, size_t n) {
  ns *s = N(st);
  size_t off, slot;
  int rc = rec_start(s, OP_PUT, &off, &slot);
  if (rc < 0) return rc;
  b_u64(&s->ops, n);
  for (size_t i = 0; i < n; i++) {
    const tern__rs_put *p = &put[i];
    b_str(&s->ops, p->to);
    b_str(&s->ops, p->from);
    b_raw(&s->ops, p->sender_dev, 32);
    b_u64(&s->ops, p->cmid);
    b_u64(&s->ops, p->prev_cmid);
    b_u64(&s->ops, p->ts);
    b_u64(&s->ops, p->flags);
    b_u64(&s->ops, p->to_max_msgs);
    b_u64(&s->ops, p->to_max_bytes);
    b_u64(&s->ops, p->from_max_msgs);
    b_u64(&s->ops, p->from_max_bytes);
    b_u8(&s->ops, (uint8_t)(p->carbon != 0));
    b_blob(&s->ops, p->body, p->body_len);
  }
  xctx x = {.put = put};
  return rec_run(s, off, slot, &x);
}

static int n_device(tern__relay_store *st, const char *user, const uint8_t dev[32], uint64_t *cursor) {
  ns *s = N(st);
  size_t off, slot;
  int rc = rec_start(s, OP_DEVICE, &off, &slot);
  if (rc < 0) return rc;
  b_str(&s->ops, user);
  b_raw(&s->ops, dev, 32);
  xctx x = {.u1 = cursor};
  return rec_run(s, off, slot, &x);
}

static int n_acked(tern__relay_store *st, const char *user, const uint8_t dev[32], uint64_t up_to,
                   const uint64_t *sacks, size_t n, uint64_t *reached, tern__rs_delivered_fn cb,
                   void *ctx) {
  ns *s = N(st);
  size_t off, slot;
  int rc = rec_start(s, OP_ACKED, &off, &slot);
  if (rc < 0) return rc;
  b_str(&s->ops, user);
  b_raw(&s->ops, dev, 32);
  b_u64(&s->ops, up_to);
  b_u64(&s->ops, n);
  for (size_t i = 0; i < n; i++) b_u64(&s->ops, sacks[i]);
  xctx x = {.u1 = reached, .dcb = cb, .cbctx = ctx};
  return rec_run(s, off, slot, &x);
}

static int notice_op(ns *s, uint8_t op, const uint8_t dev[32], int kind, uint64_t cmid, int64_t code) {
  size_t off, slot;
  int rc = rec_start(s, op, &off, &slot);
  if (rc < 0) return rc;
  b_raw(&s->ops, dev, 32);
  b_u64(&s->ops, (uint64_t)(int64_t)kind);
  b_u64(&s->ops, cmid);
  if (op != OP_NOTICE_DEL) b_u64(&s->ops, (uint64_t)code);
  xctx x = {0};
  return rec_run(s, off, slot, &x);
}

static int n_notice_put(tern__relay_store *st, const uint8_t dev[32], int kind, uint64_t cmid,
                        int64_t code) {
  return notice_op(N(st), OP_NOTICE_PUT, dev, kind, cmid, code);
}
static int n_notice_del(tern__relay_store *st, const uint8_t dev[32], int kind, uint64_t cmid) {
  return notice_op(N(st), OP_NOTICE_DEL, dev, kind, cmid, 0);
}
static int n_notice_del_if(tern__relay_store *st, const uint8_t dev[32], int kind, uint64_t cmid,
                           int64_t code) {
  return notice_op(N(st), OP_NOTICE_DEL_IF, dev, kind, cmid, code);
}

static int n_device_remove(tern__relay_store *st, const uint8_t dev[32], char user[TERN_USER_MAX + 1]) {
  ns *s = N(st);
  size_t off, slot;
  int rc = rec_start(s, OP_DEVICE_REMOVE, &off, &slot);
  if (rc < 0) return rc;
  b_raw(&s->ops, dev, 32);
  xctx x = {.user = user};
  return rec_run(s, off, slot, &x);
}

static int n_expire(tern__relay_store *st, uint64_t before_ts, tern__rs_expired_fn cb, void *ctx) {
  ns *s = N(st);
  size_t off, slot;
  int rc = rec_start(s, OP_EXPIRE, &off, &slot);
  if (rc < 0) return rc;
  b_u64(&s->ops, before_ts);
  xctx x = {.ecb = cb, .cbctx = ctx};
  return rec_run(s, off, slot, &x);
}

static int n_hello_fresh(tern__relay_store *st, const uint8_t dev[32], uint64_t time_us) {
  ns *s = N(st);
  size_t off, slot;
  int rc = rec_start(s, OP_HELLO_FRESH, &off, &slot);
  if (rc < 0) return rc;
  b_raw(&s->ops, dev, 32);
  b_u64(&s->ops, time_us);
  xctx x = {0};
  return rec_run(s, off, slot, &x);
}

static int n_group_set(tern__relay_store *st, const char *group, const char *const *users, size_t n,
                       uint64_t *point) {
  ns *s = N(st);
  size_t off, slot;
  int rc = rec_start(s, OP_GROUP_SET, &off, &slot);
  if (rc < 0) return rc;
  b_str(&s->ops, group);
  b_u64(&s->ops, n);
  for (size_t i = 0; i < n; i++) b_str(&s->ops, users[i]);
  xctx x = {.u1 = point};
  return rec_run(s, off, slot, &x);
}

static int n_gdevice(tern__relay_store *st, const char *group, const char *user, const uint8_t dev[32],
                     uint64_t *cursor, uint64_t *limit) {
  ns *s = N(st);
  size_t off, slot;
  int rc = rec_start(s, OP_GDEVICE, &off, &slot);
  if (rc < 0) return rc;
  b_str(&s->ops, group);
  b_str(&s->ops, user);
  b_raw(&s->ops, dev, 32);
  xctx x = {.u1 = cursor, .u2 = limit};
  return rec_run(s, off, slot, &x);
}

static int n_gacked(tern__relay_store *st, const char *group, const char *user, const uint8_t dev[32],
                    uint64_t up_to, uint64_t *reached, tern__rs_greceipt_fn cb, void *ctx) {
  ns *s = N(st);
  size_t off, slot;
  int rc = rec_start(s, OP_GACKED, &off, &slot);
  if (rc < 0) return rc;
  b_str(&s->ops, group);
  b_str(&s->ops, user);
  b_raw(&s->ops, dev, 32);
  b_u64(&s->ops, up_to);
  xctx x = {.u1 = reached, .gcb = cb, .cbctx = ctx};
  return rec_run(s, off, slot, &x);
}

static int n_settled(tern__relay_store *st, const uint8_t dev[32], uint64_t below) {
  ns *s = N(st);
  size_t off, slot;
  int rc = rec_start(s, OP_SETTLED, &off, &slot);
  if (rc < 0) return rc;
  b_raw(&s->ops, dev, 32);
  b_u64(&s->ops, below);
  xctx x = {0};
  return rec_run(s, off, slot, &x);
}

/* Restart notices are about this relay's own UDP sessions; in a cluster a
 * restarted relay's clients find another relay through their endpoint
 * list, and a session's end is noticed by its keepalive. Nothing is kept
 * (spec/store.md, "The cluster store"). */
static int n_reset_put(tern__relay_store *st, const uint8_t dev[32], uint64_t time_us,
                       const uint8_t addr[18]) {
  (void)st, (void)dev, (void)time_us, (void)addr;
  return 0;
}
static int n_reset_del(tern__relay_store *st, const uint8_t dev[32], uint64_t time_us) {
  (void)st, (void)dev, (void)time_us;
  return 0;
}
static int n_reset_take(tern__relay_store *st,
                        void (*cb)(void *ctx, const uint8_t dev[32], uint64_t time_us,
                                   const uint8_t addr[18]),
                        void *ctx) {
  (void)st, (void)cb, (void)ctx;
  return 0;
}

/* ---- the interface: reads ---------------------------------------------------- */

#define READ_BEGIN(s)      \
  do {                     \
    int brc_ = begin(s);   \
    if (brc_ < 0) return brc_; \
  } while (0)

static int n_due(tern__relay_store *st, const char *user, uint64_t after, size_t limit,
                 int (*cb)(void *ctx, const tern__rmsg *m), void *ctx) {
  ns *s = N(st);
  READ_BEGIN(s);
  return s->rep->ops->due(s->rep, user, after, limit, cb, ctx);
}
static int n_floor(tern__relay_store *st, const char *user, uint64_t *floor) {
  ns *s = N(st);
  READ_BEGIN(s);
  return s->rep->ops->floor(s->rep, user, floor);
}
static int n_notice_list(tern__relay_store *st, const uint8_t dev[32],
                         int (*cb)(void *ctx, int kind, uint64_t cmid, int64_t code), void *ctx) {
  ns *s = N(st);
  READ_BEGIN(s);
  return s->rep->ops->notice_list(s->rep, dev, cb, ctx);
}
static int n_devices(tern__relay_store *st, const char *user, tern__rs_device_fn cb, void *ctx) {
  ns *s = N(st);
  READ_BEGIN(s);
  return s->rep->ops->devices(s->rep, user, cb, ctx);
}
static int n_group_role(tern__relay_store *st, const char *group, const char *user) {
  ns *s = N(st);
  READ_BEGIN(s);
  return s->rep->ops->group_role(s->rep, group, user);
}
static int n_group_members(tern__relay_store *st, const char *group,
                           int (*cb)(void *ctx, const char *user), void *ctx) {
  ns *s = N(st);
  READ_BEGIN(s);
  return s->rep->ops->group_members(s->rep, group, cb, ctx);
}
static int n_user_groups(tern__relay_store *st, const char *user, const uint8_t dev[32],
                         int (*cb)(void *ctx, const char *group), void *ctx) {
  ns *s = N(st);
  READ_BEGIN(s);
  return s->rep->ops->user_groups(s->rep, user, dev, cb, ctx);
}
static int n_group_devices(tern__relay_store *st, const char *group,
                           int (*cb)(void *ctx, const char *user, const uint8_t dev[32],
                                     uint64_t waiting),
                           void *ctx) {
  ns *s = N(st);
  READ_BEGIN(s);
  return s->rep->ops->group_devices(s->rep, group, cb, ctx);
}
static int n_settled_get(tern__relay_store *st, const uint8_t dev[32], uint64_t *below) {
  ns *s = N(st);
  READ_BEGIN(s);
  return s->rep->ops->settled_get(s->rep, dev, below);
}
static int n_count(tern__relay_store *st, uint64_t *messages) {
  ns *s = N(st);
  READ_BEGIN(s);
  return s->rep->ops->count(s->rep, messages);
}

/* New messages only while the cluster can take them; a round's entry
 * stays below the servers' largest message (max_payload, 1 MiB by
 * default): past it, the round so far is committed first. */
static int n_room(tern__relay_store *st, size_t body_len) {
  ns *s = N(st);
  report_state(s);
  if (s->broken[0] || s->back_from || !atomic_load(&s->connected) || mono_ms() < s->pause_until)
    return body_len ? TERN__RS_FULL : TERN__RS_ROOM;
  if (s->in_round && s->ndig && s->ops.len + body_len + ENTRY_MARGIN > s->max_entry)
    return TERN__RS_COMMIT_FIRST;
  return s->rep->ops->room(s->rep, body_len);
}

/* The replica's own wake, or the idle poll's (n_remote_take): a relay with
 * nothing else to do (no clients, so no timers) must still come round once
 * its subscription has been silent for a second. Without it a relay whose
 * consumer stalled stayed behind the log for as long as it had no clients
 * (seen in a CI run of the chaos test: relay 3 at entry 5,160 of 10,816
 * after the drain). */
static uint64_t n_wake_ms(const tern__relay_store *st) {
  const ns *s = CN(st);
  uint64_t w = s->rep->ops->wake_ms(s->rep);
  if (atomic_load(&s->connected) && !s->broken[0]) {
    uint64_t p = (uint64_t)atomic_load(&s->rx_ms) + 1000;
    if (p < s->poll_ms) p = s->poll_ms;
    if (p < w) w = p;
    const tern__confirm_ent *e = tern__confirm_due(&s->unconf, UINT64_MAX);
    if (e) {
      uint64_t r = e->at_ms + CONFIRM_REREAD_MS;
      if (r < s->reread_retry_ms) r = s->reread_retry_ms;
      if (r < w) w = r;
    }
    if (s->back_from && s->back_retry_ms < w) w = s->back_retry_ms;
  }
  return w;
}

static const char *n_errmsg(const tern__relay_store *st) {
  const ns *s = CN(st);
  return s->err_mine ? s->err : s->rep->ops->errmsg(s->rep);
}

static int n_remote_fd(const tern__relay_store *st) { return CN(st)->wake.rfd; }

static int n_remote_take(tern__relay_store *st, void (*inbox)(void *ctx, const char *user),
                         void (*device)(void *ctx, const uint8_t dev[32]), void *ctx) {
  ns *s = N(st);
  tern__wake_drain(&s->wake);
  report_state(s);
  if (s->in_round || s->broken[0]) return 0;
  /* The subscription silent for a second while connected: it may be stuck
   * (its consumer being recreated on another server); the log's end is
   * asked for and what is missing read by sequence, at most 5,000 entries
   * a call. The next poll is set first: n_wake_ms must not stay in the
   * past (a loop without a wait) while the cluster fails. */
  uint64_t now = mono_ms();
  int poll = atomic_load(&s->connected) && now >= s->poll_ms && now >= atomic_load(&s->rx_ms) + 1000;
  if (poll) s->poll_ms = now + 1000;
  if (s->back_from) {
    if (now >= s->back_retry_ms && go_back(s) < 0) return TERN_ESTORE;
    if (s->back_from) { /* not back yet: what came is dropped, and read again later */
      (void)apply_queued(s, 0, 0);
      return 0;
    }
  }
  int n = apply_queued(s, 0, 0);
  if (n < 0) return n;
  if (poll) {
    uint64_t last = log_last(s);
    if (last > s->pos) {
      uint64_t before = s->pos;
      if (catch_up(s, last < s->pos + 5000 ? last : s->pos + 5000) < 0) return TERN_ESTORE;
      n += (int)(s->pos - before);
    }
  }
  if (heard(s) < 0) return TERN_ESTORE;
  if (atomic_load(&s->connected) && reread(s) < 0) return TERN_ESTORE;
  said_pending(s);
  snap_take(s);
  if (s->wake_all) {
    s->wake_all = 0;
    inbox(ctx, NULL);
  }
  /* Taken first: a callback may open a round, which applies (and notes)
   * more. */
  touched in = touched_take(&s->t_inbox), dv = touched_take(&s->t_dev);
  for (size_t i = 0; i < in.n; i++) inbox(ctx, in.name[i]);
  for (size_t i = 0; i < dv.n; i++) device(ctx, (const uint8_t *)dv.name[i]);
  touched_free(&in);
  touched_free(&dv);
  return n;
}

#ifdef TERN_TEST_HOOKS
static void n_fault(tern__relay_store *st, int kind, unsigned n) {
  ns *s = N(st);
  if (kind == TERN__RS_FAULT_COMMIT) s->fault_commit = n;
  else if (kind == TERN__RS_FAULT_LOST_ACK) s->fault_lost_ack = n;
  else if (kind == TERN__RS_FAULT_DEAF) atomic_store(&s->deaf, (int)n);
  else if (kind == TERN__RS_FAULT_STALE_READ) s->fault_stale = n;
  else if (kind == TERN__RS_FAULT_ACK_EARLY) s->fault_ack_early = n;
  else if (kind == TERN__RS_FAULT_SNAP_LOAD) s->fault_snap_load = n;
  else if (kind == TERN__RS_FAULT_SWAP_DELIVERY) s->fault_swap = n;
  else if (s->rep->ops->fault) s->rep->ops->fault(s->rep, kind, n);
}
#endif

static void n_close(tern__relay_store *st);

static const tern__relay_store_ops nats_ops = {
    .put = n_put,
    .due = n_due,
    .device = n_device,
    .hello_fresh = n_hello_fresh,
    .reset_put = n_reset_put,
    .reset_del = n_reset_del,
    .reset_take = n_reset_take,
    .acked = n_acked,
    .floor = n_floor,
    .notice_put = n_notice_put,
    .notice_list = n_notice_list,
    .notice_del = n_notice_del,
    .notice_del_if = n_notice_del_if,
    .devices = n_devices,
    .device_remove = n_device_remove,
    .expire = n_expire,
    .group_set = n_group_set,
    .group_role = n_group_role,
    .group_members = n_group_members,
    .user_groups = n_user_groups,
    .gdevice = n_gdevice,
    .group_devices = n_group_devices,
    .gacked = n_gacked,
    .settled = n_settled,
    .settled_get = n_settled_get,
    .room = n_room,
    .commit = n_commit,
    .rollback = n_rollback,
    .wake_ms = n_wake_ms,
    .errmsg = n_errmsg,
    .count = n_count,
    .remote_fd = n_remote_fd,
    .remote_take = n_remote_take,
    .close = n_close,
#ifdef TERN_TEST_HOOKS
    .fault = n_fault,
#endif
};

/* ---- NATS's threads ----------------------------------------------------------- */

static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure) {
  (void)nc, (void)sub;
  ns *s = closure;
  jsMsgMetaData *md = NULL;
  uint64_t seq = 0;
  if (natsMsg_GetMetaData(&md, m) == NATS_OK && md) {
    seq = md->Sequence.Stream;
    jsMsgMetaData_Destroy(md);
  }
  pthread_mutex_lock(&s->mu);
  if (seq == 0 || atomic_load(&s->deaf)) {
    pthread_mutex_unlock(&s->mu);
    natsMsg_Destroy(m);
    return;
  }
  if (s->qlen == s->qcap) {
    size_t cap = s->qcap ? s->qcap * 2 : 256;
    qent *q = realloc(s->q, cap * sizeof(*q));
    if (!q) {
      /* Dropped: the gap it leaves is read by sequence (apply_queued). */
      pthread_mutex_unlock(&s->mu);
      natsMsg_Destroy(m);
      return;
    }
    s->q = q;
    s->qcap = cap;
  }
  s->q[s->qlen++] = (qent){m, seq};
  atomic_store(&s->rx_ms, (unsigned long long)mono_ms());
  if (seq > s->q_seen) s->q_seen = seq;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  tern__wake_signal(&s->wake);
}

/* Another relay's window hash (core NATS, on libnats' thread): queued for
 * heard(). Malformed ones and this relay's own are dropped. */
static void on_check(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure) {
  (void)nc, (void)sub;
  ns *s = closure;
  const uint8_t *d = (const uint8_t *)natsMsg_GetData(m);
  int len = natsMsg_GetDataLength(m);
  /* Windows of another size cover other entries: not comparable. */
  if (len == 44 && memcmp(d, "TXC1", 4) == 0 && get64(d + 28) != s->my_tag &&
      get64(d + 36) == s->check_every) {
    pthread_mutex_lock(&s->mu);
    if (s->xqlen == s->xqcap && s->xqlen < 65536) {
      size_t cap = s->xqcap ? s->xqcap * 2 : 64;
      tern__xcheck_heard *q = realloc(s->xq, cap * sizeof(*q));
      if (q) {
        s->xq = q;
        s->xqcap = cap;
      }
    }
    if (s->xqlen < s->xqcap) { /* else dropped: a window left unchecked */
      tern__xcheck_heard *h = &s->xq[s->xqlen++];
      h->end = get64(d + 4);
      memcpy(h->h, d + 12, 16);
      h->from = get64(d + 28);
    }
    pthread_mutex_unlock(&s->mu);
    tern__wake_signal(&s->wake);
  }
  natsMsg_Destroy(m);
}

static void on_xsub_done(void *closure) {
  ns *s = closure;
  pthread_mutex_lock(&s->mu);
  s->xsub_done = 1;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void on_sub_done(void *closure) {
  ns *s = closure;
  pthread_mutex_lock(&s->mu);
  s->sub_done = 1;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void on_closed(natsConnection *nc, void *closure) {
  (void)nc;
  ns *s = closure;
  pthread_mutex_lock(&s->mu);
  s->nc_closed = 1;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void on_disconnected(natsConnection *nc, void *closure) {
  (void)nc;
  ns *s = closure;
  atomic_store(&s->connected, 0);
  atomic_fetch_add(&s->drops, 1);
  tern__wake_signal(&s->wake);
}

static void on_reconnected(natsConnection *nc, void *closure) {
  (void)nc;
  ns *s = closure;
  atomic_store(&s->connected, 1);
  atomic_fetch_add(&s->returns, 1);
  tern__wake_signal(&s->wake);
}

/* ---- open, close --------------------------------------------------------------- */

int tern__is_nats_url(const char *path) { return path && strncmp(path, "nats://", 7) == 0; }

/* Waits (at most 5 s) until a NATS thread sets *flag (under s->mu). */
static void wait_flag(ns *s, const int *flag) {
  pthread_mutex_lock(&s->mu);
  uint64_t end = mono_ms() + 5000;
  while (!*flag && mono_ms() < end) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 50 * 1000000;
    ts.tv_sec += ts.tv_nsec / 1000000000;
    ts.tv_nsec %= 1000000000;
    pthread_cond_timedwait(&s->cv, &s->mu, &ts);
  }
  pthread_mutex_unlock(&s->mu);
}

static void n_close(tern__relay_store *st) {
  ns *s = N(st);
  if (!s) return;
  if (s->sub) {
    /* Destroy, not Unsubscribe: Unsubscribe also deletes the ordered
     * consumer, and libnats (3.4.1, and still upstream) reads the
     * consumer's name outside the subscription's lock while its own
     * thread that recreates a stalled ordered consumer frees that name
     * (a use after free ASan caught in cluster_store_test, with the
     * cluster gone and coming back). Destroy unsubscribes without
     * deleting; the server removes the consumer once nobody has listened
     * for INACTIVE_NS (set at js_Subscribe). The delivery thread keeps
     * its own reference and still calls on_sub_done. */
    natsSubscription_Destroy(s->sub);
    s->sub = NULL;
    wait_flag(s, &s->sub_done);
  }
  if (s->xsub) {
    natsSubscription_Unsubscribe(s->xsub);
    wait_flag(s, &s->xsub_done);
  }
  if (s->nc) {
    /* The disconnected and closed callbacks come after Close returns, on
     * libnats' own thread, with s as their closure: s must outlive them
     * (a write into freed memory here once broke the next relay's
     * SQLite schema in cluster_store_test). */
    natsConnection_Close(s->nc);
    wait_flag(s, &s->nc_closed);
  }
  if (s->xsub) natsSubscription_Destroy(s->xsub);
  free(s->xq);
  if (s->js) jsCtx_Destroy(s->js);
  if (s->nc) natsConnection_Destroy(s->nc);
  for (size_t i = 0; i < s->qlen; i++) natsMsg_Destroy(s->q[i].m);
  free(s->q);
  if (s->rep) s->rep->ops->close(s->rep);
  free(s->ops.p);
  free(s->dig);
  touched_free(&s->t_inbox);
  touched_free(&s->t_dev);
  tern__confirm_free(&s->unconf);
  free(s->base_img);
  free(s->snap_img);
  tern__wake_close(&s->wake);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

/* Splits "servers?k=v&k=v": the servers into s->url (and their count),
 * the parameters into s. Returns 0 or TERN_EINVAL (why in err). */
static int parse_url(ns *s, const char *url, int *nservers, int *replicas, char *err, size_t errcap) {
  const char *q = strchr(url, '?');
  size_t n = q ? (size_t)(q - url) : strlen(url);
  if (n == 0 || n >= sizeof(s->url)) {
    snprintf(err, errcap, "cluster url too long or empty");
    return TERN_EINVAL;
  }
  memcpy(s->url, url, n);
  s->url[n] = 0;
  *nservers = 1;
  for (const char *p = s->url; *p; p++)
    if (*p == ',') ++*nservers;
  for (const char *p = s->url; p;) {
    if (strncmp(p, "nats://", 7) != 0) {
      snprintf(err, errcap, "cluster url: each server is nats://host:port (got \"%s\")", p);
      return TERN_EINVAL;
    }
    p = strchr(p, ',');
    if (p) p++;
  }
  snprintf(s->stream, sizeof(s->stream), "TERN");
  *replicas = *nservers >= 3 ? 3 : 1;
  s->snap_every = 100000;
  s->check_every = 64;
  for (const char *p = q ? q + 1 : NULL; p && *p;) {
    const char *amp = strchr(p, '&');
    size_t len = amp ? (size_t)(amp - p) : strlen(p);
    char kv[96];
    if (len >= sizeof(kv)) len = sizeof(kv) - 1;
    memcpy(kv, p, len);
    kv[len] = 0;
    char *eq = strchr(kv, '=');
    if (!eq) {
      snprintf(err, errcap, "cluster url: \"%s\" is not key=value", kv);
      return TERN_EINVAL;
    }
    *eq++ = 0;
    if (!strcmp(kv, "stream")) {
      size_t k = strlen(eq);
      if (k == 0 || k >= sizeof(s->stream) || strspn(eq, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") != k) {
        snprintf(err, errcap, "cluster url: stream \"%s\": letters, digits, _ and - only, 1-63", eq);
        return TERN_EINVAL;
      }
      snprintf(s->stream, sizeof(s->stream), "%s", eq);
    } else if (!strcmp(kv, "snapshot") || !strcmp(kv, "audit") || !strcmp(kv, "check")) {
      char *end;
      unsigned long long e = strtoull(eq, &end, 10);
      if (*end || !*eq || *eq == '-') {
        snprintf(err, errcap, "cluster url: %s is a number of entries (got \"%s\")", kv, eq);
        return TERN_EINVAL;
      }
      if (!strcmp(kv, "snapshot")) s->snap_every = e;
      else if (!strcmp(kv, "check")) s->check_every = e;
      else s->audit = e;
    } else if (!strcmp(kv, "replicas")) {
      char *end;
      long r = strtol(eq, &end, 10);
      if (*end || r < 1 || r > 5) {
        snprintf(err, errcap, "cluster url: replicas is 1 to 5 (got \"%s\")", eq);
        return TERN_EINVAL;
      }
      *replicas = (int)r;
    } else {
      snprintf(err, errcap, "cluster url: unknown parameter \"%s\" (stream, replicas, snapshot, audit, check)", kv);
      return TERN_EINVAL;
    }
    p = amp ? amp + 1 : NULL;
  }
  snprintf(s->subject, sizeof(s->subject), "tern.log.%s", s->stream);
  snprintf(s->snap_stream, sizeof(s->snap_stream), "%s_SNAP", s->stream);
  snprintf(s->snap_head, sizeof(s->snap_head), "tern.snap.%s.head", s->stream);
  snprintf(s->snap_chunk, sizeof(s->snap_chunk), "tern.snap.%s.chunk", s->stream);
  snprintf(s->xsubject, sizeof(s->xsubject), "tern.check.%s", s->stream);
  return 0;
}

static int connect_cluster(ns *s, int nservers, char *err, size_t errcap) {
  natsOptions *o = NULL;
  const char **servers = calloc((size_t)nservers, sizeof(*servers));
  char *copy = strdup(s->url);
  int rc = TERN_ESTORE;
  if (!servers || !copy) {
    rc = TERN_ENOMEM;
    goto out;
  }
  int k = 0;
  for (char *p = strtok(copy, ","); p && k < nservers; p = strtok(NULL, ",")) servers[k++] = p;
  if (natsOptions_Create(&o) != NATS_OK || natsOptions_SetServers(o, servers, k) != NATS_OK ||
      natsOptions_SetName(o, "ternd") != NATS_OK ||
      natsOptions_SetTimeout(o, s->timeout_ms) != NATS_OK ||
      natsOptions_SetMaxReconnect(o, -1) != NATS_OK ||
      natsOptions_SetReconnectWait(o, 250) != NATS_OK ||
      /* The servers in the order given (an operator spreads relays by
       * listing them differently), and a server that stops answering
       * (cut off, not closed) is left after two missed pings. */
      natsOptions_SetNoRandomize(o, true) != NATS_OK ||
      natsOptions_SetPingInterval(o, s->timeout_ms < 1000 ? 1000 : s->timeout_ms) != NATS_OK ||
      natsOptions_SetMaxPingsOut(o, 2) != NATS_OK ||
      natsOptions_SetDisconnectedCB(o, on_disconnected, s) != NATS_OK ||
      natsOptions_SetReconnectedCB(o, on_reconnected, s) != NATS_OK ||
      natsOptions_SetClosedCB(o, on_closed, s) != NATS_OK) {
    snprintf(err, errcap, "cannot set up the NATS client");
    goto out;
  }
  natsStatus st = natsConnection_Connect(&s->nc, o);
  if (st != NATS_OK) {
    snprintf(err, errcap, "cannot reach the NATS cluster at %s: %s", s->url, natsStatus_GetText(st));
    s->nc = NULL;
    goto out;
  }
  atomic_store(&s->connected, 1);
  int64_t mp = natsConnection_GetMaxPayload(s->nc);
  if (mp < (int64_t)(4 * ENTRY_MARGIN)) {
    snprintf(err, errcap, "the NATS server at %s takes messages of %lld bytes at most; the "
             "cluster store needs %u (max_payload)", s->url, (long long)mp, 4 * ENTRY_MARGIN);
    goto out;
  }
  s->max_entry = (size_t)mp;
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = s->timeout_ms;
  if (natsConnection_JetStream(&s->js, s->nc, &jo) != NATS_OK) {
    snprintf(err, errcap, "cannot open a JetStream context on %s", s->url);
    goto out;
  }
  rc = 0;
out:
  natsOptions_Destroy(o);
  free(servers);
  free(copy);
  return rc;
}

/* Finds the stream, or creates it. *last receives its last sequence. */
static int find_stream(ns *s, int replicas, uint64_t *last, uint64_t *first, char *err,
                       size_t errcap) {
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus st = js_GetStreamInfo(&si, s->js, s->stream, NULL, &jerr);
  if (st != NATS_OK && jerr == JSStreamNotFoundErr) {
    jsStreamConfig c;
    jsStreamConfig_Init(&c);
    const char *subj[1] = {s->subject};
    c.Name = s->stream;
    c.Subjects = subj;
    c.SubjectsLen = 1;
    c.Storage = js_FileStorage;
    c.Retention = js_LimitsPolicy;
    c.Discard = js_DiscardNew; /* full: refuse new entries, never drop old ones */
    c.Replicas = replicas;
    c.Duplicates = DEDUP_WINDOW_NS;
    jerr = 0;
    st = js_AddStream(&si, s->js, &c, NULL, &jerr);
    if (st != NATS_OK) {
      snprintf(err, errcap,
               "cannot create the JetStream stream %s (R%d) on %s: %s (JetStream error %d)%s",
               s->stream, replicas, s->url, natsStatus_GetText(st), (int)jerr,
               jerr == JSInsufficientResourcesErr || replicas > 1
                   ? "; R3 needs a cluster of three JetStream servers"
                   : "");
      return TERN_ESTORE;
    }
    tern__logf(s->log, s->log_ctx, 2, "cluster store: created stream %s (R%d, subject %s)", s->stream,
               replicas, s->subject);
  }
  if (st != NATS_OK || !si) {
    if (st == NATS_NO_RESPONDERS || jerr == JSNotEnabledErr || jerr == JSNotEnabledForAccountErr)
      snprintf(err, errcap,
               "JetStream is off on the NATS server at %s (start nats-server with -js, or "
               "jetstream in its config)",
               s->url);
    else
      snprintf(err, errcap,
               "the NATS cluster at %s did not answer for stream %s: %s (JetStream error %d); is "
               "JetStream on, and does the cluster have a quorum?",
               s->url, s->stream, natsStatus_GetText(st), (int)jerr);
    return TERN_ESTORE;
  }
  *last = si->State.LastSeq;
  *first = si->State.FirstSeq;
  jsStreamInfo_Destroy(si);
  if (*last == 0) {
    /* The log's first entry, so that every commit can name the position it
     * expects (JetStream reads an expected sequence of 0 as "none"). Two
     * relays starting at once write it once: same id. */
    uint8_t head[ENTRY_HEAD] = {ENTRY_VERSION};
    natsMsg *m = NULL;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    char id[96];
    snprintf(id, sizeof id, "%s-first", s->stream);
    po.MsgId = id;
    jsPubAck *pa = NULL;
    st = natsMsg_Create(&m, s->subject, NULL, (const char *)head, sizeof head);
    if (st == NATS_OK) st = js_PublishMsg(&pa, s->js, m, &po, &jerr);
    natsMsg_Destroy(m);
    if (st != NATS_OK || !pa) {
      snprintf(err, errcap, "cannot write the first entry of stream %s: %s", s->stream,
               natsStatus_GetText(st));
      return TERN_ESTORE;
    }
    *last = pa->Sequence;
    jsPubAck_Destroy(pa);
  }
  return 0;
}

int tern__relay_nats_open(tern__relay_store **out, const tern__nats_config *cfg, char *err,
                          size_t errcap) {
  *out = NULL;
  if (!cfg || !tern__is_nats_url(cfg->url)) {
    snprintf(err, errcap, "cluster url must start with nats://");
    return TERN_EINVAL;
  }
  if (sodium_init() < 0) return TERN_ENOMEM;
  ns *s = calloc(1, sizeof(*s));
  if (!s) return TERN_ENOMEM;
  s->base.ops = &nats_ops;
  s->log = cfg->log;
  s->log_ctx = cfg->log_ctx;
  s->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 1000;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  s->wake.rfd = s->wake.wfd = -1;
  tern__u64map_init(&s->t_inbox.idx);
  tern__u64map_init(&s->t_dev.idx);
  uint8_t rnd[8];
  randombytes_buf(rnd, sizeof rnd);
  snprintf(s->idprefix, sizeof s->idprefix, "r");
  for (int i = 0; i < 8; i++)
    snprintf(s->idprefix + 1 + 2 * i, sizeof s->idprefix - 1 - 2 * i, "%02x", rnd[i]);
  int nservers = 0, replicas = 1, rc;
  uint64_t last = 0;
  if ((rc = parse_url(s, cfg->url, &nservers, &replicas, err, errcap)) != 0) goto fail;
  if (tern__wake_open(&s->wake) != 0) {
    snprintf(err, errcap, "cannot make a wake-up descriptor: %s", strerror(errno));
    rc = TERN_ESTORE;
    goto fail;
  }
  tern__rstore_config rc_cfg = {.path = ":memory:", .synchronous = 1};
  if ((rc = tern__relay_sqlite_open(&s->rep, &rc_cfg, cfg->log, cfg->log_ctx, err, errcap)) != 0)
    goto fail;
  if ((rc = connect_cluster(s, nservers, err, errcap)) != 0) goto fail;
  s->replicas = replicas;
  uint64_t first = 0;
  if ((rc = find_stream(s, replicas, &last, &first, err, errcap)) != 0) goto fail;
  if ((rc = snap_stream(s, err, errcap)) != 0) goto fail;
  int loaded = 0;
  if ((rc = snap_load(s, &loaded, err, errcap)) != 0) goto fail;
  /* Without a snapshot, entry 0's image is what a replica that took a
   * wrong entry goes back to (resync()). */
  if (!loaded && tern__rstore_image(tern__relay_sqlite_engine(s->rep), &s->base_img, &s->base_len) != 0) {
    snprintf(err, errcap, "cannot keep the replica's first image: out of memory");
    rc = TERN_ENOMEM;
    goto fail;
  }
  if (first > s->pos + 1) {
    snprintf(err, errcap,
             "the log %s starts at entry %llu, but the newest snapshot is at entry %llu: entries "
             "between them are gone",
             s->stream, (unsigned long long)first, (unsigned long long)s->pos);
    rc = TERN_ESTORE;
    goto fail;
  }
  s->st.log_first = first ? first : 1;
  /* The cross-check: this relay's tag, and the other relays' hashes. */
  if (!loaded) tern__xcheck_reset(&s->xc, s->check_every, s->pos);
  s->my_tag = tern__xcheck_tag(s->idprefix);
  if (s->check_every) {
    natsStatus xs = natsConnection_Subscribe(&s->xsub, s->nc, s->xsubject, on_check, s);
    if (xs == NATS_OK) xs = natsSubscription_SetPendingLimits(s->xsub, -1, -1);
    if (xs == NATS_OK) xs = natsSubscription_SetOnCompleteCB(s->xsub, on_xsub_done, s);
    if (xs != NATS_OK) {
      snprintf(err, errcap, "cannot subscribe to %s: %s", s->xsubject, natsStatus_GetText(xs));
      rc = TERN_ESTORE;
      goto fail;
    }
  }
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Ordered = true;
  so.Config.DeliverPolicy = js_DeliverByStartSequence;
  so.Config.OptStartSeq = s->pos + 1;
  so.Config.InactiveThreshold = INACTIVE_NS;
  jsErrCode jerr = 0;
  natsStatus st = js_Subscribe(&s->sub, s->js, s->subject, on_msg, s, NULL, &so, &jerr);
  if (st != NATS_OK) {
    snprintf(err, errcap, "cannot read stream %s: %s (JetStream error %d)", s->stream,
             natsStatus_GetText(st), (int)jerr);
    s->sub = NULL;
    rc = TERN_ESTORE;
    goto fail;
  }
  (void)natsSubscription_SetPendingLimits(s->sub, -1, -1);
  (void)natsSubscription_SetOnCompleteCB(s->sub, on_sub_done, s);
  uint64_t t0 = mono_ms();
  uint32_t catchup = cfg->catchup_ms ? cfg->catchup_ms : 120000;
  if (apply_queued(s, last, t0 + catchup) < 0 || s->pos < last) {
    snprintf(err, errcap, "read %llu of the %llu entries of the log in %u ms%s%s",
             (unsigned long long)s->pos, (unsigned long long)last, (unsigned)(mono_ms() - t0),
             s->broken[0] ? ": " : "", s->broken);
    rc = TERN_ESTORE;
    goto fail;
  }
  uint64_t msgs = 0;
  (void)s->rep->ops->count(s->rep, &msgs);
  (void)s->rep->ops->commit(s->rep, mono_ms());
  tern__logf(s->log, s->log_ctx, 2,
             "cluster store: NATS at %s, stream %s, log read to entry %llu in %llu ms (%llu "
             "messages stored)",
             s->url, s->stream, (unsigned long long)s->pos, (unsigned long long)(mono_ms() - t0),
             (unsigned long long)msgs);
  *out = &s->base;
  return 0;
fail:
  n_close(&s->base);
  return rc;
}

int tern__relay_nats_digest(tern__relay_store *st, uint8_t out[16]) {
  ns *s = N(st);
  if (s->in_round) return TERN_EINVAL;
  return tern__rstore_digest(tern__relay_sqlite_engine(s->rep), out);
}

void tern__relay_nats_stats(const tern__relay_store *st, tern__nats_stats *out) {
  const ns *s = CN(st);
  *out = s->st;
  out->position = s->pos;
  out->connected = atomic_load(&s->connected);
}
