#include "udp_proxy.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <enet/enet.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

uint64_t udp_proxy_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int bound_socket(void) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  cr_assert(fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  return fd;
}

void udp_proxy_start(udp_proxy *p, uint16_t target_port, unsigned delay_ms) {
  memset(p, 0, sizeof *p);
  p->front = bound_socket();
  p->back = bound_socket();
  struct sockaddr_in a;
  socklen_t al = sizeof a;
  cr_assert_eq(getsockname(p->front, (struct sockaddr *)&a, &al), 0);
  p->front_port = ntohs(a.sin_port);
  p->target.sin_family = AF_INET;
  p->target.sin_port = htons(target_port);
  p->target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  p->delay_ms = delay_ms;
}

void udp_proxy_stop(udp_proxy *p) {
  close(p->front);
  close(p->back);
}

static void take(udp_proxy *p, int fd, int dir) {
  for (int k = 0; k < 64; k++) {
    uint8_t buf[1500];
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    if (n < 0) return;
    if (dir == UDP_PROXY_TO_TARGET) {
      p->client = from;
      p->have_client = 1;
    }
    unsigned idx = p->seen[dir]++;
    if (p->drop && p->drop(p->drop_ctx, dir, idx, buf, (size_t)n)) {
      p->dropped[dir]++;
      continue;
    }
    cr_assert(p->qn < sizeof p->q / sizeof p->q[0], "proxy queue full");
    udp_proxy_held *h = &p->q[p->qn++];
    h->due_ms = udp_proxy_now_ms() + p->delay_ms;
    h->dir = dir;
    h->len = (size_t)n;
    memcpy(h->data, buf, (size_t)n);
  }
}

void udp_proxy_pump(udp_proxy *p) {
  take(p, p->front, UDP_PROXY_TO_TARGET);
  take(p, p->back, UDP_PROXY_TO_CLIENT);
  uint64_t now = udp_proxy_now_ms();
  size_t kept = 0;
  for (size_t i = 0; i < p->qn; i++) {
    udp_proxy_held *h = &p->q[i];
    if (h->due_ms > now) {
      p->q[kept++] = *h;
      continue;
    }
    if (h->dir == UDP_PROXY_TO_TARGET)
      (void)sendto(p->back, h->data, h->len, 0, (struct sockaddr *)&p->target, sizeof p->target);
    else if (p->have_client)
      (void)sendto(p->front, h->data, h->len, 0, (struct sockaddr *)&p->client, sizeof p->client);
  }
  p->qn = kept;
}

int udp_proxy_enet_has(const uint8_t *d, size_t n, uint8_t channel, uint8_t first) {
  if (n < 2) return 0;
  uint16_t peer_flags = (uint16_t)(d[0] << 8 | d[1]);
  if (peer_flags & ENET_PROTOCOL_HEADER_FLAG_COMPRESSED) return 0;
  size_t off = (peer_flags & ENET_PROTOCOL_HEADER_FLAG_SENT_TIME) ? 4 : 2;
  /* Bounded by the datagram: every command is at least 4 bytes. */
  while (off + sizeof(ENetProtocolCommandHeader) <= n) {
    size_t size = enet_protocol_command_size(d[off]);
    if (size == 0 || off + size > n) return 0;
    ENetProtocol c;
    memcpy(&c, d + off, size);
    size_t data_len = 0;
    switch (c.header.command & ENET_PROTOCOL_COMMAND_MASK) {
      case ENET_PROTOCOL_COMMAND_SEND_RELIABLE:
        data_len = ENET_NET_TO_HOST_16(c.sendReliable.dataLength);
        if (off + size + data_len <= n && c.header.channelID == channel && data_len > 0 &&
            d[off + size] == first)
          return 1;
        break;
      case ENET_PROTOCOL_COMMAND_SEND_UNRELIABLE:
        data_len = ENET_NET_TO_HOST_16(c.sendUnreliable.dataLength);
        break;
      case ENET_PROTOCOL_COMMAND_SEND_UNSEQUENCED:
        data_len = ENET_NET_TO_HOST_16(c.sendUnsequenced.dataLength);
        break;
      case ENET_PROTOCOL_COMMAND_SEND_FRAGMENT:
      case ENET_PROTOCOL_COMMAND_SEND_UNRELIABLE_FRAGMENT:
        data_len = ENET_NET_TO_HOST_16(c.sendFragment.dataLength);
        break;
      default:
        break;
    }
    off += size + data_len;
  }
  return 0;
}
