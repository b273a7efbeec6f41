/* The copy schedule (lib/wire/copies.h, spec/wire.md §2 "Copies"). */
#include <criterion/criterion.h>

#include "wire/copies.h"

Test(copies, d_is_a_fifth_of_the_rtt_within_bounds) {
  cr_assert_eq(tern__copy_delay(0, 5, 30), 30, "unknown RTT: the maximum");
  cr_assert_eq(tern__copy_delay(1, 5, 30), 5, "loopback: the minimum");
  cr_assert_eq(tern__copy_delay(20, 5, 30), 5);
  cr_assert_eq(tern__copy_delay(50, 5, 30), 10);
  cr_assert_eq(tern__copy_delay(100, 5, 30), 20);
  cr_assert_eq(tern__copy_delay(600, 5, 30), 30, "long paths: the maximum");
}

Test(copies, only_copies_that_leave_within_one_rtt) {
  cr_assert_eq(tern__copies_before(0, 30, 2), 2, "unknown RTT: all");
  cr_assert_eq(tern__copies_before(1, 5, 2), 0, "loopback: none");
  cr_assert_eq(tern__copies_before(5, 5, 2), 0, "the first would leave after one RTT");
  cr_assert_eq(tern__copies_before(6, 5, 2), 1);
  cr_assert_eq(tern__copies_before(15, 5, 2), 1, "the second (at 15) would not beat ENet");
  cr_assert_eq(tern__copies_before(16, 5, 2), 2);
  cr_assert_eq(tern__copies_before(20, 5, 2), 2);
  cr_assert_eq(tern__copies_before(100, 20, 2), 2, "20 and 60 ms");
  cr_assert_eq(tern__copies_before(100, 20, 3), 2, "a third at 100 ms would not");
  cr_assert_eq(tern__copies_before(600, 30, 2), 2);
  cr_assert_eq(tern__copies_before(100, 20, 0), 0, "copy_count 0: none");
  cr_assert_eq(tern__copies_before(UINT32_MAX, UINT32_MAX / 2, UINT32_MAX), 1, "no overflow");
}

Test(copies, copy_one_at_half_d_then_three_d) {
  cr_assert_eq(tern__copy_at(20, 1), 10, "RTT 100: copy 1 at d / 2 = 10 ms");
  cr_assert_eq(tern__copy_at(30, 1), 15);
  cr_assert_eq(tern__copy_at(5, 1), 2);
  cr_assert_eq(tern__copy_at(1, 1), 1, "at least 1 ms: not in the transmission's datagram");
  cr_assert_eq(tern__copy_at(20, 2), 60, "RTT 100: copy 2 at 3 d = 60 ms");
  cr_assert_eq(tern__copy_at(30, 2), 90);
  cr_assert_eq(tern__copy_at(20, 3), 100);
  cr_assert_eq(tern__copy_at(5, 2), 15, "RTT 16: 15 ms, within the RTT");
  cr_assert_eq(tern__copy_at(UINT32_MAX, 3), 5 * (uint64_t)UINT32_MAX, "no overflow");
  /* Every copy a session gets leaves within one RTT. */
  for (uint32_t rtt = 1; rtt < 700; rtt++) {
    uint32_t d = tern__copy_delay(rtt, 5, 30);
    uint32_t n = tern__copies_before(rtt, d, 2);
    for (uint32_t k = 1; k <= n; k++)
      cr_assert_lt(tern__copy_at(d, k), rtt, "RTT %u: copy %u at %llu", rtt, k,
                   (unsigned long long)tern__copy_at(d, k));
  }
}
