/*
 * The client's connection: ENet glue, the handshake (HELLO with early data,
 * WELCOME), sealing and opening DATA packets, dropping a link with its
 * reason, and the timers of the loop (connect attempts, the dead link).
 * spec/handshake.md 5.1 is its state machine.
 */
#include "client/client_impl.h"

/* The longest wait a GOAWAY may impose (spec/wire.md §6.14): an hour. */
#define GOAWAY_MAX_MS 3600000u

/* The link's RTT to the relay, for the core's copy timing. */
void tern__cl_sync_rtt(tern_client *c) {
  tern__ccore_set_rtt(c->core, c->state == C_OPEN ? tern__link_peer_rtt(c->peer) : 0);
}

/* Abandons the race's connect i (a goodbye goes to the relay). */
static void close_attempt(tern_client *c, size_t i) {
  if (!c->att[i]) return;
  tern__link_close(c->link, c->att[i], TERN__DISC_GOODBYE, TERN__LINK_CLOSE_NOW);
  c->att[i] = NULL;
}

/* Ends the link and reports why; schedules a reconnect if wanted. */
void tern__cl_drop(tern_client *c, int error, int close_how, uint32_t code) {
  if (c->peer && close_how >= 0) tern__link_close(c->link, c->peer, code, close_how);
  c->peer = NULL;
  for (size_t i = 0; i < TERN__RACE_MAX; i++) close_attempt(c, i);
  c->on_tcp = 0;
  if (c->state == C_RESOLVING) tern__resolver_cancel(c->res);
  tern__session_wipe(&c->sess);
  c->nstash = 0;
  int was_open = c->state == C_OPEN || c->state == C_CLOSING;
  c->state = C_IDLE;
  c->close_reason = 0;
  c->key_requested = 0;
  c->has_reset_token = 0; /* the token was this session's */
  c->reset_pending = 0;
  sodium_memzero(c->reset_token, sizeof(c->reset_token));
  tern__ka_session_down(&c->ka); /* its probe key was this session's */
  tern__ccore_offline(c->core);
  uint64_t now = tern__now_ms();
  if (error == TERN_ESHUTDOWN && c->nep > 1) {
    /* The relay is draining or going down: the next endpoint first
     * ("elsewhere if you can", spec/wire.md §6.14). */
    c->ep_first = (c->ep_first + 1) % c->nep;
  }
  if (error == TERN_EREPLACED) c->want_online = 0; /* spec/wire.md §8.1: no turns */
  int goaway = c->goaway;
  c->goaway = 0;
  if (c->want_online && goaway) {
    tern__backoff_reset(&c->backoff); /* the relay chose the delay: exactly that */
    c->next_attempt_ms = now + c->goaway_ms;
  } else if (c->want_online && c->retry_now) {
    tern__backoff_reset(&c->backoff);
    c->next_attempt_ms = now; /* the path changed, not the relay */
  } else if (c->want_online) {
    /* A session that was up resets the backoff; a failed attempt grows it. */
    if (was_open) tern__backoff_reset(&c->backoff);
    c->next_attempt_ms = now + tern__backoff_next(&c->backoff, randombytes_random());
  }
  if (c->want_online && c->next_attempt_ms == 0) c->next_attempt_ms = 1;
  c->retry_now = 0;
  tern__cl_push_retry(c, TERN_EV_DISCONNECTED, error, c->want_online ? c->next_attempt_ms - now : 0);
  if (c->want_online)
    cl_log(c, was_open ? 1 : 2, "%s: %s; next try in %llu ms", was_open ? "session lost" : "connect failed",
           tern_strerror(error), (unsigned long long)(c->next_attempt_ms - now));
  else
    cl_log(c, 2, "offline: %s", tern_strerror(error));
}

void tern__cl_take_full(tern_client *c, uint64_t now) {
  if (!c->full_pending) return;
  c->full_pending = 0;
  if (c->state != C_LINKING) return;
  tern__cl_drop(c, TERN_EFULL, TERN__LINK_CLOSE_NOW, TERN__DISC_GOODBYE);
  if (!c->want_online) return;
  /* The larger of the relay's hint and our backoff, plus up to half of it
   * again, so that the clients a full relay refused do not return together. */
  uint64_t wait = tern__backoff_next(&c->backoff, randombytes_random());
  if (wait < c->full_retry_ms) wait = c->full_retry_ms;
  wait += randombytes_uniform((uint32_t)(wait / 2) + 1);
  c->next_attempt_ms = now + wait;
}

/* relay_host: one or more endpoints, comma-separated, each "HOST",
 * "HOST:PORT", "[V6]:PORT" or a bare IPv6 literal. Items that do not parse
 * are skipped. */
size_t tern__cl_parse_endpoints(tern_client *c) {
  size_t n = 0;
  const char *s = c->relay_host;
  while (*s && n < TERN__RACE_ADDRS) {
    while (*s == ',' || *s == ' ') s++;
    size_t len = strcspn(s, ", ");
    if (!len) break;
    char item[300];
    if (len < sizeof(item)) {
      memcpy(item, s, len);
      item[len] = 0;
      if (tern__addr_split(item, c->cfg.relay_port, c->ep_host[n], sizeof(c->ep_host[n]),
                           &c->ep_port[n]) == 0 && c->ep_host[n][0])
        n++;
    }
    s += len;
  }
  c->nep = n;
  return n;
}

void tern__cl_race_step(tern_client *c, uint64_t now) {
  if (c->state != C_LINKING) return;
  for (size_t i = 0; i < c->race.n; i++)
    if (c->att[i] && !tern__link_peer_alive(c->link, c->att[i])) {
      /* Its TCP connection was refused or broke. */
      close_attempt(c, i);
      tern__race_failed(&c->race, i, now);
    }
  size_t i;
  int started = 0;
  while (tern__race_next(&c->race, now, &i)) {
    const tern__race_entry *e = &c->race.e[i];
    tern__link_peer *p;
    int rc = e->tcp ? tern__link_connect_tcp(c->link, &e->addr, &p)
                    : tern__link_connect_addr(c->link, &e->addr, &p);
    char name[TERN__ADDR_TEXT];
    tern__addr_format(&e->addr, name, sizeof(name));
    if (rc) {
      cl_log(c, 3, "cannot connect to %s over %s: %s", name, e->tcp ? "TCP" : "UDP", tern_strerror(rc));
      tern__race_failed(&c->race, i, now); /* unreachable family, no slot: the next */
      continue;
    }
    if (e->tcp && i == c->race.nudp)
      cl_log(c, 2, "no answer over UDP yet: trying TCP port %u too", e->addr.port);
    cl_log(c, 3, "connecting to %s over %s", name, e->tcp ? "TCP" : "UDP");
    tern__link_peer_set_timing(p, tern__cl_enet_ping_ms(c), c->cfg.timeout_min_ms,
                               c->cfg.timeout_max_ms);
    c->att[i] = p;
    started = 1;
  }
  if (started) tern__link_flush(c->link); /* the connect requests leave now */
}

int tern__cl_start_attempt(tern_client *c) {
  const char *hosts[TERN__RACE_ADDRS];
  uint16_t ports[TERN__RACE_ADDRS];
  for (size_t i = 0; i < c->nep; i++) {
    size_t k = (c->ep_first + i) % c->nep;
    hosts[i] = c->ep_host[k];
    ports[i] = c->ep_port[k];
  }
  uint64_t now = tern__now_ms();
  int rc = tern__resolver_start(c->res, hosts, ports, c->nep, tern__link_has_v6(c->link));
  if (rc) return rc;
  c->state = C_RESOLVING;
  c->attempt_start_ms = now;
  c->next_attempt_ms = 0;
  c->close_reason = 0;
  c->goaway = 0;
  c->user[0] = 0;
  cl_log(c, 3, "looking up %s", c->relay_host);
  tern__cl_resolve_step(c, now); /* literals are resolved already */
  return 0;
}

void tern__cl_resolve_step(tern_client *c, uint64_t now) {
  if (c->state != C_RESOLVING) return;
  tern__resolver_process(c->res);
  tern__addr addrs[TERN__RACE_ADDRS];
  int n = tern__resolver_result(c->res, addrs, TERN__RACE_ADDRS);
  int timed_out = n == 0 && now >= c->attempt_start_ms + c->cfg.resolve_timeout_ms;
  if (timed_out) n = TERN_EADDR;
  if (n < 0) {
    /* No address (yet): the name does not resolve, or DNS is slow or
     * unreachable. Into the backoff, like any failed attempt. */
    cl_log(c, 1, "no address for %s%s%s", c->relay_host, timed_out ? " (the lookup timed out)" : "",
           n == TERN_EADDR ? "" : n == TERN_ENOMEM ? " (out of memory for DNS)" : " (DNS could not be set up)");
    tern__cl_drop(c, TERN_EADDR, -1, 0);
    return;
  }
  if (n == 0) return;
  tern__race_init(&c->race, addrs, (size_t)n, c->cfg.relay_tcp_port, c->cfg.connect_stagger_ms,
                  c->udp_blocked ? 0 : c->cfg.tcp_fallback_ms, now);
  c->state = C_LINKING;
  tern__cl_race_step(c, now);
  if (tern__race_lost(&c->race)) tern__cl_drop(c, TERN_EADDR, -1, 0); /* not one could start */
}

/* Connect i of the race finished first: it carries the session, and the
 * others are abandoned. */
static void race_won(tern_client *c, size_t i) {
  c->peer = c->att[i];
  c->att[i] = NULL;
  for (size_t k = 0; k < TERN__RACE_MAX; k++) close_attempt(c, k);
  const tern__race_entry *e = &c->race.e[i];
  char name[TERN__ADDR_TEXT];
  tern__addr_format(&e->addr, name, sizeof(name));
  cl_log(c, 2, "connected to %s over %s; handshake", name, e->tcp ? "TCP" : "UDP");
  c->on_tcp = e->tcp;
  c->relay_addr = e->addr;
  if (e->tcp) {
    /* The relay's UDP address on the same host: where probes and a move
     * back to UDP go. */
    c->relay_addr.port = c->cfg.relay_port;
    for (size_t k = 0; k < c->race.nudp; k++)
      if (memcmp(c->race.e[k].addr.ip, e->addr.ip, 16) == 0) c->relay_addr = c->race.e[k].addr;
  }
}

/* ENet is connected: send HELLO. */
static void on_link_up(tern_client *c) {
  tern__wbuf w;
  tern__wbuf_init(&w, c->buf, TERN__HS_PAYLOAD_MAX);
  tern__fr_hello hello = {.user = (const uint8_t *)c->user_req,
                          .user_len = strlen(c->user_req),
                          .ping_interval_ms = tern__ka_interval(&c->ka),
                          .token = c->token,
                          .token_len = c->token_len};
  c->announced_ms = (uint32_t)hello.ping_interval_ms;
  /* Strictly increasing per device key, across restarts (the store keeps
   * the last one): the relay refuses a HELLO whose timestamp is not above
   * the last it accepted, which is what makes a recorded one useless. If
   * the store cannot keep it, the one in memory still increases. */
  uint64_t now_us = tern__wall_ms() * 1000;
  if (now_us <= c->hello_us) now_us = c->hello_us + 1;
  int src = tern__cstore_hello_time(c->store, now_us, &hello.time_us);
  if (src < 0) {
    cl_log(c, 1, "cannot keep the HELLO timestamp (%s): %s", tern_errname(src), tern__cstore_errmsg(c->store));
    hello.time_us = now_us;
  }
  c->hello_us = hello.time_us;
  tern__fr_hello_write(&w, &hello);
  /* Early data: the first messages of the outbox ride in message 1, so the
   * relay can accept one half a round trip after ENet's connect instead of
   * two round trips later. A recorded message 1 played again opens nothing
   * (its timestamp is stale), and a resent MSG is answered from the relay's
   * dedup on (device, cmid) (spec/handshake.md §6). */
  if (!w.overflow)
    w.len += tern__ccore_early(c->core, c->buf + w.len, TERN__HS_PAYLOAD_MAX - w.len,
                               tern__now_ms());
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
    tern__cl_drop(c, TERN_EHANDSHAKE, TERN__LINK_CLOSE_NOW, TERN__DISC_PROTOCOL);
    return;
  }
  c->state = C_HANDSHAKE;
}

static void on_data(tern_client *c, uint8_t channel, const uint8_t *pkt, size_t len);

/* A WELCOME arrived: finish the handshake or report the refusal. */
static void on_welcome(tern_client *c, const uint8_t *pkt, size_t len) {
  size_t plen = 0;
  int rc = tern__session_client_welcome(&c->sess, pkt, len, c->buf, TERN__HS_PAYLOAD_MAX, &plen);
  if (rc) {
    /* Only the codes tern.h lists for DISCONNECTED reach the app. */
    if (rc != TERN_ERELAYKEY && rc != TERN_EVERSION) rc = TERN_EPROTO;
    tern__cl_drop(c, rc, TERN__LINK_CLOSE_NOW, TERN__DISC_PROTOCOL);
    return;
  }
  tern__rbuf r, body;
  tern__rbuf_init(&r, c->buf, plen);
  uint8_t type;
  tern__fr_welcome wf;
  if (tern__frame_next(&r, &type, &body) != 1 || type != TERN__FR_WELCOME ||
      tern__fr_welcome_read(&body, &wf) != 0) {
    tern__cl_drop(c, TERN_EPROTO, TERN__LINK_CLOSE_NOW, TERN__DISC_PROTOCOL);
    return;
  }
  if (wf.status != 0) {
    /* An authenticated refusal: the relay proved its key, then said no. */
    int err = tern__wire_err_code(wf.status, TERN_EHANDSHAKE);
    if (err == TERN_ESHUTDOWN && wf.retry_ms) {
      /* A draining relay said when to come back: as a GOAWAY (§6.14). */
      c->goaway = 1;
      c->goaway_ms = wf.retry_ms < GOAWAY_MAX_MS ? wf.retry_ms : GOAWAY_MAX_MS;
    }
    tern__cl_drop(c, err, TERN__LINK_CLOSE_NOW, TERN__DISC_GOODBYE);
    return;
  }
  if (!tern__user_valid(wf.user, wf.user_len)) {
    tern__cl_drop(c, TERN_EPROTO, TERN__LINK_CLOSE_NOW, TERN__DISC_PROTOCOL);
    return;
  }
  memcpy(c->user, wf.user, wf.user_len);
  c->user[wf.user_len] = 0;
  c->state = C_OPEN;
  cl_log(c, 2, "session open as %s", c->user);
  c->silent_retried = 0;
  tern__path_derive(c->sess.send_key, c->sess.recv_key, &c->path);
  c->mig_out_ctr = c->mig_in_ctr = 0;
  c->mig_dead_tried = 0;
  c->mig_to_udp = 0;
  c->stats.connects++;
  if (c->on_tcp) {
    c->stats.connects_tcp++;
    c->udp_retry_ms = c->last_data_ms = tern__now_ms();
    c->udp_retry_ms += c->cfg.udp_retry_ms;
  }
  c->last_data_ms = tern__now_ms();
  tern__backoff_reset(&c->backoff);
  tern__cl_push(c, TERN_EV_CONNECTED, 0);
  tern__cl_sync_rtt(c);
  tern__ccore_online(c->core, c->user, tern__now_ms());
  /* What overtook WELCOME, in the order it came; stops if it ends the
   * session (a CLOSE frame does not end it here, the link's disconnect does). */
  size_t n = c->nstash;
  c->nstash = 0;
  for (size_t i = 0; i < n && c->state == C_OPEN; i++)
    on_data(c, c->stash[i].channel, c->stash[i].data, c->stash[i].len);
}

/* The frames that are the shell's, not the messaging core's: CLOSE,
 * PROBE_KEY, GOAWAY and RESET_TOKEN. */
static void on_shell_frames(tern_client *c, const uint8_t *frames, size_t len) {
  tern__rbuf r, body;
  tern__rbuf_init(&r, frames, len);
  uint8_t type;
  while (tern__frame_next(&r, &type, &body) == 1) {
    uint64_t reason;
    tern__fr_probe_key pk;
    if (type == TERN__FR_CLOSE && tern__fr_close_read(&body, &reason) == 0)
      c->close_reason = tern__wire_err_code(reason, c->close_reason);
    uint64_t delay;
    if (type == TERN__FR_GOAWAY && tern__fr_u64_read(&body, &delay) == 0) {
      c->goaway = 1;
      c->goaway_ms = delay < GOAWAY_MAX_MS ? delay : GOAWAY_MAX_MS;
    }
    if (type == TERN__FR_RESET_TOKEN && tern__fr_reset_token_read(&body, c->reset_token) == 0)
      c->has_reset_token = 1;
    if (type == TERN__FR_PROBE_KEY && tern__fr_probe_key_read(&body, &pk) == 0) {
      tern__ka_set_key(&c->ka, pk.id, pk.key, tern__now_ms(), tern__wall_ms());
      sodium_memzero(&pk, sizeof(pk));
    }
  }
}

/* Opens a DATA packet of the open session and hands its frames on. */
static void on_data(tern_client *c, uint8_t channel, const uint8_t *pkt, size_t len) {
  size_t n = 0;
  uint8_t stream;
  int rc = tern__session_open(&c->sess, pkt, len, c->buf, CLIENT_BUF, &n, &stream);
  if (rc == 0 && stream != channel) rc = TERN_EPROTO; /* sealed for another channel */
  if (rc == TERN_EDECRYPT || rc == TERN_EPROTO) c->stats.packets_rejected++;
  if (rc == TERN_EREPLAY) c->stats.packets_replayed++;
  if (rc) return; /* dropped and counted; the session carries on */
  c->stats.packets_received++;
  c->last_data_ms = tern__now_ms();
  on_shell_frames(c, c->buf, n);
  if (tern__ccore_input(c->core, c->buf, n, tern__now_ms()) == TERN_ENOMEM) c->nomem = 1;
  if (c->goaway && c->state == C_OPEN) {
    /* The relay is draining: this session ends now, and what it did not
     * acknowledge stays in the outbox for the next one. */
    cl_log(c, 2, "the relay is draining: reconnecting in %llu ms", (unsigned long long)c->goaway_ms);
    tern__cl_drop(c, TERN_ESHUTDOWN, TERN__LINK_CLOSE_NOW, TERN__DISC_GOODBYE);
  }
}

static void on_receive(tern_client *c, const tern__link_event *ev) {
  if (ev->len == 0) return;
  if (c->state == C_HANDSHAKE && ev->payload[0] == TERN__PKT_WELCOME) {
    on_welcome(c, ev->payload, ev->len);
    return;
  }
  if (c->state == C_HANDSHAKE && ev->payload[0] == TERN__PKT_DATA) {
    /* Overtook WELCOME (see STASH_PACKETS); what does not fit is dropped,
     * and the resend timers bring it back. */
    if (c->nstash < STASH_PACKETS && ev->len <= STASH_BYTES) {
      stashed *st = &c->stash[c->nstash++];
      st->channel = ev->channel;
      st->len = (uint16_t)ev->len;
      memcpy(st->data, ev->payload, ev->len);
    }
    return;
  }
  if ((c->state != C_OPEN && c->state != C_CLOSING) || ev->payload[0] != TERN__PKT_DATA) return;
  on_data(c, ev->channel, ev->payload, ev->len);
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
      case TERN__DISC_STALE: return TERN_ESTALE;
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

/* An event of one of the race's connects. */
static void on_attempt_event(tern_client *c, size_t i, const tern__link_event *ev) {
  if (ev->type == TERN__LINK_EV_CONNECT && c->state == C_LINKING) {
    race_won(c, i);
    on_link_up(c);
  } else if (ev->type == TERN__LINK_EV_DISCONNECT) {
    c->att[i] = NULL; /* ENet gave up on it: the next may start */
    tern__race_failed(&c->race, i, tern__now_ms());
  }
}

void tern__cl_on_link_event(tern_client *c, tern__link_event *ev) {
  for (size_t i = 0; ev->peer && i < TERN__RACE_MAX; i++)
    if (c->att[i] == ev->peer) {
      on_attempt_event(c, i, ev);
      tern__link_event_done(ev);
      return;
    }
  if (ev->peer == c->peer) {
    switch (ev->type) {
      case TERN__LINK_EV_CONNECT:
        if (c->state == C_LINKING) on_link_up(c);
        break;
      case TERN__LINK_EV_RECEIVE:
        on_receive(c, ev);
        break;
      case TERN__LINK_EV_DISCONNECT: {
        int why = disconnect_reason(c, ev->data);
        /* An open link that times out after a silence longer than the
         * keepalive interval died of an unanswered keepalive: the NAT
         * forgot it sooner than learned (spec/keepalive.md). */
        uint32_t iv = tern__ka_interval(&c->ka);
        if (c->state == C_OPEN && why == TERN_ETIMEDOUT && iv &&
            tern__now_ms() - c->last_data_ms >= iv)
          tern__ka_keepalive_failed(&c->ka, tern__now_ms());
        tern__cl_drop(c, why, -1, 0);
        break;
      }
      default:
        break;
    }
  }
  tern__link_event_done(ev);
}

/* Seals and sends what the messaging core has queued. */
void tern__cl_flush_core(tern_client *c) {
  tern__ccore_out o;
  while (tern__ccore_next_output(c->core, &o) == 1) {
    if (c->state != C_OPEN) continue; /* offline: the core resends on reconnect */
    size_t n = 0;
    int rc = tern__session_seal(&c->sess, o.channel, o.data, o.len, c->pkt, CLIENT_BUF, &n);
    if (rc == TERN_ENONCE) {
      tern__cl_drop(c, TERN_ENONCE, TERN__LINK_CLOSE_LATER, TERN__DISC_NONCE);
      continue;
    }
    if (rc) continue;
    if (tern__link_send(c->link, c->peer, o.channel, c->pkt, n,
                        tern__link_mode(o.channel, o.reliable)) == 0) {
      c->stats.packets_sent++;
      c->last_data_ms = tern__now_ms();
    }
  }
  tern__link_flush(c->link);
}

/* Seals frames of the shell's own (KEEPALIVE) on CONTROL. */
void tern__cl_send_control(tern_client *c, const uint8_t *frames, size_t len) {
  size_t n = 0;
  int rc = tern__session_seal(&c->sess, TERN__CH_CONTROL, frames, len, c->pkt, CLIENT_BUF, &n);
  if (rc == TERN_ENONCE) {
    tern__cl_drop(c, TERN_ENONCE, TERN__LINK_CLOSE_LATER, TERN__DISC_NONCE);
    return;
  }
  if (rc == 0 && tern__link_send(c->link, c->peer, TERN__CH_CONTROL, c->pkt, n, TERN__LINK_RELIABLE) == 0) {
    c->stats.packets_sent++;
    c->last_data_ms = tern__now_ms();
  }
}

int tern__cl_min_timeout(int a, int b) {
  if (a < 0) return b;
  if (b < 0) return a;
  return a < b ? a : b;
}

/* ms until the shell's own timers: handshake deadline, reconnect. */
static int shell_timeout(const tern_client *c, uint64_t now) {
  int t = -1;
  if (c->state == C_LINKING || c->state == C_HANDSHAKE) {
    uint64_t d = c->attempt_start_ms + c->cfg.handshake_timeout_ms;
    /* Unanswered: given up CONNECT_SILENCE_MS after the race's last start. */
    uint64_t silent = c->race.last_start_ms + CONNECT_SILENCE_MS;
    if (c->state == C_LINKING && silent < d) d = silent;
    t = now >= d ? 0 : (int)(d - now);
    if (c->state == C_LINKING) t = tern__cl_min_timeout(t, tern__race_timeout(&c->race, now));
  }
  if (c->state == C_RESOLVING) {
    uint64_t d = c->attempt_start_ms + c->cfg.resolve_timeout_ms;
    t = tern__cl_min_timeout(now >= d ? 0 : (int)(d - now), tern__resolver_timeout(c->res));
  }
  if (c->state == C_IDLE && c->next_attempt_ms)
    t = tern__cl_min_timeout(t, now >= c->next_attempt_ms ? 0 : (int)(c->next_attempt_ms - now));
  return t;
}

/* While messages wait for an answer, the relay is pinged every quarter of
 * dead_link_ms in which nothing came from it: 0 if no ping is due. */
static uint64_t busy_ping_due(const tern_client *c) {
  if (c->state != C_OPEN) return 0;
  uint64_t since = tern__ccore_waiting_since(c->core);
  if (!since) return 0;
  uint64_t last = tern__link_peer_heard_ms(c->link, c->peer);
  if (c->last_ping_ms > last) last = c->last_ping_ms;
  if (since > last) last = since;
  return last + c->cfg.dead_link_ms / 4;
}

void tern__cl_handle_timers(tern_client *c, uint64_t now) {
  tern__cl_sync_rtt(c);
  tern__cl_race_step(c, now);
  if ((c->state == C_LINKING || c->state == C_HANDSHAKE) && shell_timeout(c, now) == 0) {
    int silent = c->state == C_LINKING;
    if (silent && !c->silent_retried) {
      c->retry_now = 1; /* at once, once in a row; then the backoff */
      c->silent_retried = 1;
    }
    tern__cl_drop(c, silent ? TERN_ETIMEDOUT : TERN_EHANDSHAKE, TERN__LINK_CLOSE_NOW, TERN__DISC_HS_TIMEOUT);
  }
  if (c->state == C_IDLE && c->want_online && c->next_attempt_ms && now >= c->next_attempt_ms) {
    int rc = tern__cl_start_attempt(c);
    if (rc) {
      /* Cannot even start: try later. */
      uint64_t wait = tern__backoff_next(&c->backoff, randombytes_random()) + 1;
      c->next_attempt_ms = now + wait;
      tern__cl_push_retry(c, TERN_EV_DISCONNECTED, rc, wait);
    }
  }
  tern__cl_migrate_timers(c, now);
  if (c->state == C_OPEN && c->on_tcp && !c->mig_active && now >= c->udp_retry_ms) {
    /* On TCP: does UDP work again? A move that fails leaves the session
     * where it is. */
    c->udp_retry_ms = now + c->cfg.udp_retry_ms;
    if (tern__cl_migrate(c, 1, now)) c->mig_to_udp = 1;
  }
  int tcp_gone = c->state == C_OPEN && c->on_tcp && !tern__link_peer_alive(c->link, c->peer);
  if (c->state == C_OPEN) {
    tern__ccore_set_heard(c->core, tern__link_peer_heard_ms(c->link, c->peer));
    uint64_t due = busy_ping_due(c);
    if (due && now >= due) {
      /* Messages unanswered: is the relay there at all? Its ENet
       * acknowledgement of the ping says so (spec/messages.md §5.9). */
      tern__link_peer_ping(c->link, c->peer);
      c->last_ping_ms = now;
    }
  }
  if (c->state == C_OPEN && (tern__ccore_tick(c->core, now) || tcp_gone) &&
      (!c->mig_active || c->mig_to_udp)) {
    c->mig_to_udp = 0; /* a move under way now decides the session's fate */
    /* The link looks dead: the path may be (a new network, a NAT that
     * forgot us). Try to move the session once before rebuilding it. */
    if (c->mig_dead_tried || !tern__cl_migrate(c, 1, now))
      tern__cl_drop(c, TERN_ETIMEDOUT, TERN__LINK_CLOSE_NOW, TERN__DISC_GOODBYE);
    else
      c->mig_dead_tried = 1;
  }
  tern__ka_tick(&c->ka, now, tern__wall_ms());
  uint64_t ka = tern__cl_keepalive_due(c);
  if (ka && now >= ka) {
    tern__link_peer_ping(c->link, c->peer); /* one small datagram; the relay acknowledges it */
    c->last_ping_ms = now;
    c->keepalives++;
  }
}

int tern__cl_next_timeout_locked(tern_client *c, uint64_t now) {
  int t = shell_timeout(c, now);
  uint64_t bp = busy_ping_due(c);
  if (bp) t = tern__cl_min_timeout(t, now >= bp ? 0 : (int)(bp - now));
  t = tern__cl_min_timeout(t, tern__cl_migrate_timeout(c, now));
  if (c->state == C_OPEN) t = tern__cl_min_timeout(t, tern__ccore_timeout(c->core, now));
  t = tern__cl_min_timeout(t, tern__ka_timeout(&c->ka, now));
  uint64_t ka = tern__cl_keepalive_due(c);
  if (ka) t = tern__cl_min_timeout(t, now >= ka ? 0 : (int)(ka - now));
  if (c->state == C_OPEN && c->key_requested && !c->ka.have_key)
    t = tern__cl_min_timeout(t, now >= c->key_requested_ms + KEY_WAIT_MS
                           ? 0 : (int)(c->key_requested_ms + KEY_WAIT_MS - now));
  return tern__cl_min_timeout(t, tern__link_next_timeout_ms(c->link));
}
