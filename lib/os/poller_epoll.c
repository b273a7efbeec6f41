/*
 * The poller on Linux's epoll (poller.h). The epoll set is the single
 * descriptor; a child poller's epoll set sits in its parent's. The kernel
 * keeps the interest, so this backend keeps nothing and takes no lock.
 */
#include "os/poller.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "tern/tern.h"

struct tern__poller {
  int epfd;
};

const char *tern__poller_backend(void) { return "epoll"; }

int tern__poller_new(tern__poller **out) {
  *out = NULL;
  tern__poller *p = malloc(sizeof(*p));
  if (!p) return TERN_ENOMEM;
  p->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (p->epfd < 0) {
    int e = errno;
    free(p);
    errno = e;
    return TERN_ERESOURCE;
  }
  *out = p;
  return 0;
}

void tern__poller_free(tern__poller *p) {
  if (!p) return;
  close(p->epfd);
  free(p);
}

static int ctl(tern__poller *p, int op, int fd, unsigned events, uint64_t tag) {
  struct epoll_event e = {.events = ((events & TERN__POLL_IN) ? EPOLLIN : 0u) |
                                    ((events & TERN__POLL_OUT) ? EPOLLOUT : 0u),
                          .data.u64 = tag};
  if (fd < 0) return TERN_EINVAL;
  if (epoll_ctl(p->epfd, op, fd, &e) == 0) return 0;
  if (errno == EEXIST) return TERN_EEXIST;
  if (errno == ENOENT) return TERN_ENOENT;
  if (errno == ENOMEM || errno == ENOSPC) return TERN_ENOMEM;
  return TERN_EIO;
}

int tern__poller_add(tern__poller *p, int fd, unsigned events, uint64_t tag) {
  return ctl(p, EPOLL_CTL_ADD, fd, events, tag);
}

int tern__poller_mod(tern__poller *p, int fd, unsigned events, uint64_t tag) {
  return ctl(p, EPOLL_CTL_MOD, fd, events, tag);
}

int tern__poller_del(tern__poller *p, int fd) {
  return ctl(p, EPOLL_CTL_DEL, fd, 0, 0) == 0 ? 0 : TERN_ENOENT;
}

int tern__poller_nest(tern__poller *parent, tern__poller *child, uint64_t tag) {
  return ctl(parent, EPOLL_CTL_ADD, child->epfd, TERN__POLL_IN, tag);
}

void tern__poller_unnest(tern__poller *parent, tern__poller *child) {
  (void)tern__poller_del(parent, child->epfd);
}

int tern__poller_wait(tern__poller *p, tern__poll_event *ev, int max, int timeout_ms) {
  struct epoll_event e[64];
  if (max > 64) max = 64;
  if (max < 1) max = 1;
  int n = epoll_wait(p->epfd, e, max, timeout_ms);
  if (n < 0) return errno == EINTR ? TERN_EAGAIN : TERN_EIO;
  for (int i = 0; i < n; i++) {
    unsigned got = 0;
    /* A hang-up reads as the end; an error shows on either. */
    if (e[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) got |= TERN__POLL_IN;
    if (e[i].events & (EPOLLOUT | EPOLLERR)) got |= TERN__POLL_OUT;
    ev[i].tag = e[i].data.u64;
    ev[i].events = got;
  }
  return n;
}

int tern__poller_fd(const tern__poller *p) { return p->epfd; }

size_t tern__poller_pollfds(tern__poller *p, struct pollfd *fds, size_t n) {
  if (n >= 1) fds[0] = (struct pollfd){.fd = p->epfd, .events = POLLIN};
  return 1;
}
