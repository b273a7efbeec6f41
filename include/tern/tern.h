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
 *  - ABI and growing structs. Structs grow only at their end, and every
 *    struct that crosses this API carries or is passed its size, so that a
 *    program built against an older header keeps working with a newer
 *    libtern (and a newer one with an older libtern where it can):
 *      - a config (tern_client_config, tern_relay_config) starts with
 *        `struct_size`, which its _default function sets to the size the
 *        program was compiled with. _new takes the fields up to that size
 *        and gives every field beyond it its default. It returns
 *        TERN_EINVAL for a struct_size of 0 (the config never went through
 *        _default), one smaller than the first released layout, or one
 *        larger than the library's own with any of the extra bytes set (a
 *        field this library cannot honour). Never set struct_size by hand.
 *      - a struct the library fills (tern_event, tern_keepalive_info, the
 *        stats) is filled up to the caller's size: the functions that fill
 *        them are macros passing sizeof(*ptr) to a *_sized function, so
 *        an older program gets the fields it knows and a newer one sees
 *        zeros in fields this library does not have.
 *    CI compares the exported ABI with a committed baseline (scripts/abi.sh).
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
  TERN_ESTORE = -25,      /* the message store failed (disk full, I/O error, cluster unreachable) */
  TERN_EEXPIRED = -26,    /* the message was not delivered within the retention */
  TERN_EDENIED = -27,     /* the relay does not allow this sender to message that user */
  TERN_EBADNET = -28,     /* the network forgets idle UDP mappings faster than keepalive_min_ms */
  TERN_EFULL = -29,       /* the relay has no free connection slot; the client retries later */
  TERN_EBUSY = -30,       /* the relay is reachable but too busy to answer; messages wait */
  TERN_ETOKENEXPIRED = -31, /* the backend token is past its expiry (spec/tokens.md) */
  TERN_ETOKENINVALID = -32, /* the backend token is malformed or its signature does not verify */
  TERN_ETOKENKEY = -33,     /* the backend token is bound to another device key or user */
  TERN_ETOKENREVOKED = -34, /* the backend token, or the device key it names, is revoked */
  TERN_ENOTSUP = -35,     /* this build has no single descriptor; use tern_client_pollfds */
  TERN_EREPLACED = -36,   /* a newer session of this device key replaced this one; not retried */
  TERN_ESTALE = -37,      /* the relay holds a later HELLO timestamp for this key: the device clock is behind */
  TERN_EQUOTA = -38,      /* the relay holds all it may for this sender or this recipient */
  TERN_ERATE = -39,       /* the device sends faster than the relay's per-device rate; retried */
  TERN_ERESET = -40,      /* the relay restarted and said so (RESET): the session is gone; reconnecting at once */
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

/* tern_keypair_load() that also says, in `why` (NUL-terminated, cut to
 * why_size; may be NULL), what failed: which check refused the file (its
 * mode, not a regular file, too large, which line does not parse, no
 * secret, a public key that does not match), or the system's error text. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_keypair_load_why(const char *path, tern_keypair *kp,
                                                                  char *why, size_t why_size);

/* Encodes a 32-byte key as 64 lowercase hex digits plus NUL into `out`. */
TERN_EXPORT TERN_NONNULL(1, 2) void tern_key_to_hex(const uint8_t key[TERN_KEY_BYTES],
                                                    char out[TERN_KEY_HEX_BYTES]);

/* Decodes 64 hex digits (either case, surrounding whitespace ignored).
 * Returns 0 or TERN_EINVAL; on failure `key` is zeroed. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_key_from_hex(const char *hex, uint8_t key[TERN_KEY_BYTES]);

/* Log lines a client or a relay writes: level 0 error, 1 warning, 2 info,
 * 3 debug. `line` (no newline) is valid during the call only. */
typedef void (*tern_log_fn)(void *ctx, int level, const char *line);

/* ---------------------------------------------------------------- client */

typedef struct tern_client tern_client;

/* Largest user name, in bytes, not counting the NUL. A name is 1 to 64
 * bytes with no ASCII control characters, spaces or '@'; other bytes (UTF-8)
 * are taken as they are. */
#define TERN_USER_MAX 64

/* Hard ceiling for any single message body. */
#define TERN_MESSAGE_MAX (1u << 20)

typedef struct tern_client_config {
  /* Set by tern_client_config_default(); see "ABI and growing structs". */
  size_t struct_size;
  /* Relay host: a name (A or AAAA records), an IPv4 address, or an IPv6
   * address ("2001:db8::1" or "[2001:db8::1]"); and its UDP port. On an
   * IPv6-only network an IPv4 address is reached through the network's
   * NAT64, whose prefix the client learns from ipv4only.arpa (RFC 7050).
   * Several endpoints of one relay may be given, separated by commas, each
   * with its own port if it differs ("relay.example, [2001:db8::1]:7401,
   * 192.0.2.1"). A connect races the addresses (Happy Eyeballs, RFC 8305):
   * a name's IPv6 and IPv4 addresses alternate, one starts every
   * connect_stagger_ms until one answers, and the first to connect wins;
   * four addresses at most are raced. The string is copied by
   * tern_client_new(). Required. */
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
  /* Directory for the client's state (created with any missing parents,
   * mode 0700; TERN_EIO with errno set if it cannot be): the outbox,
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
  /* Messages in flight and nothing at all from the relay for this long (no
   * answer, and no acknowledgement of the pings the client sends meanwhile)
   * means the link is dead: the client first tries to move the session to
   * a new socket (tern_client_network_changed() says how; it takes up to
   * max(1 s, 3 RTT)), then drops the link and reconnects. A relay that is
   * heard but does not answer for this long is busy: the messages wait
   * (at most 64 in flight, the rest in the outbox) and TERN_EV_ERROR with
   * TERN_EBUSY says so (spec/messages.md §5.9). Default 8000 (ENet alone
   * would take up to 30 s). */
  uint32_t dead_link_ms;
  /* ENet's link timing, in milliseconds: a relay that leaves a reliable
   * packet unacknowledged for timeout_max_ms is dropped (default 10000,
   * minimum timeout_min_ms default 3000). How often the client pings an
   * idle link is the keepalive's business, below. */
  uint32_t timeout_min_ms;
  uint32_t timeout_max_ms;

  /* Keepalive timed to the NAT (spec/keepalive.md). By default the client
   * learns, per network, how long the NAT keeps an idle UDP mapping, by
   * probing from separate sockets (never the live link), and sends a
   * keepalive only after the live link has been silent for the largest
   * proven time minus a margin. */
  /* 0 (default): learn. 1: no keepalives at all (the NAT may forget the
   * link while it is idle; for measurements and tests). */
  int keepalive_off;
  /* > 0: keep alive every this many ms, never probe (e.g. 25000 for a
   * fixed WireGuard-style interval). Default 0. */
  uint32_t keepalive_fixed_ms;
  /* The first silence probed (default 25000), the largest (default
   * 900000), and the least a network must keep a mapping before it counts
   * as bad (TERN_KA_BAD; default 10000). */
  uint32_t keepalive_floor_ms;
  uint32_t keepalive_ceiling_ms;
  uint32_t keepalive_min_ms;
  /* What was learned on a network is probed again after this long.
   * Default 86400000 (a day). */
  uint64_t keepalive_reprobe_ms;
  /* In the foreground the interval is at most this, so that a dead link
   * is noticed sooner. Default 60000. */
  uint32_t keepalive_foreground_ms;
  /* The network the device starts on, as the app names it ("wifi:<ssid>",
   * "cell:<carrier>", at most TERN_NETWORK_MAX bytes; copied). NULL or "":
   * an unnamed network, learned like any other. */
  const char *network;
  /* How many networks the state directory remembers (least recently used
   * forgotten first). Default 32. */
  uint32_t keepalive_networks_max;

  /* Happy Eyeballs (RFC 8305): the next address of the relay is tried this
   * many ms after the one before unless that one failed sooner. Default 250. */
  uint32_t connect_stagger_ms;
  /* TCP fallback, for networks that block UDP (spec/wire.md §12): the
   * relay's TCP port (ternd --listen-tcp; 443 passes most firewalls). 0
   * (default): UDP only. With it, a connect that has had no answer over
   * UDP after tcp_fallback_ms (default 1000) races TCP connections to the
   * same addresses, and the first to connect wins. The session carries the
   * same sealed traffic over TCP; every udp_retry_ms (default 60000) the
   * client tries to move it back to UDP (a migration, spec/wire.md §11),
   * and stays on TCP if UDP still does not answer. */
  uint16_t relay_tcp_port;
  uint32_t tcp_fallback_ms;
  uint32_t udp_retry_ms;
  /* Names are looked up in the background (c-ares): a send never waits for
   * DNS. NULL (default): the system's resolver configuration, the hosts
   * file first. Else the DNS servers to ask, "IP[:PORT],..." (copied). A
   * lookup waits up to resolve_timeout_ms (default 5000) in all. */
  const char *dns_servers;
  uint32_t resolve_timeout_ms;
  /* Where the client's log lines go (what it tries and why it fails:
   * lookups, connects and which path won, fallbacks, moves, a busy relay,
   * a state directory it cannot create); NULL (default) discards them.
   * Called from the thread that calls tern_client_service() (or, for
   * tern_client_new(), the caller's), with the client's lock held: it must
   * not call into the client. */
  tern_log_fn log;
  void *log_ctx;
  /* A backend token (spec/tokens.md), its text form (base64url), sent in
   * every HELLO: a relay with the backend's token key admits this device as
   * the token's user, with no allow-list entry. Copied and decoded by
   * tern_client_new() (TERN_EINVAL if it does not decode); the client does
   * not look inside it. A refusal is TERN_EV_DISCONNECTED with
   * TERN_ETOKENEXPIRED, TERN_ETOKENINVALID, TERN_ETOKENKEY or
   * TERN_ETOKENREVOKED. NULL (default): none. */
  const char *token;
  /* 1: no redundant copies of small messages (spec/messages.md §8): each
   * MSG leaves once and is sent again only by the resend rules, which
   * costs latency under loss and saves bytes (a metered link). The relay
   * decides for the DELIVERs it sends (ternd --no-copies). 0 (default):
   * copies as the spec says. */
  int no_copies;
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
   * TERN_ESHUTDOWN, TERN_EPROTO, TERN_EFULL: the relay had no free slot
   * and asked the client to come back later, which it does after the
   * relay's hint or its backoff, whichever is longer, plus a random part
   * of it; TERN_ESHUTDOWN: the relay is shutting down or draining, and
   * after a drain's GOAWAY `retry_ms` is the delay the relay gave, tried
   * first at the next endpoint of relay_host; TERN_EREPLACED: a newer
   * session of this device key took its place; TERN_ESTALE: the relay
   * holds a later HELLO timestamp for this key than this device's clock
   * gives (the app reinstalled on a device whose clock is now behind), and
   * refuses until the clock passes it: check the clock, spec/handshake.md
   * §6). Unless the app called
   * tern_client_disconnect() or the error is TERN_EREPLACED, the client
   * reconnects by itself after `retry_ms`. */
  TERN_EV_DISCONNECTED = 2,
  /* A message arrived: `user` is the sender, `seq` its place in our inbox,
   * `server_time_ms` when the relay accepted it, `body`/`body_len` its
   * bytes. Each message arrives once, in the order its sender sent it
   * (messages from different senders are not held back for each other).
   * It counts as delivered when tern_client_next_event() hands it over.
   * With `to` set it is a carbon: what this user sent from another device. */
  TERN_EV_MESSAGE = 3,
  /* Message `cmid` is stored by the relay (`seq` in the recipient's inbox,
   * `server_time_ms`); it will not be lost. `user` is the recipient. */
  TERN_EV_SENT = 4,
  /* Message `cmid` reached a device of its recipient. */
  TERN_EV_DELIVERED = 5,
  /* Message `cmid` will never be delivered; `error` says why: TERN_ETOOBIG
   * (over the relay's limit), TERN_ENOENT (no such user), TERN_EEXPIRED
   * (not fetched within the relay's retention), TERN_EDENIED (the relay
   * does not let this user write to that one). */
  TERN_EV_FAILED = 6,
  /* The keepalive state or interval of the current network changed; see
   * tern_client_keepalive(). `user` is the network's name; `error` is
   * TERN_EBADNET when the network cannot keep an idle mapping for
   * keepalive_min_ms (the link then costs more battery), else 0. */
  TERN_EV_KEEPALIVE = 7,
  /* Something failed that the client works around by itself; nothing is
   * lost, but the app may want to say so. `error` is the code, `cmid` the
   * message concerned (0 if none), `body`/`body_len` a description for
   * logs (not NUL-terminated). They are:
   *  - TERN_ESTORE from the relay, `user` the recipient: the relay could
   *    not store message `cmid` now (its disk is full or failing). The
   *    message stays in the outbox and is sent again busy_retry (2 s)
   *    later; TERN_EV_SENT follows once the relay has it. One event per
   *    refusal, so a relay that stays full repeats it every 2 s.
   *  - TERN_EBUSY, `cmid` 0: the relay is reachable (it acknowledges
   *    pings) but has answered none of the messages in flight for
   *    dead_link_ms; they wait, and so does the rest of the outbox. One
   *    event per stall.
   *  - TERN_ESTORE, `user` "": the client's own state store failed to
   *    write. With `cmid` 0: a message just handed over could not be
   *    recorded as delivered, so after a crash it may be handed over
   *    again. With `cmid`: message `cmid`, whose TERN_EV_SENT or
   *    TERN_EV_FAILED was just taken, could not be taken out of the stored
   *    outbox, so after a restart it is sent again and that event may come
   *    a second time. */
  TERN_EV_ERROR = 8,
  /* A contact came online or went offline (on a relay that tells presence:
   * spec/messages.md §9.1). `user` is the contact, `online` 1 or 0, and
   * `server_time_ms` since when it is online, or when it was last seen.
   * At each connect the relay tells the state of every contact it knows
   * of; then each change. Best effort (it travels unreliably): the next
   * connect tells the state again. */
  TERN_EV_PRESENCE = 9,
  /* Message `cmid`, sent to a group, has now reached `delivered` of the
   * `members` other members it went to (a member counts once, when the
   * first of its devices has it). One event each time the count grows; a
   * count may come twice. Group messages get these instead of
   * TERN_EV_DELIVERED (spec/messages.md §14). */
  TERN_EV_RECEIPTS = 10,
} tern_event_type;

typedef struct tern_event {
  tern_event_type type;
  int error;          /* a TERN_E* code, 0 when not applicable */
  uint64_t cmid;      /* client message id: SENT, DELIVERED, FAILED, ERROR */
  uint64_t seq;       /* MESSAGE: position in this user's inbox (0 for an
                         ephemeral message); SENT: position in the
                         recipient's inbox */
  uint64_t server_time_ms; /* MESSAGE, SENT: when the relay accepted it, Unix ms */
  const char *user;   /* NUL-terminated, never NULL; see the event types */
  const uint8_t *body;
  size_t body_len;
  /* DISCONNECTED: in how many ms the client tries again (0: it will not,
   * the app asked to be offline). */
  uint64_t retry_ms;
  int online;         /* PRESENCE: 1 online, 0 offline */
  /* MESSAGE: NULL for a message to this user. "@name" for a message to a
   * group (`user` its sender, `seq` its place in the group's order;
   * spec/messages.md §14); a device is not given what it sent to a group
   * itself. Otherwise a carbon: a message this user sent from another of
   * its devices (`user` is then this user), and `to` its recipient; it
   * comes in the conversation's order among the messages this user
   * receives (§13). A device never gets a carbon of what it sent itself. */
  const char *to;
  /* RECEIPTS: how many of how many members have the message. */
  uint32_t delivered, members;
} tern_event;

/* Thread safety: tern_client_send(), tern_client_send_ephemeral(),
 * tern_client_network_changed() and tern_client_outbox_size() may be called
 * from any thread at any time. tern_client_service() and
 * tern_client_next_event() must be called from one thread (the one that
 * runs the client); tern_client_free() when no other call is running. */

/* Creates a client and opens its state. Nothing is sent until
 * tern_client_connect(). A process may hold up to 65,536 clients and relay
 * shards together; each client keeps 5 descriptors open (more while it
 * resolves, races connects or probes), so many clients need a raised fd
 * limit. On success *out owns a client to be released with
 * tern_client_free(); on failure *out is NULL. Returns 0, TERN_EINVAL
 * (missing host/port, no endpoint in relay_host, bad user name,
 * dns_servers or token), TERN_ENOMEM, TERN_ECRYPTO, TERN_EIO
 * (no socket; or state_dir cannot be created, errno saying why), TERN_ESTORE
 * (state unreadable). */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_client_new(tern_client **out,
                                                            const tern_client_config *cfg);

/* Disconnects abruptly (no goodbye is sent) and frees everything, wiping
 * key material. The outbox stays in state_dir. NULL is accepted. */
TERN_EXPORT void tern_client_free(tern_client *c);

/* The app wants to be online: connects now, and from then on reconnects by
 * itself with backoff whenever the link is lost or an attempt fails
 * (a name that does not resolve yet, a relay that does not answer), until
 * tern_client_disconnect(). Each failure is a TERN_EV_DISCONNECTED event
 * with its code (TERN_EADDR: no address for the relay's name) and the time
 * until the next try. Names are resolved in the background: this returns
 * at once. Returns 0. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1) int tern_client_connect(tern_client *c);

/* The app wants to be offline: closes the session gracefully after what is
 * queued has gone out, and stops reconnecting; TERN_EV_DISCONNECTED with
 * TERN_ECLOSED follows. The outbox is kept. Returns 0 or TERN_ECLOSED. */
TERN_EXPORT TERN_NONNULL(1) int tern_client_disconnect(tern_client *c);

/* The device moved to another network (or back), or its address changed.
 * An open session first tries to move to the new path without a new
 * handshake (spec/wire.md §11): a new socket proves itself to the relay,
 * which moves the session once it has; nothing in flight is lost and no
 * event is reported (tern_client_stats.migrations counts it). If the relay
 * does not answer within max(1 s, 3 RTT), or no session is open, the client
 * drops the link and reconnects at once, without waiting for a backoff
 * (TERN_EV_DISCONNECTED with TERN_ETIMEDOUT). The client also tries a move
 * by itself when its link looks dead and when the relay says it hears the
 * session from an unknown address (a NAT that rebound). No-op while
 * offline by request. */
TERN_EXPORT TERN_NONNULL(1) void tern_client_network_changed(tern_client *c);

/* The app knows (or suspects) that the current network blocks UDP: a
 * connect under way, and every connect until tern_client_network_changed(),
 * races TCP at once instead of after tcp_fallback_ms. Needs relay_tcp_port.
 * A session already open is left as it is. Returns 0, or TERN_EINVAL if
 * the client has no relay_tcp_port. Any thread. */
TERN_EXPORT TERN_NONNULL(1) int tern_client_udp_blocked(tern_client *c);

/* Sends `len` bytes of `body` to user `to` (or to the group "@name", if this
 * user is a member: spec/messages.md §14), reliably: the message is in the
 * outbox (on disk with a state_dir) when this returns 0, and is resent
 * until the relay stores it (TERN_EV_SENT) or refuses it (TERN_EV_FAILED),
 * across reconnects and restarts; a relay that cannot store it for now
 * (its disk is full) says so (TERN_EV_ERROR) and it is sent again 2 s
 * later. Works offline: it goes out when the link is up. *cmid (if not
 * NULL) receives its id. The body is copied.
 * Returns 0, TERN_EINVAL (bad user or group name), TERN_ETOOBIG (over
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
 * Returns the number of queued events (>= 0), TERN_EIO, or TERN_ENOMEM: an
 * event could not be queued for want of memory. Nothing is lost then: what
 * it stood for is undone and comes again (a message is redelivered by the
 * relay, a SENT after the message is sent again, a receipt is resent, a
 * state change is queued by the next call); only an ephemeral message, best
 * effort by design, is dropped. Call again. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1) int tern_client_service(tern_client *c, int timeout_ms);

/* Takes the next queued event into *ev. Returns 1 if an event was taken, 0
 * if none is queued. The pointers in *ev stay valid until the next call to
 * tern_client_next_event(), tern_client_service() or tern_client_free(). */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_client_next_event_sized(tern_client *c, tern_event *ev,
                                                                         size_t ev_size);
#define tern_client_next_event(c, ev) tern_client_next_event_sized((c), (ev), sizeof(*(ev)))

/* The app's own id for a message: 1 to TERN_APP_ID_MAX bytes, any bytes but
 * NUL. */
#define TERN_APP_ID_MAX 64

/* tern_client_send() with the app's own id for the message (e.g. the id its
 * UI gave the bubble): a second send with the same id, also after a
 * restart, within 30 days (the relay's default retention), is a no-op that
 * returns the first one's cmid, so a resend from the UI never sends twice.
 * Returns as tern_client_send(); TERN_EINVAL also for a bad app_id. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2, 5) int tern_client_send_id(tern_client *c, const char *to,
                                                                   const void *body, size_t len,
                                                                   const char *app_id, uint64_t *cmid);

typedef enum tern_outbox_state {
  TERN_OUTBOX_WAITING = 1, /* not yet stored by the relay (no TERN_EV_SENT taken yet) */
  TERN_OUTBOX_SENT = 2,    /* stored by the relay, waiting for TERN_EV_DELIVERED */
} tern_outbox_state;

/* One message of tern_client_outbox_each(). Filled by the library: fields
 * may be added at the end. */
typedef struct tern_outbox_item {
  uint64_t cmid;
  tern_outbox_state state;
  const char *to;          /* the recipient ("" for a message sent by a library
                              older than the listing) */
  uint64_t created_ms;     /* Unix ms when tern_client_send() took it */
  size_t body_len;
  const char *app_id;      /* tern_client_send_id()'s id, "" if none */
} tern_outbox_item;

/* Calls fn for every message not yet SENT or not yet DELIVERED, oldest
 * first, after a restart too (it reads the state directory): what an app
 * needs to draw its clocks and ticks. The item and its strings are valid
 * during the call; fn returns nonzero to stop early, and must not call
 * into the client. Returns how many were listed, or TERN_ESTORE. */
typedef int (*tern_outbox_fn)(void *ctx, const tern_outbox_item *item);
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_client_outbox_each(tern_client *c, tern_outbox_fn fn,
                                                                   void *ctx);

/* Thread mode: a thread of the client's own services it and calls
 * on_event(ctx, ev) there for every event, in order. `ev` and what it
 * points to are valid during the call only (tern_event_dup() keeps a copy,
 * for an app that hands events to another thread or queue, e.g. an iOS
 * app's main queue). The callback may call tern_client_send(),
 * tern_client_send_ephemeral(), tern_client_network_changed(),
 * tern_client_disconnect() and the other calls allowed from any thread, but
 * not tern_client_stop() or tern_client_free(). While the thread runs,
 * tern_client_service() and tern_client_next_event() from another thread
 * return TERN_EINVAL. Returns 0, TERN_EINVAL (a thread runs already),
 * TERN_ERESOURCE (no thread). */
typedef void (*tern_event_fn)(void *ctx, const tern_event *ev);
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_client_start(tern_client *c, tern_event_fn on_event,
                                                             void *ctx);
/* Ends the thread of tern_client_start() and waits for it (at most the
 * callback under way). Nothing is lost: events not yet handed over stay
 * queued for tern_client_next_event() or the next tern_client_start(), and
 * the outbox stays. tern_client_free() stops it too. Returns 0, or
 * TERN_EINVAL (no thread runs, or called from the callback). */
TERN_EXPORT TERN_NONNULL(1) int tern_client_stop(tern_client *c);
/* A copy of an event that owns its strings and body, for another thread:
 * *out is freed with tern_event_free(). Returns 0 or TERN_ENOMEM. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_event_dup(const tern_event *ev, tern_event **out);
TERN_EXPORT void tern_event_free(tern_event *ev);

/* For an app's own poll loop, on every platform: fills up to n entries of
 * fds with what to wait for (descriptor and events; revents zeroed) and
 * returns how many entries there are, which may be more than n (then call
 * again with room for that many; curl_multi_waitfds works the same way).
 * Wait with poll(fds, count, tern_client_timeout_ms(c)) and call
 * tern_client_service(c, 0) when any entry is ready or the timeout passes.
 * The descriptors are owned by the client: do not read, write or close
 * them; the list is valid until the next tern_client_service() (call
 * tern_client_pollfds() again each round). With the epoll and kqueue
 * backends the list is one descriptor, the one tern_client_fd() returns;
 * with the poll() backend (TERN_POLLER=poll) it is every socket the client
 * waits on. fds may be NULL when n is 0. Returns the count, TERN_EINVAL,
 * TERN_ERESOURCE. */
struct pollfd;
TERN_EXPORT TERN_WUR TERN_NONNULL(1) int tern_client_pollfds(tern_client *c, struct pollfd *fds, size_t n);

/* For an app's own poll/epoll/kqueue loop, where the build has one: a
 * descriptor that becomes readable when the client has input (network or
 * a send from another thread), and the number of milliseconds after which
 * tern_client_service(c, 0) must be called even without input (-1: no
 * deadline). Call tern_client_service(c, 0) whenever the descriptor is
 * readable or the timeout passes. The descriptor (an epoll or kqueue
 * instance) is owned by the client. Returns it, or TERN_ENOTSUP with the
 * poll() backend, which has no single descriptor: use
 * tern_client_pollfds(). */
TERN_EXPORT TERN_NONNULL(1) int tern_client_fd(const tern_client *c);
TERN_EXPORT TERN_NONNULL(1) int tern_client_timeout_ms(tern_client *c);

/* Longest network name, in bytes, not counting the NUL. */
#define TERN_NETWORK_MAX 64

typedef enum tern_keepalive_state {
  TERN_KA_OFF = 0,         /* keepalive_off: none are sent */
  TERN_KA_FIXED = 1,       /* keepalive_fixed_ms */
  TERN_KA_UNKNOWN = 2,     /* nothing learned yet: a conservative interval */
  TERN_KA_LEARNING = 3,    /* probes are out */
  TERN_KA_LEARNED = 4,     /* the search finished; interval = proven - margin */
  TERN_KA_BAD = 5,         /* mappings last less than keepalive_min_ms */
  TERN_KA_UNAVAILABLE = 6, /* the relay answered no probe; retried later */
} tern_keepalive_state;

typedef struct tern_keepalive_info {
  tern_keepalive_state state;
  char network[TERN_NETWORK_MAX + 1];
  uint32_t interval_ms;    /* the live interval now (0: no keepalives) */
  uint32_t proven_ms;      /* the longest silence the NAT was seen to survive (0: none) */
  uint32_t failed_ms;      /* the shortest above it that it did not (0: none) */
  uint64_t learned_at_ms;  /* Unix ms when the search last finished (0: not yet) */
  uint64_t learn_ms;       /* how long that search took */
  int foreground;
  uint64_t probes;         /* probes sent since tern_client_new() */
  uint64_t probe_datagrams;/* datagrams sent and received on probe sockets */
  uint64_t keepalives;     /* keepalives sent on the live link */
} tern_keepalive_info;

/* The keepalive state of the current network. Any thread. */
TERN_EXPORT TERN_NONNULL(1, 2) void tern_client_keepalive_sized(tern_client *c, tern_keepalive_info *info,
                                                               size_t info_size);
#define tern_client_keepalive(c, info) tern_client_keepalive_sized((c), (info), sizeof(*(info)))

/* Replaces the backend token (tern_client_config.token; NULL: none) for
 * the handshakes from now on, e.g. after TERN_ETOKENEXPIRED with one fresh
 * from the backend. An open session is kept (a token is checked only at
 * the handshake); a client waiting to reconnect after a failure tries at
 * once. Any thread. Returns 0, or TERN_EINVAL (not a token's text form;
 * the old token is kept). */
TERN_EXPORT TERN_WUR TERN_NONNULL(1) int tern_client_set_token(tern_client *c, const char *token);

/* The device is now on network `name` (see tern_client_config.network;
 * NULL or "" for an unnamed one). If that is another network than before,
 * the link is dropped and rebuilt at once, as with
 * tern_client_network_changed(), and the interval learned there before is
 * used (or learning starts). Any thread. Returns 0, TERN_EINVAL (name too
 * long), TERN_ESTORE (the state directory failed; the network is still
 * switched, with nothing remembered). */
TERN_EXPORT TERN_NONNULL(1) int tern_client_set_network(tern_client *c, const char *name);

/* The app went to the foreground (1) or the background (0). In the
 * background the interval is the learned one; in the foreground it is at
 * most keepalive_foreground_ms. A new client is in the background. Any
 * thread. */
TERN_EXPORT TERN_NONNULL(1) void tern_client_set_foreground(tern_client *c, int foreground);

/* The client's own public key (its device identity). */
TERN_EXPORT TERN_NONNULL(1) const uint8_t *tern_client_public_key(const tern_client *c);

/* Counters, for tests and metrics. */
typedef struct tern_client_stats {
  uint64_t packets_sent;      /* sealed packets handed to ENet */
  uint64_t packets_received;  /* sealed packets that opened */
  uint64_t packets_rejected;  /* sealed packets dropped: failed to open */
  uint64_t packets_replayed;  /* sealed packets dropped: replay window */
  uint64_t connects;          /* sessions established */
  uint64_t migrations;        /* times the session moved to a new path without a new handshake */
  uint64_t connects_tcp;      /* ... of the sessions established, those over TCP */
  uint64_t on_tcp;            /* 1 while the session runs over TCP, else 0 */
  uint64_t resets_ignored;    /* RESET datagrams that did not end the session: a
                                 wrong token, another source, no live session
                                 (spec/wire.md §14) */
} tern_client_stats;
TERN_EXPORT TERN_NONNULL(1, 2) void tern_client_get_stats_sized(tern_client *c, tern_client_stats *st,
                                                               size_t st_size);
#define tern_client_get_stats(c, st) tern_client_get_stats_sized((c), (st), sizeof(*(st)))

/* --------------------------------------------------------------- tokens */

/* A backend token (spec/tokens.md) is the app backend's signed word that a
 * device key belongs to a user until a time. Its text form is base64url
 * without padding, at most TERN_TOKEN_TEXT_MAX - 1 characters. The backend
 * holds an Ed25519 key: a 32-byte seed, kept secret, and the public key
 * given to relays (ternd --token-key). */
#define TERN_TOKEN_TEXT_MAX 249
#define TERN_TOKEN_ID_BYTES 16

/* The Ed25519 public key of a backend seed. Returns 0 or TERN_ECRYPTO. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_token_public_key(const uint8_t seed[32], uint8_t pk[32]);

/* Mints a token binding `user` (a valid user name) to `device_key` until
 * `expiry_s` (Unix seconds; the token is refused from that second on), with
 * the token id `id` (unique per token, so that it can be revoked alone),
 * signed with the backend's seed. Writes its text form, NUL-terminated, to
 * `out`. Returns 0, TERN_EINVAL (user not valid), TERN_ECRYPTO. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2, 3, 5, 6) int tern_token_mint(
    const uint8_t seed[32], const char *user, const uint8_t device_key[TERN_KEY_BYTES],
    uint64_t expiry_s, const uint8_t id[TERN_TOKEN_ID_BYTES], char out[TERN_TOKEN_TEXT_MAX]);

/* A token's fields, as tern_token_decode() reads them. */
typedef struct tern_token_info {
  char user[TERN_USER_MAX + 1];
  uint8_t device_key[TERN_KEY_BYTES];
  uint64_t expiry_s; /* Unix seconds */
  uint8_t id[TERN_TOKEN_ID_BYTES];
} tern_token_info;

/* Reads a token's text form into *info (zeroed on failure). With a
 * non-NULL `backend_pk` (32 bytes) its signature must verify with that
 * key; expiry and device binding are not judged here (the relay does, with
 * its clock and the handshake's key). Returns 0, TERN_ETOKENINVALID
 * (malformed, or the signature does not verify), TERN_ECRYPTO. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 3) int tern_token_decode_sized(const char *text,
                                                                     const uint8_t *backend_pk,
                                                                     tern_token_info *info,
                                                                     size_t info_size);
#define tern_token_decode(text, pk, info) tern_token_decode_sized((text), (pk), (info), sizeof(*(info)))

/* ----------------------------------------------------------------- relay */

typedef struct tern_relay tern_relay;

/* Decides whether a client key may connect. Write the user name (NUL
 * terminated, at most TERN_USER_MAX bytes) into `user` and return 0 to
 * accept; return TERN_EUNKNOWNKEY to refuse. `requested` is the name the
 * client asked for (possibly ""). Called from the relay's thread. */
typedef int (*tern_relay_auth_fn)(void *ctx, const uint8_t client_key[TERN_KEY_BYTES],
                                  const char *requested, char user[TERN_USER_MAX + 1]);

/* The largest max_peers a relay accepts. */
#define TERN_RELAY_MAX_PEERS 262144

typedef struct tern_relay_config {
  /* Set by tern_relay_config_default(); see "ABI and growing structs". */
  size_t struct_size;
  /* Address to bind and UDP port (default 7400). "::" (the default) is
   * dual-stack: IPv4 and IPv6 clients on one port (IPv4 alone where the
   * system has no IPv6); "0.0.0.0" or another IPv4 address is IPv4 only, an
   * IPv6 address IPv6 only. An IP literal (brackets allowed) or a name. */
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
  /* Most simultaneous peers, up to TERN_RELAY_MAX_PEERS. Default 4095.
   * ENet holds at most 4,095 peers per host, so a relay with more runs
   * ceil(max_peers / 4095) ENet hosts behind its one port; each slot costs
   * memory from the start (ENet's peer record). Past it, a new client is
   * answered FULL (TERN_EFULL at the client) and comes back later. */
  uint32_t max_peers;
  /* Largest message body the relay accepts. Default 65536. */
  uint32_t max_message_size;
  /* Where messages are kept: an SQLite file (created if missing), e.g.
   * "DATA_DIR/relay.db"; or a NATS JetStream cluster that several relays
   * share, "nats://HOST:PORT[,nats://HOST:PORT...][?stream=NAME&replicas=N]"
   * (spec/store.md, "The cluster store"; libraries built with the cluster
   * store only). NULL keeps them in memory: lost on restart, for tests
   * only. */
  const char *store_path;
  /* 1 (default): fsync each group commit, so nothing acknowledged is lost
   * even to a power cut; 0: survive a crash of ternd only. */
  int durable_fsync;
  /* Undelivered messages are dropped after this many ms, and their senders
   * get TERN_EV_FAILED with TERN_EEXPIRED. The sweep runs every minute, or
   * every quarter of the retention if that is shorter. Default 30 days. */
  uint64_t retention_ms;
  /* Optional: 0 if `user` cannot receive messages (the sender gets
   * TERN_EV_FAILED with TERN_ENOENT), 1 if it can. NULL: any valid name
   * can. Called from the relay's thread for every message, before it is
   * stored. */
  int (*user_exists)(void *ctx, const char *user);
  void *user_exists_ctx;
  /* Optional: 0 if user `from` may not write to user `to` (the sender gets
   * TERN_EV_FAILED with TERN_EDENIED; an ephemeral message is dropped
   * without a word), 1 if it may. NULL: anyone may write to anyone. Called
   * from the relay's thread for every message, after user_exists. A
   * resend of a message stored before the answer changed is refused too. */
  int (*may_send)(void *ctx, const char *from, const char *to);
  void *may_send_ctx;
  /* Bytes of the store's disk held in reserve, in the file store_path +
   * "-reserve" (default 16 MiB; 0: none). When the disk fills up, the relay
   * answers the messages of the failed round and every new message BUSY
   * (the clients keep them and retry), and gives the reserve back, so that
   * what is stored is still delivered and devices' acks, receipts and
   * deletions are still written; it accepts messages again once the disk
   * has room for the reserve (checked every 2 s). Without a reserve a full
   * disk stops acks too. */
  uint64_t store_reserve_bytes;
  /* 1 (default): answer NAT-timeout probes (spec/keepalive.md) on the UDP
   * port, for clients that learn their keepalive interval; 0: ignore them
   * (such clients then keep a conservative interval). */
  int probes;
  /* ENet link timing for each peer, in ms. The relay pings a client only
   * if that client's own keepalive is late: its interval for a peer is the
   * keepalive interval the client announced plus max(5 s, a quarter), or
   * ping_interval_ms (default 60000) for a client that announced none. */
  uint32_t ping_interval_ms;
  uint32_t timeout_min_ms;
  uint32_t timeout_max_ms;
  /* Backend tokens (spec/tokens.md): the backend's Ed25519 public key, 32
   * bytes, copied; NULL (default): tokens are not checked and a HELLO's
   * token is ignored. With it, a client whose HELLO carries a token is
   * admitted as the token's user when the checks of spec/tokens.md §4 pass
   * (`auth` is not asked) and refused with TERN_ETOKENINVALID,
   * TERN_ETOKENKEY, TERN_ETOKENEXPIRED or TERN_ETOKENREVOKED otherwise. A
   * client without a token still goes to `auth`, and a NULL `auth` still
   * admits it: to require tokens, give an auth callback that refuses. */
  const uint8_t *token_key;
  /* Optional: 1 if token `id` or the device key a token names is revoked,
   * else 0. Called from the relay's thread at each handshake with a valid
   * token, and by tern_relay_recheck_auth() for each session a token
   * admitted. NULL: nothing is revoked. */
  int (*token_revoked)(void *ctx, const uint8_t id[TERN_TOKEN_ID_BYTES],
                       const uint8_t device_key[TERN_KEY_BYTES]);
  void *token_revoked_ctx;
  /* Optional: the relay's wall clock, Unix ms (message timestamps, expiry
   * of messages and dedup records after retention_ms, token expiry). NULL
   * (default): the system's. For tests that move time forward. */
  uint64_t (*wall_clock_ms)(void *ctx);
  void *wall_clock_ctx;
  /* Quotas on what the relay holds (0: none). recipient_max_*: messages and
   * body bytes an inbox may hold, delivered or not, until every device of
   * the user acknowledged them; sender_max_*: the same for what a user
   * sent, across all recipients. A message past one is answered FAILED
   * with TERN_EQUOTA (final: the client drops it from its outbox and the
   * app is told). Defaults 100000 messages and 1 GiB each. */
  uint64_t recipient_max_messages;
  uint64_t recipient_max_bytes;
  uint64_t sender_max_messages;
  uint64_t sender_max_bytes;
  /* The relay-wide budget for DELIVERs sent to devices and not yet
   * acknowledged by them, in bytes, across all sessions (the memory that
   * receivers which stop acknowledging could otherwise make the relay hold;
   * each session also has its own window of 1 MiB). Past it, sessions with
   * DELIVERs in flight get no more until acks free room; the messages wait
   * in the store. 0: no budget. Default 256 MiB. */
  uint64_t deliver_budget_bytes;
  /* Per-device send rate (0: none): messages and body bytes a second, with
   * bursts of up to 10 s of either. A message past it is answered BUSY with
   * TERN_ERATE: the client keeps it and sends it again after its
   * busy_retry_ms (the app gets TERN_EV_ERROR); an ephemeral one is
   * dropped. Defaults 1000 messages and 16 MiB a second. */
  uint32_t send_rate_messages;
  uint64_t send_rate_bytes;
  /* Optional: push notifications for devices that are not connected
   * (spec/push.md). Called on the relay's thread:
   * - TERN_PUSH_WAITING, after the commit that stored a message for `user`,
   *   once for each device of the user (a device key the relay has seen
   *   connect as that user) that has no session, with `waiting` messages
   *   it has not acknowledged and `sender` the sender of the latest; and
   *   when a device's session ends (the network lost it, or the client
   *   left) while messages wait for it;
   * - TERN_PUSH_CONNECTED, when a session of the device opens (`sender` "",
   *   `waiting` 0): whatever was pending for it is moot.
   * Never called for a message that was not committed, nor for ephemeral
   * messages. Must not block nor call into the relay; the arguments are
   * valid during the call only. NULL (default): nothing is tracked. */
  void (*push)(void *ctx, int event, const char *user, const uint8_t device_key[TERN_KEY_BYTES],
               const char *sender, uint64_t waiting);
  void *push_ctx;
  /* Optional: presence (spec/messages.md §9.1). 1 if `watcher` may see
   * whether `user` is online and when it was last seen. The relay tells a
   * session, when it connects, the state of every user it may see that
   * was online since the relay started, and then each change (at most one
   * a second per user). Called on the relay's thread, often (per session
   * and user), so it must be quick. NULL (default): no presence. */
  int (*may_see_presence)(void *ctx, const char *watcher, const char *user);
  void *may_see_presence_ctx;
  /* When an ENet CONNECT from a new UDP address must first show that the
   * address receives (spec/wire.md §13): until then it draws one COOKIE
   * datagram smaller than itself and the relay keeps nothing, so spoofed
   * CONNECTs are not amplified and hold no slot. TERN_RELAY_COOKIES_AUTO
   * (default): while 64 or more new connections wait for their first
   * ENet round trip (a flood); _ALWAYS: every connect (one more round trip
   * each); _NEVER: none (clients older than cookies cannot connect while
   * they are required). */
  int cookies;
  /* 1: no redundant copies of small DELIVERs (spec/messages.md §8), for
   * every session; 0 (default): copies as the spec says. */
  int no_copies;
} tern_relay_config;
#define TERN_RELAY_COOKIES_AUTO 0
#define TERN_RELAY_COOKIES_ALWAYS 1
#define TERN_RELAY_COOKIES_NEVER 2

/* The events of tern_relay_config.push. */
enum { TERN_PUSH_WAITING = 1, TERN_PUSH_CONNECTED = 2 };

TERN_EXPORT TERN_NONNULL(1) void tern_relay_config_default(tern_relay_config *cfg);

/* Creates a relay, opens its store and binds its UDP port. *out owns it;
 * NULL on failure. Returns 0, TERN_EINVAL (also a malformed cluster URL),
 * TERN_ENOMEM, TERN_ECRYPTO, TERN_EADDR (cannot bind), TERN_ESTORE (store
 * cannot be opened: the file, or the cluster unreachable or without
 * JetStream; the relay's log says which), TERN_ENOTSUP (a "nats://"
 * store_path and a library built without the cluster store). */
TERN_EXPORT TERN_WUR TERN_NONNULL(1, 2) int tern_relay_new(tern_relay **out, const tern_relay_config *cfg);

/* Disconnects every peer (telling each it is a shutdown) and frees. */
TERN_EXPORT void tern_relay_free(tern_relay *r);

/* Runs the relay for up to `timeout_ms` ms (0: only what is due). Returns
 * 0 or TERN_EIO. */
TERN_EXPORT TERN_WUR TERN_NONNULL(1) int tern_relay_service(tern_relay *r, int timeout_ms);

/* Descriptors and deadline for an external loop, as for the client:
 * tern_relay_pollfds() on every platform (the relay's sockets, valid until
 * the next tern_relay_service(); a relay with TCP connections under the
 * poll() backend has one entry per connection), tern_relay_fd() where the
 * build has a single descriptor (else TERN_ENOTSUP). */
TERN_EXPORT TERN_WUR TERN_NONNULL(1) int tern_relay_pollfds(tern_relay *r, struct pollfd *fds, size_t n);
TERN_EXPORT TERN_NONNULL(1) int tern_relay_fd(const tern_relay *r);
TERN_EXPORT TERN_NONNULL(1) int tern_relay_timeout_ms(tern_relay *r);

/* The UDP port actually bound (useful with port 0). */
TERN_EXPORT TERN_NONNULL(1) uint16_t tern_relay_port(const tern_relay *r);

/* Accepts TCP connections on `port` (0 picks one) of the relay's bind
 * address too, for clients whose network blocks UDP (their
 * relay_tcp_port): each carries the same sealed datagrams as UDP, framed
 * with a 2-byte length (spec/wire.md §12), and its session may move back to
 * UDP later. TCP port 443 passes most firewalls. *bound (may be NULL) gets
 * the port. Returns 0, TERN_EADDR (cannot bind; errno says why),
 * TERN_EEXIST (listening already). */
TERN_EXPORT TERN_WUR TERN_NONNULL(1) int tern_relay_listen_tcp(tern_relay *r, uint16_t port,
                                                              uint16_t *bound);

/* Re-checks every authenticated peer (after an allow-list or revocation
 * list reload): a peer the auth callback now refuses is disconnected with
 * TERN_EUNKNOWNKEY, and one a token admitted whose token id or device key
 * token_revoked now names with TERN_ETOKENREVOKED (the auth callback is not
 * asked about those). Returns the number disconnected. */
TERN_EXPORT TERN_NONNULL(1) int tern_relay_recheck_auth(tern_relay *r);

typedef struct tern_relay_stats {
  uint64_t peers_connected;     /* authenticated peers now */
  uint64_t handshakes_ok;       /* handshakes completed */
  uint64_t handshakes_failed;   /* bad, refused or timed-out handshakes */
  uint64_t packets_rejected;    /* sealed packets that failed to open */
  uint64_t packets_replayed;    /* sealed packets dropped by the replay window */
  uint64_t messages_stored;     /* messages stored and acknowledged (counted when
                                   their commit succeeds) */
  uint64_t messages_early;      /* MSG frames that came inside handshake message 1 */
  uint64_t messages_deduped;    /* resends answered without storing again */
  uint64_t messages_delivered;  /* messages acknowledged by a recipient */
  uint64_t messages_refused;    /* FAILED: too big, unknown user, not allowed */
  uint64_t messages_busy;       /* BUSY: the store failed, sender retries */
  uint64_t messages_expired;    /* dropped undelivered after the retention */
  uint64_t store_errors;        /* store operations (or commits) that failed */
  uint64_t probe_requests;      /* probe REQUESTs that verified */
  uint64_t probe_replies;       /* REPLYs sent after the silence asked for */
  uint64_t probe_rejected;      /* probe datagrams malformed, unknown or forged */
  uint64_t probe_limited;       /* REQUESTs refused by the rate limits */
  uint64_t connects_refused_full; /* new connections refused with FULL: no free slot */
  uint64_t sessions_moved;      /* sessions that moved to a new address (no new handshake) */
  uint64_t tcp_accepted;        /* TCP connections accepted (tern_relay_listen_tcp()) */
  uint64_t tcp_connections;     /* TCP connections open now */
  /* For a relay's metrics (ternd --metrics): */
  uint64_t peers_handshaking;   /* connected peers that have not finished the handshake */
  /* handshakes_failed by reason (the rest: the store failed on connect): */
  uint64_t hs_failed_version;   /* unsupported protocol version */
  uint64_t hs_failed_unreadable;/* message 1 did not open: the client pinned another
                                   relay key, or garbage */
  uint64_t hs_failed_protocol;  /* HELLO malformed, or its WELCOME could not be sent */
  uint64_t hs_failed_refused;   /* the key is not allowed (the auth callback) */
  uint64_t hs_failed_timeout;   /* no handshake within handshake_timeout_ms */
  uint64_t bytes_received;      /* tern packets and probe datagrams received, counted
                                   without ENet, UDP, TCP or IP headers */
  uint64_t bytes_sent;          /* the same, sent */
  uint64_t store_commits;       /* commits of rounds that stored, delivered, deduped
                                   or expired messages, or that failed */
  uint64_t store_commit_us;     /* the time those commits took, microseconds */
  /* store_commit_le_us[i]: how many of those commits took at most
   * TERN_RELAY_COMMIT_BOUNDS_US[i] (cumulative, as histograms count). */
#define TERN_RELAY_COMMIT_BUCKETS 6
  uint64_t store_commit_le_us[TERN_RELAY_COMMIT_BUCKETS];
  /* The drain (tern_relay_drain()): */
  uint64_t draining;            /* 1 once a drain began, else 0 */
  uint64_t peers_held;          /* peers of any state the relay still holds (a
                                   drain is complete when this is 0) */
  uint64_t hs_failed_draining;  /* handshakes refused because the relay drains
                                   (also in handshakes_failed) */
  uint64_t sessions_replaced;   /* sessions closed by a newer one of the same
                                   device key (spec/wire.md §8.1) */
  uint64_t hs_failed_stale;     /* HELLOs refused because their timestamp is not
                                   above the last accepted from the key: replays
                                   (spec/handshake.md §6); also in handshakes_failed */
  uint64_t messages_over_quota; /* FAILED with TERN_EQUOTA (also in messages_refused) */
  uint64_t messages_over_rate;  /* BUSY with TERN_ERATE (also in messages_busy), and
                                   ephemeral messages dropped for the rate */
  uint64_t deliver_budget_stalls; /* times a session's deliveries waited for the
                                   relay-wide budget (deliver_budget_bytes) */
  uint64_t deliver_bytes_unacked; /* gauge: DELIVER bytes sent and not yet acknowledged */
  uint64_t push_events;         /* TERN_PUSH_WAITING events given to tern_relay_config.push */
  uint64_t presence_sent;       /* PRESENCE updates sent to sessions */
  /* Cookies (tern_relay_config.cookies, spec/wire.md §13): */
  uint64_t cookies_sent;        /* COOKIEs sent to CONNECTs from unproven addresses */
  uint64_t cookie_connects;     /* new connections admitted with a valid cookie */
  uint64_t cookies_bad;         /* CONNECTs dropped: wrong or stale cookie */
  uint64_t resets_sent;         /* RESET datagrams sent at start to the sessions the
                                   previous run left recorded (spec/wire.md §14) */
  /* The cluster store (store_path "nats://...", spec/store.md "The cluster
   * store"); all 0 on a store of one relay: */
  uint64_t cluster;             /* 1 on the cluster store */
  uint64_t cluster_connected;   /* gauge: 1 while connected to a NATS server */
  uint64_t cluster_position;    /* gauge: the log entry the relay has applied */
  uint64_t cluster_published;   /* entries (committed rounds) this relay appended */
  uint64_t cluster_applied;     /* other relays' entries this relay applied */
  uint64_t cluster_refused;     /* entries refused because another relay's writes
                                   came first and changed their answers (their
                                   messages were answered BUSY) */
  uint64_t cluster_publish_errors; /* appends that failed (no leader, no quorum,
                                   no connection): BUSY */
  uint64_t messages_out_of_order; /* MSGs dropped unanswered because the message
                                   before them in their conversation (prev_cmid)
                                   is not stored: the client sends both again
                                   (spec/messages.md §5.3) */
  uint64_t messages_stale;      /* MSGs dropped unanswered because their cmid is
                                   below the device's settled floor (an old copy) */
  uint64_t cluster_resyncs;     /* times the relay's replica went back to a
                                   snapshot because it had taken a log entry the
                                   log does not have (a NATS server that lost
                                   its leadership answered; spec/store.md) */
  uint64_t cluster_acks_refuted; /* rounds the cluster acknowledged at a log
                                   entry that holds another relay's: rolled
                                   back, their messages answered BUSY */
} tern_relay_stats;
/* The bounds of store_commit_le_us: 100 us, 1 ms, 10 ms, 100 ms, 1 s, 10 s. */
#define TERN_RELAY_COMMIT_BOUNDS_US {100, 1000, 10000, 100000, 1000000, 10000000}
TERN_EXPORT TERN_NONNULL(1, 2) void tern_relay_get_stats_sized(const tern_relay *r, tern_relay_stats *st,
                                                              size_t st_size);
#define tern_relay_get_stats(r, st) tern_relay_get_stats_sized((r), (st), sizeof(*(st)))

/* One authenticated session of tern_relay_sessions_each(). Filled by the
 * library: fields may be added at the end. */
typedef struct tern_relay_session {
  const char *user;                   /* the user the session is signed in as */
  uint8_t device_key[TERN_KEY_BYTES]; /* the client's static public key (its device) */
  const char *address;                /* where it is heard from now, as the relay logs it
                                         ("IP:port", IPv6 in brackets) */
  uint64_t keepalive_ms;              /* the keepalive interval it announced (0: none;
                                         the relay pings it at ping_interval_ms) */
  uint64_t age_ms;                    /* since its handshake finished */
  uint32_t rtt_ms;                    /* the link's round-trip time as ENet measures it */
  int tcp;                            /* 1: over TCP (tern_relay_listen_tcp()), 0: UDP */
} tern_relay_session;

/* Calls fn for every authenticated session, newest first: what an admin
 * tool lists. The item and its strings are valid during the call only; fn
 * returns nonzero to stop early and must not call into the relay. From the
 * relay's thread. Returns how many were listed. */
typedef int (*tern_relay_session_fn)(void *ctx, const tern_relay_session *s);
TERN_EXPORT TERN_NONNULL(1, 2) int tern_relay_sessions_each(tern_relay *r, tern_relay_session_fn fn,
                                                           void *ctx);

/* Disconnects the sessions of `user`: all its devices, or only the one
 * whose key is `device_key` (NULL: all). A kicked client is told
 * TERN_EUNKNOWNKEY, as for a key taken off the allow-list (the wire has no
 * code of its own for a kick): tools built on libtern stop on it; a client
 * whose key is still allowed may reconnect after its backoff, so to bar a
 * device, take it off the allow-list first. Returns how many sessions
 * were disconnected (0: none matched). */
TERN_EXPORT TERN_NONNULL(1, 2) int tern_relay_kick(tern_relay *r, const char *user,
                                                  const uint8_t *device_key);

/* Removes a device (the backend's or operator's decision: a lost phone, a
 * revoked key): its sessions are closed (told TERN_EUNKNOWNKEY) and the
 * relay forgets its cursor, so it no longer holds its user's messages back
 * (what the user's other devices have all acknowledged is deleted at once;
 * with no device left, the messages wait for the next one, or expire), and
 * the receipts and failures owed to it. The device may connect again later
 * as a new one (from the messages still held) unless its key is refused.
 * Committed before it returns. Returns 1 if the relay knew the device, 0
 * if not, TERN_ESTORE. */
TERN_EXPORT TERN_NONNULL(1, 2) int tern_relay_remove_device(tern_relay *r,
                                                           const uint8_t device_key[TERN_KEY_BYTES]);

/* Groups (spec/messages.md §14). A group is named "@name" (name: as a user
 * name, at most TERN_USER_MAX - 1 bytes); a member writes to it with
 * tern_client_send(c, "@name", ...), and every device of every member gets
 * each message once, in the group's one order. The app's backend owns the
 * members: this replaces them with members[0..n) (at most
 * TERN_GROUP_MEMBERS_MAX; n = 0 empties the group). The change takes
 * effect at a point of the group's order: a removed member's devices get
 * what was sent before it and nothing after; an added member's get what
 * is sent after it. Committed before it returns. Returns 0, TERN_EINVAL (a
 * bad name, too many members), TERN_ESTORE. */
#define TERN_GROUP_MEMBERS_MAX 1000
TERN_EXPORT TERN_NONNULL(1, 2) int tern_relay_group_set(tern_relay *r, const char *group,
                                                       const char *const *members, size_t n);

/* The current members of `group`, each to cb (which may stop the walk by
 * returning non-zero). Returns how many were given, or TERN_EINVAL,
 * TERN_ESTORE. */
TERN_EXPORT TERN_NONNULL(1, 2, 3) int tern_relay_group_members(tern_relay *r, const char *group,
                                                              int (*cb)(void *ctx, const char *user),
                                                              void *ctx);

/* Starts a graceful drain (spec/wire.md §6.14), before a restart or to
 * take the relay out of service: from now on new handshakes are refused
 * with TERN_ESHUTDOWN, and every open session is told GOAWAY ("reconnect,
 * elsewhere if you can, after your delay"), the delays spread evenly over
 * `window_ms`, so that N clients come back at N / window_ms per ms rather
 * than all at once; then its link closes once what the relay queued to it
 * (acknowledgements included) is delivered. Messages in flight that the
 * relay did not acknowledge stay in their senders' outboxes and are sent
 * again after the reconnect; what it acknowledged is in the store. Keep
 * calling tern_relay_service() until tern_relay_drained() says 1 or your
 * deadline passes, then tern_relay_free(). Calling it again tells the
 * sessions opened since (none: handshakes are refused) and changes nothing
 * else. Relay thread only. Returns how many sessions were told. */
TERN_EXPORT TERN_NONNULL(1) int tern_relay_drain(tern_relay *r, uint32_t window_ms);

/* 1 when a drain began and the relay holds no peer any more (every
 * session's link closed, every handshake refused or timed out), else 0. */
TERN_EXPORT TERN_NONNULL(1) int tern_relay_drained(const tern_relay *r);

#ifdef __cplusplus
}
#endif

#endif /* TERN_H */
