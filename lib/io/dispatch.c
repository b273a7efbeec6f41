/* struct in6_pktinfo and IPV6_RECVPKTINFO are GNU extensions of glibc (RFC 3542). */
#define _GNU_SOURCE
/* The dispatcher and its virtual sockets (dispatch.h). */
#include "io/dispatch.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/filter.h>
#endif

#include "io/addrtab.h"
#include "io/clock.h"
#include "io/cookie.h"
#include "io/enet_platform.h"
#include "io/streams.h"
#include "os/poller.h"
#include "os/sock.h"
#include "tern/tern.h"
#include "wire/full.h"
#include "wire/path.h"

enum {
  MAX_VSOCKS = 65536,       /* virtual sockets in the process (one per client,
                               one per relay shard) */
  MAX_PER_DISP = 72,        /* virtual sockets (ENet hosts) per dispatcher: a relay
                               with TERN_RELAY_MAX_PEERS slots needs 65 */
  QUEUE_CAP = 1024,         /* datagrams waiting for another host */
  DGRAM_MAX = 4096,         /* ENet's largest datagram (its maximum MTU) */
  RECV_BATCH = 64,          /* datagrams read per recvmmsg (a relay's) */
  RECV_BATCH_CLIENT = 8,    /* a client's */
  RECV_WORK = 64,           /* datagrams handled per tern__vsock_recv() call at most... */
  RECV_WORK_COOKIE = 8,     /* ...where one answered with a COOKIE counts 1/8 */
  SEND_BATCH = 64,          /* COOKIEs sent per sendmmsg at most */
  UNBOUND_MAX_MS = 60000,   /* a handle no connection held is freed after */
  SOCK_BUF = 4 << 20,       /* socket buffers asked for (the kernel caps them) */
  FLOOD_BUF = 256 << 10,    /* the receive buffer while a flood is answered with cookies */
  FLOOD_COOKIES = 5000,     /* COOKIEs in a second that make it a flood */
  FLOOD_OVER_MS = 10000,    /* the buffer grows back after this long without one */
  TCP_MAX_RELAY = 65535,    /* TCP connections a relay accepts at most */
  TCP_MAX_CLIENT = 16,      /* TCP connections a client opens at most */
  TCP_SWEEP_MS = 30000,     /* a connection no handle uses is closed after */
  TCP_EVERY = 32,           /* TCP is looked at after this many UDP datagrams at most */
};

/* Which of our addresses a datagram came to, and sending from it
 * (RFC 3542's IPV6_PKTINFO, Linux's and macOS's IP_PKTINFO): a relay bound
 * to a wildcard answers from the address it was asked on. Where the
 * system lacks them (FreeBSD has IP_RECVDSTADDR instead) the kernel picks
 * the source address, which is right on a host with one address per
 * family. */
#if defined(IP_PKTINFO) && defined(IPV6_PKTINFO) && defined(IPV6_RECVPKTINFO)
#define PKTINFO 1
#else
#define PKTINFO 0
#endif

/* Batched reads and COOKIE sends (recvmmsg, sendmmsg) and the kernel's
 * choice between a relay's two sockets (SO_REUSEPORT with a classic BPF
 * program): Linux. Elsewhere one datagram per call and one socket. */
#if defined(__linux__) && defined(SO_ATTACH_REUSEPORT_CBPF)
#define BATCH_IO 1
typedef struct mmsghdr mmsg;
#else
#define BATCH_IO 0
typedef struct {
  struct msghdr msg_hdr;
  unsigned msg_len;
} mmsg;
#endif

/* Room for the IP_PKTINFO/IPV6_PKTINFO a datagram carries. */
typedef union {
#if PKTINFO
  char buf[CMSG_SPACE(sizeof(struct in6_pktinfo)) + CMSG_SPACE(sizeof(struct in_pktinfo))];
#else
  char buf[1]; /* d->locals is never set without PKTINFO */
#endif
  struct cmsghdr align;
} ctlbuf;

/* Datagrams read from one UDP socket in one call, handed out one by one.
 * The arrays, `cap` long each, follow the struct in its allocation
 * (rbatch_new): a client's batch is an eighth of a relay's, and a process
 * may run hundreds of clients. */
typedef struct rbatch {
  unsigned cap, n, at; /* room, read, handed out */
  unsigned dirty;      /* headers to set before the next read */
  struct sockaddr_storage *ss;
  mmsg *m;
  struct iovec *iov;
  ctlbuf *ctl;
  uint8_t (*data)[DGRAM_MAX];
} rbatch;

_Static_assert(sizeof(struct sockaddr_storage) % _Alignof(mmsg) == 0 &&
                   sizeof(mmsg) % _Alignof(struct iovec) == 0 &&
                   sizeof(struct iovec) % _Alignof(ctlbuf) == 0,
               "each array of an rbatch starts aligned");

static rbatch *rbatch_new(unsigned cap) {
  size_t head = (sizeof(rbatch) + 15) & ~(size_t)15;
  size_t each = sizeof(struct sockaddr_storage) + sizeof(mmsg) + sizeof(struct iovec) + sizeof(ctlbuf);
  uint8_t *p = calloc(1, head + cap * (each + DGRAM_MAX));
  if (!p) return NULL;
  rbatch *b = (rbatch *)p;
  p += head;
  b->ss = (struct sockaddr_storage *)p;
  p += cap * sizeof(*b->ss);
  b->m = (mmsg *)p;
  p += cap * sizeof(*b->m);
  b->iov = (struct iovec *)p;
  p += cap * sizeof(*b->iov);
  b->ctl = (ctlbuf *)p;
  p += cap * sizeof(*b->ctl);
  b->data = (uint8_t(*)[DGRAM_MAX])p;
  b->cap = b->dirty = cap;
  return b;
}

/* COOKIEs waiting to go in one sendmmsg (a relay's). */
typedef struct obatch {
  unsigned n;
  mmsg m[SEND_BATCH];
  struct iovec iov[SEND_BATCH];
  struct sockaddr_storage ss[SEND_BATCH];
  ctlbuf ctl[SEND_BATCH];
  uint8_t data[SEND_BATCH][TERN__COOKIE_REPLY_BYTES];
} obatch;

/* Poller tags of the real UDP sockets (a TCP connection's tag is its id). */
#define TAG_UDP ((uint64_t)1 << 33)
#define TAG_CAND ((uint64_t)1 << 34)

typedef struct qitem {
  uint32_t handle;
  uint16_t gen;
  uint16_t len;
  uint8_t data[];
} qitem;

typedef struct vsock {
  tern__disp *d;
  int id;              /* the ENetSocket value */
  uint32_t owner;      /* index in d->vs */
  size_t cap, load;    /* connections allowed, handles held */
  qitem **q;           /* ring of datagrams routed here by another receive;
                          made on the first (a client's host never needs it) */
  size_t qhead, qlen;
} vsock;

/* Client: a connect's CONNECT and the relay's cookie for it (spec/wire.md
 * §13). A client connects to few addresses at once (8 peer slots). */
enum {
  COOKIE_SLOTS = 8,
  CONNECT_KEEP = 128,          /* an ENet CONNECT is 52 bytes */
  COOKIE_KEEP_MS = 60000,      /* a cookie is used this long (the relay takes it >= 120 s) */
  CONNECT_PENDING_MS = 30000,  /* a COOKIE is taken this long after the CONNECT */
  CONNECT_COPIES = 2,          /* a CONNECT, plain or wrapped, goes this many times, then
                                  once more at each of connect_spread_ms while unanswered */
  COOKIE_AGAIN_MS = 50,        /* the same cookie again within this is not resent */
};

typedef struct cookie_slot {
  uint32_t handle;
  uint16_t gen;
  uint16_t connect_len;
  uint8_t connect[CONNECT_KEEP]; /* the last CONNECT sent to the handle */
  uint64_t connect_ms;           /* when; 0: slot unused */
  uint64_t sent_ms;              /* when it was last sent (ENet's send, or wrapped) */
  unsigned spread;               /* copies sent since, one per connect_spread_ms */
  int answered;                  /* an ENet datagram came from the handle since */
  uint8_t cookie[TERN__COOKIE_BYTES];
  uint64_t cookie_ms;            /* when the cookie came; 0: none */
  uint64_t wrapped_ms;           /* when it was last sent wrapped */
} cookie_slot;

enum {
  HINT_SLOTS = 1024,  /* sources remembered for the HINT rate limit */
  LOCAL_SLOTS = 4096, /* sources remembered with the address they wrote to */
};

/* A relay bound to a wildcard on a host with several addresses must answer
 * from the address a client wrote to: a client ignores datagrams from any
 * other (the kernel would pick the source by route). */
typedef struct local_slot {
  tern__addr remote, local;
} local_slot;

struct tern__disp {
  int fd;                       /* the UDP socket; a relay's gets only ENet CONNECTs
                                   when pri_fd is open */
  int pri_fd;                   /* relay: the same address's second socket, which the
                                   kernel gives everything else (proven sources, wrapped
                                   CONNECTs), read first; or -1 */
  rbatch *rb;                   /* the last batch read from fd or pri_fd */
  obatch *ob;                   /* relay: COOKIEs to send */
  int cand_fd;                  /* client: a socket being tried, or -1 */
  tern__poller *poller;         /* every real socket: UDP, candidate, TCP */
  tern__streams *tcp;           /* TCP: a relay's listener and connections, a client's own */
  unsigned udp_run;             /* UDP datagrams read since TCP was last looked at */
  tern__mig *mig;               /* relay: sessions that may move */
  tern__disp_move_fn move_fn;
  void *move_ctx;
  uint64_t hint_ms[HINT_SLOTS]; /* relay: when a source (by hash) was last hinted */
  tern__addr last_local;        /* our address the datagram being handled came to */
  local_slot *locals;           /* relay on a wildcard: by hash of the source; NULL
                                   when bound to one address (nothing to learn) */
  int family;
  uint16_t port;
  int accept_new;
  tern__atab *tab;
  vsock *vs[MAX_PER_DISP];
  tern__disp_raw_fn raw_fn;
  void *raw_ctx;
  uint32_t full_retry_ms;
  int cookie_mode;              /* relay: TERN__COOKIES_* */
  tern__cookie_jar jar;         /* relay: the cookie secrets */
  size_t pending;               /* relay: handles no connection holds yet */
  uint64_t flood_win_ms;        /* relay: the second COOKIEs are being counted in */
  uint32_t flood_count;         /* relay: COOKIEs sent in it */
  uint64_t flood_last_ms;       /* relay: when the last flood second ended; 0: none */
  cookie_slot *cks;             /* client: COOKIE_SLOTS */
  tern__disp_stats st;
  uint8_t buf[DGRAM_MAX];
};

/* --- the registry of virtual sockets: id = -2 - slot ------------------- */

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(vsock *) reg[MAX_VSOCKS];
static int reg_hint; /* where the search for a free slot starts (under reg_mu) */
static _Thread_local tern__disp *armed;

static vsock *vs_of(int sock) {
  int slot = -2 - sock;
  if (slot < 0 || slot >= MAX_VSOCKS) return NULL;
  return atomic_load_explicit(&reg[slot], memory_order_acquire);
}

int tern__vsock_is(int sock) { return vs_of(sock) != NULL; }

tern__disp *tern__vsock_disp(int sock) {
  vsock *v = vs_of(sock);
  return v ? v->d : NULL;
}

void tern__disp_arm(tern__disp *d) { armed = d; }
void tern__disp_disarm(void) { armed = NULL; }

int tern__vsock_open(void) {
  tern__disp *d = armed;
  if (!d) return 0;
  armed = NULL;
  uint32_t owner = 0;
  while (owner < MAX_PER_DISP && d->vs[owner]) owner++;
  if (owner == MAX_PER_DISP) return -1;
  vsock *v = calloc(1, sizeof(*v));
  if (!v) return -1;
  v->d = d;
  v->owner = owner;
  v->cap = 1;
  pthread_mutex_lock(&reg_mu);
  int slot = -1;
  for (int k = 0; k < MAX_VSOCKS && slot < 0; k++) {
    int i = (reg_hint + k) % MAX_VSOCKS;
    if (!atomic_load(&reg[i])) slot = i;
  }
  if (slot < 0) {
    pthread_mutex_unlock(&reg_mu);
    free(v);
    return -1;
  }
  reg_hint = (slot + 1) % MAX_VSOCKS;
  v->id = -2 - slot;
  atomic_store_explicit(&reg[slot], v, memory_order_release);
  pthread_mutex_unlock(&reg_mu);
  d->vs[owner] = v;
  return v->id;
}

void tern__vsock_close(int sock) {
  vsock *v = vs_of(sock);
  if (!v) return;
  pthread_mutex_lock(&reg_mu);
  atomic_store(&reg[-2 - sock], NULL);
  pthread_mutex_unlock(&reg_mu);
  v->d->vs[v->owner] = NULL;
  while (v->qlen) {
    free(v->q[v->qhead]);
    v->qhead = (v->qhead + 1) % QUEUE_CAP;
    v->qlen--;
  }
  free(v->q);
  free(v);
}

void tern__disp_set_capacity(int sock, size_t max) {
  vsock *v = vs_of(sock);
  if (v) v->cap = max;
}

uint16_t tern__vsock_port(int sock) {
  vsock *v = vs_of(sock);
  return v ? v->d->port : 0;
}

/* --- the real socket ----------------------------------------------------- */

static int open_socket(int family, const tern__addr *bind_to, int v6only, int reuseport) {
  int fd = tern__os_socket(family, SOCK_DGRAM);
  if (fd < 0) return -1;
  int one = 1, v = SOCK_BUF;
  if (family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) != 0)
    goto fail;
#if BATCH_IO
  if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) goto fail;
#else
  (void)reuseport;
#endif
  /* Larger buffers absorb bursts; the kernel caps them at rmem_max. */
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
  (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
  /* Which of our addresses a datagram came to (used only when bound to a
   * wildcard; harmless otherwise). IP_PKTINFO covers IPv4, also IPv4-mapped
   * on a dual-stack socket. */
#if PKTINFO
  (void)setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one));
  if (family == AF_INET6) (void)setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one));
#else
  (void)one;
#endif
  struct sockaddr_storage ss;
  size_t len = tern__addr_to_sockaddr(bind_to, family, &ss);
  if (len == 0 || bind(fd, (struct sockaddr *)&ss, (socklen_t)len) != 0) goto fail;
  return fd;
fail:;
  int e = errno;
  close(fd);
  errno = e;
  return -1;
}

/* The port a socket is bound to (0 if it cannot be read). */
static uint16_t bound_port(int fd) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof(ss);
  tern__addr me;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
      tern__addr_from_sockaddr(&me, (struct sockaddr *)&ss, sl) == 0)
    return me.port;
  return 0;
}

#if BATCH_IO
/* The kernel's choice between a relay's two sockets (issue 13: a spoofed
 * CONNECT flood). A classic BPF program run on each datagram's UDP payload
 * returns the index in the SO_REUSEPORT group: 0 (the first socket, d->fd)
 * for what may be an ENet CONNECT (peer id 0xFFF, not compressed, and not
 * FF FF, which starts the COOKIE, probe and path datagrams), 1 (pri_fd) for
 * everything else. A flood of CONNECTs then fills d->fd's buffer only, and
 * a proven source's datagrams (its wrapped CONNECT, its HELLO, its
 * session) wait in a buffer of their own, read first. A datagram too short
 * to load ends the program with 0: d->fd. */
static int steer_attach(int fd) {
  struct sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 0),            /* A = first 2 bytes */
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0xFFFF, 2, 0), /* FF FF: pri */
      BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x4FFF),       /* compressed flag, peer id */
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x0FFF, 1, 0), /* a CONNECT: fd */
      BPF_STMT(BPF_RET | BPF_K, 1),
      BPF_STMT(BPF_RET | BPF_K, 0),
  };
  struct sock_fprog prog = {.len = sizeof(code) / sizeof(code[0]), .filter = code};
  return setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog));
}
#endif

/* A relay's socket: *fd, and where the system has it (BATCH_IO) a second
 * socket *pri on the same address and port, joined with it in an
 * SO_REUSEPORT group that steer_attach() divides; *pri is -1 without it.
 * The address is first bound by a plain socket, so that a port in use
 * (by anyone, another relay's group too) fails as it would without the
 * group, and port 0 names a port nobody holds. Returns 0 or -1 (errno). */
static int open_relay(int family, const tern__addr *bind_to, int v6only, int *fd, int *pri) {
  *fd = *pri = -1;
#if BATCH_IO
  for (int attempt = 0; attempt < 8; attempt++) {
    int probe = open_socket(family, bind_to, v6only, 0);
    if (probe < 0) return -1;
    tern__addr at = *bind_to;
    at.port = bound_port(probe);
    close(probe);
    *fd = open_socket(family, &at, v6only, 1);
    if (*fd < 0) {
      /* Someone took port 0's pick between the probe and the bind. */
      if (errno == EADDRINUSE && !bind_to->port) continue;
      return -1;
    }
    *pri = open_socket(family, &at, v6only, 1);
    if (*pri >= 0 && steer_attach(*fd) != 0) {
      close(*pri); /* without the program the kernel would split by hash */
      *pri = -1;
    }
    return 0;
  }
  errno = EADDRINUSE;
  return -1;
#else
  *fd = open_socket(family, bind_to, v6only, 0);
  return *fd < 0 ? -1 : 0;
#endif
}

static int is_any6(const tern__addr *a) {
  static const uint8_t zero[16];
  return memcmp(a->ip, zero, 16) == 0;
}

int tern__disp_new(tern__disp **out, const tern__addr *bind_to, int accept_new) {
  *out = NULL;
  tern__disp *d = calloc(1, sizeof(*d));
  if (!d) return TERN_ENOMEM;
  int rc = tern__atab_new(&d->tab, (size_t)1 << 20);
  if (rc) {
    free(d);
    return rc;
  }
  d->accept_new = accept_new;
  d->cand_fd = -1;
  d->pri_fd = -1;
  if (accept_new && (rc = tern__mig_new(&d->mig)) != 0) {
    tern__atab_free(d->tab);
    free(d);
    return rc;
  }
  if (bind_to) {
    d->family = tern__addr_is_v4(bind_to) ? AF_INET : AF_INET6;
    if (accept_new) (void)open_relay(d->family, bind_to, !is_any6(bind_to), &d->fd, &d->pri_fd);
    else d->fd = open_socket(d->family, bind_to, !is_any6(bind_to), 0);
    if (d->fd < 0 && is_any6(bind_to) && errno == EAFNOSUPPORT) {
      /* "::" on a system without IPv6: every IPv4 address instead. */
      tern__addr any4;
      tern__addr_set_v4(&any4, 0, bind_to->port);
      d->family = AF_INET;
      if (accept_new) (void)open_relay(AF_INET, &any4, 0, &d->fd, &d->pri_fd);
      else d->fd = open_socket(AF_INET, &any4, 0, 0);
    }
  } else {
    tern__addr any;
    memset(&any, 0, sizeof(any));
    d->family = AF_INET6;
    d->fd = open_socket(AF_INET6, &any, 0, 0);
    if (d->fd < 0 && (errno == EAFNOSUPPORT || errno == EADDRNOTAVAIL)) {
      tern__addr_set_v4(&any, 0, 0);
      d->family = AF_INET;
      d->fd = open_socket(AF_INET, &any, 0, 0);
    }
  }
  if (d->fd < 0) {
    int e = errno;
    tern__mig_free(d->mig);
    tern__atab_free(d->tab);
    free(d);
    errno = e;
    return bind_to ? TERN_EADDR : TERN_ERESOURCE;
  }
  d->port = bound_port(d->fd);
  unsigned batch = accept_new ? RECV_BATCH : RECV_BATCH_CLIENT;
  if (!(d->rb = rbatch_new(batch)) || (accept_new && !(d->ob = calloc(1, sizeof(*d->ob))))) {
    tern__disp_free(d);
    return TERN_ENOMEM;
  }
  if (tern__poller_new(&d->poller) != 0 || tern__poller_add(d->poller, d->fd, TERN__POLL_IN, TAG_UDP) != 0 ||
      (d->pri_fd >= 0 && tern__poller_add(d->poller, d->pri_fd, TERN__POLL_IN, TAG_UDP) != 0) ||
      tern__streams_new(&d->tcp, d->poller, accept_new ? TCP_MAX_RELAY : TCP_MAX_CLIENT) != 0) {
    tern__disp_free(d);
    return TERN_ERESOURCE;
  }
  if (accept_new) {
    uint8_t fresh[TERN__COOKIE_SECRET_BYTES];
    randombytes_buf(fresh, sizeof(fresh));
    tern__cookie_jar_init(&d->jar, tern__now_ms(), fresh);
    sodium_memzero(fresh, sizeof(fresh));
  } else if (!(d->cks = calloc(COOKIE_SLOTS, sizeof(*d->cks)))) {
    tern__disp_free(d);
    return TERN_ENOMEM;
  }
  if (PKTINFO && bind_to && accept_new && (is_any6(bind_to) || (tern__addr_is_v4(bind_to) && !tern__addr_v4(bind_to)))) {
    d->locals = calloc(LOCAL_SLOTS, sizeof(*d->locals));
    if (!d->locals) {
      tern__disp_free(d);
      return TERN_ENOMEM;
    }
  }
  *out = d;
  return 0;
}

void tern__disp_free(tern__disp *d) {
  if (!d) return;
  tern__streams_free(d->tcp);
  tern__disp_cand_abort(d);
  if (d->poller) (void)tern__poller_del(d->poller, d->fd);
  if (d->poller && d->pri_fd >= 0) (void)tern__poller_del(d->poller, d->pri_fd);
  tern__poller_free(d->poller);
  close(d->fd);
  if (d->pri_fd >= 0) close(d->pri_fd);
  free(d->rb);
  free(d->ob);
  tern__mig_free(d->mig);
  free(d->locals);
  free(d->cks);
  sodium_memzero(&d->jar, sizeof(d->jar));
  tern__atab_free(d->tab);
  free(d);
}

tern__poller *tern__disp_poller(const tern__disp *d) { return d->poller; }
uint16_t tern__disp_port(const tern__disp *d) { return d->port; }
int tern__disp_has_v6(const tern__disp *d) { return d->family == AF_INET6; }
void tern__disp_stats_get(const tern__disp *d, tern__disp_stats *st) {
  *st = d->st;
  tern__streams_stats_get(d->tcp, &st->tcp);
}

void tern__disp_set_raw_handler(tern__disp *d, tern__disp_raw_fn fn, void *ctx) {
  d->raw_fn = fn;
  d->raw_ctx = ctx;
}

void tern__disp_set_full_answer(tern__disp *d, uint32_t retry_ms) { d->full_retry_ms = retry_ms; }

_Static_assert(TERN__COOKIES_AUTO == TERN_RELAY_COOKIES_AUTO &&
                   TERN__COOKIES_ALWAYS == TERN_RELAY_COOKIES_ALWAYS &&
                   TERN__COOKIES_NEVER == TERN_RELAY_COOKIES_NEVER,
               "tern_relay_config.cookies is handed to the dispatcher as it is");
void tern__disp_set_cookies(tern__disp *d, int mode) { d->cookie_mode = mode; }

/* Errors that say this datagram cannot go now, not that the socket broke:
 * a phone between networks has no route for a moment, a firewall refuses. */
static int transient(int e) {
  return e == ENETUNREACH || e == EHOSTUNREACH || e == ECONNREFUSED || e == EADDRNOTAVAIL ||
         e == EPERM || e == ENETDOWN || e == EHOSTDOWN || e == EMSGSIZE || e == ENOBUFS;
}

static int is_zero(const tern__addr *a) {
  static const uint8_t zero[16];
  return memcmp(a->ip, zero, 16) == 0;
}

/* Relay on a wildcard: which of our addresses `from` wrote to, for the
 * datagrams sent to it outside a handle (probe replies, HINT, FULL,
 * RESPONSE). Handles keep theirs in the address table. */
static void remember_local(tern__disp *d, const tern__addr *from) {
  if (d->locals) d->locals[tern__addr_hash(from) % LOCAL_SLOTS] = (local_slot){*from, d->last_local};
}

/* Our address `to` last wrote to (relay on a wildcard), or NULL. */
static const tern__addr *local_for(const tern__disp *d, const tern__addr *to) {
  if (!d->locals) return NULL;
  const local_slot *s = &d->locals[tern__addr_hash(to) % LOCAL_SLOTS];
  return tern__addr_equal(&s->remote, to) && !is_zero(&s->local) ? &s->local : NULL;
}

/* Sets m's control to send from `from` (our address; NULL or zero: the
 * kernel's choice) to `to`, in ctl. */
static void set_source(const tern__disp *d, struct msghdr *m, ctlbuf *ctl, const tern__addr *to,
                       const tern__addr *from) {
#if PKTINFO
  if (d->locals && from && !is_zero(from) && tern__addr_is_v4(from) == tern__addr_is_v4(to)) {
    memset(ctl, 0, sizeof(*ctl));
    m->msg_control = ctl->buf;
    struct cmsghdr *c = (struct cmsghdr *)ctl->buf;
    if (tern__addr_is_v4(from)) {
      struct in_pktinfo pi = {.ipi_spec_dst.s_addr = htonl(tern__addr_v4(from))};
      c->cmsg_level = IPPROTO_IP;
      c->cmsg_type = IP_PKTINFO;
      c->cmsg_len = CMSG_LEN(sizeof(pi));
      memcpy(CMSG_DATA(c), &pi, sizeof(pi));
      m->msg_controllen = CMSG_SPACE(sizeof(pi));
    } else {
      struct in6_pktinfo pi;
      memset(&pi, 0, sizeof(pi));
      memcpy(&pi.ipi6_addr, from->ip, 16);
      c->cmsg_level = IPPROTO_IPV6;
      c->cmsg_type = IPV6_PKTINFO;
      c->cmsg_len = CMSG_LEN(sizeof(pi));
      memcpy(CMSG_DATA(c), &pi, sizeof(pi));
      m->msg_controllen = CMSG_SPACE(sizeof(pi));
    }
    return;
  }
#else
  (void)d, (void)to, (void)from, (void)ctl;
#endif
  m->msg_control = NULL;
  m->msg_controllen = 0;
}

/* Sends on socket fd from `from` (our address, or NULL for the kernel's
 * choice). */
static ssize_t send_on(tern__disp *d, int fd, const tern__addr *to, const tern__addr *from,
                       const struct iovec *iov, size_t n) {
  struct sockaddr_storage ss;
  size_t sl = tern__addr_to_sockaddr(to, d->family, &ss);
  if (!sl) {
    errno = EAFNOSUPPORT;
    return -1;
  }
  struct msghdr m = {.msg_name = &ss, .msg_namelen = (socklen_t)sl, .msg_iov = (struct iovec *)iov,
                     .msg_iovlen = n};
  ctlbuf ctl;
  set_source(d, &m, &ctl, to, from);
  ssize_t r;
  do r = sendmsg(fd, &m, TERN__MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  if (r >= 0) d->st.tx++;
  return r;
}

/* Relay: sends the COOKIEs waiting in d->ob (sendmmsg: one system call
 * for all; elsewhere one each). One the socket refuses is lost, as a
 * datagram is. */
static void cookies_flush(tern__disp *d) {
  obatch *b = d->ob;
  unsigned at = 0;
  while (b && at < b->n) {
#if BATCH_IO
    int r = sendmmsg(d->fd, b->m + at, b->n - at, TERN__MSG_NOSIGNAL);
#else
    int r = sendmsg(d->fd, &b->m[at].msg_hdr, TERN__MSG_NOSIGNAL) < 0 ? -1 : 1;
#endif
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      at++; /* skip the one that failed (no route, a full buffer) */
      continue;
    }
    d->st.tx += (unsigned)r;
    d->st.cookies_sent += (unsigned)r;
    at += (unsigned)r;
  }
  if (b) b->n = 0;
}

/* Relay: queues a COOKIE datagram `out` to UDP source `to`, answered from
 * our address `from` (NULL: the kernel's choice). */
static void cookie_queue(tern__disp *d, const tern__addr *to, const tern__addr *from,
                         const uint8_t out[TERN__COOKIE_REPLY_BYTES]) {
  obatch *b = d->ob;
  if (b->n == SEND_BATCH) cookies_flush(d);
  unsigned i = b->n;
  size_t sl = tern__addr_to_sockaddr(to, d->family, &b->ss[i]);
  if (!sl) return;
  memcpy(b->data[i], out, TERN__COOKIE_REPLY_BYTES);
  b->iov[i] = (struct iovec){.iov_base = b->data[i], .iov_len = TERN__COOKIE_REPLY_BYTES};
  b->m[i].msg_hdr = (struct msghdr){.msg_name = &b->ss[i], .msg_namelen = (socklen_t)sl,
                                    .msg_iov = &b->iov[i], .msg_iovlen = 1};
  set_source(d, &b->m[i].msg_hdr, &b->ctl[i], to, from);
  b->n++;
}

static ssize_t send_to(tern__disp *d, const tern__addr *to, const struct iovec *iov, size_t n) {
  return send_on(d, d->fd, to, local_for(d, to), iov, n);
}

/* 1 if the family of `a` cannot be reached from this dispatcher's UDP
 * socket (a stream address always can: it names a TCP connection). */
static int unreachable(const tern__disp *d, const tern__addr *a) {
  return d->family == AF_INET && !tern__addr_is_v4(a) && !tern__addr_is_stream(a, NULL);
}

/* A datagram for a stream address goes framed on its TCP connection; one
 * the connection cannot take now is lost, as on UDP. */
static int send_stream(tern__disp *d, uint32_t id, const struct iovec *iov, size_t n) {
  int rc = tern__streams_send(d->tcp, id, iov, n);
  if (rc == 0) d->st.tx++;
  return rc;
}

int tern__disp_send_raw(tern__disp *d, const tern__addr *to, const void *data, size_t len) {
  if (unreachable(d, to)) return TERN_EADDR;
  struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
  uint32_t id;
  if (tern__addr_is_stream(to, &id)) return send_stream(d, id, &iov, 1) == 0 ? 0 : TERN_EIO;
  return send_to(d, to, &iov, 1) == (ssize_t)len ? 0 : TERN_EIO;
}

/* --- handles ------------------------------------------------------------ */

int tern__disp_handle_new(tern__disp *d, int sock, const tern__addr *a, uint32_t *handle,
                          uint16_t *gen) {
  vsock *v = vs_of(sock);
  if (!v || v->d != d) return TERN_EINVAL;
  if (unreachable(d, a)) return TERN_EADDR;
  uint32_t h = tern__atab_find(d->tab, a);
  if (h) {
    *handle = h;
    *gen = tern__atab_entry_at(d->tab, h)->gen;
  } else {
    int rc = tern__atab_add(d->tab, a, v->owner, tern__now_ms(), handle, gen);
    if (rc) return rc;
    v->load++;
  }
  return tern__atab_bind(d->tab, *handle, *gen);
}

int tern__disp_handle_addr(const tern__disp *d, uint32_t handle, uint16_t gen, tern__addr *out) {
  const tern__atab_entry *e = tern__atab_get(d->tab, handle, gen);
  if (!e) return TERN_ENOENT;
  *out = e->addr;
  return 0;
}

int tern__disp_handle_hold(tern__disp *d, uint32_t handle, uint16_t gen) {
  const tern__atab_entry *e = tern__atab_get(d->tab, handle, gen);
  if (e && !e->bound && d->pending) d->pending--;
  return tern__atab_bind(d->tab, handle, gen);
}

void tern__disp_handle_release(tern__disp *d, uint32_t handle, uint16_t gen) {
  const tern__atab_entry *e = tern__atab_get(d->tab, handle, gen);
  if (!e) return;
  uint32_t owner = e->owner;
  tern__addr was = e->addr;
  int unbound = !e->bound;
  if (tern__atab_release(d->tab, handle, gen)) {
    if (unbound && d->pending) d->pending--;
    uint32_t id;
    if (tern__addr_is_stream(&was, &id)) tern__streams_close(d->tcp, id);
    if (d->mig) tern__mig_remove(d->mig, handle, gen);
    vsock *v = owner < MAX_PER_DISP ? d->vs[owner] : NULL;
    if (v && v->load) v->load--;
  }
}

/* A TCP connection is kept while a handle names it. */
static int stream_used(void *ctx, uint32_t id) {
  tern__disp *d = ctx;
  tern__addr a;
  tern__addr_set_stream(&a, id);
  return tern__atab_find(d->tab, &a) != 0;
}

static void flood_watch(tern__disp *d, uint64_t now, uint32_t sent);

void tern__disp_sweep(tern__disp *d, uint64_t now_ms) {
  if (d->accept_new) flood_watch(d, now_ms, 0);
  tern__streams_sweep(d->tcp, now_ms, TCP_SWEEP_MS, stream_used, d);
  /* Loads are recounted after a sweep: cheaper than a callback per entry,
   * and a sweep is rare (a CONNECT that ENet dropped). */
  if (tern__atab_sweep(d->tab, now_ms, UNBOUND_MAX_MS) == 0) return;
  for (size_t i = 0; i < MAX_PER_DISP; i++)
    if (d->vs[i]) d->vs[i]->load = 0;
  d->pending = 0;
  for (uint32_t h = 1; h <= tern__atab_span(d->tab); h++) {
    const tern__atab_entry *e = tern__atab_entry_at(d->tab, h);
    if (e && e->owner < MAX_PER_DISP && d->vs[e->owner]) d->vs[e->owner]->load++;
    if (e && !e->bound) d->pending++;
  }
}

/* The virtual socket with the most room for a new connection, or NULL. */
static vsock *roomiest(tern__disp *d) {
  vsock *best = NULL;
  for (size_t i = 0; i < MAX_PER_DISP; i++) {
    vsock *v = d->vs[i];
    if (v && v->load < v->cap && (!best || v->cap - v->load > best->cap - best->load)) best = v;
  }
  return best;
}

/* --- receiving ---------------------------------------------------------- */

static int pop(vsock *v, uint32_t *handle, uint16_t *gen, void *buf, size_t cap) {
  qitem *it = v->q[v->qhead];
  v->q[v->qhead] = NULL;
  v->qhead = (v->qhead + 1) % QUEUE_CAP;
  v->qlen--;
  size_t n = it->len < cap ? it->len : cap;
  memcpy(buf, it->data, n);
  *handle = it->handle;
  *gen = it->gen;
  free(it);
  return (int)n;
}

static void push(tern__disp *d, vsock *v, uint32_t handle, uint16_t gen, const uint8_t *data,
                 size_t len) {
  if (!v->q && !(v->q = calloc(QUEUE_CAP, sizeof(*v->q)))) {
    d->st.rx_queue_full++;
    return;
  }
  if (v->qlen == QUEUE_CAP) {
    d->st.rx_queue_full++;
    return;
  }
  qitem *it = malloc(sizeof(*it) + len);
  if (!it) {
    d->st.rx_queue_full++;
    return;
  }
  it->handle = handle;
  it->gen = gen;
  it->len = (uint16_t)len;
  memcpy(it->data, data, len);
  v->q[(v->qhead + v->qlen) % QUEUE_CAP] = it;
  v->qlen++;
}

/* Reads a batch from UDP socket fd into d->rb (recvmmsg: one system call
 * for up to rb->cap datagrams; elsewhere one). Returns how many, or -1
 * (errno; EAGAIN: none waiting). */
static int batch_fill(tern__disp *d, int fd) {
  rbatch *b = d->rb;
  for (unsigned i = 0; i < b->dirty; i++) { /* the headers the kernel wrote last time */
    b->iov[i] = (struct iovec){.iov_base = b->data[i], .iov_len = DGRAM_MAX};
    b->m[i].msg_hdr = (struct msghdr){.msg_name = &b->ss[i], .msg_namelen = sizeof(b->ss[i]),
                                      .msg_iov = &b->iov[i], .msg_iovlen = 1,
                                      .msg_control = d->locals ? b->ctl[i].buf : NULL,
                                      .msg_controllen = d->locals ? sizeof(b->ctl[i].buf) : 0};
  }
  b->n = b->at = 0;
  int r;
#if BATCH_IO
  do r = recvmmsg(fd, b->m, b->cap, MSG_DONTWAIT, NULL);
  while (r < 0 && errno == EINTR);
#else
  ssize_t k;
  do k = recvmsg(fd, &b->m[0].msg_hdr, MSG_DONTWAIT);
  while (k < 0 && errno == EINTR);
  if (k >= 0) b->m[0].msg_len = (unsigned)k;
  r = k < 0 ? -1 : 1;
#endif
  b->n = b->dirty = r > 0 ? (unsigned)r : 0;
  return r;
}

/* The next datagram of d->rb into d->buf and `from`; on a wildcard, also
 * which of our addresses it came to (into d->last_local). -1 with errno
 * EINTR for one to skip. */
static ssize_t batch_next(tern__disp *d, tern__addr *from) {
  rbatch *b = d->rb;
  unsigned i = b->at++;
  struct msghdr *m = &b->m[i].msg_hdr;
  size_t n = b->m[i].msg_len;
  memcpy(d->buf, b->data[i], n);
  memset(&d->last_local, 0, sizeof(d->last_local));
#if PKTINFO
  for (struct cmsghdr *c = d->locals ? CMSG_FIRSTHDR(m) : NULL; c; c = CMSG_NXTHDR(m, c)) {
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
      struct in_pktinfo pi;
      memcpy(&pi, CMSG_DATA(c), sizeof(pi));
      tern__addr_set_v4(&d->last_local, ntohl(pi.ipi_addr.s_addr), d->port);
    } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
      struct in6_pktinfo pi;
      memcpy(&pi, CMSG_DATA(c), sizeof(pi));
      memcpy(d->last_local.ip, &pi.ipi6_addr, 16);
      d->last_local.port = d->port;
    }
  }
#endif
  /* 100::/64 names TCP connections here; no real datagram comes from it. */
  if (tern__addr_from_sockaddr(from, (struct sockaddr *)m->msg_name, m->msg_namelen) != 0 ||
      tern__addr_is_discard(from)) {
    errno = EINTR;
    return -1;
  }
  return (ssize_t)n;
}

/* The next UDP datagram of the main socket(s): what is left of the last
 * batch, else a new batch from pri_fd (proven sources), else from fd.
 * Returns its length, -1 (errno; EAGAIN: none waiting). */
static ssize_t udp_next(tern__disp *d, tern__addr *from) {
  if (d->rb->at < d->rb->n) return batch_next(d, from);
  int r = -1;
  errno = EAGAIN;
  if (d->pri_fd >= 0) r = batch_fill(d, d->pri_fd);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) r = batch_fill(d, d->fd);
  if (r < 0) return -1;
  if (r == 0) {
    errno = EAGAIN;
    return -1;
  }
  return batch_next(d, from);
}

/* Looks at the TCP side: accepts, reads, writes what waited, for
 * whatever the poller reports ready now. */
static void tcp_poll(tern__disp *d) {
  d->udp_run = 0;
  if (!tern__streams_any(d->tcp)) return;
  tern__poll_event ev[64];
  int n = tern__poller_wait(d->poller, ev, 64, 0);
  uint64_t now = tern__now_ms();
  for (int i = 0; i < n; i++)
    if (ev[i].tag != TAG_UDP && ev[i].tag != TAG_CAND)
      tern__streams_event(d->tcp, ev[i].tag, ev[i].events, now);
}

/* The next datagram from any real socket into d->buf, with its source:
 * a TCP connection's, the candidate socket, then UDP (udp_next). TCP is
 * looked at when UDP has nothing, and every TCP_EVERY datagrams, so
 * neither starves the other. Returns its length, 0 if nothing is waiting,
 * -1 (errno) on a socket error or (EINTR) for a datagram to skip. */
static ssize_t read_one(tern__disp *d, tern__addr *from) {
  if (d->udp_run >= TCP_EVERY) tcp_poll(d);
  for (int pass = 0; pass < 2; pass++) {
    uint32_t id;
    size_t k = tern__streams_next(d->tcp, &id, d->buf, sizeof(d->buf));
    if (k) {
      tern__addr_set_stream(from, id);
      memset(&d->last_local, 0, sizeof(d->last_local));
      return (ssize_t)k;
    }
    if (pass == 1) return 0;
    ssize_t n = -1;
    errno = EAGAIN;
    /* A client trying a new path reads its candidate socket too. */
    if (d->cand_fd >= 0) {
      struct sockaddr_storage ss;
      socklen_t sl = sizeof(ss);
      n = recvfrom(d->cand_fd, d->buf, sizeof(d->buf), MSG_DONTWAIT, (struct sockaddr *)&ss, &sl);
      if (n >= 0 && (tern__addr_from_sockaddr(from, (struct sockaddr *)&ss, sl) != 0 ||
                     tern__addr_is_discard(from))) {
        errno = EINTR; /* skip it */
        return -1;
      }
      if (n >= 0) memset(&d->last_local, 0, sizeof(d->last_local));
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) n = udp_next(d, from);
    if (n >= 0 || errno == EINTR) {
      d->udp_run++;
      return n;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    tcp_poll(d);
  }
  return 0;
}

/* Relay: a path datagram (migrate.h). */
static void path_input(tern__disp *d, const tern__addr *from, size_t n) {
  uint8_t rnd[8], out[TERN__PATH_BYTES];
  randombytes_buf(rnd, sizeof(rnd));
  size_t olen = 0;
  uint32_t h = 0;
  uint16_t g = 0;
  int r = tern__mig_input(d->mig, from, d->buf, n, rnd, out, &olen, &h, &g);
  if (r == TERN__MIG_ANSWER) {
    (void)tern__disp_send_raw(d, from, out, olen);
  } else if (r == TERN__MIG_MOVE) {
    const tern__atab_entry *e = tern__atab_get(d->tab, h, g);
    if (!e) return;
    tern__addr old = e->addr;
    if (tern__atab_move(d->tab, h, g, from) != 0) return;
    if (d->locals) tern__atab_set_local(d->tab, h, &d->last_local);
    if (d->move_fn) d->move_fn(d->move_ctx, h, g, &old, from);
    uint32_t id;
    if (tern__addr_is_stream(&old, &id)) tern__streams_close(d->tcp, id); /* back on UDP */
  }
}

/* Relay: an ENet datagram from a source it does not know. If a session's
 * NAT rebound, this is its client, which a HINT tells to prove itself with
 * a CHALLENGE. Never larger than what drew it; one per source per second
 * (sources remembered by hash: a collision only delays a hint). */
static void hint(tern__disp *d, const tern__addr *from, size_t n) {
  if (n < TERN__PATH_HINT_BYTES) return;
  uint64_t now = tern__now_ms();
  uint64_t *last = &d->hint_ms[tern__addr_hash(from) % HINT_SLOTS];
  if (*last && now < *last + 1000) return;
  *last = now;
  uint8_t out[TERN__PATH_HINT_BYTES];
  tern__path_write_hint(out);
  if (tern__disp_send_raw(d, from, out, sizeof(out)) == 0) d->st.hints++;
}

/* --- cookies (spec/wire.md §13) ----------------------------------------- */

/* Relay: the jar's secret for this time slot. */
static void jar_tick(tern__disp *d, uint64_t now) {
  if (!tern__cookie_jar_due(&d->jar, now)) return;
  uint8_t fresh[TERN__COOKIE_SECRET_BYTES];
  randombytes_buf(fresh, sizeof(fresh));
  tern__cookie_jar_rotate(&d->jar, now, fresh);
  sodium_memzero(fresh, sizeof(fresh));
}

/* Relay: 1 if a CONNECT from `from`, a source without a handle, must carry
 * a cookie. A TCP connection has proven its address by its handshake. */
static int cookie_needed(const tern__disp *d, const tern__addr *from) {
  if (tern__addr_is_stream(from, NULL) || d->cookie_mode == TERN__COOKIES_NEVER) return 0;
  return d->cookie_mode == TERN__COOKIES_ALWAYS || d->pending >= TERN__COOKIES_AUTO_PENDING;
}

/* Relay: a flood (FLOOD_COOKIES COOKIEs in a second) fills the receive
 * buffer faster than the relay reads it, and a full 4 MiB buffer holds
 * everything that arrives, real clients' datagrams too, for 100 ms and
 * more (measured: 165-300 ms before a COOKIE came back, past the 200 ms
 * resend timeout of a connect). During a flood the buffer is FLOOD_BUF, a
 * few ms of it: as much is lost, but what is read is fresh. Counted per
 * COOKIE sent (`sent`), checked again from the sweep (`sent` 0). */
static void flood_watch(tern__disp *d, uint64_t now, uint32_t sent) {
  d->flood_count += sent;
  if (now - d->flood_win_ms < 1000) return;
  int small = d->flood_last_ms != 0;
  if (d->flood_count >= FLOOD_COOKIES) d->flood_last_ms = now;
  else if (small && now - d->flood_last_ms >= FLOOD_OVER_MS) d->flood_last_ms = 0;
  if (small != (d->flood_last_ms != 0)) {
    int v = d->flood_last_ms ? FLOOD_BUF : SOCK_BUF;
    (void)setsockopt(d->fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
  }
  d->flood_win_ms = now;
  d->flood_count = 0;
}

/* Relay: answers a datagram of n bytes from `from` with a COOKIE, never
 * larger than it. */
static void cookie_send(tern__disp *d, const tern__addr *from, size_t n) {
  if (n < TERN__COOKIE_REPLY_BYTES) return;
  uint64_t now = tern__now_ms();
  flood_watch(d, now, 1);
  jar_tick(d, now);
  uint8_t c[TERN__COOKIE_BYTES], out[TERN__COOKIE_REPLY_BYTES];
  tern__cookie_make(&d->jar, from, c);
  tern__cookie_write_reply(out, c);
  if (!tern__addr_is_stream(from, NULL)) {
    cookie_queue(d, from, d->locals ? &d->last_local : NULL, out); /* sent in a batch */
  } else if (tern__disp_send_raw(d, from, out, sizeof(out)) == 0) {
    d->st.cookies_sent++;
  }
}

/* Relay: a COOKIE datagram of n bytes in d->buf. A wrapped CONNECT whose
 * cookie is from's (or from a source with a handle already: ENet resending
 * its CONNECT) has its ENet CONNECT moved to the start of d->buf: returns
 * its length. Anything else: 0, dropped (a wrong or stale cookie is
 * answered with a fresh COOKIE, so a client holding one from before a
 * restart or a rotation still gets in). */
static size_t cookie_unwrap(tern__disp *d, const tern__addr *from, size_t n) {
  const uint8_t *inner;
  size_t len;
  jar_tick(d, tern__now_ms());
  int v = tern__cookie_admit(&d->jar, from, d->buf, n, &inner, &len);
  if (v == TERN__COOKIE_DROP) {
    d->st.rx_unknown++;
    return 0;
  }
  if (v == TERN__COOKIE_BAD && !tern__atab_find(d->tab, from)) {
    d->st.cookies_bad++;
    cookie_send(d, from, n);
    return 0;
  }
  memmove(d->buf, inner, len);
  return len;
}

/* Client: the slot of a handle, or NULL; with `take`, the slot it gets
 * (its own, else an unused or the oldest one, cleared). */
static cookie_slot *ck_slot(tern__disp *d, uint32_t h, uint16_t g, int take) {
  cookie_slot *old = NULL;
  for (size_t i = 0; i < COOKIE_SLOTS; i++) {
    cookie_slot *s = &d->cks[i];
    if (s->connect_ms && s->handle == h && s->gen == g) return s;
    if (!old || s->connect_ms < old->connect_ms) old = s;
  }
  if (!take) return NULL;
  memset(old, 0, sizeof(*old));
  old->handle = h;
  old->gen = g;
  return old;
}

/* Client: after a CONNECT goes, the further copies of it that go while
 * nothing answers (ms after it): a relay under a flood drops what arrives
 * while its socket for CONNECTs is full, in bursts of a few ms, so copies
 * sent back to back are lost together; spread over the 200 ms before
 * ENet's own resend (link.c) they are lost one by one. */
static const uint16_t connect_spread_ms[] = {25, 50, 100, 150};
enum { CONNECT_SPREAD = sizeof(connect_spread_ms) / sizeof(connect_spread_ms[0]) };

/* Client: sends the slot's CONNECT, wrapped with its cookie if it holds a
 * fresh one, CONNECT_COPIES times: a relay under a flood loses a share of
 * what arrives, and a lost CONNECT costs a resend timeout (200 ms at
 * first, link.c) where a lost copy costs nothing; the spread copies
 * follow (tern__disp_tick). Returns the CONNECT's length as
 * ENet gave it, or -1 (errno) if no copy went. */
static ssize_t send_copies(tern__disp *d, cookie_slot *s, const tern__addr *to,
                           const tern__addr *local, uint64_t now, int copies) {
  uint8_t hdr[TERN__COOKIE_REPLY_BYTES];
  tern__cookie_write_reply(hdr, s->cookie);
  hdr[5] = TERN__COOKIE_KIND_CONNECT;
  int wrap = s->cookie_ms && now - s->cookie_ms <= COOKIE_KEEP_MS;
  struct iovec iov[2] = {{.iov_base = hdr, .iov_len = sizeof(hdr)},
                         {.iov_base = (void *)s->connect, .iov_len = s->connect_len}};
  if (wrap) s->wrapped_ms = now;
  ssize_t r = -1;
  for (int i = 0; i < copies; i++) {
    ssize_t k = send_on(d, d->fd, to, local, wrap ? iov : iov + 1, wrap ? 2 : 1);
    if (k >= 0) r = s->connect_len;
  }
  return r;
}

static ssize_t send_connect(tern__disp *d, cookie_slot *s, const tern__addr *to,
                            const tern__addr *local, uint64_t now) {
  s->sent_ms = now;
  s->spread = 0;
  return send_copies(d, s, to, local, now, CONNECT_COPIES);
}

/* Client: a COOKIE of n bytes in d->buf from `from`. Taken only while our
 * own CONNECT to that address is pending (sent, nothing heard since); the
 * CONNECT goes again at once, wrapped. */
static void cookie_take(tern__disp *d, const tern__addr *from, size_t n) {
  uint8_t c[TERN__COOKIE_BYTES];
  const uint8_t *inner;
  size_t len;
  if (tern__cookie_parse(d->buf, n, c, &inner, &len) != TERN__COOKIE_KIND_REPLY) return;
  uint32_t h = tern__atab_find(d->tab, from);
  if (!h) return;
  const tern__atab_entry *e = tern__atab_entry_at(d->tab, h);
  cookie_slot *s = ck_slot(d, h, e->gen, 0);
  uint64_t now = tern__now_ms();
  if (!s || s->answered || now - s->connect_ms > CONNECT_PENDING_MS) return;
  /* Our CONNECT's copies draw a COOKIE each: one answer is enough. */
  if (s->cookie_ms && memcmp(s->cookie, c, sizeof(c)) == 0 && now - s->wrapped_ms < COOKIE_AGAIN_MS)
    return;
  memcpy(s->cookie, c, sizeof(c));
  s->cookie_ms = now;
  d->st.cookies_used++;
  (void)send_connect(d, s, &e->addr, &e->local, now);
}

/* Client: if the datagram for handle h is an ENet CONNECT, keeps it and
 * sends it (send_connect) and returns 1 with *sent; else 0. */
static int cookie_connect(tern__disp *d, uint32_t h, uint16_t g, const tern__atab_entry *e,
                          const struct iovec *iov, size_t n, size_t total, ssize_t *sent) {
  if (total > CONNECT_KEEP) return 0;
  uint8_t buf[CONNECT_KEEP];
  size_t at = 0;
  for (size_t i = 0; i < n; i++) {
    memcpy(buf + at, iov[i].iov_base, iov[i].iov_len);
    at += iov[i].iov_len;
  }
  if (!tern__enet_is_connect(buf, total)) return 0;
  cookie_slot *s = ck_slot(d, h, g, 1);
  uint64_t now = tern__now_ms();
  memcpy(s->connect, buf, total);
  s->connect_len = (uint16_t)total;
  s->connect_ms = now;
  s->answered = 0;
  *sent = send_connect(d, s, &e->addr, &e->local, now);
  return 1;
}

/* Client: an ENet datagram came from handle h: its connect is answered. */
static void cookie_answered(tern__disp *d, uint32_t h, uint16_t g) {
  cookie_slot *s = ck_slot(d, h, g, 0);
  if (s) s->answered = 1;
}

/* 1 if slot s has a spread copy to send (*at: when). */
static int spread_due(const cookie_slot *s, uint64_t *at) {
  if (!s->connect_ms || s->answered || s->spread >= CONNECT_SPREAD) return 0;
  *at = s->sent_ms + connect_spread_ms[s->spread];
  return 1;
}

int tern__disp_next_ms(const tern__disp *d) {
  if (!d->cks) return -1;
  uint64_t now = tern__now_ms(), at;
  long best = -1;
  for (size_t i = 0; i < COOKIE_SLOTS; i++) {
    if (!spread_due(&d->cks[i], &at)) continue;
    long wait = at <= now ? 0 : (long)(at - now);
    if (best < 0 || wait < best) best = wait;
  }
  return (int)best;
}

void tern__disp_tick(tern__disp *d) {
  if (!d->cks) return;
  uint64_t now = tern__now_ms(), at;
  for (size_t i = 0; i < COOKIE_SLOTS; i++) {
    cookie_slot *s = &d->cks[i];
    if (!spread_due(s, &at) || at > now) continue;
    const tern__atab_entry *e = tern__atab_get(d->tab, s->handle, s->gen);
    if (!e || now - s->connect_ms > CONNECT_PENDING_MS) {
      s->spread = CONNECT_SPREAD; /* the connect is gone or given up */
      continue;
    }
    (void)send_copies(d, s, &e->addr, &e->local, now, 1);
    s->spread++;
  }
}

static int backlogged(const tern__disp *d, const vsock *self) {
  for (size_t i = 0; i < MAX_PER_DISP; i++)
    if (d->vs[i] && d->vs[i] != self && d->vs[i]->qlen >= QUEUE_CAP / 2) return 1;
  return 0;
}

/* tern__vsock_recv() without sending the COOKIEs it queued. */
static int vsock_recv(vsock *v, uint32_t *handle, uint16_t *gen, void *buf, size_t cap) {
  tern__disp *d = v->d;
  /* Another host's queue half full: leave the rest in the kernel's
   * buffer until that host has been serviced. Only push() fills one. */
  if (backlogged(d, v)) return 0;
  /* A datagram answered with a COOKIE costs little, so a flood of them
   * returns to ENet (its timers, its sends) every RECV_WORK *
   * RECV_WORK_COOKIE, others every RECV_WORK. */
  for (unsigned work = 0; work < RECV_WORK * RECV_WORK_COOKIE;) {
    tern__addr from;
    work += RECV_WORK_COOKIE;
    ssize_t n = read_one(d, &from);
    if (n == 0) return 0;
    if (n < 0) {
      if (errno == EINTR || transient(errno)) continue; /* an ICMP error for an old send */
      return -1;
    }
    d->st.rx++;
    int validated = 0;
    if (tern__cookie_looks_like(d->buf, (size_t)n)) {
      if (!d->accept_new) {
        cookie_take(d, &from, (size_t)n);
        continue;
      }
      n = (ssize_t)cookie_unwrap(d, &from, (size_t)n);
      if (n == 0) continue;
      validated = 1;
    } else if (n >= 2 && d->buf[0] == 0xFF && d->buf[1] == 0xFF) {
      /* Not ENet's (nothing ENet accepts starts so): probes, path
       * datagrams, FULL. Answered at once or later, from raw sends. */
      remember_local(d, &from);
      if (d->raw_fn && d->raw_fn(d->raw_ctx, &from, d->buf, (size_t)n) == 1) continue;
      if (d->mig && tern__path_looks_like(d->buf, (size_t)n)) path_input(d, &from, (size_t)n);
      continue;
    }
    uint32_t h = tern__atab_find(d->tab, &from);
    vsock *to = NULL;
    uint16_t g = 0;
    if (h) {
      if (d->locals) tern__atab_set_local(d->tab, h, &d->last_local);
      const tern__atab_entry *e = tern__atab_entry_at(d->tab, h);
      to = e->owner < MAX_PER_DISP ? d->vs[e->owner] : NULL;
      g = e->gen;
      if (d->cks) cookie_answered(d, h, g);
    } else if (d->accept_new && tern__enet_is_connect(d->buf, (size_t)n)) {
      to = roomiest(d);
      /* No handle, no slot, nothing kept for a source that has not shown
       * it receives here: one COOKIE, smaller than the CONNECT. */
      if (to && !validated && cookie_needed(d, &from)) {
        cookie_send(d, &from, (size_t)n);
        work -= RECV_WORK_COOKIE - 1;
        continue;
      }
      remember_local(d, &from); /* a FULL may answer it */
      if (!to || tern__atab_add(d->tab, &from, to->owner, tern__now_ms(), &h, &g) != 0) {
        d->st.new_refused++;
        if (d->full_retry_ms) {
          /* One FULL per refused CONNECT, smaller than the CONNECT. */
          uint8_t full[TERN__FULL_BYTES];
          tern__full_write(full, d->full_retry_ms + randombytes_uniform(d->full_retry_ms + 1));
          (void)tern__disp_send_raw(d, &from, full, sizeof(full));
        }
        continue;
      }
      to->load++;
      d->pending++;
      if (validated) d->st.cookie_connects++;
      if (d->locals) tern__atab_set_local(d->tab, h, &d->last_local);
    } else {
      d->st.rx_unknown++;
      if (d->mig && !tern__addr_is_stream(&from, NULL)) {
        remember_local(d, &from);
        hint(d, &from, (size_t)n);
      }
      continue;
    }
    if (!to) continue;
    if (to == v) {
      size_t k = (size_t)n < cap ? (size_t)n : cap;
      memcpy(buf, d->buf, k);
      *handle = h;
      *gen = g;
      return (int)k;
    }
    push(d, to, h, g, d->buf, (size_t)n);
    if (backlogged(d, v)) return 0;
  }
  return 0;
}

int tern__vsock_recv(int sock, uint32_t *handle, uint16_t *gen, void *buf, size_t cap) {
  vsock *v = vs_of(sock);
  if (!v) return -1;
  if (v->qlen) return pop(v, handle, gen, buf, cap);
  int r = vsock_recv(v, handle, gen, buf, cap);
  cookies_flush(v->d);
  return r;
}

int tern__disp_path_add(tern__disp *d, uint32_t handle, uint16_t gen, const tern__path_keys *keys) {
  if (!d->mig) return TERN_EINVAL;
  return tern__mig_add(d->mig, handle, gen, keys);
}

void tern__disp_set_move_handler(tern__disp *d, tern__disp_move_fn fn, void *ctx) {
  d->move_fn = fn;
  d->move_ctx = ctx;
}

void tern__disp_mig_stats(const tern__disp *d, tern__mig_stats *st) {
  if (d->mig) tern__mig_stats_get(d->mig, st);
  else memset(st, 0, sizeof(*st));
}

int tern__disp_cand_open(tern__disp *d) {
  tern__disp_cand_abort(d);
  tern__addr any;
  memset(&any, 0, sizeof(any));
  if (d->family == AF_INET) tern__addr_set_v4(&any, 0, 0);
  d->cand_fd = open_socket(d->family, &any, 0, 0);
  if (d->cand_fd < 0) return TERN_ERESOURCE;
  if (tern__poller_add(d->poller, d->cand_fd, TERN__POLL_IN, TAG_CAND) != 0) {
    tern__disp_cand_abort(d);
    return TERN_ERESOURCE;
  }
  return 0;
}

int tern__disp_cand_send(tern__disp *d, const tern__addr *to, const void *data, size_t len) {
  if (d->family == AF_INET && !tern__addr_is_v4(to)) return TERN_EADDR;
  struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
  int fd = d->cand_fd >= 0 ? d->cand_fd : d->fd;
  return send_on(d, fd, to, NULL, &iov, 1) == (ssize_t)len ? 0 : TERN_EIO;
}

void tern__disp_cand_commit(tern__disp *d) {
  if (d->cand_fd < 0) return;
  (void)tern__poller_del(d->poller, d->fd);
  close(d->fd);
  d->fd = d->cand_fd;
  d->cand_fd = -1;
  d->port = bound_port(d->fd);
  (void)tern__poller_mod(d->poller, d->fd, TERN__POLL_IN, TAG_UDP);
}

void tern__disp_cand_abort(tern__disp *d) {
  if (d->cand_fd < 0) return;
  (void)tern__poller_del(d->poller, d->cand_fd);
  close(d->cand_fd);
  d->cand_fd = -1;
}

size_t tern__vsock_queued(int sock) {
  const vsock *v = vs_of(sock);
  return v ? v->qlen : 0;
}

size_t tern__disp_queued(const tern__disp *d) {
  size_t n = tern__streams_ready(d->tcp) ? 1 : 0;
  for (size_t i = 0; i < MAX_PER_DISP; i++)
    if (d->vs[i]) n += d->vs[i]->qlen;
  return n;
}

/* Polls the real sockets (the poller holds them all): 1 ready, 0
 * timeout, -2 interrupted, -1. Events stay for the reads that follow
 * (the poller is level-triggered). */
static int poll_real(const tern__disp *d, int timeout_ms) {
  if (tern__streams_ready(d->tcp)) return 1;
  tern__poll_event ev[4];
  int r = tern__poller_wait(d->poller, ev, 4, timeout_ms);
  if (r < 0) return r == TERN_EAGAIN ? -2 : -1;
  /* Only the owner's descriptor (TERN__POLL_TAG_EXTERNAL): nothing to read
   * here, but the wait ends, so that the owner looks at it. */
  for (int i = 0; i < r; i++)
    if (ev[i].tag != TERN__POLL_TAG_EXTERNAL) return 1;
  return 0;
}

int tern__disp_wait(tern__disp *d, int timeout_ms) {
  int r = poll_real(d, timeout_ms);
  return r == -2 ? 0 : r;
}

int tern__vsock_wait(int sock, uint32_t timeout_ms) {
  vsock *v = vs_of(sock);
  if (!v) return -1;
  if (v->qlen) return 1;
  return poll_real(v->d, timeout_ms > 0x7fffffff ? -1 : (int)timeout_ms);
}

int tern__vsock_send(int sock, uint32_t handle, uint16_t gen, const struct iovec *iov, size_t n) {
  vsock *v = vs_of(sock);
  if (!v) return -1;
  size_t total = 0;
  for (size_t i = 0; i < n; i++) total += iov[i].iov_len;
  const tern__atab_entry *e = tern__atab_get(v->d->tab, handle, gen);
  if (!e) return (int)total; /* the handle is gone: the datagram is lost */
  uint32_t id;
  if (tern__addr_is_stream(&e->addr, &id)) {
    if (send_stream(v->d, id, iov, n) != 0) v->d->st.tx_unreachable++;
    return (int)total;
  }
  ssize_t r;
  if (!v->d->cks || !cookie_connect(v->d, handle, gen, e, iov, n, total, &r))
    r = send_on(v->d, v->d->fd, &e->addr, &e->local, iov, n);
  if (r >= 0) return (int)r;
  if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
  if (transient(errno) || errno == EAFNOSUPPORT) {
    v->d->st.tx_unreachable++;
    return (int)total;
  }
  return -1;
}

/* --- TCP (spec/wire.md §12) ---------------------------------------------- */

int tern__disp_listen_tcp(tern__disp *d, const tern__addr *bind_to, uint16_t *port) {
  if (!d->accept_new) return TERN_EINVAL;
  return tern__streams_listen(d->tcp, bind_to, port);
}

int tern__disp_tcp_connect(tern__disp *d, const tern__addr *to, tern__addr *stream) {
  uint32_t id;
  int rc = tern__streams_connect(d->tcp, to, &id);
  if (rc) return rc;
  tern__addr_set_stream(stream, id);
  return 0;
}

int tern__disp_handle_alive(const tern__disp *d, uint32_t handle, uint16_t gen) {
  const tern__atab_entry *e = tern__atab_get(d->tab, handle, gen);
  if (!e) return 0;
  uint32_t id;
  return !tern__addr_is_stream(&e->addr, &id) || tern__streams_alive(d->tcp, id);
}

int tern__disp_handle_move(tern__disp *d, uint32_t handle, uint16_t gen, const tern__addr *to) {
  const tern__atab_entry *e = tern__atab_get(d->tab, handle, gen);
  if (!e) return TERN_ENOENT;
  tern__addr old = e->addr;
  int rc = tern__atab_move(d->tab, handle, gen, to);
  uint32_t id;
  if (rc == 0 && tern__addr_is_stream(&old, &id)) tern__streams_close(d->tcp, id);
  return rc;
}

void tern__disp_addr_name(const tern__disp *d, const tern__addr *a, char *buf, size_t cap) {
  uint32_t id;
  tern__addr real;
  if (!tern__addr_is_stream(a, &id)) {
    tern__addr_format(a, buf, cap);
  } else if (tern__streams_remote(d->tcp, id, &real) == 0) {
    char t[TERN__ADDR_TEXT];
    tern__addr_format(&real, t, sizeof(t));
    snprintf(buf, cap, "tcp:%s", t);
  } else {
    snprintf(buf, cap, "tcp:(closed)");
  }
}
