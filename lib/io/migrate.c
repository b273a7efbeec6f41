/* The relay's migration table (migrate.h). */
#include "io/migrate.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "tern/tern.h"

typedef struct mpath {
  int used;
  uint32_t handle;
  uint16_t gen;
  int32_t next_id, next_h; /* chains of the id and handle indexes; -1 ends
                              (next_id links the free slots too) */
  tern__path_keys keys;
  uint64_t in_ctr;      /* highest counter opened from the client */
  uint64_t out_ctr;     /* last counter sent */
  int has_cand;
  tern__addr cand;      /* where the last authentic CHALLENGE came from */
  uint64_t cand_rx, cand_tx; /* bytes from and to it (the 3x rule) */
  uint8_t chal[8];      /* the relay's challenge to it */
} mpath;

/* Every session of a relay with tens of thousands of clients is here, and
 * a handshake adds one while a datagram names one by its id: both are
 * looked up through hash chains (ids through a keyed hash, since a client
 * picks what its datagrams name), not a scan. */
struct tern__mig {
  mpath *p;
  size_t n, cap;
  int32_t *by_id, *by_h; /* bucket heads, mask + 1 of each; -1: empty */
  uint32_t mask;
  int32_t free_head;     /* a slot once used, now free; -1: none */
  uint8_t hkey[crypto_shorthash_KEYBYTES];
  tern__mig_stats st;
};

int tern__mig_new(tern__mig **out) {
  *out = calloc(1, sizeof(**out));
  if (!*out) return TERN_ENOMEM;
  (*out)->free_head = -1;
  randombytes_buf((*out)->hkey, sizeof((*out)->hkey));
  return 0;
}

void tern__mig_free(tern__mig *m) {
  if (!m) return;
  if (m->p) sodium_memzero(m->p, m->cap * sizeof(*m->p));
  free(m->p);
  free(m->by_id);
  free(m->by_h);
  free(m);
}

static uint32_t id_bucket(const tern__mig *m, const uint8_t id[TERN__PATH_ID_BYTES]) {
  uint8_t h[crypto_shorthash_BYTES];
  crypto_shorthash(h, id, TERN__PATH_ID_BYTES, m->hkey);
  uint32_t v;
  memcpy(&v, h, sizeof(v));
  return v & m->mask;
}

static uint32_t h_bucket(const tern__mig *m, uint32_t handle) { return (handle * 2654435761u) & m->mask; }

static mpath *by_id(tern__mig *m, const uint8_t id[TERN__PATH_ID_BYTES]) {
  if (!m->by_id) return NULL;
  for (int32_t i = m->by_id[id_bucket(m, id)]; i >= 0; i = m->p[i].next_id)
    if (sodium_memcmp(m->p[i].keys.id, id, TERN__PATH_ID_BYTES) == 0) return &m->p[i];
  return NULL;
}

static void link_slot(tern__mig *m, int32_t i) {
  uint32_t b = id_bucket(m, m->p[i].keys.id), c = h_bucket(m, m->p[i].handle);
  m->p[i].next_id = m->by_id[b];
  m->by_id[b] = i;
  m->p[i].next_h = m->by_h[c];
  m->by_h[c] = i;
}

/* Grows the slots to `nc` and rebuilds both indexes (nc buckets each). */
static int grow(tern__mig *m, size_t nc) {
  mpath *np = realloc(m->p, nc * sizeof(*np));
  if (!np) return TERN_ENOMEM;
  m->p = np;
  m->cap = nc;
  int32_t *bi = malloc(nc * sizeof(*bi)), *bh = malloc(nc * sizeof(*bh));
  if (!bi || !bh) {
    free(bi);
    free(bh);
    return TERN_ENOMEM;
  }
  free(m->by_id);
  free(m->by_h);
  m->by_id = bi;
  m->by_h = bh;
  m->mask = (uint32_t)nc - 1;
  memset(bi, 0xff, nc * sizeof(*bi));
  memset(bh, 0xff, nc * sizeof(*bh));
  for (size_t i = 0; i < m->n; i++)
    if (m->p[i].used) link_slot(m, (int32_t)i);
  return 0;
}

int tern__mig_add(tern__mig *m, uint32_t handle, uint16_t gen, const tern__path_keys *keys) {
  if (by_id(m, keys->id)) return TERN_EEXIST;
  int32_t i = m->free_head;
  if (i >= 0) {
    m->free_head = m->p[i].next_id;
  } else {
    if (m->n == m->cap && grow(m, m->cap ? m->cap * 2 : 16) != 0) return TERN_ENOMEM;
    i = (int32_t)m->n++;
  }
  mpath *slot = &m->p[i];
  memset(slot, 0, sizeof(*slot));
  slot->used = 1;
  slot->handle = handle;
  slot->gen = gen;
  slot->keys = *keys;
  link_slot(m, i);
  return 0;
}

/* Takes slot i out of both chains, wipes it and puts it on the free list. */
static void unlink_slot(tern__mig *m, int32_t i) {
  int32_t *pp = &m->by_id[id_bucket(m, m->p[i].keys.id)];
  while (*pp != i) pp = &m->p[*pp].next_id;
  *pp = m->p[i].next_id;
  pp = &m->by_h[h_bucket(m, m->p[i].handle)];
  while (*pp != i) pp = &m->p[*pp].next_h;
  *pp = m->p[i].next_h;
  sodium_memzero(&m->p[i], sizeof(m->p[i]));
  m->p[i].next_id = m->free_head;
  m->free_head = i;
}

void tern__mig_remove(tern__mig *m, uint32_t handle, uint16_t gen) {
  if (!m->by_h) return;
  int32_t i = m->by_h[h_bucket(m, handle)];
  while (i >= 0) {
    int32_t next = m->p[i].next_h;
    if (m->p[i].handle == handle && m->p[i].gen == gen) unlink_slot(m, i);
    i = next;
  }
}

int tern__mig_input(tern__mig *m, const tern__addr *from, const uint8_t *data, size_t len,
                    const uint8_t rnd[8], uint8_t *out, size_t *out_len, uint32_t *handle,
                    uint16_t *gen) {
  *out_len = 0;
  tern__path_pkt in;
  mpath *s;
  if (tern__path_peek(data, len, &in) != 0 || in.type == TERN__PATH_RESPONSE ||
      !(s = by_id(m, in.id)) || tern__path_open(data, len, s->keys.c2s) != 0 ||
      in.counter <= s->in_ctr) {
    m->st.rejected++;
    return TERN__MIG_NONE;
  }
  s->in_ctr = in.counter;
  if (in.type == TERN__PATH_CHALLENGE) {
    m->st.challenges++;
    if (!s->has_cand || !tern__addr_equal(&s->cand, from)) {
      s->has_cand = 1;
      s->cand = *from;
      s->cand_rx = s->cand_tx = 0;
      memcpy(s->chal, rnd, 8);
    }
    s->cand_rx += len;
    if (s->cand_tx + TERN__PATH_BYTES > 3 * s->cand_rx) {
      m->st.over_budget++;
      return TERN__MIG_NONE;
    }
    tern__path_pkt r = {.type = TERN__PATH_RESPONSE, .counter = ++s->out_ctr};
    memcpy(r.id, s->keys.id, sizeof(r.id));
    memcpy(r.a, in.a, 8);
    memcpy(r.b, s->chal, 8);
    tern__path_write(&r, s->keys.s2c, out);
    *out_len = TERN__PATH_BYTES;
    s->cand_tx += TERN__PATH_BYTES;
    return TERN__MIG_ANSWER;
  }
  /* CONFIRM: from the candidate, echoing its challenge. */
  if (!s->has_cand || !tern__addr_equal(&s->cand, from) || sodium_memcmp(in.a, s->chal, 8) != 0) {
    m->st.rejected++;
    return TERN__MIG_NONE;
  }
  s->has_cand = 0;
  m->st.moves++;
  *handle = s->handle;
  *gen = s->gen;
  return TERN__MIG_MOVE;
}

void tern__mig_stats_get(const tern__mig *m, tern__mig_stats *st) { *st = m->st; }
