/* The COOKIE datagrams and the cookie jar (cookie.h, spec/wire.md §13). */
#include "io/cookie.h"

#include <sodium.h>
#include <string.h>

#include "io/enet_platform.h"

static const uint8_t magic[4] = {0xFF, 0xFF, 0x74, 0x63};
enum { VERSION = 1 };

void tern__cookie_jar_init(tern__cookie_jar *j, uint64_t now_ms,
                           const uint8_t fresh[TERN__COOKIE_SECRET_BYTES]) {
  memset(j, 0, sizeof(*j));
  memcpy(j->secret[0], fresh, TERN__COOKIE_SECRET_BYTES);
  j->slot = now_ms / TERN__COOKIE_ROTATE_MS;
}

int tern__cookie_jar_due(const tern__cookie_jar *j, uint64_t now_ms) {
  return now_ms / TERN__COOKIE_ROTATE_MS > j->slot;
}

void tern__cookie_jar_rotate(tern__cookie_jar *j, uint64_t now_ms,
                             const uint8_t fresh[TERN__COOKIE_SECRET_BYTES]) {
  uint64_t slot = now_ms / TERN__COOKIE_ROTATE_MS;
  if (slot <= j->slot) return;
  j->has_prev = slot == j->slot + 1;
  if (j->has_prev) memcpy(j->secret[1], j->secret[0], TERN__COOKIE_SECRET_BYTES);
  else sodium_memzero(j->secret[1], TERN__COOKIE_SECRET_BYTES);
  memcpy(j->secret[0], fresh, TERN__COOKIE_SECRET_BYTES);
  j->slot = slot;
}

/* BLAKE2b-128 keyed with `secret` over address (16), port (2, big-endian)
 * and slot (8, big-endian). */
static void mac(const uint8_t secret[TERN__COOKIE_SECRET_BYTES], const tern__addr *a, uint64_t slot,
                uint8_t out[TERN__COOKIE_BYTES]) {
  uint8_t in[26];
  memcpy(in, a->ip, 16);
  in[16] = (uint8_t)(a->port >> 8);
  in[17] = (uint8_t)a->port;
  for (int i = 0; i < 8; i++) in[18 + i] = (uint8_t)(slot >> (56 - 8 * i));
  crypto_generichash(out, TERN__COOKIE_BYTES, in, sizeof(in), secret, TERN__COOKIE_SECRET_BYTES);
}

void tern__cookie_make(const tern__cookie_jar *j, const tern__addr *a,
                       uint8_t out[TERN__COOKIE_BYTES]) {
  mac(j->secret[0], a, j->slot, out);
}

int tern__cookie_check(const tern__cookie_jar *j, const tern__addr *a,
                       const uint8_t cookie[TERN__COOKIE_BYTES]) {
  uint8_t want[TERN__COOKIE_BYTES];
  mac(j->secret[0], a, j->slot, want);
  if (sodium_memcmp(want, cookie, TERN__COOKIE_BYTES) == 0) return 1;
  if (!j->has_prev) return 0;
  mac(j->secret[1], a, j->slot - 1, want);
  return sodium_memcmp(want, cookie, TERN__COOKIE_BYTES) == 0;
}

static void header(uint8_t *out, uint8_t kind, const uint8_t cookie[TERN__COOKIE_BYTES]) {
  memcpy(out, magic, 4);
  out[4] = VERSION;
  out[5] = kind;
  memcpy(out + TERN__COOKIE_HDR, cookie, TERN__COOKIE_BYTES);
}

void tern__cookie_write_reply(uint8_t out[TERN__COOKIE_REPLY_BYTES],
                              const uint8_t cookie[TERN__COOKIE_BYTES]) {
  header(out, TERN__COOKIE_KIND_REPLY, cookie);
}

size_t tern__cookie_wrap(uint8_t *out, size_t cap, const uint8_t cookie[TERN__COOKIE_BYTES],
                         const uint8_t *inner, size_t inner_len) {
  size_t n = TERN__COOKIE_REPLY_BYTES + inner_len;
  if (inner_len == 0 || cap < n) return 0;
  header(out, TERN__COOKIE_KIND_CONNECT, cookie);
  memcpy(out + TERN__COOKIE_REPLY_BYTES, inner, inner_len);
  return n;
}

int tern__cookie_looks_like(const uint8_t *data, size_t len) {
  return len >= 4 && memcmp(data, magic, 4) == 0;
}

int tern__cookie_parse(const uint8_t *data, size_t len, uint8_t cookie[TERN__COOKIE_BYTES],
                       const uint8_t **inner, size_t *inner_len) {
  if (len < TERN__COOKIE_REPLY_BYTES || !tern__cookie_looks_like(data, len) || data[4] != VERSION)
    return 0;
  int kind = data[5];
  if (kind == TERN__COOKIE_KIND_REPLY) {
    if (len != TERN__COOKIE_REPLY_BYTES) return 0;
    *inner = NULL;
    *inner_len = 0;
  } else if (kind == TERN__COOKIE_KIND_CONNECT) {
    if (len == TERN__COOKIE_REPLY_BYTES) return 0;
    *inner = data + TERN__COOKIE_REPLY_BYTES;
    *inner_len = len - TERN__COOKIE_REPLY_BYTES;
  } else {
    return 0;
  }
  memcpy(cookie, data + TERN__COOKIE_HDR, TERN__COOKIE_BYTES);
  return kind;
}

int tern__cookie_admit(const tern__cookie_jar *j, const tern__addr *from, const uint8_t *data,
                       size_t len, const uint8_t **inner, size_t *inner_len) {
  uint8_t c[TERN__COOKIE_BYTES];
  if (tern__cookie_parse(data, len, c, inner, inner_len) != TERN__COOKIE_KIND_CONNECT ||
      !tern__enet_is_connect(*inner, *inner_len))
    return TERN__COOKIE_DROP;
  return tern__cookie_check(j, from, c) ? TERN__COOKIE_ADMIT : TERN__COOKIE_BAD;
}
