/* IPv4 literals through a NAT64 (nat64.h). */
#include "io/nat64.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "os/sock.h"

int tern__nat64_prefix_of(const tern__addr *aaaa, uint8_t prefix[12]) {
  static const uint8_t wka[2][4] = {{192, 0, 0, 170}, {192, 0, 0, 171}};
  if (tern__addr_is_v4(aaaa)) return 0;
  for (int i = 0; i < 2; i++)
    if (memcmp(aaaa->ip + 12, wka[i], 4) == 0) {
      memcpy(prefix, aaaa->ip, 12);
      return 1;
    }
  return 0;
}

void tern__nat64_apply(const uint8_t prefix[12], const tern__addr *v4, tern__addr *out) {
  uint8_t ip4[4];
  memcpy(ip4, v4->ip + 12, 4); /* out may be v4 */
  uint16_t port = v4->port;
  memcpy(out->ip, prefix, 12);
  memcpy(out->ip + 12, ip4, 4);
  out->port = port;
}

/* 1 if the kernel has a route for an IPv4 datagram to `a`. */
static int v4_routable(const tern__addr *a) {
  int fd = tern__os_socket(AF_INET, SOCK_DGRAM);
  if (fd < 0) return 0;
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(a->port ? a->port : 9),
                            .sin_addr.s_addr = htonl(tern__addr_v4(a))};
  int ok = connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0; /* sends nothing */
  close(fd);
  return ok;
}

int tern__nat64_needed(const tern__addr *a) { return tern__addr_is_v4(a) && !v4_routable(a); }

int tern__nat64_synthesize(tern__addr *a) {
  if (!tern__addr_is_v4(a) || v4_routable(a)) return 0;
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_INET6;
  hints.ai_socktype = SOCK_DGRAM;
  if (getaddrinfo("ipv4only.arpa", NULL, &hints, &res) != 0) return 0;
  int done = 0;
  for (struct addrinfo *r = res; r && !done; r = r->ai_next) {
    tern__addr x;
    uint8_t prefix[12];
    if (tern__addr_from_sockaddr(&x, r->ai_addr, r->ai_addrlen) == 0 && tern__nat64_prefix_of(&x, prefix)) {
      tern__nat64_apply(prefix, a, a);
      done = 1;
    }
  }
  freeaddrinfo(res);
  return done;
}
