/*
 * The bench client's view of a transport: N named clients of one relay
 * that send messages to each other by name. Each transport (TCP, raw ENet,
 * and later tern through include/tern/tern.h) fills one of these tables;
 * benchclient.c never looks behind it.
 *
 * A tern transport maps naturally: open = tern_client_new + _connect for
 * each name and service until TERN_EV_CONNECTED; send = tern_client_send;
 * poll = poll() on every tern_client_fd with the smallest
 * tern_client_timeout_ms, then tern_client_service(c, 0) and
 * tern_client_next_event for each client, calling on_message for
 * TERN_EV_MESSAGE; close = tern_client_free.
 */
#ifndef BENCH_TRANSPORT_H
#define BENCH_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

typedef struct bench_transport_config {
  const char *relay;        /* "IP:PORT" of the relay */
  int nclients;             /* how many clients this process runs */
  const char *const *names; /* names[i]: the user name of client i */
  int connect_timeout_ms;   /* open() fails after this long */
  const char *relay_key;    /* tern: the relay's public key, 64 hex digits */
  /* Optional first message of client 0 (first_to NULL: none), sent by
   * open() as early as the transport allows: tern queues it right after
   * tern_client_connect(), so it rides in the handshake as early data, as
   * it does for an app that sends while connecting; TCP and ENet send it
   * once their connection can carry it (after the key exchange, after
   * ENet's connect and BP_HELLO). */
  const char *first_to;
  const void *first_body;
  size_t first_len;
  int no_copies;            /* tern: no redundant copies (tern_client_config.no_copies) */
} bench_transport_config;

/* Called once per message received by client `client`; `from` is the
 * sender's name. The pointers are valid only during the call. */
typedef void (*bench_on_message)(void *arg, int client, const char *from, const uint8_t *body,
                                 size_t len);

typedef struct bench_transport {
  const char *name;
  /* Creates and connects every client and introduces it to the relay by
   * name. Returns an opaque state, or NULL after printing why. */
  void *(*open)(const bench_transport_config *cfg);
  /* Sends `len` bytes from client `client` to user `to`, reliably and in
   * order per destination, and pushes them towards the socket without
   * waiting for the next poll. The body is copied. Returns 0 or -1. */
  int (*send)(void *st, int client, const char *to, const void *body, size_t len);
  /* Waits at most timeout_ms (0: only what is ready) for traffic, runs the
   * transport's timers and calls fn for each message received. Returns 0,
   * or -1 if a client lost its link. */
  int (*poll)(void *st, int timeout_ms, bench_on_message fn, void *arg);
  /* Disconnects and frees everything. */
  void (*close)(void *st);
  /* Optional (NULL: not known). When client `client` started connecting
   * and when the relay first confirmed it had accepted one of its messages
   * (tern: TERN_EV_SENT), as bp_now_ns() stamps, and the relay's own stamp
   * of that acceptance as a bp_unix_ns() value (tern: the SERVER_ACK's ts,
   * Unix ms); 0 if that has not happened. Without it benchclient takes the
   * return of the client's greeting to itself through the relay, which is
   * the same round trip, and the relay's --accept-log. */
  void (*connect_times)(void *st, int client, int64_t *start_ns, int64_t *acked_ns,
                        int64_t *relay_accept_unix_ns);
} bench_transport;

extern const bench_transport bench_transport_tcp;
extern const bench_transport bench_transport_enet;
extern const bench_transport bench_transport_tern;

#endif
