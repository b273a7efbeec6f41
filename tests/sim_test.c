/*
 * Deterministic simulation of reliable messaging: the relay core and several
 * client cores, each on its own store, exchange frames over a seeded
 * simulated network on a virtual clock, with loss, duplication, reordering,
 * delay, partitions, and crashes of clients and relay (stores survive,
 * memory does not). After each run the network heals and the run must
 * settle; then the invariants are checked:
 *
 *   - every message accepted by send() was server-acked (SENT) or FAILED;
 *   - every server-acked message reached the app of every device of its
 *     recipient exactly once (some users have a second device, issue 14),
 *     and messages from one sending device to one recipient arrived in
 *     send order on each of its devices;
 *   - no DELIVERED receipt came before one of the recipient's devices had
 *     the message, and every delivered message got its receipt;
 *   - every server-acked message reached every other device of its sender
 *     as a carbon exactly once, in send order per recipient, and never the
 *     device that sent it (spec/messages.md §13);
 *   - groups (§14): users u0 and u1 are members of group @g0 throughout and
 *     write to it; the others are in it or not, and in some seeds one
 *     leaves and another joins while messages flow. Every device of a user
 *     that was a member when a group message was stored (its seq between
 *     the user's join and leave points) gets it exactly once, with the same
 *     seq on every device (one order) and in send order per sender; no
 *     other device gets it, nor the device that sent it; the sender's
 *     receipts count exactly the other members that have it.
 *
 * Some seeds also make relay commits fail (a full disk), which the relay
 * answers with BUSY and the clients with TERN_EV_ERROR and a retry.
 *
 * The relay core runs on each relay store backend (relay_store.h): the
 * SQLite one and the in-memory one, the same seeds on both.
 *
 * Environment knobs:
 *   TERN_SIM_SEEDS=N   seeds to run (default 2000; 100000 by hand)
 *   TERN_SIM_SEED=S    run only seed S, with a trace of the run
 *   TERN_SIM_FIRST=S   first seed (default 1)
 * A failing seed prints the command that replays it.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/ccore.h"
#include "store/cstore.h"
#include "wire/frame.h"
#include "relay/rcore.h"
#include "store/rstore.h"

#define MAX_USERS 4
#define MAX_CLIENTS 6          /* devices: MAX_USERS users' first, and up to 2 second devices */
#define MAX_MSGS 64          /* per client per run */
#define WALL_EPOCH 1700000000000ull
#define GROUP "@g0"
static const char *const unames[] = {"u0", "u1", "u2", "u3"}; /* MAX_USERS of them */
#define MAX_GMSGS (MAX_MSGS * MAX_CLIENTS) /* group messages a device may get */

/* ---- random ------------------------------------------------------------- */

typedef struct rng {
  uint64_t s;
} rng;

static uint64_t rnd(rng *r) {
  r->s ^= r->s >> 12;
  r->s ^= r->s << 25;
  r->s ^= r->s >> 27;
  return r->s * 2685821657736338717ull;
}

static double rnd01(rng *r) { return (double)(rnd(r) >> 11) / 9007199254740992.0; }

static uint64_t rnd_range(rng *r, uint64_t lo, uint64_t hi) {
  return lo + (hi > lo ? rnd(r) % (hi - lo + 1) : 0);
}

/* ---- the network ---------------------------------------------------------- */

typedef struct packet {
  struct packet *next;
  uint64_t at;          /* arrival time */
  uint64_t conn;        /* session it belongs to */
  int to_relay;         /* direction */
  int client;           /* which client's session */
  size_t len;
  uint8_t data[];
} packet;

typedef struct params {
  double loss;          /* per packet, each way */
  double dup;           /* probability a packet arrives twice */
  uint64_t delay_ms;    /* one-way base delay */
  uint64_t jitter_ms;   /* uniform extra delay: reorders packets */
  double client_crash_per_s;
  double relay_crash_per_s;
  double partition_per_s;
  double link_drop_per_s; /* a session dies without anyone noticing at once */
  double store_fail_per_s; /* a relay commit fails (disk full) */
  int clients;          /* devices: users, then second devices */
  int users;            /* users u0..u<users-1>: clients 0..users-1 are their first devices */
  int msgs;             /* per client */
  uint64_t send_window_ms;
} params;

/* ---- nodes ---------------------------------------------------------------- */

typedef struct sent_rec {
  uint64_t cmid;
  int to;               /* recipient user, or -1 for the group */
  int k;                /* index of the message from this sender to `to` */
  int acked, failed, delivered_event, errors;
  uint64_t gseq;        /* group: its seq in the group (from SENT) */
  uint32_t gmax, gof;   /* group: the highest RECEIPTS count, and of how many */
} sent_rec;

typedef struct client {
  int id;
  int user;             /* the user whose device this is */
  char name[16];
  uint8_t dev[32];
  tern__cstore *store;  /* survives crashes */
  tern__ccore *core;    /* lost in a crash */
  uint64_t conn;        /* current session id, 0 if none */
  uint64_t reconnect_at;
  uint64_t dies_at;     /* the relay crashed: the client notices then */
  uint64_t partition_until;
  /* The app: what it sent and what it received (the app's own database,
   * which survives its crashes). */
  sent_rec sent[MAX_MSGS];
  int nsent;
  int next_k[MAX_CLIENTS]; /* per recipient user: the next message's index */
  uint64_t next_send_at;
  int received_k[MAX_CLIENTS][MAX_MSGS * 2]; /* ks received from each sending device, in order */
  int nreceived[MAX_CLIENTS];
  /* Carbons: the ks of each sending device of this user to each user, in
   * the order they arrived. */
  int carbon_k[MAX_CLIENTS][MAX_USERS][MAX_MSGS * 2];
  int ncarbon[MAX_CLIENTS][MAX_USERS];
  /* Group messages: the next k this device sends to the group, and what it
   * got (sending device, k, seq), in the order it got them. */
  int next_gk;
  int grecv_from[MAX_GMSGS], grecv_k[MAX_GMSGS];
  uint64_t grecv_seq[MAX_GMSGS];
  int ngrecv;
} client;

typedef struct sim {
  uint64_t seed;
  rng r;
  params p;
  uint64_t now;
  int trace;
  tern__relay_store *rstore;
  tern__rcore *rcore;
  tern__rcore_config rcfg;
  client c[MAX_CLIENTS];
  packet *inflight;     /* sorted by arrival time */
  uint64_t next_conn;
  uint64_t stale[64];   /* relay-side sessions whose client is gone */
  uint64_t stale_close_at[64];
  int nstale;
  int fault_drop_outbox;
  /* The group: per user, its join and leave points (UINT64_MAX: still in;
   * joined UINT64_MAX: never in), and the one membership change. */
  uint64_t gjoined[MAX_USERS], gleft[MAX_USERS];
  uint64_t gchange_at;  /* 0: no change in this seed */
  int gchanged;
  char failure[512];   /* the first violation found */
  unsigned violations; /* every kind found (V_*) */
  /* counters for the report */
  uint64_t crashes_client, crashes_relay, packets, dropped, store_failures;
} sim;

/* Kinds of violation, so that a test can say which invariant broke. */
enum {
  V_DUPLICATE = 1u << 0,   /* an app got a message twice */
  V_ORDER = 1u << 1,       /* out of per-sender order */
  V_LOST_ACKED = 1u << 2,  /* SENT (server-acked) but never reached its recipient */
  V_UNSETTLED = 1u << 3,   /* accepted by send, never SENT or FAILED */
  V_RECEIPT = 1u << 4,     /* DELIVERED early, missing or repeated */
  V_SENT_TWICE = 1u << 5,
  V_FAILED = 1u << 6,      /* FAILED, which nothing here should be */
  V_OTHER = 1u << 7,       /* a message nobody sent, an event for an unknown cmid... */
  V_CARBON = 1u << 8,      /* a carbon missing, repeated, out of order, or to its sender */
  V_GROUP = 1u << 9,       /* a group message missing, repeated, out of order or membership */
};

#define TRACE(s, ...)                                                          \
  do {                                                                         \
    if ((s)->trace) {                                                          \
      fprintf(stderr, "[%8" PRIu64 "] ", (s)->now);                           \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
    }                                                                          \
  } while (0)

static int fail(sim *s, unsigned kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(sim *s, unsigned kind, const char *fmt, ...) {
  s->violations |= kind;
  if (s->failure[0]) return 1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->failure, sizeof(s->failure), fmt, ap);
  va_end(ap);
  return 1;
}

static void net_send(sim *s, int client_id, uint64_t conn, int to_relay, const uint8_t *data,
                     size_t len) {
  s->packets++;
  client *cl = &s->c[client_id];
  int copies = 1 + (rnd01(&s->r) < s->p.dup);
  for (int i = 0; i < copies; i++) {
    if (rnd01(&s->r) < s->p.loss || s->now < cl->partition_until) {
      s->dropped++;
      continue;
    }
    packet *pk = malloc(sizeof(*pk) + len);
    pk->at = s->now + s->p.delay_ms + rnd_range(&s->r, 0, s->p.jitter_ms);
    pk->conn = conn;
    pk->to_relay = to_relay;
    pk->client = client_id;
    pk->len = len;
    memcpy(pk->data, data, len);
    packet **pp = &s->inflight;
    while (*pp && (*pp)->at <= pk->at) pp = &(*pp)->next;
    pk->next = *pp;
    *pp = pk;
  }
}

static void drain_relay(sim *s) {
  tern__rcore_out o;
  while (tern__rcore_next(s->rcore, &o) == 1) {
    for (int i = 0; i < s->p.clients; i++)
      if (s->c[i].conn == o.conn) net_send(s, i, o.conn, 0, o.data, o.len);
    /* Outputs for stale sessions go nowhere: their client has moved on. */
  }
}

static void drain_client(sim *s, client *cl) {
  tern__ccore_out o;
  while (tern__ccore_next_output(cl->core, &o) == 1)
    if (cl->conn) net_send(s, cl->id, cl->conn, 1, o.data, o.len);
}

/* Whether device `d` has message k of device `from`. */
static int device_has(const sim *s, int d, int from, int k) {
  const client *c = &s->c[d];
  for (int i = 0; i < c->nreceived[from]; i++)
    if (c->received_k[from][i] == k) return 1;
  return 0;
}

/* Whether device `d` has the carbon of message k from device `from` to
 * user `to`. */
static int carbon_has(const sim *s, int d, int from, int to, int k) {
  const client *c = &s->c[d];
  for (int i = 0; i < c->ncarbon[from][to]; i++)
    if (c->carbon_k[from][to][i] == k) return 1;
  return 0;
}

/* A carbon: message k from device `from` (of this user) to user `to`. */
static void app_carbon(sim *s, client *cl, const tern_event *ev, const char *buf) {
  int from = -1, to = -1, k = -1;
  char toname[16];
  if (sscanf(buf, "m %d %d %d", &from, &to, &k) != 3 || from < 0 || from >= s->p.clients || to < 0 ||
      to >= s->p.users || strcmp(ev->user, cl->name) != 0 || s->c[from].user != cl->user) {
    fail(s, V_CARBON, "client %d got a carbon nobody of its user sent: from '%s' to '%s' body '%s'",
         cl->id, ev->user, ev->to, buf);
    return;
  }
  snprintf(toname, sizeof toname, "u%d", to);
  if (strcmp(ev->to, toname) != 0) {
    fail(s, V_CARBON, "client %d: carbon of '%s' names recipient '%s'", cl->id, buf, ev->to);
    return;
  }
  if (from == cl->id) {
    fail(s, V_CARBON, "client %d got a carbon of its own message '%s'", cl->id, buf);
    return;
  }
  TRACE(s, "app %d carbon from %d to %d k=%d seq=%" PRIu64, cl->id, from, to, k, ev->seq);
  int n = cl->ncarbon[from][to];
  if (carbon_has(s, cl->id, from, to, k))
    fail(s, V_CARBON, "client %d got the carbon of message %d from %d to %d twice", cl->id, k, from, to);
  if (n > 0 && cl->carbon_k[from][to][n - 1] > k)
    fail(s, V_CARBON, "client %d got the carbon of message %d from %d to %d after %d", cl->id, k, from,
         to, cl->carbon_k[from][to][n - 1]);
  if (n < MAX_MSGS * 2) cl->carbon_k[from][to][cl->ncarbon[from][to]++] = k;
}

/* 1 if user u was in the group for the message of seq `seq`. */
static int was_member(const sim *s, int u, uint64_t seq) {
  return s->gjoined[u] != UINT64_MAX && s->gjoined[u] < seq && seq <= s->gleft[u];
}

/* How many members other than user `sender` a group message of seq `seq`
 * went to. */
static uint32_t members_for(const sim *s, int sender, uint64_t seq) {
  uint32_t n = 0;
  for (int u = 0; u < s->p.users; u++) n += u != sender && was_member(s, u, seq);
  return n;
}

/* How many times device d got group message k of device `from`. */
static int group_got(const sim *s, int d, int from, int k) {
  int n = 0;
  for (int i = 0; i < s->c[d].ngrecv; i++) n += s->c[d].grecv_from[i] == from && s->c[d].grecv_k[i] == k;
  return n;
}

/* Whether device d should get the group message r of device `from`. */
static int group_due(const sim *s, int d, int from, const sent_rec *r) {
  return d != from && r->gseq && was_member(s, s->c[d].user, r->gseq);
}

/* A group message: k of device `from`, at `seq` of the group. */
static void app_group(sim *s, client *cl, const tern_event *ev, const char *buf) {
  int from = -1, k = -1;
  if (strcmp(ev->to, GROUP) != 0 || sscanf(buf, "g %d %d", &from, &k) != 2 || from < 0 ||
      from >= s->p.clients || strcmp(ev->user, s->c[from].name) != 0) {
    fail(s, V_GROUP, "client %d got a group message nobody sent: from '%s' to '%s' body '%s'", cl->id,
         ev->user, ev->to, buf);
    return;
  }
  TRACE(s, "app %d group from %d k=%d seq=%" PRIu64, cl->id, from, k, ev->seq);
  if (from == cl->id) fail(s, V_GROUP, "client %d got its own group message %d", cl->id, k);
  if (group_got(s, cl->id, from, k))
    fail(s, V_GROUP, "client %d got group message %d of %d twice", cl->id, k, from);
  for (int i = cl->ngrecv - 1; i >= 0; i--)
    if (cl->grecv_from[i] == from) {
      if (cl->grecv_k[i] > k)
        fail(s, V_GROUP, "client %d got group message %d of %d after %d", cl->id, k, from, cl->grecv_k[i]);
      break;
    }
  if (cl->ngrecv < MAX_GMSGS) {
    cl->grecv_from[cl->ngrecv] = from;
    cl->grecv_k[cl->ngrecv] = k;
    cl->grecv_seq[cl->ngrecv++] = ev->seq;
  }
}

/* Whether every other device of the sender of r (device `from`) has its
 * carbon; *missing receives one that has not. */
static int carbons_in(const sim *s, int from, const sent_rec *r, int *missing) {
  if (r->to < 0) return 1; /* group messages have none: the sender's devices are members */
  for (int d = 0; d < s->p.clients; d++)
    if (d != from && s->c[d].user == s->c[from].user && !carbon_has(s, d, from, r->to, r->k)) {
      if (missing) *missing = d;
      return 0;
    }
  return 1;
}

/* The app takes every event and keeps its own record. */
static void app_take(sim *s, client *cl) {
  tern_event ev;
  while (tern__ccore_next_event(cl->core, &ev, s->now) == 1) {
    if (ev.type == TERN_EV_MESSAGE) {
      int from = -1, to = -1, k = -1;
      char buf[64];
      snprintf(buf, sizeof(buf), "%.*s", (int)ev.body_len, (const char *)ev.body);
      if (ev.to && ev.to[0] == '@') {
        app_group(s, cl, &ev, buf);
        continue;
      }
      if (ev.to) {
        app_carbon(s, cl, &ev, buf);
        continue;
      }
      if (sscanf(buf, "m %d %d %d", &from, &to, &k) != 3 || from < 0 || from >= s->p.clients ||
          to != cl->user || strcmp(ev.user, s->c[from].name) != 0) {
        fail(s, V_OTHER, "client %d got a message it was never sent: from '%s' body '%s'", cl->id, ev.user,
             buf);
        continue;
      }
      TRACE(s, "app %d recv from %d k=%d seq=%" PRIu64, cl->id, from, k, ev.seq);
      int n = cl->nreceived[from];
      for (int i = 0; i < n; i++)
        if (cl->received_k[from][i] == k)
          fail(s, V_DUPLICATE, "client %d got message %d from %d twice (seq %" PRIu64 ")", cl->id, k,
               from, ev.seq);
      if (n > 0 && cl->received_k[from][n - 1] > k)
        fail(s, V_ORDER, "client %d got message %d from %d after %d: out of order", cl->id, k, from,
             cl->received_k[from][n - 1]);
      if (n < MAX_MSGS * 2) cl->received_k[from][cl->nreceived[from]++] = k;
    } else if (ev.type == TERN_EV_SENT || ev.type == TERN_EV_FAILED ||
               ev.type == TERN_EV_DELIVERED || ev.type == TERN_EV_ERROR || ev.type == TERN_EV_RECEIPTS) {
      sent_rec *r = NULL;
      for (int i = 0; i < cl->nsent; i++)
        if (cl->sent[i].cmid == ev.cmid) r = &cl->sent[i];
      if (!r) {
        fail(s, V_OTHER, "client %d: event %d for unknown cmid %" PRIu64, cl->id, ev.type, ev.cmid);
        continue;
      }
      if (ev.type == TERN_EV_ERROR) {
        /* Only the relay's BUSY: the client stores here never fail. */
        if (ev.error != TERN_ESTORE || !ev.user[0] || r->acked)
          fail(s, V_OTHER, "client %d: ERROR %d for cmid %" PRIu64 " (user '%s', acked %d)",
               cl->id, ev.error, ev.cmid, ev.user, r->acked);
        r->errors++;
        TRACE(s, "app %d error %d cmid %" PRIu64, cl->id, ev.error, ev.cmid);
        continue;
      }
      if (ev.type == TERN_EV_SENT) r->acked++;
      if (ev.type == TERN_EV_SENT && r->to < 0) r->gseq = ev.seq;
      if (ev.type == TERN_EV_FAILED) r->failed++;
      if (ev.type == TERN_EV_RECEIPTS) {
        if (r->to >= 0 || ev.delivered > ev.members)
          fail(s, V_RECEIPT, "client %d: RECEIPTS %u of %u for cmid %" PRIu64 " (to %d)", cl->id,
               ev.delivered, ev.members, ev.cmid, r->to);
        if (ev.delivered > r->gmax) r->gmax = ev.delivered;
        r->gof = ev.members;
        continue;
      }
      if (ev.type == TERN_EV_DELIVERED && r->to < 0) {
        fail(s, V_RECEIPT, "client %d: DELIVERED for group message %d", cl->id, r->k);
        continue;
      }
      if (ev.type == TERN_EV_DELIVERED) {
        r->delivered_event++;
        /* A receipt only for what the app of one of the recipient's
         * devices has. */
        int have = 0;
        for (int d = 0; d < s->p.clients; d++)
          if (s->c[d].user == r->to) have |= device_has(s, d, cl->id, r->k);
        if (!have)
          fail(s, V_RECEIPT, "receipt for message %d from %d to %d before its recipient had it", r->k,
               cl->id, r->to);
      }
      TRACE(s, "app %d event %d cmid %" PRIu64, cl->id, ev.type, ev.cmid);
    }
  }
}

/* ---- sessions, crashes ------------------------------------------------------ */

static void end_session(sim *s, client *cl, int relay_knows) {
  if (!cl->conn) return;
  TRACE(s, "client %d session %" PRIu64 " ends", cl->id, cl->conn);
  if (relay_knows) {
    tern__rcore_close(s->rcore, cl->conn);
  } else if (s->nstale < 64) {
    /* The relay notices only when ENet times the peer out. */
    s->stale[s->nstale] = cl->conn;
    s->stale_close_at[s->nstale++] = s->now + rnd_range(&s->r, 0, 10000);
  } else {
    tern__rcore_close(s->rcore, cl->conn);
  }
  if (cl->core) tern__ccore_offline(cl->core);
  cl->conn = 0;
  cl->dies_at = 0;
  cl->reconnect_at = s->now + rnd_range(&s->r, 100, 3000);
}

static void try_connect(sim *s, client *cl) {
  cl->reconnect_at = 0;
  /* The handshake needs both of its packets to get through. */
  if (s->now < cl->partition_until || rnd01(&s->r) < s->p.loss || rnd01(&s->r) < s->p.loss) {
    cl->reconnect_at = s->now + rnd_range(&s->r, 500, 5000);
    return;
  }
  uint64_t conn = ++s->next_conn;
  if (tern__rcore_open(s->rcore, conn, cl->name, cl->dev, s->now) != 0) {
    cl->reconnect_at = s->now + 1000;
    return;
  }
  cl->conn = conn;
  TRACE(s, "client %d session %" PRIu64 " opens", cl->id, conn);
  tern__ccore_online(cl->core, cl->name, s->now);
  drain_client(s, cl);
}

static void new_client_core(sim *s, client *cl) {
  tern__ccore_config cfg;
  tern__ccore_config_default(&cfg);
  cr_assert_eq(tern__ccore_new(&cl->core, cl->store, &cfg), 0);
  (void)s;
}

static int clear_outbox(void *ctx, const tern__outmsg *m) {
  uint64_t *ids = ctx;
  if (ids[0] < 255) ids[++ids[0]] = m->cmid;
  return 0;
}

static void crash_client(sim *s, client *cl) {
  s->crashes_client++;
  TRACE(s, "client %d crashes", cl->id);
  end_session(s, cl, 0);
  tern__ccore_free(cl->core);
  cl->core = NULL;
  if (s->fault_drop_outbox) {
    uint64_t ids[256] = {0};
    tern__cstore_outbox_load(cl->store, clear_outbox, ids);
    for (uint64_t i = 1; i <= ids[0]; i++) tern__cstore_outbox_del(cl->store, ids[i], 0);
  }
  new_client_core(s, cl);
  cl->reconnect_at = s->now + rnd_range(&s->r, 100, 2000);
}

/* With a trace, the relay core's own log lines go there too. */
static void relay_log(void *ctx, int level, const char *line) {
  sim *s = ctx;
  TRACE(s, "relay log %d: %s", level, line);
}

static void new_relay_core(sim *s) {
  s->rcfg.log = relay_log;
  s->rcfg.log_ctx = s;
  cr_assert_eq(tern__rcore_new(&s->rcore, s->rstore, &s->rcfg), 0);
}

static void crash_relay(sim *s) {
  s->crashes_relay++;
  TRACE(s, "relay crashes");
  tern__rcore_free(s->rcore);
  s->rstore->ops->rollback(s->rstore, s->now); /* what was not committed is gone */
  for (int i = 0; i < s->p.clients; i++) {
    client *cl = &s->c[i];
    /* Clients notice a dead relay after a while (ENet or the dead-link
     * timer); until then, packets the relay sent before it died still
     * arrive. */
    if (cl->conn && !cl->dies_at) cl->dies_at = s->now + rnd_range(&s->r, 1000, 8000);
  }
  s->nstale = 0;
  /* Packets in flight to the relay are for sessions it no longer has. */
  new_relay_core(s);
}

/* ---- one run ---------------------------------------------------------------- */

static void pick_params(rng *r, params *p) {
  p->loss = rnd01(r) * 0.30;
  p->dup = rnd01(r) < 0.5 ? rnd01(r) * 0.10 : 0;
  p->delay_ms = rnd_range(r, 1, 150);
  p->jitter_ms = rnd01(r) < 0.5 ? rnd_range(r, 0, 100) : 0;
  p->client_crash_per_s = rnd01(r) < 0.5 ? rnd01(r) * 0.05 : 0;
  p->relay_crash_per_s = rnd01(r) < 0.5 ? rnd01(r) * 0.03 : 0;
  p->partition_per_s = rnd01(r) < 0.3 ? rnd01(r) * 0.03 : 0;
  p->link_drop_per_s = rnd01(r) < 0.3 ? rnd01(r) * 0.03 : 0;
  p->store_fail_per_s = rnd01(r) < 0.3 ? rnd01(r) * 0.2 : 0;
  p->clients = (int)rnd_range(r, 2, MAX_USERS);
  p->msgs = (int)rnd_range(r, 5, 24);
  p->send_window_ms = rnd_range(r, 1000, 40000);
  /* Drawn last, so the draws above are what they were before devices. */
  p->users = p->clients;
  if (rnd01(r) < 0.5) p->clients += (int)rnd_range(r, 1, MAX_CLIENTS - MAX_USERS);
}

enum { ON_SQLITE = 0, ON_MEMORY = 1 };
static const char *const backend_name[] = {"sqlite", "memory"};

static void setup(sim *s, uint64_t seed, int fault, int backend) {
  memset(s, 0, sizeof(*s));
  s->seed = seed;
  s->r.s = seed * 0x9E3779B97F4A7C15ull + 1;
  pick_params(&s->r, &s->p);
  char err[128];
  tern__rstore_config sc = {.path = ":memory:", .synchronous = 1};
  if (backend == ON_MEMORY)
    cr_assert_eq(tern__relay_mem_open(&s->rstore), 0);
  else
    cr_assert_eq(tern__relay_sqlite_open(&s->rstore, &sc, NULL, NULL, err, sizeof(err)), 0, "%s", err);
  tern__rcore_config_default(&s->rcfg);
  s->rstore->ops->fault(s->rstore, TERN__RS_FAULT_DUP, fault == 1);
  s->rstore->ops->fault(s->rstore, TERN__RS_FAULT_CARBON2, fault == 4);
  s->rstore->ops->fault(s->rstore, TERN__RS_FAULT_LEAVE_EARLY, fault == 5);
  s->rcfg.fault_ack_before_commit = fault == 2;
  s->fault_drop_outbox = fault == 3;
  if (fault == 2) s->p.relay_crash_per_s = 0.05 + s->p.relay_crash_per_s;
  if (fault == 3) s->p.client_crash_per_s = 0.05 + s->p.client_crash_per_s;
  new_relay_core(s);
  for (int i = 0; i < s->p.clients; i++) {
    client *cl = &s->c[i];
    cl->id = i;
    cl->user = i < s->p.users ? i : (i - s->p.users) % s->p.users;
    snprintf(cl->name, sizeof(cl->name), "u%d", cl->user);
    for (int b = 0; b < 32; b++) cl->dev[b] = (uint8_t)(i * 31 + b + 1);
    /* Every device is known to the relay from the start, so that each
     * must get every message (a device registered later gets what is
     * still held then: spec/messages.md). */
    uint64_t cur;
    cr_assert_eq(s->rstore->ops->device(s->rstore, cl->name, cl->dev, &cur), 0);
    cr_assert_eq(tern__cstore_open(&cl->store, ":memory:", 1, err, sizeof(err)), 0, "%s", err);
    new_client_core(s, cl);
    cl->reconnect_at = rnd_range(&s->r, 1, 2000); /* 0 would mean "never" */
    cl->next_send_at = rnd_range(&s->r, 0, s->p.send_window_ms);
  }
  cr_assert_eq(s->rstore->ops->commit(s->rstore, 0), 0);
  /* The group: u0 and u1 always, the others by chance; in half of the
   * seeds with a third user, one leaves and one joins while messages flow. */
  const char *names[MAX_USERS];
  size_t n = 0;
  for (int u = 0; u < s->p.users; u++) {
    int in = u < 2 || rnd01(&s->r) < 0.5;
    s->gjoined[u] = in ? 0 : UINT64_MAX;
    s->gleft[u] = UINT64_MAX;
    if (in) names[n++] = unames[u];
  }
  cr_assert_eq(tern__rcore_group_set(s->rcore, GROUP, names, n, 0, NULL), 0);
  if (s->p.users > 2 && rnd01(&s->r) < 0.5) s->gchange_at = rnd_range(&s->r, 1, s->p.send_window_ms);
}

/* The membership change: a member other than u0 and u1 leaves (if any),
 * and a user not in joins (if any), at the point the relay gives. Tried
 * again while a commit fails. */
static void group_change(sim *s) {
  int leaving = -1, joining = -1;
  for (int u = 2; u < s->p.users; u++) {
    if (s->gjoined[u] != UINT64_MAX && leaving < 0) leaving = u;
    if (s->gjoined[u] == UINT64_MAX && joining < 0) joining = u;
  }
  const char *names[MAX_USERS];
  size_t n = 0;
  for (int u = 0; u < s->p.users; u++)
    if ((s->gjoined[u] != UINT64_MAX && u != leaving) || u == joining) names[n++] = unames[u];
  uint64_t point = 0;
  if (tern__rcore_group_set(s->rcore, GROUP, names, n, s->now, &point) != 0) return;
  drain_relay(s);
  if (leaving >= 0) s->gleft[leaving] = point;
  if (joining >= 0) s->gjoined[joining] = point;
  s->gchanged = 1;
  TRACE(s, "group: user %d leaves, user %d joins, at seq %" PRIu64, leaving, joining, point);
}

static void teardown(sim *s) {
  for (int i = 0; i < s->p.clients; i++) {
    tern__ccore_free(s->c[i].core);
    tern__cstore_close(s->c[i].store);
  }
  tern__rcore_free(s->rcore);
  s->rstore->ops->close(s->rstore);
  while (s->inflight) {
    packet *n = s->inflight->next;
    free(s->inflight);
    s->inflight = n;
  }
}

/* u0 and u1 write to the group now and then. */
static int app_send_group(sim *s, client *cl) {
  if (cl->user > 1 || rnd01(&s->r) >= 0.3) return 0;
  char body[64];
  int k = cl->next_gk;
  snprintf(body, sizeof(body), "g %d %d", cl->id, k);
  uint64_t cmid;
  int rc = tern__ccore_send(cl->core, GROUP, body, strlen(body), 0, s->now, WALL_EPOCH + s->now, &cmid);
  if (rc != 0) {
    fail(s, V_OTHER, "group send failed: %d", rc);
    return 1;
  }
  cl->next_gk++;
  sent_rec *r = &cl->sent[cl->nsent++];
  memset(r, 0, sizeof(*r));
  r->cmid = cmid;
  r->to = -1;
  r->k = k;
  TRACE(s, "app %d sends group k=%d cmid %" PRIu64, cl->id, k, cmid);
  drain_client(s, cl);
  return 1;
}

static void app_send(sim *s, client *cl) {
  if (app_send_group(s, cl)) return;
  int to; /* a user, not its own */
  do to = (int)rnd_range(&s->r, 0, (uint64_t)s->p.users - 1);
  while (to == cl->user);
  char body[64];
  int k = cl->next_k[to];
  snprintf(body, sizeof(body), "m %d %d %d", cl->id, to, k);
  char toname[16];
  snprintf(toname, sizeof(toname), "u%d", to);
  uint64_t cmid;
  int rc = tern__ccore_send(cl->core, toname, body, strlen(body), 0, s->now, WALL_EPOCH + s->now,
                            &cmid);
  if (rc != 0) {
    fail(s, V_OTHER, "send failed: %d", rc);
    return;
  }
  cl->next_k[to]++;
  sent_rec *r = &cl->sent[cl->nsent++];
  memset(r, 0, sizeof(*r));
  r->cmid = cmid;
  r->to = to;
  r->k = k;
  TRACE(s, "app %d sends k=%d to %d cmid %" PRIu64, cl->id, k, to, cmid);
  drain_client(s, cl);
}

/* Everything done: all sent, all acked or failed, all delivered, all
 * receipts in. */
static int settled(sim *s) {
  for (int i = 0; i < s->p.clients; i++) {
    client *cl = &s->c[i];
    if (cl->nsent < s->p.msgs) return 0;
    if (tern__ccore_outbox_size(cl->core)) return 0;
    for (int j = 0; j < cl->nsent; j++) {
      sent_rec *r = &cl->sent[j];
      if (r->failed) continue;
      if (r->to < 0) {
        if (!r->acked || r->gmax < members_for(s, cl->user, r->gseq)) return 0;
        for (int d = 0; d < s->p.clients; d++)
          if (group_due(s, d, i, r) && !group_got(s, d, i, r->k)) return 0;
        continue;
      }
      if (!r->acked || !r->delivered_event) return 0;
      for (int d = 0; d < s->p.clients; d++)
        if (s->c[d].user == r->to && !device_has(s, d, i, r->k)) return 0;
      if (!carbons_in(s, i, r, NULL)) return 0;
    }
  }
  return 1;
}

static void step(sim *s, int chaos) {
  /* Network: packets due now. */
  while (s->inflight && s->inflight->at <= s->now) {
    packet *pk = s->inflight;
    s->inflight = pk->next;
    if (pk->to_relay) {
      tern__rcore_input(s->rcore, pk->conn, pk->data, pk->len, s->now, WALL_EPOCH + s->now);
    } else {
      client *cl = &s->c[pk->client];
      if (cl->conn == pk->conn) tern__ccore_input(cl->core, pk->data, pk->len, s->now);
    }
    free(pk);
  }
  /* Relay: timers, then outputs released before the commit (only with the
   * ack-before-commit fault), a chance to crash, the commit, the rest. */
  for (int i = 0; i < s->nstale; i++) {
    if (s->now < s->stale_close_at[i]) continue;
    tern__rcore_close(s->rcore, s->stale[i]);
    s->stale[i] = s->stale[--s->nstale];
    s->stale_close_at[i] = s->stale_close_at[s->nstale];
    i--;
  }
  tern__rcore_tick(s->rcore, s->now, WALL_EPOCH + s->now);
  drain_relay(s);
  if (s->gchange_at && !s->gchanged && s->now >= s->gchange_at) group_change(s);
  if (chaos && rnd01(&s->r) < s->p.relay_crash_per_s / 20.0) {
    crash_relay(s);
  } else {
    if (chaos && rnd01(&s->r) < s->p.store_fail_per_s / 20.0) {
      s->store_failures++;
      TRACE(s, "relay commit fails");
      s->rstore->ops->fault(s->rstore, TERN__RS_FAULT_COMMIT, 1);
    }
    tern__rcore_commit(s->rcore, s->now);
    drain_relay(s);
  }
  /* Clients. */
  for (int i = 0; i < s->p.clients; i++) {
    client *cl = &s->c[i];
    if (chaos && rnd01(&s->r) < s->p.client_crash_per_s / 20.0) crash_client(s, cl);
    if (chaos && rnd01(&s->r) < s->p.partition_per_s / 20.0) {
      cl->partition_until = s->now + rnd_range(&s->r, 1000, 20000);
      TRACE(s, "client %d partitioned until %" PRIu64, i, cl->partition_until);
    }
    if (chaos && cl->conn && rnd01(&s->r) < s->p.link_drop_per_s / 20.0)
      end_session(s, cl, rnd01(&s->r) < 0.5);
    if (cl->conn && cl->dies_at && s->now >= cl->dies_at) end_session(s, cl, 1);
    if (!cl->conn && cl->reconnect_at && s->now >= cl->reconnect_at) try_connect(s, cl);
    if (cl->conn && tern__ccore_tick(cl->core, s->now)) end_session(s, cl, 0); /* dead link */
    if (cl->nsent < s->p.msgs && s->now >= cl->next_send_at) {
      app_send(s, cl);
      cl->next_send_at = s->now + rnd_range(&s->r, 0, 2 * s->p.send_window_ms / (uint64_t)s->p.msgs);
    }
    app_take(s, cl);
    drain_client(s, cl);
  }
}

/* Advances to the next moment anything can happen (at most 50 ms, so the
 * per-step crash and partition chances stay per-time). */
static uint64_t next_time(sim *s) {
  uint64_t t = s->now + 50;
  if (s->inflight && s->inflight->at < t) t = s->inflight->at;
  int rt = tern__rcore_timeout(s->rcore, s->now);
  if (rt >= 0 && s->now + (uint64_t)rt < t) t = s->now + (uint64_t)rt;
  for (int i = 0; i < s->p.clients; i++) {
    client *cl = &s->c[i];
    int ct = cl->conn ? tern__ccore_timeout(cl->core, s->now) : -1;
    if (ct >= 0 && s->now + (uint64_t)ct < t) t = s->now + (uint64_t)ct;
    if (!cl->conn && cl->reconnect_at && cl->reconnect_at < t) t = cl->reconnect_at;
    if (cl->conn && cl->dies_at && cl->dies_at < t) t = cl->dies_at;
    if (cl->nsent < s->p.msgs && cl->next_send_at < t) t = cl->next_send_at;
  }
  return t > s->now ? t : s->now + 1;
}

/* The group's invariants for message r of device `from`. */
static void check_group(sim *s, int from, const sent_rec *r) {
  if (r->acked != 1 || r->failed || !r->gseq) {
    fail(s, r->failed ? V_FAILED : r->acked > 1 ? V_SENT_TWICE : V_UNSETTLED,
         "group message %d from %d: SENT %d, FAILED %d, seq %" PRIu64, r->k, from, r->acked, r->failed,
         r->gseq);
    return;
  }
  for (int d = 0; d < s->p.clients; d++) {
    int got = group_got(s, d, from, r->k), due = group_due(s, d, from, r);
    if (got != due)
      fail(s, got < due ? V_GROUP | V_LOST_ACKED : V_GROUP, /* SENT, so a loss is an acked one */
           "group message %d from %d (seq %" PRIu64 "): device %d of user %d (in from %" PRIu64
           " to %" PRIu64 ") got it %d times",
           r->k, from, r->gseq, d, s->c[d].user, s->gjoined[s->c[d].user], s->gleft[s->c[d].user], got);
    for (int i = 0; i < s->c[d].ngrecv; i++)
      if (s->c[d].grecv_from[i] == from && s->c[d].grecv_k[i] == r->k && s->c[d].grecv_seq[i] != r->gseq)
        fail(s, V_GROUP, "group message %d from %d: seq %" PRIu64 " on device %d, %" PRIu64 " when sent",
             r->k, from, s->c[d].grecv_seq[i], d, r->gseq);
  }
  uint32_t of = members_for(s, s->c[from].user, r->gseq);
  if (r->gmax != of || (r->gof && r->gof != of))
    fail(s, V_RECEIPT, "group message %d from %d (seq %" PRIu64 "): receipts %u of %u, %u members",
         r->k, from, r->gseq, r->gmax, r->gof, of);
}

/* Checks every invariant and records every violation (the first one's
 * text in s->failure). Returns 1 if any. */
static int check(sim *s) {
  for (int i = 0; i < s->p.clients; i++) {
    client *cl = &s->c[i];
    for (int j = 0; j < cl->nsent; j++) {
      sent_rec *r = &cl->sent[j];
      if (r->to < 0) {
        check_group(s, i, r);
        continue;
      }
      int have = 1, lost_at = -1; /* every device of the recipient has it */
      for (int d = 0; d < s->p.clients; d++)
        if (s->c[d].user == r->to && !device_has(s, d, i, r->k)) have = 0, lost_at = d;
      if (!r->acked && !r->failed)
        fail(s, V_UNSETTLED, "message %d from %d to %d was accepted by send but never SENT or FAILED",
             r->k, i, r->to);
      if (r->acked > 1) fail(s, V_SENT_TWICE, "message %d from %d: SENT %d times", r->k, i, r->acked);
      if (r->failed)
        fail(s, V_FAILED, "message %d from %d to %d FAILED (nothing here should fail)", r->k, i, r->to);
      if (r->acked && !have)
        fail(s, V_LOST_ACKED, "message %d from %d to user %d was SENT (server-acked) but never reached its device %d",
             r->k, i, r->to, lost_at);
      if (r->delivered_event != 1)
        fail(s, V_RECEIPT, "message %d from %d to %d: %d DELIVERED receipts", r->k, i, r->to,
             r->delivered_event);
      int missing = -1;
      if (r->acked && !carbons_in(s, i, r, &missing))
        fail(s, V_CARBON, "message %d from %d to user %d was SENT but its carbon never reached device %d",
             r->k, i, r->to, missing);
    }
    /* Every message arrived exactly once and in order, on each device. */
    for (int from = 0; from < s->p.clients; from++) {
      int expect = s->c[from].next_k[cl->user];
      if (cl->nreceived[from] != expect)
        fail(s, cl->nreceived[from] > expect ? V_DUPLICATE : V_OTHER,
             "client %d received %d messages from %d, %d were sent", i, cl->nreceived[from], from,
             expect);
      for (int k = 0; k < expect && k < cl->nreceived[from]; k++)
        if (cl->received_k[from][k] != k)
          fail(s, V_ORDER, "client %d: message %d from %d is at position %d", i,
               cl->received_k[from][k], from, k);
    }
  }
  return s->violations != 0;
}

/* Over all seeds run, for the report: relay commits made to fail, and
 * TERN_EV_ERROR (BUSY) events the apps took. */
static uint64_t total_store_failures, total_busy_errors;
/* ... and group messages handed to apps, and membership changes made. */
static uint64_t total_group_got, total_group_changes;

/* Runs one seed; returns 0 if every invariant held, else the V_* kinds
 * that broke (the first violation described in why). */
static unsigned run_seed(uint64_t seed, int fault, int backend, int trace, char *why,
                         size_t whycap) {
  sim *s = calloc(1, sizeof(*s));
  setup(s, seed, fault, backend);
  s->trace = trace;
  if (trace)
    fprintf(stderr,
            "seed %" PRIu64 ": clients %d msgs %d loss %.3f dup %.3f delay %" PRIu64
            " jitter %" PRIu64 " crash c %.3f r %.3f part %.3f drop %.3f store %.3f\n",
            seed, s->p.clients, s->p.msgs, s->p.loss, s->p.dup, s->p.delay_ms, s->p.jitter_ms,
            s->p.client_crash_per_s, s->p.relay_crash_per_s, s->p.partition_per_s,
            s->p.link_drop_per_s, s->p.store_fail_per_s);
  /* Chaos while the apps send, then a healed network until settled. */
  uint64_t chaos_end = s->p.send_window_ms + 20000, limit = chaos_end + 600000;
  while (!s->failure[0] && s->now < limit) {
    int chaos = s->now < chaos_end;
    if (!chaos) {
      s->p.loss = s->p.dup = 0;
      for (int i = 0; i < s->p.clients; i++) s->c[i].partition_until = 0;
      if (settled(s)) break;
    }
    step(s, chaos);
    s->now = next_time(s);
  }
  TRACE(s, "run ends (%s)", s->failure[0] ? s->failure : settled(s) ? "settled" : "time limit");
  unsigned bad = check(s) ? s->violations : 0;
  total_store_failures += s->store_failures;
  for (int i = 0; i < s->p.clients; i++) total_group_got += (uint64_t)s->c[i].ngrecv;
  total_group_changes += (uint64_t)s->gchanged;
  for (int i = 0; i < s->p.clients; i++)
    for (int j = 0; j < s->c[i].nsent; j++) total_busy_errors += (uint64_t)s->c[i].sent[j].errors;
  if (bad) snprintf(why, whycap, "%s", s->failure);
  teardown(s);
  free(s);
  return bad;
}

static uint64_t env_u64(const char *name, uint64_t dflt) {
  const char *v = getenv(name);
  return v && *v ? strtoull(v, NULL, 10) : dflt;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void invariants_hold(int backend) {
  uint64_t one = env_u64("TERN_SIM_SEED", 0);
  uint64_t first = one ? one : env_u64("TERN_SIM_FIRST", 1);
  uint64_t count = one ? 1 : env_u64("TERN_SIM_SEEDS", 2000);
  double t0 = now_s();
  for (uint64_t seed = first; seed < first + count; seed++) {
    char why[512] = "";
    if (run_seed(seed, 0, backend, one != 0, why, sizeof(why)))
      cr_assert_fail("seed %" PRIu64 " (%s store) broke an invariant: %s\n  replay: TERN_SIM_SEED=%" PRIu64
               " %s/tests/sim_test --filter 'sim/invariants_hold_on_%s'",
               seed, backend_name[backend], why, seed, TERN_TEST_BINDIR, backend_name[backend]);
  }
  fprintf(stderr,
          "sim (%s store): %" PRIu64 " seeds from %" PRIu64 " passed in %.1f s (%" PRIu64
          " relay commits failed on purpose, %" PRIu64 " BUSY errors shown to apps, %" PRIu64
          " group messages handed to apps, %" PRIu64 " membership changes)\n",
          backend_name[backend], count, first, now_s() - t0, total_store_failures, total_busy_errors,
          total_group_got, total_group_changes);
  if (count >= 100) {
    cr_assert_gt(total_busy_errors, 0, "the store-failure path was exercised");
    cr_assert_gt(total_group_changes, 0, "membership changed in some seeds");
  }
}

Test(sim, invariants_hold_on_sqlite, .timeout = 1200) { invariants_hold(ON_SQLITE); }
Test(sim, invariants_hold_on_memory, .timeout = 1200) { invariants_hold(ON_MEMORY); }

static const char *kind_name(unsigned v) {
  switch (v) {
    case V_DUPLICATE: return "a message delivered twice";
    case V_ORDER: return "per-sender order";
    case V_LOST_ACKED: return "a server-acked message lost";
    case V_UNSETTLED: return "a message accepted but never settled (SENT or FAILED)";
    case V_RECEIPT: return "receipts";
    case V_SENT_TWICE: return "SENT twice";
    case V_FAILED: return "a FAILED message";
    case V_CARBON: return "carbons exactly once on the sender's other devices";
    case V_GROUP: return "group messages exactly once on every member device, one order";
    default: return "other";
  }
}

/* The checker must catch real bugs: with each deliberate fault, some seed
 * fails, and the first seed that fails breaks the invariant that the fault
 * is about (not merely some other check downstream of it). */
static void expect_caught_on(int fault, const char *name, unsigned want, int backend) {
  uint64_t count = env_u64("TERN_SIM_FAULT_SEEDS", 300);
  for (uint64_t seed = 1; seed <= count; seed++) {
    char why[512] = "";
    unsigned v = run_seed(seed, fault, backend, 0, why, sizeof(why));
    if (!v) continue;
    char kinds[256] = "";
    for (unsigned b = 1; b && b <= V_GROUP; b <<= 1)
      if (v & b)
        snprintf(kinds + strlen(kinds), sizeof(kinds) - strlen(kinds), "%s%s", kinds[0] ? "; " : "",
                 kind_name(b));
    fprintf(stderr, "sim (%s store): fault '%s' caught by seed %" PRIu64 ": %s [broke: %s]\n",
            backend_name[backend], name, seed, why, kinds);
    cr_assert(v & want,
              "fault '%s', seed %" PRIu64 ": expected it to break '%s', but it broke: %s (%s)", name,
              seed, kind_name(want), kinds, why);
    return;
  }
  cr_assert_fail("fault '%s' went unnoticed over %" PRIu64 " seeds on the %s store", name, count,
                 backend_name[backend]);
}

static void expect_caught(int fault, const char *name, unsigned want) {
  expect_caught_on(fault, name, want, ON_SQLITE);
  expect_caught_on(fault, name, want, ON_MEMORY);
}

Test(sim, catches_skipped_dedup, .timeout = 600) {
  expect_caught(1, "skip the dedup", V_DUPLICATE);
}
Test(sim, catches_ack_before_commit, .timeout = 600) {
  expect_caught(2, "ack before commit", V_LOST_ACKED);
}
Test(sim, catches_outbox_dropped_on_crash, .timeout = 600) {
  expect_caught(3, "drop the outbox on crash", V_UNSETTLED);
}
Test(sim, catches_a_carbon_stored_twice, .timeout = 600) {
  expect_caught(4, "store each carbon twice", V_CARBON);
}
Test(sim, catches_a_member_removed_too_early, .timeout = 600) {
  expect_caught(5, "remove a member one message too early", V_GROUP);
}
