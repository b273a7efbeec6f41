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
  tern__path_keys keys;
  uint64_t in_ctr;      /* highest counter opened from the client */
  uint64_t out_ctr;     /* last counter sent */
  int has_cand;
  tern__addr cand;      /* where the last authentic CHALLENGE came from */
  uint64_t cand_rx, cand_tx; /* bytes from and to it (the 3x rule) */
  uint8_t chal[8];      /* the relay's challenge to it */
} mpath;

struct tern__mig {
  mpath *p;
  size_t n, cap;
  tern__mig_stats st;
};

int tern__mig_new(tern__mig **out) {
  *out = calloc(1, sizeof(**out));
  return *out ? 0 : TERN_ENOMEM;
}

void tern__mig_free(tern__mig *m) {
  if (!m) return;
  if (m->p) sodium_memzero(m->p, m->cap * sizeof(*m->p));
  free(m->p);
  free(m);
}

/* Sessions are few per second to add and look up next to everything else
 * a handshake costs; a linear scan keeps this simple and is bounded by the
 * relay's slots. */
static mpath *by_id(tern__mig *m, const uint8_t id[TERN__PATH_ID_BYTES]) {
  for (size_t i = 0; i < m->n; i++)
    if (m->p[i].used && sodium_memcmp(m->p[i].keys.id, id, TERN__PATH_ID_BYTES) == 0) return &m->p[i];
  return NULL;
}

int tern__mig_add(tern__mig *m, uint32_t handle, uint16_t gen, const tern__path_keys *keys) {
  if (by_id(m, keys->id)) return TERN_EEXIST;
  mpath *slot = NULL;
  for (size_t i = 0; i < m->n && !slot; i++)
    if (!m->p[i].used) slot = &m->p[i];
  if (!slot) {
    if (m->n == m->cap) {
      size_t nc = m->cap ? m->cap * 2 : 16;
      mpath *np = realloc(m->p, nc * sizeof(*np));
      if (!np) return TERN_ENOMEM;
      m->p = np;
      m->cap = nc;
    }
    slot = &m->p[m->n++];
  }
  memset(slot, 0, sizeof(*slot));
  slot->used = 1;
  slot->handle = handle;
  slot->gen = gen;
  slot->keys = *keys;
  return 0;
}

void tern__mig_remove(tern__mig *m, uint32_t handle, uint16_t gen) {
  for (size_t i = 0; i < m->n; i++)
    if (m->p[i].used && m->p[i].handle == handle && m->p[i].gen == gen)
      sodium_memzero(&m->p[i], sizeof(m->p[i]));
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
