/* TCP framing of datagrams (tcpframe.h; spec/wire.md §12). */
#include "io/tcpframe.h"

#include <stdlib.h>
#include <string.h>

#include "tern/tern.h"

uint8_t *tern__tcpf_rx_space(tern__tcpf_rx *rx, size_t *room) {
  if (rx->head && rx->head + rx->len > TERN__TCPF_RX_CAP / 2) {
    memmove(rx->buf, rx->buf + rx->head, rx->len);
    rx->head = 0;
  }
  *room = TERN__TCPF_RX_CAP - rx->head - rx->len;
  return rx->buf + rx->head + rx->len;
}

void tern__tcpf_rx_filled(tern__tcpf_rx *rx, size_t n) { rx->len += n; }

/* The length field of the frame at the head: 0..65535, or -1 if fewer
 * than 2 bytes are there. */
static long head_len(const tern__tcpf_rx *rx) {
  if (rx->len < 2) return -1;
  return (long)rx->buf[rx->head] << 8 | rx->buf[rx->head + 1];
}

int tern__tcpf_rx_ready(const tern__tcpf_rx *rx) {
  long n = head_len(rx);
  if (n == 0 || n > TERN__TCPF_MAX) return 1; /* a framing error to report */
  return n > 0 && rx->len >= 2 + (size_t)n;
}

int tern__tcpf_rx_next(tern__tcpf_rx *rx, const uint8_t **data, size_t *len) {
  long n = head_len(rx);
  if (n < 0) return 0;
  if (n == 0 || n > TERN__TCPF_MAX) return TERN_EPROTO;
  if (rx->len < 2 + (size_t)n) return 0;
  *data = rx->buf + rx->head + 2;
  *len = (size_t)n;
  rx->head += 2 + (size_t)n;
  rx->len -= 2 + (size_t)n;
  if (rx->len == 0) rx->head = 0;
  return 1;
}

void tern__tcpf_tx_init(tern__tcpf_tx *tx, size_t max) {
  memset(tx, 0, sizeof(*tx));
  tx->max = max;
}

void tern__tcpf_tx_free(tern__tcpf_tx *tx) {
  free(tx->buf);
  memset(tx, 0, sizeof(*tx));
}

int tern__tcpf_tx_put(tern__tcpf_tx *tx, const struct iovec *iov, size_t n) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++) total += iov[i].iov_len;
  if (total == 0 || total > TERN__TCPF_MAX) return TERN_ETOOBIG;
  size_t need = tx->len + 2 + total;
  if (need > tx->max) return TERN_EAGAIN;
  if (tx->head + need > tx->cap) {
    if (tx->head) {
      memmove(tx->buf, tx->buf + tx->head, tx->len);
      tx->head = 0;
    }
    if (need > tx->cap) {
      size_t cap = tx->cap ? tx->cap : 8192;
      while (cap < need) cap *= 2;
      if (cap > tx->max) cap = tx->max;
      uint8_t *b = realloc(tx->buf, cap);
      if (!b) return TERN_ENOMEM;
      tx->buf = b;
      tx->cap = cap;
    }
  }
  uint8_t *p = tx->buf + tx->head + tx->len;
  p[0] = (uint8_t)(total >> 8);
  p[1] = (uint8_t)total;
  p += 2;
  for (size_t i = 0; i < n; i++) {
    if (iov[i].iov_len) memcpy(p, iov[i].iov_base, iov[i].iov_len);
    p += iov[i].iov_len;
  }
  tx->len += 2 + total;
  return 0;
}

const uint8_t *tern__tcpf_tx_pending(const tern__tcpf_tx *tx, size_t *len) {
  *len = tx->len;
  return tx->len ? tx->buf + tx->head : NULL;
}

void tern__tcpf_tx_consumed(tern__tcpf_tx *tx, size_t n) {
  if (n > tx->len) n = tx->len;
  tx->head += n;
  tx->len -= n;
  if (tx->len == 0) tx->head = 0;
}
