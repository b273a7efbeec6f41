/*
 * A table from descriptor to what a poller knows of it (interest, tag, and
 * a slot of the backend's own): the bookkeeping the kqueue and poll()
 * backends share. Not locked: the poller that owns it is.
 */
#ifndef TERN_FDTAB_H
#define TERN_FDTAB_H

#include <stddef.h>
#include <stdint.h>

typedef struct tern__fdtab_ent {
  uint64_t tag;
  uint32_t slot;   /* the backend's: the poll() backend's index in its array */
  uint8_t used;
  uint8_t events;  /* TERN__POLL_IN / _OUT */
} tern__fdtab_ent;

typedef struct tern__fdtab {
  tern__fdtab_ent *e; /* by descriptor */
  size_t cap;
} tern__fdtab;

/* fd's entry, made (zeroed, not yet used) if the table must grow to hold
 * it; NULL if fd < 0 or out of memory. */
tern__fdtab_ent *tern__fdtab_slot(tern__fdtab *t, int fd);
/* fd's entry if it is used, else NULL. */
tern__fdtab_ent *tern__fdtab_get(const tern__fdtab *t, int fd);
void tern__fdtab_free(tern__fdtab *t);

#endif
