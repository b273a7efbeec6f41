/* The queue of events the app takes (evqueue.h). */
#include "client/evqueue.h"

#include <stdlib.h>
#include <string.h>

void tern__evq_init(tern__evq *q) { memset(q, 0, sizeof(*q)); }

void tern__evq_release(tern__evq *q) {
  free(q->current.mem);
  memset(&q->current, 0, sizeof(q->current));
}

void tern__evq_free(tern__evq *q) {
  tern__evq_release(q);
  for (size_t i = 0; i < q->count; i++) free(q->items[(q->head + i) % q->cap].mem);
  free(q->items);
  memset(q, 0, sizeof(*q));
}

static int grow(tern__evq *q) {
  size_t ncap = q->cap ? q->cap * 2 : 16;
  tern__evq_item *n = malloc(ncap * sizeof(*n));
  if (!n) return TERN_ENOMEM;
  for (size_t i = 0; i < q->count; i++) n[i] = q->items[(q->head + i) % q->cap];
  free(q->items);
  q->items = n;
  q->cap = ncap;
  q->head = 0;
  return 0;
}

#ifdef TERN_TEST_HOOKS
void tern__evq_fail_next(tern__evq *q, unsigned n) { q->fail_next = n; }
#endif

int tern__evq_push(tern__evq *q, const tern_event *ev) {
#ifdef TERN_TEST_HOOKS
  if (q->fail_next) {
    q->fail_next--;
    return TERN_ENOMEM;
  }
#endif
  if (q->count == q->cap && grow(q) != 0) return TERN_ENOMEM;
  size_t ulen = ev->user ? strlen(ev->user) : 0;
  size_t tlen = ev->to ? strlen(ev->to) + 1 : 0;
  char *mem = malloc(ulen + 1 + tlen + ev->body_len);
  if (!mem) return TERN_ENOMEM;
  memcpy(mem, ev->user ? ev->user : "", ulen + 1);
  if (tlen) memcpy(mem + ulen + 1, ev->to, tlen);
  if (ev->body_len) memcpy(mem + ulen + 1 + tlen, ev->body, ev->body_len);
  tern__evq_item *it = &q->items[(q->head + q->count) % q->cap];
  it->ev = *ev;
  it->ev.user = mem;
  it->ev.to = tlen ? mem + ulen + 1 : NULL;
  it->ev.body = ev->body_len ? (const uint8_t *)mem + ulen + 1 + tlen : NULL;
  it->mem = mem;
  q->count++;
  return 0;
}

int tern__evq_take(tern__evq *q, tern_event *ev) {
  tern__evq_release(q);
  if (q->count == 0) {
    memset(ev, 0, sizeof(*ev));
    return 0;
  }
  q->current = q->items[q->head];
  q->head = (q->head + 1) % q->cap;
  q->count--;
  *ev = q->current.ev;
  return 1;
}
