/* Frames waiting to be sent (outq.h). */
#include "wire/outq.h"

#include <stdlib.h>
#include <string.h>

void tern__outq_init(tern__outq *q) {
  q->head = NULL;
  q->tail = &q->head;
  q->current = NULL;
}

void tern__outq_clear(tern__outq *q) {
  tern__outq_item *it;
  while ((it = tern__outq_take(q))) free(it);
  free(q->current);
  q->current = NULL;
}

void tern__outq_append(tern__outq *q, tern__outq_item *it) {
  it->next = NULL;
  *q->tail = it;
  q->tail = &it->next;
}

tern__outq_item *tern__outq_push(tern__outq *q, uint64_t conn, uint8_t channel, int reliable,
                                 const uint8_t *data, size_t len) {
  tern__outq_item *it = malloc(sizeof(*it) + len);
  if (!it) return NULL;
  memset(it, 0, sizeof(*it));
  it->conn = conn;
  it->channel = channel;
  it->reliable = reliable;
  it->len = len;
  if (len) memcpy(it->data, data, len);
  tern__outq_append(q, it);
  return it;
}

void tern__outq_move_all(tern__outq *to, tern__outq *from) {
  if (!from->head) return;
  *to->tail = from->head;
  to->tail = from->tail;
  from->head = NULL;
  from->tail = &from->head;
}

tern__outq_item *tern__outq_take(tern__outq *q) {
  tern__outq_item *it = q->head;
  if (!it) return NULL;
  q->head = it->next;
  if (!q->head) q->tail = &q->head;
  it->next = NULL;
  return it;
}

const tern__outq_item *tern__outq_pop(tern__outq *q) {
  free(q->current);
  q->current = tern__outq_take(q);
  return q->current;
}
