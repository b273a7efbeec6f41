#include "client/backoff.h"

void tern__backoff_init(tern__backoff *b, uint32_t base_ms, uint32_t cap_ms) {
  b->base_ms = base_ms ? base_ms : 1;
  b->cap_ms = cap_ms >= b->base_ms ? cap_ms : b->base_ms;
  b->n = 0;
}

void tern__backoff_reset(tern__backoff *b) { b->n = 0; }

uint64_t tern__backoff_ceiling(const tern__backoff *b) {
  uint64_t c = b->base_ms;
  for (unsigned i = 0; i < b->n && c < b->cap_ms; i++) c *= 2;
  return c < b->cap_ms ? c : b->cap_ms;
}

uint64_t tern__backoff_next(tern__backoff *b, uint32_t random) {
  uint64_t c = tern__backoff_ceiling(b);
  if (b->n < 64) b->n++;
  /* random * (c + 1) / 2^32 is uniform over [0, c] without modulo bias
   * beyond 1 part in 2^32 / c. */
  return ((uint64_t)random * (c + 1)) >> 32;
}
