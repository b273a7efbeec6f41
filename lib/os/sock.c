/* Non-blocking, close-on-exec descriptors on any POSIX system (sock.h). */
#if defined(__linux__) && !defined(TERN_POLLER_POLL)
#define _GNU_SOURCE /* accept4(), pipe2() */
#endif
#include "os/sock.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

/* The one-call forms, where the system has them and the build wants them
 * (a TERN_POLLER=poll build runs the fcntl() path a plain POSIX system
 * would). */
#if defined(__linux__) && !defined(TERN_POLLER_POLL)
#define ONE_CALL 1
#else
#define ONE_CALL 0
#endif

int tern__os_fdflags(int fd, int nonblock) {
  int fl = fcntl(fd, F_GETFD);
  if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) != 0) return -1;
  if (!nonblock) return 0;
  fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) return -1;
  return 0;
}

#if !ONE_CALL
/* Where send() has no MSG_NOSIGNAL, the socket itself must not raise
 * SIGPIPE. fd is returned as it is. */
static int no_sigpipe(int fd) {
#if !defined(MSG_NOSIGNAL) && defined(SO_NOSIGPIPE)
  int one = 1;
  if (fd >= 0) (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof(one));
#endif
  return fd;
}

/* fd with the flags, or -1 (and fd closed, errno kept) if they cannot be set. */
static int flagged(int fd) {
  if (fd < 0 || tern__os_fdflags(fd, 1) == 0) return fd;
  int e = errno;
  close(fd);
  errno = e;
  return -1;
}
#endif

int tern__os_socket(int family, int type) {
#if ONE_CALL
  return socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
#else
  return no_sigpipe(flagged(socket(family, type, 0)));
#endif
}

int tern__os_accept(int lfd, struct sockaddr *sa, socklen_t *len) {
#if ONE_CALL
  return accept4(lfd, sa, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
  return no_sigpipe(flagged(accept(lfd, sa, len)));
#endif
}

int tern__os_pipe(int fds[2]) {
#if ONE_CALL
  return pipe2(fds, O_NONBLOCK | O_CLOEXEC);
#else
  if (pipe(fds) != 0) return -1;
  if (tern__os_fdflags(fds[0], 1) == 0 && tern__os_fdflags(fds[1], 1) == 0) return 0;
  int e = errno;
  close(fds[0]);
  close(fds[1]);
  errno = e;
  return -1;
#endif
}
