/*
 * ENet's platform functions (its unix.c), supplied by libtern
 * (docs/socket-layer.md, "What ENet gives us to work with").
 *
 * Debian's shared libenet calls these through its PLT, so the definitions
 * here, in a library loaded before it (libtern depends on libenet), serve
 * every ENet host in the process; a static build compiles ENet without its
 * unix.c and links these instead. A socket made while a dispatcher is
 * armed (tern__disp_arm) is virtual: an ENetSocket below -1 whose
 * ENetAddresses are handles of the dispatcher's address table. Every other
 * socket is a real IPv4 UDP or TCP socket that behaves as in ENet's unix.c,
 * so an application that uses ENet for something else keeps working.
 *
 * The functions are exported with default visibility: that is what makes
 * them take ENet's place.
 */
#include "io/enet_platform.h"

#include <enet/enet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "io/dispatch.h"
#include "os/sock.h"

#define ENET_PLATFORM __attribute__((visibility("default")))

int tern__enet_is_connect(const uint8_t *data, size_t len) {
  if (len < 2) return 0;
  uint16_t peer = (uint16_t)(data[0] << 8 | data[1]);
  if (peer & ENET_PROTOCOL_HEADER_FLAG_COMPRESSED) return 0;
  if ((peer & ~(ENET_PROTOCOL_HEADER_FLAG_MASK | ENET_PROTOCOL_HEADER_SESSION_MASK)) !=
      ENET_PROTOCOL_MAXIMUM_PEER_ID)
    return 0;
  size_t at = (peer & ENET_PROTOCOL_HEADER_FLAG_SENT_TIME) ? 4 : 2;
  if (len < at + sizeof(ENetProtocolConnect)) return 0;
  return (data[at] & ENET_PROTOCOL_COMMAND_MASK) == ENET_PROTOCOL_COMMAND_CONNECT;
}

/* --- library, time ------------------------------------------------------ */

ENET_PLATFORM int enet_initialize(void) { return 0; }
ENET_PLATFORM void enet_deinitialize(void) {}

ENET_PLATFORM enet_uint32 enet_host_random_seed(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (enet_uint32)ts.tv_sec ^ (enet_uint32)ts.tv_nsec;
}

/* ENet's clock, in milliseconds from a base enet_time_set() moves. It is
 * monotonic here (unix.c reads the wall clock, which can jump). */
static _Atomic enet_uint32 time_base;

static enet_uint32 mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (enet_uint32)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

ENET_PLATFORM enet_uint32 enet_time_get(void) { return mono_ms() - time_base; }
ENET_PLATFORM void enet_time_set(enet_uint32 t) { time_base = mono_ms() - t; }

/* --- addresses (IPv4, as ENet's own) ------------------------------------ */

ENET_PLATFORM int enet_address_set_host_ip(ENetAddress *address, const char *name) {
  return inet_pton(AF_INET, name, &address->host) == 1 ? 0 : -1;
}

ENET_PLATFORM int enet_address_set_host(ENetAddress *address, const char *name) {
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_INET;
  if (getaddrinfo(name, NULL, &hints, &res) == 0) {
    for (struct addrinfo *r = res; r; r = r->ai_next)
      if (r->ai_family == AF_INET && r->ai_addrlen >= sizeof(struct sockaddr_in)) {
        address->host = ((struct sockaddr_in *)r->ai_addr)->sin_addr.s_addr;
        freeaddrinfo(res);
        return 0;
      }
    freeaddrinfo(res);
  }
  return enet_address_set_host_ip(address, name);
}

ENET_PLATFORM int enet_address_get_host_ip(const ENetAddress *address, char *name, size_t cap) {
  return inet_ntop(AF_INET, &address->host, name, (socklen_t)cap) ? 0 : -1;
}

ENET_PLATFORM int enet_address_get_host(const ENetAddress *address, char *name, size_t cap) {
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = address->host};
  int rc = getnameinfo((struct sockaddr *)&sin, sizeof(sin), name, (socklen_t)cap, NULL, 0, NI_NAMEREQD);
  if (rc == 0) return memchr(name, 0, cap) ? 0 : -1;
  if (rc != EAI_NONAME) return -1;
  return enet_address_get_host_ip(address, name, cap);
}

static void to_sin(const ENetAddress *a, struct sockaddr_in *s) {
  memset(s, 0, sizeof(*s));
  s->sin_family = AF_INET;
  s->sin_port = htons(a->port);
  s->sin_addr.s_addr = a->host;
}

static void from_sin(const struct sockaddr_in *s, ENetAddress *a) {
  a->host = s->sin_addr.s_addr;
  a->port = ntohs(s->sin_port);
}

/* --- sockets ------------------------------------------------------------ */

ENET_PLATFORM ENetSocket enet_socket_create(ENetSocketType type) {
  if (type == ENET_SOCKET_TYPE_DATAGRAM) {
    int v = tern__vsock_open();
    if (v != 0) return v; /* a virtual socket, or -1 (ENET_SOCKET_NULL) */
  }
  return socket(PF_INET, type == ENET_SOCKET_TYPE_DATAGRAM ? SOCK_DGRAM : SOCK_STREAM, 0);
}

ENET_PLATFORM int enet_socket_bind(ENetSocket s, const ENetAddress *address) {
  if (tern__vsock_is(s)) return 0; /* the dispatcher's socket is bound already */
  struct sockaddr_in sin;
  ENetAddress any = {.host = ENET_HOST_ANY, .port = 0};
  to_sin(address ? address : &any, &sin);
  return bind(s, (struct sockaddr *)&sin, sizeof(sin));
}

ENET_PLATFORM int enet_socket_get_address(ENetSocket s, ENetAddress *address) {
  if (tern__vsock_is(s)) {
    address->host = ENET_HOST_ANY;
    address->port = tern__vsock_port(s);
    return 0;
  }
  struct sockaddr_in sin;
  socklen_t len = sizeof(sin);
  if (getsockname(s, (struct sockaddr *)&sin, &len) == -1) return -1;
  from_sin(&sin, address);
  return 0;
}

ENET_PLATFORM int enet_socket_listen(ENetSocket s, int backlog) {
  if (tern__vsock_is(s)) return -1;
  return listen(s, backlog < 0 ? SOMAXCONN : backlog);
}

ENET_PLATFORM int enet_socket_set_option(ENetSocket s, ENetSocketOption option, int value) {
  if (tern__vsock_is(s)) return 0; /* the dispatcher sets its own socket's options */
  int r = -1;
  switch (option) {
    case ENET_SOCKOPT_NONBLOCK: {
      int fl = fcntl(s, F_GETFL);
      if (fl >= 0) r = fcntl(s, F_SETFL, value ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK));
      break;
    }
    case ENET_SOCKOPT_BROADCAST: r = setsockopt(s, SOL_SOCKET, SO_BROADCAST, &value, sizeof(int)); break;
    case ENET_SOCKOPT_REUSEADDR: r = setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &value, sizeof(int)); break;
    case ENET_SOCKOPT_RCVBUF: r = setsockopt(s, SOL_SOCKET, SO_RCVBUF, &value, sizeof(int)); break;
    case ENET_SOCKOPT_SNDBUF: r = setsockopt(s, SOL_SOCKET, SO_SNDBUF, &value, sizeof(int)); break;
    case ENET_SOCKOPT_RCVTIMEO:
    case ENET_SOCKOPT_SNDTIMEO: {
      struct timeval tv = {.tv_sec = value / 1000, .tv_usec = (value % 1000) * 1000};
      r = setsockopt(s, SOL_SOCKET, option == ENET_SOCKOPT_RCVTIMEO ? SO_RCVTIMEO : SO_SNDTIMEO, &tv,
                     sizeof(tv));
      break;
    }
    case ENET_SOCKOPT_NODELAY: r = setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &value, sizeof(int)); break;
    default: break;
  }
  return r == -1 ? -1 : 0;
}

ENET_PLATFORM int enet_socket_get_option(ENetSocket s, ENetSocketOption option, int *value) {
  if (tern__vsock_is(s)) return -1;
  socklen_t len = sizeof(int);
  int r = -1;
  if (option == ENET_SOCKOPT_ERROR) r = getsockopt(s, SOL_SOCKET, SO_ERROR, value, &len);
  return r == -1 ? -1 : 0;
}

ENET_PLATFORM int enet_socket_connect(ENetSocket s, const ENetAddress *address) {
  if (tern__vsock_is(s)) return -1;
  struct sockaddr_in sin;
  to_sin(address, &sin);
  int r = connect(s, (struct sockaddr *)&sin, sizeof(sin));
  return r == -1 && errno == EINPROGRESS ? 0 : r;
}

ENET_PLATFORM ENetSocket enet_socket_accept(ENetSocket s, ENetAddress *address) {
  if (tern__vsock_is(s)) return ENET_SOCKET_NULL;
  struct sockaddr_in sin;
  socklen_t len = sizeof(sin);
  int r = accept(s, address ? (struct sockaddr *)&sin : NULL, address ? &len : NULL);
  if (r == -1) return ENET_SOCKET_NULL;
  if (address) from_sin(&sin, address);
  return r;
}

ENET_PLATFORM int enet_socket_shutdown(ENetSocket s, ENetSocketShutdown how) {
  if (tern__vsock_is(s)) return -1;
  return shutdown(s, (int)how);
}

ENET_PLATFORM void enet_socket_destroy(ENetSocket s) {
  if (tern__vsock_is(s)) tern__vsock_close(s);
  else if (s != ENET_SOCKET_NULL) close(s);
}

ENET_PLATFORM int enet_socket_send(ENetSocket s, const ENetAddress *address, const ENetBuffer *buffers,
                                   size_t count) {
  /* ENetBuffer is laid out as struct iovec on Unix (ENet's unix.h relies on
   * it too), so the buffers are passed as they are. */
  _Static_assert(sizeof(ENetBuffer) == sizeof(struct iovec), "ENetBuffer is an iovec");
  if (tern__vsock_is(s)) {
    if (!address) return -1;
    return tern__vsock_send(s, address->host, address->port, (const struct iovec *)buffers, count);
  }
  struct sockaddr_in sin;
  struct msghdr m;
  memset(&m, 0, sizeof(m));
  if (address) {
    to_sin(address, &sin);
    m.msg_name = &sin;
    m.msg_namelen = sizeof(sin);
  }
  m.msg_iov = (struct iovec *)buffers;
  m.msg_iovlen = count;
  ssize_t r = sendmsg(s, &m, TERN__MSG_NOSIGNAL);
  if (r == -1) return errno == EWOULDBLOCK ? 0 : -1;
  return (int)r;
}

ENET_PLATFORM int enet_socket_receive(ENetSocket s, ENetAddress *address, ENetBuffer *buffers,
                                      size_t count) {
  if (tern__vsock_is(s)) {
    if (count < 1) return -1;
    uint32_t h = 0;
    uint16_t g = 0;
    int r = tern__vsock_recv(s, &h, &g, buffers[0].data, buffers[0].dataLength);
    if (r > 0 && address) {
      address->host = h;
      address->port = g;
    }
    return r;
  }
  struct sockaddr_in sin;
  struct msghdr m;
  memset(&m, 0, sizeof(m));
  if (address) {
    m.msg_name = &sin;
    m.msg_namelen = sizeof(sin);
  }
  m.msg_iov = (struct iovec *)buffers;
  m.msg_iovlen = count;
  ssize_t r = recvmsg(s, &m, TERN__MSG_NOSIGNAL);
  if (r == -1) return errno == EWOULDBLOCK ? 0 : -1;
  if (m.msg_flags & MSG_TRUNC) return -1;
  if (address) from_sin(&sin, address);
  return (int)r;
}

ENET_PLATFORM int enet_socketset_select(ENetSocket maxSocket, ENetSocketSet *readSet,
                                        ENetSocketSet *writeSet, enet_uint32 timeout) {
  struct timeval tv = {.tv_sec = timeout / 1000, .tv_usec = (timeout % 1000) * 1000};
  return select(maxSocket + 1, readSet, writeSet, NULL, &tv);
}

ENET_PLATFORM int enet_socket_wait(ENetSocket s, enet_uint32 *condition, enet_uint32 timeout) {
  if (tern__vsock_is(s)) {
    int r = (*condition & ENET_SOCKET_WAIT_RECEIVE) ? tern__vsock_wait(s, timeout) : 0;
    if (r == -2) {
      if (!(*condition & ENET_SOCKET_WAIT_INTERRUPT)) return -1;
      *condition = ENET_SOCKET_WAIT_INTERRUPT;
      return 0;
    }
    if (r < 0) return -1;
    *condition = r ? ENET_SOCKET_WAIT_RECEIVE : ENET_SOCKET_WAIT_NONE;
    return 0;
  }
  struct pollfd p = {.fd = s, .events = 0};
  if (*condition & ENET_SOCKET_WAIT_SEND) p.events |= POLLOUT;
  if (*condition & ENET_SOCKET_WAIT_RECEIVE) p.events |= POLLIN;
  int r = poll(&p, 1, (int)timeout);
  if (r < 0) {
    if (errno == EINTR && (*condition & ENET_SOCKET_WAIT_INTERRUPT)) {
      *condition = ENET_SOCKET_WAIT_INTERRUPT;
      return 0;
    }
    return -1;
  }
  *condition = ENET_SOCKET_WAIT_NONE;
  if (r == 0) return 0;
  if (p.revents & POLLOUT) *condition |= ENET_SOCKET_WAIT_SEND;
  if (p.revents & POLLIN) *condition |= ENET_SOCKET_WAIT_RECEIVE;
  return 0;
}
