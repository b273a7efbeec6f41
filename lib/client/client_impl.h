/*
 * The client's insides, shared by its four files and nothing else:
 *   client.c     the public API: lifecycle, sending, events, the service loop
 *   conn.c       the connection: ENet glue, handshake, sealing, timers
 *   keepalive.c  the keepalive shell: probe sockets and the live link's timing
 *   migrate.c    moving the session to a new path (spec/wire.md §11)
 * around the sans-I/O cores (ccore.c for messaging, kalearn.c for the
 * keepalive, wire/session.c for the handshake and sealing).
 *
 * Locking: every public call takes c->mu. tern_client_service() drops it
 * only while it waits on its poller (os/poller.h), so ENet is never used by
 * two threads at once; a send() from another thread signals the wake-up
 * (os/wake.h) to end that wait.
 * Every function declared here expects c->mu held.
 */
#ifndef TERN_CLIENT_IMPL_H
#define TERN_CLIENT_IMPL_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "base/abi.h"
#include "base/log.h"
#include "client/backoff.h"
#include "client/ccore.h"
#include "io/clock.h"
#include "store/cstore.h"
#include "wire/errcode.h"
#include "wire/frame.h"
#include "wire/full.h"
#include "wire/path.h"
#include "wire/reset.h"
#include "client/kalearn.h"
#include "client/race.h"
#include "io/link.h"
#include "io/resolver.h"
#include "os/poller.h"
#include "os/sock.h"
#include "os/wake.h"
#include "wire/session.h"
#include "wire/token.h"
#include "tern/tern.h"

/* The app's log (tern_client_config.log): level 0 error .. 3 debug. */
#define cl_log(c, level, ...) tern__logf((c)->cfg.log, (c)->cfg.log_ctx, level, __VA_ARGS__)

/* Tags in the client's poller (c->poller). */
#define TERN__CL_TAG_LINK 0u
#define TERN__CL_TAG_WAKE 1u
#define TERN__CL_TAG_PROBE 2u /* + the probe's slot, up to TERN__KA_SLOTS */
#define TERN__CL_TAG_RESOLVER (2u + TERN__KA_SLOTS)

/* How long a PROBE_KEY may take to come after it was asked for. */
#define KEY_WAIT_MS 10000

/* Room for the largest frame batch plus sealing overhead. */
#define CLIENT_BUF (TERN_MESSAGE_MAX + 4096)

/* An attempt whose ENet connect has had no answer for this long is given up
 * (TERN_ETIMEDOUT) before handshake_timeout_ms, and the first attempt in a
 * row that ends unanswered (by this or by handshake_timeout_ms) is retried
 * at once, without the backoff (spec/handshake.md, 5.1). The link already
 * resends the connect request every quarter second or so; a fresh attempt
 * also gets past a relay that lost the first one's state. */
#define CONNECT_SILENCE_MS 3000

/* DATA that arrives before WELCOME. The relay sends WELCOME as soon as it
 * has read HELLO, and its answers to early data (SERVER_ACK, BUSY, FAILED)
 * after its store commit, on the chat channels: if ENet has to resend a
 * lost WELCOME, they arrive first. ENet has acknowledged them, so dropping
 * them would leave the early messages unanswered until the resend timer
 * (seconds). They are kept, bounded, and opened once the session is. */
#define STASH_PACKETS 32
#define STASH_BYTES 512

typedef struct stashed {
  uint8_t channel;
  uint16_t len;
  uint8_t data[STASH_BYTES];
} stashed;

typedef enum client_state {
  C_IDLE = 0,      /* no link */
  C_RESOLVING,     /* looking up the relay's names (no link yet) */
  C_LINKING,       /* ENet connect in progress */
  C_HANDSHAKE,     /* HELLO sent, waiting for WELCOME */
  C_OPEN,          /* session open */
  C_CLOSING,       /* tern_client_disconnect(): closing after queued data */
} client_state;

/* Shell events that found no memory, queued again on the next service. */
#define SHELL_PENDING_MAX 8

struct tern_client {
  struct {
    tern_event_type type;
    int error;
    uint64_t retry_ms;
  } shell_pending[SHELL_PENDING_MAX];
  unsigned n_shell_pending;
  int nomem;                     /* this service call met TERN_ENOMEM */
  tern_client_config cfg;       /* strings point into the copies below */
  char *relay_host;
  char *dns_servers;
  /* The relay's endpoints, parsed from relay_host once (resolved anew for
   * every attempt, in the background: tern__resolver). */
  char ep_host[TERN__RACE_ADDRS][256];
  uint16_t ep_port[TERN__RACE_ADDRS];
  size_t nep;
  size_t ep_first;              /* the endpoint tried first (moves on after a drain) */
  tern__resolver *res;
  char user_req[TERN_USER_MAX + 1];
  uint8_t token[TERN__TOKEN_MAX]; /* the backend token's bytes, sent in HELLO */
  size_t token_len;               /* 0: none */
  char user[TERN_USER_MAX + 1]; /* assigned by the relay */
  pthread_mutex_t mu;
  tern__poller *poller;         /* the link's and the resolver's nested, the
                                   wake-up, the probe sockets: tags below */
  tern__wake wake;
  /* 1 from the first wake() after the service's last drain of `wake` to
   * that drain: the wake-ups between are one write (the descriptor is
   * readable already), not one per send. The drain clears it under `mu`
   * before the service looks at anything, so whatever a caller queued
   * before it is seen by that service round, and anything queued after it
   * writes again. */
  atomic_int woken;
  tern__link *link;
  tern__link_peer *peer;
  tern__session sess;
  client_state state;
  int want_online;              /* connect() called, disconnect() not */
  uint64_t attempt_start_ms;    /* monotonic start of the current attempt */
  uint64_t next_attempt_ms;     /* when to reconnect; 0: no attempt pending */
  int silent_retried;           /* a silent attempt was retried at once since the last OPEN */
  int retry_now;                /* the next tern__cl_drop() reconnects at once, no backoff */
  /* Racing (client/race.h): the connects of the current attempt. */
  tern__race race;
  tern__link_peer *att[TERN__RACE_MAX]; /* by race entry: its peer until one wins */
  int on_tcp;                   /* the open session runs over TCP */
  int udp_blocked;              /* the app said UDP is blocked on this network */
  uint64_t udp_retry_ms;        /* on TCP: when to try moving back to UDP */
  /* Migration (spec/wire.md §11): moving the open session to a new path. */
  tern__path_keys path;         /* this session's path keys */
  int mig_active;               /* a CHALLENGE is out */
  int mig_dead_tried;           /* tried since the link last looked dead */
  int mig_to_udp;               /* the move under way is a try to leave TCP:
                                   if it fails, the session stays on TCP */
  int hint_pending;             /* the relay sent a HINT (acted on after service) */
  int resp_pending;             /* a valid RESPONSE arrived (acted on after service) */
  uint8_t mig_chal[8];          /* our challenge */
  uint8_t mig_echo[8];          /* the relay's, to echo in CONFIRM */
  uint64_t mig_out_ctr, mig_in_ctr;
  uint64_t mig_deadline_ms, mig_resend_ms, mig_hint_ms;
  /* Restart notice (spec/wire.md §14): this session's token, from the
   * relay's RESET_TOKEN frame, and a RESET that matched it. */
  uint8_t reset_token[TERN__RESET_TOKEN_BYTES];
  int has_reset_token;
  int reset_pending;            /* acted on after service */
  int full_pending;             /* the relay answered our CONNECT with FULL ... */
  uint32_t full_retry_ms;       /* ... asking to wait this long (spec/wire.md §10) */
  tern__backoff backoff;
  int close_reason;             /* authenticated reason from a CLOSE frame */
  int goaway;                   /* a GOAWAY came: reconnect after goaway_ms */
  uint64_t goaway_ms;           /* its delay (spec/wire.md §6.14), capped */
  tern__cstore *store;
  tern__ccore *core;
  uint8_t *buf, *pkt;
  stashed stash[STASH_PACKETS]; /* DATA received in C_HANDSHAKE, in order */
  size_t nstash;
  tern_client_stats stats;
  /* Thread mode (thread.c). */
  pthread_t th;
  int th_on;                    /* a client thread runs (under mu) */
  atomic_int th_stop;           /* asks it to end */
  tern_event_fn th_fn;
  void *th_ctx;
  /* Keepalive (spec/keepalive.md). */
  tern__ka ka;
  char network[TERN_NETWORK_MAX + 1];
  int probe_fd[TERN__KA_SLOTS];  /* -1: closed */
  tern__addr relay_addr;         /* the relay's address as ENet reached it,
                                    for probe sockets */
  uint32_t announced_ms;         /* interval the relay was last told, this session */
  uint64_t hello_us;             /* the last HELLO timestamp sent (Unix us; spec/handshake.md §6) */
  int key_requested;             /* a KEEPALIVE asking for a probe key went out */
  uint64_t key_requested_ms;     /* ... at this monotonic time */
  uint64_t last_data_ms;         /* last sealed packet sent or received */
  uint64_t last_ping_ms;         /* last keepalive sent */
  uint64_t keepalives;           /* keepalives sent since tern_client_new() */
  int ka_reported_state;         /* what the last TERN_EV_KEEPALIVE said */
  uint32_t ka_reported_ms;
};

/* Thread mode: stops and joins the client thread. 0, or TERN_EINVAL (none
 * runs, or called from it). */
int tern__cl_thread_stop(tern_client *c);
/* 1 if a client thread runs and the caller is another thread. */
int tern__cl_thread_other(tern_client *c);

/* Queues a shell event (CONNECTED, DISCONNECTED, KEEPALIVE). Without
 * memory it is kept and queued again by the next service call, which
 * returns TERN_ENOMEM meanwhile; it may then come after core events that
 * were queued in between. */
void tern__cl_push(tern_client *c, tern_event_type type, int error);
/* The same with the time until the next try (DISCONNECTED). */
void tern__cl_push_retry(tern_client *c, tern_event_type type, int error, uint64_t retry_ms);
/* Parses relay_host into c->ep_host/ep_port. Returns how many endpoints
 * (0: none usable). */
size_t tern__cl_parse_endpoints(tern_client *c);
/* Takes the resolver's answer when it has one: starts the race, or fails
 * the attempt (TERN_EADDR) into the backoff. */
void tern__cl_resolve_step(tern_client *c, uint64_t now);

/* The link's RTT to the relay, for the core's copy timing. */
void tern__cl_sync_rtt(tern_client *c);

/* Ends the link and reports why; schedules a reconnect if wanted. */
void tern__cl_drop(tern_client *c, int error, int close_how, uint32_t code);

/* Resolves the relay's endpoints and starts racing connects to them. */
int tern__cl_start_attempt(tern_client *c);
/* Starts the race's connects that are due, and gives up those whose TCP
 * connection failed. */
void tern__cl_race_step(tern_client *c, uint64_t now);

/* One event of the ENet link: connect, receive, disconnect. */
void tern__cl_on_link_event(tern_client *c, tern__link_event *ev);

/* Seals and sends what the messaging core has queued. */
void tern__cl_flush_core(tern_client *c);

/* Seals frames of the shell's own (KEEPALIVE) on CONTROL. */
void tern__cl_send_control(tern_client *c, const uint8_t *frames, size_t len);

/* The smaller of two timeouts, where -1 means none. */
int tern__cl_min_timeout(int a, int b);

/* What is due now: connect attempts, the handshake and dead-link timers,
 * keepalives, the cores' ticks. */
void tern__cl_handle_timers(tern_client *c, uint64_t now);

/* Milliseconds until something is due (the cores, ENet, the shell), or -1. */
int tern__cl_next_timeout_locked(tern_client *c, uint64_t now);

/* Loads what the store knows of network `name` into the learner. */
int tern__cl_ka_load(tern_client *c, const char *name);

/* ENet's own ping interval for the live link: an hour. ENet pings when no
 * acknowledgement has come for its interval, even while the relay sends,
 * so the client sends its keepalives itself (tern__cl_keepalive_due()); ENet's
 * hourly ping only lets it notice a dead peer with keepalives off. */
uint32_t tern__cl_enet_ping_ms(const tern_client *c);

/* When the live link's next keepalive is due: the interval after the last
 * datagram either way (0: none is due, keepalives off or no session). */
uint64_t tern__cl_keepalive_due(const tern_client *c);

/* Reads whatever the probe sockets hold. */
void tern__cl_probe_read(tern_client *c, uint64_t now);

/* Carries out what the learner asks, and brings the live link, the store,
 * the relay and the app up to date with what it knows. */
void tern__cl_ka_sync(tern_client *c, uint64_t now);

/* The link's raw datagrams: a FULL from the relay being connected to. */
int tern__cl_on_raw(void *ctx, const tern__addr *from, const uint8_t *data, size_t len);
/* Gives up an attempt the relay answered with FULL, and waits as asked. */
void tern__cl_take_full(tern_client *c, uint64_t now);
/* RESET (client/reset.c): the raw handler's part (1: it was a RESET,
 * taken), and the drop it asks for, after service. */
int tern__cl_on_reset(tern_client *c, const tern__addr *from, const uint8_t *data, size_t len);
void tern__cl_take_reset(tern_client *c);
/* Starts moving the open session to a new path: from a new socket
 * (new_socket 1: the network changed, or the link looks dead) or from the
 * same one (a HINT: the NAT rebound). Returns 1 if started. */
int tern__cl_migrate(tern_client *c, int new_socket, uint64_t now);
/* Acts on HINTs and RESPONSEs seen during the last service. */
void tern__cl_take_path(tern_client *c, uint64_t now);
void tern__cl_migrate_timers(tern_client *c, uint64_t now);
/* ms until the migration's next timer, or -1. */
int tern__cl_migrate_timeout(const tern_client *c, uint64_t now);

#endif
