/*
 * Tests of lib/wire/frame.c: varints, strings, the typed frames, the packet
 * splitter, the bounded writer, the chat channel hash and user names.
 *
 * Every decoder here reads from an exact-size heap copy of its input, so
 * that a read one byte past the end is an AddressSanitizer error in the
 * sanitized build instead of a silent read of the neighbouring stack.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire/frame.h"
#include "wire/reset.h"
#include "io/link.h"
#include "tern/tern.h"

/* An exact-size heap copy of p[0..n); never NULL, even for n == 0. */
static uint8_t *dup_exact(const uint8_t *p, size_t n) {
  uint8_t *q = malloc(n ? n : 1);
  cr_assert_not_null(q);
  if (n) memcpy(q, p, n);
  return q;
}

/* Decodes one varint from exactly bytes[0..n). Returns 1 if it decoded and
 * used every byte, 0 if the reader marked it bad. */
static int varint_decode_exact(const uint8_t *bytes, size_t n, uint64_t *v) {
  uint8_t *copy = dup_exact(bytes, n);
  tern__rbuf r;
  tern__rbuf_init(&r, copy, n);
  *v = tern__rbuf_varint(&r);
  int ok = !r.bad;
  if (ok) cr_assert_eq(r.pos, n, "varint decoded but left %zu of %zu bytes", n - r.pos, n);
  free(copy);
  return ok;
}

static size_t varint_encode(uint64_t v, uint8_t out[TERN__VARINT_MAX]) {
  tern__wbuf w;
  tern__wbuf_init(&w, out, TERN__VARINT_MAX);
  tern__wbuf_varint(&w, v);
  cr_assert_not(w.overflow, "a varint did not fit in TERN__VARINT_MAX bytes");
  return w.len;
}

/* ------------------------------------------------------------- varints */

typedef struct varint_case {
  uint64_t v;
  size_t len;
  uint8_t bytes[TERN__VARINT_MAX];
} varint_case;

/* Expected encodings, written out by hand from the LEB128 rule. */
static const varint_case VARINTS[] = {
    {0, 1, {0x00}},
    {1, 1, {0x01}},
    {127, 1, {0x7f}},
    {128, 2, {0x80, 0x01}},
    {300, 2, {0xac, 0x02}},
    {16383, 2, {0xff, 0x7f}},
    {16384, 3, {0x80, 0x80, 0x01}},
    {(1ull << 21) - 1, 3, {0xff, 0xff, 0x7f}},
    {1ull << 21, 4, {0x80, 0x80, 0x80, 0x01}},
    {(1ull << 28) - 1, 4, {0xff, 0xff, 0xff, 0x7f}},
    {(1ull << 63) - 1, 9, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}},
    {1ull << 63, 10, {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}},
    {UINT64_MAX, 10, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
};
#define NVARINTS (sizeof VARINTS / sizeof VARINTS[0])

Test(varint, encodes_boundaries_to_the_expected_bytes) {
  for (size_t i = 0; i < NVARINTS; i++) {
    uint8_t out[TERN__VARINT_MAX];
    size_t n = varint_encode(VARINTS[i].v, out);
    cr_assert_eq(n, VARINTS[i].len, "%llu: %zu bytes, want %zu", (unsigned long long)VARINTS[i].v,
                 n, VARINTS[i].len);
    cr_assert_arr_eq(out, VARINTS[i].bytes, n, "%llu: wrong bytes", (unsigned long long)VARINTS[i].v);
  }
}

Test(varint, decodes_boundaries_back) {
  for (size_t i = 0; i < NVARINTS; i++) {
    uint64_t v = 0;
    cr_assert(varint_decode_exact(VARINTS[i].bytes, VARINTS[i].len, &v), "%llu rejected",
              (unsigned long long)VARINTS[i].v);
    cr_assert_eq(v, VARINTS[i].v, "decoded %llu, want %llu", (unsigned long long)v,
                 (unsigned long long)VARINTS[i].v);
  }
}

Test(varint, round_trips_every_power_of_two_and_neighbours) {
  for (int k = 0; k < 64; k++) {
    uint64_t base = 1ull << k;
    uint64_t vs[3] = {base - 1, base, base + 1};
    for (int j = 0; j < 3; j++) {
      uint8_t out[TERN__VARINT_MAX];
      uint64_t back = 0;
      size_t n = varint_encode(vs[j], out);
      /* Minimal length: ceil(bits / 7), at least 1. */
      size_t bits = 0;
      for (uint64_t t = vs[j]; t; t >>= 1) bits++;
      cr_assert_eq(n, bits ? (bits + 6) / 7 : 1, "%llu not minimal", (unsigned long long)vs[j]);
      cr_assert(varint_decode_exact(out, n, &back));
      cr_assert_eq(back, vs[j]);
    }
  }
}

Test(varint, rejects_non_minimal_encodings) {
  static const struct {
    size_t len;
    uint8_t b[TERN__VARINT_MAX];
  } bad[] = {
      {2, {0x80, 0x00}},             /* 0 padded to two bytes */
      {2, {0x81, 0x00}},             /* 1 padded */
      {2, {0xff, 0x00}},             /* 127 padded */
      {3, {0x80, 0x81, 0x00}},       /* 128 padded */
      {3, {0x80, 0x80, 0x00}},       /* 0 padded to three */
      {10, {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}},
      {10, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00}},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint64_t v = 1;
    cr_assert_not(varint_decode_exact(bad[i].b, bad[i].len, &v), "non-minimal case %zu accepted", i);
    cr_assert_eq(v, 0, "a rejected varint must read as 0");
  }
}

Test(varint, rejects_eleven_bytes_and_overflow_in_the_tenth) {
  /* Eleven bytes: the tenth still has its continuation bit. */
  uint8_t eleven[11];
  memset(eleven, 0xff, 10);
  eleven[10] = 0x01;
  uint64_t v;
  cr_assert_not(varint_decode_exact(eleven, 11, &v));
  uint8_t eleven_zero[11] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
  cr_assert_not(varint_decode_exact(eleven_zero, 11, &v));

  /* Ten bytes whose tenth carries more than bit 63. */
  for (unsigned top = 2; top <= 0x7f; top++) {
    uint8_t ten[10];
    memset(ten, 0xff, 9);
    ten[9] = (uint8_t)top;
    cr_assert_not(varint_decode_exact(ten, 10, &v), "tenth byte 0x%02x accepted", top);
    ten[0] = 0x80;
    cr_assert_not(varint_decode_exact(ten, 10, &v), "tenth byte 0x%02x accepted", top);
  }
}

Test(varint, rejects_every_truncation) {
  uint64_t v;
  cr_assert_not(varint_decode_exact(NULL, 0, &v), "empty input accepted");
  for (size_t i = 0; i < NVARINTS; i++)
    for (size_t k = 1; k < VARINTS[i].len; k++)
      cr_assert_not(varint_decode_exact(VARINTS[i].bytes, k, &v), "%zu-byte prefix of %llu accepted",
                    k, (unsigned long long)VARINTS[i].v);
}

Test(rbuf, a_failed_read_makes_every_later_read_fail) {
  /* A decoder checks `bad` once at the end: a read after a failed one must
   * not succeed on the bytes that happen to follow. */
  const uint8_t bytes[] = {0x80, 0x00, 0x05, 0x06};
  uint8_t *p = dup_exact(bytes, sizeof bytes);
  tern__rbuf r;
  tern__rbuf_init(&r, p, sizeof bytes);
  (void)tern__rbuf_varint(&r);
  cr_assert(r.bad);
  cr_assert_eq(tern__rbuf_u8(&r), 0);
  cr_assert_eq(tern__rbuf_varint(&r), 0);
  const uint8_t *s = p;
  size_t n = 9;
  tern__rbuf_rest(&r, &s, &n);
  cr_assert_null(s);
  cr_assert_eq(n, 0);
  cr_assert(r.bad);
  free(p);
}

/* ------------------------------------------------------------- strings */

/* Reads a string from exactly bytes[0..n) with `max`; 1 if it decoded. */
static int string_decode_exact(const uint8_t *bytes, size_t n, size_t max, size_t *len) {
  uint8_t *copy = dup_exact(bytes, n);
  tern__rbuf r;
  tern__rbuf_init(&r, copy, n);
  const uint8_t *s = (const uint8_t *)"x";
  tern__rbuf_string(&r, &s, len, max);
  int ok = !r.bad;
  if (ok) {
    cr_assert_eq(s, copy + (n - *len), "string does not point into the buffer");
  } else {
    cr_assert_null(s);
    cr_assert_eq(*len, 0);
  }
  free(copy);
  return ok;
}

Test(string, length_at_max_is_accepted_and_one_over_is_not) {
  uint8_t buf[300], src[200];
  memset(src, 's', sizeof src);
  for (size_t max = 0; max < 200; max += 7) {
    tern__wbuf w;
    size_t len = 0;
    tern__wbuf_init(&w, buf, sizeof buf);
    tern__wbuf_string(&w, src, max);
    cr_assert_not(w.overflow);
    cr_assert(string_decode_exact(buf, w.len, max, &len), "string of max %zu rejected", max);
    cr_assert_eq(len, max);
    if (max > 0)
      cr_assert_not(string_decode_exact(buf, w.len, max - 1, &len),
                    "string of %zu accepted with max %zu", max, max - 1);
  }
}

Test(string, length_past_the_end_is_rejected) {
  /* Declares 5 bytes, carries 4. */
  const uint8_t b[] = {0x05, 'a', 'b', 'c', 'd'};
  size_t len;
  cr_assert_not(string_decode_exact(b, sizeof b, 100, &len));
  /* Declares 5 bytes, carries none. */
  cr_assert_not(string_decode_exact(b, 1, 100, &len));
  /* A length near 2^64 must not wrap the bounds check. */
  const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 'a'};
  cr_assert_not(string_decode_exact(huge, sizeof huge, SIZE_MAX, &len));
}

/* ----------------------------------------------------------- typed frames */

/* Splits exactly bytes[0..n) into frames; returns their count, fills
 * types[] and body offsets/lengths, asserts a clean end. */
typedef struct split_frame {
  uint8_t type;
  size_t off, len;
} split_frame;

static size_t split_exact(const uint8_t *bytes, size_t n, split_frame *out, size_t max) {
  uint8_t *copy = dup_exact(bytes, n);
  tern__rbuf pkt, body;
  tern__rbuf_init(&pkt, copy, n);
  size_t count = 0;
  int rc;
  uint8_t type;
  while ((rc = tern__frame_next(&pkt, &type, &body)) == 1) {
    cr_assert_lt(count, max);
    out[count].type = type;
    out[count].off = (size_t)(body.p - copy);
    out[count].len = body.len;
    cr_assert_leq(out[count].off + out[count].len, n);
    count++;
  }
  cr_assert_eq(rc, 0, "packet did not end cleanly: %d", rc);
  free(copy);
  return count;
}

/* The writer of the typed-frame tests: WRITE_FRAME(buf, call) runs `call`
 * (which writes through &frame_w) into buf and is the encoded length. */
static tern__wbuf frame_w;

static tern__wbuf *wstart(uint8_t *buf, size_t cap) {
  tern__wbuf_init(&frame_w, buf, cap);
  return &frame_w;
}

static size_t wdone(void) {
  cr_assert_not(frame_w.overflow, "frame did not fit");
  return frame_w.len;
}

#define WRITE_FRAME(buf, call) (wstart((buf), sizeof(buf)), (call), wdone())

Test(frame, hello_has_the_documented_bytes_and_round_trips) {
  uint8_t buf[64];
  tern__fr_hello in = {.user = (const uint8_t *)"al", .user_len = 2, .ping_interval_ms = 1000,
                       .time_us = 300};
  size_t n = WRITE_FRAME(buf, tern__fr_hello_write(&frame_w, &in));
  const uint8_t want[] = {0x01, 0x07, 0x02, 'a', 'l', 0xe8, 0x07, 0xac, 0x02};
  cr_assert_eq(n, sizeof want);
  cr_assert_arr_eq(buf, want, n);

  split_frame f[2];
  cr_assert_eq(split_exact(buf, n, f, 2), 1);
  cr_assert_eq(f[0].type, TERN__FR_HELLO);
  tern__rbuf body;
  tern__fr_hello out;
  tern__rbuf_init(&body, buf + f[0].off, f[0].len);
  cr_assert_eq(tern__fr_hello_read(&body, &out), 0);
  cr_assert_eq(out.user_len, 2);
  cr_assert_arr_eq(out.user, "al", 2);
  cr_assert_eq(out.ping_interval_ms, 1000);
  cr_assert_eq(out.time_us, 300);
}

/* The timestamp is not optional: a HELLO of a client from before it (user
 * and ping only) is malformed, and so is one whose timestamp is cut. */
Test(frame, hello_without_its_timestamp_is_malformed) {
  static const uint8_t old[] = {0x02, 'a', 'l', 0xe8, 0x07};
  static const uint8_t cut[] = {0x02, 'a', 'l', 0xe8, 0x07, 0xac};
  tern__rbuf b;
  tern__fr_hello h;
  tern__rbuf_init(&b, old, sizeof old);
  cr_assert_eq(tern__fr_hello_read(&b, &h), TERN_EPROTO);
  tern__rbuf_init(&b, cut, sizeof cut);
  cr_assert_eq(tern__fr_hello_read(&b, &h), TERN_EPROTO);
  static const uint8_t max[] = {0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
  tern__rbuf_init(&b, max, sizeof max);
  cr_assert_eq(tern__fr_hello_read(&b, &h), 0);
  cr_assert_eq(h.time_us, UINT64_MAX, "read as it is; the relay judges it (never fresh)");
}

Test(frame, hello_with_empty_user_round_trips) {
  uint8_t buf[64];
  tern__fr_hello in = {.user = NULL, .user_len = 0, .ping_interval_ms = UINT64_MAX,
                       .time_us = 1764800000000000ull};
  size_t n = WRITE_FRAME(buf, tern__fr_hello_write(&frame_w, &in));
  tern__rbuf body;
  tern__fr_hello out;
  tern__rbuf_init(&body, buf + 2, n - 2);
  cr_assert_eq(buf[1], n - 2);
  cr_assert_eq(tern__fr_hello_read(&body, &out), 0);
  cr_assert_eq(out.user_len, 0);
  cr_assert_eq(out.ping_interval_ms, UINT64_MAX);
  cr_assert_eq(out.time_us, 1764800000000000ull);
}

/* A HELLO with a token field: read back whole; the fields before it are
 * those of a tokenless HELLO, from the same bytes; a token field that runs
 * past the body or is longer than a reader takes makes the frame malformed. */
Test(frame, hello_token_field_round_trips_and_old_readers_skip_it) {
  uint8_t tok[200], buf[2048];
  for (size_t i = 0; i < sizeof tok; i++) tok[i] = (uint8_t)(i * 7);
  tern__fr_hello in = {.user = (const uint8_t *)"al", .user_len = 2, .ping_interval_ms = 1000,
                       .time_us = 300, .token = tok, .token_len = sizeof tok};
  size_t n = WRITE_FRAME(buf, tern__fr_hello_write(&frame_w, &in));
  /* type, 2-byte length, the tokenless fields, 2-byte token length, token */
  cr_assert_eq(n, 1 + 2 + 7 + 2 + sizeof tok);
  tern__rbuf body;
  tern__fr_hello out;
  tern__rbuf_init(&body, buf + 3, n - 3);
  cr_assert_eq(tern__fr_hello_read(&body, &out), 0);
  cr_assert_eq(out.token_len, sizeof tok);
  cr_assert_arr_eq(out.token, tok, sizeof tok);
  cr_assert_eq(out.ping_interval_ms, 1000);
  cr_assert_eq(out.time_us, 300);
  /* The tokenless fields, from the same bytes. */
  const uint8_t plain[] = {0x02, 'a', 'l', 0xe8, 0x07, 0xac, 0x02};
  cr_assert_arr_eq(buf + 3, plain, sizeof plain);
  /* Cut inside the token: malformed. */
  tern__rbuf_init(&body, buf + 3, n - 4);
  cr_assert_eq(tern__fr_hello_read(&body, &out), TERN_EPROTO);
  /* Longer than TERN__HELLO_TOKEN_MAX: malformed. */
  uint8_t big[TERN__HELLO_TOKEN_MAX + 1] = {0};
  in.token = big;
  in.token_len = sizeof big;
  n = WRITE_FRAME(buf, tern__fr_hello_write(&frame_w, &in));
  tern__rbuf_init(&body, buf + 3, n - 3);
  cr_assert_eq(tern__fr_hello_read(&body, &out), TERN_EPROTO);
}

Test(frame, welcome_round_trips) {
  uint8_t buf[1200];
  char reason[1024];
  memset(reason, 'r', sizeof reason);
  tern__fr_welcome in = {.status = (uint64_t)-TERN_EUNKNOWNKEY,
                         .user = (const uint8_t *)"bob",
                         .user_len = 3,
                         .server_time_ms = 1700000000123ull,
                         .reason = (const uint8_t *)reason,
                         .reason_len = sizeof reason};
  size_t n = WRITE_FRAME(buf, tern__fr_welcome_write(&frame_w, &in));
  split_frame f[2];
  cr_assert_eq(split_exact(buf, n, f, 2), 1);
  cr_assert_eq(f[0].type, TERN__FR_WELCOME);
  tern__rbuf body;
  tern__fr_welcome out;
  tern__rbuf_init(&body, buf + f[0].off, f[0].len);
  cr_assert_eq(tern__fr_welcome_read(&body, &out), 0);
  cr_assert_eq(out.status, (uint64_t)-TERN_EUNKNOWNKEY);
  cr_assert_eq(out.user_len, 3);
  cr_assert_arr_eq(out.user, "bob", 3);
  cr_assert_eq(out.server_time_ms, 1700000000123ull);
  cr_assert_eq(out.reason_len, sizeof reason);
  cr_assert_arr_eq(out.reason, reason, sizeof reason);
}

Test(frame, msg_and_deliver_round_trip) {
  static uint8_t body[70000];
  for (size_t i = 0; i < sizeof body; i++) body[i] = (uint8_t)(i * 131 + 7);
  static uint8_t buf[sizeof body + 200];
  size_t lens[] = {0, 1, 100, sizeof body};
  for (int t = 0; t < 2; t++) {
    uint8_t type = t ? TERN__FR_DELIVER : TERN__FR_MSG;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
      tern__fr_msg in = {.cmid = 0x123456789abcull,
                         .prev_cmid = 0x123456789abbull,
                         .seq = 1ull << 40,
                         .prev_seq = (1ull << 40) - 3,
                         .ts = 1700000000123ull,
                         .peer = (const uint8_t *)"carol",
                         .peer_len = 5,
                         .flags = 17,
                         .body = body,
                         .body_len = lens[li]};
      size_t n = WRITE_FRAME(buf, tern__fr_msg_write(&frame_w, type, &in));
      split_frame f[2];
      cr_assert_eq(split_exact(buf, n, f, 2), 1);
      cr_assert_eq(f[0].type, type);
      tern__rbuf rb;
      tern__fr_msg out;
      memset(&out, 0xee, sizeof out);
      tern__rbuf_init(&rb, buf + f[0].off, f[0].len);
      cr_assert_eq(tern__fr_msg_read(&rb, type, &out), 0);
      if (type == TERN__FR_MSG) {
        /* MSG: cmid | to | flags | prev_cmid | body. The inbox fields are
         * the relay's to assign and are not on the wire. */
        cr_assert_eq(out.cmid, in.cmid);
        cr_assert_eq(out.prev_cmid, in.prev_cmid);
        cr_assert_eq(out.seq, 0);
        cr_assert_eq(out.prev_seq, 0);
        cr_assert_eq(out.ts, 0);
      } else {
        /* DELIVER: seq | prev_seq | from | ts | flags | body. It carries no
         * cmid: the sender's ids are none of the recipient's business. */
        cr_assert_eq(out.cmid, 0);
        cr_assert_eq(out.prev_cmid, 0);
        cr_assert_eq(out.seq, in.seq);
        cr_assert_eq(out.prev_seq, in.prev_seq);
        cr_assert_eq(out.ts, in.ts);
      }
      cr_assert_eq(out.peer_len, 5);
      cr_assert_arr_eq(out.peer, "carol", 5);
      cr_assert_eq(out.flags, 17);
      cr_assert_eq(out.body_len, lens[li]);
      if (lens[li]) cr_assert_arr_eq(out.body, body, lens[li]);
    }
  }
}

/* A carbon's DELIVER carries its recipient after flags; OWN needs CARBON;
 * a carbon's recipient must be a valid user name. */
Test(frame, a_carbon_deliver_carries_its_recipient) {
  uint8_t buf[64];
  tern__fr_msg d = {.seq = 9, .prev_seq = 7, .ts = 6, .peer = (const uint8_t *)"al", .peer_len = 2,
                    .flags = TERN__MSGF_CARBON, .to = (const uint8_t *)"bo", .to_len = 2,
                    .body = (const uint8_t *)"y", .body_len = 1};
  size_t n = WRITE_FRAME(buf, tern__fr_msg_write(&frame_w, TERN__FR_DELIVER, &d));
  const uint8_t want[] = {0x11, 0x0b, 0x09, 0x07, 0x02, 'a', 'l', 0x06, 0x02, 0x02, 'b', 'o', 'y'};
  cr_assert_eq(n, sizeof want);
  cr_assert_arr_eq(buf, want, n);
  tern__rbuf rb;
  tern__fr_msg out;
  tern__rbuf_init(&rb, buf + 2, n - 2);
  cr_assert_eq(tern__fr_msg_read(&rb, TERN__FR_DELIVER, &out), 0);
  cr_assert_eq(out.to_len, 2);
  cr_assert_arr_eq(out.to, "bo", 2);
  cr_assert_eq(out.body_len, 1);

  const uint8_t own_alone[] = {0x09, 0x07, 0x02, 'a', 'l', 0x06, 0x04, 'y'};
  tern__rbuf_init(&rb, own_alone, sizeof own_alone);
  cr_assert_eq(tern__fr_msg_read(&rb, TERN__FR_DELIVER, &out), TERN_EPROTO, "OWN without CARBON");
  const uint8_t empty_to[] = {0x09, 0x07, 0x02, 'a', 'l', 0x06, 0x02, 0x00, 'y'};
  tern__rbuf_init(&rb, empty_to, sizeof empty_to);
  cr_assert_eq(tern__fr_msg_read(&rb, TERN__FR_DELIVER, &out), TERN_EPROTO, "a carbon to nobody");
}

Test(frame, msg_and_deliver_fields_are_in_the_documented_order) {
  uint8_t buf[64];
  tern__fr_msg m = {.cmid = 5, .prev_cmid = 4, .peer = (const uint8_t *)"bo", .peer_len = 2,
                    .flags = TERN__MSGF_EPHEMERAL, .body = (const uint8_t *)"x", .body_len = 1};
  size_t n = WRITE_FRAME(buf, tern__fr_msg_write(&frame_w, TERN__FR_MSG, &m));
  const uint8_t want_msg[] = {0x10, 0x07, 0x05, 0x02, 'b', 'o', 0x01, 0x04, 'x'};
  cr_assert_eq(n, sizeof want_msg);
  cr_assert_arr_eq(buf, want_msg, n);

  tern__fr_msg d = {.seq = 9, .prev_seq = 7, .ts = 6, .peer = (const uint8_t *)"al", .peer_len = 2,
                    .flags = 0, .body = (const uint8_t *)"y", .body_len = 1};
  n = WRITE_FRAME(buf, tern__fr_msg_write(&frame_w, TERN__FR_DELIVER, &d));
  const uint8_t want_deliver[] = {0x11, 0x08, 0x09, 0x07, 0x02, 'a', 'l', 0x06, 0x00, 'y'};
  cr_assert_eq(n, sizeof want_deliver);
  cr_assert_arr_eq(buf, want_deliver, n);
}

Test(frame, msg_with_an_invalid_peer_is_refused) {
  uint8_t buf[256];
  const char *peers[] = {"", "a b", "x@y", "\x01"};
  for (size_t i = 0; i < sizeof peers / sizeof peers[0]; i++) {
    tern__fr_msg in = {.cmid = 1, .peer = (const uint8_t *)peers[i], .peer_len = strlen(peers[i])};
    size_t n = WRITE_FRAME(buf, tern__fr_msg_write(&frame_w, TERN__FR_MSG, &in));
    tern__rbuf rb;
    tern__fr_msg out;
    uint8_t *copy = dup_exact(buf + 2, n - 2);
    tern__rbuf_init(&rb, copy, n - 2);
    cr_assert_eq(tern__fr_msg_read(&rb, TERN__FR_MSG, &out), TERN_EPROTO, "peer \"%s\" accepted",
                 peers[i]);
    free(copy);
  }
}

Test(frame, failed_busy_and_close_round_trip) {
  uint8_t buf[64];
  uint64_t vals[] = {0, 127, 128, (uint64_t)-TERN_EOFFLINE, UINT64_MAX};
  const uint8_t types[] = {TERN__FR_FAILED, TERN__FR_BUSY};
  for (size_t i = 0; i < 5; i++) {
    split_frame f[2];
    tern__rbuf rb;
    for (size_t t = 0; t < 2; t++) {
      tern__fr_failed in = {.cmid = vals[i], .error = vals[4 - i]};
      size_t n = WRITE_FRAME(buf, tern__fr_failed_write(&frame_w, types[t], &in));
      cr_assert_eq(split_exact(buf, n, f, 2), 1);
      cr_assert_eq(f[0].type, types[t]);
      tern__fr_failed out;
      tern__rbuf_init(&rb, buf + f[0].off, f[0].len);
      cr_assert_eq(tern__fr_failed_read(&rb, &out), 0);
      cr_assert_eq(out.cmid, in.cmid);
      cr_assert_eq(out.error, in.error);
    }

    size_t n = WRITE_FRAME(buf, tern__fr_close_write(&frame_w, vals[i]));
    cr_assert_eq(split_exact(buf, n, f, 2), 1);
    cr_assert_eq(f[0].type, TERN__FR_CLOSE);
    uint64_t reason = 0xdead;
    tern__rbuf_init(&rb, buf + f[0].off, f[0].len);
    cr_assert_eq(tern__fr_close_read(&rb, &reason), 0);
    cr_assert_eq(reason, vals[i]);
  }
}

Test(frame, server_ack_round_trips) {
  uint8_t buf[64];
  const uint64_t vals[] = {0, 1, 127, 128, 1700000000000ull << 16, UINT64_MAX};
  for (size_t i = 0; i < 6; i++) {
    tern__fr_sack in = {.cmid = vals[i], .seq = vals[(i + 2) % 6], .ts = vals[(i + 4) % 6]};
    size_t n = WRITE_FRAME(buf, tern__fr_sack_write(&frame_w, &in));
    split_frame f[2];
    cr_assert_eq(split_exact(buf, n, f, 2), 1);
    cr_assert_eq(f[0].type, TERN__FR_SERVER_ACK);
    tern__rbuf rb;
    tern__fr_sack out;
    tern__rbuf_init(&rb, buf + f[0].off, f[0].len);
    cr_assert_eq(tern__fr_sack_read(&rb, &out), 0);
    cr_assert_eq(out.cmid, in.cmid);
    cr_assert_eq(out.seq, in.seq);
    cr_assert_eq(out.ts, in.ts);
  }
}

Test(frame, one_number_frames_round_trip) {
  uint8_t buf[32];
  const uint8_t types[] = {TERN__FR_RECEIPT, TERN__FR_FLOOR, TERN__FR_CLOSE};
  const uint64_t vals[] = {0, 1, 300, 1ull << 49, UINT64_MAX};
  for (size_t t = 0; t < 3; t++) {
    for (size_t i = 0; i < 5; i++) {
      size_t n = WRITE_FRAME(buf, tern__fr_u64_write(&frame_w, types[t], vals[i]));
      split_frame f[2];
      cr_assert_eq(split_exact(buf, n, f, 2), 1);
      cr_assert_eq(f[0].type, types[t]);
      tern__rbuf rb;
      uint64_t v = 0xdead;
      tern__rbuf_init(&rb, buf + f[0].off, f[0].len);
      cr_assert_eq(tern__fr_u64_read(&rb, &v), 0);
      cr_assert_eq(v, vals[i]);
    }
  }
  /* CLOSE is a one-number frame: both writers agree. */
  uint8_t a[16], b[16];
  size_t na = WRITE_FRAME(a, tern__fr_close_write(&frame_w, 300));
  size_t nb = WRITE_FRAME(b, tern__fr_u64_write(&frame_w, TERN__FR_CLOSE, 300));
  cr_assert_eq(na, nb);
  cr_assert_arr_eq(a, b, na);
}

Test(frame, notice_ack_round_trips) {
  uint8_t buf[32];
  const uint64_t kinds[] = {1, 2, 0, UINT64_MAX};
  const uint64_t cmids[] = {1700000000000ull << 16, 0, 128, UINT64_MAX};
  for (size_t i = 0; i < 4; i++) {
    size_t n = WRITE_FRAME(buf, tern__fr_notice_ack_write(&frame_w, kinds[i], cmids[i]));
    split_frame f[2];
    cr_assert_eq(split_exact(buf, n, f, 2), 1);
    cr_assert_eq(f[0].type, TERN__FR_NOTICE_ACK);
    tern__rbuf rb;
    uint64_t kind = 0xdead, cmid = 0xdead;
    tern__rbuf_init(&rb, buf + f[0].off, f[0].len);
    cr_assert_eq(tern__fr_notice_ack_read(&rb, &kind, &cmid), 0);
    cr_assert_eq(kind, kinds[i]);
    cr_assert_eq(cmid, cmids[i]);
  }
}

Test(frame, keepalive_round_trips) {
  uint8_t buf[32];
  const uint64_t intervals[] = {0, 1, 39600, 900000, UINT32_MAX, UINT64_MAX};
  const uint64_t flags[] = {0, TERN__KAF_WANT_KEY, 0x80, UINT64_MAX};
  for (size_t i = 0; i < 6; i++) {
    for (size_t j = 0; j < 4; j++) {
      tern__fr_keepalive in = {.interval_ms = intervals[i], .flags = flags[j]};
      size_t n = WRITE_FRAME(buf, tern__fr_keepalive_write(&frame_w, &in));
      split_frame f[2];
      cr_assert_eq(split_exact(buf, n, f, 2), 1);
      cr_assert_eq(f[0].type, TERN__FR_KEEPALIVE);
      tern__rbuf rb;
      tern__fr_keepalive out = {0xdead, 0xdead};
      uint8_t *body = dup_exact(buf + f[0].off, f[0].len);
      tern__rbuf_init(&rb, body, f[0].len);
      cr_assert_eq(tern__fr_keepalive_read(&rb, &out), 0);
      cr_assert_eq(rb.pos, f[0].len, "KEEPALIVE left bytes unread");
      cr_assert_eq(out.interval_ms, in.interval_ms);
      cr_assert_eq(out.flags, in.flags);
      free(body);
    }
  }
}

static void probe_key_sample(tern__fr_probe_key *k, uint8_t seed) {
  for (size_t i = 0; i < sizeof k->id; i++) k->id[i] = (uint8_t)(seed + i);
  for (size_t i = 0; i < sizeof k->key; i++) k->key[i] = (uint8_t)(seed * 3 + 11 * i);
}

Test(frame, probe_key_round_trips) {
  uint8_t buf[64];
  for (uint8_t seed = 0; seed < 4; seed++) {
    tern__fr_probe_key in, out;
    probe_key_sample(&in, (uint8_t)(seed * 60));
    size_t n = WRITE_FRAME(buf, tern__fr_probe_key_write(&frame_w, &in));
    cr_assert_eq(n, 2 + 1 + 8 + 1 + 32);
    split_frame f[2];
    cr_assert_eq(split_exact(buf, n, f, 2), 1);
    cr_assert_eq(f[0].type, TERN__FR_PROBE_KEY);
    memset(&out, 0x55, sizeof out);
    uint8_t *body = dup_exact(buf + f[0].off, f[0].len);
    tern__rbuf rb;
    tern__rbuf_init(&rb, body, f[0].len);
    cr_assert_eq(tern__fr_probe_key_read(&rb, &out), 0);
    cr_assert_arr_eq(out.id, in.id, sizeof in.id);
    cr_assert_arr_eq(out.key, in.key, sizeof in.key);
    free(body);
  }
}

/* A PROBE_KEY body with an id of id_len and a key of key_len bytes. */
static size_t probe_key_body(uint8_t *buf, size_t cap, size_t id_len, size_t key_len) {
  uint8_t bytes[64];
  for (size_t i = 0; i < sizeof bytes; i++) bytes[i] = (uint8_t)(i + 1);
  tern__wbuf w;
  tern__wbuf_init(&w, buf, cap);
  tern__wbuf_string(&w, bytes, id_len);
  tern__wbuf_string(&w, bytes, key_len);
  cr_assert_not(w.overflow);
  return w.len;
}

Test(frame, probe_key_of_another_length_is_refused) {
  uint8_t buf[128];
  const size_t lens[][2] = {{8, 32}, {7, 32}, {9, 32}, {0, 32}, {8, 31}, {8, 33}, {8, 0},
                            {32, 8}, {0, 0},  {40, 0}, {16, 16}, {8, 64}};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    size_t n = probe_key_body(buf, sizeof buf, lens[i][0], lens[i][1]);
    uint8_t *body = dup_exact(buf, n);
    tern__rbuf rb;
    tern__fr_probe_key out;
    tern__rbuf_init(&rb, body, n);
    int want = lens[i][0] == 8 && lens[i][1] == 32 ? 0 : TERN_EPROTO;
    cr_assert_eq(tern__fr_probe_key_read(&rb, &out), want, "id of %zu and key of %zu bytes",
                 lens[i][0], lens[i][1]);
    free(body);
  }
}

/* ------------------------------------------------------------ seq lists */

/* Decodes a seqlist body from an exact-size copy. */
static int seqlist_decode_exact(const uint8_t *p, size_t n, tern__fr_seqlist *out) {
  uint8_t *copy = dup_exact(p, n);
  tern__rbuf rb;
  tern__rbuf_init(&rb, copy, n);
  int rc = tern__fr_seqlist_read(&rb, out);
  free(copy);
  return rc;
}

Test(seqlist, round_trips_empty_full_and_in_between) {
  static tern__fr_seqlist in, out;
  static uint8_t buf[TERN__SEQLIST_MAX * TERN__VARINT_MAX + 64];
  const uint8_t types[] = {TERN__FR_DELIVERY_ACK, TERN__FR_SYNC};
  const size_t counts[] = {0, 1, 2, 100, TERN__SEQLIST_MAX};
  const uint64_t lasts[] = {0, 7, 1ull << 40};
  for (size_t t = 0; t < 2; t++) {
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
      for (size_t l = 0; l < 3; l++) {
        memset(&in, 0, sizeof in);
        in.last = lasts[l];
        in.n = counts[c];
        /* Increasing, above last, with gaps of varying size. */
        uint64_t v = in.last;
        for (size_t i = 0; i < in.n; i++) in.seqs[i] = v += 1 + (i % 5) * 300;
        if (in.n == TERN__SEQLIST_MAX && l == 2) in.seqs[in.n - 1] = UINT64_MAX;
        size_t n = WRITE_FRAME(buf, tern__fr_seqlist_write(&frame_w, types[t], &in));
        split_frame f[2];
        cr_assert_eq(split_exact(buf, n, f, 2), 1);
        cr_assert_eq(f[0].type, types[t]);
        memset(&out, 0xee, sizeof out);
        cr_assert_eq(seqlist_decode_exact(buf + f[0].off, f[0].len, &out), 0,
                     "%zu seqs above %llu refused", in.n, (unsigned long long)in.last);
        cr_assert_eq(out.last, in.last);
        cr_assert_eq(out.n, in.n);
        if (in.n) cr_assert_arr_eq(out.seqs, in.seqs, in.n * sizeof in.seqs[0]);
      }
    }
  }
}

/* Writes a seqlist body by hand: last, count, then the given seqs (count
 * may differ from how many are given). */
static size_t seqlist_body(uint8_t *buf, size_t cap, uint64_t last, uint64_t count,
                           const uint64_t *seqs, size_t n) {
  tern__wbuf w;
  tern__wbuf_init(&w, buf, cap);
  tern__wbuf_varint(&w, last);
  tern__wbuf_varint(&w, count);
  for (size_t i = 0; i < n; i++) tern__wbuf_varint(&w, seqs[i]);
  cr_assert_not(w.overflow);
  return w.len;
}

Test(seqlist, refuses_more_than_256_seqs) {
  static uint64_t seqs[TERN__SEQLIST_MAX + 2];
  static uint8_t buf[(TERN__SEQLIST_MAX + 4) * TERN__VARINT_MAX];
  static tern__fr_seqlist out;
  for (size_t i = 0; i < TERN__SEQLIST_MAX + 2; i++) seqs[i] = 10 + i;
  size_t n = seqlist_body(buf, sizeof buf, 9, TERN__SEQLIST_MAX, seqs, TERN__SEQLIST_MAX);
  cr_assert_eq(seqlist_decode_exact(buf, n, &out), 0, "256 seqs refused");
  cr_assert_eq(out.n, TERN__SEQLIST_MAX);
  n = seqlist_body(buf, sizeof buf, 9, TERN__SEQLIST_MAX + 1, seqs, TERN__SEQLIST_MAX + 1);
  cr_assert_eq(seqlist_decode_exact(buf, n, &out), TERN_EPROTO, "257 seqs accepted");
  cr_assert_leq(out.n, TERN__SEQLIST_MAX);
  /* A huge count is refused before any seq is read (no 2^64 loop). */
  n = seqlist_body(buf, sizeof buf, 9, UINT64_MAX, seqs, 3);
  cr_assert_eq(seqlist_decode_exact(buf, n, &out), TERN_EPROTO);
  cr_assert_eq(out.n, 0);
  /* A count larger than the seqs present is a truncation. */
  n = seqlist_body(buf, sizeof buf, 9, 4, seqs, 3);
  cr_assert_eq(seqlist_decode_exact(buf, n, &out), TERN_EPROTO);
}

Test(seqlist, refuses_seqs_not_increasing_above_last) {
  static tern__fr_seqlist out;
  uint8_t buf[128];
  static const struct {
    uint64_t last;
    size_t n;
    uint64_t seqs[4];
    int ok;
  } cases[] = {
      {5, 1, {6}, 1},                    /* just above last */
      {5, 1, {5}, 0},                    /* equal to last: already covered */
      {5, 1, {4}, 0},                    /* below last */
      {5, 1, {0}, 0},
      {0, 1, {0}, 0},                    /* seq 0 is never a message */
      {5, 3, {6, 8, 9}, 1},
      {5, 3, {6, 8, 8}, 0},              /* a repeat */
      {5, 3, {6, 9, 8}, 0},              /* decreasing */
      {5, 4, {7, 6, 8, 9}, 0},
      {UINT64_MAX - 1, 1, {UINT64_MAX}, 1},
      {UINT64_MAX, 1, {UINT64_MAX}, 0},  /* nothing is above 2^64-1 */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t n = seqlist_body(buf, sizeof buf, cases[i].last, cases[i].n, cases[i].seqs, cases[i].n);
    int rc = seqlist_decode_exact(buf, n, &out);
    cr_assert_eq(rc, cases[i].ok ? 0 : TERN_EPROTO, "case %zu: %d", i, rc);
    if (cases[i].ok) {
      cr_assert_eq(out.n, cases[i].n);
      cr_assert_arr_eq(out.seqs, cases[i].seqs, cases[i].n * sizeof(uint64_t));
    }
  }
  /* An empty list over any last is fine, last 0 included. */
  size_t n = seqlist_body(buf, sizeof buf, 0, 0, NULL, 0);
  cr_assert_eq(seqlist_decode_exact(buf, n, &out), 0);
  cr_assert_eq(out.last, 0);
  cr_assert_eq(out.n, 0);
}

Test(frame, fixed_field_frames_accept_appended_fields) {
  /* spec/wire.md 5: a body may grow; readers ignore bytes after the fields
   * they know (all but MSG/DELIVER, whose body is the rest). */
  const uint8_t sack[] = {0x01, 0x02, 0x03, 0x7f, 0x55};
  const uint8_t seqlist[] = {0x01, 0x01, 0x02, 0x00};
  const uint8_t one[] = {0x05, 0x99, 0x01};
  const uint8_t notice[] = {0x01, 0x02, 0x03};
  tern__rbuf rb;
  tern__fr_sack s;
  tern__rbuf_init(&rb, sack, sizeof sack);
  cr_assert_eq(tern__fr_sack_read(&rb, &s), 0);
  cr_assert(s.cmid == 1 && s.seq == 2 && s.ts == 3);
  tern__fr_seqlist l;
  tern__rbuf_init(&rb, seqlist, sizeof seqlist);
  cr_assert_eq(tern__fr_seqlist_read(&rb, &l), 0);
  cr_assert(l.last == 1 && l.n == 1 && l.seqs[0] == 2);
  uint64_t v, k;
  tern__rbuf_init(&rb, one, sizeof one);
  cr_assert_eq(tern__fr_u64_read(&rb, &v), 0);
  cr_assert_eq(v, 5);
  tern__rbuf_init(&rb, notice, sizeof notice);
  cr_assert_eq(tern__fr_notice_ack_read(&rb, &k, &v), 0);
  cr_assert(k == 1 && v == 2);
  tern__fr_failed fl;
  tern__rbuf_init(&rb, notice, sizeof notice);
  cr_assert_eq(tern__fr_failed_read(&rb, &fl), 0);
  cr_assert(fl.cmid == 1 && fl.error == 2);
  tern__fr_keepalive ka;
  tern__rbuf_init(&rb, notice, sizeof notice);
  cr_assert_eq(tern__fr_keepalive_read(&rb, &ka), 0);
  cr_assert(ka.interval_ms == 1 && ka.flags == 2);
  uint8_t pk[64];
  size_t n = probe_key_body(pk, sizeof pk, 8, 32);
  pk[n++] = 0x07; /* a field from a later version */
  tern__fr_probe_key key;
  tern__rbuf_init(&rb, pk, n);
  cr_assert_eq(tern__fr_probe_key_read(&rb, &key), 0);
  cr_assert_eq(key.id[0], 1);
  cr_assert_eq(key.key[31], 32);
}

Test(frame, close_has_the_documented_bytes) {
  uint8_t buf[16];
  size_t n = WRITE_FRAME(buf, tern__fr_close_write(&frame_w, 300));
  const uint8_t want[] = {0x20, 0x02, 0xac, 0x02};
  cr_assert_eq(n, sizeof want);
  cr_assert_arr_eq(buf, want, n);
}

Test(frame, strings_over_their_maximum_are_refused) {
  uint8_t name[TERN_USER_MAX + 1];
  memset(name, 'n', sizeof name);
  static uint8_t reason[1025];
  memset(reason, 'r', sizeof reason);
  uint8_t buf[2048];
  tern__rbuf rb;

  for (size_t len = TERN_USER_MAX; len <= TERN_USER_MAX + 1; len++) {
    int want = len <= TERN_USER_MAX ? 0 : TERN_EPROTO;
    tern__fr_hello h = {.user = name, .user_len = len, .ping_interval_ms = 5};
    size_t n = WRITE_FRAME(buf, tern__fr_hello_write(&frame_w, &h));
    tern__fr_hello ho;
    tern__rbuf_init(&rb, buf + 2, n - 2);
    cr_assert_eq(tern__fr_hello_read(&rb, &ho), want, "hello user of %zu", len);

    tern__fr_welcome wf = {.user = name, .user_len = len};
    n = WRITE_FRAME(buf, tern__fr_welcome_write(&frame_w, &wf));
    tern__fr_welcome wo;
    tern__rbuf_init(&rb, buf + 2, n - 2);
    cr_assert_eq(tern__fr_welcome_read(&rb, &wo), want, "welcome user of %zu", len);

    tern__fr_msg m = {.peer = name, .peer_len = len};
    n = WRITE_FRAME(buf, tern__fr_msg_write(&frame_w, TERN__FR_DELIVER, &m));
    tern__fr_msg mo;
    tern__rbuf_init(&rb, buf + 2, n - 2);
    cr_assert_eq(tern__fr_msg_read(&rb, TERN__FR_DELIVER, &mo), want, "peer of %zu", len);
  }
  for (size_t len = 1024; len <= 1025; len++) {
    tern__fr_welcome wf = {.reason = reason, .reason_len = len};
    size_t n = WRITE_FRAME(buf, tern__fr_welcome_write(&frame_w, &wf));
    tern__fr_welcome wo;
    /* Bodies over 127 bytes have a 2-byte length. */
    tern__rbuf_init(&rb, buf + 3, n - 3);
    cr_assert_eq(tern__fr_welcome_read(&rb, &wo), len <= 1024 ? 0 : TERN_EPROTO, "reason of %zu",
                 len);
  }
}

/* A sample of every typed frame, encoded, for the truncation tests. */
typedef struct sample {
  uint8_t type;
  uint8_t bytes[400];
  size_t len;
  size_t fixed; /* MSG/DELIVER: body bytes before the free-form body */
} sample;

static size_t make_samples(sample *s) {
  static uint8_t long_body[200];
  memset(long_body, 0x5a, sizeof long_body);
  size_t k = 0;
  tern__wbuf w;
#define BEGIN(t)                                      \
  s[k].type = (t);                                    \
  s[k].fixed = 0;                                     \
  tern__wbuf_init(&w, s[k].bytes, sizeof s[k].bytes)
#define END()                \
  cr_assert_not(w.overflow); \
  s[k].len = w.len;          \
  k++

  BEGIN(TERN__FR_HELLO);
  tern__fr_hello_write(&w, &(tern__fr_hello){.user = (const uint8_t *)"alice", .user_len = 5, .ping_interval_ms = 30000});
  END();
  BEGIN(TERN__FR_HELLO);
  tern__fr_hello_write(&w, &(tern__fr_hello){.user = NULL});
  END();
  BEGIN(TERN__FR_WELCOME);
  tern__fr_welcome_write(&w, &(tern__fr_welcome){0, (const uint8_t *)"alice", 5, 1ull << 40,
                                                 (const uint8_t *)"ok", 2, 0});
  END();
  BEGIN(TERN__FR_WELCOME);
  tern__fr_welcome_write(&w, &(tern__fr_welcome){19, NULL, 0, 0, long_body, 150, 0});
  END();
  BEGIN(TERN__FR_MSG);
  tern__fr_msg_write(&w, TERN__FR_MSG,
                     &(tern__fr_msg){.cmid = 300, .prev_cmid = 299, .peer = (const uint8_t *)"bob",
                                     .peer_len = 3, .flags = 1, .body = long_body,
                                     .body_len = sizeof long_body});
  /* cmid 2, peer 1+3, flags 1, prev_cmid 2 */
  s[k].fixed = 2 + 4 + 1 + 2;
  END();
  BEGIN(TERN__FR_DELIVER);
  tern__fr_msg_write(&w, TERN__FR_DELIVER,
                     &(tern__fr_msg){.seq = 1000, .prev_seq = 900, .ts = 1700000000000ull,
                                     .peer = (const uint8_t *)"bob", .peer_len = 3, .flags = 1,
                                     .body = long_body, .body_len = sizeof long_body});
  /* seq 2, prev_seq 2, peer 1+3, ts 6, flags 1 */
  s[k].fixed = 2 + 2 + 4 + 6 + 1;
  END();
  BEGIN(TERN__FR_FAILED);
  tern__fr_failed_write(&w, TERN__FR_FAILED, &(tern__fr_failed){UINT64_MAX, (uint64_t)-TERN_EEXPIRED});
  END();
  BEGIN(TERN__FR_BUSY);
  tern__fr_failed_write(&w, TERN__FR_BUSY, &(tern__fr_failed){1700000000000ull << 16, (uint64_t)-TERN_ESTORE});
  END();
  BEGIN(TERN__FR_SERVER_ACK);
  tern__fr_sack_write(&w, &(tern__fr_sack){1700000000000ull << 16, 4242, 1700000000000ull});
  END();
  {
    static tern__fr_seqlist l;
    l.last = 1000;
    l.n = 3;
    l.seqs[0] = 1002;
    l.seqs[1] = 1003;
    l.seqs[2] = 70000;
    BEGIN(TERN__FR_DELIVERY_ACK);
    tern__fr_seqlist_write(&w, TERN__FR_DELIVERY_ACK, &l);
    END();
    BEGIN(TERN__FR_SYNC);
    tern__fr_seqlist_write(&w, TERN__FR_SYNC, &l);
    END();
    l.n = 0;
    BEGIN(TERN__FR_SYNC);
    tern__fr_seqlist_write(&w, TERN__FR_SYNC, &l);
    END();
  }
  BEGIN(TERN__FR_RECEIPT);
  tern__fr_u64_write(&w, TERN__FR_RECEIPT, 1700000000000ull << 16);
  END();
  BEGIN(TERN__FR_FLOOR);
  tern__fr_u64_write(&w, TERN__FR_FLOOR, 129);
  END();
  BEGIN(TERN__FR_NOTICE_ACK);
  tern__fr_notice_ack_write(&w, TERN__KIND_FAILED, 1ull << 50);
  END();
  BEGIN(TERN__FR_CLOSE);
  tern__fr_close_write(&w, 1ull << 35);
  END();
  BEGIN(TERN__FR_KEEPALIVE);
  tern__fr_keepalive_write(&w, &(tern__fr_keepalive){39600, TERN__KAF_WANT_KEY});
  END();
  BEGIN(TERN__FR_KEEPALIVE);
  tern__fr_keepalive_write(&w, &(tern__fr_keepalive){UINT64_MAX, 0});
  END();
  {
    tern__fr_probe_key pk;
    probe_key_sample(&pk, 9);
    BEGIN(TERN__FR_PROBE_KEY);
    tern__fr_probe_key_write(&w, &pk);
    END();
  }
#undef BEGIN
#undef END
  cr_assert_leq(k, 32, "make_samples wrote past its array");
  return k;
}

/* Runs the typed decoder of `type` over an rbuf. */
static int decode_typed(uint8_t type, tern__rbuf *b, size_t *msg_body_len) {
  switch (type) {
  case TERN__FR_HELLO: {
    tern__fr_hello f;
    return tern__fr_hello_read(b, &f);
  }
  case TERN__FR_WELCOME: {
    tern__fr_welcome f;
    return tern__fr_welcome_read(b, &f);
  }
  case TERN__FR_MSG:
  case TERN__FR_DELIVER: {
    tern__fr_msg f;
    int rc = tern__fr_msg_read(b, type, &f);
    if (msg_body_len) *msg_body_len = f.body_len;
    return rc;
  }
  case TERN__FR_FAILED:
  case TERN__FR_BUSY: {
    tern__fr_failed f;
    return tern__fr_failed_read(b, &f);
  }
  case TERN__FR_SERVER_ACK: {
    tern__fr_sack f;
    return tern__fr_sack_read(b, &f);
  }
  case TERN__FR_DELIVERY_ACK:
  case TERN__FR_SYNC: {
    static tern__fr_seqlist f;
    return tern__fr_seqlist_read(b, &f);
  }
  case TERN__FR_RECEIPT:
  case TERN__FR_FLOOR: {
    uint64_t v;
    return tern__fr_u64_read(b, &v);
  }
  case TERN__FR_NOTICE_ACK: {
    uint64_t kind, cmid;
    return tern__fr_notice_ack_read(b, &kind, &cmid);
  }
  case TERN__FR_CLOSE: {
    uint64_t r;
    return tern__fr_close_read(b, &r);
  }
  case TERN__FR_KEEPALIVE: {
    tern__fr_keepalive f;
    return tern__fr_keepalive_read(b, &f);
  }
  case TERN__FR_PROBE_KEY: {
    tern__fr_probe_key f;
    return tern__fr_probe_key_read(b, &f);
  }
  }
  cr_assert_fail("no decoder for type 0x%02x", type);
  return 0;
}

Test(frame, every_truncated_packet_is_a_protocol_error) {
  sample s[32];
  size_t ns = make_samples(s);
  for (size_t i = 0; i < ns; i++) {
    for (size_t cut = 1; cut < s[i].len; cut++) {
      uint8_t *p = dup_exact(s[i].bytes, cut);
      tern__rbuf pkt, body;
      uint8_t type;
      tern__rbuf_init(&pkt, p, cut);
      int rc = tern__frame_next(&pkt, &type, &body);
      cr_assert_eq(rc, TERN_EPROTO, "frame 0x%02x cut to %zu of %zu: %d", s[i].type, cut, s[i].len,
                   rc);
      /* And stays one: the splitter does not resynchronise on garbage. */
      cr_assert_eq(tern__frame_next(&pkt, &type, &body), TERN_EPROTO);
      free(p);
    }
    /* The empty packet is the clean end, not an error. */
    uint8_t *p = dup_exact(s[i].bytes, 0);
    tern__rbuf pkt, body;
    uint8_t type;
    tern__rbuf_init(&pkt, p, 0);
    cr_assert_eq(tern__frame_next(&pkt, &type, &body), 0);
    free(p);
  }
}

Test(frame, every_truncated_body_is_a_protocol_error) {
  sample s[32];
  size_t ns = make_samples(s);
  for (size_t i = 0; i < ns; i++) {
    split_frame f[1];
    cr_assert_eq(split_exact(s[i].bytes, s[i].len, f, 1), 1);
    const uint8_t *full = s[i].bytes + f[0].off;
    for (size_t cut = 0; cut <= f[0].len; cut++) {
      uint8_t *p = dup_exact(full, cut);
      tern__rbuf b;
      size_t body_len = SIZE_MAX;
      tern__rbuf_init(&b, p, cut);
      int rc = decode_typed(s[i].type, &b, &body_len);
      if (s[i].type == TERN__FR_MSG || s[i].type == TERN__FR_DELIVER) {
        /* The message body is "the rest": cutting it only shortens it. */
        if (cut < s[i].fixed) {
          cr_assert_eq(rc, TERN_EPROTO, "0x%02x body cut to %zu accepted", s[i].type, cut);
        } else {
          cr_assert_eq(rc, 0);
          cr_assert_eq(body_len, cut - s[i].fixed);
        }
      } else {
        cr_assert_eq(rc, cut == f[0].len ? 0 : TERN_EPROTO, "0x%02x body cut to %zu of %zu: %d",
                     s[i].type, cut, f[0].len, rc);
      }
      free(p);
    }
  }
}

Test(frame, unknown_frame_types_are_skipped_whole) {
  static uint8_t buf[1024];
  uint8_t junk[300];
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)i; /* looks like frames inside */
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_hello_write(&w, &(tern__fr_hello){.user = (const uint8_t *)"al", .user_len = 2, .ping_interval_ms = 7});
  size_t m = tern__frame_begin(&w, 0x7e); /* a frame type from the future */
  tern__wbuf_bytes(&w, junk, sizeof junk);
  tern__frame_end(&w, m);
  m = tern__frame_begin(&w, 0xff); /* and one with an empty body */
  tern__frame_end(&w, m);
  tern__fr_close_write(&w, 42);
  cr_assert_not(w.overflow);

  split_frame f[8];
  cr_assert_eq(split_exact(buf, w.len, f, 8), 4);
  cr_assert_eq(f[0].type, TERN__FR_HELLO);
  cr_assert_eq(f[1].type, 0x7e);
  cr_assert_eq(f[1].len, sizeof junk);
  cr_assert_arr_eq(buf + f[1].off, junk, sizeof junk);
  cr_assert_eq(f[2].type, 0xff);
  cr_assert_eq(f[2].len, 0);
  cr_assert_eq(f[3].type, TERN__FR_CLOSE);

  tern__rbuf b;
  tern__fr_hello h;
  tern__rbuf_init(&b, buf + f[0].off, f[0].len);
  cr_assert_eq(tern__fr_hello_read(&b, &h), 0);
  cr_assert_eq(h.ping_interval_ms, 7);
  uint64_t reason = 0;
  tern__rbuf_init(&b, buf + f[3].off, f[3].len);
  cr_assert_eq(tern__fr_close_read(&b, &reason), 0);
  cr_assert_eq(reason, 42);
}

/* -------------------------------------------------------------- writer */

#define CANARY 0xa5

Test(wbuf, overflow_is_sticky_and_writes_nothing_past_cap) {
  uint8_t mem[64];
  memset(mem, CANARY, sizeof mem);
  tern__wbuf w;
  tern__wbuf_init(&w, mem, 16);
  uint8_t ten[10];
  memset(ten, 1, sizeof ten);
  tern__wbuf_bytes(&w, ten, 10);
  cr_assert_not(w.overflow);
  cr_assert_eq(w.len, 10);
  tern__wbuf_bytes(&w, ten, 10); /* 20 > 16 */
  cr_assert(w.overflow);
  cr_assert_eq(w.len, 10, "a refused write must not count");
  /* Even a write that would fit is refused after an overflow, so a caller
   * who checks once at the end never sends a frame with a hole in it. */
  tern__wbuf_u8(&w, 2);
  tern__wbuf_varint(&w, 3);
  cr_assert_eq(w.len, 10);
  for (size_t i = 10; i < sizeof mem; i++) cr_assert_eq(mem[i], CANARY, "byte %zu written", i);
}

Test(wbuf, a_frame_that_does_not_fit_writes_nothing_past_cap) {
  sample s[32];
  size_t ns = make_samples(s);
  for (size_t i = 0; i < ns; i++) {
    for (size_t cap = 0; cap < s[i].len; cap++) {
      /* Canary bytes after `cap` show any write past it. */
      uint8_t *p = malloc(cap + 32);
      memset(p, CANARY, cap + 32);
      tern__wbuf w;
      tern__wbuf_init(&w, p, cap);
      /* Re-encode the sample by decoding it first. */
      tern__rbuf pkt, body;
      uint8_t type;
      tern__rbuf_init(&pkt, s[i].bytes, s[i].len);
      cr_assert_eq(tern__frame_next(&pkt, &type, &body), 1);
      switch (type) {
      case TERN__FR_HELLO: {
        tern__fr_hello f;
        cr_assert_eq(tern__fr_hello_read(&body, &f), 0);
        tern__fr_hello_write(&w, &f);
        break;
      }
      case TERN__FR_WELCOME: {
        tern__fr_welcome f;
        cr_assert_eq(tern__fr_welcome_read(&body, &f), 0);
        tern__fr_welcome_write(&w, &f);
        break;
      }
      case TERN__FR_MSG:
      case TERN__FR_DELIVER: {
        tern__fr_msg f;
        cr_assert_eq(tern__fr_msg_read(&body, type, &f), 0);
        tern__fr_msg_write(&w, type, &f);
        break;
      }
      case TERN__FR_FAILED:
      case TERN__FR_BUSY: {
        tern__fr_failed f;
        cr_assert_eq(tern__fr_failed_read(&body, &f), 0);
        tern__fr_failed_write(&w, type, &f);
        break;
      }
      case TERN__FR_SERVER_ACK: {
        tern__fr_sack f;
        cr_assert_eq(tern__fr_sack_read(&body, &f), 0);
        tern__fr_sack_write(&w, &f);
        break;
      }
      case TERN__FR_DELIVERY_ACK:
      case TERN__FR_SYNC: {
        static tern__fr_seqlist f;
        cr_assert_eq(tern__fr_seqlist_read(&body, &f), 0);
        tern__fr_seqlist_write(&w, type, &f);
        break;
      }
      case TERN__FR_RECEIPT:
      case TERN__FR_FLOOR: {
        uint64_t v;
        cr_assert_eq(tern__fr_u64_read(&body, &v), 0);
        tern__fr_u64_write(&w, type, v);
        break;
      }
      case TERN__FR_NOTICE_ACK: {
        uint64_t kind, cmid;
        cr_assert_eq(tern__fr_notice_ack_read(&body, &kind, &cmid), 0);
        tern__fr_notice_ack_write(&w, kind, cmid);
        break;
      }
      case TERN__FR_CLOSE: {
        uint64_t r;
        cr_assert_eq(tern__fr_close_read(&body, &r), 0);
        tern__fr_close_write(&w, r);
        break;
      }
      case TERN__FR_KEEPALIVE: {
        tern__fr_keepalive f;
        cr_assert_eq(tern__fr_keepalive_read(&body, &f), 0);
        tern__fr_keepalive_write(&w, &f);
        break;
      }
      case TERN__FR_PROBE_KEY: {
        tern__fr_probe_key f;
        cr_assert_eq(tern__fr_probe_key_read(&body, &f), 0);
        tern__fr_probe_key_write(&w, &f);
        break;
      }
      default:
        cr_assert_fail("no encoder for type 0x%02x", type);
      }
      cr_assert(w.overflow, "0x%02x (%zu bytes) fit in %zu", type, s[i].len, cap);
      cr_assert_leq(w.len, cap);
      for (size_t j = cap; j < cap + 32; j++)
        cr_assert_eq(p[j], CANARY, "0x%02x into cap %zu wrote byte %zu", type, cap, j);
      free(p);
    }
  }
}

/* Writes a frame of type 0x7f and `n` body bytes after a 3-byte CLOSE
 * frame, and checks every byte of the result. */
static void check_frame_of_size(size_t n) {
  size_t cap = 4 + 1 + 4 + n;
  uint8_t *buf = malloc(cap);
  uint8_t *body = malloc(n ? n : 1);
  for (size_t i = 0; i < n; i++) body[i] = (uint8_t)(i * 7 + 1);
  tern__wbuf w;
  tern__wbuf_init(&w, buf, cap);
  tern__fr_close_write(&w, 300); /* 20 02 ac 02 */
  size_t m = tern__frame_begin(&w, 0x7f);
  tern__wbuf_bytes(&w, body, n);
  tern__frame_end(&w, m);
  cr_assert_not(w.overflow, "frame of %zu did not fit", n);

  uint8_t len_bytes[TERN__VARINT_MAX];
  size_t ll = varint_encode(n, len_bytes);
  cr_assert_eq(w.len, 4 + 1 + ll + n, "frame of %zu: length %zu", n, w.len);
  const uint8_t close[] = {0x20, 0x02, 0xac, 0x02};
  cr_assert_arr_eq(buf, close, 4, "frame of %zu clobbered the frame before it", n);
  cr_assert_eq(buf[4], 0x7f);
  cr_assert_arr_eq(buf + 5, len_bytes, ll, "frame of %zu: wrong length bytes", n);
  if (n) cr_assert_arr_eq(buf + 5 + ll, body, n, "frame of %zu: body moved wrongly", n);

  split_frame f[3];
  cr_assert_eq(split_exact(buf, w.len, f, 3), 2);
  cr_assert_eq(f[1].type, 0x7f);
  cr_assert_eq(f[1].len, n);

  /* One byte short of the final size: refused, and nothing written past
   * the end, even while the length is being moved into place. */
  size_t tight = w.len - 1;
  uint8_t *t = malloc(tight + 16);
  memset(t, CANARY, tight + 16);
  tern__wbuf_init(&w, t, tight);
  tern__fr_close_write(&w, 300);
  m = tern__frame_begin(&w, 0x7f);
  tern__wbuf_bytes(&w, body, n);
  tern__frame_end(&w, m);
  cr_assert(w.overflow, "frame of %zu fit in %zu bytes", n, tight);
  for (size_t i = tight; i < tight + 16; i++)
    cr_assert_eq(t[i], CANARY, "frame of %zu wrote byte %zu past cap %zu", n, i, tight);
  free(t);
  free(buf);
  free(body);
}

Test(wbuf, frame_end_writes_minimal_lengths_across_varint_boundaries) {
  size_t sizes[] = {0, 1, 127, 128, 129, 16383, 16384, 16385, (1u << 21) - 1, 1u << 21};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) check_frame_of_size(sizes[i]);
}

/* ---------------------------------------------------------- chat channel */

static uint8_t channel(const char *a, const char *b) {
  return tern__chat_channel((const uint8_t *)a, strlen(a), (const uint8_t *)b, strlen(b));
}

Test(chat_channel, both_directions_share_a_channel_in_range) {
  char a[32], b[32];
  for (int i = 0; i < 300; i++) {
    for (int j = 0; j < 30; j++) {
      snprintf(a, sizeof a, "user%d", i);
      snprintf(b, sizeof b, "u%dx", j * 37);
      uint8_t ab = channel(a, b), ba = channel(b, a);
      cr_assert_eq(ab, ba, "(%s,%s)=%u but (%s,%s)=%u", a, b, ab, b, a, ba);
      cr_assert(ab >= TERN__CH_CHAT0 && ab < TERN__CH_CHAT0 + TERN__CH_CHAT_COUNT, "channel %u", ab);
    }
  }
  /* One name a prefix of the other: ordering must not depend on memcmp of
   * the common part alone. */
  cr_assert_eq(channel("ab", "abc"), channel("abc", "ab"));
  for (int i = 0; i < 200; i++) {
    snprintf(a, sizeof a, "u%d", i);
    snprintf(b, sizeof b, "u%dsuffix", i);
    cr_assert_eq(channel(a, b), channel(b, a), "(%s,%s) differs from (%s,%s)", a, b, b, a);
  }
  cr_assert_eq(channel("a", "a"), channel("a", "a"));
}

Test(chat_channel, conversations_spread_over_all_four_channels) {
  unsigned count[256] = {0};
  char a[32], b[32];
  const unsigned pairs = 4000;
  for (unsigned i = 0; i < pairs; i++) {
    snprintf(a, sizeof a, "alice%u", i);
    snprintf(b, sizeof b, "bob%u", i / 3);
    count[channel(a, b)]++;
  }
  for (int c = TERN__CH_CHAT0; c < TERN__CH_CHAT0 + TERN__CH_CHAT_COUNT; c++)
    cr_assert(count[c] > pairs / 4 / 2 && count[c] < pairs / 4 * 2, "channel %d got %u of %u", c,
              count[c], pairs);
}

/* ------------------------------------------------------------ user names */

static int valid(const char *s) { return tern__user_valid((const uint8_t *)s, strlen(s)); }

Test(user_name, accepts_printable_names_up_to_the_limit) {
  cr_assert(valid("a"));
  cr_assert(valid("alice"));
  cr_assert(valid("Bob_the-2nd.phone"));
  cr_assert(valid("\xc3\xa9lodie")); /* UTF-8 is allowed */
  char name[TERN_USER_MAX + 2];
  memset(name, 'x', sizeof name);
  cr_assert(tern__user_valid((const uint8_t *)name, TERN_USER_MAX));
  cr_assert_not(tern__user_valid((const uint8_t *)name, TERN_USER_MAX + 1));
}

Test(user_name, refuses_empty_spaces_controls_and_at) {
  cr_assert_not(tern__user_valid((const uint8_t *)"", 0));
  cr_assert_not(valid("a b"));
  cr_assert_not(valid(" alice"));
  cr_assert_not(valid("alice\n"));
  cr_assert_not(valid("al\tice"));
  cr_assert_not(valid("al\x7f"));
  cr_assert_not(valid("alice@relay"));
  cr_assert_not(valid("@"));
  cr_assert_not(tern__user_valid((const uint8_t *)"al\0ce", 5), "NUL inside a name");
  for (int c = 0; c <= 0x20; c++) {
    uint8_t n[3] = {'a', (uint8_t)c, 'b'};
    cr_assert_not(tern__user_valid(n, 3), "byte 0x%02x accepted", c);
  }
}

/* spec/wire.md 6.2 and 6.14: WELCOME's optional last field retry_ms. A
 * WELCOME without it (what older relays send) reads as 0; with it, as
 * written; a reader that stops after reason (an older client) is fine. */
Test(frame, welcome_retry_ms_is_optional) {
  uint8_t buf[128];
  for (uint64_t want = 0; want <= 2500; want += 2500) {
    tern__wbuf w;
    tern__wbuf_init(&w, buf, sizeof buf);
    tern__fr_welcome_write(&w, &(tern__fr_welcome){.status = 24, .reason = (const uint8_t *)"draining",
                                                   .reason_len = 8, .retry_ms = want});
    tern__rbuf r, body;
    tern__rbuf_init(&r, buf, w.len);
    uint8_t type;
    cr_assert_eq(tern__frame_next(&r, &type, &body), 1);
    tern__fr_welcome f;
    cr_assert_eq(tern__fr_welcome_read(&body, &f), 0);
    cr_assert_eq(f.status, 24);
    cr_assert_eq(f.retry_ms, want);
    cr_assert_eq(f.reason_len, 8);
    if (want) { /* half a varint is malformed */
      tern__rbuf_init(&body, buf + 2, w.len - 3);
      cr_assert_eq(tern__fr_welcome_read(&body, &f), TERN_EPROTO);
    }
  }
}

/* Optional fields have one encoding: present means not empty / not 0 (the
 * frame fuzzer re-encodes what it reads and checks the bytes match). */
Test(frame, optional_fields_present_but_empty_are_malformed) {
  static const uint8_t hello_empty_token[] = {0x01, 'a', 0x00, 0x01, 0x00};
  tern__rbuf b;
  tern__fr_hello h;
  tern__rbuf_init(&b, hello_empty_token, sizeof hello_empty_token);
  cr_assert_eq(tern__fr_hello_read(&b, &h), TERN_EPROTO, "HELLO with an empty token field");
  tern__rbuf_init(&b, hello_empty_token, 4);
  cr_assert_eq(tern__fr_hello_read(&b, &h), 0, "the same HELLO without the field");
  cr_assert_eq(h.token_len, 0);
  static const uint8_t welcome_zero_retry[] = {0x18, 0x00, 0x00, 0x00, 0x00};
  tern__fr_welcome wf;
  tern__rbuf_init(&b, welcome_zero_retry, sizeof welcome_zero_retry);
  cr_assert_eq(tern__fr_welcome_read(&b, &wf), TERN_EPROTO, "WELCOME with retry_ms 0 written out");
  tern__rbuf_init(&b, welcome_zero_retry, 4);
  cr_assert_eq(tern__fr_welcome_read(&b, &wf), 0);
  cr_assert_eq(wf.retry_ms, 0);
}

/* RESET_TOKEN (spec/wire.md §6.15): 25 | len | 16 | token; another length
 * is refused. */
Test(frame, reset_token_round_trips_and_refuses_other_lengths) {
  uint8_t buf[64], in[16], out[16];
  for (int i = 0; i < 16; i++) in[i] = (uint8_t)(0xA0 + i);
  size_t n = WRITE_FRAME(buf, tern__fr_reset_token_write(&frame_w, in));
  cr_assert_eq(n, 2 + 1 + 16);
  cr_assert_eq(buf[0], 0x25);
  cr_assert_eq(buf[1], 17);
  cr_assert_eq(buf[2], 16);
  split_frame f[2];
  cr_assert_eq(split_exact(buf, n, f, 2), 1);
  uint8_t *body = dup_exact(buf + f[0].off, f[0].len);
  tern__rbuf rb;
  tern__rbuf_init(&rb, body, f[0].len);
  cr_assert_eq(tern__fr_reset_token_read(&rb, out), 0);
  cr_assert_arr_eq(out, in, 16);
  free(body);
  uint8_t short_body[16] = {15};
  tern__rbuf_init(&rb, short_body, 16);
  cr_assert_eq(tern__fr_reset_token_read(&rb, out), TERN_EPROTO);
}

/* The RESET datagram (spec/wire.md §14): FF FF 74 72 | 01 | token(16);
 * any other length, magic or version is not a RESET. The token depends on
 * the relay key, the device key and the HELLO timestamp. */
Test(frame, reset_datagram_round_trips_and_tokens_differ) {
  uint8_t sk[32] = {1}, sk2[32] = {2}, dev[32] = {3}, dev2[32] = {4};
  uint8_t t[16], t2[16], got[16], d[TERN__RESET_BYTES + 1];
  tern__reset_token(sk, dev, 1000, t);
  tern__reset_write(d, t);
  cr_assert_eq(d[0], 0xFF);
  cr_assert_eq(d[1], 0xFF);
  cr_assert_eq(d[2], 0x74);
  cr_assert_eq(d[3], 0x72);
  cr_assert_eq(d[4], 1);
  cr_assert_eq(tern__reset_parse(d, TERN__RESET_BYTES, got), 1);
  cr_assert_arr_eq(got, t, 16);
  cr_assert_eq(tern__reset_parse(d, TERN__RESET_BYTES - 1, got), 0);
  cr_assert_eq(tern__reset_parse(d, TERN__RESET_BYTES + 1, got), 0);
  d[4] = 2;
  cr_assert_eq(tern__reset_parse(d, TERN__RESET_BYTES, got), 0, "another version");
  d[4] = 1;
  d[3] = 0x66;
  cr_assert_eq(tern__reset_parse(d, TERN__RESET_BYTES, got), 0, "a FULL's magic");
  tern__reset_token(sk, dev, 1000, t2);
  cr_assert_arr_eq(t2, t, 16, "deterministic");
  tern__reset_token(sk, dev, 1001, t2);
  cr_assert_arr_neq(t2, t, 16, "another session");
  tern__reset_token(sk, dev2, 1000, t2);
  cr_assert_arr_neq(t2, t, 16, "another device");
  tern__reset_token(sk2, dev, 1000, t2);
  cr_assert_arr_neq(t2, t, 16, "another relay");
}

/* Groups on the wire (spec/wire.md §6.18-6.20): a MSG may name "@group",
 * a DELIVER never comes from one; GROUP_ACK and GROUP_FLOOR carry the
 * group; GROUP_RECEIPT's count cannot pass its total. */
Test(frame, group_frames_round_trip_and_refuse_what_is_not_a_group) {
  uint8_t buf[128];
  tern__rbuf rb;
  tern__fr_msg m = {.cmid = 5, .peer = (const uint8_t *)"@team", .peer_len = 5,
                    .body = (const uint8_t *)"x", .body_len = 1};
  size_t n = WRITE_FRAME(buf, tern__fr_msg_write(&frame_w, TERN__FR_MSG, &m));
  tern__fr_msg out;
  tern__rbuf_init(&rb, buf + 2, n - 2);
  cr_assert_eq(tern__fr_msg_read(&rb, TERN__FR_MSG, &out), 0, "a MSG to a group");
  tern__fr_msg d = {.seq = 3, .peer = (const uint8_t *)"@team", .peer_len = 5, .body = (const uint8_t *)"x",
                    .body_len = 1};
  n = WRITE_FRAME(buf, tern__fr_msg_write(&frame_w, TERN__FR_DELIVER, &d));
  tern__rbuf_init(&rb, buf + 2, n - 2);
  cr_assert_eq(tern__fr_msg_read(&rb, TERN__FR_DELIVER, &out), TERN_EPROTO, "a DELIVER from a group");
  d.peer = (const uint8_t *)"alice";
  d.peer_len = 5;
  d.flags = TERN__MSGF_GROUP;
  d.to = (const uint8_t *)"team";
  d.to_len = 4;
  n = WRITE_FRAME(buf, tern__fr_msg_write(&frame_w, TERN__FR_DELIVER, &d));
  tern__rbuf_init(&rb, buf + 2, n - 2);
  cr_assert_eq(tern__fr_msg_read(&rb, TERN__FR_DELIVER, &out), TERN_EPROTO, "GROUP names a group");
  d.to = (const uint8_t *)"@team";
  d.to_len = 5;
  n = WRITE_FRAME(buf, tern__fr_msg_write(&frame_w, TERN__FR_DELIVER, &d));
  tern__rbuf_init(&rb, buf + 2, n - 2);
  cr_assert_eq(tern__fr_msg_read(&rb, TERN__FR_DELIVER, &out), 0);
  cr_assert_eq(out.to_len, 5);

  tern__fr_gack g = {.group = (const uint8_t *)"@team", .group_len = 5, .list = {.last = 7, .n = 1, .seqs = {9}}};
  n = WRITE_FRAME(buf, tern__fr_gack_write(&frame_w, TERN__FR_GROUP_ACK, &g));
  tern__fr_gack gin;
  tern__rbuf_init(&rb, buf + 2, n - 2);
  cr_assert_eq(tern__fr_gack_read(&rb, TERN__FR_GROUP_ACK, &gin), 0);
  cr_assert_eq(gin.list.last, 7);
  cr_assert_eq(gin.list.n, 1);
  cr_assert_eq(gin.list.seqs[0], 9);
  g.group = (const uint8_t *)"team";
  g.group_len = 4;
  n = WRITE_FRAME(buf, tern__fr_gack_write(&frame_w, TERN__FR_GROUP_FLOOR, &g));
  tern__rbuf_init(&rb, buf + 2, n - 2);
  cr_assert_eq(tern__fr_gack_read(&rb, TERN__FR_GROUP_FLOOR, &gin), TERN_EPROTO, "not a group's name");

  char longest[66];
  longest[0] = '@';
  memset(longest + 1, 'g', 64);
  longest[65] = 0;
  cr_assert_eq(tern__group_valid((const uint8_t *)longest, 65), 0, "65 bytes: too long");
  cr_assert_eq(tern__group_valid((const uint8_t *)longest, 64), 1, "64 bytes in all");

  tern__fr_greceipt r = {.cmid = 4, .got = 3, .of = 2};
  n = WRITE_FRAME(buf, tern__fr_greceipt_write(&frame_w, &r));
  tern__fr_greceipt rin;
  tern__rbuf_init(&rb, buf + 2, n - 2);
  cr_assert_eq(tern__fr_greceipt_read(&rb, &rin), TERN_EPROTO, "3 of 2");
}
