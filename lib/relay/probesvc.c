/* The relay's probe service (probesvc.h, spec/keepalive.md). Plain arrays
 * scanned linearly: probes are rare (a few per client per day) and the
 * tables are bounded. */
#include "relay/probesvc.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "tern/tern.h"

#define RECENT TERN__PSVC_RECENT /* completed nonces remembered per key */
#define BUCKETS 256  /* source addresses tracked by the rate limiter */

typedef struct pkey {
  int used;
  uint64_t conn;
  uint8_t id[TERN__PROBE_ID_BYTES];
  uint8_t key[TERN__PROBE_KEY_BYTES];
  uint64_t recent[RECENT];
  unsigned recent_pos;  /* where the next completed nonce goes */
  unsigned recent_n;    /* how many of recent[] are nonces (any value, 0 too) */
} pkey;

typedef struct pending {
  int used;
  size_t key;          /* index into keys */
  uint64_t nonce;
  uint32_t wait_ms;
  tern__addr to;        /* where the reply goes */
  uint64_t due_ms;
} pending;

typedef struct bucket {
  tern__addr src;      /* source_of() of the addresses it limits */
  uint32_t tokens;
  uint64_t last_ms;    /* when tokens was last brought up to date */
  uint64_t seen_ms;    /* last request, for eviction */
} bucket;

struct tern__psvc {
  tern__psvc_config cfg;
  pkey *keys;
  /* Open-addressing index of keys by id, so that a datagram costs one
   * lookup however many sessions there are: slot + 1, 0 empty, TOMB
   * deleted. Ids are random, so their first bytes are the hash. */
  uint32_t *idx;
  size_t idx_mask, idx_tombs;
  pending *pend;
  size_t npend;
  bucket buckets[BUCKETS];
  size_t nbuckets;
  tern__psvc_stats stats;
};

void tern__psvc_config_default(tern__psvc_config *cfg) {
  cfg->max_keys = 4096;
  cfg->max_pending = 4096;
  cfg->per_key_pending = 8;
  cfg->per_ip_pending = 256;
  cfg->ip_burst = 64;
  cfg->ip_refill_ms = 100;
  cfg->min_wait_ms = 1000;
  cfg->max_wait_ms = 1200000;
}

int tern__psvc_new(tern__psvc **out, const tern__psvc_config *cfg) {
  *out = NULL;
  if (!cfg->max_keys || !cfg->max_pending || !cfg->ip_burst || !cfg->ip_refill_ms ||
      cfg->min_wait_ms > cfg->max_wait_ms)
    return TERN_EINVAL;
  tern__psvc *s = calloc(1, sizeof(*s));
  if (!s) return TERN_ENOMEM;
  s->cfg = *cfg;
  s->keys = calloc(cfg->max_keys, sizeof(*s->keys));
  s->pend = calloc(cfg->max_pending, sizeof(*s->pend));
  size_t n = 4;
  while (n < 2 * cfg->max_keys) n *= 2; /* at most half full */
  s->idx_mask = n - 1;
  s->idx = calloc(n, sizeof(*s->idx));
  if (!s->keys || !s->pend || !s->idx) {
    tern__psvc_free(s);
    return TERN_ENOMEM;
  }
  *out = s;
  return 0;
}

void tern__psvc_free(tern__psvc *s) {
  if (!s) return;
  if (s->keys) sodium_memzero(s->keys, s->cfg.max_keys * sizeof(*s->keys));
  free(s->keys);
  free(s->pend);
  free(s->idx);
  free(s);
}

#define TOMB UINT32_MAX

static size_t id_hash(const uint8_t id[TERN__PROBE_ID_BYTES]) {
  return (size_t)id[0] | (size_t)id[1] << 8 | (size_t)id[2] << 16 | (size_t)id[3] << 24;
}

static void idx_insert(tern__psvc *s, size_t slot) {
  for (size_t h = id_hash(s->keys[slot].id);; h++) {
    uint32_t *e = &s->idx[h & s->idx_mask];
    if (*e == 0 || *e == TOMB) {
      if (*e == TOMB) s->idx_tombs--;
      *e = (uint32_t)slot + 1;
      return;
    }
  }
}

/* Rebuilds the index without tombstones. */
static void idx_rebuild(tern__psvc *s) {
  memset(s->idx, 0, (s->idx_mask + 1) * sizeof(*s->idx));
  s->idx_tombs = 0;
  for (size_t i = 0; i < s->cfg.max_keys; i++)
    if (s->keys[i].used) idx_insert(s, i);
}

static void idx_remove(tern__psvc *s, size_t slot) {
  for (size_t h = id_hash(s->keys[slot].id);; h++) {
    uint32_t *e = &s->idx[h & s->idx_mask];
    if (*e == 0) return;
    if (*e == slot + 1) {
      *e = TOMB;
      /* Too many tombstones make misses walk far: start clean. */
      if (++s->idx_tombs > (s->idx_mask + 1) / 4) idx_rebuild(s);
      return;
    }
  }
}

static void drop_pending_of(tern__psvc *s, size_t k) {
  for (size_t i = 0; i < s->cfg.max_pending; i++)
    if (s->pend[i].used && s->pend[i].key == k) {
      s->pend[i].used = 0;
      s->npend--;
    }
}

int tern__psvc_add_key(tern__psvc *s, uint64_t conn, const uint8_t id[TERN__PROBE_ID_BYTES],
                       const uint8_t key[TERN__PROBE_KEY_BYTES]) {
  size_t slot = s->cfg.max_keys;
  for (size_t i = 0; i < s->cfg.max_keys; i++) {
    if (s->keys[i].used && s->keys[i].conn == conn) {
      drop_pending_of(s, i); /* probes under the old key die with it */
      slot = i;
      break;
    }
    if (!s->keys[i].used && slot == s->cfg.max_keys) slot = i;
  }
  if (slot == s->cfg.max_keys) return TERN_ERESOURCE;
  pkey *k = &s->keys[slot];
  if (k->used) idx_remove(s, slot);
  memset(k, 0, sizeof(*k));
  k->used = 1;
  k->conn = conn;
  memcpy(k->id, id, TERN__PROBE_ID_BYTES);
  memcpy(k->key, key, TERN__PROBE_KEY_BYTES);
  idx_insert(s, slot);
  return 0;
}

void tern__psvc_remove_key(tern__psvc *s, uint64_t conn) {
  for (size_t i = 0; i < s->cfg.max_keys; i++) {
    if (!s->keys[i].used || s->keys[i].conn != conn) continue;
    drop_pending_of(s, i);
    idx_remove(s, i);
    sodium_memzero(&s->keys[i], sizeof(s->keys[i]));
  }
}

/* The source a rate limit applies to: an IPv4 address, or an IPv6 /64
 * (what one host or one subscriber is given), without the port. */
static tern__addr source_of(const tern__addr *a) {
  tern__addr k = *a;
  k.port = 0;
  if (!tern__addr_is_v4(a)) memset(k.ip + 8, 0, 8);
  return k;
}

static int same_source(const tern__addr *a, const tern__addr *b) {
  tern__addr x = source_of(a), y = source_of(b);
  return tern__addr_equal(&x, &y);
}

/* Takes one request token from the source's bucket: 1 if allowed. */
static int take_token(tern__psvc *s, const tern__addr *from, uint64_t now) {
  bucket *b = NULL;
  tern__addr src = source_of(from);
  for (size_t i = 0; i < s->nbuckets; i++)
    if (tern__addr_equal(&s->buckets[i].src, &src)) {
      b = &s->buckets[i];
      break;
    }
  if (!b) {
    if (s->nbuckets < BUCKETS) {
      b = &s->buckets[s->nbuckets++];
    } else {
      /* Evict the address heard from least recently. An attacker cycling
       * through many addresses only gets a fresh bucket for each, which
       * the per-key and global caps still bound. */
      b = &s->buckets[0];
      for (size_t i = 1; i < BUCKETS; i++)
        if (s->buckets[i].seen_ms < b->seen_ms) b = &s->buckets[i];
    }
    b->src = src;
    b->tokens = s->cfg.ip_burst;
    b->last_ms = now;
  }
  b->seen_ms = now;
  if (now > b->last_ms) {
    uint64_t add = (now - b->last_ms) / s->cfg.ip_refill_ms;
    if (add >= s->cfg.ip_burst - b->tokens) {
      b->tokens = s->cfg.ip_burst;
      b->last_ms = now;
    } else {
      b->tokens += (uint32_t)add;
      b->last_ms += add * s->cfg.ip_refill_ms;
    }
  }
  if (b->tokens == 0) return 0;
  b->tokens--;
  return 1;
}

static pkey *find_key(tern__psvc *s, const uint8_t id[TERN__PROBE_ID_BYTES], size_t *index) {
  for (size_t h = id_hash(id), n = 0; n <= s->idx_mask; h++, n++) {
    uint32_t e = s->idx[h & s->idx_mask];
    if (e == 0) return NULL;
    if (e == TOMB) continue;
    pkey *k = &s->keys[e - 1];
    if (k->used && memcmp(k->id, id, TERN__PROBE_ID_BYTES) == 0) {
      *index = e - 1;
      return k;
    }
  }
  return NULL;
}

int tern__psvc_input(tern__psvc *s, const tern__addr *from, const uint8_t *data, size_t len,
                     uint64_t now_ms, uint8_t *answer, size_t cap, size_t *answer_len) {
  *answer_len = 0;
  if (!tern__probe_looks_like(data, len)) return 0;
  tern__probe_pkt p;
  size_t ki = 0;
  pkey *k = NULL;
  /* Only requests are for the relay; answers sent to it are noise. */
  if (tern__probe_parse(data, len, &p) != 0 || p.type != TERN__PROBE_REQUEST) {
    s->stats.rejected++;
    return 1;
  }
  /* Authenticate before charging the source's bucket: forged datagrams
   * from a spoofed address cannot use up that address's requests. */
  if (!(k = find_key(s, p.id, &ki)) || tern__probe_verify(data, len, k->key) != 0 ||
      p.wait_ms < s->cfg.min_wait_ms || p.wait_ms > s->cfg.max_wait_ms) {
    s->stats.rejected++;
    return 1;
  }
  for (unsigned i = 0; i < k->recent_n; i++)
    if (k->recent[i] == p.nonce) {
      s->stats.rejected++; /* answered already: a replay, or a late resend */
      return 1;
    }
  if (!take_token(s, from, now_ms)) {
    s->stats.limited++;
    return 1;
  }
  s->stats.requests++;
  /* A resend of a pending probe restarts its silence (the request itself
   * refreshed the mapping) and follows the sender's address. */
  pending *e = NULL, *free_slot = NULL;
  size_t per_key = 0, per_ip = 0;
  for (size_t i = 0; i < s->cfg.max_pending; i++) {
    pending *q = &s->pend[i];
    if (!q->used) {
      if (!free_slot) free_slot = q;
      continue;
    }
    if (q->key == ki && q->nonce == p.nonce) e = q;
    if (q->key == ki) per_key++;
    if (same_source(&q->to, from)) per_ip++;
  }
  pending *oldest = NULL;
  if (!e && per_key >= s->cfg.per_key_pending) {
    /* A client has at most per_key_pending probes out: one more means it
     * gave up on some (they outlived a failure that made them pointless).
     * Make room by forgetting its oldest; no one else holds the key. */
    for (size_t i = 0; i < s->cfg.max_pending; i++) {
      pending *q = &s->pend[i];
      if (q->used && q->key == ki && (!oldest || q->due_ms - q->wait_ms < oldest->due_ms - oldest->wait_ms))
        oldest = q;
    }
    if (oldest) {
      if (same_source(&oldest->to, from)) per_ip--;
      free_slot = oldest;
    }
  }
  if (!e) {
    /* Refused: nothing is replaced, so a request that cannot be taken
     * costs the client none of its pending probes. */
    if (!free_slot || per_ip >= s->cfg.per_ip_pending) {
      s->stats.limited++;
      return 1;
    }
    if (oldest) {
      oldest->used = 0;
      s->npend--;
    }
    e = free_slot;
    e->used = 1;
    e->key = ki;
    e->nonce = p.nonce;
    s->npend++;
  }
  e->wait_ms = p.wait_ms;
  e->to = *from;
  e->due_ms = now_ms + p.wait_ms;
  tern__probe_pkt a = p;
  a.type = TERN__PROBE_ACK;
  *answer_len = tern__probe_write(&a, k->key, answer, cap);
  if (*answer_len) s->stats.acks++;
  return 1;
}

int tern__psvc_next_reply(tern__psvc *s, uint64_t now_ms, tern__addr *to,
                          uint8_t *out, size_t cap, size_t *len) {
  *len = 0;
  for (size_t i = 0; i < s->cfg.max_pending; i++) {
    pending *q = &s->pend[i];
    if (!q->used || q->due_ms > now_ms) continue;
    pkey *k = &s->keys[q->key];
    tern__probe_pkt a = {.type = TERN__PROBE_REPLY, .nonce = q->nonce, .wait_ms = q->wait_ms};
    memcpy(a.id, k->id, TERN__PROBE_ID_BYTES);
    *len = tern__probe_write(&a, k->key, out, cap);
    *to = q->to;
    k->recent[k->recent_pos] = q->nonce;
    k->recent_pos = (k->recent_pos + 1) % RECENT;
    if (k->recent_n < RECENT) k->recent_n++;
    q->used = 0;
    s->npend--;
    if (*len == 0) continue; /* cap too small: the caller's bug; drop it */
    s->stats.replies++;
    return 1;
  }
  return 0;
}

int tern__psvc_timeout(const tern__psvc *s, uint64_t now_ms) {
  if (s->npend == 0) return -1;
  uint64_t best = UINT64_MAX;
  for (size_t i = 0; i < s->cfg.max_pending; i++)
    if (s->pend[i].used && s->pend[i].due_ms < best) best = s->pend[i].due_ms;
  if (best <= now_ms) return 0;
  uint64_t d = best - now_ms;
  return d > 0x7fffffff ? 0x7fffffff : (int)d;
}

size_t tern__psvc_pending(const tern__psvc *s) { return s->npend; }

void tern__psvc_get_stats(const tern__psvc *s, tern__psvc_stats *st) { *st = s->stats; }
