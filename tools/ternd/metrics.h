/*
 * ternd's Prometheus endpoint: http://IP:PORT/metrics in the text format
 * (version 0.0.4), served by libmicrohttpd from a thread of its own.
 *
 * The relay (tern_relay) is single-threaded and the HTTP thread never
 * touches it. The relay's loop publishes a copy of tern_relay_stats after
 * each service call (ternd_metrics_publish); a scrape formats the latest
 * copy. The two threads share only that copy, under a mutex that the loop
 * takes with trylock: a scrape can never make the loop wait.
 *
 * Owns: the HTTP daemon and its thread, the snapshot.
 */
#ifndef TERND_METRICS_H
#define TERND_METRICS_H

#include <stdint.h>

#include "push.h"
#include "tern/tern.h"

typedef struct ternd_metrics ternd_metrics;

/* Starts serving on ip:port (an IPv4 or IPv6 literal; port 0 picks one).
 * `max_peers` is exported as a gauge. Returns 0, or -1 with the reason in
 * err. */
int ternd_metrics_start(ternd_metrics **out, const char *ip, uint16_t port, uint32_t max_peers,
                        char *err, size_t cap);
/* The port it listens on. */
uint16_t ternd_metrics_port(const ternd_metrics *m);
/* From the relay's thread: makes *st what scrapes see. Never blocks:
 * returns 0 when published, 1 when a scrape was copying the snapshot at
 * that moment (publish again soon: the loop should not sleep long). */
int ternd_metrics_publish(ternd_metrics *m, const tern_relay_stats *st);
/* Exports the push notifier's counters too (spec/push.md); borrowed: stop
 * the metrics before the notifier. */
void ternd_metrics_set_push(ternd_metrics *m, ternd_push *p);
/* Stops the server and its thread, frees m. NULL is fine. */
void ternd_metrics_stop(ternd_metrics *m);

#endif
