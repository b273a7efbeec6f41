/*
 * NAT-timeout probe datagrams (spec/keepalive.md, "Probe datagrams"). A
 * client's probe socket sends REQUEST to the relay's UDP port; the relay
 * answers at once with ACK and, after `wait_ms` of silence, with REPLY. An
 * answer that arrives proves that the NAT kept the probe socket's mapping
 * for wait_ms.
 *
 * Every datagram is authenticated with a 32-byte probe key that the relay
 * handed to the client inside the sealed session (PROBE_KEY frame), and
 * names that key by an 8-byte id. REQUEST is padded to twice the size of
 * an answer, so the relay never sends more bytes than it received.
 *
 *   0      4    5    6          14         22       26
 *   +------+----+----+----------+----------+--------+----------+-------+
 *   |magic |ver |type| probe id | nonce    | wait_ms| padding  | tag   |
 *   |FFFF746B|01|    | 8 bytes  | 8 bytes  | BE u32 | REQ: 42  | 16    |
 *   +------+----+----+----------+----------+--------+----------+-------+
 *
 * The magic starts with 0xFFFF: as an ENet header that sets ENet's
 * "compressed" flag, and a tern host has no compressor, so ENet could never
 * accept such a datagram; the relay's link hook can take them safely.
 * Sans-I/O and stateless: no sockets, no clock.
 */
#ifndef TERN_PROBE_H
#define TERN_PROBE_H

#include <stddef.h>
#include <stdint.h>

enum {
  TERN__PROBE_REQUEST = 1, /* client -> relay: answer me after wait_ms */
  TERN__PROBE_ACK = 2,     /* relay -> client: got it; silence starts now */
  TERN__PROBE_REPLY = 3,   /* relay -> client: wait_ms of silence have passed */
};

#define TERN__PROBE_KEY_BYTES 32
#define TERN__PROBE_ID_BYTES 8
#define TERN__PROBE_TAG_BYTES 16
#define TERN__PROBE_HEAD_BYTES 26 /* magic .. wait_ms */
#define TERN__PROBE_ANSWER_BYTES (TERN__PROBE_HEAD_BYTES + TERN__PROBE_TAG_BYTES)  /* 42 */
#define TERN__PROBE_REQUEST_BYTES (2 * TERN__PROBE_ANSWER_BYTES)                  /* 84 */
#define TERN__PROBE_VERSION 1

typedef struct tern__probe_pkt {
  uint8_t type;
  uint8_t id[TERN__PROBE_ID_BYTES];
  uint64_t nonce;
  uint32_t wait_ms;
} tern__probe_pkt;

/* 1 if `data` starts like a probe datagram (magic), whatever its length or
 * tag: the relay's link hook consumes such datagrams. */
int tern__probe_looks_like(const uint8_t *data, size_t len);

/* Writes the datagram for *p (its size follows from p->type) into out,
 * tagged with `key`. Returns the size, or 0 if cap is too small or the type
 * is unknown. */
size_t tern__probe_write(const tern__probe_pkt *p, const uint8_t key[TERN__PROBE_KEY_BYTES],
                         uint8_t *out, size_t cap);

/* Parses the header of a datagram without checking its tag (the relay needs
 * the id to find the key). Returns 0, or TERN_EPROTO for a wrong magic,
 * version, type or size for the type. */
int tern__probe_parse(const uint8_t *data, size_t len, tern__probe_pkt *p);

/* Checks the tag of a datagram that parsed, in constant time. Returns 0 or
 * TERN_EDECRYPT. */
int tern__probe_verify(const uint8_t *data, size_t len, const uint8_t key[TERN__PROBE_KEY_BYTES]);

#endif
