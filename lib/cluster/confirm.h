/*
 * The entries a cluster relay took on one server's word (spec/store.md,
 * "Confirming entries"): an entry read by sequence, or this relay's own
 * round committed in place on its acknowledgement, before the
 * subscription delivered it. A server that lost its leadership without
 * knowing can, for a moment, acknowledge and serve an entry the committed
 * log does not have; the relay keeps each such entry's sequence and
 * writer id here until the subscription delivers the same entry at that
 * sequence, or a second read some seconds later gives it again. A
 * different entry at that sequence means the replica took one the log
 * does not have.
 *
 * Sans-I/O: the caller reads the log and keeps the time. Entries are added
 * in increasing sequence (an add at or below the newest drops the newer
 * ones: the replica went back, a snapshot reloaded).
 */
#ifndef TERN_CLUSTER_CONFIRM_H
#define TERN_CLUSTER_CONFIRM_H

#include <stddef.h>
#include <stdint.h>

#define TERN__CONFIRM_ID_MAX 47 /* a writer id: "r<16 hex>-<round>" fits */

typedef struct tern__confirm_ent {
  uint64_t seq;
  uint64_t at_ms; /* when it was taken */
  char id[TERN__CONFIRM_ID_MAX + 1];
} tern__confirm_ent;

/* Zero-initialised is empty. Owns its array (tern__confirm_free). */
typedef struct tern__confirm {
  tern__confirm_ent *e;
  size_t head, n, cap; /* pending: e[head..n) */
} tern__confirm;

/* Notes entry `seq` taken with writer `id` at now_ms (an id longer than
 * TERN__CONFIRM_ID_MAX is cut: ids are compared as cut). 0 or TERN_ENOMEM
 * (nothing noted). */
int tern__confirm_add(tern__confirm *c, uint64_t seq, const char *id, uint64_t now_ms);

/* The log has entry `seq` with writer `id` (delivered, or read again):
 * 1 it matches what was taken (no longer pending), 0 nothing is pending at
 * seq, -1 the replica took another entry there (*took, if not NULL, is
 * its id, valid until the next call on c). */
int tern__confirm_check(tern__confirm *c, uint64_t seq, const char *id, const char **took);

/* Drops the entry pending at `seq` unchecked (the log no longer has it: a
 * snapshot covers it). */
void tern__confirm_drop(tern__confirm *c, uint64_t seq);

/* The oldest pending entry taken at or before `taken_by_ms`, or NULL. */
const tern__confirm_ent *tern__confirm_due(const tern__confirm *c, uint64_t taken_by_ms);

/* How many entries are pending. */
size_t tern__confirm_pending(const tern__confirm *c);

/* Forgets every pending entry (the replica was replaced). */
void tern__confirm_clear(tern__confirm *c);

void tern__confirm_free(tern__confirm *c);

#endif
