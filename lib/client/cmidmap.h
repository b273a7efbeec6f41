/*
 * The outbox's index by cmid: an open-addressing hash table (linear
 * probing, deletion by backward shift, no tombstones) from a message's
 * cmid to its outbox entry, so that an ack, a BUSY or a receipt finds its
 * message in constant time however long the outbox grows (an app that
 * sends faster than the relay takes holds thousands).
 *
 * The map stores pointers; it owns only its table, never what they point
 * to. cmid 0 is never a key (cmids start at 1).
 */
#ifndef TERN_CMIDMAP_H
#define TERN_CMIDMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct tern__cmidmap {
  struct tern__cmidslot *slots; /* cap of them, cap a power of two; NULL while empty */
  size_t cap, n;
} tern__cmidmap;

void tern__cmidmap_init(tern__cmidmap *m);
void tern__cmidmap_free(tern__cmidmap *m);
/* Adds cmid -> p (cmid not yet present, p not NULL). 0 or TERN_ENOMEM
 * (the map is unchanged). */
int tern__cmidmap_put(tern__cmidmap *m, uint64_t cmid, void *p);
/* What cmid maps to, or NULL. */
void *tern__cmidmap_get(const tern__cmidmap *m, uint64_t cmid);
/* Removes cmid if present. */
void tern__cmidmap_del(tern__cmidmap *m, uint64_t cmid);

#endif
