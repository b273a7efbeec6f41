/*
 * Tests of lib/client/kalearn.c, the keepalive learner, against a simulated NAT
 * on a virtual clock.
 *
 * The simulation (struct sim) is the learner's whole world:
 *
 *   - the shell: it carries out the learner's actions (OPEN, SEND, CLOSE)
 *     on simulated probe sockets, hands the learner a probe key whenever it
 *     asks for one while the session is up, and calls tick() at every time
 *     the learner or the relay asked to be woken;
 *   - the NAT: each probe socket gets a mapping (a fresh external port) on
 *     its first datagram out, or on the first one after the mapping
 *     expired; the mapping expires after T_nat of outbound silence (and, in
 *     the "inbound refreshes" model, of silence both ways). An inbound
 *     datagram for an expired mapping is dropped;
 *   - the path: a fixed one-way delay, and optionally a seeded loss rate
 *     each way;
 *   - the relay: the real probe service (lib/relay/probesvc.c). Each REQUEST
 *     goes to tern__psvc_input; its ACK comes back after the one-way
 *     delay; REPLYs are taken from tern__psvc_next_reply when due.
 *
 * What is checked is what a user would notice: the live interval ends
 * below the NAT's timeout and close to it, in bounded time and probes, and
 * stays safe under loss, NAT changes, reprobes and session churn.
 */
#include <criterion/criterion.h>

#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/kalearn.h"
#include "wire/probe.h"
#include "relay/probesvc.h"
#include "tern/tern.h"

static void setup(void) { cr_assert_geq(sodium_init(), 0, "sodium_init failed"); }

TestSuite(kalearn, .init = setup, .timeout = 300);

#define SEC 1000u
#define MIN (60u * SEC)
#define HOUR (60ull * MIN)
#define DAY (24ull * HOUR)
#define WALL0 1700000000000ull /* wall clock at virtual time 0 */
#define CLIENT_IP 0xCB007107u  /* the NAT's public address */
#define QMAX 4096

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static uint64_t nonce_rand(void *ctx) { return splitmix((uint64_t *)ctx); }

typedef struct psock {
  int open;
  uint16_t ext_port; /* the NAT's mapping for this socket; 0: none */
  uint64_t last_out; /* last datagram out through the mapping */
  uint64_t last_in;  /* last datagram in through it */
} psock;

typedef struct dgram {
  uint64_t at;      /* arrival time */
  int to_relay;
  uint16_t port;    /* to_relay: source port; else destination port */
  uint8_t data[TERN__PROBE_REQUEST_BYTES];
  size_t len;
} dgram;

typedef struct sim {
  tern__ka ka;
  tern__ka_config cfg;
  tern__psvc *svc;
  uint64_t now;
  uint64_t nonce_seed, loss_seed;
  /* The network. */
  uint32_t t_nat;        /* ms of silence after which the NAT forgets a mapping */
  int inbound_refreshes; /* 1: inbound datagrams also keep a mapping alive */
  uint32_t owd;          /* one-way delay, ms */
  uint32_t ack_extra_ms; /* ACKs take this much longer on their way back */
  unsigned loss_pm;      /* per-mille loss, each way */
  int relay_silent;      /* 1: the relay takes probes and never answers */
  psock socks[TERN__KA_SLOTS];
  uint16_t next_port;
  dgram q[QMAX];
  size_t nq;
  /* The session. */
  int session_up;
  int have_key;
  uint8_t key_gen;
  uint8_t id[TERN__PROBE_ID_BYTES], key[TERN__PROBE_KEY_BYTES];
  /* What was seen. */
  unsigned rounds;       /* OPEN of slot 0: the learner starts every round there */
  unsigned max_active;   /* most probe slots busy at once */
  unsigned max_open;     /* most probe sockets open at once */
  size_t max_pending;    /* most probes pending at the relay */
  uint64_t opens, closes, sends;
  uint64_t sends_old_key;/* REQUESTs under a key the relay no longer has */
  uint64_t nat_drops;    /* datagrams in that found their mapping gone */
  uint64_t first_open_ms;/* when the first probe socket opened (0: none yet) */
  uint32_t max_interval; /* largest live interval seen at the end of a step */
  uint32_t sent_t[256];  /* T of each REQUEST sent (first tries and resends) */
  size_t nsent_t;
  int trace;
} sim;

static void sim_init(sim *S, const tern__ka_config *cfg, uint32_t t_nat, uint64_t seed) {
  memset(S, 0, sizeof *S);
  S->cfg = *cfg;
  S->t_nat = t_nat;
  S->owd = 40;
  S->now = 5 * SEC;
  S->nonce_seed = seed;
  S->loss_seed = seed ^ 0xA5A5A5A5DEADBEEFull;
  S->next_port = 20000;
  tern__psvc_config pc;
  tern__psvc_config_default(&pc);
  cr_assert_eq(tern__psvc_new(&S->svc, &pc), 0);
  tern__ka_init(&S->ka, cfg, nonce_rand, &S->nonce_seed);
  tern__ka_set_network(&S->ka, NULL, S->now);
}

static void sim_free(sim *S) { tern__psvc_free(S->svc); }

static uint64_t wall(const sim *S) { return WALL0 + S->now; }

static void enqueue(sim *S, int to_relay, uint16_t port, const uint8_t *data, size_t len) {
  if (S->loss_pm && splitmix(&S->loss_seed) % 1000 < S->loss_pm) return;
  cr_assert_lt(S->nq, QMAX, "datagram queue overflow");
  dgram *d = &S->q[S->nq++];
  d->at = S->now + S->owd;
  d->to_relay = to_relay;
  d->port = port;
  memcpy(d->data, data, len);
  d->len = len;
}

/* The NAT's verdict on a datagram arriving from outside for ext_port. */
static psock *nat_inbound(sim *S, uint16_t port, unsigned *slot) {
  for (unsigned i = 0; i < TERN__KA_SLOTS; i++) {
    psock *p = &S->socks[i];
    if (!p->open || p->ext_port != port) continue;
    uint64_t quiet_since = p->last_out;
    if (S->inbound_refreshes && p->last_in > quiet_since) quiet_since = p->last_in;
    if (S->now - quiet_since > S->t_nat) {
      p->ext_port = 0; /* forgotten */
      S->nat_drops++;
      return NULL;
    }
    p->last_in = S->now;
    *slot = i;
    return p;
  }
  return NULL; /* a closed socket, or a mapping forgotten earlier */
}

static void session_up(sim *S) { S->session_up = 1; }

static void session_down(sim *S) {
  S->session_up = 0;
  if (S->have_key) tern__psvc_remove_key(S->svc, 1);
  S->have_key = 0;
  tern__ka_session_down(&S->ka);
}

static void give_key(sim *S) {
  S->key_gen++;
  for (size_t i = 0; i < sizeof S->id; i++) S->id[i] = (uint8_t)(S->key_gen * 13 + i);
  for (size_t i = 0; i < sizeof S->key; i++) S->key[i] = (uint8_t)(S->key_gen * 29 + 5 * i);
  cr_assert_eq(tern__psvc_add_key(S->svc, 1, S->id, S->key), 0);
  S->have_key = 1;
  tern__ka_set_key(&S->ka, S->id, S->key, S->now, wall(S));
}

static void note_active(sim *S) {
  unsigned active = 0, open = 0;
  for (unsigned i = 0; i < TERN__KA_SLOTS; i++) {
    active += S->ka.slots[i].state != 0;
    open += S->socks[i].open;
  }
  if (active > S->max_active) S->max_active = active;
  if (open > S->max_open) S->max_open = open;
  size_t pend = tern__psvc_pending(S->svc);
  if (pend > S->max_pending) S->max_pending = pend;
  uint32_t iv = tern__ka_interval(&S->ka);
  if (iv > S->max_interval) S->max_interval = iv;
}

/* Forgets what was seen, so that a test can watch what comes next. */
static void reset_seen(sim *S) {
  S->rounds = S->max_active = S->max_open = 0;
  S->max_pending = 0;
  S->opens = S->closes = S->sends = S->sends_old_key = S->nat_drops = 0;
  S->first_open_ms = 0;
  S->max_interval = 0;
  S->nsent_t = 0;
  /* Sockets open now count as opened, so that opens == closes still means
   * "every socket was closed". */
  for (unsigned i = 0; i < TERN__KA_SLOTS; i++) S->opens += (uint64_t)S->socks[i].open;
}

/* Carries out the learner's actions. */
static void drain_actions(sim *S) {
  tern__ka_action a;
  while (tern__ka_next_action(&S->ka, S->now, &a) == 1) {
    cr_assert_lt(a.slot, TERN__KA_SLOTS);
    psock *p = &S->socks[a.slot];
    switch (a.type) {
    case TERN__KA_OPEN:
      cr_assert_not(p->open, "OPEN of slot %u, which is open", a.slot);
      memset(p, 0, sizeof *p);
      p->open = 1;
      S->opens++;
      if (a.slot == 0) S->rounds++;
      if (!S->first_open_ms) S->first_open_ms = S->now;
      break;
    case TERN__KA_CLOSE:
      cr_assert(p->open, "CLOSE of slot %u, which is closed", a.slot);
      memset(p, 0, sizeof *p);
      S->closes++;
      break;
    case TERN__KA_SEND: {
      cr_assert(p->open, "SEND on slot %u, which is closed", a.slot);
      cr_assert_eq(a.len, TERN__PROBE_REQUEST_BYTES);
      tern__probe_pkt pk;
      cr_assert_eq(tern__probe_parse(a.data, a.len, &pk), 0);
      cr_assert_eq(pk.type, TERN__PROBE_REQUEST);
      if (!S->have_key || memcmp(pk.id, S->id, sizeof S->id) != 0) S->sends_old_key++;
      if (S->trace)
        printf("  %9.3f s  slot %u REQUEST T=%.1f s\n", S->now / 1000.0, a.slot, pk.wait_ms / 1000.0);
      /* Out through the NAT: a new mapping if there is none any more. */
      uint64_t quiet_since = p->last_out;
      if (S->inbound_refreshes && p->last_in > quiet_since) quiet_since = p->last_in;
      if (!p->ext_port || S->now - quiet_since > S->t_nat) p->ext_port = S->next_port++;
      p->last_out = S->now;
      S->sends++;
      if (S->nsent_t < sizeof S->sent_t / sizeof S->sent_t[0]) S->sent_t[S->nsent_t++] = pk.wait_ms;
      enqueue(S, 1, p->ext_port, a.data, a.len);
      break;
    }
    default:
      cr_assert_fail("unknown action %d", (int)a.type);
    }
  }
  note_active(S);
}

/* Everything that happens at S->now. */
static void step(sim *S) {
  for (int guard = 0;; guard++) {
    cr_assert_lt(guard, 1000, "the learner keeps asking for now (%llu ms)", (unsigned long long)S->now);
    /* Arrivals, in order. */
    for (;;) {
      size_t best = S->nq;
      for (size_t i = 0; i < S->nq; i++)
        if (S->q[i].at <= S->now && (best == S->nq || S->q[i].at < S->q[best].at)) best = i;
      if (best == S->nq) break;
      dgram d = S->q[best];
      S->q[best] = S->q[--S->nq];
      if (d.to_relay) {
        uint8_t ans[64];
        size_t alen = 0;
        tern__addr from;
        tern__addr_set_v4(&from, CLIENT_IP, d.port);
        cr_assert_eq(tern__psvc_input(S->svc, &from, d.data, d.len, S->now, ans, sizeof ans, &alen), 1);
        size_t before = S->nq;
        if (alen && !S->relay_silent) enqueue(S, 0, d.port, ans, alen);
        if (S->nq > before) S->q[S->nq - 1].at += S->ack_extra_ms;
      } else {
        unsigned slot;
        if (nat_inbound(S, d.port, &slot)) {
          if (S->trace) {
            tern__probe_pkt pk;
            tern__probe_parse(d.data, d.len, &pk);
            printf("  %9.3f s  slot %u %s T=%.1f s\n", S->now / 1000.0, slot,
                   pk.type == TERN__PROBE_ACK ? "ACK" : "REPLY", pk.wait_ms / 1000.0);
          }
          tern__ka_input(&S->ka, slot, d.data, d.len, S->now, wall(S));
        }
      }
    }
    /* The relay's REPLYs that are due. */
    tern__addr to;
    uint8_t out[64];
    size_t len;
    while (tern__psvc_next_reply(S->svc, S->now, &to, out, sizeof out, &len) == 1) {
      cr_assert(tern__addr_is_v4(&to));
      cr_assert_eq(tern__addr_v4(&to), CLIENT_IP);
      if (!S->relay_silent) enqueue(S, 0, to.port, out, len);
    }
    tern__ka_tick(&S->ka, S->now, wall(S));
    if (S->session_up && !S->have_key && tern__ka_wants_key(&S->ka, S->now, wall(S))) give_key(S);
    drain_actions(S);
    int t = tern__ka_timeout(&S->ka, S->now);
    int arrivals_now = 0;
    for (size_t i = 0; i < S->nq; i++) arrivals_now |= S->q[i].at <= S->now;
    if (t != 0 && !arrivals_now && tern__psvc_timeout(S->svc, S->now) != 0) return;
  }
}

/* The next time anything happens, or UINT64_MAX. */
static uint64_t next_event(const sim *S) {
  uint64_t best = UINT64_MAX;
  int t = tern__ka_timeout(&S->ka, S->now);
  if (t >= 0) best = S->now + (uint64_t)t;
  t = tern__psvc_timeout(S->svc, S->now);
  if (t >= 0 && S->now + (uint64_t)t < best) best = S->now + (uint64_t)t;
  for (size_t i = 0; i < S->nq; i++)
    if (S->q[i].at < best) best = S->q[i].at;
  return best;
}

/* Runs until `until` (virtual ms), or until done(S) holds. */
static void run_until(sim *S, uint64_t until, int (*done)(const sim *)) {
  step(S);
  while (!(done && done(S))) {
    uint64_t t = next_event(S);
    if (t > until) {
      S->now = until;
      step(S);
      return;
    }
    if (t > S->now) S->now = t;
    step(S);
  }
}

static int no_probe_out(const sim *S) {
  for (unsigned i = 0; i < TERN__KA_SLOTS; i++)
    if (S->ka.slots[i].state) return 0;
  return 1;
}

static int finished(const sim *S) {
  int st = S->ka.state;
  return (st == TERN_KA_LEARNED || st == TERN_KA_BAD) && no_probe_out(S);
}

/* Learns from scratch with the session up; returns the virtual time taken. */
static uint64_t learn(sim *S, uint64_t limit) {
  session_up(S);
  uint64_t start = S->now;
  run_until(S, S->now + limit, finished);
  cr_assert(finished(S), "T_nat %.1f s: not finished after %.0f s (state %d, proven %u, failed %u)",
            S->t_nat / 1000.0, (S->now - start) / 1000.0, S->ka.state, S->ka.net.proven_ms,
            S->ka.net.failed_ms);
  return S->now - start;
}

static tern__ka_config default_cfg(void) {
  tern__ka_config c;
  tern__ka_config_default(&c);
  return c;
}

static uint32_t interval(const sim *S) { return tern__ka_interval(&S->ka); }

/* ------------------------------------------------- learning, no loss */

typedef struct outcome {
  uint32_t interval, proven, failed;
  unsigned rounds;
  uint64_t learn_ms;
  uint64_t probes;
} outcome;

/* One search on a NAT of t_nat, checked against the bounds every search
 * must meet; returns what it found. */
static outcome learn_and_check(uint32_t t_nat, int inbound_refreshes, uint32_t owd, uint64_t seed) {
  static sim S;
  tern__ka_config cfg = default_cfg();
  sim_init(&S, &cfg, t_nat, seed);
  S.inbound_refreshes = inbound_refreshes;
  S.owd = owd;
  uint64_t took = learn(&S, 4 * HOUR);
  outcome o = {interval(&S), S.ka.net.proven_ms, S.ka.net.failed_ms, S.rounds, S.ka.learn_ms,
               S.ka.stats.probes};
  double ratio = (double)o.interval / t_nat;
  cr_assert_eq(S.ka.state, TERN_KA_LEARNED, "T_nat %u ms: state %d", t_nat, S.ka.state);
  cr_assert(ratio >= 0.7 && ratio < 1.0,
            "T_nat %u ms: interval %u ms is %.3f x T_nat (proven %u, failed %u)", t_nat, o.interval,
            ratio, o.proven, o.failed);
  cr_assert_lt(o.proven, t_nat + 1, "proven %u ms above T_nat %u ms", o.proven, t_nat);
  /* The documented margin (spec/keepalive.md 3.1): the live link's timer
   * is not exact, so the interval stays clear of what was proven. */
  uint32_t margin = o.proven / 10 > SEC ? o.proven / 10 : SEC;
  cr_assert_eq(o.interval, o.proven - margin, "interval %u ms for proven %u ms", o.interval, o.proven);
  cr_assert_lt(o.learn_ms, 6ull * t_nat + 60 * SEC, "T_nat %u ms: learning took %.0f s",
               t_nat, o.learn_ms / 1000.0);
  cr_assert_leq(o.learn_ms, took);
  cr_assert_leq(o.rounds, 6, "T_nat %u ms: %u rounds", t_nat, o.rounds);
  cr_assert_leq(S.max_active, TERN__KA_SLOTS);
  cr_assert_leq(S.max_open, TERN__KA_SLOTS, "%u probe sockets at once", S.max_open);
  cr_assert_leq(S.max_pending, TERN__KA_SLOTS, "%zu probes pending at the relay", S.max_pending);
  cr_assert_eq(S.sends_old_key, 0);
  /* The learner closed every socket it opened. */
  run_until(&S, S.now + 1000, NULL);
  cr_assert_eq(S.opens, S.closes, "%llu OPEN, %llu CLOSE", (unsigned long long)S.opens,
               (unsigned long long)S.closes);
  sim_free(&S);
  return o;
}

Test(kalearn, learns_each_reference_timeout) {
  const uint32_t t_nats[] = {12, 20, 45, 60, 120, 300, 600};
  printf("kalearn: T_nat, interval, ratio, proven, failed, rounds, learning time, probes "
         "(one-way delay 40 ms, no loss, outbound-only refresh)\n");
  for (size_t i = 0; i < sizeof t_nats / sizeof t_nats[0]; i++) {
    outcome o = learn_and_check(t_nats[i] * SEC, 0, 40, i + 1);
    printf("kalearn: T_nat %4u s  interval %7.2f s  ratio %.3f  proven %7.2f s  failed %7.2f s  "
           "rounds %u  learning %6.1f s  probes %llu\n",
           t_nats[i], o.interval / 1000.0, (double)o.interval / (t_nats[i] * SEC),
           o.proven / 1000.0, o.failed / 1000.0, o.rounds, o.learn_ms / 1000.0,
           (unsigned long long)o.probes);
  }
}

Test(kalearn, learns_every_timeout_between_11_s_and_900_s) {
  uint64_t seed = 77;
  double worst_ratio = 1, best_ratio = 0, worst_time = 0;
  unsigned worst_rounds = 0, n = 0;
  for (int model = 0; model < 2; model++) {
    /* Log-spaced from 11 s to 900 s (1.017774^250 = 900/11), each nudged
     * by a random fraction of a step so that no run lands on a probe point
     * by construction. */
    double base = 11000.0;
    for (int i = 0; i < 250; i++, base *= 1.017774) {
      double nudge = 1.0 + 0.017774 * (double)(splitmix(&seed) % 1000) / 1000.0;
      uint32_t t = (uint32_t)(base * nudge);
      if (t > 900 * SEC) t = 900 * SEC;
      uint32_t owd = 5 + (uint32_t)(splitmix(&seed) % 300);
      outcome o = learn_and_check(t, model, owd, seed);
      double r = (double)o.interval / t;
      if (r < worst_ratio) worst_ratio = r;
      if (r > best_ratio) best_ratio = r;
      if ((double)o.learn_ms / t > worst_time) worst_time = (double)o.learn_ms / t;
      if (o.rounds > worst_rounds) worst_rounds = o.rounds;
      n++;
    }
  }
  printf("kalearn: sweep of %u timeouts 11..900 s, two NAT models, one-way delay 5..305 ms: "
         "interval/T_nat in [%.3f, %.3f], at most %u rounds, learning at most %.2f x T_nat\n",
         n, worst_ratio, best_ratio, worst_rounds, worst_time);
}

/* ------------------------------------------------ the ends of the range */

Test(kalearn, a_nat_below_min_is_bad_with_half_min) {
  const uint32_t t_nats[] = {3 * SEC, 8 * SEC, 9900};
  for (size_t i = 0; i < 3; i++) {
    static sim S;
    tern__ka_config cfg = default_cfg();
    sim_init(&S, &cfg, t_nats[i], i + 10);
    learn(&S, HOUR);
    cr_assert_eq(S.ka.state, TERN_KA_BAD, "T_nat %u ms: state %d", t_nats[i], S.ka.state);
    cr_assert_eq(interval(&S), cfg.min_ms / 2);
    cr_assert_eq(S.ka.net.proven_ms, 0);
    cr_assert_leq(S.ka.net.failed_ms, cfg.min_ms);
    cr_assert_neq(S.ka.net.learned_at, 0);
    printf("kalearn: T_nat %.1f s: BAD, interval %.1f s, %u rounds, %.1f s\n", t_nats[i] / 1000.0,
           interval(&S) / 1000.0, S.rounds, S.ka.learn_ms / 1000.0);
    /* Nothing more to do on this network. */
    cr_assert_not(tern__ka_wants_key(&S.ka, S.now, wall(&S)));
    reset_seen(&S);
    run_until(&S, S.now + 2 * HOUR, NULL);
    cr_assert_eq(S.sends, 0, "a finished search probed again");
    sim_free(&S);
  }
}

Test(kalearn, a_nat_above_the_ceiling_proves_the_ceiling) {
  const uint32_t t_nats[] = {1000 * SEC, 3600 * SEC, UINT32_MAX / 2};
  for (size_t i = 0; i < 3; i++) {
    static sim S;
    tern__ka_config cfg = default_cfg();
    sim_init(&S, &cfg, t_nats[i], i + 20);
    learn(&S, 4 * HOUR);
    cr_assert_eq(S.ka.state, TERN_KA_LEARNED);
    cr_assert_eq(S.ka.net.proven_ms, cfg.ceiling_ms);
    cr_assert_eq(interval(&S), cfg.ceiling_ms - cfg.ceiling_ms / 10);
    cr_assert_eq(S.rounds, 1, "the doublings up to the ceiling fit in one round");
    printf("kalearn: T_nat %.0f s: proven %.0f s (the ceiling), interval %.0f s, %.0f s\n",
           t_nats[i] / 1000.0, S.ka.net.proven_ms / 1000.0, interval(&S) / 1000.0,
           S.ka.learn_ms / 1000.0);
    sim_free(&S);
  }
}

/* A REPLY credits the silence the client saw: from the ACK's arrival,
 * which is later than the relay's start by the ACK's way back. A probe at
 * the ceiling then proves a little less than the ceiling; that is as far
 * as the search goes (ternd's own tests saw 2,999 ms for a 3,000 ms
 * ceiling over loopback, and the probe used to repeat every 3 s). */
Test(kalearn, a_probe_at_the_ceiling_that_proves_a_little_less_ends_the_search) {
  const uint32_t extra[] = {1, 40, 300};
  for (size_t i = 0; i < 3; i++) {
    static sim S;
    tern__ka_config cfg = default_cfg();
    sim_init(&S, &cfg, 3600 * SEC, i + 30);
    S.ack_extra_ms = extra[i];
    learn(&S, 4 * HOUR);
    cr_assert_eq(S.ka.state, TERN_KA_LEARNED);
    cr_assert_eq(S.ka.net.proven_ms, cfg.ceiling_ms - extra[i], "ACK %u ms late: proven %u ms",
                 extra[i], S.ka.net.proven_ms);
    cr_assert_eq(S.rounds, 1, "ACK %u ms late: %u rounds", extra[i], S.rounds);
    reset_seen(&S);
    run_until(&S, S.now + 2 * HOUR, NULL);
    cr_assert_eq(S.sends, 0, "ACK %u ms late: the finished search probed the ceiling again",
                 extra[i]);
    sim_free(&S);
  }
}

/* -------------------------------------------------------------- loss */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* A lost REPLY looks like a NAT that forgot: the learner trusts the
 * failure and may end lower than it could, never higher. */
Test(kalearn, loss_only_ever_lowers_the_interval) {
  const uint32_t t_nats[] = {12, 20, 45, 60, 120, 300, 600};
  enum { SEEDS = 12, N = 7 * SEEDS };
  double ratios[N];
  unsigned runs = 0, bad = 0, low = 0;
  for (size_t i = 0; i < sizeof t_nats / sizeof t_nats[0]; i++) {
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
      static sim S;
      tern__ka_config cfg = default_cfg();
      uint32_t t = t_nats[i] * SEC;
      sim_init(&S, &cfg, t, seed * 1000 + i);
      S.loss_pm = 50; /* 5 % each way */
      S.inbound_refreshes = (int)(seed & 1);
      session_up(&S);
      step(&S);
      /* Step by step: whatever is proven at any moment is true. */
      for (uint64_t end = S.now + 8 * HOUR; !finished(&S) && S.now < end;) {
        uint64_t nx = next_event(&S);
        S.now = nx > end ? end : nx;
        step(&S);
        cr_assert_leq(S.ka.net.proven_ms, t, "T_nat %u s seed %llu: proven %u ms", t_nats[i],
                      (unsigned long long)seed, S.ka.net.proven_ms);
      }
      cr_assert(finished(&S), "T_nat %u s seed %llu: no end (state %d)", t_nats[i],
                (unsigned long long)seed, S.ka.state);
      cr_assert_lt(interval(&S), t, "T_nat %u s seed %llu: interval %u ms", t_nats[i],
                   (unsigned long long)seed, interval(&S));
      double r = (double)interval(&S) / t;
      if (r < 0.7) {
        low++;
        printf("kalearn: 5%% loss, T_nat %u s, seed %llu: interval %.1f s (%.3f x T_nat), "
               "proven %.1f s, failed %.1f s\n", t_nats[i], (unsigned long long)seed,
               interval(&S) / 1000.0, r, S.ka.net.proven_ms / 1000.0, S.ka.net.failed_ms / 1000.0);
      }
      ratios[runs++] = r;
      bad += S.ka.state == TERN_KA_BAD;
      sim_free(&S);
    }
  }
  qsort(ratios, runs, sizeof ratios[0], cmp_double);
  double median = ratios[runs / 2];
  printf("kalearn: 5%% loss each way, %u runs: interval/T_nat lowest %.3f, median %.3f, highest %.3f; "
         "%u below 0.7, %u ended BAD\n", runs, ratios[0], median, ratios[runs - 1], low, bad);
  /* Most searches still end where a lossless one would. */
  cr_assert_geq(median, 0.8, "median interval %.3f x T_nat under 5 %% loss", median);
}

/* ------------------------------------------------------- unavailable */

static int unavailable(const sim *S) { return S->ka.state == TERN_KA_UNAVAILABLE; }

Test(kalearn, a_relay_that_never_answers_is_unavailable_and_retried_later) {
  static sim S;
  tern__ka_config cfg = default_cfg();
  sim_init(&S, &cfg, 60 * SEC, 3);
  S.relay_silent = 1;
  session_up(&S);
  run_until(&S, S.now + HOUR, unavailable);
  cr_assert_eq(S.ka.state, TERN_KA_UNAVAILABLE);
  uint64_t gave_up = S.now;
  cr_assert_lt(gave_up - S.first_open_ms, 10 * SEC, "took %llu ms to give up",
               (unsigned long long)(gave_up - S.first_open_ms));
  cr_assert_eq(interval(&S), cfg.floor_ms / 5 * 3, "the unproven interval");
  run_until(&S, S.now + 1, NULL);
  cr_assert_eq(S.opens, S.closes, "a probe socket stayed open");
  /* Quiet until the retry. */
  reset_seen(&S);
  run_until(&S, gave_up + cfg.unavailable_retry_ms - 1, NULL);
  cr_assert_eq(S.sends, 0, "probed %llu times before the retry", (unsigned long long)S.sends);
  cr_assert_eq(S.ka.state, TERN_KA_UNAVAILABLE);
  /* The relay is back: the retry learns. */
  S.relay_silent = 0;
  run_until(&S, gave_up + cfg.unavailable_retry_ms, NULL);
  cr_assert_gt(S.sends, 0, "no retry after unavailable_retry_ms");
  cr_assert_eq(S.first_open_ms, gave_up + cfg.unavailable_retry_ms);
  run_until(&S, S.now + HOUR, finished);
  cr_assert_eq(S.ka.state, TERN_KA_LEARNED);
  cr_assert_lt(interval(&S), 60 * SEC);
  cr_assert_geq(interval(&S), 42 * SEC);
  sim_free(&S);
}

Test(kalearn, a_relay_still_silent_at_the_retry_is_unavailable_again) {
  static sim S;
  tern__ka_config cfg = default_cfg();
  sim_init(&S, &cfg, 60 * SEC, 4);
  S.relay_silent = 1;
  session_up(&S);
  run_until(&S, S.now + HOUR, unavailable);
  uint64_t first = S.now;
  run_until(&S, first + cfg.unavailable_retry_ms + 1, NULL);
  cr_assert_eq(S.ka.state, TERN_KA_LEARNING);
  run_until(&S, S.now + HOUR, unavailable);
  cr_assert_eq(S.ka.state, TERN_KA_UNAVAILABLE);
  /* Three hours of a dead probe service cost a round every 5 minutes. */
  reset_seen(&S);
  run_until(&S, S.now + 3 * HOUR, NULL);
  cr_assert_leq(S.rounds, 3 * HOUR / cfg.unavailable_retry_ms + 1);
  cr_assert_geq(S.rounds, 3 * HOUR / cfg.unavailable_retry_ms - 1);
  sim_free(&S);
}

/* ------------------------------------------------------ keepalive failure */

Test(kalearn, keepalive_failure_forgets_at_once_and_relearns) {
  static sim S;
  tern__ka_config cfg = default_cfg();
  sim_init(&S, &cfg, 120 * SEC, 5);
  learn(&S, HOUR);
  cr_assert_gt(interval(&S), 84 * SEC);
  (void)tern__ka_take_changed(&S.ka);
  /* The NAT now forgets after 45 s; the live link's keepalive at ~100 s
   * went unanswered and the client drops the session. */
  S.t_nat = 45 * SEC;
  tern__ka_keepalive_failed(&S.ka, S.now);
  cr_assert_eq(interval(&S), cfg.floor_ms / 5 * 3, "not the unproven interval at once");
  cr_assert(tern__ka_take_changed(&S.ka));
  cr_assert_eq(S.ka.state, TERN_KA_UNKNOWN);
  cr_assert_eq(S.ka.net.proven_ms, 0);
  cr_assert_eq(S.ka.net.failed_ms, 0);
  cr_assert_eq(S.ka.net.learned_at, 0);
  session_down(&S);
  run_until(&S, S.now + 5 * SEC, NULL);
  reset_seen(&S);
  learn(&S, HOUR);
  cr_assert_eq(S.ka.state, TERN_KA_LEARNED);
  cr_assert_geq(interval(&S), 45 * SEC * 7 / 10);
  cr_assert_lt(interval(&S), 45 * SEC);
  cr_assert_eq(S.sent_t[0], cfg.floor_ms, "the new search starts from the floor");
  sim_free(&S);
}

Test(kalearn, keepalive_failure_during_a_search_closes_its_probes) {
  static sim S;
  tern__ka_config cfg = default_cfg();
  sim_init(&S, &cfg, 300 * SEC, 6);
  session_up(&S);
  run_until(&S, S.now + 30 * SEC, NULL);
  cr_assert_eq(S.ka.state, TERN_KA_LEARNING);
  cr_assert_eq(S.ka.net.proven_ms, 25 * SEC);
  tern__ka_keepalive_failed(&S.ka, S.now);
  session_down(&S);
  run_until(&S, S.now + 1, NULL);
  cr_assert_eq(S.opens, S.closes, "%llu sockets left open", (unsigned long long)(S.opens - S.closes));
  cr_assert_eq(S.ka.net.proven_ms, 0, "what was proven before the failure is kept");
  cr_assert_eq(interval(&S), cfg.floor_ms / 5 * 3);
  session_up(&S);
  learn(&S, 2 * HOUR);
  cr_assert_geq(interval(&S), 210 * SEC);
  cr_assert_lt(interval(&S), 300 * SEC);
  sim_free(&S);
}

/* ------------------------------------------------------------ reprobe */

/* Learns on t_nat, lets a reprobe age pass with the session down, sets
 * the NAT to t_after and starts a session. */
static void learn_then_reprobe(sim *S, uint32_t t_nat, uint32_t t_after, uint64_t seed) {
  tern__ka_config cfg = default_cfg();
  sim_init(S, &cfg, t_nat, seed);
  learn(S, 2 * HOUR);
  session_down(S);
  /* Before the reprobe age, a new session does not probe. */
  S->now += cfg.reprobe_ms / 2;
  session_up(S);
  reset_seen(S);
  run_until(S, S->now + HOUR, NULL);
  cr_assert_eq(S->sends, 0, "reprobed before reprobe_ms");
  session_down(S);
  S->now += cfg.reprobe_ms / 2 + 1;
  S->t_nat = t_after;
  reset_seen(S);
}

Test(kalearn, reprobe_tests_the_old_value_first) {
  static sim S;
  learn_then_reprobe(&S, 120 * SEC, 120 * SEC, 7);
  uint32_t proven = S.ka.net.proven_ms, iv = interval(&S);
  uint64_t learned_at = S.ka.net.learned_at;
  cr_assert(tern__ka_wants_key(&S.ka, S.now, wall(&S)));
  session_up(&S);
  run_until(&S, S.now + 1, NULL);
  cr_assert_eq(S.ka.state, TERN_KA_LEARNING);
  cr_assert_eq(interval(&S), iv, "the old interval stays in force while it is tested");
  cr_assert_geq(S.nsent_t, 1);
  cr_assert_eq(S.sent_t[0], proven, "first probe T %u, want the old proven %u", S.sent_t[0], proven);
  run_until(&S, S.now + 2 * HOUR, finished);
  cr_assert_eq(S.ka.state, TERN_KA_LEARNED);
  cr_assert_geq(interval(&S), iv, "an unchanged NAT ended lower");
  cr_assert_lt(interval(&S), 120 * SEC);
  cr_assert_gt(S.ka.net.learned_at, learned_at);
  sim_free(&S);
}

Test(kalearn, reprobe_finds_a_stricter_nat) {
  const uint32_t after[] = {60 * SEC, 30 * SEC, 12 * SEC};
  for (size_t i = 0; i < 3; i++) {
    static sim S;
    learn_then_reprobe(&S, 300 * SEC, after[i], 8 + i);
    session_up(&S);
    run_until(&S, S.now + 2 * HOUR, finished);
    cr_assert_eq(S.ka.state, TERN_KA_LEARNED);
    cr_assert_leq(S.ka.net.proven_ms, after[i]);
    cr_assert_lt(interval(&S), after[i], "interval %u ms on a NAT of %u ms", interval(&S), after[i]);
    cr_assert_geq(interval(&S), after[i] * 7 / 10);
    sim_free(&S);
  }
}

Test(kalearn, reprobe_finds_a_more_generous_nat) {
  static sim S;
  learn_then_reprobe(&S, 60 * SEC, 300 * SEC, 11);
  session_up(&S);
  run_until(&S, S.now + 2 * HOUR, finished);
  cr_assert_eq(S.ka.state, TERN_KA_LEARNED);
  cr_assert_geq(interval(&S), 210 * SEC);
  cr_assert_lt(interval(&S), 300 * SEC);
  sim_free(&S);
}

/* A network found bad keeps its short interval while it is tested again:
 * nothing learned says that a longer one is safe. */
Test(kalearn, reprobe_of_a_bad_network_keeps_the_bad_interval_until_better_is_proven) {
  const uint32_t after[] = {8 * SEC, 30 * SEC};
  for (size_t i = 0; i < 2; i++) {
    static sim S;
    tern__ka_config cfg = default_cfg();
    learn_then_reprobe(&S, 8 * SEC, after[i], 12 + i);
    cr_assert_eq(S.ka.state, TERN_KA_BAD);
    cr_assert(tern__ka_wants_key(&S.ka, S.now, wall(&S)), "a bad network is never tested again");
    session_up(&S);
    step(&S);
    for (uint64_t end = S.now + 2 * HOUR; !finished(&S) && S.now < end;) {
      S.now = next_event(&S) > end ? end : next_event(&S);
      step(&S);
      if (!S.ka.net.proven_ms)
        cr_assert_leq(interval(&S), cfg.min_ms / 2, "T_nat %u ms: interval %u ms with nothing proven",
                      after[i], interval(&S));
    }
    cr_assert(finished(&S));
    if (after[i] < cfg.min_ms) {
      cr_assert_eq(S.ka.state, TERN_KA_BAD);
    } else {
      cr_assert_eq(S.ka.state, TERN_KA_LEARNED);
      cr_assert_lt(interval(&S), after[i]);
      cr_assert_geq(interval(&S), after[i] * 7 / 10);
    }
    sim_free(&S);
  }
}

/* --------------------------------------------------------- foreground */

Test(kalearn, foreground_caps_the_interval) {
  static sim S;
  tern__ka_config cfg = default_cfg();
  sim_init(&S, &cfg, 300 * SEC, 14);
  /* Nothing known yet: 15 s is below the cap. */
  tern__ka_set_foreground(&S.ka, 1);
  cr_assert_eq(interval(&S), cfg.floor_ms / 5 * 3);
  tern__ka_set_foreground(&S.ka, 0);
  learn(&S, HOUR);
  uint32_t bg = interval(&S);
  cr_assert_gt(bg, cfg.foreground_ms);
  (void)tern__ka_take_changed(&S.ka);
  tern__ka_set_foreground(&S.ka, 1);
  cr_assert_eq(interval(&S), cfg.foreground_ms);
  cr_assert(tern__ka_take_changed(&S.ka), "the shell was not told");
  tern__ka_set_foreground(&S.ka, 1);
  cr_assert_not(tern__ka_take_changed(&S.ka), "no change, yet told");
  tern__ka_set_foreground(&S.ka, 0);
  cr_assert_eq(interval(&S), bg);
  cr_assert(tern__ka_take_changed(&S.ka));
  sim_free(&S);

  /* A learned interval below the cap is not raised to it. */
  sim_init(&S, &cfg, 20 * SEC, 15);
  learn(&S, HOUR);
  bg = interval(&S);
  (void)tern__ka_take_changed(&S.ka);
  tern__ka_set_foreground(&S.ka, 1);
  cr_assert_eq(interval(&S), bg);
  cr_assert_not(tern__ka_take_changed(&S.ka));
  sim_free(&S);
}

/* ------------------------------------------------------ off and fixed */

Test(kalearn, off_and_fixed_never_probe) {
  for (int mode = 0; mode < 2; mode++) {
    static sim S;
    tern__ka_config cfg = default_cfg();
    if (mode == 0) cfg.off = 1;
    else cfg.fixed_ms = 25 * SEC;
    sim_init(&S, &cfg, 20 * SEC, 16);
    uint32_t want = mode == 0 ? 0 : 25 * SEC;
    int state = mode == 0 ? TERN_KA_OFF : TERN_KA_FIXED;
    cr_assert_eq(S.ka.state, state);
    cr_assert_eq(interval(&S), want);
    cr_assert_not(tern__ka_wants_key(&S.ka, S.now, wall(&S)));
    session_up(&S);
    run_until(&S, S.now + 3 * HOUR, NULL);
    /* Even a key handed over unasked, a failure, a day, or a network
     * change start nothing. */
    give_key(&S);
    tern__ka_keepalive_failed(&S.ka, S.now);
    S.now += DAY;
    tern__ka_net known = {.proven_ms = 100 * SEC, .failed_ms = 0, .learned_at = 0};
    tern__ka_set_network(&S.ka, &known, S.now);
    run_until(&S, S.now + HOUR, NULL);
    cr_assert_eq(S.opens + S.sends, 0, "mode %d probed", mode);
    cr_assert_eq(S.ka.state, state);
    cr_assert_eq(interval(&S), want);
    tern__ka_set_foreground(&S.ka, 1);
    cr_assert_eq(interval(&S), want, "mode %d: foreground changed %u", mode, interval(&S));
    cr_assert_eq(tern__ka_timeout(&S.ka, S.now), -1);
    sim_free(&S);
  }
}

/* ----------------------------------------------------- stored facts */

static void switch_network(sim *S, const tern__ka_net *known) {
  session_down(S);
  tern__ka_set_network(&S->ka, known, S->now);
}

Test(kalearn, fresh_stored_facts_are_used_without_probing) {
  static sim S;
  tern__ka_config cfg = default_cfg();
  sim_init(&S, &cfg, 120 * SEC, 17);
  tern__ka_net learned = {.proven_ms = 100 * SEC, .failed_ms = 105 * SEC, .learned_at = wall(&S) - HOUR};
  switch_network(&S, &learned);
  cr_assert_eq(S.ka.state, TERN_KA_LEARNED);
  cr_assert_eq(interval(&S), 90 * SEC);
  session_up(&S);
  run_until(&S, S.now + 3 * HOUR, NULL);
  cr_assert_eq(S.opens + S.sends, 0);
  cr_assert_eq(S.key_gen, 0, "a probe key was asked for");

  tern__ka_net bad = {.proven_ms = 0, .failed_ms = 10 * SEC, .learned_at = wall(&S) - HOUR};
  switch_network(&S, &bad);
  cr_assert_eq(S.ka.state, TERN_KA_BAD);
  cr_assert_eq(interval(&S), cfg.min_ms / 2);
  session_up(&S);
  run_until(&S, S.now + 3 * HOUR, NULL);
  cr_assert_eq(S.opens + S.sends, 0);
  sim_free(&S);
}

Test(kalearn, stale_stored_facts_are_tested_again) {
  static sim S;
  tern__ka_config cfg = default_cfg();
  sim_init(&S, &cfg, 120 * SEC, 18);
  tern__ka_net old = {.proven_ms = 100 * SEC, .failed_ms = 105 * SEC,
                      .learned_at = wall(&S) - cfg.reprobe_ms - 1};
  switch_network(&S, &old);
  cr_assert_eq(interval(&S), 90 * SEC);
  session_up(&S);
  run_until(&S, S.now + 1, NULL);
  cr_assert_eq(S.sent_t[0], 100 * SEC);
  run_until(&S, S.now + 2 * HOUR, finished);
  cr_assert_eq(S.ka.state, TERN_KA_LEARNED);
  cr_assert_geq(interval(&S), 84 * SEC);
  cr_assert_lt(interval(&S), 120 * SEC);
  sim_free(&S);
}

Test(kalearn, a_search_cut_short_resumes_from_its_bounds) {
  static sim S;
  tern__ka_config cfg = default_cfg();
  sim_init(&S, &cfg, 120 * SEC, 19);
  tern__ka_net partial = {.proven_ms = 50 * SEC, .failed_ms = 0, .learned_at = 0};
  switch_network(&S, &partial);
  cr_assert_eq(S.ka.state, TERN_KA_UNKNOWN);
  cr_assert_eq(interval(&S), 45 * SEC, "what is proven counts before the search ends");
  session_up(&S);
  run_until(&S, S.now + 1, NULL);
  cr_assert_geq(S.nsent_t, 1);
  for (size_t i = 0; i < S.nsent_t; i++)
    cr_assert_gt(S.sent_t[i], 50 * SEC, "probe of %u ms, below what is proven", S.sent_t[i]);
  run_until(&S, S.now + 2 * HOUR, finished);
  cr_assert_eq(S.ka.state, TERN_KA_LEARNED);
  cr_assert_geq(interval(&S), 84 * SEC);
  cr_assert_lt(interval(&S), 120 * SEC);

  tern__ka_net bounded = {.proven_ms = 50 * SEC, .failed_ms = 200 * SEC, .learned_at = 0};
  switch_network(&S, &bounded);
  reset_seen(&S);
  session_up(&S);
  run_until(&S, S.now + 1, NULL);
  cr_assert_eq(S.nsent_t, TERN__KA_SLOTS);
  for (size_t i = 0; i < S.nsent_t; i++)
    cr_assert(S.sent_t[i] > 50 * SEC && S.sent_t[i] < 200 * SEC, "probe of %u ms", S.sent_t[i]);
  run_until(&S, S.now + 2 * HOUR, finished);
  cr_assert_eq(S.ka.state, TERN_KA_LEARNED);
  cr_assert_lt(interval(&S), 120 * SEC);
  sim_free(&S);
}

Test(kalearn, a_network_switch_abandons_the_probes) {
  static sim S;
  tern__ka_config cfg = default_cfg();
  sim_init(&S, &cfg, 300 * SEC, 20);
  session_up(&S);
  run_until(&S, S.now + 30 * SEC, NULL);
  cr_assert_eq(S.ka.state, TERN_KA_LEARNING);
  cr_assert_gt(S.opens, S.closes);
  switch_network(&S, NULL);
  run_until(&S, S.now + 1, NULL);
  cr_assert_eq(S.opens, S.closes, "probe sockets of the old network left open");
  cr_assert_eq(S.ka.net.proven_ms, 0, "the old network's facts followed to the new one");
  cr_assert_eq(S.ka.state, TERN_KA_UNKNOWN);
  sim_free(&S);
}

/* ----------------------------------------------------- session churn */

Test(kalearn, session_down_abandons_probes_and_they_resume_with_a_new_key) {
  static sim S;
  tern__ka_config cfg = default_cfg();
  sim_init(&S, &cfg, 300 * SEC, 21);
  session_up(&S);
  run_until(&S, S.now + 30 * SEC, NULL);
  cr_assert_eq(S.ka.state, TERN_KA_LEARNING);
  uint32_t proven = S.ka.net.proven_ms;
  cr_assert_eq(proven, 25 * SEC);
  uint8_t old_gen = S.key_gen;
  session_down(&S);
  cr_assert_neq(S.ka.state, TERN_KA_LEARNING);
  run_until(&S, S.now + 1, NULL);
  cr_assert_eq(S.opens, S.closes, "a CLOSE is owed for every OPEN");
  cr_assert_eq(S.ka.net.proven_ms, proven, "what was proven is kept");
  /* Down for ten minutes: nothing is sent. */
  reset_seen(&S);
  run_until(&S, S.now + 10 * MIN, NULL);
  cr_assert_eq(S.sends, 0);
  /* Up again: a new key, and the search goes on from what it knew. */
  session_up(&S);
  run_until(&S, S.now + 1, NULL);
  cr_assert_eq(S.key_gen, old_gen + 1);
  cr_assert_gt(S.sends, 0);
  for (size_t i = 0; i < S.nsent_t; i++) cr_assert_gt(S.sent_t[i], proven);
  run_until(&S, S.now + 2 * HOUR, finished);
  cr_assert_eq(S.sends_old_key, 0, "a REQUEST went out under a dead key");
  cr_assert_eq(S.ka.state, TERN_KA_LEARNED);
  cr_assert_geq(interval(&S), 210 * SEC);
  cr_assert_lt(interval(&S), 300 * SEC);
  sim_free(&S);
}

/* Sessions that keep dropping (a flaky link) every 90 s: the search
 * still ends, safely, and never probes under a dead key. (A session must
 * outlive a probe for the probe to conclude: its key dies with it.) */
Test(kalearn, a_flapping_session_still_learns_safely) {
  static sim S;
  tern__ka_config cfg = default_cfg();
  sim_init(&S, &cfg, 45 * SEC, 22);
  session_up(&S);
  uint64_t end = S.now + 4 * HOUR;
  while (!finished(&S) && S.now < end) {
    run_until(&S, S.now + 90 * SEC, finished);
    if (finished(&S)) break;
    session_down(&S);
    run_until(&S, S.now + 5 * SEC, NULL);
    cr_assert_eq(S.opens, S.closes);
    session_up(&S);
  }
  cr_assert(finished(&S));
  cr_assert_eq(S.sends_old_key, 0);
  cr_assert_lt(interval(&S), 45 * SEC);
  printf("kalearn: flapping session (90 s up, 5 s down), T_nat 45 s: state %d, interval %.1f s after "
         "%u sessions\n", S.ka.state, interval(&S) / 1000.0, S.key_gen);
  sim_free(&S);
}

/* The relay gave no probe key when asked (an older relay, or one that
 * does not answer probes): unavailable, asked again after the retry time. */
Test(kalearn, no_key_is_unavailable_until_the_retry) {
  static sim S;
  tern__ka_config cfg = default_cfg();
  sim_init(&S, &cfg, 60 * SEC, 23);
  cr_assert(tern__ka_wants_key(&S.ka, S.now, wall(&S)));
  (void)tern__ka_take_changed(&S.ka);
  tern__ka_no_key(&S.ka, S.now);
  cr_assert_eq(S.ka.state, TERN_KA_UNAVAILABLE);
  cr_assert(tern__ka_take_changed(&S.ka));
  cr_assert_eq(interval(&S), cfg.floor_ms / 5 * 3);
  cr_assert_not(tern__ka_wants_key(&S.ka, S.now + cfg.unavailable_retry_ms - 1, wall(&S)));
  cr_assert(tern__ka_wants_key(&S.ka, S.now + cfg.unavailable_retry_ms, wall(&S)));
  /* At the retry, a key that does come starts the search. */
  S.now += cfg.unavailable_retry_ms;
  learn(&S, HOUR);
  cr_assert_eq(S.ka.state, TERN_KA_LEARNED);
  cr_assert_lt(interval(&S), 60 * SEC);
  cr_assert_geq(interval(&S), 42 * SEC);
  sim_free(&S);
}

/* A session that outlives the reprobe age reprobes without reconnecting:
 * the check runs at every tick, which the shell makes at least once per
 * keepalive interval. */
Test(kalearn, a_long_session_reprobes_without_reconnecting) {
  static sim S;
  tern__ka_config cfg = default_cfg();
  sim_init(&S, &cfg, 120 * SEC, 21);
  learn(&S, 2 * HOUR);
  uint64_t learned_at = S.ka.net.learned_at;
  uint32_t iv = interval(&S);
  reset_seen(&S);
  run_until(&S, S.now + cfg.reprobe_ms / 2, NULL);
  cr_assert_eq(S.sends, 0, "reprobed before reprobe_ms");
  /* The NAT became stricter meanwhile; the session has stayed up. */
  S.t_nat = 40 * SEC;
  run_until(&S, S.now + cfg.reprobe_ms / 2 + MIN, NULL);
  cr_assert_gt(S.sends, 0, "a day-old value was not probed again in a live session");
  cr_assert_eq(interval(&S), iv, "the old interval stays in force while it is tested");
  run_until(&S, S.now + 2 * HOUR, finished);
  cr_assert(finished(&S));
  cr_assert_gt(S.ka.net.learned_at, learned_at);
  cr_assert_lt(interval(&S), 40 * SEC);
  cr_assert_geq(interval(&S), 28 * SEC);
  sim_free(&S);
}
