/*
 * The relay's probe service, sans-I/O (spec/keepalive.md, "Probe
 * service"). It keeps the probe keys of live sessions, answers each valid
 * REQUEST at once with an ACK and, wait_ms later, with one REPLY to the
 * address the request came from.
 *
 * It cannot be used to amplify or reflect traffic: a request must carry
 * the tag of a key that the relay gave to an authenticated session; every
 * answer is half the size of a request, and a request gets at most one ACK
 * and one REPLY, so the bytes sent never exceed the bytes received; and
 * each source IPv4 address has a token bucket of requests and a cap on its
 * pending probes. Time is passed in; the caller supplies the random id and
 * key of each session.
 */
#ifndef TERN_PROBESVC_H
#define TERN_PROBESVC_H

#include <stddef.h>
#include <stdint.h>

#include "io/addr.h"

#include "wire/probe.h"

typedef struct tern__psvc tern__psvc;

/* Completed probes remembered per key: a REQUEST that repeats the nonce of
 * one of the last TERN__PSVC_RECENT REPLYs sent under its key is a replay
 * and gets no answer. Older nonces are forgotten; answering one again
 * still sends fewer bytes than the replay brought. */
#define TERN__PSVC_RECENT 8

typedef struct tern__psvc_config {
  size_t max_keys;          /* sessions with a probe key at once (4096) */
  size_t max_pending;       /* probes waiting for their REPLY, in all (4096) */
  size_t per_key_pending;   /* ... per session (8); a new request beyond that
                               replaces the session's oldest pending probe */
  size_t per_ip_pending;    /* ... per source: an IPv4 address or an IPv6 /64
                               (256: a carrier NAT puts many clients behind
                               one address) */
  uint32_t ip_burst;        /* requests a source address may send back to back (64) */
  uint32_t ip_refill_ms;    /* then one more every this many ms (100) */
  uint32_t min_wait_ms;     /* shortest silence a request may ask for (1000) */
  uint32_t max_wait_ms;     /* longest (1200000, 20 minutes) */
} tern__psvc_config;

void tern__psvc_config_default(tern__psvc_config *cfg);

typedef struct tern__psvc_stats {
  uint64_t requests;      /* REQUESTs that verified */
  uint64_t acks;          /* ACKs sent */
  uint64_t replies;       /* REPLYs sent */
  uint64_t rejected;      /* malformed, unknown id, bad tag, bad wait */
  uint64_t limited;       /* refused by the per-address or per-key limits */
} tern__psvc_stats;

/* Returns 0 or TERN_ENOMEM / TERN_EINVAL. */
int tern__psvc_new(tern__psvc **out, const tern__psvc_config *cfg);
void tern__psvc_free(tern__psvc *s);

/* Gives session `conn` the probe key `key` named `id` (both random, from
 * the caller). A session has at most one key; a second call replaces it.
 * Returns 0, or TERN_ERESOURCE when max_keys sessions have keys. */
int tern__psvc_add_key(tern__psvc *s, uint64_t conn, const uint8_t id[TERN__PROBE_ID_BYTES],
                       const uint8_t key[TERN__PROBE_KEY_BYTES]);
/* The session ended: its key and its pending probes are forgotten. */
void tern__psvc_remove_key(tern__psvc *s, uint64_t conn);

/* A datagram from `from` (IPv4 or IPv6) at now_ms. Returns 0 if it is not
 * a probe datagram (the caller hands it to ENet), 1 if it was taken; then
 * if *answer_len > 0, answer[0..*answer_len) goes back to `from`. */
int tern__psvc_input(tern__psvc *s, const tern__addr *from, const uint8_t *data, size_t len,
                     uint64_t now_ms, uint8_t *answer, size_t cap, size_t *answer_len);

/* A REPLY that is due at now_ms: returns 1 and the datagram and its
 * destination, or 0 if none is due. cap must be >= TERN__PROBE_ANSWER_BYTES. */
int tern__psvc_next_reply(tern__psvc *s, uint64_t now_ms, tern__addr *to,
                          uint8_t *out, size_t cap, size_t *len);

/* Milliseconds until a REPLY is due, or -1. */
int tern__psvc_timeout(const tern__psvc *s, uint64_t now_ms);

/* Probes waiting for their REPLY. */
size_t tern__psvc_pending(const tern__psvc *s);

void tern__psvc_get_stats(const tern__psvc *s, tern__psvc_stats *st);

#endif
