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
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
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
} tl_state;

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
        break;
      default:
        break;
    }
  }
  set_deadline(s, i, bp_now_ns());
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
    tern_client_config cc;
    tern_client_config_default(&cc);
    cc.relay_host = cfg->host;
    cc.relay_port = (uint16_t)cfg->port;
    memcpy(cc.relay_public_key, relay_key, TERN_KEY_BYTES);
    if (tern_keypair_generate(&cc.keypair) != 0) goto fail;
    cc.user = name;
    cc.state_dir = NULL;
    cc.keepalive_fixed_ms = 25000;
    errno = 0;
    int rc = tern_client_new(&k->c, &cc);
    int err = errno;
    memset(&cc.keypair, 0, sizeof cc.keypair);
    if (rc) {
      fprintf(stderr, "tern-load: client %d: %s (errno: %s)\n", i, tern_errname(rc), strerror(err));
      goto fail;
    }
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, tern_client_fd(k->c), &e) != 0) {
      perror("tern-load: epoll_ctl");
      goto fail;
    }
    rc = tern_client_connect(k->c);
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

int main(int argc, char **argv) {
  /* libtern holds at most 256 ENet hosts (one a client) in a process
   * (MAX_VSOCKS in lib/io/dispatch.c): 200 a process leaves room for a
   * reconnect's new link. */
  static const lg_driver d = {.name = "tern-load", .max_clients = 200, .open = tl_open, .ready = tl_ready,
                              .step = tl_step, .send = tl_send, .close = tl_close};
  return lg_main(&d, "tern", argc, argv);
}
