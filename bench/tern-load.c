/*
 * tern-load: a load generator for a running ternd, on the public API only
 * (include/tern/tern.h). It owns 2 x --pairs tern clients in one thread:
 * every client's descriptor (tern_client_fd) sits in one epoll set, and a
 * client is serviced (tern_client_service(c, 0)) when its descriptor is
 * readable or its deadline (tern_client_timeout_ms) has passed. The send
 * schedule, the accounting and the JSON line are loadgen's (loadgen.h).
 *
 * Clients: fresh keys, state in memory (state_dir NULL; the relay is what
 * is measured), a fixed 25 s keepalive (no NAT-timeout probes: they would
 * add sockets and relay work that have nothing to do with messages); every
 * other setting is the library's default, dead_link_ms included. Names are
 * <prefix>s<i> and <prefix>r<i>, so a run never sees an earlier run's
 * messages; ternd must run with --open. libtern holds at most 256 clients
 * in a process, so more than 100 pairs run in several processes (loadgen's
 * --procs).
 *
 * Acknowledged = TERN_EV_SENT (stored by the relay); arrived =
 * TERN_EV_MESSAGE at the receiver; a reconnect = a TERN_EV_DISCONNECTED
 * after the send phase began; TERN_EV_FAILED = refused; TERN_EV_ERROR with
 * TERN_ESTORE from the relay = BUSY.
 *
 * Idle mode (--idle N, for bench/capacity.sh): N clients that connect at
 * --connect-rate per second, wait for TERN_EV_CONNECTED and then stay
 * idle (keepalives only) until --hold seconds pass or SIGTERM. It prints
 * one JSON line when every client is connected or --connect-timeout
 * passed ("mode":"idle": connected, how long it took, TERN_EFULL answers
 * and other disconnects before connecting, i.e. retries) and one when it
 * ends ("mode":"idle_end": sessions dropped while idle, its own CPU).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "benchproto.h"
#include "loadgen.h"
#include "tern/tern.h"

typedef struct tl_client {
  tern_client *c;
  int pair;
  int is_recv;
  int connected;
  int64_t deadline; /* CLOCK_MONOTONIC ns; INT64_MAX: none */
} tl_client;

typedef struct tl_state {
  tl_client *cl;
  int n;
  int epfd;
  lg_run *run; /* NULL while connecting */
  int nconnected;
  char (*recv_name)[TERN_USER_MAX + 1];
  struct idle_counts *idle; /* idle mode's counts (NULL in pair mode) */
} tl_state;

typedef struct idle_counts {
  int connected; /* connected now */
  int ever;      /* clients that connected at least once */
  int full;      /* TERN_EFULL answers before a client's first connect */
  int other;     /* other disconnects before a first connect */
  int dropped;   /* disconnects after a first connect */
} idle_counts;

/* Idle mode's accounting of one event of client k (is_recv there means
 * "has connected once"). */
static void idle_event(idle_counts *n, tl_client *k, int i, const tern_event *ev) {
  if (ev->type == TERN_EV_CONNECTED) {
    if (!k->connected) n->connected++;
    if (!k->is_recv) n->ever++;
    k->connected = 1;
    k->is_recv = 1;
  } else if (ev->type == TERN_EV_DISCONNECTED) {
    if (k->connected) n->connected--;
    k->connected = 0;
    if (k->is_recv) n->dropped++;
    else if (ev->error == TERN_EFULL) n->full++;
    else n->other++;
    if (k->is_recv || ev->error != TERN_EFULL)
      fprintf(stderr, "tern-load: idle client %d disconnected: %s\n", i, tern_errname(ev->error));
  }
}

static void set_deadline(tl_state *s, int i, int64_t now) {
  int t = tern_client_timeout_ms(s->cl[i].c);
  s->cl[i].deadline = t < 0 ? INT64_MAX : now + (int64_t)t * 1000000;
}

/* Services client i and takes its events. Returns 0, or -1 on a fatal error. */
static int service(tl_state *s, int i) {
  tl_client *k = &s->cl[i];
  int rc = tern_client_service(k->c, 0);
  if (rc < 0 && rc != TERN_ENOMEM) {
    fprintf(stderr, "tern-load: service: %s\n", tern_errname(rc));
    return -1;
  }
  tern_event ev;
  while (tern_client_next_event(k->c, &ev) == 1) {
    if (s->idle) {
      idle_event(s->idle, k, i, &ev);
      continue;
    }
    switch (ev.type) {
      case TERN_EV_CONNECTED:
        if (!k->connected) s->nconnected++;
        k->connected = 1;
        break;
      case TERN_EV_DISCONNECTED:
        if (k->connected) s->nconnected--;
        k->connected = 0;
        if (s->run) lg_count_reconnect(s->run);
        fprintf(stderr, "tern-load: client %s%d disconnected: %s\n", k->is_recv ? "r" : "s", k->pair,
                tern_errname(ev.error));
        break;
      case TERN_EV_MESSAGE:
        if (s->run && k->is_recv) lg_received(s->run, k->pair, ev.body, ev.body_len, bp_now_ns());
        break;
      case TERN_EV_SENT:
        if (s->run && !k->is_recv) lg_acked(s->run, k->pair);
        break;
      case TERN_EV_FAILED:
        if (s->run) {
          lg_count_failed(s->run);
          lg_acked(s->run, k->pair);
        }
        fprintf(stderr, "tern-load: message of pair %d refused: %s\n", k->pair, tern_errname(ev.error));
        break;
      case TERN_EV_ERROR:
        if (s->run && ev.error == TERN_ESTORE && ev.user[0]) lg_count_busy(s->run);
        /* A stall (the relay heard but not answering), once per stall. */
        if (ev.error == TERN_EBUSY)
          fprintf(stderr, "tern-load: client %s%d: %s: %.*s\n", k->is_recv ? "r" : "s", k->pair,
                  tern_errname(ev.error), (int)ev.body_len, ev.body ? (const char *)ev.body : "");
        break;
      default:
        break;
    }
  }
  set_deadline(s, i, bp_now_ns());
  return 0;
}

/* --spread: the relay number `which` (mod their count) of --relay's list
 * "h1:p1,h2:p2,...,hK" (the last one's port is cfg->port) into host, *port.
 * Returns 0 or -1. */
static int spread_pick(const lg_config *cfg, int which, char host[256], int *port) {
  char list[256];
  snprintf(list, sizeof list, "%s", cfg->host);
  char *ep[64];
  int k = 0;
  for (char *save = NULL, *t = strtok_r(list, ",", &save); t && k < 64; t = strtok_r(NULL, ",", &save))
    ep[k++] = t;
  if (k == 0) return -1;
  char *e = ep[which % k];
  char *colon = strrchr(e, ':');
  *port = cfg->port;
  if (colon && (which % k) != k - 1) {
    *colon = 0;
    *port = atoi(colon + 1);
  }
  snprintf(host, 256, "%s", e);
  return 0;
}

/* Creates client k named `name` (fresh keys, state in memory, a fixed 25 s
 * keepalive) and adds its descriptor to the epoll set as number i.
 * Returns 0, or -1 after printing why. */
static int new_client(tl_state *s, int i, const char *name, const char *host, int port,
                      const uint8_t relay_key[TERN_KEY_BYTES]) {
  tern_client_config cc;
  tern_client_config_default(&cc);
  cc.relay_host = host;
  cc.relay_port = (uint16_t)port;
  memcpy(cc.relay_public_key, relay_key, TERN_KEY_BYTES);
  if (tern_keypair_generate(&cc.keypair) != 0) return -1;
  cc.user = name;
  cc.state_dir = NULL;
  cc.keepalive_fixed_ms = 25000;
  errno = 0;
  int rc = tern_client_new(&s->cl[i].c, &cc);
  int err = errno;
  memset(&cc.keypair, 0, sizeof cc.keypair);
  if (rc) {
    fprintf(stderr, "tern-load: client %d: %s (errno: %s)\n", i, tern_errname(rc), strerror(err));
    return -1;
  }
  struct epoll_event e = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
  if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, tern_client_fd(s->cl[i].c), &e) != 0) {
    perror("tern-load: epoll_ctl");
    return -1;
  }
  return 0;
}

static int tl_step(void *ctx, lg_run *run, int64_t until) {
  tl_state *s = ctx;
  s->run = run;
  for (int i = 0; i < s->n; i++)
    if (s->cl[i].deadline < until) until = s->cl[i].deadline;
  struct epoll_event ev[256];
  int n = lg_epoll_wait(s->epfd, ev, 256, until);
  if (n < 0) {
    perror("tern-load: epoll_wait");
    return -1;
  }
  for (int j = 0; j < n; j++)
    if (service(s, (int)ev[j].data.u32) < 0) return -1;
  int64_t now = bp_now_ns();
  for (int i = 0; i < s->n; i++)
    if (s->cl[i].deadline <= now && service(s, i) < 0) return -1;
  return 0;
}

static int tl_ready(void *ctx) { return ((tl_state *)ctx)->nconnected; }

static int tl_send(void *ctx, int pair, const uint8_t *body, size_t len) {
  tl_state *s = ctx;
  int e = tern_client_send(s->cl[2 * pair].c, s->recv_name[pair], body, len, NULL);
  if (e) fprintf(stderr, "tern-load: send: %s\n", tern_errname(e));
  return e ? -1 : 0;
}

static void tl_close(void *ctx) {
  tl_state *s = ctx;
  for (int i = 0; s->cl && i < s->n; i++) tern_client_free(s->cl[i].c);
  if (s->epfd >= 0) close(s->epfd);
  free(s->recv_name);
  free(s->cl);
  free(s);
}

static void *tl_open(const lg_config *cfg) {
  tl_state *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->n = 2 * cfg->pairs;
  s->epfd = epoll_create1(EPOLL_CLOEXEC);
  s->cl = calloc((size_t)s->n, sizeof *s->cl);
  s->recv_name = calloc((size_t)cfg->pairs, sizeof *s->recv_name);
  if (s->epfd < 0 || !s->cl || !s->recv_name) {
    fprintf(stderr, "tern-load: out of memory or descriptors\n");
    goto fail;
  }
  uint8_t relay_key[TERN_KEY_BYTES];
  if (!cfg->relay_key || tern_key_from_hex(cfg->relay_key, relay_key) != 0) {
    fprintf(stderr, "tern-load: need --relay-key HEX (the relay's public key)\n");
    goto fail;
  }
  int64_t now = bp_now_ns();
  for (int i = 0; i < s->n; i++) {
    tl_client *k = &s->cl[i];
    k->pair = i / 2;
    k->is_recv = i % 2;
    char name[TERN_USER_MAX + 1];
    snprintf(name, sizeof name, "%s%c%d", cfg->prefix, k->is_recv ? 'r' : 's', k->pair);
    if (k->is_recv) snprintf(s->recv_name[k->pair], sizeof s->recv_name[0], "%s", name);
    int to_recv = k->is_recv && cfg->recv_host[0];
    const char *host = to_recv ? cfg->recv_host : cfg->host;
    int port = to_recv ? cfg->recv_port : cfg->port;
    char one[256];
    if (cfg->spread && spread_pick(cfg, k->pair + k->is_recv, one, &port) != 0) goto fail;
    if (cfg->spread) host = one;
    if (new_client(s, i, name, host, port, relay_key) != 0) goto fail;
    int rc = tern_client_connect(k->c);
    if (rc) {
      fprintf(stderr, "tern-load: connect: %s\n", tern_errname(rc));
      goto fail;
    }
    set_deadline(s, i, now);
  }
  return s;
fail:
  tl_close(s);
  return NULL;
}

/* ---- idle mode ------------------------------------------------------------- */

static volatile sig_atomic_t idle_stop, idle_go;
static void idle_on_term(int sig) {
  (void)sig;
  idle_stop = 1;
}
static void idle_on_go(int sig) {
  (void)sig;
  idle_go = 1;
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

/* The connect phase's line. */
static void print_idle(int n, const idle_counts *c, double secs, double rate, double cpu0) {
  printf("{\"mode\":\"idle\",\"asked\":%d,\"connected\":%d,\"connect_s\":%.3f,\"connect_rate\":%.0f,"
         "\"full\":%d,\"retries\":%d,\"cpu_s\":%.3f,\"connect_cpu_s\":%.3f}\n",
         n, c->ever, secs, rate, c->full, c->full + c->other, cpu_s(), cpu_s() - cpu0);
  fflush(stdout);
}

static int idle_main(int argc, char **argv) {
  int n = 0;
  double rate = 1000, hold = 0, timeout_s = 120;
  const char *relay = NULL, *key_hex = NULL;
  char prefix[32];
  snprintf(prefix, sizeof prefix, "I%lx%x", (unsigned long)time(NULL), (unsigned)getpid());
  static const struct option opts[] = {
      {"idle", required_argument, 0, 'n'},         {"relay", required_argument, 0, 'r'},
      {"relay-key", required_argument, 0, 'k'},    {"connect-rate", required_argument, 0, 'c'},
      {"hold", required_argument, 0, 'h'},         {"connect-timeout", required_argument, 0, 't'},
      {"prefix", required_argument, 0, 'x'},       {"wait-start", no_argument, 0, 'w'},
      {0, 0, 0, 0}};
  int wait_start = 0;
  int o;
  optind = 1;
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
      case 'n': n = atoi(optarg); break;
      case 'r': relay = optarg; break;
      case 'k': key_hex = optarg; break;
      case 'c': rate = atof(optarg); break;
      case 'h': hold = atof(optarg); break;
      case 't': timeout_s = atof(optarg); break;
      case 'x': snprintf(prefix, sizeof prefix, "%s", optarg); break;
      case 'w': wait_start = 1; break;
      default:
        fprintf(stderr, "usage: tern-load --idle N --relay HOST:PORT --relay-key HEX [--connect-rate R]\n"
                        "       [--hold S (0: until SIGTERM)] [--connect-timeout S] [--prefix P]\n"
                        "       [--wait-start (create the clients, print a line, connect on SIGUSR1)]\n");
        return 2;
    }
  }
  const char *colon = relay ? strrchr(relay, ':') : NULL;
  uint8_t relay_key[TERN_KEY_BYTES];
  if (n <= 0 || !colon || rate <= 0 || !key_hex || tern_key_from_hex(key_hex, relay_key) != 0) {
    fprintf(stderr, "tern-load: --idle needs N > 0, --relay HOST:PORT, --relay-key HEX, --connect-rate > 0\n");
    return 2;
  }
  char host[256];
  snprintf(host, sizeof host, "%.*s", (int)(colon - relay), relay);
  lg_tune_process();
  signal(SIGTERM, idle_on_term);
  signal(SIGINT, idle_on_term);
  /* SIGUSR1 blocked until the clients exist, so that an early one waits. */
  sigset_t usr1, old;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  signal(SIGUSR1, idle_on_go);
  sigprocmask(SIG_BLOCK, &usr1, &old);
  tl_state *s = calloc(1, sizeof *s);
  if (!s) return 2;
  s->n = n;
  s->epfd = epoll_create1(EPOLL_CLOEXEC);
  s->cl = calloc((size_t)n, sizeof *s->cl);
  if (s->epfd < 0 || !s->cl) {
    fprintf(stderr, "tern-load: out of memory or descriptors\n");
    tl_close(s);
    return 2;
  }
  for (int i = 0; i < n; i++) {
    tl_client *k = &s->cl[i];
    k->deadline = INT64_MAX;
    char name[TERN_USER_MAX + 1];
    snprintf(name, sizeof name, "%si%d", prefix, i);
    if (new_client(s, i, name, host, atoi(colon + 1), relay_key) != 0) {
      tl_close(s);
      return 2;
    }
  }
  /* Creating a client (keys, sockets) costs more CPU than its handshake:
   * with --wait-start every generator creates its clients first and the
   * connects of all of them start together. */
  if (wait_start) {
    printf("{\"mode\":\"created\",\"asked\":%d,\"cpu_s\":%.3f}\n", n, cpu_s());
    fflush(stdout);
    while (!idle_go && !idle_stop) sigsuspend(&old);
  }
  sigprocmask(SIG_SETMASK, &old, NULL);
  idle_counts c = {0};
  s->idle = &c;
  double cpu_created = cpu_s();
  int started = 0, reported = 0;
  int64_t t0 = bp_now_ns(), t_all = 0, hold_end = INT64_MAX;
  int64_t step = (int64_t)(1e9 / rate), give_up = t0 + (int64_t)(timeout_s * 1e9);
  struct epoll_event ev[256];
  while (!idle_stop) {
    int64_t now = bp_now_ns();
    /* Connect on schedule: client i at t0 + i / rate. */
    while (started < n && t0 + started * step <= now) {
      int rc = tern_client_connect(s->cl[started].c);
      if (rc) {
        fprintf(stderr, "tern-load: connect: %s\n", tern_errname(rc));
        tl_close(s);
        return 2;
      }
      set_deadline(s, started, now);
      started++;
    }
    if (!reported && ((started == n && c.ever == n) || now >= give_up)) {
      t_all = now;
      print_idle(n, &c, (t_all - t0) / 1e9, rate, cpu_created);
      reported = 1;
      if (hold > 0) hold_end = now + (int64_t)(hold * 1e9);
    }
    if (now >= hold_end) break;
    int64_t until = started < n ? t0 + started * step : now + 100000000;
    if (hold_end < until) until = hold_end;
    for (int i = 0; i < started; i++)
      if (s->cl[i].deadline < until) until = s->cl[i].deadline;
    int m = lg_epoll_wait(s->epfd, ev, 256, until);
    if (m < 0) {
      perror("tern-load: epoll_wait");
      break;
    }
    for (int j = 0; j < m; j++)
      if (service(s, (int)ev[j].data.u32) < 0) m = -1;
    now = bp_now_ns();
    for (int i = 0; i < started && m >= 0; i++)
      if (s->cl[i].deadline <= now && service(s, i) < 0) m = -1;
    if (m < 0) break;
  }
  if (!reported)
    print_idle(n, &c, (bp_now_ns() - t0) / 1e9, rate, cpu_created);
  printf("{\"mode\":\"idle_end\",\"asked\":%d,\"connected_now\":%d,\"dropped\":%d,\"cpu_s\":%.3f}\n", n,
         c.connected, c.dropped, cpu_s());
  fflush(stdout);
  tl_close(s);
  return 0;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--idle") || !strncmp(argv[i], "--idle=", 7)) return idle_main(argc, argv);
  /* libtern holds at most 256 ENet hosts (one a client) in a process
   * (MAX_VSOCKS in lib/io/dispatch.c): 200 a process leaves room for a
   * reconnect's new link. */
  static const lg_driver d = {.name = "tern-load", .max_clients = 200, .open = tl_open, .ready = tl_ready,
                              .step = tl_step, .send = tl_send, .close = tl_close};
  return lg_main(&d, "tern", argc, argv);
}
