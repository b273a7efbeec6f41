/*
 * The relay's open sessions by device key (lib/relay/devidx.h): what push
 * and one-session-per-key ask of it, including many sessions whose keys
 * share a bucket.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "relay/devidx.h"

typedef struct item {
  uint8_t key[32];
  tern__devidx_node node;
} item;

static size_t count_under(const tern__devidx *x, const uint8_t *key) {
  size_t n = 0;
  for (tern__devidx_node *it = tern__devidx_first(x, key); it; it = tern__devidx_next(it)) n++;
  return n;
}

Test(devidx, finds_each_key_and_forgets_removed_ones) {
  tern__devidx x;
  cr_assert_eq(tern__devidx_init(&x, 10), 0);
  /* 200 items in 64 buckets: chains of several keys each. */
  static item it[200];
  for (int i = 0; i < 200; i++) {
    memset(it[i].key, 0, 32);
    it[i].key[0] = (uint8_t)(i % 100); /* two items per key */
    it[i].key[31] = 7;
    tern__devidx_add(&x, &it[i].node, it[i].key);
  }
  tern__devidx_add(&x, &it[0].node, it[0].key); /* twice: no effect */
  cr_assert_eq(x.count, 200);
  for (int k = 0; k < 100; k++) cr_assert_eq(count_under(&x, it[k].key), 2, "key %d", k);
  uint8_t absent[32] = {0};
  absent[0] = 150;
  cr_assert_null(tern__devidx_first(&x, absent));

  /* Removing one of a key's two leaves the other; removing twice is harmless. */
  tern__devidx_del(&x, &it[5].node);
  tern__devidx_del(&x, &it[5].node);
  cr_assert_eq(count_under(&x, it[5].key), 1);
  cr_assert_eq(tern__devidx_first(&x, it[5].key), &it[105].node);
  tern__devidx_del(&x, &it[105].node);
  cr_assert_null(tern__devidx_first(&x, it[5].key), "a device with no open session");
  cr_assert_eq(x.count, 198);
  for (int k = 0; k < 100; k++)
    if (k != 5) cr_assert_eq(count_under(&x, it[k].key), 2, "others untouched: key %d", k);

  /* Removing while walking a key's entries (what replacing sessions does). */
  tern__devidx_node *n = tern__devidx_first(&x, it[9].key), *next;
  for (; n; n = next) {
    next = tern__devidx_next(n);
    tern__devidx_del(&x, n);
  }
  cr_assert_null(tern__devidx_first(&x, it[9].key));
  cr_assert_eq(x.count, 196);
  tern__devidx_free(&x);
}
