/*
 * The client: the I/O shell around the session core (handshake, sealing) and
 * the messaging core (outbox, delivery). It owns the ENet link, the clock,
 * the random source, the reconnect policy and the lock that lets send() be
 * called from any thread.
 *
 * Locking: every public call takes c->mu. tern_client_service() drops it
 * only while it waits in epoll_wait(), so ENet is never used by two threads
 * at once; a send() from another thread writes the eventfd to wake it.
 */
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/abi.h"
#include "client/backoff.h"
#include "client/ccore.h"
#include "io/clock.h"
#include "store/cstore.h"
#include "wire/errcode.h"
#include "wire/frame.h"
#include "client/kalearn.h"
#include "io/link.h"
#include "wire/session.h"
#include "tern/tern.h"

/* How long a PROBE_KEY may take to come after it was asked for. */
#define KEY_WAIT_MS 10000

/* Room for the largest frame batch plus sealing overhead. */
#define CLIENT_BUF (TERN_MESSAGE_MAX + 4096)

/* An attempt whose ENet connect has had no answer for this long is given up
 * (TERN_ETIMEDOUT) before handshake_timeout_ms, and the first attempt in a
 * row that ends unanswered (by this or by handshake_timeout_ms) is retried
 * at once, without the backoff (spec/handshake.md, 5.1). The link already
 * resends the connect request every quarter second or so; a fresh attempt
 * also gets past a relay that lost the first one's state. */
#define CONNECT_SILENCE_MS 3000

/* DATA that arrives before WELCOME. The relay sends WELCOME as soon as it
 * has read HELLO, and its answers to early data (SERVER_ACK, BUSY, FAILED)
 * after its store commit, on the chat channels: if ENet has to resend a
 * lost WELCOME, they arrive first. ENet has acknowledged them, so dropping
 * them would leave the early messages unanswered until the resend timer
 * (seconds). They are kept, bounded, and opened once the session is. */
#define STASH_PACKETS 32
#define STASH_BYTES 512

typedef struct stashed {
  uint8_t channel;
  uint16_t len;
  uint8_t data[STASH_BYTES];
} stashed;

typedef enum client_state {
  C_IDLE = 0,      /* no link */
  C_LINKING,       /* ENet connect in progress */
  C_HANDSHAKE,     /* HELLO sent, waiting for WELCOME */
  C_OPEN,          /* session open */
  C_CLOSING,       /* tern_client_disconnect(): closing after queued data */
} client_state;

/* Shell events that found no memory, queued again on the next service. */
#define SHELL_PENDING_MAX 8

struct tern_client {
  struct {
    tern_event_type type;
    int error;
  } shell_pending[SHELL_PENDING_MAX];
  unsigned n_shell_pending;
  int nomem;                     /* this service call met TERN_ENOMEM */
  tern_client_config cfg;       /* strings point into the copies below */
  char *relay_host;
  char user_req[TERN_USER_MAX + 1];
  char user[TERN_USER_MAX + 1]; /* assigned by the relay */
  pthread_mutex_t mu;
  int epfd, evfd;
  tern__link *link;
  tern__link_peer *peer;
  tern__session sess;
  client_state state;
  int want_online;              /* connect() called, disconnect() not */
  uint64_t attempt_start_ms;    /* monotonic start of the current attempt */
  uint64_t next_attempt_ms;     /* when to reconnect; 0: no attempt pending */
  int silent_retried;           /* a silent attempt was retried at once since the last OPEN */
  tern__backoff backoff;
  int close_reason;             /* authenticated reason from a CLOSE frame */
  tern__cstore *store;
  tern__ccore *core;
  uint8_t *buf, *pkt;
  stashed stash[STASH_PACKETS]; /* DATA received in C_HANDSHAKE, in order */
  size_t nstash;
  tern_client_stats stats;
  /* Keepalive (spec/keepalive.md). */
  tern__ka ka;
  char network[TERN_NETWORK_MAX + 1];
  int probe_fd[TERN__KA_SLOTS];  /* -1: closed */
  uint32_t relay_ip;             /* the relay's address as ENet reached it, */
  uint16_t relay_udp_port;       /* for probe sockets (host byte order) */
  uint32_t announced_ms;         /* interval the relay was last told, this session */
  int key_requested;             /* a KEEPALIVE asking for a probe key went out */
  uint64_t key_requested_ms;     /* ... at this monotonic time */
  uint64_t last_data_ms;         /* last sealed packet sent or received */
  uint64_t last_ping_ms;         /* last keepalive sent */
  uint64_t keepalives;           /* keepalives sent since tern_client_new() */
  int ka_reported_state;         /* what the last TERN_EV_KEEPALIVE said */
  uint32_t ka_reported_ms;
};

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
}

static void ka_sync(tern_client *c, uint64_t now);

static uint64_t rand64(void *ctx) {
  (void)ctx;
  uint64_t v;
  randombytes_buf(&v, sizeof(v));
  return v;
}

/* Loads what the store knows of network `name` into the learner. */
static int ka_load(tern_client *c, const char *name) {
  tern__cstore_net n;
  int rc = tern__cstore_net_get(c->store, name, &n, tern__wall_ms());
  tern__ka_net known = {.proven_ms = n.proven_ms, .failed_ms = n.failed_ms, .learned_at = n.learned_at};
  tern__ka_set_network(&c->ka, rc == 1 ? &known : NULL, tern__now_ms());
  return rc < 0 ? rc : 0;
}

static int open_state(tern_client *c, const char *dir) {
  char path[4096], err[256];
  if (!dir) return tern__cstore_open(&c->store, ":memory:", 0, err, sizeof(err));
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) return TERN_EIO;
  if (snprintf(path, sizeof(path), "%s/client.db", dir) >= (int)sizeof(path)) return TERN_EINVAL;
  return tern__cstore_open(&c->store, path, c->cfg.durable_fsync ? 2 : 1, err, sizeof(err));
}

static int wake_setup(tern_client *c) {
  c->epfd = epoll_create1(EPOLL_CLOEXEC);
  c->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (c->epfd < 0 || c->evfd < 0) return TERN_EIO;
  struct epoll_event a = {.events = EPOLLIN, .data.u32 = 0};
  struct epoll_event b = {.events = EPOLLIN, .data.u32 = 1};
  if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, tern__link_fd(c->link), &a) != 0 ||
      epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->evfd, &b) != 0)
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
  c->epfd = c->evfd = -1;
  for (unsigned i = 0; i < TERN__KA_SLOTS; i++) c->probe_fd[i] = -1;
  pthread_mutex_init(&c->mu, NULL);
  int rc = TERN_ENOMEM;
  c->cfg = *cfg;
  c->relay_host = strdup(cfg->relay_host);
  c->buf = malloc(CLIENT_BUF);
  c->pkt = malloc(CLIENT_BUF);
  if (!c->relay_host || !c->buf || !c->pkt) goto fail;
  memcpy(c->user_req, cfg->user ? cfg->user : "", ulen + 1);
  c->cfg.relay_host = c->relay_host;
  c->cfg.user = c->user_req;
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
  if ((rc = tern__ccore_new(&c->core, c->store, &cc)) != 0) goto fail;
  if ((rc = tern__link_new(&c->link, NULL, 0, 1)) != 0) goto fail;
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
    if ((rc = ka_load(c, c->network)) != 0) goto fail;
    (void)tern__ka_take_changed(&c->ka);
    c->ka_reported_state = c->ka.state;
    c->ka_reported_ms = tern__ka_interval(&c->ka);
  }
  *out = c;
  return 0;
fail:
  tern_client_free(c);
  return rc;
}

void tern_client_free(tern_client *c) {
  if (!c) return;
  if (c->peer) tern__link_close(c->peer, TERN__DISC_GOODBYE, TERN__LINK_CLOSE_NOW);
  tern__link_free(c->link);
  for (unsigned i = 0; i < TERN__KA_SLOTS; i++)
    if (c->probe_fd[i] >= 0) close(c->probe_fd[i]);
  sodium_memzero(&c->ka, sizeof(c->ka));
  tern__session_wipe(&c->sess);
  tern__ccore_free(c->core);
  tern__cstore_close(c->store);
  if (c->epfd >= 0) close(c->epfd);
  if (c->evfd >= 0) close(c->evfd);
  sodium_memzero(&c->cfg.keypair, sizeof(c->cfg.keypair));
  if (c->buf) sodium_memzero(c->buf, CLIENT_BUF);
  if (c->pkt) sodium_memzero(c->pkt, CLIENT_BUF);
  pthread_mutex_destroy(&c->mu);
  free(c->relay_host);
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
static void push(tern_client *c, tern_event_type type, int error) {
  tern_event ev = {.type = type, .error = error, .user = shell_user(c, type)};
  if (!c->n_shell_pending && tern__ccore_push_event(c->core, &ev) == 0) return;
  c->nomem = 1;
  if (c->n_shell_pending < SHELL_PENDING_MAX) {
    c->shell_pending[c->n_shell_pending].type = type;
    c->shell_pending[c->n_shell_pending].error = error;
    c->n_shell_pending++;
  }
}

/* Queues the shell events that found no memory before, in order. */
static void push_pending(tern_client *c) {
  unsigned done = 0;
  while (done < c->n_shell_pending) {
    tern_event ev = {.type = c->shell_pending[done].type, .error = c->shell_pending[done].error,
                     .user = shell_user(c, c->shell_pending[done].type)};
    if (tern__ccore_push_event(c->core, &ev) < 0) break;
    done++;
  }
  memmove(c->shell_pending, c->shell_pending + done,
          (c->n_shell_pending - done) * sizeof(c->shell_pending[0]));
  c->n_shell_pending -= done;
  if (c->n_shell_pending) c->nomem = 1;
}

static void wake(tern_client *c) {
  uint64_t one = 1;
  ssize_t w = write(c->evfd, &one, sizeof(one));
  (void)w; /* a full counter already means "awake" */
}

/* The link's RTT to the relay, for the core's copy timing. */
static void sync_rtt(tern_client *c) {
  tern__ccore_set_rtt(c->core, c->state == C_OPEN ? tern__link_peer_rtt(c->peer) : 0);
}

/* Ends the link and reports why; schedules a reconnect if wanted. */
static void drop(tern_client *c, int error, int close_how, uint32_t code) {
  if (c->peer && close_how >= 0) tern__link_close(c->peer, code, close_how);
  c->peer = NULL;
  tern__session_wipe(&c->sess);
  c->nstash = 0;
  int was_open = c->state == C_OPEN || c->state == C_CLOSING;
  c->state = C_IDLE;
  c->close_reason = 0;
  c->key_requested = 0;
  tern__ka_session_down(&c->ka); /* its probe key was this session's */
  tern__ccore_offline(c->core);
  push(c, TERN_EV_DISCONNECTED, error);
  if (c->want_online) {
    uint64_t now = tern__now_ms();
    /* A session that was up resets the backoff; a failed attempt grows it. */
    if (was_open) tern__backoff_reset(&c->backoff);
    c->next_attempt_ms = now + tern__backoff_next(&c->backoff, randombytes_random());
    if (c->next_attempt_ms == 0) c->next_attempt_ms = 1;
  }
}

/* ENet's own ping interval for the live link: an hour. ENet pings when no
 * acknowledgement has come for its interval, even while the relay sends,
 * so the client sends its keepalives itself (keepalive_due()); ENet's
 * hourly ping only lets it notice a dead peer with keepalives off. */
static uint32_t enet_ping_ms(const tern_client *c) {
  (void)c;
  return 3600000;
}

/* When the live link's next keepalive is due: the interval after the last
 * datagram either way (0: none is due, keepalives off or no session). */
static uint64_t keepalive_due(const tern_client *c) {
  uint32_t iv = tern__ka_interval(&c->ka);
  if (c->state != C_OPEN || !iv) return 0;
  uint64_t last = c->last_data_ms;
  uint64_t heard = tern__link_peer_heard_ms(c->link, c->peer);
  if (heard > last) last = heard;
  if (c->last_ping_ms > last) last = c->last_ping_ms;
  return last + iv;
}

static int start_attempt(tern_client *c) {
  tern__link_peer *p;
  int rc = tern__link_connect(c->link, c->relay_host, c->cfg.relay_port, &p);
  if (rc) return rc;
  tern__link_peer_set_timing(p, enet_ping_ms(c), c->cfg.timeout_min_ms, c->cfg.timeout_max_ms);
  c->peer = p;
  c->state = C_LINKING;
  c->attempt_start_ms = tern__now_ms();
  c->next_attempt_ms = 0;
  c->close_reason = 0;
  c->user[0] = 0;
  tern__link_flush(c->link); /* the connect request leaves now */
  return 0;
}

int tern_client_connect(tern_client *c) {
  pthread_mutex_lock(&c->mu);
  int rc = 0;
  c->want_online = 1;
  if (c->state == C_IDLE) {
    rc = start_attempt(c);
    if (rc == TERN_ERESOURCE) {
      /* No peer slot free yet (the last link is still being torn down). */
      c->next_attempt_ms = tern__now_ms() + 1;
      rc = 0;
    }
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
    tern__link_close(c->peer, TERN__DISC_GOODBYE, TERN__LINK_CLOSE_LATER);
    tern__link_flush(c->link);
    c->state = C_CLOSING;
  } else if (c->state != C_IDLE && c->state != C_CLOSING) {
    drop(c, TERN_ECLOSED, TERN__LINK_CLOSE_NOW, TERN__DISC_GOODBYE);
  } else if (!was_wanted || c->state == C_CLOSING) {
    rc = TERN_ECLOSED;
  } else {
    push(c, TERN_EV_DISCONNECTED, TERN_ECLOSED); /* was waiting to reconnect */
  }
  pthread_mutex_unlock(&c->mu);
  wake(c);
  return rc;
}

void tern_client_network_changed(tern_client *c) {
  pthread_mutex_lock(&c->mu);
  if (c->want_online) {
    if (c->state != C_IDLE) drop(c, TERN_ETIMEDOUT, TERN__LINK_CLOSE_NOW, TERN__DISC_GOODBYE);
    tern__backoff_reset(&c->backoff);
    c->next_attempt_ms = tern__now_ms(); /* at once, no backoff */
  }
  pthread_mutex_unlock(&c->mu);
  wake(c);
}

int tern_client_set_network(tern_client *c, const char *name) {
  if (!name) name = "";
  size_t len = strlen(name);
  if (len > TERN_NETWORK_MAX) return TERN_EINVAL;
  pthread_mutex_lock(&c->mu);
  int rc = 0;
  if (strcmp(name, c->network) != 0) {
    memcpy(c->network, name, len + 1);
    rc = ka_load(c, c->network);
    if (c->want_online) {
      /* The link belongs to the old network: rebuild it on the new one. */
      if (c->state != C_IDLE) drop(c, TERN_ETIMEDOUT, TERN__LINK_CLOSE_NOW, TERN__DISC_GOODBYE);
      tern__backoff_reset(&c->backoff);
      c->next_attempt_ms = tern__now_ms();
    }
    ka_sync(c, tern__now_ms());
  }
  pthread_mutex_unlock(&c->mu);
  wake(c);
  return rc;
}

void tern_client_set_foreground(tern_client *c, int foreground) {
  pthread_mutex_lock(&c->mu);
  tern__ka_set_foreground(&c->ka, foreground);
  ka_sync(c, tern__now_ms());
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

/* ENet is connected: send HELLO. */
static void on_link_up(tern_client *c) {
  tern__wbuf w;
  tern__wbuf_init(&w, c->buf, TERN__HS_PAYLOAD_MAX);
  tern__fr_hello hello = {.user = (const uint8_t *)c->user_req,
                          .user_len = strlen(c->user_req),
                          .ping_interval_ms = tern__ka_interval(&c->ka)};
  c->announced_ms = (uint32_t)hello.ping_interval_ms;
  tern__link_peer_addr(c->peer, &c->relay_ip, &c->relay_udp_port);
  tern__fr_hello_write(&w, &hello);
  /* Early data: the first messages of the outbox ride in message 1, so the
   * relay can accept one half a round trip after ENet's connect instead of
   * two round trips later. Message 1 can be replayed; the relay's dedup on
   * (device, cmid) makes a replayed MSG harmless (spec/handshake.md). */
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
    drop(c, TERN_EHANDSHAKE, TERN__LINK_CLOSE_NOW, TERN__DISC_PROTOCOL);
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
    int err = tern__wire_err_code(wf.status, TERN_EHANDSHAKE);
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
  c->silent_retried = 0;
  c->stats.connects++;
  c->last_data_ms = tern__now_ms();
  tern__backoff_reset(&c->backoff);
  push(c, TERN_EV_CONNECTED, 0);
  sync_rtt(c);
  tern__ccore_online(c->core, c->user, tern__now_ms());
  /* What overtook WELCOME, in the order it came; stops if it ends the
   * session (a CLOSE frame does not end it here, the link's disconnect does). */
  size_t n = c->nstash;
  c->nstash = 0;
  for (size_t i = 0; i < n && c->state == C_OPEN; i++)
    on_data(c, c->stash[i].channel, c->stash[i].data, c->stash[i].len);
}

/* The frames that are the shell's, not the messaging core's: CLOSE and
 * PROBE_KEY. */
static void on_shell_frames(tern_client *c, const uint8_t *frames, size_t len) {
  tern__rbuf r, body;
  tern__rbuf_init(&r, frames, len);
  uint8_t type;
  while (tern__frame_next(&r, &type, &body) == 1) {
    uint64_t reason;
    tern__fr_probe_key pk;
    if (type == TERN__FR_CLOSE && tern__fr_close_read(&body, &reason) == 0)
      c->close_reason = tern__wire_err_code(reason, c->close_reason);
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
        drop(c, why, -1, 0);
        break;
      }
      default:
        break;
    }
  }
  tern__link_event_done(ev);
}

/* Seals and sends what the messaging core has queued. */
static void flush_core(tern_client *c) {
  tern__ccore_out o;
  while (tern__ccore_next_output(c->core, &o) == 1) {
    if (c->state != C_OPEN) continue; /* offline: the core resends on reconnect */
    size_t n = 0;
    int rc = tern__session_seal(&c->sess, o.channel, o.data, o.len, c->pkt, CLIENT_BUF, &n);
    if (rc == TERN_ENONCE) {
      drop(c, TERN_ENONCE, TERN__LINK_CLOSE_LATER, TERN__DISC_NONCE);
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
static void send_control(tern_client *c, const uint8_t *frames, size_t len) {
  size_t n = 0;
  int rc = tern__session_seal(&c->sess, TERN__CH_CONTROL, frames, len, c->pkt, CLIENT_BUF, &n);
  if (rc == TERN_ENONCE) {
    drop(c, TERN_ENONCE, TERN__LINK_CLOSE_LATER, TERN__DISC_NONCE);
    return;
  }
  if (rc == 0 && tern__link_send(c->link, c->peer, TERN__CH_CONTROL, c->pkt, n, TERN__LINK_RELIABLE) == 0) {
    c->stats.packets_sent++;
    c->last_data_ms = tern__now_ms();
  }
}

/* ---- keepalive: the learner's actions and the live link's timing ------- */

static void probe_close(tern_client *c, unsigned slot) {
  if (c->probe_fd[slot] < 0) return;
  epoll_ctl(c->epfd, EPOLL_CTL_DEL, c->probe_fd[slot], NULL);
  close(c->probe_fd[slot]);
  c->probe_fd[slot] = -1;
}

/* A fresh UDP socket per probe, so that each has its own NAT mapping and
 * nothing else refreshes it. A failure here leaves the slot closed: its
 * requests go nowhere and the probe ends as lost. */
static void probe_open(tern_client *c, unsigned slot) {
  probe_close(c, slot);
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(c->relay_udp_port),
                           .sin_addr.s_addr = htonl(c->relay_ip)};
  struct epoll_event e = {.events = EPOLLIN, .data.u32 = 2 + slot};
  if (connect(fd, (struct sockaddr *)&to, sizeof(to)) != 0 ||
      epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &e) != 0) {
    close(fd);
    return;
  }
  c->probe_fd[slot] = fd;
}

/* Reads whatever the probe sockets hold. */
static void probe_read(tern_client *c, uint64_t now) {
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
  send_control(c, frame, w.len);
  c->announced_ms = (uint32_t)f.interval_ms;
}

/* Carries out what the learner asks, and brings the live link, the store,
 * the relay and the app up to date with what it knows. */
static void ka_sync(tern_client *c, uint64_t now) {
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
    if (c->peer) tern__link_peer_set_timing(c->peer, enet_ping_ms(c), c->cfg.timeout_min_ms,
                                            c->cfg.timeout_max_ms);
    if (c->state == C_OPEN && iv != c->announced_ms) ka_announce(c, 0);
    if (c->ka.state != c->ka_reported_state || iv != c->ka_reported_ms) {
      c->ka_reported_state = c->ka.state;
      c->ka_reported_ms = iv;
      push(c, TERN_EV_KEEPALIVE, c->ka.state == TERN_KA_BAD ? TERN_EBADNET : 0);
    }
  }
  if (c->state == C_OPEN && !c->key_requested &&
      tern__ka_wants_key(&c->ka, now, tern__wall_ms())) {
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

static int min_timeout(int a, int b) {
  if (a < 0) return b;
  if (b < 0) return a;
  return a < b ? a : b;
}

/* ms until the shell's own timers: handshake deadline, reconnect. */
static int shell_timeout(const tern_client *c, uint64_t now) {
  int t = -1;
  if (c->state == C_LINKING || c->state == C_HANDSHAKE) {
    uint64_t d = c->attempt_start_ms + c->cfg.handshake_timeout_ms;
    if (c->state == C_LINKING && c->cfg.handshake_timeout_ms > CONNECT_SILENCE_MS)
      d = c->attempt_start_ms + CONNECT_SILENCE_MS;
    t = now >= d ? 0 : (int)(d - now);
  }
  if (c->state == C_IDLE && c->next_attempt_ms)
    t = min_timeout(t, now >= c->next_attempt_ms ? 0 : (int)(c->next_attempt_ms - now));
  return t;
}

static void handle_timers(tern_client *c, uint64_t now) {
  sync_rtt(c);
  if ((c->state == C_LINKING || c->state == C_HANDSHAKE) && shell_timeout(c, now) == 0) {
    int silent = c->state == C_LINKING;
    drop(c, silent ? TERN_ETIMEDOUT : TERN_EHANDSHAKE, TERN__LINK_CLOSE_NOW, TERN__DISC_HS_TIMEOUT);
    if (silent && !c->silent_retried && c->want_online) {
      c->next_attempt_ms = now; /* at once, once in a row; then the backoff */
      c->silent_retried = 1;
    }
  }
  if (c->state == C_IDLE && c->want_online && c->next_attempt_ms && now >= c->next_attempt_ms) {
    int rc = start_attempt(c);
    if (rc) {
      /* Cannot even start (name does not resolve, no slot): try later. */
      push(c, TERN_EV_DISCONNECTED, rc);
      c->next_attempt_ms = now + tern__backoff_next(&c->backoff, randombytes_random()) + 1;
    }
  }
  if (c->state == C_OPEN && tern__ccore_tick(c->core, now))
    drop(c, TERN_ETIMEDOUT, TERN__LINK_CLOSE_NOW, TERN__DISC_GOODBYE); /* dead link */
  tern__ka_tick(&c->ka, now, tern__wall_ms());
  uint64_t ka = keepalive_due(c);
  if (ka && now >= ka) {
    tern__link_peer_ping(c->peer); /* one small datagram; the relay acknowledges it */
    c->last_ping_ms = now;
    c->keepalives++;
  }
}

static int next_timeout_locked(tern_client *c, uint64_t now) {
  int t = shell_timeout(c, now);
  if (c->state == C_OPEN) t = min_timeout(t, tern__ccore_timeout(c->core, now));
  t = min_timeout(t, tern__ka_timeout(&c->ka, now));
  uint64_t ka = keepalive_due(c);
  if (ka) t = min_timeout(t, now >= ka ? 0 : (int)(ka - now));
  if (c->state == C_OPEN && c->key_requested && !c->ka.have_key)
    t = min_timeout(t, now >= c->key_requested_ms + KEY_WAIT_MS
                           ? 0 : (int)(c->key_requested_ms + KEY_WAIT_MS - now));
  return min_timeout(t, tern__link_next_timeout_ms(c->link));
}

int tern_client_timeout_ms(tern_client *c) {
  pthread_mutex_lock(&c->mu);
  int t = next_timeout_locked(c, tern__now_ms());
  if (tern__ccore_pending_events(c->core)) t = 0;
  pthread_mutex_unlock(&c->mu);
  return t;
}

int tern_client_fd(const tern_client *c) { return c->epfd; }

/* Empties the wake-up eventfd, so that the descriptor the app polls is not
 * left readable by a send() that this call is about to act on. */
static void drain_wake(tern_client *c) {
  uint64_t drain;
  ssize_t r = read(c->evfd, &drain, sizeof(drain));
  (void)r; /* nothing to drain is fine */
}

int tern_client_service(tern_client *c, int timeout_ms) {
  pthread_mutex_lock(&c->mu);
  drain_wake(c);
  uint64_t end = tern__now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
  int rc = 0;
  c->nomem = 0;
  for (;;) {
    uint64_t now = tern__now_ms();
    push_pending(c);
    handle_timers(c, now);
    tern__link_event ev;
    while ((rc = tern__link_service(c->link, 0, &ev)) == 1) on_link_event(c, &ev);
    if (rc < 0) break;
    probe_read(c, tern__now_ms());
    ka_sync(c, tern__now_ms());
    flush_core(c);
    now = tern__now_ms();
    if (tern__ccore_pending_events(c->core) || c->nomem || now >= end) break;
    int wait = min_timeout((int)(end - now), next_timeout_locked(c, now));
    if (wait < 0) wait = (int)(end - now);
    pthread_mutex_unlock(&c->mu);
    struct epoll_event evs[2 + TERN__KA_SLOTS];
    int n = epoll_wait(c->epfd, evs, 2 + TERN__KA_SLOTS, wait);
    pthread_mutex_lock(&c->mu);
    drain_wake(c);
    if (n < 0 && errno != EINTR) {
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
  int r = tern__ccore_next_event(c->core, &e, tern__now_ms());
  pthread_mutex_unlock(&c->mu);
  if (r == 1) tern__abi_out(ev, ev_size, &e, sizeof(e));
  return r;
}

static int check_send(tern_client *c, const char *to, const void *body, size_t len) {
  size_t tlen = strlen(to);
  if (!tern__user_valid((const uint8_t *)to, tlen)) return TERN_EINVAL;
  if (len && !body) return TERN_EINVAL;
  if (len > c->cfg.max_message_size) return TERN_ETOOBIG;
  return 0;
}

static int do_send(tern_client *c, const char *to, const void *body, size_t len, int ephemeral,
                   uint64_t *cmid) {
  uint64_t id = 0;
  int rc = check_send(c, to, body, len);
  if (rc == 0) {
    pthread_mutex_lock(&c->mu);
    if (ephemeral && c->state != C_OPEN) rc = TERN_ECLOSED;
    else {
      sync_rtt(c);
      rc = tern__ccore_send(c->core, to, body, len, ephemeral, tern__now_ms(), tern__wall_ms(), &id);
    }
    if (rc == 0) flush_core(c);
    pthread_mutex_unlock(&c->mu);
    if (rc == 0) wake(c);
  }
  if (cmid) *cmid = id;
  return rc;
}

int tern_client_send(tern_client *c, const char *to, const void *body, size_t len, uint64_t *cmid) {
  return do_send(c, to, body, len, 0, cmid);
}

int tern_client_send_ephemeral(tern_client *c, const char *to, const void *body, size_t len) {
  return do_send(c, to, body, len, 1, NULL);
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
  pthread_mutex_unlock(&c->mu);
  tern__abi_out(st, st_size, &s, sizeof(s));
}
