/* A token bucket that counts what it refused (ratelim.h). */
#include "base/ratelim.h"

void tern__ratelim_init(tern__ratelim *rl, uint32_t burst, uint32_t per_ms) {
  *rl = (tern__ratelim){.burst = burst ? burst : 1, .per_ms = per_ms ? per_ms : 1};
  rl->tokens = rl->burst;
}

/* Adds the tokens earned since refill_ms; keeps the part of a period not
 * yet earned. */
static void refill(tern__ratelim *rl, uint64_t now_ms) {
  if (!rl->started) {
    if (!rl->burst) tern__ratelim_init(rl, 1, 1000); /* a zeroed struct */
    rl->started = 1;
    rl->refill_ms = now_ms;
    return;
  }
  if (now_ms <= rl->refill_ms) return;
  uint64_t earned = (now_ms - rl->refill_ms) / rl->per_ms;
  if (rl->tokens + earned >= rl->burst) {
    rl->tokens = rl->burst;
    rl->refill_ms = now_ms;
  } else {
    rl->tokens += (uint32_t)earned;
    rl->refill_ms += earned * rl->per_ms;
  }
}

int tern__ratelim_ready(tern__ratelim *rl, uint64_t now_ms) {
  refill(rl, now_ms);
  return rl->tokens > 0;
}

int tern__ratelim_take(tern__ratelim *rl, uint64_t now_ms) {
  refill(rl, now_ms);
  if (rl->tokens > 0) {
    rl->tokens--;
    return 1;
  }
  if (rl->suppressed++ == 0) rl->first_ms = now_ms;
  return 0;
}

uint64_t tern__ratelim_take_suppressed(tern__ratelim *rl, uint64_t now_ms, uint64_t *span_ms) {
  uint64_t n = rl->suppressed;
  *span_ms = n && now_ms > rl->first_ms ? now_ms - rl->first_ms : 0;
  rl->suppressed = 0;
  return n;
}
