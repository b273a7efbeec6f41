/* The entries a cluster relay took on one server's word (confirm.h). */
#include "cluster/confirm.h"

#include <stdlib.h>
#include <string.h>

#include "tern/tern.h"

size_t tern__confirm_pending(const tern__confirm *c) { return c->n - c->head; }

/* The index of the pending entry at seq, or (size_t)-1. Pending entries
 * are sorted by sequence. */
static size_t find(const tern__confirm *c, uint64_t seq) {
  size_t lo = c->head, hi = c->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (c->e[mid].seq < seq) lo = mid + 1;
    else hi = mid;
  }
  return lo < c->n && c->e[lo].seq == seq ? lo : (size_t)-1;
}

static void take_out(tern__confirm *c, size_t i) {
  if (i == c->head) c->head++;
  else {
    memmove(c->e + i, c->e + i + 1, (c->n - i - 1) * sizeof *c->e);
    c->n--;
  }
  if (c->head == c->n) c->head = c->n = 0;
}

int tern__confirm_add(tern__confirm *c, uint64_t seq, const char *id, uint64_t now_ms) {
  while (c->n > c->head && c->e[c->n - 1].seq >= seq) c->n--;
  if (c->head == c->n) c->head = c->n = 0;
  if (c->n == c->cap) {
    if (c->head > 0) { /* room at the front: move the pending down */
      memmove(c->e, c->e + c->head, (c->n - c->head) * sizeof *c->e);
      c->n -= c->head;
      c->head = 0;
    } else {
      size_t cap = c->cap ? c->cap * 2 : 64;
      tern__confirm_ent *e = realloc(c->e, cap * sizeof *e);
      if (!e) return TERN_ENOMEM;
      c->e = e;
      c->cap = cap;
    }
  }
  tern__confirm_ent *x = &c->e[c->n++];
  x->seq = seq;
  x->at_ms = now_ms;
  size_t k = strlen(id);
  if (k > TERN__CONFIRM_ID_MAX) k = TERN__CONFIRM_ID_MAX;
  memcpy(x->id, id, k);
  x->id[k] = 0;
  return 0;
}

int tern__confirm_check(tern__confirm *c, uint64_t seq, const char *id, const char **took) {
  size_t i = find(c, seq);
  if (i == (size_t)-1) return 0;
  size_t k = strlen(id);
  if (k > TERN__CONFIRM_ID_MAX) k = TERN__CONFIRM_ID_MAX;
  if (strlen(c->e[i].id) != k || memcmp(c->e[i].id, id, k) != 0) {
    if (took) *took = c->e[i].id;
    return -1;
  }
  take_out(c, i);
  return 1;
}

void tern__confirm_drop(tern__confirm *c, uint64_t seq) {
  size_t i = find(c, seq);
  if (i != (size_t)-1) take_out(c, i);
}

const tern__confirm_ent *tern__confirm_due(const tern__confirm *c, uint64_t taken_by_ms) {
  /* Added in time order too (the caller's clock does not go back): the first pending is the oldest. */
  return c->head < c->n && c->e[c->head].at_ms <= taken_by_ms ? &c->e[c->head] : NULL;
}

void tern__confirm_clear(tern__confirm *c) { c->head = c->n = 0; }

void tern__confirm_free(tern__confirm *c) {
  free(c->e);
  *c = (tern__confirm){0};
}
