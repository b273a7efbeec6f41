/*
 * Tests of lib/wire/probe.c, the NAT-timeout probe datagrams: the layout each
 * type has on the wire (sizes, magic, big-endian fields, zero padding, a
 * keyed BLAKE2b-128 tag over everything before it), that every field
 * survives a round trip, that any change to a datagram or to the key makes
 * it fail verification, and that the parser refuses whatever is not exactly
 * a datagram of a known type.
 *
 * Every parse and verify reads from an exact-size heap copy, so that a
 * read past the end is an AddressSanitizer error in the sanitized build.
 */
#include <criterion/criterion.h>

#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire/probe.h"
#include "tern/tern.h"

static void setup(void) { cr_assert_geq(sodium_init(), 0, "sodium_init failed"); }

TestSuite(probe, .init = setup);

static const uint8_t MAGIC[4] = {0xFF, 0xFF, 0x74, 0x6B};
static const uint8_t TYPES[3] = {TERN__PROBE_REQUEST, TERN__PROBE_ACK, TERN__PROBE_REPLY};

static void test_key(uint8_t key[TERN__PROBE_KEY_BYTES], uint8_t seed) {
  for (size_t i = 0; i < TERN__PROBE_KEY_BYTES; i++) key[i] = (uint8_t)(seed + 7 * i);
}

static tern__probe_pkt sample(uint8_t type) {
  tern__probe_pkt p = {.type = type, .nonce = 0x0102030405060708ull, .wait_ms = 0x0A0B0C0Du};
  for (size_t i = 0; i < TERN__PROBE_ID_BYTES; i++) p.id[i] = (uint8_t)(0xA0 + i);
  return p;
}

static size_t want_size(uint8_t type) {
  return type == TERN__PROBE_REQUEST ? 84 : 42;
}

static uint8_t *dup_exact(const uint8_t *p, size_t n) {
  uint8_t *q = malloc(n ? n : 1);
  cr_assert_not_null(q);
  if (n) memcpy(q, p, n);
  return q;
}

static int parse_exact(const uint8_t *p, size_t n, tern__probe_pkt *out) {
  uint8_t *c = dup_exact(p, n);
  int rc = tern__probe_parse(c, n, out);
  free(c);
  return rc;
}

static int verify_exact(const uint8_t *p, size_t n, const uint8_t key[TERN__PROBE_KEY_BYTES]) {
  uint8_t *c = dup_exact(p, n);
  int rc = tern__probe_verify(c, n, key);
  free(c);
  return rc;
}

Test(probe, sizes_are_84_for_a_request_and_42_for_an_answer) {
  cr_assert_eq(TERN__PROBE_REQUEST_BYTES, 84);
  cr_assert_eq(TERN__PROBE_ANSWER_BYTES, 42);
  /* An answer is half a request: the relay never sends more than it got. */
  cr_assert_eq(2 * TERN__PROBE_ANSWER_BYTES, TERN__PROBE_REQUEST_BYTES);
  uint8_t key[TERN__PROBE_KEY_BYTES], buf[200];
  test_key(key, 1);
  for (size_t t = 0; t < 3; t++) {
    tern__probe_pkt p = sample(TYPES[t]);
    size_t n = want_size(TYPES[t]);
    cr_assert_eq(tern__probe_write(&p, key, buf, sizeof buf), n, "type %u", TYPES[t]);
    /* Exactly enough room works; one byte less writes nothing. */
    memset(buf, 0xEE, sizeof buf);
    cr_assert_eq(tern__probe_write(&p, key, buf, n), n);
    cr_assert_eq(buf[n], 0xEE, "wrote past the datagram");
    memset(buf, 0xEE, sizeof buf);
    cr_assert_eq(tern__probe_write(&p, key, buf, n - 1), 0, "type %u fit in %zu", TYPES[t], n - 1);
    for (size_t i = 0; i < sizeof buf; i++) cr_assert_eq(buf[i], 0xEE, "short write touched byte %zu", i);
  }
}

Test(probe, unknown_types_are_not_written) {
  uint8_t key[TERN__PROBE_KEY_BYTES], buf[200];
  test_key(key, 1);
  const uint8_t bad[] = {0, 4, 5, 0x7F, 0xFF};
  for (size_t i = 0; i < sizeof bad; i++) {
    tern__probe_pkt p = sample(bad[i]);
    cr_assert_eq(tern__probe_write(&p, key, buf, sizeof buf), 0, "type %u written", bad[i]);
  }
}

/* The documented layout, byte by byte, and the tag recomputed here from
 * its definition (keyed BLAKE2b, 16 bytes, over everything before it). */
Test(probe, layout_is_magic_version_type_id_nonce_wait_padding_tag) {
  uint8_t key[TERN__PROBE_KEY_BYTES], buf[TERN__PROBE_REQUEST_BYTES];
  test_key(key, 9);
  for (size_t t = 0; t < 3; t++) {
    tern__probe_pkt p = sample(TYPES[t]);
    size_t n = tern__probe_write(&p, key, buf, sizeof buf);
    cr_assert_eq(n, want_size(TYPES[t]));
    cr_assert_arr_eq(buf, MAGIC, 4, "magic");
    cr_assert_eq(buf[4], 1, "version");
    cr_assert_eq(buf[5], TYPES[t], "type");
    for (size_t i = 0; i < 8; i++) cr_assert_eq(buf[6 + i], 0xA0 + i, "id byte %zu", i);
    const uint8_t nonce[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    cr_assert_arr_eq(buf + 14, nonce, 8, "nonce is big-endian at 14");
    const uint8_t wait[4] = {0x0A, 0x0B, 0x0C, 0x0D};
    cr_assert_arr_eq(buf + 22, wait, 4, "wait_ms is big-endian at 22");
    for (size_t i = 26; i < n - 16; i++) cr_assert_eq(buf[i], 0, "padding byte %zu is not 0", i);
    uint8_t tag[16];
    crypto_generichash(tag, sizeof tag, buf, n - 16, key, sizeof key);
    cr_assert_arr_eq(buf + n - 16, tag, 16, "tag of type %u", TYPES[t]);
  }
}

Test(probe, every_type_round_trips) {
  uint8_t key[TERN__PROBE_KEY_BYTES], buf[TERN__PROBE_REQUEST_BYTES];
  test_key(key, 3);
  const uint64_t nonces[] = {0, 1, 0x8000000000000000ull, UINT64_MAX};
  const uint32_t waits[] = {0, 1000, 1200000, UINT32_MAX};
  for (size_t t = 0; t < 3; t++) {
    for (size_t k = 0; k < 4; k++) {
      tern__probe_pkt p = sample(TYPES[t]), q;
      p.nonce = nonces[k];
      p.wait_ms = waits[(k + t) % 4];
      p.id[k] ^= (uint8_t)(0x11 * (t + 1));
      size_t n = tern__probe_write(&p, key, buf, sizeof buf);
      memset(&q, 0x55, sizeof q);
      cr_assert_eq(parse_exact(buf, n, &q), 0, "type %u nonce %zu", TYPES[t], k);
      cr_assert_eq(q.type, p.type);
      cr_assert_arr_eq(q.id, p.id, TERN__PROBE_ID_BYTES);
      cr_assert_eq(q.nonce, p.nonce);
      cr_assert_eq(q.wait_ms, p.wait_ms);
      cr_assert_eq(verify_exact(buf, n, key), 0);
    }
  }
}

Test(probe, any_flipped_bit_fails_verification) {
  uint8_t key[TERN__PROBE_KEY_BYTES], buf[TERN__PROBE_REQUEST_BYTES];
  test_key(key, 5);
  for (size_t t = 0; t < 3; t++) {
    tern__probe_pkt p = sample(TYPES[t]);
    size_t n = tern__probe_write(&p, key, buf, sizeof buf);
    /* Header, padding (REQUEST) and tag: every byte, every bit. */
    for (size_t i = 0; i < n; i++) {
      for (int b = 0; b < 8; b++) {
        buf[i] ^= (uint8_t)(1u << b);
        cr_assert_eq(verify_exact(buf, n, key), TERN_EDECRYPT, "type %u: byte %zu bit %d flipped",
                     TYPES[t], i, b);
        buf[i] ^= (uint8_t)(1u << b);
      }
    }
    cr_assert_eq(verify_exact(buf, n, key), 0, "restored datagram");
  }
}

Test(probe, another_key_fails_verification) {
  uint8_t key[TERN__PROBE_KEY_BYTES], other[TERN__PROBE_KEY_BYTES], buf[TERN__PROBE_REQUEST_BYTES];
  test_key(key, 5);
  for (size_t t = 0; t < 3; t++) {
    tern__probe_pkt p = sample(TYPES[t]);
    size_t n = tern__probe_write(&p, key, buf, sizeof buf);
    for (size_t i = 0; i < TERN__PROBE_KEY_BYTES; i++) {
      memcpy(other, key, sizeof key);
      other[i] ^= 0x01;
      cr_assert_eq(verify_exact(buf, n, other), TERN_EDECRYPT, "key byte %zu changed", i);
    }
    memset(other, 0, sizeof other);
    cr_assert_eq(verify_exact(buf, n, other), TERN_EDECRYPT, "zero key");
  }
}

/* A datagram cut short or grown is not verified either: the tag is the
 * last 16 bytes of whatever length was received. */
Test(probe, truncated_or_extended_datagrams_fail_verification) {
  uint8_t key[TERN__PROBE_KEY_BYTES], buf[TERN__PROBE_REQUEST_BYTES + 1];
  test_key(key, 5);
  for (size_t t = 0; t < 3; t++) {
    tern__probe_pkt p = sample(TYPES[t]);
    size_t n = tern__probe_write(&p, key, buf, sizeof buf);
    for (size_t len = 0; len < n; len++)
      cr_assert_eq(verify_exact(buf, len, key), TERN_EDECRYPT, "type %u cut to %zu", TYPES[t], len);
    buf[n] = 0;
    cr_assert_eq(verify_exact(buf, n + 1, key), TERN_EDECRYPT, "type %u with a byte more", TYPES[t]);
  }
}

Test(probe, parse_refuses_wrong_magic_version_type_or_size) {
  uint8_t key[TERN__PROBE_KEY_BYTES], buf[TERN__PROBE_REQUEST_BYTES + 1];
  test_key(key, 2);
  tern__probe_pkt q;
  for (size_t t = 0; t < 3; t++) {
    tern__probe_pkt p = sample(TYPES[t]);
    size_t n = tern__probe_write(&p, key, buf, sizeof buf);
    for (size_t i = 0; i < 4; i++) {
      buf[i] ^= 0x20;
      cr_assert_eq(parse_exact(buf, n, &q), TERN_EPROTO, "magic byte %zu changed", i);
      buf[i] ^= 0x20;
    }
    const uint8_t versions[] = {0, 2, 0xFF};
    for (size_t i = 0; i < sizeof versions; i++) {
      buf[4] = versions[i];
      memset(&q, 0x55, sizeof q);
      cr_assert_eq(parse_exact(buf, n, &q), TERN_EPROTO, "version %u", versions[i]);
      /* What a refused parse leaves behind is zeros, not stale fields. */
      cr_assert_eq(q.type, 0);
      cr_assert_eq(q.nonce, 0);
      cr_assert_eq(q.wait_ms, 0);
    }
    buf[4] = 1;
    const uint8_t types[] = {0, 4, 0x80, 0xFF};
    for (size_t i = 0; i < sizeof types; i++) {
      buf[5] = types[i];
      cr_assert_eq(parse_exact(buf, n, &q), TERN_EPROTO, "type %u", types[i]);
    }
    buf[5] = TYPES[t];
    /* Every other length, including the other type's size. */
    for (size_t len = 0; len <= n + 1; len++) {
      if (len == n) continue;
      buf[n] = 0;
      cr_assert_eq(parse_exact(buf, len, &q), TERN_EPROTO, "type %u at %zu bytes", TYPES[t], len);
    }
    cr_assert_eq(parse_exact(buf, n, &q), 0, "restored datagram");
  }
  /* A request's 84 bytes with an answer's type, and an answer's 42 bytes
   * with a request's type. */
  tern__probe_pkt r = sample(TERN__PROBE_REQUEST);
  size_t n = tern__probe_write(&r, key, buf, sizeof buf);
  buf[5] = TERN__PROBE_ACK;
  cr_assert_eq(parse_exact(buf, n, &q), TERN_EPROTO);
  buf[5] = TERN__PROBE_REPLY;
  cr_assert_eq(parse_exact(buf, n, &q), TERN_EPROTO);
  buf[5] = TERN__PROBE_REQUEST;
  cr_assert_eq(parse_exact(buf, TERN__PROBE_ANSWER_BYTES, &q), TERN_EPROTO);
}

Test(probe, looks_like_is_the_magic_at_any_length) {
  uint8_t buf[TERN__PROBE_REQUEST_BYTES];
  memset(buf, 0, sizeof buf);
  memcpy(buf, MAGIC, 4);
  for (size_t len = 4; len <= sizeof buf; len++)
    cr_assert(tern__probe_looks_like(buf, len), "magic with %zu bytes", len);
  for (size_t len = 0; len < 4; len++) {
    uint8_t *c = dup_exact(buf, len);
    cr_assert_not(tern__probe_looks_like(c, len), "%zu bytes are not enough", len);
    free(c);
  }
  for (size_t i = 0; i < 4; i++) {
    for (int b = 0; b < 8; b++) {
      buf[i] ^= (uint8_t)(1u << b);
      cr_assert_not(tern__probe_looks_like(buf, sizeof buf), "magic byte %zu bit %d", i, b);
      buf[i] ^= (uint8_t)(1u << b);
    }
  }
  /* What ENet sends: a peer id and a sent time, the "compressed" flag
   * (0x4000 of the first 16 bits) clear. None of it is a probe. */
  const uint8_t enet[] = {0x80, 0x00, 0x12, 0x34, 0x82, 0xFF, 0x00, 0x01};
  cr_assert_not(tern__probe_looks_like(enet, sizeof enet));
  const uint8_t enet_max_peer[] = {0xBF, 0xFF, 0x74, 0x6B, 0x00};
  cr_assert_not(tern__probe_looks_like(enet_max_peer, sizeof enet_max_peer));
  /* Every datagram the writer makes looks like one. */
  uint8_t key[TERN__PROBE_KEY_BYTES];
  test_key(key, 4);
  for (size_t t = 0; t < 3; t++) {
    tern__probe_pkt p = sample(TYPES[t]);
    size_t n = tern__probe_write(&p, key, buf, sizeof buf);
    cr_assert(tern__probe_looks_like(buf, n));
  }
}

