/* The relay's open sessions by device key: see devidx.h. */
#include "relay/devidx.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "tern/tern.h"

int tern__devidx_init(tern__devidx *x, size_t expect) {
  memset(x, 0, sizeof(*x));
  size_t n = 64;
  while (n < expect && n < ((size_t)1 << 20)) n <<= 1;
  x->buckets = calloc(n, sizeof(*x->buckets));
  if (!x->buckets) return TERN_ENOMEM;
  x->mask = n - 1;
  randombytes_buf(x->hash_key, sizeof(x->hash_key));
  return 0;
}

void tern__devidx_free(tern__devidx *x) {
  free(x->buckets);
  sodium_memzero(x, sizeof(*x));
}

static size_t slot(const tern__devidx *x, const uint8_t *key) {
  uint8_t h[crypto_shorthash_BYTES];
  crypto_shorthash(h, key, 32, x->hash_key);
  uint64_t v;
  memcpy(&v, h, sizeof(v));
  return (size_t)v & x->mask;
}

void tern__devidx_add(tern__devidx *x, tern__devidx_node *n, const uint8_t *key) {
  if (n->indexed) return;
  size_t i = slot(x, key);
  n->key = key;
  n->next = x->buckets[i];
  x->buckets[i] = n;
  n->indexed = 1;
  x->count++;
}

void tern__devidx_del(tern__devidx *x, tern__devidx_node *n) {
  if (!n->indexed) return;
  for (tern__devidx_node **pp = &x->buckets[slot(x, n->key)]; *pp; pp = &(*pp)->next) {
    if (*pp != n) continue;
    *pp = n->next;
    break;
  }
  n->next = NULL;
  n->indexed = 0;
  x->count--;
}

static tern__devidx_node *match(tern__devidx_node *n, const uint8_t *key) {
  while (n && sodium_memcmp(n->key, key, 32) != 0) n = n->next;
  return n;
}

tern__devidx_node *tern__devidx_first(const tern__devidx *x, const uint8_t *key) {
  return match(x->buckets[slot(x, key)], key);
}

tern__devidx_node *tern__devidx_next(const tern__devidx_node *n) { return match(n->next, n->key); }
