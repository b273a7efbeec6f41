/*
 * loadgen: the part of the load generators (tern-load, mqtt-load) that does
 * not depend on the system under test: the command line, the send schedule
 * (open loop at an offered rate, or a window of unacknowledged messages per
 * sender when saturating), the accounting of what arrived (latency, loss,
 * duplicates), the CPU of the relay and of the generator, and the one JSON
 * line a run prints. Each generator owns its clients and its event loop and
 * calls in here; nothing here touches a socket (lg_epoll_wait only waits on
 * the generator's own epoll set).
 *
 * Pairs: pair i is one sending client and one receiving client; the sender
 * writes only to its receiver. A message body is a bench message
 * (benchproto.h: kind, pair, seq, time) padded to --size bytes.
 *
 * Time: CLOCK_MONOTONIC ns. Open loop: the sends of pair i are scheduled at
 * fixed intervals whatever happens to earlier ones, and a message's latency
 * runs from its scheduled time, so a generator or relay that falls behind
 * shows up in the latency instead of hiding in a slower send rate
 * (coordinated omission). Saturate: a pair sends whenever it has fewer than
 * --window messages not yet acknowledged by the relay, and latency runs
 * from the send call.
 */
#ifndef BENCH_LOADGEN_H
#define BENCH_LOADGEN_H

#include <stddef.h>
#include <stdint.h>

typedef struct lg_config {
  const char *system;    /* "tern" or "mosquitto": the JSON's "system" */
  char host[256];        /* --relay HOST:PORT */
  int port;
  char recv_host[256];   /* --recv-relay HOST:PORT: where receivers connect
                            (tern; "" = --relay), e.g. another relay of a
                            cluster */
  int recv_port;
  const char *relay_key; /* --relay-key HEX (tern only) */
  int pairs;             /* --pairs N */
  double rate;           /* --rate R: total offered msg/s; 0 saturates */
  int window;            /* --window W: per sender when saturating */
  double duration_s;     /* --duration S: the send phase */
  double drain_s;        /* --drain S: longest wait for stragglers after it */
  double connect_s;      /* --connect-timeout S */
  size_t size;           /* --size B: body bytes (default 100) */
  int relay_pid;         /* --relay-pid PID: whose /proc/PID/stat to read */
  char prefix[32];       /* names of this run's clients start with it */
  int procs;             /* --procs P: generator processes */
  int spread;            /* --spread (tern): --relay lists several relays of a
                            cluster; pair i's sender uses relay i mod K, its
                            receiver relay (i + 1) mod K */
} lg_config;

/* Parses the command line into *cfg (system set by the caller first).
 * Returns 0, 1 after printing help, or -1 after printing an error. */
int lg_parse_args(lg_config *cfg, int argc, char **argv);

/* Raises this process's open-file soft limit to its hard limit and makes
 * its timer slack 1 ns, so that a wait for a scheduled send ends on time
 * (the default slack is 50 us). */
void lg_tune_process(void);

struct epoll_event;

/* epoll_wait until CLOCK_MONOTONIC `until_ns` at the latest (nanosecond
 * timeout; at once if it has passed; at most 100 ms). Returns what
 * epoll_wait returns; EINTR is 0. */
int lg_epoll_wait(int epfd, struct epoll_event *ev, int max, int64_t until_ns);

typedef struct lg_run lg_run;

/* Creates the accounting for cfg->pairs pairs. NULL if out of memory. */
lg_run *lg_run_new(const lg_config *cfg);
void lg_run_free(lg_run *r);

/* Starts the send phase now: samples the CPU counters and schedules every
 * pair's first send. */
void lg_start(lg_run *r, int64_t now_ns);

enum { LG_SEND = 0, LG_DRAIN = 1, LG_DONE = 2 };

/* The phase at `now`. Moving out of LG_SEND samples the CPU counters and
 * the messages delivered so far (the rates are taken over the send phase);
 * LG_DONE comes when everything sent has arrived or the drain time is up. */
int lg_phase(lg_run *r, int64_t now_ns);

/* If pair `pair` should send now, writes the next message body (cfg->size
 * bytes) into `body`, counts it as sent and returns 1; else returns 0.
 * Call until it returns 0. A send that fails must end the run. */
int lg_take(lg_run *r, int pair, int64_t now_ns, uint8_t *body);

/* When the next send of any pair is due (INT64_MAX: none is, e.g. every
 * window is full or the send phase is over). */
int64_t lg_next_due(const lg_run *r);

/* The relay acknowledged one of `pair`'s messages (tern: TERN_EV_SENT;
 * MQTT: PUBACK): one more may be sent when saturating. */
void lg_acked(lg_run *r, int pair);

/* The receiver of `pair` got `body` at `now`. Returns 0, or -1 if the body
 * is not one of this run's messages for that pair (counted as foreign). */
int lg_received(lg_run *r, int pair, const uint8_t *body, size_t len, int64_t now_ns);

/* Counters the generators bump directly. */
void lg_count_reconnect(lg_run *r);
void lg_count_failed(lg_run *r);  /* the relay refused a message for good */
void lg_count_busy(lg_run *r);    /* the relay asked for a resend later */

/* Prints the run's JSON line on stdout and a human summary on stderr.
 * "unacked" counts messages the relay never acknowledged: a lost message
 * the relay never acknowledged was still the sender's to resend (in its
 * outbox) when the run ended; lost > unacked means an acknowledged message
 * did not arrive in time.
 * Returns 0 if nothing was lost, duplicated or refused, else 1. */
int lg_report(lg_run *r);

/* ---- the driver: what a generator provides, and the loop that runs it */

typedef struct lg_driver {
  const char *name; /* "tern-load": prefixes messages */
  /* Most clients one process can hold (0: no limit); lg_main forks enough
   * processes for the pairs asked for. */
  int max_clients;
  /* Creates 2 x cfg->pairs clients (client 2i sends for pair i, 2i+1
   * receives) and starts connecting them. NULL after printing why. */
  void *(*open)(const lg_config *cfg);
  /* How many clients are ready (connected; a subscriber subscribed). */
  int (*ready)(void *ctx);
  /* Waits until `until` at the latest (or input), services every client
   * that needs it, and reports what happened to `run` (NULL while
   * connecting). Returns 0, or -1 on a fatal error. */
  int (*step)(void *ctx, lg_run *run, int64_t until);
  /* Pair `pair`'s sender sends `body` to its receiver. Returns 0 or -1. */
  int (*send)(void *ctx, int pair, const uint8_t *body, size_t len);
  void (*close)(void *ctx);
} lg_driver;

/* The whole generator: parses the command line, opens the driver's
 * clients, waits until all are ready, runs the send and drain phases and
 * prints the report. With several processes (--procs, or max_clients),
 * each runs its share of the pairs (and of the rate) from a common start,
 * the parent samples the relay's CPU over the common send phase and merges
 * their counts and latencies into one report. Returns the exit status: 0 all delivered once, 1 lost,
 * duplicated or refused messages, 2 an error (no JSON line). */
int lg_main(const lg_driver *d, const char *system, int argc, char **argv);

#endif
