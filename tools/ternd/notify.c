/*
 * ternd's side of systemd's notify protocol, through libsystemd
 * (notify.h).
 */
#include "notify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#define STATUS_EVERY_MS 10000

void ternd_notify_init(ternd_notify *n, uint64_t now_ms) {
  memset(n, 0, sizeof(*n));
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec >= 2000) {
    n->watchdog_ms = usec / 2000; /* ping twice per timeout */
    n->ping_at = now_ms;
  }
  n->status_at = now_ms + STATUS_EVERY_MS;
}

void ternd_notify_status(int ready, const char *text) {
  (void)sd_notifyf(0, "%sSTATUS=%s", ready ? "READY=1\n" : "", text);
}

void ternd_notify_stopping(const char *text) { (void)sd_notifyf(0, "STOPPING=1\nSTATUS=%s", text); }

static int until(uint64_t at, uint64_t now) { return at <= now ? 0 : (int)(at - now); }

int ternd_notify_tick(ternd_notify *n, uint64_t now_ms, const tern_relay_stats *st) {
  if (n->watchdog_ms && now_ms >= n->ping_at) {
    (void)sd_notify(0, "WATCHDOG=1");
    n->ping_at = now_ms + n->watchdog_ms;
  }
  if (now_ms >= n->status_at) {
    n->status_at = now_ms + STATUS_EVERY_MS;
    if (st->peers_connected != n->last.peers_connected ||
        st->messages_stored != n->last.messages_stored ||
        st->messages_delivered != n->last.messages_delivered) {
      (void)sd_notifyf(0, "STATUS=serving: %llu peers; messages %llu stored, %llu delivered",
                       (unsigned long long)st->peers_connected,
                       (unsigned long long)st->messages_stored,
                       (unsigned long long)st->messages_delivered);
      n->last = *st;
    }
  }
  int t = until(n->status_at, now_ms);
  if (n->watchdog_ms && until(n->ping_at, now_ms) < t) t = until(n->ping_at, now_ms);
  return t;
}

int ternd_stderr_is_journal(void) {
  const char *e = getenv("JOURNAL_STREAM");
  unsigned long long dev, ino;
  struct stat st;
  if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) != 0) return 0;
  return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}
