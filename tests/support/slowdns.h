/*
 * A tiny DNS server on 127.0.0.1 for the resolution tests: it answers every
 * A query with one address (or NXDOMAIN) and every other query with no
 * data, each answer `delay_ms` after its query came, from a thread of its
 * own. What a slow or broken carrier DNS looks like to a client.
 */
#ifndef TERN_TEST_SLOWDNS_H
#define TERN_TEST_SLOWDNS_H

#include <stdint.h>

typedef struct slowdns slowdns;

/* Starts it; *port gets its UDP port. `ipv4` (host order) is the answer,
 * 0 for NXDOMAIN. */
slowdns *slowdns_start(uint32_t delay_ms, uint32_t ipv4, uint16_t *port);
/* Queries received so far. */
unsigned slowdns_queries(slowdns *s);
void slowdns_stop(slowdns *s);

#endif
