/*
 * libFuzzer target for backend tokens (lib/wire/token.c, spec/tokens.md).
 *
 * The input is read three ways:
 *   - as a token's bytes: a token that parses has exactly the length its
 *     user length gives and a valid user name, and minting its fields again
 *     with the fixed backend key gives the same bytes before the signature;
 *     it verifies only if those bytes are a token that key signed (so, with
 *     the signature of a fresh mint, and never with the input's own unless
 *     the input is that mint);
 *   - as a token's text form: text that decodes is the canonical encoding
 *     of what it decodes to (base64url, no padding, no spare bits), up to
 *     whitespace around it;
 *   - as fields of a token minted with the fixed key, then one byte
 *     changed at a position and to a value from the input: the changed
 *     token is refused (TERN_ETOKENINVALID) unless the change is none.
 * The relay's time is drawn from the input too. It found that libsodium
 * 1.0.18's base64 decoder takes some bytes above 0x7f as letters.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "wire/frame.h"
#include "wire/token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t pk[32], sk[64];

static void setup(void) {
  static int done;
  if (done) return;
  if (sodium_init() < 0) abort();
  /* spec/tokens.md's backend seed, so that the seed corpus's example
   * (seeds/fuzz_token) is a token this key signed. */
  uint8_t seed[32];
  for (int i = 0; i < 32; i++) seed[i] = (uint8_t)(0x81 + i);
  crypto_sign_seed_keypair(pk, sk, seed);
  done = 1;
}

static uint64_t u64(const uint8_t *p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n && i < 8; i++) v = (v << 8) | p[i];
  return v;
}

static void as_bytes(const uint8_t *data, size_t size) {
  tern__token t;
  uint64_t now = size >= 8 ? u64(data + size - 8, 8) : 0;
  if (tern__token_parse(data, size, &t) != 0) {
    if (tern__token_verify(data, size, pk, t.device_key, NULL, now, NULL) != TERN_ETOKENINVALID) abort();
    return;
  }
  if (size != TERN__TOKEN_FIXED + t.user_len) abort();
  if (!tern__user_valid((const uint8_t *)t.user, t.user_len)) abort();
  tern__token again = t;
  uint8_t out[TERN__TOKEN_MAX];
  size_t n = 0;
  if (tern__token_mint(&again, sk, out, sizeof(out), &n) != 0 || n != size) abort();
  if (memcmp(out, data, size - TERN__TOKEN_SIG_BYTES) != 0) abort();
  int rc = tern__token_verify(data, size, pk, t.device_key, t.user, now, NULL);
  int same = memcmp(out, data, size) == 0; /* Ed25519 signatures are deterministic */
  if (same && rc != 0 && rc != TERN_ETOKENEXPIRED) abort();
  if (!same && rc != TERN_ETOKENINVALID) abort();
  if (same && (now >= t.expiry_s) != (rc == TERN_ETOKENEXPIRED)) abort();
}

static void as_text(const uint8_t *data, size_t size) {
  char text[TERN_TOKEN_TEXT_MAX + 16];
  if (size >= sizeof(text)) return;
  memcpy(text, data, size);
  text[size] = 0;
  uint8_t bin[TERN__TOKEN_MAX];
  size_t n = 0;
  if (tern__token_from_text(text, bin, &n) != 0) return;
  char back[TERN_TOKEN_TEXT_MAX];
  if (tern__token_to_text(bin, n, back, sizeof(back)) != 0) abort();
  const char *p = text + strspn(text, " \t\r\n");
  if (strncmp(p, back, strlen(back)) != 0) abort();
  const char *rest = p + strlen(back);
  if (strspn(rest, " \t\r\n") != strlen(rest)) abort();
}

static void as_mutation(const uint8_t *data, size_t size) {
  if (size < 4) return;
  tern__token t = {.expiry_s = u64(data, size)};
  size_t ulen = 1 + data[0] % TERN_USER_MAX;
  for (size_t i = 0; i < ulen; i++) t.user[i] = (char)('a' + (data[(i + 1) % size] % 26));
  for (size_t i = 0; i < 32; i++) t.device_key[i] = data[(i + 2) % size];
  for (size_t i = 0; i < 16; i++) t.id[i] = data[(i + 3) % size];
  uint8_t tok[TERN__TOKEN_MAX];
  size_t n = 0;
  if (tern__token_mint(&t, sk, tok, sizeof(tok), &n) != 0) abort();
  size_t at = data[1] % n;
  uint8_t was = tok[at];
  tok[at] = data[2];
  int rc = tern__token_verify(tok, n, pk, t.device_key, NULL, 0, NULL);
  if (tok[at] == was && rc != 0 && rc != TERN_ETOKENEXPIRED) abort();
  if (tok[at] != was && rc != TERN_ETOKENINVALID) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup();
  as_bytes(data, size);
  as_text(data, size);
  as_mutation(data, size);
  return 0;
}
