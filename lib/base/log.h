/*
 * One way to log inside tern: a line formatted here, handed to the
 * embedding program's callback (tern_relay_config.log, the relay core's and
 * the stores' log). Levels: 0 error, 1 warning, 2 info, 3 debug. A NULL
 * callback logs nothing and formats nothing.
 */
#ifndef TERN_LOG_H
#define TERN_LOG_H

#include <stdint.h>

typedef void (*tern__log_fn)(void *ctx, int level, const char *line);

/* Lines longer than this are cut. */
#define TERN__LOG_LINE 512

void tern__logf(tern__log_fn fn, void *ctx, int level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Lines that anyone on the network can cause (a failed handshake, an
 * unknown key) are limited: at most `burst` per `window_ms`; the first
 * line after a quiet spell says how many were held back. Sans-I/O: the
 * caller passes the time. */
typedef struct tern__log_limit {
  uint64_t window_start_ms;
  unsigned lines;       /* written in this window */
  unsigned long held;   /* held back since the last line written */
} tern__log_limit;

/* Like tern__logf, through limit `lim`. Returns 1 if the line was written. */
int tern__logf_limited(tern__log_fn fn, void *ctx, tern__log_limit *lim, uint64_t now_ms,
                       unsigned burst, uint64_t window_ms, int level, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

#endif
