/* Handshake packets and sealed DATA packets over the Noise core. */
#include "wire/session.h"

#include <sodium.h>
#include <string.h>

#include "wire/channels.h"

_Static_assert(TERN__STREAM_UNORDERED == TERN__CH_COPY,
               "the unordered stream is the channel of unsequenced copies");
_Static_assert(TERN__STREAM_UNORDERED == TERN__STREAMS - 1,
               "replay[] is indexed by the ordered streams, below the unordered one");

static void fail(tern__session *s) {
  tern__session_wipe(s);
  s->state = TERN__SS_DEAD;
}

static void put_le64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* Checks the two-byte handshake header: type and version. */
static int check_header(const uint8_t *pkt, size_t len, uint8_t type, size_t min_len) {
  if (len < 2 || pkt[0] != type) return TERN_EPROTO;
  if (pkt[1] != TERN__PROTO_VERSION_BYTE) return TERN_EVERSION;
  if (len < min_len) return TERN_EPROTO;
  return 0;
}

/* Moves the Split() keys into place: the initiator sends with c1. */
static int finish(tern__session *s) {
  tern__noise_cipher c1, c2;
  if (tern__noise_split(&s->hs, &c1, &c2, s->handshake_hash) != 0) return TERN_EINVAL;
  memcpy(s->send_key, s->initiator ? c1.k : c2.k, TERN__NOISE_KEYLEN);
  memcpy(s->recv_key, s->initiator ? c2.k : c1.k, TERN__NOISE_KEYLEN);
  sodium_memzero(&c1, sizeof(c1));
  sodium_memzero(&c2, sizeof(c2));
  /* The handshake is over: its secrets go, and its storage becomes the
   * unordered stream's window (session.h). */
  tern__noise_hs_wipe(&s->hs);
  tern__replay_init(&s->unordered);
  for (int i = 0; i < TERN__STREAMS; i++) s->send_n[i] = 0;
  for (int i = 0; i < TERN__STREAMS - 1; i++) tern__replay_small_init(&s->replay[i]);
  s->state = TERN__SS_OPEN;
  return 0;
}

int tern__session_client_hello(tern__session *s, const tern_keypair *client,
                               const uint8_t relay_pub[TERN_KEY_BYTES],
                               const uint8_t e_priv[TERN_KEY_BYTES], const uint8_t *payload,
                               size_t payload_len, uint8_t *out, size_t cap, size_t *out_len) {
  *out_len = 0;
  memset(s, 0, sizeof(*s));
  s->initiator = 1;
  if (payload_len > TERN__HS_PAYLOAD_MAX) return TERN_ETOOBIG;
  if (cap < 2) return TERN_EBUFSIZE;
  int rc = tern__noise_hs_init(&s->hs, TERN__NOISE_IK, 1, (const uint8_t *)TERN__PROLOGUE,
                               strlen(TERN__PROLOGUE), client->secret_key, e_priv, relay_pub, NULL);
  if (rc) goto err;
  out[0] = TERN__PKT_HELLO;
  out[1] = TERN__PROTO_VERSION_BYTE;
  size_t n = 0;
  rc = tern__noise_write_message(&s->hs, payload, payload_len, out + 2, cap - 2, &n);
  if (rc) goto err;
  memcpy(s->remote_static, relay_pub, TERN_KEY_BYTES);
  *out_len = n + 2;
  s->state = TERN__SS_HELLO_SENT;
  return 0;
err:
  fail(s);
  return rc;
}

int tern__session_client_welcome(tern__session *s, const uint8_t *pkt, size_t len,
                                 uint8_t *payload, size_t cap, size_t *payload_len) {
  *payload_len = 0;
  if (s->state != TERN__SS_HELLO_SENT) return TERN_EINVAL;
  int rc = check_header(pkt, len, TERN__PKT_WELCOME, TERN__WELCOME_OVERHEAD);
  if (rc) goto err;
  if (len - TERN__WELCOME_OVERHEAD > TERN__HS_PAYLOAD_MAX) {
    rc = TERN_EPROTO; /* as the relay refuses an oversized HELLO */
    goto err;
  }
  rc = tern__noise_read_message(&s->hs, pkt + 2, len - 2, payload, cap, payload_len);
  if (rc == TERN_EDECRYPT) rc = TERN_ERELAYKEY;
  if (rc) goto err;
  rc = finish(s);
  if (rc) goto err;
  return 0;
err:
  *payload_len = 0;
  fail(s);
  return rc;
}

int tern__session_relay_hello(tern__session *s, const tern_keypair *relay,
                              const uint8_t e_priv[TERN_KEY_BYTES], const uint8_t *pkt,
                              size_t len, uint8_t *payload, size_t cap, size_t *payload_len) {
  *payload_len = 0;
  memset(s, 0, sizeof(*s));
  s->initiator = 0;
  int rc = check_header(pkt, len, TERN__PKT_HELLO, TERN__HELLO_OVERHEAD);
  if (rc) goto err;
  if (len - TERN__HELLO_OVERHEAD > TERN__HS_PAYLOAD_MAX) {
    rc = TERN_EPROTO;
    goto err;
  }
  rc = tern__noise_hs_init(&s->hs, TERN__NOISE_IK, 0, (const uint8_t *)TERN__PROLOGUE,
                           strlen(TERN__PROLOGUE), relay->secret_key, e_priv, NULL, NULL);
  if (rc) goto err;
  rc = tern__noise_read_message(&s->hs, pkt + 2, len - 2, payload, cap, payload_len);
  if (rc == TERN_EDECRYPT) rc = TERN_ERELAYKEY;
  if (rc) goto err;
  memcpy(s->remote_static, s->hs.rs, TERN_KEY_BYTES);
  s->state = TERN__SS_HELLO_READ;
  return 0;
err:
  *payload_len = 0;
  fail(s);
  return rc;
}

int tern__session_relay_welcome(tern__session *s, const uint8_t *payload, size_t payload_len,
                                uint8_t *out, size_t cap, size_t *out_len) {
  *out_len = 0;
  if (s->state != TERN__SS_HELLO_READ) return TERN_EINVAL;
  if (payload_len > TERN__HS_PAYLOAD_MAX) return TERN_ETOOBIG;
  if (cap < 2) return TERN_EBUFSIZE;
  out[0] = TERN__PKT_WELCOME;
  out[1] = TERN__PROTO_VERSION_BYTE;
  size_t n = 0;
  int rc = tern__noise_write_message(&s->hs, payload, payload_len, out + 2, cap - 2, &n);
  if (rc == 0) rc = finish(s);
  if (rc) {
    fail(s);
    return rc;
  }
  *out_len = n + 2;
  return 0;
}

int tern__session_seal(tern__session *s, uint8_t stream, const uint8_t *frames, size_t len,
                       uint8_t *out, size_t cap, size_t *out_len) {
  *out_len = 0;
  if (s->state != TERN__SS_OPEN || stream >= TERN__STREAMS) return TERN_EINVAL;
  if (s->send_n[stream] >= TERN__SEND_LIMIT) return TERN_ENONCE;
  if (cap < TERN__DATA_OVERHEAD || len > cap - TERN__DATA_OVERHEAD) return TERN_EBUFSIZE;
  uint64_t n = (uint64_t)stream << 56 | s->send_n[stream];
  out[0] = TERN__PKT_DATA;
  put_le64(out + 1, n);
  int rc = tern__aead_seal(s->send_key, n, out, TERN__DATA_HEADER, frames, len,
                           out + TERN__DATA_HEADER);
  if (rc) return rc;
  s->send_n[stream]++;
  *out_len = len + TERN__DATA_OVERHEAD;
  return 0;
}

int tern__session_open(tern__session *s, const uint8_t *pkt, size_t len, uint8_t *out, size_t cap,
                       size_t *out_len, uint8_t *stream) {
  *out_len = 0;
  *stream = 0;
  if (s->state != TERN__SS_OPEN) return TERN_EINVAL;
  if (len < TERN__DATA_OVERHEAD || pkt[0] != TERN__PKT_DATA) return TERN_EPROTO;
  size_t pt_len = len - TERN__DATA_OVERHEAD;
  if (cap < pt_len) return TERN_EBUFSIZE;
  uint64_t n = get_le64(pkt + 1);
  uint8_t st = (uint8_t)(n >> 56);
  uint64_t count = n & (((uint64_t)1 << 56) - 1);
  if (st >= TERN__STREAMS || count >= TERN__SEND_LIMIT) {
    s->rejected++;
    return TERN_EDECRYPT;
  }
  /* Authenticate first: an unauthenticated counter must not touch the
   * window, or a forger could slide it and make real packets look old. */
  if (tern__aead_open(s->recv_key, n, pkt, TERN__DATA_HEADER, pkt + TERN__DATA_HEADER,
                      len - TERN__DATA_HEADER, out) != 0) {
    s->rejected++;
    return TERN_EDECRYPT;
  }
  int unordered = st == TERN__STREAM_UNORDERED;
  if ((unordered ? tern__replay_check(&s->unordered, count)
                 : tern__replay_small_check(&s->replay[st], count)) != 0) {
    sodium_memzero(out, pt_len);
    s->replayed++;
    return TERN_EREPLAY;
  }
  if (unordered)
    tern__replay_update(&s->unordered, count);
  else
    tern__replay_small_update(&s->replay[st], count);
  *out_len = pt_len;
  *stream = st;
  return 0;
}

int tern__session_recv_top(const tern__session *s, uint8_t stream, uint64_t *top) {
  *top = 0;
  if (s->state != TERN__SS_OPEN || stream >= TERN__STREAMS) return 0;
  if (stream == TERN__STREAM_UNORDERED) {
    *top = s->unordered.top;
    return s->unordered.any;
  }
  *top = s->replay[stream].top;
  return s->replay[stream].any;
}

void tern__session_wipe(tern__session *s) {
  tern__noise_hs_wipe(&s->hs);
  sodium_memzero(s->send_key, sizeof(s->send_key));
  sodium_memzero(s->recv_key, sizeof(s->recv_key));
  s->state = TERN__SS_DEAD;
}
