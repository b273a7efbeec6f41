/*
 * The client's keepalive shell around the learner (kalearn.c): the probe
 * sockets, the announcements to the relay (KEEPALIVE), what is learned per
 * network in the store, and the live link's ping timing.
 * spec/keepalive.md.
 */
#include "client/client_impl.h"

/* Loads what the store knows of network `name` into the learner. */
int tern__cl_ka_load(tern_client *c, const char *name) {
  tern__cstore_net n;
  int rc = tern__cstore_net_get(c->store, name, &n, tern__wall_ms());
  tern__ka_net known = {.proven_ms = n.proven_ms, .failed_ms = n.failed_ms, .learned_at = n.learned_at};
  tern__ka_set_network(&c->ka, rc == 1 ? &known : NULL, tern__now_ms());
  return rc < 0 ? rc : 0;
}

/* ENet's own ping interval for the live link: an hour. ENet pings when no
 * acknowledgement has come for its interval, even while the relay sends,
 * so the client sends its keepalives itself (tern__cl_keepalive_due()); ENet's
 * hourly ping only lets it notice a dead peer with keepalives off. */
uint32_t tern__cl_enet_ping_ms(const tern_client *c) {
  (void)c;
  return 3600000;
}

/* When the live link's next keepalive is due: the interval after the last
 * datagram either way (0: none is due, keepalives off or no session). */
uint64_t tern__cl_keepalive_due(const tern_client *c) {
  uint32_t iv = tern__ka_interval(&c->ka);
  if (c->state != C_OPEN || !iv) return 0;
  uint64_t last = c->last_data_ms;
  uint64_t heard = tern__link_peer_heard_ms(c->link, c->peer);
  if (heard > last) last = heard;
  if (c->last_ping_ms > last) last = c->last_ping_ms;
  return last + iv;
}

static void probe_close(tern_client *c, unsigned slot) {
  if (c->probe_fd[slot] < 0) return;
  (void)tern__poller_del(c->poller, c->probe_fd[slot]);
  close(c->probe_fd[slot]);
  c->probe_fd[slot] = -1;
}

/* A fresh UDP socket per probe, so that each has its own NAT mapping and
 * nothing else refreshes it. A failure here leaves the slot closed: its
 * requests go nowhere and the probe ends as lost. */
static void probe_open(tern_client *c, unsigned slot) {
  probe_close(c, slot);
  int family = tern__addr_is_v4(&c->relay_addr) ? AF_INET : AF_INET6;
  int fd = tern__os_socket(family, SOCK_DGRAM);
  if (fd < 0) return;
  struct sockaddr_storage to;
  size_t tolen = tern__addr_to_sockaddr(&c->relay_addr, family, &to);
  if (connect(fd, (struct sockaddr *)&to, (socklen_t)tolen) != 0 ||
      tern__poller_add(c->poller, fd, TERN__POLL_IN, TERN__CL_TAG_PROBE + slot) != 0) {
    close(fd);
    return;
  }
  c->probe_fd[slot] = fd;
}

/* Reads whatever the probe sockets hold. */
void tern__cl_probe_read(tern_client *c, uint64_t now) {
  uint8_t buf[TERN__PROBE_REQUEST_BYTES + 1];
  for (unsigned i = 0; i < TERN__KA_SLOTS; i++) {
    for (int k = 0; k < 8 && c->probe_fd[i] >= 0; k++) {
      ssize_t n = recv(c->probe_fd[i], buf, sizeof(buf), 0);
      if (n < 0) break; /* EAGAIN, or an ICMP error: nothing to learn from it */
      tern__ka_input(&c->ka, i, buf, (size_t)n, now, tern__wall_ms());
    }
  }
}

static void ka_announce(tern_client *c, int want_key) {
  uint8_t frame[32];
  tern__wbuf w;
  tern__wbuf_init(&w, frame, sizeof(frame));
  tern__fr_keepalive f = {.interval_ms = tern__ka_interval(&c->ka),
                          .flags = want_key ? TERN__KAF_WANT_KEY : 0};
  tern__fr_keepalive_write(&w, &f);
  tern__cl_send_control(c, frame, w.len);
  c->announced_ms = (uint32_t)f.interval_ms;
}

/* Carries out what the learner asks, and brings the live link, the store,
 * the relay and the app up to date with what it knows. */
void tern__cl_ka_sync(tern_client *c, uint64_t now) {
  tern__ka_action a;
  while (tern__ka_next_action(&c->ka, now, &a) == 1) {
    if (a.type == TERN__KA_OPEN) probe_open(c, a.slot);
    else if (a.type == TERN__KA_CLOSE) probe_close(c, a.slot);
    else if (c->probe_fd[a.slot] >= 0) (void)send(c->probe_fd[a.slot], a.data, a.len, 0);
  }
  if (tern__ka_take_changed(&c->ka)) {
    tern__cstore_net n = {.proven_ms = c->ka.net.proven_ms, .failed_ms = c->ka.net.failed_ms,
                          .learned_at = c->ka.net.learned_at};
    /* A store that fails here costs only relearning after a restart. */
    (void)tern__cstore_net_put(c->store, c->network, &n, tern__wall_ms(),
                               c->cfg.keepalive_networks_max);
    uint32_t iv = tern__ka_interval(&c->ka);
    if (c->peer) tern__link_peer_set_timing(c->peer, tern__cl_enet_ping_ms(c), c->cfg.timeout_min_ms,
                                            c->cfg.timeout_max_ms);
    if (c->state == C_OPEN && iv != c->announced_ms) ka_announce(c, 0);
    if (c->ka.state != c->ka_reported_state || iv != c->ka_reported_ms) {
      c->ka_reported_state = c->ka.state;
      c->ka_reported_ms = iv;
      tern__cl_push(c, TERN_EV_KEEPALIVE, c->ka.state == TERN_KA_BAD ? TERN_EBADNET : 0);
    }
  }
  if (c->state == C_OPEN && !c->key_requested &&
      !c->on_tcp && tern__ka_wants_key(&c->ka, now, tern__wall_ms())) {
    ka_announce(c, 1);
    c->key_requested = 1;
    c->key_requested_ms = now;
  }
  if (c->state == C_OPEN && c->key_requested && !c->ka.have_key &&
      now >= c->key_requested_ms + KEY_WAIT_MS) {
    /* No PROBE_KEY: this relay does not answer probes. Ask again later. */
    tern__ka_no_key(&c->ka, now);
    c->key_requested = 0;
  }
}
