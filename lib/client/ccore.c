/* The client's messaging core: outbox, ordered dedup'd delivery, acks. */
#include "client/ccore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire/copies.h"
#include "base/u64map.h"
#include "client/evqueue.h"
#include "wire/errcode.h"
#include "wire/frame.h"
#include "wire/outq.h"
#include "wire/channels.h"

#define FRAME_BUF (TERN_MESSAGE_MAX + 256)
/* Take this many messages and the delivery ack goes out without waiting. */
#define ACK_EVERY 32
/* An overtaken MSG is resent after resend_ms, then after twice as long
 * each time, up to this many resend_ms. */
#define RESEND_BACKOFF_MAX 8
/* SETTLED goes at most this often (spec/messages.md §2, "Dedup"). */
#define SETTLED_EVERY_MS 1000

typedef struct entry {
  struct entry *prev, *next;
  uint64_t cmid;
  char to[TERN_USER_MAX + 1];
  uint64_t flags;
  uint64_t sent_ms;      /* last transmission on this session, 0 if none */
  uint64_t tx;           /* number of that transmission (cc->tx_next order) */
  uint64_t resend_ivl;   /* ms from sent_ms to its next resend: resend_ms,
                            doubled on each resend on the same session */
  int settled;           /* SERVER_ACK or FAILED queued for the app: the
                            store drops it when the app takes that event */
  uint64_t retry_at_ms;  /* after BUSY: not before this */
  int held;              /* answered BUSY (or its answer lost to memory) and
                            not yet sent again: it keeps its place in the
                            window (cc->nheld), see room_for() */
  uint64_t copy_due_ms;  /* when to send the next copy; 0: none pending */
  uint64_t copy_gap_ms;  /* the delay d of this transmission's copies */
  uint32_t copies_sent;  /* copies of this transmission sent so far */
  uint32_t copies_max;   /* and how many it gets (tern__copies_before) */
  size_t len;
  uint8_t body[];
} entry;

typedef struct held_msg {
  uint64_t seq, prev_seq, ts, flags;
  char from[TERN_USER_MAX + 1];
  char to[TERN_USER_MAX + 1];  /* a carbon's recipient, "" otherwise */
  size_t len;
  uint8_t *body;
} held_msg;

/* A sorted set of seqs (small: bounded by the store's extra limit and the
 * event queue). */
typedef struct seqset {
  uint64_t *v;
  size_t n, cap;
} seqset;

/* What of one inbox has reached the app: the user's own (name ""), or a
 * group's ("@name", spec/messages.md §14), each with its own seqs. */
typedef struct inbox {
  char name[TERN_USER_MAX + 1];
  uint64_t last;               /* everything <= last handed to the app */
  seqset extra;                /* handed to the app above last (owned, cap
                                  TERN__CSTORE_EXTRA_MAX) */
  seqset queued;               /* in the event queue, not yet taken */
  int ack_due;                 /* a group's: a GROUP_ACK goes with the next acks */
} inbox;

struct tern__ccore {
  tern__ccore_config cfg;
  int nomem;                   /* an event of this call found no memory */
  tern__cstore *store;
  entry *head, *tail;          /* the outbox, in cmid order */
  size_t outbox_n;
  tern__u64map byid;          /* the outbox's entries by cmid */
  uint64_t next_cmid;
  inbox own;                   /* the user's inbox */
  inbox *groups;               /* the groups', as the relay told them (GROUP_FLOOR) */
  size_t ngroups, capgroups;
  seqset receipts;             /* cmids with DELIVERED queued, not yet taken */
  held_msg *held;              /* waiting for their prev_seq */
  size_t held_n;
  tern__evq events;
  tern__outq outs;             /* frames for the relay */
  int online;
  int synced;                  /* the relay answered this session's SYNC */
  uint64_t sync_sent_ms;
  char self[TERN_USER_MAX + 1];
  uint64_t progress_ms;        /* last ack from the relay, or going online */
  uint64_t heard_ms;           /* last datagram of any kind from the relay (the shell's) */
  size_t nfly;                 /* entries in flight: sent on this session, unanswered */
  size_t nheld;                /* entries held for a retry (entry.held) */
  int stalled;                 /* a TERN_EBUSY event went out for the current stall */
  uint64_t tx_next;            /* numbers MSG transmissions, in sending order */
  uint64_t answered_tx;        /* highest transmission number of a MSG the relay
                                  answered on this session: an entry sent
                                  before it and still unanswered was
                                  overtaken (lost, or dropped by prev_cmid) */
  int ack_needed;
  uint64_t ack_due_ms;
  unsigned taken_since_ack;
  uint32_t rtt_ms;             /* the session's RTT from the link; 0: unknown */
  /* SETTLED (spec/messages.md §2, "Dedup"): the floor told on this
   * session, when the next may go, and the highest floor this core may
   * ever tell (a message whose removal from the stored outbox failed is
   * sent again after a restart: its dedup row must stay). */
  uint64_t settled_told, settled_next_ms, settled_cap;
  uint8_t *buf;
};

void tern__ccore_config_default(tern__ccore_config *cfg) {
  cfg->resend_ms = 4000;
  cfg->dead_link_ms = 8000;
  cfg->ack_delay_ms = 20;
  cfg->busy_retry_ms = 2000;
  cfg->held_max = 1024;
  cfg->copy_max_bytes = 512;
  cfg->copy_delay_ms = 30;
  cfg->copy_delay_min_ms = 5;
  cfg->copy_count = 2;
  cfg->window = 64;
}

/* ---- seq sets ------------------------------------------------------------ */

static size_t set_pos(const seqset *s, uint64_t x) {
  size_t lo = 0, hi = s->n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (s->v[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static int set_has(const seqset *s, uint64_t x) {
  size_t i = set_pos(s, x);
  return i < s->n && s->v[i] == x;
}

static int set_add(seqset *s, uint64_t x) {
  size_t i = set_pos(s, x);
  if (i < s->n && s->v[i] == x) return 0;
  if (s->n == s->cap) {
    size_t nc = s->cap ? s->cap * 2 : 64;
    uint64_t *nv = realloc(s->v, nc * sizeof(*nv));
    if (!nv) return TERN_ENOMEM;
    s->v = nv;
    s->cap = nc;
  }
  memmove(s->v + i + 1, s->v + i, (s->n - i) * sizeof(*s->v));
  s->v[i] = x;
  s->n++;
  return 0;
}

static void set_del(seqset *s, uint64_t x) {
  size_t i = set_pos(s, x);
  if (i >= s->n || s->v[i] != x) return;
  memmove(s->v + i, s->v + i + 1, (s->n - i - 1) * sizeof(*s->v));
  s->n--;
}

/* Drops every element <= x. */
static void set_trim(seqset *s, uint64_t x) {
  size_t i = set_pos(s, x + 1);
  memmove(s->v, s->v + i, (s->n - i) * sizeof(*s->v));
  s->n -= i;
}

/* ---- setup ----------------------------------------------------------------- */

static int load_one(void *ctx, const tern__outmsg *m) {
  tern__ccore *cc = ctx;
  entry *e = calloc(1, sizeof(*e) + m->body_len);
  if (!e) return TERN_ENOMEM;
  e->cmid = m->cmid;
  snprintf(e->to, sizeof(e->to), "%s", m->to);
  e->flags = m->flags;
  e->len = m->body_len;
  if (m->body_len) memcpy(e->body, m->body, m->body_len);
  if (tern__u64map_put(&cc->byid, e->cmid, e) < 0) {
    free(e);
    return TERN_ENOMEM;
  }
  e->prev = cc->tail;
  if (cc->tail) cc->tail->next = e;
  else cc->head = e;
  cc->tail = e;
  cc->outbox_n++;
  return 0;
}

static int load_group(void *ctx, const char *group, uint64_t last, const uint64_t *extra, size_t n);

int tern__ccore_new(tern__ccore **out, tern__cstore *store, const tern__ccore_config *cfg) {
  *out = NULL;
  tern__ccore *cc = calloc(1, sizeof(*cc));
  if (!cc) return TERN_ENOMEM;
  cc->cfg = *cfg;
  cc->settled_cap = UINT64_MAX;
  cc->store = store;
  tern__outq_init(&cc->outs);
  tern__evq_init(&cc->events);
  tern__u64map_init(&cc->byid);
  int rc = TERN_ENOMEM;
  cc->buf = malloc(FRAME_BUF);
  cc->own.extra.v = malloc(TERN__CSTORE_EXTRA_MAX * sizeof(uint64_t));
  cc->held = calloc(cfg->held_max ? cfg->held_max : 1, sizeof(*cc->held));
  if (!cc->buf || !cc->own.extra.v || !cc->held) goto fail;
  cc->own.extra.cap = TERN__CSTORE_EXTRA_MAX;
  rc = tern__cstore_delivered_load(store, &cc->own.last, cc->own.extra.v, &cc->own.extra.n);
  if (rc < 0) goto fail;
  rc = tern__cstore_group_each(store, load_group, cc);
  if (rc < 0) goto fail;
  rc = tern__cstore_next_cmid(store, &cc->next_cmid);
  if (rc < 0) goto fail;
  rc = tern__cstore_outbox_load(store, load_one, cc);
  if (rc < 0) goto fail;
  *out = cc;
  return 0;
fail:
  tern__ccore_free(cc);
  return rc;
}

void tern__ccore_free(tern__ccore *cc) {
  if (!cc) return;
  while (cc->head) {
    entry *n = cc->head->next;
    free(cc->head);
    cc->head = n;
  }
  tern__u64map_free(&cc->byid);
  for (size_t i = 0; i < cc->held_n; i++) free(cc->held[i].body);
  free(cc->held);
  free(cc->own.extra.v);
  free(cc->own.queued.v);
  for (size_t i = 0; i < cc->ngroups; i++) {
    free(cc->groups[i].extra.v);
    free(cc->groups[i].queued.v);
  }
  free(cc->groups);
  free(cc->receipts.v);
  tern__evq_free(&cc->events);
  tern__outq_clear(&cc->outs);
  free(cc->buf);
  free(cc);
}

/* ---- outputs and events ---------------------------------------------------- */

/* Out of memory, an output is lost: a timer or the reconnect resends it. */
static void emit(tern__ccore *cc, uint8_t channel, int reliable, const uint8_t *data, size_t len) {
  (void)tern__outq_push(&cc->outs, 0, channel, reliable, data, len);
}

int tern__ccore_next_output(tern__ccore *cc, tern__ccore_out *out) {
  const tern__outq_item *it = tern__outq_pop(&cc->outs);
  if (!it) return 0;
  out->channel = it->channel;
  out->reliable = it->reliable;
  out->data = it->data;
  out->len = it->len;
  return 1;
}

/* Queues an event. 0, or TERN_ENOMEM: then nothing is queued, the failure
 * is remembered for the call that caused it (tern__ccore_input and
 * tern__ccore_next_event return TERN_ENOMEM), and the caller undoes what
 * the event stood for, so that the relay's resend (or the core's own)
 * brings it about again: no event is lost for want of memory. */
static int push(tern__ccore *cc, tern_event_type type, int error, uint64_t cmid, uint64_t seq,
                uint64_t ts, const char *user, const uint8_t *body, size_t len) {
  tern_event ev = {.type = type, .error = error, .cmid = cmid, .seq = seq, .server_time_ms = ts,
                   .user = user, .body = body, .body_len = len};
  int rc = tern__evq_push(&cc->events, &ev);
  if (rc < 0) cc->nomem = 1;
  return rc;
}

/* TERN_EV_ERROR: `detail` goes in the body, for the app's log. An error
 * event that finds no memory is reported by the call's TERN_ENOMEM. */
static void push_error(tern__ccore *cc, int error, uint64_t cmid, const char *user,
                       const char *detail) {
  (void)push(cc, TERN_EV_ERROR, error, cmid, 0, 0, user, (const uint8_t *)detail, strlen(detail));
}

size_t tern__ccore_pending_events(const tern__ccore *cc) { return cc->events.count; }

#ifdef TERN_TEST_HOOKS
void tern__ccore_fault_events(tern__ccore *cc, unsigned n) { tern__evq_fail_next(&cc->events, n); }
#endif

int tern__ccore_push_event(tern__ccore *cc, const tern_event *ev) {
  return tern__evq_push(&cc->events, ev);
}

size_t tern__ccore_outbox_size(const tern__ccore *cc) { return cc->outbox_n; }

/* ---- sending --------------------------------------------------------------- */

/* Writes e's MSG frame. The relay stores a message only after the one
 * before it to the same recipient; name that one while it is still
 * unacknowledged. */
static void write_msg(tern__wbuf *w, const entry *e) {
  uint64_t prev = 0;
  for (const entry *p = e->prev; p; p = p->prev)
    if (strcmp(p->to, e->to) == 0) {
      prev = p->cmid;
      break;
    }
  tern__fr_msg m = {.cmid = e->cmid, .prev_cmid = prev, .peer = (const uint8_t *)e->to,
                    .peer_len = strlen(e->to), .flags = e->flags, .body = e->body,
                    .body_len = e->len};
  tern__fr_msg_write(w, TERN__FR_MSG, &m);
}

static void unhold(tern__ccore *cc, entry *e) {
  if (e->held) {
    e->held = 0;
    cc->nheld--;
  }
}

/* Every change of an entry's sent_ms goes through here, so that nfly
 * counts the entries in flight (and a held one sent again is not held). */
static void set_sent(tern__ccore *cc, entry *e, uint64_t ms) {
  if (!e->sent_ms && ms) cc->nfly++;
  else if (e->sent_ms && !ms) cc->nfly--;
  e->sent_ms = ms;
  if (ms) unhold(cc, e);
}

/* e leaves the window to wait for its retry (busy_retry_ms), keeping its
 * place: the messages after it to the same recipient that are in flight
 * are dropped by the relay for their prev_cmid until e is stored, so if a
 * new message could take e's place, a window full of messages that are
 * never answered would keep e out for good (spec/messages.md §5.9). */
static void hold(tern__ccore *cc, entry *e) {
  int flying = e->sent_ms != 0;
  set_sent(cc, e, 0);
  /* A place it had (in flight), or a free one: the window never counts
   * more than `window`. */
  if (!e->held && (flying || cc->nfly + cc->nheld < cc->cfg.window)) {
    e->held = 1;
    cc->nheld++;
  }
}

/* e is answered for good (SERVER_ACK or FAILED queued for the app): out
 * of flight, and no longer holding a place. */
static void answered_for_good(tern__ccore *cc, entry *e) {
  e->settled = 1;
  unhold(cc, e);
  set_sent(cc, e, 0);
}

/* Room in the window for one more message in flight. */
static int window_open(const tern__ccore *cc) { return cc->nfly < cc->cfg.window; }

/* Room for e (NULL: a message not yet sent on this session), counting the
 * places the held entries keep. */
static int room_for(const tern__ccore *cc, const entry *e) {
  size_t used = cc->nfly + cc->nheld - (e && e->held ? 1 : 0);
  return used < cc->cfg.window;
}

size_t tern__ccore_early(tern__ccore *cc, uint8_t *buf, size_t cap, uint64_t now_ms) {
  tern__wbuf w;
  tern__wbuf_init(&w, buf, cap);
  for (entry *e = cc->head; e && room_for(cc, e); e = e->next) {
    if (e->settled || e->retry_at_ms > now_ms) break;
    size_t before = w.len;
    write_msg(&w, e);
    if (w.overflow) {
      w.len = before; /* only whole frames, and in order: stop here */
      break;
    }
    set_sent(cc, e, now_ms);
    e->tx = ++cc->tx_next;
    e->resend_ivl = cc->cfg.resend_ms;
  }
  if (w.len && cc->outbox_n) cc->progress_ms = now_ms;
  return w.len;
}

void tern__ccore_set_rtt(tern__ccore *cc, uint32_t rtt_ms) { cc->rtt_ms = rtt_ms; }

/* d, a fifth of the RTT within bounds (copies.h): the first copy waits
 * d / 2, so that a message that needed it (lost, or held behind a lost one
 * on its channel) loses a tenth of the floor, the second 3 d, after most
 * bursts of losses. Random loss favours short delays, bursts long ones
 * (bench/NOTES.md, rounds 4 and 5). */
static uint64_t copy_delay(const tern__ccore *cc) {
  return tern__copy_delay(cc->rtt_ms, cc->cfg.copy_delay_min_ms, cc->cfg.copy_delay_ms);
}

static void transmit(tern__ccore *cc, entry *e, uint64_t now_ms) {
  tern__wbuf w;
  tern__wbuf_init(&w, cc->buf, FRAME_BUF);
  write_msg(&w, e);
  if (w.overflow) return;
  uint8_t ch = tern__chat_channel((const uint8_t *)cc->self, strlen(cc->self),
                                  (const uint8_t *)e->to, strlen(e->to));
  emit(cc, ch, 1, w.p, w.len);
  set_sent(cc, e, now_ms);
  e->tx = ++cc->tx_next;
  if (!e->resend_ivl) e->resend_ivl = cc->cfg.resend_ms;
  e->copy_due_ms = 0;
  e->copies_sent = 0;
  e->copies_max = 0;
  if (e->len <= cc->cfg.copy_max_bytes && cc->cfg.copy_max_bytes) {
    e->copy_gap_ms = copy_delay(cc);
    e->copies_max = tern__copies_before(cc->rtt_ms, (uint32_t)e->copy_gap_ms, cc->cfg.copy_count);
    if (e->copies_max) e->copy_due_ms = now_ms + tern__copy_at((uint32_t)e->copy_gap_ms, 1);
  }
}

/* A copy: if the reliable transmission was lost, this one is not held
 * behind it. Copy 1 leaves d / 2 after the transmission, copy k >= 2
 * (2k - 1) d (tern__copy_at), so that a burst of losses that takes the
 * transmission and its first copy has to last 3 d to take the second. */
static void send_copy(tern__ccore *cc, entry *e) {
  tern__wbuf w;
  tern__wbuf_init(&w, cc->buf, FRAME_BUF);
  write_msg(&w, e);
  if (!w.overflow) emit(cc, TERN__CH_COPY, 0, w.p, w.len);
  e->copies_sent++;
  uint32_t d = (uint32_t)e->copy_gap_ms, k = e->copies_sent;
  if (k < e->copies_max) e->copy_due_ms += tern__copy_at(d, k + 1) - tern__copy_at(d, k);
  else e->copy_due_ms = 0;
}

int tern__ccore_send(tern__ccore *cc, const char *to, const void *body, size_t len, int ephemeral,
                     uint64_t now_ms, uint64_t wall_ms, uint64_t *cmid) {
  return tern__ccore_send_id(cc, to, body, len, ephemeral, NULL, now_ms, wall_ms, cmid);
}

int tern__ccore_send_id(tern__ccore *cc, const char *to, const void *body, size_t len, int ephemeral,
                        const char *app_id, uint64_t now_ms, uint64_t wall_ms, uint64_t *cmid) {
  *cmid = 0;
  if (app_id && !ephemeral) {
    /* The app sent this one before: the same message, not a second. */
    uint64_t had;
    int rc = tern__cstore_app_find(cc->store, app_id, &had);
    if (rc < 0) return rc;
    if (rc == 1) {
      *cmid = had;
      return 0;
    }
  }
  if (ephemeral) {
    if (!cc->online) return TERN_ECLOSED;
    tern__wbuf w;
    tern__wbuf_init(&w, cc->buf, FRAME_BUF);
    tern__fr_msg m = {.peer = (const uint8_t *)to, .peer_len = strlen(to),
                      .flags = TERN__MSGF_EPHEMERAL, .body = body, .body_len = len};
    tern__fr_msg_write(&w, TERN__FR_MSG, &m);
    if (w.overflow) return TERN_ETOOBIG;
    emit(cc, TERN__CH_SIGNAL, 0, w.p, w.len);
    return 0;
  }
  entry *e = calloc(1, sizeof(*e) + len);
  if (!e) return TERN_ENOMEM;
  e->cmid = cc->next_cmid;
  snprintf(e->to, sizeof(e->to), "%s", to);
  e->len = len;
  if (len) memcpy(e->body, body, len);
  if (tern__u64map_put(&cc->byid, e->cmid, e) < 0) {
    free(e);
    return TERN_ENOMEM;
  }
  tern__outmsg om = {.cmid = e->cmid, .to = e->to, .flags = 0, .created_ms = wall_ms,
                     .body = e->body, .body_len = len, .app_id = app_id};
  int rc = tern__cstore_outbox_put(cc->store, &om);
  if (rc < 0) {
    tern__u64map_del(&cc->byid, e->cmid);
    free(e);
    return rc;
  }
  cc->next_cmid++;
  e->prev = cc->tail;
  if (cc->tail) cc->tail->next = e;
  else cc->head = e;
  cc->tail = e;
  if (cc->outbox_n++ == 0) cc->progress_ms = now_ms;
  /* At once if the window has room and nothing older waits for it: the
   * relay stores a message only after the one before it to the same
   * recipient, so the outbox goes out in order. */
  const entry *p = e->prev;
  if (cc->online && !cc->nheld && room_for(cc, NULL) && (!p || p->settled || p->sent_ms))
    transmit(cc, e, now_ms);
  *cmid = e->cmid;
  return 0;
}

static entry *find_entry(tern__ccore *cc, uint64_t cmid) { return tern__u64map_get(&cc->byid, cmid); }

static void unlink_entry(tern__ccore *cc, entry *e) {
  if (e->prev) e->prev->next = e->next;
  else cc->head = e->next;
  if (e->next) e->next->prev = e->prev;
  else cc->tail = e->prev;
  cc->outbox_n--;
  tern__u64map_del(&cc->byid, e->cmid);
  free(e);
}

/* ---- receiving ------------------------------------------------------------- */

static int delivered(const inbox *ib, uint64_t seq) {
  return seq <= ib->last || set_has(&ib->extra, seq);
}

/* prev_seq is satisfied once that message reached the app or its queue. */
static int prev_ok(const inbox *ib, uint64_t prev) {
  return prev == 0 || delivered(ib, prev) || set_has(&ib->queued, prev);
}

/* The inbox of `group` ("@name"), or the user's own for NULL or ""; a
 * group not known yet is added if `add` (NULL without memory, or not
 * known). */
static inbox *inbox_of(tern__ccore *cc, const char *group, int add) {
  if (!group || !group[0]) return &cc->own;
  for (size_t i = 0; i < cc->ngroups; i++)
    if (!strcmp(cc->groups[i].name, group)) return &cc->groups[i];
  if (!add) return NULL;
  if (cc->ngroups == cc->capgroups) {
    size_t cap = cc->capgroups ? cc->capgroups * 2 : 4;
    inbox *g = realloc(cc->groups, cap * sizeof(*g));
    if (!g) return NULL;
    cc->groups = g;
    cc->capgroups = cap;
  }
  inbox *ib = &cc->groups[cc->ngroups];
  memset(ib, 0, sizeof(*ib));
  if (!(ib->extra.v = malloc(TERN__CSTORE_EXTRA_MAX * sizeof(uint64_t)))) return NULL;
  ib->extra.cap = TERN__CSTORE_EXTRA_MAX;
  snprintf(ib->name, sizeof(ib->name), "%s", group);
  cc->ngroups++;
  return ib;
}

static int load_group(void *ctx, const char *group, uint64_t last, const uint64_t *extra, size_t n) {
  inbox *ib = inbox_of(ctx, group, 1);
  if (!ib) return TERN_ENOMEM;
  ib->last = last;
  memcpy(ib->extra.v, extra, n * sizeof(*extra));
  ib->extra.n = n;
  return 0;
}

static void want_ack(tern__ccore *cc, uint64_t now_ms, int soon) {
  if (!cc->ack_needed) cc->ack_due_ms = now_ms + (soon ? 0 : cc->cfg.ack_delay_ms);
  cc->ack_needed = 1;
  if (soon) cc->ack_due_ms = now_ms;
}

static void save_delivered(tern__ccore *cc, const inbox *ib);

/* Records seq of ib as handed over (to the app, or to nobody: an OWN
 * carbon or group message). */
static void mark_delivered(tern__ccore *cc, inbox *ib, uint64_t seq) {
  if (delivered(ib, seq)) return;
  if (seq == ib->last + 1) {
    ib->last = seq;
    while (set_has(&ib->extra, ib->last + 1)) set_del(&ib->extra, ++ib->last);
  } else if (ib->extra.n < TERN__CSTORE_EXTRA_MAX) {
    (void)set_add(&ib->extra, seq);
  }
  save_delivered(cc, ib);
}

/* The relay will never send seqs <= floor of ib: raise last to it. */
static void raise_floor(tern__ccore *cc, inbox *ib, uint64_t floor) {
  if (floor <= ib->last) return;
  ib->last = floor;
  set_trim(&ib->extra, floor);
  while (set_has(&ib->extra, ib->last + 1)) set_del(&ib->extra, ++ib->last);
  save_delivered(cc, ib);
}

/* The cmids below this are settled: no message of the outbox is below it. */
static uint64_t settled_floor(const tern__ccore *cc) {
  uint64_t f = cc->head ? cc->head->cmid : cc->next_cmid;
  return f < cc->settled_cap ? f : cc->settled_cap;
}

/* A queued MESSAGE event that is this device's own (flags OWN: a carbon
 * or a group message it sent), taken with the others, in order, but not
 * shown to the app: it only takes its place in the inbox. Marked in the
 * event's `error`, which a MESSAGE does not otherwise use. */
#define EV_OWN_MARK 1

/* 0, or -1 if it could not be queued: then it is neither queued nor
 * acknowledged, and the relay sends it again. `to`: a carbon's recipient,
 * a group's name, or NULL. An OWN message goes through the queue too, so
 * that it counts as handed over only after what precedes it (a crash that
 * loses the queue loses both, and the relay sends both again). */
static int enqueue_message(tern__ccore *cc, inbox *ib, uint64_t seq, uint64_t ts, const char *from,
                           const char *to, uint64_t flags, const uint8_t *body, size_t len,
                           uint64_t now_ms) {
  (void)now_ms;
  int own = (flags & TERN__MSGF_OWN) != 0;
  if (set_add(&ib->queued, seq) < 0) {
    cc->nomem = 1;
    return -1;
  }
  tern_event ev = {.type = TERN_EV_MESSAGE, .seq = seq, .server_time_ms = ts, .user = from,
                   .to = to, .body = own ? NULL : body, .body_len = own ? 0 : len,
                   .error = own ? EV_OWN_MARK : 0};
  if (tern__evq_push(&cc->events, &ev) < 0) {
    cc->nomem = 1;
    set_del(&ib->queued, seq);
    return -1;
  }
  return 0;
}

/* The inbox a DELIVER (or a held message) belongs to, by its flags. */
static inbox *inbox_for(tern__ccore *cc, uint64_t flags, const char *to) {
  return inbox_of(cc, (flags & TERN__MSGF_GROUP) ? to : NULL, 1);
}

/* Moves held messages whose predecessor has now arrived into the queue. */
static void release_held(tern__ccore *cc, uint64_t now_ms) {
  int moved;
  do {
    moved = 0;
    for (size_t i = 0; i < cc->held_n; i++) {
      held_msg *h = &cc->held[i];
      inbox *ib = inbox_for(cc, h->flags, h->to);
      if (!ib) continue; /* no memory: kept */
      if (delivered(ib, h->seq) || set_has(&ib->queued, h->seq)) {
        /* A copy of something already handed over. */
      } else if (prev_ok(ib, h->prev_seq)) {
        if (enqueue_message(cc, ib, h->seq, h->ts, h->from, h->to[0] ? h->to : NULL, h->flags, h->body,
                            h->len, now_ms) < 0)
          continue; /* kept */
      } else {
        continue;
      }
      free(h->body);
      cc->held[i] = cc->held[--cc->held_n];
      moved = 1;
      i--;
    }
  } while (moved);
}

static void on_deliver(tern__ccore *cc, const tern__fr_msg *m, uint64_t now_ms) {
  char from[TERN_USER_MAX + 1], to[TERN_USER_MAX + 1];
  memcpy(from, m->peer, m->peer_len);
  from[m->peer_len] = 0;
  if (m->to_len) memcpy(to, m->to, m->to_len); /* to is NULL without CARBON */
  to[m->to_len] = 0;
  const char *carbon_to = (m->flags & TERN__MSGF_CARBON) ? to : NULL;
  if ((m->flags & TERN__MSGF_EPHEMERAL) || m->seq == 0) {
    /* Best effort by design: without memory it is gone (and the call says
     * TERN_ENOMEM). */
    (void)push(cc, TERN_EV_MESSAGE, 0, 0, 0, m->ts, from, m->body, m->body_len);
    return;
  }
  inbox *ib = inbox_for(cc, m->flags, to);
  if (!ib) {
    cc->nomem = 1; /* not acknowledged: the relay sends it again */
    return;
  }
  if (delivered(ib, m->seq) || set_has(&ib->queued, m->seq)) {
    want_ack(cc, now_ms, 0); /* a copy: tell the relay again what we have */
    ib->ack_due = 1;
    return;
  }
  for (size_t i = 0; i < cc->held_n; i++)
    if (cc->held[i].seq == m->seq && inbox_for(cc, cc->held[i].flags, cc->held[i].to) == ib) return;
  const char *event_to = (m->flags & TERN__MSGF_GROUP) ? to : carbon_to;
  if (prev_ok(ib, m->prev_seq)) {
    if (enqueue_message(cc, ib, m->seq, m->ts, from, event_to, m->flags, m->body, m->body_len, now_ms) == 0)
      release_held(cc, now_ms);
    return;
  }
  if (cc->held_n >= cc->cfg.held_max) return; /* the relay resends it */
  held_msg *h = &cc->held[cc->held_n];
  h->body = malloc(m->body_len ? m->body_len : 1);
  if (!h->body) return;
  if (m->body_len) memcpy(h->body, m->body, m->body_len);
  h->len = m->body_len;
  h->seq = m->seq;
  h->prev_seq = m->prev_seq;
  h->ts = m->ts;
  h->flags = m->flags;
  memcpy(h->from, from, sizeof(from));
  memcpy(h->to, to, sizeof(to));
  cc->held_n++;
}

static void notice_ack(tern__ccore *cc, uint64_t kind, uint64_t cmid) {
  uint8_t tmp[32];
  tern__wbuf w;
  tern__wbuf_init(&w, tmp, sizeof(tmp));
  tern__fr_notice_ack_write(&w, kind, cmid);
  emit(cc, TERN__CH_CONTROL, 1, w.p, w.len);
}

static void save_delivered(tern__ccore *cc, const inbox *ib) {
  /* A failed save means a crash now would hand these over again; the app
   * is told, and the next save (the next message) writes it all again. */
  int rc = ib == &cc->own ? tern__cstore_delivered_save(cc->store, ib->last, ib->extra.v, ib->extra.n)
                          : tern__cstore_group_save(cc->store, ib->name, ib->last, ib->extra.v, ib->extra.n);
  if (rc < 0) {
    char detail[320];
    snprintf(detail, sizeof(detail),
             "the client's store could not record a delivered message (after a crash it may be "
             "handed over again): %s", tern__cstore_errmsg(cc->store));
    push_error(cc, TERN_ESTORE, 0, NULL, detail);
  }
}

/* The relay answered entry e (SERVER_ACK, FAILED or BUSY): whatever was
 * sent before it and is still unanswered has been overtaken. */
static void answered(tern__ccore *cc, const entry *e) {
  if (e->sent_ms && e->tx > cc->answered_tx) cc->answered_tx = e->tx;
}

int tern__ccore_input(tern__ccore *cc, const uint8_t *frames, size_t len, uint64_t now_ms) {
  tern__rbuf r, body;
  cc->nomem = 0;
  tern__rbuf_init(&r, frames, len);
  uint8_t type;
  while (tern__frame_next(&r, &type, &body) == 1) {
    switch (type) {
      case TERN__FR_DELIVER: {
        tern__fr_msg m;
        if (tern__fr_msg_read(&body, TERN__FR_DELIVER, &m) == 0) on_deliver(cc, &m, now_ms);
        break;
      }
      case TERN__FR_PRESENCE: {
        tern__fr_presence p;
        if (tern__fr_presence_read(&body, &p) != 0) break;
        char who[TERN_USER_MAX + 1];
        memcpy(who, p.user, p.user_len);
        who[p.user_len] = 0;
        tern_event ev = {.type = TERN_EV_PRESENCE, .server_time_ms = p.since_ms, .user = who,
                         .online = (int)p.online};
        /* Best effort, as it travelled: without memory it is gone. */
        if (tern__evq_push(&cc->events, &ev) < 0) cc->nomem = 1;
        break;
      }
      case TERN__FR_SERVER_ACK: {
        tern__fr_sack a;
        if (tern__fr_sack_read(&body, &a) != 0) break;
        cc->progress_ms = now_ms;
        entry *e = find_entry(cc, a.cmid);
        if (!e || e->settled) break; /* a copy of an ack already handled */
        answered(cc, e);
        /* The store forgets it only when the app takes SENT: a crash
         * before that resends it, and the relay answers from its dedup. */
        if (push(cc, TERN_EV_SENT, 0, a.cmid, a.seq, a.ts, e->to, NULL, 0) < 0) {
          /* Not settled: sent again after busy_retry_ms, and the relay
           * answers the resend from its dedup record. */
          hold(cc, e);
          e->retry_at_ms = now_ms + cc->cfg.busy_retry_ms;
          break;
        }
        uint64_t acked_tx = e->tx;
        answered_for_good(cc, e);
        /* The next message to the same recipient, if its last copy went
         * out before this one's, named this one as prev_cmid while the
         * relay may not have had it yet, and was then dropped (§3 of
         * messages.md): send it again now rather than a resend interval
         * later. */
        for (entry *n = e->next; n; n = n->next) {
          if (n->settled || strcmp(n->to, e->to) != 0) continue;
          if (n->sent_ms && n->tx < acked_tx && cc->online) transmit(cc, n, now_ms);
          break;
        }
        break;
      }
      case TERN__FR_FAILED: {
        tern__fr_failed f;
        if (tern__fr_failed_read(&body, &f) != 0) break;
        cc->progress_ms = now_ms;
        int err = tern__wire_err_code(f.error, TERN_EPROTO);
        entry *e = find_entry(cc, f.cmid);
        if (e && e->settled) break; /* already queued */
        if (e) answered(cc, e);
        else if (set_has(&cc->receipts, f.cmid)) break;
        /* Without an outbox entry it was stored, then expired; whether it
         * is still awaited is settled when the app takes the event. Without
         * memory: an entry is sent again after busy_retry_ms (the relay
         * refuses it again), a notice stays unacknowledged (the relay
         * sends it again). */
        if (push(cc, TERN_EV_FAILED, err, f.cmid, 0, 0, e ? e->to : NULL, NULL, 0) < 0) {
          if (e) {
            hold(cc, e);
            e->retry_at_ms = now_ms + cc->cfg.busy_retry_ms;
          }
          break;
        }
        if (e) answered_for_good(cc, e);
        break;
      }
      case TERN__FR_BUSY: {
        tern__fr_failed f;
        if (tern__fr_failed_read(&body, &f) != 0) break;
        cc->progress_ms = now_ms;
        entry *e = find_entry(cc, f.cmid);
        /* Not in flight: a second answer (the copy's) to one sending. */
        if (!e || e->settled || !e->sent_ms) break;
        answered(cc, e);
        hold(cc, e);
        e->copy_due_ms = 0;
        e->retry_at_ms = now_ms + cc->cfg.busy_retry_ms;
        int err = tern__wire_err_code(f.error, TERN_ESTORE);
        char detail[160];
        snprintf(detail, sizeof(detail),
                 err == TERN_ERATE ? "the relay asks this device to send more slowly (%s); "
                                     "sending it again in %u ms"
                                   : "the relay could not store the message now (%s); "
                                     "sending it again in %u ms",
                 tern_strerror(err), cc->cfg.busy_retry_ms);
        push_error(cc, err, f.cmid, e->to, detail);
        break;
      }
      case TERN__FR_RECEIPT: {
        uint64_t cmid;
        if (tern__fr_u64_read(&body, &cmid) != 0) break;
        /* Overtook its SERVER_ACK (or SENT is not yet taken): leave it
         * unacknowledged, and the relay sends it again later. */
        if (find_entry(cc, cmid) || set_has(&cc->receipts, cmid)) break;
        /* Whether it is still awaited (not a copy of one already shown) is
         * settled when the app takes the event; the notice is acked then. */
        if (set_add(&cc->receipts, cmid) < 0) {
          cc->nomem = 1;
          break;
        }
        /* Without memory the notice stays unacknowledged: sent again. */
        if (push(cc, TERN_EV_DELIVERED, 0, cmid, 0, 0, NULL, NULL, 0) < 0)
          set_del(&cc->receipts, cmid);
        break;
      }
      case TERN__FR_FLOOR: {
        uint64_t floor;
        if (tern__fr_u64_read(&body, &floor) != 0) break;
        cc->synced = 1;
        if (floor <= cc->own.last) break;
        raise_floor(cc, &cc->own, floor);
        release_held(cc, now_ms);
        break;
      }
      case TERN__FR_GROUP_FLOOR: {
        /* A group this device gets (spec/messages.md §14), from past floor. */
        tern__fr_gack g;
        char name[TERN_USER_MAX + 1];
        if (tern__fr_gack_read(&body, TERN__FR_GROUP_FLOOR, &g) != 0) break;
        memcpy(name, g.group, g.group_len);
        name[g.group_len] = 0;
        inbox *ib = inbox_of(cc, name, 1);
        if (!ib) {
          cc->nomem = 1;
          break;
        }
        if (g.list.last > ib->last) {
          raise_floor(cc, ib, g.list.last);
          release_held(cc, now_ms);
        } else if (ib->last > g.list.last) {
          /* The relay is behind (our ack was lost): tell it again. */
          want_ack(cc, now_ms, 0);
          ib->ack_due = 1;
        }
        break;
      }
      case TERN__FR_GROUP_RECEIPT: {
        tern__fr_greceipt g;
        if (tern__fr_greceipt_read(&body, &g) != 0) break;
        /* A count, not a state to keep: acknowledged at once with the count
         * seen (a newer one stays with the relay), told to the app. */
        tern_event ev = {.type = TERN_EV_RECEIPTS, .cmid = g.cmid, .user = "",
                         .delivered = (uint32_t)g.got, .members = (uint32_t)g.of};
        if (tern__evq_push(&cc->events, &ev) < 0) {
          cc->nomem = 1; /* unacknowledged: sent again */
          break;
        }
        uint8_t tmp[40];
        tern__wbuf w;
        tern__wbuf_init(&w, tmp, sizeof(tmp));
        tern__fr_notice_ack_code_write(&w, TERN__KIND_GROUP_RECEIPT, g.cmid, (g.got << 32) | g.of);
        emit(cc, TERN__CH_CONTROL, 1, w.p, w.len);
        break;
      }
      default:
        break;
    }
  }
  return cc->nomem ? TERN_ENOMEM : 0;
}

/* What taking an event commits. Returns 0 if the app sees it, 1 if it
 * turned out to be a copy and is skipped. */
static int settle(tern__ccore *cc, tern_event *ev, uint64_t now_ms) {
  switch (ev->type) {
    case TERN_EV_MESSAGE: {
      uint64_t seq = ev->seq;
      if (!seq) return 0;
      /* Handed to the app now: record it before the app sees it. */
      inbox *ib = inbox_of(cc, ev->to && ev->to[0] == '@' ? ev->to : NULL, 0);
      if (!ib) return 0;
      set_del(&ib->queued, seq);
      mark_delivered(cc, ib, seq);
      ib->ack_due = 1;
      want_ack(cc, now_ms, ++cc->taken_since_ack >= ACK_EVERY);
      return ev->error == EV_OWN_MARK; /* one's own: not shown */
    }
    case TERN_EV_SENT:
    case TERN_EV_FAILED: {
      entry *e = find_entry(cc, ev->cmid);
      if (e) {
        /* A failure of a store write leaves it in the outbox: it is resent
         * after a restart and settled again. The app is told. */
        /* A group message awaits no DELIVERED: its receipts are counts
         * (TERN_EV_RECEIPTS), told as they come. */
        int awaits = ev->type == TERN_EV_SENT && !(ev->user && ev->user[0] == '@');
        if (tern__cstore_outbox_del(cc->store, ev->cmid, awaits) < 0) {
          char detail[320];
          snprintf(detail, sizeof(detail),
                   "the client's store could not take the message out of its outbox (after a "
                   "restart it is sent again): %s", tern__cstore_errmsg(cc->store));
          push_error(cc, TERN_ESTORE, ev->cmid, NULL, detail);
          if (ev->cmid < cc->settled_cap) cc->settled_cap = ev->cmid;
        }
        unlink_entry(cc, e);
      } else if (ev->type == TERN_EV_FAILED) {
        int took = tern__cstore_await_take(cc->store, ev->cmid);
        if (took >= 0) notice_ack(cc, TERN__KIND_FAILED, ev->cmid);
        return took == 1 ? 0 : 1;
      }
      if (ev->type == TERN_EV_FAILED) notice_ack(cc, TERN__KIND_FAILED, ev->cmid);
      return 0;
    }
    case TERN_EV_DELIVERED: {
      set_del(&cc->receipts, ev->cmid);
      int took = tern__cstore_await_take(cc->store, ev->cmid);
      if (took < 0) return 1; /* not acked: the relay sends it again */
      notice_ack(cc, TERN__KIND_RECEIPT, ev->cmid);
      return took == 1 ? 0 : 1;
    }
    default:
      return 0;
  }
}

int tern__ccore_next_event(tern__ccore *cc, tern_event *ev, uint64_t now_ms) {
  for (;;) {
    if (!tern__evq_take(&cc->events, ev)) return 0;
    if (settle(cc, ev, now_ms) == 0) return 1;
  }
}

/* ---- session ------------------------------------------------------------- */

/* SYNC, or the acks: a DELIVERY_ACK, and a GROUP_ACK for each group with
 * something new to say. */
static void send_seqlist(tern__ccore *cc, uint8_t type) {
  tern__fr_gack g;
  g.list.last = cc->own.last;
  g.list.n = cc->own.extra.n < TERN__SEQLIST_MAX ? cc->own.extra.n : TERN__SEQLIST_MAX;
  memcpy(g.list.seqs, cc->own.extra.v, g.list.n * sizeof(uint64_t));
  uint8_t tmp[96 + TERN__SEQLIST_MAX * TERN__VARINT_MAX];
  tern__wbuf w;
  tern__wbuf_init(&w, tmp, sizeof(tmp));
  tern__fr_seqlist_write(&w, type, &g.list);
  emit(cc, TERN__CH_CONTROL, 1, w.p, w.len);
  for (size_t i = 0; type == TERN__FR_DELIVERY_ACK && i < cc->ngroups; i++) {
    inbox *ib = &cc->groups[i];
    if (!ib->ack_due) continue;
    ib->ack_due = 0;
    g.group = (const uint8_t *)ib->name;
    g.group_len = strlen(ib->name);
    g.list.last = ib->last;
    g.list.n = ib->extra.n < TERN__SEQLIST_MAX ? ib->extra.n : TERN__SEQLIST_MAX;
    memcpy(g.list.seqs, ib->extra.v, g.list.n * sizeof(uint64_t));
    tern__wbuf_init(&w, tmp, sizeof(tmp));
    tern__fr_gack_write(&w, TERN__FR_GROUP_ACK, &g);
    emit(cc, TERN__CH_CONTROL, 1, w.p, w.len);
  }
  cc->ack_needed = 0;
  cc->taken_since_ack = 0;
}

/* Recipients with an unsent message waiting (a BUSY's retry, or no room in
 * the window): a later message to them waits too, or the relay would drop
 * it for its prev_cmid (spec/messages.md §3). Past BLOCK_MAX recipients,
 * everything waits. */
#define BLOCK_MAX 16
typedef struct blocklist {
  const char *to[BLOCK_MAX];
  size_t n;
  int all;
} blocklist;

static int blocked(const blocklist *b, const char *to) {
  if (b->all) return 1;
  for (size_t i = 0; i < b->n; i++)
    if (strcmp(b->to[i], to) == 0) return 1;
  return 0;
}

static void block(blocklist *b, const char *to) {
  if (blocked(b, to)) return;
  if (b->n < BLOCK_MAX) b->to[b->n++] = to;
  else b->all = 1;
}

void tern__ccore_online(tern__ccore *cc, const char *self, uint64_t now_ms) {
  cc->online = 1;
  snprintf(cc->self, sizeof(cc->self), "%s", self);
  cc->progress_ms = now_ms;
  cc->synced = 0;
  cc->sync_sent_ms = now_ms;
  send_seqlist(cc, TERN__FR_SYNC);
  cc->settled_told = 0;
  cc->settled_next_ms = now_ms;
  blocklist bl = {.n = 0};
  for (entry *e = cc->head; e; e = e->next) {
    if (e->settled) continue;
    if (!e->sent_ms) e->resend_ivl = cc->cfg.resend_ms;
    if (!e->sent_ms && e->retry_at_ms <= now_ms && room_for(cc, e) && !blocked(&bl, e->to))
      transmit(cc, e, now_ms);
    if (!e->sent_ms) block(&bl, e->to); /* the rest to e->to waits behind it */
  }
}

void tern__ccore_offline(tern__ccore *cc) {
  cc->online = 0;
  for (entry *e = cc->head; e; e = e->next) {
    set_sent(cc, e, 0);
    e->copy_due_ms = 0;
  }
  cc->answered_tx = cc->tx_next; /* answers on the next session are new */
  /* Frames not yet sent are meaningless on the next session. */
  tern__outq_clear(&cc->outs);
  tern__outq_init(&cc->outs);
  cc->ack_needed = 0;
}

/* When an unanswered MSG is sent again on the same session:
 *  - once the relay has answered a MSG sent after it (it was overtaken:
 *    lost, or dropped for its prev_cmid), resend_ivl after its last
 *    sending, resend_ivl doubling each time up to RESEND_BACKOFF_MAX;
 *  - otherwise only when the relay has answered nothing at all for
 *    resend_ms: while answers flow in sending order the relay is alive and
 *    just behind, and copies would only pile onto it (commit c60865d). */

/* The relay was last known alive: its last answer, or the last datagram
 * of any kind (an ENet acknowledgement of a ping will do) the shell heard. */
static uint64_t alive_ms(const tern__ccore *cc) {
  return cc->heard_ms > cc->progress_ms ? cc->heard_ms : cc->progress_ms;
}

static uint64_t resend_due(const tern__ccore *cc, const entry *e) {
  uint64_t t = e->sent_ms + e->resend_ivl;
  /* Not overtaken: only when the relay has answered nothing for resend_ms.
   * (Being heard is not enough: a MSG the relay dropped for its prev_cmid,
   * behind one answered BUSY, is answered by nothing, and must go again.
   * The resend interval doubles each time, and the window bounds how many.) */
  if (e->tx >= cc->answered_tx && t < cc->progress_ms + cc->cfg.resend_ms)
    t = cc->progress_ms + cc->cfg.resend_ms;
  return t;
}

void tern__ccore_set_heard(tern__ccore *cc, uint64_t heard_ms) { cc->heard_ms = heard_ms; }

size_t tern__ccore_in_flight(const tern__ccore *cc) { return cc->nfly; }

uint64_t tern__ccore_waiting_since(const tern__ccore *cc) { return cc->nfly ? cc->progress_ms : 0; }

int tern__ccore_timeout(const tern__ccore *cc, uint64_t now_ms) {
  uint64_t best = UINT64_MAX;
  if (cc->ack_needed && cc->online) best = cc->ack_due_ms;
  if (cc->online && !cc->synced && cc->sync_sent_ms + cc->cfg.resend_ms < best)
    best = cc->sync_sent_ms + cc->cfg.resend_ms;
  if (cc->online) {
    int flying = 0;
    size_t fly_seen = 0;
    blocklist bl = {.n = 0};
    for (const entry *e = cc->head; e; e = e->next) {
      /* Past the last one in flight with the window full, everything
       * waits: a large outbox costs nothing here. */
      if (fly_seen == cc->nfly && !window_open(cc)) break;
      if (e->settled) continue;
      if (e->sent_ms) fly_seen++;
      if (e->copy_due_ms && e->copy_due_ms < best) best = e->copy_due_ms;
      uint64_t t = e->retry_at_ms;
      if (e->sent_ms) {
        t = resend_due(cc, e);
      } else if (!room_for(cc, e) || blocked(&bl, e->to)) {
        continue; /* waits for room in the window, or behind an older one */
      } else {
        block(&bl, e->to);
      }
      if (e->sent_ms) flying = 1;
      if (t < best) best = t;
    }
    if (flying && alive_ms(cc) + cc->cfg.dead_link_ms < best) best = alive_ms(cc) + cc->cfg.dead_link_ms;
    if (flying && !cc->stalled && cc->progress_ms + cc->cfg.dead_link_ms < best)
      best = cc->progress_ms + cc->cfg.dead_link_ms;
  }
  if (best == UINT64_MAX) return -1;
  if (best <= now_ms) return 0;
  uint64_t d = best - now_ms;
  return d > 0x7fffffff ? 0x7fffffff : (int)d;
}

int tern__ccore_tick(tern__ccore *cc, uint64_t now_ms) {
  if (!cc->online) return 0;
  if (cc->nfly && now_ms >= alive_ms(cc) + cc->cfg.dead_link_ms) return 1;
  if (!cc->nfly || now_ms < cc->progress_ms + cc->cfg.dead_link_ms) {
    cc->stalled = 0;
  } else if (!cc->stalled) {
    /* Heard from, but no answer for dead_link_ms: the relay is busy, not
     * gone. The messages wait; the app is told once per stall. */
    cc->stalled = 1;
    size_t waiting = cc->outbox_n > cc->nfly ? cc->outbox_n - cc->nfly : 0;
    char detail[200];
    snprintf(detail, sizeof(detail),
             "the relay has not answered for %u ms but is reachable: %zu messages in flight, "
             "%zu more waiting in the outbox",
             cc->cfg.dead_link_ms, cc->nfly, waiting);
    push_error(cc, TERN_EBUSY, 0, NULL, detail);
  }
  size_t fly_seen = 0;
  blocklist bl = {.n = 0};
  for (entry *e = cc->head; e; e = e->next) {
    if (fly_seen == cc->nfly && !window_open(cc)) break; /* the rest waits */
    if (e->settled) continue;
    if (e->copy_due_ms && now_ms >= e->copy_due_ms) send_copy(cc, e);
    if (e->sent_ms) {
      fly_seen++;
      if (now_ms < resend_due(cc, e)) continue;
      uint64_t max = (uint64_t)cc->cfg.resend_ms * RESEND_BACKOFF_MAX;
      e->resend_ivl = e->resend_ivl * 2 > max ? max : e->resend_ivl * 2;
      transmit(cc, e, now_ms);
    } else if (now_ms >= e->retry_at_ms && room_for(cc, e) && !blocked(&bl, e->to)) {
      e->resend_ivl = cc->cfg.resend_ms;
      transmit(cc, e, now_ms);
      if (e->sent_ms) fly_seen++;
    }
    if (!e->sent_ms) block(&bl, e->to); /* still waiting: the rest to e->to waits behind it */
  }
  if (!cc->synced && now_ms >= cc->sync_sent_ms + cc->cfg.resend_ms) {
    /* No FLOOR yet: the SYNC (or its answer) was lost. */
    cc->sync_sent_ms = now_ms;
    send_seqlist(cc, TERN__FR_SYNC);
  }
  if (cc->ack_needed && now_ms >= cc->ack_due_ms) send_seqlist(cc, TERN__FR_DELIVERY_ACK);
  uint64_t floor = settled_floor(cc);
  if (floor > cc->settled_told && now_ms >= cc->settled_next_ms) {
    /* At most one a second, and never a wake-up of its own (no timeout
     * asks for it): it rides on the next tick the client has anyway. The
     * relay's dedup rows may wait that long. */
    uint8_t tmp[16];
    tern__wbuf w;
    tern__wbuf_init(&w, tmp, sizeof(tmp));
    tern__fr_u64_write(&w, TERN__FR_SETTLED, floor);
    emit(cc, TERN__CH_CONTROL, 1, w.p, w.len);
    cc->settled_told = floor;
    cc->settled_next_ms = now_ms + SETTLED_EVERY_MS;
  }
  return 0;
}
