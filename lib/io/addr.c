/* Transport addresses as bytes (addr.h). */
#include "io/addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "tern/tern.h"

static const uint8_t v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int tern__addr_is_v4(const tern__addr *a) { return memcmp(a->ip, v4_prefix, 12) == 0; }

uint32_t tern__addr_v4(const tern__addr *a) {
  return (uint32_t)a->ip[12] << 24 | (uint32_t)a->ip[13] << 16 | (uint32_t)a->ip[14] << 8 | a->ip[15];
}

void tern__addr_set_v4(tern__addr *a, uint32_t ip, uint16_t port) {
  memcpy(a->ip, v4_prefix, 12);
  a->ip[12] = (uint8_t)(ip >> 24);
  a->ip[13] = (uint8_t)(ip >> 16);
  a->ip[14] = (uint8_t)(ip >> 8);
  a->ip[15] = (uint8_t)ip;
  a->port = port;
}

int tern__addr_equal(const tern__addr *a, const tern__addr *b) {
  return a->port == b->port && memcmp(a->ip, b->ip, 16) == 0;
}

static uint8_t hash_key[crypto_shorthash_KEYBYTES];
static pthread_once_t hash_once = PTHREAD_ONCE_INIT;

static void hash_init(void) {
  if (sodium_init() < 0) abort(); /* tern_client_new and tern_relay_new checked it already */
  randombytes_buf(hash_key, sizeof(hash_key));
}

uint64_t tern__addr_hash(const tern__addr *a) {
  pthread_once(&hash_once, hash_init);
  uint8_t in[18], out[crypto_shorthash_BYTES];
  memcpy(in, a->ip, 16);
  in[16] = (uint8_t)(a->port >> 8);
  in[17] = (uint8_t)a->port;
  crypto_shorthash(out, in, sizeof(in), hash_key);
  uint64_t h;
  memcpy(&h, out, sizeof(h));
  return h;
}

int tern__addr_from_sockaddr(tern__addr *a, const struct sockaddr *sa, size_t len) {
  memset(a, 0, sizeof(*a));
  if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
    const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
    tern__addr_set_v4(a, ntohl(s->sin_addr.s_addr), ntohs(s->sin_port));
    return 0;
  }
  if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
    const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;
    memcpy(a->ip, &s->sin6_addr, 16);
    a->port = ntohs(s->sin6_port);
    return 0;
  }
  return TERN_EADDR;
}

size_t tern__addr_to_sockaddr(const tern__addr *a, int family, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof(*ss));
  if (family == AF_INET) {
    if (!tern__addr_is_v4(a)) return 0;
    struct sockaddr_in *s = (struct sockaddr_in *)ss;
    s->sin_family = AF_INET;
    s->sin_port = htons(a->port);
    s->sin_addr.s_addr = htonl(tern__addr_v4(a));
    return sizeof(*s);
  }
  struct sockaddr_in6 *s = (struct sockaddr_in6 *)ss;
  s->sin6_family = AF_INET6;
  s->sin6_port = htons(a->port);
  memcpy(&s->sin6_addr, a->ip, 16);
  return sizeof(*s);
}

size_t tern__addr_interleave(const tern__addr *in, size_t n, tern__addr *out, size_t cap) {
  if (n == 0) return 0;
  size_t k = 0, i1 = 0, i2 = 0;
  int first_v4 = tern__addr_is_v4(&in[0]);
  for (int turn = 0; k < cap && (i1 < n || i2 < n); turn ^= 1) {
    size_t *i = turn ? &i2 : &i1;
    int want_v4 = turn ? !first_v4 : first_v4;
    while (*i < n && tern__addr_is_v4(&in[*i]) != want_v4) (*i)++;
    if (*i < n) out[k++] = in[(*i)++];
  }
  return k;
}

static const uint8_t discard_prefix[8] = {0x01, 0x00, 0, 0, 0, 0, 0, 0};

void tern__addr_set_stream(tern__addr *a, uint32_t conn_id) {
  memset(a, 0, sizeof(*a));
  memcpy(a->ip, discard_prefix, sizeof(discard_prefix));
  a->ip[12] = (uint8_t)(conn_id >> 24);
  a->ip[13] = (uint8_t)(conn_id >> 16);
  a->ip[14] = (uint8_t)(conn_id >> 8);
  a->ip[15] = (uint8_t)conn_id;
}

int tern__addr_is_discard(const tern__addr *a) {
  return memcmp(a->ip, discard_prefix, sizeof(discard_prefix)) == 0;
}

int tern__addr_is_stream(const tern__addr *a, uint32_t *conn_id) {
  static const uint8_t zero[4];
  if (!tern__addr_is_discard(a) || a->port != 0 || memcmp(a->ip + 8, zero, 4) != 0) return 0;
  if (conn_id)
    *conn_id = (uint32_t)a->ip[12] << 24 | (uint32_t)a->ip[13] << 16 | (uint32_t)a->ip[14] << 8 | a->ip[15];
  return 1;
}

void tern__addr_format(const tern__addr *a, char *buf, size_t cap) {
  char ip[INET6_ADDRSTRLEN];
  if (tern__addr_is_v4(a)) {
    inet_ntop(AF_INET, a->ip + 12, ip, sizeof(ip));
    snprintf(buf, cap, "%s:%u", ip, a->port);
  } else {
    inet_ntop(AF_INET6, a->ip, ip, sizeof(ip));
    snprintf(buf, cap, "[%s]:%u", ip, a->port);
  }
}

int tern__addr_parse_ip(tern__addr *a, const char *host, uint16_t port) {
  char tmp[INET6_ADDRSTRLEN + 2];
  size_t n = strlen(host);
  if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
    if (n - 2 >= sizeof(tmp)) return TERN_EADDR;
    memcpy(tmp, host + 1, n - 2);
    tmp[n - 2] = 0;
    host = tmp;
  }
  struct in_addr v4;
  memset(a, 0, sizeof(*a));
  if (inet_pton(AF_INET, host, &v4) == 1) {
    tern__addr_set_v4(a, ntohl(v4.s_addr), port);
    return 0;
  }
  if (inet_pton(AF_INET6, host, a->ip) == 1) {
    a->port = port;
    return 0;
  }
  return TERN_EADDR;
}

static int parse_port(const char *s, uint16_t *port) {
  if (!*s) return TERN_EINVAL;
  unsigned long v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return TERN_EINVAL;
    v = v * 10 + (unsigned long)(*s - '0');
    if (v > 65535) return TERN_EINVAL;
  }
  if (v == 0) return TERN_EINVAL;
  *port = (uint16_t)v;
  return 0;
}

static int copy_host(char *host, size_t cap, const char *s, size_t n) {
  if (n == 0) return TERN_EINVAL;
  if (n >= cap) return TERN_EBUFSIZE;
  memcpy(host, s, n);
  host[n] = 0;
  return 0;
}

int tern__addr_split(const char *text, uint16_t default_port, char *host, size_t cap,
                     uint16_t *port) {
  *port = default_port;
  if (text[0] == '[') {
    const char *close = strchr(text, ']');
    if (!close) return TERN_EINVAL;
    int rc = copy_host(host, cap, text + 1, (size_t)(close - text - 1));
    if (rc) return rc;
    if (close[1] == 0) return default_port ? 0 : TERN_EINVAL;
    if (close[1] != ':') return TERN_EINVAL;
    return parse_port(close + 2, port);
  }
  const char *colon = strrchr(text, ':');
  if (colon && strchr(text, ':') != colon) {
    /* Two colons or more and no brackets: a bare IPv6 literal, no port. */
    if (!default_port) return TERN_EINVAL;
    return copy_host(host, cap, text, strlen(text));
  }
  if (!colon) {
    if (!default_port) return TERN_EINVAL;
    return copy_host(host, cap, text, strlen(text));
  }
  int rc = copy_host(host, cap, text, (size_t)(colon - text));
  return rc ? rc : parse_port(colon + 1, port);
}
