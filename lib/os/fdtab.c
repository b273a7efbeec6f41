/* Descriptor -> poller bookkeeping (fdtab.h). */
#include "os/fdtab.h"

#include <stdlib.h>
#include <string.h>

tern__fdtab_ent *tern__fdtab_slot(tern__fdtab *t, int fd) {
  if (fd < 0) return NULL;
  if ((size_t)fd >= t->cap) {
    size_t cap = t->cap ? t->cap : 64;
    while (cap <= (size_t)fd) cap *= 2;
    tern__fdtab_ent *e = realloc(t->e, cap * sizeof(*e));
    if (!e) return NULL;
    memset(e + t->cap, 0, (cap - t->cap) * sizeof(*e));
    t->e = e;
    t->cap = cap;
  }
  return &t->e[fd];
}

tern__fdtab_ent *tern__fdtab_get(const tern__fdtab *t, int fd) {
  if (fd < 0 || (size_t)fd >= t->cap || !t->e[fd].used) return NULL;
  return &t->e[fd];
}

void tern__fdtab_free(tern__fdtab *t) {
  free(t->e);
  t->e = NULL;
  t->cap = 0;
}
