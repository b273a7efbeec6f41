/* The copy schedule: see copies.h. */
#include "wire/copies.h"

uint32_t tern__copy_delay(uint32_t rtt_ms, uint32_t min_ms, uint32_t max_ms) {
  uint32_t d = rtt_ms ? rtt_ms / 5 : max_ms;
  if (d > max_ms) d = max_ms;
  if (d < min_ms) d = min_ms;
  return d;
}

uint32_t tern__copies_before(uint32_t rtt_ms, uint32_t d_ms, uint32_t count) {
  if (!rtt_ms) return count;
  uint32_t n = 0;
  /* Copy n + 1 is sent if (2n + 1) d is below the RTT. */
  while (n < count && (uint64_t)(2 * (uint64_t)n + 1) * d_ms < rtt_ms) n++;
  return n;
}

uint64_t tern__copy_at(uint32_t d_ms, uint32_t k) {
  if (k <= 1) return d_ms / 2 ? d_ms / 2 : 1; /* not in the transmission's datagram */
  return (2 * (uint64_t)k - 1) * d_ms;
}
