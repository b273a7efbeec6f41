/*
 * The TCP connections of a dispatcher (docs/socket-layer.md, "TCP
 * fallback"; spec/wire.md §12): a relay's listener and the connections it
 * accepts, or a client's own connections to a relay. Each connection is
 * named by a 32-bit id (slot and generation, so a reused slot is never
 * taken for its previous connection) that the dispatcher turns into a
 * stream address (addr.h), so a TCP path has a handle like any UDP source.
 *
 * Datagrams go in and out framed (tcpframe.h). Sending never blocks: a
 * connection that backs up holds at most TERN__STREAM_TX_MAX bytes and
 * drops whole datagrams past that, as a full UDP path would. A connection
 * that closes, fails or breaks the framing is gone; sends to it are lost.
 *
 * The dispatcher owns the poller (os/poller.h); connections and the
 * listener are registered in it with their tags (below), and the
 * dispatcher hands their events back to tern__streams_event(). Not
 * thread-safe (the dispatcher's thread).
 */
#ifndef TERN_STREAMS_H
#define TERN_STREAMS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "io/addr.h"
#include "os/poller.h"

typedef struct tern__streams tern__streams;

/* Poller tags: a connection's is its id (below 2^32); the listener's: */
#define TERN__STREAM_TAG_LISTEN ((uint64_t)1 << 32)
/* Most bytes waiting to be written on one connection. */
#define TERN__STREAM_TX_MAX (256 * 1024)

typedef struct tern__streams_stats {
  uint64_t accepted, refused;  /* relay: connections accepted, refused (table full,
                                  or no descriptor: the listener then rests until
                                  a connection closes or the next sweep) */
  uint64_t opened;             /* client: connections started */
  uint64_t closed;             /* connections that ended, for any reason */
  uint64_t bad_framing;        /* ... of them because the stream was not framed right */
  uint64_t tx_dropped;         /* datagrams dropped: the connection was backed up */
  size_t open;                 /* connections now */
} tern__streams_stats;

/* A table of at most `max` connections (at most 65,535) registered in
 * `poller` (the dispatcher's; it outlives the table). Returns 0 or
 * TERN_ENOMEM. */
int tern__streams_new(tern__streams **out, tern__poller *poller, size_t max);
/* Closes every connection and the listener. */
void tern__streams_free(tern__streams *s);

/* Relay: listens on `bind` (an IPv6 any address is dual-stack, as for UDP).
 * Returns 0 (and the bound port in *port), TERN_EEXIST (listening already),
 * TERN_EADDR (bind failed; errno kept). */
int tern__streams_listen(tern__streams *s, const tern__addr *bind, uint16_t *port);

/* Client: starts a connection to `to` (it completes in the background;
 * what is sent meanwhile waits for it). Returns 0 with *id, TERN_ERESOURCE
 * (table full), TERN_EIO (errno says why). */
int tern__streams_connect(tern__streams *s, const tern__addr *to, uint32_t *id);

/* A poller event (TERN__POLL_IN / _OUT) for one of the table's tags. */
void tern__streams_event(tern__streams *s, uint64_t tag, unsigned events, uint64_t now_ms);

/* The next whole datagram any connection has buffered: its length (copied
 * into buf, at most TERN__TCPF_MAX bytes) and *id, or 0 if none. */
size_t tern__streams_next(tern__streams *s, uint32_t *id, uint8_t *buf, size_t cap);
/* 1 if a whole datagram is buffered. */
int tern__streams_ready(const tern__streams *s);

/* Sends one datagram on connection id. Returns 0 (written or queued),
 * TERN_EAGAIN (the connection is backed up: dropped), TERN_ENOENT (no such
 * connection: dropped). */
int tern__streams_send(tern__streams *s, uint32_t id, const struct iovec *iov, size_t n);

/* 1 if connection id is open (or still connecting). */
int tern__streams_alive(const tern__streams *s, uint32_t id);
/* The address of the other end of connection id: 0 or TERN_ENOENT. */
int tern__streams_remote(const tern__streams *s, uint32_t id, tern__addr *out);
void tern__streams_close(tern__streams *s, uint32_t id);

/* Closes connections opened more than max_age_ms ago for which
 * keep(ctx, id) says 0 (no handle uses them). */
void tern__streams_sweep(tern__streams *s, uint64_t now_ms, uint64_t max_age_ms,
                         int (*keep)(void *ctx, uint32_t id), void *ctx);

/* 1 if there is a listener or a connection (anything to poll). */
int tern__streams_any(const tern__streams *s);
void tern__streams_stats_get(const tern__streams *s, tern__streams_stats *st);

#endif
