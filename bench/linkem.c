/*
 * linkem: a link emulator between two TUN devices.
 *
 * The kernel here has no netem, so delay, jitter, loss and rate limits are
 * applied in user space: linkem attaches to one TUN device on side A and one
 * on side B (each usually in its own network namespace), reads every IP
 * packet the kernel routes into one of them, and writes it into the other
 * after the emulated link has had its way with it. It forwards raw IP, so TCP
 * and UDP see exactly the same link.
 *
 * The TUN devices are expected to exist already as persistent devices
 * (`ip tuntap add dev NAME mode tun`, done by bench/netns.sh together with the
 * addresses and routes), so linkem can be stopped and restarted with other
 * parameters without tearing the topology down. linkem enters each namespace
 * with setns() only long enough to open /dev/net/tun there and attach to the
 * device by name, then returns to its own namespace.
 *
 * Per direction, a packet goes through these stages, in this order:
 *   1. random loss: Bernoulli (--loss), then Gilbert-Elliott (--ge);
 *   2. the bottleneck (--rate): a serial link of the given rate with a
 *      bounded FIFO in front of it (--queue, --queue-bytes; tail drop);
 *   3. propagation: --delay plus --jitter (uniform or normal), with arrival
 *      order preserved unless --reorder is given.
 * Packets then wait in one timer-ordered heap until their delivery time.
 */
/* setns(), CLONE_NEWNET and ppoll() are Linux extensions. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NSEC_PER_MSEC 1000000LL
#define NSEC_PER_SEC 1000000000LL

/* Largest IP packet a TUN device hands us without a virtio header. */
#define PKT_MAX 65536

/* Packets read from one device per wake-up, so one busy side cannot starve
 * the other or the delivery of due packets. */
#define READ_BATCH 64

enum { DIR_AB = 0, DIR_BA = 1 };

/* ------------------------------------------------------------------ PRNG */

/* xoshiro256** seeded through splitmix64: fast, good enough for link
 * emulation, and reproducible from --seed. */
typedef struct rng {
  uint64_t s[4];
} rng;

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static void rng_seed(rng *r, uint64_t seed) {
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

/* Uniform in [0, 1) with 53 bits. */
static double rng_unit(rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

/* Standard normal by Box-Muller; the second value is thrown away to keep the
 * stream's consumption per packet fixed. */
static double rng_normal(rng *r) {
  double u1 = rng_unit(r);
  double u2 = rng_unit(r);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* ---------------------------------------------------------- configuration */

enum jitter_dist { JITTER_UNIFORM, JITTER_NORMAL };

typedef struct dir_config {
  double delay_ms;   /* one-way propagation delay */
  double jitter_ms;  /* uniform: +-jitter; normal: standard deviation */
  double loss_pct;   /* Bernoulli loss probability, percent */
  bool ge_on;        /* Gilbert-Elliott loss enabled */
  double ge_p_pct;   /* P(good -> bad) per packet, percent */
  double ge_r_pct;   /* P(bad -> good) per packet, percent */
  double ge_lg_pct;  /* loss probability in the good state, percent */
  double ge_lb_pct;  /* loss probability in the bad state, percent */
  double rate_kbit;  /* bottleneck rate in kbit/s; 0 means unlimited */
  uint64_t queue_pkts;  /* bottleneck queue limit in packets; 0: none */
  uint64_t queue_bytes; /* bottleneck queue limit in bytes; 0: none */
  enum jitter_dist jitter_dist;
  bool reorder;      /* let jitter reorder packets */
} dir_config;

typedef struct counters {
  uint64_t rx_pkts, rx_bytes;           /* read from the ingress device */
  uint64_t tx_pkts, tx_bytes;           /* written to the egress device */
  uint64_t loss_pkts, loss_bytes;       /* dropped by Bernoulli or GE loss */
  uint64_t queue_pkts, queue_bytes;     /* tail-dropped at the bottleneck */
  uint64_t overflow_pkts;               /* dropped: --max-held reached */
  uint64_t write_errors;                /* egress write() failed */
} counters;

/* A packet in the bottleneck FIFO is remembered only by when it leaves the
 * queue and its size, which is all the tail-drop decision needs. */
typedef struct fifo_slot {
  int64_t depart_ns;
  uint32_t len;
} fifo_slot;

typedef struct direction {
  dir_config cfg;
  counters cnt;
  rng loss_rng;   /* loss decisions only: jitter settings do not move them */
  rng delay_rng;  /* jitter only */
  bool ge_bad;    /* Gilbert-Elliott state */
  int64_t link_free_ns;   /* when the bottleneck finishes its last packet */
  int64_t last_deliver_ns; /* for order preservation */
  fifo_slot *fifo;        /* ring of packets still in the bottleneck */
  size_t fifo_cap, fifo_head, fifo_len;
  uint64_t fifo_bytes;
  int in_fd, out_fd;
} direction;

/* ------------------------------------------------------------------ heap */

typedef struct pkt {
  int64_t due_ns;
  uint64_t seq;  /* tie-breaker: equal times leave in arrival order */
  int dir;
  uint32_t len;
  unsigned char data[];
} pkt;

typedef struct heap {
  pkt **v;
  size_t len, cap;
} heap;

static bool pkt_before(const pkt *a, const pkt *b) {
  return a->due_ns < b->due_ns || (a->due_ns == b->due_ns && a->seq < b->seq);
}

static int heap_push(heap *h, pkt *p) {
  if (h->len == h->cap) {
    size_t ncap = h->cap ? h->cap * 2 : 1024;
    pkt **nv = realloc(h->v, ncap * sizeof *nv);
    if (!nv) return -1;
    h->v = nv;
    h->cap = ncap;
  }
  size_t i = h->len++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!pkt_before(p, h->v[parent])) break;
    h->v[i] = h->v[parent];
    i = parent;
  }
  h->v[i] = p;
  return 0;
}

static pkt *heap_pop(heap *h) {
  pkt *top = h->v[0];
  pkt *last = h->v[--h->len];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    const pkt *best = last;
    if (l < h->len && pkt_before(h->v[l], best)) {
      m = l;
      best = h->v[l];
    }
    if (r < h->len && pkt_before(h->v[r], best)) m = r;
    if (m == i) break;
    h->v[i] = h->v[m];
    i = m;
  }
  if (h->len) h->v[i] = last;
  return top;
}

/* ------------------------------------------------------------------ time */

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec;
}

static double ms_to_ns(double ms) { return ms * (double)NSEC_PER_MSEC; }

/* -------------------------------------------------------------- emulation */

/* Decides whether the link loses this packet. Both generators advance by a
 * fixed amount per packet, so enabling one model does not shift the other. */
static bool lose(direction *d) {
  double u1 = rng_unit(&d->loss_rng) * 100.0;
  double u2 = rng_unit(&d->loss_rng) * 100.0;
  double u3 = rng_unit(&d->loss_rng) * 100.0;
  bool lost = u1 < d->cfg.loss_pct;
  if (d->cfg.ge_on) {
    /* Loss is decided in the current state, then the chain moves on. */
    double pl = d->ge_bad ? d->cfg.ge_lb_pct : d->cfg.ge_lg_pct;
    if (u2 < pl) lost = true;
    if (d->ge_bad) {
      if (u3 < d->cfg.ge_r_pct) d->ge_bad = false;
    } else {
      if (u3 < d->cfg.ge_p_pct) d->ge_bad = true;
    }
  }
  return lost;
}

/* Removes from the bottleneck FIFO every packet that has left it by `now`. */
static void fifo_expire(direction *d, int64_t now) {
  while (d->fifo_len) {
    fifo_slot *s = &d->fifo[d->fifo_head];
    if (s->depart_ns > now) break;
    d->fifo_bytes -= s->len;
    d->fifo_head = (d->fifo_head + 1) % d->fifo_cap;
    d->fifo_len--;
  }
}

static int fifo_push(direction *d, int64_t depart, uint32_t len) {
  if (d->fifo_len == d->fifo_cap) {
    size_t ncap = d->fifo_cap ? d->fifo_cap * 2 : 256;
    fifo_slot *nf = malloc(ncap * sizeof *nf);
    if (!nf) return -1;
    for (size_t i = 0; i < d->fifo_len; i++) nf[i] = d->fifo[(d->fifo_head + i) % d->fifo_cap];
    free(d->fifo);
    d->fifo = nf;
    d->fifo_cap = ncap;
    d->fifo_head = 0;
  }
  d->fifo[(d->fifo_head + d->fifo_len) % d->fifo_cap] = (fifo_slot){depart, len};
  d->fifo_len++;
  d->fifo_bytes += len;
  return 0;
}

/* Computes when a packet of `len` bytes that arrived at `now` reaches the far
 * end, or returns -1 if the bottleneck queue drops it. */
static int64_t schedule(direction *d, int64_t now, uint32_t len) {
  int64_t depart = now;
  if (d->cfg.rate_kbit > 0) {
    fifo_expire(d, now);
    if ((d->cfg.queue_pkts && d->fifo_len + 1 > d->cfg.queue_pkts) ||
        (d->cfg.queue_bytes && d->fifo_bytes + len > d->cfg.queue_bytes))
      return -1;
    int64_t start = d->link_free_ns > now ? d->link_free_ns : now;
    /* kbit/s is bits per millisecond. */
    depart = start + (int64_t)ms_to_ns((double)len * 8.0 / d->cfg.rate_kbit);
    d->link_free_ns = depart;
    if (fifo_push(d, depart, len) < 0) return -1;
  }
  double delay = d->cfg.delay_ms;
  if (d->cfg.jitter_ms > 0) {
    if (d->cfg.jitter_dist == JITTER_NORMAL)
      delay += rng_normal(&d->delay_rng) * d->cfg.jitter_ms;
    else
      delay += (2.0 * rng_unit(&d->delay_rng) - 1.0) * d->cfg.jitter_ms;
    if (delay < 0) delay = 0;
  }
  int64_t due = depart + (int64_t)ms_to_ns(delay);
  /* A single path does not reorder: a packet never overtakes the one before
   * it unless --reorder asks for that. */
  if (!d->cfg.reorder && due < d->last_deliver_ns) due = d->last_deliver_ns;
  d->last_deliver_ns = due;
  return due;
}

/* ----------------------------------------------------------------- output */

static const char *dir_name(int i) { return i == DIR_AB ? "a_to_b" : "b_to_a"; }

static void print_summary(FILE *f, direction dirs[2], size_t held, int64_t start_ns) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
               (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
  fprintf(f, "{\"linkem\":1,\"elapsed_s\":%.3f,\"cpu_s\":%.3f,\"held\":%zu",
          (double)(now_ns() - start_ns) / 1e9, cpu, held);
  for (int i = 0; i < 2; i++) {
    const counters *c = &dirs[i].cnt;
    fprintf(f,
            ",\"%s\":{\"rx_pkts\":%" PRIu64 ",\"rx_bytes\":%" PRIu64 ",\"tx_pkts\":%" PRIu64
            ",\"tx_bytes\":%" PRIu64 ",\"loss_pkts\":%" PRIu64 ",\"loss_bytes\":%" PRIu64
            ",\"queue_drop_pkts\":%" PRIu64 ",\"queue_drop_bytes\":%" PRIu64
            ",\"overflow_pkts\":%" PRIu64 ",\"write_errors\":%" PRIu64 "}",
            dir_name(i), c->rx_pkts, c->rx_bytes, c->tx_pkts, c->tx_bytes, c->loss_pkts,
            c->loss_bytes, c->queue_pkts, c->queue_bytes, c->overflow_pkts, c->write_errors);
  }
  fprintf(f, "}\n");
  fflush(f);
}
/* ------------------------------------------------------------------- TUN */

/* Attaches to the TUN device named by `spec`, "NETNS:DEV" or "DEV" (DEV in
 * linkem's own namespace). NETNS is a name under /var/run/netns or an
 * absolute path to a namespace file. The device must already exist: a
 * transient device created here would have no address and vanish with us. */
static int tun_attach(const char *spec) {
  char nspath[4096] = "", dev[IFNAMSIZ];
  const char *colon = strchr(spec, ':');
  const char *name = colon ? colon + 1 : spec;
  if (colon && colon != spec) {
    int n = spec[0] == '/' ? snprintf(nspath, sizeof nspath, "%.*s", (int)(colon - spec), spec)
                           : snprintf(nspath, sizeof nspath, "/var/run/netns/%.*s",
                                      (int)(colon - spec), spec);
    if (n < 0 || (size_t)n >= sizeof nspath) {
      fprintf(stderr, "linkem: namespace name too long in '%s'\n", spec);
      return -1;
    }
  }
  if (strlen(name) == 0 || strlen(name) >= IFNAMSIZ) {
    fprintf(stderr, "linkem: bad device name in '%s'\n", spec);
    return -1;
  }
  snprintf(dev, sizeof dev, "%s", name);

  int self = -1, target = -1, fd = -1, sock = -1, ret = -1;
  if (nspath[0]) {
    self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    target = open(nspath, O_RDONLY | O_CLOEXEC);
    if (self < 0 || target < 0) {
      fprintf(stderr, "linkem: cannot open namespace %s: %s\n", nspath, strerror(errno));
      goto out;
    }
    if (setns(target, CLONE_NEWNET) < 0) {
      fprintf(stderr, "linkem: setns(%s): %s\n", nspath, strerror(errno));
      goto out;
    }
  }
  /* The device must exist in this namespace already. */
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, dev, strlen(dev) + 1);
  sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0 || ioctl(sock, SIOCGIFINDEX, &ifr) < 0) {
    fprintf(stderr, "linkem: no device %s in namespace %s (create it with netns.sh)\n", dev,
            nspath[0] ? nspath : "(own)");
    goto restore;
  }
  /* /dev/net/tun resolves the device name in the namespace of the opener,
   * which is why it is opened after setns(). */
  fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "linkem: open /dev/net/tun: %s\n", strerror(errno));
    goto restore;
  }
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, dev, strlen(dev) + 1);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    fprintf(stderr, "linkem: TUNSETIFF %s: %s\n", dev, strerror(errno));
    close(fd);
    fd = -1;
    goto restore;
  }
  ret = fd;
restore:
  if (self >= 0 && setns(self, CLONE_NEWNET) < 0) {
    fprintf(stderr, "linkem: cannot return to own namespace: %s\n", strerror(errno));
    if (ret >= 0) close(ret);
    ret = -1;
  }
out:
  if (sock >= 0) close(sock);
  if (self >= 0) close(self);
  if (target >= 0) close(target);
  return ret;
}

/* --------------------------------------------------------------- options */

static void usage(FILE *f) {
  fputs(
      "usage: linkem --a [NETNS:]DEV --b [NETNS:]DEV [options]\n"
      "\n"
      "Forwards IP packets between two existing TUN devices, applying loss, a\n"
      "rate limit with a bounded queue, delay and jitter on the way. NETNS is a\n"
      "name under /var/run/netns or an absolute path; without it the device is in\n"
      "linkem's own namespace. Create devices and addresses with bench/netns.sh.\n"
      "\n"
      "Link options take VALUE for both directions or AB/BA for A->B and B->A:\n"
      "  --delay MS[/MS]         one-way delay in ms (fractions allowed); default 0\n"
      "  --jitter MS[/MS]        jitter in ms: uniform in [-MS,+MS] around the delay,\n"
      "                          or the standard deviation with --jitter-dist normal;\n"
      "                          the total delay is never below 0. Default 0\n"
      "  --jitter-dist uniform|normal   default uniform\n"
      "  --reorder               let jitter reorder packets; by default a packet\n"
      "                          never overtakes an earlier one (it waits instead)\n"
      "  --loss PCT[/PCT]        Bernoulli loss in percent; default 0\n"
      "  --ge P,R[,LG,LB][/...]  Gilbert-Elliott bursty loss, all in percent:\n"
      "                          P = P(good->bad), R = P(bad->good) per packet,\n"
      "                          LG/LB = loss in the good/bad state (default 0/100).\n"
      "                          Mean loss = (R*LG + P*LB)/(P+R). Applied after --loss\n"
      "  --rate KBIT[/KBIT]      bottleneck rate in kbit/s; 0 = unlimited (default)\n"
      "  --queue PKTS[/PKTS]     bottleneck queue limit in packets (tail drop);\n"
      "                          default 1000; 0 = no packet limit\n"
      "  --queue-bytes B[/B]     bottleneck queue limit in bytes; default 0 = none\n"
      "\n"
      "Other options:\n"
      "  --seed N                PRNG seed (default 1); same seed, same drops\n"
      "  --duration S            exit after S seconds (fractions allowed)\n"
      "  --max-held N            most packets held in the delay line at once;\n"
      "                          more are dropped and counted (default 262144)\n"
      "  --ready-file PATH       create PATH once both devices are attached\n"
      "  --help                  this text\n"
      "\n"
      "Stages, per direction: loss, then bottleneck queue, then delay+jitter.\n"
      "On SIGINT, SIGTERM or the end of --duration linkem prints one JSON line of\n"
      "per-direction counters to stdout and exits 0; SIGUSR1 prints the same line\n"
      "and carries on. Counters: rx (read from the ingress device), tx (written to\n"
      "the egress device), loss, queue_drop, overflow, write_errors; packets and\n"
      "bytes are IP packets as the kernel handed them over (IP header included).\n",
      f);
}

/* Parses "X" or "X/Y" into out[0] (A->B) and out[1] (B->A). */
static int parse_pair(const char *s, double out[2]) {
  char *end;
  errno = 0;
  double a = strtod(s, &end);
  if (errno || end == s || a < 0) return -1;
  double b = a;
  if (*end == '/') {
    const char *t = end + 1;
    b = strtod(t, &end);
    if (errno || end == t || b < 0) return -1;
  }
  if (*end) return -1;
  out[0] = a;
  out[1] = b;
  return 0;
}

static int parse_ge_one(const char *s, const char *stop, dir_config *c) {
  double v[4] = {0, 0, 0, 100};
  int n = 0;
  const char *p = s;
  while (p < stop && n < 4) {
    char *end;
    errno = 0;
    v[n] = strtod(p, &end);
    if (errno || end == p || v[n] < 0 || v[n] > 100) return -1;
    n++;
    p = end;
    if (p < stop && *p == ',') p++;
    else break;
  }
  if (p != stop || (n != 2 && n != 4)) return -1;
  if (v[0] + v[1] <= 0) return -1;
  c->ge_on = true;
  c->ge_p_pct = v[0];
  c->ge_r_pct = v[1];
  c->ge_lg_pct = v[2];
  c->ge_lb_pct = v[3];
  return 0;
}

static int parse_ge(const char *s, direction dirs[2]) {
  const char *slash = strchr(s, '/');
  const char *end = s + strlen(s);
  if (parse_ge_one(s, slash ? slash : end, &dirs[DIR_AB].cfg) < 0) return -1;
  return parse_ge_one(slash ? slash + 1 : s, slash ? end : end, &dirs[DIR_BA].cfg);
}

/* ------------------------------------------------------------------ main */

static volatile sig_atomic_t stop_flag, report_flag;

static void on_stop(int sig) {
  (void)sig;
  stop_flag = 1;
}

static void on_report(int sig) {
  (void)sig;
  report_flag = 1;
}

/* Reads up to READ_BATCH packets from one side and schedules them. Returns 0,
 * or -1 when the device is gone. */
static int ingest(direction *d, int dir, heap *h, size_t max_held, uint64_t *seq) {
  static unsigned char buf[PKT_MAX];
  for (int i = 0; i < READ_BATCH; i++) {
    ssize_t n = read(d->in_fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return 0;
      fprintf(stderr, "linkem: read %s: %s\n", dir_name(dir), strerror(errno));
      return -1;
    }
    if (n == 0) return 0;
    int64_t now = now_ns();
    uint32_t len = (uint32_t)n;
    d->cnt.rx_pkts++;
    d->cnt.rx_bytes += len;
    if (lose(d)) {
      d->cnt.loss_pkts++;
      d->cnt.loss_bytes += len;
      continue;
    }
    int64_t due = schedule(d, now, len);
    if (due < 0) {
      d->cnt.queue_pkts++;
      d->cnt.queue_bytes += len;
      continue;
    }
    pkt *p = h->len < max_held ? malloc(sizeof *p + len) : NULL;
    if (!p) {
      d->cnt.overflow_pkts++;
      continue;
    }
    p->due_ns = due;
    p->seq = (*seq)++;
    p->dir = dir;
    p->len = len;
    memcpy(p->data, buf, len);
    if (heap_push(h, p) < 0) {
      free(p);
      d->cnt.overflow_pkts++;
    }
  }
  return 0;
}

/* Writes every packet due by `now`. */
static void deliver(direction dirs[2], heap *h, int64_t now) {
  while (h->len && h->v[0]->due_ns <= now) {
    pkt *p = heap_pop(h);
    direction *d = &dirs[p->dir];
    ssize_t n = write(d->out_fd, p->data, p->len);
    if (n == (ssize_t)p->len) {
      d->cnt.tx_pkts++;
      d->cnt.tx_bytes += p->len;
    } else {
      d->cnt.write_errors++;
    }
    free(p);
  }
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"a", required_argument, 0, 'a'},          {"b", required_argument, 0, 'b'},
      {"delay", required_argument, 0, 'd'},      {"jitter", required_argument, 0, 'j'},
      {"jitter-dist", required_argument, 0, 'J'}, {"reorder", no_argument, 0, 'R'},
      {"loss", required_argument, 0, 'l'},       {"ge", required_argument, 0, 'g'},
      {"rate", required_argument, 0, 'r'},       {"queue", required_argument, 0, 'q'},
      {"queue-bytes", required_argument, 0, 'Q'}, {"seed", required_argument, 0, 's'},
      {"duration", required_argument, 0, 't'},   {"max-held", required_argument, 0, 'm'},
      {"ready-file", required_argument, 0, 'f'}, {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  direction dirs[2];
  memset(dirs, 0, sizeof dirs);
  dirs[0].cfg.queue_pkts = dirs[1].cfg.queue_pkts = 1000;
  const char *spec_a = NULL, *spec_b = NULL, *ready_file = NULL;
  uint64_t seed = 1;
  double duration_s = 0;
  size_t max_held = 262144;
  double pair[2];
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'a': spec_a = optarg; break;
    case 'b': spec_b = optarg; break;
    case 'h': usage(stdout); return 0;
    case 'R': dirs[0].cfg.reorder = dirs[1].cfg.reorder = true; break;
    case 'f': ready_file = optarg; break;
    case 'J':
      if (strcmp(optarg, "uniform") == 0) {
        dirs[0].cfg.jitter_dist = dirs[1].cfg.jitter_dist = JITTER_UNIFORM;
      } else if (strcmp(optarg, "normal") == 0) {
        dirs[0].cfg.jitter_dist = dirs[1].cfg.jitter_dist = JITTER_NORMAL;
      } else {
        fprintf(stderr, "linkem: --jitter-dist must be uniform or normal\n");
        return 2;
      }
      break;
    case 'g':
      if (parse_ge(optarg, dirs) < 0) {
        fprintf(stderr, "linkem: bad --ge '%s' (P,R or P,R,LG,LB in percent)\n", optarg);
        return 2;
      }
      break;
    case 's':
    case 't':
    case 'm': {
      char *end;
      errno = 0;
      double v = strtod(optarg, &end);
      if (errno || end == optarg || *end || v < 0) {
        fprintf(stderr, "linkem: bad number '%s'\n", optarg);
        return 2;
      }
      if (c == 's') seed = strtoull(optarg, NULL, 10);
      else if (c == 't') duration_s = v;
      else max_held = (size_t)v;
      break;
    }
    case 'd': case 'j': case 'l': case 'r': case 'q': case 'Q':
      if (parse_pair(optarg, pair) < 0 || ((c == 'l') && (pair[0] > 100 || pair[1] > 100))) {
        fprintf(stderr, "linkem: bad value '%s' for --%s\n", optarg,
                c == 'd' ? "delay" : c == 'j' ? "jitter" : c == 'l' ? "loss"
                : c == 'r' ? "rate" : c == 'q' ? "queue" : "queue-bytes");
        return 2;
      }
      for (int i = 0; i < 2; i++) {
        dir_config *cfg = &dirs[i].cfg;
        switch (c) {
        case 'd': cfg->delay_ms = pair[i]; break;
        case 'j': cfg->jitter_ms = pair[i]; break;
        case 'l': cfg->loss_pct = pair[i]; break;
        case 'r': cfg->rate_kbit = pair[i]; break;
        case 'q': cfg->queue_pkts = (uint64_t)pair[i]; break;
        default: cfg->queue_bytes = (uint64_t)pair[i]; break;
        }
      }
      break;
    default: usage(stderr); return 2;
    }
  }
  if (!spec_a || !spec_b || optind != argc) {
    usage(stderr);
    return 2;
  }
  for (int i = 0; i < 2; i++) {
    /* Distinct streams per direction and purpose, all from one seed. */
    rng_seed(&dirs[i].loss_rng, seed * 4 + (uint64_t)i * 2);
    rng_seed(&dirs[i].delay_rng, seed * 4 + (uint64_t)i * 2 + 1);
  }

  /* Signals are blocked except inside ppoll(), so a flag set by a handler is
   * always seen before the loop sleeps again. */
  sigset_t block, orig;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGUSR1);
  sigprocmask(SIG_BLOCK, &block, &orig);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sa.sa_handler = on_report;
  sigaction(SIGUSR1, &sa, NULL);

  int fd_a = tun_attach(spec_a);
  if (fd_a < 0) return 1;
  int fd_b = tun_attach(spec_b);
  if (fd_b < 0) {
    close(fd_a);
    return 1;
  }
  dirs[DIR_AB].in_fd = fd_a;
  dirs[DIR_AB].out_fd = fd_b;
  dirs[DIR_BA].in_fd = fd_b;
  dirs[DIR_BA].out_fd = fd_a;
  if (ready_file) {
    FILE *f = fopen(ready_file, "w");
    if (!f) {
      fprintf(stderr, "linkem: cannot create %s: %s\n", ready_file, strerror(errno));
      return 1;
    }
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
  }

  /* The default 50 us timer slack would be added to every delay. */
  prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);

  heap h = {0};
  uint64_t seq = 0;
  int rc = 0;
  int64_t start = now_ns();
  int64_t end = duration_s > 0 ? start + (int64_t)(duration_s * 1e9) : INT64_MAX;
  struct pollfd pfd[2] = {{fd_a, POLLIN, 0}, {fd_b, POLLIN, 0}};
  while (!stop_flag) {
    int64_t now = now_ns();
    deliver(dirs, &h, now);
    if (now >= end) break;
    if (report_flag) {
      report_flag = 0;
      print_summary(stdout, dirs, h.len, start);
    }
    int64_t wake = end;
    if (h.len && h.v[0]->due_ns < wake) wake = h.v[0]->due_ns;
    struct timespec ts, *tsp = NULL;
    if (wake != INT64_MAX) {
      int64_t wait = wake - now;
      ts.tv_sec = wait / NSEC_PER_SEC;
      ts.tv_nsec = wait % NSEC_PER_SEC;
      tsp = &ts;
    }
    int n = ppoll(pfd, 2, tsp, &orig);
    if (n < 0) {
      if (errno == EINTR) continue;
      fprintf(stderr, "linkem: ppoll: %s\n", strerror(errno));
      rc = 1;
      break;
    }
    for (int i = 0; i < 2; i++) {
      if (pfd[i].revents & (POLLERR | POLLHUP | POLLNVAL)) {
        fprintf(stderr, "linkem: device %s went away\n", i == 0 ? spec_a : spec_b);
        rc = 1;
        stop_flag = 1;
      } else if ((pfd[i].revents & POLLIN) && ingest(&dirs[i], i, &h, max_held, &seq) < 0) {
        rc = 1;
        stop_flag = 1;
      }
    }
  }
  print_summary(stdout, dirs, h.len, start);
  while (h.len) free(heap_pop(&h));
  free(h.v);
  for (int i = 0; i < 2; i++) free(dirs[i].fifo);
  close(fd_a);
  close(fd_b);
  return rc;
}
