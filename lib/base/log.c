/* Formats a log line and hands it to the program's callback (log.h). */
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>

void tern__logf(tern__log_fn fn, void *ctx, int level, const char *fmt, ...) {
  if (!fn) return;
  char line[TERN__LOG_LINE];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  fn(ctx, level, line);
}

int tern__logf_limited(tern__log_fn fn, void *ctx, tern__log_limit *lim, uint64_t now_ms,
                       unsigned burst, uint64_t window_ms, int level, const char *fmt, ...) {
  if (now_ms >= lim->window_start_ms + window_ms) {
    lim->window_start_ms = now_ms;
    lim->lines = 0;
  }
  if (lim->lines >= burst) {
    lim->held++;
    return 0;
  }
  lim->lines++;
  if (!fn) return 1;
  char line[TERN__LOG_LINE];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  if (lim->held && n >= 0 && (size_t)n < sizeof(line))
    snprintf(line + n, sizeof(line) - (size_t)n, " (and %lu more like it not logged)", lim->held);
  lim->held = 0;
  fn(ctx, level, line);
  return 1;
}
