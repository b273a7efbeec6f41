/*
 * The relay endpoint: accepts ENet peers, runs the responder side of the
 * handshake, asks the auth callback who a key is, and hands the frames of
 * authenticated sessions to the messaging core (rcore), whose store holds
 * every message until its recipient has it. An I/O shell: it owns the
 * clock, the random source, ENet and the store's transactions.
 */
#include <stddef.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/clock.h"
#include "wire/errcode.h"
#include "wire/frame.h"
#include "io/link.h"
#include "relay/devidx.h"
#include "base/u64map.h"
#include "relay/probesvc.h"
#include "relay/rcore.h"
#include "base/abi.h"
#include "base/log.h"
#include "store/rstore.h"
#ifdef TERN_HAVE_CLUSTER
#include "cluster/relay_nats.h"
#endif
#include "wire/reset.h"
#include "wire/session.h"
#include "wire/token.h"
#include "tern/tern.h"

#define RELAY_BUF (TERN_MESSAGE_MAX + 4096)

typedef enum peer_state {
  P_HANDSHAKE = 0, /* ENet connected, no valid HELLO yet */
  P_OPEN,          /* authenticated */
  P_CLOSING,       /* being disconnected; ignore its input */
} peer_state;

typedef struct rpeer {
  uint64_t id;                 /* connection id for the messaging core */
  tern__link_peer *lp;
  tern__session sess;
  peer_state state;
  uint64_t hs_deadline_ms;     /* monotonic: drop if still in P_HANDSHAKE */
  char user[TERN_USER_MAX + 1];
  size_t user_len;
  char name[TERN__ADDR_TEXT];  /* address:port, for logs */
  uint64_t keepalive_ms;       /* the client's announced keepalive interval (0: none) */
  uint64_t ping_ms;            /* when the relay last pinged it (tern__now_ms) */
  int has_probe_key;           /* a PROBE_KEY was given to this session */
  uint8_t probe_id[8], probe_key[32];
  uint32_t rtt_told;           /* the RTT last passed to the messaging core */
  struct rpeer *prev, *next;   /* every peer the relay holds */
  uint64_t opened_ms;          /* when the handshake finished (tern__now_ms) */
  int by_token;                /* a backend token admitted it (spec/tokens.md) */
  uint8_t token_id[TERN__TOKEN_ID_BYTES]; /* that token's id, for revocation */
  /* A HELLO that is authenticated and fresh, waiting in P_HANDSHAKE for
   * the store to commit its timestamp (hello_ticket names the round)
   * before WELCOME opens the session (spec/handshake.md §6): the message
   * 1 payload, owned (NULL: none). */
  uint8_t *hello;
  size_t hello_len;
  uint64_t hello_ticket;
  /* The HELLO timestamp of this session, which names its reset row in the
   * store (spec/wire.md §14); 0: no row written. */
  uint64_t reset_time_us;
  tern__devidx_node by_dev;    /* in r->open_devs while P_OPEN */
} rpeer;

/* Log lines a stranger or a misbehaving session can cause, one token
 * bucket per kind (base/ratelim.h): LOG_BURST at once, then one every
 * LOG_PER_MS; what was held back is counted in the next line of the kind,
 * or in a summary from the timers. The stats count every event. */
#define LOG_BURST 10
#define LOG_PER_MS 1000
enum {
  LIM_HS_VERSION,     /* handshake failed: unsupported version */
  LIM_HS_UNREADABLE,  /* handshake failed: message 1 does not open */
  LIM_HS_MALFORMED,   /* handshake failed: malformed HELLO or its frames */
  LIM_HS_WELCOME,     /* handshake failed: WELCOME could not be sent */
  LIM_HS_STALE,       /* handshake failed: a stale HELLO (a replay?) */
  LIM_HS_STORE,       /* handshake failed: the store, or memory, failed */
  LIM_REFUSED,        /* unknown key or token refused */
  LIM_HS_TIMEOUT,     /* no handshake in time */
  LIM_LINK_UP,        /* an ENet connect (debug) */
  LIM_PKT_REJECTED,   /* a packet that failed to open (debug) */
  LIM_PKT_REPLAYED,   /* a replayed packet (debug) */
  LIM_MALFORMED,      /* a session sent malformed frames */
  LIM_PROBE_KEY,      /* no room for another probe key */
  LIM_CLUSTER,        /* the cluster store could not apply other relays' writes */
  LIM_CONNECT,        /* a session's own life, at info: limited only on a */
  LIM_DISCONNECT,     /* relay that admits any key, where anyone can */
  LIM_REPLACED,       /* cause it (OPEN_BURST, one every OPEN_PER_MS) */
  LIM_COUNT
};
#define OPEN_BURST 100
#define OPEN_PER_MS 100
/* The summary of each kind names it so. */
static const char *const lim_what[LIM_COUNT] = {
    "handshake failed (unsupported protocol version)",
    "handshake failed (message 1 does not open)",
    "handshake failed (malformed HELLO)",
    "handshake failed (could not send WELCOME)",
    "handshake failed (stale HELLO: replayed?)",
    "handshake failed (store or memory)",
    "refused unknown key or token",
    "no handshake in time, dropped",
    "link up, waiting for handshake",
    "packet failed to open, dropped",
    "replayed packet dropped",
    "malformed frames, disconnecting",
    "no room for another probe key",
    "cluster store error",
    "user connected",
    "user disconnected",
    "session replaced by a new one",
};
static const int lim_level[LIM_COUNT] = {1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 1, 1, 0, 2, 2, 2};

struct tern_relay {
  tern_relay_config cfg;
  tern__ratelim lim[LIM_COUNT];
  char *bind_host;
  tern__link *link;
  tern__relay_store *store;
  tern__rcore *core;
  tern__psvc *probes;           /* NULL when cfg.probes is 0 */
  uint64_t next_id;
  uint64_t early_msgs;          /* MSG frames taken from message 1 */
  rpeer *peers;
  size_t npeers;                /* in `peers` */
  /* The per-peer timers (a handshake's deadline, the ping after silence)
   * are found by a walk over every peer, done only when the earliest of
   * them may be due: timers_due_ms is a lower bound on it, lowered by
   * timers_note() wherever a peer's timer is set earlier, and made exact
   * by each walk (at least one a second, whatever it says). */
  uint64_t timers_due_ms;
  uint64_t timers_walked_ms;
  /* The ids of the peers whose HELLO waits for its round's commit
   * (rpeer.hello): flush_core looks at those, not at every peer. */
  uint64_t *hello_ids;
  size_t nhello_ids, caphello_ids;
  tern__u64map by_id;           /* every peer by its id: the core's outputs name them */
  tern__devidx open_devs;       /* the P_OPEN peers by device key (relay/devidx.h) */
  uint8_t *buf, *pkt;
  tern_relay_stats stats;
  uint64_t refused_logged;      /* FULL refusals already logged */
  uint64_t refused_log_ms;      /* when they were last logged */
  int draining;                 /* tern_relay_drain() was called */
  uint32_t drain_window_ms;     /* its window: the GOAWAY delays span it */
  uint64_t drain_start_ms;      /* when it was called (tern__now_ms) */
  /* The RESETs of the start (spec/wire.md §14): sent RESET_BATCH every
   * RESET_EVERY_MS (pass 0), then all once more (pass 1) from
   * RESET_AGAIN_MS after the last, against a lost datagram; then freed. */
  struct rreset *resets;
  size_t nresets, resets_cap;
  size_t reset_idx;             /* sent so far in this pass */
  int reset_pass;
  uint64_t reset_due_ms;        /* when the next batch goes */
  int has_token_key;            /* cfg.token_key was given: tokens are checked */
  uint8_t token_key[32];        /* the backend's Ed25519 public key */
};

/* One RESET datagram and where it goes. */
struct rreset {
  tern__addr to;
  uint8_t dgram[TERN__RESET_BYTES];
};

/* The start's RESETs go out RESET_BATCH at a time, every RESET_EVERY_MS
 * (25,600 a second: a burst that a NIC's queue takes), and the second
 * copies start RESET_AGAIN_MS after the last first copy. */
#define RESET_BATCH 256
#define RESET_EVERY_MS 10
#define RESET_AGAIN_MS 300

/* A refused client is told to come back after this plus a random 0..this
 * (spec/wire.md §10). */
#define FULL_RETRY_MS 5000

/* The first released layout of tern_relay_config ends with this field: a
 * program built against that header passes at least this much. */
#define RELAY_CONFIG_MIN_SIZE (offsetof(tern_relay_config, timeout_max_ms) + sizeof(uint32_t))

void tern_relay_config_default(tern_relay_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->struct_size = sizeof(*cfg);
  cfg->bind_host = "::";
  cfg->port = 7400;
  cfg->handshake_timeout_ms = 5000;
  cfg->max_peers = 4095;
  cfg->max_message_size = 65536;
  /* The relay should never be the side that pings an idle client: the
   * client's own keepalives (at the interval its HELLO or KEEPALIVE
   * announced) reset this timer; this is for a client that announced none. */
  cfg->ping_interval_ms = 60000;
  cfg->timeout_min_ms = 3000;
  cfg->timeout_max_ms = 10000;
  cfg->durable_fsync = 1;
  cfg->retention_ms = 30ull * 24 * 3600 * 1000;
  cfg->store_reserve_bytes = 16ull << 20;
  cfg->probes = 1;
  cfg->recipient_max_messages = cfg->sender_max_messages = 100000;
  cfg->recipient_max_bytes = cfg->sender_max_bytes = 1ull << 30;
  cfg->deliver_budget_bytes = 256ull << 20;
  cfg->send_rate_messages = 1000;
  cfg->send_rate_bytes = 16ull << 20;
}

/* The relay's log line, through the program's callback (base/log.h). */
#define logf_(r, level, ...) tern__logf((r)->cfg.log, (r)->cfg.log_ctx, level, __VA_ARGS__)
/* A line of kind `kind` (LIM_*), through its bucket, at the kind's level. */
#define logf_lim_(r, kind, ...) \
  tern__logf_limited((r)->cfg.log, (r)->cfg.log_ctx, &(r)->lim[kind], tern__now_ms(), \
                     lim_level[kind], __VA_ARGS__)
/* A session's own life: every line, unless the relay admits any key (no
 * auth callback), where a stranger can connect at will. */
#define logf_life_(r, kind, ...)                        \
  do {                                                  \
    if ((r)->cfg.auth) logf_(r, lim_level[kind], __VA_ARGS__); \
    else (void)logf_lim_(r, kind, __VA_ARGS__);         \
  } while (0)

static int on_raw(void *ctx, const tern__addr *from, const uint8_t *data, size_t len);
static void on_move(void *ctx, tern__link_peer *lp, const tern__addr *from, const tern__addr *to);
static void send_resets(tern_relay *r);

/* A peer's timer is now due at `due` (0: none): the walk must not wait
 * past it. */
static void timers_note(tern_relay *r, uint64_t due) {
  if (due && due < r->timers_due_ms) r->timers_due_ms = due;
}

static uint64_t relay_ping_due(const tern_relay *r, const rpeer *p);

/* Leaving P_HANDSHAKE takes the peer out of stats.peers_handshaking. */
static void set_state(tern_relay *r, rpeer *p, peer_state s) {
  if (p->state == P_HANDSHAKE && s != P_HANDSHAKE) r->stats.peers_handshaking--;
  if (s == P_OPEN) tern__devidx_add(&r->open_devs, &p->by_dev, p->sess.remote_static);
  else tern__devidx_del(&r->open_devs, &p->by_dev);
  p->state = s;
  timers_note(r, relay_ping_due(r, p));
}

/* Every packet and probe datagram the relay sends goes through these two,
 * which count its bytes (stats.bytes_sent). */
static int link_send(tern_relay *r, tern__link_peer *lp, uint8_t channel, const void *data,
                     size_t len, int mode) {
  int rc = tern__link_send(r->link, lp, channel, data, len, mode);
  if (rc == 0) r->stats.bytes_sent += len;
  return rc;
}

static void raw_send(tern_relay *r, const tern__addr *to, const void *data, size_t len) {
  if (tern__link_send_raw(r->link, to, data, len) == 0) r->stats.bytes_sent += len;
}

/* Monotonic microseconds, for the store commit histogram only (the
 * relay's timers run on tern__now_ms). */
static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int tern_relay_new(tern_relay **out, const tern_relay_config *in) {
  *out = NULL;
  /* The caller's config, at its size, over this library's defaults. */
  tern_relay_config full, *cfg = &full;
  const char *why;
  tern_relay_config_default(&full);
  if (tern__abi_config_in(&full, sizeof(full), RELAY_CONFIG_MIN_SIZE, in, in->struct_size, &why) < 0) {
    /* The log callback is the caller's, from the leading fields every layout has. */
    if (in->struct_size >= offsetof(tern_relay_config, log_ctx) + sizeof(void *))
      tern__logf(in->log, in->log_ctx, 0, "tern_relay_new: %s", why);
    return TERN_EINVAL;
  }
  full.struct_size = sizeof(full);
  if (cfg->cookies < TERN_RELAY_COOKIES_AUTO || cfg->cookies > TERN_RELAY_COOKIES_NEVER) return TERN_EINVAL;
  if (!cfg->bind_host || cfg->max_peers == 0 || cfg->max_peers > TERN_RELAY_MAX_PEERS) return TERN_EINVAL;
  if (sodium_init() < 0) return TERN_ECRYPTO;
  tern_relay *r = calloc(1, sizeof(*r));
  if (!r) return TERN_ENOMEM;
  int rc = TERN_ENOMEM;
  r->timers_due_ms = UINT64_MAX; /* no peer yet */
  r->cfg = *cfg;
  for (int k = 0; k < LIM_COUNT; k++)
    tern__ratelim_init(&r->lim[k], k >= LIM_CONNECT ? OPEN_BURST : LOG_BURST,
                       k >= LIM_CONNECT ? OPEN_PER_MS : LOG_PER_MS);
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
  char err[256];
  tern__rstore_config sc = {.path = cfg->store_path ? cfg->store_path : ":memory:",
                            .synchronous = cfg->durable_fsync ? 2 : 1,
                            .reserve_bytes = cfg->store_reserve_bytes};
  /* The messaging core and the store report failures (with the store's
   * own reason) through the relay's log. */
  if (tern__is_nats_url(cfg->store_path)) {
#ifdef TERN_HAVE_CLUSTER
    tern__nats_config nc = {.url = cfg->store_path, .log = r->cfg.log, .log_ctx = r->cfg.log_ctx};
    rc = tern__relay_nats_open(&r->store, &nc, err, sizeof(err));
#else
    snprintf(err, sizeof(err), "this libtern was built without the cluster store (TERN_CLUSTER=off, or no libnats)");
    rc = TERN_ENOTSUP;
#endif
    if (rc) {
      logf_(r, 0, "cannot open the cluster store: %s", err);
      if (rc != TERN_ENOMEM && rc != TERN_ENOTSUP && rc != TERN_EINVAL) rc = TERN_ESTORE;
      goto fail;
    }
  } else {
    rc = tern__relay_sqlite_open(&r->store, &sc, r->cfg.log, r->cfg.log_ctx, err, sizeof(err));
    if (rc) {
      logf_(r, 0, "cannot open store %s: %s", sc.path, err);
      goto fail;
    }
  }
  tern__rcore_config cc;
  tern__rcore_config_default(&cc);
  cc.max_message_size = r->cfg.max_message_size;
  if (cfg->retention_ms) cc.retention_ms = cfg->retention_ms;
  /* Sweep often enough that a message expires within a quarter of the
   * retention of its deadline (at most every minute). */
  if (cc.retention_ms / 4 < cc.expire_every_ms)
    cc.expire_every_ms = cc.retention_ms / 4 ? (uint32_t)(cc.retention_ms / 4) : 1;
  cc.user_exists = cfg->user_exists;
  cc.user_ctx = cfg->user_exists_ctx;
  cc.may_send = cfg->may_send;
  cc.may_send_ctx = cfg->may_send_ctx;
  cc.quota_to_msgs = r->cfg.recipient_max_messages;
  cc.quota_to_bytes = r->cfg.recipient_max_bytes;
  cc.quota_from_msgs = r->cfg.sender_max_messages;
  cc.quota_from_bytes = r->cfg.sender_max_bytes;
  cc.deliver_budget_bytes = r->cfg.deliver_budget_bytes;
  cc.send_rate_msgs = r->cfg.send_rate_messages;
  cc.send_rate_bytes = r->cfg.send_rate_bytes;
  if (r->cfg.no_copies) cc.copy_max_bytes = 0; /* no DELIVER is small enough */
  cc.track_stored = cfg->push != NULL;
  cc.may_see = cfg->may_see_presence;
  cc.may_see_ctx = cfg->may_see_presence_ctx;
  cc.log = r->cfg.log;
  cc.log_ctx = r->cfg.log_ctx;
  rc = tern__rcore_new(&r->core, r->store, &cc);
  if (rc) goto fail;
  rc = tern__link_new(&r->link, r->bind_host, cfg->port, cfg->max_peers);
  if (rc) goto fail;
  /* A cluster store's other relays write in the background: their writes
   * end the loop's wait (tern_relay_service, take_remote). */
  if (r->store->ops->remote_fd &&
      (rc = tern__poller_add(tern__link_poller(r->link), r->store->ops->remote_fd(r->store),
                             TERN__POLL_IN, TERN__POLL_TAG_EXTERNAL)) != 0)
    goto fail;
  if ((rc = tern__devidx_init(&r->open_devs, cfg->max_peers)) != 0) goto fail;
  tern__u64map_init(&r->by_id);
  tern__link_set_full_answer(r->link, FULL_RETRY_MS);
  tern__link_set_cookies(r->link, cfg->cookies);
  tern__link_set_packet_limits(r->link, TERN__PACKET_MAX, TERN__HELLO_MAX);
  tern__link_set_move_handler(r->link, on_move, r);
  if (cfg->probes) {
    tern__psvc_config pc;
    tern__psvc_config_default(&pc);
    pc.max_keys = cfg->max_peers;
    if ((rc = tern__psvc_new(&r->probes, &pc)) != 0) goto fail;
    tern__link_set_raw_handler(r->link, on_raw, r);
  }
  r->cfg.store_path = NULL; /* not kept */
  send_resets(r);
  if (cfg->token_key) {
    memcpy(r->token_key, cfg->token_key, sizeof(r->token_key));
    r->has_token_key = 1;
  }
  r->cfg.token_key = NULL; /* the copy above is kept instead */
  *out = r;
  return 0;
fail:
  tern__psvc_free(r->probes);
  tern__link_free(r->link);
  tern__rcore_free(r->core);
  if (r->store) r->store->ops->close(r->store);
  sodium_memzero(&r->cfg.keypair, sizeof(r->cfg.keypair));
  free(r->bind_host);
  free(r->buf);
  free(r->pkt);
  free(r);
  return rc;
}

/* The relay's wall clock, Unix ms: the config's hook, else the system's. */
static uint64_t relay_wall_ms(const tern_relay *r) {
  return r->cfg.wall_clock_ms ? r->cfg.wall_clock_ms(r->cfg.wall_clock_ctx) : tern__wall_ms();
}

static void unlink_peer(tern_relay *r, rpeer *p) {
  if (p->state == P_OPEN || p->state == P_CLOSING) tern__rcore_close(r->core, p->id);
  /* The session is over: no RESET for it at the next start. A failure
   * only means one RESET the client ignores (spec/wire.md §14). */
  if (p->reset_time_us) (void)r->store->ops->reset_del(r->store, p->sess.remote_static, p->reset_time_us);
  if (r->probes && p->has_probe_key) tern__psvc_remove_key(r->probes, p->id);
  sodium_memzero(p->probe_key, sizeof(p->probe_key));
  if (p->prev) p->prev->next = p->next;
  else r->peers = p->next;
  if (p->next) p->next->prev = p->prev;
  r->npeers--;
  tern__u64map_del(&r->by_id, p->id);
  if (p->state == P_OPEN && r->stats.peers_connected) r->stats.peers_connected--;
  if (p->state == P_HANDSHAKE) r->stats.peers_handshaking--;
  tern__devidx_del(&r->open_devs, &p->by_dev);
  tern__session_wipe(&p->sess);
  if (p->hello) sodium_memzero(p->hello, p->hello_len);
  free(p->hello);
  free(p);
}

/* Seals `len` bytes of frames in r->buf and queues them to p. */
static int send_frames(tern_relay *r, rpeer *p, uint8_t channel, size_t len) {
  size_t n = 0;
  int rc = tern__session_seal(&p->sess, channel, r->buf, len, r->pkt, RELAY_BUF, &n);
  if (rc == TERN_ENONCE && p->state == P_OPEN) {
    set_state(r, p, P_CLOSING);
    r->stats.peers_connected--;
    tern__link_close(r->link, p->lp, TERN__DISC_NONCE, TERN__LINK_CLOSE_LATER);
  }
  if (rc) return rc;
  return link_send(r, p->lp, channel, r->pkt, n, TERN__LINK_RELIABLE);
}

/* Sends a sealed CLOSE frame, then closes the link. */
static void close_peer(tern_relay *r, rpeer *p, int reason, uint32_t code, int how) {
  if (p->state == P_OPEN) {
    tern__wbuf w;
    tern__wbuf_init(&w, r->buf, RELAY_BUF);
    tern__fr_close_write(&w, tern__wire_err(reason));
    (void)send_frames(r, p, TERN__CH_CONTROL, w.len);
    r->stats.peers_connected--;
  }
  set_state(r, p, P_CLOSING);
  if (how == TERN__LINK_CLOSE_NOW) tern__link_flush(r->link);
  tern__link_close(r->link, p->lp, code, how);
}

void tern_relay_free(tern_relay *r) {
  if (!r) return;
  for (rpeer *p = r->peers; p; p = p->next) close_peer(r, p, TERN_ESHUTDOWN, TERN__DISC_SHUTDOWN,
                                                       TERN__LINK_CLOSE_NOW);
  while (r->peers) unlink_peer(r, r->peers);
  tern__link_free(r->link);
  tern__psvc_free(r->probes);
  tern__rcore_free(r->core);
  tern__devidx_free(&r->open_devs);
  tern__u64map_free(&r->by_id);
  if (r->store) r->store->ops->close(r->store);
  free(r->resets);
  free(r->hello_ids);
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
    tern__link_close(r->link, lp, TERN__DISC_NONE, TERN__LINK_CLOSE_NOW);
    return;
  }
  p->lp = lp;
  p->id = ++r->next_id;
  if (tern__u64map_put(&r->by_id, p->id, p) < 0) {
    free(p);
    tern__link_close(r->link, lp, TERN__DISC_NONE, TERN__LINK_CLOSE_NOW);
    return;
  }
  p->hs_deadline_ms = tern__now_ms() + r->cfg.handshake_timeout_ms;
  timers_note(r, p->hs_deadline_ms);
  tern__link_peer_name(r->link, lp, p->name, sizeof(p->name));
  tern__link_peer_set_timing(lp, r->cfg.ping_interval_ms, r->cfg.timeout_min_ms,
                             r->cfg.timeout_max_ms);
  tern__link_peer_set_data(lp, p);
  p->next = r->peers;
  if (r->peers) r->peers->prev = p;
  r->peers = p;
  r->npeers++;
  r->stats.peers_handshaking++;
  logf_lim_(r, LIM_LINK_UP, "peer %s: link up, waiting for handshake", p->name);
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

/* Checks a HELLO's backend token (spec/tokens.md §4) against the key of
 * this handshake and the relay's wall clock; on success the token's user
 * is the peer's. Returns 0 or a TERN_ETOKEN* code. */
static int check_token(tern_relay *r, rpeer *p, const tern__fr_hello *h) {
  char requested[TERN_USER_MAX + 1];
  memcpy(requested, h->user, h->user_len);
  requested[h->user_len] = 0;
  tern__token t;
  int rc = tern__token_verify(h->token, h->token_len, r->token_key, p->sess.remote_static,
                              requested, relay_wall_ms(r) / 1000, &t);
  if (rc == 0 && r->cfg.token_revoked &&
      r->cfg.token_revoked(r->cfg.token_revoked_ctx, t.id, t.device_key))
    rc = TERN_ETOKENREVOKED;
  if (rc) return rc;
  memcpy(p->user, t.user, t.user_len + 1);
  memcpy(p->token_id, t.id, sizeof(p->token_id));
  p->by_token = 1;
  return 0;
}

/* WELCOME with `status` (0 or a TERN_E* code) and `reason`. */
/* WELCOME with `status` (0 or a TERN_E* code), `reason` and, for a
 * refusal, when to come back (0: not said). */
static int send_welcome_retry(tern_relay *r, rpeer *p, int status, const char *reason, uint64_t retry_ms) {
  tern__wbuf w;
  tern__wbuf_init(&w, r->buf, TERN__HS_PAYLOAD_MAX);
  tern__fr_welcome wf = {.status = tern__wire_err(status),
                         .user = (const uint8_t *)p->user,
                         .user_len = p->user_len,
                         .server_time_ms = relay_wall_ms(r),
                         .reason = (const uint8_t *)reason,
                         .reason_len = strlen(reason),
                         .retry_ms = retry_ms};
  tern__fr_welcome_write(&w, &wf);
  size_t n = 0;
  int rc = tern__session_relay_welcome(&p->sess, r->buf, w.len, r->pkt, RELAY_BUF, &n);
  if (rc) return rc;
  return link_send(r, p->lp, TERN__CH_CONTROL, r->pkt, n, TERN__LINK_RELIABLE);
}

static int send_welcome(tern_relay *r, rpeer *p, int status, const char *reason) {
  return send_welcome_retry(r, p, status, reason, 0);
}

/* A client refused during a drain comes back after the drain's window,
 * at a random point of the next one (spec/wire.md §6.14): the sessions told
 * GOAWAY keep the first window, and the refused ones, fewer, come back at
 * no more than N / spread a second in the second. */
static uint64_t drain_retry_ms(const tern_relay *r) {
  uint64_t now = tern__now_ms(), end = r->drain_start_ms + r->drain_window_ms;
  return 1 + (end > now ? end - now : 0) +
         (r->drain_window_ms ? randombytes_uniform(r->drain_window_ms) : 0);
}

static void fail_handshake(tern_relay *r, rpeer *p, int err, uint32_t code, int kind,
                           const char *why) {
  r->stats.handshakes_failed++;
  if (code == TERN__DISC_VERSION) r->stats.hs_failed_version++;
  else if (code == TERN__DISC_HELLO_UNREADABLE) r->stats.hs_failed_unreadable++;
  else if (code != TERN__DISC_STALE) r->stats.hs_failed_protocol++;
  logf_lim_(r, kind, "peer %s: handshake failed: %s (%s)", p->name, why, tern_errname(err));
  /* CLOSE_NOW frees the ENet slot at once and gives no DISCONNECT event. */
  tern__link_close(r->link, p->lp, code, TERN__LINK_CLOSE_NOW);
  tern__link_peer_set_data(p->lp, NULL);
  unlink_peer(r, p);
}

/* How long a client that keeps the link alive every `interval` ms may be
 * silent before the relay pings it: later than its keepalive can arrive,
 * so that the relay sends no idle traffic of its own (spec/keepalive.md,
 * "The live link"); a ping then either is answered or lets ENet's timeout
 * find the client dead. 0: the client announced no keepalive. */
static uint64_t silence_limit_ms(uint64_t interval) {
  if (interval == 0) return 0;
  uint64_t limit = interval + (interval / 4 < 5000 ? 5000 : interval / 4);
  return limit > 3600000 ? 3600000 : limit;
}

/* ENet pings whenever no acknowledgement has come for its interval, even
 * while the client's keepalives arrive, so for a client that keeps the
 * link alive the relay holds ENet's ping back (an hour) and pings only
 * after silence_limit_ms of silence (relay_ping_due). A client that
 * announced none gets ENet's ping at the configured interval. */
static void apply_keepalive(tern_relay *r, rpeer *p, uint64_t interval) {
  p->keepalive_ms = interval;
  tern__link_peer_set_timing(p->lp, interval ? 3600000 : r->cfg.ping_interval_ms,
                             r->cfg.timeout_min_ms, r->cfg.timeout_max_ms);
  timers_note(r, relay_ping_due(r, p));
}

/* When the relay must ping p (0: never): the silence limit after the last
 * datagram from it, or after the relay's last ping. */
static uint64_t relay_ping_due(const tern_relay *r, const rpeer *p) {
  uint64_t limit = silence_limit_ms(p->keepalive_ms);
  if (p->state != P_OPEN || !limit) return 0;
  uint64_t last = tern__link_peer_heard_ms(r->link, p->lp);
  if (p->ping_ms > last) last = p->ping_ms;
  return last + limit;
}

/* Records where p's session is, for the RESET of the relay's next start
 * (spec/wire.md §14): a UDP address updates its row, a TCP connection
 * drops it (the connection's close tells the client). Errors go with the
 * round: the client then only waits for its keepalive, as without RESET. */
static void note_reset_addr(tern_relay *r, rpeer *p, const tern__addr *at) {
  if (!p->reset_time_us) return;
  if (tern__addr_is_stream(at, NULL)) {
    (void)r->store->ops->reset_del(r->store, p->sess.remote_static, p->reset_time_us);
    return;
  }
  uint8_t a[TERN__RS_ADDR_BYTES];
  memcpy(a, at->ip, 16);
  a[16] = (uint8_t)(at->port >> 8);
  a[17] = (uint8_t)at->port;
  (void)r->store->ops->reset_put(r->store, p->sess.remote_static, p->reset_time_us, a);
}

static void reset_out(tern_relay *r, const tern__addr *to, const uint8_t dgram[TERN__RESET_BYTES]) {
  if (tern__link_send_raw(r->link, to, dgram, TERN__RESET_BYTES) == 0) {
    r->stats.bytes_sent += TERN__RESET_BYTES;
    r->stats.resets_sent++;
  }
}

/* One row of the previous run: its RESET, kept for the paced sends; sent
 * at once, once, if there is no memory to keep it. */
static void take_reset(void *ctx, const uint8_t dev[32], uint64_t time_us, const uint8_t addr[18]) {
  tern_relay *r = ctx;
  struct rreset e;
  memcpy(e.to.ip, addr, 16);
  e.to.port = (uint16_t)(addr[16] << 8 | addr[17]);
  uint8_t token[TERN__RESET_TOKEN_BYTES];
  tern__reset_token(r->cfg.keypair.secret_key, dev, time_us, token);
  tern__reset_write(e.dgram, token);
  sodium_memzero(token, sizeof(token));
  if (r->nresets == r->resets_cap) {
    size_t cap = r->resets_cap ? 2 * r->resets_cap : 64;
    struct rreset *more = realloc(r->resets, cap * sizeof(*more));
    if (!more) {
      reset_out(r, &e.to, e.dgram);
      return;
    }
    r->resets = more;
    r->resets_cap = cap;
  }
  r->resets[r->nresets++] = e;
}

/* The next batch of the start's RESETs, when due (see RESET_BATCH). */
static void pace_resets(tern_relay *r, uint64_t now) {
  if (!r->nresets || now < r->reset_due_ms) return;
  size_t end = r->reset_idx + RESET_BATCH < r->nresets ? r->reset_idx + RESET_BATCH : r->nresets;
  for (; r->reset_idx < end; r->reset_idx++)
    reset_out(r, &r->resets[r->reset_idx].to, r->resets[r->reset_idx].dgram);
  if (r->reset_idx < r->nresets) {
    r->reset_due_ms = now + RESET_EVERY_MS;
  } else if (r->reset_pass == 0) {
    r->reset_pass = 1;
    r->reset_idx = 0;
    r->reset_due_ms = now + RESET_AGAIN_MS;
  } else {
    free(r->resets);
    r->resets = NULL;
    r->nresets = r->resets_cap = 0;
  }
}

/* Before serving: takes the sessions the previous run left recorded (and
 * forgets them, in one commit) and sends the first batch of their RESETs. */
static void send_resets(tern_relay *r) {
  int n = r->store->ops->reset_take(r->store, take_reset, r);
  int rc = n < 0 ? n : r->store->ops->commit(r->store, tern__now_ms());
  if (rc < 0) {
    r->store->ops->rollback(r->store, tern__now_ms());
    free(r->resets);
    r->resets = NULL;
    r->nresets = r->resets_cap = 0;
    logf_(r, 1, "store error reading the sessions of the previous run (%s): no RESETs",
          r->store->ops->errmsg(r->store));
    return;
  }
  pace_resets(r, tern__now_ms());
  if (n > 0) logf_(r, 2, "telling %d session(s) of the previous run that they are gone (RESET)", n);
}

/* A session moved to a new address without a new handshake. */
static void on_move(void *ctx, tern__link_peer *lp, const tern__addr *from, const tern__addr *to) {
  tern_relay *r = ctx;
  rpeer *p = tern__link_peer_get_data(lp);
  char a[TERN__ADDR_TEXT], b[TERN__ADDR_TEXT];
  tern__link_addr_name(r->link, from, a, sizeof(a));
  tern__link_addr_name(r->link, to, b, sizeof(b));
  if (p) {
    note_reset_addr(r, p, to);
    snprintf(p->name, sizeof(p->name), "%s", b);
    logf_(r, 2, "user %s moved from %s to %s (same session)", p->user[0] ? p->user : "?", a, b);
  }
}

/* A datagram on the UDP port that is not ENet's: a NAT-timeout probe. */
static int on_raw(void *ctx, const tern__addr *from, const uint8_t *data, size_t len) {
  tern_relay *r = ctx;
  uint8_t answer[TERN__PROBE_ANSWER_BYTES];
  size_t n = 0;
  if (!tern__psvc_input(r->probes, from, data, len, tern__now_ms(), answer, sizeof(answer), &n))
    return 0;
  r->stats.bytes_received += len;
  if (n) raw_send(r, from, answer, n);
  return 1;
}

/* Sends the probe REPLYs that are due. */
static void send_probe_replies(tern_relay *r, uint64_t now) {
  if (!r->probes) return;
  uint8_t out[TERN__PROBE_ANSWER_BYTES];
  tern__addr to;
  size_t n;
  while (tern__psvc_next_reply(r->probes, now, &to, out, sizeof(out), &n) == 1)
    raw_send(r, &to, out, n);
}

/* Gives the session a probe key (the same one if it asks again). */
static void send_probe_key(tern_relay *r, rpeer *p) {
  if (!r->probes) return;
  if (!p->has_probe_key) {
    randombytes_buf(p->probe_id, sizeof(p->probe_id));
    randombytes_buf(p->probe_key, sizeof(p->probe_key));
    if (tern__psvc_add_key(r->probes, p->id, p->probe_id, p->probe_key) != 0) {
      logf_lim_(r, LIM_PROBE_KEY, "user %s: no room for another probe key", p->user);
      return;
    }
    p->has_probe_key = 1;
  }
  tern__fr_probe_key f;
  memcpy(f.id, p->probe_id, sizeof(f.id));
  memcpy(f.key, p->probe_key, sizeof(f.key));
  tern__wbuf w;
  tern__wbuf_init(&w, r->buf, RELAY_BUF);
  tern__fr_probe_key_write(&w, &f);
  sodium_memzero(&f, sizeof(f));
  (void)send_frames(r, p, TERN__CH_CONTROL, w.len);
}

/* KEEPALIVE frames are the shell's: they set ENet timing, not messages.
 * Returns 1 if there was one, with the last one's fields in *out. */
static int find_keepalive(const uint8_t *frames, size_t len, tern__fr_keepalive *out) {
  tern__rbuf rb, body;
  tern__rbuf_init(&rb, frames, len);
  uint8_t type;
  int found = 0;
  while (tern__frame_next(&rb, &type, &body) == 1) {
    tern__fr_keepalive ka;
    if (type != TERN__FR_KEEPALIVE || tern__fr_keepalive_read(&body, &ka) != 0) continue;
    *out = ka;
    found = 1;
  }
  return found;
}

static void on_keepalive(tern_relay *r, rpeer *p, const tern__fr_keepalive *ka) {
  if (ka->interval_ms != p->keepalive_ms) {
    logf_(r, 3, "user %s: keepalive every %llu ms", p->user, (unsigned long long)ka->interval_ms);
    apply_keepalive(r, p, ka->interval_ms);
  }
  if (ka->flags & TERN__KAF_WANT_KEY) send_probe_key(r, p);
}

/* One session per device key (spec/wire.md §8.1): p's handshake just
 * completed, so an older open session of its key is closed, its messaging
 * state at once (the new session resends from the device's cursor). */
#define PEER_OF(node) ((rpeer *)((char *)(node) - offsetof(rpeer, by_dev)))

static void replace_older(tern_relay *r, rpeer *p) {
  tern__devidx_node *n = tern__devidx_first(&r->open_devs, p->sess.remote_static), *next;
  for (; n; n = next) {
    next = tern__devidx_next(n); /* closing q takes it out of the index */
    rpeer *q = PEER_OF(n);
    if (q == p) continue;
    logf_life_(r, LIM_REPLACED, "user %s: the session from %s is replaced by a new one from %s", q->user,
               q->name, p->name);
    tern__rcore_close(r->core, q->id);
    close_peer(r, q, TERN_EREPLACED, TERN__DISC_GOODBYE, TERN__LINK_CLOSE_LATER);
    r->stats.sessions_replaced++;
  }
}

static void refuse_stale(tern_relay *r, rpeer *p, const char *key_hex);

/* Gives the client its session's reset token, sealed (spec/wire.md §6.15). */
static void send_reset_token(tern_relay *r, rpeer *p) {
  uint8_t token[TERN__RESET_TOKEN_BYTES];
  tern__reset_token(r->cfg.keypair.secret_key, p->sess.remote_static, p->reset_time_us, token);
  tern__wbuf w;
  tern__wbuf_init(&w, r->buf, RELAY_BUF);
  tern__fr_reset_token_write(&w, token);
  sodium_memzero(token, sizeof(token));
  (void)send_frames(r, p, TERN__CH_CONTROL, w.len);
}

/* Room for one more id in r->hello_ids: 0, or -1 without memory. */
static int hello_ids_room(tern_relay *r) {
  if (r->nhello_ids < r->caphello_ids) return 0;
  size_t cap = r->caphello_ids ? r->caphello_ids * 2 : 64;
  uint64_t *n = realloc(r->hello_ids, cap * sizeof(*n));
  if (!n) return -1;
  r->hello_ids = n;
  r->caphello_ids = cap;
  return 0;
}

static void on_hello(tern_relay *r, rpeer *p, const uint8_t *pkt, size_t len) {
  uint8_t e_priv[TERN_KEY_BYTES];
  randombytes_buf(e_priv, sizeof(e_priv));
  size_t plen = 0;
  int rc = tern__session_relay_hello(&p->sess, &r->cfg.keypair, e_priv, pkt, len, r->buf,
                                     TERN__HS_PAYLOAD_MAX, &plen);
  sodium_memzero(e_priv, sizeof(e_priv));
  if (rc == TERN_EVERSION) {
    fail_handshake(r, p, rc, TERN__DISC_VERSION, LIM_HS_VERSION, "unsupported protocol version");
    return;
  }
  if (rc == TERN_ERELAYKEY) {
    fail_handshake(r, p, rc, TERN__DISC_HELLO_UNREADABLE, LIM_HS_UNREADABLE,
                   "message 1 does not open: the client pinned another relay key, or garbage");
    return;
  }
  if (rc) {
    fail_handshake(r, p, rc, TERN__DISC_PROTOCOL, LIM_HS_MALFORMED, "malformed HELLO");
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
    fail_handshake(r, p, TERN_EPROTO, TERN__DISC_PROTOCOL, LIM_HS_MALFORMED, "HELLO frame missing or malformed");
    return;
  }
  if (r->draining) {
    /* No new session on a draining relay: the client goes elsewhere or
     * comes back after its backoff (spec/wire.md §6.14). */
    (void)send_welcome_retry(r, p, TERN_ESHUTDOWN, "the relay is draining", drain_retry_ms(r));
    r->stats.handshakes_failed++;
    r->stats.hs_failed_draining++;
    set_state(r, p, P_CLOSING);
    tern__link_close(r->link, p->lp, TERN__DISC_SHUTDOWN, TERN__LINK_CLOSE_LATER);
    return;
  }
  char key_hex[TERN_KEY_HEX_BYTES];
  tern_key_to_hex(p->sess.remote_static, key_hex);
  /* A token, when the relay checks tokens, decides alone (tokens.md §4.1). */
  int by_token = r->has_token_key && hello.token_len > 0;
  if (by_token) rc = check_token(r, p, &hello);
  else rc = authenticate(r, p->sess.remote_static, hello.user, hello.user_len, p->user);
  if (rc) {
    p->user[0] = 0;
    p->user_len = 0;
    (void)send_welcome(r, p, rc, by_token ? tern_strerror(rc) : "this client key is not allowed on this relay");
    r->stats.handshakes_failed++;
    r->stats.hs_failed_refused++;
    logf_lim_(r, LIM_REFUSED, "peer %s: refused %s %s (%s)", p->name,
                       by_token ? "the token of key" : "unknown key", key_hex, tern_errname(rc));
    set_state(r, p, P_CLOSING);
    tern__link_close(r->link, p->lp, TERN__DISC_REFUSED, TERN__LINK_CLOSE_LATER);
    return;
  }
  p->user_len = strlen(p->user);
  /* Freshness (spec/handshake.md §6): the HELLO's timestamp must be above
   * every one accepted from this key. A replay is refused before it opens
   * anything; a fresh one waits for the store to commit its timestamp. */
  uint64_t ticket = 0;
  rc = tern__rcore_hello_fresh(r->core, p->sess.remote_static, hello.time_us, tern__now_ms(), &ticket);
  if (rc == 0) {
    refuse_stale(r, p, key_hex);
    return;
  }
  if (rc < 0) {
    fail_handshake(r, p, rc, TERN__DISC_SHUTDOWN, LIM_HS_STORE, "store error on the HELLO timestamp");
    return;
  }
  /* Its reset row goes in the same round: no fsync of its own. */
  tern__addr at;
  p->reset_time_us = hello.time_us;
  if (tern__link_peer_addr(r->link, p->lp, &at) == 0) note_reset_addr(r, p, &at);
  if (hello_ids_room(r) != 0 || !(p->hello = malloc(plen))) {
    fail_handshake(r, p, TERN_ENOMEM, TERN__DISC_PROTOCOL, LIM_HS_STORE, "no memory for a HELLO");
    return;
  }
  memcpy(p->hello, payload, plen);
  p->hello_len = plen;
  p->hello_ticket = ticket;
  sodium_memzero(payload, plen);
  r->hello_ids[r->nhello_ids++] = p->id;
}

/* A HELLO whose timestamp is not above the largest accepted from its key:
 * a replay (or a device whose clock is behind). Its slot is freed at once,
 * with disconnect code 10 (STALE) as the only answer: no session, no early
 * data, nothing written, no WELCOME (which ENet would drop at the client
 * anyway, arriving with the disconnect), no more work than reading it. */
static void refuse_stale(tern_relay *r, rpeer *p, const char *key_hex) {
  r->stats.hs_failed_stale++;
  char why[96];
  snprintf(why, sizeof why, "stale HELLO (replayed?) of key %.16s...", key_hex);
  fail_handshake(r, p, TERN_ESTALE, TERN__DISC_STALE, LIM_HS_STALE, why);
}

/* The store committed (1) or lost (TERN_ESTORE) the timestamp of p's
 * HELLO: open the session and take its early data, or refuse it. */
static void finish_hello(tern_relay *r, rpeer *p, int committed) {
  uint8_t *payload = p->hello;
  size_t plen = p->hello_len;
  p->hello = NULL;
  p->hello_len = 0;
  if (committed != 1) {
    sodium_memzero(payload, plen);
    free(payload);
    (void)send_welcome(r, p, TERN_ESTORE, "the relay's store failed; try again");
    r->stats.handshakes_failed++;
    set_state(r, p, P_CLOSING);
    tern__link_close(r->link, p->lp, TERN__DISC_SHUTDOWN, TERN__LINK_CLOSE_LATER);
    return;
  }
  tern__rbuf rb, body;
  tern__rbuf_init(&rb, payload, plen);
  uint8_t type;
  tern__fr_hello hello;
  /* Read before: cannot fail now. */
  (void)tern__frame_next(&rb, &type, &body);
  (void)tern__fr_hello_read(&body, &hello);
  char key_hex[TERN_KEY_HEX_BYTES];
  tern_key_to_hex(p->sess.remote_static, key_hex);
  int rc = send_welcome(r, p, 0, "");
  if (rc) {
    fail_handshake(r, p, rc, TERN__DISC_PROTOCOL, LIM_HS_WELCOME, "could not send WELCOME");
    sodium_memzero(payload, plen);
    free(payload);
    return;
  }
  apply_keepalive(r, p, hello.ping_interval_ms);
  replace_older(r, p);
  rc = tern__rcore_open(r->core, p->id, p->user, p->sess.remote_static, tern__now_ms());
  if (rc) {
    /* The store failed: this session could not be served. */
    logf_(r, 0, "user %s: store error on connect (%s); dropping", p->user, tern_errname(rc));
    set_state(r, p, P_CLOSING);
    tern__link_close(r->link, p->lp, TERN__DISC_SHUTDOWN, TERN__LINK_CLOSE_LATER);
    sodium_memzero(payload, plen);
    free(payload);
    return;
  }
  set_state(r, p, P_OPEN);
  send_reset_token(r, p);
  tern__link_peer_trust(r->link, p->lp);
  p->opened_ms = tern__now_ms();
  if (r->cfg.push)
    r->cfg.push(r->cfg.push_ctx, TERN_PUSH_CONNECTED, p->user, p->sess.remote_static, "", 0);
  r->stats.handshakes_ok++;
  r->stats.peers_connected++;
  logf_life_(r, LIM_CONNECT, "user %s connected from %s (key %.16s...%s)", p->user, p->name, key_hex,
        p->by_token ? ", backend token" : "");
  /* The session may move to a new address later (spec/wire.md §11). A
   * failure here only means it reconnects if its address changes. */
  tern__path_keys pk;
  tern__path_derive(p->sess.recv_key, p->sess.send_key, &pk);
  (void)tern__link_peer_path_add(r->link, p->lp, &pk);
  sodium_memzero(&pk, sizeof(pk));
  /* Early data: MSG frames after HELLO in message 1. A recorded message 1
   * never gets here again (its timestamp is not fresh), and a resend of a
   * message is answered from the dedup on (device, cmid); still only MSG
   * is taken: anything else there, SYNC above all, is ignored. */
  for (;;) {
    size_t start = rb.pos;
    tern__rbuf frame_body;
    if (tern__frame_next(&rb, &type, &frame_body) != 1) break;
    if (type != TERN__FR_MSG) continue;
    r->early_msgs++;
    (void)tern__rcore_input(r->core, p->id, payload + start, rb.pos - start, tern__now_ms(),
                              relay_wall_ms(r));
  }
  sodium_memzero(payload, plen);
  free(payload);
}

/* Tells the messaging core the peer's RTT (for its copy timing) when it
 * has moved by more than an eighth since last time. */
static void tell_rtt(tern_relay *r, rpeer *p) {
  uint32_t rtt = tern__link_peer_rtt(p->lp);
  uint32_t d = rtt > p->rtt_told ? rtt - p->rtt_told : p->rtt_told - rtt;
  if (p->rtt_told && d <= p->rtt_told / 8) return;
  tern__rcore_set_rtt(r->core, p->id, rtt);
  p->rtt_told = rtt;
}

static void on_data(tern_relay *r, rpeer *p, uint8_t channel, const uint8_t *pkt, size_t len) {
  size_t n = 0;
  uint8_t stream;
  /* Open into r->pkt: r->buf is where outgoing frames are built. */
  int rc = tern__session_open(&p->sess, pkt, len, r->pkt, RELAY_BUF, &n, &stream);
  if (rc == 0 && stream != channel) rc = TERN_EPROTO; /* sealed for another channel */
  if (rc == TERN_EDECRYPT || rc == TERN_EPROTO) {
    r->stats.packets_rejected++;
    logf_lim_(r, LIM_PKT_REJECTED, "user %s: packet failed to open, dropped", p->user);
    return;
  }
  if (rc == TERN_EREPLAY) {
    r->stats.packets_replayed++;
    logf_lim_(r, LIM_PKT_REPLAYED, "user %s: replayed packet dropped", p->user);
    return;
  }
  if (rc) return;
  /* Read KEEPALIVE before the core runs, act on it after: answering
   * seals into r->pkt, which holds these frames. */
  tern__fr_keepalive ka = {0, 0};
  int has_ka = find_keepalive(r->pkt, n, &ka);
  tell_rtt(r, p);
  if (tern__rcore_input(r->core, p->id, r->pkt, n, tern__now_ms(), relay_wall_ms(r)) ==
      TERN_EPROTO) {
    logf_lim_(r, LIM_MALFORMED, "user %s (%s): malformed frames, disconnecting", p->user, p->name);
    close_peer(r, p, TERN_EPROTO, TERN__DISC_PROTOCOL, TERN__LINK_CLOSE_LATER);
    return;
  }
  if (has_ka) on_keepalive(r, p, &ka);
}

static rpeer *find_conn(tern_relay *r, uint64_t id) { return tern__u64map_get(&r->by_id, id); }

/* Commits the round's store writes, then seals and sends what the core
 * released: acks never leave before their messages are durable. A failed
 * commit is logged by the core with the store's reason; its messages get
 * BUSY. */
static void commit_and_send(tern_relay *r, uint64_t now) {
  tern__rcore_stats before, after;
  tern__rcore_get_stats(r->core, &before);
  uint64_t t0 = now_us();
  (void)tern__rcore_commit(r->core, now);
  uint64_t took = now_us() - t0;
  tern__rcore_get_stats(r->core, &after);
  /* Only commits that carried something count: most rounds commit nothing. */
  if (memcmp(&before, &after, sizeof(before)) != 0) {
    static const uint64_t bounds[TERN_RELAY_COMMIT_BUCKETS] = TERN_RELAY_COMMIT_BOUNDS_US;
    r->stats.store_commits++;
    r->stats.store_commit_us += took;
    for (int i = 0; i < TERN_RELAY_COMMIT_BUCKETS; i++)
      if (took <= bounds[i]) r->stats.store_commit_le_us[i]++;
  }
  tern__rcore_out o;
  while (tern__rcore_next(r->core, &o) == 1) {
    rpeer *p = find_conn(r, o.conn);
    if (!p || p->state != P_OPEN || o.len > RELAY_BUF - TERN__DATA_OVERHEAD) continue;
    size_t n = 0;
    int rc = tern__session_seal(&p->sess, o.channel, o.data, o.len, r->pkt, RELAY_BUF, &n);
    if (rc == TERN_ENONCE) {
      set_state(r, p, P_CLOSING);
      r->stats.peers_connected--;
      tern__link_close(r->link, p->lp, TERN__DISC_NONCE, TERN__LINK_CLOSE_LATER);
      continue;
    }
    if (rc == 0)
      (void)link_send(r, p->lp, o.channel, r->pkt, n, tern__link_mode(o.channel, o.reliable));
  }
}

/* Commits the round, then opens the sessions whose HELLO timestamp that
 * commit made durable (or refuses them if it failed), and commits again
 * for what they brought: their device rows and early data. */
/* ---- push (spec/push.md) ------------------------------------------------- */

/* A session of device `dev` is open. */
static int device_live(const tern_relay *r, const uint8_t dev[32]) {
  return tern__devidx_first(&r->open_devs, dev) != NULL;
}

typedef struct push_ctx {
  tern_relay *r;
  const char *user, *from;
  const uint8_t *only; /* NULL: every device of user; else just this one */
} push_ctx;

static int push_device(void *ctx, const uint8_t dev[32], uint64_t waiting, const char *last) {
  push_ctx *pc = ctx;
  tern_relay *r = pc->r;
  if (!waiting || (pc->only && memcmp(pc->only, dev, 32) != 0)) return 0;
  if (!pc->only && device_live(r, dev)) return 0;
  r->stats.push_events++;
  r->cfg.push(r->cfg.push_ctx, TERN_PUSH_WAITING, pc->user, dev, last[0] ? last : pc->from, waiting);
  return 0;
}

/* Tells the push callback about the devices of `user` (or just `only`)
 * that messages wait for. */
static void push_waiting(tern_relay *r, const char *user, const char *from, const uint8_t *only) {
  push_ctx pc = {r, user, from, only};
  if (r->store->ops->devices(r->store, user, push_device, &pc) < 0)
    (void)logf_lim_(r, LIM_HS_STORE, "push: cannot read the devices of %s: %s", user,
                    r->store->ops->errmsg(r->store));
}

typedef struct gpush_ctx {
  tern_relay *r;
  const char *from;
} gpush_ctx;

/* A member device of a group a message was stored for: told if it waits
 * and has no live session (not the sender's own devices: what they sent is
 * no news to them). */
static int push_group_device(void *ctx, const char *user, const uint8_t dev[32], uint64_t waiting) {
  gpush_ctx *g = ctx;
  if (!waiting || !strcmp(user, g->from) || device_live(g->r, dev)) return 0;
  g->r->stats.push_events++;
  g->r->cfg.push(g->r->cfg.push_ctx, TERN_PUSH_WAITING, user, dev, g->from, waiting);
  return 0;
}

typedef struct gleft_ctx {
  tern_relay *r;
  const char *user, *group;
  const uint8_t *dev;
} gleft_ctx;

/* This device's entry among a group's member devices: told if the group's
 * messages wait for it. */
static int push_left_device(void *ctx, const char *user, const uint8_t dev[32], uint64_t waiting) {
  gleft_ctx *g = ctx;
  if (strcmp(user, g->user) || memcmp(dev, g->dev, 32)) return 0;
  if (waiting) {
    g->r->stats.push_events++;
    g->r->cfg.push(g->r->cfg.push_ctx, TERN_PUSH_WAITING, user, dev, g->group, waiting);
  }
  return 1; /* found: stop */
}

static int push_left_group(void *ctx, const char *group) {
  gleft_ctx *g = ctx;
  g->group = group;
  if (g->r->store->ops->group_devices(g->r->store, group, push_left_device, g) < 0)
    (void)logf_lim_(g->r, LIM_HS_STORE, "push: cannot read the devices of group %s: %s", group,
                    g->r->store->ops->errmsg(g->r->store));
  return 0;
}

/* A session of device `dev` of `user` ended and no other is open: it is
 * told of its own messages that wait, and of each group's, with the group
 * as the sender (spec/push.md §3). */
static void push_left(tern_relay *r, const char *user, const uint8_t dev[32]) {
  push_waiting(r, user, "", dev);
  gleft_ctx g = {r, user, NULL, dev};
  if (r->store->ops->user_groups(r->store, user, dev, push_left_group, &g) < 0)
    (void)logf_lim_(r, LIM_HS_STORE, "push: cannot read the groups of %s: %s", user,
                    r->store->ops->errmsg(r->store));
}

/* After a commit: who was stored for, by whom (the core keeps it only when
 * there is a push callback): a user, or every member device of a group. */
static void push_stored(tern_relay *r) {
  const char *to, *from;
  while (tern__rcore_next_stored(r->core, &to, &from) == 1) {
    if (!tern__is_group(to)) {
      push_waiting(r, to, from, NULL);
      continue;
    }
    gpush_ctx g = {r, from};
    if (r->store->ops->group_devices(r->store, to, push_group_device, &g) < 0)
      (void)logf_lim_(r, LIM_HS_STORE, "push: cannot read the devices of group %s: %s", to,
                      r->store->ops->errmsg(r->store));
  }
}

static void flush_core(tern_relay *r, uint64_t now) {
  commit_and_send(r, now);
  if (r->cfg.push) push_stored(r);
  /* The HELLOs whose round has ended, in the order they came; finish_hello
   * opens no new HELLO wait, and a peer it frees leaves its id behind,
   * which finds nothing. */
  int opened = 0;
  size_t kept = 0;
  for (size_t i = 0; i < r->nhello_ids; i++) {
    rpeer *p = find_conn(r, r->hello_ids[i]);
    if (!p || p->state != P_HANDSHAKE || !p->hello) continue;
    int t = tern__rcore_ticket(r->core, p->hello_ticket);
    if (t == 0) {
      r->hello_ids[kept++] = r->hello_ids[i];
      continue;
    }
    finish_hello(r, p, t);
    opened = 1;
  }
  r->nhello_ids = kept;
  if (opened) commit_and_send(r, now);
}

static void on_event(tern_relay *r, tern__link_event *ev) {
  rpeer *p = ev->peer ? tern__link_peer_get_data(ev->peer) : NULL;
  switch (ev->type) {
    case TERN__LINK_EV_CONNECT:
      on_connect(r, ev->peer);
      break;
    case TERN__LINK_EV_RECEIVE:
      r->stats.bytes_received += ev->len;
      if (!p || ev->len == 0) break;
      if (p->state == P_HANDSHAKE && !p->hello && ev->channel == TERN__CH_CONTROL)
        on_hello(r, p, ev->payload, ev->len);
      else if (p->state == P_OPEN && ev->payload[0] == TERN__PKT_DATA)
        on_data(r, p, ev->channel, ev->payload, ev->len);
      break;
    case TERN__LINK_EV_DISCONNECT:
      if (!p) break;
      if (p->state == P_OPEN) logf_life_(r, LIM_DISCONNECT, "user %s disconnected (%s)", p->user, p->name);
      tern__link_peer_set_data(ev->peer, NULL);
      {
        int was_open = p->state == P_OPEN;
        uint8_t dev[TERN_KEY_BYTES];
        char user[TERN_USER_MAX + 1];
        memcpy(dev, p->sess.remote_static, sizeof dev);
        memcpy(user, p->user, sizeof user);
        unlink_peer(r, p);
        /* Messages it had not acknowledged wait for it now. */
        if (was_open && r->cfg.push && !device_live(r, dev)) push_left(r, user, dev);
      }
      break;
    default:
      break;
  }
  tern__link_event_done(ev);
}

/* Drops peers that have not finished the handshake in time, and pings
 * open peers whose keepalive is overdue. */
/* Refusals of new clients (FULL) are logged at most once a second, with
 * their count. */
static void log_refusals(tern_relay *r, uint64_t now) {
  uint64_t n = tern__link_refused(r->link);
  if (n == r->refused_logged || (r->refused_log_ms && now < r->refused_log_ms + 1000)) return;
  logf_(r, 1, "relay full: refused %llu new connection%s with FULL (every one of %u slots taken)",
        (unsigned long long)(n - r->refused_logged), n - r->refused_logged == 1 ? "" : "s",
        r->cfg.max_peers);
  r->refused_logged = n;
  r->refused_log_ms = now;
}

static void handle_timers(tern_relay *r, uint64_t now) {
  log_refusals(r, now);
  for (int k = 0; k < LIM_COUNT; k++)
    (void)tern__log_suppressed(r->cfg.log, r->cfg.log_ctx, &r->lim[k], now, lim_level[k], lim_what[k]);
  if (now < r->timers_due_ms && now < r->timers_walked_ms + 1000) return;
  r->timers_walked_ms = now;
  r->timers_due_ms = UINT64_MAX;
  for (rpeer *p = r->peers, *next; p; p = next) {
    next = p->next;
    uint64_t due = relay_ping_due(r, p);
    if (due && now >= due) {
      tern__link_peer_ping(r->link, p->lp);
      p->ping_ms = now;
      logf_(r, 3, "user %s (%s): silent past its keepalive; pinged", p->user, p->name);
      due = relay_ping_due(r, p);
    }
    timers_note(r, due);
    if (p->state != P_HANDSHAKE) continue;
    if (now < p->hs_deadline_ms) {
      timers_note(r, p->hs_deadline_ms);
      continue;
    }
    r->stats.handshakes_failed++;
    r->stats.hs_failed_timeout++;
    logf_lim_(r, LIM_HS_TIMEOUT, "peer %s: no handshake within %u ms, dropped", p->name,
              r->cfg.handshake_timeout_ms);
    /* CLOSE_NOW frees the ENet slot at once and gives no DISCONNECT event. */
    tern__link_close(r->link, p->lp, TERN__DISC_HS_TIMEOUT, TERN__LINK_CLOSE_NOW);
    tern__link_peer_set_data(p->lp, NULL);
    unlink_peer(r, p);
  }
}

static int core_timeout(const tern_relay *r, uint64_t now) {
  /* What ENet still holds of what was sent counts against the delivery
   * budget too: acks it took in since may have made room. */
  tern__rcore_set_link_bytes(r->core, tern__link_queued_bytes(r->link));
  int best = tern__rcore_timeout(r->core, now);
  if (r->probes) {
    int t = tern__psvc_timeout(r->probes, now);
    if (t >= 0 && (best < 0 || t < best)) best = t;
  }
  if (tern__link_refused(r->link) != r->refused_logged) {
    uint64_t due = r->refused_log_ms + 1000;
    int t = now >= due ? 0 : (int)(due - now);
    if (best < 0 || t < best) best = t;
  }
  /* Suppressed log lines are summed up within a period of their bucket. */
  for (int k = 0; k < LIM_COUNT; k++)
    if (r->lim[k].suppressed && (best < 0 || best > LOG_PER_MS)) best = LOG_PER_MS;
  /* The peers' timers: no walk, their lower bound (handle_timers). */
  if (r->timers_due_ms != UINT64_MAX) {
    uint64_t due = r->timers_due_ms;
    int t = now >= due ? 0 : due - now > 0x7fffffff ? 0x7fffffff : (int)(due - now);
    if (best < 0 || t < best) best = t;
  }
  return best;
}

int tern_relay_timeout_ms(tern_relay *r) {
  uint64_t now = tern__now_ms();
  int a = core_timeout(r, now), b = tern__link_next_timeout_ms(r->link);
  if (r->nresets) {
    int c = now >= r->reset_due_ms ? 0 : (int)(r->reset_due_ms - now);
    if (a < 0 || c < a) a = c;
  }
  if (a < 0) return b;
  if (b < 0) return a;
  return a < b ? a : b;
}

int tern_relay_fd(const tern_relay *r) {
  int fd = tern__poller_fd(tern__link_poller(r->link));
  return fd >= 0 ? fd : TERN_ENOTSUP;
}

int tern_relay_pollfds(tern_relay *r, struct pollfd *fds, size_t n) {
  if (!fds && n) return TERN_EINVAL;
  size_t k = tern__poller_pollfds(tern__link_poller(r->link), fds, n);
  return k > 0x7fffffff ? TERN_ERESOURCE : (int)k;
}

uint16_t tern_relay_port(const tern_relay *r) { return tern__link_port(r->link); }

int tern_relay_listen_tcp(tern_relay *r, uint16_t port, uint16_t *bound) {
  uint16_t got = 0;
  int rc = tern__link_listen_tcp(r->link, port, &got);
  if (bound) *bound = got;
  if (rc == 0) logf_(r, 2, "listening on TCP port %u too (framed datagrams, spec/wire.md §12)", got);
  return rc;
}

static void wake_inbox(void *ctx, const char *user) {
  tern_relay *r = ctx;
  if (!user) (void)tern__rcore_wake_all(r->core, tern__now_ms()); /* the store jumped */
  else (void)tern__rcore_wake_user(r->core, user, tern__now_ms());
}

static void wake_device(void *ctx, const uint8_t dev[32]) {
  tern_relay *r = ctx;
  (void)tern__rcore_wake_device(r->core, dev, tern__now_ms());
}

/* A cluster store: applies what the other relays wrote and wakes the
 * sessions it concerns (their deliveries and notices go out with this
 * round's commit). */
static void take_remote(tern_relay *r) {
  if (!r->store->ops->remote_take) return;
  if (r->store->ops->remote_take(r->store, wake_inbox, wake_device, r) < 0)
    logf_lim_(r, LIM_CLUSTER, "%s", r->store->ops->errmsg(r->store));
}

int tern_relay_service(tern_relay *r, int timeout_ms) {
  uint64_t end = tern__now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
  for (;;) {
    /* A round: what other relays wrote (a cluster store), everything that
     * has arrived, the timers, then one group commit and the outputs it
     * releases. */
    tern__link_event ev;
    int rc;
    take_remote(r);
    while ((rc = tern__link_service(r->link, 0, &ev)) == 1) on_event(r, &ev);
    if (rc < 0) return rc;
    uint64_t now = tern__now_ms();
    pace_resets(r, now);
    handle_timers(r, now);
    tern__rcore_set_link_bytes(r->core, tern__link_queued_bytes(r->link));
    tern__rcore_tick(r->core, now, relay_wall_ms(r));
    send_probe_replies(r, now);
    flush_core(r, now);
    tern__link_flush(r->link);
    now = tern__now_ms();
    if (now >= end) break;
    int left = (int)(end - now);
    int wait = tern_relay_timeout_ms(r);
    if (wait < 0 || wait > left) wait = left;
    rc = tern__link_service(r->link, wait, &ev);
    if (rc < 0) return rc;
    if (rc == 1) on_event(r, &ev);
  }
  return 0;
}

int tern_relay_recheck_auth(tern_relay *r) {
  int dropped = 0;
  for (rpeer *p = r->peers; p; p = p->next) {
    if (p->state != P_OPEN) continue;
    if (p->by_token) {
      if (!r->cfg.token_revoked ||
          !r->cfg.token_revoked(r->cfg.token_revoked_ctx, p->token_id, p->sess.remote_static))
        continue;
      logf_(r, 2, "user %s (%s): token or key revoked, disconnecting", p->user, p->name);
      close_peer(r, p, TERN_ETOKENREVOKED, TERN__DISC_REVOKED, TERN__LINK_CLOSE_LATER);
      dropped++;
      continue;
    }
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

void tern_relay_get_stats_sized(const tern_relay *r, tern_relay_stats *out, size_t out_size) {
  tern_relay_stats s, *st = &s;
  *st = r->stats;
  tern__rcore_stats cs;
  tern__rcore_get_stats(r->core, &cs);
  st->messages_stored = cs.stored;
  st->messages_early = r->early_msgs;
  st->messages_deduped = cs.deduped;
  st->messages_delivered = cs.delivered;
  st->messages_refused = cs.refused;
  st->messages_over_quota = cs.over_quota;
  st->messages_over_rate = cs.over_rate;
  st->deliver_budget_stalls = cs.budget_stalls;
  st->deliver_bytes_unacked = cs.deliver_bytes;
  st->presence_sent = cs.presence_sent;
  st->messages_busy = cs.busy;
  st->messages_expired = cs.expired;
  st->messages_out_of_order = cs.no_prev;
  st->messages_stale = cs.stale_msgs;
  st->store_errors = cs.store_errors;
  st->connects_refused_full = tern__link_refused(r->link);
  tern__link_cookie_counts(r->link, &st->cookies_sent, &st->cookie_connects, &st->cookies_bad);
  tern__mig_stats ms;
  tern__link_mig_stats(r->link, &ms);
  st->sessions_moved = ms.moves;
  tern__link_tcp_counts(r->link, &st->tcp_accepted, &st->tcp_connections);
#ifdef TERN_HAVE_CLUSTER
  if (r->store->ops->remote_take) {
    tern__nats_stats ns;
    tern__relay_nats_stats(r->store, &ns);
    st->cluster = 1;
    st->cluster_connected = (uint64_t)ns.connected;
    st->cluster_position = ns.position;
    st->cluster_published = ns.published;
    st->cluster_applied = ns.applied;
    st->cluster_refused = ns.refused;
    st->cluster_publish_errors = ns.publish_errors;
    st->cluster_resyncs = ns.resyncs;
    st->cluster_acks_refuted = ns.acks_refuted;
  }
#endif
  st->draining = (uint64_t)r->draining;
  st->peers_held = r->npeers;
  if (r->probes) {
    tern__psvc_stats ps;
    tern__psvc_get_stats(r->probes, &ps);
    st->probe_requests = ps.requests;
    st->probe_replies = ps.replies;
    st->probe_rejected = ps.rejected;
    st->probe_limited = ps.limited;
  }
  tern__abi_out(out, out_size, &s, sizeof(s));
}

int tern_relay_sessions_each(tern_relay *r, tern_relay_session_fn fn, void *ctx) {
  int n = 0;
  uint64_t now = tern__now_ms();
  for (const rpeer *p = r->peers; p; p = p->next) {
    if (p->state != P_OPEN) continue;
    tern_relay_session s = {.user = p->user,
                            .address = p->name,
                            .keepalive_ms = p->keepalive_ms,
                            .age_ms = now > p->opened_ms ? now - p->opened_ms : 0,
                            .rtt_ms = tern__link_peer_rtt(p->lp),
                            .tcp = tern__link_peer_is_tcp(r->link, p->lp) == 1};
    memcpy(s.device_key, p->sess.remote_static, TERN_KEY_BYTES);
    n++;
    if (fn(ctx, &s)) break;
  }
  return n;
}

int tern_relay_kick(tern_relay *r, const char *user, const uint8_t *device_key) {
  int kicked = 0;
  for (rpeer *p = r->peers; p; p = p->next) {
    if (p->state != P_OPEN || strcmp(p->user, user) != 0) continue;
    if (device_key && sodium_memcmp(device_key, p->sess.remote_static, TERN_KEY_BYTES) != 0) continue;
    logf_(r, 2, "user %s (%s): kicked by the operator, disconnecting", p->user, p->name);
    close_peer(r, p, TERN_EUNKNOWNKEY, TERN__DISC_REVOKED, TERN__LINK_CLOSE_LATER);
    kicked++;
  }
  tern__link_flush(r->link);
  return kicked;
}

int tern_relay_group_set(tern_relay *r, const char *group, const char *const *members, size_t n) {
  if (!tern__group_valid((const uint8_t *)group, strlen(group)) || n > TERN_GROUP_MEMBERS_MAX ||
      (n && !members))
    return TERN_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (!members[i] || !tern__user_valid((const uint8_t *)members[i], strlen(members[i]))) return TERN_EINVAL;
  uint64_t now = tern__now_ms(), point = 0;
  /* Committed (durable) when it returns 0. What follows for live sessions
   * (their GROUP_FLOORs and cursors) is a round of its own: if that commit
   * fails, the core resends it later, and the change stands. */
  int rc = tern__rcore_group_set(r->core, group, members, n, now, &point);
  if (rc == 0 && tern__rcore_commit(r->core, now) != 0)
    logf_(r, 1, "group %s: the change is stored, but starting it on live sessions failed for now", group);
  flush_core(r, now);
  tern__link_flush(r->link);
  if (rc == 0) logf_(r, 2, "group %s: %zu member(s), from seq %llu on", group, n, (unsigned long long)point);
  return rc;
}

int tern_relay_group_members(tern_relay *r, const char *group, int (*cb)(void *ctx, const char *user),
                             void *ctx) {
  if (!tern__group_valid((const uint8_t *)group, strlen(group))) return TERN_EINVAL;
  int rc = r->store->ops->group_members(r->store, group, cb, ctx);
  return rc < 0 ? TERN_ESTORE : rc;
}

int tern_relay_remove_device(tern_relay *r, const uint8_t device_key[TERN_KEY_BYTES]) {
  for (rpeer *p = r->peers; p; p = p->next) {
    if (p->state != P_OPEN || sodium_memcmp(device_key, p->sess.remote_static, TERN_KEY_BYTES) != 0) continue;
    logf_(r, 2, "user %s (%s): its device is removed, disconnecting", p->user, p->name);
    close_peer(r, p, TERN_EUNKNOWNKEY, TERN__DISC_REVOKED, TERN__LINK_CLOSE_LATER);
    /* Out of the messaging core now: nothing of it may touch the store
     * after its device row is gone (unlink_peer's close is then a no-op). */
    tern__rcore_close(r->core, p->id);
  }
  uint64_t now = tern__now_ms();
  int rc = tern__rcore_device_remove(r->core, device_key, now);
  /* Durable before the caller is told. */
  if (rc >= 0 && tern__rcore_commit(r->core, now) != 0) rc = TERN_ESTORE;
  flush_core(r, now);
  tern__link_flush(r->link);
  if (rc == 1) {
    char hex[TERN_KEY_HEX_BYTES];
    tern_key_to_hex(device_key, hex);
    logf_(r, 2, "device %.16s... removed: its cursor no longer holds messages back", hex);
  }
  return rc;
}

/* spec/wire.md §6.14: every open session is told GOAWAY with its own delay,
 * the N of them spread evenly over the window, then CLOSE; each session
 * ends once what was queued to it before has been delivered (ENet's
 * disconnect-later), so acknowledgements already given reach their
 * clients. */
int tern_relay_drain(tern_relay *r, uint32_t window_ms) {
  uint64_t now = tern__now_ms();
  int first = !r->draining;
  if (first) {
    r->draining = 1;
    r->drain_window_ms = window_ms;
    r->drain_start_ms = now;
  }
  /* Commit what has arrived and send its SERVER_ACKs first: GOAWAY follows
   * them; what comes after it is not acted on and stays in its sender's
   * outbox for the next session. */
  flush_core(r, now);
  uint64_t n = 0, i = 0;
  for (rpeer *p = r->peers; p; p = p->next) n += p->state == P_OPEN;
  for (rpeer *p = r->peers; p; p = p->next) {
    if (p->state != P_OPEN) continue;
    tern__wbuf w;
    tern__wbuf_init(&w, r->buf, RELAY_BUF);
    tern__fr_u64_write(&w, TERN__FR_GOAWAY, (uint64_t)window_ms * ++i / n);
    tern__fr_close_write(&w, tern__wire_err(TERN_ESHUTDOWN));
    (void)send_frames(r, p, TERN__CH_CONTROL, w.len);
    r->stats.peers_connected--;
    set_state(r, p, P_CLOSING);
    tern__link_close(r->link, p->lp, TERN__DISC_SHUTDOWN, TERN__LINK_CLOSE_LATER);
  }
  tern__link_flush(r->link);
  if (first)
    logf_(r, 1, "draining: no new sessions; %llu open session%s told to reconnect within %u ms",
          (unsigned long long)n, n == 1 ? "" : "s", window_ms);
  return (int)n;
}

int tern_relay_drained(const tern_relay *r) { return r->draining && !r->peers; }
