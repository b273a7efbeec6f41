/* The relay store's write-behind counter cache (see seqcache.h): an
 * open-addressing table (linear probing, no deletion but the whole) and
 * the list of its dirty slots in the order they became dirty. */
#include "store/seqcache.h"

#include <stdlib.h>
#include <string.h>

#include "tern/tern.h"

struct slot {
  uint64_t hash;  /* 0: empty */
  char *key;      /* user, or user NUL sender; owned */
  size_t klen;    /* bytes of key, both NULs of a chain's included */
  uint64_t val;
  uint8_t kind;
  uint8_t dirty;
};

struct tern__seqcache {
  struct slot *slots; /* cap of them, a power of two; NULL while empty */
  size_t cap, n;
  size_t *dirty;      /* slot indexes, ndirty of them (capacity dcap) */
  size_t ndirty, dcap;
};

/* The key's bytes: "user" (with its NUL) or "user\0sender\0". */
static size_t key_len(const char *user, const char *sender) {
  return strlen(user) + 1 + (sender ? strlen(sender) + 1 : 0);
}

static void key_fill(char *k, const char *user, const char *sender) {
  size_t u = strlen(user) + 1;
  memcpy(k, user, u);
  if (sender) memcpy(k + u, sender, strlen(sender) + 1);
}

/* FNV-1a over the kind and the key, never 0. */
static uint64_t hash_of(int kind, const char *user, const char *sender) {
  uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)kind;
  h *= 0x100000001b3ull;
  for (const char *p = user; *p; p++) h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
  if (sender) {
    h = (h ^ 0xffu) * 0x100000001b3ull; /* no byte of a name: "ab"+"c" differs from "a"+"bc" */
    for (const char *p = sender; *p; p++) h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
  }
  return h ? h : 1;
}

static int same(const struct slot *s, uint64_t h, int kind, const char *user, const char *sender,
                size_t klen) {
  if (s->hash != h || s->kind != kind || s->klen != klen) return 0;
  size_t u = strlen(user) + 1;
  return memcmp(s->key, user, u) == 0 && (!sender || strcmp(s->key + u, sender) == 0);
}

/* The slot holding the key, or the empty slot where it would go. */
static size_t find(const tern__seqcache *c, uint64_t h, int kind, const char *user,
                   const char *sender, size_t klen) {
  size_t i = (size_t)h & (c->cap - 1);
  while (c->slots[i].hash && !same(&c->slots[i], h, kind, user, sender, klen)) i = (i + 1) & (c->cap - 1);
  return i;
}

tern__seqcache *tern__seqcache_new(void) { return calloc(1, sizeof(tern__seqcache)); }

void tern__seqcache_clear(tern__seqcache *c) {
  for (size_t i = 0; i < c->cap; i++) free(c->slots[i].key);
  free(c->slots);
  c->slots = NULL;
  c->cap = c->n = 0;
  c->ndirty = 0;
}

void tern__seqcache_free(tern__seqcache *c) {
  if (!c) return;
  tern__seqcache_clear(c);
  free(c->dirty);
  free(c);
}

int tern__seqcache_get(const tern__seqcache *c, int kind, const char *user, const char *sender,
                       uint64_t *val) {
  if (!c->n) return 0;
  uint64_t h = hash_of(kind, user, sender);
  const struct slot *s = &c->slots[find(c, h, kind, user, sender, key_len(user, sender))];
  if (!s->hash) return 0;
  *val = s->val;
  return 1;
}

/* Doubles the table (at most half full), keeping the dirty list's order. */
static int grow(tern__seqcache *c) {
  size_t cap = c->cap ? c->cap * 2 : 256;
  struct slot *t = calloc(cap, sizeof *t);
  size_t *moved = c->cap ? malloc(c->cap * sizeof *moved) : NULL;
  if (!t || (c->cap && !moved)) {
    free(t);
    free(moved);
    return TERN_ENOMEM;
  }
  for (size_t i = 0; i < c->cap; i++) {
    if (!c->slots[i].hash) continue;
    size_t j = (size_t)c->slots[i].hash & (cap - 1);
    while (t[j].hash) j = (j + 1) & (cap - 1);
    t[j] = c->slots[i];
    moved[i] = j;
  }
  for (size_t d = 0; d < c->ndirty; d++) c->dirty[d] = moved[c->dirty[d]];
  free(moved);
  free(c->slots);
  c->slots = t;
  c->cap = cap;
  return 0;
}

int tern__seqcache_put(tern__seqcache *c, int kind, const char *user, const char *sender,
                       uint64_t val, int dirty) {
  uint64_t h = hash_of(kind, user, sender);
  size_t klen = key_len(user, sender), i;
  if (c->cap && c->slots[i = find(c, h, kind, user, sender, klen)].hash) {
    /* A key already here never allocates: the dirty list has room for
     * every entry (below). */
    struct slot *s = &c->slots[i];
    s->val = val;
    /* A clean put over a dirty entry leaves it dirty: written again at
     * commit (the same value). */
    if (dirty && !s->dirty) {
      s->dirty = 1;
      c->dirty[c->ndirty++] = i;
    }
    return 0;
  }
  /* A new key. Past the bound, a cache with nothing dirty starts over. */
  if (c->n >= TERN__SC_MAX && !c->ndirty) tern__seqcache_clear(c);
  if ((c->n + 1) * 2 > c->cap && grow(c) < 0) return TERN_ENOMEM;
  if (c->dcap < c->n + 1) {
    size_t cap = c->dcap ? c->dcap * 2 : 64;
    size_t *d = realloc(c->dirty, cap * sizeof *d);
    if (!d) return TERN_ENOMEM;
    c->dirty = d;
    c->dcap = cap;
  }
  char *k = malloc(klen);
  if (!k) return TERN_ENOMEM;
  key_fill(k, user, sender);
  i = find(c, h, kind, user, sender, klen);
  c->slots[i] = (struct slot){.hash = h, .key = k, .klen = klen, .val = val, .kind = (uint8_t)kind,
                              .dirty = (uint8_t)(dirty != 0)};
  c->n++;
  if (dirty) c->dirty[c->ndirty++] = i;
  return 0;
}

int tern__seqcache_each_dirty(const tern__seqcache *c,
                              int (*write)(void *ctx, int kind, const char *user, const char *sender,
                                           uint64_t val),
                              void *ctx) {
  for (size_t d = 0; d < c->ndirty; d++) {
    const struct slot *s = &c->slots[c->dirty[d]];
    const char *sender = s->kind == TERN__SC_CHAIN ? s->key + strlen(s->key) + 1 : NULL;
    int rc = write(ctx, s->kind, s->key, sender, s->val);
    if (rc) return rc;
  }
  return 0;
}

size_t tern__seqcache_dirty(const tern__seqcache *c) { return c->ndirty; }

void tern__seqcache_clean(tern__seqcache *c) {
  for (size_t d = 0; d < c->ndirty; d++) c->slots[c->dirty[d]].dirty = 0;
  c->ndirty = 0;
  if (c->n > TERN__SC_MAX) tern__seqcache_clear(c);
}
