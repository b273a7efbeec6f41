/*
 * What an app relies on, seen through the public API only: in-process
 * relays and clients over loopback UDP, driven from the test's thread (the
 * relay can be stopped, frozen and restarted on the same port and store).
 *
 * Not covered here: "conversations do not block each other". On loopback
 * nothing stalls one conversation's ENet channel while another flows, and
 * faking it needs a UDP proxy that parses ENet commands; see
 * tests/sim_test.c for the core-level version.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tern/tern.h"
#include "tern_test.h"

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- a small world: one relay, a few clients, every event recorded ---- */

typedef struct rec {
  tern_event_type type;
  int error;
  uint64_t cmid, seq;
  char user[TERN_USER_MAX + 1];
  char *body;
  size_t len;
  uint64_t at_ms; /* when the app took it */
  int used;       /* consumed by a wait */
  int online;     /* PRESENCE */
  uint64_t time_ms; /* server_time_ms */
  char to[TERN_USER_MAX + 1]; /* MESSAGE: a carbon's recipient, "" otherwise */
  uint32_t delivered, members; /* RECEIPTS */
} rec;

typedef struct peer {
  tern_client *c;
  tern_client_config cfg;
  char name[16];
  rec *ev;
  size_t n, cap;
} peer;

#define MAX_PEERS 5

typedef struct world {
  tern_keypair relay_kp;
  tern_relay *relay;
  uint16_t port;
  int frozen; /* relay not serviced: as if its host hung */
  char *dir;
  char store[600];
  uint64_t retention_ms;
  int (*user_exists)(void *, const char *);
  int (*may_send)(void *, const char *, const char *);
  uint64_t recipient_max_messages; /* 0: the relay's default */
  uint32_t send_rate_messages;     /* 0: the relay's default */
  int (*may_see)(void *, const char *, const char *); /* presence, or NULL */
  peer p[MAX_PEERS];
  size_t np;
} world;

static void world_init(world *w) {
  memset(w, 0, sizeof(*w));
  cr_assert_eq(tern_keypair_generate(&w->relay_kp), 0);
  w->dir = tt_tempdir();
}

/* (Re)starts the relay on w->port (a fresh port the first time), with the
 * store file if one was named. */
static void relay_up(world *w) {
  tern_relay_config rc;
  tern_relay_config_default(&rc);
  rc.bind_host = "127.0.0.1";
  rc.port = w->port;
  rc.keypair = w->relay_kp;
  rc.store_path = w->store[0] ? w->store : NULL;
  rc.durable_fsync = 0; /* no crash here is harder than a process exit */
  if (w->retention_ms) rc.retention_ms = w->retention_ms;
  rc.user_exists = w->user_exists;
  rc.may_send = w->may_send;
  if (w->recipient_max_messages) rc.recipient_max_messages = w->recipient_max_messages;
  if (w->send_rate_messages) rc.send_rate_messages = w->send_rate_messages;
  rc.may_see_presence = w->may_see;
  int r = tern_relay_new(&w->relay, &rc);
  cr_assert_eq(r, 0, "tern_relay_new: %s", tern_strerror(r));
  if (!w->port) w->port = tern_relay_port(w->relay);
  cr_assert_eq(tern_relay_port(w->relay), w->port);
  w->frozen = 0;
}

/* A world whose relay keeps its store in a file (so it survives restarts),
 * started. */
static void world_init_stored(world *w) {
  world_init(w);
  snprintf(w->store, sizeof(w->store), "%s/relay.db", w->dir);
  relay_up(w);
}

static void relay_down(world *w) {
  tern_relay_free(w->relay);
  w->relay = NULL;
}

static void client_config(world *w, tern_client_config *cfg, const char *user) {
  tern_client_config_default(cfg);
  cfg->relay_host = "127.0.0.1";
  cfg->relay_port = w->port;
  memcpy(cfg->relay_public_key, w->relay_kp.public_key, TERN_KEY_BYTES);
  cr_assert_eq(tern_keypair_generate(&cfg->keypair), 0);
  cfg->user = user;
}

/* Creates client `i` from p[i].cfg (kept, so it can be recreated as the
 * same device); connects it if asked. */
static void peer_open(world *w, size_t i, int connect) {
  peer *p = &w->p[i];
  p->cfg.user = p->name;
  int r = tern_client_new(&p->c, &p->cfg);
  cr_assert_eq(r, 0, "tern_client_new: %s", tern_strerror(r));
  if (connect) cr_assert_eq(tern_client_connect(p->c), 0);
}

static size_t peer_add(world *w, const char *name, const char *state_dir, int connect) {
  cr_assert_lt(w->np, MAX_PEERS);
  size_t i = w->np++;
  peer *p = &w->p[i];
  snprintf(p->name, sizeof(p->name), "%s", name);
  client_config(w, &p->cfg, p->name);
  p->cfg.state_dir = state_dir;
  p->cfg.reconnect_base_ms = 50;
  p->cfg.reconnect_cap_ms = 200;
  p->cfg.handshake_timeout_ms = 1000;
  peer_open(w, i, connect);
  return i;
}

/* The app exits: the client is freed with whatever it holds. */
static void peer_close(world *w, size_t i) {
  tern_client_free(w->p[i].c);
  w->p[i].c = NULL;
}

static void take_events(peer *p) {
  tern_event ev;
  while (p->c && tern_client_next_event(p->c, &ev) == 1) {
    if (p->n == p->cap) {
      p->cap = p->cap ? p->cap * 2 : 256;
      p->ev = realloc(p->ev, p->cap * sizeof(*p->ev));
      cr_assert_not_null(p->ev);
    }
    rec *r = &p->ev[p->n++];
    memset(r, 0, sizeof(*r));
    r->type = ev.type;
    r->error = ev.error;
    r->cmid = ev.cmid;
    r->seq = ev.seq;
    r->online = ev.online;
    r->time_ms = ev.server_time_ms;
    snprintf(r->user, sizeof(r->user), "%s", ev.user);
    snprintf(r->to, sizeof(r->to), "%s", ev.to ? ev.to : "");
    r->delivered = ev.delivered;
    r->members = ev.members;
    r->body = malloc(ev.body_len + 1);
    cr_assert_not_null(r->body);
    if (ev.body_len) memcpy(r->body, ev.body, ev.body_len);
    r->body[ev.body_len] = 0;
    r->len = ev.body_len;
    r->at_ms = now_ms();
  }
}

/* Services relay and clients once, taking every event. */
static void pump_once(world *w) {
  if (w->relay && !w->frozen) cr_assert_eq(tern_relay_service(w->relay, 1), 0);
  else usleep(1000);
  for (size_t i = 0; i < w->np; i++) {
    if (!w->p[i].c) continue;
    cr_assert_geq(tern_client_service(w->p[i].c, 0), 0);
    take_events(&w->p[i]);
  }
}

static void pump(world *w, int ms) {
  uint64_t end = now_ms() + (uint64_t)ms;
  while (now_ms() < end) pump_once(w);
}

static rec *first_unused(peer *p, tern_event_type type) {
  for (size_t k = 0; k < p->n; k++)
    if (!p->ev[k].used && p->ev[k].type == type) return &p->ev[k];
  return NULL;
}

/* The next not yet consumed event of `type` of client i, pumping up to
 * timeout_ms for it; NULL if none came. */
static rec *wait_ev(world *w, size_t i, tern_event_type type, int timeout_ms) {
  uint64_t end = now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    rec *r = first_unused(&w->p[i], type);
    if (r) {
      r->used = 1;
      return r;
    }
    if (now_ms() >= end) return NULL;
    pump_once(w);
  }
}

/* Adds alice and bob, in memory, connecting, and waits until both are. */
static void pair_up(world *w, size_t *a, size_t *b) {
  *a = peer_add(w, "alice", NULL, 1);
  *b = peer_add(w, "bob", NULL, 1);
  cr_assert_not_null(wait_ev(w, *a, TERN_EV_CONNECTED, 5000));
  cr_assert_not_null(wait_ev(w, *b, TERN_EV_CONNECTED, 5000));
}

static size_t count_ev(peer *p, tern_event_type type) {
  size_t n = 0;
  for (size_t k = 0; k < p->n; k++) n += p->ev[k].type == type;
  return n;
}

/* Forget the events seen so far (they are not used again). */
static void consume_all(peer *p) {
  for (size_t k = 0; k < p->n; k++) p->ev[k].used = 1;
}

static void world_free(world *w) {
  for (size_t i = 0; i < w->np; i++) {
    tern_client_free(w->p[i].c);
    for (size_t k = 0; k < w->p[i].n; k++) free(w->p[i].ev[k].body);
    free(w->p[i].ev);
  }
  tern_relay_free(w->relay);
  tt_rmtree(w->dir);
  free(w->dir);
}

static void send_text(world *w, size_t i, const char *to, const char *text, uint64_t *cmid) {
  int r = tern_client_send(w->p[i].c, to, text, strlen(text), cmid);
  cr_assert_eq(r, 0, "tern_client_send: %s", tern_strerror(r));
}

/* Waits for n MESSAGEs at client i and checks they are `want[0..n)` in that
 * order, from `from`. */
static void expect_messages(world *w, size_t i, const char *from, const char *const *want,
                            size_t n, int timeout_ms) {
  for (size_t k = 0; k < n; k++) {
    rec *m = wait_ev(w, i, TERN_EV_MESSAGE, timeout_ms);
    cr_assert_not_null(m, "%s: message %zu of %zu (\"%s\") did not arrive", w->p[i].name, k + 1,
                       n, want[k]);
    cr_assert_str_eq(m->user, from);
    cr_assert_str_eq(m->body, want[k], "%s: message %zu in order", w->p[i].name, k + 1);
    cr_assert_gt(m->seq, 0);
  }
}

/* No MESSAGE (beyond those consumed) arrives at client i within ms. */
static void expect_no_message(world *w, size_t i, int ms, const char *why) {
  pump(w, ms);
  rec *m = first_unused(&w->p[i], TERN_EV_MESSAGE);
  cr_assert_null(m, "%s: unexpected message \"%s\" from %s (seq %llu): %s", w->p[i].name,
                 m ? m->body : "", m ? m->user : "", m ? (unsigned long long)m->seq : 0ull, why);
}

/* ---------------------------------------------------------------- tests */

Test(messaging, send_works_offline_and_goes_out_after_connect, .timeout = 30) {
  world w;
  world_init(&w);
  relay_up(&w);
  size_t a = peer_add(&w, "alice", NULL, 0), b = peer_add(&w, "bob", NULL, 1);
  cr_assert_not_null(wait_ev(&w, b, TERN_EV_CONNECTED, 5000));
  const char *msgs[] = {"one", "two", "three"};
  uint64_t cmid[3];
  for (int k = 0; k < 3; k++) send_text(&w, a, "bob", msgs[k], &cmid[k]);
  cr_assert_eq(tern_client_outbox_size(w.p[a].c), 3, "three messages wait in the outbox");
  pump(&w, 300);
  cr_assert_eq(tern_client_outbox_size(w.p[a].c), 3, "nothing goes out before connect");
  cr_assert_eq(count_ev(&w.p[b], TERN_EV_MESSAGE), 0);

  cr_assert_eq(tern_client_connect(w.p[a].c), 0);
  cr_assert_not_null(wait_ev(&w, a, TERN_EV_CONNECTED, 5000));
  for (int k = 0; k < 3; k++) {
    rec *s = wait_ev(&w, a, TERN_EV_SENT, 5000);
    cr_assert_not_null(s, "SENT %d", k);
    cr_assert_eq(s->cmid, cmid[k], "SENT in the order sent");
    cr_assert_str_eq(s->user, "bob");
  }
  cr_assert_eq(tern_client_outbox_size(w.p[a].c), 0);
  expect_messages(&w, b, "alice", msgs, 3, 5000);
  for (int k = 0; k < 3; k++) {
    rec *d = wait_ev(&w, a, TERN_EV_DELIVERED, 5000);
    cr_assert_not_null(d, "DELIVERED %d", k);
    cr_assert_eq(d->cmid, cmid[k]);
  }
  /* Each tick after the one before it. */
  for (size_t k = 0; k < w.p[a].n; k++) {
    if (w.p[a].ev[k].type != TERN_EV_DELIVERED) continue;
    for (size_t q = k + 1; q < w.p[a].n; q++)
      cr_assert(!(w.p[a].ev[q].type == TERN_EV_SENT && w.p[a].ev[q].cmid == w.p[a].ev[k].cmid),
                "DELIVERED came before SENT for cmid %llu",
                (unsigned long long)w.p[a].ev[k].cmid);
  }
  world_free(&w);
}

Test(messaging, state_dir_keeps_outbox_and_delivered_state_across_app_restarts, .timeout = 40) {
  world w;
  world_init(&w);
  relay_up(&w);
  char sa[700], sb[700];
  snprintf(sa, sizeof(sa), "%s/alice", w.dir);
  snprintf(sb, sizeof(sb), "%s/bob", w.dir);
  size_t a = peer_add(&w, "alice", sa, 0);
  const char *msgs[] = {"kept 1", "kept 2", "kept 3"};
  uint64_t cmid[3];
  for (int k = 0; k < 3; k++) send_text(&w, a, "bob", msgs[k], &cmid[k]);
  peer_close(&w, a); /* the app exits before it ever got online */

  peer_open(&w, a, 0);
  cr_assert_eq(tern_client_outbox_size(w.p[a].c), 3, "the outbox survived the restart");
  cr_assert_eq(tern_client_connect(w.p[a].c), 0);
  for (int k = 0; k < 3; k++) {
    rec *s = wait_ev(&w, a, TERN_EV_SENT, 5000);
    cr_assert_not_null(s, "message %d of the previous run went out", k);
    cr_assert_eq(s->cmid, cmid[k], "with the cmid send() returned then");
  }

  /* bob takes the three and exits at once, before his acks can go out
   * (the client batches them for 20 ms). */
  size_t b = peer_add(&w, "bob", sb, 1);
  expect_messages(&w, b, "alice", msgs, 3, 5000);
  peer_close(&w, b);
  pump(&w, 200);
  peer_open(&w, b, 1);
  cr_assert_not_null(wait_ev(&w, b, TERN_EV_CONNECTED, 5000));
  expect_no_message(&w, b, 1500, "already taken before the restart");

  /* The conversation goes on, and the earlier ones are acknowledged. */
  const char *more[] = {"after"};
  send_text(&w, a, "bob", more[0], NULL);
  expect_messages(&w, b, "alice", more, 1, 5000);
  for (int k = 0; k < 4; k++) cr_assert_not_null(wait_ev(&w, a, TERN_EV_DELIVERED, 5000));
  expect_no_message(&w, b, 500, "only the new one");
  world_free(&w);
}

Test(messaging, relay_restart_keeps_stored_messages_for_offline_recipient, .timeout = 30) {
  world w;
  world_init_stored(&w);
  size_t a = peer_add(&w, "alice", NULL, 1);
  const char *msgs[] = {"stored 1", "stored 2", "stored 3"};
  for (int k = 0; k < 3; k++) send_text(&w, a, "bob", msgs[k], NULL);
  for (int k = 0; k < 3; k++) cr_assert_not_null(wait_ev(&w, a, TERN_EV_SENT, 5000));
  relay_down(&w);
  pump(&w, 100);
  relay_up(&w); /* same store file, same port */
  size_t b = peer_add(&w, "bob", NULL, 1);
  expect_messages(&w, b, "alice", msgs, 3, 5000);
  for (int k = 0; k < 3; k++)
    cr_assert_not_null(wait_ev(&w, a, TERN_EV_DELIVERED, 8000), "receipt %d", k);
  expect_no_message(&w, b, 300, "each once");
  world_free(&w);
}

/* No state_dir: the same guarantees while the process lives. The relay
 * restarts (with its store file) while alice has messages queued and in
 * flight; both clients come back by themselves and bob gets every message
 * once, in order. */
Test(messaging, without_state_dir_relay_restart_loses_and_repeats_nothing, .timeout = 40) {
  world w;
  world_init_stored(&w);
  size_t a, b;
  pair_up(&w, &a, &b);
  char bodies[30][16];
  const char *want[30];
  for (int k = 0; k < 30; k++) {
    snprintf(bodies[k], sizeof(bodies[k]), "msg %02d", k);
    want[k] = bodies[k];
  }
  for (int k = 0; k < 10; k++) send_text(&w, a, "bob", bodies[k], NULL);
  expect_messages(&w, b, "alice", want, 10, 5000);
  /* In flight when the relay goes: sent, never serviced by that relay. */
  for (int k = 10; k < 15; k++) send_text(&w, a, "bob", bodies[k], NULL);
  for (size_t i = 0; i < w.np; i++) cr_assert_geq(tern_client_service(w.p[i].c, 0), 0);
  relay_down(&w);
  cr_assert_not_null(wait_ev(&w, a, TERN_EV_DISCONNECTED, 5000));
  /* Queued while the relay is away. */
  for (int k = 15; k < 30; k++) send_text(&w, a, "bob", bodies[k], NULL);
  relay_up(&w);
  cr_assert_not_null(wait_ev(&w, a, TERN_EV_CONNECTED, 5000), "alice reconnects by herself");
  cr_assert_not_null(wait_ev(&w, b, TERN_EV_CONNECTED, 5000), "bob reconnects by himself");
  expect_messages(&w, b, "alice", want + 10, 20, 8000);
  expect_no_message(&w, b, 1000, "each message once");
  cr_assert_eq(tern_client_outbox_size(w.p[a].c), 0);
  world_free(&w);
}

Test(messaging, reconnect_backoff_stays_within_cap_and_disconnect_stops_it, .timeout = 40) {
  world w;
  world_init(&w);
  relay_up(&w);
  size_t a = peer_add(&w, "alice", NULL, 0);
  w.p[a].cfg.reconnect_base_ms = 100;
  w.p[a].cfg.reconnect_cap_ms = 400;
  w.p[a].cfg.handshake_timeout_ms = 200; /* an attempt at a dead port gives up after this */
  peer_close(&w, a);
  peer_open(&w, a, 1);
  cr_assert_not_null(wait_ev(&w, a, TERN_EV_CONNECTED, 5000));
  relay_down(&w);
  rec *d = wait_ev(&w, a, TERN_EV_DISCONNECTED, 5000);
  cr_assert_not_null(d);
  cr_assert_eq(d->error, TERN_ESHUTDOWN, "got %s", tern_errname(d->error));

  /* Each failed attempt is reported as DISCONNECTED after the 200 ms
   * handshake timeout; the pause before the next is the backoff. */
  uint64_t t[16];
  t[0] = d->at_ms;
  int n = 1;
  while (n < 16) {
    rec *e = wait_ev(&w, a, TERN_EV_DISCONNECTED, 3000);
    cr_assert_not_null(e, "attempt %d: the client keeps trying by itself", n);
    cr_assert_eq(e->error, TERN_ETIMEDOUT, "got %s", tern_errname(e->error));
    t[n++] = e->at_ms;
  }
  long max_wait = 0;
  for (int k = 1; k < n; k++) {
    long wait = (long)(t[k] - t[k - 1]) - 200;
    cr_log_info("backoff wait %d: %ld ms", k, wait);
    cr_assert_geq(wait, -20, "attempt %d ended %ld ms early", k, -wait);
    cr_assert_leq(wait, 400 + 60, "backoff %d was %ld ms, cap is 400", k, wait);
    if (wait > max_wait) max_wait = wait;
  }
  /* Full jitter over [0, 400] ms: 15 draws all under the 100 ms base would
   * mean the backoff never grows (odds below 1e-6 otherwise). */
  cr_assert_gt(max_wait, 100, "the backoff grows past its base");

  relay_up(&w);
  cr_assert_not_null(wait_ev(&w, a, TERN_EV_CONNECTED, 400 + 200 + 500),
                     "back within one capped backoff and an attempt");

  /* Offline by request: no more attempts. */
  relay_down(&w);
  cr_assert_not_null(wait_ev(&w, a, TERN_EV_DISCONNECTED, 5000));
  pump(&w, 300);
  cr_assert_eq(tern_client_disconnect(w.p[a].c), 0);
  /* Attempts that were already failing end with ECLOSED for this one. */
  rec *c;
  while ((c = wait_ev(&w, a, TERN_EV_DISCONNECTED, 2000)) && c->error != TERN_ECLOSED) {
  }
  cr_assert_not_null(c, "disconnect() is confirmed with DISCONNECTED ECLOSED");
  consume_all(&w.p[a]);
  relay_up(&w);
  pump(&w, 2000);
  cr_assert_eq(count_ev(&w.p[a], TERN_EV_CONNECTED), 2, "no reconnect after disconnect()");
  world_free(&w);
}

Test(messaging, network_changed_reconnects_at_once, .timeout = 40) {
  world w;
  world_init(&w);
  relay_up(&w);
  size_t a = peer_add(&w, "alice", NULL, 0);
  w.p[a].cfg.reconnect_base_ms = 20000; /* the backoff alone would take seconds */
  w.p[a].cfg.reconnect_cap_ms = 60000;
  w.p[a].cfg.handshake_timeout_ms = 300;
  peer_close(&w, a);
  peer_open(&w, a, 1);
  cr_assert_not_null(wait_ev(&w, a, TERN_EV_CONNECTED, 5000));

  /* On a live link: the session moves to a new socket (a new port here)
   * without a new handshake; nothing is reported, a message goes through. */
  tern_relay_stats rs;
  tern_relay_get_stats(w.relay, &rs);
  uint64_t hs0 = rs.handshakes_ok;
  tern_client_network_changed(w.p[a].c);
  tern_client_stats cs;
  uint64_t until = now_ms() + 2000;
  do {
    pump_once(&w);
    tern_client_get_stats(w.p[a].c, &cs);
    tern_relay_get_stats(w.relay, &rs);
  } while ((cs.migrations < 1 || rs.sessions_moved < 1) && now_ms() < until);
  cr_assert_eq(cs.migrations, 1, "the client did not move");
  cr_assert_eq(rs.sessions_moved, 1, "the relay did not move the session");
  uint64_t cmid;
  send_text(&w, a, "alice", "after the move", &cmid);
  rec *got = wait_ev(&w, a, TERN_EV_MESSAGE, 3000);
  cr_assert_not_null(got, "no message over the new path");
  cr_assert_str_eq(got->body, "after the move");
  cr_assert_null(first_unused(&w.p[a], TERN_EV_DISCONNECTED), "the session was dropped, not moved");
  cr_assert_eq(rs.handshakes_ok, hs0, "a new handshake");

  /* In a long backoff after failed attempts: network_changed cuts it short. */
  consume_all(&w.p[a]);
  relay_down(&w);
  rec *sd = wait_ev(&w, a, TERN_EV_DISCONNECTED, 5000);
  cr_assert_not_null(sd);
  cr_assert_eq(sd->error, TERN_ESHUTDOWN, "got %s", tern_errname(sd->error));
  tern_client_network_changed(w.p[a].c); /* an attempt now, which fails */
  rec *f = wait_ev(&w, a, TERN_EV_DISCONNECTED, 3000);
  uint64_t t0;
  rec *c;
  cr_assert_not_null(f);
  cr_assert_eq(f->error, TERN_ETIMEDOUT, "got %s", tern_errname(f->error));
  relay_up(&w);
  t0 = now_ms();
  tern_client_network_changed(w.p[a].c);
  c = wait_ev(&w, a, TERN_EV_CONNECTED, 3000);
  cr_assert_not_null(c, "reconnected after network_changed");
  cr_assert_lt(c->at_ms - t0, 1000, "took %llu ms", (unsigned long long)(c->at_ms - t0));
  world_free(&w);
}

Test(messaging, frozen_relay_is_noticed_within_dead_link_ms, .timeout = 30) {
  world w;
  world_init(&w);
  relay_up(&w);
  size_t a = peer_add(&w, "alice", NULL, 0);
  w.p[a].cfg.dead_link_ms = 1500;
  peer_close(&w, a);
  peer_open(&w, a, 1);
  cr_assert_not_null(wait_ev(&w, a, TERN_EV_CONNECTED, 5000));
  pump(&w, 200);
  w.frozen = 1; /* the relay's host hangs: nothing answers, nothing closes */
  uint64_t t0 = now_ms();
  uint64_t cmid;
  send_text(&w, a, "bob", "into the void", &cmid);
  rec *d = wait_ev(&w, a, TERN_EV_DISCONNECTED, 6000);
  cr_assert_not_null(d, "the client notices the dead link");
  cr_assert_eq(d->error, TERN_ETIMEDOUT, "got %s", tern_errname(d->error));
  uint64_t took = d->at_ms - t0;
  cr_log_info("dead link given up after %llu ms (dead_link_ms 1500, then a 1 s move attempt)",
              (unsigned long long)took);
  /* dead_link_ms, then an attempt to move the session (max(1 s, 3 RTT)). */
  cr_assert_geq(took, 1400 + 1000, "not before dead_link_ms and the move attempt (took %llu ms)",
                (unsigned long long)took);
  cr_assert_lt(took, 1500 + 1000 + 500, "within dead_link_ms and the move attempt (took %llu ms)",
               (unsigned long long)took);
  cr_assert_eq(count_ev(&w.p[a], TERN_EV_SENT), 0);

  /* The relay recovers: the message is not lost. */
  w.frozen = 0;
  rec *s = wait_ev(&w, a, TERN_EV_SENT, 8000);
  cr_assert_not_null(s, "the message goes out once the relay answers again");
  cr_assert_eq(s->cmid, cmid);
  world_free(&w);
}

Test(messaging, retention_expiry_fails_the_message_with_eexpired, .timeout = 30) {
  world w;
  world_init(&w);
  snprintf(w.store, sizeof(w.store), "%s/relay.db", w.dir);
  w.retention_ms = 300;
  relay_up(&w);
  size_t a = peer_add(&w, "alice", NULL, 1);
  uint64_t cmid;
  send_text(&w, a, "bob", "nobody reads this", &cmid);
  rec *s = wait_ev(&w, a, TERN_EV_SENT, 5000);
  cr_assert_not_null(s);
  pump(&w, 500); /* older than the retention now */
  /* The relay sweeps every 60 s and once when it starts; the public
   * config has no knob for the period, so a restart stands in for the
   * next sweep. */
  relay_down(&w);
  relay_up(&w);
  rec *f = wait_ev(&w, a, TERN_EV_FAILED, 5000);
  cr_assert_not_null(f, "the sender learns its message expired");
  cr_assert_eq(f->cmid, cmid);
  cr_assert_eq(f->error, TERN_EEXPIRED, "got %s", tern_errname(f->error));
  size_t b = peer_add(&w, "bob", NULL, 1);
  cr_assert_not_null(wait_ev(&w, b, TERN_EV_CONNECTED, 5000));
  expect_no_message(&w, b, 1000, "expired messages are not delivered");
  cr_assert_eq(count_ev(&w.p[a], TERN_EV_DELIVERED), 0);
  world_free(&w);
}

static int only_bob_and_alice(void *ctx, const char *user) {
  (void)ctx;
  return strcmp(user, "bob") == 0 || strcmp(user, "alice") == 0;
}

Test(messaging, unknown_recipient_fails_with_enoent, .timeout = 30) {
  world w;
  world_init(&w);
  w.user_exists = only_bob_and_alice;
  relay_up(&w);
  size_t a = peer_add(&w, "alice", NULL, 1);
  uint64_t nobody, bob;
  send_text(&w, a, "nobody", "hello?", &nobody);
  send_text(&w, a, "bob", "hello", &bob);
  rec *f = wait_ev(&w, a, TERN_EV_FAILED, 5000);
  cr_assert_not_null(f);
  cr_assert_eq(f->cmid, nobody);
  cr_assert_eq(f->error, TERN_ENOENT, "got %s", tern_errname(f->error));
  rec *s = wait_ev(&w, a, TERN_EV_SENT, 5000);
  cr_assert_not_null(s, "a message to a real user is not held up");
  cr_assert_eq(s->cmid, bob);
  pump(&w, 100);
  cr_assert_eq(tern_client_outbox_size(w.p[a].c), 0);
  cr_assert_eq(count_ev(&w.p[a], TERN_EV_FAILED), 1);
  world_free(&w);
}

static int alice_writes_only_to_bob(void *ctx, const char *from, const char *to) {
  (void)ctx;
  return strcmp(from, "alice") != 0 || strcmp(to, "bob") == 0;
}

/* The relay's may_send says no: FAILED with TERN_EDENIED, at once. */
Test(messaging, not_allowed_fails_with_edenied, .timeout = 30) {
  world w;
  world_init(&w);
  w.may_send = alice_writes_only_to_bob;
  relay_up(&w);
  size_t a = peer_add(&w, "alice", NULL, 1);
  size_t c = peer_add(&w, "carol", NULL, 1);
  uint64_t to_carol, to_bob, carol_to_alice;
  send_text(&w, a, "carol", "psst", &to_carol);
  send_text(&w, a, "bob", "hello", &to_bob);
  send_text(&w, c, "alice", "hi alice", &carol_to_alice);
  rec *f = wait_ev(&w, a, TERN_EV_FAILED, 5000);
  cr_assert_not_null(f);
  cr_assert_eq(f->cmid, to_carol);
  cr_assert_eq(f->error, TERN_EDENIED, "got %s", tern_errname(f->error));
  rec *s = wait_ev(&w, a, TERN_EV_SENT, 5000);
  cr_assert_not_null(s);
  cr_assert_eq(s->cmid, to_bob);
  cr_assert_not_null(wait_ev(&w, c, TERN_EV_SENT, 5000), "carol may write to alice");
  rec *m = wait_ev(&w, a, TERN_EV_MESSAGE, 5000);
  cr_assert_not_null(m);
  cr_assert_str_eq(m->user, "carol");
  pump(&w, 100);
  cr_assert_eq(count_ev(&w.p[a], TERN_EV_FAILED), 1);
  cr_assert_eq(count_ev(&w.p[c], TERN_EV_MESSAGE), 0, "carol got nothing from alice");
  world_free(&w);
}

/* A full inbox (issue 13, finding 5): the sender's app gets FAILED with
 * TERN_EQUOTA for what does not fit, and the message leaves its outbox;
 * what fit is delivered when the recipient comes. */
Test(messaging, over_quota_fails_with_equota_at_the_sender, .timeout = 30) {
  world w;
  world_init(&w);
  w.recipient_max_messages = 2;
  relay_up(&w);
  size_t a = peer_add(&w, "alice", NULL, 1);
  uint64_t m1, m2, m3;
  send_text(&w, a, "bob", "one", &m1);
  send_text(&w, a, "bob", "two", &m2);
  send_text(&w, a, "bob", "three", &m3);
  rec *f = wait_ev(&w, a, TERN_EV_FAILED, 5000);
  cr_assert_not_null(f, "no FAILED for the third message");
  cr_assert_eq(f->cmid, m3);
  cr_assert_eq(f->error, TERN_EQUOTA, "got %s", tern_errname(f->error));
  pump(&w, 100);
  cr_assert_eq(count_ev(&w.p[a], TERN_EV_SENT), 2);
  cr_assert_eq(tern_client_outbox_size(w.p[a].c), 0, "the refused message left the outbox");
  tern_relay_stats rs;
  tern_relay_get_stats(w.relay, &rs);
  cr_assert_eq(rs.messages_over_quota, 1);
  size_t b = peer_add(&w, "bob", NULL, 1);
  cr_assert_not_null(wait_ev(&w, b, TERN_EV_MESSAGE, 5000));
  cr_assert_not_null(wait_ev(&w, b, TERN_EV_MESSAGE, 5000));
  pump(&w, 200);
  cr_assert_eq(count_ev(&w.p[b], TERN_EV_MESSAGE), 2);
  world_free(&w);
}

/* A device past its send rate (issue 13, item 3): the app is told
 * (TERN_EV_ERROR with TERN_ERATE), the client keeps the messages and sends
 * them again, and the recipient gets all of them, once, in order. */
Test(messaging, a_device_past_its_send_rate_is_told_and_loses_nothing, .timeout = 30) {
  world w;
  world_init(&w);
  w.send_rate_messages = 5; /* bursts of 50 */
  relay_up(&w);
  size_t a = peer_add(&w, "alice", NULL, 1);
  size_t b = peer_add(&w, "bob", NULL, 1);
  cr_assert_not_null(wait_ev(&w, a, TERN_EV_CONNECTED, 5000));
  cr_assert_not_null(wait_ev(&w, b, TERN_EV_CONNECTED, 5000));
  enum { N = 70 };
  for (int i = 0; i < N; i++) {
    char text[16];
    snprintf(text, sizeof text, "m%03d", i);
    send_text(&w, a, "bob", text, NULL);
  }
  rec *e = wait_ev(&w, a, TERN_EV_ERROR, 5000);
  cr_assert_not_null(e, "no TERN_EV_ERROR past the rate");
  cr_assert_eq(e->error, TERN_ERATE, "got %s", tern_errname(e->error));
  uint64_t t0 = now_ms();
  while (count_ev(&w.p[b], TERN_EV_MESSAGE) < N && now_ms() - t0 < 15000) pump(&w, 50);
  cr_assert_eq(count_ev(&w.p[b], TERN_EV_MESSAGE), N, "bob has %zu of %d",
               count_ev(&w.p[b], TERN_EV_MESSAGE), N);
  int k = 0;
  for (size_t i = 0; i < w.p[b].n; i++) {
    rec *m = &w.p[b].ev[i];
    if (m->type != TERN_EV_MESSAGE) continue;
    char want[16];
    snprintf(want, sizeof want, "m%03d", k++);
    cr_assert(m->len == strlen(want) && memcmp(m->body, want, m->len) == 0, "message %d out of order", k - 1);
  }
  tern_relay_stats rs;
  tern_relay_get_stats(w.relay, &rs);
  cr_assert(rs.messages_over_rate > 0);
  pump(&w, 100);
  cr_assert_eq(tern_client_outbox_size(w.p[a].c), 0);
  world_free(&w);
}

static int alice_and_bob_see_each_other(void *ctx, const char *watcher, const char *user) {
  (void)ctx;
  return (!strcmp(watcher, "alice") && !strcmp(user, "bob")) ||
         (!strcmp(watcher, "bob") && !strcmp(user, "alice"));
}

/* Presence (issue 14, item 5) through a real relay and clients: contacts
 * see each other come online and leave, with when; others see nothing. */
Test(messaging, contacts_see_each_other_come_online_and_leave, .timeout = 30) {
  world w;
  world_init(&w);
  w.may_see = alice_and_bob_see_each_other;
  relay_up(&w);
  size_t a = peer_add(&w, "alice", NULL, 1);
  size_t c = peer_add(&w, "carol", NULL, 1);
  cr_assert_not_null(wait_ev(&w, a, TERN_EV_CONNECTED, 5000));
  cr_assert_not_null(wait_ev(&w, c, TERN_EV_CONNECTED, 5000));
  uint64_t before = (uint64_t)time(NULL) * 1000;
  size_t b = peer_add(&w, "bob", NULL, 1);
  rec *p = wait_ev(&w, a, TERN_EV_PRESENCE, 5000);
  cr_assert_not_null(p, "alice was not told bob came online");
  cr_assert_str_eq(p->user, "bob");
  cr_assert_eq(p->online, 1);
  cr_assert(p->time_ms + 1000 >= before, "online since %llu", (unsigned long long)p->time_ms);
  p = wait_ev(&w, b, TERN_EV_PRESENCE, 5000);
  cr_assert_not_null(p, "bob was not told alice is online");
  cr_assert_str_eq(p->user, "alice");
  cr_assert_eq(p->online, 1);
  /* bob leaves (his client goes away): alice is told, with when. */
  pump(&w, 300);
  tern_client_free(w.p[b].c);
  w.p[b].c = NULL;
  p = wait_ev(&w, a, TERN_EV_PRESENCE, 15000);
  cr_assert_not_null(p, "alice was not told bob left");
  cr_assert_eq(p->online, 0);
  cr_assert(p->time_ms >= before, "last seen %llu", (unsigned long long)p->time_ms);
  pump(&w, 200);
  cr_assert_eq(count_ev(&w.p[c], TERN_EV_PRESENCE), 0, "carol, nobody's contact, heard of someone");
  tern_relay_stats rs;
  tern_relay_get_stats(w.relay, &rs);
  cr_assert_eq(rs.presence_sent, 3);
  world_free(&w);
}

Test(messaging, ephemeral_is_delivered_live_only_and_never_stored, .timeout = 30) {
  world w;
  world_init_stored(&w);
  size_t a = peer_add(&w, "alice", NULL, 0);
  cr_assert_eq(tern_client_send_ephemeral(w.p[a].c, "bob", "typing", 6), TERN_ECLOSED,
               "refused while offline");
  cr_assert_eq(tern_client_connect(w.p[a].c), 0);
  cr_assert_not_null(wait_ev(&w, a, TERN_EV_CONNECTED, 5000));

  /* bob offline: dropped, and not stored for later. */
  cr_assert_eq(tern_client_send_ephemeral(w.p[a].c, "bob", "typing-while-away", 17), 0);
  pump(&w, 300);
  size_t b = peer_add(&w, "bob", NULL, 1);
  cr_assert_not_null(wait_ev(&w, b, TERN_EV_CONNECTED, 5000));
  expect_no_message(&w, b, 800, "an ephemeral message is never stored");

  cr_assert_eq(tern_client_send_ephemeral(w.p[a].c, "bob", "typing", 6), 0);
  rec *m = wait_ev(&w, b, TERN_EV_MESSAGE, 3000);
  cr_assert_not_null(m, "delivered to an online recipient");
  cr_assert_eq(m->seq, 0, "ephemeral messages have seq 0");
  cr_assert_str_eq(m->user, "alice");
  cr_assert_str_eq(m->body, "typing");
  pump(&w, 300);
  cr_assert_eq(count_ev(&w.p[a], TERN_EV_SENT) + count_ev(&w.p[a], TERN_EV_DELIVERED) +
                   count_ev(&w.p[a], TERN_EV_FAILED),
               0, "no events for an ephemeral message");
  cr_assert_eq(tern_client_outbox_size(w.p[a].c), 0);
  tern_relay_stats st;
  tern_relay_get_stats(w.relay, &st);
  cr_assert_eq(st.messages_stored, 0);
  world_free(&w);
}

/* ---- send from many threads ---- */

#define THREADS 4
#define PER_THREAD 500

typedef struct sender_arg {
  tern_client *c;
  int id;
  int errors;
} sender_arg;

static void *sender_main(void *p) {
  sender_arg *s = p;
  char body[32];
  for (int k = 0; k < PER_THREAD; k++) {
    int n = snprintf(body, sizeof(body), "t%d-%04d", s->id, k);
    if (tern_client_send(s->c, "bob", body, (size_t)n, NULL) != 0) s->errors++;
    if (k % 50 == 0) sched_yield();
  }
  return NULL;
}

Test(messaging, sends_from_four_threads_arrive_once_in_per_thread_order, .timeout = 60) {
  world w;
  world_init(&w);
  relay_up(&w);
  size_t a, b;
  pair_up(&w, &a, &b);
  pthread_t th[THREADS];
  sender_arg args[THREADS];
  for (int t = 0; t < THREADS; t++) {
    args[t] = (sender_arg){.c = w.p[a].c, .id = t};
    cr_assert_eq(pthread_create(&th[t], NULL, sender_main, &args[t]), 0);
  }
  /* The main thread services everything meanwhile. */
  int next[THREADS] = {0};
  size_t got = 0;
  uint64_t end = now_ms() + 40000;
  size_t seen = 0;
  while (got < THREADS * PER_THREAD && now_ms() < end) {
    pump_once(&w);
    for (; seen < w.p[b].n; seen++) {
      rec *m = &w.p[b].ev[seen];
      if (m->type != TERN_EV_MESSAGE) continue;
      int t, k;
      cr_assert_eq(sscanf(m->body, "t%d-%d", &t, &k), 2, "body %s", m->body);
      cr_assert(t >= 0 && t < THREADS);
      cr_assert_eq(k, next[t], "thread %d: got message %d, expected %d (lost, repeated or "
                   "out of order)", t, k, next[t]);
      next[t]++;
      got++;
    }
  }
  for (int t = 0; t < THREADS; t++) {
    pthread_join(th[t], NULL);
    cr_assert_eq(args[t].errors, 0, "thread %d: tern_client_send failed", t);
  }
  cr_assert_eq(got, THREADS * PER_THREAD, "received %zu of %d", got, THREADS * PER_THREAD);
  /* Every message was stored once: SENT for 2000 distinct cmids. */
  end = now_ms() + 10000;
  while (count_ev(&w.p[a], TERN_EV_SENT) < THREADS * PER_THREAD && now_ms() < end) pump_once(&w);
  cr_assert_eq(count_ev(&w.p[a], TERN_EV_SENT), THREADS * PER_THREAD);
  for (size_t i = 1; i < w.p[a].n; i++)
    for (size_t q = 0; q < i && w.p[a].ev[i].type == TERN_EV_SENT; q++)
      cr_assert(!(w.p[a].ev[q].type == TERN_EV_SENT && w.p[a].ev[q].cmid == w.p[a].ev[i].cmid),
                "cmid %llu SENT twice", (unsigned long long)w.p[a].ev[i].cmid);
  consume_all(&w.p[b]);
  expect_no_message(&w, b, 300, "nothing extra");
  world_free(&w);
}

Test(messaging, per_sender_order_holds_across_reconnects_and_relay_restarts, .timeout = 60) {
  world w;
  world_init_stored(&w);
  size_t a = peer_add(&w, "alice", NULL, 1), b = peer_add(&w, "bob", NULL, 1),
         c = peer_add(&w, "carol", NULL, 1);
  for (size_t i = 0; i < 3; i++) cr_assert_not_null(wait_ev(&w, i, TERN_EV_CONNECTED, 5000));
  enum { N = 300 };
  char body[32];
  for (int k = 0; k < N; k++) {
    /* Two senders into bob's inbox, interleaved. */
    snprintf(body, sizeof(body), "a%03d", k);
    send_text(&w, a, "bob", body, NULL);
    snprintf(body, sizeof(body), "c%03d", k);
    send_text(&w, c, "bob", body, NULL);
    pump_once(&w);
    switch (k % 60) {
      case 10: tern_client_network_changed(w.p[a].c); break;
      case 25: tern_client_network_changed(w.p[b].c); break;
      case 40:
        relay_down(&w);
        pump(&w, 50);
        relay_up(&w);
        break;
      default: break;
    }
  }
  int next_a = 0, next_c = 0;
  uint64_t end = now_ms() + 30000;
  size_t seen = 0;
  while ((next_a < N || next_c < N) && now_ms() < end) {
    pump_once(&w);
    for (; seen < w.p[b].n; seen++) {
      rec *m = &w.p[b].ev[seen];
      if (m->type != TERN_EV_MESSAGE) continue;
      int k = atoi(m->body + 1);
      int *next = m->body[0] == 'a' ? &next_a : &next_c;
      cr_assert_str_eq(m->user, m->body[0] == 'a' ? "alice" : "carol");
      cr_assert_eq(k, *next, "from %s: got %d, expected %d", m->user, k, *next);
      (*next)++;
    }
  }
  cr_assert_eq(next_a, N, "alice: %d of %d arrived", next_a, N);
  cr_assert_eq(next_c, N, "carol: %d of %d arrived", next_c, N);
  consume_all(&w.p[b]);
  expect_no_message(&w, b, 1000, "each once");
  world_free(&w);
}

/* disconnect() right after sending: the session closes after what was
 * queued has gone out; nothing is lost or doubled when the app comes back
 * online, and network_changed() does not bring it online meanwhile. */
Test(messaging, disconnect_right_after_send_then_connect_loses_and_repeats_nothing,
     .timeout = 30) {
  world w;
  world_init(&w);
  relay_up(&w);
  size_t a, b;
  pair_up(&w, &a, &b);
  char bodies[20][16];
  const char *want[20];
  for (int k = 0; k < 20; k++) {
    snprintf(bodies[k], sizeof(bodies[k]), "bye %02d", k);
    want[k] = bodies[k];
    send_text(&w, a, "bob", bodies[k], NULL);
  }
  cr_assert_eq(tern_client_disconnect(w.p[a].c), 0);
  rec *d = wait_ev(&w, a, TERN_EV_DISCONNECTED, 5000);
  cr_assert_not_null(d);
  cr_assert_eq(d->error, TERN_ECLOSED, "got %s", tern_errname(d->error));
  tern_client_network_changed(w.p[a].c);
  pump(&w, 1000);
  cr_assert_eq(count_ev(&w.p[a], TERN_EV_CONNECTED), 1, "offline by request stays offline");
  cr_assert_eq(tern_client_connect(w.p[a].c), 0);
  cr_assert_not_null(wait_ev(&w, a, TERN_EV_CONNECTED, 5000));
  expect_messages(&w, b, "alice", want, 20, 5000);
  uint64_t end = now_ms() + 5000;
  while (count_ev(&w.p[a], TERN_EV_SENT) < 20 && now_ms() < end) pump_once(&w);
  cr_assert_eq(count_ev(&w.p[a], TERN_EV_SENT), 20, "SENT once for each");
  cr_assert_eq(tern_client_outbox_size(w.p[a].c), 0);
  expect_no_message(&w, b, 800, "each once");
  pump(&w, 300);
  cr_assert_eq(count_ev(&w.p[a], TERN_EV_SENT), 20, "and not again");
  world_free(&w);
}

/* Carbons (spec/messages.md §13): what alice sends from one device reaches
 * her other device, marked as hers and naming bob, in order; the sending
 * device gets no copy of its own; bob's receipts are one per message. */
Test(messaging, a_users_other_device_gets_a_carbon_of_what_it_sent, .timeout = 30) {
  world w;
  world_init(&w);
  relay_up(&w);
  size_t a1 = peer_add(&w, "alice", NULL, 1);
  size_t a2 = peer_add(&w, "alice", NULL, 1);
  size_t b = peer_add(&w, "bob", NULL, 1);
  for (size_t i = 0; i < 3; i++) cr_assert_not_null(wait_ev(&w, i, TERN_EV_CONNECTED, 5000));
  pump(&w, 100); /* every device registered before the first message */

  uint64_t c1, c2;
  send_text(&w, a1, "bob", "hi bob", &c1);
  send_text(&w, a1, "bob", "are you there", &c2);
  const char *const want[] = {"hi bob", "are you there"};
  expect_messages(&w, b, "alice", want, 2, 5000);
  for (size_t k = 0; k < 2; k++) {
    rec *m = wait_ev(&w, a2, TERN_EV_MESSAGE, 5000);
    cr_assert_not_null(m, "carbon %zu did not reach alice's other device", k + 1);
    cr_assert_str_eq(m->user, "alice", "a carbon is from the user herself");
    cr_assert_str_eq(m->to, "bob", "and names its recipient");
    cr_assert_str_eq(m->body, want[k], "carbons in order");
  }
  for (size_t k = 0; k < 2; k++) cr_assert_not_null(wait_ev(&w, a1, TERN_EV_DELIVERED, 5000));

  /* bob answers: both of alice's devices get it, as a plain message. */
  uint64_t c3;
  send_text(&w, b, "alice", "yes", &c3);
  const char *const answer[] = {"yes"};
  expect_messages(&w, a1, "bob", answer, 1, 5000);
  expect_messages(&w, a2, "bob", answer, 1, 5000);
  cr_assert_str_eq(w.p[a2].ev[w.p[a2].n - 1].to, "", "bob's message is no carbon");
  cr_assert_not_null(wait_ev(&w, b, TERN_EV_DELIVERED, 5000));

  pump(&w, 300);
  cr_assert_eq(count_ev(&w.p[a1], TERN_EV_MESSAGE), 1, "the sending device gets no copy of its own");
  cr_assert_eq(count_ev(&w.p[a2], TERN_EV_MESSAGE), 3);
  cr_assert_eq(count_ev(&w.p[a1], TERN_EV_DELIVERED), 2, "one receipt per message, none for carbons");
  cr_assert_eq(count_ev(&w.p[b], TERN_EV_MESSAGE), 2, "bob gets no carbons of his own");
  world_free(&w);
}

/* Groups (spec/messages.md §14), through a real relay: three users, one
 * with two devices; the message is stored once, every other member device
 * gets it once, the sender's other device too, the sender's own device
 * not; the sender learns N of M; a removed member gets nothing after the
 * point, an added one nothing before it; a non-member is refused. */
static int collect_member(void *ctx, const char *user) {
  char *all = ctx;
  strcat(all, user);
  strcat(all, " ");
  return 0;
}

Test(messaging, a_group_message_reaches_every_member_device_once, .timeout = 40) {
  world w;
  world_init(&w);
  relay_up(&w);
  size_t a1 = peer_add(&w, "alice", NULL, 1);
  size_t a2 = peer_add(&w, "alice", NULL, 1);
  size_t b = peer_add(&w, "bob", NULL, 1);
  size_t c = peer_add(&w, "carol", NULL, 1);
  size_t d = peer_add(&w, "dave", NULL, 1);
  for (size_t i = 0; i < 5; i++) cr_assert_not_null(wait_ev(&w, i, TERN_EV_CONNECTED, 5000));
  pump(&w, 100);
  const char *abc[] = {"alice", "bob", "carol"};
  cr_assert_eq(tern_relay_group_set(w.relay, "@team", abc, 3), 0);
  cr_assert_eq(tern_relay_group_set(w.relay, "team", abc, 3), TERN_EINVAL, "a group name starts with @");
  char all[128] = "";
  cr_assert_eq(tern_relay_group_members(w.relay, "@team", collect_member, all), 3);
  cr_assert_str_eq(all, "alice bob carol ");
  pump(&w, 200);

  uint64_t c1, c2, c3;
  send_text(&w, a1, "@team", "hello team", &c1);
  send_text(&w, b, "@team", "hi alice", &c2);
  send_text(&w, d, "@team", "can I join", &c3);
  rec *f = wait_ev(&w, d, TERN_EV_FAILED, 5000);
  cr_assert_not_null(f, "dave is no member");
  cr_assert_eq(f->error, TERN_EDENIED);
  size_t got_by[] = {a2, c};
  for (size_t k = 0; k < 2; k++) {
    rec *m = wait_ev(&w, got_by[k], TERN_EV_MESSAGE, 5000);
    cr_assert_not_null(m);
    cr_assert_str_eq(m->body, "hello team");
    cr_assert_str_eq(m->user, "alice");
    cr_assert_str_eq(m->to, "@team");
  }
  rec *m = wait_ev(&w, b, TERN_EV_MESSAGE, 5000);
  cr_assert_not_null(m);
  cr_assert_str_eq(m->body, "hello team");
  /* bob's answer: to both of alice's devices and carol, in the group's
   * order after alice's message. */
  size_t all_of_bob[] = {a1, a2, c};
  for (size_t k = 0; k < 3; k++) {
    m = wait_ev(&w, all_of_bob[k], TERN_EV_MESSAGE, 5000);
    cr_assert_not_null(m, "bob's message did not reach device %zu", k);
    cr_assert_str_eq(m->body, "hi alice");
    cr_assert_gt(m->seq, 1, "after alice's in the group's one order");
  }
  /* alice's receipts: 2 of 2 other members once bob and carol have it. */
  uint32_t best = 0, of = 0;
  uint64_t end = now_ms() + 5000;
  while (best < 2 && now_ms() < end) {
    rec *r = wait_ev(&w, a1, TERN_EV_RECEIPTS, 200);
    if (r && r->cmid == c1) {
      if (r->delivered > best) best = r->delivered;
      of = r->members;
    }
  }
  cr_assert_eq(best, 2, "delivered to 2 of 2");
  cr_assert_eq(of, 2);

  /* carol out, dave in, after what was sent so far. */
  const char *abd[] = {"alice", "bob", "dave"};
  cr_assert_eq(tern_relay_group_set(w.relay, "@team", abd, 3), 0);
  pump(&w, 200);
  uint64_t c4;
  send_text(&w, a1, "@team", "welcome dave", &c4);
  m = wait_ev(&w, d, TERN_EV_MESSAGE, 5000);
  cr_assert_not_null(m, "dave gets what follows his joining");
  cr_assert_str_eq(m->body, "welcome dave");
  expect_no_message(&w, c, 500, "carol left before it was sent");
  pump(&w, 300);
  cr_assert_eq(count_ev(&w.p[a1], TERN_EV_MESSAGE), 1, "alice's sending device: only bob's");
  cr_assert_eq(count_ev(&w.p[d], TERN_EV_MESSAGE), 1, "dave: nothing from before he joined");
  cr_assert_eq(count_ev(&w.p[c], TERN_EV_MESSAGE), 2);
  world_free(&w);
}
