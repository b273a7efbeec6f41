/*
 * TCP framing of datagrams (sans-I/O; spec/wire.md §12): a TCP path
 * carries the same datagrams as UDP, each as a 2-byte big-endian length
 * (1..TERN__TCPF_MAX) followed by its bytes. A reader that turns a byte
 * stream back into datagrams, and a bounded writer that takes whole
 * datagrams or none: when the stream backs up, a datagram is dropped as UDP
 * would drop it, and ENet resends it.
 *
 * Not thread-safe; the dispatcher owns one reader and one writer per TCP
 * connection.
 */
#ifndef TERN_TCPFRAME_H
#define TERN_TCPFRAME_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* The largest datagram a frame carries: ENet's largest (its maximum MTU). */
#define TERN__TCPF_MAX 4096
/* Bytes of the reader's buffer: room for a whole frame and the start of the next. */
#define TERN__TCPF_RX_CAP 16384

typedef struct tern__tcpf_rx {
  size_t head, len; /* unread bytes: buf[head .. head+len) */
  uint8_t buf[TERN__TCPF_RX_CAP];
} tern__tcpf_rx;

/* Where the next bytes read from the socket go, and how many fit (never 0:
 * the reader makes room by moving unread bytes to the front). */
uint8_t *tern__tcpf_rx_space(tern__tcpf_rx *rx, size_t *room);
/* n bytes were read into the space. */
void tern__tcpf_rx_filled(tern__tcpf_rx *rx, size_t n);
/* The next whole datagram: 1 with *data (valid until the next call on rx)
 * and *len, 0 if more bytes are needed, TERN_EPROTO if the stream is not
 * framed as spec/wire.md §12 says (a length of 0 or above TERN__TCPF_MAX):
 * the connection must then be closed. */
int tern__tcpf_rx_next(tern__tcpf_rx *rx, const uint8_t **data, size_t *len);
/* 1 if tern__tcpf_rx_next() has something to say: a whole datagram, or
 * TERN_EPROTO for a length that breaks the framing. */
int tern__tcpf_rx_ready(const tern__tcpf_rx *rx);

typedef struct tern__tcpf_tx {
  uint8_t *buf;        /* owned; grows up to max */
  size_t head, len, cap, max;
} tern__tcpf_tx;

/* An empty writer that holds at most `max` bytes not yet written. */
void tern__tcpf_tx_init(tern__tcpf_tx *tx, size_t max);
void tern__tcpf_tx_free(tern__tcpf_tx *tx);
/* Appends one datagram, gathered from iov, as a frame. Returns 0,
 * TERN_ETOOBIG (empty or over TERN__TCPF_MAX), TERN_EAGAIN (the writer
 * holds too much: dropped), TERN_ENOMEM. */
int tern__tcpf_tx_put(tern__tcpf_tx *tx, const struct iovec *iov, size_t n);
/* The bytes waiting to be written (*len 0: none). */
const uint8_t *tern__tcpf_tx_pending(const tern__tcpf_tx *tx, size_t *len);
/* n of them were written. */
void tern__tcpf_tx_consumed(tern__tcpf_tx *tx, size_t n);

#endif
