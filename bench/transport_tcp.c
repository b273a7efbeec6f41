/* The TCP baseline transport: one tcpsec connection per client to
 * tcp_relay, TCP_NODELAY, sealed frames (see tcpsec.h). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "benchproto.h"
#include "tcpsec.h"
#include "transport.h"

typedef struct tcp_state {
  int n;
  tcpsec *conns;
  struct pollfd *pfds;
  uint8_t *scratch;
  /* Set for the duration of one poll() call, for the frame callback. */
  bench_on_message fn;
  void *arg;
} tcp_state;

static void tcp_close(void *p) {
  tcp_state *s = p;
  if (!s) return;
  for (int i = 0; i < s->n; i++)
    if (s->conns[i].fd >= 0) tcpsec_free(&s->conns[i]);
  free(s->conns);
  free(s->pfds);
  free(s->scratch);
  free(s);
}

static int on_frame(void *arg, tcpsec *c, const uint8_t *frame, size_t len) {
  tcp_state *s = arg;
  bp_frame f;
  if (bp_decode(frame, len, &f) < 0 || f.type != BP_MSG) return -1;
  if (s->fn) s->fn(s->arg, (int)(c - s->conns), f.name, f.payload, f.payload_len);
  return 0;
}

static int tcp_poll(void *p, int timeout_ms, bench_on_message fn, void *arg) {
  tcp_state *s = p;
  for (int i = 0; i < s->n; i++) {
    s->pfds[i].fd = s->conns[i].fd;
    s->pfds[i].events = POLLIN | (tcpsec_pending(&s->conns[i]) ? POLLOUT : 0);
    s->pfds[i].revents = 0;
  }
  int n = poll(s->pfds, (nfds_t)s->n, timeout_ms);
  if (n < 0) return errno == EINTR ? 0 : -1;
  s->fn = fn;
  s->arg = arg;
  int rc = 0;
  for (int i = 0; i < s->n && rc == 0; i++) {
    if (s->pfds[i].revents & (POLLIN | POLLERR | POLLHUP))
      if (tcpsec_read(&s->conns[i], on_frame, s) < 0) rc = -1;
    if (rc == 0 && tcpsec_flush(&s->conns[i]) < 0) rc = -1;
  }
  s->fn = NULL;
  return rc;
}

static int tcp_send(void *p, int client, const char *to, const void *body, size_t len) {
  tcp_state *s = p;
  tcpsec *c = &s->conns[client];
  size_t n = bp_encode(s->scratch, BP_FRAME_MAX, BP_MSG, to, body, len);
  if (n == 0 || tcpsec_send(c, s->scratch, n) < 0) return -1;
  return tcpsec_flush(c);
}

static void *tcp_open(const bench_transport_config *cfg) {
  struct sockaddr_in addr;
  if (bp_parse_addr(cfg->relay, &addr) < 0) {
    fprintf(stderr, "tcp: bad relay address %s\n", cfg->relay);
    return NULL;
  }
  tcp_state *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->n = cfg->nclients;
  s->conns = calloc((size_t)s->n, sizeof *s->conns);
  s->pfds = calloc((size_t)s->n, sizeof *s->pfds);
  s->scratch = malloc(BP_FRAME_MAX);
  if (!s->conns || !s->pfds || !s->scratch) goto fail;
  for (int i = 0; i < s->n; i++) s->conns[i].fd = -1;
  for (int i = 0; i < s->n; i++) {
    /* A blocking connect keeps this simple; the socket turns non-blocking
     * once it is up. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
      perror("tcp: connect");
      if (fd >= 0) close(fd);
      goto fail;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
      close(fd);
      goto fail;
    }
    if (tcpsec_init(&s->conns[i], fd, false) < 0 || tcpsec_flush(&s->conns[i]) < 0) goto fail;
  }
  /* Wait until every stream can carry frames, then say who we are. */
  int64_t end = bp_now_ns() + (int64_t)cfg->connect_timeout_ms * 1000000;
  for (;;) {
    int ready = 0;
    for (int i = 0; i < s->n; i++) ready += s->conns[i].tx_ready;
    if (ready == s->n) break;
    if (bp_now_ns() > end) {
      fprintf(stderr, "tcp: handshake timed out\n");
      goto fail;
    }
    if (tcp_poll(s, 50, NULL, NULL) < 0) goto fail;
  }
  for (int i = 0; i < s->n; i++) {
    size_t n = bp_encode(s->scratch, BP_FRAME_MAX, BP_HELLO, cfg->names[i], NULL, 0);
    if (n == 0 || tcpsec_send(&s->conns[i], s->scratch, n) < 0 || tcpsec_flush(&s->conns[i]) < 0)
      goto fail;
  }
  if (cfg->first_to && tcp_send(s, 0, cfg->first_to, cfg->first_body, cfg->first_len) < 0) goto fail;
  return s;
fail:
  tcp_close(s);
  return NULL;
}

const bench_transport bench_transport_tcp = {"tcp", tcp_open, tcp_send, tcp_poll, tcp_close, NULL};
