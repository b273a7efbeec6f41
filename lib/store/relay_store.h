/*
 * What the relay core asks of a message store, in the core's own terms:
 * store this batch, what is due for this device, this delivery is
 * acknowledged, what is owed to this sender, how full are you. The relay
 * core (relay/rcore.c) reaches its store through this interface only; a
 * backend decides how. Backends:
 *   - store/relay_sqlite.c: SQLite on a file, the relay's default; it owns
 *     the disk-full policy (a disk reserve it gives back and takes again,
 *     transactions bounded so that a checkpoint always fits in it);
 *   - store/relay_mem.c: in memory, for the simulation and tests;
 *   - cluster/relay_nats.c: a log on a NATS JetStream cluster, applied by
 *     every relay to a replica it keeps: several relays, one store.
 * spec/store.md has the rules each backend keeps.
 *
 * Rounds. Everything the core does between two commits is one round: the
 * backend opens it at the first call that needs it, and commit() makes all
 * of it durable at once, or rollback() undoes all of it. The core releases
 * no answer that rests on a round (a SERVER_ACK above all) before that
 * round's commit returned 0. After a crash only committed rounds remain.
 *
 * Errors: every call returns 0 (or a count or 1 where it says), or a
 * negative TERN_E* code: TERN_ESTORE when the backend failed (disk full,
 * I/O error, cluster unreachable) and the round must be rolled back;
 * errmsg() says why, for the log. May include: base/, tern.h only.
 */
#ifndef TERN_RELAY_STORE_H
#define TERN_RELAY_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "base/log.h"
#include "tern/tern.h"

/* The flag a carbon is stored with (spec/messages.md §13): the value of
 * TERN__MSGF_CARBON in DELIVER (wire/frame.h; relay/rcore.c checks they
 * agree). */
#define TERN__RS_CARBON 0x2u

/* One stored message of an inbox, as the store hands it back. Pointers are
 * valid during the callback only. */
typedef struct tern__rmsg {
  uint64_t seq;        /* position in the recipient's inbox, from 1, gap-free */
  uint64_t prev_seq;   /* seq of the previous message from the same sender in
                          this inbox, 0 if none */
  uint64_t ts;         /* server time of acceptance, Unix ms */
  uint64_t cmid;       /* the sender device's id for it */
  uint64_t flags;
  const char *from;    /* sender user name */
  const uint8_t *sender_dev; /* sender device key, 32 bytes */
  const char *peer;    /* a carbon (flags TERN__MSGF_CARBON): its recipient;
                          "" otherwise */
  uint32_t gmembers;   /* a group message: the members other than its sender
                          when it was stored (put sets it); 0 otherwise */
  const uint8_t *body;
  size_t body_len;
} tern__rmsg;

/* One message of a batch to store: what the core fills in, then what the
 * store answers. */
typedef struct tern__rs_put {
  /* In. */
  const char *to;            /* recipient user */
  const char *from;          /* sender user */
  const uint8_t *sender_dev; /* 32 bytes */
  uint64_t cmid;             /* the sender device's id for it */
  uint64_t prev_cmid;        /* the sender's previous message in this
                                conversation, which must be stored first
                                (0: none) */
  uint64_t ts;               /* server time of acceptance, Unix ms */
  uint64_t flags;
  const uint8_t *body;
  size_t body_len;
  /* A group `to` ("@name"): stored only if `from` is a member now; checked
   * after the dedup, so a resend of a stored message is EARLIER even from
   * a member that has left. */
  /* Quotas (0: none): the most messages and body bytes the store may hold
   * for `to`, and from `from`, this message included. Checked after the
   * dedup, so a resend of a stored message is still EARLIER. */
  uint64_t to_max_msgs, to_max_bytes, from_max_msgs, from_max_bytes;
  /* Carbons (spec/messages.md §13): 1 to also store, when the message is
   * stored and `from` has a registered device other than sender_dev, a
   * copy in `from`'s own inbox, with flags | TERN__MSGF_CARBON and peer
   * `to`, in the same round. The copy has no dedup row of its own (a
   * resend is EARLIER and stores nothing), counts against `from`'s inbox
   * like any message, and its acknowledgement and expiry tell the sender
   * nothing (no receipt, no FAILED). Ignored when to == from. */
  int carbon;
  /* Out. */
  int result;                /* TERN__RS_* below */
  uint64_t seq;              /* STORED or EARLIER: its seq in `to`'s inbox */
  uint64_t stored_ts;        /* STORED or EARLIER: when it was accepted */
  uint64_t prev_seq;         /* STORED: the sender's previous seq there, or 0 */
  uint64_t carbon_seq;       /* STORED: the carbon's seq in `from`'s inbox, 0 if
                                none was stored */
} tern__rs_put;

enum {
  TERN__RS_STORED = 1,   /* stored now */
  TERN__RS_EARLIER = 2,  /* (sender_dev, cmid) was stored before: a resend,
                            answered with the first one's seq and time */
  TERN__RS_NO_PREV = 3,  /* prev_cmid is not stored: not stored either (the
                            sender resends both, in order) */
  TERN__RS_OVER_TO = 4,  /* not stored: `to`'s inbox holds its quota */
  TERN__RS_OVER_FROM = 5,/* not stored: the store holds `from`'s quota */
  TERN__RS_NOT_MEMBER = 6,/* not stored: `to` is a group `from` is not in now */
  TERN__RS_NO_GROUP = 7, /* not stored: `to` is a group with no members */
};

/* 1 if the put asks for any quota. */
static inline int tern__rs_put_has_quota(const tern__rs_put *p) {
  return (p->to_max_msgs | p->to_max_bytes | p->from_max_msgs | p->from_max_bytes) != 0;
}

/* The quota verdict for put p, given what is held now for its recipient
 * and its sender: 0 (it fits), TERN__RS_OVER_TO or TERN__RS_OVER_FROM. */
static inline int tern__rs_quota(const tern__rs_put *p, uint64_t to_msgs, uint64_t to_bytes,
                                 uint64_t from_msgs, uint64_t from_bytes) {
  if ((p->to_max_msgs && to_msgs + 1 > p->to_max_msgs) ||
      (p->to_max_bytes && to_bytes + p->body_len > p->to_max_bytes))
    return TERN__RS_OVER_TO;
  if ((p->from_max_msgs && from_msgs + 1 > p->from_max_msgs) ||
      (p->from_max_bytes && from_bytes + p->body_len > p->from_max_bytes))
    return TERN__RS_OVER_FROM;
  return 0;
}

/* How full the store is, for a message of a given size. */
enum {
  TERN__RS_ROOM = 0,        /* store it */
  TERN__RS_COMMIT_FIRST = 1,/* commit the round so far, then ask again */
  TERN__RS_FULL = 2,        /* no new messages now (answer BUSY); acks,
                               deliveries and notices go on */
};

/* Notices owed to a sender device: receipts and failures it has not acked.
 * The values travel as NOTICE_ACK kinds (spec/messages.md). */
enum { TERN__NOTICE_RECEIPT = 1, TERN__NOTICE_FAILED = 2, TERN__NOTICE_GROUP_RECEIPT = 3 };
/* A GROUP_RECEIPT notice's code: members that have the message, of how many. */
#define TERN__GRECEIPT_CODE(got, of) ((int64_t)(((uint64_t)(got) << 32) | (uint32_t)(of)))

/* Groups (spec/messages.md §14): a group's messages are the inbox named
 * "@name" (no user name has an '@'): put, due and floor take it like any
 * inbox. A member's devices have their own cursors in it (gdevice,
 * gacked), from the point the member joined to the point it left. */
#define TERN__GROUP_PREFIX '@'
static inline int tern__is_group(const char *inbox) { return inbox && inbox[0] == TERN__GROUP_PREFIX; }

typedef struct tern__relay_store tern__relay_store;

/* An address as the reset rows keep it: ip[16] | port (big-endian). */
#define TERN__RS_ADDR_BYTES 18

/* Called for each message a device's ack delivered for the first time, and
 * for each message expiry removes undelivered; never for a carbon. */
typedef void (*tern__rs_delivered_fn)(void *ctx, const uint8_t sender_dev[32], uint64_t cmid,
                                      uint64_t seq);
typedef void (*tern__rs_expired_fn)(void *ctx, const uint8_t sender_dev[32], uint64_t cmid);
/* A group message reached one more member (its first device acknowledged
 * it): now `got` of the `of` members it was sent to have it. */
typedef void (*tern__rs_greceipt_fn)(void *ctx, const uint8_t sender_dev[32], uint64_t cmid,
                                     uint32_t got, uint32_t of);
/* One device of a user (devices()): its key, the messages past its cursor,
 * the sender of the latest of them ("" if none). Non-zero stops. */
typedef int (*tern__rs_device_fn)(void *ctx, const uint8_t dev[32], uint64_t waiting,
                                  const char *last_sender);

typedef struct tern__relay_store_ops {
  /* Stores a batch in order, each with its own answer in put[i].result (a
   * message may depend on one before it in the same batch, by prev_cmid).
   * Sequence numbers are gap-free per inbox. The caller asked room() for
   * the batch's bytes first. */
  int (*put)(tern__relay_store *s, tern__rs_put *put, size_t n);
  /* Up to `limit` messages of `user`'s inbox with seq > after, in seq
   * order; cb returning non-zero stops early. Returns how many it visited. */
  int (*due)(tern__relay_store *s, const char *user, uint64_t after, size_t limit,
             int (*cb)(void *ctx, const tern__rmsg *m), void *ctx);
  /* Device `dev` of `user` is here: registers it if new (cursor 0) and
   * gives its cursor (the highest seq it acknowledged cumulatively). A key
   * registered to another user is TERN_EINVAL. */
  int (*device)(tern__relay_store *s, const char *user, const uint8_t dev[32], uint64_t *cursor);
  /* Device `dev` of `user` has everything up to `up_to` and the seqs in
   * sacks[0..n). The cursor never goes down nor past the inbox's end; each
   * message no device had acknowledged before is marked delivered and
   * given to cb; messages every device of the user has passed are deleted.
   * *reached receives the cursor after. Returns 0 when it took in all of
   * it, 1 when the store wants the round committed first (take in the rest
   * by calling again after the commit; the sacks come with the last part),
   * an unregistered device TERN_ENOENT. */
  int (*acked)(tern__relay_store *s, const char *user, const uint8_t dev[32], uint64_t up_to,
               const uint64_t *sacks, size_t n, uint64_t *reached, tern__rs_delivered_fn cb,
               void *ctx);
  /* The highest seq of `user`'s inbox that is no longer stored (delivered
   * everywhere and deleted, or expired): a device behind it can never get
   * those. 0 if none. */
  int (*floor)(tern__relay_store *s, const char *user, uint64_t *floor);
  /* Notices owed to a sender device: put (replacing the code of the same
   * kind and cmid), list in (cmid, kind) order, delete one. */
  int (*notice_put)(tern__relay_store *s, const uint8_t dev[32], int kind, uint64_t cmid,
                    int64_t code);
  int (*notice_list)(tern__relay_store *s, const uint8_t dev[32],
                     int (*cb)(void *ctx, int kind, uint64_t cmid, int64_t code), void *ctx);
  int (*notice_del)(tern__relay_store *s, const uint8_t dev[32], int kind, uint64_t cmid);
  /* As notice_del, only if its code is still `code` (a GROUP_RECEIPT whose
   * count grew since the device saw it stays). */
  int (*notice_del_if)(tern__relay_store *s, const uint8_t dev[32], int kind, uint64_t cmid,
                       int64_t code);
  /* Each device registered to `user`, how many messages of its inbox it
   * has not acknowledged and who sent the latest of them (for push:
   * spec/push.md). Reads only; cb returning non-zero stops early. */
  int (*devices)(tern__relay_store *s, const char *user, tern__rs_device_fn cb, void *ctx);
  /* Forgets device `dev` (removed by the operator or the backend): its
   * cursor stops holding its user's messages, which are deleted once the
   * remaining devices have passed them, and its notices go. 1 if it was
   * registered (user set), 0 if not. */
  int (*device_remove)(tern__relay_store *s, const uint8_t dev[32], char user[TERN_USER_MAX + 1]);
  /* Removes undelivered messages accepted before `before_ts` (Unix ms),
   * giving each to cb, and forgets resends older than that. */
  int (*expire)(tern__relay_store *s, uint64_t before_ts, tern__rs_expired_fn cb, void *ctx);
  /* A HELLO from device key `dev` carries the client's timestamp
   * `time_us`: returns 1 if it is greater than every one accepted before
   * from that key (none: fresh), and records it in the round as the
   * largest; 0 if not, and writes nothing (a replayed HELLO, or a device
   * whose clock is behind). 0 and values above INT64_MAX are never fresh.
   * The caller opens the session only after the round's commit returned
   * 0 (spec/handshake.md §6). */
  int (*hello_fresh)(tern__relay_store *s, const uint8_t dev[32], uint64_t time_us);
  /* Restart notices (spec/store.md, "resets"; spec/wire.md §14). The live
   * UDP session of device key `dev`, opened by its HELLO of timestamp
   * time_us, is at address `addr` (TERN__RS_ADDR_BYTES: IPv6 or
   * IPv4-mapped address, then the port big-endian). One row per key: a
   * new session, or the same session at a new address, replaces the row.
   * The relay writes it in the round of the HELLO's timestamp. */
  int (*reset_put)(tern__relay_store *s, const uint8_t dev[32], uint64_t time_us,
                   const uint8_t addr[18]);
  /* Session (dev, time_us) ended: its row goes; a newer session's stays. */
  int (*reset_del)(tern__relay_store *s, const uint8_t dev[32], uint64_t time_us);
  /* At start, before serving: gives each row left by the previous run to
   * cb, then deletes them all, in the round. Returns how many. */
  int (*reset_take)(tern__relay_store *s,
                    void (*cb)(void *ctx, const uint8_t dev[32], uint64_t time_us,
                               const uint8_t addr[18]),
                    void *ctx);
  /* Groups (spec/messages.md §14). group_set replaces the current members
   * of `group` ("@name") with users[0..n), at the group's last seq, which
   * *point receives: a removed member's devices keep getting what is at or
   * below it, an added one's get what is above it (cursors at the point for
   * each registered device). A user added again after leaving starts over
   * at the point. n = 0 leaves the group without members. */
  int (*group_set)(tern__relay_store *s, const char *group, const char *const *users, size_t n,
                   uint64_t *point);
  /* 1 if `user` is a current member of `group`, 0 if not, TERN_ENOENT if
   * the group has no current member at all. */
  int (*group_role)(tern__relay_store *s, const char *group, const char *user);
  /* The current members, to cb (non-zero stops). Returns how many. */
  int (*group_members)(tern__relay_store *s, const char *group,
                       int (*cb)(void *ctx, const char *user), void *ctx);
  /* The groups device `dev` of `user` gets messages of: those the user is a
   * member of, and those it left while this device had not reached the
   * point. cb (non-zero stops). Returns how many. */
  int (*user_groups)(tern__relay_store *s, const char *user, const uint8_t dev[32],
                     int (*cb)(void *ctx, const char *group), void *ctx);
  /* Device `dev` of member `user` in `group`: registers its cursor if new
   * (at the point the member joined, or the group's floor if higher) and
   * gives it, and the last seq it may get (*limit: the point the member
   * left, UINT64_MAX while a member). TERN_ENOENT if the user never was a
   * member. */
  int (*gdevice)(tern__relay_store *s, const char *group, const char *user, const uint8_t dev[32],
                 uint64_t *cursor, uint64_t *limit);
  /* Each member device with a cursor in `group`: its user, its key, and
   * how many of the group's messages it may still get (for push). Reads
   * only; cb non-zero stops. */
  int (*group_devices)(tern__relay_store *s, const char *group,
                       int (*cb)(void *ctx, const char *user, const uint8_t dev[32], uint64_t waiting),
                       void *ctx);
  /* acked for a group: the device's group cursor (as acked, up to *limit
   * and the group's end). Each message a member gets for the first time
   * (the first of its devices whose cursor passes it; sacks are not
   * counted) goes to cb with its new count. Messages every member device
   * has passed are deleted. Returns 0 (no steps: a group ack is one
   * statement per range), TERN_ENOENT for an unregistered device. */
  int (*gacked)(tern__relay_store *s, const char *group, const char *user, const uint8_t dev[32],
                uint64_t up_to, uint64_t *reached, tern__rs_greceipt_fn cb, void *ctx);
  /* Settled cmids (spec/messages.md §2, "Dedup"): device `dev` will never
   * send again a message with a cmid below `below` (its outbox holds none).
   * Records it as the device's settled floor if above the one recorded,
   * and deletes the dedup rows of its cmids below it, in the round. */
  int (*settled)(tern__relay_store *s, const uint8_t dev[32], uint64_t below);
  /* The settled floor recorded for `dev` (0: none). */
  int (*settled_get)(tern__relay_store *s, const uint8_t dev[32], uint64_t *below);
  /* How full am I, for a message of body_len bytes (0: for acks). */
  int (*room)(tern__relay_store *s, size_t body_len);
  /* Makes the round durable. `now_ms` (monotonic) paces the backend's own
   * upkeep (the SQLite backend retries its disk reserve). Returns 0 or
   * TERN_ESTORE; after a failure the caller rolls back. */
  int (*commit)(tern__relay_store *s, uint64_t now_ms);
  /* Undoes the round (harmless without one). */
  void (*rollback)(tern__relay_store *s, uint64_t now_ms);
  /* When the backend wants a commit for its own upkeep even if nothing
   * happens (monotonic ms), or UINT64_MAX. */
  uint64_t (*wake_ms)(const tern__relay_store *s);
  /* Why the last call that failed failed, for the log. Never NULL. */
  const char *(*errmsg)(const tern__relay_store *s);
  /* Messages stored in all inboxes (tests, metrics). */
  int (*count)(tern__relay_store *s, uint64_t *messages);
  /* A store shared with other relays (cluster/relay_nats.h); NULL in a
   * store of one relay. remote_fd: a descriptor that is readable when
   * other relays' writes have arrived (the relay polls it). remote_take:
   * outside a round, applies them, then names each inbox (a user or an
   * "@group") that got messages, and each device that got notices, to the
   * callbacks, once each, so that the relay wakes its sessions (inbox
   * NULL: anything may have changed, wake every session). Returns
   * how many entries it applied, or TERN_ESTORE. */
  int (*remote_fd)(const tern__relay_store *s);
  int (*remote_take)(tern__relay_store *s, void (*inbox)(void *ctx, const char *user),
                     void (*device)(void *ctx, const uint8_t dev[32]), void *ctx);
  void (*close)(tern__relay_store *s);
#ifdef TERN_TEST_HOOKS
  /* Deliberate faults, compiled into test builds only (shipped libraries
   * have none): TERN__RS_FAULT_COMMIT makes the next `n` commits fail as a
   * full disk at COMMIT does; TERN__RS_FAULT_DUP (n = 1 on, 0 off) makes
   * put() store a resend again, as a relay without dedup would. */
  void (*fault)(tern__relay_store *s, int kind, unsigned n);
#endif
} tern__relay_store_ops;

#ifdef TERN_TEST_HOOKS
enum { TERN__RS_FAULT_COMMIT = 1, TERN__RS_FAULT_DUP = 2, TERN__RS_FAULT_CARBON2 = 3,
       TERN__RS_FAULT_LEAVE_EARLY = 4,
       /* The cluster store's subscription drops what it receives while n is
        * 1: a consumer that stalls (cluster/relay_nats.c). */
       TERN__RS_FAULT_DEAF = 5,
       /* The cluster store's next `n` rounds are appended to the log, and
        * then the append is reported failed, as when the cluster's answer
        * is lost (a timeout): the entry is in the log, the relay thinks not. */
       TERN__RS_FAULT_LOST_ACK = 6,
       /* The cluster store's next `n` reads by sequence return the entry
        * after the one asked for, as a server that lost its leadership
        * can serve an entry the log does not have. */
       TERN__RS_FAULT_STALE_READ = 7,
       /* The cluster store's next `n` appends are acknowledged with the
        * sequence before their own, as a server that lost its leadership
        * can acknowledge a round at a sequence the log gave another. */
       TERN__RS_FAULT_ACK_EARLY = 8,
       /* The cluster store's next `n` loads of a snapshot fail, as when
        * the snapshot stream is briefly unavailable. */
       TERN__RS_FAULT_SNAP_LOAD = 9,
       /* The cluster store's next `n` delivered entries are replaced by
        * the one delivered after them, as a server that lost its
        * leadership can deliver an entry the log does not have. */
       TERN__RS_FAULT_SWAP_DELIVERY = 10,
       /* The SQLite store's due() fails while n is 1, as a store whose
        * reads keep failing (a cluster replica going back) does. */
       TERN__RS_FAULT_DUE = 11 };
#endif

/* A backend's instance starts with this. */
struct tern__relay_store {
  const tern__relay_store_ops *ops;
};

/* The backends' constructors: the SQLite one takes its engine's config and
 * is declared with it (store/rstore.h, tern__relay_sqlite_open); the
 * in-memory one needs none. */

/* Opens an empty in-memory backend (store/relay_mem.c). Each round keeps a
 * copy of what it started from for its rollback: meant for the simulation
 * and tests, not for a relay's load. Returns 0 or TERN_ENOMEM. */
int tern__relay_mem_open(tern__relay_store **out);

#endif
