/* The tern transport: the full stack through the public API only
 * (include/tern/tern.h), one tern_client per bench client, each with its own
 * fresh X25519 key, talking to a ternd started with --open (so the relay
 * takes the user name each client asks for).
 *
 * Settings are the library's defaults except one, stated in
 * bench/README.md: the client keeps its state in memory (state_dir NULL),
 * as the TCP and ENet clients keep nothing. The default max_message_size
 * (65536) already takes the "big" workload's 64 KiB bodies.
 *
 * Receipt is TERN_EV_MESSAGE. TERN_EV_SENT of the first message a client
 * sends stamps "acknowledged" for the connect metric, and its
 * server_time_ms (the relay's wall clock when it took the message) is the
 * relay's own stamp of the acceptance. A
 * TERN_EV_DISCONNECTED is not fatal: the client reconnects by itself and
 * resends its outbox, which is what tern promises; it is counted and printed.
 * TERN_EV_FAILED is fatal (nothing in the bench should be refused). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchproto.h"
#include "tern/tern.h"
#include "transport.h"

/* A message that arrived while open() was still connecting the others
 * (a client's early message to itself can come back that fast): kept for
 * the first poll that has a callback. */
typedef struct pending_msg {
  int client;
  char from[TERN_USER_MAX + 1];
  size_t len;
  uint8_t *body;
} pending_msg;

#define PENDING_MAX 64

typedef struct tern_state {
  int n;
  tern_client **c;
  int64_t *start_ns, *accepted_ns, *relay_unix_ns;
  int *connected;
  struct pollfd *pfds;  /* what every client waits on, one after another */
  size_t pcap;
  int disconnects;
  pending_msg pending[PENDING_MAX];
  int npending;
} tern_state;

static void tern_close_all(void *p) {
  tern_state *s = p;
  if (!s) return;
  if (s->disconnects) fprintf(stderr, "tern: %d link drop(s) during the run\n", s->disconnects);
  for (int i = 0; i < s->n; i++)
    if (s->c) tern_client_free(s->c[i]);
  free(s->c);
  free(s->start_ns);
  free(s->accepted_ns);
  free(s->relay_unix_ns);
  free(s->connected);
  free(s->pfds);
  for (int k = 0; k < s->npending; k++) free(s->pending[k].body);
  free(s);
}

/* Drains client i's events. Returns 0, or -1 on a fatal one. */
static int drain(tern_state *s, int i, bench_on_message fn, void *arg) {
  tern_event ev;
  /* Bounded: a client with more queued is served again on the next call. */
  for (int k = 0; k < 100000 && tern_client_next_event(s->c[i], &ev) == 1; k++) {
    switch (ev.type) {
      case TERN_EV_MESSAGE:
        if (fn) {
          fn(arg, i, ev.user, ev.body, ev.body_len);
        } else if (s->npending < PENDING_MAX) {
          pending_msg *pm = &s->pending[s->npending];
          pm->body = malloc(ev.body_len ? ev.body_len : 1);
          if (!pm->body) return -1;
          memcpy(pm->body, ev.body, ev.body_len);
          pm->len = ev.body_len;
          pm->client = i;
          snprintf(pm->from, sizeof pm->from, "%s", ev.user);
          s->npending++;
        } else {
          fprintf(stderr, "tern: more than %d messages while connecting\n", PENDING_MAX);
          return -1;
        }
        break;
      case TERN_EV_SENT:
        if (!s->accepted_ns[i]) {
          s->accepted_ns[i] = bp_now_ns();
          /* Whole Unix ms, truncated by the relay: the middle of that
           * millisecond is the unbiased estimate. */
          s->relay_unix_ns[i] = (int64_t)ev.server_time_ms * 1000000 + 500000;
        }
        break;
      case TERN_EV_CONNECTED:
        s->connected[i] = 1;
        break;
      case TERN_EV_DISCONNECTED:
        s->connected[i] = 0;
        s->disconnects++;
        fprintf(stderr, "tern: client %d disconnected (%s); it reconnects by itself\n", i,
                tern_errname(ev.error));
        break;
      case TERN_EV_FAILED:
        fprintf(stderr, "tern: client %d: message %llu failed: %s\n", i,
                (unsigned long long)ev.cmid, tern_errname(ev.error));
        return -1;
      default:
        break;
    }
  }
  return 0;
}

static int service_all(tern_state *s, bench_on_message fn, void *arg) {
  for (int i = 0; i < s->n; i++) {
    if (tern_client_service(s->c[i], 0) < 0) return -1;
    if (drain(s, i, fn, arg) < 0) return -1;
  }
  return 0;
}

static int tern_poll(void *p, int timeout_ms, bench_on_message fn, void *arg) {
  tern_state *s = p;
  for (int k = 0; fn && k < s->npending; k++) {
    pending_msg *pm = &s->pending[k];
    fn(arg, pm->client, pm->from, pm->body, pm->len);
    free(pm->body);
  }
  if (fn) s->npending = 0;
  if (service_all(s, fn, arg) < 0) return -1;
  if (timeout_ms <= 0) return 0;
  int wait = timeout_ms;
  size_t used = 0;
  for (int i = 0; i < s->n; i++) {
    int t = tern_client_timeout_ms(s->c[i]);
    if (t >= 0 && t < wait) wait = t;
    int k = tern_client_pollfds(s->c[i], s->pfds + used, s->pcap - used);
    if (k < 0) return -1;
    if ((size_t)k > s->pcap - used) { /* the poll() backend, more sockets: grow */
      size_t cap = (s->pcap + (size_t)k) * 2;
      struct pollfd *g = realloc(s->pfds, cap * sizeof *g);
      if (!g) return -1;
      s->pfds = g;
      s->pcap = cap;
      i--;
      continue;
    }
    used += (size_t)k;
  }
  if (poll(s->pfds, (nfds_t)used, wait) < 0 && errno != EINTR) return -1;
  return service_all(s, fn, arg);
}

static int tern_send_msg(void *p, int client, const char *to, const void *body, size_t len) {
  tern_state *s = p;
  /* tern_client_send() seals and hands the packet to ENet and flushes. */
  int rc = tern_client_send(s->c[client], to, body, len, NULL);
  if (rc) {
    fprintf(stderr, "tern: send: %s\n", tern_errname(rc));
    return -1;
  }
  return 0;
}

static void *tern_open(const bench_transport_config *cfg) {
  char host[64];
  const char *colon = cfg->relay ? strrchr(cfg->relay, ':') : NULL;
  if (!colon || (size_t)(colon - cfg->relay) >= sizeof host) {
    fprintf(stderr, "tern: bad relay address %s\n", cfg->relay ? cfg->relay : "(none)");
    return NULL;
  }
  memcpy(host, cfg->relay, (size_t)(colon - cfg->relay));
  host[colon - cfg->relay] = 0;
  long port = strtol(colon + 1, NULL, 10);
  uint8_t relay_key[TERN_KEY_BYTES];
  if (!cfg->relay_key || tern_key_from_hex(cfg->relay_key, relay_key) != 0) {
    fprintf(stderr, "tern: need --relay-key HEX (the relay's public key)\n");
    return NULL;
  }
  if (port <= 0 || port > 65535) return NULL;
  tern_state *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->n = cfg->nclients;
  s->c = calloc((size_t)s->n, sizeof *s->c);
  s->start_ns = calloc((size_t)s->n, sizeof *s->start_ns);
  s->accepted_ns = calloc((size_t)s->n, sizeof *s->accepted_ns);
  s->relay_unix_ns = calloc((size_t)s->n, sizeof *s->relay_unix_ns);
  s->connected = calloc((size_t)s->n, sizeof *s->connected);
  s->pcap = (size_t)s->n;
  s->pfds = calloc(s->pcap, sizeof *s->pfds);
  if (!s->c || !s->start_ns || !s->accepted_ns || !s->relay_unix_ns || !s->connected || !s->pfds) goto fail;
  for (int i = 0; i < s->n; i++) {
    tern_client_config cc;
    tern_client_config_default(&cc);
    cc.relay_host = host;
    cc.relay_port = (uint16_t)port;
    memcpy(cc.relay_public_key, relay_key, TERN_KEY_BYTES);
    if (tern_keypair_generate(&cc.keypair) != 0) goto fail;
    cc.user = cfg->names[i];
    cc.state_dir = NULL;
    cc.no_copies = cfg->no_copies;
    int rc = tern_client_new(&s->c[i], &cc);
    memset(&cc.keypair, 0, sizeof cc.keypair);
    if (rc) {
      fprintf(stderr, "tern: client_new: %s\n", tern_errname(rc));
      goto fail;
    }
  }
  /* All connects start together (like ENet's), each stamped. */
  for (int i = 0; i < s->n; i++) {
    s->start_ns[i] = bp_now_ns();
    int rc = tern_client_connect(s->c[i]);
    if (rc) {
      fprintf(stderr, "tern: connect: %s\n", tern_errname(rc));
      goto fail;
    }
    /* Sent while connecting: it waits in the outbox and goes out as early
     * data inside the handshake's first message. */
    if (i == 0 && cfg->first_to && tern_send_msg(s, 0, cfg->first_to, cfg->first_body, cfg->first_len) < 0)
      goto fail;
  }
  int64_t end = bp_now_ns() + (int64_t)cfg->connect_timeout_ms * 1000000;
  for (;;) {
    int up = 0;
    for (int i = 0; i < s->n; i++) up += s->connected[i];
    if (up == s->n) break;
    if (bp_now_ns() > end) {
      fprintf(stderr, "tern: connect timed out (%d of %d)\n", up, s->n);
      goto fail;
    }
    if (tern_poll(s, 10, NULL, NULL) < 0) goto fail;
  }
  s->disconnects = 0; /* failed attempts while connecting are not link drops */
  return s;
fail:
  tern_close_all(s);
  return NULL;
}

static void tern_connect_times(void *p, int client, int64_t *start_ns, int64_t *acked_ns,
                               int64_t *relay_accept_unix_ns) {
  tern_state *s = p;
  *start_ns = s->start_ns[client];
  *acked_ns = s->accepted_ns[client];
  *relay_accept_unix_ns = s->relay_unix_ns[client];
}

const bench_transport bench_transport_tern = {"tern",     tern_open,       tern_send_msg, tern_poll,
                                              tern_close_all, tern_connect_times};
