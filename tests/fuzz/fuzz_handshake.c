/*
 * libFuzzer target for the session core. The first input byte selects who
 * reads the rest (modulo FZ_MODES):
 *
 *   0  a relay with a fixed key reads it as HELLO (and answers, if it opens);
 *   1  a client that has sent a real HELLO reads it as WELCOME;
 *   2  an OPEN relay session reads it as a DATA packet.
 *
 * The contract checked: a failed call leaves no output length and the
 * session in the state the header promises (DEAD for a failed handshake
 * read, still OPEN and counting for a failed DATA packet); a successful
 * one moves to the next state, and an opened DATA packet does not open
 * twice. Seeds from seedgen.c are valid packets for exactly these sessions.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static fz_keys keys;
static tern__session open_client, open_relay; /* copied for each input */

static void setup(void) {
  static int done;
  if (done) return;
  fz_keys_init(&keys);
  fz_open_pair(&keys, &open_client, &open_relay);
  done = 1;
}

static void relay_reads_hello(const uint8_t *msg, size_t n) {
  static uint8_t payload[TERN__HS_PAYLOAD_MAX], out[FZ_PKT_MAX];
  tern__session r;
  size_t pl_len = 12345, out_len = 12345;
  int rc = tern__session_relay_hello(&r, &keys.relay, keys.relay_e, msg, n, payload,
                                     sizeof payload, &pl_len);
  if (rc != 0) {
    if (rc > 0 || pl_len != 0 || r.state != TERN__SS_DEAD) abort();
    if (tern__session_relay_welcome(&r, NULL, 0, out, sizeof out, &out_len) != TERN_EINVAL ||
        out_len != 0)
      abort();
    return;
  }
  if (r.state != TERN__SS_HELLO_READ || pl_len > sizeof payload) abort();
  if (tern__session_relay_welcome(&r, payload, pl_len, out, sizeof out, &out_len) != 0 ||
      r.state != TERN__SS_OPEN || out_len != TERN__WELCOME_OVERHEAD + pl_len)
    abort();
  tern__session_wipe(&r);
}

static void client_reads_welcome(const uint8_t *msg, size_t n) {
  static uint8_t hello[FZ_PKT_MAX], payload[TERN__HS_PAYLOAD_MAX], pkt[64];
  tern__session c;
  fz_client_hello(&keys, &c, hello);
  size_t pl_len = 12345, out_len = 12345;
  int rc = tern__session_client_welcome(&c, msg, n, payload, sizeof payload, &pl_len);
  if (rc != 0) {
    if (rc > 0 || pl_len != 0 || c.state != TERN__SS_DEAD) abort();
    if (tern__session_seal(&c, 0, (const uint8_t *)"x", 1, pkt, sizeof pkt, &out_len) != TERN_EINVAL ||
        out_len != 0)
      abort();
    return;
  }
  if (c.state != TERN__SS_OPEN || pl_len > sizeof payload || n != TERN__WELCOME_OVERHEAD + pl_len)
    abort();
  /* Only the real relay's WELCOME can open: then the keys must match it. */
  if (memcmp(c.handshake_hash, open_client.handshake_hash, TERN__NOISE_HASHLEN) != 0 ||
      memcmp(c.recv_key, open_relay.send_key, TERN__NOISE_KEYLEN) != 0)
    abort();
  tern__session_wipe(&c);
}

static void open_reads_data(const uint8_t *msg, size_t n) {
  tern__session r = open_relay;
  uint8_t *out = malloc(n ? n : 1);
  if (!out) abort();
  size_t out_len = 12345;
  uint8_t st = 0xee, st2 = 0xee;
  int rc = tern__session_open(&r, msg, n, out, n, &out_len, &st);
  if (rc != 0) {
    if (out_len != 0 || r.state != TERN__SS_OPEN) abort();
    uint64_t want_rejected = open_relay.rejected + (rc == TERN_EDECRYPT);
    uint64_t want_replayed = open_relay.replayed + (rc == TERN_EREPLAY);
    if (r.rejected != want_rejected || r.replayed != want_replayed) abort();
    /* A failed packet changes nothing else: no stream's window moved. */
    if (memcmp(&r.replay, &open_relay.replay, sizeof r.replay) != 0 ||
        memcmp(&r.unordered, &open_relay.unordered, sizeof r.unordered) != 0)
      abort();
    st = 0;
  } else {
    /* The stream reported is the counter's top byte, and exists. */
    if (r.state != TERN__SS_OPEN || out_len != n - TERN__DATA_OVERHEAD) abort();
    if (st >= TERN__STREAMS || st != msg[8]) abort();
    if (tern__session_open(&r, msg, n, out, n, &out_len, &st2) != TERN_EREPLAY || out_len != 0)
      abort();
    /* Only that stream's window moved. */
    for (int i = 0; i < TERN__STREAMS - 1; i++)
      if (i != st && memcmp(&r.replay[i], &open_relay.replay[i], sizeof r.replay[i]) != 0) abort();
    if (st != TERN__STREAM_UNORDERED &&
        memcmp(&r.unordered, &open_relay.unordered, sizeof r.unordered) != 0)
      abort();
  }
  free(out);
  /* Whatever happened, the session still opens the client's next packet on
   * that stream: the one after the input's counter if the input opened,
   * else the first of stream 0. */
  tern__session c = open_client;
  uint8_t pkt[64], pt[64];
  size_t pkt_len = 0, pt_len = 0;
  uint64_t top = 0;
  if (tern__session_recv_top(&r, st, &top)) {
    if (top + 1 >= TERN__SEND_LIMIT) return;
    c.send_n[st] = top + 1;
  }
  if (tern__session_seal(&c, st, (const uint8_t *)"next", 4, pkt, sizeof pkt, &pkt_len) != 0)
    abort();
  if (tern__session_open(&r, pkt, pkt_len, pt, sizeof pt, &pt_len, &st2) != 0 || pt_len != 4 ||
      st2 != st || memcmp(pt, "next", 4) != 0)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup();
  if (size == 0) return 0;
  size_t n = size - 1;
  /* An exact-size copy, so that reading past the end is caught. */
  uint8_t *msg = malloc(n ? n : 1);
  if (!msg) abort();
  if (n) memcpy(msg, data + 1, n);
  switch (data[0] % FZ_MODES) {
  case FZ_RELAY_READS_HELLO:
    relay_reads_hello(msg, n);
    break;
  case FZ_CLIENT_READS_WELCOME:
    client_reads_welcome(msg, n);
    break;
  case FZ_OPEN_READS_DATA:
    open_reads_data(msg, n);
    break;
  }
  free(msg);
  return 0;
}
