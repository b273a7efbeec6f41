/*
 * Connection racing (lib/client/race.c; RFC 8305 Happy Eyeballs with a
 * TCP lane): the order and the times at which connects start.
 */
#include <criterion/criterion.h>

#include "client/race.h"

static tern__addr a4(uint8_t last, uint16_t port) {
  tern__addr a;
  tern__addr_set_v4(&a, 0x0A000000u | last, port);
  return a;
}

/* Expects the next start at `now` to be entry `want` (-1: none). */
static void expect_next(tern__race *r, uint64_t now, long want) {
  size_t i = 99;
  int got = tern__race_next(r, now, &i);
  if (want < 0) {
    cr_assert_eq(got, 0, "at %llu ms: entry %zu started, none was due", (unsigned long long)now, i);
  } else {
    cr_assert_eq(got, 1, "at %llu ms: nothing started, entry %ld was due", (unsigned long long)now, want);
    cr_assert_eq(i, (size_t)want, "at %llu ms: entry %zu started, want %ld", (unsigned long long)now, i, want);
  }
}

Test(race, addresses_start_one_stagger_apart_in_the_order_given) {
  tern__addr addrs[3] = {a4(1, 7400), a4(2, 7400), a4(3, 7401)};
  tern__race r;
  tern__race_init(&r, addrs, 3, 0, 250, 1000, 1000);
  cr_assert_eq(r.n, 3, "no TCP port: no TCP lane");
  expect_next(&r, 1000, 0);
  expect_next(&r, 1000, -1);
  cr_assert_eq(tern__race_timeout(&r, 1000), 250);
  expect_next(&r, 1249, -1);
  expect_next(&r, 1250, 1);
  expect_next(&r, 1500, 2);
  cr_assert_eq(r.e[2].addr.port, 7401, "an endpoint keeps its own port");
  expect_next(&r, 9999, -1);
  cr_assert_eq(tern__race_timeout(&r, 1500), -1);
  cr_assert(!tern__race_lost(&r));
}

Test(race, a_failed_connect_lets_the_next_start_at_once) {
  tern__addr addrs[2] = {a4(1, 7400), a4(2, 7400)};
  tern__race r;
  tern__race_init(&r, addrs, 2, 0, 250, 1000, 0);
  expect_next(&r, 0, 0);
  tern__race_failed(&r, 0, 10);
  cr_assert_eq(tern__race_timeout(&r, 10), 0);
  expect_next(&r, 10, 1);
  tern__race_failed(&r, 1, 20);
  cr_assert(tern__race_lost(&r), "every connect failed");
}

Test(race, tcp_starts_after_its_delay_on_the_same_hosts_or_at_once_when_told) {
  tern__addr addrs[2] = {a4(1, 7400), a4(2, 7400)};
  tern__race r;
  tern__race_init(&r, addrs, 2, 443, 250, 1000, 0);
  cr_assert_eq(r.n, 4);
  cr_assert(r.e[2].tcp && r.e[3].tcp);
  cr_assert_eq(r.e[2].addr.port, 443);
  expect_next(&r, 0, 0);
  expect_next(&r, 250, 1);
  expect_next(&r, 999, -1);
  cr_assert_eq(tern__race_timeout(&r, 500), 500);
  expect_next(&r, 1000, 2);
  expect_next(&r, 1250, 3);
  /* The app's hint: TCP at once. */
  tern__race_init(&r, addrs, 2, 443, 250, 1000, 0);
  expect_next(&r, 0, 0);
  tern__race_tcp_now(&r, 5);
  expect_next(&r, 5, 2);
  expect_next(&r, 250, 1);
  expect_next(&r, 255, 3);
}

Test(race, at_most_four_addresses_are_raced) {
  tern__addr addrs[6];
  for (int i = 0; i < 6; i++) addrs[i] = a4((uint8_t)i, 7400);
  tern__race r;
  tern__race_init(&r, addrs, 6, 443, 250, 1000, 0);
  cr_assert_eq(r.nudp, TERN__RACE_ADDRS);
  cr_assert_eq(r.n, TERN__RACE_MAX);
}
