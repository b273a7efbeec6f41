/*
 * libFuzzer target for the Noise handshake reader: the input is fed as IK
 * message 1 to a responder, and as message 2 to an initiator that has just
 * written a fixed message 1. Both must fail cleanly or succeed; a success is
 * carried on into the transport ciphers so that path is exercised too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "wire/noise.h"
#include "tern/tern.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t init_static[32], init_ephemeral[32], resp_static[32], resp_pub[32];

static void setup_keys(void) {
  static int done;
  if (done) return;
  if (sodium_init() < 0) abort();
  for (int i = 0; i < 32; i++) {
    init_static[i] = (uint8_t)(1 + i);
    init_ephemeral[i] = (uint8_t)(0x40 + i);
    resp_static[i] = (uint8_t)(0x80 + i);
  }
  crypto_scalarmult_base(resp_pub, resp_static);
  done = 1;
}

/* Checks the contract of a read: on failure the state is dead and the
 * payload length is zero; on success the length fits the buffer. */
static void check_read(const tern__noise_hs *hs, int rc, size_t payload_len, size_t cap) {
  if (rc < 0) {
    if (!hs->failed || payload_len != 0) abort();
  } else if (rc != 0 || payload_len > cap) {
    abort();
  }
}

static void after_handshake(tern__noise_hs *hs, const uint8_t *data, size_t size) {
  tern__noise_cipher c1, c2;
  uint8_t out[256];
  size_t out_len;
  if (!tern__noise_hs_finished(hs)) return;
  if (tern__noise_split(hs, &c1, &c2, NULL) != 0) abort();
  /* Whatever the input is, it must not open under a fresh transport key. */
  if (tern__noise_decrypt(&c2, NULL, 0, data, size, out, sizeof out, &out_len) == 0)
    abort();
  sodium_memzero(&c1, sizeof c1);
  sodium_memzero(&c2, sizeof c2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup_keys();
  /* An exact-size copy, so that reading past the end is caught. */
  uint8_t *msg = malloc(size ? size : 1);
  if (!msg) return 0;
  if (size) memcpy(msg, data, size);

  uint8_t payload[512];
  size_t payload_len = 1;
  uint8_t resp_ephemeral[32];
  memset(resp_ephemeral, 0x33, sizeof resp_ephemeral);

  /* The responder reads the input as message 1; if that works, it answers
   * and finishes, which exercises write after an attacker-chosen read. */
  tern__noise_hs resp;
  if (tern__noise_hs_init(&resp, TERN__NOISE_IK, 0, NULL, 0, resp_static, resp_ephemeral, NULL,
                          NULL) != 0)
    abort();
  int rc = tern__noise_read_message(&resp, msg, size, payload, sizeof payload, &payload_len);
  check_read(&resp, rc, payload_len, sizeof payload);
  if (rc == 0) {
    uint8_t reply[128];
    size_t reply_len;
    if (tern__noise_write_message(&resp, NULL, 0, reply, sizeof reply, &reply_len) != 0) abort();
    after_handshake(&resp, msg, size);
  }
  tern__noise_hs_wipe(&resp);

  /* The initiator writes a fixed message 1, then reads the input as
   * message 2. */
  tern__noise_hs ini;
  uint8_t msg1[256];
  size_t msg1_len;
  if (tern__noise_hs_init(&ini, TERN__NOISE_IK, 1, NULL, 0, init_static, init_ephemeral, resp_pub,
                          NULL) != 0)
    abort();
  if (tern__noise_write_message(&ini, (const uint8_t *)"hi", 2, msg1, sizeof msg1, &msg1_len) != 0)
    abort();
  payload_len = 1;
  rc = tern__noise_read_message(&ini, msg, size, payload, sizeof payload, &payload_len);
  check_read(&ini, rc, payload_len, sizeof payload);
  if (rc == 0) after_handshake(&ini, msg, size);
  tern__noise_hs_wipe(&ini);

  free(msg);
  return 0;
}
