/*
 * The 64-bit key map (lib/base/u64map.h), as the outbox uses it: after any mix of adds
 * and removals every present cmid finds its entry and no removed one is
 * found, across table growth and the backward shifts of removal.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>

#include "base/u64map.h"

#define N 20000

static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

Test(u64map, finds_what_is_present_and_nothing_removed) {
  tern__u64map m;
  tern__u64map_init(&m);
  static char present[N + 1];
  static int vals[N + 1];
  uint64_t seed = 88172645463325252ull;
  /* An outbox's life: cmids added in order, removed in a loose order
   * (acks overtake each other), with removals of absent ones mixed in. */
  uint64_t next = 1;
  for (int round = 0; round < 200000; round++) {
    uint64_t r = rnd(&seed);
    if ((r % 3) != 0 && next <= N) {
      cr_assert_eq(tern__u64map_put(&m, next, &vals[next]), 0);
      present[next] = 1;
      next++;
    } else if (next > 1) {
      uint64_t c = 1 + (r >> 8) % (next - 1);
      tern__u64map_del(&m, c);
      present[c] = 0;
    }
  }
  size_t n = 0;
  for (uint64_t c = 1; c <= N; c++) {
    void *p = tern__u64map_get(&m, c);
    if (present[c]) {
      n++;
      cr_assert_eq(p, &vals[c], "cmid %llu", (unsigned long long)c);
    } else {
      cr_assert_null(p, "cmid %llu was removed or never added", (unsigned long long)c);
    }
  }
  cr_assert_eq(m.n, n);
  cr_assert_null(tern__u64map_get(&m, 0));
  cr_assert_null(tern__u64map_get(&m, N + 5));
  /* Emptied, it finds nothing and takes new keys. */
  for (uint64_t c = 1; c <= N; c++) tern__u64map_del(&m, c);
  cr_assert_eq(m.n, 0);
  cr_assert_null(tern__u64map_get(&m, 1));
  cr_assert_eq(tern__u64map_put(&m, 7, &vals[7]), 0);
  cr_assert_eq(tern__u64map_get(&m, 7), &vals[7]);
  tern__u64map_free(&m);
}
