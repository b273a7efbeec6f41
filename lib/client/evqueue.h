/* A FIFO of client events that owns copies of their strings and bodies. */
#ifndef TERN_EVQUEUE_H
#define TERN_EVQUEUE_H

#include <stddef.h>

#include "tern/tern.h"

typedef struct tern__evq_item {
  tern_event ev;   /* ev.user / ev.to / ev.body point into `mem` */
  void *mem;       /* one allocation: user NUL-terminated, to NUL-terminated
                      (if any), then body */
} tern__evq_item;

typedef struct tern__evq {
  tern__evq_item *items;
  size_t head, count, cap;
  tern__evq_item current; /* the last item handed out; freed on the next take */
#ifdef TERN_TEST_HOOKS
  unsigned fail_next;     /* test builds: the next this many pushes fail */
#endif
} tern__evq;

void tern__evq_init(tern__evq *q);
void tern__evq_free(tern__evq *q);

/* Appends a copy of `ev` (its user string and body are copied). Returns 0 or
 * TERN_ENOMEM, with the queue unchanged: the caller must then undo what
 * the event stood for, so that it happens again (client/ccore.c). */
int tern__evq_push(tern__evq *q, const tern_event *ev);

/* Moves the oldest event to *ev (valid until the next take or release);
 * returns 1, or 0 when empty. */
int tern__evq_take(tern__evq *q, tern_event *ev);

/* Frees the event last handed out by take. */
void tern__evq_release(tern__evq *q);

#ifdef TERN_TEST_HOOKS
/* Test builds: the next `n` pushes fail as if memory ran out. */
void tern__evq_fail_next(tern__evq *q, unsigned n);
#endif

#endif
