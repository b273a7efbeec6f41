/*
 * The COOKIE datagrams (spec/wire.md §13): a relay's stateless proof that a
 * source receives at its address, asked before an ENet CONNECT from a new
 * source gets a handle or a peer slot (issue 13, finding 3).
 *
 * Owns: the datagrams' layout (encode, parse) and the cookie jar, a pair
 * of random secrets (the current one and the previous one) rotated every
 * TERN__COOKIE_ROTATE_MS. A cookie is BLAKE2b-128 keyed with a secret over
 * (source address, port, time slot): the relay keeps nothing per source.
 * Sans-I/O: the caller gives the time and the fresh random secrets.
 */
#ifndef TERN_COOKIE_H
#define TERN_COOKIE_H

#include <stddef.h>
#include <stdint.h>

#include "io/addr.h"

#define TERN__COOKIE_BYTES 16
#define TERN__COOKIE_SECRET_BYTES 32
#define TERN__COOKIE_HDR 6 /* magic FF FF 74 63, version, kind */
#define TERN__COOKIE_REPLY_BYTES (TERN__COOKIE_HDR + TERN__COOKIE_BYTES) /* 22 */
#define TERN__COOKIE_ROTATE_MS 120000u

enum {
  TERN__COOKIE_KIND_REPLY = 1,   /* relay -> client: the cookie */
  TERN__COOKIE_KIND_CONNECT = 2, /* client -> relay: cookie, then an ENet CONNECT */
};

typedef struct tern__cookie_jar {
  uint8_t secret[2][TERN__COOKIE_SECRET_BYTES]; /* [0] the slot's, [1] the previous slot's */
  uint64_t slot;                                /* now_ms / TERN__COOKIE_ROTATE_MS of secret[0] */
  int has_prev;                                 /* secret[1] belongs to slot - 1 */
} tern__cookie_jar;

/* A jar for time now_ms with `fresh` as its first secret. */
void tern__cookie_jar_init(tern__cookie_jar *j, uint64_t now_ms,
                           const uint8_t fresh[TERN__COOKIE_SECRET_BYTES]);
/* 1 if now_ms is in a later slot than the jar's current secret: the caller
 * then calls tern__cookie_jar_rotate() with fresh random bytes. */
int tern__cookie_jar_due(const tern__cookie_jar *j, uint64_t now_ms);
/* Moves to now_ms's slot: the current secret becomes the previous one
 * (only if the slot is the next one; after a longer gap neither old secret
 * is kept), `fresh` the current. */
void tern__cookie_jar_rotate(tern__cookie_jar *j, uint64_t now_ms,
                             const uint8_t fresh[TERN__COOKIE_SECRET_BYTES]);

/* The cookie of source `a` under the current secret. */
void tern__cookie_make(const tern__cookie_jar *j, const tern__addr *a,
                       uint8_t out[TERN__COOKIE_BYTES]);
/* 1 if `cookie` is a's under the current or the previous secret, else 0
 * (compared in constant time). */
int tern__cookie_check(const tern__cookie_jar *j, const tern__addr *a,
                       const uint8_t cookie[TERN__COOKIE_BYTES]);

/* Writes a COOKIE reply into out[TERN__COOKIE_REPLY_BYTES]. */
void tern__cookie_write_reply(uint8_t out[TERN__COOKIE_REPLY_BYTES],
                              const uint8_t cookie[TERN__COOKIE_BYTES]);
/* Writes a wrapped CONNECT (header, cookie, then `inner`, an ENet CONNECT
 * datagram) into out. Returns its length, 0 if cap is too small. */
size_t tern__cookie_wrap(uint8_t *out, size_t cap, const uint8_t cookie[TERN__COOKIE_BYTES],
                         const uint8_t *inner, size_t inner_len);

/* 1 if data starts with the COOKIE magic (whatever follows). */
int tern__cookie_looks_like(const uint8_t *data, size_t len);
/* Parses a COOKIE datagram: its kind (TERN__COOKIE_KIND_*) with the cookie
 * copied to `cookie`, and for a CONNECT (*inner, *inner_len) the ENet
 * datagram it carries (inside data). 0 if data is not one of a version and
 * kind this code reads, or a REPLY of another length, or a CONNECT with
 * nothing inside. */
int tern__cookie_parse(const uint8_t *data, size_t len, uint8_t cookie[TERN__COOKIE_BYTES],
                       const uint8_t **inner, size_t *inner_len);

/* A relay's verdict on a COOKIE datagram from a source without a handle:
 * TERN__COOKIE_ADMIT, a CONNECT whose cookie is from's and whose inside is
 * an ENet CONNECT (*inner, *inner_len: that CONNECT, inside data);
 * TERN__COOKIE_BAD, such a CONNECT with a cookie that is not (wrong,
 * another source's, or stale: the relay answers a fresh COOKIE);
 * TERN__COOKIE_DROP, anything else. */
enum { TERN__COOKIE_DROP = 0, TERN__COOKIE_ADMIT = 1, TERN__COOKIE_BAD = 2 };
int tern__cookie_admit(const tern__cookie_jar *j, const tern__addr *from, const uint8_t *data,
                       size_t len, const uint8_t **inner, size_t *inner_len);

#endif
