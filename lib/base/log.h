/*
 * One way to log inside tern: a line formatted here, handed to the
 * embedding program's callback (tern_relay_config.log, the relay core's and
 * the stores' log). Levels: 0 error, 1 warning, 2 info, 3 debug. A NULL
 * callback logs nothing and formats nothing.
 */
#ifndef TERN_LOG_H
#define TERN_LOG_H

typedef void (*tern__log_fn)(void *ctx, int level, const char *line);

/* Lines longer than this are cut. */
#define TERN__LOG_LINE 512

void tern__logf(tern__log_fn fn, void *ctx, int level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
