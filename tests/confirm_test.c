/*
 * The entries a cluster relay took on one server's word
 * (lib/cluster/confirm.c): each is confirmed by the log giving the same
 * entry at its sequence, or shown wrong by another one there; the oldest
 * is the one due to be read again.
 */
#include <criterion/criterion.h>
#include <string.h>

#ifndef TERN_HAVE_CLUSTER
Test(confirm, not_built) { cr_skip_test("libtern was built without the cluster store (TERN_CLUSTER)"); }
#else
#include "cluster/confirm.h"
#include "tern/tern.h"

Test(confirm, the_log_giving_the_same_entry_confirms_it) {
  tern__confirm c = {0};
  cr_assert_eq(tern__confirm_add(&c, 10, "ra-1", 100), 0);
  cr_assert_eq(tern__confirm_add(&c, 11, "rb-7", 150), 0);
  cr_assert_eq(tern__confirm_add(&c, 12, "ra-2", 200), 0);
  cr_assert_eq(tern__confirm_pending(&c), 3);
  cr_assert_eq(tern__confirm_check(&c, 9, "rz-1", NULL), 0, "nothing taken at 9");
  cr_assert_eq(tern__confirm_check(&c, 11, "rb-7", NULL), 1);
  cr_assert_eq(tern__confirm_check(&c, 11, "rb-7", NULL), 0, "confirmed once, then forgotten");
  cr_assert_eq(tern__confirm_pending(&c), 2);
  cr_assert_eq(tern__confirm_check(&c, 10, "ra-1", NULL), 1);
  cr_assert_eq(tern__confirm_check(&c, 12, "ra-2", NULL), 1);
  cr_assert_eq(tern__confirm_pending(&c), 0);
  cr_assert_null(tern__confirm_due(&c, 1000));
  tern__confirm_free(&c);
}

Test(confirm, another_entry_at_the_sequence_says_which_was_taken) {
  tern__confirm c = {0};
  cr_assert_eq(tern__confirm_add(&c, 3144, "rb86-862", 5), 0);
  const char *took = NULL;
  cr_assert_eq(tern__confirm_check(&c, 3144, "rb86-859", &took), -1);
  cr_assert_str_eq(took, "rb86-862");
  cr_assert_eq(tern__confirm_check(&c, 3144, "rb86-86", NULL), -1, "a prefix is another id");
  cr_assert_eq(tern__confirm_pending(&c), 1, "still pending: the caller goes back");
  tern__confirm_clear(&c);
  cr_assert_eq(tern__confirm_pending(&c), 0);
  tern__confirm_free(&c);
}

Test(confirm, the_oldest_pending_entry_is_due_first) {
  tern__confirm c = {0};
  for (uint64_t i = 1; i <= 5; i++) cr_assert_eq(tern__confirm_add(&c, i, "r-x", i * 1000), 0);
  cr_assert_null(tern__confirm_due(&c, 999), "none taken by then");
  const tern__confirm_ent *e = tern__confirm_due(&c, 2500);
  cr_assert_not_null(e);
  cr_assert_eq(e->seq, 1);
  cr_assert_eq(tern__confirm_check(&c, 1, "r-x", NULL), 1);
  e = tern__confirm_due(&c, 2500);
  cr_assert_not_null(e);
  cr_assert_eq(e->seq, 2);
  tern__confirm_drop(&c, 2); /* compacted away */
  cr_assert_null(tern__confirm_due(&c, 2500));
  cr_assert_eq(tern__confirm_due(&c, 3000)->seq, 3);
  tern__confirm_free(&c);
}

Test(confirm, going_back_drops_what_was_taken_after) {
  tern__confirm c = {0};
  for (uint64_t i = 1; i <= 5; i++) cr_assert_eq(tern__confirm_add(&c, i * 10, "r-x", i), 0);
  cr_assert_eq(tern__confirm_add(&c, 30, "r-y", 9), 0, "the replica went back to 29");
  cr_assert_eq(tern__confirm_pending(&c), 3, "10, 20 and the new 30");
  cr_assert_eq(tern__confirm_check(&c, 40, "r-x", NULL), 0, "40 was dropped");
  cr_assert_eq(tern__confirm_check(&c, 30, "r-y", NULL), 1);
  tern__confirm_free(&c);
}

Test(confirm, many_entries_and_a_long_id) {
  tern__confirm c = {0};
  char id[80];
  memset(id, 'q', sizeof id - 1);
  id[sizeof id - 1] = 0;
  for (uint64_t i = 1; i <= 4000; i++) cr_assert_eq(tern__confirm_add(&c, i, id, i), 0);
  cr_assert_eq(tern__confirm_pending(&c), 4000);
  /* Confirmed out of order: every other one, then the rest. */
  for (uint64_t i = 2; i <= 4000; i += 2) cr_assert_eq(tern__confirm_check(&c, i, id, NULL), 1);
  for (uint64_t i = 1; i <= 4000; i += 2) cr_assert_eq(tern__confirm_check(&c, i, id, NULL), 1);
  cr_assert_eq(tern__confirm_pending(&c), 0);
  /* Space freed at the front is used again. */
  for (uint64_t i = 4001; i <= 4100; i++) cr_assert_eq(tern__confirm_add(&c, i, "r-z", i), 0);
  cr_assert_eq(tern__confirm_due(&c, UINT64_MAX)->seq, 4001);
  tern__confirm_free(&c);
}
#endif
