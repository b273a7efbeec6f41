/*
 * ternd's push notifier (spec/push.md): turns the relay's push events
 * (tern_relay_config.push) into HTTP POSTs to the app's backend, which
 * wakes the device through APNs or FCM. One POST per device per interval
 * at most (the events between are coalesced into it), retried with
 * backoff while the backend fails, dropped after an hour of failures or on
 * a 4xx, and at most max_pending devices held.
 *
 * Threads: the relay's thread calls ternd_push_event() (it updates the
 * table under a mutex and wakes the notifier; it never waits for the
 * network). All HTTP runs on the notifier's own thread, on libcurl's multi
 * interface. ternd_push_get_stats() may be called from any thread.
 *
 * Owns: its thread, the curl handles, the table of devices, the secret.
 */
#ifndef TERND_PUSH_H
#define TERND_PUSH_H

#include <stddef.h>
#include <stdint.h>

typedef struct ternd_push ternd_push;

typedef struct ternd_push_config {
  const char *url;          /* http:// or https://; copied */
  const char *secret;       /* NULL: no Authorization header; else "Bearer <secret>"; copied */
  uint32_t interval_s;      /* at most one POST per device this often (30) */
  uint32_t max_pending;     /* devices held at once (10000) */
  uint32_t timeout_ms;      /* per request (10000) */
  uint32_t backoff_cap_s;   /* longest wait between retries (300) */
  uint32_t give_up_s;       /* a device whose POSTs fail this long is dropped (3600) */
  /* Where it says what happened (level 0 error .. 3 debug), as the relay's
   * log; called from the notifier's thread or the relay's. */
  void (*log)(void *ctx, int level, const char *line);
  void *log_ctx;
} ternd_push_config;

void ternd_push_config_default(ternd_push_config *cfg);

typedef struct ternd_push_stats {
  uint64_t sent;            /* POSTs answered 2xx */
  uint64_t failed;          /* POSTs that failed: no answer, 5xx, 429, or another 4xx */
  uint64_t retried;         /* ... of them scheduled again */
  uint64_t dropped_4xx;     /* devices dropped: the backend refused (4xx but 429) */
  uint64_t dropped_full;    /* events not taken: max_pending devices held */
  uint64_t dropped_expired; /* devices dropped after give_up_s of failures */
  uint64_t coalesced;       /* events folded into a POST already due */
  uint64_t pending;         /* gauge: devices with a POST due, in flight or backing off */
} ternd_push_stats;

/* Starts the notifier's thread. Returns 0, or -1 with the reason in err. */
int ternd_push_start(ternd_push **out, const ternd_push_config *cfg, char *err, size_t cap);

/* The relay's push callback (tern_relay_config.push, with push_ctx the
 * ternd_push): TERN_PUSH_WAITING schedules a POST for the device,
 * TERN_PUSH_CONNECTED cancels what was pending for it. */
void ternd_push_event(void *ctx, int event, const char *user, const uint8_t device_key[32],
                      const char *sender, uint64_t waiting);

/* Replaces the secret (SIGHUP); NULL removes it. Returns 0 or -1 (memory). */
int ternd_push_set_secret(ternd_push *p, const char *secret);

void ternd_push_get_stats(ternd_push *p, ternd_push_stats *st);

/* Stops the thread (requests in flight are abandoned) and frees p. NULL is fine. */
void ternd_push_stop(ternd_push *p);

#endif
