/*
 * The client's side of migration (spec/wire.md §11): moving an open
 * session to a new path without a new handshake. A CHALLENGE goes to the
 * relay from the new socket (or from the same one after a HINT: the NAT
 * rebound), resent every max(200 ms, RTT) until max(1 s, 3 RTT); a RESPONSE
 * that opens and echoes the challenge is answered with a CONFIRM from the
 * same socket, which becomes the link's, and whatever ENet has in flight
 * is resent at once. No RESPONSE in time: the link is dropped and rebuilt
 * as before (a reconnect with a new handshake).
 */
#include "client/client_impl.h"

enum { RESEND_MIN_MS = 200, GIVE_UP_MIN_MS = 1000, HINT_EVERY_MS = 1000 };

static void send_path(tern_client *c, uint8_t type, const uint8_t a[8]) {
  tern__path_pkt p = {.type = type, .counter = ++c->mig_out_ctr};
  memcpy(p.id, c->path.id, sizeof(p.id));
  memcpy(p.a, a, 8);
  uint8_t out[TERN__PATH_BYTES];
  tern__path_write(&p, c->path.c2s, out);
  (void)tern__link_cand_send(c->link, &c->relay_addr, out, sizeof(out));
}

static uint64_t rtt_of(const tern_client *c) {
  return c->peer ? tern__link_peer_rtt(c->peer) : RESEND_MIN_MS;
}

int tern__cl_migrate(tern_client *c, int new_socket, uint64_t now) {
  if (c->state != C_OPEN) return 0;
  if (new_socket) {
    if (tern__link_cand_open(c->link) != 0) return 0;
  } else if (c->mig_active) {
    return 1; /* already trying */
  }
  c->mig_active = 1;
  c->resp_pending = 0;
  randombytes_buf(c->mig_chal, sizeof(c->mig_chal));
  uint64_t rtt = rtt_of(c);
  c->mig_deadline_ms = now + (3 * rtt > GIVE_UP_MIN_MS ? 3 * rtt : GIVE_UP_MIN_MS);
  c->mig_resend_ms = now + (rtt > RESEND_MIN_MS ? rtt : RESEND_MIN_MS);
  send_path(c, TERN__PATH_CHALLENGE, c->mig_chal);
  return 1;
}

int tern__cl_on_raw(void *ctx, const tern__addr *from, const uint8_t *data, size_t len) {
  tern_client *c = ctx;
  uint32_t retry;
  if (tern__full_parse(data, len, &retry)) {
    /* A hint, not authenticated: only while one of our connects to that
     * very address is pending. Acted on after the link's service returns. */
    tern__addr want;
    for (size_t i = 0; c->state == C_LINKING && i < TERN__RACE_MAX; i++)
      if (c->att[i] && tern__link_peer_addr(c->link, c->att[i], &want) == 0 &&
          tern__addr_equal(&want, from)) {
        c->full_pending = 1;
        c->full_retry_ms = retry;
      }
    return 1;
  }
  if (tern__cl_on_reset(c, from, data, len)) return 1;
  if (!tern__path_looks_like(data, len)) return 0;
  if (c->state != C_OPEN || !tern__addr_equal(from, &c->relay_addr)) return 1;
  if (tern__path_is_hint(data, len)) {
    if (!c->mig_active && !c->on_tcp) c->hint_pending = 1;
    return 1;
  }
  tern__path_pkt p;
  if (!c->mig_active || tern__path_peek(data, len, &p) != 0 || p.type != TERN__PATH_RESPONSE ||
      sodium_memcmp(p.id, c->path.id, sizeof(p.id)) != 0 ||
      tern__path_open(data, len, c->path.s2c) != 0 || p.counter <= c->mig_in_ctr ||
      sodium_memcmp(p.a, c->mig_chal, 8) != 0)
    return 1;
  c->mig_in_ctr = p.counter;
  memcpy(c->mig_echo, p.b, 8);
  c->resp_pending = 1;
  return 1;
}

void tern__cl_take_path(tern_client *c, uint64_t now) {
  if (c->resp_pending) {
    c->resp_pending = 0;
    if (c->mig_active && c->state == C_OPEN) {
      send_path(c, TERN__PATH_CONFIRM, c->mig_echo);
      tern__link_cand_commit(c->link);
      if (c->on_tcp) {
        /* Back on UDP: the session's datagrams go to the relay's UDP
         * address, and the TCP connection is closed. */
        (void)tern__link_peer_move(c->link, c->peer, &c->relay_addr);
        c->on_tcp = 0;
        cl_log(c, 2, "UDP works again: the session moved back from TCP");
      } else {
        cl_log(c, 2, "the session moved to a new path (same session, no new handshake)");
      }
      c->mig_active = 0;
      c->mig_to_udp = 0;
      c->mig_dead_tried = 0;
      c->stats.migrations++;
      tern__link_peer_kick(c->peer);
      tern__link_flush(c->link);
    }
  }
  if (c->hint_pending) {
    c->hint_pending = 0;
    if (c->state == C_OPEN && !c->mig_active && now >= c->mig_hint_ms + HINT_EVERY_MS) {
      c->mig_hint_ms = now;
      (void)tern__cl_migrate(c, 0, now);
    }
  }
}

/* The migration's timers: resend the CHALLENGE, or give up and reconnect. */
void tern__cl_migrate_timers(tern_client *c, uint64_t now) {
  if (!c->mig_active) return;
  if (c->state != C_OPEN || now >= c->mig_deadline_ms) {
    int drop = c->state == C_OPEN && !c->mig_to_udp;
    c->mig_active = 0;
    c->mig_to_udp = 0;
    tern__link_cand_abort(c->link);
    /* No RESPONSE in time. A try to leave TCP keeps the session there (to
     * try again later); any other move gives up on the path: reconnect at
     * once, since the path changed, not the relay. */
    if (drop) {
      c->retry_now = 1;
      tern__cl_drop(c, TERN_ETIMEDOUT, TERN__LINK_CLOSE_NOW, TERN__DISC_GOODBYE);
    }
    return;
  }
  if (now >= c->mig_resend_ms) {
    uint64_t rtt = rtt_of(c);
    c->mig_resend_ms = now + (rtt > RESEND_MIN_MS ? rtt : RESEND_MIN_MS);
    send_path(c, TERN__PATH_CHALLENGE, c->mig_chal);
  }
}

int tern__cl_migrate_timeout(const tern_client *c, uint64_t now) {
  if (!c->mig_active) return -1;
  uint64_t t = c->mig_resend_ms < c->mig_deadline_ms ? c->mig_resend_ms : c->mig_deadline_ms;
  return now >= t ? 0 : (int)(t - now);
}
