/*
 * The relay endpoint: accepts ENet peers, runs the responder side of the
 * handshake, asks the auth callback who a key is, and routes messages
 * between online users. An I/O shell around the session core.
 */
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "frame.h"
#include "link.h"
#include "session.h"
#include "tern/tern.h"

#define RELAY_BUF (TERN_MESSAGE_MAX + 4096)

typedef enum peer_state {
  P_HANDSHAKE = 0, /* ENet connected, no valid HELLO yet */
  P_OPEN,          /* authenticated */
  P_CLOSING,       /* being disconnected; ignore its input */
} peer_state;

typedef struct rpeer {
  tern__link_peer *lp;
  tern__session sess;
  peer_state state;
  uint64_t hs_deadline_ms;     /* monotonic: drop if still in P_HANDSHAKE */
  char user[TERN_USER_MAX + 1];
  size_t user_len;
  char name[32];               /* address:port, for logs */
  struct rpeer *prev, *next;   /* every peer the relay holds */
} rpeer;

struct tern_relay {
  tern_relay_config cfg;
  char *bind_host;
  tern__link *link;
  rpeer *peers;
  uint8_t *buf, *pkt;
  tern_relay_stats stats;
};

void tern_relay_config_default(tern_relay_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->bind_host = "0.0.0.0";
  cfg->port = 7400;
  cfg->handshake_timeout_ms = 5000;
  cfg->max_peers = 4095;
  cfg->max_message_size = 65536;
  /* The relay should never be the side that pings an idle client: the
   * client's own pings (every ping_interval_ms) reset this timer. */
  cfg->ping_interval_ms = 60000;
  cfg->timeout_min_ms = 3000;
  cfg->timeout_max_ms = 10000;
}

static void logf_(tern_relay *r, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void logf_(tern_relay *r, int level, const char *fmt, ...) {
  if (!r->cfg.log) return;
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  r->cfg.log(r->cfg.log_ctx, level, line);
}

int tern_relay_new(tern_relay **out, const tern_relay_config *cfg) {
  *out = NULL;
  if (!cfg->bind_host || cfg->max_peers == 0 || cfg->max_peers > 4095) return TERN_EINVAL;
  if (sodium_init() < 0) return TERN_ECRYPTO;
  tern_relay *r = calloc(1, sizeof(*r));
  if (!r) return TERN_ENOMEM;
  int rc = TERN_ENOMEM;
  r->cfg = *cfg;
  r->bind_host = strdup(cfg->bind_host);
  r->buf = malloc(RELAY_BUF);
  r->pkt = malloc(RELAY_BUF);
  if (!r->bind_host || !r->buf || !r->pkt) goto fail;
  r->cfg.bind_host = r->bind_host;
  if (r->cfg.max_message_size == 0 || r->cfg.max_message_size > TERN_MESSAGE_MAX)
    r->cfg.max_message_size = TERN_MESSAGE_MAX;
  if (crypto_scalarmult_base(r->cfg.keypair.public_key, r->cfg.keypair.secret_key) != 0) {
    rc = TERN_EINVAL;
    goto fail;
  }
  rc = tern__link_new(&r->link, r->bind_host, cfg->port, cfg->max_peers);
  if (rc) goto fail;
  *out = r;
  return 0;
fail:
  sodium_memzero(&r->cfg.keypair, sizeof(r->cfg.keypair));
  free(r->bind_host);
  free(r->buf);
  free(r->pkt);
  free(r);
  return rc;
}

static void unlink_peer(tern_relay *r, rpeer *p) {
  if (p->prev) p->prev->next = p->next;
  else r->peers = p->next;
  if (p->next) p->next->prev = p->prev;
  if (p->state == P_OPEN && r->stats.peers_connected) r->stats.peers_connected--;
  tern__session_wipe(&p->sess);
  free(p);
}

/* Seals `len` bytes of frames in r->buf and queues them to p. */
static int send_frames(tern_relay *r, rpeer *p, uint8_t channel, size_t len) {
  size_t n = 0;
  int rc = tern__session_seal(&p->sess, channel, r->buf, len, r->pkt, RELAY_BUF, &n);
  if (rc == TERN_ENONCE && p->state == P_OPEN) {
    p->state = P_CLOSING;
    r->stats.peers_connected--;
    tern__link_close(p->lp, TERN__DISC_NONCE, TERN__LINK_CLOSE_LATER);
  }
  if (rc) return rc;
  return tern__link_send(r->link, p->lp, channel, r->pkt, n, TERN__LINK_RELIABLE);
}

/* Sends a sealed CLOSE frame, then closes the link. */
static void close_peer(tern_relay *r, rpeer *p, int reason, uint32_t code, int how) {
  if (p->state == P_OPEN) {
    tern__wbuf w;
    tern__wbuf_init(&w, r->buf, RELAY_BUF);
    tern__fr_close_write(&w, (uint64_t)-reason);
    (void)send_frames(r, p, TERN__CH_CONTROL, w.len);
    r->stats.peers_connected--;
  }
  p->state = P_CLOSING;
  if (how == TERN__LINK_CLOSE_NOW) tern__link_flush(r->link);
  tern__link_close(p->lp, code, how);
}

void tern_relay_free(tern_relay *r) {
  if (!r) return;
  for (rpeer *p = r->peers; p; p = p->next) close_peer(r, p, TERN_ESHUTDOWN, TERN__DISC_SHUTDOWN,
                                                       TERN__LINK_CLOSE_NOW);
  while (r->peers) unlink_peer(r, r->peers);
  tern__link_free(r->link);
  sodium_memzero(&r->cfg.keypair, sizeof(r->cfg.keypair));
  if (r->buf) sodium_memzero(r->buf, RELAY_BUF);
  if (r->pkt) sodium_memzero(r->pkt, RELAY_BUF);
  free(r->bind_host);
  free(r->buf);
  free(r->pkt);
  free(r);
}

static void on_connect(tern_relay *r, tern__link_peer *lp) {
  rpeer *p = calloc(1, sizeof(*p));
  if (!p) {
    tern__link_close(lp, TERN__DISC_NONE, TERN__LINK_CLOSE_NOW);
    return;
  }
  p->lp = lp;
  p->hs_deadline_ms = tern__now_ms() + r->cfg.handshake_timeout_ms;
  tern__link_peer_name(lp, p->name, sizeof(p->name));
  tern__link_peer_set_timing(lp, r->cfg.ping_interval_ms, r->cfg.timeout_min_ms,
                             r->cfg.timeout_max_ms);
  tern__link_peer_set_data(lp, p);
  p->next = r->peers;
  if (r->peers) r->peers->prev = p;
  r->peers = p;
  logf_(r, 3, "peer %s: link up, waiting for handshake", p->name);
}

/* Picks the user name for an accepted key. */
static int authenticate(tern_relay *r, const uint8_t key[TERN_KEY_BYTES], const uint8_t *req,
                        size_t req_len, char user[TERN_USER_MAX + 1]) {
  char requested[TERN_USER_MAX + 1];
  memcpy(requested, req, req_len);
  requested[req_len] = 0;
  user[0] = 0;
  if (r->cfg.auth) {
    int rc = r->cfg.auth(r->cfg.auth_ctx, key, requested, user);
    if (rc) return TERN_EUNKNOWNKEY;
  } else if (req_len) {
    memcpy(user, requested, req_len + 1);
  } else {
    /* Open mode without a requested name: the key's first 8 bytes in hex. */
    char hex[TERN_KEY_HEX_BYTES];
    tern_key_to_hex(key, hex);
    memcpy(user, hex, 16);
    user[16] = 0;
  }
  user[TERN_USER_MAX] = 0;
  return tern__user_valid((const uint8_t *)user, strlen(user)) ? 0 : TERN_EUNKNOWNKEY;
}

static void route(tern_relay *r, rpeer *from, const tern__fr_msg *m);

static void on_frames(tern_relay *r, rpeer *p, const uint8_t *frames, size_t len, int early) {
  tern__rbuf rb, body;
  tern__rbuf_init(&rb, frames, len);
  uint8_t type;
  int more;
  while (p->state == P_OPEN && (more = tern__frame_next(&rb, &type, &body)) == 1) {
    if (type == TERN__FR_MSG) {
      tern__fr_msg m;
      if (tern__fr_msg_read(&body, TERN__FR_MSG, &m) != 0) {
        logf_(r, 1, "user %s (%s): malformed MSG frame dropped", p->user, p->name);
        continue;
      }
      route(r, p, &m);
    } else if (type == TERN__FR_HELLO && early) {
      continue; /* already handled */
    }
  }
}

/* WELCOME with `status` (0 or a TERN_E* code) and `reason`. */
static int send_welcome(tern_relay *r, rpeer *p, int status, const char *reason) {
  tern__wbuf w;
  tern__wbuf_init(&w, r->buf, TERN__HS_PAYLOAD_MAX);
  tern__fr_welcome wf = {.status = (uint64_t)-status,
                         .user = (const uint8_t *)p->user,
                         .user_len = p->user_len,
                         .server_time_ms = tern__wall_ms(),
                         .reason = (const uint8_t *)reason,
                         .reason_len = strlen(reason)};
  tern__fr_welcome_write(&w, &wf);
  size_t n = 0;
  int rc = tern__session_relay_welcome(&p->sess, r->buf, w.len, r->pkt, RELAY_BUF, &n);
  if (rc) return rc;
  return tern__link_send(r->link, p->lp, TERN__CH_CONTROL, r->pkt, n, TERN__LINK_RELIABLE);
}

static void fail_handshake(tern_relay *r, rpeer *p, int err, uint32_t code, const char *why) {
  r->stats.handshakes_failed++;
  logf_(r, 1, "peer %s: handshake failed: %s (%s)", p->name, why, tern_errname(err));
  /* CLOSE_NOW frees the ENet slot at once and gives no DISCONNECT event. */
  tern__link_close(p->lp, code, TERN__LINK_CLOSE_NOW);
  tern__link_peer_set_data(p->lp, NULL);
  unlink_peer(r, p);
}

static void on_hello(tern_relay *r, rpeer *p, const uint8_t *pkt, size_t len) {
  uint8_t e_priv[TERN_KEY_BYTES];
  randombytes_buf(e_priv, sizeof(e_priv));
  size_t plen = 0;
  int rc = tern__session_relay_hello(&p->sess, &r->cfg.keypair, e_priv, pkt, len, r->buf,
                                     TERN__HS_PAYLOAD_MAX, &plen);
  sodium_memzero(e_priv, sizeof(e_priv));
  if (rc == TERN_EVERSION) {
    fail_handshake(r, p, rc, TERN__DISC_VERSION, "unsupported protocol version");
    return;
  }
  if (rc == TERN_ERELAYKEY) {
    fail_handshake(r, p, rc, TERN__DISC_HELLO_UNREADABLE,
                   "message 1 does not open: the client pinned another relay key, or garbage");
    return;
  }
  if (rc) {
    fail_handshake(r, p, rc, TERN__DISC_PROTOCOL, "malformed HELLO");
    return;
  }
  /* Copy the payload out: r->buf is reused for WELCOME. */
  uint8_t payload[TERN__HS_PAYLOAD_MAX];
  memcpy(payload, r->buf, plen);
  tern__rbuf rb, body;
  tern__rbuf_init(&rb, payload, plen);
  uint8_t type;
  tern__fr_hello hello;
  if (tern__frame_next(&rb, &type, &body) != 1 || type != TERN__FR_HELLO ||
      tern__fr_hello_read(&body, &hello) != 0) {
    fail_handshake(r, p, TERN_EPROTO, TERN__DISC_PROTOCOL, "HELLO frame missing or malformed");
    return;
  }
  char key_hex[TERN_KEY_HEX_BYTES];
  tern_key_to_hex(p->sess.remote_static, key_hex);
  rc = authenticate(r, p->sess.remote_static, hello.user, hello.user_len, p->user);
  if (rc) {
    p->user[0] = 0;
    p->user_len = 0;
    (void)send_welcome(r, p, TERN_EUNKNOWNKEY, "this client key is not allowed on this relay");
    r->stats.handshakes_failed++;
    logf_(r, 1, "peer %s: refused unknown key %s", p->name, key_hex);
    p->state = P_CLOSING;
    tern__link_close(p->lp, TERN__DISC_REFUSED, TERN__LINK_CLOSE_LATER);
    return;
  }
  p->user_len = strlen(p->user);
  rc = send_welcome(r, p, 0, "");
  if (rc) {
    fail_handshake(r, p, rc, TERN__DISC_PROTOCOL, "could not send WELCOME");
    return;
  }
  /* Keep the relay from pinging first: follow the client's interval. */
  uint64_t ping = hello.ping_interval_ms * 2;
  if (ping < r->cfg.ping_interval_ms) ping = r->cfg.ping_interval_ms;
  if (ping > 3600000) ping = 3600000;
  tern__link_peer_set_timing(p->lp, (uint32_t)ping, r->cfg.timeout_min_ms, r->cfg.timeout_max_ms);
  p->state = P_OPEN;
  r->stats.handshakes_ok++;
  r->stats.peers_connected++;
  logf_(r, 2, "user %s connected from %s (key %.16s...)", p->user, p->name, key_hex);
  /* Early data: frames after HELLO in message 1. */
  size_t used = rb.pos;
  on_frames(r, p, payload + used, plen - used, 1);
}

static void refuse(tern_relay *r, rpeer *p, uint64_t cmid, int err) {
  r->stats.messages_refused++;
  tern__wbuf w;
  tern__wbuf_init(&w, r->buf, RELAY_BUF);
  tern__fr_failed f = {.cmid = cmid, .error = (uint64_t)-err};
  tern__fr_failed_write(&w, TERN__FR_FAILED, &f);
  (void)send_frames(r, p, TERN__CH_CONTROL, w.len);
}

static void route(tern_relay *r, rpeer *from, const tern__fr_msg *m) {
  if (m->body_len > r->cfg.max_message_size) {
    refuse(r, from, m->cmid, TERN_ETOOBIG);
    return;
  }
  /* The DELIVER frame is the same for every device of the recipient. */
  tern__wbuf w;
  tern__wbuf_init(&w, r->buf, RELAY_BUF - TERN__DATA_OVERHEAD);
  tern__fr_msg d = {.peer = (const uint8_t *)from->user, .peer_len = from->user_len,
                    .flags = m->flags, .body = m->body, .body_len = m->body_len};
  tern__fr_msg_write(&w, TERN__FR_DELIVER, &d);
  if (w.overflow) {
    refuse(r, from, m->cmid, TERN_ETOOBIG);
    return;
  }
  uint8_t ch = m->body_len > 16384 ? TERN__CH_BULK
                                   : tern__chat_channel((const uint8_t *)from->user, from->user_len,
                                                        m->peer, m->peer_len);
  int delivered = 0;
  for (rpeer *p = r->peers; p; p = p->next) {
    if (p->state != P_OPEN || p->user_len != m->peer_len || memcmp(p->user, m->peer, m->peer_len))
      continue;
    if (send_frames(r, p, ch, w.len) == 0) delivered++;
  }
  if (delivered) r->stats.messages_routed++;
  else refuse(r, from, m->cmid, TERN_EOFFLINE);
}

static void on_data(tern_relay *r, rpeer *p, uint8_t channel, const uint8_t *pkt, size_t len) {
  size_t n = 0;
  uint8_t stream;
  /* Open into r->pkt: r->buf is where outgoing frames are built. */
  int rc = tern__session_open(&p->sess, pkt, len, r->pkt, RELAY_BUF, &n, &stream);
  if (rc == 0 && stream != channel) rc = TERN_EPROTO; /* sealed for another channel */
  if (rc == TERN_EDECRYPT || rc == TERN_EPROTO) {
    r->stats.packets_rejected++;
    logf_(r, 3, "user %s: packet failed to open, dropped", p->user);
    return;
  }
  if (rc == TERN_EREPLAY) {
    r->stats.packets_replayed++;
    logf_(r, 3, "user %s: replayed packet dropped", p->user);
    return;
  }
  if (rc) return;
  /* Routing seals into r->pkt again, so work from a copy of the frames. */
  uint8_t *frames = malloc(n ? n : 1);
  if (!frames) return;
  memcpy(frames, r->pkt, n);
  on_frames(r, p, frames, n, 0);
  sodium_memzero(frames, n);
  free(frames);
}

static void on_event(tern_relay *r, tern__link_event *ev) {
  rpeer *p = ev->peer ? tern__link_peer_get_data(ev->peer) : NULL;
  switch (ev->type) {
    case TERN__LINK_EV_CONNECT:
      on_connect(r, ev->peer);
      break;
    case TERN__LINK_EV_RECEIVE:
      if (!p || ev->len == 0) break;
      if (p->state == P_HANDSHAKE && ev->channel == TERN__CH_CONTROL)
        on_hello(r, p, ev->payload, ev->len);
      else if (p->state == P_OPEN && ev->payload[0] == TERN__PKT_DATA)
        on_data(r, p, ev->channel, ev->payload, ev->len);
      break;
    case TERN__LINK_EV_DISCONNECT:
      if (!p) break;
      if (p->state == P_OPEN) logf_(r, 2, "user %s disconnected (%s)", p->user, p->name);
      tern__link_peer_set_data(ev->peer, NULL);
      unlink_peer(r, p);
      break;
    default:
      break;
  }
  tern__link_event_done(ev);
}

/* Drops peers that have not finished the handshake in time. */
static void handle_timers(tern_relay *r, uint64_t now) {
  for (rpeer *p = r->peers, *next; p; p = next) {
    next = p->next;
    if (p->state != P_HANDSHAKE || now < p->hs_deadline_ms) continue;
    r->stats.handshakes_failed++;
    logf_(r, 1, "peer %s: no handshake within %u ms, dropped", p->name,
          r->cfg.handshake_timeout_ms);
    /* CLOSE_NOW frees the ENet slot at once and gives no DISCONNECT event. */
    tern__link_close(p->lp, TERN__DISC_HS_TIMEOUT, TERN__LINK_CLOSE_NOW);
    tern__link_peer_set_data(p->lp, NULL);
    unlink_peer(r, p);
  }
}

static int core_timeout(const tern_relay *r, uint64_t now) {
  int best = -1;
  for (const rpeer *p = r->peers; p; p = p->next) {
    if (p->state != P_HANDSHAKE) continue;
    int t = now >= p->hs_deadline_ms ? 0 : (int)(p->hs_deadline_ms - now);
    if (best < 0 || t < best) best = t;
  }
  return best;
}

int tern_relay_timeout_ms(tern_relay *r) {
  int a = core_timeout(r, tern__now_ms()), b = tern__link_next_timeout_ms(r->link);
  if (a < 0) return b;
  if (b < 0) return a;
  return a < b ? a : b;
}

int tern_relay_fd(const tern_relay *r) { return tern__link_fd(r->link); }

uint16_t tern_relay_port(const tern_relay *r) { return tern__link_port(r->link); }

int tern_relay_service(tern_relay *r, int timeout_ms) {
  uint64_t end = tern__now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
  for (;;) {
    uint64_t now = tern__now_ms();
    handle_timers(r, now);
    int left = now >= end ? 0 : (int)(end - now);
    int wait = tern_relay_timeout_ms(r);
    if (wait < 0 || wait > left) wait = left;
    tern__link_event ev;
    int rc = tern__link_service(r->link, wait, &ev);
    if (rc < 0) return rc;
    if (rc == 1) {
      on_event(r, &ev);
      continue;
    }
    if (tern__now_ms() >= end) break;
  }
  tern__link_flush(r->link);
  return 0;
}

int tern_relay_recheck_auth(tern_relay *r) {
  int dropped = 0;
  for (rpeer *p = r->peers; p; p = p->next) {
    if (p->state != P_OPEN) continue;
    char user[TERN_USER_MAX + 1];
    if (authenticate(r, p->sess.remote_static, (const uint8_t *)p->user, p->user_len, user) == 0 &&
        strcmp(user, p->user) == 0)
      continue;
    logf_(r, 2, "user %s (%s): key no longer allowed, disconnecting", p->user, p->name);
    close_peer(r, p, TERN_EUNKNOWNKEY, TERN__DISC_REVOKED, TERN__LINK_CLOSE_LATER);
    dropped++;
  }
  tern__link_flush(r->link);
  return dropped;
}

void tern_relay_get_stats(const tern_relay *r, tern_relay_stats *st) { *st = r->stats; }
