/*
 * tcp_relay: the TCP baseline's relay.
 *
 *   tcp_relay [--bind IP:PORT] [--duration S] [--max-clients N] [--accept-log FILE]
 *
 * One epoll loop, TCP_NODELAY on every connection. Each connection is a
 * tcpsec stream (crypto_kx + crypto_secretstream_xchacha20poly1305); the
 * client names itself with BP_HELLO, and each BP_MSG is opened, re-addressed
 * with the sender's name and sealed again for the recipient, the work a
 * tern relay does too. A message for a name that is not connected is
 * dropped and counted. With --accept-log, the moment (CLOCK_REALTIME) it
 * reads the first BP_MSG of each named connection is appended to FILE
 * (benchproto.h), for the connect probe. On SIGINT/SIGTERM or after --duration (default 600 s)
 * it prints one JSON line of counters and exits.
 */
/* accept4() is a Linux extension. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "benchproto.h"
#include "tcpsec.h"

typedef struct client {
  bool used;
  tcpsec c;
  char name[BP_NAME_MAX + 1];
  bool out_armed; /* EPOLLOUT registered */
  bool logged;    /* its first message is in the accept log */
} client;

typedef struct relay {
  int ep;
  client *clients;
  size_t max;
  uint8_t *scratch;
  FILE *accept_log; /* --accept-log, or NULL */
  uint64_t accepted, routed, refused, errors;
} relay;

static void arm(relay *r, size_t i) {
  client *cl = &r->clients[i];
  bool want = tcpsec_pending(&cl->c);
  if (want == cl->out_armed) return;
  struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.u64 = i + 1};
  epoll_ctl(r->ep, EPOLL_CTL_MOD, cl->c.fd, &ev);
  cl->out_armed = want;
}

static void drop(relay *r, size_t i) {
  client *cl = &r->clients[i];
  epoll_ctl(r->ep, EPOLL_CTL_DEL, cl->c.fd, NULL);
  tcpsec_free(&cl->c);
  cl->used = false;
}

static client *find(relay *r, const char *name) {
  for (size_t i = 0; i < r->max; i++)
    if (r->clients[i].used && strcmp(r->clients[i].name, name) == 0) return &r->clients[i];
  return NULL;
}

static int on_frame(void *arg, tcpsec *c, const uint8_t *frame, size_t len) {
  relay *r = arg;
  client *from = (client *)((char *)c - offsetof(client, c));
  bp_frame f;
  if (bp_decode(frame, len, &f) < 0) return -1;
  if (f.type == BP_HELLO) {
    /* The newest connection under a name wins, as in enet_relay. */
    client *old;
    while ((old = find(r, f.name)) != NULL) old->name[0] = 0;
    memcpy(from->name, f.name, sizeof from->name);
    return 0;
  }
  if (r->accept_log && from->name[0] && !from->logged) {
    from->logged = true;
    if (bp_accept_log_write(r->accept_log, from->name, bp_unix_ns()) < 0) r->errors++;
  }
  client *to = from->name[0] ? find(r, f.name) : NULL;
  if (!to || !to->c.tx_ready) {
    r->refused++;
    return 0;
  }
  size_t n = bp_encode(r->scratch, BP_FRAME_MAX, BP_MSG, from->name, f.payload, f.payload_len);
  if (n == 0 || tcpsec_send(&to->c, r->scratch, n) < 0 || tcpsec_flush(&to->c) < 0) {
    r->errors++;
    return 0;
  }
  arm(r, (size_t)(to - r->clients));
  r->routed++;
  return 0;
}

static void accept_all(relay *r, int lfd) {
  for (int k = 0; k < 64; k++) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    size_t i = 0;
    while (i < r->max && r->clients[i].used) i++;
    if (i == r->max) {
      close(fd);
      r->refused++;
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    client *cl = &r->clients[i];
    memset(cl, 0, sizeof *cl);
    if (tcpsec_init(&cl->c, fd, true) < 0) {
      tcpsec_free(&cl->c);
      continue;
    }
    cl->used = true;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = i + 1};
    epoll_ctl(r->ep, EPOLL_CTL_ADD, fd, &ev);
    if (tcpsec_flush(&cl->c) < 0) drop(r, i);
    else arm(r, i);
    r->accepted++;
  }
}

int main(int argc, char **argv) {
  const char *bind_s = "0.0.0.0:7500";
  double duration = 600;
  size_t max = 256;
  const char *accept_path = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help")) {
      printf("usage: tcp_relay [--bind IP:PORT (0.0.0.0:7500)] [--duration S (600)] "
             "[--max-clients N (256)] [--accept-log FILE]\n");
      return 0;
    }
    if (i + 1 >= argc) goto bad;
    if (!strcmp(argv[i], "--bind")) bind_s = argv[++i];
    else if (!strcmp(argv[i], "--duration")) duration = strtod(argv[++i], NULL);
    else if (!strcmp(argv[i], "--max-clients")) max = strtoul(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--accept-log")) accept_path = argv[++i];
    else goto bad;
  }
  struct sockaddr_in addr;
  if (bp_parse_addr(bind_s, &addr) < 0 || duration <= 0 || max == 0) goto bad;

  relay r = {0};
  r.max = max;
  r.clients = calloc(max, sizeof *r.clients);
  r.scratch = malloc(BP_FRAME_MAX);
  if (accept_path && !(r.accept_log = fopen(accept_path, "w"))) {
    perror("tcp_relay: --accept-log");
    return 1;
  }
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (!r.clients || !r.scratch || lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 ||
      listen(lfd, 128) < 0) {
    perror("tcp_relay: listen");
    return 1;
  }
  r.ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event lev = {.events = EPOLLIN, .data.u64 = 0};
  epoll_ctl(r.ep, EPOLL_CTL_ADD, lfd, &lev);

  static volatile sig_atomic_t stop;
  bp_on_stop_signals(&stop);
  int64_t end = bp_now_ns() + (int64_t)(duration * 1e9);
  struct epoll_event evs[64];
  while (!stop && bp_now_ns() < end) {
    int n = epoll_wait(r.ep, evs, 64, 200);
    for (int k = 0; k < n; k++) {
      if (evs[k].data.u64 == 0) {
        accept_all(&r, lfd);
        continue;
      }
      size_t i = (size_t)evs[k].data.u64 - 1;
      client *cl = &r.clients[i];
      if (!cl->used) continue;
      if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        if (tcpsec_read(&cl->c, on_frame, &r) < 0) {
          drop(&r, i);
          continue;
        }
      }
      if (tcpsec_flush(&cl->c) < 0) drop(&r, i);
      else arm(&r, i);
    }
  }
  printf("{\"relay\":\"tcp\",\"accepted\":%" PRIu64 ",\"routed\":%" PRIu64 ",\"refused\":%" PRIu64
         ",\"errors\":%" PRIu64 ",\"cpu_s\":%.3f}\n",
         r.accepted, r.routed, r.refused, r.errors, bp_cpu_seconds());
  for (size_t i = 0; i < max; i++)
    if (r.clients[i].used) drop(&r, i);
  if (r.accept_log) fclose(r.accept_log);
  free(r.clients);
  free(r.scratch);
  close(lfd);
  close(r.ep);
  return 0;
bad:
  fprintf(stderr, "tcp_relay: bad arguments (see --help)\n");
  return 2;
}
