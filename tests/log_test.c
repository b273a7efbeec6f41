/*
 * Log lines that strangers can cause are limited (lib/base/log.c,
 * tern__logf_limited): a flood of failed handshakes writes a few lines a
 * second, and the next line says how many were held back.
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

Test(log, a_flood_writes_a_few_lines_a_second_and_counts_the_rest) {
  tern__log_limit lim = {0};
  nlines = 0;
  int written = 0;
  for (int i = 0; i < 20000; i++) /* 20,000 in the first second */
    written += tern__logf_limited(keep, NULL, &lim, 1000 + (uint64_t)i / 20, 5, 1000, 1, "failed %d", i);
  cr_assert_eq(written, 5);
  cr_assert_eq(nlines, 5);
  cr_assert_str_eq(lines[0], "failed 0");
  /* A second later: the next line, with the count of those held back. */
  cr_assert_eq(tern__logf_limited(keep, NULL, &lim, 2000, 5, 1000, 1, "failed %s", "again"), 1);
  cr_assert_str_eq(lines[5], "failed again (and 19995 more like it not logged)");
  cr_assert_eq(tern__logf_limited(keep, NULL, &lim, 2001, 5, 1000, 1, "quiet"), 1);
  cr_assert_str_eq(lines[6], "quiet", "the count was given twice");
}
