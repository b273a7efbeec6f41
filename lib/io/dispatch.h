/*
 * The dispatcher: the real UDP socket under one or more ENet hosts
 * (docs/socket-layer.md). Each ENet host created while a dispatcher is
 * armed on the thread gets a *virtual* socket: an ENetSocket value below -1
 * that enet_platform.c recognises, whose datagrams come from and go to the
 * dispatcher's real socket, with real addresses translated to handles of
 * the address table (addrtab.h) and back.
 *
 * A relay's real socket is, on Linux, two sockets bound to its address in
 * one SO_REUSEPORT group, divided by a BPF program: ENet CONNECTs (which a
 * spoofed flood is made of) reach the first, everything else the second,
 * which is read first; both are read in recvmmsg batches, and COOKIEs go
 * in sendmmsg batches (docs/socket-layer.md, spec/wire.md §13).
 *
 * A datagram from the real socket is, in order: if it starts with FF FF
 * (not ENet's), offered to the raw handler (probes, FULL), then to the
 * migration table (path datagrams); else given to the virtual socket that owns its
 * source's handle, or, from an unknown source, given a new handle if it is
 * an ENet CONNECT and the dispatcher accepts new sources (a relay); anything
 * else is dropped and counted.
 *
 * Threads: a dispatcher and its virtual sockets are used by one thread at a
 * time (its link's owner, ENet's rule). Different dispatchers may be used by
 * different threads at once: the registry of virtual sockets is the only
 * shared state, and it is locked.
 */
#ifndef TERN_DISPATCH_H
#define TERN_DISPATCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "io/addr.h"
#include "io/migrate.h"
#include "io/streams.h"
#include "os/poller.h"

typedef struct tern__disp tern__disp;

/* Sees every datagram starting with FF FF (no ENet datagram does): probes,
 * FULL, path datagrams. Returns 1 to take it, 0 to leave it (a relay's
 * migration table then looks at it). May call tern__disp_send_raw(). */
typedef int (*tern__disp_raw_fn)(void *ctx, const tern__addr *from, const uint8_t *data, size_t len);

typedef struct tern__disp_stats {
  uint64_t rx, tx;             /* datagrams */
  uint64_t rx_unknown;         /* dropped: unknown source, not a CONNECT */
  uint64_t rx_queue_full;      /* dropped: another host's queue was full */
  uint64_t new_refused;        /* CONNECTs dropped: no host had room */
  uint64_t tx_unreachable;     /* sends the network refused (no route, filtered) */
  uint64_t hints;              /* path HINTs sent to unknown sources */
  uint64_t cookies_sent;       /* relay: COOKIEs sent to CONNECTs of unproven sources */
  uint64_t cookie_connects;    /* relay: handles made for CONNECTs with a valid cookie */
  uint64_t cookies_bad;        /* relay: wrapped CONNECTs with a wrong or stale cookie */
  uint64_t cookies_used;       /* client: COOKIEs taken (a CONNECT sent again wrapped) */
  tern__streams_stats tcp;     /* the TCP side */
} tern__disp_stats;

/* Opens the real socket. `bind` NULL: a client's ephemeral socket, dual-stack
 * (AF_INET6 with IPV6_V6ONLY off) where the system allows, else IPv4. Else a
 * relay's: an IPv6 any address ("::") binds dual-stack, another IPv6
 * address IPv6 alone, an IPv4 address IPv4 alone; `accept_new` lets unknown
 * sources connect. Returns 0, TERN_EADDR (bind failed; errno kept),
 * TERN_ERESOURCE, TERN_ENOMEM. */
int tern__disp_new(tern__disp **out, const tern__addr *bind, int accept_new);
/* Closes the real socket. Its virtual sockets must be closed already
 * (enet_host_destroy closes them). */
void tern__disp_free(tern__disp *d);

/* The poller that holds the dispatcher's real sockets (UDP, a candidate,
 * TCP), owned by the dispatcher: its owner nests it in a poller of its own
 * (a client) or hands out its descriptors (a relay). */
tern__poller *tern__disp_poller(const tern__disp *d);
uint16_t tern__disp_port(const tern__disp *d);
/* 1 if the socket can reach IPv6 addresses. */
int tern__disp_has_v6(const tern__disp *d);
void tern__disp_stats_get(const tern__disp *d, tern__disp_stats *st);

void tern__disp_set_raw_handler(tern__disp *d, tern__disp_raw_fn fn, void *ctx);

/* A CONNECT that finds every virtual socket full is answered with a FULL
 * datagram (spec/wire.md §10) asking to retry after retry_ms plus a random
 * 0..retry_ms; 0 (the default) drops it in silence. */
void tern__disp_set_full_answer(tern__disp *d, uint32_t retry_ms);
/* When a CONNECT from a new UDP source must first prove that the source
 * receives there (spec/wire.md §13): TERN__COOKIES_AUTO (the default)
 * while TERN__COOKIES_AUTO_PENDING or more handles wait for their first
 * connection, ALWAYS, or NEVER. A relay's dispatcher only. */
enum { TERN__COOKIES_AUTO = 0, TERN__COOKIES_ALWAYS = 1, TERN__COOKIES_NEVER = 2 };
#define TERN__COOKIES_AUTO_PENDING 64
void tern__disp_set_cookies(tern__disp *d, int mode);
/* Sends a datagram outside ENet. Returns 0, TERN_EADDR (the socket cannot
 * reach that family), TERN_EIO. */
int tern__disp_send_raw(tern__disp *d, const tern__addr *to, const void *data, size_t len);

/* The next enet_socket_create() on this thread makes a virtual socket of d
 * (then disarms). tern__disp_disarm() cancels. */
void tern__disp_arm(tern__disp *d);
void tern__disp_disarm(void);

/* A handle for datagrams to and from `a`, owned by virtual socket `vsock`,
 * held once for the caller (a client's connect; the address's existing
 * handle if it has one). Returns 0, TERN_EADDR (this socket cannot reach
 * the family), TERN_ERESOURCE, TERN_ENOMEM. */
int tern__disp_handle_new(tern__disp *d, int vsock, const tern__addr *a, uint32_t *handle,
                          uint16_t *gen);
/* The real address behind a handle; TERN_ENOENT if it is gone. */
int tern__disp_handle_addr(const tern__disp *d, uint32_t handle, uint16_t gen, tern__addr *out);
/* A connection holds the handle (the relay's CONNECT event): 0 or TERN_ENOENT. */
int tern__disp_handle_hold(tern__disp *d, uint32_t handle, uint16_t gen);
/* A connection that held the handle ended. */
void tern__disp_handle_release(tern__disp *d, uint32_t handle, uint16_t gen);
/* Frees handles no connection held within 60 s (CONNECTs ENet did not
 * take, or whose handshake never finished). */
void tern__disp_sweep(tern__disp *d, uint64_t now_ms);

/* Client: a connect's CONNECT goes again a few times while nothing
 * answers it, spread over the first 150 ms after each send (a relay under
 * a flood loses CONNECTs in bursts: spec/wire.md §13). tern__disp_next_ms()
 * is the time until the next copy is due (-1: none), tern__disp_tick()
 * sends the copies due. No-ops on a relay's dispatcher. */
int tern__disp_next_ms(const tern__disp *d);
void tern__disp_tick(tern__disp *d);

/* Datagrams read from the real socket and waiting in a virtual socket's
 * queue for its host to be serviced. */
size_t tern__disp_queued(const tern__disp *d);
/* Waits up to timeout_ms for the real socket to be readable. Returns 1, 0
 * (timeout or a signal), -1. */
int tern__disp_wait(tern__disp *d, int timeout_ms);

/* --- migration (spec/wire.md §11) ---------------------------------------- */

/* Relay: a session's path keys, so that it can move to a new address. The
 * registration ends with the handle. Returns 0, TERN_EEXIST, TERN_ENOMEM,
 * TERN_EINVAL (not a relay's dispatcher). */
int tern__disp_path_add(tern__disp *d, uint32_t handle, uint16_t gen, const tern__path_keys *keys);
/* Relay: called when a session moved (handle now at `to`, was at `from`). */
typedef void (*tern__disp_move_fn)(void *ctx, uint32_t handle, uint16_t gen, const tern__addr *from,
                                   const tern__addr *to);
void tern__disp_set_move_handler(tern__disp *d, tern__disp_move_fn fn, void *ctx);
void tern__disp_mig_stats(const tern__disp *d, tern__mig_stats *st);

/* Client: opens a second real socket (a new port, and the source address
 * the routing now picks) to try a path from. Returns 0, TERN_ERESOURCE. */
int tern__disp_cand_open(tern__disp *d);
/* Client: sends from the candidate socket (or the current one if none is
 * open). Returns 0, TERN_EADDR, TERN_EIO. */
int tern__disp_cand_send(tern__disp *d, const tern__addr *to, const void *data, size_t len);
/* Client: the candidate socket becomes the one ENet uses; the old one is
 * closed. No-op without a candidate. */
void tern__disp_cand_commit(tern__disp *d);
/* Client: closes the candidate socket. */
void tern__disp_cand_abort(tern__disp *d);

/* --- TCP (spec/wire.md §12; streams.h) ------------------------------------ */

/* Relay: accepts TCP connections on `bind` too; each carries framed
 * datagrams and gets a handle like a UDP source. Returns 0 (*port: the
 * bound port), TERN_EEXIST, TERN_EADDR (errno), TERN_EINVAL (a client's). */
int tern__disp_listen_tcp(tern__disp *d, const tern__addr *bind, uint16_t *port);
/* Client: starts a TCP connection to `to`; *stream is the address to make
 * a handle for (tern__disp_handle_new). Returns 0, TERN_ERESOURCE, TERN_EIO. */
int tern__disp_tcp_connect(tern__disp *d, const tern__addr *to, tern__addr *stream);
/* 0 if the handle is gone or its TCP connection closed, else 1. */
int tern__disp_handle_alive(const tern__disp *d, uint32_t handle, uint16_t gen);
/* Client: the handle's datagrams go to `to` from now on (a session moved
 * from TCP back to UDP: the TCP connection is closed). 0 or TERN_E*. */
int tern__disp_handle_move(tern__disp *d, uint32_t handle, uint16_t gen, const tern__addr *to);
/* The address as text for logs: "tcp:<peer>" for a stream address. */
void tern__disp_addr_name(const tern__disp *d, const tern__addr *a, char *buf, size_t cap);

/* How many connections virtual socket `vsock` may hold (its host's peer
 * count): new sources go to the socket with the most room. */
void tern__disp_set_capacity(int vsock, size_t max);

/* --- for enet_platform.c ------------------------------------------------ */

/* A virtual socket for the armed dispatcher, or 0 if none is armed. */
int tern__vsock_open(void);
int tern__vsock_is(int sock);
tern__disp *tern__vsock_disp(int sock);
/* Sends the gathered buffers to the handle. Returns the bytes sent (also
 * when the datagram was dropped because the handle is gone or the network
 * refused it: UDP loses datagrams, ENet resends), 0 if the socket would
 * block, -1 on a socket failure. */
int tern__vsock_send(int sock, uint32_t handle, uint16_t gen, const struct iovec *iov, size_t n);
/* The next datagram for this virtual socket into buf: its length (and
 * *handle, *gen), 0 if none is waiting, -1 on a socket failure. */
int tern__vsock_recv(int sock, uint32_t *handle, uint16_t *gen, void *buf, size_t cap);
/* Waits up to timeout_ms for a datagram that may be this socket's. Returns
 * 1 (something to receive), 0 (timeout), -2 (interrupted), -1 (failure). */
int tern__vsock_wait(int sock, uint32_t timeout_ms);
uint16_t tern__vsock_port(int sock);
/* Datagrams waiting in this virtual socket's queue (read from the real
 * socket for its host): its host has input without reading the socket. */
size_t tern__vsock_queued(int sock);
void tern__vsock_close(int sock);

#endif
