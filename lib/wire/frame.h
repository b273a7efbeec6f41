/*
 * tern frames: the plaintext inside every sealed packet and inside handshake
 * payloads. See spec/wire.md for diagrams and hex examples.
 *
 *   frame   = type (1 byte) | length (varint) | body (length bytes)
 *   varint  = unsigned LEB128, at most 10 bytes, minimal encoding only
 *   string  = length (varint) | bytes
 *
 * A packet holds one or more frames back to back. Unknown frame types are
 * skipped whole, so new frame types can be added without breaking old peers.
 */
#ifndef TERN_FRAME_H
#define TERN_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "tern/tern.h"

enum {
  TERN__FR_HELLO = 0x01,        /* client -> relay, in handshake message 1 */
  TERN__FR_WELCOME = 0x02,      /* relay -> client, in handshake message 2 */
  TERN__FR_MSG = 0x10,          /* client -> relay: a message for a user */
  TERN__FR_DELIVER = 0x11,      /* relay -> client: a message from a user */
  TERN__FR_FAILED = 0x12,       /* relay -> client: a message is refused for good */
  TERN__FR_SERVER_ACK = 0x13,   /* relay -> client: a message is stored */
  TERN__FR_DELIVERY_ACK = 0x14, /* client -> relay: inbox seqs handed to the app */
  TERN__FR_RECEIPT = 0x15,      /* relay -> client: the recipient got a message */
  TERN__FR_NOTICE_ACK = 0x16,   /* client -> relay: a RECEIPT or FAILED is handled */
  TERN__FR_SYNC = 0x17,         /* client -> relay: what I have; send the rest */
  TERN__FR_FLOOR = 0x18,        /* relay -> client: seqs up to here are gone */
  TERN__FR_BUSY = 0x19,         /* relay -> client: not stored now, retry later */
  TERN__FR_CLOSE = 0x20,        /* either way: goodbye, with a reason */
  /* 0x21 is reserved: a PING frame was specified and never sent (the live
   * link is kept by ENet pings, spec/keepalive.md). */
  TERN__FR_KEEPALIVE = 0x22,    /* client -> relay: my keepalive interval; probe key? */
  TERN__FR_PROBE_KEY = 0x23,    /* relay -> client: key for NAT-timeout probes */
  TERN__FR_GOAWAY = 0x24,       /* relay -> client: draining; reconnect after delay_ms */
  TERN__FR_RESET_TOKEN = 0x25,  /* relay -> client: this session's RESET token */
  TERN__FR_SETTLED = 0x26,      /* client -> relay: my cmids below this are settled */
  TERN__FR_PRESENCE = 0x28,     /* relay -> client: a contact came online or went offline */
  TERN__FR_GROUP_ACK = 0x29,    /* client -> relay: a group's seqs handed to the app */
  TERN__FR_GROUP_FLOOR = 0x2a,  /* relay -> client: a group's seqs up to here are not for me */
  TERN__FR_GROUP_RECEIPT = 0x2b,/* relay -> client: got of of the members have my message */
};

/* KEEPALIVE flags. */
#define TERN__KAF_WANT_KEY 0x1u /* send me a PROBE_KEY */

/* NOTICE_ACK kinds: which notice is acknowledged. */
enum { TERN__KIND_RECEIPT = 1, TERN__KIND_FAILED = 2, TERN__KIND_GROUP_RECEIPT = 3 };

/* MSG/DELIVER flags. */
#define TERN__MSGF_EPHEMERAL 0x1u /* at most once: not stored, no acks */
/* DELIVER only (the relay sets them, and keeps of a MSG's flags only
 * TERN__MSGF_MSG_MASK, so no client can forge them):
 * CARBON, a message this user sent from one of its devices, to the user
 * named by the `to` field that follows flags; OWN, with CARBON, sent by the
 * device receiving it, whose body is left out (spec/messages.md §13). */
#define TERN__MSGF_CARBON 0x2u
#define TERN__MSGF_OWN 0x4u
/* DELIVER only: a message to the group named by the `to` field ("@name"),
 * seq and prev_seq the group's (spec/messages.md §14). OWN may go with it. */
#define TERN__MSGF_GROUP 0x8u
/* The flags a MSG may carry. */
#define TERN__MSGF_MSG_MASK TERN__MSGF_EPHEMERAL

/* Protocol version carried in the handshake packets. */
#define TERN__PROTO_VERSION 1
#define TERN__PROTO_VERSION_BYTE ((uint8_t)TERN__PROTO_VERSION)

/* A bounded output buffer. Writes past `cap` set `overflow` and write
 * nothing; the caller checks once at the end (TERN_EBUFSIZE). */
typedef struct tern__wbuf {
  uint8_t *p;
  size_t len, cap;
  int overflow;
} tern__wbuf;

/* A bounded input cursor. Reads past the end set `bad`; every read after
 * that returns zeros, so a decoder checks `bad` once at the end. */
typedef struct tern__rbuf {
  const uint8_t *p;
  size_t len, pos;
  int bad;
} tern__rbuf;

void tern__wbuf_init(tern__wbuf *w, uint8_t *p, size_t cap);
void tern__wbuf_bytes(tern__wbuf *w, const void *data, size_t n);
void tern__wbuf_u8(tern__wbuf *w, uint8_t v);
void tern__wbuf_varint(tern__wbuf *w, uint64_t v);
void tern__wbuf_string(tern__wbuf *w, const void *s, size_t n);

/* Starts a frame of `type`; frame_end writes its length (minimal varint)
 * and moves the body into place. A frame body is at most 2^28-1 bytes. */
size_t tern__frame_begin(tern__wbuf *w, uint8_t type);
void tern__frame_end(tern__wbuf *w, size_t mark);

void tern__rbuf_init(tern__rbuf *r, const uint8_t *p, size_t len);
uint8_t tern__rbuf_u8(tern__rbuf *r);
uint64_t tern__rbuf_varint(tern__rbuf *r);
/* A string field: *s points into the buffer (not NUL-terminated). */
void tern__rbuf_string(tern__rbuf *r, const uint8_t **s, size_t *n, size_t max);
/* Whatever is left of the buffer. */
void tern__rbuf_rest(tern__rbuf *r, const uint8_t **s, size_t *n);

/* Splits a packet into frames: returns 1 and the next frame's type and body,
 * 0 at the clean end, TERN_EPROTO on a malformed frame header. */
int tern__frame_next(tern__rbuf *packet, uint8_t *type, tern__rbuf *body);

/* Longest encoding of a varint, in bytes. */
#define TERN__VARINT_MAX 10

/* ---- typed frames ------------------------------------------------------ */

typedef struct tern__fr_hello {
  const uint8_t *user; size_t user_len;  /* requested user name, may be empty */
  uint64_t ping_interval_ms;             /* the client's ping interval */
  /* The client's HELLO timestamp, Unix microseconds, strictly increasing
   * per device key (also across restarts): the relay refuses a HELLO whose
   * time_us is not above the largest it accepted from that key, so a
   * recorded HELLO never opens a session again (spec/handshake.md §6). */
  uint64_t time_us;
  /* A backend token in its binary form (spec/tokens.md), or none (length
   * 0): written only when there is one, so a tokenless HELLO is the bytes
   * an older client sends, and an older relay skips it as a field it does
   * not know (spec/wire.md §5, "Bodies may grow"). */
  const uint8_t *token; size_t token_len;
} tern__fr_hello;

/* The longest token field a HELLO frame reader takes; the token module
 * judges what is in it (a longer field makes the frame malformed). */
#define TERN__HELLO_TOKEN_MAX 1024

typedef struct tern__fr_welcome {
  uint64_t status;                       /* 0, or -TERN_E* of the refusal */
  const uint8_t *user; size_t user_len;  /* the name the relay assigned */
  uint64_t server_time_ms;               /* relay's wall clock, Unix ms */
  const uint8_t *reason; size_t reason_len; /* human-readable, may be empty */
  uint64_t retry_ms;                     /* a refusal: come back after this long (0:
                                            not said; an optional last field) */
} tern__fr_welcome;

/* MSG:     cmid | to | flags | prev_cmid | body (to: a user, or "@group")
 * DELIVER: seq | prev_seq | from | ts | flags | [to, with CARBON or GROUP] | body */
typedef struct tern__fr_msg {
  uint64_t cmid;        /* MSG: the sender device's id for the message */
  uint64_t prev_cmid;   /* MSG: the previous unacked message to the same
                           recipient, which the relay must hold first; 0 */
  uint64_t seq;         /* DELIVER: inbox seq (0 for ephemeral) */
  uint64_t prev_seq;    /* DELIVER: previous seq from the same sender, or 0 */
  uint64_t ts;          /* DELIVER: server time of acceptance, Unix ms */
  const uint8_t *peer; size_t peer_len;  /* MSG: recipient; DELIVER: sender */
  uint64_t flags;
  const uint8_t *to; size_t to_len;      /* DELIVER with CARBON: the recipient; with
                                            GROUP: the group, "@name" */
  const uint8_t *body; size_t body_len;
} tern__fr_msg;

/* FAILED and BUSY: cmid | error (as -TERN_E*). */
typedef struct tern__fr_failed {
  uint64_t cmid;
  uint64_t error;                        /* -TERN_E* */
} tern__fr_failed;

/* SERVER_ACK: cmid | seq | ts. */
typedef struct tern__fr_sack {
  uint64_t cmid, seq, ts;
} tern__fr_sack;

/* DELIVERY_ACK and SYNC: last | count | seq... (seqs above last, increasing). */
#define TERN__SEQLIST_MAX 256
typedef struct tern__fr_seqlist {
  uint64_t last;
  size_t n;
  uint64_t seqs[TERN__SEQLIST_MAX];
} tern__fr_seqlist;

/* GROUP_ACK: group | last | count | seq... ; GROUP_FLOOR: group | seq. */
typedef struct tern__fr_gack {
  const uint8_t *group; size_t group_len; /* "@name" */
  tern__fr_seqlist list;                  /* GROUP_FLOOR: list.last only */
} tern__fr_gack;

/* GROUP_RECEIPT: cmid | got | of. */
typedef struct tern__fr_greceipt {
  uint64_t cmid, got, of;
} tern__fr_greceipt;

/* KEEPALIVE: interval_ms | flags. interval 0: the client sends no
 * keepalives. */
typedef struct tern__fr_keepalive {
  uint64_t interval_ms;
  uint64_t flags;
} tern__fr_keepalive;

/* PRESENCE: user | online (1) or offline (0) | since, Unix ms (online:
 * when the user came online; offline: when it was last seen). */
typedef struct tern__fr_presence {
  const uint8_t *user; size_t user_len;
  uint64_t online;
  uint64_t since_ms;
} tern__fr_presence;

/* PROBE_KEY: id (string of 8 bytes) | key (string of 32 bytes). */
typedef struct tern__fr_probe_key {
  uint8_t id[8];
  uint8_t key[32];
} tern__fr_probe_key;

void tern__fr_hello_write(tern__wbuf *w, const tern__fr_hello *f);
void tern__fr_welcome_write(tern__wbuf *w, const tern__fr_welcome *f);
/* type is TERN__FR_MSG or TERN__FR_DELIVER; DELIVER carries no cmid. */
void tern__fr_msg_write(tern__wbuf *w, uint8_t type, const tern__fr_msg *f);
/* type is TERN__FR_FAILED or TERN__FR_BUSY. */
void tern__fr_failed_write(tern__wbuf *w, uint8_t type, const tern__fr_failed *f);
void tern__fr_sack_write(tern__wbuf *w, const tern__fr_sack *f);
/* type is TERN__FR_DELIVERY_ACK or TERN__FR_SYNC. */
void tern__fr_seqlist_write(tern__wbuf *w, uint8_t type, const tern__fr_seqlist *f);
/* One-number frames: RECEIPT (cmid), FLOOR (seq), CLOSE (reason), GOAWAY
 * (delay_ms), SETTLED (cmid). */
void tern__fr_u64_write(tern__wbuf *w, uint8_t type, uint64_t v);
/* NOTICE_ACK: kind | cmid [| code: a GROUP_RECEIPT's (got << 32 | of), so
 * that an ack of an older count does not take a newer one]. */
void tern__fr_notice_ack_write(tern__wbuf *w, uint64_t kind, uint64_t cmid);
void tern__fr_notice_ack_code_write(tern__wbuf *w, uint64_t kind, uint64_t cmid, uint64_t code);
/* type is TERN__FR_GROUP_ACK or TERN__FR_GROUP_FLOOR. */
void tern__fr_gack_write(tern__wbuf *w, uint8_t type, const tern__fr_gack *f);
void tern__fr_greceipt_write(tern__wbuf *w, const tern__fr_greceipt *f);
void tern__fr_close_write(tern__wbuf *w, uint64_t reason);
void tern__fr_presence_write(tern__wbuf *w, const tern__fr_presence *f);

/* Decoders of one frame body: 0 or TERN_EPROTO. Pointers point into the
 * body. A body with bytes after the known fields is accepted (fields may be
 * appended in later versions), except MSG/DELIVER whose body is the rest. */
int tern__fr_hello_read(tern__rbuf *body, tern__fr_hello *f);
int tern__fr_welcome_read(tern__rbuf *body, tern__fr_welcome *f);
int tern__fr_msg_read(tern__rbuf *body, uint8_t type, tern__fr_msg *f);
int tern__fr_failed_read(tern__rbuf *body, tern__fr_failed *f);
int tern__fr_sack_read(tern__rbuf *body, tern__fr_sack *f);
/* Refuses more than TERN__SEQLIST_MAX seqs, or seqs not increasing above last. */
int tern__fr_seqlist_read(tern__rbuf *body, tern__fr_seqlist *f);
int tern__fr_u64_read(tern__rbuf *body, uint64_t *v);
int tern__fr_notice_ack_read(tern__rbuf *body, uint64_t *kind, uint64_t *cmid);
/* As notice_ack_read; *has_code 1 with *code when the frame carries one. */
int tern__fr_notice_ack_code_read(tern__rbuf *body, uint64_t *kind, uint64_t *cmid, int *has_code,
                                  uint64_t *code);
int tern__fr_gack_read(tern__rbuf *body, uint8_t type, tern__fr_gack *f);
int tern__fr_greceipt_read(tern__rbuf *body, tern__fr_greceipt *f);
int tern__fr_close_read(tern__rbuf *body, uint64_t *reason);
/* Refuses a user name that is not valid, and `online` other than 0 or 1. */
int tern__fr_presence_read(tern__rbuf *body, tern__fr_presence *f);
void tern__fr_keepalive_write(tern__wbuf *w, const tern__fr_keepalive *f);
int tern__fr_keepalive_read(tern__rbuf *body, tern__fr_keepalive *f);
void tern__fr_probe_key_write(tern__wbuf *w, const tern__fr_probe_key *f);
/* Refuses an id or key of another length. */
int tern__fr_probe_key_read(tern__rbuf *body, tern__fr_probe_key *f);
/* RESET_TOKEN: token (string of 16 bytes). The reader refuses another length. */
void tern__fr_reset_token_write(tern__wbuf *w, const uint8_t token[16]);
int tern__fr_reset_token_read(tern__rbuf *body, uint8_t token[16]);

/* The chat channel of the conversation between users a and b: both
 * directions of one conversation share a channel (spec/wire.md). */
uint8_t tern__chat_channel(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);

/* 1 if `name` is a valid user name: 1..TERN_USER_MAX bytes, no control
 * characters, no spaces, no '@'. */
int tern__user_valid(const uint8_t *name, size_t len);
/* A group's wire name: '@' then a valid user name, 2..TERN_USER_MAX bytes in
 * all (so a group's own name is at most TERN_USER_MAX - 1). */
int tern__group_valid(const uint8_t *name, size_t len);

#endif
