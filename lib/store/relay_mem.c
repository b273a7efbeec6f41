/*
 * The relay store interface (relay_store.h) in memory: the same rules as
 * the SQLite backend (spec/store.md), with plain arrays. A round's first
 * write keeps a copy of the state it started from; rollback() goes back to
 * it and commit() drops it, so what survives a simulated crash (the core
 * thrown away, the store kept, the open round rolled back) is exactly the
 * committed rounds. Meant for the simulation and tests: every round copies
 * the whole state, and nothing is ever on disk.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/relay_store.h"

typedef struct mmsg {
  char user[TERN_USER_MAX + 1];
  char from[TERN_USER_MAX + 1];
  char peer[TERN_USER_MAX + 1]; /* a carbon's recipient, "" otherwise */
  uint64_t seq, prev_seq, ts, cmid, flags;
  uint32_t gmembers, gdelivered; /* a group message: sent to, got it */
  uint8_t dev[32];
  uint8_t *body; /* owned; NULL when empty */
  size_t len;
  int delivered;
} mmsg;

typedef struct muser {
  char user[TERN_USER_MAX + 1];
  uint64_t last_seq; /* the last seq assigned in its inbox */
} muser;

typedef struct mchain {
  char user[TERN_USER_MAX + 1], sender[TERN_USER_MAX + 1];
  uint64_t last_seq;
} mchain;

typedef struct mdedup {
  uint8_t dev[32];
  uint64_t cmid, seq, ts;
} mdedup;

typedef struct mdevice {
  uint8_t dev[32];
  char user[TERN_USER_MAX + 1];
  uint64_t cursor;
} mdevice;

typedef struct mhello {
  uint8_t dev[32];
  uint64_t time_us; /* the largest HELLO timestamp accepted from dev */
  uint64_t settled; /* dev's settled floor: no cmid below it comes again */
} mhello;

typedef struct mreset {
  uint8_t dev[32];
  uint64_t time_us;
  uint8_t addr[TERN__RS_ADDR_BYTES];
} mreset;

typedef struct mmember {
  char grp[TERN_USER_MAX + 1], user[TERN_USER_MAX + 1];
  uint64_t joined, left; /* left: UINT64_MAX while a member */
  uint64_t counted;      /* its receipts are counted up to here */
} mmember;

typedef struct mgcursor {
  char grp[TERN_USER_MAX + 1], user[TERN_USER_MAX + 1];
  uint8_t dev[32];
  uint64_t cursor;
} mgcursor;

typedef struct mnotice {
  uint8_t dev[32];
  int kind;
  uint64_t cmid;
  int64_t code;
} mnotice;

/* A growable array of one of the records above. */
typedef struct arr {
  void *p;
  size_t n, cap;
} arr;

typedef struct mstate {
  arr msgs, users, chains, dedup, devices, notices, hellos, resets, members, gcursors;
} mstate;

typedef struct mem_store {
  tern__relay_store base;
  mstate st;
  mstate *snap; /* the state the open round started from; NULL: none */
  char err[256];
#ifdef TERN_TEST_HOOKS
  unsigned fault_commits;
  int fault_dup;
  int fault_carbon2;
  int fault_leave_early;
#endif
} mem_store;

#define AT(a, type, i) (&((type *)(a).p)[i])

static mem_store *M(tern__relay_store *s) { return (mem_store *)s; }

/* A new zeroed record at the end of `a`, or NULL. */
static void *push(arr *a, size_t elem) {
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 16;
    void *p = realloc(a->p, cap * elem);
    if (!p) return NULL;
    a->p = p;
    a->cap = cap;
  }
  void *r = (char *)a->p + a->n * elem;
  memset(r, 0, elem);
  a->n++;
  return r;
}

/* Removes record i, keeping the order of the rest. */
static void erase(arr *a, size_t i, size_t elem) {
  char *p = a->p;
  memmove(p + i * elem, p + (i + 1) * elem, (a->n - i - 1) * elem);
  a->n--;
}

static void free_state(mstate *s) {
  for (size_t i = 0; i < s->msgs.n; i++) free(AT(s->msgs, mmsg, i)->body);
  free(s->msgs.p);
  free(s->users.p);
  free(s->chains.p);
  free(s->dedup.p);
  free(s->devices.p);
  free(s->notices.p);
  free(s->hellos.p);
  free(s->resets.p);
  free(s->members.p);
  free(s->gcursors.p);
  memset(s, 0, sizeof(*s));
}

static int copy_arr(arr *to, const arr *from, size_t elem) {
  to->n = to->cap = 0;
  to->p = NULL;
  if (!from->n) return 0;
  to->p = malloc(from->n * elem);
  if (!to->p) return -1;
  memcpy(to->p, from->p, from->n * elem);
  to->n = to->cap = from->n;
  return 0;
}

/* A deep copy of `from` (bodies included), or NULL. */
static mstate *copy_state(const mstate *from) {
  mstate *s = calloc(1, sizeof(*s));
  if (!s) return NULL;
  int bad = copy_arr(&s->msgs, &from->msgs, sizeof(mmsg)) | copy_arr(&s->users, &from->users, sizeof(muser)) |
            copy_arr(&s->chains, &from->chains, sizeof(mchain)) |
            copy_arr(&s->dedup, &from->dedup, sizeof(mdedup)) |
            copy_arr(&s->devices, &from->devices, sizeof(mdevice)) |
            copy_arr(&s->hellos, &from->hellos, sizeof(mhello)) |
            copy_arr(&s->resets, &from->resets, sizeof(mreset)) |
            copy_arr(&s->notices, &from->notices, sizeof(mnotice)) |
            copy_arr(&s->members, &from->members, sizeof(mmember)) |
            copy_arr(&s->gcursors, &from->gcursors, sizeof(mgcursor));
  for (size_t i = 0; !bad && i < s->msgs.n; i++) {
    mmsg *m = AT(s->msgs, mmsg, i);
    if (!m->body) continue;
    uint8_t *b = malloc(m->len);
    if (!b) {
      for (size_t j = i; j < s->msgs.n; j++) AT(s->msgs, mmsg, j)->body = NULL;
      bad = 1;
      break;
    }
    memcpy(b, m->body, m->len);
    m->body = b;
  }
  if (bad) {
    free_state(s);
    free(s);
    return NULL;
  }
  return s;
}

static int fail(mem_store *s, int code, const char *what) {
  snprintf(s->err, sizeof s->err, "%s (%s)", what, tern_errname(code));
  return code;
}

/* Before the round's first write: keep what it started from. */
static int begin_write(mem_store *s) {
  if (s->snap) return 0;
  s->snap = copy_state(&s->st);
  return s->snap ? 0 : fail(s, TERN_ENOMEM, "begin round: out of memory");
}

static muser *find_user(mstate *st, const char *user) {
  for (size_t i = 0; i < st->users.n; i++)
    if (!strcmp(AT(st->users, muser, i)->user, user)) return AT(st->users, muser, i);
  return NULL;
}

static mdedup *find_dedup(mstate *st, const uint8_t dev[32], uint64_t cmid) {
  for (size_t i = 0; i < st->dedup.n; i++) {
    mdedup *d = AT(st->dedup, mdedup, i);
    if (d->cmid == cmid && !memcmp(d->dev, dev, 32)) return d;
  }
  return NULL;
}

static mdevice *find_device(mstate *st, const uint8_t dev[32]) {
  for (size_t i = 0; i < st->devices.n; i++)
    if (!memcmp(AT(st->devices, mdevice, i)->dev, dev, 32)) return AT(st->devices, mdevice, i);
  return NULL;
}

/* Appends p to `inbox`: p->to's, or for a carbon (carbon = 1) p->from's,
 * with flags | TERN__RS_CARBON, peer p->to and no dedup row. */
static int append(mem_store *s, const tern__rs_put *p, int carbon, uint64_t *seq, uint64_t *prev) {
  mstate *st = &s->st;
  const char *inbox = carbon ? p->from : p->to;
  muser *u = find_user(st, inbox);
  if (!u) {
    if (!(u = push(&st->users, sizeof(muser)))) return fail(s, TERN_ENOMEM, "put: out of memory");
    snprintf(u->user, sizeof u->user, "%s", inbox);
  }
  mchain *ch = NULL;
  for (size_t i = 0; i < st->chains.n && !ch; i++) {
    mchain *c = AT(st->chains, mchain, i);
    if (!strcmp(c->user, inbox) && !strcmp(c->sender, p->from)) ch = c;
  }
  if (!ch) {
    if (!(ch = push(&st->chains, sizeof(mchain)))) return fail(s, TERN_ENOMEM, "put: out of memory");
    snprintf(ch->user, sizeof ch->user, "%s", inbox);
    snprintf(ch->sender, sizeof ch->sender, "%s", p->from);
  }
  mdedup *d = NULL;
  if (!carbon) {
    d = find_dedup(st, p->sender_dev, p->cmid); /* non-NULL only under the dup fault */
    if (!d && !(d = push(&st->dedup, sizeof(mdedup)))) return fail(s, TERN_ENOMEM, "put: out of memory");
  }
  mmsg *m = push(&st->msgs, sizeof(mmsg));
  uint8_t *body = p->body_len ? malloc(p->body_len) : NULL;
  if (!m || (p->body_len && !body)) {
    free(body);
    return fail(s, TERN_ENOMEM, "put: out of memory");
  }
  *seq = ++u->last_seq;
  *prev = ch->last_seq;
  ch->last_seq = *seq;
  snprintf(m->user, sizeof m->user, "%s", inbox);
  snprintf(m->from, sizeof m->from, "%s", p->from);
  snprintf(m->peer, sizeof m->peer, "%s", carbon ? p->to : "");
  m->seq = *seq;
  m->prev_seq = *prev;
  m->ts = p->ts;
  m->cmid = p->cmid;
  m->flags = carbon ? p->flags | TERN__RS_CARBON : p->flags;
  m->gmembers = 0;
  m->gdelivered = 0;
  if (tern__is_group(inbox))
    for (size_t i = 0; i < st->members.n; i++) {
      const mmember *mm = AT(st->members, mmember, i);
      m->gmembers += !strcmp(mm->grp, inbox) && mm->left == UINT64_MAX && strcmp(mm->user, p->from);
    }
  memcpy(m->dev, p->sender_dev, 32);
  if (body) memcpy(body, p->body, p->body_len);
  m->body = body;
  m->len = p->body_len;
  if (!d) return 0;
  memcpy(d->dev, p->sender_dev, 32);
  d->cmid = p->cmid;
  d->seq = *seq;
  d->ts = p->ts;
  return 0;
}

/* 1 if `user` has a registered device other than `dev`. */
static int other_device(mstate *st, const char *user, const uint8_t dev[32]) {
  for (size_t i = 0; i < st->devices.n; i++) {
    const mdevice *o = AT(st->devices, mdevice, i);
    if (!strcmp(o->user, user) && memcmp(o->dev, dev, 32)) return 1;
  }
  return 0;
}

static int mem_group_role(tern__relay_store *st, const char *group, const char *user);

static int mem_put(tern__relay_store *st, tern__rs_put *put, size_t n) {
  mem_store *s = M(st);
  int rc = begin_write(s);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    tern__rs_put *p = &put[i];
    if (!p->to || !p->from || !p->sender_dev || (p->body_len && !p->body))
      return fail(s, TERN_EINVAL, "put: missing field");
    p->carbon_seq = 0;
    mdedup *d = find_dedup(&s->st, p->sender_dev, p->cmid);
#ifdef TERN_TEST_HOOKS
    if (s->fault_dup) d = NULL;
#endif
    if (d) {
      p->result = TERN__RS_EARLIER;
      p->seq = d->seq;
      p->stored_ts = d->ts;
      continue;
    }
    if (tern__is_group(p->to)) {
      int role = mem_group_role(st, p->to, p->from);
      if (role != 1) {
        p->result = role == 0 ? TERN__RS_NOT_MEMBER : TERN__RS_NO_GROUP;
        continue;
      }
    }
    if (p->prev_cmid && !find_dedup(&s->st, p->sender_dev, p->prev_cmid)) {
      p->result = TERN__RS_NO_PREV;
      continue;
    }
    if (tern__rs_put_has_quota(p)) {
      uint64_t tm = 0, tb = 0, fm = 0, fb = 0;
      for (size_t k = 0; k < s->st.msgs.n; k++) {
        const mmsg *m = AT(s->st.msgs, mmsg, k);
        if (!strcmp(m->user, p->to)) tm++, tb += m->len;
        if (!strcmp(m->from, p->from)) fm++, fb += m->len;
      }
      int over = tern__rs_quota(p, tm, tb, fm, fb);
      if (over) {
        p->result = over;
        continue;
      }
    }
    rc = append(s, p, 0, &p->seq, &p->prev_seq);
    if (rc < 0) return rc;
    p->result = TERN__RS_STORED;
    p->stored_ts = p->ts;
    if (p->carbon && strcmp(p->to, p->from) && !tern__is_group(p->to) &&
        other_device(&s->st, p->from, p->sender_dev)) {
      uint64_t prev;
      unsigned copies = 1;
#ifdef TERN_TEST_HOOKS
      if (s->fault_carbon2) copies = 2;
#endif
      for (unsigned k = 0; k < copies; k++)
        if ((rc = append(s, p, 1, &p->carbon_seq, &prev)) < 0) return rc;
    }
  }
  return rc;
}

static int mem_due(tern__relay_store *st, const char *user, uint64_t after, size_t limit,
                   int (*cb)(void *ctx, const tern__rmsg *m), void *ctx) {
  mstate *ms = &M(st)->st;
  int n = 0;
  /* Appends go to the end with the next seq, deletions keep the order:
   * an inbox's messages are in seq order. */
  for (size_t i = 0; i < ms->msgs.n && (size_t)n < limit; i++) {
    const mmsg *m = AT(ms->msgs, mmsg, i);
    if (m->seq <= after || strcmp(m->user, user)) continue;
    tern__rmsg r = {.seq = m->seq, .prev_seq = m->prev_seq, .ts = m->ts, .cmid = m->cmid,
                    .flags = m->flags, .from = m->from, .sender_dev = m->dev, .peer = m->peer,
                    .gmembers = m->gmembers,
                    .body = m->body ? m->body : (const uint8_t *)"", .body_len = m->len};
    n++;
    if (cb(ctx, &r)) break;
  }
  return n;
}

static int mem_device(tern__relay_store *st, const char *user, const uint8_t dev[32],
                      uint64_t *cursor) {
  mem_store *s = M(st);
  mdevice *d = find_device(&s->st, dev);
  if (!d) {
    int rc = begin_write(s);
    if (rc < 0) return rc;
    if (!(d = push(&s->st.devices, sizeof(mdevice)))) return fail(s, TERN_ENOMEM, "device: out of memory");
    memcpy(d->dev, dev, 32);
    snprintf(d->user, sizeof d->user, "%s", user);
  }
  if (strcmp(d->user, user)) return fail(s, TERN_EINVAL, "device: the key is registered to another user");
  *cursor = d->cursor;
  return 0;
}

static mhello *find_hello(mstate *st, const uint8_t dev[32]) {
  for (size_t i = 0; i < st->hellos.n; i++)
    if (!memcmp(AT(st->hellos, mhello, i)->dev, dev, 32)) return AT(st->hellos, mhello, i);
  return NULL;
}

static int mem_hello_fresh(tern__relay_store *st, const uint8_t dev[32], uint64_t time_us) {
  mem_store *s = M(st);
  if (time_us == 0 || time_us > (uint64_t)INT64_MAX) return 0;
  mhello *h = find_hello(&s->st, dev);
  if (h && h->time_us >= time_us) return 0;
  int rc = begin_write(s);
  if (rc < 0) return rc;
  if (!h) {
    if (!(h = push(&s->st.hellos, sizeof(mhello)))) return fail(s, TERN_ENOMEM, "hello: out of memory");
    memcpy(h->dev, dev, 32);
  }
  h->time_us = time_us;
  return 1;
}

static int mem_settled(tern__relay_store *st, const uint8_t dev[32], uint64_t below) {
  mem_store *s = M(st);
  int rc = begin_write(s);
  if (rc < 0) return rc;
  mhello *h = find_hello(&s->st, dev);
  if (!h) {
    if (!(h = push(&s->st.hellos, sizeof(mhello)))) return fail(s, TERN_ENOMEM, "settled: out of memory");
    memcpy(h->dev, dev, 32);
  }
  if (h->settled < below) h->settled = below;
  below = h->settled;
  for (size_t i = 0; i < s->st.dedup.n;) {
    const mdedup *d = AT(s->st.dedup, mdedup, i);
    if (d->cmid < below && !memcmp(d->dev, dev, 32)) erase(&s->st.dedup, i, sizeof(mdedup));
    else i++;
  }
  return 0;
}

static int mem_settled_get(tern__relay_store *st, const uint8_t dev[32], uint64_t *below) {
  const mhello *h = find_hello(&M(st)->st, dev);
  *below = h ? h->settled : 0;
  return 0;
}

static int mem_reset_put(tern__relay_store *st, const uint8_t dev[32], uint64_t time_us,
                         const uint8_t addr[18]) {
  mem_store *s = M(st);
  int rc = begin_write(s);
  if (rc < 0) return rc;
  mreset *r = NULL;
  for (size_t i = 0; i < s->st.resets.n && !r; i++)
    if (!memcmp(AT(s->st.resets, mreset, i)->dev, dev, 32)) r = AT(s->st.resets, mreset, i);
  if (!r) {
    if (!(r = push(&s->st.resets, sizeof(mreset)))) return fail(s, TERN_ENOMEM, "reset: out of memory");
    memcpy(r->dev, dev, 32);
  }
  r->time_us = time_us;
  memcpy(r->addr, addr, TERN__RS_ADDR_BYTES);
  return 0;
}

static int mem_reset_del(tern__relay_store *st, const uint8_t dev[32], uint64_t time_us) {
  mem_store *s = M(st);
  for (size_t i = 0; i < s->st.resets.n; i++) {
    mreset *r = AT(s->st.resets, mreset, i);
    if (memcmp(r->dev, dev, 32) || r->time_us != time_us) continue;
    int rc = begin_write(s);
    if (rc < 0) return rc;
    erase(&s->st.resets, i, sizeof(mreset));
    return 0;
  }
  return 0;
}

static int mem_reset_take(tern__relay_store *st,
                          void (*cb)(void *ctx, const uint8_t dev[32], uint64_t time_us,
                                     const uint8_t addr[18]),
                          void *ctx) {
  mem_store *s = M(st);
  size_t n = s->st.resets.n;
  if (!n) return 0;
  int rc = begin_write(s);
  if (rc < 0) return rc;
  for (size_t i = 0; i < n; i++) {
    mreset *r = AT(s->st.resets, mreset, i);
    cb(ctx, r->dev, r->time_us, r->addr);
  }
  s->st.resets.n = 0;
  return (int)n;
}

/* Marks the undelivered messages of `user` in (lo, hi] delivered. */
static void deliver(mstate *ms, const char *user, uint64_t lo, uint64_t hi, tern__rs_delivered_fn cb,
                    void *ctx) {
  for (size_t i = 0; i < ms->msgs.n; i++) {
    mmsg *m = AT(ms->msgs, mmsg, i);
    if (m->seq <= lo || m->seq > hi || m->delivered || strcmp(m->user, user)) continue;
    m->delivered = 1;
    if (cb && !(m->flags & TERN__RS_CARBON)) cb(ctx, m->dev, m->cmid, m->seq);
  }
}

/* Deletes what every registered device of `user` has passed; with no
 * device registered, nothing (the inbox waits for the next one). */
static void trim_passed(mstate *st, const char *user) {
  int any = 0;
  uint64_t low = UINT64_MAX;
  for (size_t i = 0; i < st->devices.n; i++) {
    const mdevice *o = AT(st->devices, mdevice, i);
    if (!strcmp(o->user, user) && o->cursor < low) low = o->cursor, any = 1;
  }
  for (size_t i = 0; any && i < st->msgs.n;) {
    mmsg *m = AT(st->msgs, mmsg, i);
    if (m->seq <= low && !strcmp(m->user, user)) {
      free(m->body);
      erase(&st->msgs, i, sizeof(mmsg));
    } else {
      i++;
    }
  }
}

static int mem_acked(tern__relay_store *st, const char *user, const uint8_t dev[32], uint64_t up_to,
                     const uint64_t *sacks, size_t n, uint64_t *reached, tern__rs_delivered_fn cb,
                     void *ctx) {
  mem_store *s = M(st);
  if (n && !sacks) return TERN_EINVAL;
  mdevice *d = find_device(&s->st, dev);
  if (!d) return fail(s, TERN_ENOENT, "ack: the device is not registered");
  if (strcmp(d->user, user)) return fail(s, TERN_EINVAL, "ack: the key is registered to another user");
  int rc = begin_write(s);
  if (rc < 0) return rc;
  muser *u = find_user(&s->st, user);
  uint64_t last = u ? u->last_seq : 0;
  /* A device cannot have what was never stored. */
  if (up_to > last) up_to = last;
  /* The callbacks write notices, which may move the devices array: the
   * cursor is written through the index, not the pointer. */
  size_t di = (size_t)(d - AT(s->st.devices, mdevice, 0));
  uint64_t cursor = d->cursor;
  if (up_to > cursor) {
    deliver(&s->st, user, cursor, up_to, cb, ctx);
    AT(s->st.devices, mdevice, di)->cursor = up_to;
    cursor = up_to;
  }
  for (size_t i = 0; i < n; i++)
    if (sacks[i] > cursor && sacks[i] <= last) deliver(&s->st, user, sacks[i] - 1, sacks[i], cb, ctx);
  if (reached) *reached = cursor;
  trim_passed(&s->st, user);
  return 0;
}

static int mem_floor(tern__relay_store *st, const char *user, uint64_t *floor) {
  mstate *ms = &M(st)->st;
  for (size_t i = 0; i < ms->msgs.n; i++) {
    const mmsg *m = AT(ms->msgs, mmsg, i);
    if (!strcmp(m->user, user)) {
      *floor = m->seq - 1; /* the first of an inbox is its lowest */
      return 0;
    }
  }
  muser *u = find_user(ms, user);
  *floor = u ? u->last_seq : 0;
  return 0;
}

static int mem_devices(tern__relay_store *st, const char *user, tern__rs_device_fn cb, void *ctx) {
  mstate *ms = &M(st)->st;
  for (size_t i = 0; i < ms->devices.n; i++) {
    const mdevice *d = AT(ms->devices, mdevice, i);
    if (strcmp(d->user, user)) continue;
    uint64_t waiting = 0, top = 0;
    const char *last = "";
    for (size_t k = 0; k < ms->msgs.n; k++) {
      const mmsg *m = AT(ms->msgs, mmsg, k);
      if (m->seq <= d->cursor || strcmp(m->user, user)) continue;
      waiting++;
      if (m->seq > top) top = m->seq, last = m->from;
    }
    if (cb(ctx, d->dev, waiting, last)) break;
  }
  return 0;
}

static int mem_device_remove(tern__relay_store *st, const uint8_t dev[32], char user[TERN_USER_MAX + 1]) {
  mem_store *s = M(st);
  mdevice *d = find_device(&s->st, dev);
  if (!d) return 0;
  int rc = begin_write(s);
  if (rc < 0) return rc;
  snprintf(user, TERN_USER_MAX + 1, "%s", d->user);
  erase(&s->st.devices, (size_t)(d - AT(s->st.devices, mdevice, 0)), sizeof(mdevice));
  for (size_t i = 0; i < s->st.gcursors.n;) {
    if (!memcmp(AT(s->st.gcursors, mgcursor, i)->dev, dev, 32)) erase(&s->st.gcursors, i, sizeof(mgcursor));
    else i++;
  }
  for (size_t i = 0; i < s->st.notices.n;) {
    if (!memcmp(AT(s->st.notices, mnotice, i)->dev, dev, 32)) erase(&s->st.notices, i, sizeof(mnotice));
    else i++;
  }
  trim_passed(&s->st, user); /* what the other devices all have */
  return 1;
}

static mnotice *find_notice(mstate *ms, const uint8_t dev[32], int kind, uint64_t cmid, size_t *at) {
  for (size_t i = 0; i < ms->notices.n; i++) {
    mnotice *x = AT(ms->notices, mnotice, i);
    if (x->kind == kind && x->cmid == cmid && !memcmp(x->dev, dev, 32)) {
      if (at) *at = i;
      return x;
    }
  }
  return NULL;
}

static int mem_notice_put(tern__relay_store *st, const uint8_t dev[32], int kind, uint64_t cmid,
                          int64_t code) {
  mem_store *s = M(st);
  int rc = begin_write(s);
  if (rc < 0) return rc;
  mnotice *x = find_notice(&s->st, dev, kind, cmid, NULL);
  if (!x) {
    if (!(x = push(&s->st.notices, sizeof(mnotice)))) return fail(s, TERN_ENOMEM, "notice: out of memory");
    memcpy(x->dev, dev, 32);
    x->kind = kind;
    x->cmid = cmid;
  }
  x->code = code;
  return 0;
}

static int notice_order(const void *a, const void *b) {
  const mnotice *x = a, *y = b;
  if (x->cmid != y->cmid) return x->cmid < y->cmid ? -1 : 1;
  return (x->kind > y->kind) - (x->kind < y->kind);
}

static int mem_notice_list(tern__relay_store *st, const uint8_t dev[32],
                           int (*cb)(void *ctx, int kind, uint64_t cmid, int64_t code), void *ctx) {
  mem_store *s = M(st);
  mstate *ms = &s->st;
  size_t k = 0;
  mnotice *list = malloc((ms->notices.n ? ms->notices.n : 1) * sizeof(mnotice));
  if (!list) return fail(s, TERN_ENOMEM, "notice_list: out of memory");
  for (size_t i = 0; i < ms->notices.n; i++)
    if (!memcmp(AT(ms->notices, mnotice, i)->dev, dev, 32)) list[k++] = *AT(ms->notices, mnotice, i);
  qsort(list, k, sizeof(mnotice), notice_order);
  for (size_t i = 0; i < k; i++)
    if (cb(ctx, list[i].kind, list[i].cmid, list[i].code)) break;
  free(list);
  return 0;
}

static int mem_notice_del(tern__relay_store *st, const uint8_t dev[32], int kind, uint64_t cmid) {
  mem_store *s = M(st);
  size_t at;
  if (!find_notice(&s->st, dev, kind, cmid, &at)) return 0;
  int rc = begin_write(s);
  if (rc < 0) return rc;
  erase(&s->st.notices, at, sizeof(mnotice));
  return 0;
}

static int mem_expire(tern__relay_store *st, uint64_t before_ts, tern__rs_expired_fn cb, void *ctx) {
  mem_store *s = M(st);
  int rc = begin_write(s);
  if (rc < 0) return rc;
  mstate *ms = &s->st;
  /* Removed first, told after: the callbacks write notices. */
  size_t k = 0;
  mmsg *gone = malloc((ms->msgs.n ? ms->msgs.n : 1) * sizeof(mmsg));
  if (!gone) return fail(s, TERN_ENOMEM, "expire: out of memory");
  for (size_t i = 0; i < ms->msgs.n;) {
    mmsg *m = AT(ms->msgs, mmsg, i);
    if (!m->delivered && m->ts < before_ts) {
      gone[k++] = *m;
      erase(&ms->msgs, i, sizeof(mmsg));
    } else {
      i++;
    }
  }
  for (size_t i = 0; i < ms->dedup.n;) {
    if (AT(ms->dedup, mdedup, i)->ts < before_ts) erase(&ms->dedup, i, sizeof(mdedup));
    else i++;
  }
  for (size_t i = 0; i < k; i++) {
    if (cb && !(gone[i].flags & TERN__RS_CARBON)) cb(ctx, gone[i].dev, gone[i].cmid);
    free(gone[i].body);
  }
  free(gone);
  return 0;
}

/* ---- groups (spec/messages.md §14) ---- */

static mmember *find_member(mstate *st, const char *group, const char *user) {
  for (size_t i = 0; i < st->members.n; i++) {
    mmember *m = AT(st->members, mmember, i);
    if (!strcmp(m->grp, group) && !strcmp(m->user, user)) return m;
  }
  return NULL;
}

static mgcursor *find_gcursor(mstate *st, const char *group, const uint8_t dev[32]) {
  for (size_t i = 0; i < st->gcursors.n; i++) {
    mgcursor *g = AT(st->gcursors, mgcursor, i);
    if (!strcmp(g->grp, group) && !memcmp(g->dev, dev, 32)) return g;
  }
  return NULL;
}

/* Deletes what every member device of the group has passed, and the
 * cursors of devices whose member left and that reached the point. */
static void group_trim(mstate *st, const char *group) {
  uint64_t low = UINT64_MAX;
  int any = 0;
  for (size_t i = 0; i < st->gcursors.n;) {
    mgcursor *g = AT(st->gcursors, mgcursor, i);
    const mmember *m = strcmp(g->grp, group) ? NULL : find_member(st, group, g->user);
    if (m && m->left != UINT64_MAX && g->cursor >= m->left) {
      erase(&st->gcursors, i, sizeof(mgcursor));
      continue;
    }
    if (m && g->cursor < low) low = g->cursor, any = 1;
    i++;
  }
  for (size_t i = 0; any && i < st->msgs.n;) {
    mmsg *m = AT(st->msgs, mmsg, i);
    if (m->seq <= low && !strcmp(m->user, group)) {
      free(m->body);
      erase(&st->msgs, i, sizeof(mmsg));
    } else {
      i++;
    }
  }
}

static int mem_group_set(tern__relay_store *st, const char *group, const char *const *users, size_t n,
                         uint64_t *point) {
  mem_store *s = M(st);
  int rc = begin_write(s);
  if (rc < 0) return rc;
  mstate *ms = &s->st;
  muser *u = find_user(ms, group);
  uint64_t last = u ? u->last_seq : 0;
  *point = last;
  for (size_t i = 0; i < ms->members.n; i++) {
    mmember *m = AT(ms->members, mmember, i);
    if (strcmp(m->grp, group) || m->left != UINT64_MAX) continue;
    int keep = 0;
    for (size_t k = 0; k < n && !keep; k++) keep = !strcmp(m->user, users[k]);
    if (!keep) m->left = last;
#ifdef TERN_TEST_HOOKS
    if (!keep && s->fault_leave_early && last > m->joined) m->left = last - 1;
#endif
  }
  for (size_t k = 0; k < n; k++) {
    mmember *m = find_member(ms, group, users[k]);
    if (m && m->left == UINT64_MAX) continue; /* already in */
    if (!m) {
      if (!(m = push(&ms->members, sizeof(mmember)))) return fail(s, TERN_ENOMEM, "group_set: out of memory");
      snprintf(m->grp, sizeof m->grp, "%s", group);
      snprintf(m->user, sizeof m->user, "%s", users[k]);
    }
    if (m->counted < last) m->counted = last;
    m->joined = last;
    m->left = UINT64_MAX;
    for (size_t i = 0; i < ms->devices.n; i++) {
      const mdevice *d = AT(ms->devices, mdevice, i);
      if (strcmp(d->user, users[k])) continue;
      mgcursor *g = find_gcursor(ms, group, d->dev);
      if (!g) {
        if (!(g = push(&ms->gcursors, sizeof(mgcursor)))) return fail(s, TERN_ENOMEM, "group_set: out of memory");
        snprintf(g->grp, sizeof g->grp, "%s", group);
        snprintf(g->user, sizeof g->user, "%s", users[k]);
        memcpy(g->dev, d->dev, 32);
        g->cursor = last;
      } else if (g->cursor < last) {
        g->cursor = last;
      }
    }
  }
  group_trim(ms, group);
  return 0;
}

static int mem_group_role(tern__relay_store *st, const char *group, const char *user) {
  mstate *ms = &M(st)->st;
  int any = 0;
  for (size_t i = 0; i < ms->members.n; i++) {
    const mmember *m = AT(ms->members, mmember, i);
    if (strcmp(m->grp, group) || m->left != UINT64_MAX) continue;
    any = 1;
    if (!strcmp(m->user, user)) return 1;
  }
  return any ? 0 : TERN_ENOENT;
}

static int mem_group_members(tern__relay_store *st, const char *group,
                             int (*cb)(void *ctx, const char *user), void *ctx) {
  mstate *ms = &M(st)->st;
  int n = 0;
  for (size_t i = 0; i < ms->members.n; i++) {
    const mmember *m = AT(ms->members, mmember, i);
    if (strcmp(m->grp, group) || m->left != UINT64_MAX) continue;
    n++;
    if (cb && cb(ctx, m->user)) break;
  }
  return n;
}

static int mem_user_groups(tern__relay_store *st, const char *user, const uint8_t dev[32],
                           int (*cb)(void *ctx, const char *group), void *ctx) {
  mstate *ms = &M(st)->st;
  int n = 0;
  for (size_t i = 0; i < ms->members.n; i++) {
    const mmember *m = AT(ms->members, mmember, i);
    if (strcmp(m->user, user)) continue;
    if (m->left != UINT64_MAX) {
      const mgcursor *g = find_gcursor(ms, m->grp, dev);
      if (!g || g->cursor >= m->left) continue;
    }
    n++;
    if (cb && cb(ctx, m->grp)) break;
  }
  return n;
}

static int mem_gdevice(tern__relay_store *st, const char *group, const char *user, const uint8_t dev[32],
                       uint64_t *cursor, uint64_t *limit) {
  mem_store *s = M(st);
  mmember *m = find_member(&s->st, group, user);
  if (!m) return fail(s, TERN_ENOENT, "group device: the user never was a member");
  *limit = m->left;
  mgcursor *g = find_gcursor(&s->st, group, dev);
  if (!g) {
    uint64_t floor = 0;
    (void)mem_floor(st, group, &floor);
    uint64_t joined = m->joined;
    int rc = begin_write(s);
    if (rc < 0) return rc;
    if (!(g = push(&s->st.gcursors, sizeof(mgcursor)))) return fail(s, TERN_ENOMEM, "gdevice: out of memory");
    snprintf(g->grp, sizeof g->grp, "%s", group);
    snprintf(g->user, sizeof g->user, "%s", user);
    memcpy(g->dev, dev, 32);
    g->cursor = floor > joined ? floor : joined;
  }
  *cursor = g->cursor;
  return 0;
}

static int mem_gacked(tern__relay_store *st, const char *group, const char *user, const uint8_t dev[32],
                      uint64_t up_to, uint64_t *reached, tern__rs_greceipt_fn cb, void *ctx) {
  mem_store *s = M(st);
  mgcursor *g = find_gcursor(&s->st, group, dev);
  const mmember *mm = find_member(&s->st, group, user);
  if (!g && mm && mm->left != UINT64_MAX) {
    /* The member left and this device passed the point: it is done. */
    if (reached) *reached = mm->left;
    return 0;
  }
  if (!g) return fail(s, TERN_ENOENT, "group ack: the device has no cursor in the group");
  uint64_t limit = mm ? mm->left : 0;
  muser *u = find_user(&s->st, group);
  uint64_t last = u ? u->last_seq : 0;
  if (up_to > last) up_to = last;
  if (up_to > limit) up_to = limit;
  uint64_t cursor = g->cursor;
  if (reached) *reached = up_to > cursor ? up_to : cursor;
  if (up_to <= cursor) return 0;
  int rc = begin_write(s);
  if (rc < 0) return rc;
  mstate *ms = &s->st;
  mmember *me = find_member(ms, group, user);
  uint64_t mbefore = me ? me->counted : up_to;
  find_gcursor(ms, group, dev)->cursor = up_to;
  /* Receipts first, told after: the callbacks write notices. */
  size_t k = 0;
  struct { uint8_t dev[32]; uint64_t cmid; uint32_t got, of; } *told = NULL;
  if (up_to > mbefore) {
    told = malloc((ms->msgs.n ? ms->msgs.n : 1) * sizeof(*told));
    if (!told) return fail(s, TERN_ENOMEM, "gacked: out of memory");
    for (size_t i = 0; i < ms->msgs.n; i++) {
      mmsg *m = AT(ms->msgs, mmsg, i);
      if (strcmp(m->user, group) || m->seq <= mbefore || m->seq > up_to || !strcmp(m->from, user)) continue;
      if (m->gdelivered < m->gmembers) m->gdelivered++; /* counted once: a safety net */
      m->delivered = 1;
      memcpy(told[k].dev, m->dev, 32);
      told[k].cmid = m->cmid;
      told[k].got = m->gdelivered;
      told[k].of = m->gmembers;
      k++;
    }
  }
  if (me && me->counted < up_to) me->counted = up_to;
  group_trim(ms, group);
  for (size_t i = 0; i < k; i++)
    if (cb) cb(ctx, told[i].dev, told[i].cmid, told[i].got, told[i].of);
  free(told);
  return 0;
}

static int mem_group_devices(tern__relay_store *st, const char *group,
                             int (*cb)(void *ctx, const char *user, const uint8_t dev[32], uint64_t waiting),
                             void *ctx) {
  mstate *ms = &M(st)->st;
  for (size_t i = 0; i < ms->gcursors.n; i++) {
    const mgcursor *g = AT(ms->gcursors, mgcursor, i);
    const mmember *m = strcmp(g->grp, group) ? NULL : find_member(ms, group, g->user);
    if (!m || m->left != UINT64_MAX) continue; /* only current members are told */
    uint64_t waiting = 0;
    for (size_t k = 0; k < ms->msgs.n; k++) {
      const mmsg *x = AT(ms->msgs, mmsg, k);
      waiting += !strcmp(x->user, group) && x->seq > g->cursor && x->seq <= m->left;
    }
    if (cb(ctx, g->user, g->dev, waiting)) break;
  }
  return 0;
}

static int mem_notice_del_if(tern__relay_store *st, const uint8_t dev[32], int kind, uint64_t cmid,
                             int64_t code) {
  mem_store *s = M(st);
  size_t at;
  mnotice *n = find_notice(&s->st, dev, kind, cmid, &at);
  if (!n || n->code != code) return 0;
  int rc = begin_write(s);
  if (rc < 0) return rc;
  erase(&s->st.notices, at, sizeof(mnotice));
  return 0;
}

static int mem_room(tern__relay_store *st, size_t body_len) {
  (void)st, (void)body_len;
  return TERN__RS_ROOM;
}

static void mem_rollback(tern__relay_store *st, uint64_t now_ms) {
  (void)now_ms;
  mem_store *s = M(st);
  if (!s->snap) return;
  free_state(&s->st);
  s->st = *s->snap;
  free(s->snap);
  s->snap = NULL;
}

static int mem_commit(tern__relay_store *st, uint64_t now_ms) {
  mem_store *s = M(st);
#ifdef TERN_TEST_HOOKS
  if (s->fault_commits && s->snap) {
    s->fault_commits--;
    mem_rollback(st, now_ms);
    snprintf(s->err, sizeof s->err, "COMMIT: database or disk is full (injected)");
    return TERN_ESTORE;
  }
#endif
  (void)now_ms;
  if (s->snap) {
    free_state(s->snap);
    free(s->snap);
    s->snap = NULL;
  }
  return 0;
}

static uint64_t mem_wake_ms(const tern__relay_store *st) {
  (void)st;
  return UINT64_MAX;
}

static const char *mem_errmsg(const tern__relay_store *st) { return ((const mem_store *)st)->err; }

static int mem_count(tern__relay_store *st, uint64_t *messages) {
  *messages = M(st)->st.msgs.n;
  return 0;
}

static void mem_close(tern__relay_store *st) {
  if (!st) return;
  mem_store *s = M(st);
  if (s->snap) {
    free_state(s->snap);
    free(s->snap);
  }
  free_state(&s->st);
  free(s);
}

#ifdef TERN_TEST_HOOKS
static void mem_fault(tern__relay_store *st, int kind, unsigned n) {
  if (kind == TERN__RS_FAULT_COMMIT) M(st)->fault_commits = n;
  else if (kind == TERN__RS_FAULT_DUP) M(st)->fault_dup = n != 0;
  else if (kind == TERN__RS_FAULT_CARBON2) M(st)->fault_carbon2 = n != 0;
  else if (kind == TERN__RS_FAULT_LEAVE_EARLY) M(st)->fault_leave_early = n != 0;
}
#endif

static const tern__relay_store_ops mem_ops = {
    .put = mem_put,
    .due = mem_due,
    .device = mem_device,
    .hello_fresh = mem_hello_fresh,
    .reset_put = mem_reset_put,
    .reset_del = mem_reset_del,
    .reset_take = mem_reset_take,
    .acked = mem_acked,
    .floor = mem_floor,
    .devices = mem_devices,
    .device_remove = mem_device_remove,
    .notice_put = mem_notice_put,
    .notice_list = mem_notice_list,
    .notice_del = mem_notice_del,
    .expire = mem_expire,
    .group_set = mem_group_set,
    .group_role = mem_group_role,
    .group_members = mem_group_members,
    .user_groups = mem_user_groups,
    .gdevice = mem_gdevice,
    .gacked = mem_gacked,
    .group_devices = mem_group_devices,
    .notice_del_if = mem_notice_del_if,
    .settled = mem_settled,
    .settled_get = mem_settled_get,
    .room = mem_room,
    .commit = mem_commit,
    .rollback = mem_rollback,
    .wake_ms = mem_wake_ms,
    .errmsg = mem_errmsg,
    .count = mem_count,
    .close = mem_close,
#ifdef TERN_TEST_HOOKS
    .fault = mem_fault,
#endif
};

int tern__relay_mem_open(tern__relay_store **out) {
  mem_store *s = calloc(1, sizeof(*s));
  *out = NULL;
  if (!s) return TERN_ENOMEM;
  s->base.ops = &mem_ops;
  snprintf(s->err, sizeof s->err, "no error");
  *out = &s->base;
  return 0;
}
