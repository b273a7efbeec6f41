/*
 * IPv4 literals on IPv6-only networks (RFC 7050, RFC 6052): a network that
 * reaches IPv4 only through a NAT64 gives its hosts no IPv4 route, and its
 * DNS64 synthesizes AAAA records for names. An IPv4 *literal* never passes
 * through DNS, so the client makes the synthesized address itself, with the
 * prefix it learns by resolving the well-known name ipv4only.arpa (whose
 * only A records are 192.0.0.170 and 192.0.0.171), as Apple's stack does.
 *
 * Only the /96 prefix length is supported (the well-known 64:ff9b::/96 and
 * any network-specific /96); other lengths of RFC 6052 §2.2 are not.
 */
#ifndef TERN_NAT64_H
#define TERN_NAT64_H

#include <stdint.h>

#include "io/addr.h"

/* Sans-I/O: 1 with prefix[0..12) if `aaaa` is one of ipv4only.arpa's
 * synthesized addresses under a /96 prefix, else 0. */
int tern__nat64_prefix_of(const tern__addr *aaaa, uint8_t prefix[12]);

/* Sans-I/O: the IPv4 address `v4` (IPv4-mapped form) under `prefix`. */
void tern__nat64_apply(const uint8_t prefix[12], const tern__addr *v4, tern__addr *out);

/* 1 if `a` is an IPv4 address this host has no route to (an IPv6-only
 * network: it needs synthesizing). Asks the kernel; sends nothing. */
int tern__nat64_needed(const tern__addr *a);

/* If IPv4 address `a` has no route from this host and the network has a
 * NAT64 prefix, rewrites `a` to the synthesized IPv6 address and returns
 * 1; else leaves it and returns 0. Resolves ipv4only.arpa (blocking). */
int tern__nat64_synthesize(tern__addr *a);

#endif
