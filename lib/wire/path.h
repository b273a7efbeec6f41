/*
 * Path datagrams (spec/wire.md §11): moving a live session to a new
 * address without a new handshake, as QUIC does (RFC 9000 §8.2, §9). They
 * travel outside ENet, next to it on the same socket, and all but HINT are
 * sealed under keys derived from the session's own (so only the two ends
 * of the session can make them):
 *
 *   CHALLENGE  client -> relay, from the new address: "this session is
 *              here now"; carries the client's challenge.
 *   RESPONSE   relay -> the new address: echoes the client's challenge
 *              (the client knows the relay heard it) and carries the
 *              relay's own challenge.
 *   CONFIRM    client -> relay, from the new address: echoes the relay's
 *              challenge, proving the client receives there. Only then
 *              does the relay move the session.
 *   HINT       relay -> an address it does not know that sent it an ENet
 *              datagram (a NAT that rebound): "if you are a session of
 *              mine, send a CHALLENGE". Unauthenticated, 6 bytes.
 *
 * Sans-I/O: no clock, no socket, no random source.
 */
#ifndef TERN_PATH_H
#define TERN_PATH_H

#include <stddef.h>
#include <stdint.h>

#define TERN__PATH_BYTES 54  /* CHALLENGE, RESPONSE and CONFIRM */
#define TERN__PATH_HINT_BYTES 6
#define TERN__PATH_ID_BYTES 8

enum {
  TERN__PATH_CHALLENGE = 1,
  TERN__PATH_RESPONSE = 2,
  TERN__PATH_CONFIRM = 3,
  TERN__PATH_HINT = 4,
};

/* What a session's two ends derive from its keys. */
typedef struct tern__path_keys {
  uint8_t id[TERN__PATH_ID_BYTES]; /* names the session in path datagrams */
  uint8_t c2s[32];                 /* seals CHALLENGE and CONFIRM */
  uint8_t s2c[32];                 /* seals RESPONSE */
} tern__path_keys;

/* From the session's client-to-relay and relay-to-client DATA keys. */
void tern__path_derive(const uint8_t c2s_key[32], const uint8_t s2c_key[32], tern__path_keys *out);

typedef struct tern__path_pkt {
  uint8_t type;
  uint8_t id[TERN__PATH_ID_BYTES];
  uint64_t counter;   /* per direction, from 1, increasing */
  uint8_t a[8];       /* CHALLENGE: the challenge; RESPONSE, CONFIRM: the echo */
  uint8_t b[8];       /* RESPONSE: the relay's challenge; else zero */
} tern__path_pkt;

/* 1 if data starts with the path magic (ENet could never accept it). */
int tern__path_looks_like(const uint8_t *data, size_t len);

/* Writes a sealed datagram (CHALLENGE, RESPONSE, CONFIRM) under `key` into
 * out[TERN__PATH_BYTES]. */
void tern__path_write(const tern__path_pkt *p, const uint8_t key[32], uint8_t out[TERN__PATH_BYTES]);

/* Reads the clear header of a sealed datagram (to find its session's key).
 * Returns 0, or TERN_EPROTO if it is not a well-formed one. */
int tern__path_peek(const uint8_t *data, size_t len, tern__path_pkt *p);

/* Checks the tag under `key`: 0, or TERN_EDECRYPT. */
int tern__path_open(const uint8_t *data, size_t len, const uint8_t key[32]);

void tern__path_write_hint(uint8_t out[TERN__PATH_HINT_BYTES]);
int tern__path_is_hint(const uint8_t *data, size_t len);

#endif
