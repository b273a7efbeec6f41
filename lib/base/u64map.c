/* A map from 64-bit keys to pointers (see u64map.h). */
#include "base/u64map.h"

#include <stdlib.h>

#include "tern/tern.h"

struct tern__u64slot {
  uint64_t key; /* 0: empty */
  void *p;
};

/* Keys are mostly consecutive: a multiplicative hash spreads them over
 * the table's high bits. */
static size_t slot_of(const tern__u64map *m, uint64_t key) {
  return (size_t)((key * 0x9e3779b97f4a7c15ull) >> 32) & (m->cap - 1);
}

void tern__u64map_init(tern__u64map *m) {
  m->slots = NULL;
  m->cap = m->n = 0;
}

void tern__u64map_free(tern__u64map *m) {
  free(m->slots);
  tern__u64map_init(m);
}

static void place(tern__u64map *m, uint64_t key, void *p) {
  size_t i = slot_of(m, key);
  while (m->slots[i].key) i = (i + 1) & (m->cap - 1);
  m->slots[i].key = key;
  m->slots[i].p = p;
}

/* Keeps the load at most one half. */
static int grow(tern__u64map *m) {
  size_t cap = m->cap ? m->cap * 2 : 64;
  struct tern__u64slot *old = m->slots, *s = calloc(cap, sizeof(*s));
  if (!s) return TERN_ENOMEM;
  size_t oldcap = m->cap;
  m->slots = s;
  m->cap = cap;
  for (size_t i = 0; i < oldcap; i++)
    if (old[i].key) place(m, old[i].key, old[i].p);
  free(old);
  return 0;
}

int tern__u64map_put(tern__u64map *m, uint64_t key, void *p) {
  if ((m->n + 1) * 2 > m->cap && grow(m) < 0) return TERN_ENOMEM;
  place(m, key, p);
  m->n++;
  return 0;
}

void *tern__u64map_get(const tern__u64map *m, uint64_t key) {
  if (!m->n || !key) return NULL;
  for (size_t i = slot_of(m, key);; i = (i + 1) & (m->cap - 1)) {
    if (m->slots[i].key == key) return m->slots[i].p;
    if (!m->slots[i].key) return NULL;
  }
}

void tern__u64map_del(tern__u64map *m, uint64_t key) {
  if (!m->n || !key) return;
  size_t mask = m->cap - 1, i = slot_of(m, key);
  while (m->slots[i].key != key) {
    if (!m->slots[i].key) return;
    i = (i + 1) & mask;
  }
  /* Backward shift: every later slot of the run that may move into the
   * hole does, so no lookup ever stops early at it. */
  for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
    size_t home = slot_of(m, m->slots[j].key);
    /* j may fill i if its home is not in (i, j], cyclically. */
    if (((j - home) & mask) >= ((j - i) & mask)) {
      m->slots[i] = m->slots[j];
      i = j;
    }
  }
  m->slots[i].key = 0;
  m->slots[i].p = NULL;
  m->n--;
}
