/* ENet behind tern's link interface. */
#include "link.h"

#include <arpa/inet.h>
#include <enet/enet.h>
#include <enet/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "clock.h"
#include "tern/tern.h"

struct tern__link {
  ENetHost *host;
  tern__link_raw_fn raw_fn;
  void *raw_ctx;
  uint64_t *heard_ms;  /* per peer slot: when a datagram from it last arrived */
};

/* ENet's intercept callback has no context pointer: the link being
 * serviced on this thread is its context. ENet is single-threaded per host,
 * and only tern__link_service() runs ENet's receive path. */
static _Thread_local tern__link *servicing;

/* Notes that the peer a datagram is addressed to was heard from: ENet's
 * own lastReceiveTime moves only when an acknowledgement arrives, which
 * does not tell whether the other side is sending (spec/keepalive.md). The
 * header's peer id is checked against the sender's address, as ENet does. */
static void note_heard(tern__link *l, const uint8_t *d, size_t n) {
  if (n < 2) return;
  size_t id = (size_t)(((d[0] << 8) | d[1]) & ENET_PROTOCOL_MAXIMUM_PEER_ID);
  if (id >= l->host->peerCount) return;
  const ENetPeer *p = &l->host->peers[id];
  if (p->state == ENET_PEER_STATE_DISCONNECTED || p->address.host != l->host->receivedAddress.host ||
      p->address.port != l->host->receivedAddress.port)
    return;
  l->heard_ms[id] = tern__now_ms();
}

static int intercept(ENetHost *host, ENetEvent *event) {
  (void)event;
  tern__link *l = servicing;
  if (!l || l->host != host) return 0;
  if (l->raw_fn && l->raw_fn(l->raw_ctx, ntohl(host->receivedAddress.host), host->receivedAddress.port,
                             host->receivedData, host->receivedDataLength) == 1)
    return 1;
  note_heard(l, host->receivedData, host->receivedDataLength);
  return 0;
}

static pthread_once_t enet_once = PTHREAD_ONCE_INIT;
static int enet_init_rc;

static void enet_init_once(void) { enet_init_rc = enet_initialize(); }

int tern__link_new(tern__link **out, const char *bind_host, uint16_t port, size_t max_peers) {
  *out = NULL;
  pthread_once(&enet_once, enet_init_once);
  if (enet_init_rc != 0) return TERN_ERESOURCE;
  if (max_peers == 0 || max_peers > ENET_PROTOCOL_MAXIMUM_PEER_ID) return TERN_EINVAL;
  tern__link *l = calloc(1, sizeof(*l));
  if (!l) return TERN_ENOMEM;
  ENetAddress addr, *bind = NULL;
  if (bind_host) {
    if (enet_address_set_host_ip(&addr, bind_host) != 0 &&
        enet_address_set_host(&addr, bind_host) != 0) {
      free(l);
      return TERN_EADDR;
    }
    addr.port = port;
    bind = &addr;
  }
  l->host = enet_host_create(bind, max_peers, TERN__CH_COUNT, 0, 0);
  if (!l->host) {
    free(l);
    return bind ? TERN_EADDR : TERN_ERESOURCE;
  }
  l->heard_ms = calloc(l->host->peerCount, sizeof(*l->heard_ms));
  if (!l->heard_ms) {
    enet_host_destroy(l->host);
    free(l);
    return TERN_ENOMEM;
  }
  l->host->intercept = intercept;
  *out = l;
  return 0;
}

void tern__link_free(tern__link *l) {
  if (!l) return;
  enet_host_destroy(l->host);
  free(l->heard_ms);
  free(l);
}

int tern__link_connect(tern__link *l, const char *host, uint16_t port, tern__link_peer **peer) {
  *peer = NULL;
  ENetAddress addr;
  if (enet_address_set_host_ip(&addr, host) != 0 && enet_address_set_host(&addr, host) != 0)
    return TERN_EADDR;
  addr.port = port;
  ENetPeer *p = enet_host_connect(l->host, &addr, TERN__CH_COUNT, 0);
  if (!p) return TERN_ERESOURCE;
  *peer = (tern__link_peer *)p;
  return 0;
}

int tern__link_send(tern__link *l, tern__link_peer *peer, uint8_t channel, const void *data,
                    size_t len, int mode) {
  (void)l;
  ENetPeer *p = (ENetPeer *)peer;
  if (p->state != ENET_PEER_STATE_CONNECTED) return TERN_ECLOSED;
  enet_uint32 flags = mode == TERN__LINK_RELIABLE      ? ENET_PACKET_FLAG_RELIABLE
                     : mode == TERN__LINK_UNSEQUENCED ? ENET_PACKET_FLAG_UNSEQUENCED
                                                      : 0;
  ENetPacket *pkt = enet_packet_create(data, len, flags);
  if (!pkt) return TERN_ENOMEM;
  if (enet_peer_send(p, channel, pkt) != 0) {
    /* On failure ENet leaves the packet to us (enet_peer_send's contract). */
    enet_packet_destroy(pkt);
    return TERN_ECLOSED;
  }
  return 0;
}

int tern__link_service(tern__link *l, int timeout_ms, tern__link_event *ev) {
  ENetEvent e;
  ev->type = TERN__LINK_EV_NONE;
  ev->packet = NULL;
  ev->payload = NULL;
  ev->len = 0;
  tern__link *outer = servicing;
  servicing = l;
  int rc = enet_host_service(l->host, &e, timeout_ms < 0 ? 0 : (enet_uint32)timeout_ms);
  servicing = outer;
  if (rc < 0) return TERN_EIO;
  if (rc == 0) return 0;
  ev->peer = (tern__link_peer *)e.peer;
  ev->channel = e.channelID;
  ev->data = e.data;
  switch (e.type) {
    case ENET_EVENT_TYPE_CONNECT:
      ev->type = TERN__LINK_EV_CONNECT;
      l->heard_ms[e.peer - l->host->peers] = tern__now_ms();
      /* ENet's throttle drops unreliable packets when it sees loss or RTT
       * jitter, which is exactly when tern's unsequenced copies matter:
       * keep our sending throttle open. Only once connected: the connect
       * handshake checks that these parameters did not change, and
       * enet_peer_throttle_configure() would send a command as well. */
      e.peer->packetThrottleDeceleration = 0;
      break;
    case ENET_EVENT_TYPE_DISCONNECT:
      ev->type = TERN__LINK_EV_DISCONNECT;
      break;
    case ENET_EVENT_TYPE_RECEIVE:
      ev->type = TERN__LINK_EV_RECEIVE;
      ev->packet = e.packet;
      ev->payload = e.packet->data;
      ev->len = e.packet->dataLength;
      break;
    default:
      return 0;
  }
  return 1;
}

void tern__link_event_done(tern__link_event *ev) {
  if (ev->packet) enet_packet_destroy((ENetPacket *)ev->packet);
  ev->packet = NULL;
  ev->payload = NULL;
  ev->len = 0;
}

void tern__link_flush(tern__link *l) { enet_host_flush(l->host); }

void tern__link_close(tern__link_peer *peer, uint32_t code, int how) {
  ENetPeer *p = (ENetPeer *)peer;
  if (how == TERN__LINK_CLOSE_NOW)
    enet_peer_disconnect_now(p, code);
  else if (how == TERN__LINK_CLOSE_LATER)
    enet_peer_disconnect_later(p, code);
  else
    enet_peer_disconnect(p, code);
}

void tern__link_peer_set_data(tern__link_peer *peer, void *data) { ((ENetPeer *)peer)->data = data; }

void *tern__link_peer_get_data(tern__link_peer *peer) { return ((ENetPeer *)peer)->data; }

void tern__link_peer_set_timing(tern__link_peer *peer, uint32_t ping_ms, uint32_t timeout_min_ms,
                                uint32_t timeout_max_ms) {
  ENetPeer *p = (ENetPeer *)peer;
  enet_peer_ping_interval(p, ping_ms);
  enet_peer_timeout(p, ENET_PEER_TIMEOUT_LIMIT, timeout_min_ms, timeout_max_ms);

}

void tern__link_peer_name(const tern__link_peer *peer, char *buf, size_t cap) {
  const ENetPeer *p = (const ENetPeer *)peer;
  uint32_t h = p->address.host; /* network byte order in memory */
  const uint8_t *b = (const uint8_t *)&h;
  snprintf(buf, cap, "%u.%u.%u.%u:%u", b[0], b[1], b[2], b[3], p->address.port);
}

void tern__link_peer_addr(const tern__link_peer *peer, uint32_t *ip, uint16_t *port) {
  const ENetPeer *p = (const ENetPeer *)peer;
  *ip = ntohl(p->address.host);
  *port = p->address.port;
}

void tern__link_set_raw_handler(tern__link *l, tern__link_raw_fn fn, void *ctx) {
  l->raw_fn = fn;
  l->raw_ctx = ctx;
}

uint64_t tern__link_peer_heard_ms(const tern__link *l, const tern__link_peer *peer) {
  return l->heard_ms[(const ENetPeer *)peer - l->host->peers];
}

void tern__link_peer_ping(tern__link_peer *peer) {
  ENetPeer *p = (ENetPeer *)peer;
  if (p->state == ENET_PEER_STATE_CONNECTED) enet_peer_ping(p);
}

int tern__link_send_raw(tern__link *l, uint32_t ip, uint16_t port, const void *data, size_t len) {
  ENetAddress to = {.host = htonl(ip), .port = port};
  ENetBuffer buf = {.data = (void *)data, .dataLength = len};
  return enet_socket_send(l->host->socket, &to, &buf, 1) == (int)len ? 0 : TERN_EIO;
}

uint32_t tern__link_peer_rtt(const tern__link_peer *peer) {
  return ((const ENetPeer *)peer)->roundTripTime;
}

/* When ENet next has work for this peer without any input, as an ENet time;
 * sets *due to 0 when there is none. Mirrors the checks in ENet 1.3.17's
 * enet_protocol_send_outgoing_commands: acknowledgements go out at once,
 * and so do queued commands when nothing is in flight,
 * resends and timeout checks happen at nextTimeout while reliable commands
 * are in flight, and a ping goes out pingInterval after the last receive
 * when nothing reliable is in flight. */
static enet_uint32 peer_due(const ENetPeer *p, int *due) {
  *due = 0;
  if (p->state == ENET_PEER_STATE_DISCONNECTED || p->state == ENET_PEER_STATE_ZOMBIE) return 0;
  if (!enet_list_empty(&((ENetPeer *)p)->acknowledgements)) {
    *due = 1;
    return enet_time_get();
  }
  /* Queued but unsent with nothing in flight: the next service sends it.
   * (With commands in flight, ENet may be holding these back for its
   * window; the acks arrive as input, and resends are due at nextTimeout.) */
  if (!enet_list_empty(&((ENetPeer *)p)->outgoingCommands) &&
      enet_list_empty(&((ENetPeer *)p)->sentReliableCommands)) {
    *due = 1;
    return enet_time_get();
  }
  if (!enet_list_empty(&((ENetPeer *)p)->sentReliableCommands)) {
    *due = 1;
    return p->nextTimeout;
  }
  if (p->state == ENET_PEER_STATE_CONNECTED) {
    *due = 1;
    return p->lastReceiveTime + p->pingInterval;
  }
  return 0;
}

int tern__link_next_timeout_ms(tern__link *l) {
  enet_uint32 now = enet_time_get();
  long best = -1;
  for (size_t i = 0; i < l->host->peerCount; i++) {
    int due;
    enet_uint32 t = peer_due(&l->host->peers[i], &due);
    if (!due) continue;
    long wait = ENET_TIME_LESS_EQUAL(t, now) ? 0 : (long)ENET_TIME_DIFFERENCE(t, now);
    if (best < 0 || wait < best) best = wait;
    if (best == 0) break;
  }
  return (int)best;
}

int tern__link_fd(const tern__link *l) { return (int)l->host->socket; }

uint16_t tern__link_port(const tern__link *l) { return l->host->address.port; }
