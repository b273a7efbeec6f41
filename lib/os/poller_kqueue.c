/*
 * The poller on kqueue (poller.h), for macOS, iOS and the BSDs (and Linux
 * through libkqueue). The kqueue is the single descriptor; a child
 * poller's kqueue sits in its parent's as a readable descriptor. kqueue
 * watches reading and writing as two filters, so the poller keeps each
 * descriptor's interest and tag (fdtab.h, under a lock: one thread may
 * wait while another changes the set) to add and delete the right ones.
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

struct tern__poller {
  int kq;
  pthread_mutex_t mu;
  tern__fdtab tab;
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

int tern__poller_add(tern__poller *p, int fd, unsigned events, uint64_t tag) {
  if (fd < 0) return TERN_EINVAL;
  pthread_mutex_lock(&p->mu);
  tern__fdtab_ent *e = tern__fdtab_slot(&p->tab, fd);
  int rc = !e ? TERN_ENOMEM : e->used ? TERN_EEXIST : apply(p, fd, 0, events);
  if (rc == 0) *e = (tern__fdtab_ent){.tag = tag, .used = 1, .events = (uint8_t)events};
  pthread_mutex_unlock(&p->mu);
  return rc;
}

int tern__poller_mod(tern__poller *p, int fd, unsigned events, uint64_t tag) {
  pthread_mutex_lock(&p->mu);
  tern__fdtab_ent *e = tern__fdtab_get(&p->tab, fd);
  int rc = e ? apply(p, fd, e->events, events) : TERN_ENOENT;
  if (rc == 0) {
    e->events = (uint8_t)events;
    e->tag = tag;
  }
  pthread_mutex_unlock(&p->mu);
  return rc;
}

int tern__poller_del(tern__poller *p, int fd) {
  pthread_mutex_lock(&p->mu);
  tern__fdtab_ent *e = tern__fdtab_get(&p->tab, fd);
  if (e) {
    (void)apply(p, fd, e->events, 0);
    e->used = 0;
  }
  pthread_mutex_unlock(&p->mu);
  return e ? 0 : TERN_ENOENT;
}

int tern__poller_nest(tern__poller *parent, tern__poller *child, uint64_t tag) {
  return tern__poller_add(parent, child->kq, TERN__POLL_IN, tag);
}

void tern__poller_unnest(tern__poller *parent, tern__poller *child) {
  (void)tern__poller_del(parent, child->kq);
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
     * shows on either. */
    unsigned got = e[i].filter == EVFILT_READ ? TERN__POLL_IN : TERN__POLL_OUT;
    if (e[i].flags & EV_ERROR) got = TERN__POLL_IN | TERN__POLL_OUT;
    /* Reading and writing come as two events; one per descriptor. */
    if (n > 0 && ev[n - 1].tag == t->tag) ev[n - 1].events |= got;
    else ev[n++] = (tern__poll_event){.tag = t->tag, .events = got};
  }
  pthread_mutex_unlock(&p->mu);
  return n;
}

int tern__poller_fd(const tern__poller *p) { return p->kq; }

size_t tern__poller_pollfds(tern__poller *p, struct pollfd *fds, size_t n) {
  if (n >= 1) fds[0] = (struct pollfd){.fd = p->kq, .events = POLLIN};
  return 1;
}
