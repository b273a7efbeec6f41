/* A UDP proxy on loopback for tests: a client sends to its front port, the
 * proxy forwards to a target port from its back socket and answers back
 * the same way, after a fixed delay each way, dropping the datagrams a
 * predicate names. Single-threaded: the test calls udp_proxy_pump() from
 * its own loop. */
#ifndef TERN_TEST_UDP_PROXY_H
#define TERN_TEST_UDP_PROXY_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

enum { UDP_PROXY_TO_TARGET = 0, UDP_PROXY_TO_CLIENT = 1 };

/* Returns non-zero to drop datagram `d` going in direction `dir`; `index`
 * counts the datagrams of that direction from 0. */
typedef int (*udp_proxy_drop_fn)(void *ctx, int dir, unsigned index, const uint8_t *d, size_t n);

typedef struct udp_proxy_held {
  uint64_t due_ms;
  int dir;
  size_t len;
  uint8_t data[1500];
} udp_proxy_held;

typedef struct udp_proxy {
  int front, back;
  uint16_t front_port;
  struct sockaddr_in client, target;
  int have_client;
  unsigned delay_ms;
  udp_proxy_drop_fn drop;
  void *drop_ctx;
  unsigned seen[2], dropped[2];
  udp_proxy_held q[256];
  size_t qn;
} udp_proxy;

/* Binds the front on 127.0.0.1 (any port) toward 127.0.0.1:target_port.
 * Asserts (Criterion) on failure. */
void udp_proxy_start(udp_proxy *p, uint16_t target_port, unsigned delay_ms);
void udp_proxy_stop(udp_proxy *p);

/* Takes what has arrived (bounded), then forwards what is due. */
void udp_proxy_pump(udp_proxy *p);

/* Monotonic milliseconds, the proxy's clock. */
uint64_t udp_proxy_now_ms(void);

/* For predicates: 1 if the ENet datagram `d` carries a reliable packet on
 * ENet channel `channel` whose payload starts with the byte `first`. ENet
 * sends its header and commands in the clear, so this reads them. */
int udp_proxy_enet_has(const uint8_t *d, size_t n, uint8_t channel, uint8_t first);

#endif
