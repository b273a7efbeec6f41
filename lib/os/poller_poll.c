/*
 * The poller on plain POSIX poll() (poller.h), for any POSIX system. There
 * is no single descriptor: the poller keeps its descriptors in an array,
 * and a wait polls a copy of it with every nested child's descriptors
 * appended (flattened), reporting a ready child's descriptor as the
 * child's tag. The copy is made under the poller's lock and polled
 * without it, so another thread may change the set meanwhile (the change
 * counts from the next wait on).
 */
#include "os/poller.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "os/fdtab.h"
#include "tern/tern.h"

typedef struct kid {
  tern__poller *p;
  uint64_t tag;
} kid;

/* One entry of a wait's copy: whose it is and what it was watched for. */
typedef struct snap {
  uint64_t tag;
  long group;        /* -1: the poller's own descriptor; else the child's index */
} snap;

struct tern__poller {
  pthread_mutex_t mu;
  tern__fdtab tab;      /* descriptor -> interest, tag, index in pf */
  struct pollfd *pf;    /* the poller's own descriptors, dense */
  size_t n, cap;
  kid *kids;
  size_t nkids, kcap;
  tern__poller *parent;
  struct pollfd *wpf;   /* a wait's copy (the waiting thread's) */
  snap *wsn;
  size_t wcap;
};

const char *tern__poller_backend(void) { return "poll"; }

int tern__poller_new(tern__poller **out) {
  *out = NULL;
  tern__poller *p = calloc(1, sizeof(*p));
  if (!p) return TERN_ENOMEM;
  pthread_mutex_init(&p->mu, NULL);
  *out = p;
  return 0;
}

void tern__poller_free(tern__poller *p) {
  if (!p) return;
  tern__fdtab_free(&p->tab);
  free(p->pf);
  free(p->kids);
  free(p->wpf);
  free(p->wsn);
  pthread_mutex_destroy(&p->mu);
  free(p);
}

static short to_poll(unsigned events) {
  return (short)(((events & TERN__POLL_IN) ? POLLIN : 0) | ((events & TERN__POLL_OUT) ? POLLOUT : 0));
}

int tern__poller_add(tern__poller *p, int fd, unsigned events, uint64_t tag) {
  if (fd < 0) return TERN_EINVAL;
  int rc = 0;
  pthread_mutex_lock(&p->mu);
  tern__fdtab_ent *e = tern__fdtab_slot(&p->tab, fd);
  if (!e) rc = TERN_ENOMEM;
  else if (e->used) rc = TERN_EEXIST;
  else if (p->n == p->cap) {
    size_t cap = p->cap ? p->cap * 2 : 16;
    struct pollfd *pf = realloc(p->pf, cap * sizeof(*pf));
    if (!pf) rc = TERN_ENOMEM;
    else {
      p->pf = pf;
      p->cap = cap;
    }
  }
  if (rc == 0) {
    *e = (tern__fdtab_ent){.tag = tag, .slot = (uint32_t)p->n, .used = 1, .events = (uint8_t)events};
    p->pf[p->n++] = (struct pollfd){.fd = fd, .events = to_poll(events)};
  }
  pthread_mutex_unlock(&p->mu);
  return rc;
}

int tern__poller_mod(tern__poller *p, int fd, unsigned events, uint64_t tag) {
  pthread_mutex_lock(&p->mu);
  tern__fdtab_ent *e = tern__fdtab_get(&p->tab, fd);
  if (e) {
    e->tag = tag;
    e->events = (uint8_t)events;
    p->pf[e->slot].events = to_poll(events);
  }
  pthread_mutex_unlock(&p->mu);
  return e ? 0 : TERN_ENOENT;
}

int tern__poller_del(tern__poller *p, int fd) {
  pthread_mutex_lock(&p->mu);
  tern__fdtab_ent *e = tern__fdtab_get(&p->tab, fd);
  if (e) {
    /* The last entry fills the hole. */
    uint32_t i = e->slot;
    p->pf[i] = p->pf[--p->n];
    if (i < p->n) p->tab.e[p->pf[i].fd].slot = i;
    e->used = 0;
  }
  pthread_mutex_unlock(&p->mu);
  return e ? 0 : TERN_ENOENT;
}

int tern__poller_nest(tern__poller *parent, tern__poller *child, uint64_t tag) {
  int rc = 0;
  pthread_mutex_lock(&parent->mu);
  if (child->parent) rc = TERN_EEXIST;
  else if (parent->nkids == parent->kcap) {
    size_t cap = parent->kcap ? parent->kcap * 2 : 4;
    kid *k = realloc(parent->kids, cap * sizeof(*k));
    if (!k) rc = TERN_ENOMEM;
    else {
      parent->kids = k;
      parent->kcap = cap;
    }
  }
  if (rc == 0) {
    parent->kids[parent->nkids++] = (kid){.p = child, .tag = tag};
    child->parent = parent;
  }
  pthread_mutex_unlock(&parent->mu);
  return rc;
}

void tern__poller_unnest(tern__poller *parent, tern__poller *child) {
  pthread_mutex_lock(&parent->mu);
  for (size_t i = 0; i < parent->nkids; i++)
    if (parent->kids[i].p == child) {
      memmove(&parent->kids[i], &parent->kids[i + 1], (parent->nkids - i - 1) * sizeof(kid));
      parent->nkids--;
      child->parent = NULL;
      break;
    }
  pthread_mutex_unlock(&parent->mu);
}

/* Appends what p watches (its children's descriptors too) to out[*len..],
 * as long as there is room (cap); counts all of it in *len. With `sn`,
 * each entry's owner: group -1 and its own tag for p's own (only at the
 * top), else the top-level child's index `group` and its tag `gtag`.
 * p->mu is held by the caller; the children's are taken here. */
static void flatten(tern__poller *p, struct pollfd *out, snap *sn, size_t cap, size_t *len,
                    long group, uint64_t gtag) {
  for (size_t i = 0; i < p->n; i++) {
    if (!p->pf[i].events) continue; /* registered, not watched */
    if (*len < cap) {
      out[*len] = (struct pollfd){.fd = p->pf[i].fd, .events = p->pf[i].events};
      if (sn) {
        const tern__fdtab_ent *e = &p->tab.e[p->pf[i].fd];
        sn[*len] = (snap){.tag = group < 0 ? e->tag : gtag, .group = group};
      }
    }
    (*len)++;
  }
  for (size_t k = 0; k < p->nkids; k++) {
    tern__poller *c = p->kids[k].p;
    pthread_mutex_lock(&c->mu);
    if (group < 0) flatten(c, out, sn, cap, len, (long)k, p->kids[k].tag);
    else flatten(c, out, sn, cap, len, group, gtag);
    pthread_mutex_unlock(&c->mu);
  }
}

/* The wait's copy of what to poll, in p->wpf/p->wsn. Returns its length,
 * or -1 out of memory. */
static long snapshot(tern__poller *p) {
  pthread_mutex_lock(&p->mu);
  size_t len = 0;
  flatten(p, p->wpf, p->wsn, p->wcap, &len, -1, 0);
  if (len > p->wcap) {
    size_t cap = len + len / 2 + 8;
    struct pollfd *w = realloc(p->wpf, cap * sizeof(*w));
    if (w) p->wpf = w;
    snap *s = w ? realloc(p->wsn, cap * sizeof(*s)) : NULL;
    if (s) {
      p->wsn = s;
      p->wcap = cap;
      len = 0;
      flatten(p, p->wpf, p->wsn, p->wcap, &len, -1, 0);
    }
  }
  pthread_mutex_unlock(&p->mu);
  return len <= p->wcap ? (long)len : -1;
}

int tern__poller_wait(tern__poller *p, tern__poll_event *ev, int max, int timeout_ms) {
  long len = snapshot(p);
  if (len < 0) return TERN_ENOMEM;
  int r = poll(p->wpf, (nfds_t)len, timeout_ms);
  if (r < 0) return errno == EINTR ? TERN_EAGAIN : TERN_EIO;
  int n = 0;
  long last_group = -1;
  for (long i = 0; i < len && r > 0 && n < max; i++) {
    short re = p->wpf[i].revents;
    if (!re) continue;
    r--;
    const snap *s = &p->wsn[i];
    if (s->group >= 0) {
      /* A child's descriptors are contiguous: one event per child. */
      if (s->group == last_group) continue;
      last_group = s->group;
      ev[n++] = (tern__poll_event){.tag = s->tag, .events = TERN__POLL_IN};
      continue;
    }
    unsigned got = 0;
    /* A hang-up reads as the end; an error (or a descriptor closed under
     * the poller) shows on either. */
    if (re & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) got |= TERN__POLL_IN;
    if (re & (POLLOUT | POLLERR | POLLNVAL)) got |= TERN__POLL_OUT;
    ev[n++] = (tern__poll_event){.tag = s->tag, .events = got};
  }
  return n;
}

int tern__poller_fd(const tern__poller *p) {
  (void)p;
  return -1;
}

size_t tern__poller_pollfds(tern__poller *p, struct pollfd *fds, size_t n) {
  size_t len = 0;
  pthread_mutex_lock(&p->mu);
  flatten(p, fds, NULL, fds ? n : 0, &len, -1, 0);
  pthread_mutex_unlock(&p->mu);
  return len;
}
