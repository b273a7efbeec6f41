/* The keepalive learner (kalearn.h; the algorithm is spec/keepalive.md's
 * "Search"). */
#include "client/kalearn.h"

#include <sodium.h>
#include <string.h>

#define ACK_WAIT_MS 1000   /* resend a REQUEST not acknowledged within this */
#define REQUEST_TRIES 4    /* REQUESTs per probe before it counts as lost */
#define GRACE_MS 2000      /* REPLY deadline: ACK + T + GRACE_MS + 2 RTT */
#define RTT_CAP_MS 5000

void tern__ka_config_default(tern__ka_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->floor_ms = 25000;
  cfg->ceiling_ms = 900000;
  cfg->min_ms = 10000;
  cfg->reprobe_ms = 86400000;
  cfg->foreground_ms = 60000;
  cfg->unavailable_retry_ms = 300000;
}

static int learning_enabled(const tern__ka *ka) { return !ka->cfg.off && !ka->cfg.fixed_ms; }

/* The precision at which a search stops: the gap between the largest
 * proven and the smallest failed T. */
static uint32_t precision(uint32_t proven) {
  uint32_t p = proven / 10;
  return p < 1000 ? 1000 : p;
}

/* 1 if the search has nothing left to find. */
static int search_done(const tern__ka *ka) {
  const tern__ka_net *n = &ka->net;
  if (ka->recheck) return 0;
  /* The ceiling bounds the search as a failure would: a REPLY credits the
   * silence the client saw, a little under T, so a probe at the ceiling
   * proves just short of it. Without this, that probe repeats forever. */
  if (n->proven_ms && n->proven_ms + precision(n->proven_ms) >= ka->cfg.ceiling_ms) return 1;
  if (n->failed_ms && n->failed_ms <= ka->cfg.min_ms) return 1; /* bad network */
  return n->failed_ms && n->proven_ms && n->failed_ms - n->proven_ms <= precision(n->proven_ms);
}

static int is_bad(const tern__ka *ka) {
  return ka->net.failed_ms && ka->net.failed_ms <= ka->cfg.min_ms && ka->net.proven_ms < ka->cfg.min_ms;
}

static int stale(const tern__ka *ka, uint64_t wall_ms) {
  return ka->net.learned_at && wall_ms >= ka->net.learned_at + ka->cfg.reprobe_ms;
}

static unsigned active_slots(const tern__ka *ka) {
  unsigned n = 0;
  for (unsigned i = 0; i < TERN__KA_SLOTS; i++) n += ka->slots[i].state != 0;
  return n;
}

static void set_state(tern__ka *ka, int state) {
  if (ka->state != state) ka->changed = 1;
  ka->state = state;
}

/* The state when no probe is running. */
static int resting_state(const tern__ka *ka) {
  if (ka->cfg.off) return TERN_KA_OFF;
  if (ka->cfg.fixed_ms) return TERN_KA_FIXED;
  if (ka->net.learned_at && search_done(ka)) return is_bad(ka) ? TERN_KA_BAD : TERN_KA_LEARNED;
  if (ka->retry_at_ms) return TERN_KA_UNAVAILABLE;
  return TERN_KA_UNKNOWN;
}

void tern__ka_init(tern__ka *ka, const tern__ka_config *cfg, uint64_t (*rand64)(void *ctx),
                   void *rand_ctx) {
  memset(ka, 0, sizeof(*ka));
  ka->cfg = *cfg;
  if (ka->cfg.min_ms < 1000) ka->cfg.min_ms = 1000;
  if (ka->cfg.floor_ms < ka->cfg.min_ms) ka->cfg.floor_ms = ka->cfg.min_ms;
  if (ka->cfg.ceiling_ms < ka->cfg.floor_ms) ka->cfg.ceiling_ms = ka->cfg.floor_ms;
  ka->rand64 = rand64;
  ka->rand_ctx = rand_ctx;
  ka->foreground = 0;
  ka->state = resting_state(ka);
}

static void free_slot(tern__ka *ka, unsigned i) {
  tern__ka_slot *s = &ka->slots[i];
  unsigned bit = 1u << i;
  ka->open_pending &= ~bit;
  ka->send_pending &= ~bit;
  if (s->open) ka->close_pending |= bit;
  memset(s, 0, sizeof(*s));
}

static void abandon_all(tern__ka *ka) {
  for (unsigned i = 0; i < TERN__KA_SLOTS; i++)
    if (ka->slots[i].state) free_slot(ka, i);
}

void tern__ka_set_network(tern__ka *ka, const tern__ka_net *known, uint64_t now_ms) {
  (void)now_ms;
  abandon_all(ka);
  sodium_memzero(ka->key, sizeof(ka->key));
  ka->have_key = 0;
  ka->recheck = 0;
  ka->retry_at_ms = 0;
  ka->learn_started_ms = 0;
  if (known) ka->net = *known;
  else memset(&ka->net, 0, sizeof(ka->net));
  ka->changed = 1;
  ka->state = resting_state(ka);
}

static uint32_t background_interval(const tern__ka *ka) {
  if (ka->cfg.off) return 0;
  if (ka->cfg.fixed_ms) return ka->cfg.fixed_ms;
  uint32_t p = ka->net.proven_ms;
  if (p) return p - precision(p) > 1000 ? p - precision(p) : 1000;
  if (is_bad(ka)) return ka->cfg.min_ms / 2;
  /* Nothing proven: a conservative interval, well below the floor, and
   * below half of anything seen to fail. */
  uint32_t u = ka->cfg.floor_ms / 5 * 3;
  if (ka->net.failed_ms && ka->net.failed_ms / 2 < u) u = ka->net.failed_ms / 2;
  return u < 1000 ? 1000 : u;
}

uint32_t tern__ka_interval(const tern__ka *ka) {
  uint32_t bg = background_interval(ka);
  if (ka->foreground && bg && ka->cfg.foreground_ms && ka->cfg.foreground_ms < bg)
    return ka->cfg.foreground_ms;
  return bg;
}

void tern__ka_set_foreground(tern__ka *ka, int foreground) {
  uint32_t before = tern__ka_interval(ka);
  ka->foreground = foreground != 0;
  if (tern__ka_interval(ka) != before) ka->changed = 1;
}

int tern__ka_wants_key(const tern__ka *ka, uint64_t now_ms, uint64_t wall_ms) {
  if (!learning_enabled(ka) || ka->have_key) return 0;
  if (ka->retry_at_ms && now_ms < ka->retry_at_ms) return 0;
  return !ka->net.learned_at || !search_done(ka) || stale(ka, wall_ms);
}

static void finish(tern__ka *ka, uint64_t now_ms, uint64_t wall_ms) {
  ka->net.learned_at = wall_ms ? wall_ms : 1;
  if (ka->learn_started_ms) ka->learn_ms = now_ms - ka->learn_started_ms;
  ka->learn_started_ms = 0;
  ka->changed = 1;
  set_state(ka, resting_state(ka));
}

static int has_point(const uint32_t *pts, unsigned n, uint32_t t) {
  for (unsigned i = 0; i < n; i++)
    if (pts[i] == t) return 1;
  return 0;
}

/* The T values of the next round, strictly between proven and failed
 * (failed 0: up to the ceiling), at least min_ms, rounded to 100 ms. */
static unsigned plan_points(const tern__ka *ka, uint32_t *pts) {
  const tern__ka_net *n = &ka->net;
  uint32_t lo = n->proven_ms, hi = n->failed_ms, ceil = ka->cfg.ceiling_ms;
  unsigned k = 0;
  if (ka->recheck) {
    /* Reprobing after reprobe_ms: is the old value still true, and is more
     * true now? A bad network (nothing proven) tests min_ms, the least
     * that would make it good, and the doublings from the floor. */
    uint32_t first = lo ? lo : ka->cfg.min_ms;
    pts[k++] = first;
    for (uint64_t t = lo ? (uint64_t)lo * 2 : ka->cfg.floor_ms; k < TERN__KA_SLOTS; t *= 2) {
      if (t > ceil) t = ceil;
      if (t > first && !has_point(pts, k, (uint32_t)t)) pts[k++] = (uint32_t)t;
      if (t >= ceil) break;
    }
    return k;
  }
  if (!hi) {
    /* No upper bound yet: double from the floor (or from what is proven). */
    uint64_t t = lo ? (uint64_t)lo * 2 : ka->cfg.floor_ms;
    for (; k < TERN__KA_SLOTS; t *= 2) {
      if (t > ceil) t = ceil;
      if (t > lo && !has_point(pts, k, (uint32_t)t)) pts[k++] = (uint32_t)t;
      if (t >= ceil) break;
    }
    return k;
  }
  /* Both bounds: evenly spaced inside. With nothing proven yet, the lowest
   * point is min_ms itself, so that a bad network is found in one round. */
  uint32_t base = lo ? lo : ka->cfg.min_ms;
  if (hi <= base) return 0;
  unsigned parts = lo ? TERN__KA_SLOTS + 1 : TERN__KA_SLOTS;
  for (unsigned i = lo ? 1 : 0; i < parts && k < TERN__KA_SLOTS; i++) {
    uint32_t t = base + (uint32_t)((uint64_t)(hi - base) * i / parts);
    t = t / 100 * 100;
    if (t < ka->cfg.min_ms) t = ka->cfg.min_ms;
    if (t > lo && t < hi && !has_point(pts, k, t)) pts[k++] = t;
  }
  return k;
}

static void plan_round(tern__ka *ka, uint64_t now_ms, uint64_t wall_ms) {
  if (!ka->have_key || active_slots(ka)) return;
  if (ka->retry_at_ms && now_ms < ka->retry_at_ms) return;
  ka->retry_at_ms = 0;
  if (search_done(ka)) {
    if (ka->learn_started_ms || !ka->net.learned_at) finish(ka, now_ms, wall_ms);
    return;
  }
  uint32_t pts[TERN__KA_SLOTS];
  unsigned n = plan_points(ka, pts);
  if (n == 0) { /* nothing left to try: the bounds are as tight as they get */
    finish(ka, now_ms, wall_ms);
    return;
  }
  if (!ka->learn_started_ms) ka->learn_started_ms = now_ms ? now_ms : 1;
  ka->round_lost = ka->round_answered = 0;
  for (unsigned i = 0; i < n; i++) {
    tern__ka_slot *s = &ka->slots[i];
    memset(s, 0, sizeof(*s));
    s->state = 1;
    s->t_ms = pts[i];
    s->nonce = ka->rand64(ka->rand_ctx) | 1; /* never 0 */
    s->deadline_ms = now_ms;
    ka->open_pending |= 1u << i;
    ka->send_pending |= 1u << i;
    ka->stats.probes++;
  }
  set_state(ka, TERN_KA_LEARNING);
}

/* What was learned is older than reprobe_ms: relearn. Keep the old value
 * live, test it again, open the top. A bad network keeps its failure, and
 * so its short interval, until min_ms is proven: clearing it would make the
 * interval the unproven one, three times what the network was seen to
 * fail. */
static void recheck_if_stale(tern__ka *ka, uint64_t now_ms, uint64_t wall_ms) {
  /* Not while a search runs: it is the relearning, and ends by setting a
   * fresh learned_at. */
  if (ka->learn_started_ms || !ka->net.learned_at || !search_done(ka) || !stale(ka, wall_ms))
    return;
  ka->recheck = 1;
  if (ka->net.proven_ms) ka->net.failed_ms = 0;
  ka->learn_started_ms = now_ms ? now_ms : 1;
}

void tern__ka_set_key(tern__ka *ka, const uint8_t id[TERN__PROBE_ID_BYTES],
                      const uint8_t key[TERN__PROBE_KEY_BYTES], uint64_t now_ms, uint64_t wall_ms) {
  if (!learning_enabled(ka)) return;
  abandon_all(ka);
  memcpy(ka->id, id, TERN__PROBE_ID_BYTES);
  memcpy(ka->key, key, TERN__PROBE_KEY_BYTES);
  ka->have_key = 1;
  recheck_if_stale(ka, now_ms, wall_ms);
  plan_round(ka, now_ms, wall_ms);
}

void tern__ka_no_key(tern__ka *ka, uint64_t now_ms) {
  if (!learning_enabled(ka) || ka->have_key) return;
  ka->retry_at_ms = now_ms + ka->cfg.unavailable_retry_ms;
  ka->learn_started_ms = 0;
  set_state(ka, TERN_KA_UNAVAILABLE);
}

void tern__ka_session_down(tern__ka *ka) {
  abandon_all(ka);
  sodium_memzero(ka->key, sizeof(ka->key));
  ka->have_key = 0;
  if (ka->state == TERN_KA_LEARNING) set_state(ka, resting_state(ka));
}

void tern__ka_keepalive_failed(tern__ka *ka, uint64_t now_ms) {
  (void)now_ms;
  if (!learning_enabled(ka)) return;
  abandon_all(ka);
  memset(&ka->net, 0, sizeof(ka->net));
  ka->recheck = 0;
  ka->retry_at_ms = 0;
  ka->learn_started_ms = 0;
  ka->changed = 1;
  set_state(ka, resting_state(ka));
}

/* A probe at T went unanswered: T and everything above it fails. */
static void record_failure(tern__ka *ka, uint32_t t) {
  tern__ka_net *n = &ka->net;
  if (!n->failed_ms || t < n->failed_ms) n->failed_ms = t;
  if (n->proven_ms >= t) n->proven_ms = 0; /* stale or contradicted: trust the failure */
  ka->recheck = 0;
  ka->changed = 1;
  for (unsigned i = 0; i < TERN__KA_SLOTS; i++)
    if (ka->slots[i].state && ka->slots[i].t_ms >= t) free_slot(ka, i);
}

static void record_success(tern__ka *ka, uint32_t t) {
  tern__ka_net *n = &ka->net;
  if (t > n->proven_ms) n->proven_ms = t;
  if (n->failed_ms && n->failed_ms <= t) n->failed_ms = 0; /* contradicted */
  ka->recheck = 0;
  ka->changed = 1;
}

static uint32_t grace(const tern__ka_slot *s, uint64_t now_ms) {
  uint64_t rtt = now_ms - s->sent_ms;
  if (rtt > RTT_CAP_MS) rtt = RTT_CAP_MS;
  return GRACE_MS + 2 * (uint32_t)rtt;
}

void tern__ka_input(tern__ka *ka, unsigned slot, const uint8_t *data, size_t len, uint64_t now_ms,
                    uint64_t wall_ms) {
  if (slot >= TERN__KA_SLOTS || !ka->have_key) return;
  tern__ka_slot *s = &ka->slots[slot];
  tern__probe_pkt p;
  if (!s->state || tern__probe_parse(data, len, &p) != 0 ||
      memcmp(p.id, ka->id, TERN__PROBE_ID_BYTES) != 0 || p.nonce != s->nonce ||
      p.wait_ms != s->t_ms || tern__probe_verify(data, len, ka->key) != 0)
    return;
  ka->stats.datagrams_in++;
  if (p.type == TERN__PROBE_ACK) {
    /* The silence starts when the relay acknowledged (a resent REQUEST
     * restarts it there too). */
    if (s->state == 1) ka->round_answered++;
    s->deadline_ms = now_ms + s->t_ms + grace(s, now_ms);
    s->ack_ms = now_ms;
    s->state = 2;
  } else if (p.type == TERN__PROBE_REPLY) {
    ka->stats.proven++;
    if (s->state == 1) ka->round_answered++;
    /* Credit no more silence than the mapping saw: the last REQUEST also
     * refreshed it, even if it was lost after the NAT and a late ACK of an
     * earlier one started the relay's wait sooner. */
    uint64_t quiet_since = s->ack_ms > s->sent_ms ? s->ack_ms : s->sent_ms;
    uint32_t t = s->t_ms;
    if (now_ms - quiet_since < t) t = (uint32_t)(now_ms - quiet_since);
    free_slot(ka, slot);
    record_success(ka, t);
    plan_round(ka, now_ms, wall_ms);
  }
}

int tern__ka_timeout(const tern__ka *ka, uint64_t now_ms) {
  if (ka->open_pending || ka->send_pending || ka->close_pending) return 0;
  uint64_t best = UINT64_MAX;
  for (unsigned i = 0; i < TERN__KA_SLOTS; i++)
    if (ka->slots[i].state && ka->slots[i].deadline_ms < best) best = ka->slots[i].deadline_ms;
  if (ka->have_key && ka->retry_at_ms && ka->retry_at_ms < best) best = ka->retry_at_ms;
  if (best == UINT64_MAX) return -1;
  if (best <= now_ms) return 0;
  uint64_t d = best - now_ms;
  return d > 0x7fffffff ? 0x7fffffff : (int)d;
}

void tern__ka_tick(tern__ka *ka, uint64_t now_ms, uint64_t wall_ms) {
  for (unsigned i = 0; i < TERN__KA_SLOTS; i++) {
    tern__ka_slot *s = &ka->slots[i];
    if (!s->state || now_ms < s->deadline_ms || (ka->send_pending & (1u << i))) continue;
    if (s->state == 1) {
      if (s->tries < REQUEST_TRIES) {
        ka->send_pending |= 1u << i;
      } else {
        ka->stats.lost++;
        ka->round_lost++;
        free_slot(ka, i); /* no conclusion: the request or the path is lost */
      }
    } else {
      ka->stats.failed++;
      uint32_t t = s->t_ms;
      free_slot(ka, i);
      record_failure(ka, t);
    }
  }
  if (ka->have_key && !active_slots(ka)) {
    if (!ka->retry_at_ms) recheck_if_stale(ka, now_ms, wall_ms);
    if (ka->round_lost && !ka->round_answered && !ka->retry_at_ms) {
      /* Not one probe of the round was acknowledged: the relay does not
       * answer probes on this path. Try again later. */
      ka->round_lost = 0;
      ka->retry_at_ms = now_ms + ka->cfg.unavailable_retry_ms;
      ka->learn_started_ms = 0;
      set_state(ka, TERN_KA_UNAVAILABLE);
      return;
    }
    plan_round(ka, now_ms, wall_ms);
  }
}

int tern__ka_next_action(tern__ka *ka, uint64_t now_ms, tern__ka_action *a) {
  memset(a, 0, sizeof(*a));
  for (unsigned i = 0; i < TERN__KA_SLOTS; i++) {
    unsigned bit = 1u << i;
    if (ka->close_pending & bit) {
      ka->close_pending &= ~bit;
      a->type = TERN__KA_CLOSE;
      a->slot = i;
      return 1;
    }
  }
  for (unsigned i = 0; i < TERN__KA_SLOTS; i++) {
    unsigned bit = 1u << i;
    tern__ka_slot *s = &ka->slots[i];
    if (ka->open_pending & bit) {
      ka->open_pending &= ~bit;
      s->open = 1;
      a->type = TERN__KA_OPEN;
      a->slot = i;
      return 1;
    }
    if (ka->send_pending & bit) {
      ka->send_pending &= ~bit;
      tern__probe_pkt p = {.type = TERN__PROBE_REQUEST, .nonce = s->nonce, .wait_ms = s->t_ms};
      memcpy(p.id, ka->id, TERN__PROBE_ID_BYTES);
      a->len = tern__probe_write(&p, ka->key, ka->out, sizeof(ka->out));
      a->data = ka->out;
      a->type = TERN__KA_SEND;
      a->slot = i;
      s->tries++;
      s->sent_ms = now_ms;
      if (s->tries == 1) s->first_ms = now_ms;
      if (s->state == 1) s->deadline_ms = now_ms + ACK_WAIT_MS;
      ka->stats.datagrams_out++;
      return 1;
    }
  }
  return 0;
}

int tern__ka_take_changed(tern__ka *ka) {
  int c = ka->changed;
  ka->changed = 0;
  return c;
}
