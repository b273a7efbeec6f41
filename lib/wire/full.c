/* The FULL datagram (full.h, spec/wire.md §10). */
#include "wire/full.h"

#include <string.h>

static const uint8_t magic[4] = {0xFF, 0xFF, 0x74, 0x66};
enum { VERSION = 1, REASON_FULL = 1 };

void tern__full_write(uint8_t out[TERN__FULL_BYTES], uint32_t retry_ms) {
  memcpy(out, magic, 4);
  out[4] = VERSION;
  out[5] = REASON_FULL;
  out[6] = (uint8_t)(retry_ms >> 24);
  out[7] = (uint8_t)(retry_ms >> 16);
  out[8] = (uint8_t)(retry_ms >> 8);
  out[9] = (uint8_t)retry_ms;
}

int tern__full_parse(const uint8_t *data, size_t len, uint32_t *retry_ms) {
  if (len != TERN__FULL_BYTES || memcmp(data, magic, 4) != 0 || data[4] != VERSION ||
      data[5] != REASON_FULL)
    return 0;
  uint32_t v = (uint32_t)data[6] << 24 | (uint32_t)data[7] << 16 | (uint32_t)data[8] << 8 | data[9];
  *retry_ms = v > TERN__FULL_RETRY_MAX_MS ? TERN__FULL_RETRY_MAX_MS : v;
  return 1;
}
