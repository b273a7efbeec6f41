/*
 * Writes the seed corpora under tests/fuzz/seeds/: valid inputs that a
 * fuzzer could not find by mutation (a HELLO or WELCOME that opens needs
 * the keys). Run once after changing the wire format or fuzz_common.h:
 *
 *   build-fuzz/tests/fuzz/tern_fuzz_seedgen tests/fuzz/seeds
 *
 * The output is deterministic: same keys, same ephemerals, same bytes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_common.h"
#include "io/cookie.h"

static void write_seed(const char *dir, const char *target, const char *name, uint8_t prefix,
                       int use_prefix, const uint8_t *p, size_t n) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, target);
  if (mkdir(path, 0755) != 0 && errno != EEXIST) {
    perror(path);
    exit(1);
  }
  snprintf(path, sizeof path, "%s/%s/%s", dir, target, name);
  FILE *f = fopen(path, "wb");
  if (!f || (use_prefix && fwrite(&prefix, 1, 1, f) != 1) || (n && fwrite(p, 1, n, f) != n) ||
      fclose(f) != 0) {
    perror(path);
    exit(1);
  }
}

static void frames_seeds(const char *dir) {
  static uint8_t buf[4096];
  tern__wbuf all, one;
  tern__wbuf_init(&all, buf, sizeof buf);
  uint8_t body[40];
  memset(body, 'm', sizeof body);

  tern__fr_hello h = {.user = (const uint8_t *)"alice", .user_len = 5, .ping_interval_ms = 30000,
                      .time_us = 1700000000000000ull};
  tern__fr_welcome w = {0, (const uint8_t *)"alice", 5, 1700000000000ull, (const uint8_t *)"hi", 2, 2500};
  tern__fr_msg m = {.cmid = 7, .prev_cmid = 6, .seq = 42, .prev_seq = 40,
                    .ts = 1700000000000ull, .peer = (const uint8_t *)"bob", .peer_len = 3,
                    .flags = 0, .body = body, .body_len = sizeof body};
  tern__fr_failed fl = {7, (uint64_t)-TERN_EEXPIRED};
  tern__fr_failed busy = {8, (uint64_t)-TERN_ESTORE};
  tern__fr_sack sack = {7, 42, 1700000000000ull};
  static tern__fr_seqlist sl = {.last = 40, .n = 3, .seqs = {42, 43, 300}};
  tern__fr_keepalive ka = {39600, TERN__KAF_WANT_KEY};
  tern__fr_probe_key pk;
  fz_probe_key(0, pk.id, pk.key);
  struct {
    const char *name;
    int kind;
  } kinds[] = {{"hello", 0},    {"welcome", 1},     {"msg", 2},      {"deliver", 3},
               {"failed", 4},   {"close", 5},       {"unknown", 6},  {"busy", 7},
               {"server_ack", 8}, {"delivery_ack", 9}, {"sync", 10}, {"receipt", 11},
               {"floor", 12},   {"notice_ack", 13}, {"ping", 14},  {"keepalive", 15},
               {"probe_key", 16}};
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    uint8_t single[256];
    for (int pass = 0; pass < 2; pass++) {
      tern__wbuf *x = pass ? &all : &one;
      if (!pass) tern__wbuf_init(&one, single, sizeof single);
      switch (kinds[i].kind) {
      case 0: tern__fr_hello_write(x, &h); break;
      case 1: tern__fr_welcome_write(x, &w); break;
      case 2: tern__fr_msg_write(x, TERN__FR_MSG, &m); break;
      case 3: tern__fr_msg_write(x, TERN__FR_DELIVER, &m); break;
      case 4: tern__fr_failed_write(x, TERN__FR_FAILED, &fl); break;
      case 5: tern__fr_close_write(x, 300); break;
      case 6: {
        size_t mark = tern__frame_begin(x, 0x7e);
        tern__wbuf_bytes(x, body, sizeof body);
        tern__frame_end(x, mark);
        break;
      }
      case 7: tern__fr_failed_write(x, TERN__FR_BUSY, &busy); break;
      case 8: tern__fr_sack_write(x, &sack); break;
      case 9: tern__fr_seqlist_write(x, TERN__FR_DELIVERY_ACK, &sl); break;
      case 10: tern__fr_seqlist_write(x, TERN__FR_SYNC, &sl); break;
      case 11: tern__fr_u64_write(x, TERN__FR_RECEIPT, 7); break;
      case 12: tern__fr_u64_write(x, TERN__FR_FLOOR, 40); break;
      case 13: tern__fr_notice_ack_write(x, 1, 7); break;
      case 14: tern__frame_end(x, tern__frame_begin(x, 0x21)); break; /* reserved: skipped */
      case 15: tern__fr_keepalive_write(x, &ka); break;
      case 16: tern__fr_probe_key_write(x, &pk); break;
      }
    }
    if (one.overflow) abort();
    write_seed(dir, "fuzz_frames", kinds[i].name, 0, 0, single, one.len);
  }
  if (all.overflow) abort();
  write_seed(dir, "fuzz_frames", "all", 0, 0, buf, all.len);
}

static void handshake_seeds(const char *dir) {
  fz_keys k;
  fz_keys_init(&k);
  static uint8_t hello[FZ_PKT_MAX], welcome[FZ_PKT_MAX], pkt[256], pl[TERN__HS_PAYLOAD_MAX];
  tern__session c, r;
  size_t hl = fz_client_hello(&k, &c, hello);
  size_t wl = fz_relay_answer(&k, &r, hello, hl, welcome);
  size_t pl_len = 0;
  if (tern__session_client_welcome(&c, welcome, wl, pl, sizeof pl, &pl_len) != 0) abort();
  write_seed(dir, "fuzz_handshake", "hello", FZ_RELAY_READS_HELLO, 1, hello, hl);
  write_seed(dir, "fuzz_handshake", "welcome", FZ_CLIENT_READS_WELCOME, 1, welcome, wl);

  /* DATA packets from the client, carrying a MSG frame. */
  uint8_t frames[128];
  tern__wbuf w;
  tern__wbuf_init(&w, frames, sizeof frames);
  tern__fr_msg m = {.cmid = 1, .peer = (const uint8_t *)"bob", .peer_len = 3,
                    .body = (const uint8_t *)"hello bob", .body_len = 9};
  tern__fr_msg_write(&w, TERN__FR_MSG, &m);
  if (w.overflow) abort();
  size_t n = 0;
  if (tern__session_seal(&c, 0, frames, w.len, pkt, sizeof pkt, &n) != 0) abort();
  write_seed(dir, "fuzz_handshake", "data0", FZ_OPEN_READS_DATA, 1, pkt, n);
  c.send_n[0] = 5000;
  if (tern__session_seal(&c, 0, frames, w.len, pkt, sizeof pkt, &n) != 0) abort();
  write_seed(dir, "fuzz_handshake", "data5000", FZ_OPEN_READS_DATA, 1, pkt, n);
  /* The same on another stream (stream 3, packet 5000). */
  c.send_n[3] = 5000;
  if (tern__session_seal(&c, 3, frames, w.len, pkt, sizeof pkt, &n) != 0) abort();
  write_seed(dir, "fuzz_handshake", "data_s3_5000", FZ_OPEN_READS_DATA, 1, pkt, n);
}

/* fuzz_probe: scripts (fuzz_common.h) that reach every part of the
 * service, and raw datagrams it could not tag itself. */
static void probe_seeds(const char *dir) {
  uint8_t key_id[TERN__PROBE_ID_BYTES], key[TERN__PROBE_KEY_BYTES];
  fz_probe_key(0, key_id, key);
  uint8_t d[TERN__PROBE_REQUEST_BYTES];
  tern__probe_pkt p = {.type = TERN__PROBE_REQUEST, .nonce = 7, .wait_ms = 5000};
  memcpy(p.id, key_id, sizeof p.id);

  /* The datagrams alone (the target also reads its whole input as one). */
  size_t n = tern__probe_write(&p, key, d, sizeof d);
  write_seed(dir, "fuzz_probe", "request", 0, 0, d, n);
  p.type = TERN__PROBE_ACK;
  n = tern__probe_write(&p, key, d, sizeof d);
  write_seed(dir, "fuzz_probe", "ack", 0, 0, d, n);
  p.type = TERN__PROBE_REPLY;
  n = tern__probe_write(&p, key, d, sizeof d);
  write_seed(dir, "fuzz_probe", "reply", 0, 0, d, n);

  /* A probe answered after its wait: REQUEST (key 0, nonce 7, 5 s from
   * address 1), 6 s pass. */
  static const uint8_t one[] = {FZ_OP_REQUEST, 0, 10, 1, 0, 7, 0, 50, FZ_OP_WAIT, 0, 6};
  write_seed(dir, "fuzz_probe", "one", 0, 0, one, sizeof one);

  /* A resend from another address, a replay after the REPLY, an answer
   * sent back, a session that ends with probes pending and comes back. */
  static const uint8_t mixed[] = {
      FZ_OP_REQUEST, 0, 10, 1, 0, 7, 0, 50,  FZ_OP_REQUEST, 3, 232, 6, 0, 7, 0, 50,
      FZ_OP_WAIT,    0, 7,  FZ_OP_REQUEST, 0, 1, 9, 0, 7, 0, 50,
      FZ_OP_ANSWER,  0, 1,  2, 1, 9, 1,      FZ_OP_REQUEST, 0, 1, 2, 1, 9, 1, 44,
      FZ_OP_REMOVE,  1,     FZ_OP_REQUEST, 0, 1, 2, 1, 9, 1, 44, FZ_OP_ADD, 1,
      FZ_OP_REQUEST, 0, 1, 2, 1, 10, 0, 20, FZ_OP_WAIT, 0, 200};
  write_seed(dir, "fuzz_probe", "mixed", 0, 0, mixed, sizeof mixed);

  /* Limits: more requests than a key, an address and the service hold,
   * and a burst past the token bucket. */
  uint8_t many[8 * 24 + 3];
  size_t m = 0;
  for (unsigned i = 0; i < 24; i++) {
    uint8_t rec[8] = {FZ_OP_REQUEST, 0, (uint8_t)(i % 3), (uint8_t)(i % 5), (uint8_t)(i % 3),
                      (uint8_t)(i + 1), 0, (uint8_t)(10 + i)};
    memcpy(many + m, rec, sizeof rec);
    m += sizeof rec;
  }
  many[m++] = FZ_OP_WAIT;
  many[m++] = 0;
  many[m++] = 5;
  write_seed(dir, "fuzz_probe", "many", 0, 0, many, m);

  /* A raw, correctly tagged REQUEST inside a script, for mutation. */
  uint8_t raw[5 + TERN__PROBE_REQUEST_BYTES + 3];
  p.type = TERN__PROBE_REQUEST;
  n = tern__probe_write(&p, key, d, sizeof d);
  raw[0] = FZ_OP_RAW;
  raw[1] = 0;
  raw[2] = 5;
  raw[3] = 2;
  raw[4] = (uint8_t)n;
  memcpy(raw + 5, d, n);
  raw[5 + n] = FZ_OP_WAIT;
  raw[6 + n] = 0;
  raw[7 + n] = 6;
  write_seed(dir, "fuzz_probe", "raw", 0, 0, raw, 8 + n);
}

/* fuzz_cookie: an ENet CONNECT to be wrapped with the valid cookie
 * (selector 1), the same wrapped with a wrong one and a COOKIE reply as
 * they come (selector 0), and one a slot later (selector 3). */
static void cookie_seeds(const char *dir) {
  uint8_t c[52] = {0x8F, 0xFF, 0x00, 0x01, 0x82, 0xFF, 0x00, 0x01};
  c[14] = 0x05, c[15] = 0x78, c[18] = 0x80, c[23] = 1;
  write_seed(dir, "fuzz_cookie", "connect_valid", 1, 1, c, sizeof c);
  write_seed(dir, "fuzz_cookie", "connect_next_slot", 3, 1, c, sizeof c);
  uint8_t cookie[TERN__COOKIE_BYTES], w[TERN__COOKIE_REPLY_BYTES + sizeof c];
  memset(cookie, 0x5A, sizeof cookie);
  size_t n = tern__cookie_wrap(w, sizeof w, cookie, c, sizeof c);
  write_seed(dir, "fuzz_cookie", "connect_wrong", 0, 1, w, n);
  uint8_t r[TERN__COOKIE_REPLY_BYTES];
  tern__cookie_write_reply(r, cookie);
  write_seed(dir, "fuzz_cookie", "reply", 0, 1, r, sizeof r);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s SEEDS_DIR\n", argv[0]);
    return 2;
  }
  if (mkdir(argv[1], 0755) != 0 && errno != EEXIST) {
    perror(argv[1]);
    return 1;
  }
  frames_seeds(argv[1]);
  handshake_seeds(argv[1]);
  probe_seeds(argv[1]);
  cookie_seeds(argv[1]);
  return 0;
}
