/*
 * A map from a nonzero 64-bit key to a pointer: an open-addressing hash
 * table (linear probing, deletion by backward shift, no tombstones). The
 * client's outbox finds a message by cmid with it, so that an ack, a BUSY
 * or a receipt costs the same however long the outbox grows; the relay
 * finds a session by its id. Keys are numbered consecutively by their
 * owners (not chosen by peers), which the hash suits.
 *
 * The map stores pointers; it owns only its table, never what they point
 * to. Key 0 is never present. Not thread-safe. May include: tern.h.
 */
#ifndef TERN_U64MAP_H
#define TERN_U64MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct tern__u64map {
  struct tern__u64slot *slots; /* cap of them, cap a power of two; NULL while empty */
  size_t cap, n;
} tern__u64map;

void tern__u64map_init(tern__u64map *m);
void tern__u64map_free(tern__u64map *m);
/* Adds key -> p (key not yet present, p not NULL). 0 or TERN_ENOMEM
 * (the map is unchanged). */
int tern__u64map_put(tern__u64map *m, uint64_t key, void *p);
/* What key maps to, or NULL. */
void *tern__u64map_get(const tern__u64map *m, uint64_t key);
/* Removes key if present. */
void tern__u64map_del(tern__u64map *m, uint64_t key);

#endif
