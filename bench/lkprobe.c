/*
 * lkprobe: the measuring end of linkem_selftest.
 *
 *   lkprobe echo  --bind IP:PORT --duration S
 *   lkprobe ping  --to IP:PORT --count N --interval MS
 *   lkprobe sink  --bind IP:PORT --count N --duration S
 *   lkprobe blast --to IP:PORT --count N --rate PPS [--size B]
 *   lkprobe tcp-recv --bind IP:PORT --bytes N --duration S [--seed N]
 *   lkprobe tcp-send --to IP:PORT --bytes N --duration S [--seed N]
 *
 * Every mode is bounded by a count and by time, prints one JSON line of what
 * it measured to stdout, and creates --ready-file (if given) once its socket
 * is bound, so a script can start the other end without guessing.
 *
 * ping: UDP datagrams carrying a sequence number and a CLOCK_MONOTONIC send
 * stamp, one every --interval ms without waiting for replies; RTT is measured
 * when the echo comes back. sink counts distinct sequence numbers sent by
 * blast. tcp-send writes a byte stream generated from --seed; tcp-recv
 * regenerates it and compares every byte.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "benchproto.h"

#define NS_PER_SEC 1000000000LL

typedef struct options {
  const char *mode;
  struct sockaddr_in addr;
  bool have_addr;
  uint64_t count;
  double interval_ms;
  double rate;
  size_t size;
  double duration_s;
  uint64_t bytes;
  uint64_t seed;
  const char *ready_file;
} options;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

static void sleep_until(int64_t t) {
  struct timespec ts = {(time_t)(t / NS_PER_SEC), (long)(t % NS_PER_SEC)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

static void ready(const options *o) {
  if (!o->ready_file) return;
  FILE *f = fopen(o->ready_file, "w");
  if (f) fclose(f);
}

static void put64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (56 - 8 * i));
}

static uint64_t get64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

static int udp_socket(const options *o, bool bind_it) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int buf = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  if (bind_it && bind(fd, (const struct sockaddr *)&o->addr, sizeof o->addr) < 0) {
    perror("lkprobe: bind");
    close(fd);
    return -1;
  }
  return fd;
}

/* Waits for input on fd until `deadline`; 1 readable, 0 timed out. */
static int wait_readable(int fd, int64_t deadline) {
  int64_t left = deadline - now_ns();
  if (left <= 0) return 0;
  struct pollfd p = {fd, POLLIN, 0};
  int n = poll(&p, 1, (int)((left + 999999) / 1000000));
  return n > 0;
}

static int run_echo(const options *o) {
  int fd = udp_socket(o, true);
  if (fd < 0) return 1;
  ready(o);
  int64_t end = now_ns() + (int64_t)(o->duration_s * 1e9);
  unsigned char buf[2048];
  uint64_t echoed = 0;
  while (wait_readable(fd, end)) {
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    if (n > 0 && sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, fl) == n) echoed++;
  }
  printf("{\"mode\":\"echo\",\"echoed\":%" PRIu64 "}\n", echoed);
  close(fd);
  return 0;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static int run_ping(const options *o) {
  int fd = udp_socket(o, false);
  if (fd < 0 || connect(fd, (const struct sockaddr *)&o->addr, sizeof o->addr) < 0) {
    perror("lkprobe: connect");
    return 1;
  }
  int64_t *rtt = calloc(o->count, sizeof *rtt);
  bool *seen = calloc(o->count, 1);
  if (!rtt || !seen) return 1;
  int64_t step = (int64_t)(o->interval_ms * 1e6);
  int64_t start = now_ns(), next = start;
  /* Replies may come for 2 s after the last probe left. */
  int64_t end = start + step * (int64_t)o->count + 2 * NS_PER_SEC;
  uint64_t sent = 0, got = 0;
  unsigned char buf[64];
  while (got < o->count && now_ns() < end) {
    int64_t now = now_ns();
    if (sent < o->count && now >= next) {
      memset(buf, 0, sizeof buf);
      put64(buf, sent);
      put64(buf + 8, (uint64_t)now);
      if (send(fd, buf, sizeof buf, 0) == (ssize_t)sizeof buf) sent++;
      next += step;
      continue;
    }
    int64_t deadline = sent < o->count ? next : end;
    if (!wait_readable(fd, deadline)) continue;
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    int64_t t = now_ns();
    if (n != (ssize_t)sizeof buf) continue;
    uint64_t seq = get64(buf);
    if (seq >= o->count || seen[seq]) continue;
    seen[seq] = true;
    rtt[got++] = t - (int64_t)get64(buf + 8);
  }
  qsort(rtt, got, sizeof *rtt, cmp_i64);
  double med = got ? (double)rtt[got / 2] / 1e6 : -1;
  if (got && got % 2 == 0) med = (double)(rtt[got / 2 - 1] + rtt[got / 2]) / 2e6;
  printf("{\"mode\":\"ping\",\"sent\":%" PRIu64 ",\"received\":%" PRIu64
         ",\"median_ms\":%.3f,\"min_ms\":%.3f,\"max_ms\":%.3f}\n",
         sent, got, med, got ? (double)rtt[0] / 1e6 : -1, got ? (double)rtt[got - 1] / 1e6 : -1);
  free(rtt);
  free(seen);
  close(fd);
  return got ? 0 : 1;
}

static int run_sink(const options *o) {
  int fd = udp_socket(o, true);
  if (fd < 0) return 1;
  unsigned char *seen = calloc(o->count, 1);
  if (!seen) return 1;
  ready(o);
  int64_t end = now_ns() + (int64_t)(o->duration_s * 1e9);
  uint64_t unique = 0, dups = 0, bad = 0;
  unsigned char buf[2048];
  /* Once traffic has started, one idle second means the sender is done. */
  int64_t deadline = end;
  while (unique < o->count && wait_readable(fd, deadline)) {
    int64_t idle_end = now_ns() + NS_PER_SEC;
    deadline = idle_end < end ? idle_end : end;
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 8) {
      bad++;
      continue;
    }
    uint64_t seq = get64(buf);
    if (seq >= o->count) bad++;
    else if (seen[seq]) dups++;
    else {
      seen[seq] = 1;
      unique++;
    }
  }
  printf("{\"mode\":\"sink\",\"expected\":%" PRIu64 ",\"received\":%" PRIu64 ",\"duplicates\":%" PRIu64
         ",\"malformed\":%" PRIu64 ",\"loss_pct\":%.3f}\n",
         o->count, unique, dups, bad, 100.0 * (double)(o->count - unique) / (double)o->count);
  free(seen);
  close(fd);
  return 0;
}

static int run_blast(const options *o) {
  int fd = udp_socket(o, false);
  if (fd < 0 || connect(fd, (const struct sockaddr *)&o->addr, sizeof o->addr) < 0) {
    perror("lkprobe: connect");
    return 1;
  }
  size_t size = o->size < 8 ? 8 : o->size > 1400 ? 1400 : o->size;
  unsigned char buf[1400];
  memset(buf, 0xa5, sizeof buf);
  /* Sends in ticks of 1 ms so the rate holds without a syscall per sleep. */
  int64_t start = now_ns();
  uint64_t sent = 0, errors = 0;
  for (uint64_t tick = 1; sent < o->count; tick++) {
    uint64_t target = (uint64_t)(o->rate * (double)tick / 1000.0);
    if (target > o->count) target = o->count;
    while (sent < target) {
      put64(buf, sent);
      if (send(fd, buf, size, 0) != (ssize_t)size) errors++;
      sent++;
    }
    sleep_until(start + (int64_t)tick * 1000000);
  }
  printf("{\"mode\":\"blast\",\"sent\":%" PRIu64 ",\"send_errors\":%" PRIu64 ",\"seconds\":%.3f}\n", sent,
         errors, (double)(now_ns() - start) / 1e9);
  close(fd);
  return errors ? 1 : 0;
}

/* The TCP test stream: xorshift64* bytes from the seed, so the receiver can
 * check every byte without the sender's file. */
typedef struct stream_gen {
  uint64_t x;
  uint64_t word;
  int left;
} stream_gen;

static unsigned char gen_byte(stream_gen *g) {
  if (g->left == 0) {
    g->x ^= g->x >> 12;
    g->x ^= g->x << 25;
    g->x ^= g->x >> 27;
    g->word = g->x * 0x2545f4914f6cdd1dULL;
    g->left = 8;
  }
  unsigned char b = (unsigned char)g->word;
  g->word >>= 8;
  g->left--;
  return b;
}

static int run_tcp(const options *o, bool sender) {
  int64_t start = now_ns(), end = start + (int64_t)(o->duration_s * 1e9);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 1;
  if (!sender) {
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)&o->addr, sizeof o->addr) < 0 || listen(fd, 1) < 0) {
      perror("lkprobe: bind/listen");
      return 1;
    }
    ready(o);
    if (!wait_readable(fd, end)) {
      printf("{\"mode\":\"tcp-recv\",\"ok\":false,\"error\":\"no connection\"}\n");
      return 1;
    }
    int c = accept(fd, NULL, NULL);
    close(fd);
    fd = c;
    if (fd < 0) return 1;
  } else if (connect(fd, (const struct sockaddr *)&o->addr, sizeof o->addr) < 0) {
    perror("lkprobe: connect");
    return 1;
  }
  stream_gen g = {o->seed * 2 + 1, 0, 0};
  unsigned char buf[65536];
  size_t off = 0, len = 0; /* sender: generated bytes not yet sent */
  uint64_t done = 0, mismatch = 0;
  while (done < o->bytes && now_ns() < end) {
    size_t want = o->bytes - done < sizeof buf ? (size_t)(o->bytes - done) : sizeof buf;
    struct pollfd p = {fd, sender ? POLLOUT : POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    ssize_t n;
    if (sender) {
      if (off == len) {
        for (size_t i = 0; i < want; i++) buf[i] = gen_byte(&g);
        off = 0;
        len = want;
      }
      n = send(fd, buf + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno == EAGAIN) continue;
      if (n > 0) off += (size_t)n;
    } else {
      n = recv(fd, buf, want, 0);
      for (ssize_t i = 0; i < n; i++)
        if (buf[i] != gen_byte(&g)) mismatch++;
    }
    if (n <= 0) break;
    done += (uint64_t)n;
  }
  double secs = (double)(now_ns() - start) / 1e9;
  bool ok = done == o->bytes && mismatch == 0;
  printf("{\"mode\":\"%s\",\"ok\":%s,\"bytes\":%" PRIu64 ",\"mismatched\":%" PRIu64
         ",\"seconds\":%.3f}\n",
         sender ? "tcp-send" : "tcp-recv", ok ? "true" : "false", done, mismatch, secs);
  close(fd);
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  options o = {.count = 100, .interval_ms = 10, .rate = 1000, .size = 64, .duration_s = 10,
               .seed = 1};
  if (argc < 2) {
    fprintf(stderr, "usage: lkprobe echo|ping|sink|blast|tcp-recv|tcp-send [options]\n");
    return 2;
  }
  o.mode = argv[1];
  for (int i = 2; i < argc; i++) {
    const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) {
      fprintf(stderr, "lkprobe: %s needs a value\n", k);
      return 2;
    }
    i++;
    if (!strcmp(k, "--bind") || !strcmp(k, "--to")) {
      if (bp_parse_addr(v, &o.addr) < 0) {
        fprintf(stderr, "lkprobe: bad address %s\n", v);
        return 2;
      }
      o.have_addr = true;
    } else if (!strcmp(k, "--count")) o.count = strtoull(v, NULL, 10);
    else if (!strcmp(k, "--interval")) o.interval_ms = strtod(v, NULL);
    else if (!strcmp(k, "--rate")) o.rate = strtod(v, NULL);
    else if (!strcmp(k, "--size")) o.size = strtoul(v, NULL, 10);
    else if (!strcmp(k, "--duration")) o.duration_s = strtod(v, NULL);
    else if (!strcmp(k, "--bytes")) o.bytes = strtoull(v, NULL, 10);
    else if (!strcmp(k, "--seed")) o.seed = strtoull(v, NULL, 10);
    else if (!strcmp(k, "--ready-file")) o.ready_file = v;
    else {
      fprintf(stderr, "lkprobe: unknown option %s\n", k);
      return 2;
    }
  }
  if (!o.have_addr || o.count == 0 || o.count > 100000000 || o.rate <= 0 || o.duration_s <= 0 ||
      o.interval_ms <= 0) {
    fprintf(stderr, "lkprobe: need --bind/--to and positive counts, rates and durations\n");
    return 2;
  }
  if (!strcmp(o.mode, "echo")) return run_echo(&o);
  if (!strcmp(o.mode, "ping")) return run_ping(&o);
  if (!strcmp(o.mode, "sink")) return run_sink(&o);
  if (!strcmp(o.mode, "blast")) return run_blast(&o);
  if (!strcmp(o.mode, "tcp-recv")) return run_tcp(&o, false);
  if (!strcmp(o.mode, "tcp-send")) return run_tcp(&o, true);
  fprintf(stderr, "lkprobe: unknown mode %s\n", o.mode);
  return 2;
}
