/*
 * Tests of lib/wire/replay.c, the anti-replay window: the rules a receiver
 * relies on (each counter accepted once, TERN__REPLAY_WINDOW counters below
 * the highest still acceptable, nothing older), the ring's clearing on
 * forward jumps of every size, and a long randomized run against a naive
 * model that remembers every counter it has ever accepted.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire/replay.h"
#include "tern/tern.h"

/* Check, then mark as seen if accepted: what the session does with a
 * packet that authenticated. Returns the check's result. */
static int take(tern__replay *w, uint64_t n) {
  int rc = tern__replay_check(w, n);
  cr_assert(rc == 0 || rc == TERN_EREPLAY, "check returned %d", rc);
  if (rc == 0) tern__replay_update(w, n);
  return rc;
}

Test(replay, window_is_2048) { cr_assert_eq(TERN__REPLAY_WINDOW, 2048); }

Test(replay, in_order_counters_are_accepted_and_duplicates_refused) {
  tern__replay w;
  tern__replay_init(&w);
  for (uint64_t n = 0; n < 10000; n++) {
    cr_assert_eq(take(&w, n), 0, "counter %llu refused", (unsigned long long)n);
    cr_assert_eq(tern__replay_check(&w, n), TERN_EREPLAY, "counter %llu accepted twice",
                 (unsigned long long)n);
    if (n) cr_assert_eq(tern__replay_check(&w, n - 1), TERN_EREPLAY);
  }
}

Test(replay, check_does_not_change_the_window) {
  tern__replay w;
  tern__replay_init(&w);
  cr_assert_eq(tern__replay_check(&w, 5), 0);
  cr_assert_eq(tern__replay_check(&w, 5), 0, "check alone must not mark a counter");
  tern__replay before = w;
  cr_assert_eq(tern__replay_check(&w, 1000000), 0);
  cr_assert_eq(memcmp(&before, &w, sizeof w), 0);
}

Test(replay, out_of_order_within_the_window_is_accepted_once) {
  tern__replay w;
  tern__replay_init(&w);
  /* Evens first, then odds, in a window of 2000 counters. */
  cr_assert_eq(take(&w, 2000), 0);
  for (uint64_t n = 2; n < 2000; n += 2) cr_assert_eq(take(&w, n), 0);
  for (uint64_t n = 1999; n >= 1 && n < 2000; n -= 2) {
    cr_assert_eq(take(&w, n), 0, "late counter %llu refused", (unsigned long long)n);
    cr_assert_eq(take(&w, n), TERN_EREPLAY, "late counter %llu accepted twice",
                 (unsigned long long)n);
  }
  for (uint64_t n = 2; n <= 2000; n += 2) cr_assert_eq(take(&w, n), TERN_EREPLAY);
}

Test(replay, the_window_edge_is_exact) {
  const uint64_t tops[] = {2047, 2048, 4095, 10000, 64 * 33, 64 * 33 - 1, 1ull << 40,
                           UINT64_MAX - 1};
  for (size_t i = 0; i < sizeof tops / sizeof tops[0]; i++) {
    uint64_t top = tops[i];
    tern__replay w;
    tern__replay_init(&w);
    cr_assert_eq(take(&w, top), 0);
    cr_assert_eq(tern__replay_check(&w, top - 2047), 0, "top %llu: top-2047 refused",
                 (unsigned long long)top);
    if (top >= 2048)
      cr_assert_eq(tern__replay_check(&w, top - 2048), TERN_EREPLAY, "top %llu: top-2048 accepted",
                   (unsigned long long)top);
    if (top >= 2049) cr_assert_eq(tern__replay_check(&w, top - 2049), TERN_EREPLAY);
    if (top > 5000) cr_assert_eq(tern__replay_check(&w, 0), TERN_EREPLAY);
    /* Every counter of the window, oldest to newest, is accepted once. */
    for (uint64_t n = top - 2047; n < top; n++)
      cr_assert_eq(take(&w, n), 0, "top %llu: %llu refused", (unsigned long long)top,
                   (unsigned long long)n);
    for (uint64_t n = top - 2047; n <= top; n++) cr_assert_eq(tern__replay_check(&w, n), TERN_EREPLAY);
    cr_assert_eq(tern__replay_check(&w, top + 1), 0);
  }
}

Test(replay, the_first_counter_may_be_anything) {
  const uint64_t firsts[] = {0, 1, 63, 64, 2047, 2048, 123456789, 1ull << 59, UINT64_MAX};
  for (size_t i = 0; i < sizeof firsts / sizeof firsts[0]; i++) {
    tern__replay w;
    tern__replay_init(&w);
    cr_assert_eq(take(&w, firsts[i]), 0);
    cr_assert_eq(take(&w, firsts[i]), TERN_EREPLAY, "first counter %llu accepted twice",
                 (unsigned long long)firsts[i]);
    if (firsts[i]) cr_assert_eq(take(&w, firsts[i] - 1), 0);
  }
}

Test(replay, counters_up_to_the_top_of_the_range) {
  tern__replay w;
  tern__replay_init(&w);
  for (uint64_t n = UINT64_MAX - 3000;; n++) {
    cr_assert_eq(take(&w, n), 0);
    if (n == UINT64_MAX) break;
  }
  cr_assert_eq(tern__replay_check(&w, UINT64_MAX), TERN_EREPLAY);
  cr_assert_eq(tern__replay_check(&w, UINT64_MAX - 2047), TERN_EREPLAY);
  cr_assert_eq(tern__replay_check(&w, UINT64_MAX - 2048), TERN_EREPLAY);
}

/* Jumps forward by every distance from a window whose every counter is
 * seen, and checks each counter of the new window: seen iff it was seen
 * before the jump. A ring block that is not cleared shows up here as an old
 * counter's bit making a new counter look replayed. */
Test(replay, forward_jumps_of_every_size_clear_exactly_what_they_pass) {
  const uint64_t base = 100000 + 37; /* not block-aligned */
  for (uint64_t d = 1; d <= 3 * 64 * TERN__REPLAY_BLOCKS; d++) {
    tern__replay w;
    tern__replay_init(&w);
    for (uint64_t n = base - 2047; n <= base; n++) tern__replay_update(&w, n);
    uint64_t top = base + d;
    tern__replay_update(&w, top);
    for (uint64_t n = top - 2047; n < top; n++) {
      int want = n <= base ? TERN_EREPLAY : 0;
      int got = tern__replay_check(&w, n);
      if (got != want)
        cr_assert_fail("jump %llu: counter %llu (top %llu) gave %d, want %d",
                       (unsigned long long)d, (unsigned long long)n, (unsigned long long)top, got,
                       want);
    }
  }
}

/* ------------------------------------------------------- reference model */

/* The naive model: a set of every counter accepted, plus the window rule. */
typedef struct model {
  uint64_t window; /* counters below the top that may still come */
  uint64_t *slots; /* open addressing; 0 is stored as `has_zero` */
  size_t cap;
  int has_zero;
  int any;
  uint64_t top;
} model;

static int model_seen(const model *m, uint64_t n) {
  if (n == 0) return m->has_zero;
  for (size_t i = (size_t)(n * 0x9e3779b97f4a7c15ull) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    if (m->slots[i] == n) return 1;
    if (m->slots[i] == 0) return 0;
  }
}

static void model_add(model *m, uint64_t n) {
  if (n == 0) {
    m->has_zero = 1;
    return;
  }
  size_t i = (size_t)(n * 0x9e3779b97f4a7c15ull) & (m->cap - 1);
  while (m->slots[i] != 0 && m->slots[i] != n) i = (i + 1) & (m->cap - 1);
  m->slots[i] = n;
}

static int model_check(const model *m, uint64_t n) {
  if (!m->any || n > m->top) return 0;
  if (m->top - n >= m->window) return TERN_EREPLAY;
  return model_seen(m, n) ? TERN_EREPLAY : 0;
}

static void model_update(model *m, uint64_t n) {
  model_add(m, n);
  if (!m->any || n > m->top) m->top = n;
  m->any = 1;
}

static uint64_t rng_state;

static uint64_t rng(void) { /* xorshift64*, fixed seed: the run is the same every time */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ull;
}

/* Either size of window, behind one face, so the model test runs on both. */
typedef struct win {
  int small;
  tern__replay big;
  tern__replay_small sm;
} win;

static int win_check(const win *w, uint64_t n) {
  return w->small ? tern__replay_small_check(&w->sm, n) : tern__replay_check(&w->big, n);
}

static void win_update(win *w, uint64_t n) {
  if (w->small)
    tern__replay_small_update(&w->sm, n);
  else
    tern__replay_update(&w->big, n);
}

static void agree_with_model(int small) {
  const int ops = 100000;
  const uint64_t W = small ? TERN__REPLAY_SMALL_WINDOW : TERN__REPLAY_WINDOW;
  const uint64_t blocks = small ? TERN__REPLAY_SMALL_BLOCKS : TERN__REPLAY_BLOCKS;
  model m = {.cap = 1 << 18, .window = W};
  m.slots = calloc(m.cap, sizeof *m.slots);
  cr_assert_not_null(m.slots);
  static win w;
  memset(&w, 0, sizeof w);
  w.small = small;
  tern__replay_init(&w.big);
  tern__replay_small_init(&w.sm);
  rng_state = 0x7465726e7265706cull; /* "ternrepl" */

  uint64_t last = rng() >> 14; /* the first counter is arbitrary */
  int accepted = 0, refused = 0;
  uint64_t recent[64] = {0}; /* counters accepted lately, for true duplicates */
  for (int i = 0; i < ops; i++) {
    uint64_t top = m.any ? m.top : last;
    uint64_t r = rng() % 100, n;
    if (r < 45) /* near the top, mostly behind it: reordering */
      n = top + (rng() % (W + 152)) - (W + 52);
    else if (r < 65) /* just ahead: normal traffic */
      n = top + 1 + rng() % 64;
    else if (r < 80) /* a duplicate of a counter accepted lately */
      n = recent[rng() % 64];
    else if (r < 88) /* around the window edge */
      n = top - (W - 8) - rng() % 16;
    else if (r < 94) /* a jump within a few windows */
      n = top + rng() % (3 * 64 * blocks);
    else if (r < 97) /* a big jump */
      n = top + (rng() >> 30);
    else /* anything at all below the top */
      n = top ? rng() % top : 0;
    if (n > top && top > UINT64_MAX - 1000000) n = top; /* stay clear of wrapping */

    int want = model_check(&m, n);
    int got = win_check(&w, n);
    cr_assert_eq(got, want, "%s window, op %d: counter %llu (top %llu): window says %d, model says %d",
                 small ? "small" : "large", i, (unsigned long long)n, (unsigned long long)m.top, got,
                 want);
    if (got == 0) {
      win_update(&w, n);
      model_update(&m, n);
      recent[accepted % 64] = n;
      accepted++;
    } else {
      refused++;
    }
    cr_assert_eq(small ? w.sm.top : w.big.top, m.top);
  }
  /* The mix must exercise both outcomes heavily, or it proves little. */
  cr_assert_gt(accepted, ops / 5, "only %d accepted", accepted);
  cr_assert_gt(refused, ops / 5, "only %d refused", refused);
  free(m.slots);
}

Test(replay, agrees_with_a_naive_model_over_100k_operations) { agree_with_model(0); }

Test(replay, the_small_window_agrees_with_the_model_over_100k_operations) {
  cr_assert_eq(TERN__REPLAY_SMALL_WINDOW, 128);
  agree_with_model(1);
}
