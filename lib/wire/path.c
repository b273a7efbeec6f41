/* Path datagrams (path.h, spec/wire.md §11). */
#include "wire/path.h"

#include <sodium.h>
#include <string.h>

#include "tern/tern.h"

static const uint8_t magic[4] = {0xFF, 0xFF, 0x74, 0x70};
enum { VERSION = 1, HDR = 38 };

static void derive(const uint8_t key[32], const char *label, uint8_t *out, size_t n) {
  crypto_generichash(out, n, (const uint8_t *)label, strlen(label), key, 32);
}

void tern__path_derive(const uint8_t c2s_key[32], const uint8_t s2c_key[32], tern__path_keys *out) {
  derive(c2s_key, "tern path id", out->id, sizeof(out->id));
  derive(c2s_key, "tern path c2s", out->c2s, sizeof(out->c2s));
  derive(s2c_key, "tern path s2c", out->s2c, sizeof(out->s2c));
}

int tern__path_looks_like(const uint8_t *data, size_t len) {
  return len >= 6 && memcmp(data, magic, 4) == 0;
}

static void put64(uint8_t *o, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) o[i] = (uint8_t)v;
}

static uint64_t get64(const uint8_t *i) {
  uint64_t v = 0;
  for (int k = 0; k < 8; k++) v = v << 8 | i[k];
  return v;
}

static void nonce_of(uint64_t counter, uint8_t nonce[12]) {
  memset(nonce, 0, 4);
  put64(nonce + 4, counter);
}

void tern__path_write(const tern__path_pkt *p, const uint8_t key[32], uint8_t out[TERN__PATH_BYTES]) {
  memcpy(out, magic, 4);
  out[4] = VERSION;
  out[5] = p->type;
  memcpy(out + 6, p->id, 8);
  put64(out + 14, p->counter);
  memcpy(out + 22, p->a, 8);
  memcpy(out + 30, p->b, 8);
  uint8_t nonce[12];
  nonce_of(p->counter, nonce);
  unsigned long long tl = 0;
  /* No plaintext: the tag authenticates the header as associated data. */
  crypto_aead_chacha20poly1305_ietf_encrypt(out + HDR, &tl, NULL, 0, out, HDR, NULL, nonce, key);
}

int tern__path_peek(const uint8_t *data, size_t len, tern__path_pkt *p) {
  if (len != TERN__PATH_BYTES || memcmp(data, magic, 4) != 0 || data[4] != VERSION) return TERN_EPROTO;
  p->type = data[5];
  if (p->type < TERN__PATH_CHALLENGE || p->type > TERN__PATH_CONFIRM) return TERN_EPROTO;
  memcpy(p->id, data + 6, 8);
  p->counter = get64(data + 14);
  memcpy(p->a, data + 22, 8);
  memcpy(p->b, data + 30, 8);
  return p->counter == 0 ? TERN_EPROTO : 0;
}

int tern__path_open(const uint8_t *data, size_t len, const uint8_t key[32]) {
  if (len != TERN__PATH_BYTES) return TERN_EDECRYPT;
  uint8_t nonce[12];
  nonce_of(get64(data + 14), nonce);
  unsigned long long ml = 0;
  return crypto_aead_chacha20poly1305_ietf_decrypt(NULL, &ml, NULL, data + HDR, 16, data, HDR, nonce,
                                                   key) == 0
             ? 0
             : TERN_EDECRYPT;
}

void tern__path_write_hint(uint8_t out[TERN__PATH_HINT_BYTES]) {
  memcpy(out, magic, 4);
  out[4] = VERSION;
  out[5] = TERN__PATH_HINT;
}

int tern__path_is_hint(const uint8_t *data, size_t len) {
  return len == TERN__PATH_HINT_BYTES && memcmp(data, magic, 4) == 0 && data[4] == VERSION &&
         data[5] == TERN__PATH_HINT;
}
