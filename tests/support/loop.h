/* In-process relay and clients on loopback, serviced from one thread. */
#ifndef TERN_TEST_LOOP_H
#define TERN_TEST_LOOP_H

#include <stddef.h>

#include "tern/tern.h"

#define LOOP_MAX_CLIENTS 8

typedef struct loop {
  tern_relay *relay;
  tern_keypair relay_kp;
  tern_client *clients[LOOP_MAX_CLIENTS];
  size_t nclients;
  uint8_t *last_body; /* body of the last event loop_wait returned */
} loop;

/* A copy of an event that outlives the next service call. */
typedef struct loop_event {
  tern_event_type type;
  int error;
  uint64_t cmid;
  uint64_t seq;
  char user[TERN_USER_MAX + 1];
  uint8_t *body; /* owned by the loop: valid until the next loop_wait */
  size_t body_len;
  uint64_t retry_ms; /* DISCONNECTED: when the client tries again */
} loop_event;

/* Fills *rc for a relay on 127.0.0.1 (an ephemeral port) with a fresh key
 * (kept in l->relay_kp); the caller may change it, then loop_start_relay. */
void loop_relay_config(loop *l, tern_relay_config *rc);
/* Starts the loop's relay from *rc. */
void loop_start_relay(loop *l, const tern_relay_config *rc);

/* Starts a relay on 127.0.0.1 with a fresh key, `auth` (may be NULL). */
void loop_start(loop *l, tern_relay_auth_fn auth, void *auth_ctx, uint32_t hs_timeout_ms);

/* A client config pointing at the loop's relay with a fresh keypair. */
void loop_client_config(loop *l, tern_client_config *cfg, const char *user);

/* Creates and connects a client; returns its index. */
size_t loop_add_client(loop *l, const tern_client_config *cfg);

/* Adds "alice" and "bob" and waits until both are connected (asserting
 * it, and that the relay gave them those names); their indexes go to *a
 * and *b. */
void loop_add_pair(loop *l, size_t *a, size_t *b);

/* Services relay and every client once (non-blocking). */
void loop_pump(loop *l);

/* Pumps until client `i` yields an event of `type` (other events of that
 * client are dropped) or timeout_ms passes. Returns 1 and fills *ev, or 0
 * on timeout. */
int loop_wait(loop *l, size_t i, tern_event_type type, int timeout_ms, loop_event *ev);

void loop_stop(loop *l);

#endif
