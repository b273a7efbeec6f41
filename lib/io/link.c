/* ENet behind tern's link interface. */
#include "io/link.h"

#include <arpa/inet.h>
#include <enet/enet.h>
#include <enet/time.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "io/clock.h"
#include "io/dispatch.h"
#include "io/fraggate.h"
#include "io/nat64.h"
#include "tern/tern.h"

/* Retransmission timing (spec/wire.md, "Retransmission timing"). ENet
 * starts every peer from a 500 ms RTT guess and doubles a reliable
 * command's timeout at each expiry without a cap, so one lost datagram on a
 * 100 ms path stalls its channel for 300-500 ms, two for a second or more,
 * and a lost connect costs 0.5 + 1 + 2 s. tern keeps ENet's estimator
 * (srtt + 4 rttvar) but:
 *  - seeds the RTT: a client's connect starts from the RTT last measured to
 *    that relay (RTT_GUESS_MS if none), and the connect exchange, when it
 *    needed no retransmission, is the peer's first RTT sample;
 *  - caps every in-flight reliable command's timeout at 2 srtt + RTO_SLACK_MS
 *    for its first RTO_FAST_SENDS transmissions (after that ENet's doubling
 *    resumes from the cap, so a dead path is not flooded); a peer without an
 *    RTT sample yet (connecting, or the relay's side of a new connection)
 *    counts as srtt = its seed. */
#define RTT_GUESS_MS 100
#define RTO_SLACK_MS 50
#define RTO_FAST_SENDS 5

/* A handle held for a peer slot (dispatch.h): released when the
 * connection ends. */
typedef struct held {
  uint32_t handle;
  uint16_t gen;
  uint8_t on;
} held;

/* A client's connect (it may race several, one per peer slot). */
typedef struct attempt {
  uint8_t used;              /* the slot's peer was made by tern__link_connect*() */
  uint8_t connecting;        /* its connect has not completed */
  enet_uint32 start;         /* ENet time it started connecting */
  enet_uint32 rto;           /* its connect request's first timeout, ms */
} attempt;

/* One ENet host on a virtual socket of the link's dispatcher. ENet caps a
 * host at 4,095 peers; a relay with more slots runs several shards behind
 * its one port (docs/socket-layer.md, "Shards"). */
typedef struct shard {
  ENetHost *host;
  uint64_t *heard_ms;  /* per peer slot: when a datagram from it last arrived */
  held *holds;         /* per peer slot */
  tern__frag_gate *gates; /* per peer slot: what it may reassemble before its handshake */
  /* Several shards: each ENet call on a host walks all its peer slots, so
   * a shard is serviced again within the same millisecond only if
   * datagrams or events wait for it (service_shards), and flushed only if
   * it was serviced or given something to send since its last flush. */
  enet_uint32 serviced_at;
  int dirty;
} shard;

struct tern__link {
  tern__disp *disp;    /* the real socket; each host's is a virtual one */
  shard *sh;
  size_t nsh;
  size_t rr;           /* the shard serviced first next time */
  ENetHost *host;      /* sh[0].host: a client's only host */
  uint64_t swept_ms;
  tern__link_move_fn move_fn;
  void *move_ctx;
  enet_uint32 tuned_at;      /* ENet time of the last pass over in-flight commands */
  int untuned;               /* ENet was serviced or sent on since that pass */
  attempt *att;              /* client: per peer slot, its own connects */
  tern__addr bind;           /* relay: the address bound (TCP listens there too) */
  tern__addr rtt_addr;       /* where rtt_ms was measured (the real address) */
  enet_uint32 rtt_ms;        /* smoothed RTT last measured to rtt_addr; 0: none */
  size_t preauth_max;        /* relay: largest reassembly before a peer is trusted (0: no gate) */
  uint64_t frag_refused;     /* datagrams the fragment gate refused */
  uint64_t queued_bytes;     /* bytes of the packets tern__link_send() gave
                                ENet that ENet still holds */
};

/* ENet's intercept callback has no context pointer: the link being
 * serviced on this thread is its context. ENet is single-threaded per host,
 * and only tern__link_service() runs ENet's receive path. */
static _Thread_local tern__link *servicing;

/* Notes that the peer a datagram is addressed to was heard from: ENet's
 * own lastReceiveTime moves only when an acknowledgement arrives, which
 * does not tell whether the other side is sending (spec/keepalive.md). The
 * header's peer id is checked against the sender's address, as ENet does. */
static void note_heard(shard *s, const uint8_t *d, size_t n) {
  if (n < 2) return;
  ENetHost *h = s->host;
  size_t id = (size_t)(((d[0] << 8) | d[1]) & ENET_PROTOCOL_MAXIMUM_PEER_ID);
  if (id >= h->peerCount) return;
  const ENetPeer *p = &h->peers[id];
  if (p->state == ENET_PEER_STATE_DISCONNECTED || p->address.host != h->receivedAddress.host ||
      p->address.port != h->receivedAddress.port)
    return;
  s->heard_ms[id] = tern__now_ms();
}

/* The shard of an ENet host (a relay has at most a few dozen). */
static shard *shard_of(const tern__link *l, const ENetHost *h) {
  for (size_t i = 0; i < l->nsh; i++)
    if (l->sh[i].host == h) return &l->sh[i];
  return NULL;
}

/* Something was queued on host h outside its service: it needs a flush,
 * and a tune pass. */
static void touch(tern__link *l, const ENetHost *h) {
  l->untuned = 1;
  if (l->nsh > 1) {
    shard *s = shard_of(l, h);
    if (s) s->dirty = 1;
  }
}

/* The fragment gate of the peer slot a datagram names (fraggate.h): 1 to
 * hand the datagram to ENet, 0 to drop it. ENet takes fragments only from
 * a connected peer at its own address; anything else (a CONNECT, a slot
 * not connected, another sender) is ENet's to refuse, and is not counted
 * against the slot, so a stranger cannot use up a later client's starts. */
static int gate_pass(tern__link *l, shard *s, const uint8_t *d, size_t n) {
  if (!l->preauth_max || n < 2) return 1;
  ENetHost *h = s->host;
  size_t id = (size_t)(((d[0] << 8) | d[1]) & ENET_PROTOCOL_MAXIMUM_PEER_ID);
  if (id >= h->peerCount) return 1;
  const ENetPeer *p = &h->peers[id];
  if ((p->state != ENET_PEER_STATE_CONNECTED && p->state != ENET_PEER_STATE_DISCONNECT_LATER) ||
      p->address.host != h->receivedAddress.host || p->address.port != h->receivedAddress.port)
    return 1;
  if (tern__frag_gate_pass(&s->gates[id], d, n, l->preauth_max)) return 1;
  l->frag_refused++;
  return 0;
}

static int intercept(ENetHost *host, ENetEvent *event) {
  (void)event;
  tern__link *l = servicing;
  shard *s = l ? shard_of(l, host) : NULL;
  if (!s) return 0;
  if (!gate_pass(l, s, host->receivedData, host->receivedDataLength)) return 1; /* dropped */
  note_heard(s, host->receivedData, host->receivedDataLength);
  return 0;
}

/* The real address a peer's handle stands for (dispatch.h). */
static int peer_real(const tern__link *l, const ENetPeer *p, tern__addr *out) {
  return tern__disp_handle_addr(l->disp, p->address.host, p->address.port, out);
}

/* The connection in peer slot p holds its handle until it ends. */
static void hold(tern__link *l, ENetPeer *p) {
  held *h = &shard_of(l, p->host)->holds[p - p->host->peers];
  if (h->on) return;
  if (tern__disp_handle_hold(l->disp, p->address.host, p->address.port) != 0) return;
  *h = (held){.handle = p->address.host, .gen = p->address.port, .on = 1};
}

static void release(tern__link *l, ENetPeer *p) {
  shard *s = shard_of(l, p->host);
  memset(&s->gates[p - p->host->peers], 0, sizeof(*s->gates)); /* the next connection starts untrusted */
  held *h = &s->holds[p - p->host->peers];
  if (!h->on) return;
  tern__disp_handle_release(l->disp, h->handle, h->gen);
  h->on = 0;
}

/* Resolves host to one address: an IP literal, or a name's first address
 * (getaddrinfo orders them as RFC 6724 prefers). `family` AF_UNSPEC or
 * AF_INET; `passive` for a bind address. */
static int resolve_one(const char *host, uint16_t port, int family, int passive, tern__addr *out) {
  if (tern__addr_parse_ip(out, host, port) == 0) return 0;
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = family;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = passive ? AI_PASSIVE : AI_ADDRCONFIG;
  int g = getaddrinfo(host, NULL, &hints, &res);
  if (g != 0 && !passive) {
    /* AI_ADDRCONFIG hides every address on a host with loopback only. */
    hints.ai_flags = 0;
    g = getaddrinfo(host, NULL, &hints, &res);
  }
  if (g != 0) return TERN_EADDR;
  int rc = TERN_EADDR;
  for (struct addrinfo *r = res; r && rc; r = r->ai_next)
    if (tern__addr_from_sockaddr(out, r->ai_addr, r->ai_addrlen) == 0) {
      out->port = port;
      rc = 0;
    }
  freeaddrinfo(res);
  return rc;
}

#ifdef TERN_TEST_HOOKS
size_t tern__link_hook_shard_peers;
#endif

static pthread_once_t enet_once = PTHREAD_ONCE_INIT;
static int enet_init_rc;

static void enet_init_once(void) { enet_init_rc = enet_initialize(); }

int tern__link_new(tern__link **out, const char *bind_host, uint16_t port, size_t max_peers) {
  *out = NULL;
  pthread_once(&enet_once, enet_init_once);
  if (enet_init_rc != 0) return TERN_ERESOURCE;
  if (max_peers == 0 || max_peers > TERN__LINK_MAX_PEERS) return TERN_EINVAL;
  tern__link *l = calloc(1, sizeof(*l));
  if (!l) return TERN_ENOMEM;
  size_t per = ENET_PROTOCOL_MAXIMUM_PEER_ID;
#ifdef TERN_TEST_HOOKS
  if (tern__link_hook_shard_peers) per = tern__link_hook_shard_peers;
#endif
  l->nsh = (max_peers + per - 1) / per;
  l->sh = calloc(l->nsh, sizeof(*l->sh));
  if (!l->sh) {
    free(l);
    return TERN_ENOMEM;
  }
  tern__addr bind;
  int rc = 0;
  if (bind_host) rc = resolve_one(bind_host, port, AF_UNSPEC, 1, &bind);
  if (rc == 0) rc = tern__disp_new(&l->disp, bind_host ? &bind : NULL, bind_host != NULL);
  if (rc) {
    free(l->sh);
    free(l);
    return rc;
  }
  /* Each host's socket is a virtual one of the dispatcher; ENet is given
   * no address to bind. The slots are spread evenly over the shards. */
  for (size_t i = 0; i < l->nsh; i++) {
    size_t n = max_peers / l->nsh + (i < max_peers % l->nsh);
    shard *s = &l->sh[i];
    tern__disp_arm(l->disp);
    s->host = enet_host_create(NULL, n, TERN__CH_COUNT, 0, 0);
    tern__disp_disarm();
    if (!s->host) {
      tern__link_free(l);
      return TERN_ERESOURCE;
    }
    tern__disp_set_capacity(s->host->socket, s->host->peerCount);
    s->heard_ms = calloc(s->host->peerCount, sizeof(*s->heard_ms));
    s->holds = calloc(s->host->peerCount, sizeof(*s->holds));
    s->gates = calloc(s->host->peerCount, sizeof(*s->gates));
    if (!s->heard_ms || !s->holds || !s->gates) {
      tern__link_free(l);
      return TERN_ENOMEM;
    }
    s->host->intercept = intercept;
  }
  l->host = l->sh[0].host;
  if (!bind_host && !(l->att = calloc(l->host->peerCount, sizeof(*l->att)))) {
    tern__link_free(l);
    return TERN_ENOMEM;
  }
  if (bind_host) l->bind = bind;
  *out = l;
  return 0;
}

void tern__link_free(tern__link *l) {
  if (!l) return;
  for (size_t i = 0; i < l->nsh; i++) {
    if (l->sh[i].host) enet_host_destroy(l->sh[i].host); /* closes its virtual socket */
    free(l->sh[i].heard_ms);
    free(l->sh[i].holds);
    free(l->sh[i].gates);
  }
  tern__disp_free(l->disp);
  free(l->att);
  free(l->sh);
  free(l);
}

void tern__link_set_packet_limits(tern__link *l, size_t packet_max, size_t preauth_max) {
  /* Delivered packets wait only until the next event is taken; one
   * receive pass completes at most a few. */
  for (size_t i = 0; i < l->nsh; i++) {
    l->sh[i].host->maximumPacketSize = packet_max;
    l->sh[i].host->maximumWaitingData = 4 * packet_max;
  }
  l->preauth_max = preauth_max;
}

void tern__link_peer_trust(tern__link *l, tern__link_peer *peer) {
  ENetPeer *p = (ENetPeer *)peer;
  shard_of(l, p->host)->gates[p - p->host->peers].trusted = 1;
}

uint64_t tern__link_frag_refused(const tern__link *l) { return l->frag_refused; }

int tern__link_has_v6(const tern__link *l) { return tern__disp_has_v6(l->disp); }

int tern__link_resolve(tern__link *l, const char *host, uint16_t port, tern__addr *out) {
  int v6 = tern__disp_has_v6(l->disp);
  int rc = resolve_one(host, port, v6 ? AF_UNSPEC : AF_INET, 0, out);
  /* An IPv4 address (a literal, or a name with only A records) on a
   * network that reaches IPv4 only through a NAT64. */
  if (rc == 0 && v6) (void)tern__nat64_synthesize(out);
  return rc;
}

int tern__link_connect(tern__link *l, const char *host, uint16_t port, tern__link_peer **peer) {
  *peer = NULL;
  tern__addr real;
  int rc = tern__link_resolve(l, host, port, &real);
  if (rc) return rc;
  return tern__link_connect_addr(l, &real, peer);
}

int tern__link_connect_addr(tern__link *l, const tern__addr *real, tern__link_peer **peer) {
  *peer = NULL;
  uint32_t handle;
  uint16_t gen;
  int rc = tern__disp_handle_new(l->disp, l->host->socket, real, &handle, &gen);
  if (rc) return rc == TERN_EADDR ? TERN_EADDR : TERN_ERESOURCE;
  ENetAddress addr = {.host = handle, .port = gen};
  l->untuned = 1;
  ENetPeer *p = enet_host_connect(l->host, &addr, TERN__CH_COUNT, 0);
  if (!p) {
    tern__disp_handle_release(l->disp, handle, gen);
    return TERN_ERESOURCE;
  }
  l->sh[0].holds[p - l->host->peers] = (held){.handle = handle, .gen = gen, .on = 1};
  /* The connect request is queued, not sent: its timeout is computed from
   * these when it leaves. RTO = rtt + 4 * rtt/4 = 2 rtt. */
  enet_uint32 seed = RTT_GUESS_MS;
  if (l->rtt_ms && tern__addr_equal(&l->rtt_addr, real)) seed = l->rtt_ms;
  p->roundTripTime = seed;
  p->roundTripTimeVariance = seed / 4;
  if (l->att)
    l->att[p - l->host->peers] = (attempt){.used = 1, .connecting = 1, .start = enet_time_get(),
                                           .rto = p->roundTripTime + 4 * p->roundTripTimeVariance};
  *peer = (tern__link_peer *)p;
  return 0;
}

int tern__link_connect_tcp(tern__link *l, const tern__addr *real, tern__link_peer **peer) {
  *peer = NULL;
  tern__addr stream;
  int rc = tern__disp_tcp_connect(l->disp, real, &stream);
  if (rc) return rc == TERN_EIO ? TERN_EADDR : rc;
  return tern__link_connect_addr(l, &stream, peer);
}

/* The client's connect completed. If the request was answered before it
 * could have been sent a second time, the time it took is an RTT sample
 * (Karn's rule: a sample that could belong to either transmission is not
 * taken): it becomes the peer's estimate, and ENet smooths later samples
 * into it (lastReceiveTime set) instead of starting over from the first
 * acknowledgement with a variance of half the RTT. */
/* The client's own connect in slot p, or NULL. */
static attempt *attempt_of(const tern__link *l, const ENetPeer *p) {
  if (!l->att || p->host != l->host) return NULL;
  attempt *a = &l->att[p - l->host->peers];
  return a->used ? a : NULL;
}

static void connect_sample(tern__link *l, ENetPeer *p) {
  attempt *a = attempt_of(l, p);
  if (!a || !a->connecting) return;
  a->connecting = 0;
  enet_uint32 now = enet_time_get();
  enet_uint32 sample = ENET_TIME_DIFFERENCE(now, a->start);
  if (sample >= a->rto) return;
  if (sample == 0) sample = 1;
  p->roundTripTime = sample;
  p->roundTripTimeVariance = sample / 4 ? sample / 4 : 1;
  p->lastReceiveTime = now ? now : 1;
  if (peer_real(l, p, &l->rtt_addr) == 0) l->rtt_ms = sample;
}

/* ENet frees a packet once it is sent (unreliable) or acknowledged
 * (reliable), or when its peer is reset: what tern's packets hold of ENet's
 * memory follows from that. */
static void packet_freed(ENetPacket *pkt) {
  tern__link *l = pkt->userData;
  l->queued_bytes -= pkt->dataLength;
}

uint64_t tern__link_queued_bytes(const tern__link *l) { return l->queued_bytes; }

int tern__link_send(tern__link *l, tern__link_peer *peer, uint8_t channel, const void *data,
                    size_t len, int mode) {
  ENetPeer *p = (ENetPeer *)peer;
  if (p->state != ENET_PEER_STATE_CONNECTED) return TERN_ECLOSED;
  enet_uint32 flags = mode == TERN__LINK_RELIABLE      ? ENET_PACKET_FLAG_RELIABLE
                     : mode == TERN__LINK_UNSEQUENCED ? ENET_PACKET_FLAG_UNSEQUENCED
                                                      : 0;
  ENetPacket *pkt = enet_packet_create(data, len, flags);
  if (!pkt) return TERN_ENOMEM;
  pkt->userData = l;
  pkt->freeCallback = packet_freed;
  l->queued_bytes += len;
  touch(l, p->host);
  if (enet_peer_send(p, channel, pkt) != 0) {
    /* On failure ENet leaves the packet to us (enet_peer_send's contract). */
    enet_packet_destroy(pkt);
    return TERN_ECLOSED;
  }
  return 0;
}

/* One pass over the shards, from the one that had an event last (ENet may
 * have more queued there): the first event any of them has. */
static int service_shards(tern__link *l, ENetEvent *e) {
  enet_uint32 now = enet_time_get();
  int any = 0;
  for (size_t k = 0; k < l->nsh; k++) {
    size_t i = (l->rr + k) % l->nsh;
    shard *s = &l->sh[i];
    /* Serviced already this millisecond and nothing waits for it: its
     * timers have not moved, and a second call would only walk its slots
     * again. The first shard is serviced whatever: any shard's service
     * reads the real socket and queues to the others. */
    if (any && s->serviced_at == now && !tern__vsock_queued(s->host->socket) &&
        enet_list_empty(&s->host->dispatchQueue))
      continue;
    any = 1;
    s->serviced_at = now;
    s->dirty = 1;
    int rc = enet_host_service(s->host, e, 0);
    if (rc != 0) {
      l->rr = i;
      return rc;
    }
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
  tern__disp_tick(l->disp); /* a connect's spread copies */
  int rc;
  l->untuned = 1; /* ENet may send or resend in what follows */
  if (l->nsh == 1) {
    rc = enet_host_service(l->host, &e, timeout_ms < 0 ? 0 : (enet_uint32)timeout_ms);
  } else {
    /* Several hosts behind one socket: each is serviced without waiting,
     * and the wait is on the real socket (unless a datagram already waits
     * in a shard's queue). */
    rc = service_shards(l, &e);
    if (rc == 0 && timeout_ms > 0 && !tern__disp_queued(l->disp)) {
      int w = tern__disp_wait(l->disp, timeout_ms);
      if (w < 0) rc = -1;
      else if (w > 0) rc = service_shards(l, &e);
    }
  }
  servicing = outer;
  uint64_t now = tern__now_ms();
  if (now >= l->swept_ms + 5000) {
    tern__disp_sweep(l->disp, now);
    l->swept_ms = now;
  }
  if (rc < 0) return TERN_EIO;
  if (rc == 0) return 0;
  ev->peer = (tern__link_peer *)e.peer;
  ev->channel = e.channelID;
  ev->data = e.data;
  switch (e.type) {
    case ENET_EVENT_TYPE_CONNECT:
      ev->type = TERN__LINK_EV_CONNECT;
      hold(l, e.peer);
      shard_of(l, e.peer->host)->heard_ms[e.peer - e.peer->host->peers] = tern__now_ms();
      connect_sample(l, e.peer);
      /* ENet's throttle drops unreliable packets when it sees loss or RTT
       * jitter, which is exactly when tern's unsequenced copies matter:
       * keep our sending throttle open. Only once connected: the connect
       * handshake checks that these parameters did not change, and
       * enet_peer_throttle_configure() would send a command as well. */
      e.peer->packetThrottleDeceleration = 0;
      break;
    case ENET_EVENT_TYPE_DISCONNECT:
      ev->type = TERN__LINK_EV_DISCONNECT;
      release(l, e.peer);
      if (attempt_of(l, e.peer)) l->att[e.peer - l->host->peers].used = 0;
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

/* The srtt the retransmission cap is computed from (see the top). */
static enet_uint32 cap_srtt(const tern__link *l, const ENetPeer *p) {
  if (p->lastReceiveTime != 0) return p->roundTripTime; /* sampled */
  if (attempt_of(l, p)) return p->roundTripTime;         /* the seed */
  return RTT_GUESS_MS; /* the relay's side of a new connection */
}

/* Caps the timeouts of reliable commands sent since the last pass. ENet
 * appends every command it (re)sends to the tail of sentReliableCommands
 * with its timeout already set (first send: srtt + 4 rttvar; resend:
 * doubled), so only the tail needs looking at: walk back while the
 * commands were sent at or after the last pass (ENet time has whole
 * milliseconds, so a command sent in the same millisecond as the pass is
 * looked at twice, harmlessly). ENet checks timeouts when nextTimeout, the
 * deadline of the oldest command, comes; it is recomputed if that one
 * changed. A later command whose capped deadline falls before it waits
 * for it, at most one cap longer. */
static void tune_peer(const tern__link *l, ENetPeer *p) {
  if (p->state == ENET_PEER_STATE_DISCONNECTED || p->state == ENET_PEER_STATE_ZOMBIE) return;
  ENetList *sent = &p->sentReliableCommands;
  if (enet_list_empty(sent)) return;
  enet_uint32 cap = 2 * cap_srtt(l, p) + RTO_SLACK_MS;
  int changed = 0;
  for (ENetListIterator it = enet_list_previous(enet_list_end(sent)); it != enet_list_end(sent);
       it = enet_list_previous(it)) {
    ENetOutgoingCommand *oc = (ENetOutgoingCommand *)it;
    if (ENET_TIME_LESS(oc->sentTime, l->tuned_at)) break;
    if (oc->sendAttempts <= RTO_FAST_SENDS && oc->roundTripTimeout > cap) {
      oc->roundTripTimeout = cap;
      changed = 1;
    }
  }
  if (changed) {
    ENetOutgoingCommand *head = (ENetOutgoingCommand *)enet_list_front(sent);
    p->nextTimeout = head->sentTime + head->roundTripTimeout;
  }
}

/* One pass over every peer: caps what was sent since the last pass, and
 * remembers the client's RTT to its relay for the next connect. */
static void tune(tern__link *l) {
  enet_uint32 now = enet_time_get();
  for (size_t k = 0; k < l->nsh; k++)
    for (size_t i = 0; i < l->sh[k].host->peerCount; i++) tune_peer(l, &l->sh[k].host->peers[i]);
  for (size_t i = 0; l->att && i < l->host->peerCount; i++) {
    ENetPeer *o = &l->host->peers[i];
    if (l->att[i].used && o->state == ENET_PEER_STATE_CONNECTED && o->lastReceiveTime != 0 &&
        peer_real(l, o, &l->rtt_addr) == 0)
      l->rtt_ms = o->roundTripTime;
  }
  l->tuned_at = now;
  l->untuned = 0;
}

void tern__link_flush(tern__link *l) {
  if (l->nsh == 1) {
    enet_host_flush(l->host);
  } else {
    for (size_t k = 0; k < l->nsh; k++) {
      if (!l->sh[k].dirty) continue;
      l->sh[k].dirty = 0;
      enet_host_flush(l->sh[k].host);
    }
  }
  tune(l);
}

void tern__link_close(tern__link *l, tern__link_peer *peer, uint32_t code, int how) {
  ENetPeer *p = (ENetPeer *)peer;
  touch(l, p->host);
  if (how == TERN__LINK_CLOSE_NOW) {
    enet_peer_disconnect_now(p, code); /* sends the disconnect at once */
    release(l, p);
    if (attempt_of(l, p)) l->att[p - l->host->peers].used = 0;
  } else if (how == TERN__LINK_CLOSE_LATER)
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

void tern__link_peer_name(const tern__link *l, const tern__link_peer *peer, char *buf, size_t cap) {
  tern__addr a;
  if (peer_real(l, (const ENetPeer *)peer, &a) == 0) tern__disp_addr_name(l->disp, &a, buf, cap);
  else snprintf(buf, cap, "(gone)");
}

int tern__link_peer_addr(const tern__link *l, const tern__link_peer *peer, tern__addr *out) {
  return peer_real(l, (const ENetPeer *)peer, out);
}

void tern__link_set_raw_handler(tern__link *l, tern__link_raw_fn fn, void *ctx) {
  tern__disp_set_raw_handler(l->disp, fn, ctx);
}

uint64_t tern__link_peer_heard_ms(const tern__link *l, const tern__link_peer *peer) {
  const ENetPeer *p = (const ENetPeer *)peer;
  return shard_of(l, p->host)->heard_ms[p - p->host->peers];
}

void tern__link_peer_ping(tern__link *l, tern__link_peer *peer) {
  ENetPeer *p = (ENetPeer *)peer;
  touch(l, p->host);
  if (p->state == ENET_PEER_STATE_CONNECTED) enet_peer_ping(p);
}

int tern__link_send_raw(tern__link *l, const tern__addr *to, const void *data, size_t len) {
  return tern__disp_send_raw(l->disp, to, data, len);
}

uint32_t tern__link_peer_rtt(const tern__link_peer *peer) {
  enet_uint32 rtt = ((const ENetPeer *)peer)->roundTripTime;
  return rtt ? rtt : 1; /* measured below a millisecond: not "unknown" */
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
  /* Before a wait: nothing sent may keep ENet's uncapped timeout. A pass
   * right after another (tern__link_flush's) with nothing in between
   * would find nothing. */
  if (l->untuned) tune(l);
  if (tern__disp_queued(l->disp)) return 0; /* datagrams wait for a shard */
  enet_uint32 now = enet_time_get();
  long best = -1;
  for (size_t k = 0; k < l->nsh && best != 0; k++) {
    const ENetHost *h = l->sh[k].host;
    for (size_t i = 0; i < h->peerCount; i++) {
      int due;
      enet_uint32 t = peer_due(&h->peers[i], &due);
      if (!due) continue;
      long wait = ENET_TIME_LESS_EQUAL(t, now) ? 0 : (long)ENET_TIME_DIFFERENCE(t, now);
      if (best < 0 || wait < best) best = wait;
      if (best == 0) break;
    }
  }
  int copy = tern__disp_next_ms(l->disp);
  if (copy >= 0 && (best < 0 || copy < best)) best = copy;
  return (int)best;
}

tern__poller *tern__link_poller(const tern__link *l) { return tern__disp_poller(l->disp); }

uint16_t tern__link_port(const tern__link *l) { return tern__disp_port(l->disp); }

int tern__link_peer_path_add(tern__link *l, const tern__link_peer *peer, const tern__path_keys *keys) {
  const ENetPeer *p = (const ENetPeer *)peer;
  return tern__disp_path_add(l->disp, p->address.host, p->address.port, keys);
}

void tern__link_peer_kick(tern__link_peer *peer) {
  ENetPeer *p = (ENetPeer *)peer;
  if (p->state != ENET_PEER_STATE_CONNECTED) return;
  ENetList *sent = &p->sentReliableCommands;
  if (enet_list_empty(sent)) return;
  /* Due at once: ENet resends a command whose time since sending reaches
   * its timeout. The old path's losses say nothing about the new one, so
   * the timeout count starts over too. */
  for (ENetListIterator it = enet_list_begin(sent); it != enet_list_end(sent); it = enet_list_next(it))
    ((ENetOutgoingCommand *)it)->roundTripTimeout = 0;
  p->nextTimeout = enet_time_get();
  p->earliestTimeout = 0;
}

/* The dispatcher moved a handle: find its peer (a rare event: a scan). */
static void on_move(void *ctx, uint32_t handle, uint16_t gen, const tern__addr *from,
                    const tern__addr *to) {
  tern__link *l = ctx;
  if (!l->move_fn) return;
  for (size_t k = 0; k < l->nsh; k++)
    for (size_t i = 0; i < l->sh[k].host->peerCount; i++) {
      ENetPeer *p = &l->sh[k].host->peers[i];
      if (p->state != ENET_PEER_STATE_DISCONNECTED && p->address.host == handle &&
          p->address.port == gen) {
        tern__link_peer_kick((tern__link_peer *)p);
        l->move_fn(l->move_ctx, (tern__link_peer *)p, from, to);
      }
    }
}

void tern__link_set_move_handler(tern__link *l, tern__link_move_fn fn, void *ctx) {
  l->move_fn = fn;
  l->move_ctx = ctx;
  tern__disp_set_move_handler(l->disp, on_move, l);
}

void tern__link_mig_stats(const tern__link *l, tern__mig_stats *st) { tern__disp_mig_stats(l->disp, st); }

int tern__link_cand_open(tern__link *l) { return tern__disp_cand_open(l->disp); }

int tern__link_cand_send(tern__link *l, const tern__addr *to, const void *data, size_t len) {
  return tern__disp_cand_send(l->disp, to, data, len);
}

void tern__link_cand_commit(tern__link *l) { tern__disp_cand_commit(l->disp); }
void tern__link_cand_abort(tern__link *l) { tern__disp_cand_abort(l->disp); }

int tern__link_listen_tcp(tern__link *l, uint16_t port, uint16_t *bound) {
  if (l->att) return TERN_EINVAL;
  tern__addr at = l->bind;
  at.port = port;
  return tern__disp_listen_tcp(l->disp, &at, bound);
}

void tern__link_addr_name(const tern__link *l, const tern__addr *a, char *buf, size_t cap) {
  tern__disp_addr_name(l->disp, a, buf, cap);
}

void tern__link_tcp_counts(const tern__link *l, uint64_t *accepted, uint64_t *open) {
  tern__disp_stats st;
  tern__disp_stats_get(l->disp, &st);
  *accepted = st.tcp.accepted;
  *open = st.tcp.open;
}

int tern__link_peer_alive(const tern__link *l, const tern__link_peer *peer) {
  const ENetPeer *p = (const ENetPeer *)peer;
  return tern__disp_handle_alive(l->disp, p->address.host, p->address.port);
}

int tern__link_peer_is_tcp(const tern__link *l, const tern__link_peer *peer) {
  tern__addr a;
  return peer_real(l, (const ENetPeer *)peer, &a) == 0 && tern__addr_is_stream(&a, NULL);
}

int tern__link_peer_move(tern__link *l, tern__link_peer *peer, const tern__addr *to) {
  const ENetPeer *p = (const ENetPeer *)peer;
  return tern__disp_handle_move(l->disp, p->address.host, p->address.port, to);
}

void tern__link_set_full_answer(tern__link *l, uint32_t retry_ms) {
  tern__disp_set_full_answer(l->disp, retry_ms);
}

void tern__link_set_cookies(tern__link *l, int mode) { tern__disp_set_cookies(l->disp, mode); }

void tern__link_cookie_counts(const tern__link *l, uint64_t *sent, uint64_t *connects, uint64_t *bad) {
  tern__disp_stats st;
  tern__disp_stats_get(l->disp, &st);
  *sent = st.cookies_sent;
  *connects = st.cookie_connects;
  *bad = st.cookies_bad;
}

uint64_t tern__link_refused(const tern__link *l) {
  tern__disp_stats st;
  tern__disp_stats_get(l->disp, &st);
  return st.new_refused;
}
