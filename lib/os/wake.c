/* The wake-up descriptor (wake.h). */
#include "os/wake.h"

#include <errno.h>
#include <stdint.h>
#include <unistd.h>

#include "os/sock.h"
#include "tern/tern.h"

#if defined(__linux__) && defined(TERN_POLLER_EPOLL)
#include <sys/eventfd.h>
#define USE_EVENTFD 1
#else
#define USE_EVENTFD 0
#endif

int tern__wake_open(tern__wake *w) {
#if USE_EVENTFD
  w->rfd = w->wfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  return w->rfd < 0 ? TERN_ERESOURCE : 0;
#else
  int fds[2];
  w->rfd = w->wfd = -1;
  if (tern__os_pipe(fds) != 0) return TERN_ERESOURCE;
  w->rfd = fds[0];
  w->wfd = fds[1];
  return 0;
#endif
}

void tern__wake_close(tern__wake *w) {
  if (w->wfd >= 0 && w->wfd != w->rfd) close(w->wfd);
  if (w->rfd >= 0) close(w->rfd);
  w->rfd = w->wfd = -1;
}

void tern__wake_signal(const tern__wake *w) {
  /* A full pipe (EAGAIN) is readable already, which is all a wake-up is. */
#if USE_EVENTFD
  uint64_t one = 1;
  ssize_t r = write(w->wfd, &one, sizeof(one));
#else
  char one = 1;
  ssize_t r = write(w->wfd, &one, 1);
#endif
  (void)r;
}

void tern__wake_drain(const tern__wake *w) {
#if USE_EVENTFD
  uint64_t v;
  ssize_t r = read(w->rfd, &v, sizeof(v));
  (void)r;
#else
  char buf[64];
  while (read(w->rfd, buf, sizeof(buf)) == (ssize_t)sizeof(buf)) {
  }
#endif
}
