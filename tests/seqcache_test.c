/*
 * The relay store's counter cache (lib/store/seqcache.h): values found by
 * kind and name, chain keys that cannot be confused by where the name is
 * cut, dirty entries written back in the order they became dirty and kept
 * across table growth, and emptied past its bound once clean.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "store/seqcache.h"

typedef struct written {
  char what[4096][48];
  size_t n;
} written;

static int record(void *ctx, int kind, const char *user, const char *sender, uint64_t val) {
  written *w = ctx;
  cr_assert_lt(w->n, 4096);
  snprintf(w->what[w->n++], sizeof w->what[0], "%d %s %s %llu", kind, user, sender ? sender : "-",
           (unsigned long long)val);
  return 0;
}

static int refuse_third(void *ctx, int kind, const char *user, const char *sender, uint64_t val) {
  (void)kind, (void)user, (void)sender, (void)val;
  return ++*(int *)ctx == 3 ? -7 : 0;
}

Test(seqcache, finds_by_kind_and_name) {
  tern__seqcache *c = tern__seqcache_new();
  uint64_t v = 0;
  cr_assert_eq(tern__seqcache_get(c, TERN__SC_NEXT, "alice", NULL, &v), 0);
  cr_assert_eq(tern__seqcache_put(c, TERN__SC_NEXT, "alice", NULL, 7, 0), 0);
  cr_assert_eq(tern__seqcache_put(c, TERN__SC_CHAIN, "ab", "c", 1, 0), 0);
  cr_assert_eq(tern__seqcache_put(c, TERN__SC_CHAIN, "a", "bc", 2, 0), 0);
  cr_assert_eq(tern__seqcache_get(c, TERN__SC_NEXT, "alice", NULL, &v), 1);
  cr_assert_eq(v, 7);
  cr_assert_eq(tern__seqcache_get(c, TERN__SC_CHAIN, "alice", "alice", &v), 0, "another kind");
  cr_assert_eq(tern__seqcache_get(c, TERN__SC_CHAIN, "ab", "c", &v), 1);
  cr_assert_eq(v, 1);
  cr_assert_eq(tern__seqcache_get(c, TERN__SC_CHAIN, "a", "bc", &v), 1);
  cr_assert_eq(v, 2, "(ab, c) and (a, bc) are two chains");
  cr_assert_eq(tern__seqcache_get(c, TERN__SC_NEXT, "alic", NULL, &v), 0);
  cr_assert_eq(tern__seqcache_dirty(c), 0);
  tern__seqcache_free(c);
}

Test(seqcache, dirty_entries_are_written_in_order_across_growth) {
  tern__seqcache *c = tern__seqcache_new();
  char name[32];
  /* Clean entries first, so that the table grows while dirty ones exist. */
  for (int i = 0; i < 300; i++) {
    snprintf(name, sizeof name, "u%d", i);
    cr_assert_eq(tern__seqcache_put(c, TERN__SC_NEXT, name, NULL, (uint64_t)i, i % 3 == 0), 0);
  }
  for (int i = 0; i < 300; i += 2) {
    snprintf(name, sizeof name, "u%d", i);
    cr_assert_eq(tern__seqcache_put(c, TERN__SC_CHAIN, name, "s", 1000u + (uint64_t)i, 1), 0);
  }
  /* A value moved again stays where it first became dirty. */
  cr_assert_eq(tern__seqcache_put(c, TERN__SC_NEXT, "u0", NULL, 99, 1), 0);
  cr_assert_eq(tern__seqcache_dirty(c), 100 + 150);
  static written w;
  w.n = 0;
  cr_assert_eq(tern__seqcache_each_dirty(c, record, &w), 0);
  cr_assert_eq(w.n, 250);
  cr_assert_str_eq(w.what[0], "0 u0 - 99");
  cr_assert_str_eq(w.what[1], "0 u3 - 3");
  cr_assert_str_eq(w.what[99], "0 u297 - 297");
  cr_assert_str_eq(w.what[100], "1 u0 s 1000");
  cr_assert_str_eq(w.what[249], "1 u298 s 1298");
  int calls = 0;
  cr_assert_eq(tern__seqcache_each_dirty(c, refuse_third, &calls), -7, "the writer's failure comes back");
  cr_assert_eq(calls, 3, "and stops the walk");
  tern__seqcache_clean(c);
  cr_assert_eq(tern__seqcache_dirty(c), 0);
  uint64_t v = 0;
  cr_assert_eq(tern__seqcache_get(c, TERN__SC_NEXT, "u0", NULL, &v), 1, "clean entries stay");
  cr_assert_eq(v, 99);
  w.n = 0;
  cr_assert_eq(tern__seqcache_each_dirty(c, record, &w), 0);
  cr_assert_eq(w.n, 0);
  tern__seqcache_free(c);
}

Test(seqcache, clear_forgets_dirty_entries_too) {
  tern__seqcache *c = tern__seqcache_new();
  cr_assert_eq(tern__seqcache_put(c, TERN__SC_NEXT, "alice", NULL, 5, 1), 0);
  tern__seqcache_clear(c);
  uint64_t v = 0;
  cr_assert_eq(tern__seqcache_get(c, TERN__SC_NEXT, "alice", NULL, &v), 0);
  cr_assert_eq(tern__seqcache_dirty(c), 0);
  cr_assert_eq(tern__seqcache_put(c, TERN__SC_NEXT, "alice", NULL, 6, 1), 0, "usable after clearing");
  cr_assert_eq(tern__seqcache_dirty(c), 1);
  tern__seqcache_free(c);
}

Test(seqcache, a_cache_past_its_bound_is_emptied_once_clean) {
  tern__seqcache *c = tern__seqcache_new();
  char name[32];
  for (unsigned i = 0; i <= TERN__SC_MAX; i++) {
    snprintf(name, sizeof name, "u%u", i);
    cr_assert_eq(tern__seqcache_put(c, TERN__SC_NEXT, name, NULL, i, i == 5), 0);
  }
  uint64_t v = 0;
  cr_assert_eq(tern__seqcache_get(c, TERN__SC_NEXT, "u5", NULL, &v), 1, "nothing goes while dirty");
  tern__seqcache_clean(c);
  cr_assert_eq(tern__seqcache_get(c, TERN__SC_NEXT, "u5", NULL, &v), 0);
  cr_assert_eq(tern__seqcache_get(c, TERN__SC_NEXT, "u7", NULL, &v), 0);
  tern__seqcache_free(c);
}
