/* The TCP connections of a dispatcher (streams.h). */
#include "io/streams.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io/tcpframe.h"
#include "os/poller.h"
#include "os/sock.h"
#include "tern/tern.h"

enum { ACCEPT_BATCH = 64, MAX_SLOTS = 65535 };

typedef struct conn {
  int fd;
  uint32_t id;
  uint8_t connecting;   /* connect() in progress (client) */
  uint8_t want_out;     /* watched for writing */
  uint8_t queued;       /* in the ready list */
  tern__addr remote;
  uint64_t opened_ms;
  tern__tcpf_tx tx;
  tern__tcpf_rx rx;
} conn;

struct tern__streams {
  tern__poller *poller;  /* the dispatcher's */
  int lfd;
  int lpaused;           /* the listener is not watched (no descriptors) */
  conn **slot;           /* by slot index */
  uint16_t *gen;         /* by slot index: generation of the next connection */
  size_t cap, max;       /* slots allocated, allowed */
  uint32_t *ready;       /* ids with a whole datagram buffered (a ring) */
  size_t rhead, rlen;
  tern__streams_stats st;
};

static uint32_t id_of(size_t slot, uint16_t gen) { return (uint32_t)gen << 16 | (uint32_t)slot; }

static conn *get(const tern__streams *s, uint32_t id) {
  size_t i = id & 0xFFFF;
  if (i >= s->cap) return NULL;
  conn *c = s->slot[i];
  return c && c->id == id ? c : NULL;
}

int tern__streams_new(tern__streams **out, tern__poller *poller, size_t max) {
  *out = NULL;
  tern__streams *s = calloc(1, sizeof(*s));
  if (!s) return TERN_ENOMEM;
  s->poller = poller;
  s->lfd = -1;
  s->max = max < MAX_SLOTS ? max : MAX_SLOTS;
  *out = s;
  return 0;
}

/* Stops watching the listener or watches it again. */
static void listener_watch(tern__streams *s, int on) {
  if (s->lfd < 0 || s->lpaused == !on) return;
  if (tern__poller_mod(s->poller, s->lfd, on ? TERN__POLL_IN : 0, TERN__STREAM_TAG_LISTEN) == 0)
    s->lpaused = !on;
}

static void conn_free(tern__streams *s, conn *c) {
  (void)tern__poller_del(s->poller, c->fd);
  close(c->fd);
  tern__tcpf_tx_free(&c->tx);
  size_t i = c->id & 0xFFFF;
  s->slot[i] = NULL;
  s->gen[i]++;
  s->st.closed++;
  s->st.open--;
  free(c);
  listener_watch(s, 1); /* a descriptor is free again */
}

void tern__streams_free(tern__streams *s) {
  if (!s) return;
  for (size_t i = 0; i < s->cap; i++)
    if (s->slot[i]) conn_free(s, s->slot[i]);
  if (s->lfd >= 0) {
    (void)tern__poller_del(s->poller, s->lfd);
    close(s->lfd);
  }
  free(s->slot);
  free(s->gen);
  free(s->ready);
  free(s);
}

/* A free slot, growing the table (and the ready ring with it); -1 if full. */
static long free_slot(tern__streams *s) {
  for (size_t i = 0; i < s->cap; i++)
    if (!s->slot[i]) return (long)i;
  if (s->cap >= s->max) return -1;
  size_t cap = s->cap ? s->cap * 2 : 16;
  if (cap > s->max) cap = s->max;
  conn **sl = realloc(s->slot, cap * sizeof(*sl));
  if (!sl) return -1;
  s->slot = sl;
  uint16_t *g = realloc(s->gen, cap * sizeof(*g));
  if (!g) return -1;
  s->gen = g;
  uint32_t *r = malloc(cap * sizeof(*r));
  if (!r) return -1;
  for (size_t k = 0; k < s->rlen; k++) r[k] = s->ready[(s->rhead + k) % s->cap];
  free(s->ready);
  s->ready = r;
  s->rhead = 0;
  for (size_t i = s->cap; i < cap; i++) {
    s->slot[i] = NULL;
    s->gen[i] = 1;
  }
  long first = (long)s->cap;
  s->cap = cap;
  return first;
}

static conn *conn_add(tern__streams *s, int fd, const tern__addr *remote, int connecting,
                      uint64_t now_ms) {
  long i = free_slot(s);
  conn *c = i < 0 ? NULL : calloc(1, sizeof(*c));
  if (!c) return NULL;
  c->fd = fd;
  c->id = id_of((size_t)i, s->gen[i]);
  c->connecting = (uint8_t)connecting;
  c->want_out = (uint8_t)connecting;
  c->remote = *remote;
  c->opened_ms = now_ms;
  tern__tcpf_tx_init(&c->tx, TERN__STREAM_TX_MAX);
  if (tern__poller_add(s->poller, fd, TERN__POLL_IN | (connecting ? TERN__POLL_OUT : 0), c->id) != 0) {
    free(c);
    return NULL;
  }
  s->slot[i] = c;
  s->st.open++;
  return c;
}

static void tune_fd(int fd) {
  int one = 1;
  /* Datagrams are small and each one should leave at once. */
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int tern__streams_listen(tern__streams *s, const tern__addr *bind_to, uint16_t *port) {
  if (s->lfd >= 0) return TERN_EEXIST;
  int v4 = tern__addr_is_v4(bind_to);
  int family = v4 ? AF_INET : AF_INET6;
  int fd = tern__os_socket(family, SOCK_STREAM);
  if (fd < 0) return TERN_EADDR;
  static const uint8_t zero[16];
  int one = 1, v6only = memcmp(bind_to->ip, zero, 16) != 0;
  (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (!v4) (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only));
  struct sockaddr_storage ss;
  size_t sl = tern__addr_to_sockaddr(bind_to, family, &ss);
  if (sl == 0 || bind(fd, (struct sockaddr *)&ss, (socklen_t)sl) != 0 || listen(fd, 1024) != 0 ||
      tern__poller_add(s->poller, fd, TERN__POLL_IN, TERN__STREAM_TAG_LISTEN) != 0) {
    int err = errno;
    close(fd);
    errno = err;
    return TERN_EADDR;
  }
  socklen_t l = sizeof(ss);
  tern__addr me;
  *port = 0;
  if (getsockname(fd, (struct sockaddr *)&ss, &l) == 0 &&
      tern__addr_from_sockaddr(&me, (struct sockaddr *)&ss, l) == 0)
    *port = me.port;
  s->lfd = fd;
  return 0;
}

int tern__streams_connect(tern__streams *s, const tern__addr *to, uint32_t *id) {
  int family = tern__addr_is_v4(to) ? AF_INET : AF_INET6;
  struct sockaddr_storage ss;
  size_t sl = tern__addr_to_sockaddr(to, family, &ss);
  int fd = tern__os_socket(family, SOCK_STREAM);
  if (fd < 0) return TERN_EIO;
  tune_fd(fd);
  int r;
  do r = connect(fd, (struct sockaddr *)&ss, (socklen_t)sl);
  while (r != 0 && errno == EINTR);
  if (r != 0 && errno != EINPROGRESS) {
    int err = errno;
    close(fd);
    errno = err;
    return TERN_EIO;
  }
  /* Time is only used to sweep a relay's connections. */
  conn *c = conn_add(s, fd, to, r != 0, 0);
  if (!c) {
    close(fd);
    return TERN_ERESOURCE;
  }
  s->st.opened++;
  *id = c->id;
  return 0;
}

static void set_out(tern__streams *s, conn *c, int want) {
  if (c->want_out == want) return;
  if (tern__poller_mod(s->poller, c->fd, TERN__POLL_IN | (want ? TERN__POLL_OUT : 0), c->id) == 0)
    c->want_out = (uint8_t)want;
}

/* Writes what is queued. Returns 0, or -1 if the connection broke (freed). */
static int flush(tern__streams *s, conn *c) {
  if (c->connecting) return 0;
  for (;;) {
    size_t len;
    const uint8_t *p = tern__tcpf_tx_pending(&c->tx, &len);
    if (!len) break;
    ssize_t w = send(c->fd, p, len, TERN__MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      set_out(s, c, 1);
      return 0;
    }
    if (w <= 0) {
      conn_free(s, c);
      return -1;
    }
    tern__tcpf_tx_consumed(&c->tx, (size_t)w);
  }
  set_out(s, c, 0);
  return 0;
}

static void mark_ready(tern__streams *s, conn *c) {
  if (c->queued || !tern__tcpf_rx_ready(&c->rx)) return;
  s->ready[(s->rhead + s->rlen) % s->cap] = c->id;
  s->rlen++;
  c->queued = 1;
}

/* Reads what the socket has, up to the buffer's room. */
static void fill(tern__streams *s, conn *c) {
  for (int k = 0; k < 4; k++) {
    size_t room;
    uint8_t *p = tern__tcpf_rx_space(&c->rx, &room);
    if (room == 0) break;
    ssize_t n = recv(c->fd, p, room, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) {
      /* The other end closed, or the connection broke: whatever whole
       * datagrams arrived before are lost with it, as on a dead path. */
      conn_free(s, c);
      return;
    }
    tern__tcpf_rx_filled(&c->rx, (size_t)n);
    if ((size_t)n < room) break;
  }
  mark_ready(s, c);
}

static void accept_some(tern__streams *s, uint64_t now_ms) {
  for (int k = 0; k < ACCEPT_BATCH; k++) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int fd = tern__os_accept(s->lfd, (struct sockaddr *)&ss, &sl);
    if (fd < 0) {
      /* Out of descriptors or memory: the listener would stay readable and
       * spin the loop. It waits unwatched until a connection
       * closes or the next sweep. (EAGAIN, an aborted connection: next time.) */
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        s->st.refused++;
        listener_watch(s, 0);
      }
      return;
    }
    tern__addr from;
    if (tern__addr_from_sockaddr(&from, (struct sockaddr *)&ss, sl) != 0) {
      close(fd);
      continue;
    }
    tune_fd(fd);
    if (!conn_add(s, fd, &from, 0, now_ms)) {
      s->st.refused++;
      close(fd);
      continue;
    }
    s->st.accepted++;
  }
}

void tern__streams_event(tern__streams *s, uint64_t tag, unsigned events, uint64_t now_ms) {
  if (tag == TERN__STREAM_TAG_LISTEN) {
    if (s->lfd >= 0) accept_some(s, now_ms);
    return;
  }
  conn *c = tag < TERN__STREAM_TAG_LISTEN ? get(s, (uint32_t)tag) : NULL;
  if (!c) return;
  if (c->connecting && (events & TERN__POLL_OUT)) {
    int err = 0;
    socklen_t el = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
      conn_free(s, c);
      return;
    }
    c->connecting = 0;
  }
  if ((events & TERN__POLL_OUT) && flush(s, c) != 0) return;
  if (events & TERN__POLL_IN) fill(s, c);
}

size_t tern__streams_next(tern__streams *s, uint32_t *id, uint8_t *buf, size_t cap) {
  while (s->rlen) {
    uint32_t cid = s->ready[s->rhead];
    conn *c = get(s, cid);
    const uint8_t *d;
    size_t n = 0;
    int r = c ? tern__tcpf_rx_next(&c->rx, &d, &n) : 0;
    if (r == 1) {
      if (n > cap) n = cap;
      memcpy(buf, d, n);
      *id = cid;
      /* Round robin: a connection with more goes to the back. */
      s->rhead = (s->rhead + 1) % s->cap;
      s->rlen--;
      c->queued = 0;
      mark_ready(s, c);
      return n;
    }
    s->rhead = (s->rhead + 1) % s->cap;
    s->rlen--;
    if (!c) continue;
    c->queued = 0;
    if (r < 0) {
      s->st.bad_framing++;
      conn_free(s, c);
    } else {
      /* Ran dry: read what the socket may still hold behind it. */
      fill(s, c);
    }
  }
  return 0;
}

int tern__streams_ready(const tern__streams *s) { return s->rlen != 0; }

int tern__streams_send(tern__streams *s, uint32_t id, const struct iovec *iov, size_t n) {
  conn *c = get(s, id);
  if (!c) return TERN_ENOENT;
  int rc = tern__tcpf_tx_put(&c->tx, iov, n);
  if (rc) {
    s->st.tx_dropped++;
    return TERN_EAGAIN;
  }
  /* Behind bytes already waiting for the socket: the writable event
   * flushes them in order. */
  if (!c->want_out && flush(s, c) != 0) return TERN_ENOENT;
  return 0;
}

int tern__streams_alive(const tern__streams *s, uint32_t id) { return get(s, id) != NULL; }

int tern__streams_remote(const tern__streams *s, uint32_t id, tern__addr *out) {
  const conn *c = get(s, id);
  if (!c) return TERN_ENOENT;
  *out = c->remote;
  return 0;
}

void tern__streams_close(tern__streams *s, uint32_t id) {
  conn *c = get(s, id);
  if (!c) return;
  /* Written before the close when the socket takes it (a goodbye). */
  (void)flush(s, c);
  if ((c = get(s, id)) != NULL) conn_free(s, c);
}

void tern__streams_sweep(tern__streams *s, uint64_t now_ms, uint64_t max_age_ms,
                         int (*keep)(void *ctx, uint32_t id), void *ctx) {
  listener_watch(s, 1);
  for (size_t i = 0; i < s->cap; i++) {
    conn *c = s->slot[i];
    if (c && now_ms >= c->opened_ms + max_age_ms && !keep(ctx, c->id)) conn_free(s, c);
  }
}

int tern__streams_any(const tern__streams *s) { return s->lfd >= 0 || s->st.open > 0; }

void tern__streams_stats_get(const tern__streams *s, tern__streams_stats *st) { *st = s->st; }
