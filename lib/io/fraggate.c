/* The fragment gate: ENet's fragment commands read from a datagram, and
 * what a peer not yet trusted may begin (fraggate.h). */
#include "io/fraggate.h"

#include <enet/enet.h>
#include <string.h>

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Fixed part of each command, as ENet's commandSizes (protocol.c). */
static size_t command_size(unsigned c) {
  switch (c) {
    case ENET_PROTOCOL_COMMAND_ACKNOWLEDGE: return sizeof(ENetProtocolAcknowledge);
    case ENET_PROTOCOL_COMMAND_CONNECT: return sizeof(ENetProtocolConnect);
    case ENET_PROTOCOL_COMMAND_VERIFY_CONNECT: return sizeof(ENetProtocolVerifyConnect);
    case ENET_PROTOCOL_COMMAND_DISCONNECT: return sizeof(ENetProtocolDisconnect);
    case ENET_PROTOCOL_COMMAND_PING: return sizeof(ENetProtocolPing);
    case ENET_PROTOCOL_COMMAND_SEND_RELIABLE: return sizeof(ENetProtocolSendReliable);
    case ENET_PROTOCOL_COMMAND_SEND_UNRELIABLE: return sizeof(ENetProtocolSendUnreliable);
    case ENET_PROTOCOL_COMMAND_SEND_FRAGMENT: return sizeof(ENetProtocolSendFragment);
    case ENET_PROTOCOL_COMMAND_SEND_UNSEQUENCED: return sizeof(ENetProtocolSendUnsequenced);
    case ENET_PROTOCOL_COMMAND_BANDWIDTH_LIMIT: return sizeof(ENetProtocolBandwidthLimit);
    case ENET_PROTOCOL_COMMAND_THROTTLE_CONFIGURE: return sizeof(ENetProtocolThrottleConfigure);
    case ENET_PROTOCOL_COMMAND_SEND_UNRELIABLE_FRAGMENT: return sizeof(ENetProtocolSendFragment);
    default: return 0;
  }
}

int tern__enet_each_fragment(const uint8_t *d, size_t n,
                             int (*fn)(void *ctx, const tern__enet_frag *f), void *ctx) {
  if (n < 2) return 0;
  uint16_t peer = be16(d);
  if (peer & ENET_PROTOCOL_HEADER_FLAG_COMPRESSED) return 0; /* ENet drops it: no decompressor */
  size_t at = (peer & ENET_PROTOCOL_HEADER_FLAG_SENT_TIME) ? 4 : 2;
  while (at + sizeof(ENetProtocolCommandHeader) <= n) {
    unsigned c = d[at] & ENET_PROTOCOL_COMMAND_MASK;
    size_t size = command_size(c);
    if (size == 0 || size > n - at) return 0; /* where ENet stops */
    const uint8_t *cmd = d + at;
    at += size;
    size_t data = 0;
    switch (c) {
      case ENET_PROTOCOL_COMMAND_SEND_RELIABLE:
        data = be16(cmd + offsetof(ENetProtocolSendReliable, dataLength));
        break;
      case ENET_PROTOCOL_COMMAND_SEND_UNRELIABLE:
        data = be16(cmd + offsetof(ENetProtocolSendUnreliable, dataLength));
        break;
      case ENET_PROTOCOL_COMMAND_SEND_UNSEQUENCED:
        data = be16(cmd + offsetof(ENetProtocolSendUnsequenced, dataLength));
        break;
      case ENET_PROTOCOL_COMMAND_SEND_FRAGMENT:
      case ENET_PROTOCOL_COMMAND_SEND_UNRELIABLE_FRAGMENT: {
        data = be16(cmd + offsetof(ENetProtocolSendFragment, dataLength));
        if (data > n - at) return 0; /* ENet refuses it and stops */
        tern__enet_frag f = {
            .channel = cmd[offsetof(ENetProtocolCommandHeader, channelID)],
            .unreliable = c == ENET_PROTOCOL_COMMAND_SEND_UNRELIABLE_FRAGMENT,
            .start_seq = be16(cmd + offsetof(ENetProtocolSendFragment, startSequenceNumber)),
            .total = be32(cmd + offsetof(ENetProtocolSendFragment, totalLength))};
        int r = fn(ctx, &f);
        if (r) return r;
        break;
      }
      default:
        break;
    }
    if (data > n - at) return 0;
    at += data;
  }
  return 0;
}

typedef struct judge {
  tern__frag_gate next; /* the gate if the datagram passes */
  size_t max_total;
} judge;

static int judge_one(void *ctx, const tern__enet_frag *f) {
  judge *j = ctx;
  if (f->total > j->max_total) return 1;
  uint32_t key = (uint32_t)f->unreliable << 24 | (uint32_t)f->channel << 16 | f->start_seq;
  for (unsigned i = 0; i < j->next.starts; i++)
    if (j->next.started[i] == key) return 0;
  if (j->next.starts == TERN__FRAG_GATE_STARTS) return 1;
  j->next.started[j->next.starts++] = key;
  return 0;
}

int tern__frag_gate_pass(tern__frag_gate *g, const uint8_t *d, size_t n, size_t max_total) {
  if (g->trusted) return 1;
  judge j = {.next = *g, .max_total = max_total};
  if (tern__enet_each_fragment(d, n, judge_one, &j)) return 0;
  *g = j.next;
  return 1;
}
