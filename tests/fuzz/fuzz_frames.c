/*
 * libFuzzer target for the frame codec. The input is a packet of frames:
 * it is split with tern__frame_next, and every frame body goes through
 * every typed decoder (not only the one its type names, so each decoder
 * sees every shape of input). Whatever decodes is re-encoded, and must
 *
 *   - re-encode to exactly the bytes the decoder consumed (varints and
 *     lengths are minimal-only, so each value has one encoding), and
 *   - decode again to the same fields.
 *
 * The input is also read as a run of varints, each of which must re-encode
 * to the bytes it was read from. Any mismatch aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire/frame.h"
#include "tern/tern.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same(const uint8_t *a, size_t an, const uint8_t *b, size_t bn) {
  return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

/* Splits a re-encoded single frame; aborts unless it is exactly one frame
 * of `type`. Returns its body. */
static tern__rbuf only_frame(const tern__wbuf *w, uint8_t type) {
  tern__rbuf pkt, body, rest;
  uint8_t t = 0;
  tern__rbuf_init(&pkt, w->p, w->len);
  if (tern__frame_next(&pkt, &t, &body) != 1 || t != type) abort();
  if (tern__frame_next(&pkt, &t, &rest) != 0) abort();
  return body;
}

/* The re-encoded body must be the bytes the first decoder consumed. */
static void check_canonical(const tern__rbuf *re, const uint8_t *body, size_t consumed) {
  if (!same(re->p, re->len, body, consumed)) abort();
}

static void fuzz_hello(const uint8_t *body, size_t n, uint8_t *buf, size_t cap) {
  tern__rbuf r;
  tern__fr_hello a, b;
  tern__wbuf w;
  tern__rbuf_init(&r, body, n);
  if (tern__fr_hello_read(&r, &a) != 0) return;
  if (a.user_len > TERN_USER_MAX) abort();
  tern__wbuf_init(&w, buf, cap);
  tern__fr_hello_write(&w, &a);
  if (w.overflow) abort();
  tern__rbuf re = only_frame(&w, TERN__FR_HELLO);
  check_canonical(&re, body, r.pos);
  if (tern__fr_hello_read(&re, &b) != 0) abort();
  if (!same(a.user, a.user_len, b.user, b.user_len) || a.ping_interval_ms != b.ping_interval_ms ||
      a.time_us != b.time_us || !same(a.token, a.token_len, b.token, b.token_len))
    abort();
}

static void fuzz_welcome(const uint8_t *body, size_t n, uint8_t *buf, size_t cap) {
  tern__rbuf r;
  tern__fr_welcome a, b;
  tern__wbuf w;
  tern__rbuf_init(&r, body, n);
  if (tern__fr_welcome_read(&r, &a) != 0) return;
  if (a.user_len > TERN_USER_MAX) abort();
  tern__wbuf_init(&w, buf, cap);
  tern__fr_welcome_write(&w, &a);
  if (w.overflow) abort();
  tern__rbuf re = only_frame(&w, TERN__FR_WELCOME);
  check_canonical(&re, body, r.pos);
  if (tern__fr_welcome_read(&re, &b) != 0) abort();
  if (a.status != b.status || !same(a.user, a.user_len, b.user, b.user_len) ||
      a.server_time_ms != b.server_time_ms || !same(a.reason, a.reason_len, b.reason, b.reason_len) ||
      a.retry_ms != b.retry_ms)
    abort();
}

static void fuzz_msg(uint8_t type, const uint8_t *body, size_t n, uint8_t *buf, size_t cap) {
  tern__rbuf r;
  tern__fr_msg a, b;
  tern__wbuf w;
  tern__rbuf_init(&r, body, n);
  if (tern__fr_msg_read(&r, type, &a) != 0) return;
  /* The message body is the rest of the frame. A MSG may go to a group; a
   * DELIVER is from a user, and names its carbon's recipient or its group
   * in `to` (wire.md §6.4). */
  int peer_ok = tern__user_valid(a.peer, a.peer_len) ||
                (type == TERN__FR_MSG && tern__group_valid(a.peer, a.peer_len));
  if (r.pos != n || !peer_ok) abort();
  if (type == TERN__FR_DELIVER && (a.flags & TERN__MSGF_CARBON) && !tern__user_valid(a.to, a.to_len)) abort();
  if (type == TERN__FR_DELIVER && (a.flags & TERN__MSGF_GROUP) && !tern__group_valid(a.to, a.to_len)) abort();
  /* Each type reads only its own fields; the others stay 0. */
  if (type == TERN__FR_DELIVER && (a.cmid != 0 || a.prev_cmid != 0)) abort();
  if (type == TERN__FR_MSG && (a.seq != 0 || a.prev_seq != 0 || a.ts != 0)) abort();
  tern__wbuf_init(&w, buf, cap);
  tern__fr_msg_write(&w, type, &a);
  if (w.overflow) abort();
  tern__rbuf re = only_frame(&w, type);
  check_canonical(&re, body, r.pos);
  if (tern__fr_msg_read(&re, type, &b) != 0) abort();
  if (a.cmid != b.cmid || a.prev_cmid != b.prev_cmid || a.seq != b.seq ||
      a.prev_seq != b.prev_seq || a.ts != b.ts || !same(a.peer, a.peer_len, b.peer, b.peer_len) ||
      a.flags != b.flags || !same(a.body, a.body_len, b.body, b.body_len) ||
      !same(a.to, a.to_len, b.to, b.to_len))
    abort();
}

/* FAILED and BUSY share a layout. */
static void fuzz_failed(uint8_t type, const uint8_t *body, size_t n, uint8_t *buf, size_t cap) {
  tern__rbuf r;
  tern__fr_failed a, b;
  tern__wbuf w;
  tern__rbuf_init(&r, body, n);
  if (tern__fr_failed_read(&r, &a) != 0) return;
  tern__wbuf_init(&w, buf, cap);
  tern__fr_failed_write(&w, type, &a);
  if (w.overflow) abort();
  tern__rbuf re = only_frame(&w, type);
  check_canonical(&re, body, r.pos);
  if (tern__fr_failed_read(&re, &b) != 0) abort();
  if (a.cmid != b.cmid || a.error != b.error) abort();
}

static void fuzz_sack(const uint8_t *body, size_t n, uint8_t *buf, size_t cap) {
  tern__rbuf r;
  tern__fr_sack a, b;
  tern__wbuf w;
  tern__rbuf_init(&r, body, n);
  if (tern__fr_sack_read(&r, &a) != 0) return;
  tern__wbuf_init(&w, buf, cap);
  tern__fr_sack_write(&w, &a);
  if (w.overflow) abort();
  tern__rbuf re = only_frame(&w, TERN__FR_SERVER_ACK);
  check_canonical(&re, body, r.pos);
  if (tern__fr_sack_read(&re, &b) != 0) abort();
  if (a.cmid != b.cmid || a.seq != b.seq || a.ts != b.ts) abort();
}

/* DELIVERY_ACK and SYNC share a layout. A list that decodes has at most
 * TERN__SEQLIST_MAX seqs, strictly increasing above last. */
static void fuzz_seqlist(uint8_t type, const uint8_t *body, size_t n, uint8_t *buf, size_t cap) {
  static tern__fr_seqlist a, b;
  tern__rbuf r;
  tern__wbuf w;
  tern__rbuf_init(&r, body, n);
  if (tern__fr_seqlist_read(&r, &a) != 0) return;
  if (a.n > TERN__SEQLIST_MAX) abort();
  for (size_t i = 0; i < a.n; i++)
    if (a.seqs[i] <= (i ? a.seqs[i - 1] : a.last)) abort();
  tern__wbuf_init(&w, buf, cap);
  tern__fr_seqlist_write(&w, type, &a);
  if (w.overflow) abort();
  tern__rbuf re = only_frame(&w, type);
  check_canonical(&re, body, r.pos);
  if (tern__fr_seqlist_read(&re, &b) != 0) abort();
  if (a.last != b.last || a.n != b.n ||
      (a.n && memcmp(a.seqs, b.seqs, a.n * sizeof a.seqs[0]) != 0))
    abort();
}

/* RECEIPT and FLOOR: one varint. */
static void fuzz_u64(uint8_t type, const uint8_t *body, size_t n, uint8_t *buf, size_t cap) {
  tern__rbuf r;
  uint64_t a, b;
  tern__wbuf w;
  tern__rbuf_init(&r, body, n);
  if (tern__fr_u64_read(&r, &a) != 0) return;
  tern__wbuf_init(&w, buf, cap);
  tern__fr_u64_write(&w, type, a);
  if (w.overflow) abort();
  tern__rbuf re = only_frame(&w, type);
  check_canonical(&re, body, r.pos);
  if (tern__fr_u64_read(&re, &b) != 0 || a != b) abort();
}

static void fuzz_notice_ack(const uint8_t *body, size_t n, uint8_t *buf, size_t cap) {
  tern__rbuf r;
  uint64_t ak, ac, bk, bc;
  tern__wbuf w;
  tern__rbuf_init(&r, body, n);
  if (tern__fr_notice_ack_read(&r, &ak, &ac) != 0) return;
  tern__wbuf_init(&w, buf, cap);
  tern__fr_notice_ack_write(&w, ak, ac);
  if (w.overflow) abort();
  tern__rbuf re = only_frame(&w, TERN__FR_NOTICE_ACK);
  check_canonical(&re, body, r.pos);
  if (tern__fr_notice_ack_read(&re, &bk, &bc) != 0 || ak != bk || ac != bc) abort();
}

/* GROUP_ACK and GROUP_FLOOR (wire.md §6.18), GROUP_RECEIPT (§6.19): what
 * decodes re-encodes to the same fields; a group's name is always one. */
static void fuzz_gack(uint8_t type, const uint8_t *body, size_t n, uint8_t *buf, size_t cap) {
  tern__rbuf r;
  tern__fr_gack a, b;
  tern__wbuf w;
  tern__rbuf_init(&r, body, n);
  if (tern__fr_gack_read(&r, type, &a) != 0) return;
  if (!tern__group_valid(a.group, a.group_len) || a.list.n > TERN__SEQLIST_MAX) abort();
  tern__wbuf_init(&w, buf, cap);
  tern__fr_gack_write(&w, type, &a);
  if (w.overflow) abort();
  tern__rbuf re = only_frame(&w, type);
  check_canonical(&re, body, r.pos);
  if (tern__fr_gack_read(&re, type, &b) != 0 || !same(a.group, a.group_len, b.group, b.group_len) ||
      a.list.last != b.list.last || a.list.n != b.list.n ||
      memcmp(a.list.seqs, b.list.seqs, a.list.n * sizeof(uint64_t)) != 0)
    abort();
}

static void fuzz_greceipt(const uint8_t *body, size_t n, uint8_t *buf, size_t cap) {
  tern__rbuf r;
  tern__fr_greceipt a, b;
  tern__wbuf w;
  tern__rbuf_init(&r, body, n);
  if (tern__fr_greceipt_read(&r, &a) != 0) return;
  if (a.got > a.of) abort();
  tern__wbuf_init(&w, buf, cap);
  tern__fr_greceipt_write(&w, &a);
  if (w.overflow) abort();
  tern__rbuf re = only_frame(&w, TERN__FR_GROUP_RECEIPT);
  check_canonical(&re, body, r.pos);
  if (tern__fr_greceipt_read(&re, &b) != 0 || a.cmid != b.cmid || a.got != b.got || a.of != b.of) abort();
}

static void fuzz_close(const uint8_t *body, size_t n, uint8_t *buf, size_t cap) {
  tern__rbuf r;
  uint64_t a, b;
  tern__wbuf w;
  tern__rbuf_init(&r, body, n);
  if (tern__fr_close_read(&r, &a) != 0) return;
  tern__wbuf_init(&w, buf, cap);
  tern__fr_close_write(&w, a);
  if (w.overflow) abort();
  tern__rbuf re = only_frame(&w, TERN__FR_CLOSE);
  check_canonical(&re, body, r.pos);
  if (tern__fr_close_read(&re, &b) != 0 || a != b) abort();
}

static void fuzz_keepalive(const uint8_t *body, size_t n, uint8_t *buf, size_t cap) {
  tern__rbuf r;
  tern__fr_keepalive a, b;
  tern__wbuf w;
  tern__rbuf_init(&r, body, n);
  if (tern__fr_keepalive_read(&r, &a) != 0) return;
  tern__wbuf_init(&w, buf, cap);
  tern__fr_keepalive_write(&w, &a);
  if (w.overflow) abort();
  tern__rbuf re = only_frame(&w, TERN__FR_KEEPALIVE);
  check_canonical(&re, body, r.pos);
  if (tern__fr_keepalive_read(&re, &b) != 0) abort();
  if (a.interval_ms != b.interval_ms || a.flags != b.flags) abort();
}

/* A PROBE_KEY that decodes has read exactly an 8-byte id and a 32-byte
 * key, each with its one-byte length. */
static void fuzz_probe_key(const uint8_t *body, size_t n, uint8_t *buf, size_t cap) {
  tern__rbuf r;
  tern__fr_probe_key a, b;
  tern__wbuf w;
  tern__rbuf_init(&r, body, n);
  if (tern__fr_probe_key_read(&r, &a) != 0) return;
  if (r.pos != 1 + sizeof a.id + 1 + sizeof a.key) abort();
  if (memcmp(a.id, body + 1, sizeof a.id) != 0 || memcmp(a.key, body + 2 + sizeof a.id, sizeof a.key) != 0)
    abort();
  tern__wbuf_init(&w, buf, cap);
  tern__fr_probe_key_write(&w, &a);
  if (w.overflow) abort();
  tern__rbuf re = only_frame(&w, TERN__FR_PROBE_KEY);
  check_canonical(&re, body, r.pos);
  if (tern__fr_probe_key_read(&re, &b) != 0) abort();
  if (memcmp(&a, &b, sizeof a) != 0) abort();
}

static void fuzz_presence(const uint8_t *body, size_t n, uint8_t *buf, size_t cap) {
  tern__rbuf r;
  tern__fr_presence a, b;
  tern__wbuf w;
  tern__rbuf_init(&r, body, n);
  if (tern__fr_presence_read(&r, &a) != 0) return;
  if (a.online > 1 || a.user_len == 0 || a.user_len > TERN_USER_MAX) abort();
  tern__wbuf_init(&w, buf, cap);
  tern__fr_presence_write(&w, &a);
  if (w.overflow) abort();
  tern__rbuf re = only_frame(&w, TERN__FR_PRESENCE);
  check_canonical(&re, body, r.pos);
  if (tern__fr_presence_read(&re, &b) != 0) abort();
  if (!same(a.user, a.user_len, b.user, b.user_len) || a.online != b.online || a.since_ms != b.since_ms)
    abort();
}

static void fuzz_varints(const uint8_t *p, size_t n) {
  tern__rbuf r;
  tern__rbuf_init(&r, p, n);
  while (r.pos < n) {
    size_t start = r.pos;
    uint64_t v = tern__rbuf_varint(&r);
    if (r.bad) {
      if (v != 0) abort();
      return;
    }
    uint8_t enc[TERN__VARINT_MAX];
    tern__wbuf w;
    tern__wbuf_init(&w, enc, sizeof enc);
    tern__wbuf_varint(&w, v);
    if (w.overflow || !same(enc, w.len, p + start, r.pos - start)) abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* An exact-size copy, so that reading past the end is caught. */
  uint8_t *pkt = malloc(size ? size : 1);
  /* Room for any re-encoded frame: its body is at most the input, plus the
   * type, the length and the writer's 4-byte length reserve. */
  size_t cap = size + 16;
  uint8_t *buf = malloc(cap);
  if (!pkt || !buf) abort();
  if (size) memcpy(pkt, data, size);

  fuzz_varints(pkt, size);

  tern__rbuf r, body;
  uint8_t type;
  int rc;
  tern__rbuf_init(&r, pkt, size);
  while ((rc = tern__frame_next(&r, &type, &body)) == 1) {
    if (body.p < pkt || body.p + body.len > pkt + size || body.pos != 0) abort();
    fuzz_hello(body.p, body.len, buf, cap);
    fuzz_welcome(body.p, body.len, buf, cap);
    fuzz_msg(TERN__FR_MSG, body.p, body.len, buf, cap);
    fuzz_msg(TERN__FR_DELIVER, body.p, body.len, buf, cap);
    fuzz_failed(TERN__FR_FAILED, body.p, body.len, buf, cap);
    fuzz_failed(TERN__FR_BUSY, body.p, body.len, buf, cap);
    fuzz_sack(body.p, body.len, buf, cap);
    fuzz_seqlist(TERN__FR_DELIVERY_ACK, body.p, body.len, buf, cap);
    fuzz_seqlist(TERN__FR_SYNC, body.p, body.len, buf, cap);
    fuzz_u64(TERN__FR_RECEIPT, body.p, body.len, buf, cap);
    fuzz_u64(TERN__FR_FLOOR, body.p, body.len, buf, cap);
    fuzz_notice_ack(body.p, body.len, buf, cap);
    fuzz_close(body.p, body.len, buf, cap);
    fuzz_keepalive(body.p, body.len, buf, cap);
    fuzz_probe_key(body.p, body.len, buf, cap);
    fuzz_presence(body.p, body.len, buf, cap);
    fuzz_gack(TERN__FR_GROUP_ACK, body.p, body.len, buf, cap);
    fuzz_gack(TERN__FR_GROUP_FLOOR, body.p, body.len, buf, cap);
    fuzz_greceipt(body.p, body.len, buf, cap);
  }
  if (rc != 0 && rc != TERN_EPROTO) abort();
  if (rc == 0 && r.pos != size) abort();

  free(buf);
  free(pkt);
  return 0;
}
