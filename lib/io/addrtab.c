/* The address table (addrtab.h): entries in an array indexed by handle - 1,
 * a chained hash of address -> entry, a free list of reusable slots. */
#include "io/addrtab.h"

#include <stdlib.h>
#include <string.h>

#include "tern/tern.h"

struct tern__atab {
  tern__atab_entry *e;
  size_t n, cap, max, used;
  uint32_t *bucket; /* entry index + 1 */
  size_t mask;
  uint32_t *free_list;
  size_t nfree;
};

int tern__atab_new(tern__atab **out, size_t max) {
  *out = NULL;
  if (max == 0 || max > 0x7fffffff) return TERN_EINVAL;
  tern__atab *t = calloc(1, sizeof(*t));
  if (!t) return TERN_ENOMEM;
  t->max = max;
  t->mask = 63;
  t->bucket = calloc(t->mask + 1, sizeof(*t->bucket));
  if (!t->bucket) {
    free(t);
    return TERN_ENOMEM;
  }
  *out = t;
  return 0;
}

void tern__atab_free(tern__atab *t) {
  if (!t) return;
  free(t->e);
  free(t->bucket);
  free(t->free_list);
  free(t);
}

static uint32_t *chain_of(const tern__atab *t, const tern__addr *a) {
  return &t->bucket[tern__addr_hash(a) & t->mask];
}

static void chain_insert(tern__atab *t, uint32_t idx) {
  uint32_t *head = chain_of(t, &t->e[idx].addr);
  t->e[idx].next = *head;
  *head = idx + 1;
}

static void chain_remove(tern__atab *t, uint32_t idx) {
  for (uint32_t *p = chain_of(t, &t->e[idx].addr); *p; p = &t->e[*p - 1].next)
    if (*p == idx + 1) {
      *p = t->e[idx].next;
      return;
    }
}

/* Keeps the chains short: twice as many buckets as entries. */
static int grow_buckets(tern__atab *t) {
  if (t->used * 2 <= t->mask + 1) return 0;
  size_t nb = (t->mask + 1) * 2;
  uint32_t *b = calloc(nb, sizeof(*b));
  if (!b) return TERN_ENOMEM;
  free(t->bucket);
  t->bucket = b;
  t->mask = nb - 1;
  for (size_t i = 0; i < t->n; i++)
    if (t->e[i].used) chain_insert(t, (uint32_t)i);
  return 0;
}

int tern__atab_add(tern__atab *t, const tern__addr *a, uint32_t owner, uint64_t now_ms,
                   uint32_t *handle, uint16_t *gen) {
  if (tern__atab_find(t, a)) return TERN_EEXIST;
  if (t->used >= t->max) return TERN_ERESOURCE;
  uint32_t idx;
  if (t->nfree) {
    idx = t->free_list[--t->nfree];
  } else {
    if (t->n == t->cap) {
      size_t nc = t->cap ? t->cap * 2 : 16;
      tern__atab_entry *ne = realloc(t->e, nc * sizeof(*ne));
      if (!ne) return TERN_ENOMEM;
      uint32_t *nf = realloc(t->free_list, nc * sizeof(*nf));
      if (!nf) {
        t->e = ne; /* the larger array is kept; cap stays */
        return TERN_ENOMEM;
      }
      t->e = ne;
      t->free_list = nf;
      t->cap = nc;
    }
    idx = (uint32_t)t->n++;
    t->e[idx].gen = 0;
  }
  tern__atab_entry *e = &t->e[idx];
  uint16_t g = (uint16_t)(e->gen + 1);
  memset(e, 0, sizeof(*e));
  e->addr = *a;
  e->owner = owner;
  e->gen = g;
  e->used = 1;
  e->created_ms = now_ms;
  t->used++;
  chain_insert(t, idx);
  /* A failure to grow the buckets only makes chains longer. */
  (void)grow_buckets(t);
  *handle = idx + 1;
  *gen = g;
  return 0;
}

int tern__atab_move(tern__atab *t, uint32_t handle, uint16_t gen, const tern__addr *to) {
  if (!tern__atab_get(t, handle, gen)) return TERN_ENOENT;
  uint32_t other = tern__atab_find(t, to);
  if (other == handle) return 0;
  if (other) return TERN_EEXIST;
  chain_remove(t, handle - 1);
  t->e[handle - 1].addr = *to;
  chain_insert(t, handle - 1);
  return 0;
}

void tern__atab_set_local(tern__atab *t, uint32_t handle, const tern__addr *local) {
  if (handle && handle <= t->n && t->e[handle - 1].used) t->e[handle - 1].local = *local;
}

uint32_t tern__atab_find(const tern__atab *t, const tern__addr *a) {
  for (uint32_t i = *chain_of(t, a); i; i = t->e[i - 1].next)
    if (tern__addr_equal(&t->e[i - 1].addr, a)) return i;
  return 0;
}

const tern__atab_entry *tern__atab_get(const tern__atab *t, uint32_t handle, uint16_t gen) {
  if (handle == 0 || handle > t->n) return NULL;
  const tern__atab_entry *e = &t->e[handle - 1];
  return e->used && e->gen == gen ? e : NULL;
}

int tern__atab_bind(tern__atab *t, uint32_t handle, uint16_t gen) {
  tern__atab_entry *e = (tern__atab_entry *)tern__atab_get(t, handle, gen);
  if (!e) return TERN_ENOENT;
  e->bound = 1;
  e->refs++;
  return 0;
}

static void remove_at(tern__atab *t, uint32_t idx) {
  chain_remove(t, idx);
  t->e[idx].used = 0;
  t->e[idx].bound = 0;
  t->e[idx].refs = 0;
  t->used--;
  t->free_list[t->nfree++] = idx; /* cap >= n >= every index freed */
}

int tern__atab_release(tern__atab *t, uint32_t handle, uint16_t gen) {
  tern__atab_entry *e = (tern__atab_entry *)tern__atab_get(t, handle, gen);
  if (!e) return 0;
  if (e->refs > 1) {
    e->refs--;
    return 0;
  }
  remove_at(t, handle - 1);
  return 1;
}

size_t tern__atab_sweep(tern__atab *t, uint64_t now_ms, uint64_t max_age_ms) {
  size_t k = 0;
  for (size_t i = 0; i < t->n; i++) {
    tern__atab_entry *e = &t->e[i];
    if (e->used && !e->bound && now_ms >= e->created_ms + max_age_ms) {
      remove_at(t, (uint32_t)i);
      k++;
    }
  }
  return k;
}

size_t tern__atab_count(const tern__atab *t) { return t->used; }

const tern__atab_entry *tern__atab_entry_at(const tern__atab *t, uint32_t handle) {
  if (handle == 0 || handle > t->n || !t->e[handle - 1].used) return NULL;
  return &t->e[handle - 1];
}

uint32_t tern__atab_span(const tern__atab *t) { return (uint32_t)t->n; }
