/*
 * The relay's messaging core, sans-I/O: what the relay does with MSG,
 * DELIVERY_ACK, SYNC and NOTICE_ACK frames from authenticated connections,
 * on top of a relay store, which it reaches through store/relay_store.h
 * only (any backend). May include: base/, wire/, store/relay_store.h. Time is passed in; frames come out as outputs
 * addressed to connection ids. spec/messages.md describes the flows.
 *
 * The rule that makes "never loses what it acked" hold: every output is held
 * until tern__rcore_commit() has committed the store transaction the round's
 * writes went into. A SERVER_ACK therefore never leaves before its message
 * is durable, and a DELIVER never carries a seq that a crash could reassign.
 */
#ifndef TERN_RCORE_H
#define TERN_RCORE_H

#include <stddef.h>
#include <stdint.h>

#include "store/relay_store.h"
#include "tern/tern.h"

typedef struct tern__rcore tern__rcore;

typedef struct tern__rcore_config {
  uint64_t retention_ms;     /* undelivered messages expire after this (30 days) */
  uint32_t max_message_size; /* larger bodies get FAILED/TERN_ETOOBIG (65536) */
  uint32_t deliver_window;   /* DELIVERs unacked per connection (1024) */
  /* ... and their bytes (DELIVER frames), per connection (1048576): a
   * device that stops acknowledging holds at most this much of the relay's
   * memory in its link's queues. A single DELIVER larger than this still
   * goes out when nothing else is unacked. */
  uint32_t deliver_window_bytes;
  /* Quotas on what the store holds (0: none): messages and body bytes per
   * recipient's inbox and per sender, across its recipients. A message
   * past one is answered FAILED/TERN_EQUOTA (100000, 1 GiB, 100000, 1 GiB). */
  uint64_t quota_to_msgs, quota_to_bytes, quota_from_msgs, quota_from_bytes;
  /* The relay-wide budget for DELIVERs sent and not yet acknowledged, in
   * bytes, across every session (0: none). Past it no session gets more
   * DELIVERs, except one that has none in flight (so no session starves):
   * they wait in the store, and go out as acks free room (256 MiB). */
  uint64_t deliver_budget_bytes;
  /* Per-device send rate (0: none): messages and body bytes per second,
   * in a token bucket holding 10 s of either. A MSG past it is answered
   * BUSY with TERN_ERATE (the client keeps it and retries); an ephemeral
   * one is dropped. (1000, 16 MiB) */
  uint32_t send_rate_msgs;
  uint64_t send_rate_bytes;
  /* Presence (spec/messages.md §9.1): 1 if `watcher` may see whether
   * `user` is online. NULL (default): no presence at all. */
  int (*may_see)(void *ctx, const char *watcher, const char *user);
  void *may_see_ctx;
  uint32_t presence_min_ms;  /* a user's changes go out at most this often (1000) */
  /* Ephemeral messages (typing) per session: a second, in bursts of twice
   * that; past it they are dropped (20). 0: only the send rate. */
  uint32_t ephemeral_rate;
  /* 1: keep, per committed round, who was sent a message by whom, for
   * tern__rcore_next_stored() (push notifications). 0 (default): not. */
  int track_stored;
  uint32_t resend_ms;        /* resend unacked DELIVERs/notices after (3000) */
  uint32_t expire_every_ms;  /* how often expiry runs (60000) */
  uint32_t busy_ms;          /* after a store failure, answer BUSY for (2000) */
  /* A DELIVER whose body is up to copy_max_bytes goes out copy_count more
   * times, unsequenced on its own channel, unless acked by then; the device
   * drops all but the first to arrive. 0 (either): off. Copy 1 waits
   * d / 2, copy k >= 2 (2k - 1) d, where d is a fifth of the session's RTT
   * (tern__rcore_set_rtt), at least copy_delay_min_ms and at most
   * copy_delay_ms; copy_delay_ms while the RTT is unknown. Copy k is sent
   * only if (2k - 1) d is less than the RTT (copies.h). (512, 30, 5, 2) */
  uint32_t copy_max_bytes;
  uint32_t copy_delay_ms;
  uint32_t copy_delay_min_ms;
  uint32_t copy_count;
  /* Optional: 0 if `user` can never receive (FAILED/TERN_ENOENT). */
  int (*user_exists)(void *ctx, const char *user);
  void *user_ctx;
  /* Optional: 0 if user `from` may not write to user `to` (FAILED/
   * TERN_EDENIED; an ephemeral message is dropped without an answer). */
  int (*may_send)(void *ctx, const char *from, const char *to);
  void *may_send_ctx;
  /* Optional: where the core says what went wrong with the store (level 0
   * error, 1 warning, 2 info, 3 debug), as tern_relay_config.log. Failures are
   * reported at most once per busy_ms, with a count of those not reported. */
  void (*log)(void *ctx, int level, const char *line);
  void *log_ctx;
#ifdef TERN_TEST_HOOKS
  /* A deliberate fault, for showing that the simulation catches it (test
   * builds only): release SERVER_ACK before the commit. The store's own
   * faults are in relay_store.h. */
  int fault_ack_before_commit;
#endif
} tern__rcore_config;

void tern__rcore_config_default(tern__rcore_config *cfg);

typedef struct tern__rcore_out {
  uint64_t conn;     /* connection id given to tern__rcore_open() */
  uint8_t channel;   /* ENet channel (link.h) */
  int reliable;      /* 0 for ephemeral messages on the signal channel */
  const uint8_t *data;
  size_t len;        /* frames, to be sealed by the caller */
} tern__rcore_out;

/* The store is borrowed, not owned. Returns 0 or TERN_ENOMEM. */
int tern__rcore_new(tern__rcore **out, tern__relay_store *store, const tern__rcore_config *cfg);
void tern__rcore_free(tern__rcore *rc);

/* An authenticated session `conn` is up for device `dev` of `user`. Nothing
 * is delivered to it until it sends SYNC, which proves it is live (a
 * replayed HELLO cannot). Returns 0, TERN_ESTORE, TERN_ENOMEM. */
int tern__rcore_open(tern__rcore *rc, uint64_t conn, const char *user, const uint8_t dev[32],
                     uint64_t now_ms);
void tern__rcore_close(tern__rcore *rc, uint64_t conn);

/* The smoothed round-trip time of `conn` in ms as the link measures it (0:
 * unknown); it sets how long its copies wait (see copy_delay_ms). */
void tern__rcore_set_rtt(tern__rcore *rc, uint64_t conn, uint32_t rtt_ms);

/* Frames from `conn`. Malformed frames are skipped. Returns 0, or
 * TERN_EPROTO if the connection should be dropped. */
int tern__rcore_input(tern__rcore *rc, uint64_t conn, const uint8_t *frames, size_t len,
                      uint64_t now_ms, uint64_t wall_ms);

/* Commits the round's store writes, then releases the held outputs.
 *
 * A round may already have been committed in parts: when the store's room()
 * asks for a commit first (the SQLite backend bounds what one transaction
 * writes), the core commits what the round has so far and releases that
 * part's outputs (they may be taken with tern__rcore_next before this
 * call). A failure below undoes only the part not yet committed.
 *
 * If the commit (or any store call of the round) fails, the round is rolled
 * back: each message it stored or answered from the dedup table gets BUSY
 * (TERN_ESTORE) instead of its SERVER_ACK, refusals (FAILED) still go out,
 * and everything else held for the round (DELIVERs, receipts, FLOOR) is
 * dropped. The core forgets what the round changed: each session's cursor
 * goes back to its last committed value and its DELIVERs and notices are
 * sent again from there, so the devices acknowledge again and their acks
 * (and the receipts they cause) are redone in a later round. New messages
 * are answered BUSY for busy_ms, and for as long as the store's room() says
 * it is full (the SQLite backend after a full disk, until it has its disk
 * reserve back). Returns 0 or TERN_ESTORE. */
int tern__rcore_commit(tern__rcore *rc, uint64_t now_ms);

/* Handshake freshness (spec/handshake.md §6): a HELLO from device key
 * `dev` carries the client's timestamp `time_us`. Returns 1 if it is above
 * every one the store accepted from that key, and then records it as the
 * largest in the open round, with *ticket naming that round; 0 if not (a
 * replay or a clock behind: nothing written); TERN_ESTORE if the store
 * failed (the round is rolled back, as for any store failure). The shell
 * opens the session only once tern__rcore_ticket() says 1. */
int tern__rcore_hello_fresh(tern__rcore *rc, const uint8_t dev[32], uint64_t time_us, uint64_t now_ms,
                            uint64_t *ticket);
/* What became of the round of `ticket`: 0 still open, 1 committed (what
 * it wrote is durable), TERN_ESTORE rolled back (or too long ago to
 * know: more than 64 rounds). */
int tern__rcore_ticket(const tern__rcore *rc, uint64_t ticket);

/* What the link layer still holds of the outputs the shell sent, in bytes
 * (tern__link_queued_bytes: not yet sent, or not yet acknowledged by the
 * peer's ENet). A resend from a cursor does not take back what ENet still
 * holds of the first sending, so the delivery budget holds for this too:
 * at or past it, sessions with DELIVERs in flight get no more. */
void tern__rcore_set_link_bytes(tern__rcore *rc, uint64_t bytes);

/* With track_stored: the next (recipient, sender) of a message whose
 * store committed, oldest first (consecutive ones to the same recipient
 * are given once, with the last sender). 1 if one (the strings are valid
 * until the next call), 0 if none. */
int tern__rcore_next_stored(tern__rcore *rc, const char **to, const char **from);

/* Wakes, for relays that share one store (a cluster, spec/store.md): what
 * another relay committed reaches this core's sessions only when told,
 * since this core stores nothing for it. tern__rcore_wake_user: messages
 * were stored for `user` (or a group, "@name"); its live sessions (group
 * streams) here send what their windows allow from where they are.
 * tern__rcore_wake_device: notices (RECEIPT, FAILED, N of M) were stored
 * for device `dev`; its live sessions here send every notice it is owed.
 * The outputs wait for the next commit, as all do. Each returns how many
 * sessions it woke. A wake for nobody here costs a lookup. */
int tern__rcore_wake_user(tern__rcore *rc, const char *user, uint64_t now_ms);
int tern__rcore_wake_device(tern__rcore *rc, const uint8_t dev[32], uint64_t now_ms);
/* Both, for every session: the store jumped (a cluster store that loaded
 * a snapshot) and what changed is not known. Returns how many. */
int tern__rcore_wake_all(tern__rcore *rc, uint64_t now_ms);

/* Forgets device `dev` (removed by the operator or the backend): its cursor
 * stops holding its user's messages back (spec/store.md, device_remove),
 * in the open round. Close its connections first. Returns 1 if it was
 * registered, 0 if not, TERN_ESTORE (the round is rolled back). */
int tern__rcore_device_remove(tern__rcore *rc, const uint8_t dev[32], uint64_t now_ms);

/* Groups (spec/messages.md §14): replaces the members of `group` ("@name")
 * with users[0..n) at the group's last seq (*point, if not NULL), and
 * commits the round (so that no session acts on a change that could still
 * be rolled back). Then the live sessions of added members start getting
 * the group (GROUP_FLOOR, then its messages above the point), in a new
 * round; those of removed members stop after the point. Returns 0 or
 * TERN_ESTORE (the round is rolled back, nothing changed). */
int tern__rcore_group_set(tern__rcore *rc, const char *group, const char *const *users, size_t n,
                          uint64_t now_ms, uint64_t *point);

/* Takes the next released output; 1 if one, 0 if none. *out is valid until
 * the next call. */
int tern__rcore_next(tern__rcore *rc, tern__rcore_out *out);

/* Milliseconds until tern__rcore_tick() has work, or -1. */
int tern__rcore_timeout(const tern__rcore *rc, uint64_t now_ms);
/* Resends and expiry that are due. Call tern__rcore_commit() after. */
void tern__rcore_tick(tern__rcore *rc, uint64_t now_ms, uint64_t wall_ms);

/* Counters. stored, deduped, delivered and expired count what a committed
 * round did (a rolled-back round counts nothing); the others count answers
 * and failures as they happen. */
typedef struct tern__rcore_stats {
  uint64_t stored;        /* messages stored (server-acked) */
  uint64_t deduped;       /* resent MSGs answered from the dedup table */
  uint64_t delivered;     /* messages acknowledged by a recipient device */
  uint64_t refused;       /* FAILED answers */
  uint64_t over_quota;    /* ... of them TERN_EQUOTA */
  uint64_t busy;          /* BUSY answers (store failures, rate) */
  uint64_t over_rate;     /* ... of them TERN_ERATE; and ephemeral ones dropped */
  uint64_t presence_sent; /* PRESENCE frames sent */
  uint64_t budget_stalls; /* times a session's DELIVERs waited for the budget */
  uint64_t deliver_bytes; /* gauge: DELIVER bytes unacknowledged, all sessions */
  uint64_t expired;       /* messages expired undelivered */
  uint64_t store_errors;  /* store calls (or commits) that failed */
  uint64_t stale_msgs;    /* MSGs below their device's settled floor: dropped */
  uint64_t no_prev;       /* MSGs dropped because their prev_cmid is not stored */
} tern__rcore_stats;
void tern__rcore_get_stats(const tern__rcore *rc, tern__rcore_stats *st);

#endif
