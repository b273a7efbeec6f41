/*
 * libFuzzer target for the relay's cookie path (lib/io/cookie.c,
 * spec/wire.md §13): arbitrary datagrams starting FF FF 74 63 and wrapped
 * CONNECTs from a source without a handle, as the dispatcher hands them to
 * tern__cookie_admit().
 *
 * The first byte of the input picks the case: bit 0 set, the rest of the
 * input is wrapped as a CONNECT with the source's valid cookie (it must be
 * admitted exactly when the inside is an ENet CONNECT); clear, the rest is
 * the datagram as it came. Bits 1-2 move the jar on by 0 to 3 time slots
 * before the check. Invariants, any break aborts:
 *
 *   - only a datagram that parses as a CONNECT with an ENet CONNECT inside
 *     is ever admitted, and its inside is the datagram's tail;
 *   - a datagram admitted for one source is refused for another address
 *     or port, and after two rotations;
 *   - a COOKIE reply (22 bytes) is never larger than a CONNECT that could
 *     draw one, and parses back to the cookie it carries.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/addr.h"
#include "io/cookie.h"
#include "io/enet_platform.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t SECRET[3][TERN__COOKIE_SECRET_BYTES] = {{1}, {2}, {3}};
#define T0 ((uint64_t)TERN__COOKIE_ROTATE_MS * 1000)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const uint8_t *d = data + 1;
  size_t n = size - 1;
  tern__addr from, other;
  (void)tern__addr_parse_ip(&from, "192.0.2.9", 40000);
  other = from;
  other.port++;
  tern__cookie_jar j;
  tern__cookie_jar_init(&j, T0, SECRET[0]);
  static uint8_t buf[8192];
  const uint8_t *dg = d;
  size_t len = n;
  if (data[0] & 1) {
    uint8_t c[TERN__COOKIE_BYTES];
    tern__cookie_make(&j, &from, c);
    len = tern__cookie_wrap(buf, sizeof buf, c, d, n);
    if (!len) return 0;
    dg = buf;
  }
  unsigned slots = (data[0] >> 1) & 3;
  for (unsigned i = 0; i < slots; i++)
    tern__cookie_jar_rotate(&j, T0 + (uint64_t)(i + 1) * TERN__COOKIE_ROTATE_MS, SECRET[(i + 1) % 3]);

  const uint8_t *inner = NULL;
  size_t inner_len = 0;
  int v = tern__cookie_admit(&j, &from, dg, len, &inner, &inner_len);
  if (v != TERN__COOKIE_DROP && v != TERN__COOKIE_ADMIT && v != TERN__COOKIE_BAD) abort();
  if (v != TERN__COOKIE_DROP) {
    if (len <= TERN__COOKIE_REPLY_BYTES || inner != dg + TERN__COOKIE_REPLY_BYTES ||
        inner_len != len - TERN__COOKIE_REPLY_BYTES || !tern__enet_is_connect(inner, inner_len))
      abort();
    /* What draws a COOKIE (a CONNECT, wrapped or not) is larger than it. */
    if (inner_len < TERN__COOKIE_REPLY_BYTES) abort();
  }
  if (data[0] & 1) {
    int want = tern__enet_is_connect(d, n) && n > 0;
    /* Our own wrap: admitted while at most one rotation old. */
    if (want && (v == TERN__COOKIE_ADMIT) != (slots <= 1)) abort();
    if (!want && v != TERN__COOKIE_DROP) abort();
  }
  if (v == TERN__COOKIE_ADMIT) {
    const uint8_t *i2;
    size_t l2;
    if (tern__cookie_admit(&j, &other, dg, len, &i2, &l2) == TERN__COOKIE_ADMIT) abort();
    tern__cookie_jar k = j;
    tern__cookie_jar_rotate(&k, (k.slot + 2) * TERN__COOKIE_ROTATE_MS, SECRET[2]);
    if (tern__cookie_admit(&k, &from, dg, len, &i2, &l2) == TERN__COOKIE_ADMIT) abort();
  }
  /* The reply round trip. */
  uint8_t c[TERN__COOKIE_BYTES], r[TERN__COOKIE_REPLY_BYTES], back[TERN__COOKIE_BYTES];
  tern__cookie_make(&j, &from, c);
  tern__cookie_write_reply(r, c);
  const uint8_t *ri;
  size_t rl;
  if (tern__cookie_parse(r, sizeof r, back, &ri, &rl) != TERN__COOKIE_KIND_REPLY ||
      memcmp(back, c, sizeof c) != 0)
    abort();
  return 0;
}
