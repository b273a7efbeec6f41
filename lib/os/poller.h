/*
 * The poller: the one interface through which tern waits on descriptors
 * (docs/architecture.md, "lib/os"). Three backends implement it, one per
 * build (CMake's TERN_POLLER): epoll (poller_epoll.c, Linux), kqueue
 * (poller_kqueue.c, macOS/iOS/BSD) and plain POSIX poll() (poller_poll.c,
 * anything else).
 *
 * A poller holds descriptors, each with an interest (TERN__POLL_IN,
 * TERN__POLL_OUT, or none: registered but not watched) and a 64-bit tag the
 * caller chooses; waiting returns (tag, readable, writable). A hang-up is
 * reported as readable, an error as readable and writable, so that the
 * caller's next read or write finds out what happened.
 * Events are level-triggered: a descriptor stays reported until it is read
 * or written out.
 *
 * Pollers nest: a child poller under a parent is reported by the parent's
 * wait as one readable event with the tag given at nesting, when any of
 * the child's descriptors is ready. With epoll and kqueue the child's own
 * descriptor sits in the parent; with poll() the parent's wait polls the
 * children's descriptors too (flattened).
 *
 * Ownership: the poller never closes the descriptors it holds; a caller
 * takes a descriptor out (tern__poller_del) before closing it. A child
 * must be taken out of its parent (tern__poller_unnest) before it is freed.
 *
 * Threads: every call may come from any thread; one thread may wait while
 * another adds, changes or removes descriptors. With poll() a change made
 * during a wait counts from the next wait on (the client wakes its loop
 * after such a change).
 */
#ifndef TERN_POLLER_H
#define TERN_POLLER_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tern__poller tern__poller;

/* Interest and event bits. */
#define TERN__POLL_IN 1u
#define TERN__POLL_OUT 2u

/* The tag of a descriptor that a link's owner adds to the link's poller
 * (the relay's cluster store, relay_store.h remote_fd): the link's waits
 * end when it is ready, and leave it to the owner. */
#define TERN__POLL_TAG_EXTERNAL ((uint64_t)1 << 62)

typedef struct tern__poll_event {
  uint64_t tag;    /* as given to tern__poller_add or _nest */
  unsigned events; /* TERN__POLL_IN and/or TERN__POLL_OUT */
} tern__poll_event;

/* The backend this build has: "epoll", "kqueue" or "poll". */
const char *tern__poller_backend(void);

/* Returns 0, TERN_ENOMEM, TERN_ERESOURCE (no descriptor; errno kept). */
int tern__poller_new(tern__poller **out);
/* NULL is accepted. Closes nothing it holds. */
void tern__poller_free(tern__poller *p);

/* Watches fd for `events` (0: registered, not watched), reported with
 * `tag`. Returns 0, TERN_EEXIST (fd is in already), TERN_EINVAL (fd < 0),
 * TERN_ENOMEM, TERN_EIO (the kernel refused it; errno kept). */
int tern__poller_add(tern__poller *p, int fd, unsigned events, uint64_t tag);
/* Changes what fd is watched for, and its tag. Returns 0, TERN_ENOENT,
 * TERN_EIO. */
int tern__poller_mod(tern__poller *p, int fd, unsigned events, uint64_t tag);
/* Takes fd out (before the caller closes it). Returns 0 or TERN_ENOENT. */
int tern__poller_del(tern__poller *p, int fd);

/* Nests `child` under `parent`: the parent's wait reports (tag,
 * TERN__POLL_IN) while any of the child's descriptors is ready; the caller
 * then waits on the child (with timeout 0) for its events. A child has one
 * parent at most. Returns 0, TERN_EEXIST, TERN_ENOMEM, TERN_EIO. */
int tern__poller_nest(tern__poller *parent, tern__poller *child, uint64_t tag);
void tern__poller_unnest(tern__poller *parent, tern__poller *child);

/* Waits up to timeout_ms (-1: without end) for events, at most `max`
 * into ev. Returns how many (0 on timeout), TERN_EAGAIN (a signal came),
 * TERN_EIO (errno kept). */
int tern__poller_wait(tern__poller *p, tern__poll_event *ev, int max, int timeout_ms);

/* The single descriptor that is readable when the poller has events, for a
 * caller's own poll/epoll/kqueue; -1 with the poll() backend, which has
 * none. */
int tern__poller_fd(const tern__poller *p);
/* What to wait for, as poll() entries: the single descriptor where there
 * is one, else every watched descriptor, children's included. Fills up to
 * n entries and returns how many there are. The descriptors stay the
 * poller's owner's. */
size_t tern__poller_pollfds(tern__poller *p, struct pollfd *fds, size_t n);

#endif
