/*
 * The relays' cross-check of the log (lib/cluster/xcheck.c): windows of
 * entries hashed alike on replicas that took the same entries, a replica
 * outvoted only by two or more relays with none agreeing, and snapshots
 * only of windows another relay agreed with.
 */
#include <criterion/criterion.h>
#include <string.h>

#ifndef TERN_HAVE_CLUSTER
Test(xcheck, not_built) { cr_skip_test("libtern was built without the cluster store (TERN_CLUSTER)"); }
#else
#include "cluster/xcheck.h"

static tern__xcheck X[3];

/* Entries from..to written by "w-<seq>", all applied; the hash of the
 * window ending at `to`, if one ends there. */
static int feed(tern__xcheck *x, uint64_t from, uint64_t to, uint64_t swap_at, uint8_t h[16]) {
  int ended = 0;
  for (uint64_t q = from; q <= to; q++) {
    char id[32];
    snprintf(id, sizeof id, "w-%llu", (unsigned long long)(q == swap_at ? q + 1 : q));
    uint64_t end = 0;
    uint8_t d[16];
    if (tern__xcheck_take(x, q, id, 1, &end, d)) {
      cr_assert_eq(end, q);
      memcpy(h, d, 16);
      ended = 1;
    } else {
      ended = 0;
    }
  }
  return ended;
}

Test(xcheck, the_same_entries_hash_alike_and_another_entry_does_not) {
  uint8_t h[3][16];
  for (int i = 0; i < 3; i++) {
    memset(&X[i], 0, sizeof X[i]);
    tern__xcheck_reset(&X[i], 8, 0);
  }
  cr_assert(feed(&X[0], 1, 8, 0, h[0]));
  cr_assert(feed(&X[1], 1, 8, 0, h[1]));
  cr_assert(feed(&X[2], 1, 8, 5, h[2]));
  cr_assert_eq(memcmp(h[0], h[1], 16), 0);
  cr_assert_neq(memcmp(h[0], h[2], 16), 0);
  cr_assert_eq(feed(&X[0], 9, 15, 0, h[0]), 0, "no window ends at 15");
}

Test(xcheck, two_against_and_none_for_outvotes) {
  uint8_t h[3][16];
  for (int i = 0; i < 3; i++) {
    memset(&X[i], 0, sizeof X[i]);
    tern__xcheck_reset(&X[i], 8, 0);
  }
  feed(&X[0], 1, 16, 0, h[0]);
  feed(&X[1], 1, 16, 0, h[1]);
  uint8_t bad8[16];
  feed(&X[2], 1, 8, 3, bad8);
  feed(&X[2], 9, 16, 0, h[2]);
  /* The window ending at 8: a and b said theirs; c hashed it otherwise. */
  uint8_t good8[16];
  tern__xcheck t;
  memset(&t, 0, sizeof t);
  tern__xcheck_reset(&t, 8, 0);
  feed(&t, 1, 8, 0, good8);
  tern__xcheck_heard_one(&X[2], 8, good8, 111, 1000);
  cr_assert_eq(tern__xcheck_outvoted(&X[2]), 0, "one against: not enough");
  tern__xcheck_heard_one(&X[2], 8, good8, 111, 1000);
  cr_assert_eq(tern__xcheck_outvoted(&X[2]), 0, "the same relay twice counts once");
  tern__xcheck_heard_one(&X[2], 8, good8, 222, 1000);
  cr_assert_eq(tern__xcheck_outvoted(&X[2]), 8);
  /* a hears b alike and c otherwise: not outvoted. */
  tern__xcheck_heard_one(&X[0], 8, good8, 222, 1000);
  tern__xcheck_heard_one(&X[0], 8, bad8, 333, 1000);
  cr_assert_eq(tern__xcheck_outvoted(&X[0]), 0);
  /* Going back forgets the windows (and their votes). */
  tern__xcheck_reset(&X[2], 8, 16);
  cr_assert_eq(tern__xcheck_outvoted(&X[2]), 0);
}

Test(xcheck, hashes_heard_before_the_window_is_reached_count) {
  uint8_t good[16], h[16];
  tern__xcheck t;
  memset(&t, 0, sizeof t);
  tern__xcheck_reset(&t, 8, 0);
  feed(&t, 1, 8, 0, good);
  memset(&X[0], 0, sizeof X[0]);
  tern__xcheck_reset(&X[0], 8, 0);
  tern__xcheck_heard_one(&X[0], 8, good, 1, 50);
  tern__xcheck_heard_one(&X[0], 8, good, 2, 50);
  feed(&X[0], 1, 8, 4, h);
  cr_assert_eq(tern__xcheck_outvoted(&X[0]), 8);
}

Test(xcheck, a_window_not_taken_whole_is_not_told) {
  uint8_t h[16];
  memset(&X[0], 0, sizeof X[0]);
  tern__xcheck_reset(&X[0], 8, 5); /* a snapshot at 5 */
  cr_assert_eq(feed(&X[0], 6, 8, 0, h), 0, "1-5 came in a snapshot");
  cr_assert_eq(feed(&X[0], 9, 16, 0, h), 1);
  cr_assert_eq(feed(&X[0], 18, 24, 0, h), 0, "17 skipped: the window 17-24 is not whole");
  cr_assert_eq(feed(&X[0], 25, 32, 0, h), 1, "the next one is");
}

Test(xcheck, snapshots_wait_for_another_relays_agreement) {
  uint8_t h[16], good[16];
  tern__xcheck t;
  memset(&t, 0, sizeof t);
  tern__xcheck_reset(&t, 8, 0);
  feed(&t, 1, 16, 0, good);
  memset(&X[0], 0, sizeof X[0]);
  tern__xcheck_reset(&X[0], 8, 0);
  uint8_t h8[16];
  feed(&X[0], 1, 8, 0, h8);
  feed(&X[0], 9, 16, 0, h);
  cr_assert(tern__xcheck_may_snapshot(&X[0], 16, 1000, 30000), "nobody else heard: alone");
  tern__xcheck_heard_one(&X[0], 24, good, 7, 1000); /* a relay exists */
  cr_assert_not(tern__xcheck_may_snapshot(&X[0], 16, 2000, 30000), "16 not agreed yet");
  tern__xcheck_heard_one(&X[0], 16, good, 7, 2000);
  cr_assert(tern__xcheck_may_snapshot(&X[0], 16, 2000, 30000));
  cr_assert(tern__xcheck_may_snapshot(&X[0], 20, 2000, 30000), "its last window, 16, agreed");
  uint8_t bad[16];
  memset(bad, 0x5a, sizeof bad);
  tern__xcheck_heard_one(&X[0], 8, bad, 9, 2000);
  cr_assert_not(tern__xcheck_may_snapshot(&X[0], 16, 2000, 30000), "8 disputed, none for it");
  tern__xcheck_heard_one(&X[0], 8, h8, 7, 2000);
  cr_assert(tern__xcheck_may_snapshot(&X[0], 16, 2000, 30000), "8 agreed by one");
  cr_assert(tern__xcheck_may_snapshot(&X[0], 16, 40000, 30000), "the others silent for 30 s");
}

Test(xcheck, a_window_read_again_the_same_is_settled) {
  uint8_t h[16], other[16], mine[16];
  memset(&X[0], 0, sizeof X[0]);
  tern__xcheck_reset(&X[0], 8, 0);
  feed(&X[0], 1, 8, 0, h);
  cr_assert(tern__xcheck_own(&X[0], 8, mine));
  cr_assert_eq(memcmp(mine, h, 16), 0);
  cr_assert_not(tern__xcheck_own(&X[0], 16, mine), "not reached");
  memset(other, 0x33, sizeof other);
  tern__xcheck_heard_one(&X[0], 8, other, 1, 10);
  cr_assert(tern__xcheck_disputed(&X[0], 8));
  cr_assert_not(tern__xcheck_disputed(&X[0], 7), "below the window");
  tern__xcheck_heard_one(&X[0], 8, other, 2, 10);
  cr_assert_eq(tern__xcheck_outvoted(&X[0]), 8);
  tern__xcheck_settle(&X[0], 8);
  cr_assert_eq(tern__xcheck_outvoted(&X[0]), 0, "settled");
  cr_assert_not(tern__xcheck_disputed(&X[0], 8));
  /* Settling a window not reached changes nothing: the hashes heard for
   * it vote when it is taken. */
  tern__xcheck_heard_one(&X[0], 16, other, 1, 10);
  tern__xcheck_heard_one(&X[0], 16, other, 2, 10);
  tern__xcheck_settle(&X[0], 16); /* not reached: nothing to settle */
  feed(&X[0], 9, 16, 0, h);
  cr_assert_eq(tern__xcheck_outvoted(&X[0]), 16, "the ring's hashes voted");
}
#endif
