/*
 * Name resolution that never blocks (c-ares): the relay's endpoints are
 * looked up in the background, their sockets in an epoll set of the
 * resolver's own (one descriptor for the client's loop to watch), while the
 * client's lock is free for sends from other threads. Literals need no
 * lookup. The result is ordered for racing (RFC 8305 §4: families
 * alternate, starting with the one the resolver sorted first, RFC 6724),
 * and IPv4 addresses this host cannot route are synthesized with the NAT64
 * prefix learned from ipv4only.arpa (RFC 7050; looked up the same way).
 *
 * Not thread-safe: the client's thread, under its lock.
 */
#ifndef TERN_RESOLVER_H
#define TERN_RESOLVER_H

#include <stddef.h>
#include <stdint.h>

#include "io/addr.h"
#include "os/poller.h"

typedef struct tern__resolver tern__resolver;

/* Most endpoints one lookup takes, and addresses it keeps per endpoint. */
#define TERN__RESOLVE_ENDPOINTS 8
#define TERN__RESOLVE_PER_NAME 8

/* A resolver using the system's configuration (/etc/resolv.conf, the hosts
 * file first), or `servers` if not NULL ("IP[:PORT],...", c-ares's CSV
 * form, copied; for tests and apps with DNS of their own). Each query
 * waits `timeout_ms` per try, 2 tries per server. The c-ares channel is
 * made by the first lookup that needs one (a name, or ipv4only.arpa),
 * except with `servers`, which are checked here. Returns 0, TERN_EINVAL
 * (bad servers), TERN_ENOMEM, TERN_ERESOURCE. */
int tern__resolver_new(tern__resolver **out, const char *servers, uint32_t timeout_ms);
/* Cancels what is under way. NULL is accepted. */
void tern__resolver_free(tern__resolver *r);

/* The resolver's poller (its own; nest it in the owner's): ready when the
 * resolver has something to process. */
tern__poller *tern__resolver_poller(const tern__resolver *r);

/* Starts looking up `n` endpoints (hosts[i]: a name or an IP literal, no
 * brackets; ports[i]) and cancels a lookup under way. `v6`: this host can
 * reach IPv6 (else only A records are asked for). Returns 0 or TERN_EINVAL. */
int tern__resolver_start(tern__resolver *r, const char *const *hosts, const uint16_t *ports,
                         size_t n, int v6);
/* Processes what is ready and what timed out. */
void tern__resolver_process(tern__resolver *r);
/* ms until the resolver must be processed even if nothing arrives, or -1
 * (nothing under way). */
int tern__resolver_timeout(const tern__resolver *r);
/* The result of the last start: how many addresses were copied to out (in
 * racing order), 0 while the lookup is under way, TERN_EADDR if it ended
 * with no address (every name failed, or nothing was started), or
 * TERN_ENOMEM / TERN_ERESOURCE if it ended with no address and the c-ares
 * channel a name needed could not be made. */
int tern__resolver_result(const tern__resolver *r, tern__addr *out, size_t cap);
/* Drops the lookup under way, if any. */
void tern__resolver_cancel(tern__resolver *r);

#endif
