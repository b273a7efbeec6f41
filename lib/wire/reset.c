/* The RESET datagram and its token (reset.h, spec/wire.md §14). */
#include "wire/reset.h"

#include <sodium.h>
#include <string.h>

static const uint8_t magic[4] = {0xFF, 0xFF, 0x74, 0x72};
enum { VERSION = 1 };
static const char label[] = "tern reset v1";

void tern__reset_token(const uint8_t relay_sk[32], const uint8_t dev[32], uint64_t time_us,
                       uint8_t out[TERN__RESET_TOKEN_BYTES]) {
  uint8_t k[32], in[40];
  crypto_generichash(k, sizeof(k), (const uint8_t *)label, sizeof(label) - 1, relay_sk, 32);
  memcpy(in, dev, 32);
  for (int i = 0; i < 8; i++) in[32 + i] = (uint8_t)(time_us >> (56 - 8 * i));
  crypto_generichash(out, TERN__RESET_TOKEN_BYTES, in, sizeof(in), k, sizeof(k));
  sodium_memzero(k, sizeof(k));
}

void tern__reset_write(uint8_t out[TERN__RESET_BYTES], const uint8_t token[TERN__RESET_TOKEN_BYTES]) {
  memcpy(out, magic, 4);
  out[4] = VERSION;
  memcpy(out + 5, token, TERN__RESET_TOKEN_BYTES);
}

int tern__reset_parse(const uint8_t *data, size_t len, uint8_t token[TERN__RESET_TOKEN_BYTES]) {
  if (len != TERN__RESET_BYTES || memcmp(data, magic, 4) != 0 || data[4] != VERSION) return 0;
  memcpy(token, data + 5, TERN__RESET_TOKEN_BYTES);
  return 1;
}
