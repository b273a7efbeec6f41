#include "benchproto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

size_t bp_encode(uint8_t *out, size_t cap, uint8_t type, const char *name, const void *payload,
                 size_t len) {
  size_t nl = strlen(name);
  if (nl == 0 || nl > BP_NAME_MAX || len > BP_PAYLOAD_MAX || 2 + nl + len > cap) return 0;
  out[0] = type;
  out[1] = (uint8_t)nl;
  memcpy(out + 2, name, nl);
  if (len) memcpy(out + 2 + nl, payload, len);
  return 2 + nl + len;
}

int bp_decode(const uint8_t *in, size_t len, bp_frame *f) {
  if (len < 2) return -1;
  size_t nl = in[1];
  if (nl == 0 || nl > BP_NAME_MAX || 2 + nl > len) return -1;
  if (in[0] != BP_HELLO && in[0] != BP_MSG) return -1;
  f->type = in[0];
  memcpy(f->name, in + 2, nl);
  f->name[nl] = 0;
  if (memchr(f->name, 0, nl)) return -1;
  f->payload = in + 2 + nl;
  f->payload_len = len - 2 - nl;
  return 0;
}

static void put_be(uint8_t *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

static uint64_t get_be(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v = (v << 8) | p[i];
  return v;
}

void bp_msg_write(uint8_t *out, size_t size, const bp_msg *m) {
  memset(out, 0, size);
  out[0] = m->kind;
  put_be(out + 1, m->pair, 4);
  put_be(out + 5, m->seq, 8);
  put_be(out + 13, (uint64_t)m->sent_ns, 8);
}

int bp_msg_read(const uint8_t *in, size_t len, bp_msg *m) {
  if (len < BP_MSG_HEADER || (in[0] != BP_DATA && in[0] != BP_END)) return -1;
  m->kind = in[0];
  m->pair = (uint32_t)get_be(in + 1, 4);
  m->seq = get_be(in + 5, 8);
  m->sent_ns = (int64_t)get_be(in + 13, 8);
  return 0;
}

int64_t bp_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t bp_unix_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int bp_accept_log_write(FILE *f, const char *name, int64_t unix_ns) {
  if (fprintf(f, "%s %lld\n", name, (long long)unix_ns) < 0 || fflush(f) != 0) return -1;
  return 0;
}

int bp_accept_log_find(const char *path, const char *name, int64_t *unix_ns) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char line[BP_NAME_MAX + 64], n[BP_NAME_MAX + 1];
  long long t;
  int rc = -1;
  /* Bounded by the file: one line per client the relay ever accepted. */
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "%64s %lld", n, &t) == 2 && strcmp(n, name) == 0) {
      *unix_ns = t;
      rc = 0;
      break;
    }
  }
  fclose(f);
  return rc;
}

/* FNV-1a: stable across runs and machines. */
static uint32_t fnv1a(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
  return h;
}

uint8_t bp_enet_channel(const char *a, const char *b) {
  /* XOR makes the hash independent of the direction. */
  return (uint8_t)(1 + (fnv1a(a) ^ fnv1a(b)) % (BP_ENET_CHANNELS - 1));
}

int bp_parse_addr(const char *s, struct sockaddr_in *out) {
  char host[64];
  const char *colon = strrchr(s, ':');
  if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = 0;
  char *end;
  unsigned long port = strtoul(colon + 1, &end, 10);
  if (*end || colon[1] == 0 || port > 65535) return -1;
  memset(out, 0, sizeof *out);
  out->sin_family = AF_INET;
  out->sin_port = htons((uint16_t)port);
  return inet_pton(AF_INET, host, &out->sin_addr) == 1 ? 0 : -1;
}

static volatile sig_atomic_t *stop_flag;

static void on_stop(int sig) {
  (void)sig;
  if (stop_flag) *stop_flag = 1;
}

void bp_on_stop_signals(volatile sig_atomic_t *flag) {
  stop_flag = flag;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

double bp_cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}
