/*
 * A FIFO of frames waiting to be sent, each a copy owned by the queue, with
 * the tags its core needs (connection, channel, reliability, and a kind and
 * cmid a core may use to treat some items differently). Both messaging
 * cores queue their outputs here (client/ccore.c, relay/rcore.c); the relay
 * core moves a round's items from its held queue to its ready queue at the
 * commit. Sans-I/O. May include: base/.
 */
#ifndef TERN_OUTQ_H
#define TERN_OUTQ_H

#include <stddef.h>
#include <stdint.h>

typedef struct tern__outq_item {
  struct tern__outq_item *next;
  uint64_t conn;     /* the relay's connection id (0 on the client) */
  uint8_t channel;
  int reliable;
  int kind;          /* the owner's tag */
  uint64_t cmid;     /* the owner's tag */
  size_t len;
  uint8_t data[];
} tern__outq_item;

typedef struct tern__outq {
  tern__outq_item *head, **tail;
  tern__outq_item *current; /* the item last popped: freed by the next pop */
} tern__outq;

void tern__outq_init(tern__outq *q);
/* Frees every item, and the current one. */
void tern__outq_clear(tern__outq *q);

/* Appends a copy of data[0..len) with its tags. Returns the item (owned by
 * the queue), or NULL if out of memory (the caller's output is then lost:
 * each core says why that is a delay and not a loss). */
tern__outq_item *tern__outq_push(tern__outq *q, uint64_t conn, uint8_t channel, int reliable,
                                 const uint8_t *data, size_t len);

/* Appends an item taken from another queue (tern__outq_take). */
void tern__outq_append(tern__outq *q, tern__outq_item *it);

/* Moves every item of `from` to the end of `to`, in order. */
void tern__outq_move_all(tern__outq *to, tern__outq *from);

/* Takes the first item out (the caller owns it now), or NULL. */
tern__outq_item *tern__outq_take(tern__outq *q);

/* Takes the first item out and keeps it as `current` until the next call
 * (so its data stays valid for the caller meanwhile); NULL when empty. */
const tern__outq_item *tern__outq_pop(tern__outq *q);

#endif
