/*
 * Fixed keys and a deterministic handshake shared by fuzz_handshake.c and
 * seedgen.c: the seeds that seedgen writes are valid packets only for the
 * sessions these functions build, so both must build the same ones.
 */
#ifndef TERN_FUZZ_COMMON_H
#define TERN_FUZZ_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "wire/frame.h"
#include "wire/probe.h"
#include "wire/session.h"
#include "tern/tern.h"

/* Selector bytes: the first byte of a fuzz_handshake input. */
enum { FZ_RELAY_READS_HELLO = 0, FZ_CLIENT_READS_WELCOME = 1, FZ_OPEN_READS_DATA = 2, FZ_MODES = 3 };

#define FZ_PKT_MAX (TERN__HS_PAYLOAD_MAX + 256)

typedef struct fz_keys {
  tern_keypair client, relay;
  uint8_t client_e[TERN_KEY_BYTES], relay_e[TERN_KEY_BYTES];
} fz_keys;

static inline void fz_keys_init(fz_keys *k) {
  uint8_t seed[crypto_box_SEEDBYTES];
  if (sodium_init() < 0) abort();
  memset(seed, 0xc1, sizeof seed);
  crypto_box_seed_keypair(k->client.public_key, k->client.secret_key, seed);
  memset(seed, 0x5e, sizeof seed);
  crypto_box_seed_keypair(k->relay.public_key, k->relay.secret_key, seed);
  memset(k->client_e, 0xe1, sizeof k->client_e);
  memset(k->relay_e, 0xee, sizeof k->relay_e);
}

/* The client's HELLO, carrying a HELLO frame as the real client does. */
static inline size_t fz_client_hello(const fz_keys *k, tern__session *c, uint8_t *out) {
  uint8_t payload[64];
  tern__wbuf w;
  tern__wbuf_init(&w, payload, sizeof payload);
  tern__fr_hello h = {.user = (const uint8_t *)"alice", .user_len = 5, .ping_interval_ms = 30000};
  tern__fr_hello_write(&w, &h);
  size_t n = 0;
  if (w.overflow || tern__session_client_hello(c, &k->client, k->relay.public_key, k->client_e,
                                               payload, w.len, out, FZ_PKT_MAX, &n) != 0)
    abort();
  return n;
}

/* The relay reads `hello` and answers with a WELCOME frame. */
static inline size_t fz_relay_answer(const fz_keys *k, tern__session *r, const uint8_t *hello,
                                     size_t hello_len, uint8_t *out) {
  uint8_t payload[TERN__HS_PAYLOAD_MAX];
  size_t pl_len = 0, n = 0;
  if (tern__session_relay_hello(r, &k->relay, k->relay_e, hello, hello_len, payload,
                                sizeof payload, &pl_len) != 0)
    abort();
  tern__wbuf w;
  tern__wbuf_init(&w, payload, sizeof payload);
  tern__fr_welcome f = {.status = 0, .user = (const uint8_t *)"alice", .user_len = 5,
                        .server_time_ms = 1700000000000ull};
  tern__fr_welcome_write(&w, &f);
  if (w.overflow || tern__session_relay_welcome(r, payload, w.len, out, FZ_PKT_MAX, &n) != 0)
    abort();
  return n;
}

/* A client and a relay session, both OPEN. */
static inline void fz_open_pair(const fz_keys *k, tern__session *c, tern__session *r) {
  uint8_t hello[FZ_PKT_MAX], welcome[FZ_PKT_MAX], pl[TERN__HS_PAYLOAD_MAX];
  size_t hl = fz_client_hello(k, c, hello);
  size_t wl = fz_relay_answer(k, r, hello, hl, welcome);
  size_t pl_len = 0;
  if (tern__session_client_welcome(c, welcome, wl, pl, sizeof pl, &pl_len) != 0) abort();
}

/* ---- fuzz_probe: the script language and the probe keys it uses ---- */

/* Probe keys of fuzz_probe's service: session n (0..FZ_PROBE_KEYS-1) has
 * id and key derived from n, so seeds can carry valid tags. */
#define FZ_PROBE_KEYS 3

static inline void fz_probe_key(unsigned n, uint8_t id[TERN__PROBE_ID_BYTES],
                                uint8_t key[TERN__PROBE_KEY_BYTES]) {
  for (unsigned i = 0; i < TERN__PROBE_ID_BYTES; i++) id[i] = (uint8_t)(0x10 * (n + 1) + i);
  for (unsigned i = 0; i < TERN__PROBE_KEY_BYTES; i++) key[i] = (uint8_t)(0x3b * (n + 1) + 7 * i);
}

/* Script operations (the first byte of each record, modulo FZ_OP_COUNT):
 *
 *   RAW     dt:2 addr:1 len:1 bytes[len]  a datagram from addr
 *   REQUEST dt:2 addr:1 key:1 nonce:1 wait:2  a correctly tagged REQUEST
 *           under key (modulo FZ_PROBE_KEYS+1: the last is a key the
 *           service never had), nonce 0..255, wait = wait * 100 ms
 *   ANSWER  dt:2 addr:1 key:1 nonce:1 type:1  a tagged ACK/REPLY/other type
 *   WAIT    dt:2                           time passes by dt * 1000 ms
 *   REMOVE  key:1                          that session ends
 *   ADD     key:1                          that session (re)gets its key
 *
 * dt is big-endian milliseconds that pass before the operation; addr picks
 * one of FZ_ADDRS source addresses (ip = addr >> 2 & 3, port = addr & 3). */
enum { FZ_OP_RAW, FZ_OP_REQUEST, FZ_OP_ANSWER, FZ_OP_WAIT, FZ_OP_REMOVE, FZ_OP_ADD, FZ_OP_COUNT };
#define FZ_ADDRS 16

#endif
