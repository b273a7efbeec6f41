/* Name resolution that never blocks, on c-ares (resolver.h). */
#include "io/resolver.h"

#include <ares.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io/nat64.h"
#include "os/poller.h"
#include "tern/tern.h"

enum { E_PENDING = 0, E_DONE = 1 };

typedef struct endpoint {
  uint16_t port;
  uint8_t state;
  size_t n;
  tern__addr addr[TERN__RESOLVE_PER_NAME];
} endpoint;

/* What one c-ares callback needs to find its endpoint, or to know it is
 * stale (a later start replaced its lookup). */
typedef struct query {
  tern__resolver *r;
  unsigned gen;
  int idx;          /* endpoint index, or -1 for ipv4only.arpa */
} query;

struct tern__resolver {
  ares_channel ch;
  tern__poller *poller; /* c-ares's sockets, tagged with their descriptor */
  int ok;           /* the channel was made */
  int ch_rc;        /* why the channel could not be made for this lookup, or 0 */
  uint32_t timeout_ms;
  char *servers;    /* owned copy, or NULL: the system's configuration */
  unsigned gen;     /* bumped by every start and cancel */
  int active;       /* a lookup was started and has not ended */
  int v6;
  size_t n;
  endpoint ep[TERN__RESOLVE_ENDPOINTS];
  int nat64_state;  /* 0 not asked, 1 asked, 2 answered (prefix or not) */
  int have_prefix;
  uint8_t prefix[12];
  int result;       /* when the lookup ended: count, or TERN_EADDR */
  tern__addr out[TERN__RESOLVE_ENDPOINTS * TERN__RESOLVE_PER_NAME];
};

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_rc;
static void lib_init(void) { lib_rc = ares_library_init(ARES_LIB_INIT_ALL); }

/* c-ares says which of its sockets to watch (none: it is about to close
 * it): mirrored in our poller. */
static void sock_state(void *data, ares_socket_t fd, int readable, int writable) {
  tern__resolver *r = data;
  if (!readable && !writable) {
    (void)tern__poller_del(r->poller, fd);
    return;
  }
  unsigned ev = (readable ? TERN__POLL_IN : 0u) | (writable ? TERN__POLL_OUT : 0u);
  if (tern__poller_mod(r->poller, fd, ev, (uint64_t)fd) == TERN_ENOENT)
    (void)tern__poller_add(r->poller, fd, ev, (uint64_t)fd);
}

/* The c-ares channel, made on the first lookup that needs one: a client
 * whose endpoints are literals on an IPv4 link never asks, and a channel
 * costs about 74 KB and a read of the system's configuration. Returns 0 or
 * why it could not be made (kept for the lookup's result; the next lookup
 * tries again). */
static int channel(tern__resolver *r) {
  if (r->ok) return 0;
  struct ares_options o;
  memset(&o, 0, sizeof(o));
  o.sock_state_cb = sock_state;
  o.sock_state_cb_data = r;
  o.timeout = (int)(r->timeout_ms ? r->timeout_ms : 1);
  o.tries = 2;
  int rc = ares_init_options(&r->ch, &o, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
  if (rc != ARES_SUCCESS) return r->ch_rc = rc == ARES_ENOMEM ? TERN_ENOMEM : TERN_ERESOURCE;
  r->ok = 1;
  if (r->servers && ares_set_servers_ports_csv(r->ch, r->servers) != ARES_SUCCESS) {
    ares_destroy(r->ch);
    r->ok = 0;
    return r->ch_rc = TERN_EINVAL;
  }
  return 0;
}

int tern__resolver_new(tern__resolver **out, const char *servers, uint32_t timeout_ms) {
  *out = NULL;
  pthread_once(&lib_once, lib_init);
  if (lib_rc != ARES_SUCCESS) return TERN_ERESOURCE;
  tern__resolver *r = calloc(1, sizeof(*r));
  if (!r) return TERN_ENOMEM;
  r->timeout_ms = timeout_ms;
  r->result = TERN_EADDR;
  int rc = tern__poller_new(&r->poller);
  if (rc) {
    free(r);
    return rc;
  }
  if (servers && !(r->servers = strdup(servers))) {
    tern__resolver_free(r);
    return TERN_ENOMEM;
  }
  /* Servers of the app's own are checked now, where a mistake in them is
   * the caller's to hear about. */
  if (servers && (rc = channel(r)) != 0) {
    tern__resolver_free(r);
    return rc;
  }
  *out = r;
  return 0;
}

void tern__resolver_free(tern__resolver *r) {
  if (!r) return;
  r->gen++; /* callbacks from the destruction find themselves stale */
  if (r->ok) ares_destroy(r->ch);
  tern__poller_free(r->poller);
  free(r->servers);
  free(r);
}

tern__poller *tern__resolver_poller(const tern__resolver *r) { return r->poller; }

static void on_nat64(void *arg, int status, int timeouts, struct ares_addrinfo *res);

/* The lookup is complete when every endpoint is and, if an IPv4 address
 * needs the NAT64 prefix, ipv4only.arpa has answered. */
static void finish(tern__resolver *r) {
  for (size_t i = 0; i < r->n; i++)
    if (r->ep[i].state != E_DONE) return;
  if (r->v6 && r->nat64_state != 2) {
    int need = 0;
    for (size_t i = 0; i < r->n && !need; i++)
      for (size_t k = 0; k < r->ep[i].n && !need; k++) need = tern__nat64_needed(&r->ep[i].addr[k]);
    if (need && r->nat64_state == 0) {
      r->nat64_state = 1;
      query *q = channel(r) == 0 ? malloc(sizeof(*q)) : NULL;
      if (q) {
        *q = (query){.r = r, .gen = r->gen, .idx = -1};
        struct ares_addrinfo_hints h = {.ai_family = AF_INET6, .ai_socktype = SOCK_DGRAM};
        ares_getaddrinfo(r->ch, "ipv4only.arpa", NULL, &h, on_nat64, q);
        return; /* (the callback may have run already and finished) */
      }
    }
    if (need && r->nat64_state == 1) return;
  }
  if (!r->active) return;
  /* Each endpoint's addresses in the resolver's order (RFC 6724), the
   * endpoints in the order given, then the families interleaved. */
  tern__addr all[TERN__RESOLVE_ENDPOINTS * TERN__RESOLVE_PER_NAME];
  size_t n = 0;
  for (size_t i = 0; i < r->n; i++)
    for (size_t k = 0; k < r->ep[i].n; k++) {
      tern__addr a = r->ep[i].addr[k];
      if (r->have_prefix && tern__nat64_needed(&a)) tern__nat64_apply(r->prefix, &a, &a);
      int dup = 0;
      for (size_t j = 0; j < n && !dup; j++) dup = tern__addr_equal(&all[j], &a);
      if (!dup) all[n++] = a;
    }
  r->active = 0;
  r->result = n ? (int)tern__addr_interleave(all, n, r->out, sizeof(r->out) / sizeof(r->out[0]))
                : r->ch_rc ? r->ch_rc : TERN_EADDR;
}

static void on_nat64(void *arg, int status, int timeouts, struct ares_addrinfo *res) {
  (void)timeouts;
  query *q = arg;
  tern__resolver *r = q->r;
  int live = q->gen == r->gen;
  free(q);
  if (!live) {
    if (res) ares_freeaddrinfo(res);
    return;
  }
  r->nat64_state = 2;
  for (struct ares_addrinfo_node *nd = status == ARES_SUCCESS && res ? res->nodes : NULL;
       nd && !r->have_prefix; nd = nd->ai_next) {
    tern__addr a;
    if (tern__addr_from_sockaddr(&a, nd->ai_addr, nd->ai_addrlen) == 0 &&
        tern__nat64_prefix_of(&a, r->prefix))
      r->have_prefix = 1;
  }
  if (res) ares_freeaddrinfo(res);
  finish(r);
}

static void on_name(void *arg, int status, int timeouts, struct ares_addrinfo *res) {
  (void)timeouts;
  query *q = arg;
  tern__resolver *r = q->r;
  int live = q->gen == r->gen;
  int idx = q->idx;
  free(q);
  if (!live) {
    if (res) ares_freeaddrinfo(res);
    return;
  }
  endpoint *e = &r->ep[idx];
  for (struct ares_addrinfo_node *nd = status == ARES_SUCCESS && res ? res->nodes : NULL;
       nd && e->n < TERN__RESOLVE_PER_NAME; nd = nd->ai_next) {
    tern__addr a;
    if (tern__addr_from_sockaddr(&a, nd->ai_addr, nd->ai_addrlen) != 0) continue;
    if (!r->v6 && !tern__addr_is_v4(&a)) continue;
    a.port = e->port;
    int dup = 0;
    for (size_t j = 0; j < e->n && !dup; j++) dup = tern__addr_equal(&e->addr[j], &a);
    if (!dup) e->addr[e->n++] = a;
  }
  if (res) ares_freeaddrinfo(res);
  e->state = E_DONE;
  finish(r);
}

void tern__resolver_cancel(tern__resolver *r) {
  r->gen++;
  r->active = 0;
  r->result = TERN_EADDR;
  if (r->ok) ares_cancel(r->ch); /* callbacks run now, and find themselves stale */
}

int tern__resolver_start(tern__resolver *r, const char *const *hosts, const uint16_t *ports,
                         size_t n, int v6) {
  tern__resolver_cancel(r);
  if (n == 0 || n > TERN__RESOLVE_ENDPOINTS) return TERN_EINVAL;
  memset(r->ep, 0, sizeof(r->ep));
  r->ch_rc = 0;
  r->n = n;
  r->v6 = v6;
  r->nat64_state = 0;
  r->have_prefix = 0;
  r->active = 1;
  r->result = 0;
  unsigned gen = r->gen;
  /* Literals first: they need no lookup. */
  for (size_t i = 0; i < n; i++) {
    endpoint *e = &r->ep[i];
    e->port = ports[i];
    tern__addr a;
    if (tern__addr_parse_ip(&a, hosts[i], ports[i]) == 0) {
      if (v6 || tern__addr_is_v4(&a)) e->addr[e->n++] = a;
      e->state = E_DONE;
    }
  }
  for (size_t i = 0; i < n && r->gen == gen; i++) {
    if (r->ep[i].state == E_DONE) continue;
    query *q = channel(r) == 0 ? malloc(sizeof(*q)) : NULL;
    if (!q) {
      r->ep[i].state = E_DONE; /* this endpoint fails; the others may not */
      continue;
    }
    *q = (query){.r = r, .gen = gen, .idx = (int)i};
    struct ares_addrinfo_hints h = {.ai_family = v6 ? AF_UNSPEC : AF_INET, .ai_socktype = SOCK_DGRAM};
    ares_getaddrinfo(r->ch, hosts[i], NULL, &h, on_name, q); /* may call back at once */
  }
  if (r->gen == gen) finish(r);
  return 0;
}

void tern__resolver_process(tern__resolver *r) {
  if (!r->ok) return;
  tern__poll_event ev[16];
  int k = tern__poller_wait(r->poller, ev, 16, 0);
  for (int i = 0; i < k; i++) {
    int fd = (int)ev[i].tag;
    ares_process_fd(r->ch, (ev[i].events & TERN__POLL_IN) ? fd : ARES_SOCKET_BAD,
                    (ev[i].events & TERN__POLL_OUT) ? fd : ARES_SOCKET_BAD);
  }
  ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* timeouts */
}

int tern__resolver_timeout(const tern__resolver *r) {
  struct timeval tv;
  if (!r->ok || !ares_timeout(r->ch, NULL, &tv)) return -1;
  long ms = (long)tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000;
  return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

int tern__resolver_result(const tern__resolver *r, tern__addr *out, size_t cap) {
  if (r->active) return 0;
  if (r->result < 0) return r->result;
  size_t n = (size_t)r->result < cap ? (size_t)r->result : cap;
  memcpy(out, r->out, n * sizeof(*out));
  return (int)n;
}
