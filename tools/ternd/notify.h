/*
 * ternd and its service manager (libsystemd's sd_notify): READY=1 once the
 * store is open and the socket bound, STATUS= lines saying what it is
 * doing, WATCHDOG=1 from the relay's loop when the unit sets WatchdogSec=
 * (so a loop that hangs gets the service restarted), STOPPING=1 on the way
 * out. Without NOTIFY_SOCKET in the environment every call does nothing.
 * Also: whether stderr goes to the journal, so log lines can carry their
 * priority (sd-daemon.h's "<N>" prefixes) instead of a timestamp.
 *
 * Owns: the watchdog's timing.
 */
#ifndef TERND_NOTIFY_H
#define TERND_NOTIFY_H

#include <stdint.h>

#include "tern/tern.h"

typedef struct ternd_notify {
  uint64_t watchdog_ms; /* ping interval (half of WATCHDOG_USEC), 0: none */
  uint64_t ping_at;     /* next WATCHDOG=1, monotonic ms */
  uint64_t status_at;   /* next STATUS= with the counters */
  tern_relay_stats last;/* what the last STATUS= said */
} ternd_notify;

/* Reads WATCHDOG_USEC (and WATCHDOG_PID). */
void ternd_notify_init(ternd_notify *n, uint64_t now_ms);
/* STATUS=<text>; with ready, READY=1 in the same datagram. */
void ternd_notify_status(int ready, const char *text);
/* Due work at now_ms: the watchdog ping, and a STATUS= with the relay's
 * counters every 10 s when they changed. Returns the milliseconds until it
 * has work again, or -1 (none). */
int ternd_notify_tick(ternd_notify *n, uint64_t now_ms, const tern_relay_stats *st);
/* STOPPING=1 with a STATUS=. */
void ternd_notify_stopping(const char *text);
/* 1 if stderr is connected to the journal (JOURNAL_STREAM names it). */
int ternd_stderr_is_journal(void);

#endif
