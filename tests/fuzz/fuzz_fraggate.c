/*
 * libFuzzer target for the fragment gate (lib/io/fraggate.c): the ENet
 * commands of a datagram from a peer whose handshake has not succeeded.
 *
 * The first byte of the input is the number of reassemblies the gate has
 * begun already (mod 5); the rest is the datagram. Invariants, any break
 * aborts:
 *
 *   - the reader never gives more fragment commands than fit in the
 *     datagram (one per sizeof(ENetProtocolSendFragment) bytes);
 *   - a datagram the gate passes has no fragment over the limit, and the
 *     gate then holds at most TERN__FRAG_GATE_STARTS reassemblies;
 *   - a datagram the gate refuses leaves it as it was;
 *   - a trusted gate passes everything and changes nothing.
 */
#include <enet/enet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/fraggate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LIMIT 2146

typedef struct seen {
  size_t n;
  int over;
} seen;

static int visit(void *ctx, const tern__enet_frag *f) {
  seen *s = ctx;
  s->n++;
  if (f->total > LIMIT) s->over = 1;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const uint8_t *d = data + 1;
  size_t n = size - 1;
  seen s = {0, 0};
  (void)tern__enet_each_fragment(d, n, visit, &s);
  if (s.n > n / sizeof(ENetProtocolSendFragment)) abort();
  tern__frag_gate g, before;
  memset(&g, 0, sizeof(g));
  g.starts = data[0] % (TERN__FRAG_GATE_STARTS + 1);
  for (unsigned i = 0; i < g.starts; i++) g.started[i] = 0x10000u * i + 1;
  before = g;
  if (tern__frag_gate_pass(&g, d, n, LIMIT)) {
    if (s.over) abort();
    if (g.starts > TERN__FRAG_GATE_STARTS || g.starts < before.starts) abort();
  } else if (memcmp(&g, &before, sizeof(g)) != 0) {
    abort();
  }
  g.trusted = 1;
  before = g;
  if (tern__frag_gate_pass(&g, d, n, LIMIT) != 1 || memcmp(&g, &before, sizeof(g)) != 0) abort();
  return 0;
}
