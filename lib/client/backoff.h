/*
 * Reconnect backoff: exponential with full jitter and a cap (the AWS
 * architecture blog's "full jitter"): the n-th retry in a row waits a
 * uniformly random time in [0, min(cap, base * 2^n)]. Sans-I/O: the caller
 * passes the random number.
 */
#ifndef TERN_BACKOFF_H
#define TERN_BACKOFF_H

#include <stdint.h>

typedef struct tern__backoff {
  uint32_t base_ms, cap_ms;
  unsigned n; /* failures in a row */
} tern__backoff;

void tern__backoff_init(tern__backoff *b, uint32_t base_ms, uint32_t cap_ms);
void tern__backoff_reset(tern__backoff *b);
/* The next delay in ms, from a uniform 32-bit random number; counts one
 * more failure. */
uint64_t tern__backoff_next(tern__backoff *b, uint32_t random);
/* The current ceiling, min(cap, base * 2^n), without counting a failure. */
uint64_t tern__backoff_ceiling(const tern__backoff *b);

#endif
