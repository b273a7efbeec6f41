/*
 * A token bucket (sans-I/O: the caller passes the time) that counts what it
 * refused: `burst` events at once, then one more every `per_ms`. The log
 * lines strangers can cause go through one bucket per kind (log.h,
 * tern__logf_limited), and the refused count is reported exactly once, with
 * the next event allowed (tern__ratelim_take_suppressed).
 *
 * Owns nothing: the struct is the caller's, zeroed or set by
 * tern__ratelim_init. Not thread-safe.
 */
#ifndef TERN_RATELIM_H
#define TERN_RATELIM_H

#include <stdint.h>

typedef struct tern__ratelim {
  uint32_t burst;         /* tokens the bucket holds at most */
  uint32_t per_ms;        /* one token more every per_ms */
  uint32_t tokens;        /* tokens now */
  int started;            /* the bucket has seen a time (it starts full) */
  uint64_t refill_ms;     /* time the tokens were counted up to */
  uint64_t suppressed;    /* events refused since the count was last taken */
  uint64_t first_ms;      /* when the first of them was refused */
} tern__ratelim;

/* A full bucket: `burst` (at least 1) at once, then one every `per_ms`
 * (at least 1). */
void tern__ratelim_init(tern__ratelim *rl, uint32_t burst, uint32_t per_ms);

/* 1 if an event may happen at now_ms (a token is taken), 0 if not (it is
 * counted as suppressed). Times that go backwards count as no time. */
int tern__ratelim_take(tern__ratelim *rl, uint64_t now_ms);

/* Events suppressed since the count was last taken, and in *span_ms how
 * long ago the first of them was (0 if none); resets the count. */
uint64_t tern__ratelim_take_suppressed(tern__ratelim *rl, uint64_t now_ms, uint64_t *span_ms);

/* 1 if a token is there now (nothing is taken). */
int tern__ratelim_ready(tern__ratelim *rl, uint64_t now_ms);

#endif
