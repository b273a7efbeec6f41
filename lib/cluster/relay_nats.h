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
 * hold the same state and the relay core reads its own. A commit is a
 * publish that JetStream accepts only if the log has not grown since the
 * replica's position (expected last sequence); the relay answers nothing
 * before that publish is acknowledged, i.e. replicated. When another
 * relay's entry came first, the relay applies it, runs its round again on
 * top, and publishes again if every call gives the same answers as before
 * (the core already acted on them); if an answer changed, the commit
 * fails and the core answers BUSY (the clients resend). So the single
 * relay's rules (gap-free seqs, dedup, quotas, groups, notices) hold
 * unchanged across relays, with one engine that implements them.
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
  /* "nats://host:port[,nats://host:port...][?stream=NAME&replicas=N]":
   * the cluster's servers (any of them; the client finds the rest), the
   * stream to use (default TERN; created if missing) and its replicas
   * when created (default: 3 when three or more servers are named, else
   * 1). Not kept after open. */
  const char *url;
  /* How long a publish or a request to the cluster may take before it
   * counts as failed, in ms (0: 2000). The relay's loop waits that long
   * at most when the cluster stops answering. */
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
  uint64_t applied;      /* other relays' entries applied */
  uint64_t conflicts;    /* publishes refused because the log had grown */
  uint64_t rerun_failed; /* rounds whose answers changed when run again: BUSY */
  uint64_t diverged;     /* entries whose answers here differ from the writer's:
                            must stay 0 (the replicas would disagree) */
  uint64_t publish_errors; /* publishes that failed (timeout, no cluster) */
  int connected;         /* 1 while connected to a NATS server */
} tern__nats_stats;
void tern__relay_nats_stats(const tern__relay_store *s, tern__nats_stats *out);

/* 1 if `path` names a cluster store (starts with "nats://"). */
int tern__is_nats_url(const char *path);

#endif
