/*
 * The poller on kqueue (poller.h), for macOS, iOS and the BSDs (and Linux
 * through libkqueue). The kqueue is the single descriptor. kqueue watches
 * reading and writing as two filters, so the poller keeps each
 * descriptor's interest and tag (fdtab.h, under a lock: one thread may
 * wait while another changes the set) to add and delete the right ones.
 *
 * Nesting mirrors: every descriptor of a child is registered in its
 * parent's kqueue too (and in the grandparent's, up to the top), marked
 * as the child's, and reported there as (the child's tag, readable). A
 * kernel kqueue could watch a child's kqueue descriptor instead, but
 * libkqueue's descriptor is the write end of a pipe that never becomes
 * readable; mirroring works on both. Locks are taken child first, then
 * parent.
 */
#include "os/poller.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/event.h>
#include <sys/time.h>
#include <unistd.h>

#include "os/fdtab.h"
#include "os/sock.h"
#include "tern/tern.h"

/* fdtab's slot: whose the descriptor is. */
enum { OWN = 0, MIRRORED = 1 };

struct tern__poller {
  int kq;
  pthread_mutex_t mu;
  tern__fdtab tab;        /* own descriptors, and the mirrored ones of children */
  tern__poller *parent;   /* set by tern__poller_nest */
  uint64_t ptag;          /* this poller's tag in its parent */
};

const char *tern__poller_backend(void) { return "kqueue"; }

int tern__poller_new(tern__poller **out) {
  *out = NULL;
  tern__poller *p = calloc(1, sizeof(*p));
  if (!p) return TERN_ENOMEM;
  p->kq = kqueue();
  if (p->kq < 0) {
    int e = errno;
    free(p);
    errno = e;
    return TERN_ERESOURCE;
  }
  /* Not inherited by fork() on the BSDs anyway; a system (or libkqueue)
   * where it would be gets the flag. */
  (void)tern__os_fdflags(p->kq, 0);
  pthread_mutex_init(&p->mu, NULL);
  *out = p;
  return 0;
}

void tern__poller_free(tern__poller *p) {
  if (!p) return;
  close(p->kq);
  tern__fdtab_free(&p->tab);
  pthread_mutex_destroy(&p->mu);
  free(p);
}

/* Moves fd's filters from interest `was` to `now`. 0 or TERN_EIO. */
static int apply(tern__poller *p, int fd, unsigned was, unsigned now) {
  struct kevent ch[2];
  int n = 0;
  if ((was ^ now) & TERN__POLL_IN)
    EV_SET(&ch[n++], (uintptr_t)fd, EVFILT_READ, (now & TERN__POLL_IN) ? EV_ADD : EV_DELETE, 0, 0, NULL);
  if ((was ^ now) & TERN__POLL_OUT)
    EV_SET(&ch[n++], (uintptr_t)fd, EVFILT_WRITE, (now & TERN__POLL_OUT) ? EV_ADD : EV_DELETE, 0, 0,
           NULL);
  if (n == 0) return 0;
  return kevent(p->kq, ch, n, NULL, 0, NULL) == 0 ? 0 : TERN_EIO;
}

/* Mirrors fd, watched for `events` by `from` (present: 0 to take it
 * out), into the ancestors of `from`: each sees it as its child's on the
 * way. 0 or the first failure. The caller holds from->mu. */
static int mirror(tern__poller *from, int fd, unsigned events, int present) {
  int rc = 0;
  for (tern__poller *c = from, *q = from->parent; q && rc == 0; c = q, q = q->parent) {
    pthread_mutex_lock(&q->mu);
    tern__fdtab_ent *e = tern__fdtab_slot(&q->tab, fd);
    if (!e) rc = TERN_ENOMEM;
    else if (!present) {
      if (e->used && e->slot == MIRRORED) {
        (void)apply(q, fd, e->events, 0);
        e->used = 0;
      }
    } else if (e->used && e->slot == OWN) {
      rc = TERN_EEXIST;
    } else if ((rc = apply(q, fd, e->used ? e->events : 0, events)) == 0) {
      *e = (tern__fdtab_ent){.tag = c->ptag, .slot = MIRRORED, .used = 1, .events = (uint8_t)events};
    }
    pthread_mutex_unlock(&q->mu);
  }
  return rc;
}

int tern__poller_add(tern__poller *p, int fd, unsigned events, uint64_t tag) {
  if (fd < 0) return TERN_EINVAL;
  pthread_mutex_lock(&p->mu);
  tern__fdtab_ent *e = tern__fdtab_slot(&p->tab, fd);
  int rc = !e ? TERN_ENOMEM : e->used ? TERN_EEXIST : apply(p, fd, 0, events);
  if (rc == 0) {
    *e = (tern__fdtab_ent){.tag = tag, .slot = OWN, .used = 1, .events = (uint8_t)events};
    if ((rc = mirror(p, fd, events, 1)) != 0) {
      (void)mirror(p, fd, 0, 0);
      (void)apply(p, fd, events, 0);
      e->used = 0;
    }
  }
  pthread_mutex_unlock(&p->mu);
  return rc;
}

int tern__poller_mod(tern__poller *p, int fd, unsigned events, uint64_t tag) {
  pthread_mutex_lock(&p->mu);
  tern__fdtab_ent *e = tern__fdtab_get(&p->tab, fd);
  int rc = e && e->slot == OWN ? apply(p, fd, e->events, events) : TERN_ENOENT;
  if (rc == 0) {
    e->events = (uint8_t)events;
    e->tag = tag;
    rc = mirror(p, fd, events, 1);
  }
  pthread_mutex_unlock(&p->mu);
  return rc;
}

int tern__poller_del(tern__poller *p, int fd) {
  pthread_mutex_lock(&p->mu);
  tern__fdtab_ent *e = tern__fdtab_get(&p->tab, fd);
  int own = e && e->slot == OWN;
  if (own) {
    (void)apply(p, fd, e->events, 0);
    e->used = 0;
    (void)mirror(p, fd, 0, 0);
  }
  pthread_mutex_unlock(&p->mu);
  return own ? 0 : TERN_ENOENT;
}

/* Mirrors (present) or takes out every descriptor child holds, its own
 * and its children's, in its ancestors. The caller holds child->mu. */
static int mirror_all(tern__poller *child, int present) {
  int rc = 0;
  for (size_t fd = 0; fd < child->tab.cap && rc == 0; fd++)
    if (child->tab.e[fd].used) rc = mirror(child, (int)fd, child->tab.e[fd].events, present);
  return rc;
}

int tern__poller_nest(tern__poller *parent, tern__poller *child, uint64_t tag) {
  pthread_mutex_lock(&child->mu);
  int rc = 0;
  if (child->parent) rc = TERN_EEXIST;
  else {
    child->parent = parent;
    child->ptag = tag;
    if ((rc = mirror_all(child, 1)) != 0) {
      (void)mirror_all(child, 0);
      child->parent = NULL;
    }
  }
  pthread_mutex_unlock(&child->mu);
  return rc;
}

void tern__poller_unnest(tern__poller *parent, tern__poller *child) {
  pthread_mutex_lock(&child->mu);
  if (child->parent == parent) {
    (void)mirror_all(child, 0);
    child->parent = NULL;
  }
  pthread_mutex_unlock(&child->mu);
}

int tern__poller_wait(tern__poller *p, tern__poll_event *ev, int max, int timeout_ms) {
  struct kevent e[64];
  if (max > 64) max = 64;
  if (max < 1) max = 1;
  struct timespec ts = {.tv_sec = timeout_ms / 1000, .tv_nsec = (long)(timeout_ms % 1000) * 1000000};
  int k = kevent(p->kq, NULL, 0, e, max, timeout_ms < 0 ? NULL : &ts);
  if (k < 0) return errno == EINTR ? TERN_EAGAIN : TERN_EIO;
  int n = 0;
  pthread_mutex_lock(&p->mu);
  for (int i = 0; i < k; i++) {
    int fd = (int)e[i].ident;
    /* Taken out while this thread waited: nothing to report. */
    const tern__fdtab_ent *t = tern__fdtab_get(&p->tab, fd);
    if (!t) continue;
    /* The end of the stream comes on the read filter (EV_EOF); an error
     * shows on either. A child's descriptor is the child, readable. */
    unsigned got = e[i].filter == EVFILT_READ ? TERN__POLL_IN : TERN__POLL_OUT;
    if (e[i].flags & EV_ERROR) got = TERN__POLL_IN | TERN__POLL_OUT;
    if (t->slot == MIRRORED) got = TERN__POLL_IN;
    /* Reading and writing come as two events, and a child's descriptors
     * as several: one event per tag. */
    int j = 0;
    while (j < n && ev[j].tag != t->tag) j++;
    if (j < n) ev[j].events |= got;
    else ev[n++] = (tern__poll_event){.tag = t->tag, .events = got};
  }
  pthread_mutex_unlock(&p->mu);
  return n;
}

#ifndef TERN_LIBKQUEUE
int tern__poller_fd(const tern__poller *p) { return p->kq; }

size_t tern__poller_pollfds(tern__poller *p, struct pollfd *fds, size_t n) {
  if (n >= 1) fds[0] = (struct pollfd){.fd = p->kq, .events = POLLIN};
  return 1;
}
#else
/* libkqueue (kqueue on Linux): its descriptor never becomes readable, so
 * there is no single descriptor to hand out; the app polls every
 * descriptor the poller watches (its children's are mirrored in it). */
int tern__poller_fd(const tern__poller *p) {
  (void)p;
  return -1;
}

size_t tern__poller_pollfds(tern__poller *p, struct pollfd *fds, size_t n) {
  size_t len = 0;
  pthread_mutex_lock(&p->mu);
  for (size_t fd = 0; fd < p->tab.cap; fd++) {
    const tern__fdtab_ent *e = &p->tab.e[fd];
    if (!e->used || !e->events) continue;
    if (len < n)
      fds[len] = (struct pollfd){.fd = (int)fd,
                                 .events = (short)(((e->events & TERN__POLL_IN) ? POLLIN : 0) |
                                                   ((e->events & TERN__POLL_OUT) ? POLLOUT : 0))};
    len++;
  }
  pthread_mutex_unlock(&p->mu);
  return len;
}
#endif
