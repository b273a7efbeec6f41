/*
 * The client: an I/O shell around the session core. It owns the ENet link,
 * reads the clock and the random source, and turns frames into events.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "evqueue.h"
#include "frame.h"
#include "link.h"
#include "session.h"
#include "tern/tern.h"

/* Room for the largest frame batch plus sealing overhead. */
#define CLIENT_BUF (TERN_MESSAGE_MAX + 4096)

typedef enum client_state {
  C_IDLE = 0,      /* not connected */
  C_LINKING,       /* ENet connect in progress */
  C_HANDSHAKE,     /* HELLO sent, waiting for WELCOME */
  C_OPEN,          /* session open */
  C_CLOSING,       /* tern_client_disconnect() called */
} client_state;

struct tern_client {
  tern_client_config cfg;   /* relay_host and user point into the copies below */
  char *relay_host;
  char user_req[TERN_USER_MAX + 1];
  char user[TERN_USER_MAX + 1]; /* assigned by the relay */
  tern__link *link;
  tern__link_peer *peer;
  tern__session sess;
  client_state state;
  uint64_t attempt_start_ms;    /* monotonic time tern_client_connect() ran */
  int close_reason;             /* authenticated reason from a CLOSE frame */
  uint64_t next_cmid;
  tern__evq events;
  uint8_t *buf;                 /* scratch for one frame batch */
  uint8_t *pkt;                 /* scratch for one sealed packet */
  tern_client_stats stats;
};

void tern_client_config_default(tern_client_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->handshake_timeout_ms = 10000;
  cfg->max_message_size = 65536;
  cfg->ping_interval_ms = 15000;
  cfg->timeout_min_ms = 3000;
  cfg->timeout_max_ms = 10000;
}

int tern_client_new(tern_client **out, const tern_client_config *cfg) {
  *out = NULL;
  if (!cfg->relay_host || !cfg->relay_host[0] || cfg->relay_port == 0) return TERN_EINVAL;
  size_t ulen = cfg->user ? strlen(cfg->user) : 0;
  if (ulen && !tern__user_valid((const uint8_t *)cfg->user, ulen)) return TERN_EINVAL;
  if (sodium_init() < 0) return TERN_ECRYPTO;
  tern_client *c = calloc(1, sizeof(*c));
  if (!c) return TERN_ENOMEM;
  int rc = TERN_ENOMEM;
  c->cfg = *cfg;
  c->relay_host = strdup(cfg->relay_host);
  c->buf = malloc(CLIENT_BUF);
  c->pkt = malloc(CLIENT_BUF);
  if (!c->relay_host || !c->buf || !c->pkt) goto fail;
  memcpy(c->user_req, cfg->user ? cfg->user : "", ulen + 1);
  c->cfg.relay_host = c->relay_host;
  c->cfg.user = c->user_req;
  if (c->cfg.max_message_size == 0 || c->cfg.max_message_size > TERN_MESSAGE_MAX)
    c->cfg.max_message_size = TERN_MESSAGE_MAX;
  /* Derive the public key rather than trust the caller's copy. */
  if (crypto_scalarmult_base(c->cfg.keypair.public_key, c->cfg.keypair.secret_key) != 0) {
    rc = TERN_EINVAL;
    goto fail;
  }
  rc = tern__link_new(&c->link, NULL, 0, 1);
  if (rc) goto fail;
  tern__evq_init(&c->events);
  c->next_cmid = 1;
  *out = c;
  return 0;
fail:
  sodium_memzero(&c->cfg.keypair, sizeof(c->cfg.keypair));
  free(c->relay_host);
  free(c->buf);
  free(c->pkt);
  free(c);
  return rc;
}

void tern_client_free(tern_client *c) {
  if (!c) return;
  if (c->peer) tern__link_close(c->peer, TERN__DISC_GOODBYE, TERN__LINK_CLOSE_NOW);
  tern__link_free(c->link);
  tern__session_wipe(&c->sess);
  tern__evq_free(&c->events);
  sodium_memzero(&c->cfg.keypair, sizeof(c->cfg.keypair));
  if (c->buf) sodium_memzero(c->buf, CLIENT_BUF);
  if (c->pkt) sodium_memzero(c->pkt, CLIENT_BUF);
  free(c->relay_host);
  free(c->buf);
  free(c->pkt);
  free(c);
}

static void push(tern_client *c, tern_event_type type, int error, uint64_t cmid, const char *user,
                 const uint8_t *body, size_t body_len) {
  tern_event ev = {.type = type, .error = error, .cmid = cmid, .user = user, .body = body,
                   .body_len = body_len};
  /* Out of memory for an event: nothing better to do than drop it. */
  (void)tern__evq_push(&c->events, &ev);
}

/* Ends the link attempt or session and reports why. */
static void drop(tern_client *c, int error, int close_how, uint32_t code) {
  if (c->peer && close_how >= 0) tern__link_close(c->peer, code, close_how);
  c->peer = NULL;
  tern__session_wipe(&c->sess);
  c->state = C_IDLE;
  c->close_reason = 0;
  push(c, TERN_EV_DISCONNECTED, error, 0, NULL, NULL, 0);
}

int tern_client_connect(tern_client *c) {
  if (c->state != C_IDLE) return TERN_EINVAL;
  tern__link_peer *p;
  int rc = tern__link_connect(c->link, c->relay_host, c->cfg.relay_port, &p);
  if (rc) return rc;
  tern__link_peer_set_timing(p, c->cfg.ping_interval_ms, c->cfg.timeout_min_ms,
                             c->cfg.timeout_max_ms);
  c->peer = p;
  c->state = C_LINKING;
  tern__link_flush(c->link); /* the connect request leaves now, not at the next service */
  c->attempt_start_ms = tern__now_ms();
  c->close_reason = 0;
  c->user[0] = 0;
  return 0;
}

int tern_client_disconnect(tern_client *c) {
  if (c->state == C_IDLE || c->state == C_CLOSING || !c->peer) return TERN_ECLOSED;
  if (c->state != C_OPEN) {
    /* Nothing established yet: give up the attempt at once. */
    drop(c, TERN_ECLOSED, TERN__LINK_CLOSE_NOW, TERN__DISC_GOODBYE);
    return 0;
  }
  /* LATER, not GRACEFUL: ENet drops queued packets on a plain disconnect. */
  tern__link_close(c->peer, TERN__DISC_GOODBYE, TERN__LINK_CLOSE_LATER);
  tern__link_flush(c->link);
  c->state = C_CLOSING;
  return 0;
}

/* ENet is connected: send HELLO. */
static void on_link_up(tern_client *c) {
  tern__wbuf w;
  tern__wbuf_init(&w, c->buf, TERN__HS_PAYLOAD_MAX);
  tern__fr_hello hello = {.user = (const uint8_t *)c->user_req,
                          .user_len = strlen(c->user_req),
                          .ping_interval_ms = c->cfg.ping_interval_ms};
  tern__fr_hello_write(&w, &hello);
  uint8_t e_priv[TERN_KEY_BYTES];
  randombytes_buf(e_priv, sizeof(e_priv));
  size_t n = 0;
  int rc = w.overflow ? TERN_EBUFSIZE
                      : tern__session_client_hello(&c->sess, &c->cfg.keypair,
                                                   c->cfg.relay_public_key, e_priv, c->buf, w.len,
                                                   c->pkt, CLIENT_BUF, &n);
  sodium_memzero(e_priv, sizeof(e_priv));
  if (rc == 0) rc = tern__link_send(c->link, c->peer, TERN__CH_CONTROL, c->pkt, n, TERN__LINK_RELIABLE);
  if (rc) {
    drop(c, TERN_EHANDSHAKE, TERN__LINK_CLOSE_NOW, TERN__DISC_PROTOCOL);
    return;
  }
  c->state = C_HANDSHAKE;
}

/* A WELCOME arrived: finish the handshake or report the refusal. */
static void on_welcome(tern_client *c, const uint8_t *pkt, size_t len) {
  size_t plen = 0;
  int rc = tern__session_client_welcome(&c->sess, pkt, len, c->buf, TERN__HS_PAYLOAD_MAX, &plen);
  if (rc) {
    /* Only the codes tern.h lists for DISCONNECTED reach the app. */
    if (rc != TERN_ERELAYKEY && rc != TERN_EVERSION) rc = TERN_EPROTO;
    drop(c, rc, TERN__LINK_CLOSE_NOW, TERN__DISC_PROTOCOL);
    return;
  }
  tern__rbuf r, body;
  tern__rbuf_init(&r, c->buf, plen);
  uint8_t type;
  tern__fr_welcome wf;
  if (tern__frame_next(&r, &type, &body) != 1 || type != TERN__FR_WELCOME ||
      tern__fr_welcome_read(&body, &wf) != 0) {
    drop(c, TERN_EPROTO, TERN__LINK_CLOSE_NOW, TERN__DISC_PROTOCOL);
    return;
  }
  if (wf.status != 0) {
    /* An authenticated refusal: the relay proved its key, then said no. */
    int err = wf.status <= 64 ? -(int)wf.status : TERN_EHANDSHAKE;
    drop(c, err, TERN__LINK_CLOSE_NOW, TERN__DISC_GOODBYE);
    return;
  }
  if (!tern__user_valid(wf.user, wf.user_len)) {
    drop(c, TERN_EPROTO, TERN__LINK_CLOSE_NOW, TERN__DISC_PROTOCOL);
    return;
  }
  memcpy(c->user, wf.user, wf.user_len);
  c->user[wf.user_len] = 0;
  c->state = C_OPEN;
  push(c, TERN_EV_CONNECTED, 0, 0, c->user, NULL, 0);
}

static void on_frames(tern_client *c, const uint8_t *frames, size_t len) {
  tern__rbuf r, body;
  tern__rbuf_init(&r, frames, len);
  uint8_t type;
  int more;
  while ((more = tern__frame_next(&r, &type, &body)) == 1) {
    if (type == TERN__FR_DELIVER) {
      tern__fr_msg m;
      if (tern__fr_msg_read(&body, TERN__FR_DELIVER, &m) != 0) continue;
      char from[TERN_USER_MAX + 1];
      memcpy(from, m.peer, m.peer_len);
      from[m.peer_len] = 0;
      push(c, TERN_EV_MESSAGE, 0, 0, from, m.body, m.body_len);
    } else if (type == TERN__FR_FAILED) {
      tern__fr_failed f;
      if (tern__fr_failed_read(&body, &f) != 0) continue;
      int err = f.error > 0 && f.error <= 64 ? -(int)f.error : TERN_EPROTO;
      push(c, TERN_EV_SEND_FAILED, err, f.cmid, NULL, NULL, 0);
    } else if (type == TERN__FR_CLOSE) {
      uint64_t reason;
      if (tern__fr_close_read(&body, &reason) == 0 && reason > 0 && reason <= 64)
        c->close_reason = -(int)reason;
    }
    /* Unknown frame types are skipped (spec/wire.md). */
  }
}

static void on_receive(tern_client *c, const tern__link_event *ev) {
  if (ev->len == 0) return;
  if (c->state == C_HANDSHAKE && ev->payload[0] == TERN__PKT_WELCOME) {
    on_welcome(c, ev->payload, ev->len);
    return;
  }
  if ((c->state != C_OPEN && c->state != C_CLOSING) || ev->payload[0] != TERN__PKT_DATA) return;
  size_t n = 0;
  uint8_t stream;
  int rc = tern__session_open(&c->sess, ev->payload, ev->len, c->buf, CLIENT_BUF, &n, &stream);
  if (rc == 0 && stream != ev->channel) rc = TERN_EPROTO; /* sealed for another channel */
  if (rc == TERN_EDECRYPT || rc == TERN_EPROTO) c->stats.packets_rejected++;
  if (rc == TERN_EREPLAY) c->stats.packets_replayed++;
  if (rc) return; /* dropped and counted; the session carries on */
  c->stats.packets_received++;
  on_frames(c, c->buf, n);
}

/* Why the link went down, from what the client knows. ENet's disconnect
 * code is unauthenticated, so it only picks among failures that were
 * possible anyway at that stage. */
static int disconnect_reason(const tern_client *c, uint32_t code) {
  if (c->state == C_CLOSING) return TERN_ECLOSED;
  if (c->close_reason) return c->close_reason;
  if (c->state == C_LINKING) return TERN_ETIMEDOUT;
  if (c->state == C_HANDSHAKE) {
    switch (code) {
      case TERN__DISC_HELLO_UNREADABLE: return TERN_ERELAYKEY;
      case TERN__DISC_VERSION: return TERN_EVERSION;
      case TERN__DISC_SHUTDOWN: return TERN_ESHUTDOWN;
      default: return TERN_EHANDSHAKE;
    }
  }
  switch (code) {
    case TERN__DISC_SHUTDOWN: return TERN_ESHUTDOWN;
    case TERN__DISC_NONCE: return TERN_ENONCE;
    case TERN__DISC_PROTOCOL: return TERN_EPROTO;
    case TERN__DISC_REVOKED: return TERN_EUNKNOWNKEY;
    case TERN__DISC_GOODBYE: return TERN_ECLOSED;
    default: return TERN_ETIMEDOUT;
  }
}

static void on_link_event(tern_client *c, tern__link_event *ev) {
  if (ev->peer != c->peer) {
    tern__link_event_done(ev);
    return;
  }
  switch (ev->type) {
    case TERN__LINK_EV_CONNECT:
      if (c->state == C_LINKING) on_link_up(c);
      break;
    case TERN__LINK_EV_RECEIVE:
      on_receive(c, ev);
      break;
    case TERN__LINK_EV_DISCONNECT:
      drop(c, disconnect_reason(c, ev->data), -1, 0);
      break;
    default:
      break;
  }
  tern__link_event_done(ev);
}

/* Deadline of the session core, in ms from now, or -1. */
static int core_timeout(const tern_client *c, uint64_t now) {
  if (c->state != C_LINKING && c->state != C_HANDSHAKE) return -1;
  uint64_t deadline = c->attempt_start_ms + c->cfg.handshake_timeout_ms;
  return now >= deadline ? 0 : (int)(deadline - now);
}

static void handle_timers(tern_client *c, uint64_t now) {
  if (core_timeout(c, now) == 0)
    drop(c, c->state == C_LINKING ? TERN_ETIMEDOUT : TERN_EHANDSHAKE, TERN__LINK_CLOSE_NOW,
         TERN__DISC_HS_TIMEOUT);
}

static int min_timeout(int a, int b) {
  if (a < 0) return b;
  if (b < 0) return a;
  return a < b ? a : b;
}

int tern_client_timeout_ms(tern_client *c) {
  return min_timeout(core_timeout(c, tern__now_ms()), tern__link_next_timeout_ms(c->link));
}

int tern_client_fd(const tern_client *c) { return tern__link_fd(c->link); }

int tern_client_service(tern_client *c, int timeout_ms) {
  tern__evq_release(&c->events);
  uint64_t start = tern__now_ms();
  uint64_t end = start + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
  for (;;) {
    uint64_t now = tern__now_ms();
    handle_timers(c, now);
    int left = now >= end ? 0 : (int)(end - now);
    int wait = c->events.count ? 0 : min_timeout(left, tern_client_timeout_ms(c));
    if (wait < 0 || wait > left) wait = left;
    tern__link_event ev;
    int rc = tern__link_service(c->link, wait, &ev);
    if (rc < 0) return rc;
    if (rc == 1) {
      on_link_event(c, &ev);
      continue; /* drain whatever else arrived before deciding to return */
    }
    if (c->events.count || tern__now_ms() >= end) break;
  }
  tern__link_flush(c->link);
  return (int)c->events.count;
}

int tern_client_next_event(tern_client *c, tern_event *ev) { return tern__evq_take(&c->events, ev); }

int tern_client_send(tern_client *c, const char *to, const void *body, size_t len, uint64_t *cmid) {
  if (cmid) *cmid = 0;
  size_t tlen = strlen(to);
  if (!tern__user_valid((const uint8_t *)to, tlen)) return TERN_EINVAL;
  if (len && !body) return TERN_EINVAL;
  if (len > c->cfg.max_message_size) return TERN_ETOOBIG;
  if (c->state != C_OPEN) return TERN_ECLOSED;
  uint64_t id = c->next_cmid++;
  tern__wbuf w;
  tern__wbuf_init(&w, c->buf, CLIENT_BUF - TERN__DATA_OVERHEAD);
  tern__fr_msg m = {.cmid = id, .peer = (const uint8_t *)to, .peer_len = tlen, .flags = 0,
                    .body = body, .body_len = len};
  tern__fr_msg_write(&w, TERN__FR_MSG, &m);
  if (w.overflow) return TERN_ETOOBIG;
  uint8_t ch = len > 16384 ? TERN__CH_BULK
                           : tern__chat_channel((const uint8_t *)c->user, strlen(c->user),
                                                (const uint8_t *)to, tlen);
  size_t n = 0;
  int rc = tern__session_seal(&c->sess, ch, c->buf, w.len, c->pkt, CLIENT_BUF, &n);
  if (rc == TERN_ENONCE) {
    drop(c, TERN_ENONCE, TERN__LINK_CLOSE_LATER, TERN__DISC_NONCE);
    return rc;
  }
  if (rc) return rc;
  rc = tern__link_send(c->link, c->peer, ch, c->pkt, n, TERN__LINK_RELIABLE);
  if (rc) return rc;
  /* Out now: an app driving the client from its own poll loop may not
   * service it again until input arrives. */
  tern__link_flush(c->link);
  c->stats.packets_sent++;
  if (cmid) *cmid = id;
  return 0;
}

const uint8_t *tern_client_public_key(const tern_client *c) { return c->cfg.keypair.public_key; }

void tern_client_get_stats(const tern_client *c, tern_client_stats *st) { *st = c->stats; }
