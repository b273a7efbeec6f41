/*
 * libFuzzer target for the relay's side of migration (lib/io/migrate.c,
 * spec/wire.md §11) and the datagram classifiers a relay runs on whatever
 * arrives at its port. Two registered sessions; the input is a run of
 * datagrams, each from one of four addresses (first byte), and each either
 * raw bytes or, when its second byte says so, a datagram sealed under one
 * session's key with fields from the input (so the checks past the tag are
 * reached too). Invariants, any break aborts:
 *
 *   - an answer is a RESPONSE of exactly TERN__PATH_BYTES that opens under
 *     the session's relay-to-client key and echoes the CHALLENGE's bytes;
 *   - over the run, the bytes answered to an address never exceed 3x the
 *     bytes of path datagrams it sent;
 *   - a move is to an address that earlier got a RESPONSE, and names one of
 *     the two sessions;
 *   - a datagram that is a CONNECT, a FULL or a HINT is never also taken
 *     for another kind.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/enet_platform.h"
#include "io/migrate.h"
#include "wire/full.h"
#include "wire/path.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tern__mig *m;
  if (tern__mig_new(&m) != 0) abort();
  tern__path_keys k[2];
  for (int i = 0; i < 2; i++) {
    uint8_t c2s[32], s2c[32];
    memset(c2s, 0x10 + i, 32);
    memset(s2c, 0x20 + i, 32);
    tern__path_derive(c2s, s2c, &k[i]);
    if (tern__mig_add(m, (uint32_t)(i + 1), 7, &k[i]) != 0) abort();
  }
  tern__addr who[4];
  for (int i = 0; i < 4; i++) tern__addr_set_v4(&who[i], 0x0A000001u + (uint32_t)i, 4000);
  uint64_t in_bytes[4] = {0}, out_bytes[4] = {0};
  int answered[4] = {0};
  size_t pos = 0;
  while (pos + 3 <= size) {
    unsigned a = data[pos] & 3, mode = data[pos + 1], n = data[pos + 2];
    pos += 3;
    if (n > size - pos) n = (unsigned)(size - pos);
    uint8_t d[TERN__PATH_BYTES > 64 ? TERN__PATH_BYTES : 64];
    size_t len;
    if ((mode & 0xC0) == 0xC0 && n >= 17) {
      /* A sealed one: session, type, counter and the two 8-byte fields. */
      const uint8_t *f = data + pos;
      tern__path_pkt p = {.type = (uint8_t)(1 + f[0] % 3), .counter = f[1]};
      int s = mode & 1;
      memcpy(p.id, k[s].id, 8);
      memcpy(p.a, f + 1, 8);
      memcpy(p.b, f + 9, 8);
      tern__path_write(&p, p.type == TERN__PATH_RESPONSE ? k[s].s2c : k[s].c2s, d);
      len = TERN__PATH_BYTES;
    } else {
      len = n < sizeof d ? n : sizeof d;
      memcpy(d, data + pos, len);
    }
    pos += n;
    uint32_t retry;
    int kinds = tern__enet_is_connect(d, len) + tern__full_parse(d, len, &retry) +
                tern__path_is_hint(d, len) + (tern__path_looks_like(d, len) && !tern__path_is_hint(d, len));
    if (kinds > 1) abort();
    if (!tern__path_looks_like(d, len)) continue;
    in_bytes[a] += len;
    uint8_t rnd[8], out[64];
    memset(rnd, (int)(0x40 + pos), 8);
    size_t olen = 99;
    uint32_t h = 0;
    uint16_t g = 0;
    tern__path_pkt req;
    int peeked = tern__path_peek(d, len, &req) == 0;
    int r = tern__mig_input(m, &who[a], d, len, rnd, out, &olen, &h, &g);
    if (r == TERN__MIG_ANSWER) {
      tern__path_pkt resp;
      if (!peeked || olen != TERN__PATH_BYTES || tern__path_peek(out, olen, &resp) != 0 ||
          resp.type != TERN__PATH_RESPONSE || memcmp(resp.a, req.a, 8) != 0)
        abort();
      int s = memcmp(resp.id, k[0].id, 8) == 0 ? 0 : 1;
      if (tern__path_open(out, olen, k[s].s2c) != 0) abort();
      out_bytes[a] += olen;
      answered[a] = 1;
      if (out_bytes[a] > 3 * in_bytes[a]) abort();
    } else if (r == TERN__MIG_MOVE) {
      if (!answered[a] || g != 7 || (h != 1 && h != 2)) abort();
    } else if (r != TERN__MIG_NONE || olen != 0) {
      abort();
    }
  }
  tern__mig_free(m);
  return 0;
}
