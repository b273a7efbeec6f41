/*
 * libFuzzer target for the NAT-timeout probe datagrams (lib/wire/probe.c) and
 * the relay's probe service (lib/relay/probesvc.c).
 *
 * The whole input is first read as one datagram. tern__probe_parse and
 * tern__probe_verify must agree with the writer: a datagram that parses
 * has its type's exact size and re-encodes to the same header; one that
 * verifies under a key re-encodes to exactly the input.
 *
 * Then the input is run as a script (fuzz_common.h: raw datagrams,
 * correctly tagged requests and answers built from input fields, time
 * passing, sessions ending and starting) against a probe service with
 * small limits, with time drawn from the input. Checked after every step:
 *
 *   - a datagram without the magic is left to ENet, one with it is taken;
 *   - an immediate answer is an ACK, tagged under a live key, for the
 *     verified REQUEST just given (same id, nonce and wait);
 *   - every REPLY is tagged under a live key and goes to an address that
 *     sent something;
 *   - no address ever gets more bytes than it sent;
 *   - pending probes stay within the caps, and timeout() says 0 exactly
 *     when next_reply() has something;
 *   - once the longest wait has passed after the script, nothing is left.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fuzz_common.h"
#include "wire/probe.h"
#include "relay/probesvc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Index FZ_PROBE_KEYS is a key the service never has. */
static uint8_t ids[FZ_PROBE_KEYS + 1][TERN__PROBE_ID_BYTES];
static uint8_t keys[FZ_PROBE_KEYS + 1][TERN__PROBE_KEY_BYTES];

static void setup(void) {
  static int done;
  if (done) return;
  if (sodium_init() < 0) abort();
  for (unsigned n = 0; n <= FZ_PROBE_KEYS; n++) fz_probe_key(n, ids[n], keys[n]);
  done = 1;
}

/* ---- the input as one datagram ---- */

static void check_datagram(const uint8_t *d, size_t n) {
  tern__probe_pkt p;
  int rc = tern__probe_parse(d, n, &p);
  if (rc != 0) {
    if (rc != TERN_EPROTO) abort();
    return;
  }
  if (!tern__probe_looks_like(d, n)) abort();
  if (p.type < TERN__PROBE_REQUEST || p.type > TERN__PROBE_REPLY) abort();
  if (n != (p.type == TERN__PROBE_REQUEST ? TERN__PROBE_REQUEST_BYTES : TERN__PROBE_ANSWER_BYTES))
    abort();
  for (unsigned k = 0; k <= FZ_PROBE_KEYS; k++) {
    uint8_t re[TERN__PROBE_REQUEST_BYTES];
    if (tern__probe_write(&p, keys[k], re, sizeof re) != n) abort();
    if (memcmp(re, d, TERN__PROBE_HEAD_BYTES) != 0) abort();
    if (tern__probe_verify(re, n, keys[k]) != 0) abort();
    /* Only the key's holder makes a tag that verifies, and it writes
     * zero padding: a verified datagram is the writer's, byte for byte. */
    rc = tern__probe_verify(d, n, keys[k]);
    if (rc != 0 && rc != TERN_EDECRYPT) abort();
    if (rc == 0 && memcmp(re, d, n) != 0) abort();
  }
}

/* ---- the input as a script ---- */

typedef struct reader {
  const uint8_t *p;
  size_t n, pos;
} reader;

static int u8(reader *r, uint8_t *v) {
  if (r->pos >= r->n) return 0;
  *v = r->p[r->pos++];
  return 1;
}

static int u16(reader *r, uint16_t *v) {
  uint8_t a, b;
  if (!u8(r, &a) || !u8(r, &b)) return 0;
  *v = (uint16_t)(a << 8 | b);
  return 1;
}

typedef struct world {
  tern__psvc *s;
  tern__psvc_config cfg;
  int live[FZ_PROBE_KEYS];
  uint64_t now;
  uint64_t in[FZ_ADDRS], out[FZ_ADDRS]; /* bytes from / to each address */
} world;

static uint32_t ip_of(unsigned a) { return 0x0A000000u | ((a >> 2) & 3u); }
static uint16_t port_of(unsigned a) { return (uint16_t)(1000u + (a & 3u)); }

static unsigned addr_of(uint32_t ip, uint16_t port) {
  if ((ip & ~3u) != 0x0A000000u || port < 1000 || port > 1003) abort(); /* nobody sent from there */
  return (unsigned)((ip & 3u) << 2 | (unsigned)(port - 1000));
}

/* The live key whose id d carries, or -1. */
static int live_key_of(const world *w, const uint8_t *id) {
  for (unsigned k = 0; k < FZ_PROBE_KEYS; k++)
    if (w->live[k] && memcmp(ids[k], id, TERN__PROBE_ID_BYTES) == 0) return (int)k;
  return -1;
}

static void check_accounts(const world *w) {
  for (unsigned a = 0; a < FZ_ADDRS; a++)
    if (w->out[a] > w->in[a]) abort();
  size_t pend = tern__psvc_pending(w->s);
  if (pend > w->cfg.max_pending) abort();
  if (pend > FZ_PROBE_KEYS * w->cfg.per_key_pending) abort();
}

static void feed(world *w, unsigned a, const uint8_t *d, size_t n) {
  uint8_t ans[64];
  size_t alen = 999;
  a %= FZ_ADDRS;
  tern__addr from;
  tern__addr_set_v4(&from, ip_of(a), port_of(a));
  int taken = tern__psvc_input(w->s, &from, d, n, w->now, ans, sizeof ans, &alen);
  if (taken != 0 && taken != 1) abort();
  if (taken != tern__probe_looks_like(d, n)) abort();
  if (!taken) {
    if (alen != 0) abort();
    return;
  }
  w->in[a] += n;
  if (alen == 0) return;
  tern__probe_pkt q, p;
  if (alen != TERN__PROBE_ANSWER_BYTES || tern__probe_parse(ans, alen, &p) != 0 ||
      p.type != TERN__PROBE_ACK)
    abort();
  if (tern__probe_parse(d, n, &q) != 0 || q.type != TERN__PROBE_REQUEST) abort();
  int k = live_key_of(w, q.id);
  if (k < 0 || tern__probe_verify(d, n, keys[k]) != 0 || tern__probe_verify(ans, alen, keys[k]) != 0)
    abort();
  if (memcmp(p.id, q.id, sizeof p.id) != 0 || p.nonce != q.nonce || p.wait_ms != q.wait_ms) abort();
  if (q.wait_ms < w->cfg.min_wait_ms || q.wait_ms > w->cfg.max_wait_ms) abort();
  w->out[a] += alen;
}

static void drain(world *w) {
  for (;;) {
    uint8_t out[64];
    tern__addr to;
    size_t len = 999;
    int t = tern__psvc_timeout(w->s, w->now);
    int got = tern__psvc_next_reply(w->s, w->now, &to, out, sizeof out, &len);
    if (got && !tern__addr_is_v4(&to)) abort();
    uint32_t ip = got ? tern__addr_v4(&to) : 0;
    uint16_t port = got ? to.port : 0;
    if ((t == 0) != (got == 1)) abort();
    if (!got) {
      if (len != 0) abort();
      return;
    }
    tern__probe_pkt p;
    if (len != TERN__PROBE_ANSWER_BYTES || tern__probe_parse(out, len, &p) != 0 ||
        p.type != TERN__PROBE_REPLY)
      abort();
    int k = live_key_of(w, p.id);
    if (k < 0 || tern__probe_verify(out, len, keys[k]) != 0) abort();
    w->out[addr_of(ip, port)] += len;
    check_accounts(w);
  }
}

static void build(uint8_t type, unsigned key, uint8_t nonce, uint32_t wait_ms, uint8_t *out,
                  size_t *n) {
  tern__probe_pkt p = {.type = type, .nonce = nonce, .wait_ms = wait_ms};
  memcpy(p.id, ids[key], sizeof p.id);
  *n = tern__probe_write(&p, keys[key], out, TERN__PROBE_REQUEST_BYTES);
}

static void run_script(const uint8_t *data, size_t size) {
  static world w;
  memset(&w, 0, sizeof w);
  tern__psvc_config_default(&w.cfg);
  /* Small limits, so that short inputs reach them. */
  w.cfg.max_keys = FZ_PROBE_KEYS;
  w.cfg.max_pending = 10;
  w.cfg.per_key_pending = 4;
  w.cfg.per_ip_pending = 6;
  w.cfg.ip_burst = 6;
  w.cfg.ip_refill_ms = 50;
  if (tern__psvc_new(&w.s, &w.cfg) != 0) abort();
  for (unsigned k = 0; k < FZ_PROBE_KEYS; k++) {
    if (tern__psvc_add_key(w.s, k + 1, ids[k], keys[k]) != 0) abort();
    w.live[k] = 1;
  }
  w.now = 1;
  reader r = {data, size, 0};
  uint8_t op, a, k, nonce, len, type;
  uint16_t dt, wait;
  uint8_t d[TERN__PROBE_REQUEST_BYTES];
  size_t n;
  while (u8(&r, &op)) {
    switch (op % FZ_OP_COUNT) {
    case FZ_OP_RAW:
      if (!u16(&r, &dt) || !u8(&r, &a) || !u8(&r, &len)) goto end;
      if (len > r.n - r.pos) len = (uint8_t)(r.n - r.pos);
      w.now += dt;
      drain(&w);
      {
        /* An exact-size copy, so that a read past the end is caught. */
        uint8_t *copy = malloc(len ? len : 1);
        if (!copy) abort();
        if (len) memcpy(copy, r.p + r.pos, len);
        r.pos += len;
        feed(&w, a, copy, len);
        free(copy);
      }
      break;
    case FZ_OP_REQUEST:
      if (!u16(&r, &dt) || !u8(&r, &a) || !u8(&r, &k) || !u8(&r, &nonce) || !u16(&r, &wait)) goto end;
      w.now += dt;
      drain(&w);
      build(TERN__PROBE_REQUEST, k % (FZ_PROBE_KEYS + 1), nonce, (uint32_t)wait * 100, d, &n);
      feed(&w, a, d, n);
      break;
    case FZ_OP_ANSWER:
      if (!u16(&r, &dt) || !u8(&r, &a) || !u8(&r, &k) || !u8(&r, &nonce) || !u8(&r, &type)) goto end;
      w.now += dt;
      drain(&w);
      build(type & 1 ? TERN__PROBE_ACK : TERN__PROBE_REPLY, k % (FZ_PROBE_KEYS + 1), nonce, 5000, d, &n);
      feed(&w, a, d, n);
      break;
    case FZ_OP_WAIT:
      if (!u16(&r, &dt)) goto end;
      w.now += (uint64_t)dt * 1000;
      break;
    case FZ_OP_REMOVE:
      if (!u8(&r, &k)) goto end;
      k %= FZ_PROBE_KEYS;
      tern__psvc_remove_key(w.s, k + 1u);
      w.live[k] = 0;
      break;
    case FZ_OP_ADD:
      if (!u8(&r, &k)) goto end;
      k %= FZ_PROBE_KEYS;
      if (tern__psvc_add_key(w.s, k + 1u, ids[k], keys[k]) != 0) abort();
      w.live[k] = 1;
      break;
    }
    drain(&w);
    check_accounts(&w);
  }
end:
  w.now += w.cfg.max_wait_ms + 1;
  drain(&w);
  check_accounts(&w);
  if (tern__psvc_pending(w.s) != 0 || tern__psvc_timeout(w.s, w.now) != -1) abort();
  tern__psvc_free(w.s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup();
  uint8_t *copy = malloc(size ? size : 1);
  if (!copy) abort();
  if (size) memcpy(copy, data, size);
  check_datagram(copy, size);
  run_script(copy, size);
  free(copy);
  return 0;
}
