/*
 * tern: reliable, encrypted, battery-friendly message transport over UDP.
 *
 * This is the whole public API of libtern. Names starting with tern_ / TERN_
 * are public; anything else is internal and may change without notice.
 *
 * Conventions
 *  - Functions that can fail return 0 (or a non-negative count) on success and
 *    a negative TERN_E* code on failure; tern_strerror() describes a code.
 *    Each function's comment lists the codes it can return.
 *  - Configuration structs are initialised with tern_*_config_default() and
 *    then changed field by field, so that fields added in later versions get
 *    sensible defaults without breaking callers.
 *  - Ownership of every pointer is stated next to the function that takes or
 *    returns it.
 *  - Threads: unless a comment says otherwise, one tern_client or tern_relay
 *    must be used from one thread at a time.
 */
#ifndef TERN_H
#define TERN_H

#include <stddef.h>
#include <stdint.h>

#include "tern/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define TERN_EXPORT __attribute__((visibility("default")))
#define TERN_WUR __attribute__((warn_unused_result))
#define TERN_NONNULL(...) __attribute__((nonnull(__VA_ARGS__)))
#else
#define TERN_EXPORT
#define TERN_WUR
#define TERN_NONNULL(...)
#endif

/* ---------------------------------------------------------------- errors */

enum {
  TERN_OK = 0,
  TERN_EINVAL = -1,       /* an argument is invalid */
  TERN_ENOMEM = -2,       /* out of memory */
  TERN_EPROTO = -3,       /* the peer sent malformed or unexpected data */
  TERN_EDECRYPT = -4,     /* a packet failed authentication (tampered or wrong key) */
  TERN_EREPLAY = -5,      /* a packet was a replay or fell behind the replay window */
  TERN_ERELAYKEY = -6,    /* the relay's key does not match the pinned key */
  TERN_EUNKNOWNKEY = -7,  /* the relay does not know this client's key */
  TERN_EHANDSHAKE = -8,   /* the handshake failed or did not finish in time */
  TERN_ENONCE = -9,       /* the session used up its nonces and must reconnect */
  TERN_ETOOBIG = -10,     /* a message or buffer is larger than allowed */
  TERN_EIO = -11,         /* an operating-system I/O call failed (see errno) */
  TERN_ETIMEDOUT = -12,   /* the peer stopped answering */
  TERN_ECLOSED = -13,     /* not connected, or closed by request */
  TERN_EAGAIN = -14,      /* nothing to do now; try again later */
  TERN_EEXIST = -15,      /* a file exists and would be overwritten */
  TERN_ENOENT = -16,      /* a file, user or record does not exist */
  TERN_EKEYFILE = -17,    /* a key file is malformed or has unsafe permissions */
  TERN_EOFFLINE = -18,    /* unused since the relay stores messages; kept so codes stay stable */
  TERN_EVERSION = -19,    /* the peer speaks an incompatible protocol version */
  TERN_EBUFSIZE = -20,    /* an output buffer is too small */
  TERN_ECRYPTO = -21,     /* the crypto library failed to initialise */
  TERN_EADDR = -22,       /* an address could not be resolved or bound */
  TERN_ERESOURCE = -23,   /* a limit was reached (peers, queue, descriptors) */
  TERN_ESHUTDOWN = -24,   /* the relay is shutting down */
  TERN_ESTORE = -25,      /* the message store failed (disk full, I/O error) */
  TERN_EEXPIRED = -26,    /* the message was not delivered within the retention */
  TERN_EDENIED = -27,     /* the relay does not allow this sender to message that user */
};

/* A static, human-readable description of a TERN_E* code. Never NULL; an
 * unknown code gives "unknown error". */
TERN_EXPORT const char *tern_strerror(int err);

/* A short constant name for a code, e.g. "TERN_ERELAYKEY". Never NULL. */
TERN_EXPORT const char *tern_errname(int err);

/* The version of the library actually linked, e.g. "0.1.0". Compare with
 * TERN_VERSION_STRING to detect a header/library mismatch. */
TERN_EXPORT const char *tern_version(void);

/* The linked library's version as TERN_VERSION_HEX would encode it. */
TERN_EXPORT uint32_t tern_version_number(void);

/* ------------------------------------------------------------------ keys */

#define TERN_KEY_BYTES 32

/* Key encodings accepted and printed by the tools: 64 lowercase hex digits.
 * TERN_KEY_HEX_BYTES includes the terminating NUL. */
#define TERN_KEY_HEX_BYTES 65

typedef struct tern_keypair {
  uint8_t public_key[TERN_KEY_BYTES];
  uint8_t secret_key[TERN_KEY_BYTES];
} tern_keypair;

/* Fills *kp with a fresh X25519 keypair from the system's random source.
 * Returns 0, or TERN_ECRYPTO if libsodium cannot initialise. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1) int tern_keypair_generate(tern_keypair *kp);

/* Writes a keypair to `path` as a private key file (mode 0600, created
 * atomically: a crash leaves either no file or a whole one; the format is in
 * spec/keys.md). Unless `force` is non-zero an existing file (even one that
 * appears while this call runs) is left alone and TERN_EEXIST is returned.
 * Returns 0, TERN_EEXIST, TERN_EINVAL (public_key is not the public key of
 * secret_key), TERN_EIO (errno set; if it was the final fsync of the
 * directory that failed, the file is already in place), TERN_ENOMEM,
 * TERN_ECRYPTO. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_keypair_save(const char *path, const tern_keypair *kp,
                                                              int force);

/* Reads a private key file written by tern_keypair_save() and derives the
 * public key. A file that group or others may read or write (mode & 077), or
 * that is not a regular file, is refused, the way ssh refuses such keys; so
 * is a file whose "public:" line is not the secret's public key. Returns 0,
 * TERN_ENOENT, TERN_EIO (errno set), TERN_EKEYFILE, TERN_ECRYPTO. On failure
 * *kp is zeroed. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_keypair_load(const char *path, tern_keypair *kp);

/* Encodes a 32-byte key as 64 lowercase hex digits plus NUL into `out`. */
TERN_EXPORT TERN_NONNULL(1, 2) void tern_key_to_hex(const uint8_t key[TERN_KEY_BYTES],
                                                    char out[TERN_KEY_HEX_BYTES]);

/* Decodes 64 hex digits (either case, surrounding whitespace ignored).
 * Returns 0 or TERN_EINVAL; on failure `key` is zeroed. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_key_from_hex(const char *hex, uint8_t key[TERN_KEY_BYTES]);

/* ---------------------------------------------------------------- client */

typedef struct tern_client tern_client;

/* Largest user name, in bytes, not counting the NUL. A name is 1 to 64
 * bytes with no ASCII control characters, spaces or '@'; other bytes (UTF-8)
 * are taken as they are. */
#define TERN_USER_MAX 64

/* Hard ceiling for any single message body. */
#define TERN_MESSAGE_MAX (1u << 20)

typedef struct tern_client_config {
  /* Relay host name or IPv4 address (ENet is IPv4-only) and UDP port. The
   * string is copied by tern_client_new(). Required. */
  const char *relay_host;
  uint16_t relay_port;
  /* The relay's static public key, pinned: a relay that cannot prove it
   * holds the matching private key is refused with TERN_ERELAYKEY. */
  uint8_t relay_public_key[TERN_KEY_BYTES];
  /* This device's identity. Copied; the caller may wipe its copy. */
  tern_keypair keypair;
  /* The user name this device asks for. A relay with an allow-list ignores
   * it and uses the name the list gives the key; a relay in --open mode uses
   * it as is. NULL or "" lets the relay choose. Copied. */
  const char *user;
  /* Directory for the client's state (created if missing): the outbox,
   * what was delivered, receipts awaited. With it, nothing accepted by
   * tern_client_send() is lost and nothing is delivered twice across
   * crashes and restarts of the app. NULL keeps the state in memory: the
   * same guarantees for the life of the process. One client at a time may
   * use a directory. */
  const char *state_dir;
  /* 1: fsync the state on every change (survives power loss); 0 (default):
   * survives a crash of the app, which is what phones need, for less I/O. */
  int durable_fsync;
  /* Milliseconds a connection attempt may take, from its start to the end
   * of the handshake. When it runs out the attempt fails with
   * TERN_ETIMEDOUT if the relay never answered at the ENet level, or with
   * TERN_EHANDSHAKE if it answered but the handshake did not finish.
   * Default 10000. An attempt the relay has not answered at all after 3 s
   * fails earlier, with TERN_ETIMEDOUT; the first unanswered attempt in a
   * row is retried at once, without the backoff (spec/handshake.md 5.1). */
  uint32_t handshake_timeout_ms;
  /* Largest body tern_client_send() accepts, in bytes. Default 65536;
   * values above TERN_MESSAGE_MAX (or 0) mean TERN_MESSAGE_MAX. */
  uint32_t max_message_size;
  /* Reconnect backoff: after the n-th failure in a row the next attempt
   * waits a random time in [0, min(cap, base * 2^n)] ms ("full jitter").
   * Defaults 500 and 30000. A success resets n. */
  uint32_t reconnect_base_ms;
  uint32_t reconnect_cap_ms;
  /* A message unacknowledged by the relay for this long means the link is
   * dead: the client drops it and reconnects. Default 8000 (ENet alone
   * would take up to 30 s). */
  uint32_t dead_link_ms;
  /* ENet's link timing, in milliseconds. Default ping 15000, and a peer that
   * leaves a reliable packet unacknowledged for timeout_max_ms is dropped
   * (default 10000, minimum timeout_min_ms default 3000). */
  uint32_t ping_interval_ms;
  uint32_t timeout_min_ms;
  uint32_t timeout_max_ms;
} tern_client_config;

/* Fills *cfg with defaults; relay_host, relay_port, relay_public_key and
 * keypair must then be set by the caller. */
TERN_EXPORT TERN_NONNULL(1) void tern_client_config_default(tern_client_config *cfg);

typedef enum tern_event_type {
  TERN_EV_NONE = 0,
  /* The session is up; `user` is the name the relay assigned. The outbox is
   * being resent; messages stored while offline follow. */
  TERN_EV_CONNECTED = 1,
  /* The session is gone; `error` says why (TERN_ECLOSED after
   * tern_client_disconnect(), TERN_ETIMEDOUT, TERN_ERELAYKEY,
   * TERN_EUNKNOWNKEY, TERN_EHANDSHAKE, TERN_EVERSION, TERN_ENONCE,
   * TERN_ESHUTDOWN, TERN_EPROTO). Unless the app called
   * tern_client_disconnect(), the client reconnects by itself. */
  TERN_EV_DISCONNECTED = 2,
  /* A message arrived: `user` is the sender, `seq` its place in our inbox,
   * `server_time_ms` when the relay accepted it, `body`/`body_len` its
   * bytes. Each message arrives once, in the order its sender sent it
   * (messages from different senders are not held back for each other).
   * It counts as delivered when tern_client_next_event() hands it over. */
  TERN_EV_MESSAGE = 3,
  /* Message `cmid` is stored by the relay (`seq` in the recipient's inbox,
   * `server_time_ms`); it will not be lost. `user` is the recipient. */
  TERN_EV_SENT = 4,
  /* Message `cmid` reached a device of its recipient. */
  TERN_EV_DELIVERED = 5,
  /* Message `cmid` will never be delivered; `error` says why: TERN_ETOOBIG
   * (over the relay's limit), TERN_ENOENT (no such user), TERN_EEXPIRED
   * (not fetched within the relay's retention), TERN_EDENIED. */
  TERN_EV_FAILED = 6,
} tern_event_type;

typedef struct tern_event {
  tern_event_type type;
  int error;          /* a TERN_E* code, 0 when not applicable */
  uint64_t cmid;      /* client message id: SENT, DELIVERED, FAILED */
  uint64_t seq;       /* MESSAGE: position in this user's inbox (0 for an
                         ephemeral message); SENT: position in the
                         recipient's inbox */
  uint64_t server_time_ms; /* MESSAGE, SENT: when the relay accepted it, Unix ms */
  const char *user;   /* NUL-terminated, never NULL; see the event types */
  const uint8_t *body;
  size_t body_len;
} tern_event;

/* Thread safety: tern_client_send(), tern_client_send_ephemeral(),
 * tern_client_network_changed() and tern_client_outbox_size() may be called
 * from any thread at any time. tern_client_service() and
 * tern_client_next_event() must be called from one thread (the one that
 * runs the client); tern_client_free() when no other call is running. */

/* Creates a client and opens its state. Nothing is sent until
 * tern_client_connect(). On success *out owns a client to be released with
 * tern_client_free(); on failure *out is NULL. Returns 0, TERN_EINVAL
 * (missing host/port, bad user name), TERN_ENOMEM, TERN_ECRYPTO, TERN_EIO
 * (no socket, cannot create state_dir), TERN_ESTORE (state unreadable). */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_client_new(tern_client **out,
                                                            const tern_client_config *cfg);

/* Disconnects abruptly (no goodbye is sent) and frees everything, wiping
 * key material. The outbox stays in state_dir. NULL is accepted. */
TERN_EXPORT void tern_client_free(tern_client *c);

/* The app wants to be online: connects now, and from then on reconnects by
 * itself with backoff whenever the link is lost, until
 * tern_client_disconnect(). Returns 0, TERN_EADDR (cannot resolve). */
TERN_EXPORT TERN_WUR TERN_NONNULL(1) int tern_client_connect(tern_client *c);

/* The app wants to be offline: closes the session gracefully after what is
 * queued has gone out, and stops reconnecting; TERN_EV_DISCONNECTED with
 * TERN_ECLOSED follows. The outbox is kept. Returns 0 or TERN_ECLOSED. */
TERN_EXPORT TERN_NONNULL(1) int tern_client_disconnect(tern_client *c);

/* The device moved to another network (or back): the current link is
 * probably dead. The client drops it and reconnects at once, without
 * waiting for a backoff. No-op while offline by request. */
TERN_EXPORT TERN_NONNULL(1) void tern_client_network_changed(tern_client *c);

/* Sends `len` bytes of `body` to user `to`, reliably: the message is in the
 * outbox (on disk with a state_dir) when this returns 0, and is resent
 * until the relay stores it (TERN_EV_SENT) or refuses it (TERN_EV_FAILED),
 * across reconnects and restarts. Works offline: it goes out when the link
 * is up. *cmid (if not NULL) receives its id. The body is copied.
 * Returns 0, TERN_EINVAL (bad user name), TERN_ETOOBIG (over
 * max_message_size), TERN_ESTORE (the outbox could not be written: not
 * accepted), TERN_ENOMEM. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_client_send(tern_client *c, const char *to,
                                                             const void *body, size_t len,
                                                             uint64_t *cmid);

/* Sends at most once, for typing indicators and the like: not stored
 * anywhere, no acks, no events, dropped if the recipient is offline or a
 * packet is lost. Returns 0, TERN_EINVAL, TERN_ETOOBIG, TERN_ECLOSED (not
 * connected). */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_client_send_ephemeral(tern_client *c,
                                                                       const char *to,
                                                                       const void *body,
                                                                       size_t len);

/* Messages accepted by tern_client_send() and not yet settled: waiting to
 * be stored by the relay, or stored but with their TERN_EV_SENT (or
 * TERN_EV_FAILED) not yet taken by the app. */
TERN_EXPORT TERN_NONNULL(1) size_t tern_client_outbox_size(tern_client *c);

/* Runs the client for up to `timeout_ms` milliseconds (0: do what is due and
 * return at once), returning early as soon as at least one event is queued.
 * Returns the number of queued events (>= 0) or TERN_EIO. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1) int tern_client_service(tern_client *c, int timeout_ms);

/* Takes the next queued event into *ev. Returns 1 if an event was taken, 0
 * if none is queued. The pointers in *ev stay valid until the next call to
 * tern_client_next_event(), tern_client_service() or tern_client_free(). */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_client_next_event(tern_client *c, tern_event *ev);

/* For an app's own poll/epoll loop: a descriptor that becomes readable when
 * the client has input (network or a send from another thread), and the
 * number of milliseconds after which tern_client_service(c, 0) must be
 * called even without input (-1: no deadline). Call tern_client_service(c,
 * 0) whenever the descriptor is readable or the timeout passes. The
 * descriptor (an epoll instance) is owned by the client. */
TERN_EXPORT TERN_NONNULL(1) int tern_client_fd(const tern_client *c);
TERN_EXPORT TERN_NONNULL(1) int tern_client_timeout_ms(tern_client *c);

/* The client's own public key (its device identity). */
TERN_EXPORT TERN_NONNULL(1) const uint8_t *tern_client_public_key(const tern_client *c);

/* Counters, for tests and metrics. */
typedef struct tern_client_stats {
  uint64_t packets_sent;      /* sealed packets handed to ENet */
  uint64_t packets_received;  /* sealed packets that opened */
  uint64_t packets_rejected;  /* sealed packets dropped: failed to open */
  uint64_t packets_replayed;  /* sealed packets dropped: replay window */
  uint64_t connects;          /* sessions established */
} tern_client_stats;
TERN_EXPORT TERN_NONNULL(1, 2) void tern_client_get_stats(tern_client *c, tern_client_stats *st);

/* ----------------------------------------------------------------- relay */

typedef struct tern_relay tern_relay;

/* Decides whether a client key may connect. Write the user name (NUL
 * terminated, at most TERN_USER_MAX bytes) into `user` and return 0 to
 * accept; return TERN_EUNKNOWNKEY to refuse. `requested` is the name the
 * client asked for (possibly ""). Called from the relay's thread. */
typedef int (*tern_relay_auth_fn)(void *ctx, const uint8_t client_key[TERN_KEY_BYTES],
                                  const char *requested, char user[TERN_USER_MAX + 1]);

/* Log lines the relay writes: level 0 error, 1 warning, 2 info, 3 debug. */
typedef void (*tern_log_fn)(void *ctx, int level, const char *line);

typedef struct tern_relay_config {
  /* IPv4 address to bind ("0.0.0.0" default) and UDP port (default 7400). */
  const char *bind_host;
  uint16_t port;
  /* The relay's static keypair. Copied. Required. */
  tern_keypair keypair;
  /* Who may connect. NULL accepts every key ("open" mode) and uses the
   * requested name. */
  tern_relay_auth_fn auth;
  void *auth_ctx;
  /* Where log lines go; NULL discards them. */
  tern_log_fn log;
  void *log_ctx;
  /* A peer that has not finished the handshake after this many ms is
   * dropped. Default 5000. */
  uint32_t handshake_timeout_ms;
  /* Most simultaneous peers (ENet allows at most 4095). Default 4095. */
  uint32_t max_peers;
  /* Largest message body the relay accepts. Default 65536. */
  uint32_t max_message_size;
  /* Where messages are kept: an SQLite file (created if missing), e.g.
   * "DATA_DIR/relay.db". NULL keeps them in memory: lost on restart, for
   * tests only. */
  const char *store_path;
  /* 1 (default): fsync each group commit, so nothing acknowledged is lost
   * even to a power cut; 0: survive a crash of ternd only. */
  int durable_fsync;
  /* Undelivered messages are dropped after this many ms, and their senders
   * get TERN_EV_FAILED with TERN_EEXPIRED. The sweep runs every minute, or
   * every quarter of the retention if that is shorter. Default 30 days. */
  uint64_t retention_ms;
  /* Optional: 0 if `user` cannot receive messages (the sender gets
   * TERN_ENOENT), 1 if it can. NULL: any valid name can. */
  int (*user_exists)(void *ctx, const char *user);
  void *user_exists_ctx;
  /* ENet link timing for each peer, in ms; defaults as for the client. */
  uint32_t ping_interval_ms;
  uint32_t timeout_min_ms;
  uint32_t timeout_max_ms;
} tern_relay_config;

TERN_EXPORT TERN_NONNULL(1) void tern_relay_config_default(tern_relay_config *cfg);

/* Creates a relay, opens its store and binds its UDP port. *out owns it;
 * NULL on failure. Returns 0, TERN_EINVAL, TERN_ENOMEM, TERN_ECRYPTO,
 * TERN_EADDR (cannot bind), TERN_ESTORE (store cannot be opened). */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_relay_new(tern_relay **out, const tern_relay_config *cfg);

/* Disconnects every peer (telling each it is a shutdown) and frees. */
TERN_EXPORT void tern_relay_free(tern_relay *r);

/* Runs the relay for up to `timeout_ms` ms (0: only what is due). Returns
 * 0 or TERN_EIO. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1) int tern_relay_service(tern_relay *r, int timeout_ms);

/* Descriptor and deadline for an external loop, as for the client. */
TERN_EXPORT TERN_NONNULL(1) int tern_relay_fd(const tern_relay *r);
TERN_EXPORT TERN_NONNULL(1) int tern_relay_timeout_ms(tern_relay *r);

/* The UDP port actually bound (useful with port 0). */
TERN_EXPORT TERN_NONNULL(1) uint16_t tern_relay_port(const tern_relay *r);

/* Re-checks every authenticated peer against the auth callback (after an
 * allow-list reload): peers now refused are disconnected with
 * TERN_EUNKNOWNKEY. Returns the number disconnected. */
TERN_EXPORT TERN_NONNULL(1) int tern_relay_recheck_auth(tern_relay *r);

typedef struct tern_relay_stats {
  uint64_t peers_connected;     /* authenticated peers now */
  uint64_t handshakes_ok;       /* handshakes completed */
  uint64_t handshakes_failed;   /* bad, refused or timed-out handshakes */
  uint64_t packets_rejected;    /* sealed packets that failed to open */
  uint64_t packets_replayed;    /* sealed packets dropped by the replay window */
  uint64_t messages_stored;     /* messages stored and acknowledged */
  uint64_t messages_early;      /* MSG frames that came inside handshake message 1 */
  uint64_t messages_deduped;    /* resends answered without storing again */
  uint64_t messages_delivered;  /* messages acknowledged by a recipient */
  uint64_t messages_refused;    /* FAILED: too big, unknown user */
  uint64_t messages_busy;       /* BUSY: the store failed, sender retries */
  uint64_t messages_expired;    /* dropped undelivered after the retention */
  uint64_t store_errors;        /* store operations that failed */
} tern_relay_stats;
TERN_EXPORT TERN_NONNULL(1, 2) void tern_relay_get_stats(const tern_relay *r, tern_relay_stats *st);

#ifdef __cplusplus
}
#endif

#endif /* TERN_H */
