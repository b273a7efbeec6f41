/*
 * The client's public API (tern.h): lifecycle, connect and disconnect,
 * sending from any thread, events, the service loop and its wake-up.
 * client_impl.h has the struct and how the three files divide the work.
 */
#include "client/client_impl.h"

/* The first released layout of tern_client_config ends with this field:
 * a program built against that header passes at least this much. */
#define CLIENT_CONFIG_MIN_SIZE \
  (offsetof(tern_client_config, keepalive_networks_max) + sizeof(uint32_t))

void tern_client_config_default(tern_client_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->struct_size = sizeof(*cfg);
  cfg->handshake_timeout_ms = 10000;
  cfg->max_message_size = 65536;
  cfg->reconnect_base_ms = 500;
  cfg->reconnect_cap_ms = 30000;
  cfg->dead_link_ms = 8000;
  cfg->timeout_min_ms = 3000;
  cfg->timeout_max_ms = 10000;
  cfg->keepalive_floor_ms = 25000;
  cfg->keepalive_ceiling_ms = 900000;
  cfg->keepalive_min_ms = 10000;
  cfg->keepalive_reprobe_ms = 86400000;
  cfg->keepalive_foreground_ms = 60000;
  cfg->keepalive_networks_max = 32;
  cfg->connect_stagger_ms = 250;
  cfg->tcp_fallback_ms = 1000;
  cfg->udp_retry_ms = 60000;
  cfg->resolve_timeout_ms = 5000;
}

/* The learner's random source. */
static uint64_t rand64(void *ctx) {
  (void)ctx;
  uint64_t v;
  randombytes_buf(&v, sizeof(v));
  return v;
}

/* Creates `dir` and any missing parents (0700 each). 0, or TERN_EIO with
 * errno set by the mkdir that failed. */
static int mkdir_parents(const char *dir) {
  char p[4096];
  size_t n = strlen(dir);
  if (n == 0 || n >= sizeof(p)) {
    errno = ENAMETOOLONG;
    return TERN_EIO;
  }
  memcpy(p, dir, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (p[i] != '/' && p[i] != '\0') continue;
    char keep = p[i];
    p[i] = '\0';
    struct stat st;
    if (mkdir(p, 0700) != 0 && (errno != EEXIST || stat(p, &st) != 0 || !S_ISDIR(st.st_mode))) {
      if (errno == EEXIST) errno = ENOTDIR;
      return TERN_EIO;
    }
    p[i] = keep;
  }
  return 0;
}

static int open_state(tern_client *c, const char *dir) {
  char path[4096], err[256];
  if (!dir) return tern__cstore_open(&c->store, ":memory:", 0, err, sizeof(err));
  if (mkdir_parents(dir) != 0) {
    int e = errno;
    cl_log(c, 0, "cannot create the state directory %s: %s", dir, strerror(e));
    errno = e;
    return TERN_EIO;
  }
  if (snprintf(path, sizeof(path), "%s/client.db", dir) >= (int)sizeof(path)) return TERN_EINVAL;
  int rc = tern__cstore_open(&c->store, path, c->cfg.durable_fsync ? 2 : 1, err, sizeof(err));
  if (rc) cl_log(c, 0, "cannot open the state in %s: %s", path, err);
  return rc;
}

/* The client's poller: the link's and the resolver's nested in it, and the
 * wake-up (tags: TERN__CL_TAG_*; a probe socket's is TERN__CL_TAG_PROBE +
 * its slot). */
static int wake_setup(tern_client *c) {
  if (tern__poller_new(&c->poller) != 0 || tern__wake_open(&c->wake) != 0) return TERN_EIO;
  if (tern__poller_nest(c->poller, tern__link_poller(c->link), TERN__CL_TAG_LINK) != 0 ||
      tern__poller_add(c->poller, c->wake.rfd, TERN__POLL_IN, TERN__CL_TAG_WAKE) != 0 ||
      tern__poller_nest(c->poller, tern__resolver_poller(c->res), TERN__CL_TAG_RESOLVER) != 0)
    return TERN_EIO;
  return 0;
}

int tern_client_new(tern_client **out, const tern_client_config *in) {
  *out = NULL;
  /* The caller's config, at its size, over this library's defaults. */
  tern_client_config full, *cfg = &full;
  const char *why;
  tern_client_config_default(&full);
  if (tern__abi_config_in(&full, sizeof(full), CLIENT_CONFIG_MIN_SIZE, in, in->struct_size, &why) < 0)
    return TERN_EINVAL;
  full.struct_size = sizeof(full);
  if (!cfg->relay_host || !cfg->relay_host[0] || cfg->relay_port == 0) return TERN_EINVAL;
  size_t ulen = cfg->user ? strlen(cfg->user) : 0;
  if (ulen && !tern__user_valid((const uint8_t *)cfg->user, ulen)) return TERN_EINVAL;
  if (sodium_init() < 0) return TERN_ECRYPTO;
  tern_client *c = calloc(1, sizeof(*c));
  if (!c) return TERN_ENOMEM;
  c->wake.rfd = c->wake.wfd = -1;
  for (unsigned i = 0; i < TERN__KA_SLOTS; i++) c->probe_fd[i] = -1;
  pthread_mutex_init(&c->mu, NULL);
  int rc = TERN_ENOMEM;
  c->cfg = *cfg;
  c->relay_host = strdup(cfg->relay_host);
  c->dns_servers = cfg->dns_servers ? strdup(cfg->dns_servers) : NULL;
  c->buf = malloc(CLIENT_BUF);
  c->pkt = malloc(CLIENT_BUF);
  if (!c->relay_host || !c->buf || !c->pkt || (cfg->dns_servers && !c->dns_servers)) goto fail;
  memcpy(c->user_req, cfg->user ? cfg->user : "", ulen + 1);
  c->cfg.relay_host = c->relay_host;
  c->cfg.dns_servers = c->dns_servers;
  if (tern__cl_parse_endpoints(c) == 0) {
    rc = TERN_EINVAL; /* not one endpoint in relay_host */
    goto fail;
  }
  c->cfg.user = c->user_req;
  if (cfg->token && tern__token_from_text(cfg->token, c->token, &c->token_len) != 0) {
    rc = TERN_EINVAL; /* not a token's text form */
    goto fail;
  }
  c->cfg.token = NULL; /* not kept: c->token is */
  c->cfg.state_dir = NULL; /* not kept: only used here */
  if (c->cfg.max_message_size == 0 || c->cfg.max_message_size > TERN_MESSAGE_MAX)
    c->cfg.max_message_size = TERN_MESSAGE_MAX;
  /* Derive the public key rather than trust the caller's copy. */
  if (crypto_scalarmult_base(c->cfg.keypair.public_key, c->cfg.keypair.secret_key) != 0) {
    rc = TERN_EINVAL;
    goto fail;
  }
  tern__backoff_init(&c->backoff, c->cfg.reconnect_base_ms, c->cfg.reconnect_cap_ms);
  if ((rc = open_state(c, cfg->state_dir)) != 0) goto fail;
  tern__ccore_config cc;
  tern__ccore_config_default(&cc);
  if (c->cfg.dead_link_ms) cc.dead_link_ms = c->cfg.dead_link_ms;
  if (cc.resend_ms > cc.dead_link_ms / 2) cc.resend_ms = cc.dead_link_ms / 2;
  if (c->cfg.no_copies) cc.copy_max_bytes = 0; /* no message is small enough */
  if ((rc = tern__ccore_new(&c->core, c->store, &cc)) != 0) goto fail;
  if ((rc = tern__link_new(&c->link, NULL, 0, TERN__RACE_MAX)) != 0) goto fail;
  tern__link_set_raw_handler(c->link, tern__cl_on_raw, c);
  /* A relay never sends more than the largest DATA packet. */
  tern__link_set_packet_limits(c->link, TERN__PACKET_MAX, 0);
  /* Each lookup may wait out its timeout once per try (2) per server. */
  if ((rc = tern__resolver_new(&c->res, c->dns_servers, c->cfg.resolve_timeout_ms / 4 + 1)) != 0)
    goto fail;
  if ((rc = wake_setup(c)) != 0) goto fail;
  {
    size_t nlen = cfg->network ? strlen(cfg->network) : 0;
    if (nlen > TERN_NETWORK_MAX) {
      rc = TERN_EINVAL;
      goto fail;
    }
    memcpy(c->network, nlen ? cfg->network : "", nlen + 1);
    c->cfg.network = NULL; /* not kept: c->network is the current one */
    tern__ka_config kc;
    tern__ka_config_default(&kc);
    kc.off = cfg->keepalive_off != 0;
    kc.fixed_ms = cfg->keepalive_fixed_ms;
    if (cfg->keepalive_floor_ms) kc.floor_ms = cfg->keepalive_floor_ms;
    if (cfg->keepalive_ceiling_ms) kc.ceiling_ms = cfg->keepalive_ceiling_ms;
    if (cfg->keepalive_min_ms) kc.min_ms = cfg->keepalive_min_ms;
    if (cfg->keepalive_reprobe_ms) kc.reprobe_ms = cfg->keepalive_reprobe_ms;
    kc.foreground_ms = cfg->keepalive_foreground_ms;
    if (c->cfg.keepalive_networks_max == 0) c->cfg.keepalive_networks_max = 32;
    tern__ka_init(&c->ka, &kc, rand64, NULL);
    if ((rc = tern__cl_ka_load(c, c->network)) != 0) goto fail;
    (void)tern__ka_take_changed(&c->ka);
    c->ka_reported_state = c->ka.state;
    c->ka_reported_ms = tern__ka_interval(&c->ka);
  }
  *out = c;
  return 0;
fail:;
  int saved = errno; /* what failed, for the caller: the cleanup keeps it */
  tern_client_free(c);
  errno = saved;
  return rc;
}

void tern_client_free(tern_client *c) {
  if (!c) return;
  (void)tern__cl_thread_stop(c); /* thread mode: end the thread first */
  if (c->peer) tern__link_close(c->link, c->peer, TERN__DISC_GOODBYE, TERN__LINK_CLOSE_NOW);
  if (c->poller) {
    /* The nested pollers go with their owners below. */
    if (c->link) tern__poller_unnest(c->poller, tern__link_poller(c->link));
    if (c->res) tern__poller_unnest(c->poller, tern__resolver_poller(c->res));
  }
  tern__link_free(c->link);
  tern__resolver_free(c->res);
  for (unsigned i = 0; i < TERN__KA_SLOTS; i++)
    if (c->probe_fd[i] >= 0) close(c->probe_fd[i]);
  sodium_memzero(&c->ka, sizeof(c->ka));
  tern__session_wipe(&c->sess);
  tern__ccore_free(c->core);
  tern__cstore_close(c->store);
  tern__poller_free(c->poller);
  tern__wake_close(&c->wake);
  sodium_memzero(&c->cfg.keypair, sizeof(c->cfg.keypair));
  if (c->buf) sodium_memzero(c->buf, CLIENT_BUF);
  if (c->pkt) sodium_memzero(c->pkt, CLIENT_BUF);
  pthread_mutex_destroy(&c->mu);
  free(c->relay_host);
  free(c->dns_servers);
  free(c->buf);
  free(c->pkt);
  free(c);
}

/* The user string a shell event carries: its state now (the name the relay
 * gave us, the network's name), so an event queued again later says
 * what is true then. */
static const char *shell_user(const tern_client *c, tern_event_type type) {
  if (type == TERN_EV_CONNECTED) return c->user;
  if (type == TERN_EV_KEEPALIVE) return c->network;
  return "";
}

/* Queues a shell event (CONNECTED, DISCONNECTED, KEEPALIVE). Without
 * memory it is kept and queued again by the next service call, which
 * returns TERN_ENOMEM meanwhile; it may then come after core events that
 * were queued in between. */
void tern__cl_push_retry(tern_client *c, tern_event_type type, int error, uint64_t retry_ms) {
  tern_event ev = {.type = type, .error = error, .user = shell_user(c, type), .retry_ms = retry_ms};
  if (!c->n_shell_pending && tern__ccore_push_event(c->core, &ev) == 0) return;
  c->nomem = 1;
  if (c->n_shell_pending < SHELL_PENDING_MAX) {
    c->shell_pending[c->n_shell_pending].type = type;
    c->shell_pending[c->n_shell_pending].error = error;
    c->shell_pending[c->n_shell_pending].retry_ms = retry_ms;
    c->n_shell_pending++;
  }
}

void tern__cl_push(tern_client *c, tern_event_type type, int error) {
  tern__cl_push_retry(c, type, error, 0);
}

/* Queues the shell events that found no memory before, in order. */
static void push_pending(tern_client *c) {
  unsigned done = 0;
  while (done < c->n_shell_pending) {
    tern_event ev = {.type = c->shell_pending[done].type, .error = c->shell_pending[done].error,
                     .user = shell_user(c, c->shell_pending[done].type),
                     .retry_ms = c->shell_pending[done].retry_ms};
    if (tern__ccore_push_event(c->core, &ev) < 0) break;
    done++;
  }
  memmove(c->shell_pending, c->shell_pending + done,
          (c->n_shell_pending - done) * sizeof(c->shell_pending[0]));
  c->n_shell_pending -= done;
  if (c->n_shell_pending) c->nomem = 1;
}

static void wake(tern_client *c) {
  if (!atomic_exchange(&c->woken, 1)) tern__wake_signal(&c->wake);
}

int tern_client_connect(tern_client *c) {
  pthread_mutex_lock(&c->mu);
  int rc = 0;
  c->want_online = 1;
  if (c->state == C_IDLE) {
    /* At once; the service loop starts it (and a failure goes into the
     * backoff, as every later one). */
    tern__backoff_reset(&c->backoff);
    c->next_attempt_ms = tern__now_ms();
    if (c->next_attempt_ms == 0) c->next_attempt_ms = 1;
  }
  pthread_mutex_unlock(&c->mu);
  wake(c);
  return rc;
}

int tern_client_disconnect(tern_client *c) {
  pthread_mutex_lock(&c->mu);
  int rc = 0;
  int was_wanted = c->want_online;
  c->want_online = 0;
  c->next_attempt_ms = 0;
  if (c->state == C_OPEN) {
    /* LATER, not GRACEFUL: ENet drops queued packets on a plain disconnect. */
    tern__link_close(c->link, c->peer, TERN__DISC_GOODBYE, TERN__LINK_CLOSE_LATER);
    tern__link_flush(c->link);
    c->state = C_CLOSING;
  } else if (c->state != C_IDLE && c->state != C_CLOSING) {
    tern__cl_drop(c, TERN_ECLOSED, TERN__LINK_CLOSE_NOW, TERN__DISC_GOODBYE);
  } else if (!was_wanted || c->state == C_CLOSING) {
    rc = TERN_ECLOSED;
  } else {
    tern__cl_push(c, TERN_EV_DISCONNECTED, TERN_ECLOSED); /* was waiting to reconnect */
  }
  pthread_mutex_unlock(&c->mu);
  wake(c);
  return rc;
}

void tern_client_network_changed(tern_client *c) {
  pthread_mutex_lock(&c->mu);
  /* An open session first tries to move to the new path (a new socket:
   * the routing picks the new interface); the rest is rebuilt. */
  c->udp_blocked = 0; /* a new network: UDP may work here */
  if (c->want_online && !tern__cl_migrate(c, 1, tern__now_ms())) {
    c->retry_now = 1; /* at once, no backoff */
    if (c->state != C_IDLE) tern__cl_drop(c, TERN_ETIMEDOUT, TERN__LINK_CLOSE_NOW, TERN__DISC_GOODBYE);
    tern__backoff_reset(&c->backoff);
    c->next_attempt_ms = tern__now_ms();
    c->retry_now = 0;
  }
  pthread_mutex_unlock(&c->mu);
  wake(c);
}

int tern_client_udp_blocked(tern_client *c) {
  if (!c->cfg.relay_tcp_port) return TERN_EINVAL;
  pthread_mutex_lock(&c->mu);
  c->udp_blocked = 1;
  if (c->state == C_LINKING) tern__race_tcp_now(&c->race, tern__now_ms());
  pthread_mutex_unlock(&c->mu);
  wake(c);
  return 0;
}

int tern_client_set_token(tern_client *c, const char *token) {
  uint8_t bin[TERN__TOKEN_MAX];
  size_t n = 0;
  if (token && tern__token_from_text(token, bin, &n) != 0) return TERN_EINVAL;
  pthread_mutex_lock(&c->mu);
  memcpy(c->token, bin, n);
  c->token_len = n;
  /* Waiting out the backoff after a refusal: the new token may be the
   * cure, so try it now. A session or an attempt under way is left alone. */
  if (c->want_online && c->state == C_IDLE && c->next_attempt_ms) {
    tern__backoff_reset(&c->backoff);
    c->next_attempt_ms = tern__now_ms();
  }
  pthread_mutex_unlock(&c->mu);
  wake(c);
  return 0;
}

int tern_client_set_network(tern_client *c, const char *name) {
  if (!name) name = "";
  size_t len = strlen(name);
  if (len > TERN_NETWORK_MAX) return TERN_EINVAL;
  pthread_mutex_lock(&c->mu);
  int rc = 0;
  if (strcmp(name, c->network) != 0) {
    memcpy(c->network, name, len + 1);
    rc = tern__cl_ka_load(c, c->network);
    if (c->want_online) {
      /* The link belongs to the old network: rebuild it on the new one. */
      c->retry_now = 1;
      if (c->state != C_IDLE) tern__cl_drop(c, TERN_ETIMEDOUT, TERN__LINK_CLOSE_NOW, TERN__DISC_GOODBYE);
      tern__backoff_reset(&c->backoff);
      c->next_attempt_ms = tern__now_ms();
      c->retry_now = 0;
    }
    tern__cl_ka_sync(c, tern__now_ms());
  }
  pthread_mutex_unlock(&c->mu);
  wake(c);
  return rc;
}

void tern_client_set_foreground(tern_client *c, int foreground) {
  pthread_mutex_lock(&c->mu);
  tern__ka_set_foreground(&c->ka, foreground);
  tern__cl_ka_sync(c, tern__now_ms());
  pthread_mutex_unlock(&c->mu);
  wake(c);
}

void tern_client_keepalive_sized(tern_client *c, tern_keepalive_info *out, size_t out_size) {
  tern_keepalive_info ki, *info = &ki;
  pthread_mutex_lock(&c->mu);
  memset(info, 0, sizeof(*info));
  info->state = (tern_keepalive_state)c->ka.state;
  memcpy(info->network, c->network, sizeof(info->network));
  info->interval_ms = tern__ka_interval(&c->ka);
  info->proven_ms = c->ka.net.proven_ms;
  info->failed_ms = c->ka.net.failed_ms;
  info->learned_at_ms = c->ka.net.learned_at;
  info->learn_ms = c->ka.learn_ms;
  info->foreground = c->ka.foreground;
  info->probes = c->ka.stats.probes;
  info->probe_datagrams = c->ka.stats.datagrams_out + c->ka.stats.datagrams_in;
  info->keepalives = c->keepalives;
  pthread_mutex_unlock(&c->mu);
  tern__abi_out(out, out_size, &ki, sizeof(ki));
}

int tern_client_timeout_ms(tern_client *c) {
  pthread_mutex_lock(&c->mu);
  int t = tern__cl_next_timeout_locked(c, tern__now_ms());
  if (tern__ccore_pending_events(c->core)) t = 0;
  pthread_mutex_unlock(&c->mu);
  return t;
}

int tern_client_fd(const tern_client *c) {
  int fd = tern__poller_fd(c->poller);
  return fd >= 0 ? fd : TERN_ENOTSUP;
}

int tern_client_pollfds(tern_client *c, struct pollfd *fds, size_t n) {
  if (!fds && n) return TERN_EINVAL;
  size_t k = tern__poller_pollfds(c->poller, fds, n);
  return k > 0x7fffffff ? TERN_ERESOURCE : (int)k;
}

/* Empties the wake-up, so that the descriptor the app polls is not left
 * readable by a send() that this call is about to act on; the next wake()
 * writes again (under mu: see `woken`). */
static void drain_wake(tern_client *c) {
  /* In this order: a wake() between the two found 1 and did not write,
   * but what it woke for was queued before this call took mu; cleared
   * first, a wake() between would write, be drained, and leave 1 with
   * nothing readable, and every later wake() would stay silent. */
  tern__wake_drain(&c->wake);
  atomic_store(&c->woken, 0);
}

int tern_client_service(tern_client *c, int timeout_ms) {
  pthread_mutex_lock(&c->mu);
  if (tern__cl_thread_other(c)) { /* thread mode: the client's thread services it */
    pthread_mutex_unlock(&c->mu);
    return TERN_EINVAL;
  }
  drain_wake(c);
  uint64_t end = tern__now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
  int rc = 0;
  c->nomem = 0;
  for (;;) {
    uint64_t now = tern__now_ms();
    push_pending(c);
    tern__cl_resolve_step(c, now);
    tern__cl_handle_timers(c, now);
    tern__link_event ev;
    while ((rc = tern__link_service(c->link, 0, &ev)) == 1) tern__cl_on_link_event(c, &ev);
    if (rc < 0) break;
    tern__cl_take_full(c, tern__now_ms());
    tern__cl_take_reset(c);
    tern__cl_take_path(c, tern__now_ms());
    tern__cl_probe_read(c, tern__now_ms());
    tern__cl_ka_sync(c, tern__now_ms());
    tern__cl_flush_core(c);
    now = tern__now_ms();
    if (tern__ccore_pending_events(c->core) || c->nomem || now >= end) break;
    int wait = tern__cl_min_timeout((int)(end - now), tern__cl_next_timeout_locked(c, now));
    if (wait < 0) wait = (int)(end - now);
    pthread_mutex_unlock(&c->mu);
    /* What is ready is looked at by the next round, each part its own. */
    tern__poll_event evs[3 + TERN__KA_SLOTS];
    int n = tern__poller_wait(c->poller, evs, 3 + TERN__KA_SLOTS, wait);
    pthread_mutex_lock(&c->mu);
    drain_wake(c);
    if (n < 0 && n != TERN_EAGAIN) {
      rc = TERN_EIO;
      break;
    }
  }
  int count = rc < 0 ? rc : c->nomem ? TERN_ENOMEM : (int)tern__ccore_pending_events(c->core);
  pthread_mutex_unlock(&c->mu);
  return count;
}

int tern_client_next_event_sized(tern_client *c, tern_event *ev, size_t ev_size) {
  tern_event e;
  pthread_mutex_lock(&c->mu);
  if (tern__cl_thread_other(c)) {
    pthread_mutex_unlock(&c->mu);
    return TERN_EINVAL;
  }
  int r = tern__ccore_next_event(c->core, &e, tern__now_ms());
  /* An app built before `to` existed cannot tell a carbon from a message to
   * it, nor knows TERN_EV_RECEIPTS: those are taken (settled) and not
   * shown to it. A group message still is, as a message from its sender. */
  int old_app = ev_size < offsetof(tern_event, to) + sizeof(e.to);
  while (r == 1 && old_app &&
         ((e.type == TERN_EV_MESSAGE && e.to && e.to[0] != '@') || e.type == TERN_EV_RECEIPTS))
    r = tern__ccore_next_event(c->core, &e, tern__now_ms());
  pthread_mutex_unlock(&c->mu);
  if (r == 1) tern__abi_out(ev, ev_size, &e, sizeof(e));
  return r;
}

static int check_send(tern_client *c, const char *to, const void *body, size_t len) {
  size_t tlen = strlen(to);
  if (!tern__user_valid((const uint8_t *)to, tlen) && !tern__group_valid((const uint8_t *)to, tlen))
    return TERN_EINVAL;
  if (len && !body) return TERN_EINVAL;
  if (len > c->cfg.max_message_size) return TERN_ETOOBIG;
  return 0;
}

static int do_send(tern_client *c, const char *to, const void *body, size_t len, int ephemeral,
                   const char *app_id, uint64_t *cmid) {
  uint64_t id = 0;
  int rc = check_send(c, to, body, len);
  if (rc == 0 && ephemeral && to[0] == '@') rc = TERN_EINVAL; /* typing goes to users only */
  if (rc == 0 && app_id && (!app_id[0] || strlen(app_id) > TERN_APP_ID_MAX)) rc = TERN_EINVAL;
  if (rc == 0) {
    pthread_mutex_lock(&c->mu);
    if (ephemeral && c->state != C_OPEN) rc = TERN_ECLOSED;
    else {
      tern__cl_sync_rtt(c);
      rc = tern__ccore_send_id(c->core, to, body, len, ephemeral, app_id, tern__now_ms(),
                               tern__wall_ms(), &id);
    }
    if (rc == 0) tern__cl_flush_core(c);
    pthread_mutex_unlock(&c->mu);
    if (rc == 0) wake(c);
  }
  if (cmid) *cmid = id;
  return rc;
}

int tern_client_send_id(tern_client *c, const char *to, const void *body, size_t len,
                        const char *app_id, uint64_t *cmid) {
  return do_send(c, to, body, len, 0, app_id, cmid);
}

typedef struct each_ctx {
  tern_outbox_fn fn;
  void *ctx;
  int n;
} each_ctx;

static int each_item(void *arg, const tern__cstore_item *it) {
  each_ctx *e = arg;
  tern_outbox_item item = {.cmid = it->cmid,
                           .state = it->sent ? TERN_OUTBOX_SENT : TERN_OUTBOX_WAITING,
                           .to = it->to,
                           .created_ms = it->created_ms,
                           .body_len = it->body_len,
                           .app_id = it->app_id};
  e->n++;
  return e->fn(e->ctx, &item);
}

int tern_client_outbox_each(tern_client *c, tern_outbox_fn fn, void *ctx) {
  each_ctx e = {.fn = fn, .ctx = ctx};
  pthread_mutex_lock(&c->mu);
  int rc = tern__cstore_list(c->store, each_item, &e);
  pthread_mutex_unlock(&c->mu);
  return rc < 0 ? rc : e.n;
}

int tern_client_send(tern_client *c, const char *to, const void *body, size_t len, uint64_t *cmid) {
  return do_send(c, to, body, len, 0, NULL, cmid);
}

int tern_client_send_ephemeral(tern_client *c, const char *to, const void *body, size_t len) {
  return do_send(c, to, body, len, 1, NULL, NULL);
}

size_t tern_client_outbox_size(tern_client *c) {
  pthread_mutex_lock(&c->mu);
  size_t n = tern__ccore_outbox_size(c->core);
  pthread_mutex_unlock(&c->mu);
  return n;
}

const uint8_t *tern_client_public_key(const tern_client *c) { return c->cfg.keypair.public_key; }

void tern_client_get_stats_sized(tern_client *c, tern_client_stats *st, size_t st_size) {
  pthread_mutex_lock(&c->mu);
  tern_client_stats s = c->stats;
  s.on_tcp = c->state == C_OPEN && c->on_tcp;
  pthread_mutex_unlock(&c->mu);
  tern__abi_out(st, st_size, &s, sizeof(s));
}
