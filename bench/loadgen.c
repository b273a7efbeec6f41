/* loadgen: schedule, accounting and report of the load generators; see
 * loadgen.h. */
#include "loadgen.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "benchproto.h"

enum { SEND_BATCH = 16 };

typedef struct lg_pair {
  int64_t next_due; /* open loop: when message next_seq is due */
  uint64_t next_seq;
  int inflight;     /* sent, not yet acknowledged by the relay */
  uint8_t *seen;    /* one byte per seq: arrived at the receiver */
  size_t seen_cap;
  uint64_t high;    /* the highest seq arrived (any: one has) */
  int any;
} lg_pair;

struct lg_run {
  lg_config cfg;
  lg_pair *p;
  int phase;
  int64_t t0, t_send_end, t_drain_end;
  double gap_ns; /* open loop: time between two sends, over all pairs */
  uint64_t sent, distinct, dups, foreign, failed, busy, reconnects;
  uint64_t reordered; /* arrived after a later message of its pair */
  uint64_t delivered_in_send;
  uint32_t *lat_us;
  size_t nlat, cap_lat;
  double relay_cpu0, relay_cpu1, self_cpu0, self_cpu1;
  int64_t wall_send_ns;
  int procs;          /* generator processes whose tallies this run holds */
  uint64_t unacked_merged; /* unacknowledged messages of the merged processes */
  double max_proc_pct; /* the busiest one's CPU over the send phase */
};

/* What a generator process sends its parent at the end (then nlat
 * latencies, uint32 us each). */
typedef struct lg_tally {
  uint64_t sent, distinct, dups, foreign, failed, busy, reconnects, delivered_in_send, nlat;
  uint64_t unacked, reordered;
  double self_cpu, wall_s;
} lg_tally;

static void usage(FILE *f, const char *system) {
  fprintf(f,
          "usage: %s-load --relay HOST:PORT [options]\n"
          "\n"
          "Drives N sender/receiver pairs through a running relay and prints one\n"
          "JSON line: delivered msg/s, latency percentiles, lost and duplicated\n"
          "messages, reconnects, the relay's CPU per message and its own.\n"
          "\n"
          "  --relay HOST:PORT     the relay (ternd) or broker (mosquitto)\n"
          "  --relay-key HEX       the relay's public key (tern only)\n"
          "  --recv-relay HOST:PORT  receivers connect here instead (tern only: another\n"
          "                        relay of a cluster); HOST may list several\n"
          "                        endpoints, \"a:1,b\" (the client races them)\n"
          "  --spread              tern: --relay lists the relays of a cluster\n"
          "                        (\"a:1,b:2,c:3\"): pair i's sender connects to relay\n"
          "                        i mod K alone, its receiver to relay (i + 1) mod K\n"
          "  --relay-pid PID       read the relay's CPU from /proc/PID/stat\n"
          "  --pairs N             sender/receiver pairs (default 1)\n"
          "  --rate R              open loop: R msg/s in total, on a fixed schedule;\n"
          "                        latency from the scheduled time (default 0:\n"
          "                        saturate)\n"
          "  --window W            saturate: each sender keeps at most W messages not\n"
          "                        yet acknowledged by the relay (default 64)\n"
          "  --duration S          send phase in seconds (default 10)\n"
          "  --drain S             longest wait after it for messages still on their\n"
          "                        way; what has not arrived then is lost (default 10)\n"
          "  --connect-timeout S   for every client to connect (default 60)\n"
          "  --size B              message body bytes (default 100)\n"
          "  --prefix P            names of this run's clients (default: unique)\n"
          "  --procs P             split the pairs over P generator processes that\n"
          "                        start together (default 1, or more if the system's\n"
          "                        client library caps clients per process)\n",
          system);
}

/* "HOST:PORT" (HOST may hold colons and commas: the last colon ends it)
 * into host[256] and *port. Returns 0 or -1. */
static int host_port(const char *arg, char host[256], int *port) {
  const char *colon = strrchr(arg, ':');
  if (!colon || (size_t)(colon - arg) >= 256) return -1;
  memcpy(host, arg, (size_t)(colon - arg));
  host[colon - arg] = 0;
  *port = atoi(colon + 1);
  return 0;
}

int lg_parse_args(lg_config *cfg, int argc, char **argv) {
  cfg->pairs = 1;
  cfg->rate = 0;
  cfg->window = 64;
  cfg->duration_s = 10;
  cfg->drain_s = 10;
  cfg->connect_s = 60;
  cfg->size = 100;
  cfg->relay_pid = 0;
  cfg->relay_key = NULL;
  cfg->procs = 1;
  cfg->host[0] = 0;
  cfg->port = 0;
  cfg->recv_host[0] = 0;
  cfg->recv_port = 0;
  cfg->spread = 0;
  snprintf(cfg->prefix, sizeof cfg->prefix, "L%lx%x", (unsigned long)time(NULL),
           (unsigned)getpid());
  static const struct option opts[] = {
      {"relay", required_argument, 0, 'r'},    {"relay-key", required_argument, 0, 'k'},
      {"recv-relay", required_argument, 0, 'V'},
      {"relay-pid", required_argument, 0, 'P'}, {"pairs", required_argument, 0, 'n'},
      {"rate", required_argument, 0, 'R'},     {"window", required_argument, 0, 'w'},
      {"duration", required_argument, 0, 'd'}, {"drain", required_argument, 0, 'D'},
      {"connect-timeout", required_argument, 0, 'c'},
      {"size", required_argument, 0, 's'},     {"prefix", required_argument, 0, 'x'},
      {"procs", required_argument, 0, 'p'},    {"spread", no_argument, 0, 'S'},
      {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (o) {
      case 'r':
        if (host_port(optarg, cfg->host, &cfg->port) != 0) goto bad;
        break;
      case 'V':
        if (host_port(optarg, cfg->recv_host, &cfg->recv_port) != 0) goto bad;
        break;
      case 'S': cfg->spread = 1; break;
      case 'k': cfg->relay_key = optarg; break;
      case 'P': cfg->relay_pid = atoi(optarg); break;
      case 'n': cfg->pairs = atoi(optarg); break;
      case 'R': cfg->rate = atof(optarg); break;
      case 'w': cfg->window = atoi(optarg); break;
      case 'd': cfg->duration_s = atof(optarg); break;
      case 'D': cfg->drain_s = atof(optarg); break;
      case 'c': cfg->connect_s = atof(optarg); break;
      case 's': cfg->size = (size_t)atol(optarg); break;
      case 'p': cfg->procs = atoi(optarg); break;
      case 'x': snprintf(cfg->prefix, sizeof cfg->prefix, "%s", optarg); break;
      case 'h': usage(stdout, cfg->system); return 1;
      default: goto bad;
    }
  }
  if (optind != argc || !cfg->host[0] || cfg->port <= 0 || cfg->port > 65535 ||
      cfg->pairs < 1 || cfg->pairs > 100000 || cfg->procs < 1 || cfg->procs > cfg->pairs || cfg->rate < 0 || cfg->window < 1 ||
      cfg->duration_s <= 0 || cfg->drain_s < 0 || cfg->connect_s <= 0 ||
      cfg->size < BP_MSG_HEADER || cfg->size > 65536)
    goto bad;
  return 0;
bad:
  usage(stderr, cfg->system);
  return -1;
}

void lg_tune_process(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
  }
  (void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
}

int lg_epoll_wait(int epfd, struct epoll_event *ev, int max, int64_t until_ns) {
  int64_t left = until_ns - bp_now_ns();
  if (left < 0) left = 0;
  if (left > 100000000) left = 100000000;
  struct timespec ts = {.tv_sec = left / 1000000000, .tv_nsec = left % 1000000000};
  int n = epoll_pwait2(epfd, ev, max, &ts, NULL);
  return n < 0 && errno == EINTR ? 0 : n;
}

/* utime + stime of a process, in seconds; -1 if it cannot be read. */
static double proc_cpu_seconds(int pid) {
  if (pid <= 0) return -1;
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  /* The command name may hold spaces and parentheses: fields count from
   * the last ')'. utime and stime are fields 14 and 15. */
  const char *s = strrchr(buf, ')');
  if (!s) return -1;
  unsigned long long ut = 0, st = 0;
  if (sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
    return -1;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

lg_run *lg_run_new(const lg_config *cfg) {
  lg_run *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->cfg = *cfg;
  r->procs = 1;
  r->p = calloc((size_t)cfg->pairs, sizeof *r->p);
  if (!r->p) {
    free(r);
    return NULL;
  }
  return r;
}

void lg_run_free(lg_run *r) {
  if (!r) return;
  for (int i = 0; i < r->cfg.pairs; i++) free(r->p[i].seen);
  free(r->p);
  free(r->lat_us);
  free(r);
}

static int64_t due_of(const lg_run *r, int pair, uint64_t seq) {
  /* Message seq of pair i is the (seq * pairs + i)-th of the whole run. */
  double k = (double)seq * r->cfg.pairs + pair;
  return r->t0 + (int64_t)(k * r->gap_ns);
}

void lg_start(lg_run *r, int64_t now_ns) {
  r->t0 = now_ns;
  r->t_send_end = now_ns + (int64_t)(r->cfg.duration_s * 1e9);
  r->phase = LG_SEND;
  r->gap_ns = r->cfg.rate > 0 ? 1e9 / r->cfg.rate : 0;
  for (int i = 0; i < r->cfg.pairs; i++) r->p[i].next_due = r->cfg.rate > 0 ? due_of(r, i, 0) : now_ns;
  r->relay_cpu0 = proc_cpu_seconds(r->cfg.relay_pid);
  r->self_cpu0 = bp_cpu_seconds();
}

int lg_phase(lg_run *r, int64_t now_ns) {
  if (r->phase == LG_SEND && now_ns >= r->t_send_end) {
    r->relay_cpu1 = proc_cpu_seconds(r->cfg.relay_pid);
    r->self_cpu1 = bp_cpu_seconds();
    r->wall_send_ns = now_ns - r->t0;
    r->t_drain_end = now_ns + (int64_t)(r->cfg.drain_s * 1e9);
    r->phase = LG_DRAIN;
  }
  if (r->phase == LG_DRAIN && (r->distinct >= r->sent || now_ns >= r->t_drain_end)) r->phase = LG_DONE;
  return r->phase;
}

int lg_take(lg_run *r, int pair, int64_t now_ns, uint8_t *body) {
  lg_pair *p = &r->p[pair];
  if (r->phase != LG_SEND) return 0;
  int64_t stamp;
  if (r->cfg.rate > 0) {
    if (p->next_due > now_ns || p->next_due >= r->t_send_end) return 0;
    stamp = p->next_due;
  } else {
    if (p->inflight >= r->cfg.window || now_ns >= r->t_send_end) return 0;
    stamp = now_ns;
  }
  if (p->next_seq >= p->seen_cap) {
    size_t cap = p->seen_cap ? p->seen_cap * 2 : 1024;
    uint8_t *s = realloc(p->seen, cap);
    if (!s) return 0;
    memset(s + p->seen_cap, 0, cap - p->seen_cap);
    p->seen = s;
    p->seen_cap = cap;
  }
  bp_msg m = {.kind = BP_DATA, .pair = (uint32_t)pair, .seq = p->next_seq, .sent_ns = stamp};
  bp_msg_write(body, r->cfg.size, &m);
  p->next_seq++;
  p->inflight++;
  r->sent++;
  if (r->cfg.rate > 0) p->next_due = due_of(r, pair, p->next_seq);
  return 1;
}

int64_t lg_next_due(const lg_run *r) {
  if (r->phase == LG_DRAIN) return r->t_drain_end;
  if (r->phase != LG_SEND) return INT64_MAX;
  int64_t t = r->t_send_end;
  for (int i = 0; i < r->cfg.pairs; i++) {
    const lg_pair *p = &r->p[i];
    int64_t d = r->cfg.rate > 0 ? p->next_due : (p->inflight < r->cfg.window ? r->t0 : INT64_MAX);
    if (d < t) t = d;
  }
  return t;
}

void lg_acked(lg_run *r, int pair) {
  if (r->p[pair].inflight > 0) r->p[pair].inflight--;
}

int lg_received(lg_run *r, int pair, const uint8_t *body, size_t len, int64_t now_ns) {
  bp_msg m;
  lg_pair *p = &r->p[pair];
  if (len != r->cfg.size || bp_msg_read(body, len, &m) != 0 || m.kind != BP_DATA ||
      m.pair != (uint32_t)pair || m.seq >= p->next_seq) {
    r->foreign++;
    return -1;
  }
  if (p->seen[m.seq]) {
    r->dups++;
    return 0;
  }
  p->seen[m.seq] = 1;
  r->distinct++;
  /* One sender, one receiver: tern keeps their order (spec/messages.md). */
  if (p->any && m.seq < p->high) r->reordered++;
  else p->high = m.seq;
  p->any = 1;
  if (r->phase == LG_SEND && now_ns < r->t_send_end) r->delivered_in_send++;
  if (r->nlat == r->cap_lat) {
    size_t cap = r->cap_lat ? r->cap_lat * 2 : 65536;
    uint32_t *l = realloc(r->lat_us, cap * sizeof *l);
    if (!l) return 0; /* the sample is lost, the count is not */
    r->lat_us = l;
    r->cap_lat = cap;
  }
  int64_t us = (now_ns - m.sent_ns) / 1000;
  r->lat_us[r->nlat++] = us < 0 ? 0 : us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
  return 0;
}

void lg_count_reconnect(lg_run *r) { r->reconnects++; }
void lg_count_failed(lg_run *r) { r->failed++; }
void lg_count_busy(lg_run *r) { r->busy++; }

/* Messages sent and not (yet) acknowledged by the relay. */
static uint64_t unacked(const lg_run *r) {
  uint64_t n = r->unacked_merged;
  for (int i = 0; i < r->cfg.pairs; i++) n += (uint64_t)r->p[i].inflight;
  return n;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/* The p-th quantile (0..1) in ms, nearest rank; -1 without samples. */
static double quantile_ms(const lg_run *r, double q) {
  if (!r->nlat) return -1;
  size_t k = (size_t)ceil(q * (double)r->nlat);
  if (k < 1) k = 1;
  if (k > r->nlat) k = r->nlat;
  return r->lat_us[k - 1] / 1000.0;
}

int lg_report(lg_run *r) {
  if (r->phase == LG_SEND) lg_phase(r, r->t_send_end); /* never ran to the end */
  qsort(r->lat_us, r->nlat, sizeof *r->lat_us, cmp_u32);
  double secs = r->wall_send_ns / 1e9;
  if (secs <= 0) secs = r->cfg.duration_s;
  double delivered_ps = (double)r->delivered_in_send / secs;
  uint64_t lost = r->sent > r->distinct ? r->sent - r->distinct : 0;
  double self = r->self_cpu1 - r->self_cpu0;
  double gen_pct = 100.0 * self / secs;
  /* Several processes: one at 100 % of a core is the limit. */
  double busiest = r->procs > 1 ? r->max_proc_pct : gen_pct;
  int have_relay = r->relay_cpu0 >= 0 && r->relay_cpu1 >= 0 && r->cfg.relay_pid > 0;
  double relay = have_relay ? r->relay_cpu1 - r->relay_cpu0 : 0;
  double relay_pct = 100.0 * relay / secs;
  double per = r->delivered_in_send ? 1e6 / (double)r->delivered_in_send : 0;
  const char *limit = "neither";
  const char *note = "neither the generator nor the relay was at 100% of a core: the offered "
                     "rate or the window set the pace";
  if (busiest >= 90) {
    limit = "generator";
    note = "the generator used ~100% of a core: this figure is the generator's limit, not the "
           "relay's (on 2 cores each side has one)";
  } else if (have_relay && relay_pct >= 90) {
    limit = "relay";
    note = "the relay used ~100% of a core: this is the relay's limit";
  }
  int saturate = r->cfg.rate <= 0;
  double offered = saturate ? (double)r->sent / secs : r->cfg.rate;
  printf("{\"system\":\"%s\",\"pairs\":%d,\"mode\":\"%s\",\"window\":%d,\"size\":%zu,"
         "\"duration_s\":%.2f,\"offered_per_s\":%.1f,\"sent\":%llu,\"delivered\":%llu,"
         "\"delivered_per_s\":%.1f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,"
         "\"p999_ms\":%.3f,\"max_ms\":%.3f,\"lost\":%llu,\"dups\":%llu,\"failed\":%llu,"
         "\"busy\":%llu,\"foreign\":%llu,\"reconnects\":%llu,\"unacked\":%llu,"
         "\"reordered\":%llu,",
         r->cfg.system, r->cfg.pairs, saturate ? "saturate" : "open", saturate ? r->cfg.window : 0,
         r->cfg.size, secs, offered, (unsigned long long)r->sent,
         (unsigned long long)r->distinct, delivered_ps, quantile_ms(r, 0.50),
         quantile_ms(r, 0.90), quantile_ms(r, 0.99), quantile_ms(r, 0.999),
         quantile_ms(r, 1.0), (unsigned long long)lost, (unsigned long long)r->dups,
         (unsigned long long)r->failed, (unsigned long long)r->busy,
         (unsigned long long)r->foreign, (unsigned long long)r->reconnects,
         (unsigned long long)unacked(r), (unsigned long long)r->reordered);
  if (have_relay)
    printf("\"relay_cpu_us_per_msg\":%.2f,\"relay_cpu_pct\":%.1f,", relay * per, relay_pct);
  else
    printf("\"relay_cpu_us_per_msg\":null,\"relay_cpu_pct\":null,");
  printf("\"gen_procs\":%d,\"gen_cpu_pct\":%.1f,\"gen_cpu_us_per_msg\":%.2f,\"limit\":\"%s\","
         "\"note\":\"%s\"}\n",
         r->procs, gen_pct, self * per, limit, note);
  fflush(stdout);
  fprintf(stderr,
          "%s-load: %d pairs, %s: %.0f msg/s delivered (offered %.0f), p50 %.3f ms, p99 %.3f "
          "ms, lost %llu, dups %llu, reconnects %llu, relay %.0f%% CPU, generator %.0f%% CPU "
          "(limit: %s)\n",
          r->cfg.system, r->cfg.pairs, saturate ? "saturate" : "open", delivered_ps, offered,
          quantile_ms(r, 0.50), quantile_ms(r, 0.99), (unsigned long long)lost,
          (unsigned long long)r->dups, (unsigned long long)r->reconnects, relay_pct, gen_pct,
          limit);
  if (busiest >= 90)
    fprintf(stderr, "%s-load: the generator was the limit, not the relay\n", r->cfg.system);
  if (r->reordered)
    fprintf(stderr, "%s-load: %llu messages arrived after a later one of their pair\n",
            r->cfg.system, (unsigned long long)r->reordered);
  /* Which messages did not arrive, per pair (this process's pairs): a
   * tail after the first gap says a conversation stalled there. */
  int told = 0;
  for (int i = 0; i < r->cfg.pairs && lost && told < 16; i++) {
    const lg_pair *p = &r->p[i];
    uint64_t first = UINT64_MAX, missing = 0;
    for (uint64_t k = 0; k < p->next_seq; k++)
      if (k >= p->seen_cap || !p->seen[k]) {
        if (first == UINT64_MAX) first = k;
        missing++;
      }
    if (!missing) continue;
    told++;
    fprintf(stderr,
            "%s-load: pair %d: %llu of %llu messages did not arrive, the first at seq %llu; %d "
            "unacknowledged\n",
            r->cfg.system, i, (unsigned long long)missing, (unsigned long long)p->next_seq,
            (unsigned long long)first, p->inflight);
  }
  /* Order is part of tern's promise; other systems' is reported only. */
  int order_bad = r->reordered && !strcmp(r->cfg.system, "tern");
  return lost || r->dups || r->failed || r->foreign || order_bad ? 1 : 0;
}

/* Services the clients until every one is ready. Returns 0 or -1. */
static int connect_all(const lg_driver *d, void *ctx, const lg_config *cfg) {
  int n = 2 * cfg->pairs;
  int64_t t = bp_now_ns(), give_up = t + (int64_t)(cfg->connect_s * 1e9);
  while (d->ready(ctx) < n && bp_now_ns() < give_up)
    if (d->step(ctx, NULL, give_up) < 0) return -1;
  if (d->ready(ctx) < n) {
    fprintf(stderr, "%s: only %d of %d clients ready in %.0f s\n", d->name, d->ready(ctx), n,
            cfg->connect_s);
    return -1;
  }
  fprintf(stderr, "%s: %d clients ready in %.2f s\n", d->name, n, (double)(bp_now_ns() - t) / 1e9);
  return 0;
}

/* The send and drain phases, from t0 (waiting for it while servicing the
 * clients). Returns 0 or -1. */
static int run_phases(const lg_driver *d, void *ctx, lg_run *run, uint8_t *body, int64_t t0) {
  while (bp_now_ns() < t0)
    if (d->step(ctx, NULL, t0) < 0) return -1;
  lg_start(run, t0);
  for (;;) {
    int64_t now = bp_now_ns();
    if (lg_phase(run, now) == LG_DONE) return 0;
    /* At most SEND_BATCH sends a pair between two services of the clients,
     * so that a large window (or a late schedule) cannot starve the
     * receivers and the acknowledgements; what is left is due at once. */
    for (int p = 0; p < run->cfg.pairs; p++)
      for (int k = 0; k < SEND_BATCH && lg_take(run, p, now, body); k++)
        if (d->send(ctx, p, body, run->cfg.size) < 0) return -1;
    if (d->step(ctx, run, lg_next_due(run)) < 0) return -1;
  }
}

static int write_all(int fd, const void *buf, size_t len) {
  const uint8_t *b = buf;
  while (len) {
    ssize_t w = write(fd, b, len);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    b += w;
    len -= (size_t)w;
  }
  return 0;
}

static int read_all(int fd, void *buf, size_t len) {
  uint8_t *b = buf;
  while (len) {
    ssize_t r = read(fd, b, len);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    b += r;
    len -= (size_t)r;
  }
  return 0;
}

/* A generator process: its share of the pairs, started at the t0 its
 * parent writes on `in`; its tally and latencies go to `out`. Returns its
 * exit status. */
static int child(const lg_driver *d, lg_config cfg, int in, int out) {
  uint8_t *body = malloc(cfg.size);
  lg_run *run = lg_run_new(&cfg);
  void *ctx = NULL;
  int ok = body && run && (ctx = d->open(&cfg)) && connect_all(d, ctx, &cfg) == 0;
  char c = ok ? 'R' : 'F';
  int64_t t0 = 0;
  if (write_all(out, &c, 1) != 0 || !ok) goto fail;
  /* Keep the clients serviced while the others connect. */
  for (;;) {
    struct pollfd pf = {.fd = in, .events = POLLIN};
    if (poll(&pf, 1, 0) == 1) break;
    if (d->step(ctx, NULL, bp_now_ns() + 5000000) < 0) goto fail;
  }
  if (read_all(in, &t0, sizeof t0) != 0 || run_phases(d, ctx, run, body, t0) != 0) goto fail;
  lg_tally t = {.sent = run->sent, .distinct = run->distinct, .dups = run->dups,
                .foreign = run->foreign, .failed = run->failed, .busy = run->busy,
                .reconnects = run->reconnects, .delivered_in_send = run->delivered_in_send,
                .nlat = run->nlat, .unacked = unacked(run), .reordered = run->reordered,
                .self_cpu = run->self_cpu1 - run->self_cpu0,
                .wall_s = run->wall_send_ns / 1e9};
  if (write_all(out, &t, sizeof t) != 0 || write_all(out, run->lat_us, run->nlat * sizeof *run->lat_us) != 0)
    goto fail;
  d->close(ctx);
  lg_run_free(run);
  free(body);
  return 0;
fail:
  if (ctx) d->close(ctx);
  lg_run_free(run);
  free(body);
  return 2;
}

/* Splits the run over cfg->procs processes, starts them together, samples
 * the relay's CPU over the common send phase and merges what they report
 * into `run`. Returns 0 or -1. */
static int run_procs(const lg_driver *d, const lg_config *cfg, lg_run *run) {
  int np = cfg->procs, status = -1, started = 0;
  pid_t *pid = calloc((size_t)np, sizeof *pid);
  int *to = calloc((size_t)np, sizeof *to), *from = calloc((size_t)np, sizeof *from);
  if (!pid || !to || !from) goto out;
  fflush(NULL);
  for (int k = 0; k < np; k++, started++) {
    lg_config c = *cfg;
    c.pairs = cfg->pairs / np + (k < cfg->pairs % np);
    c.rate = cfg->rate * c.pairs / cfg->pairs;
    c.procs = 1;
    snprintf(c.prefix, sizeof c.prefix, "%.20sp%d_", cfg->prefix, k % 100000);
    int a[2], b[2];
    if (pipe(a) != 0) goto out;
    if (pipe(b) != 0) {
      close(a[0]);
      close(a[1]);
      goto out;
    }
    pid[k] = fork();
    if (pid[k] == 0) {
      close(a[1]);
      close(b[0]);
      for (int j = 0; j < k; j++) {
        close(to[j]);
        close(from[j]);
      }
      _exit(child(d, c, a[0], b[1]));
    }
    close(a[0]);
    close(b[1]);
    to[k] = a[1];
    from[k] = b[0];
    if (pid[k] < 0) goto out;
  }
  for (int k = 0; k < np; k++) {
    char c = 0;
    if (read_all(from[k], &c, 1) != 0 || c != 'R') {
      fprintf(stderr, "%s: generator process %d did not get ready\n", d->name, k);
      goto out;
    }
  }
  int64_t t0 = bp_now_ns() + 50000000, t1 = t0 + (int64_t)(cfg->duration_s * 1e9);
  for (int k = 0; k < np; k++)
    if (write_all(to[k], &t0, sizeof t0) != 0) goto out;
  struct timespec ts = {.tv_sec = t0 / 1000000000, .tv_nsec = t0 % 1000000000};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
  run->relay_cpu0 = proc_cpu_seconds(cfg->relay_pid);
  ts = (struct timespec){.tv_sec = t1 / 1000000000, .tv_nsec = t1 % 1000000000};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
  run->relay_cpu1 = proc_cpu_seconds(cfg->relay_pid);
  run->wall_send_ns = t1 - t0;
  run->procs = np;
  run->phase = LG_DONE;
  for (int k = 0; k < np; k++) {
    lg_tally t;
    if (read_all(from[k], &t, sizeof t) != 0) {
      fprintf(stderr, "%s: generator process %d failed\n", d->name, k);
      goto out;
    }
    uint32_t *l = realloc(run->lat_us, (run->nlat + t.nlat + 1) * sizeof *l);
    if (!l) goto out;
    run->lat_us = l;
    run->cap_lat = run->nlat + t.nlat + 1;
    if (read_all(from[k], l + run->nlat, t.nlat * sizeof *l) != 0) goto out;
    run->nlat += t.nlat;
    run->sent += t.sent;
    run->distinct += t.distinct;
    run->dups += t.dups;
    run->reordered += t.reordered;
    run->foreign += t.foreign;
    run->failed += t.failed;
    run->busy += t.busy;
    run->reconnects += t.reconnects;
    run->unacked_merged += t.unacked;
    run->delivered_in_send += t.delivered_in_send;
    run->self_cpu1 += t.self_cpu;
    double pct = t.wall_s > 0 ? 100.0 * t.self_cpu / t.wall_s : 0;
    if (pct > run->max_proc_pct) run->max_proc_pct = pct;
  }
  status = 0;
out:
  for (int k = 0; k < started; k++) {
    close(to[k]);
    close(from[k]);
    if (pid[k] > 0) {
      if (status != 0) kill(pid[k], SIGTERM);
      waitpid(pid[k], NULL, 0);
    }
  }
  free(pid);
  free(to);
  free(from);
  return status;
}

int lg_main(const lg_driver *d, const char *system, int argc, char **argv) {
  lg_config cfg = {.system = system};
  int rc = lg_parse_args(&cfg, argc, argv);
  if (rc) return rc < 0 ? 2 : 0;
  lg_tune_process();
  if (d->max_clients > 0) {
    int need = (2 * cfg.pairs + d->max_clients - 1) / d->max_clients;
    if (need > cfg.procs) {
      fprintf(stderr, "%s: %d pairs over %d processes (at most %d clients in one)\n", d->name,
              cfg.pairs, need, d->max_clients);
      cfg.procs = need;
    }
  }
  uint8_t *body = malloc(cfg.size);
  lg_run *run = lg_run_new(&cfg);
  void *ctx = NULL;
  int status = 2;
  if (!body || !run) {
    fprintf(stderr, "%s: out of memory\n", d->name);
    goto out;
  }
  if (cfg.procs > 1) {
    if (run_procs(d, &cfg, run) != 0) goto out;
  } else {
    if (!(ctx = d->open(&cfg)) || connect_all(d, ctx, &cfg) != 0 ||
        run_phases(d, ctx, run, body, bp_now_ns()) != 0)
      goto out;
  }
  status = lg_report(run);
out:
  if (ctx) d->close(ctx);
  lg_run_free(run);
  free(body);
  return status;
}
