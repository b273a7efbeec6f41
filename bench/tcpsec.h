/*
 * tcpsec: a sealed, length-prefixed frame stream over a non-blocking TCP
 * socket, used by the TCP baseline's relay and client so that TCP pays for
 * crypto as tern does.
 *
 * Each side generates a crypto_kx key pair per connection and starts by
 * sending its public key (32 bytes). On the peer's key it derives the two
 * session keys (crypto_kx client/server roles), starts a
 * crypto_secretstream_xchacha20poly1305 push stream with its transmit key
 * and sends the stream header (24 bytes). Every frame after that is
 *   length (4 bytes, big-endian) | secretstream message (frame + 17 bytes)
 * and is opened with the pull stream started from the peer's header. The
 * relay opens what a client sends and reseals it for the recipient, as
 * tern's relay does. This is no authenticated handshake (the keys are not
 * pinned); it exists to put the same symmetric crypto cost on the TCP path.
 */
#ifndef BENCH_TCPSEC_H
#define BENCH_TCPSEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

typedef struct tcpsec {
  int fd;
  bool server;
  uint8_t pk[crypto_kx_PUBLICKEYBYTES], sk[crypto_kx_SECRETKEYBYTES];
  uint8_t rx_key[crypto_kx_SESSIONKEYBYTES]; /* until the peer's header comes */
  crypto_secretstream_xchacha20poly1305_state tx, rx;
  bool tx_ready; /* our header is queued: frames may be sent */
  bool rx_ready; /* the peer's header arrived: frames may be opened */
  bool got_pk;
  uint8_t *in;  /* received bytes not yet consumed */
  size_t in_len, in_cap;
  uint8_t *out; /* bytes queued for the socket */
  size_t out_off, out_len, out_cap;
  uint8_t *plain; /* scratch for one opened frame */
} tcpsec;

/* Called for every opened frame; returning non-zero stops reading with an
 * error. */
typedef int (*tcpsec_frame_fn)(void *arg, tcpsec *c, const uint8_t *frame, size_t len);

/* Takes ownership of fd (non-blocking, connected) and queues our public
 * key. Returns 0 or -1 (out of memory, sodium failed). */
int tcpsec_init(tcpsec *c, int fd, bool server);

/* Closes the socket and frees the buffers. */
void tcpsec_free(tcpsec *c);

/* Seals a frame into the send queue (unbounded: the caller paces). Returns
 * 0, or -1 before the handshake has got far enough or if too large. */
int tcpsec_send(tcpsec *c, const uint8_t *frame, size_t len);

/* Writes queued bytes until the socket would block. Returns 0 or -1. */
int tcpsec_flush(tcpsec *c);

/* True if bytes are waiting for the socket to accept them. */
bool tcpsec_pending(const tcpsec *c);

/* Reads what the socket has, runs the handshake and calls fn per frame.
 * Returns 0, or -1 on EOF, a socket error, a frame that fails to open, or
 * fn's refusal. */
int tcpsec_read(tcpsec *c, tcpsec_frame_fn fn, void *arg);

#endif
