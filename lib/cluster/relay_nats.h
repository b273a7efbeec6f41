/*
 * The relay store on a NATS JetStream cluster (spec/store.md, "The
 * cluster store"): several relays share one store, and a user's devices
 * may sit on different relays.
 *
 * How. The cluster holds one log, a JetStream stream replicated on the
 * NATS nodes (R3 on a three-node cluster). Every round a relay commits is
 * one entry of that log: the store calls it made that write (put, acked,
 * device, notices, groups...), with their inputs. Every relay applies
 * every entry, in the log's order, to a replica it keeps in memory (the
 * SQLite engine on ":memory:", store/relay_sqlite.c), so all replicas
 * hold the same state and the relay core reads its own. A commit publishes
 * the entry and waits for JetStream's acknowledgement, i.e. replication,
 * before the relay answers anything that rests on it. The entry carries
 * a hash of its calls' answers as the writer saw them; a replica applies
 * an entry only if its calls give the same answers at its place in the
 * log, and undoes it otherwise. Every replica meets it in the same state,
 * so all decide alike. When no entry came between the writer's view and
 * its entry, the answers hold by construction; when others did (another
 * relay wrote at the same time), the writer applies them and then its
 * own by that rule: to different inboxes, the answers hold; for the same
 * one, the entry is refused everywhere, the commit fails and the core
 * answers BUSY (the clients resend). So the single relay's rules
 * (gap-free seqs, dedup, quotas, groups, notices) hold across relays,
 * with one engine that implements them.
 *
 * Other relays' entries arrive in the background (a NATS thread queues
 * them); remote_fd() turns readable, and remote_take() applies them and
 * names the inboxes and devices they touched, so that the relay wakes the
 * sessions it holds for them (relay/rcore.h, tern__rcore_wake_user).
 *
 * Threads: the store is used by one thread (the relay's); the NATS
 * library's threads only queue entries and note the connection's state.
 * May include: base/, store/, tern.h.
 */
#ifndef TERN_RELAY_NATS_H
#define TERN_RELAY_NATS_H

#include <stddef.h>
#include <stdint.h>

#include "base/log.h"
#include "store/relay_store.h"

typedef struct tern__nats_config {
  /* "nats://host:port[,...][?stream=NAME&replicas=N&snapshot=E]":
   * the cluster's servers (tried in this order; a lost connection moves
   * to the next, and one that stops answering is left after two missed
   * pings of max(timeout_ms, 1 s)), the
   * stream to use (default TERN; created if missing) and its replicas
   * when created (default: 3 when three or more servers are named, else
   * 1), and how many entries between snapshots that compact the log
   * (default 100000; 0: never). Not kept after open. */
  const char *url;
  /* How long a publish or a request to the cluster may take before it
   * counts as failed, in ms (0: 1000). The relay's loop waits that long
   * at most when the cluster stops answering; after a failure, commits
   * fail at once (BUSY) for 250 ms, doubling to 2 s while they go on
   * failing, so that the loop keeps serving its sessions while the
   * cluster elects a leader. */
  uint32_t timeout_ms;
  /* How long open() may take to read the log into the replica, in ms (0:
   * 120000). */
  uint32_t catchup_ms;
  tern__log_fn log; /* may be NULL */
  void *log_ctx;
} tern__nats_config;

/* Connects, finds or creates the stream, reads the whole log into a new
 * replica and opens the store. Returns 0, TERN_ESTORE (the cluster cannot
 * be reached, JetStream is off, the log cannot be read: why in err),
 * TERN_EINVAL (a malformed url), TERN_ENOMEM. */
int tern__relay_nats_open(tern__relay_store **out, const tern__nats_config *cfg, char *err,
                          size_t errcap);

/* What a cluster store has done, for logs, metrics and tests. */
typedef struct tern__nats_stats {
  uint64_t position;     /* the log sequence the replica has applied */
  uint64_t published;    /* entries this relay appended */
  uint64_t applied;      /* other relays' entries met in the log (applied or
                            refused) */
  uint64_t reruns;       /* own entries that others' came before: run again */
  uint64_t published_after_rerun; /* ... and that held */
  uint64_t refused;      /* entries (anyone's) refused because their answers
                            changed: the same on every replica */
  uint64_t publish_errors; /* publishes that failed (timeout, no cluster) */
  uint64_t fetched;      /* entries read one by one: the subscription lagged */
  uint64_t snapshots;    /* snapshots this relay wrote (and the log compacted) */
  uint64_t snapshot_loaded; /* the log position of the snapshot this relay
                               last loaded (0: it read the log from 1) */
  uint64_t snapshot_reloads; /* snapshots loaded while running: the relay had
                               fallen behind the compacted log */
  uint64_t log_first;    /* the log's first entry when this relay last
                            compacted it or started (1: never compacted) */
  uint64_t reread;       /* entries read again to confirm them (the
                            subscription had not delivered them) */
  uint64_t resyncs;      /* times the replica went back to a snapshot: it
                            had taken an entry the log does not have */
  uint64_t acks_refuted; /* own rounds acknowledged at a sequence where the
                            log has another entry: rolled back (BUSY) */
  uint64_t outvoted;     /* of the resyncs, those the other relays' window
                            hashes called for (the cross-check) */
  int connected;         /* 1 while connected to a NATS server */
} tern__nats_stats;
void tern__relay_nats_stats(const tern__relay_store *s, tern__nats_stats *out);
/* The replica's digest at its position (tern__rstore_digest; the audit's,
 * spec/store.md "The audit"), outside a round: 0, TERN_EINVAL (in a
 * round), TERN_ESTORE. */
int tern__relay_nats_digest(tern__relay_store *s, uint8_t out[16]);

/* 1 if `path` names a cluster store (starts with "nats://"). */
int tern__is_nats_url(const char *path);

#endif
