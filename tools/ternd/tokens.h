/*
 * ternd's side of backend tokens (spec/tokens.md): the backend's public key
 * (--token-key, 64 hex digits or a file holding them) and the revocation
 * list (--revoked FILE), which the relay asks about at each token
 * handshake and after each reload.
 *
 * Revocation file format, one entry a line; '#' starts a comment; blank
 * lines ignored:
 *
 *   <token id, 32 hex digits>       that token alone is refused
 *   <device key, 64 hex digits>     every token for that device key is
 *
 * Owns: the list's arrays (freed by revlist_free).
 */
#ifndef TERND_TOKENS_H
#define TERND_TOKENS_H

#include <stddef.h>
#include <stdint.h>

#include "tern/tern.h"

/* Reads the backend's Ed25519 public key from `arg`: 64 hex digits, or the
 * path of a file whose one key line is 64 hex digits or "token-public:
 * HEX" (tern-token keygen's file has one). A file holding the backend's
 * secret ("token-secret:") is refused: the relay needs the public half
 * only. Returns 0, or -1 with the reason in err. */
int ternd_token_key_load(const char *arg, uint8_t pk[32], char *err, size_t cap);

typedef struct revlist {
  uint8_t *ids;  /* nids token ids of TERN_TOKEN_ID_BYTES, sorted */
  size_t nids;
  uint8_t *keys; /* nkeys device keys of TERN_KEY_BYTES, sorted */
  size_t nkeys;
} revlist;

/* Loads a revocation file. Returns 0, or a TERN_E* code with the reason
 * (file and line) in err; *out is untouched then. */
int revlist_load(revlist *out, const char *path, char *err, size_t cap);
void revlist_free(revlist *r);

/* 1 if token `id` or `device_key` is on the list; a tern_relay_config
 * token_revoked callback with ctx a revlist. */
int revlist_has(void *ctx, const uint8_t id[TERN_TOKEN_ID_BYTES], const uint8_t device_key[TERN_KEY_BYTES]);

#endif
