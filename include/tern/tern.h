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
  TERN_EOFFLINE = -18,    /* the recipient has no online device */
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
  /* Milliseconds a connection attempt may take, from tern_client_connect()
   * to the end of the handshake. When it runs out the attempt fails with
   * TERN_ETIMEDOUT if the relay never answered at the ENet level, or with
   * TERN_EHANDSHAKE if it answered but the handshake did not finish.
   * Default 10000. */
  uint32_t handshake_timeout_ms;
  /* Largest body tern_client_send() accepts, in bytes. Default 65536;
   * values above TERN_MESSAGE_MAX are clamped. */
  uint32_t max_message_size;
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
  /* The handshake finished; `user` is the name the relay assigned. */
  TERN_EV_CONNECTED = 1,
  /* The link is gone; `error` says why (TERN_ECLOSED after
   * tern_client_disconnect(), TERN_ETIMEDOUT, TERN_ERELAYKEY,
   * TERN_EUNKNOWNKEY, TERN_EHANDSHAKE, TERN_EVERSION, TERN_ENONCE,
   * TERN_ESHUTDOWN, TERN_EPROTO). */
  TERN_EV_DISCONNECTED = 2,
  /* A message arrived: `user` is the sender, `body`/`body_len` its bytes. */
  TERN_EV_MESSAGE = 3,
  /* A message sent with tern_client_send() was refused: `cmid` names it,
   * `error` says why (TERN_EOFFLINE: the recipient has no online device,
   * which is also what an unknown user looks like; TERN_ETOOBIG: over the
   * relay's limit). Packets that fail to open or are replays raise no
   * event: they are dropped and counted in tern_client_stats. */
  TERN_EV_SEND_FAILED = 4,
} tern_event_type;

typedef struct tern_event {
  tern_event_type type;
  int error;          /* a TERN_E* code, 0 when not applicable */
  uint64_t cmid;      /* client message id, for SEND_FAILED */
  const char *user;   /* NUL-terminated; see the event types */
  const uint8_t *body;
  size_t body_len;
} tern_event;

/* Creates a client. Nothing is sent until tern_client_connect(). On success
 * *out owns a client to be released with tern_client_free(); on failure *out
 * is NULL. Returns 0, TERN_EINVAL (missing host/port, bad user name),
 * TERN_ENOMEM, TERN_ECRYPTO, TERN_EIO (no socket). */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_client_new(tern_client **out,
                                                            const tern_client_config *cfg);

/* Disconnects abruptly (no goodbye is sent) and frees everything, wiping
 * key material. NULL is accepted. */
TERN_EXPORT void tern_client_free(tern_client *c);

/* Starts connecting: resolves the relay, opens the ENet link; the handshake
 * runs as the client is serviced. Returns 0, TERN_EADDR (cannot resolve),
 * TERN_EINVAL (already connecting or connected), TERN_ERESOURCE. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1) int tern_client_connect(tern_client *c);

/* Asks the relay to close the link gracefully; TERN_EV_DISCONNECTED with
 * TERN_ECLOSED follows once it is closed. Returns 0 or TERN_ECLOSED. */
TERN_EXPORT TERN_NONNULL(1) int tern_client_disconnect(tern_client *c);

/* Sends `len` bytes of `body` to user `to`. The body is copied. On success
 * *cmid (if not NULL) receives the message's client id, which later events
 * about this message carry. Delivery is best effort in this version: the
 * message goes out on a reliable channel while the link is up, and the relay
 * hands it to the recipient's online devices or reports TERN_EOFFLINE.
 * Returns 0, TERN_EINVAL (bad user name), TERN_ETOOBIG (over
 * max_message_size), TERN_ECLOSED (not connected), TERN_ENONCE, TERN_ENOMEM. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_client_send(tern_client *c, const char *to,
                                                             const void *body, size_t len,
                                                             uint64_t *cmid);

/* Runs the client for up to `timeout_ms` milliseconds (0: do what is due and
 * return at once), returning early as soon as at least one event is queued.
 * Returns the number of queued events (>= 0) or TERN_EIO. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1) int tern_client_service(tern_client *c, int timeout_ms);

/* Takes the next queued event into *ev. Returns 1 if an event was taken, 0
 * if none is queued. The pointers in *ev stay valid until the next call to
 * tern_client_next_event(), tern_client_service() or tern_client_free(). */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_client_next_event(tern_client *c, tern_event *ev);

/* For an app's own poll/epoll loop: a descriptor that becomes readable when
 * the client has input, and the number of milliseconds after which
 * tern_client_service(c, 0) must be called even without input (-1: no
 * deadline). Call tern_client_service(c, 0) whenever the descriptor is
 * readable or the timeout passes. The descriptor is owned by the client. */
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
} tern_client_stats;
TERN_EXPORT TERN_NONNULL(1, 2) void tern_client_get_stats(const tern_client *c, tern_client_stats *st);

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
  /* Largest message body the relay forwards. Default 65536. */
  uint32_t max_message_size;
  /* ENet link timing for each peer, in ms; defaults as for the client. */
  uint32_t ping_interval_ms;
  uint32_t timeout_min_ms;
  uint32_t timeout_max_ms;
} tern_relay_config;

TERN_EXPORT TERN_NONNULL(1) void tern_relay_config_default(tern_relay_config *cfg);

/* Creates a relay and binds its UDP port. *out owns it; NULL on failure.
 * Returns 0, TERN_EINVAL, TERN_ENOMEM, TERN_ECRYPTO, TERN_EADDR (cannot
 * bind). */
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
  uint64_t messages_routed;     /* messages handed to a recipient */
  uint64_t messages_refused;    /* messages refused (offline, unknown, too big) */
} tern_relay_stats;
TERN_EXPORT TERN_NONNULL(1, 2) void tern_relay_get_stats(const tern_relay *r, tern_relay_stats *st);

#ifdef __cplusplus
}
#endif

#endif /* TERN_H */
