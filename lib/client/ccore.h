/*
 * The client's messaging core, sans-I/O: the outbox, delivery to the app in
 * per-sender order with dedup, delivery acks, receipts and failures, on top
 * of the client store. Time is passed in; frames come out as outputs to be
 * sealed and sent on the session; events go to the app. spec/messages.md
 * describes the flows.
 */
#ifndef TERN_CCORE_H
#define TERN_CCORE_H

#include <stddef.h>
#include <stdint.h>

#include "store/cstore.h"
#include "tern/tern.h"

typedef struct tern__ccore tern__ccore;

typedef struct tern__ccore_config {
  uint32_t resend_ms;     /* resend an unacked MSG on the same session (4000) */
  uint32_t dead_link_ms;  /* an MSG unacked this long means the link is dead (8000) */
  uint32_t ack_delay_ms;  /* batch DELIVERY_ACKs for this long (20) */
  uint32_t busy_retry_ms; /* after BUSY, wait this long before resending (2000) */
  size_t held_max;        /* DELIVERs kept while waiting for prev_seq (1024) */
  /* A message body up to this size is also sent copy_count more times,
   * unsequenced on its own channel; the relay's dedup drops all but the
   * first to arrive. 0 (either) turns copies off. Copy 1 leaves d / 2
   * after the reliable transmission, copy k >= 2 (2k - 1) d, where d is a
   * fifth of the session's RTT (tern__ccore_set_rtt), at least
   * copy_delay_min_ms and at most copy_delay_ms; copy_delay_ms while the
   * RTT is unknown. Copy k is sent only if (2k - 1) d is less than the RTT
   * (copies.h). (512, 30, 5, 2) */
  uint32_t copy_max_bytes;
  uint32_t copy_delay_ms;
  uint32_t copy_delay_min_ms;
  uint32_t copy_count;
  /* At most this many MSGs in flight (sent on the session, not yet
   * answered); the rest wait in the outbox (spec/messages.md §5.9). (64) */
  size_t window;
} tern__ccore_config;

void tern__ccore_config_default(tern__ccore_config *cfg);

typedef struct tern__ccore_out {
  uint8_t channel;
  int reliable;
  const uint8_t *data;
  size_t len;
} tern__ccore_out;

/* Loads the outbox and delivery state from `store` (borrowed). Returns 0,
 * TERN_ENOMEM, TERN_ESTORE. */
int tern__ccore_new(tern__ccore **out, tern__cstore *store, const tern__ccore_config *cfg);
void tern__ccore_free(tern__ccore *cc);

/* Accepts a message: stored in the outbox before this returns (unless
 * ephemeral), sent at once if online. *cmid receives its id (0 for an
 * ephemeral message). Returns 0, TERN_ESTORE, TERN_ENOMEM, TERN_ECLOSED
 * (ephemeral while offline). */
int tern__ccore_send(tern__ccore *cc, const char *to, const void *body, size_t len, int ephemeral,
                     uint64_t now_ms, uint64_t wall_ms, uint64_t *cmid);
/* The same with the app's own id for the message (NULL: none): a send with
 * an id given before returns the first one's cmid and sends nothing. */
int tern__ccore_send_id(tern__ccore *cc, const char *to, const void *body, size_t len, int ephemeral,
                        const char *app_id, uint64_t now_ms, uint64_t wall_ms, uint64_t *cmid);

/* Early data: writes MSG frames for the first outbox messages that fit in
 * buf[0..cap) (whole frames only, in order) and marks them sent, so that
 * they travel inside handshake message 1. Returns the bytes written. */
size_t tern__ccore_early(tern__ccore *cc, uint8_t *buf, size_t cap, uint64_t now_ms);

/* The session is open as `self`: sends SYNC, then the outbox in order
 * (except what went out as early data on this attempt). */
void tern__ccore_online(tern__ccore *cc, const char *self, uint64_t now_ms);
/* The session is gone. */
void tern__ccore_offline(tern__ccore *cc);

/* The session's smoothed round-trip time in ms as the link measures it (0:
 * unknown); it sets how long a copy waits (see copy_delay_ms). */
void tern__ccore_set_rtt(tern__ccore *cc, uint32_t rtt_ms);

/* Frames from the relay. Malformed frames are skipped. Returns 0, or
 * TERN_ENOMEM if an event they caused could not be queued: nothing is lost
 * then, because what the event stood for is undone (a message is neither
 * queued nor acknowledged, a SERVER_ACK leaves its message in the outbox to
 * be sent again after busy_retry_ms, a receipt or failure notice stays
 * unacknowledged), and the relay's resend brings it again. Only an
 * ephemeral message (best effort by design) or an ERROR event is gone. */
int tern__ccore_input(tern__ccore *cc, const uint8_t *frames, size_t len, uint64_t now_ms);

/* Next frames to send; 1 if one (valid until the next call), 0 if none. */
int tern__ccore_next_output(tern__ccore *cc, tern__ccore_out *out);

/* Next event for the app; 1 if one, 0 if none. A MESSAGE event counts as
 * delivered when it is taken: that is recorded in the store before this
 * returns, and acknowledged to the relay after. The pointers stay valid
 * until the next call. */
int tern__ccore_next_event(tern__ccore *cc, tern_event *ev, uint64_t now_ms);

/* Queues an event from the I/O shell (CONNECTED, DISCONNECTED) in order
 * with the core's own. Returns 0 or TERN_ENOMEM (nothing queued: the shell
 * queues it again later). */
int tern__ccore_push_event(tern__ccore *cc, const tern_event *ev);

#ifdef TERN_TEST_HOOKS
/* Test builds: the next `n` events fail to queue as if memory ran out. */
void tern__ccore_fault_events(tern__ccore *cc, unsigned n);
#endif

/* Number of queued events. */
size_t tern__ccore_pending_events(const tern__ccore *cc);

/* When a datagram of any kind last came from the relay (the shell knows;
 * an ENet acknowledgement of a ping counts): the relay is alive even when
 * it is too busy to answer messages. */
void tern__ccore_set_heard(tern__ccore *cc, uint64_t heard_ms);
/* MSGs in flight now. */
size_t tern__ccore_in_flight(const tern__ccore *cc);
/* With MSGs in flight, the time of the relay's last answer (or of going
 * online); 0 with none in flight. The shell pings the relay while this is
 * old, so that a busy relay is still heard. */
uint64_t tern__ccore_waiting_since(const tern__ccore *cc);

/* Milliseconds until tern__ccore_tick() has work, or -1. */
int tern__ccore_timeout(const tern__ccore *cc, uint64_t now_ms);
/* Resends and acks that are due. Returns 1 if the link must be considered
 * dead: an MSG is in flight and nothing at all (no answer, no datagram)
 * came from the relay for dead_link_ms. A relay heard from but not
 * answering for dead_link_ms is busy: one TERN_EV_ERROR with TERN_EBUSY
 * per stall, and the messages wait. */
int tern__ccore_tick(tern__ccore *cc, uint64_t now_ms);

/* Messages in the outbox. */
size_t tern__ccore_outbox_size(const tern__ccore *cc);

#endif
