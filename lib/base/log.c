/* Formats a log line and hands it to the program's callback (log.h). */
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void tern__logf(tern__log_fn fn, void *ctx, int level, const char *fmt, ...) {
  if (!fn) return;
  char line[TERN__LOG_LINE];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  fn(ctx, level, line);
}

/* " (N similar lines suppressed in the last S s)" into buf, or "" when
 * none were; takes the count. */
static void suppressed_note(tern__ratelim *rl, uint64_t now_ms, const char *open, const char *close,
                            char *buf, size_t cap) {
  uint64_t span = 0, n = tern__ratelim_take_suppressed(rl, now_ms, &span);
  buf[0] = 0;
  if (!n) return;
  uint64_t s = span / 1000 + (span % 1000 != 0);
  snprintf(buf, cap, "%s%llu similar line%s suppressed in the last %llu s%s", open,
           (unsigned long long)n, n == 1 ? "" : "s", (unsigned long long)(s ? s : 1), close);
}

int tern__logf_limited(tern__log_fn fn, void *ctx, tern__ratelim *rl, uint64_t now_ms, int level,
                       const char *fmt, ...) {
  if (!tern__ratelim_take(rl, now_ms)) return 0;
  char note[96], line[TERN__LOG_LINE];
  suppressed_note(rl, now_ms, " (", ")", note, sizeof(note));
  if (!fn) return 1;
  size_t room = sizeof(line) - strlen(note);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, room, fmt, ap);
  va_end(ap);
  strcat(line, note);
  fn(ctx, level, line);
  return 1;
}

int tern__log_suppressed(tern__log_fn fn, void *ctx, tern__ratelim *rl, uint64_t now_ms, int level,
                         const char *what) {
  if (!rl->suppressed || !tern__ratelim_ready(rl, now_ms)) return 0;
  (void)tern__ratelim_take(rl, now_ms);
  char note[96];
  suppressed_note(rl, now_ms, ": ", "", note, sizeof(note));
  tern__logf(fn, ctx, level, "%s%s", what, note);
  return 1;
}
