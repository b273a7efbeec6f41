/*
 * The worked examples of spec/wire.md, spec/handshake.md and
 * spec/keepalive.md, byte for byte, read from the spec itself (each names
 * its example with an HTML comment: tests/support/specex.h), and the
 * constants and defaults spec/messages.md quotes. Change the code's wire or
 * the spec's bytes alone and this test fails; every example the spec names
 * must be checked here (spec_source suite).
 * The constants the spec quotes (packet types, channels, disconnect codes,
 * error values, limits) are asserted too.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "client/ccore.h"
#include "wire/frame.h"
#include "wire/full.h"
#include "wire/reset.h"
#include "io/link.h"
#include "wire/probe.h"
#include "relay/probesvc.h"
#include "relay/rcore.h"
#include "wire/replay.h"
#include "store/rstore.h"
#include "wire/session.h"
#include "wire/token.h"
#include "tern/tern.h"
#include "specex.h"
#include "io/tcpframe.h"
#include "tern_test.h"

/* The spec's examples, read from the spec's Markdown by the suite's init (specex.h). */
static specex HELLO_FRAME;
static specex TCP_FRAME;
static specex WELCOME_FRAME;
static specex WELCOME_REFUSED;
static specex MSG_FRAME;
static specex DELIVER_FRAME;
static specex DELIVER_EPHEMERAL;
static specex DELIVER_CARBON;
static specex DELIVER_OWN;
static specex FAILED_FRAME;
static specex SERVER_ACK_FRAME;
static specex DELIVERY_ACK_FRAME;
static specex RECEIPT_FRAME;
static specex NOTICE_ACK_FRAME;
static specex SYNC_FRAME;
static specex SYNC_EMPTY;
static specex FLOOR_FRAME;
static specex BUSY_FRAME;
static specex CLOSE_FRAME;
static specex DATA_PLAINTEXT;
static specex KA_FRAME;
static specex PROBE_REQ;
static specex PROBE_ACK;
static specex PROBE_REPLY;
static specex DATA_PACKET;
static specex HS_HELLO;
static specex HS_WELCOME;
static specex HS_CLIENT_S_PUB;
static specex HS_RELAY_S_PUB;
static specex HS_C1;
static specex HS_C2;
static specex HS_FIRST_DATA;
static specex DATA_HEADER_STREAM3;
static specex PROBE_KEY_FRAME;
static specex FULL_DGRAM;
static specex TOKEN_BACKEND_PUB;
static specex TOKEN_BYTES;
static specex HELLO_FRAME_TOKEN;
static specex GOAWAY_FRAME;
static specex PRESENCE_FRAME;
static specex RESET_TOKEN_FRAME;
static specex SETTLED_FRAME;
static specex GROUP_ACK_FRAME;
static specex GROUP_RECEIPT_FRAME;
static specex RESET_DGRAM;

static const struct {
  const char *name;
  specex *ex;
} examples[] = {
    {"hello-frame", &HELLO_FRAME},
    {"welcome-frame", &WELCOME_FRAME},
    {"welcome-refused", &WELCOME_REFUSED},
    {"msg-frame", &MSG_FRAME},
    {"deliver-frame", &DELIVER_FRAME},
    {"deliver-ephemeral", &DELIVER_EPHEMERAL},
    {"deliver-carbon", &DELIVER_CARBON},
    {"deliver-own", &DELIVER_OWN},
    {"failed-frame", &FAILED_FRAME},
    {"server-ack-frame", &SERVER_ACK_FRAME},
    {"delivery-ack-frame", &DELIVERY_ACK_FRAME},
    {"receipt-frame", &RECEIPT_FRAME},
    {"notice-ack-frame", &NOTICE_ACK_FRAME},
    {"sync-frame", &SYNC_FRAME},
    {"sync-empty", &SYNC_EMPTY},
    {"floor-frame", &FLOOR_FRAME},
    {"busy-frame", &BUSY_FRAME},
    {"close-frame", &CLOSE_FRAME},
    {"data-plaintext", &DATA_PLAINTEXT},
    {"keepalive-frame", &KA_FRAME},
    {"probe-request", &PROBE_REQ},
    {"probe-ack", &PROBE_ACK},
    {"probe-reply", &PROBE_REPLY},
    {"data-packet", &DATA_PACKET},
    {"hs-hello", &HS_HELLO},
    {"hs-welcome", &HS_WELCOME},
    {"hs-client-s-pub", &HS_CLIENT_S_PUB},
    {"hs-relay-s-pub", &HS_RELAY_S_PUB},
    {"hs-c1", &HS_C1},
    {"hs-c2", &HS_C2},
    {"hs-first-data", &HS_FIRST_DATA},
    {"data-header-stream3", &DATA_HEADER_STREAM3},
    {"probe-key-frame", &PROBE_KEY_FRAME},
    {"full-datagram", &FULL_DGRAM},
    {"tcp-frame", &TCP_FRAME},
    {"token-backend-pub", &TOKEN_BACKEND_PUB},
    {"token-bytes", &TOKEN_BYTES},
    {"hello-frame-token", &HELLO_FRAME_TOKEN},
    {"goaway-frame", &GOAWAY_FRAME},
    {"presence-frame", &PRESENCE_FRAME},
    {"reset-token-frame", &RESET_TOKEN_FRAME},
    {"settled-frame", &SETTLED_FRAME},
    {"group-ack-frame", &GROUP_ACK_FRAME},
    {"group-receipt-frame", &GROUP_RECEIPT_FRAME},
    {"reset-datagram", &RESET_DGRAM},
};

static void setup(void) {
  cr_assert_geq(sodium_init(), 0, "sodium_init failed");
  for (size_t i = 0; i < sizeof examples / sizeof *examples; i++) {
    char why[300];
    cr_assert_eq(specex_load(examples[i].name, examples[i].ex, why, sizeof why), 0,
                 "spec example: %s", why);
  }
}

TestSuite(spec, .init = setup);

#define S(x) (const uint8_t *)(x), strlen(x)

static void assert_bytes(const uint8_t *got, size_t got_len, const uint8_t *want, size_t want_len,
                         const char *what) {
  cr_assert_eq(got_len, want_len, "%s: %zu bytes, spec says %zu", what, got_len, want_len);
  for (size_t i = 0; i < want_len; i++)
    cr_assert_eq(got[i], want[i], "%s: byte %zu is %02x, spec says %02x", what, i, got[i],
                 want[i]);
}

#define ASSERT_WBUF(w, want, what)                                            \
  do {                                                                        \
    cr_assert_not((w).overflow, "%s: overflow", what);                        \
    assert_bytes((w).p, (w).len, (want).b, (want).n, what);                   \
  } while (0)

/* ------------------------------------------------------------ constants */

Test(spec, packet_and_frame_types) {
  cr_assert_eq(TERN__PKT_HELLO, 0x01);
  cr_assert_eq(TERN__PKT_WELCOME, 0x02);
  cr_assert_eq(TERN__PKT_DATA, 0x03);
  cr_assert_eq(TERN__PROTO_VERSION_BYTE, 0x01);
  cr_assert_str_eq(TERN__PROLOGUE, "tern/1");
  cr_assert_eq(TERN__FR_HELLO, 0x01);
  cr_assert_eq(TERN__FR_WELCOME, 0x02);
  cr_assert_eq(TERN__FR_MSG, 0x10);
  cr_assert_eq(TERN__FR_DELIVER, 0x11);
  cr_assert_eq(TERN__FR_FAILED, 0x12);
  cr_assert_eq(TERN__FR_SERVER_ACK, 0x13);
  cr_assert_eq(TERN__FR_DELIVERY_ACK, 0x14);
  cr_assert_eq(TERN__FR_RECEIPT, 0x15);
  cr_assert_eq(TERN__FR_NOTICE_ACK, 0x16);
  cr_assert_eq(TERN__FR_SYNC, 0x17);
  cr_assert_eq(TERN__FR_FLOOR, 0x18);
  cr_assert_eq(TERN__FR_BUSY, 0x19);
  cr_assert_eq(TERN__FR_CLOSE, 0x20);
  cr_assert_eq(TERN__MSGF_EPHEMERAL, 1);
  cr_assert_eq(TERN__SEQLIST_MAX, 256);
  /* NOTICE_ACK kinds (wire.md 6.9), and the store's notice kinds match. */
  cr_assert_eq(TERN__KIND_RECEIPT, 1);
  cr_assert_eq(TERN__KIND_FAILED, 2);
  cr_assert_eq(TERN__NOTICE_RECEIPT, 1);
  cr_assert_eq(TERN__NOTICE_FAILED, 2);
}

/* spec/messages.md, "Timers": the client core's defaults. */
Test(spec, client_core_defaults) {
  tern__ccore_config cfg;
  memset(&cfg, 0xab, sizeof cfg);
  tern__ccore_config_default(&cfg);
  cr_assert_eq(cfg.resend_ms, 4000);
  cr_assert_eq(cfg.dead_link_ms, 8000);
  cr_assert_eq(cfg.window, 64);
  cr_assert_eq(cfg.ack_delay_ms, 20);
  cr_assert_eq(cfg.busy_retry_ms, 2000);
  cr_assert_eq(cfg.held_max, 1024);
  cr_assert_eq(cfg.copy_max_bytes, 512);
  cr_assert_eq(cfg.copy_delay_ms, 30);
  cr_assert_eq(cfg.copy_delay_min_ms, 5);
  cr_assert_eq(cfg.copy_count, 2);
}

/* spec/messages.md, "Timers": the relay core's defaults. */
Test(spec, relay_core_defaults) {
  tern__rcore_config cfg;
  memset(&cfg, 0xab, sizeof cfg);
  tern__rcore_config_default(&cfg);
  cr_assert_eq(cfg.resend_ms, 3000);
  cr_assert_eq(cfg.deliver_window, 1024);
  cr_assert_eq(cfg.deliver_window_bytes, 1048576);
  cr_assert_eq(cfg.deliver_budget_bytes, 256ull << 20);
  cr_assert_eq(cfg.send_rate_msgs, 1000);
  cr_assert_eq(cfg.send_rate_bytes, 16ull << 20);
  cr_assert_eq(cfg.ephemeral_rate, 20);
  cr_assert_eq(cfg.presence_min_ms, 1000);
  cr_assert_null(cfg.may_see);
  cr_assert_eq(cfg.expire_every_ms, 60000);
  cr_assert_eq(cfg.retention_ms, 30ull * 24 * 3600 * 1000);
  cr_assert_eq(cfg.busy_ms, 2000);
  cr_assert_eq(cfg.max_message_size, 65536);
  cr_assert_eq(cfg.copy_max_bytes, 512);
  cr_assert_eq(cfg.copy_delay_ms, 30);
  cr_assert_eq(cfg.copy_delay_min_ms, 5);
  cr_assert_eq(cfg.copy_count, 2);
  cr_assert_null(cfg.user_exists);
  cr_assert_eq(cfg.fault_ack_before_commit, 0);
}

Test(spec, sizes_and_limits) {
  cr_assert_eq(TERN__DATA_HEADER, 9);
  cr_assert_eq(TERN__DATA_OVERHEAD, 25);
  cr_assert_eq(TERN__HELLO_OVERHEAD, 98);
  cr_assert_eq(TERN__WELCOME_OVERHEAD, 50);
  cr_assert_eq(TERN__HS_PAYLOAD_MAX, 2048);
  cr_assert_eq(TERN__SEND_LIMIT, (uint64_t)1 << 48);
  cr_assert_eq(TERN__STREAMS, 8);
  cr_assert_eq(TERN__REPLAY_BLOCKS, 33);
  cr_assert_eq(TERN__REPLAY_WINDOW, 2048);
  cr_assert_eq(TERN__REPLAY_SMALL_BLOCKS, 3);
  cr_assert_eq(TERN__REPLAY_SMALL_WINDOW, 128);
  cr_assert_eq(TERN__STREAM_UNORDERED, 7);
  cr_assert_eq(TERN_USER_MAX, 64);
  cr_assert_eq(TERN_MESSAGE_MAX, 1048576u);
  cr_assert_eq(TERN__VARINT_MAX, 10);
}

Test(spec, channels) {
  cr_assert_eq(TERN__CH_CONTROL, 0);
  cr_assert_eq(TERN__CH_CHAT0, 1);
  cr_assert_eq(TERN__CH_CHAT_COUNT, 4);
  cr_assert_eq(TERN__CH_SIGNAL, 5);
  cr_assert_eq(TERN__CH_BULK, 6);
  cr_assert_eq(TERN__CH_COPY, 7);
  cr_assert_eq(TERN__CH_COUNT, 8);
}

Test(spec, disconnect_codes) {
  static const uint32_t want[] = {
    TERN__DISC_NONE,     TERN__DISC_GOODBYE,    TERN__DISC_HELLO_UNREADABLE,
    TERN__DISC_REFUSED,  TERN__DISC_HS_TIMEOUT, TERN__DISC_PROTOCOL,
    TERN__DISC_VERSION,  TERN__DISC_SHUTDOWN,   TERN__DISC_NONCE,
    TERN__DISC_REVOKED,
  };
  for (uint32_t i = 0; i < sizeof want / sizeof want[0]; i++)
    cr_assert_eq(want[i], i, "disconnect code %u moved", i);
}

/* The table of spec/wire.md, "Error codes": value on the wire -> name. */
Test(spec, error_code_table) {
  static const char *const names[] = {
    "TERN_OK",       "TERN_EINVAL",    "TERN_ENOMEM",    "TERN_EPROTO",      "TERN_EDECRYPT",
    "TERN_EREPLAY",  "TERN_ERELAYKEY", "TERN_EUNKNOWNKEY", "TERN_EHANDSHAKE", "TERN_ENONCE",
    "TERN_ETOOBIG",  "TERN_EIO",       "TERN_ETIMEDOUT", "TERN_ECLOSED",     "TERN_EAGAIN",
    "TERN_EEXIST",   "TERN_ENOENT",    "TERN_EKEYFILE",  "TERN_EOFFLINE",    "TERN_EVERSION",
    "TERN_EBUFSIZE", "TERN_ECRYPTO",   "TERN_EADDR",     "TERN_ERESOURCE",   "TERN_ESHUTDOWN",
    "TERN_ESTORE",   "TERN_EEXPIRED",  "TERN_EDENIED",     "TERN_EBADNET",     "TERN_EFULL",
    "TERN_EBUSY",    "TERN_ETOKENEXPIRED", "TERN_ETOKENINVALID", "TERN_ETOKENKEY",
    "TERN_ETOKENREVOKED", "TERN_ENOTSUP", "TERN_EREPLACED", "TERN_ESTALE", "TERN_EQUOTA",
    "TERN_ERATE", "TERN_ERESET",
  };
  for (int v = 0; v < (int)(sizeof names / sizeof names[0]); v++)
    cr_assert_str_eq(tern_errname(-v), names[v], "wire value %d", v);
  cr_assert_str_eq(tern_errname(-41), "TERN_E?");
}

/* --------------------------------------------------------------- varints */

Test(spec, varint_examples) {
  static const struct {
    uint64_t v;
    uint8_t b[10];
    size_t n;
  } ex[] = {
    {0, {0x00}, 1},
    {1, {0x01}, 1},
    {127, {0x7f}, 1},
    {128, {0x80, 0x01}, 2},
    {300, {0xac, 0x02}, 2},
    {15000, {0x98, 0x75}, 2},
    {16384, {0x80, 0x80, 0x01}, 3},
    {1700000000000ull, {0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31}, 6},
    {UINT64_MAX, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 10},
  };
  for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
    uint8_t buf[16];
    tern__wbuf w;
    tern__wbuf_init(&w, buf, sizeof buf);
    tern__wbuf_varint(&w, ex[i].v);
    assert_bytes(buf, w.len, ex[i].b, ex[i].n, "varint");
    tern__rbuf r;
    tern__rbuf_init(&r, ex[i].b, ex[i].n);
    cr_assert_eq(tern__rbuf_varint(&r), ex[i].v);
    cr_assert_not(r.bad);
    cr_assert_eq(r.pos, ex[i].n);
  }
}

static int varint_bad(const uint8_t *b, size_t n) {
  tern__rbuf r;
  tern__rbuf_init(&r, b, n);
  (void)tern__rbuf_varint(&r);
  return r.bad;
}

Test(spec, varint_refusals) {
  static const uint8_t nonminimal[] = {0x80, 0x00};              /* 0 in two bytes */
  static const uint8_t nonminimal2[] = {0xac, 0x82, 0x00};       /* 300 padded */
  static const uint8_t truncated[] = {0x80};
  static const uint8_t tenth_big[] = {0xff, 0xff, 0xff, 0xff, 0xff,
                                      0xff, 0xff, 0xff, 0xff, 0x02}; /* 2^64 */
  static const uint8_t eleven[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                   0x80, 0x80, 0x80, 0x81, 0x00};
  cr_assert(varint_bad(nonminimal, sizeof nonminimal));
  cr_assert(varint_bad(nonminimal2, sizeof nonminimal2));
  cr_assert(varint_bad(truncated, sizeof truncated));
  cr_assert(varint_bad(tenth_big, sizeof tenth_big));
  cr_assert(varint_bad(eleven, sizeof eleven));
}

/* ---------------------------------------------------------------- frames */

/* The cmid of the examples: the second id of a client store created at
 * Unix ms 1700000000000 (ids start at ms << 16), after the first. */
#define EX_CMID0 (1700000000000ull << 16)
#define EX_CMID (EX_CMID0 + 1)
#define EX_TS 1700000000123ull

/* The 10-byte plaintext of the DATA examples (wire.md 4.2, handshake.md):
 * fixed bytes. They were the MSG example before MSG gained prev_cmid; read
 * as a frame now they are a MSG with cmid 1, to bob, flags 0, prev_cmid
 * 104 and body "i", but the examples only need known bytes. */

/* Splits a buffer holding exactly one frame; returns its type and body. */
static uint8_t one_frame(const uint8_t *p, size_t n, tern__rbuf *body) {
  tern__rbuf r;
  uint8_t type = 0;
  tern__rbuf_init(&r, p, n);
  cr_assert_eq(tern__frame_next(&r, &type, body), 1);
  cr_assert_eq(tern__frame_next(&r, &type, body + 1), 0, "more than one frame");
  return type;
}

Test(spec, hello_frame) {
  uint8_t buf[64];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_hello h = {.user = S("alice"), .ping_interval_ms = 15000, .time_us = 1700000000000000ull};
  tern__fr_hello_write(&w, &h);
  ASSERT_WBUF(w, HELLO_FRAME, "HELLO frame");

  tern__rbuf body[2];
  cr_assert_eq(one_frame(HELLO_FRAME.b, HELLO_FRAME.n, body), TERN__FR_HELLO);
  tern__fr_hello got;
  cr_assert_eq(tern__fr_hello_read(&body[0], &got), 0);
  cr_assert_eq(got.user_len, 5);
  cr_assert_eq(memcmp(got.user, "alice", 5), 0);
  cr_assert_eq(got.ping_interval_ms, 15000);
  cr_assert_eq(got.time_us, 1700000000000000ull);
}

Test(spec, welcome_frames) {
  uint8_t buf[64];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_welcome ok = {.status = 0, .user = S("alice"), .server_time_ms = 1700000000000ull,
                         .reason = S("")};
  tern__fr_welcome_write(&w, &ok);
  ASSERT_WBUF(w, WELCOME_FRAME, "WELCOME frame");

  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_welcome no = {.status = (uint64_t)-TERN_EUNKNOWNKEY, .user = S(""),
                         .server_time_ms = 1700000000000ull, .reason = S("not allowed")};
  tern__fr_welcome_write(&w, &no);
  ASSERT_WBUF(w, WELCOME_REFUSED, "WELCOME refusal frame");

  tern__rbuf body[2];
  cr_assert_eq(one_frame(WELCOME_REFUSED.b, WELCOME_REFUSED.n, body), TERN__FR_WELCOME);
  tern__fr_welcome got;
  cr_assert_eq(tern__fr_welcome_read(&body[0], &got), 0);
  cr_assert_eq(-(int)got.status, TERN_EUNKNOWNKEY);
  cr_assert_eq(got.user_len, 0);
  cr_assert_eq(got.server_time_ms, 1700000000000ull);
  cr_assert_eq(got.reason_len, 11);
}

Test(spec, msg_and_deliver_frames) {
  uint8_t buf[64];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_msg m = {.cmid = EX_CMID, .prev_cmid = EX_CMID0, .peer = S("bob"), .flags = 0,
                    .body = S("hi"), .seq = 7 /* not on the wire */};
  tern__fr_msg_write(&w, TERN__FR_MSG, &m);
  ASSERT_WBUF(w, MSG_FRAME, "MSG frame");

  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_msg d = {.seq = 42, .prev_seq = 40, .peer = S("alice"), .ts = EX_TS, .flags = 0,
                    .body = S("hi"), .cmid = 99 /* not on the wire */};
  tern__fr_msg_write(&w, TERN__FR_DELIVER, &d);
  ASSERT_WBUF(w, DELIVER_FRAME, "DELIVER frame");

  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_msg e = {.peer = S("alice"), .ts = EX_TS, .flags = TERN__MSGF_EPHEMERAL,
                    .body = S("t")};
  tern__fr_msg_write(&w, TERN__FR_DELIVER, &e);
  ASSERT_WBUF(w, DELIVER_EPHEMERAL, "ephemeral DELIVER frame");

  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_msg cb = {.seq = 17, .prev_seq = 15, .peer = S("alice"), .ts = EX_TS,
                     .flags = TERN__MSGF_CARBON, .to = S("bob"), .body = S("hi")};
  tern__fr_msg_write(&w, TERN__FR_DELIVER, &cb);
  ASSERT_WBUF(w, DELIVER_CARBON, "carbon DELIVER frame");
  tern__wbuf_init(&w, buf, sizeof buf);
  cb.flags |= TERN__MSGF_OWN;
  cb.body_len = 0;
  tern__fr_msg_write(&w, TERN__FR_DELIVER, &cb);
  ASSERT_WBUF(w, DELIVER_OWN, "own carbon DELIVER frame");

  tern__rbuf body[2];
  tern__fr_msg got;
  cr_assert_eq(one_frame(MSG_FRAME.b, MSG_FRAME.n, body), TERN__FR_MSG);
  cr_assert_eq(tern__fr_msg_read(&body[0], TERN__FR_MSG, &got), 0);
  cr_assert_eq(got.cmid, 111411200000000001ull);
  cr_assert_eq(got.prev_cmid, 111411200000000000ull);
  cr_assert_eq(got.peer_len, 3);
  cr_assert_eq(memcmp(got.peer, "bob", 3), 0);
  cr_assert_eq(got.flags, 0);
  cr_assert_eq(got.body_len, 2);
  cr_assert_eq(memcmp(got.body, "hi", 2), 0);
  cr_assert_eq(got.seq, 0);

  cr_assert_eq(one_frame(DELIVER_FRAME.b, DELIVER_FRAME.n, body), TERN__FR_DELIVER);
  cr_assert_eq(tern__fr_msg_read(&body[0], TERN__FR_DELIVER, &got), 0);
  cr_assert_eq(got.cmid, 0);
  cr_assert_eq(got.seq, 42);
  cr_assert_eq(got.prev_seq, 40);
  cr_assert_eq(got.peer_len, 5);
  cr_assert_eq(memcmp(got.peer, "alice", 5), 0);
  cr_assert_eq(got.ts, 1700000000123ull);
  cr_assert_eq(got.flags, 0);
  cr_assert_eq(got.body_len, 2);
  cr_assert_eq(memcmp(got.body, "hi", 2), 0);

  cr_assert_eq(one_frame(DELIVER_EPHEMERAL.b, DELIVER_EPHEMERAL.n, body), TERN__FR_DELIVER);
  cr_assert_eq(tern__fr_msg_read(&body[0], TERN__FR_DELIVER, &got), 0);
  cr_assert_eq(got.seq, 0);
  cr_assert_eq(got.prev_seq, 0);
  cr_assert_eq(got.flags, TERN__MSGF_EPHEMERAL);
  cr_assert_eq(got.body_len, 1);
}

Test(spec, failed_and_busy_frames) {
  uint8_t buf[32];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_failed f = {.cmid = EX_CMID, .error = (uint64_t)-TERN_EEXPIRED};
  tern__fr_failed_write(&w, TERN__FR_FAILED, &f);
  ASSERT_WBUF(w, FAILED_FRAME, "FAILED frame");

  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_failed b = {.cmid = EX_CMID, .error = (uint64_t)-TERN_ESTORE};
  tern__fr_failed_write(&w, TERN__FR_BUSY, &b);
  ASSERT_WBUF(w, BUSY_FRAME, "BUSY frame");

  tern__rbuf body[2];
  tern__fr_failed got;
  cr_assert_eq(one_frame(FAILED_FRAME.b, FAILED_FRAME.n, body), TERN__FR_FAILED);
  cr_assert_eq(tern__fr_failed_read(&body[0], &got), 0);
  cr_assert_eq(got.cmid, EX_CMID);
  cr_assert_eq(got.error, 26);
  cr_assert_eq(-(int)got.error, TERN_EEXPIRED);
  cr_assert_eq(one_frame(BUSY_FRAME.b, BUSY_FRAME.n, body), TERN__FR_BUSY);
  cr_assert_eq(tern__fr_failed_read(&body[0], &got), 0);
  cr_assert_eq(got.cmid, EX_CMID);
  cr_assert_eq(-(int)got.error, TERN_ESTORE);
}

Test(spec, server_ack_frame) {
  uint8_t buf[32];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_sack a = {.cmid = EX_CMID, .seq = 42, .ts = EX_TS};
  tern__fr_sack_write(&w, &a);
  ASSERT_WBUF(w, SERVER_ACK_FRAME, "SERVER_ACK frame");

  tern__rbuf body[2];
  tern__fr_sack got;
  cr_assert_eq(one_frame(SERVER_ACK_FRAME.b, SERVER_ACK_FRAME.n, body), TERN__FR_SERVER_ACK);
  cr_assert_eq(tern__fr_sack_read(&body[0], &got), 0);
  cr_assert_eq(got.cmid, EX_CMID);
  cr_assert_eq(got.seq, 42);
  cr_assert_eq(got.ts, EX_TS);
}

Test(spec, delivery_ack_and_sync_frames) {
  uint8_t buf[32];
  tern__wbuf w;
  static tern__fr_seqlist l, got;
  memset(&l, 0, sizeof l);
  l.last = 40;
  l.n = 2;
  l.seqs[0] = 42;
  l.seqs[1] = 44;
  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_seqlist_write(&w, TERN__FR_DELIVERY_ACK, &l);
  ASSERT_WBUF(w, DELIVERY_ACK_FRAME, "DELIVERY_ACK frame");

  l.n = 1;
  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_seqlist_write(&w, TERN__FR_SYNC, &l);
  ASSERT_WBUF(w, SYNC_FRAME, "SYNC frame");

  l.last = 0;
  l.n = 0;
  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_seqlist_write(&w, TERN__FR_SYNC, &l);
  ASSERT_WBUF(w, SYNC_EMPTY, "SYNC of a new device");

  tern__rbuf body[2];
  cr_assert_eq(one_frame(DELIVERY_ACK_FRAME.b, DELIVERY_ACK_FRAME.n, body),
               TERN__FR_DELIVERY_ACK);
  cr_assert_eq(tern__fr_seqlist_read(&body[0], &got), 0);
  cr_assert_eq(got.last, 40);
  cr_assert_eq(got.n, 2);
  cr_assert_eq(got.seqs[0], 42);
  cr_assert_eq(got.seqs[1], 44);
  cr_assert_eq(one_frame(SYNC_FRAME.b, SYNC_FRAME.n, body), TERN__FR_SYNC);
  cr_assert_eq(tern__fr_seqlist_read(&body[0], &got), 0);
  cr_assert_eq(got.last, 40);
  cr_assert_eq(got.n, 1);
  cr_assert_eq(got.seqs[0], 42);

  /* wire.md 6.7: seqs must increase above last. 40 | 2 | 44 42 is refused,
   * and so is 40 | 1 | 40. */
  static const uint8_t bad1[] = {0x28, 0x02, 0x2c, 0x2a};
  static const uint8_t bad2[] = {0x28, 0x01, 0x28};
  tern__rbuf r;
  tern__rbuf_init(&r, bad1, sizeof bad1);
  cr_assert_eq(tern__fr_seqlist_read(&r, &got), TERN_EPROTO);
  tern__rbuf_init(&r, bad2, sizeof bad2);
  cr_assert_eq(tern__fr_seqlist_read(&r, &got), TERN_EPROTO);
}

Test(spec, receipt_floor_and_notice_ack_frames) {
  uint8_t buf[32];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_u64_write(&w, TERN__FR_RECEIPT, EX_CMID);
  ASSERT_WBUF(w, RECEIPT_FRAME, "RECEIPT frame");

  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_u64_write(&w, TERN__FR_FLOOR, 100);
  ASSERT_WBUF(w, FLOOR_FRAME, "FLOOR frame");

  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_notice_ack_write(&w, TERN__KIND_RECEIPT, EX_CMID);
  ASSERT_WBUF(w, NOTICE_ACK_FRAME, "NOTICE_ACK frame");

  tern__rbuf body[2];
  uint64_t v = 0, kind = 0;
  cr_assert_eq(one_frame(RECEIPT_FRAME.b, RECEIPT_FRAME.n, body), TERN__FR_RECEIPT);
  cr_assert_eq(tern__fr_u64_read(&body[0], &v), 0);
  cr_assert_eq(v, EX_CMID);
  cr_assert_eq(one_frame(FLOOR_FRAME.b, FLOOR_FRAME.n, body), TERN__FR_FLOOR);
  cr_assert_eq(tern__fr_u64_read(&body[0], &v), 0);
  cr_assert_eq(v, 100);
  cr_assert_eq(one_frame(NOTICE_ACK_FRAME.b, NOTICE_ACK_FRAME.n, body), TERN__FR_NOTICE_ACK);
  cr_assert_eq(tern__fr_notice_ack_read(&body[0], &kind, &v), 0);
  cr_assert_eq(kind, TERN__KIND_RECEIPT);
  cr_assert_eq(v, EX_CMID);
}

Test(spec, close_frame) {
  uint8_t buf[16];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_close_write(&w, (uint64_t)-TERN_ESHUTDOWN);
  ASSERT_WBUF(w, CLOSE_FRAME, "CLOSE frame");


  tern__rbuf body[2];
  uint64_t reason = 0;
  cr_assert_eq(one_frame(CLOSE_FRAME.b, CLOSE_FRAME.n, body), TERN__FR_CLOSE);
  cr_assert_eq(tern__fr_close_read(&body[0], &reason), 0);
  cr_assert_eq(-(int)reason, TERN_ESHUTDOWN);
}

/* spec/wire.md 6.12 and 6.13. */
Test(spec, keepalive_and_probe_key_frames) {
  uint8_t buf[64];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_keepalive ka = {.interval_ms = 39600, .flags = TERN__KAF_WANT_KEY};
  tern__fr_keepalive_write(&w, &ka);
  ASSERT_WBUF(w, KA_FRAME, "KEEPALIVE frame");
  cr_assert_eq(TERN__FR_KEEPALIVE, 0x22);
  cr_assert_eq(TERN__FR_PROBE_KEY, 0x23);

  tern__fr_probe_key pk;
  for (int i = 0; i < 8; i++) pk.id[i] = (uint8_t)(i + 1);
  for (int i = 0; i < 32; i++) pk.key[i] = (uint8_t)i;
  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_probe_key_write(&w, &pk);
  ASSERT_WBUF(w, PROBE_KEY_FRAME, "PROBE_KEY frame");

  tern__rbuf body[2];
  tern__fr_keepalive kr;
  cr_assert_eq(one_frame(KA_FRAME.b, KA_FRAME.n, body), TERN__FR_KEEPALIVE);
  cr_assert_eq(tern__fr_keepalive_read(&body[0], &kr), 0);
  cr_assert_eq(kr.interval_ms, 39600);
  cr_assert_eq(kr.flags, TERN__KAF_WANT_KEY);
  tern__fr_probe_key pr;
  cr_assert_eq(one_frame(PROBE_KEY_FRAME.b, PROBE_KEY_FRAME.n, body), TERN__FR_PROBE_KEY);
  cr_assert_eq(tern__fr_probe_key_read(&body[0], &pr), 0);
  cr_assert_arr_eq(pr.id, pk.id, 8);
  cr_assert_arr_eq(pr.key, pk.key, 32);
}

/* spec/wire.md 6.14: GOAWAY is a one-number frame (delay_ms). */
Test(spec, goaway_frame) {
  uint8_t buf[16];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof buf);
  cr_assert_eq(TERN__FR_GOAWAY, 0x24);
  tern__fr_u64_write(&w, TERN__FR_GOAWAY, 2500);
  ASSERT_WBUF(w, GOAWAY_FRAME, "GOAWAY frame");
  tern__rbuf body[2];
  uint64_t delay = 0;
  cr_assert_eq(one_frame(GOAWAY_FRAME.b, GOAWAY_FRAME.n, body), TERN__FR_GOAWAY);
  cr_assert_eq(tern__fr_u64_read(&body[0], &delay), 0);
  cr_assert_eq(delay, 2500);
}

/* spec/wire.md §6.16: PRESENCE, and a state other than 0 or 1 refused. */
Test(spec, presence_frame_example) {
  uint8_t buf[64];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof buf);
  cr_assert_eq(TERN__FR_PRESENCE, 0x28);
  tern__fr_presence p = {.user = (const uint8_t *)"bob", .user_len = 3, .online = 0,
                         .since_ms = 1700000000000ull};
  tern__fr_presence_write(&w, &p);
  ASSERT_WBUF(w, PRESENCE_FRAME, "PRESENCE frame");
  tern__rbuf body[2];
  tern__fr_presence q;
  cr_assert_eq(one_frame(PRESENCE_FRAME.b, PRESENCE_FRAME.n, body), TERN__FR_PRESENCE);
  cr_assert_eq(tern__fr_presence_read(&body[0], &q), 0);
  cr_assert(q.user_len == 3 && memcmp(q.user, "bob", 3) == 0 && q.online == 0 &&
            q.since_ms == 1700000000000ull);
  uint8_t bad[16];
  memcpy(bad, PRESENCE_FRAME.b, PRESENCE_FRAME.n);
  bad[6] = 2; /* online 2 */
  cr_assert_eq(one_frame(bad, PRESENCE_FRAME.n, body), TERN__FR_PRESENCE);
  cr_assert_eq(tern__fr_presence_read(&body[0], &q), TERN_EPROTO);
}

/* spec/wire.md 14 and 6.15: the token of the example's relay key, device
 * key and HELLO time; the RESET that carries it; the frame that gives it. */
Test(spec, reset_examples) {
  uint8_t sk[32], dev[32], token[TERN__RESET_TOKEN_BYTES], out[TERN__RESET_BYTES];
  for (int i = 0; i < 32; i++) sk[i] = (uint8_t)i, dev[i] = (uint8_t)(0x20 + i);
  tern__reset_token(sk, dev, 1700000000000000ull, token);
  tern__reset_write(out, token);
  assert_bytes(out, sizeof out, RESET_DGRAM.b, RESET_DGRAM.n, "RESET");
  uint8_t got[TERN__RESET_TOKEN_BYTES];
  cr_assert_eq(tern__reset_parse(RESET_DGRAM.b, RESET_DGRAM.n, got), 1);
  cr_assert_arr_eq(got, token, sizeof token);
  uint8_t buf[32];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof buf);
  cr_assert_eq(TERN__FR_RESET_TOKEN, 0x25);
  tern__fr_reset_token_write(&w, token);
  ASSERT_WBUF(w, RESET_TOKEN_FRAME, "RESET_TOKEN frame");
  cr_assert_eq(TERN_ERESET, -40);
}

/* spec/wire.md §6.17: SETTLED, everything below C settled. */
Test(spec, settled_example) {
  uint8_t buf[16];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof buf);
  cr_assert_eq(TERN__FR_SETTLED, 0x26);
  tern__fr_u64_write(&w, TERN__FR_SETTLED, EX_CMID);
  ASSERT_WBUF(w, SETTLED_FRAME, "SETTLED frame");
}

/* spec/wire.md §6.18, §6.19: a group's ack and receipt. */
Test(spec, group_examples) {
  uint8_t buf[32];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof buf);
  cr_assert_eq(TERN__FR_GROUP_ACK, 0x29);
  cr_assert_eq(TERN__FR_GROUP_FLOOR, 0x2a);
  tern__fr_gack g = {.group = S("@team"), .list = {.last = 7, .n = 1, .seqs = {9}}};
  tern__fr_gack_write(&w, TERN__FR_GROUP_ACK, &g);
  ASSERT_WBUF(w, GROUP_ACK_FRAME, "GROUP_ACK frame");
  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_greceipt r = {.cmid = EX_CMID, .got = 2, .of = 3};
  tern__fr_greceipt_write(&w, &r);
  ASSERT_WBUF(w, GROUP_RECEIPT_FRAME, "GROUP_RECEIPT frame");
}

/* spec/keepalive.md, "Probe datagrams": the three examples, byte for byte,
 * and the sizes that make the service unable to amplify. */
Test(spec, probe_datagram_examples) {
  uint8_t key[32];
  for (int i = 0; i < 32; i++) key[i] = (uint8_t)i;
  tern__probe_pkt p = {.type = TERN__PROBE_REQUEST, .nonce = 0x0102030405060708ull, .wait_ms = 25000};
  for (int i = 0; i < 8; i++) p.id[i] = (uint8_t)(i + 1);
  uint8_t out[128];
  assert_bytes(out, tern__probe_write(&p, key, out, sizeof out), PROBE_REQ.b, PROBE_REQ.n, "REQUEST");
  p.type = TERN__PROBE_ACK;
  assert_bytes(out, tern__probe_write(&p, key, out, sizeof out), PROBE_ACK.b, PROBE_ACK.n, "PROBE_ACK.b");
  p.type = TERN__PROBE_REPLY;
  assert_bytes(out, tern__probe_write(&p, key, out, sizeof out), PROBE_REPLY.b, PROBE_REPLY.n, "PROBE_REPLY.b");
  cr_assert_eq(PROBE_REQ.n, PROBE_ACK.n+ PROBE_REPLY.n, "a request pays for both answers");

  /* The relay's service answers the example REQUEST with the example PROBE_ACK.b,
   * and after 25000 ms of silence with the example PROBE_REPLY. */
  tern__psvc_config pc;
  tern__psvc_config_default(&pc);
  cr_assert_eq(pc.per_key_pending, 8);
  cr_assert_eq(pc.per_ip_pending, 256);
  cr_assert_eq(pc.ip_burst, 64);
  cr_assert_eq(pc.ip_refill_ms, 100);
  cr_assert_eq(pc.min_wait_ms, 1000);
  cr_assert_eq(pc.max_wait_ms, 1200000);
  tern__psvc *svc;
  cr_assert_eq(tern__psvc_new(&svc, &pc), 0);
  cr_assert_eq(tern__psvc_add_key(svc, 1, p.id, key), 0);
  size_t n = 0;
  tern__addr from, to;
  tern__addr_set_v4(&from, 0x0a4e0101, 40000);
  cr_assert_eq(tern__psvc_input(svc, &from, PROBE_REQ.b, PROBE_REQ.n, 1000, out, sizeof out, &n), 1);
  assert_bytes(out, n, PROBE_ACK.b, PROBE_ACK.n, "service PROBE_ACK.b");
  cr_assert_eq(tern__psvc_next_reply(svc, 25999, &to, out, sizeof out, &n), 0);
  cr_assert_eq(tern__psvc_next_reply(svc, 26000, &to, out, sizeof out, &n), 1);
  assert_bytes(out, n, PROBE_REPLY.b, PROBE_REPLY.n, "service PROBE_REPLY.b");
  cr_assert(tern__addr_equal(&to, &from));
  tern__psvc_free(svc);
}

/* spec/keepalive.md, "Constants". */
Test(spec, keepalive_constants) {
  tern_client_config c;
  tern_client_config_default(&c);
  cr_assert_eq(c.keepalive_floor_ms, 25000);
  cr_assert_eq(c.keepalive_ceiling_ms, 900000);
  cr_assert_eq(c.keepalive_min_ms, 10000);
  cr_assert_eq(c.keepalive_reprobe_ms, 86400000);
  cr_assert_eq(c.keepalive_foreground_ms, 60000);
  cr_assert_eq(c.keepalive_networks_max, 32);
  tern_relay_config r;
  tern_relay_config_default(&r);
  cr_assert_eq(r.ping_interval_ms, 60000);
  cr_assert_eq(r.probes, 1);
}

/* spec/wire.md, "Frames": an unknown type is skipped whole; the frames
 * around it still decode. */
Test(spec, unknown_frame_skipped) {
  static const uint8_t pkt[] = {0x7e, 0x03, 0xaa, 0xbb, 0xcc, 0x20, 0x01, 0x18};
  tern__rbuf r, body;
  uint8_t type;
  tern__rbuf_init(&r, pkt, sizeof pkt);
  cr_assert_eq(tern__frame_next(&r, &type, &body), 1);
  cr_assert_eq(type, 0x7e);
  cr_assert_eq(body.len, 3);
  cr_assert_eq(tern__frame_next(&r, &type, &body), 1);
  cr_assert_eq(type, TERN__FR_CLOSE);
  cr_assert_eq(tern__frame_next(&r, &type, &body), 0);

  /* A length that runs past the packet is a malformed packet. */
  static const uint8_t cut[] = {0x20, 0x05, 0x18};
  tern__rbuf_init(&r, cut, sizeof cut);
  cr_assert_eq(tern__frame_next(&r, &type, &body), TERN_EPROTO);
}

Test(spec, chat_channel_example) {
  cr_assert_eq(tern__chat_channel(S("alice"), S("bob")), 3);
  cr_assert_eq(tern__chat_channel(S("bob"), S("alice")), 3);
}

/* ------------------------------------------------------------------ DATA */


/* wire.md 4.2: what the DATA examples' plaintext reads as. */
Test(spec, data_plaintext_reads_as_a_msg) {
  tern__rbuf body[2];
  tern__fr_msg got;
  cr_assert_eq(one_frame(DATA_PLAINTEXT.b, DATA_PLAINTEXT.n, body), TERN__FR_MSG);
  cr_assert_eq(tern__fr_msg_read(&body[0], TERN__FR_MSG, &got), 0);
  cr_assert_eq(got.cmid, 1);
  cr_assert_eq(got.peer_len, 3);
  cr_assert_eq(memcmp(got.peer, "bob", 3), 0);
  cr_assert_eq(got.flags, 0);
  cr_assert_eq(got.prev_cmid, 104);
  cr_assert_eq(got.body_len, 1);
  cr_assert_eq(got.body[0], 'i');
}

static void open_session_with_key(tern__session *s, const uint8_t key[32], uint64_t send_n) {
  memset(s, 0, sizeof *s);
  s->state = TERN__SS_OPEN;
  memcpy(s->send_key, key, 32);
  memcpy(s->recv_key, key, 32);
  for (int i = 0; i < TERN__STREAMS; i++) s->send_n[i] = send_n;
  for (int i = 0; i < TERN__STREAMS - 1; i++) tern__replay_small_init(&s->replay[i]);
  tern__replay_init(&s->unordered);
}

Test(spec, data_packet_example) {
  uint8_t key[32];
  for (int i = 0; i < 32; i++) key[i] = (uint8_t)i;
  tern__session s;
  open_session_with_key(&s, key, 5);
  uint8_t pkt[64];
  size_t n = 0;
  cr_assert_eq(tern__session_seal(&s, 0, DATA_PLAINTEXT.b, DATA_PLAINTEXT.n, pkt, sizeof pkt, &n), 0);
  assert_bytes(pkt, n, DATA_PACKET.b, DATA_PACKET.n, "DATA packet");
  cr_assert_eq(s.send_n[0], 6);

  /* The same bytes by hand: ChaCha20-Poly1305-IETF, nonce 00000000 || LE64(5),
   * AD = the 9 header bytes. */
  uint8_t nonce[12] = {0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0};
  uint8_t ct[64];
  unsigned long long clen = 0;
  crypto_aead_chacha20poly1305_ietf_encrypt(ct, &clen, DATA_PLAINTEXT.b, DATA_PLAINTEXT.n, DATA_PACKET.b,
                                            9, NULL, nonce, key);
  assert_bytes(ct, (size_t)clen, DATA_PACKET.b + 9, DATA_PACKET.n- 9, "raw AEAD");

  /* The receiver opens it once; a second copy is a replay. */
  uint8_t st = 9;
  tern__session r;
  open_session_with_key(&r, key, 0);
  uint8_t out[64];
  cr_assert_eq(tern__session_open(&r, DATA_PACKET.b, DATA_PACKET.n, out, sizeof out, &n, &st), 0);
  assert_bytes(out, n, DATA_PLAINTEXT.b, DATA_PLAINTEXT.n, "opened DATA");
  cr_assert_eq(tern__session_open(&r, DATA_PACKET.b, DATA_PACKET.n, out, sizeof out, &n, &st),
               TERN_EREPLAY);

  /* A changed header byte (the counter) breaks the tag: AD covers it. */
  uint8_t bad[DATA_PACKET.n];
  memcpy(bad, DATA_PACKET.b, sizeof bad);
  bad[1] = 0x06;
  tern__session r2;
  open_session_with_key(&r2, key, 0);
  cr_assert_eq(tern__session_open(&r2, bad, sizeof bad, out, sizeof out, &n, &st), TERN_EDECRYPT);
}

/* wire.md 4.2: the counter's top byte is the stream. Packet 5 of stream 3
 * carries counter 0x0300000000000005, and the receiver reports stream 3. */
Test(spec, data_stream_in_counter) {
  uint8_t key[32];
  for (int i = 0; i < 32; i++) key[i] = (uint8_t)i;
  tern__session s, r;
  open_session_with_key(&s, key, 5);
  open_session_with_key(&r, key, 0);
  uint8_t pkt[64], out[64];
  size_t n = 0;
  cr_assert_eq(tern__session_seal(&s, 3, DATA_PLAINTEXT.b, DATA_PLAINTEXT.n, pkt, sizeof pkt, &n), 0);
  assert_bytes(pkt, 9, DATA_HEADER_STREAM3.b, DATA_HEADER_STREAM3.n, "DATA header, stream 3");
  uint8_t st = 0;
  cr_assert_eq(tern__session_open(&r, pkt, n, out, sizeof out, &n, &st), 0);
  cr_assert_eq(st, 3);
  cr_assert_eq(tern__session_seal(&s, TERN__STREAMS, DATA_PLAINTEXT.b, DATA_PLAINTEXT.n, pkt, sizeof pkt,
                                  &n),
               TERN_EINVAL, "no stream 8");
}

Test(spec, send_limit) {
  uint8_t key[32] = {0};
  tern__session s;
  open_session_with_key(&s, key, TERN__SEND_LIMIT - 1);
  uint8_t pkt[64];
  size_t n = 0;
  cr_assert_eq(tern__session_seal(&s, 0, CLOSE_FRAME.b, CLOSE_FRAME.n, pkt, sizeof pkt, &n), 0);
  cr_assert_eq(tern__session_seal(&s, 0, CLOSE_FRAME.b, CLOSE_FRAME.n, pkt, sizeof pkt, &n),
               TERN_ENONCE);
}

Test(spec, replay_window_edges) {
  tern__replay w;
  tern__replay_init(&w);
  tern__replay_update(&w, 5000);
  cr_assert_eq(tern__replay_check(&w, 5000), TERN_EREPLAY);
  cr_assert_eq(tern__replay_check(&w, 5000 - 2047), 0, "oldest counter inside the window");
  cr_assert_eq(tern__replay_check(&w, 5000 - 2048), TERN_EREPLAY, "first counter outside");
  cr_assert_eq(tern__replay_check(&w, 9000), 0);
}

/* ------------------------------------------------------------- handshake */


/* Keys of spec/handshake.md's example: secrets are runs of bytes. */
static void example_keys(tern_keypair *client, tern_keypair *relay, uint8_t ce[32],
                         uint8_t re[32]) {
  for (int i = 0; i < 32; i++) {
    client->secret_key[i] = (uint8_t)(0x01 + i);
    relay->secret_key[i] = (uint8_t)(0x21 + i);
    ce[i] = (uint8_t)(0x41 + i);
    re[i] = (uint8_t)(0x61 + i);
  }
  cr_assert_eq(crypto_scalarmult_base(client->public_key, client->secret_key), 0);
  cr_assert_eq(crypto_scalarmult_base(relay->public_key, relay->secret_key), 0);
}

Test(spec, handshake_example) {
  tern_keypair ck, rk;
  uint8_t ce[32], re[32];
  example_keys(&ck, &rk, ce, re);
  assert_bytes(ck.public_key, 32, HS_CLIENT_S_PUB.b, 32, "client static public key");
  assert_bytes(rk.public_key, 32, HS_RELAY_S_PUB.b, 32, "relay static public key");

  tern__session cs, rs;
  uint8_t pkt[256], pl[TERN__HS_PAYLOAD_MAX];
  size_t n = 0, pln = 0;
  cr_assert_eq(tern__session_client_hello(&cs, &ck, rk.public_key, ce, HELLO_FRAME.b,
                                          HELLO_FRAME.n, pkt, sizeof pkt, &n),
               0);
  assert_bytes(pkt, n, HS_HELLO.b, HS_HELLO.n, "HELLO packet");

  cr_assert_eq(tern__session_relay_hello(&rs, &rk, re, HS_HELLO.b, HS_HELLO.n, pl, sizeof pl,
                                         &pln),
               0);
  assert_bytes(pl, pln, HELLO_FRAME.b, HELLO_FRAME.n, "HELLO payload");
  assert_bytes(rs.remote_static, 32, HS_CLIENT_S_PUB.b, 32, "client key the relay learnt");

  cr_assert_eq(tern__session_relay_welcome(&rs, WELCOME_FRAME.b, WELCOME_FRAME.n, pkt,
                                           sizeof pkt, &n),
               0);
  assert_bytes(pkt, n, HS_WELCOME.b, HS_WELCOME.n, "WELCOME packet");

  cr_assert_eq(tern__session_client_welcome(&cs, HS_WELCOME.b, HS_WELCOME.n, pl, sizeof pl,
                                            &pln),
               0);
  assert_bytes(pl, pln, WELCOME_FRAME.b, WELCOME_FRAME.n, "WELCOME payload");
  assert_bytes(cs.send_key, 32, HS_C1.b, 32, "client send key = c1");
  assert_bytes(cs.recv_key, 32, HS_C2.b, 32, "client receive key = c2");
  assert_bytes(rs.recv_key, 32, HS_C1.b, 32, "relay receive key = c1");
  assert_bytes(rs.send_key, 32, HS_C2.b, 32, "relay send key = c2");

  uint8_t st = 9;
  cr_assert_eq(tern__session_seal(&cs, 0, DATA_PLAINTEXT.b, DATA_PLAINTEXT.n, pkt, sizeof pkt, &n), 0);
  assert_bytes(pkt, n, HS_FIRST_DATA.b, HS_FIRST_DATA.n, "first client DATA");
  cr_assert_eq(tern__session_open(&rs, HS_FIRST_DATA.b, HS_FIRST_DATA.n, pl, sizeof pl, &pln,
                                  &st),
               0);
  assert_bytes(pl, pln, DATA_PLAINTEXT.b, DATA_PLAINTEXT.n, "relay opens it");
}

/* spec/handshake.md, "Failures": the same HELLO read by a relay with another
 * static key does not open (TERN_ERELAYKEY); a wrong version byte is
 * TERN_EVERSION before any crypto. */
Test(spec, handshake_failures) {
  tern_keypair ck, rk, other;
  uint8_t ce[32], re[32];
  example_keys(&ck, &rk, ce, re);
  memset(other.secret_key, 0x77, 32);
  cr_assert_eq(crypto_scalarmult_base(other.public_key, other.secret_key), 0);

  tern__session rs;
  uint8_t pl[TERN__HS_PAYLOAD_MAX];
  size_t pln = 0;
  cr_assert_eq(tern__session_relay_hello(&rs, &other, re, HS_HELLO.b, HS_HELLO.n, pl,
                                         sizeof pl, &pln),
               TERN_ERELAYKEY);

  uint8_t v2[HS_HELLO.n];
  memcpy(v2, HS_HELLO.b, sizeof v2);
  v2[1] = 0x02;
  cr_assert_eq(tern__session_relay_hello(&rs, &rk, re, v2, sizeof v2, pl, sizeof pl, &pln),
               TERN_EVERSION);

  /* Message 1 is replayable: the relay opens the very same bytes again. */
  cr_assert_eq(tern__session_relay_hello(&rs, &rk, re, HS_HELLO.b, HS_HELLO.n, pl, sizeof pl,
                                         &pln),
               0);
  cr_assert_eq(tern__session_relay_hello(&rs, &rk, re, HS_HELLO.b, HS_HELLO.n, pl, sizeof pl,
                                         &pln),
               0);
}

/* spec/wire.md §10: the FULL datagram, byte for byte; what is not one. */
Test(spec, full_datagram_example) {
  uint8_t out[TERN__FULL_BYTES];
  tern__full_write(out, 5000);
  assert_bytes(out, sizeof out, FULL_DGRAM.b, FULL_DGRAM.n, "FULL");
  uint32_t retry = 0;
  cr_assert_eq(tern__full_parse(FULL_DGRAM.b, FULL_DGRAM.n, &retry), 1);
  cr_assert_eq(retry, 5000);
  cr_assert_lt(FULL_DGRAM.n, 52, "a FULL must be smaller than the ENet CONNECT that draws it");
  uint8_t bad[TERN__FULL_BYTES];
  memcpy(bad, FULL_DGRAM.b, sizeof bad);
  bad[4] = 2;
  cr_assert_eq(tern__full_parse(bad, sizeof bad, &retry), 0, "an unknown version was read");
  cr_assert_eq(tern__full_parse(FULL_DGRAM.b, FULL_DGRAM.n - 1, &retry), 0, "a short FULL was read");
  tern__full_write(out, 0xFFFFFFFFu);
  cr_assert_eq(tern__full_parse(out, sizeof out, &retry), 1);
  cr_assert_eq(retry, TERN__FULL_RETRY_MAX_MS, "a huge retry hint is capped");
}

/* ------------------------------------------------- the spec as the source */

/* Every example the spec names is one this file checks: an example added to
 * the spec without a test, or a test dropped, fails here. */
Test(spec_source, every_example_in_the_spec_is_checked) {
  char *names = specex_names();
  cr_assert_not_null(names, "cannot read the spec");
  int n = 0;
  for (char *save = NULL, *t = strtok_r(names, "\n", &save); t; t = strtok_r(NULL, "\n", &save)) {
    size_t i = 0;
    while (i < sizeof examples / sizeof *examples && strcmp(examples[i].name, t)) i++;
    cr_assert_lt(i, sizeof examples / sizeof *examples, "spec example '%s' is checked by no test", t);
    n++;
  }
  cr_assert_eq((size_t)n, sizeof examples / sizeof *examples, "a test uses an example the spec lost");
  free(names);
}

/* Runs this test binary's `filter` tests against a copy of the spec in
 * which `from` (once, in `file`) became `to`. Returns the exit status. */
static int run_on_changed_spec(const char *file, const char *from, const char *to, const char *filter,
                               char **out) {
  char *dir = tt_tempdir();
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "cp %s/spec/*.md %s/", TERN_TEST_SRCDIR, dir);
  cr_assert_eq(system(cmd), 0);
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", dir, file);
  char *text = tt_read_file(path);
  cr_assert_not_null(text);
  char *at = strstr(text, from);
  cr_assert_not_null(at, "'%s' not in %s", from, file);
  size_t head = (size_t)(at - text);
  char *changed = malloc(strlen(text) + strlen(to) + 1);
  memcpy(changed, text, head);
  strcpy(changed + head, to);
  strcat(changed, at + strlen(from));
  tt_write_file(path, changed);
  free(text);
  free(changed);
  char bin[4200], env[4300];
  snprintf(bin, sizeof bin, "%s/tests/spec_examples_test", TERN_TEST_BINDIR);
  snprintf(env, sizeof env, "TERN_SPEC_DIR=%s", dir);
  /* A clean environment: this process is a Criterion worker, and the
   * variables that made it one would make the child one too. */
  char *argv[] = {"/usr/bin/env", "-i", env, bin, "--filter", (char *)filter, "--jobs", "1", NULL};
  char *o = NULL, *e = NULL;
  int st = tt_run(argv, NULL, &o, &e, 60000);
  tt_rmtree(dir);
  free(dir);
  /* Criterion's report, wherever it went. */
  size_t lo = o ? strlen(o) : 0, le = e ? strlen(e) : 0;
  *out = malloc(lo + le + 1);
  snprintf(*out, lo + le + 1, "%s%s", o ? o : "", e ? e : "");
  free(o);
  free(e);
  return st;
}

/* One hex digit changed in the spec's HELLO example: the HELLO test fails,
 * and says which bytes differ. */
Test(spec_source, a_changed_hex_example_fails_the_test) {
  char *err = NULL;
  int st = run_on_changed_spec("wire.md", "  0000  01 10 05 61 6c 69 63 65 98 75", "  0000  01 10 05 61 6c 69 63 65 98 76",
                               "spec/hello_frame", &err);
  cr_assert_neq(st, 0, "the spec changed alone, yet the test passed");
  cr_assert(err && strstr(err, "HELLO frame: byte 9 is 75, spec says 76"), "st %d: [%s]", st, err ? err : "");
  free(err);
  /* The control: the same run on an unchanged copy passes. */
  st = run_on_changed_spec("wire.md", "98 75", "98 75", "spec/hello_frame", &err);
  cr_assert_eq(st, 0, "%s", err ? err : "");
  free(err);
}

/* An example the tests look for and the spec no longer has: every test of
 * the suite fails, naming it. */
Test(spec_source, a_missing_example_fails_loudly) {
  char *err = NULL;
  int st = run_on_changed_spec("wire.md", "example receipt-frame floor-frame", "example receipt-frame",
                               "spec/receipt_floor_and_notice_ack_frames", &err);
  cr_assert_neq(st, 0);
  cr_assert(err && strstr(err, "no example named 'floor-frame'"), "%s", err ? err : "");
  free(err);
}

Test(spec, tcp_frame_example) {
  /* The writer frames the FULL of §10 exactly as §12 shows ... */
  uint8_t full[TERN__FULL_BYTES];
  tern__full_write(full, 5000);
  tern__tcpf_tx tx;
  tern__tcpf_tx_init(&tx, 1024);
  struct iovec iov = {.iov_base = full, .iov_len = sizeof full};
  cr_assert_eq(tern__tcpf_tx_put(&tx, &iov, 1), 0);
  size_t n;
  const uint8_t *p = tern__tcpf_tx_pending(&tx, &n);
  cr_assert_eq(n, TCP_FRAME.n);
  cr_assert_arr_eq(p, TCP_FRAME.b, n);
  tern__tcpf_tx_free(&tx);
  /* ... and the reader gives back the datagram inside. */
  static tern__tcpf_rx rx;
  size_t room;
  memcpy(tern__tcpf_rx_space(&rx, &room), TCP_FRAME.b, TCP_FRAME.n);
  tern__tcpf_rx_filled(&rx, TCP_FRAME.n);
  const uint8_t *d;
  size_t len;
  cr_assert_eq(tern__tcpf_rx_next(&rx, &d, &len), 1);
  uint32_t retry;
  cr_assert_eq(tern__full_parse(d, len, &retry), 1);
  cr_assert_eq(retry, 5000);
}

/* ---------------------------------------------------------------- tokens */

/* spec/tokens.md §6: the token minted from the fixed backend seed, its text
 * form, the HELLO frame that carries it, and the checks' answers. */
Test(spec, token_example) {
  uint8_t seed[32], pk[32], sk[64], device[32], dsec[32];
  for (int i = 0; i < 32; i++) {
    seed[i] = (uint8_t)(0x81 + i);
    dsec[i] = (uint8_t)(0x01 + i);
  }
  crypto_sign_seed_keypair(pk, sk, seed);
  cr_assert_eq(TOKEN_BACKEND_PUB.n, 32);
  cr_assert_arr_eq(pk, TOKEN_BACKEND_PUB.b, 32, "backend public key");
  cr_assert_eq(crypto_scalarmult_base(device, dsec), 0);
  cr_assert_arr_eq(device, HS_CLIENT_S_PUB.b, 32, "the device is handshake.md's client");

  tern__token t = {.expiry_s = 1700086400};
  snprintf(t.user, sizeof t.user, "alice");
  memcpy(t.device_key, device, 32);
  for (int i = 0; i < 16; i++) t.id[i] = (uint8_t)(0xf0 + i);
  uint8_t bin[TERN__TOKEN_MAX];
  size_t n = 0;
  cr_assert_eq(tern__token_mint(&t, sk, bin, sizeof bin, &n), 0);
  cr_assert_eq(n, TOKEN_BYTES.n, "token length %zu, spec %zu", n, TOKEN_BYTES.n);
  cr_assert_arr_eq(bin, TOKEN_BYTES.b, n, "token bytes");

  /* The text form, as the spec prints it after its marker. */
  char text[TERN_TOKEN_TEXT_MAX];
  cr_assert_eq(tern__token_to_text(bin, n, text, sizeof text), 0);
  cr_assert_eq(strlen(text), 170);
  const char *dir = getenv("TERN_SPEC_DIR");
  char path[4200];
  snprintf(path, sizeof path, "%s/tokens.md", dir ? dir : TERN_TEST_SRCDIR "/spec");
  char *md = tt_read_file(path);
  cr_assert_not_null(md);
  const char *at = strstr(md, "<!-- token-text -->");
  cr_assert_not_null(at, "no token-text marker in tokens.md");
  at = strstr(at, "```\n");
  cr_assert_not_null(at);
  at += 4;
  cr_assert_eq(strncmp(at, text, strlen(text)), 0, "text form: code %s", text);
  cr_assert_eq(at[strlen(text)], '\n');
  free(md);
  /* The public calls give the same text from the seed. */
  char pub_text[TERN_TOKEN_TEXT_MAX];
  cr_assert_eq(tern_token_mint(seed, "alice", device, 1700086400, t.id, pub_text), 0);
  cr_assert_str_eq(pub_text, text);

  /* The HELLO frame that carries it, both ways. */
  uint8_t buf[512];
  tern__wbuf w;
  tern__wbuf_init(&w, buf, sizeof buf);
  tern__fr_hello h = {.user = S("alice"), .ping_interval_ms = 15000, .time_us = 1700000000000000ull,
                      .token = bin, .token_len = n};
  tern__fr_hello_write(&w, &h);
  ASSERT_WBUF(w, HELLO_FRAME_TOKEN, "HELLO frame with a token");
  tern__rbuf body[2];
  cr_assert_eq(one_frame(HELLO_FRAME_TOKEN.b, HELLO_FRAME_TOKEN.n, body), TERN__FR_HELLO);
  tern__fr_hello got;
  cr_assert_eq(tern__fr_hello_read(&body[0], &got), 0);
  cr_assert_eq(got.ping_interval_ms, 15000);
  cr_assert_eq(got.token_len, n);
  cr_assert_arr_eq(got.token, bin, n);
  /* The tokenless HELLO example still reads, with no token. */
  cr_assert_eq(one_frame(HELLO_FRAME.b, HELLO_FRAME.n, body), TERN__FR_HELLO);
  cr_assert_eq(tern__fr_hello_read(&body[0], &got), 0);
  cr_assert_eq(got.token_len, 0);

  /* The answers §6 lists. */
  cr_assert_eq(tern__token_verify(bin, n, pk, device, "alice", 1700086399, NULL), 0);
  cr_assert_eq(tern__token_verify(bin, n, pk, device, NULL, 1700086400, NULL), TERN_ETOKENEXPIRED);
  uint8_t other[32];
  memcpy(other, device, 32);
  other[31] ^= 1;
  cr_assert_eq(tern__token_verify(bin, n, pk, other, NULL, 1700086399, NULL), TERN_ETOKENKEY);
  cr_assert_eq(tern__token_verify(bin, n, pk, device, "bob", 1700086399, NULL), TERN_ETOKENKEY);
  uint8_t other_pk[32];
  memcpy(other_pk, pk, 32);
  other_pk[0] ^= 1;
  cr_assert_eq(tern__token_verify(bin, n, other_pk, device, NULL, 1700086399, NULL),
               TERN_ETOKENINVALID);
}
