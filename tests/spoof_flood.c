/*
 * spoof_flood: ENet CONNECTs from spoofed IPv4 sources, as fast as one raw
 * socket sends them, for tests/cookie_flood_test.sh (issue 13, finding 3).
 * Each datagram is a valid ENet 1.3.17 CONNECT of 52 bytes (with sent
 * time; MTU 1400, one channel, so that an ENet host answers it) from a
 * random address of PREFIX/BITS and a random port. Needs root (a raw
 * socket, IP_HDRINCL).
 *
 *   spoof_flood DEST_IP DEST_PORT SRC_PREFIX BITS SECONDS
 *
 * Prints "sent N bytes B seconds S" (B: UDP payload bytes) at the end.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { PAYLOAD = 52 };

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64: the sources only need to differ, not to be unpredictable. */
static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: spoof_flood DEST_IP DEST_PORT SRC_PREFIX BITS SECONDS\n");
    return 2;
  }
  struct in_addr dst, prefix;
  int port = atoi(argv[2]), bits = atoi(argv[4]);
  double secs = atof(argv[5]);
  if (inet_pton(AF_INET, argv[1], &dst) != 1 || inet_pton(AF_INET, argv[3], &prefix) != 1 ||
      port <= 0 || port > 65535 || bits < 8 || bits > 30 || secs <= 0 || secs > 120) {
    fprintf(stderr, "spoof_flood: bad arguments\n");
    return 2;
  }
  int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW); /* IP_HDRINCL implied */
  if (fd < 0) {
    perror("spoof_flood: raw socket");
    return 1;
  }
  uint8_t pkt[sizeof(struct iphdr) + sizeof(struct udphdr) + PAYLOAD];
  memset(pkt, 0, sizeof pkt);
  struct iphdr *ip = (struct iphdr *)pkt;
  struct udphdr *udp = (struct udphdr *)(pkt + sizeof *ip);
  uint8_t *c = pkt + sizeof *ip + sizeof *udp;
  c[0] = 0x8F, c[1] = 0xFF, c[4] = 0x82, c[5] = 0xFF, c[7] = 1;
  c[14] = 0x05, c[15] = 0x78; /* mtu 1400 */
  c[18] = 0x80;               /* window 32768 */
  c[23] = 1;                  /* channels */
  ip->version = 4;
  ip->ihl = 5;
  ip->ttl = 64;
  ip->protocol = IPPROTO_UDP;
  ip->tot_len = htons(sizeof pkt);
  ip->daddr = dst.s_addr;
  udp->dest = htons((uint16_t)port);
  udp->len = htons(sizeof *udp + PAYLOAD);
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr = dst};
  uint32_t base = ntohl(prefix.s_addr) & ~((1u << (32 - bits)) - 1);
  uint64_t seed = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull | 1;
  double start = now_s(), end = start + secs;
  unsigned long long sent = 0;
  for (;;) {
    if ((sent & 255) == 0 && now_s() >= end) break;
    uint64_t r = rnd(&seed);
    uint32_t host = (uint32_t)r & ((1u << (32 - bits)) - 1);
    if (host == 0) host = 1;
    ip->saddr = htonl(base | host);
    ip->id = (uint16_t)(r >> 32);
    ip->check = 0; /* the kernel fills it in for IP_HDRINCL */
    udp->source = htons((uint16_t)(1024 + (r >> 40) % 60000));
    c[2] = (uint8_t)(r >> 48), c[3] = (uint8_t)(r >> 56); /* sent time */
    udp->check = 0; /* optional over IPv4 */
    if (sendto(fd, pkt, sizeof pkt, 0, (struct sockaddr *)&to, sizeof to) == (ssize_t)sizeof pkt) {
      sent++;
    } else if (errno != ENOBUFS && errno != EAGAIN) {
      perror("spoof_flood: sendto");
      return 1;
    }
  }
  printf("sent %llu bytes %llu seconds %.2f\n", sent, sent * PAYLOAD, now_s() - start);
  close(fd);
  return 0;
}
