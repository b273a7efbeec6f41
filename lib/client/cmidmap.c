/* The outbox's index by cmid (see cmidmap.h). */
#include "client/cmidmap.h"

#include <stdlib.h>

#include "tern/tern.h"

struct tern__cmidslot {
  uint64_t cmid; /* 0: empty */
  void *p;
};

/* cmids are consecutive: a multiplicative hash spreads them over the
 * table's high bits. */
static size_t slot_of(const tern__cmidmap *m, uint64_t cmid) {
  return (size_t)((cmid * 0x9e3779b97f4a7c15ull) >> 32) & (m->cap - 1);
}

void tern__cmidmap_init(tern__cmidmap *m) {
  m->slots = NULL;
  m->cap = m->n = 0;
}

void tern__cmidmap_free(tern__cmidmap *m) {
  free(m->slots);
  tern__cmidmap_init(m);
}

static void place(tern__cmidmap *m, uint64_t cmid, void *p) {
  size_t i = slot_of(m, cmid);
  while (m->slots[i].cmid) i = (i + 1) & (m->cap - 1);
  m->slots[i].cmid = cmid;
  m->slots[i].p = p;
}

/* Keeps the load at most one half. */
static int grow(tern__cmidmap *m) {
  size_t cap = m->cap ? m->cap * 2 : 64;
  struct tern__cmidslot *old = m->slots, *s = calloc(cap, sizeof(*s));
  if (!s) return TERN_ENOMEM;
  size_t oldcap = m->cap;
  m->slots = s;
  m->cap = cap;
  for (size_t i = 0; i < oldcap; i++)
    if (old[i].cmid) place(m, old[i].cmid, old[i].p);
  free(old);
  return 0;
}

int tern__cmidmap_put(tern__cmidmap *m, uint64_t cmid, void *p) {
  if ((m->n + 1) * 2 > m->cap && grow(m) < 0) return TERN_ENOMEM;
  place(m, cmid, p);
  m->n++;
  return 0;
}

void *tern__cmidmap_get(const tern__cmidmap *m, uint64_t cmid) {
  if (!m->n || !cmid) return NULL;
  for (size_t i = slot_of(m, cmid);; i = (i + 1) & (m->cap - 1)) {
    if (m->slots[i].cmid == cmid) return m->slots[i].p;
    if (!m->slots[i].cmid) return NULL;
  }
}

void tern__cmidmap_del(tern__cmidmap *m, uint64_t cmid) {
  if (!m->n || !cmid) return;
  size_t mask = m->cap - 1, i = slot_of(m, cmid);
  while (m->slots[i].cmid != cmid) {
    if (!m->slots[i].cmid) return;
    i = (i + 1) & mask;
  }
  /* Backward shift: every later slot of the run that may move into the
   * hole does, so no lookup ever stops early at it. */
  for (size_t j = (i + 1) & mask; m->slots[j].cmid; j = (j + 1) & mask) {
    size_t home = slot_of(m, m->slots[j].cmid);
    /* j may fill i if its home is not in (i, j], cyclically. */
    if (((j - home) & mask) >= ((j - i) & mask)) {
      m->slots[i] = m->slots[j];
      i = j;
    }
  }
  m->slots[i].cmid = 0;
  m->slots[i].p = NULL;
  m->n--;
}
