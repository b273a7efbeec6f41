/*
 * Descriptors as tern wants them: non-blocking and closed on exec. Where
 * the system has SOCK_NONBLOCK, SOCK_CLOEXEC and accept4() they are asked
 * for in the call itself; elsewhere (macOS, and every build with
 * TERN_POLLER=poll, which stands for a plain POSIX system) fcntl() sets the
 * flags right after. Options such as IP_PKTINFO stay where they are used,
 * guarded there.
 */
#ifndef TERN_OS_SOCK_H
#define TERN_OS_SOCK_H

#include <sys/socket.h>

/* The send flag that keeps a peer's close from raising SIGPIPE: POSIX's
 * MSG_NOSIGNAL; where it is missing (macOS, iOS) 0, and the sockets made
 * here carry SO_NOSIGPIPE instead. */
#ifdef MSG_NOSIGNAL
#define TERN__MSG_NOSIGNAL MSG_NOSIGNAL
#else
#define TERN__MSG_NOSIGNAL 0
#endif

/* socket(family, type, 0), non-blocking and close-on-exec (and SO_NOSIGPIPE
 * where MSG_NOSIGNAL is missing). -1 (errno) on failure. */
int tern__os_socket(int family, int type);
/* accept() on a listener, the new descriptor non-blocking and
 * close-on-exec. -1 (errno) on failure. */
int tern__os_accept(int lfd, struct sockaddr *sa, socklen_t *len);
/* A pipe whose two ends are non-blocking and close-on-exec. 0 or -1 (errno). */
int tern__os_pipe(int fds[2]);
/* Makes fd close-on-exec (and non-blocking if `nonblock`). 0 or -1 (errno). */
int tern__os_fdflags(int fd, int nonblock);

#endif
