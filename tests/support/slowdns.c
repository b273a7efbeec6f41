/* A tiny, slow DNS server for the resolution tests (slowdns.h). */
#include "slowdns.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { PENDING_MAX = 64 };

typedef struct pending {
  uint64_t due_ms;
  struct sockaddr_in from;
  uint8_t buf[512];
  size_t len;
} pending;

struct slowdns {
  int fd;
  uint32_t delay_ms, ipv4;
  atomic_uint queries;
  atomic_int stop;
  pthread_t th;
  pending q[PENDING_MAX];
  size_t nq;
};

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The answer to query p, in place: the header's flags and counts, the
 * question kept, one A record after it when there is one to give. */
static size_t answer(const slowdns *s, uint8_t *b, size_t len) {
  size_t off = 12;
  while (off < len && b[off]) off += 1 + b[off]; /* the name's labels */
  if (off + 5 > len) return 0;
  uint16_t qtype = (uint16_t)(b[off + 1] << 8 | b[off + 2]);
  size_t end = off + 5;
  int give = qtype == 1 && s->ipv4;
  b[2] = 0x81;                          /* response, recursion desired */
  b[3] = s->ipv4 ? 0x80 : 0x83;         /* recursion available; NXDOMAIN if no answer */
  b[6] = 0;
  b[7] = (uint8_t)give;                 /* answers */
  memset(b + 8, 0, 4);                  /* no authority, no additional */
  if (!give) return end;
  if (end + 16 > 512) return 0;
  const uint8_t rr[16] = {0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4,
                          (uint8_t)(s->ipv4 >> 24), (uint8_t)(s->ipv4 >> 16),
                          (uint8_t)(s->ipv4 >> 8), (uint8_t)s->ipv4};
  memcpy(b + end, rr, sizeof rr);
  return end + sizeof rr;
}

static void *run(void *arg) {
  slowdns *s = arg;
  while (!atomic_load(&s->stop)) {
    uint64_t now = now_ms();
    for (size_t i = 0; i < s->nq;) {
      if (s->q[i].due_ms > now) {
        i++;
        continue;
      }
      size_t n = answer(s, s->q[i].buf, s->q[i].len);
      if (n) (void)sendto(s->fd, s->q[i].buf, n, 0, (struct sockaddr *)&s->q[i].from, sizeof s->q[i].from);
      s->q[i] = s->q[--s->nq];
    }
    struct pollfd p = {.fd = s->fd, .events = POLLIN};
    if (poll(&p, 1, 10) != 1) continue;
    pending *q = s->nq < PENDING_MAX ? &s->q[s->nq] : NULL;
    uint8_t scratch[512];
    socklen_t fl = sizeof(struct sockaddr_in);
    struct sockaddr_in from;
    ssize_t r = recvfrom(s->fd, q ? q->buf : scratch, 512, 0, (struct sockaddr *)&from, &fl);
    if (r < 12 || !q) continue;
    atomic_fetch_add(&s->queries, 1);
    q->from = from;
    q->len = (size_t)r;
    q->due_ms = now_ms() + s->delay_ms;
    s->nq++;
  }
  return NULL;
}

slowdns *slowdns_start(uint32_t delay_ms, uint32_t ipv4, uint16_t *port) {
  slowdns *s = calloc(1, sizeof(*s));
  if (!s) return NULL;
  s->delay_ms = delay_ms;
  s->ipv4 = ipv4;
  s->fd = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      getsockname(s->fd, (struct sockaddr *)&sa, &sl) != 0 || pthread_create(&s->th, NULL, run, s) != 0) {
    if (s->fd >= 0) close(s->fd);
    free(s);
    return NULL;
  }
  *port = ntohs(sa.sin_port);
  return s;
}

unsigned slowdns_queries(slowdns *s) { return atomic_load(&s->queries); }

void slowdns_stop(slowdns *s) {
  if (!s) return;
  atomic_store(&s->stop, 1);
  pthread_join(s->th, NULL);
  close(s->fd);
  free(s);
}
