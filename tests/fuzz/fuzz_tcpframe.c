/*
 * libFuzzer target for the TCP framing of datagrams (lib/io/tcpframe.c,
 * spec/wire.md §12): what a relay reads from a stranger's TCP connection.
 *
 * The first byte of the input picks the sizes of the reads the input is
 * cut into; the rest is the stream. Invariants, any break aborts:
 *
 *   - every datagram the reader gives is 1..TERN__TCPF_MAX bytes and is
 *     exactly the bytes after its 2-byte length in the stream, in order;
 *   - once the reader says TERN_EPROTO, the length at that point of the
 *     stream is 0 or above TERN__TCPF_MAX (it never refuses a good frame);
 *   - the reader never needs more room than a whole frame;
 *   - rx_ready() says 1 exactly when rx_next() has something to say;
 *   - datagrams written by the writer come back through the reader unchanged.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/tcpframe.h"
#include "tern/tern.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static tern__tcpf_rx rx;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  size_t chunk = (size_t)data[0] * 37 + 1;
  const uint8_t *s = data + 1;
  size_t n = size - 1, fed = 0, parsed = 0;
  memset(&rx, 0, sizeof rx);
  int broken = 0;
  while (fed < n && !broken) {
    size_t room;
    uint8_t *dst = tern__tcpf_rx_space(&rx, &room);
    if (room < 2 + TERN__TCPF_MAX - rx.len && rx.len < 2 + TERN__TCPF_MAX) abort();
    size_t k = n - fed < chunk ? n - fed : chunk;
    if (k > room) k = room;
    memcpy(dst, s + fed, k);
    tern__tcpf_rx_filled(&rx, k);
    fed += k;
    for (;;) {
      int ready = tern__tcpf_rx_ready(&rx);
      const uint8_t *d;
      size_t len;
      int r = tern__tcpf_rx_next(&rx, &d, &len);
      if ((r != 0) != (ready != 0)) abort();
      if (r == 0) break;
      size_t want = (size_t)s[parsed] << 8 | s[parsed + 1];
      if (r == TERN_EPROTO) {
        if (want != 0 && want <= TERN__TCPF_MAX) abort();
        broken = 1;
        break;
      }
      if (r != 1 || len != want || len == 0 || len > TERN__TCPF_MAX) abort();
      if (memcmp(d, s + parsed + 2, len) != 0) abort();
      parsed += 2 + len;
    }
  }
  /* The writer's frames read back unchanged. */
  tern__tcpf_tx tx;
  tern__tcpf_tx_init(&tx, 1 << 20);
  size_t off = 0, count = 0;
  while (off < n) {
    size_t len = (s[off] % 64) + 1;
    if (off + len > n) len = n - off;
    struct iovec iov = {.iov_base = (void *)(s + off), .iov_len = len};
    if (tern__tcpf_tx_put(&tx, &iov, 1) != 0) abort();
    off += len;
    count++;
  }
  size_t plen;
  const uint8_t *p = tern__tcpf_tx_pending(&tx, &plen);
  memset(&rx, 0, sizeof rx);
  size_t got = 0, back = 0, i = 0;
  while (i < plen) {
    size_t room;
    uint8_t *dst = tern__tcpf_rx_space(&rx, &room);
    size_t k = plen - i < chunk ? plen - i : chunk;
    if (k > room) k = room;
    memcpy(dst, p + i, k);
    tern__tcpf_rx_filled(&rx, k);
    i += k;
    const uint8_t *d;
    size_t len;
    int r;
    while ((r = tern__tcpf_rx_next(&rx, &d, &len)) == 1) {
      if (back + len > n || memcmp(d, s + back, len) != 0) abort();
      back += len;
      got++;
    }
    if (r != 0) abort();
  }
  if (got != count || back != n) abort();
  tern__tcpf_tx_free(&tx);
  return 0;
}
