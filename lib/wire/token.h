/*
 * Backend tokens (spec/tokens.md): the app's backend vouches, with an
 * Ed25519 signature, that a device key belongs to a user until a time. This
 * file owns the token's byte layout, its text form (base64url, no padding),
 * minting and the relay's checks. Sans-I/O: time and keys are arguments;
 * nothing here reads a clock, a file or the random source. May include
 * tern.h and libsodium only.
 */
#ifndef TERN_TOKEN_H
#define TERN_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "tern/tern.h"

#define TERN__TOKEN_VERSION 1
#define TERN__TOKEN_ID_BYTES 16
#define TERN__TOKEN_SIG_BYTES 64
/* version, user length, user (1..64), device key, expiry, id, signature. */
#define TERN__TOKEN_FIXED (1 + 1 + TERN_KEY_BYTES + 8 + TERN__TOKEN_ID_BYTES + TERN__TOKEN_SIG_BYTES)
#define TERN__TOKEN_MIN (TERN__TOKEN_FIXED + 1)
#define TERN__TOKEN_MAX (TERN__TOKEN_FIXED + TERN_USER_MAX)

/* The signed message starts with these 12 bytes (no NUL), so that a
 * signature by the backend's key over anything else is never a token. */
#define TERN__TOKEN_CONTEXT "tern/token/1"
#define TERN__TOKEN_CONTEXT_LEN 12

/* A token's fields. `user` is NUL-terminated. */
typedef struct tern__token {
  uint8_t version;
  char user[TERN_USER_MAX + 1];
  size_t user_len;
  uint8_t device_key[TERN_KEY_BYTES];
  uint64_t expiry_s; /* Unix seconds; the token is expired from this second on */
  uint8_t id[TERN__TOKEN_ID_BYTES];
  uint8_t sig[TERN__TOKEN_SIG_BYTES];
} tern__token;

/* Writes the token of `t` (its user, device_key, expiry_s, id; version and
 * sig are set here) signed with the Ed25519 secret key `sk` (libsodium's
 * 64-byte form: seed then public key) into out[cap]; *len gets its length.
 * Returns 0, TERN_EINVAL (user not a valid name), TERN_EBUFSIZE. */
int tern__token_mint(tern__token *t, const uint8_t sk[64], uint8_t *out, size_t cap, size_t *len);

/* Reads a token's fields without checking its signature. Returns 0 or
 * TERN_ETOKENINVALID (wrong length, version other than 1, user name not
 * valid); on failure *t is zeroed. */
int tern__token_parse(const uint8_t *p, size_t len, tern__token *t);

/* The relay's checks, in the order of spec/tokens.md §4: the token parses
 * and its signature verifies with `backend_pk` (TERN_ETOKENINVALID); it
 * names `device_key` and, when `user` is neither NULL nor "", that user
 * (TERN_ETOKENKEY); `now_s` (Unix seconds) is before its expiry
 * (TERN_ETOKENEXPIRED). Revocation is the caller's (it owns the list). On
 * success *t (may be NULL) gets the fields. Returns 0 or one of those. */
int tern__token_verify(const uint8_t *p, size_t len, const uint8_t backend_pk[32],
                       const uint8_t device_key[TERN_KEY_BYTES], const char *user, uint64_t now_s,
                       tern__token *t);

/* Text form: base64url without padding (RFC 4648 §5). to_text needs
 * cap >= TERN_TOKEN_TEXT_MAX; from_text ignores whitespace before and after
 * and refuses anything else that is not the canonical encoding. */
int tern__token_to_text(const uint8_t *p, size_t len, char *out, size_t cap);
int tern__token_from_text(const char *text, uint8_t out[TERN__TOKEN_MAX], size_t *len);

#endif
