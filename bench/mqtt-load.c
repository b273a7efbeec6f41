/*
 * mqtt-load: tern-load's twin for an MQTT broker (mosquitto), on
 * libmosquitto. Same pairs, same 100-byte bodies, same open-loop and
 * saturate modes, same JSON line (loadgen.h); the relay's CPU is the
 * broker's.
 *
 * Each pair is a publisher and a subscriber on the topic load/<prefix>/<i>,
 * QoS 1 both ways, persistent sessions (clean_session false: the broker
 * keeps a subscriber's queue while it is away), MQTT 3.1.1, TCP_NODELAY on
 * the clients. All 2 x --pairs clients run in one thread: their sockets sit
 * in one epoll set, read with mosquitto_loop_read() while the socket has
 * bytes (libmosquitto reads one packet per call when its queues are empty),
 * written with mosquitto_loop_write() when mosquitto_want_write() says so,
 * and mosquitto_loop_misc() runs for each once a second (keepalive).
 * libmosquitto's own in-flight cap is lifted (65535): in saturate mode the
 * --window decides, as for tern.
 *
 * Acknowledged = PUBACK from the broker (on_publish); arrived = on_message
 * at the subscriber; a reconnect = a lost connection after the send phase
 * began (the client reconnects at once and libmosquitto resends what was
 * not acknowledged, so duplicates are possible and counted).
 */
#include <errno.h>
#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "benchproto.h"
#include "loadgen.h"

typedef struct mq_state mq_state;

typedef struct mq_client {
  struct mosquitto *m;
  mq_state *s;
  int pair;
  int is_recv;
  int connected;
  int subscribed;
  int lost;       /* the connection dropped: reconnect from the main loop */
  int fd;         /* registered in the epoll set, -1: none */
  int want_out;   /* EPOLLOUT registered */
} mq_client;

struct mq_state {
  mq_client *cl;
  int n;
  int epfd;
  lg_run *run; /* NULL while connecting */
  int nready;  /* connected (and, for a subscriber, subscribed) */
  int closing; /* the run is over: connections close on purpose */
  int64_t next_misc; /* when every client's mosquitto_loop_misc() is due */
  char (*topic)[96];
};

static void on_connect(struct mosquitto *m, void *ud, int rc) {
  mq_client *k = ud;
  if (rc != 0) {
    fprintf(stderr, "mqtt-load: connect refused: %s\n", mosquitto_connack_string(rc));
    return;
  }
  k->connected = 1;
  if (k->is_recv) {
    /* Subscribing again after a reconnect is harmless: the session kept it. */
    if (mosquitto_subscribe(m, NULL, k->s->topic[k->pair], 1) != MOSQ_ERR_SUCCESS)
      fprintf(stderr, "mqtt-load: subscribe failed\n");
  } else if (!k->subscribed) {
    k->subscribed = 1;
    k->s->nready++;
  }
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *granted) {
  (void)m;
  (void)mid;
  mq_client *k = ud;
  if (n < 1 || granted[0] != 1) fprintf(stderr, "mqtt-load: subscription not granted at QoS 1\n");
  if (!k->subscribed) {
    k->subscribed = 1;
    k->s->nready++;
  }
}

static void on_disconnect(struct mosquitto *m, void *ud, int rc) {
  (void)m;
  mq_client *k = ud;
  k->connected = 0;
  k->fd = -1; /* libmosquitto closed the socket: its epoll entry went with it */
  if (k->s->closing) return;
  k->lost = 1;
  if (k->s->run) lg_count_reconnect(k->s->run);
  fprintf(stderr, "mqtt-load: client %s%d lost its connection (%d)\n", k->is_recv ? "r" : "s",
          k->pair, rc);
}

static void on_publish(struct mosquitto *m, void *ud, int mid) {
  (void)m;
  (void)mid;
  mq_client *k = ud;
  if (k->s->run) lg_acked(k->s->run, k->pair);
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg) {
  (void)m;
  mq_client *k = ud;
  if (k->s->run && k->is_recv && msg->payloadlen > 0)
    lg_received(k->s->run, k->pair, msg->payload, (size_t)msg->payloadlen, bp_now_ns());
}

/* Keeps the epoll registration of client k in line with its socket and
 * with whether libmosquitto has bytes to write. */
static int sync_epoll(mq_state *s, mq_client *k) {
  int fd = mosquitto_socket(k->m);
  int out = fd >= 0 && mosquitto_want_write(k->m);
  if (fd != k->fd && k->fd >= 0) {
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, k->fd, NULL); /* fails harmlessly if closed */
    k->fd = -1;
  }
  if (fd < 0 || (fd == k->fd && out == k->want_out)) return 0;
  struct epoll_event e = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.u32 = (uint32_t)(k - s->cl)};
  if (epoll_ctl(s->epfd, fd == k->fd ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &e) != 0) {
    perror("mqtt-load: epoll_ctl");
    return -1;
  }
  k->fd = fd;
  k->want_out = out;
  return 0;
}

/* Reads what client k's socket holds, writes what is queued. */
static int service(mq_state *s, mq_client *k, unsigned events) {
  if (k->fd >= 0 && (events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
    for (int i = 0; i < 100000; i++) {
      if (mosquitto_loop_read(k->m, 1) != MOSQ_ERR_SUCCESS) break;
      int avail = 0;
      if (mosquitto_socket(k->m) < 0 || ioctl(mosquitto_socket(k->m), FIONREAD, &avail) != 0 ||
          avail <= 0)
        break;
    }
  }
  if (mosquitto_socket(k->m) >= 0 && mosquitto_want_write(k->m)) (void)mosquitto_loop_write(k->m, 1);
  return sync_epoll(s, k);
}

static int reconnect(mq_state *s, mq_client *k) {
  k->lost = 0;
  int rc = mosquitto_reconnect(k->m);
  if (rc != MOSQ_ERR_SUCCESS) {
    fprintf(stderr, "mqtt-load: reconnect: %s\n", mosquitto_strerror(rc));
    k->lost = 1; /* tried again on the next turn */
  }
  return sync_epoll(s, k);
}

/* Waits until `until` (or input) and services what is ready; runs the
 * keepalive of every client once a second. Returns 0 or -1. */
static int mq_step(void *ctx, lg_run *run, int64_t until) {
  mq_state *s = ctx;
  s->run = run;
  struct epoll_event ev[256];
  if (s->next_misc < until) until = s->next_misc;
  int n = lg_epoll_wait(s->epfd, ev, 256, until);
  if (n < 0) {
    perror("mqtt-load: epoll_wait");
    return -1;
  }
  for (int j = 0; j < n; j++)
    if (service(s, &s->cl[ev[j].data.u32], ev[j].events) < 0) return -1;
  int64_t now = bp_now_ns();
  if (now >= s->next_misc) {
    s->next_misc = now + 1000000000;
    for (int i = 0; i < s->n; i++) {
      if (s->cl[i].lost) {
        if (reconnect(s, &s->cl[i]) < 0) return -1;
        continue;
      }
      (void)mosquitto_loop_misc(s->cl[i].m);
      if (service(s, &s->cl[i], 0) < 0) return -1;
    }
  }
  for (int i = 0; i < s->n; i++)
    if (s->cl[i].lost && !s->cl[i].connected && reconnect(s, &s->cl[i]) < 0) return -1;
  return 0;
}

static int mq_ready(void *ctx) { return ((mq_state *)ctx)->nready; }

static int mq_send(void *ctx, int pair, const uint8_t *body, size_t len) {
  mq_state *s = ctx;
  mq_client *k = &s->cl[2 * pair];
  int e = mosquitto_publish(k->m, NULL, s->topic[pair], (int)len, body, 1, false);
  /* NO_CONN: libmosquitto keeps the message and sends it on reconnect. */
  if (e != MOSQ_ERR_SUCCESS && e != MOSQ_ERR_NO_CONN) {
    fprintf(stderr, "mqtt-load: publish: %s\n", mosquitto_strerror(e));
    return -1;
  }
  return sync_epoll(s, k);
}

static void mq_close(void *ctx) {
  mq_state *s = ctx;
  s->closing = 1;
  for (int i = 0; s->cl && i < s->n; i++)
    if (s->cl[i].m) {
      mosquitto_disconnect(s->cl[i].m);
      mosquitto_destroy(s->cl[i].m);
    }
  if (s->epfd >= 0) close(s->epfd);
  mosquitto_lib_cleanup();
  free(s->topic);
  free(s->cl);
  free(s);
}

static void *mq_open(const lg_config *cfg) {
  mosquitto_lib_init();
  mq_state *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->n = 2 * cfg->pairs;
  s->epfd = epoll_create1(EPOLL_CLOEXEC);
  s->next_misc = bp_now_ns() + 1000000000;
  s->cl = calloc((size_t)s->n, sizeof *s->cl);
  s->topic = calloc((size_t)cfg->pairs, sizeof *s->topic);
  if (s->epfd < 0 || !s->cl || !s->topic) {
    fprintf(stderr, "mqtt-load: out of memory or descriptors\n");
    goto fail;
  }
  for (int i = 0; i < s->n; i++) {
    mq_client *k = &s->cl[i];
    k->s = s;
    k->pair = i / 2;
    k->is_recv = i % 2;
    k->fd = -1;
    if (k->is_recv)
      snprintf(s->topic[k->pair], sizeof s->topic[0], "load/%s/%d", cfg->prefix, k->pair);
    char id[64];
    snprintf(id, sizeof id, "%s%c%d", cfg->prefix, k->is_recv ? 'r' : 's', k->pair);
    k->m = mosquitto_new(id, false, k);
    if (!k->m) {
      fprintf(stderr, "mqtt-load: mosquitto_new failed\n");
      goto fail;
    }
    mosquitto_int_option(k->m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_int_option(k->m, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_int_option(k->m, MOSQ_OPT_SEND_MAXIMUM, 65535);
    mosquitto_connect_callback_set(k->m, on_connect);
    mosquitto_subscribe_callback_set(k->m, on_subscribe);
    mosquitto_disconnect_callback_set(k->m, on_disconnect);
    mosquitto_publish_callback_set(k->m, on_publish);
    mosquitto_message_callback_set(k->m, on_message);
    int rc = mosquitto_connect(k->m, cfg->host, cfg->port, 60);
    if (rc != MOSQ_ERR_SUCCESS) {
      fprintf(stderr, "mqtt-load: connect %s:%d: %s (raise the fd limit?)\n", cfg->host, cfg->port,
              mosquitto_strerror(rc));
      goto fail;
    }
    if (sync_epoll(s, k) < 0) goto fail;
  }
  return s;
fail:
  mq_close(s);
  return NULL;
}

int main(int argc, char **argv) {
  static const lg_driver d = {.name = "mqtt-load", .open = mq_open, .ready = mq_ready,
                              .step = mq_step, .send = mq_send, .close = mq_close};
  return lg_main(&d, "mosquitto", argc, argv);
}
