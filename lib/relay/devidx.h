/*
 * The relay's open sessions by device key: which sessions a device has
 * open now, in O(1) on average instead of a walk over every peer (push
 * asks it for each device a message waits for; one session per device key
 * asks it at each handshake). Intrusive: each entry is a node inside the
 * caller's session record, which owns it; the index owns only its bucket
 * array. Buckets are chosen by a keyed hash (SipHash, libsodium's
 * crypto_shorthash) under a random key, so that clients choosing their
 * keys cannot make one chain long. Not thread-safe. May include: base/,
 * tern.h.
 */
#ifndef TERN_DEVIDX_H
#define TERN_DEVIDX_H

#include <stddef.h>
#include <stdint.h>

typedef struct tern__devidx_node {
  struct tern__devidx_node *next;
  const uint8_t *key;   /* 32 bytes, the caller's; stable while indexed */
  int indexed;
} tern__devidx_node;

typedef struct tern__devidx {
  tern__devidx_node **buckets;
  size_t mask;          /* buckets - 1, a power of two less one */
  size_t count;
  uint8_t hash_key[16];
} tern__devidx;

/* Sized for about `expect` entries (it does not grow; more entries only
 * make chains longer). Returns 0 or TERN_ENOMEM. */
int tern__devidx_init(tern__devidx *x, size_t expect);
void tern__devidx_free(tern__devidx *x);

/* Adds node n under key (32 bytes, which must stay valid and unchanged
 * until n is removed). A node already indexed is left as it is. */
void tern__devidx_add(tern__devidx *x, tern__devidx_node *n, const uint8_t *key);
/* Removes n if it is indexed. */
void tern__devidx_del(tern__devidx *x, tern__devidx_node *n);

/* The first node indexed under key, or NULL; tern__devidx_next gives the
 * next one under the same key after n. */
tern__devidx_node *tern__devidx_first(const tern__devidx *x, const uint8_t *key);
tern__devidx_node *tern__devidx_next(const tern__devidx_node *n);

#endif
