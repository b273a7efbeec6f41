/* Probe datagrams: layout and tags (probe.h, spec/keepalive.md). */
#include "wire/probe.h"

#include <sodium.h>
#include <string.h>

#include "tern/tern.h"

static const uint8_t magic[4] = {0xFF, 0xFF, 0x74, 0x6B}; /* .. "tk" */

static size_t size_of(uint8_t type) {
  switch (type) {
    case TERN__PROBE_REQUEST: return TERN__PROBE_REQUEST_BYTES;
    case TERN__PROBE_ACK:
    case TERN__PROBE_REPLY: return TERN__PROBE_ANSWER_BYTES;
    default: return 0;
  }
}

int tern__probe_looks_like(const uint8_t *data, size_t len) {
  return len >= sizeof(magic) && memcmp(data, magic, sizeof(magic)) == 0;
}

/* Keyed BLAKE2b, 16 bytes, over everything before the tag. */
static void tag(const uint8_t *data, size_t len, const uint8_t key[TERN__PROBE_KEY_BYTES],
                uint8_t out[TERN__PROBE_TAG_BYTES]) {
  crypto_generichash(out, TERN__PROBE_TAG_BYTES, data, len - TERN__PROBE_TAG_BYTES, key,
                     TERN__PROBE_KEY_BYTES);
}

size_t tern__probe_write(const tern__probe_pkt *p, const uint8_t key[TERN__PROBE_KEY_BYTES],
                         uint8_t *out, size_t cap) {
  size_t n = size_of(p->type);
  if (n == 0 || cap < n) return 0;
  memset(out, 0, n);
  memcpy(out, magic, sizeof(magic));
  out[4] = TERN__PROBE_VERSION;
  out[5] = p->type;
  memcpy(out + 6, p->id, TERN__PROBE_ID_BYTES);
  for (int i = 0; i < 8; i++) out[14 + i] = (uint8_t)(p->nonce >> (56 - 8 * i));
  for (int i = 0; i < 4; i++) out[22 + i] = (uint8_t)(p->wait_ms >> (24 - 8 * i));
  tag(out, n, key, out + n - TERN__PROBE_TAG_BYTES);
  return n;
}

int tern__probe_parse(const uint8_t *data, size_t len, tern__probe_pkt *p) {
  memset(p, 0, sizeof(*p));
  if (!tern__probe_looks_like(data, len) || len < TERN__PROBE_ANSWER_BYTES ||
      data[4] != TERN__PROBE_VERSION || size_of(data[5]) != len)
    return TERN_EPROTO;
  p->type = data[5];
  memcpy(p->id, data + 6, TERN__PROBE_ID_BYTES);
  for (int i = 0; i < 8; i++) p->nonce = (p->nonce << 8) | data[14 + i];
  for (int i = 0; i < 4; i++) p->wait_ms = (p->wait_ms << 8) | data[22 + i];
  return 0;
}

int tern__probe_verify(const uint8_t *data, size_t len, const uint8_t key[TERN__PROBE_KEY_BYTES]) {
  if (len < TERN__PROBE_ANSWER_BYTES) return TERN_EDECRYPT;
  uint8_t want[TERN__PROBE_TAG_BYTES];
  tag(data, len, key, want);
  int ok = sodium_memcmp(want, data + len - TERN__PROBE_TAG_BYTES, TERN__PROBE_TAG_BYTES) == 0;
  sodium_memzero(want, sizeof(want));
  return ok ? 0 : TERN_EDECRYPT;
}
