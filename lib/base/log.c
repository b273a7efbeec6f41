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
