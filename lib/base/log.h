/*
 * One way to log inside tern: a line formatted here, handed to the
 * embedding program's callback (tern_relay_config.log, the relay core's and
 * the stores' log). Levels: 0 error, 1 warning, 2 info, 3 debug. A NULL
 * callback logs nothing and formats nothing.
 */
#ifndef TERN_LOG_H
#define TERN_LOG_H

#include <stdint.h>

#include "base/ratelim.h"

typedef void (*tern__log_fn)(void *ctx, int level, const char *line);

/* Lines longer than this are cut. */
#define TERN__LOG_LINE 512

void tern__logf(tern__log_fn fn, void *ctx, int level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Lines that anyone on the network can cause (a failed handshake, an
 * unknown key) go through a token bucket per kind (ratelim.h): a line the
 * bucket refuses is counted, and the next line written through it ends with
 * " (N similar lines suppressed in the last S s)", cut short if need be so
 * that the count is always there. Returns 1 if the line was written. */
int tern__logf_limited(tern__log_fn fn, void *ctx, tern__ratelim *rl, uint64_t now_ms, int level,
                       const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* When lines of `rl` were suppressed and none was written since, and the
 * bucket has a token again: writes "<what>: N similar lines suppressed in
 * the last S s" (so a flood that stopped is still counted). Returns 1 if it
 * wrote. Call it from a timer, e.g. once a second. */
int tern__log_suppressed(tern__log_fn fn, void *ctx, tern__ratelim *rl, uint64_t now_ms, int level,
                         const char *what);

#endif
