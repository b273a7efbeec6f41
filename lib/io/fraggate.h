/*
 * The fragment gate (sans-I/O): what an ENet peer that has not finished
 * tern's handshake may make ENet reserve (docs/socket-layer.md, "Fragments
 * before authentication"; spec/threat-model.md).
 *
 * ENet 1.3.17 allocates a fragmented packet's whole totalLength when the
 * first of its fragments arrives (up to ENetHost.maximumPacketSize), and
 * keeps one reassembly per start sequence number the peer names. Before
 * the handshake a tern client sends one packet, HELLO, at most
 * TERN__HELLO_OVERHEAD + TERN__HS_PAYLOAD_MAX bytes. The gate reads the
 * commands of a datagram as ENet will (header, then commands until the
 * first one ENet would stop at) and refuses the datagram if a fragment
 * command names a totalLength over the limit, or starts a reassembly past
 * the few a handshake needs. Once the peer is trusted (its handshake
 * succeeded) every datagram passes; the host-wide maximumPacketSize still
 * bounds it.
 *
 * Owns nothing but the gate struct, which the link keeps per peer slot.
 */
#ifndef TERN_FRAGGATE_H
#define TERN_FRAGGATE_H

#include <stddef.h>
#include <stdint.h>

/* Reassemblies a peer may begin before it is trusted (HELLO and resends of
 * it under new sequence numbers). */
#define TERN__FRAG_GATE_STARTS 4

typedef struct tern__frag_gate {
  uint8_t trusted;  /* the handshake succeeded: everything passes */
  uint8_t starts;   /* reassemblies begun (entries of `started`) */
  uint32_t started[TERN__FRAG_GATE_STARTS]; /* unreliable << 24 | channel << 16 | start seq */
} tern__frag_gate;

/* One fragment command of a datagram. */
typedef struct tern__enet_frag {
  uint8_t channel;
  uint8_t unreliable;   /* SEND_UNRELIABLE_FRAGMENT */
  uint16_t start_seq;   /* startSequenceNumber */
  uint32_t total;       /* totalLength: what ENet allocates for it */
} tern__enet_frag;

/* Calls fn for each fragment command of ENet datagram `d` (a host without
 * checksum or compressor, as tern's are), in order, up to where ENet stops
 * reading. Stops when fn returns nonzero and returns that value; 0 after
 * the last command. */
int tern__enet_each_fragment(const uint8_t *d, size_t n,
                             int (*fn)(void *ctx, const tern__enet_frag *f), void *ctx);

/* 1 if the datagram may go to ENet, 0 to drop it: before the peer is
 * trusted, a fragment whose totalLength is over `max_total`, or one that
 * begins a reassembly past TERN__FRAG_GATE_STARTS, refuses the datagram
 * (the reassemblies it begins are remembered only if it passes). */
int tern__frag_gate_pass(tern__frag_gate *g, const uint8_t *d, size_t n, size_t max_total);

#endif
