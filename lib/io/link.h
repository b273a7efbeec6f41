/*
 * The link adapter: the only code in tern that includes <enet/enet.h>. It
 * owns an ENet host (client or relay), turns ENet events into tern__link
 * events, sends payloads on the channels spec/wire.md defines, and computes
 * when ENet next needs servicing so that callers never block past a resend
 * or ping that is due.
 *
 * Not thread-safe: one thread owns a link (ENet's rule).
 */
#ifndef TERN_LINK_H
#define TERN_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "io/addr.h"
#include "os/poller.h"
#include "io/migrate.h"
#include "wire/channels.h"

typedef struct tern__link tern__link;
typedef struct tern__link_peer tern__link_peer; /* an ENetPeer, opaque */

typedef enum tern__link_ev_type {
  TERN__LINK_EV_NONE = 0,
  TERN__LINK_EV_CONNECT,
  TERN__LINK_EV_RECEIVE,
  TERN__LINK_EV_DISCONNECT,
} tern__link_ev_type;

typedef struct tern__link_event {
  tern__link_ev_type type;
  tern__link_peer *peer;
  uint8_t channel;
  uint32_t data;            /* DISCONNECT: TERN__DISC_* of the peer */
  const uint8_t *payload;   /* RECEIVE: valid until tern__link_event_done() */
  size_t len;
  void *packet;             /* owned ENet packet, released by event_done */
} tern__link_event;

enum { TERN__LINK_RELIABLE = 1, TERN__LINK_UNRELIABLE = 2, TERN__LINK_UNSEQUENCED = 3 };

/* How an output of the messaging cores travels: copies unsequenced (so a
 * copy never waits behind a lost reliable packet), the rest as asked. */
static inline int tern__link_mode(uint8_t channel, int reliable) {
  if (channel == TERN__CH_COPY) return TERN__LINK_UNSEQUENCED;
  return reliable ? TERN__LINK_RELIABLE : TERN__LINK_UNRELIABLE;
}
enum { TERN__LINK_CLOSE_NOW = 0, TERN__LINK_CLOSE_LATER = 1, TERN__LINK_CLOSE_GRACEFUL = 2 };

/* The most peers a link may hold: ENet caps a host at 4,095, so a link
 * with more runs several hosts ("shards") behind its one socket. */
#define TERN__LINK_MAX_PEERS 262144

#ifdef TERN_TEST_HOOKS
/* Tests only: peers per ENet host instead of ENet's 4,095 (0: ENet's), so
 * that a test shows several shards with a handful of clients. */
extern size_t tern__link_hook_shard_peers;
#endif

/* Creates a host on tern's socket layer (dispatch.h). A relay binds
 * `bind_host:port` (an IP literal or a name; "::" is dual-stack, serving
 * IPv4 and IPv6 on one port; port 0 picks one) and accepts up to
 * `max_peers` (on ceil(max_peers / 4095) ENet hosts); a client (bind_host NULL) binds an ephemeral dual-stack port
 * (IPv4 only where the system has no IPv6) and has one peer. Returns 0,
 * TERN_EADDR (errno says why the bind failed), TERN_EINVAL, TERN_ERESOURCE. */
int tern__link_new(tern__link **out, const char *bind_host, uint16_t port, size_t max_peers);
void tern__link_free(tern__link *l);

/* 1 if the link's socket can reach IPv6 addresses. */
int tern__link_has_v6(const tern__link *l);
/* Resolves host (an IPv4 or IPv6 literal, brackets allowed, or a name with
 * A or AAAA records) to the address a connect would use: a name's first
 * address in RFC 6724 order, an IPv4 address on a network without IPv4
 * synthesized with the NAT64 prefix. Blocks on DNS (the client resolves
 * with io/resolver.h instead; this is for relays and tests). Returns 0 or
 * TERN_EADDR. */
int tern__link_resolve(tern__link *l, const char *host, uint16_t port, tern__addr *out);

/* Starts an ENet connection to host:port (resolved as above) or to a real
 * address. Returns 0 (with *peer set), TERN_EADDR (cannot resolve, or an
 * IPv6 address on a host without IPv6), TERN_ERESOURCE (no free slot). */
int tern__link_connect(tern__link *l, const char *host, uint16_t port, tern__link_peer **peer);
int tern__link_connect_addr(tern__link *l, const tern__addr *real, tern__link_peer **peer);
/* The same over a new TCP connection to `real` (spec/wire.md §12): ENet's
 * datagrams travel framed on it. Returns 0, TERN_EADDR (the connection
 * could not even start), TERN_ERESOURCE. A client may have several connects
 * under way at once (one per peer slot): the first to connect wins. */
int tern__link_connect_tcp(tern__link *l, const tern__addr *real, tern__link_peer **peer);

/* Queues `len` bytes on `channel`; ENet copies them. Returns 0,
 * TERN_ENOMEM, TERN_ECLOSED (peer not connected). */
int tern__link_send(tern__link *l, tern__link_peer *peer, uint8_t channel, const void *data,
                    size_t len, int mode);

/* Bytes of the packets tern__link_send() queued that ENet still holds:
 * waiting to go, or sent reliably and not yet acknowledged by the peer's
 * ENet (a peer that stops answering keeps them until ENet times it out). */
uint64_t tern__link_queued_bytes(const tern__link *l);

/* Waits up to timeout_ms for one event (0: poll). Returns 1 with *ev set,
 * 0 if none, TERN_EIO if the socket failed. */
int tern__link_service(tern__link *l, int timeout_ms, tern__link_event *ev);
void tern__link_event_done(tern__link_event *ev);

/* Bounds on what ENet reassembles (docs/socket-layer.md, "Fragments
 * before authentication"): no packet over `packet_max` bytes from any peer
 * (ENet's maximumPacketSize, 32 MB by default) and no more than four such
 * waiting per peer (maximumWaitingData, 32 MB by default), and, when `preauth_max` is
 * not 0, none over `preauth_max` and at most TERN__FRAG_GATE_STARTS
 * reassemblies (io/fraggate.h) from a peer not yet trusted. */
void tern__link_set_packet_limits(tern__link *l, size_t packet_max, size_t preauth_max);
/* Relay: the peer finished the handshake; the pre-authentication bound
 * no longer applies to it (until its slot's connection ends). */
void tern__link_peer_trust(tern__link *l, tern__link_peer *peer);
/* Datagrams dropped because they began a reassembly over those bounds. */
uint64_t tern__link_frag_refused(const tern__link *l);

/* Sends everything queued now. */
void tern__link_flush(tern__link *l);

/* Closes a peer with a TERN__DISC_* code. NOW drops it at once (a
 * disconnect is sent unreliably); LATER waits for queued packets to go out;
 * GRACEFUL waits for the peer's acknowledgement. A DISCONNECT event follows
 * for LATER and GRACEFUL, none for NOW. */
void tern__link_close(tern__link *l, tern__link_peer *peer, uint32_t code, int how);

void tern__link_peer_set_data(tern__link_peer *peer, void *data);
void *tern__link_peer_get_data(tern__link_peer *peer);

/* Sets ENet's ping interval and timeouts for a peer (ms). ENet pings when
 * no acknowledgement has arrived for the interval, whatever else arrives,
 * so tern keeps ENet's own ping long (an hour) and pings by itself. */
void tern__link_peer_set_timing(tern__link_peer *peer, uint32_t ping_ms, uint32_t timeout_min_ms,
                                uint32_t timeout_max_ms);

/* "a.b.c.d:port" or "[v6]:port" of the peer into buf (TERN__ADDR_TEXT). */
void tern__link_peer_name(const tern__link *l, const tern__link_peer *peer, char *buf, size_t cap);

/* Smoothed round-trip time ENet measured for the peer (or the seed it
 * started from), ms; at least 1. */
uint32_t tern__link_peer_rtt(const tern__link_peer *peer);

/* The peer's real address. Returns 0 or TERN_ENOENT. */
int tern__link_peer_addr(const tern__link *l, const tern__link_peer *peer, tern__addr *out);

/* Datagrams that are not ENet's (the NAT-timeout probes of
 * spec/keepalive.md, FULL, path datagrams): `fn` sees every datagram that
 * starts with FF FF (nothing ENet accepts does), with its real source
 * address, and returns 1 to take it or 0 to leave it (to the relay's
 * migration table; ENet never sees such a datagram). It is called from inside
 * tern__link_service(), and may call tern__link_send_raw(). */
typedef int (*tern__link_raw_fn)(void *ctx, const tern__addr *from, const uint8_t *data, size_t len);
void tern__link_set_raw_handler(tern__link *l, tern__link_raw_fn fn, void *ctx);

/* When a datagram from the peer last arrived (tern__now_ms() time; set at
 * connect). Any datagram counts: data, acknowledgements, pings. */
uint64_t tern__link_peer_heard_ms(const tern__link *l, const tern__link_peer *peer);

/* Sends an ENet ping now: one reliable 8-byte datagram, acknowledged by the
 * peer; if it stays unacknowledged, ENet's timeouts end the link. tern's
 * keepalive (spec/keepalive.md, "The live link"). */
void tern__link_peer_ping(tern__link *l, tern__link_peer *peer);

/* Sends one datagram from the host's socket, outside ENet. Returns 0,
 * TERN_EADDR (no IPv6 here) or TERN_EIO. */
int tern__link_send_raw(tern__link *l, const tern__addr *to, const void *data, size_t len);

/* Milliseconds until ENet must be serviced even if nothing arrives (a
 * resend, a timeout check, a ping, an ack to send), or -1 if never. */
int tern__link_next_timeout_ms(tern__link *l);

/* A relay with every slot taken answers CONNECTs with FULL (dispatch.h). */
void tern__link_set_full_answer(tern__link *l, uint32_t retry_ms);
/* New connections refused for want of a slot, since the link was made. */
uint64_t tern__link_refused(const tern__link *l);
/* Relay: the cookie policy (TERN__COOKIES_*, dispatch.h) and its counters. */
void tern__link_set_cookies(tern__link *l, int mode);
void tern__link_cookie_counts(const tern__link *l, uint64_t *sent, uint64_t *connects, uint64_t *bad);

/* --- migration (spec/wire.md §11; dispatch.h) ---------------------------- */

/* Relay: lets the peer's session move to a new address. 0 or TERN_E*. */
int tern__link_peer_path_add(tern__link *l, const tern__link_peer *peer, const tern__path_keys *keys);
/* Relay: `fn` learns that a peer's session moved. */
typedef void (*tern__link_move_fn)(void *ctx, tern__link_peer *peer, const tern__addr *from,
                                   const tern__addr *to);
void tern__link_set_move_handler(tern__link *l, tern__link_move_fn fn, void *ctx);
/* After a move: what the peer has in flight is resent at once (ENet's
 * timers, backed off on the dead path, would wait seconds). */
void tern__link_peer_kick(tern__link_peer *peer);
/* Relay: sessions moved, CHALLENGEs and rejected path datagrams so far. */
void tern__link_mig_stats(const tern__link *l, tern__mig_stats *st);
/* Client: a second socket to try a new path from, datagrams sent from it,
 * and making it the link's socket (or giving it up). */
int tern__link_cand_open(tern__link *l);
int tern__link_cand_send(tern__link *l, const tern__addr *to, const void *data, size_t len);
void tern__link_cand_commit(tern__link *l);
void tern__link_cand_abort(tern__link *l);
/* --- TCP (spec/wire.md §12) ---------------------------------------------- */

/* Relay: accepts TCP connections on `port` of the bound address too.
 * Returns 0 (*bound: the port), TERN_EADDR (errno), TERN_EEXIST, TERN_EINVAL. */
int tern__link_listen_tcp(tern__link *l, uint16_t port, uint16_t *bound);
/* An address as text for logs ("tcp:<peer>" for a TCP path). */
void tern__link_addr_name(const tern__link *l, const tern__addr *a, char *buf, size_t cap);
/* Relay: TCP connections accepted so far, and open now. */
void tern__link_tcp_counts(const tern__link *l, uint64_t *accepted, uint64_t *open);
/* 1 if the peer's path is a TCP connection. */
int tern__link_peer_is_tcp(const tern__link *l, const tern__link_peer *peer);
/* 0 if the peer's TCP connection closed (nothing it sends arrives any
 * more); 1 otherwise. */
int tern__link_peer_alive(const tern__link *l, const tern__link_peer *peer);
/* Client: the peer's datagrams go to `to` (a UDP address) from now on,
 * and its TCP connection, if it had one, is closed. 0 or TERN_E*. */
int tern__link_peer_move(tern__link *l, tern__link_peer *peer, const tern__addr *to);

/* The poller that holds the link's sockets (UDP, TCP, a candidate; the
 * dispatcher's, dispatch.h): ready when any of them is. It does not
 * change for the link's life; the link owns it. */
tern__poller *tern__link_poller(const tern__link *l);

/* The bound UDP port. */
uint16_t tern__link_port(const tern__link *l);

#endif
