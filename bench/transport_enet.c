/* The raw-ENet baseline transport: one ENet host (own UDP socket) and peer
 * per client, default ENet settings, one reliable channel per conversation
 * (bp_enet_channel), unencrypted frames. */
#include <enet/enet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchproto.h"
#include "transport.h"

/* ENet has no "next timer" call, so an idle poll still wakes this often to
 * let ENet resend and ping. A retransmission can be late by up to this. */
#define ENET_TICK_MS 5

typedef struct enet_state {
  int n;
  ENetHost **hosts;
  ENetPeer **peers;
  char **names;
  struct pollfd *pfds;
  uint8_t *scratch;
} enet_state;

static void enet_close(void *p) {
  enet_state *s = p;
  if (!s) return;
  for (int i = 0; i < s->n; i++) {
    /* One unreliable goodbye, so the relay frees the peer at once. */
    if (s->peers && s->peers[i]) enet_peer_disconnect_now(s->peers[i], 0);
    if (s->hosts && s->hosts[i]) enet_host_destroy(s->hosts[i]);
    if (s->names) free(s->names[i]);
  }
  free(s->hosts);
  free(s->peers);
  free(s->names);
  free(s->pfds);
  free(s->scratch);
  free(s);
  enet_deinitialize();
}

/* Services every host without waiting and hands over what arrived. */
static int service_all(enet_state *s, bench_on_message fn, void *arg, int *connected) {
  for (int i = 0; i < s->n; i++) {
    ENetEvent ev;
    /* Bounded: a host with more than 4096 queued events is served again on
     * the next call. */
    for (int k = 0; k < 4096; k++) {
      int r = enet_host_service(s->hosts[i], &ev, 0);
      if (r < 0) return -1;
      if (r == 0) break;
      if (ev.type == ENET_EVENT_TYPE_CONNECT) {
        if (connected) (*connected)++;
      } else if (ev.type == ENET_EVENT_TYPE_DISCONNECT) {
        fprintf(stderr, "enet: client %s lost its link\n", s->names[i]);
        s->peers[i] = NULL;
        return -1;
      } else if (ev.type == ENET_EVENT_TYPE_RECEIVE) {
        bp_frame f;
        if (fn && bp_decode(ev.packet->data, ev.packet->dataLength, &f) == 0 && f.type == BP_MSG)
          fn(arg, i, f.name, f.payload, f.payload_len);
        enet_packet_destroy(ev.packet);
      }
    }
  }
  return 0;
}

static int enet_poll(void *p, int timeout_ms, bench_on_message fn, void *arg) {
  enet_state *s = p;
  if (service_all(s, fn, arg, NULL) < 0) return -1;
  if (timeout_ms > 0) {
    for (int i = 0; i < s->n; i++) {
      s->pfds[i].fd = s->hosts[i]->socket;
      s->pfds[i].events = POLLIN;
    }
    int wait = timeout_ms < ENET_TICK_MS ? timeout_ms : ENET_TICK_MS;
    if (poll(s->pfds, (nfds_t)s->n, wait) < 0 && errno != EINTR) return -1;
    if (service_all(s, fn, arg, NULL) < 0) return -1;
  }
  return 0;
}

static int enet_send(void *p, int client, const char *to, const void *body, size_t len) {
  enet_state *s = p;
  size_t n = bp_encode(s->scratch, BP_FRAME_MAX, BP_MSG, to, body, len);
  ENetPacket *pk = n ? enet_packet_create(s->scratch, n, ENET_PACKET_FLAG_RELIABLE) : NULL;
  if (!pk) return -1;
  if (enet_peer_send(s->peers[client], bp_enet_channel(s->names[client], to), pk) < 0) {
    enet_packet_destroy(pk);
    return -1;
  }
  enet_host_flush(s->hosts[client]);
  return 0;
}

static void *enet_open(const bench_transport_config *cfg) {
  struct sockaddr_in sin;
  if (bp_parse_addr(cfg->relay, &sin) < 0) {
    fprintf(stderr, "enet: bad relay address %s\n", cfg->relay);
    return NULL;
  }
  if (enet_initialize() != 0) return NULL;
  enet_state *s = calloc(1, sizeof *s);
  if (!s) {
    enet_deinitialize();
    return NULL;
  }
  s->n = cfg->nclients;
  s->hosts = calloc((size_t)s->n, sizeof *s->hosts);
  s->peers = calloc((size_t)s->n, sizeof *s->peers);
  s->names = calloc((size_t)s->n, sizeof *s->names);
  s->pfds = calloc((size_t)s->n, sizeof *s->pfds);
  s->scratch = malloc(BP_FRAME_MAX);
  if (!s->hosts || !s->peers || !s->names || !s->pfds || !s->scratch) goto fail;
  ENetAddress addr = {.host = sin.sin_addr.s_addr, .port = ntohs(sin.sin_port)};
  for (int i = 0; i < s->n; i++) {
    s->names[i] = strdup(cfg->names[i]);
    s->hosts[i] = enet_host_create(NULL, 1, BP_ENET_CHANNELS, 0, 0);
    if (!s->names[i] || !s->hosts[i]) goto fail;
    s->peers[i] = enet_host_connect(s->hosts[i], &addr, BP_ENET_CHANNELS, 0);
    if (!s->peers[i]) goto fail;
  }
  int connected = 0;
  int64_t end = bp_now_ns() + (int64_t)cfg->connect_timeout_ms * 1000000;
  while (connected < s->n) {
    if (bp_now_ns() > end) {
      fprintf(stderr, "enet: connect timed out (%d of %d)\n", connected, s->n);
      goto fail;
    }
    if (service_all(s, NULL, NULL, &connected) < 0) goto fail;
    for (int i = 0; i < s->n; i++) {
      s->pfds[i].fd = s->hosts[i]->socket;
      s->pfds[i].events = POLLIN;
    }
    poll(s->pfds, (nfds_t)s->n, ENET_TICK_MS);
  }
  for (int i = 0; i < s->n; i++) {
    size_t n = bp_encode(s->scratch, BP_FRAME_MAX, BP_HELLO, s->names[i], NULL, 0);
    ENetPacket *pk = enet_packet_create(s->scratch, n, ENET_PACKET_FLAG_RELIABLE);
    if (!pk) goto fail;
    if (enet_peer_send(s->peers[i], 0, pk) < 0) {
      enet_packet_destroy(pk);
      goto fail;
    }
    enet_host_flush(s->hosts[i]);
  }
  if (cfg->first_to && enet_send(s, 0, cfg->first_to, cfg->first_body, cfg->first_len) < 0) goto fail;
  return s;
fail:
  enet_close(s);
  return NULL;
}

const bench_transport bench_transport_enet = {"enet", enet_open, enet_send, enet_poll, enet_close, NULL};
