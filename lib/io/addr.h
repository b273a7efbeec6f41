/*
 * A transport address (IPv4 or IPv6, and a UDP/TCP port) as plain bytes:
 * an IPv4 address is kept in its IPv4-mapped IPv6 form (::ffff:a.b.c.d), so
 * two addresses are equal exactly when their bytes are, and the sans-I/O
 * cores (the probe service, the address table) can compare and hash them
 * without knowing about sockets. Conversions to and from `struct sockaddr`
 * are here too, so no other file fills a sockaddr by hand.
 */
#ifndef TERN_ADDR_H
#define TERN_ADDR_H

#include <stddef.h>
#include <stdint.h>

struct sockaddr;
struct sockaddr_storage;

typedef struct tern__addr {
  uint8_t ip[16];  /* IPv6, or IPv4-mapped IPv6 */
  uint16_t port;   /* host byte order */
} tern__addr;

/* Longest text tern__addr_format() writes: "[" v6 "]:" port, NUL. */
#define TERN__ADDR_TEXT 56

/* 1 if the address is IPv4 (IPv4-mapped). */
int tern__addr_is_v4(const tern__addr *a);
/* The IPv4 address in host byte order (only meaningful when is_v4). */
uint32_t tern__addr_v4(const tern__addr *a);
void tern__addr_set_v4(tern__addr *a, uint32_t ip, uint16_t port);

int tern__addr_equal(const tern__addr *a, const tern__addr *b);
/* A hash of the address under a per-process random key (SipHash, from
 * libsodium), so that a remote sender cannot pick addresses that collide. */
uint64_t tern__addr_hash(const tern__addr *a);

/* From a socket address (AF_INET or AF_INET6). Returns 0 or TERN_EADDR. */
int tern__addr_from_sockaddr(tern__addr *a, const struct sockaddr *sa, size_t len);

/* Into a socket address of `family` (AF_INET or AF_INET6; an IPv4 address
 * for an AF_INET6 socket is written IPv4-mapped). Returns its length, or 0
 * if the address cannot be written in that family (IPv6 into AF_INET). */
size_t tern__addr_to_sockaddr(const tern__addr *a, int family, struct sockaddr_storage *ss);

/* A stream address: not a network address but the name of one TCP
 * connection of a dispatcher (dispatch.h), so that the address table and
 * ENet above it treat a TCP path like any UDP source. It lies in the
 * discard-only prefix 100::/64 (RFC 6666) with port 0, which no datagram
 * from the network is taken from (the dispatcher drops such sources). */
void tern__addr_set_stream(tern__addr *a, uint32_t conn_id);
/* 1 (and *conn_id, if not NULL) if `a` is a stream address. */
int tern__addr_is_stream(const tern__addr *a, uint32_t *conn_id);
/* 1 if `a` lies in 100::/64 (whatever its port): never a real source. */
int tern__addr_is_discard(const tern__addr *a);

/* Orders addresses for racing (RFC 8305 §4): the family of the first
 * first, then the families alternate, each keeping its own order. Copies
 * at most `cap` into out; returns how many. */
size_t tern__addr_interleave(const tern__addr *in, size_t n, tern__addr *out, size_t cap);

/* "a.b.c.d:port" or "[v6]:port" into buf (TERN__ADDR_TEXT bytes suffice). */
void tern__addr_format(const tern__addr *a, char *buf, size_t cap);

/* An IP literal, IPv4 or IPv6 (with or without brackets), and a port.
 * Returns 0, or TERN_EADDR if `host` is not a literal. */
int tern__addr_parse_ip(tern__addr *a, const char *host, uint16_t port);

/* Splits "HOST:PORT", "[V6]:PORT" or, with default_port nonzero, "HOST",
 * "[V6]" or a bare IPv6 literal into host (brackets removed) and port.
 * Returns 0, or TERN_EINVAL for a missing or bad port or an unclosed
 * bracket, or TERN_EBUFSIZE if host does not fit in cap. */
int tern__addr_split(const char *text, uint16_t default_port, char *host, size_t cap,
                     uint16_t *port);

#endif
