/*
 * The keepalive learner, sans-I/O (spec/keepalive.md). It finds how long
 * the NAT of the current network keeps an idle UDP mapping, without risking
 * the live session: up to TERN__KA_SLOTS probe sockets at a time each ask
 * the relay (probe.h) to answer after T ms of silence; an answer proves T.
 * From what is proven it derives the live keepalive interval.
 *
 * The learner owns no sockets: it asks the shell to open a probe socket
 * for a slot, to send bytes on it and to close it (tern__ka_next_action),
 * and is given what arrives on it (tern__ka_input). Time comes in as
 * arguments: monotonic ms for timers, wall-clock ms for the age of what was
 * learned (which outlives the process in the client store). Random nonces
 * come from a callback.
 */
#ifndef TERN_KALEARN_H
#define TERN_KALEARN_H

#include <stddef.h>
#include <stdint.h>

#include "wire/probe.h"
#include "tern/tern.h"

/* Probes in flight at once (one socket each). */
#define TERN__KA_SLOTS 8

typedef struct tern__ka_config {
  int off;                 /* 1: no keepalives at all, no probing */
  uint32_t fixed_ms;       /* > 0: this interval, no probing */
  uint32_t floor_ms;       /* where the search starts (25000) */
  uint32_t ceiling_ms;     /* largest T probed (900000) */
  uint32_t min_ms;         /* a network that cannot keep a mapping this long is bad (10000) */
  uint64_t reprobe_ms;     /* relearn what is older than this (86400000) */
  uint32_t foreground_ms;  /* cap on the interval in the foreground (60000) */
  uint32_t unavailable_retry_ms; /* after probes got no answer at all (300000) */
} tern__ka_config;

void tern__ka_config_default(tern__ka_config *cfg);

/* What is known about one network; what the client store keeps. */
typedef struct tern__ka_net {
  uint32_t proven_ms;  /* largest T answered (0: none) */
  uint32_t failed_ms;  /* smallest T above proven_ms that went unanswered (0: none) */
  uint64_t learned_at; /* wall ms when the search last finished (0: not yet) */
} tern__ka_net;

typedef enum tern__ka_action_type {
  TERN__KA_OPEN = 1,   /* open a UDP socket for `slot`, connected to the relay */
  TERN__KA_SEND = 2,   /* send data[0..len) on slot's socket */
  TERN__KA_CLOSE = 3,  /* close slot's socket */
} tern__ka_action_type;

typedef struct tern__ka_action {
  tern__ka_action_type type;
  unsigned slot;
  const uint8_t *data; /* SEND: valid until the next call into the learner */
  size_t len;
} tern__ka_action;

typedef struct tern__ka_slot {
  int state;           /* 0 free, 1 requesting (no ACK yet), 2 waiting for REPLY */
  int open;            /* the shell has a socket for it */
  uint32_t t_ms;       /* the silence asked for */
  uint64_t nonce;
  unsigned tries;      /* REQUESTs sent */
  uint64_t sent_ms;    /* last REQUEST */
  uint64_t first_ms;   /* first REQUEST */
  uint64_t ack_ms;     /* last ACK received (0: none yet) */
  uint64_t deadline_ms;/* state 1: resend or give up; state 2: no REPLY by then = failed */
} tern__ka_slot;

typedef struct tern__ka_stats {
  uint64_t probes;      /* probes started */
  uint64_t proven;      /* probes answered after their silence */
  uint64_t failed;      /* probes acknowledged but never answered */
  uint64_t lost;        /* probes never acknowledged */
  uint64_t datagrams_out, datagrams_in; /* on probe sockets */
} tern__ka_stats;

typedef struct tern__ka {
  tern__ka_config cfg;
  tern__ka_net net;
  int state;                /* TERN_KA_* of tern.h */
  int recheck;              /* reprobing: test proven_ms again first */
  int foreground;
  int have_key;
  uint8_t id[TERN__PROBE_ID_BYTES];
  uint8_t key[TERN__PROBE_KEY_BYTES];
  tern__ka_slot slots[TERN__KA_SLOTS];
  unsigned close_pending;   /* bitmask: slots to report CLOSE for */
  unsigned open_pending;    /* bitmask: slots to report OPEN for */
  unsigned send_pending;    /* bitmask: slots whose REQUEST is to be sent */
  uint64_t learn_started_ms;/* monotonic start of the current search (0: none) */
  uint64_t learn_ms;        /* how long the last finished search took */
  uint64_t retry_at_ms;     /* UNAVAILABLE: when to try again */
  unsigned round_lost;      /* probes of this round never acknowledged */
  unsigned round_answered;  /* ... that got at least an ACK */
  int changed;              /* interval, state or net changed since last taken */
  uint64_t (*rand64)(void *ctx);
  void *rand_ctx;
  uint8_t out[TERN__PROBE_REQUEST_BYTES];
  tern__ka_stats stats;
} tern__ka;

void tern__ka_init(tern__ka *ka, const tern__ka_config *cfg, uint64_t (*rand64)(void *ctx),
                   void *rand_ctx);

/* Switches to a network, with what the store knows of it (NULL: nothing).
 * Probes in flight are abandoned (CLOSE actions follow) and the key is
 * dropped: it belonged to the session on the old network. */
void tern__ka_set_network(tern__ka *ka, const tern__ka_net *known, uint64_t now_ms);

/* The live interval: how long the link may stay silent before a keepalive
 * goes out, in ms; 0 when keepalives are off. Depends on the foreground. */
uint32_t tern__ka_interval(const tern__ka *ka);
void tern__ka_set_foreground(tern__ka *ka, int foreground);

/* 1 if the learner wants a probe key (it has probing to do now). */
int tern__ka_wants_key(const tern__ka *ka, uint64_t now_ms, uint64_t wall_ms);

/* The session gave a probe key: probing starts or resumes. */
void tern__ka_set_key(tern__ka *ka, const uint8_t id[TERN__PROBE_ID_BYTES],
                      const uint8_t key[TERN__PROBE_KEY_BYTES], uint64_t now_ms, uint64_t wall_ms);
/* The session was asked for a probe key and gave none in time (a relay
 * that does not answer probes, or an older one): UNAVAILABLE, and no key
 * is wanted again before unavailable_retry_ms. */
void tern__ka_no_key(tern__ka *ka, uint64_t now_ms);
/* The session ended: its key is void; probes in flight are abandoned
 * without conclusion and resume with the next key. */
void tern__ka_session_down(tern__ka *ka);

/* The live link died while idle: its keepalive went unanswered. What was
 * learned is forgotten; the interval falls back to the unproven one at
 * once and the search starts over from the floor. */
void tern__ka_keepalive_failed(tern__ka *ka, uint64_t now_ms);

/* A datagram arrived on slot's socket. */
void tern__ka_input(tern__ka *ka, unsigned slot, const uint8_t *data, size_t len, uint64_t now_ms,
                    uint64_t wall_ms);

/* Timers. The reprobe age is checked at every tick: a session that lives
 * longer than reprobe_ms reprobes within one keepalive interval of it. */
int tern__ka_timeout(const tern__ka *ka, uint64_t now_ms);
void tern__ka_tick(tern__ka *ka, uint64_t now_ms, uint64_t wall_ms);

/* The next thing for the shell to do: 1 with *a set, 0 if nothing. */
int tern__ka_next_action(tern__ka *ka, uint64_t now_ms, tern__ka_action *a);

/* 1 once after the interval, the state or the stored facts changed. */
int tern__ka_take_changed(tern__ka *ka);

#endif
