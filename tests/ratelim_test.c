/*
 * The token bucket of lib/base/ratelim.c: a burst, then one event per
 * period, refusals counted exactly and handed out once.
 */
#include <criterion/criterion.h>

#include "base/ratelim.h"

Test(ratelim, a_burst_then_one_per_period) {
  tern__ratelim rl;
  tern__ratelim_init(&rl, 10, 1000);
  int ok = 0;
  for (int i = 0; i < 100; i++) ok += tern__ratelim_take(&rl, 5000);
  cr_assert_eq(ok, 10);
  cr_assert_eq(tern__ratelim_take(&rl, 5999), 0);
  cr_assert_eq(tern__ratelim_take(&rl, 6000), 1);
  cr_assert_eq(tern__ratelim_take(&rl, 6000), 0);
  /* 3.5 periods later: 3 tokens, and the half period is kept. */
  cr_assert_eq(tern__ratelim_take(&rl, 9500), 1);
  cr_assert_eq(tern__ratelim_take(&rl, 9500), 1);
  cr_assert_eq(tern__ratelim_take(&rl, 9500), 1);
  cr_assert_eq(tern__ratelim_take(&rl, 9500), 0);
  cr_assert_eq(tern__ratelim_take(&rl, 10000), 1);
}

Test(ratelim, refusals_are_counted_exactly_and_handed_out_once) {
  tern__ratelim rl;
  tern__ratelim_init(&rl, 1, 1000);
  cr_assert_eq(tern__ratelim_take(&rl, 100), 1);
  for (int i = 0; i < 20000; i++) cr_assert_eq(tern__ratelim_take(&rl, 200 + (uint64_t)i / 100), 0);
  uint64_t span = 0;
  cr_assert_eq(tern__ratelim_take_suppressed(&rl, 2200, &span), 20000);
  cr_assert_eq(span, 2000);
  cr_assert_eq(tern__ratelim_take_suppressed(&rl, 2300, &span), 0);
  cr_assert_eq(span, 0);
}

Test(ratelim, never_more_than_the_burst_after_a_long_quiet) {
  tern__ratelim rl;
  tern__ratelim_init(&rl, 3, 10);
  int ok = 0;
  for (int i = 0; i < 10; i++) ok += tern__ratelim_take(&rl, 1000000);
  cr_assert_eq(ok, 3);
  cr_assert(tern__ratelim_ready(&rl, 1000010));
  cr_assert_eq(rl.suppressed, 7, "ready() takes nothing and counts nothing");
}

Test(ratelim, time_going_back_earns_nothing_and_a_zeroed_bucket_works) {
  tern__ratelim rl = {0};
  cr_assert_eq(tern__ratelim_take(&rl, 5000), 1);
  cr_assert_eq(tern__ratelim_take(&rl, 5000), 0, "a zeroed bucket holds one, a second apart");
  cr_assert_eq(tern__ratelim_take(&rl, 1000), 0);
  cr_assert_eq(tern__ratelim_take(&rl, 6000), 1);
}
