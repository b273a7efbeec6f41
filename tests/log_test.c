/*
 * Log lines that strangers can cause are limited (lib/base/log.c,
 * tern__logf_limited, through a token bucket of lib/base/ratelim.c): a
 * flood writes a burst and then one line a second, and what was held back
 * is counted exactly, in the next line or in a summary.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"

static char lines[16][TERN__LOG_LINE];
static int nlines;

static void keep(void *ctx, int level, const char *line) {
  (void)ctx;
  (void)level;
  if (nlines < 16) snprintf(lines[nlines], sizeof lines[0], "%s", line);
  nlines++;
}

Test(log, a_flood_writes_a_burst_and_counts_the_rest) {
  tern__ratelim rl;
  tern__ratelim_init(&rl, 5, 1000);
  nlines = 0;
  int written = 0;
  for (int i = 0; i < 20000; i++) /* 20,000 in the first second */
    written += tern__logf_limited(keep, NULL, &rl, 1000 + (uint64_t)i / 20, 1, "failed %d", i);
  cr_assert_eq(written, 5);
  cr_assert_eq(nlines, 5);
  cr_assert_str_eq(lines[0], "failed 0");
  /* A second after the first line: the next line, with the count. */
  cr_assert_eq(tern__logf_limited(keep, NULL, &rl, 2000, 1, "failed %s", "again"), 1);
  cr_assert_str_eq(lines[5], "failed again (19995 similar lines suppressed in the last 1 s)");
  cr_assert_eq(tern__logf_limited(keep, NULL, &rl, 3000, 1, "quiet"), 1);
  cr_assert_str_eq(lines[6], "quiet", "the count was given twice");
}

Test(log, a_flood_that_stops_is_summed_up) {
  tern__ratelim rl;
  tern__ratelim_init(&rl, 2, 1000);
  nlines = 0;
  for (int i = 0; i < 10; i++) (void)tern__logf_limited(keep, NULL, &rl, 500, 1, "failed %d", i);
  cr_assert_eq(tern__log_suppressed(keep, NULL, &rl, 900, 1, "failed"), 0, "no token yet");
  cr_assert_eq(tern__log_suppressed(keep, NULL, &rl, 3500, 1, "failed"), 1);
  cr_assert_str_eq(lines[2], "failed: 8 similar lines suppressed in the last 3 s");
  cr_assert_eq(tern__log_suppressed(keep, NULL, &rl, 9000, 1, "failed"), 0, "nothing left");
  cr_assert_eq(nlines, 3);
}

Test(log, the_count_survives_a_line_cut_short) {
  tern__ratelim rl;
  tern__ratelim_init(&rl, 1, 1000);
  nlines = 0;
  char big[TERN__LOG_LINE * 2];
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = 0;
  (void)tern__logf_limited(keep, NULL, &rl, 0, 1, "%s", big);
  (void)tern__logf_limited(keep, NULL, &rl, 1, 1, "%s", big);
  cr_assert_eq(tern__logf_limited(keep, NULL, &rl, 1000, 1, "%s", big), 1);
  const char *tail = " (1 similar line suppressed in the last 1 s)";
  size_t n = strlen(lines[1]);
  cr_assert_eq(n, TERN__LOG_LINE - 1);
  cr_assert_str_eq(lines[1] + n - strlen(tail), tail);
}
