#include "tcpsec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "benchproto.h"

#define SEALED_MAX (BP_FRAME_MAX + crypto_secretstream_xchacha20poly1305_ABYTES)

static int reserve(uint8_t **buf, size_t *cap, size_t need) {
  if (need <= *cap) return 0;
  size_t ncap = *cap ? *cap : 4096;
  while (ncap < need) ncap *= 2;
  uint8_t *nb = realloc(*buf, ncap);
  if (!nb) return -1;
  *buf = nb;
  *cap = ncap;
  return 0;
}

/* Appends bytes to the send queue, compacting what was already written. */
static uint8_t *out_append(tcpsec *c, size_t n) {
  if (c->out_off && c->out_off == c->out_len) c->out_off = c->out_len = 0;
  if (reserve(&c->out, &c->out_cap, c->out_len + n) < 0) return NULL;
  uint8_t *p = c->out + c->out_len;
  c->out_len += n;
  return p;
}

int tcpsec_init(tcpsec *c, int fd, bool server) {
  memset(c, 0, sizeof *c);
  c->fd = fd;
  c->server = server;
  if (sodium_init() < 0) return -1;
  c->plain = malloc(BP_FRAME_MAX);
  if (!c->plain) return -1;
  crypto_kx_keypair(c->pk, c->sk);
  uint8_t *p = out_append(c, sizeof c->pk);
  if (!p) return -1;
  memcpy(p, c->pk, sizeof c->pk);
  return 0;
}

void tcpsec_free(tcpsec *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  sodium_memzero(c->sk, sizeof c->sk);
  sodium_memzero(c->rx_key, sizeof c->rx_key);
  sodium_memzero(&c->tx, sizeof c->tx);
  sodium_memzero(&c->rx, sizeof c->rx);
  free(c->in);
  free(c->out);
  free(c->plain);
  c->in = c->out = c->plain = NULL;
}

int tcpsec_send(tcpsec *c, const uint8_t *frame, size_t len) {
  if (!c->tx_ready || len > BP_FRAME_MAX) return -1;
  size_t sealed = len + crypto_secretstream_xchacha20poly1305_ABYTES;
  uint8_t *p = out_append(c, 4 + sealed);
  if (!p) return -1;
  p[0] = (uint8_t)(sealed >> 24);
  p[1] = (uint8_t)(sealed >> 16);
  p[2] = (uint8_t)(sealed >> 8);
  p[3] = (uint8_t)sealed;
  crypto_secretstream_xchacha20poly1305_push(&c->tx, p + 4, NULL, frame, len, NULL, 0, 0);
  return 0;
}

int tcpsec_flush(tcpsec *c) {
  while (c->out_off < c->out_len) {
    ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    c->out_off += (size_t)n;
  }
  return 0;
}

bool tcpsec_pending(const tcpsec *c) { return c->out_off < c->out_len; }

/* Derives the session keys from the peer's public key and queues our
 * stream header. */
static int on_peer_key(tcpsec *c, const uint8_t *peer) {
  uint8_t rxk[crypto_kx_SESSIONKEYBYTES], txk[crypto_kx_SESSIONKEYBYTES];
  int rc = c->server ? crypto_kx_server_session_keys(rxk, txk, c->pk, c->sk, peer)
                     : crypto_kx_client_session_keys(rxk, txk, c->pk, c->sk, peer);
  if (rc == 0) {
    uint8_t *h = out_append(c, crypto_secretstream_xchacha20poly1305_HEADERBYTES);
    if (!h) rc = -1;
    else crypto_secretstream_xchacha20poly1305_init_push(&c->tx, h, txk);
  }
  memcpy(c->rx_key, rxk, sizeof rxk);
  sodium_memzero(c->sk, sizeof c->sk);
  sodium_memzero(txk, sizeof txk);
  sodium_memzero(rxk, sizeof rxk);
  c->got_pk = true;
  c->tx_ready = rc == 0;
  return rc;
}

/* Consumes whole units from the input buffer. Returns 0 or -1. */
static int consume(tcpsec *c, tcpsec_frame_fn fn, void *arg) {
  size_t off = 0;
  int rc = 0;
  for (;;) {
    size_t avail = c->in_len - off;
    const uint8_t *p = c->in + off;
    if (!c->got_pk) {
      if (avail < crypto_kx_PUBLICKEYBYTES) break;
      if (on_peer_key(c, p) < 0) return -1;
      off += crypto_kx_PUBLICKEYBYTES;
      if (tcpsec_flush(c) < 0) return -1;
    } else if (!c->rx_ready) {
      if (avail < crypto_secretstream_xchacha20poly1305_HEADERBYTES) break;
      if (crypto_secretstream_xchacha20poly1305_init_pull(&c->rx, p, c->rx_key) != 0) return -1;
      sodium_memzero(c->rx_key, sizeof c->rx_key);
      c->rx_ready = true;
      off += crypto_secretstream_xchacha20poly1305_HEADERBYTES;
    } else {
      if (avail < 4) break;
      size_t len = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
      if (len < crypto_secretstream_xchacha20poly1305_ABYTES || len > SEALED_MAX) return -1;
      if (avail < 4 + len) break;
      unsigned long long plen;
      if (crypto_secretstream_xchacha20poly1305_pull(&c->rx, c->plain, &plen, NULL, p + 4, len, NULL,
                                                     0) != 0)
        return -1;
      off += 4 + len;
      if (fn(arg, c, c->plain, (size_t)plen) != 0) {
        rc = -1;
        break;
      }
    }
  }
  memmove(c->in, c->in + off, c->in_len - off);
  c->in_len -= off;
  return rc;
}

int tcpsec_read(tcpsec *c, tcpsec_frame_fn fn, void *arg) {
  /* Bounded: at most 64 reads per call, so one busy peer cannot starve the
   * others. */
  for (int i = 0; i < 64; i++) {
    if (reserve(&c->in, &c->in_cap, c->in_len + 65536) < 0) return -1;
    ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (n == 0) return -1;
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    c->in_len += (size_t)n;
    if (consume(c, fn, arg) < 0) return -1;
  }
  return 0;
}
