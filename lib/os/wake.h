/*
 * A wake-up: a descriptor another thread (or a signal handler) makes
 * readable, to end a poller's wait. An eventfd on Linux with epoll, a
 * non-blocking pipe everywhere else (and in TERN_POLLER=poll builds).
 */
#ifndef TERN_WAKE_H
#define TERN_WAKE_H

typedef struct tern__wake {
  int rfd; /* what to poll for reading */
  int wfd; /* what tern__wake_signal writes (rfd itself for an eventfd) */
} tern__wake;

/* Returns 0 or TERN_ERESOURCE (errno kept). */
int tern__wake_open(tern__wake *w);
/* Closes what _open made; a zeroed or failed one too ({-1, -1}). */
void tern__wake_close(tern__wake *w);
/* Makes rfd readable. Any thread; async-signal-safe. */
void tern__wake_signal(const tern__wake *w);
/* Makes rfd not readable again (until the next signal). */
void tern__wake_drain(const tern__wake *w);

#endif
