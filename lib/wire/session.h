/*
 * The secure session core, sans-I/O: the IK handshake packets, then sealed
 * transport packets. No clock, no socket, no random source: the caller passes
 * the ephemeral key and the time, and moves bytes.
 *
 * Packets (ENet payloads; spec/wire.md and spec/handshake.md):
 *
 *   HELLO   = 0x01 | version | Noise IK message 1   (client -> relay)
 *   WELCOME = 0x02 | version | Noise IK message 2   (relay -> client)
 *   DATA    = 0x03 | counter (8 bytes, little-endian) | ciphertext | tag(16)
 *
 * A DATA packet's nonce is its counter; its associated data is the 9 header
 * bytes. The counter's top byte is the packet's stream (its ENet channel),
 * the low 56 bits count packets on that stream. Each stream has its own
 * replay window: ENet orders each channel but not channels against each
 * other, so one window for all could let a packet held up on one channel
 * fall out of the window while others run ahead, after ENet acked it. The
 * receiver opens a packet, then checks its stream's window. Streams ENet
 * delivers in order (all but TERN__STREAM_UNORDERED) have a 128-counter
 * window; the unordered one (unsequenced copies) 2048 (wire/replay.h).
 *
 * Memory: the handshake state is needed only until OPEN and the unordered
 * stream's window only from OPEN, so the two share storage; the handshake
 * state (the static private key among it) is wiped when the session opens.
 */
#ifndef TERN_SESSION_H
#define TERN_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "wire/frame.h"
#include "wire/noise.h"
#include "wire/replay.h"
#include "tern/tern.h"

enum {
  TERN__PKT_HELLO = 0x01,
  TERN__PKT_WELCOME = 0x02,
  TERN__PKT_DATA = 0x03,
};

/* Bytes a DATA packet adds to its plaintext. */
#define TERN__DATA_HEADER 9
#define TERN__DATA_OVERHEAD (TERN__DATA_HEADER + TERN__NOISE_TAGLEN)
/* Bytes HELLO adds to its payload: type, version, e (32), encrypted s (48),
 * payload tag (16). WELCOME: type, version, e (32), payload tag (16). */
#define TERN__HELLO_OVERHEAD (2 + 32 + 48 + 16)
#define TERN__WELCOME_OVERHEAD (2 + 32 + 16)
/* Largest handshake payload either side accepts. */
#define TERN__HS_PAYLOAD_MAX 2048
/* The largest HELLO (spec/wire.md §9), and the largest DATA packet: its
 * plaintext is at most one message of TERN_MESSAGE_MAX and its frame
 * header (the cores' frame buffers, TERN_MESSAGE_MAX + 256). ENet
 * reassembles nothing larger (io/link.h, tern__link_set_packet_limits). */
#define TERN__HELLO_MAX (TERN__HELLO_OVERHEAD + TERN__HS_PAYLOAD_MAX)
#define TERN__PACKET_MAX (TERN_MESSAGE_MAX + 256 + TERN__DATA_OVERHEAD)

/* Streams per direction; a DATA packet's stream is the top byte of its
 * counter. */
#define TERN__STREAMS 8
/* The one stream ENet may deliver out of order: its channel carries
 * unsequenced packets (TERN__CH_COPY, channels.h). */
#define TERN__STREAM_UNORDERED 7

/* The rekey rule: a stream carries at most this many DATA packets under one
 * key. The sender refuses the next with TERN_ENONCE, which ends the session;
 * the client reconnects, and the new handshake makes new keys. The receiver
 * refuses counters at or above it too. */
#define TERN__SEND_LIMIT ((uint64_t)1 << 48)

/* The Noise prologue binds the handshake to tern's protocol and version. */
#define TERN__PROLOGUE "tern/1"

typedef enum tern__session_state {
  TERN__SS_NEW = 0,
  TERN__SS_HELLO_SENT,    /* client: waiting for WELCOME */
  TERN__SS_HELLO_READ,    /* relay: HELLO opened, WELCOME not yet written */
  TERN__SS_OPEN,          /* transport keys in place */
  TERN__SS_DEAD,          /* failed or closed: no further use */
} tern__session_state;

typedef struct tern__session {
  tern__session_state state;
  int initiator;
  union {
    tern__noise_hs hs;   /* until OPEN; wiped when the session opens */
    tern__replay unordered; /* from OPEN: TERN__STREAM_UNORDERED's window */
  };
  uint8_t send_key[TERN__NOISE_KEYLEN];
  uint8_t recv_key[TERN__NOISE_KEYLEN];
  uint64_t send_n[TERN__STREAMS];     /* next packet number on each stream */
  /* What we have opened on each ordered stream, indexed by stream (the
   * unordered stream is the last: its window is `unordered`). */
  tern__replay_small replay[TERN__STREAMS - 1];
  uint8_t remote_static[TERN__NOISE_DHLEN]; /* the peer's static public key */
  uint8_t handshake_hash[TERN__NOISE_HASHLEN];
  uint64_t rejected;      /* DATA packets that failed to open */
  uint64_t replayed;      /* DATA packets refused by the replay window */
} tern__session;

/* Client side. `e_priv` is a fresh ephemeral private key from the caller's
 * random source. Writes HELLO carrying `payload` (handshake frames, at most
 * TERN__HS_PAYLOAD_MAX bytes) into out[0..cap). Returns 0, TERN_EINVAL,
 * TERN_ETOOBIG, TERN_EBUFSIZE. */
int tern__session_client_hello(tern__session *s, const tern_keypair *client,
                               const uint8_t relay_pub[TERN_KEY_BYTES],
                               const uint8_t e_priv[TERN_KEY_BYTES], const uint8_t *payload,
                               size_t payload_len, uint8_t *out, size_t cap, size_t *out_len);

/* Client side: reads WELCOME, writing its payload to payload[0..cap).
 * Returns 0 (session OPEN), TERN_EVERSION, TERN_EPROTO (malformed),
 * TERN_ERELAYKEY (it does not authenticate: not the pinned relay),
 * TERN_EINVAL (wrong state). On error the session is DEAD. */
int tern__session_client_welcome(tern__session *s, const uint8_t *pkt, size_t len,
                                 uint8_t *payload, size_t cap, size_t *payload_len);

/* Relay side: reads HELLO with the relay's keypair, writing its payload to
 * payload[0..cap); the client's static key is then in s->remote_static.
 * Returns 0, TERN_EVERSION, TERN_EPROTO, TERN_ERELAYKEY (message 1 does
 * not open: the client pinned another relay key, or it is garbage). */
int tern__session_relay_hello(tern__session *s, const tern_keypair *relay,
                              const uint8_t e_priv[TERN_KEY_BYTES], const uint8_t *pkt,
                              size_t len, uint8_t *payload, size_t cap, size_t *payload_len);

/* Relay side: writes WELCOME carrying `payload`; the session is OPEN after.
 * Returns 0, TERN_EINVAL (wrong state), TERN_ETOOBIG, TERN_EBUFSIZE. */
int tern__session_relay_welcome(tern__session *s, const uint8_t *payload, size_t payload_len,
                                uint8_t *out, size_t cap, size_t *out_len);

/* Seals `len` bytes of frames into a DATA packet of len +
 * TERN__DATA_OVERHEAD bytes on `stream` (< TERN__STREAMS: the ENet channel
 * it will travel on). Returns 0, TERN_EINVAL (not OPEN, bad stream),
 * TERN_EBUFSIZE, TERN_ENONCE (send limit reached: the session must end). */
int tern__session_seal(tern__session *s, uint8_t stream, const uint8_t *frames, size_t len,
                       uint8_t *out, size_t cap, size_t *out_len);

/* Opens a DATA packet into out[0..cap) (cap >= len - TERN__DATA_OVERHEAD);
 * *stream receives the stream it was sealed for (the caller may check it
 * against the channel it arrived on). Returns 0, TERN_EPROTO (too short / not DATA), TERN_EDECRYPT (failed
 * authentication; counted in s->rejected), TERN_EREPLAY (seen or too old;
 * counted in s->replayed), TERN_EINVAL (not OPEN), TERN_EBUFSIZE. A failed
 * packet changes nothing else: the session carries on. */
int tern__session_open(tern__session *s, const uint8_t *pkt, size_t len, uint8_t *out, size_t cap,
                       size_t *out_len, uint8_t *stream);

/* The highest packet number opened on `stream` so far, in *top; returns
 * 1, or 0 if none has been (or the session is not OPEN, or no such
 * stream). */
int tern__session_recv_top(const tern__session *s, uint8_t stream, uint64_t *top);

/* Wipes every key; the session is DEAD. */
void tern__session_wipe(tern__session *s);

#endif
