/*
 * benchclient: load generator and receiver for the relay benchmarks.
 *
 *   benchclient --transport tcp|enet|tern|tern-nocopies --relay IP:PORT [--relay-key HEX]
 *               --role send|recv|both
 *               [--workload chat|burst|big|connect] [--pairs N] [--rate R]
 *               [--count N] [--duration S] [--size B] [--seed N]
 *               [--prefix P] [--timeout S] [--ready-file PATH]
 *               [--latencies FILE] [--label TEXT] [--accept-log FILE]
 *
 * Pair i is sender "<P>s<i>" and receiver "<P>r<i>"; a "send" process runs
 * the senders, a "recv" process the receivers (start it first and wait for
 * its --ready-file), "both" runs all of them. Every message carries its pair,
 * a sequence number and a CLOCK_MONOTONIC send stamp (benchproto.h); the
 * receiver takes the one-way latency of each at arrival. After its last
 * message a sender sends BP_END with the count it sent; the receiver answers
 * BP_END with the count it got, which lets both sides stop.
 *
 * The receiving side ("recv" or "both") prints one JSON line: messages sent
 * and received, lost, duplicates, latency p50/p90/p99/p99.9/max/mean in ms,
 * and CPU time per message (getrusage of this process, counted from the
 * start of the workload, so connecting is left out). A "send" process
 * prints its own CPU time per message.
 *
 * --workload connect runs one client (any --role) that sends one message to
 * itself as early as its transport allows (tern: queued at connect, so it
 * rides in the handshake), and measures from the start of its connect to
 * the moment the relay accepted that message, by the relay's own stamp
 * (CLOCK_REALTIME, shared by every namespace): tern's relay puts it in
 * SERVER_ACK (Unix ms), the TCP and ENet relays write it to their
 * --accept-log, which this reads (--accept-log). It also measures the round
 * trip to the first sign of acceptance back at the client: TERN_EV_SENT for
 * tern, the return of the message through the relay for TCP and ENet (their
 * relays send no acknowledgement). It prints one JSON line with connect_ms
 * (connect call to "connected"), first_accept_ms (relay's stamp), ack_ms
 * and echo_ms.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "benchproto.h"
#include "transport.h"

/* A client introducing itself to the relay sends this kind to itself; its
 * return proves the relay knows the name before any pair starts. */
#define KIND_SYNC 3

typedef struct pair {
  /* sender side */
  uint64_t sent;
  int64_t next_ns;   /* next scheduled send; INT64_MAX when finished */
  bool end_sent, end_acked;
  /* receiver side */
  uint8_t *seen;     /* one byte per sequence number */
  size_t seen_cap;
  uint64_t received, dups;
  bool end_got;
  uint64_t end_count; /* what the sender said it sent */
} pair;

typedef struct bench {
  const bench_transport *tp;
  void *st;
  const char *role;
  bool sending, receiving;
  int pairs;
  size_t size;
  double rate;      /* messages/s per pair; 0 = all at once */
  uint64_t count;   /* per pair; 0 = unlimited (until duration) */
  double duration;  /* s; 0 = unlimited (until count) */
  uint64_t rng;
  char prefix[32];
  pair *p;
  char **names;     /* this process's clients */
  int nclients;
  bool *synced;
  int64_t *lat;     /* one-way latencies, ns */
  size_t lat_len, lat_cap;
  uint8_t *body;
  int64_t start_ns;
  double start_cpu; /* CPU seconds used before the workload began */
  bool failed;
} bench;

static double rand_unit(bench *b) {
  /* splitmix64: reproducible Poisson arrivals from --seed. */
  uint64_t z = (b->rng += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return ((double)(z >> 11) + 0.5) * 0x1.0p-53;
}

static int64_t next_gap_ns(bench *b) {
  if (b->rate <= 0) return 0;
  return (int64_t)(-log(rand_unit(b)) / b->rate * 1e9);
}

/* Client index in this process of sender/receiver i. */
static int sender_client(const bench *b, int i) { (void)b; return i; }
static int receiver_client(const bench *b, int i) { return b->sending ? b->pairs + i : i; }

static void pair_name(const bench *b, char *out, size_t cap, char side, int i) {
  snprintf(out, cap, "%s%c%d", b->prefix, side, i);
}

static int send_kind(bench *b, int client, const char *to, uint8_t kind, uint32_t pr, uint64_t seq,
                     size_t size) {
  bp_msg m = {kind, pr, seq, bp_now_ns()};
  bp_msg_write(b->body, size, &m);
  return b->tp->send(b->st, client, to, b->body, size);
}

static int mark_seen(pair *p, uint64_t seq) {
  if (seq >= p->seen_cap) {
    size_t ncap = p->seen_cap ? p->seen_cap : 1024;
    while (ncap <= seq) ncap *= 2;
    uint8_t *ns = realloc(p->seen, ncap);
    if (!ns) return -1;
    memset(ns + p->seen_cap, 0, ncap - p->seen_cap);
    p->seen = ns;
    p->seen_cap = ncap;
  }
  if (p->seen[seq]) return 1;
  p->seen[seq] = 1;
  return 0;
}

static void on_message(void *arg, int client, const char *from, const uint8_t *body, size_t len) {
  bench *b = arg;
  int64_t now = bp_now_ns();
  bp_msg m;
  if (len >= BP_MSG_HEADER && body[0] == KIND_SYNC) {
    b->synced[client] = true;
    return;
  }
  if (bp_msg_read(body, len, &m) < 0 || m.pair >= (uint32_t)b->pairs) {
    b->failed = true;
    return;
  }
  pair *p = &b->p[m.pair];
  bool to_receiver = b->receiving && client == receiver_client(b, (int)m.pair);
  if (!to_receiver) {
    /* The receiver's answer to BP_END. */
    if (m.kind == BP_END) p->end_acked = true;
    return;
  }
  if (m.kind == BP_END) {
    p->end_got = true;
    p->end_count = m.seq;
    if (send_kind(b, client, from, BP_END, m.pair, p->received, BP_MSG_HEADER) < 0) b->failed = true;
    return;
  }
  int dup = mark_seen(p, m.seq);
  if (dup < 0) {
    b->failed = true;
    return;
  }
  if (dup) {
    p->dups++;
    return;
  }
  p->received++;
  if (b->lat_len == b->lat_cap) {
    size_t ncap = b->lat_cap ? b->lat_cap * 2 : 4096;
    int64_t *nl = realloc(b->lat, ncap * sizeof *nl);
    if (!nl) {
      b->failed = true;
      return;
    }
    b->lat = nl;
    b->lat_cap = ncap;
  }
  b->lat[b->lat_len++] = now - m.sent_ns;
}

/* Sends what is due for every pair; returns the next time something is. */
static int64_t send_due(bench *b, int64_t now) {
  int64_t next = INT64_MAX;
  char to[BP_NAME_MAX + 1];
  for (int i = 0; i < b->pairs; i++) {
    pair *p = &b->p[i];
    if (p->end_sent) continue;
    pair_name(b, to, sizeof to, 'r', i);
    /* Bounded per call so the receive side keeps being served. */
    for (int k = 0; k < 10000 && p->next_ns <= now; k++) {
      bool over = (b->count && p->sent >= b->count) ||
                  (b->duration > 0 && p->next_ns - b->start_ns >= (int64_t)(b->duration * 1e9));
      if (over) {
        if (send_kind(b, sender_client(b, i), to, BP_END, (uint32_t)i, p->sent, BP_MSG_HEADER) < 0)
          b->failed = true;
        p->end_sent = true;
        break;
      }
      if (send_kind(b, sender_client(b, i), to, BP_DATA, (uint32_t)i, p->sent, b->size) < 0) {
        b->failed = true;
        return now;
      }
      p->sent++;
      p->next_ns += next_gap_ns(b);
    }
    if (!p->end_sent && p->next_ns < next) next = p->next_ns;
  }
  return next;
}

static bool all_done(const bench *b) {
  for (int i = 0; i < b->pairs; i++) {
    const pair *p = &b->p[i];
    if (b->sending && !p->end_acked) return false;
    if (b->receiving && !p->end_got) return false;
  }
  return true;
}

static int cmp_i64(const void *x, const void *y) {
  int64_t a = *(const int64_t *)x, c = *(const int64_t *)y;
  return (a > c) - (a < c);
}

/* Nearest-rank percentile of sorted latencies, in ms. */
static double pct_ms(const int64_t *v, size_t n, double q) {
  if (n == 0) return -1;
  size_t r = (size_t)ceil(q * (double)n);
  if (r == 0) r = 1;
  return (double)v[r - 1] / 1e6;
}

static void report(bench *b, const char *label, const char *workload, const char *lat_file) {
  /* Connecting and the handshake are left out: they are paid once. */
  double cpu = bp_cpu_seconds() - b->start_cpu;
  double elapsed = (double)(bp_now_ns() - b->start_ns) / 1e9;
  uint64_t sent = 0, got = 0, dups = 0, announced = 0;
  int incomplete = 0;
  for (int i = 0; i < b->pairs; i++) {
    sent += b->p[i].sent;
    got += b->p[i].received;
    dups += b->p[i].dups;
    announced += b->p[i].end_got ? b->p[i].end_count : 0;
    if (b->receiving && !b->p[i].end_got) incomplete++;
  }
  if (!b->receiving) {
    printf("{\"bench\":1,\"label\":\"%s\",\"transport\":\"%s\",\"workload\":\"%s\",\"role\":\"send\","
           "\"pairs\":%d,\"sent\":%" PRIu64 ",\"acked_pairs\":%d,\"cpu_s\":%.3f,"
           "\"cpu_us_per_msg\":%.2f,\"elapsed_s\":%.3f}\n",
           label, b->tp->name, workload, b->pairs, sent, b->pairs - incomplete, cpu,
           sent ? cpu * 1e6 / (double)sent : 0, elapsed);
    return;
  }
  /* With a separate sender, the counts it announced in BP_END are the
   * truth; pairs whose END never came are reported as incomplete. */
  uint64_t total = b->sending ? sent : announced;
  qsort(b->lat, b->lat_len, sizeof *b->lat, cmp_i64);
  double sum = 0;
  for (size_t i = 0; i < b->lat_len; i++) sum += (double)b->lat[i];
  printf("{\"bench\":1,\"label\":\"%s\",\"transport\":\"%s\",\"workload\":\"%s\",\"role\":\"%s\","
         "\"pairs\":%d,\"size\":%zu,\"sent\":%" PRIu64 ",\"received\":%" PRIu64 ",\"lost\":%" PRId64
         ",\"duplicates\":%" PRIu64 ",\"incomplete_pairs\":%d,\"p50_ms\":%.3f,\"p90_ms\":%.3f,"
         "\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f,\"mean_ms\":%.3f,\"cpu_s\":%.3f,"
         "\"cpu_us_per_msg\":%.2f,\"elapsed_s\":%.3f}\n",
         label, b->tp->name, workload, b->role, b->pairs, b->size, total, got,
         (int64_t)total - (int64_t)got, dups, incomplete, pct_ms(b->lat, b->lat_len, 0.50),
         pct_ms(b->lat, b->lat_len, 0.90), pct_ms(b->lat, b->lat_len, 0.99),
         pct_ms(b->lat, b->lat_len, 0.999), pct_ms(b->lat, b->lat_len, 1.0),
         b->lat_len ? sum / (double)b->lat_len / 1e6 : -1, cpu,
         got ? cpu * 1e6 / (double)got : 0, elapsed);
  if (lat_file) {
    FILE *f = fopen(lat_file, "w");
    if (!f) {
      fprintf(stderr, "benchclient: cannot write %s: %s\n", lat_file, strerror(errno));
      return;
    }
    for (size_t i = 0; i < b->lat_len; i++) fprintf(f, "%.3f\n", (double)b->lat[i] / 1e6);
    fclose(f);
  }
}

/* --workload connect: see the comment at the top. */
/* --transport tern-nocopies: tern without redundant copies. */
static int no_copies;

static int connect_probe(const bench_transport *tp, const char *relay, const char *relay_key,
                         const char *prefix, const char *label, const char *accept_log) {
  char name[BP_NAME_MAX + 1];
  snprintf(name, sizeof name, "%sc0", prefix);
  const char *names[1] = {name};
  bench b;
  memset(&b, 0, sizeof b);
  bool synced = false;
  b.synced = &synced;
  b.pairs = 1;
  b.tp = tp;
  uint8_t body[BP_MSG_HEADER];
  b.body = body;
  bp_msg greet = {KIND_SYNC, 0, 0, 0};
  bp_msg_write(body, sizeof body, &greet);
  /* The greeting to itself is the first message; open() sends it as early
   * as the transport can (tern: with the handshake). */
  bench_transport_config cfg = {relay, 1, names, 30000, relay_key, name, body, sizeof body, no_copies};
  int64_t t0 = bp_now_ns(), t0_unix = bp_unix_ns();
  b.st = tp->open(&cfg);
  if (!b.st) return 1;
  int64_t t_conn = bp_now_ns();
  int64_t start = t0, acked = 0, relay_unix = 0, t_echo = 0;
  int64_t end = bp_now_ns() + 30 * 1000000000LL, resend_at = bp_now_ns() + 1000000000LL;
  while (bp_now_ns() < end) {
    if (tp->poll(b.st, 5, on_message, &b) < 0) break;
    if (synced && !t_echo) t_echo = bp_now_ns();
    if (tp->connect_times) {
      tp->connect_times(b.st, 0, &start, &acked, &relay_unix);
      if (acked && t_echo) break;
    } else {
      if (t_echo) {
        acked = t_echo;
        break;
      }
      /* ENet: a greeting that overtook BP_HELLO (another channel) was
       * dropped by the relay as from nobody; greet again, once a second. */
      if (bp_now_ns() > resend_at) {
        resend_at = bp_now_ns() + 1000000000LL;
        if (tp->send(b.st, 0, name, body, sizeof body) < 0) break;
      }
    }
  }
  tp->close(b.st);
  if (!acked) {
    fprintf(stderr, "benchclient: no acceptance within 30 s\n");
    return 1;
  }
  /* The relay's stamp: tern's SERVER_ACK, else the relay's accept log (it
   * is written before the greeting is forwarded, so it is there by now;
   * a short bounded wait covers the file system). */
  for (int k = 0; !relay_unix && accept_log && k < 100; k++) {
    if (bp_accept_log_find(accept_log, name, &relay_unix) == 0) break;
    relay_unix = 0;
    struct timespec ts = {0, 10000000};
    nanosleep(&ts, NULL);
  }
  /* Both clocks were read together at t0; the start may be later (tern
   * stamps its connect call). */
  int64_t start_unix = t0_unix + (start - t0);
  char accept_ms[32] = "null";
  if (relay_unix) snprintf(accept_ms, sizeof accept_ms, "%.3f", (double)(relay_unix - start_unix) / 1e6);
  printf("{\"bench\":1,\"label\":\"%s\",\"transport\":\"%s\",\"workload\":\"connect\","
         "\"name\":\"%s\",\"connect_ms\":%.3f,\"first_accept_ms\":%s,\"ack_ms\":%.3f,"
         "\"echo_ms\":%.3f}\n",
         label, tp->name, name, (double)(t_conn - start) / 1e6, accept_ms,
         (double)(acked - start) / 1e6, t_echo ? (double)(t_echo - start) / 1e6 : -1.0);
  return 0;
}

static void usage(FILE *f) {
  fputs("usage: benchclient --transport tcp|enet|tern|tern-nocopies --relay IP:PORT --role send|recv|both\n"
        "                   [options]\n"
        "  --relay-key HEX  tern: the relay's public key (tern-keygen prints it)\n"
        "  --workload chat|burst|big|connect  chat: 100-byte messages, Poisson at --rate 10/s per\n"
        "                             pair for --duration 10 s; burst: --count 1000\n"
        "                             100-byte messages per pair at once; big: --count 20\n"
        "                             64 KiB messages per pair, Poisson at --rate 2/s;\n"
        "                             connect: one client, time from connect to the\n"
        "                             relay's first acceptance of a message\n"
        "  --pairs N        sender/receiver pairs (default 4)\n"
        "  --rate R         messages per second per pair (Poisson); 0 = all at once\n"
        "  --count N        messages per pair (0 = until --duration)\n"
        "  --duration S     seconds of sending (0 = until --count)\n"
        "  --size B         message size in bytes (at least 21)\n"
        "  --seed N         seed for the arrival times (default 1)\n"
        "  --prefix P       name prefix: pair i is P s i -> P r i (default u)\n"
        "  --timeout S      give up after S seconds in all (default: sending time + 60)\n"
        "  --ready-file F   create F once this process's clients are known to the relay\n"
        "  --latencies F    write every one-way latency (ms) to F, one per line\n"
        "  --label TEXT     copied into the JSON line\n"
        "  --linger S       keep serving S seconds after the end (default 0), so the\n"
        "                   answer to BP_END leaves before the client is freed\n"
        "  --end-wait S     a sender waits at most S seconds after its last BP_END for\n"
        "                   the answers (default: until --timeout); not an error\n"
        "  --accept-log F   connect, TCP and ENet: the relay's --accept-log, read for\n"
        "                   the relay's stamp of the first message\n",
        f);
}

int main(int argc, char **argv) {
  bench b;
  memset(&b, 0, sizeof b);
  const char *transport = NULL, *relay = NULL, *workload = "chat", *ready_file = NULL,
             *lat_file = NULL, *label = "", *relay_key = NULL, *accept_log = NULL;
  double rate = -1, duration = -1, timeout = 0, linger = 0, end_wait = 0;
  long long count = -1, size = -1;
  b.pairs = 4;
  b.rng = 1;
  b.role = NULL;
  snprintf(b.prefix, sizeof b.prefix, "u");
  for (int i = 1; i < argc; i++) {
    const char *k = argv[i];
    if (!strcmp(k, "--help")) {
      usage(stdout);
      return 0;
    }
    if (i + 1 >= argc) goto bad;
    const char *v = argv[++i];
    if (!strcmp(k, "--transport")) transport = v;
    else if (!strcmp(k, "--relay")) relay = v;
    else if (!strcmp(k, "--relay-key")) relay_key = v;
    else if (!strcmp(k, "--role")) b.role = v;
    else if (!strcmp(k, "--workload")) workload = v;
    else if (!strcmp(k, "--pairs")) b.pairs = atoi(v);
    else if (!strcmp(k, "--rate")) rate = strtod(v, NULL);
    else if (!strcmp(k, "--count")) count = strtoll(v, NULL, 10);
    else if (!strcmp(k, "--duration")) duration = strtod(v, NULL);
    else if (!strcmp(k, "--size")) size = strtoll(v, NULL, 10);
    else if (!strcmp(k, "--seed")) b.rng = strtoull(v, NULL, 10);
    else if (!strcmp(k, "--prefix")) snprintf(b.prefix, sizeof b.prefix, "%s", v);
    else if (!strcmp(k, "--timeout")) timeout = strtod(v, NULL);
    else if (!strcmp(k, "--ready-file")) ready_file = v;
    else if (!strcmp(k, "--latencies")) lat_file = v;
    else if (!strcmp(k, "--label")) label = v;
    else if (!strcmp(k, "--linger")) linger = strtod(v, NULL);
    else if (!strcmp(k, "--end-wait")) end_wait = strtod(v, NULL);
    else if (!strcmp(k, "--accept-log")) accept_log = v;
    else goto bad;
  }
  if (!transport || !relay || !b.role || b.pairs <= 0 || b.pairs > 1000) goto bad;
  if (!strcmp(transport, "tcp")) b.tp = &bench_transport_tcp;
  else if (!strcmp(transport, "enet")) b.tp = &bench_transport_enet;
  else if (!strcmp(transport, "tern")) b.tp = &bench_transport_tern;
  else if (!strcmp(transport, "tern-nocopies")) b.tp = &bench_transport_tern, no_copies = 1;
  else goto bad;
  if (!strcmp(workload, "connect")) return connect_probe(b.tp, relay, relay_key, b.prefix, label, accept_log);
  b.sending = !strcmp(b.role, "send") || !strcmp(b.role, "both");
  b.receiving = !strcmp(b.role, "recv") || !strcmp(b.role, "both");
  if (!b.sending && !b.receiving) goto bad;
  /* Workload defaults, then explicit options on top. */
  if (!strcmp(workload, "chat")) {
    b.size = 100, b.rate = 10, b.count = 0, b.duration = 10;
  } else if (!strcmp(workload, "burst")) {
    b.size = 100, b.rate = 0, b.count = 1000, b.duration = 0;
  } else if (!strcmp(workload, "big")) {
    b.size = 65536, b.rate = 2, b.count = 20, b.duration = 0;
  } else {
    goto bad;
  }
  if (rate >= 0) b.rate = rate;
  if (count >= 0) b.count = (uint64_t)count;
  if (duration >= 0) b.duration = duration;
  if (size >= 0) b.size = (size_t)size;
  if (b.size < BP_MSG_HEADER || b.size > BP_PAYLOAD_MAX || (b.count == 0 && b.duration <= 0) ||
      (b.rate == 0 && b.count == 0))
    goto bad;
  if (timeout <= 0) {
    double sending = b.duration > 0 ? b.duration : b.rate > 0 ? (double)b.count / b.rate : 0;
    timeout = sending + 60;
  }

  b.nclients = (b.sending ? b.pairs : 0) + (b.receiving ? b.pairs : 0);
  b.names = calloc((size_t)b.nclients, sizeof *b.names);
  b.synced = calloc((size_t)b.nclients, sizeof *b.synced);
  b.p = calloc((size_t)b.pairs, sizeof *b.p);
  b.body = malloc(b.size);
  if (!b.names || !b.synced || !b.p || !b.body) return 1;
  for (int i = 0; i < b.pairs; i++) {
    char n[BP_NAME_MAX + 1];
    if (b.sending) {
      pair_name(&b, n, sizeof n, 's', i);
      b.names[sender_client(&b, i)] = strdup(n);
    }
    if (b.receiving) {
      pair_name(&b, n, sizeof n, 'r', i);
      b.names[receiver_client(&b, i)] = strdup(n);
    }
  }
  bench_transport_config cfg = {relay, b.nclients, (const char *const *)b.names, 30000, relay_key,
                                NULL, NULL, 0, no_copies};
  b.st = b.tp->open(&cfg);
  if (!b.st) return 1;

  /* Every client greets itself through the relay: once all greetings are
   * back, the relay knows every name and no early message is refused. */
  for (int i = 0; i < b.nclients; i++)
    if (send_kind(&b, i, b.names[i], KIND_SYNC, 0, 0, BP_MSG_HEADER) < 0) return 1;
  int64_t sync_end = bp_now_ns() + 30 * 1000000000LL, resend_at = bp_now_ns() + 1000000000LL;
  for (;;) {
    int n = 0;
    for (int i = 0; i < b.nclients; i++) n += b.synced[i];
    if (n == b.nclients) break;
    /* Once a second, greet again: on ENet the greeting travels on another
     * channel than BP_HELLO and can overtake it when HELLO is lost, and the
     * relay then drops it as coming from nobody. */
    if (bp_now_ns() > resend_at) {
      resend_at = bp_now_ns() + 1000000000LL;
      for (int i = 0; i < b.nclients; i++)
        if (!b.synced[i] && send_kind(&b, i, b.names[i], KIND_SYNC, 0, 0, BP_MSG_HEADER) < 0) return 1;
    }
    if (bp_now_ns() > sync_end || b.tp->poll(b.st, 10, on_message, &b) < 0) {
      fprintf(stderr, "benchclient: relay did not register all names\n");
      return 1;
    }
  }
  if (ready_file) {
    FILE *f = fopen(ready_file, "w");
    if (f) fclose(f);
  }

  b.start_ns = bp_now_ns();
  b.start_cpu = bp_cpu_seconds();
  for (int i = 0; i < b.pairs; i++) b.p[i].next_ns = b.start_ns + next_gap_ns(&b);
  int64_t end = b.start_ns + (int64_t)(timeout * 1e9);
  int64_t ends_sent_ns = 0; /* when the last BP_END went out */
  int rc = 0;
  while (!all_done(&b)) {
    int64_t now = bp_now_ns();
    if (b.sending && end_wait > 0) {
      bool all_sent = true;
      for (int i = 0; i < b.pairs; i++) all_sent = all_sent && b.p[i].end_sent;
      if (all_sent && !ends_sent_ns) ends_sent_ns = now;
      if (ends_sent_ns && now - ends_sent_ns > (int64_t)(end_wait * 1e9)) break;
    }
    if (now > end) {
      fprintf(stderr, "benchclient: timed out after %.0f s\n", timeout);
      rc = 1;
      break;
    }
    int64_t next = b.sending ? send_due(&b, now) : INT64_MAX;
    int64_t wait_ns = next == INT64_MAX ? 100000000 : next - bp_now_ns();
    if (wait_ns < 0) wait_ns = 0;
    if (wait_ns > 100000000) wait_ns = 100000000;
    /* poll() takes whole ms: round up rather than spin. A send may leave up
     * to 1 ms after its Poisson time; its stamp is taken when it leaves. */
    if (b.tp->poll(b.st, (int)((wait_ns + 999999) / 1000000), on_message, &b) < 0 || b.failed) {
      fprintf(stderr, "benchclient: transport failed\n");
      rc = 1;
      break;
    }
  }
  report(&b, label, workload, lat_file);
  fflush(stdout);
  /* Bounded linger: deliver the last answers before the clients go. */
  for (int64_t lend = bp_now_ns() + (int64_t)(linger * 1e9); rc == 0 && bp_now_ns() < lend;)
    if (b.tp->poll(b.st, 10, on_message, &b) < 0) break;
  b.tp->close(b.st);
  for (int i = 0; i < b.nclients; i++) free(b.names[i]);
  for (int i = 0; i < b.pairs; i++) free(b.p[i].seen);
  free(b.names);
  free(b.synced);
  free(b.p);
  free(b.lat);
  free(b.body);
  return rc;
bad:
  usage(stderr);
  return 2;
}
