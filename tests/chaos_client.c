/*
 * chaos_client: a messaging app for tests/chaos_test.c, on the public API.
 *
 * It sends COUNT messages round-robin to its PEERS at RATE per second,
 * receives whatever comes, and keeps a journal (support/chaos_proto.h) of
 * exactly what tern accepted from it and what tern handed to it, so that the
 * test can check "nothing lost, nothing twice, per-sender order" across
 * SIGKILLs of this process and of ternd. Restarted with the same --state and
 * --journal, it carries on where the journal says it stopped.
 *
 *   chaos_client --relay HOST:PORT --relay-key HEX --key FILE --state DIR
 *                --journal FILE --peers A,B,C --count N --rate R
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "support/chaos_proto.h"
#include "tern/tern.h"

#define MAX_PEERS 8

static int journal_fd = -1;
static volatile sig_atomic_t stop_requested;

static void on_term(int sig) {
  (void)sig;
  stop_requested = 1;
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* One journal line, one write(2). */
static void jot(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void jot(const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof(line)) abort();
  if (write(journal_fd, line, (size_t)n) != n) abort(); /* the test would be unsound */
}

/* The next global message number: one past the highest "W" in the journal
 * (a "W" without its "A" may have been accepted, so its number is used up). */
static long resume_index(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  long next = 0, i;
  char line[1024];
  while (fgets(line, sizeof(line), f)) {
    if (line[0] == 'W' && strchr(line, '\n') && sscanf(line, "W %ld", &i) == 1 && i + 1 > next)
      next = i + 1;
  }
  fclose(f);
  return next;
}

int main(int argc, char **argv) {
  const char *relay = NULL, *relay_key = NULL, *key_path = NULL, *state = NULL, *journal = NULL;
  char peers_arg[512] = "";
  long count = 0;
  double rate = 100;
  static const struct option opts[] = {
      {"relay", required_argument, 0, 'r'}, {"relay-key", required_argument, 0, 'R'},
      {"key", required_argument, 0, 'k'},   {"state", required_argument, 0, 's'},
      {"journal", required_argument, 0, 'j'}, {"peers", required_argument, 0, 'p'},
      {"count", required_argument, 0, 'n'}, {"rate", required_argument, 0, 'x'},
      {0, 0, 0, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
      case 'r': relay = optarg; break;
      case 'R': relay_key = optarg; break;
      case 'k': key_path = optarg; break;
      case 's': state = optarg; break;
      case 'j': journal = optarg; break;
      case 'p': snprintf(peers_arg, sizeof(peers_arg), "%s", optarg); break;
      case 'n': count = atol(optarg); break;
      case 'x': rate = atof(optarg); break;
      default: return 2;
    }
  }
  if (!relay || !relay_key || !key_path || !state || !journal || !peers_arg[0] || rate <= 0)
    return 2;
  const char *peers[MAX_PEERS];
  int npeers = 0;
  for (char *save = NULL, *p = strtok_r(peers_arg, ",", &save); p && npeers < MAX_PEERS;
       p = strtok_r(NULL, ",", &save))
    peers[npeers++] = p;

  struct sigaction sa = {.sa_handler = on_term};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  long next = resume_index(journal);
  journal_fd = open(journal, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (journal_fd < 0) return 1;
  jot("B %ld\n", (long)getpid());

  tern_client_config cfg;
  tern_client_config_default(&cfg);
  char host[64];
  const char *colon = strrchr(relay, ':');
  if (!colon || (size_t)(colon - relay) >= sizeof(host)) return 2;
  memcpy(host, relay, (size_t)(colon - relay));
  host[colon - relay] = 0;
  cfg.relay_host = host;
  cfg.relay_port = (uint16_t)atoi(colon + 1);
  if (tern_key_from_hex(relay_key, cfg.relay_public_key) != 0) return 2;
  if (tern_keypair_load(key_path, &cfg.keypair) != 0) return 1;
  cfg.state_dir = state;
  /* A relay that was SIGKILLed says nothing: notice within about a second
   * and come back quickly, so the test spends its time on chaos, not on
   * waiting out production timers. */
  cfg.reconnect_base_ms = 50;
  cfg.reconnect_cap_ms = 400;
  cfg.handshake_timeout_ms = 1500;
  cfg.dead_link_ms = 1500;
  cfg.timeout_min_ms = 1000;
  cfg.timeout_max_ms = 1500;
  tern_client *c;
  int rc = tern_client_new(&c, &cfg);
  if (rc == 0) rc = tern_client_connect(c);
  if (rc) {
    fprintf(stderr, "chaos_client: cannot start: %s\n", tern_strerror(rc));
    return 1;
  }
  char self[TERN_USER_MAX + 1] = "";
  /* The journal names the sender by the user the relay assigned, which is
   * known after the first CONNECTED; until then nothing is sent. */
  uint64_t t0 = 0;
  long sent_here = 0;
  int drained_noted = 0;
  char body[512];
  while (!stop_requested) {
    uint64_t now = now_ms();
    /* Send what the rate allows since this incarnation's first connect. */
    if (self[0] && next < count) {
      long allowed = (long)((double)(now - t0) * rate / 1000.0) + 1;
      while (sent_here < allowed && next < count) {
        const char *to = peers[next % npeers];
        unsigned k = (unsigned)(next / npeers);
        size_t len = chaos_body(body, sizeof(body), self, to, k);
        jot("W %ld %s %u\n", next, to, k);
        uint64_t cmid = 0;
        rc = tern_client_send(c, to, body, len, &cmid);
        if (rc == 0) jot("A %ld %s %u %llu\n", next, to, k, (unsigned long long)cmid);
        else jot("E %ld %s %u %s\n", next, to, k, tern_errname(rc));
        next++;
        sent_here++;
      }
    }
    int timeout = tern_client_timeout_ms(c);
    if (timeout < 0 || timeout > 20) timeout = 20; /* pacing, and SIGTERM */
    struct pollfd pf[64];
    int nfd = tern_client_pollfds(c, pf, 64);
    if (nfd < 0 || nfd > 64) {
      fprintf(stderr, "chaos_client: %d descriptors to wait on\n", nfd);
      break;
    }
    if (poll(pf, (nfds_t)nfd, timeout) < 0 && errno != EINTR) break;
    int n = tern_client_service(c, 0);
    if (n < 0) {
      fprintf(stderr, "chaos_client: service: %s\n", tern_strerror(n));
      break;
    }
    while (n > 0) {
      tern_event ev;
      jot("t\n");
      if (tern_client_next_event(c, &ev) != 1) {
        jot("n\n");
        break;
      }
      switch (ev.type) {
        case TERN_EV_MESSAGE:
          jot("R %s %llu %zu %.*s\n", ev.user, (unsigned long long)ev.seq, ev.body_len,
              (int)ev.body_len, (const char *)ev.body);
          break;
        case TERN_EV_SENT: jot("S %llu\n", (unsigned long long)ev.cmid); break;
        case TERN_EV_DELIVERED: jot("D %llu\n", (unsigned long long)ev.cmid); break;
        case TERN_EV_FAILED:
          jot("F %llu %s\n", (unsigned long long)ev.cmid, tern_errname(ev.error));
          break;
        case TERN_EV_CONNECTED:
          jot("C %s\n", ev.user);
          if (!self[0]) {
            snprintf(self, sizeof(self), "%s", ev.user);
            t0 = now_ms();
          }
          break;
        case TERN_EV_DISCONNECTED: jot("X %s\n", tern_errname(ev.error)); break;
        default: break;
      }
    }
    if (!drained_noted && next >= count && tern_client_outbox_size(c) == 0) {
      jot("Q\n");
      drained_noted = 1;
    }
  }
  tern_client_free(c);
  jot("Z\n");
  close(journal_fd);
  return 0;
}
