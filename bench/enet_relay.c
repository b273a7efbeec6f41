/*
 * enet_relay: the raw-ENet baseline's relay.
 *
 *   enet_relay [--bind IP:PORT] [--duration S] [--max-peers N] [--accept-log FILE]
 *
 * ENet with its default settings (ping interval, timeouts, window, MTU):
 * this is what ENet does on its own, without tern's layer. One packet is
 * one benchproto frame, sent reliable. Channel 0 carries BP_HELLO; a
 * conversation (the pair of names) is hashed onto one of the channels 1 to
 * BP_ENET_CHANNELS-1 on both hops, like tern's chat channels, so a loss in
 * one conversation does not hold up another. Payloads are not encrypted:
 * the CPU figures of this baseline contain no crypto. --accept-log as in
 * tcp_relay: the first BP_MSG of each named peer, stamped when it is read.
 */
#include <enet/enet.h>
#include <inttypes.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchproto.h"

typedef struct peer_info {
  char name[BP_NAME_MAX + 1];
  bool logged; /* its first message is in the accept log */
} peer_info;

typedef struct relay {
  ENetHost *host;
  uint8_t *scratch;
  FILE *accept_log; /* --accept-log, or NULL */
  uint64_t connects, routed, refused;
} relay;

static ENetPeer *find(relay *r, const char *name) {
  for (size_t i = 0; i < r->host->peerCount; i++) {
    ENetPeer *p = &r->host->peers[i];
    if (p->state == ENET_PEER_STATE_CONNECTED && p->data &&
        strcmp(((peer_info *)p->data)->name, name) == 0)
      return p;
  }
  return NULL;
}

static void on_receive(relay *r, ENetPeer *from, const ENetPacket *pk) {
  bp_frame f;
  peer_info *pi = from->data;
  if (!pi || bp_decode(pk->data, pk->dataLength, &f) < 0) return;
  if (f.type == BP_HELLO) {
    /* The newest connection under a name wins: a client that vanished
     * without a goodbye stays "connected" until ENet times it out. */
    ENetPeer *old;
    while ((old = find(r, f.name)) != NULL) ((peer_info *)old->data)->name[0] = 0;
    memcpy(pi->name, f.name, sizeof pi->name);
    return;
  }
  if (r->accept_log && pi->name[0] && !pi->logged) {
    pi->logged = true;
    (void)bp_accept_log_write(r->accept_log, pi->name, bp_unix_ns());
  }
  ENetPeer *to = pi->name[0] ? find(r, f.name) : NULL;
  size_t n = to ? bp_encode(r->scratch, BP_FRAME_MAX, BP_MSG, pi->name, f.payload, f.payload_len) : 0;
  ENetPacket *out = n ? enet_packet_create(r->scratch, n, ENET_PACKET_FLAG_RELIABLE) : NULL;
  if (!out || enet_peer_send(to, bp_enet_channel(pi->name, f.name), out) < 0) {
    if (out) enet_packet_destroy(out);
    r->refused++;
    return;
  }
  r->routed++;
}

int main(int argc, char **argv) {
  const char *bind_s = "0.0.0.0:7600";
  double duration = 600;
  size_t max = 256;
  const char *accept_path = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help")) {
      printf("usage: enet_relay [--bind IP:PORT (0.0.0.0:7600)] [--duration S (600)] "
             "[--max-peers N (256, at most 4095)] [--accept-log FILE]\n");
      return 0;
    }
    if (i + 1 >= argc) goto bad;
    if (!strcmp(argv[i], "--bind")) bind_s = argv[++i];
    else if (!strcmp(argv[i], "--duration")) duration = strtod(argv[++i], NULL);
    else if (!strcmp(argv[i], "--max-peers")) max = strtoul(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--accept-log")) accept_path = argv[++i];
    else goto bad;
  }
  struct sockaddr_in sin;
  if (bp_parse_addr(bind_s, &sin) < 0 || duration <= 0 || max == 0 || max > 4095) goto bad;
  if (enet_initialize() != 0) return 1;
  ENetAddress addr = {.host = sin.sin_addr.s_addr, .port = ntohs(sin.sin_port)};
  relay r = {0};
  r.host = enet_host_create(&addr, max, BP_ENET_CHANNELS, 0, 0);
  r.scratch = malloc(BP_FRAME_MAX);
  if (accept_path && !(r.accept_log = fopen(accept_path, "w"))) {
    perror("enet_relay: --accept-log");
    return 1;
  }
  if (!r.host || !r.scratch) {
    fprintf(stderr, "enet_relay: cannot bind %s\n", bind_s);
    return 1;
  }
  static volatile sig_atomic_t stop;
  bp_on_stop_signals(&stop);
  int64_t end = bp_now_ns() + (int64_t)(duration * 1e9);
  while (!stop && bp_now_ns() < end) {
    ENetEvent ev;
    /* Up to 100 ms of waiting; then up to 1024 events that are already
     * there. An event is only taken out of ENet when it will be handled. */
    int n = enet_host_service(r.host, &ev, 100);
    for (int k = 0; n > 0; k++) {
      switch (ev.type) {
      case ENET_EVENT_TYPE_CONNECT:
        ev.peer->data = calloc(1, sizeof(peer_info));
        r.connects++;
        break;
      case ENET_EVENT_TYPE_RECEIVE:
        on_receive(&r, ev.peer, ev.packet);
        enet_packet_destroy(ev.packet);
        break;
      case ENET_EVENT_TYPE_DISCONNECT:
        free(ev.peer->data);
        ev.peer->data = NULL;
        break;
      default: break;
      }
      if (k == 1023) break;
      n = enet_host_check_events(r.host, &ev);
    }
    /* Forwarded packets leave now, not at the next service call. */
    enet_host_flush(r.host);
  }
  printf("{\"relay\":\"enet\",\"connects\":%" PRIu64 ",\"routed\":%" PRIu64 ",\"refused\":%" PRIu64
         ",\"cpu_s\":%.3f}\n",
         r.connects, r.routed, r.refused, bp_cpu_seconds());
  for (size_t i = 0; i < r.host->peerCount; i++) {
    free(r.host->peers[i].data);
    r.host->peers[i].data = NULL;
  }
  enet_host_destroy(r.host);
  if (r.accept_log) fclose(r.accept_log);
  free(r.scratch);
  enet_deinitialize();
  return 0;
bad:
  fprintf(stderr, "enet_relay: bad arguments (see --help)\n");
  return 2;
}
