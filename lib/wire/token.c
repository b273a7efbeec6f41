/*
 * Backend tokens: layout, text form, minting and the relay's checks
 * (spec/tokens.md), and the public tern_token_* calls that tools and C
 * backends use to mint and read them. Sans-I/O.
 */
#include "wire/token.h"

#include <sodium.h>
#include <string.h>

#include "base/abi.h"
#include "wire/frame.h"

/* Offsets after the variable-length user: key, expiry, id, signature. */
static size_t body_len(size_t user_len) { return 2 + user_len + TERN_KEY_BYTES + 8 + TERN__TOKEN_ID_BYTES; }

/* The signed message: context, then the token up to its signature. */
static void signed_message(const uint8_t *p, size_t n, uint8_t *msg, size_t *mlen) {
  memcpy(msg, TERN__TOKEN_CONTEXT, TERN__TOKEN_CONTEXT_LEN);
  memcpy(msg + TERN__TOKEN_CONTEXT_LEN, p, n);
  *mlen = TERN__TOKEN_CONTEXT_LEN + n;
}

int tern__token_mint(tern__token *t, const uint8_t sk[64], uint8_t *out, size_t cap, size_t *len) {
  *len = 0;
  t->user_len = strlen(t->user);
  if (!tern__user_valid((const uint8_t *)t->user, t->user_len)) return TERN_EINVAL;
  size_t n = body_len(t->user_len);
  if (cap < n + TERN__TOKEN_SIG_BYTES) return TERN_EBUFSIZE;
  t->version = TERN__TOKEN_VERSION;
  uint8_t *q = out;
  *q++ = t->version;
  *q++ = (uint8_t)t->user_len;
  memcpy(q, t->user, t->user_len);
  q += t->user_len;
  memcpy(q, t->device_key, TERN_KEY_BYTES);
  q += TERN_KEY_BYTES;
  for (int i = 7; i >= 0; i--) *q++ = (uint8_t)(t->expiry_s >> (8 * i)); /* big-endian */
  memcpy(q, t->id, TERN__TOKEN_ID_BYTES);
  uint8_t msg[TERN__TOKEN_CONTEXT_LEN + TERN__TOKEN_MAX];
  size_t mlen;
  signed_message(out, n, msg, &mlen);
  crypto_sign_detached(t->sig, NULL, msg, mlen, sk);
  memcpy(out + n, t->sig, TERN__TOKEN_SIG_BYTES);
  *len = n + TERN__TOKEN_SIG_BYTES;
  return 0;
}

int tern__token_parse(const uint8_t *p, size_t len, tern__token *t) {
  memset(t, 0, sizeof(*t));
  if (len < TERN__TOKEN_MIN || len > TERN__TOKEN_MAX || p[0] != TERN__TOKEN_VERSION) goto bad;
  size_t ulen = p[1];
  if (len != body_len(ulen) + TERN__TOKEN_SIG_BYTES || !tern__user_valid(p + 2, ulen)) goto bad;
  const uint8_t *q = p + 2;
  t->version = p[0];
  memcpy(t->user, q, ulen);
  t->user_len = ulen;
  q += ulen;
  memcpy(t->device_key, q, TERN_KEY_BYTES);
  q += TERN_KEY_BYTES;
  for (int i = 0; i < 8; i++) t->expiry_s = (t->expiry_s << 8) | *q++;
  memcpy(t->id, q, TERN__TOKEN_ID_BYTES);
  q += TERN__TOKEN_ID_BYTES;
  memcpy(t->sig, q, TERN__TOKEN_SIG_BYTES);
  return 0;
bad:
  memset(t, 0, sizeof(*t));
  return TERN_ETOKENINVALID;
}

int tern__token_verify(const uint8_t *p, size_t len, const uint8_t backend_pk[32],
                       const uint8_t device_key[TERN_KEY_BYTES], const char *user, uint64_t now_s,
                       tern__token *out) {
  tern__token t;
  int rc = tern__token_parse(p, len, &t);
  if (rc) goto done;
  uint8_t msg[TERN__TOKEN_CONTEXT_LEN + TERN__TOKEN_MAX];
  size_t mlen;
  signed_message(p, len - TERN__TOKEN_SIG_BYTES, msg, &mlen);
  /* Before anything the token says is believed: a forger learns nothing
   * from the answer about which of its other fields would pass. */
  if (crypto_sign_verify_detached(t.sig, msg, mlen, backend_pk) != 0) {
    rc = TERN_ETOKENINVALID;
    goto done;
  }
  if (sodium_memcmp(t.device_key, device_key, TERN_KEY_BYTES) != 0 ||
      (user && user[0] && strcmp(user, t.user) != 0)) {
    rc = TERN_ETOKENKEY;
    goto done;
  }
  if (now_s >= t.expiry_s) rc = TERN_ETOKENEXPIRED;
done:
  if (out) *out = t;
  return rc;
}

int tern__token_to_text(const uint8_t *p, size_t len, char *out, size_t cap) {
  if (cap < sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING)) {
    if (cap) out[0] = 0;
    return TERN_EBUFSIZE;
  }
  sodium_bin2base64(out, cap, p, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  return 0;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static int is_b64url(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

int tern__token_from_text(const char *text, uint8_t out[TERN__TOKEN_MAX], size_t *len) {
  *len = 0;
  while (is_space(*text)) text++;
  size_t n = strlen(text);
  while (n && is_space(text[n - 1])) n--;
  /* The alphabet is checked here: libsodium's decoder (1.0.18) takes some
   * bytes above 0x7f for letters, so "\xc9\xc9" + "11" decoded to three
   * bytes (found by tests/fuzz/fuzz_token.c). */
  for (size_t i = 0; i < n; i++)
    if (!is_b64url(text[i])) goto bad;
  const char *end = NULL;
  size_t got = 0;
  /* libsodium refuses padding and non-zero bits left over in the last
   * character (a second spelling of the same bytes); `end` must reach the
   * last character. */
  if (n == 0 || n > TERN_TOKEN_TEXT_MAX - 1 ||
      sodium_base642bin(out, TERN__TOKEN_MAX, text, n, NULL, &got, &end,
                        sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
      end != text + n)
    goto bad;
  *len = got;
  return 0;
bad:
  sodium_memzero(out, TERN__TOKEN_MAX);
  return TERN_ETOKENINVALID;
}

/* ------------------------------------------------------------ public API */

int tern_token_public_key(const uint8_t seed[32], uint8_t pk[32]) {
  if (sodium_init() < 0) return TERN_ECRYPTO;
  uint8_t sk[64];
  crypto_sign_seed_keypair(pk, sk, seed);
  sodium_memzero(sk, sizeof(sk));
  return 0;
}

int tern_token_mint(const uint8_t seed[32], const char *user, const uint8_t device_key[TERN_KEY_BYTES],
                    uint64_t expiry_s, const uint8_t id[TERN_TOKEN_ID_BYTES],
                    char out[TERN_TOKEN_TEXT_MAX]) {
  out[0] = 0;
  if (sodium_init() < 0) return TERN_ECRYPTO;
  tern__token t = {.expiry_s = expiry_s};
  size_t ulen = strlen(user);
  if (ulen > TERN_USER_MAX) return TERN_EINVAL;
  memcpy(t.user, user, ulen + 1);
  memcpy(t.device_key, device_key, TERN_KEY_BYTES);
  memcpy(t.id, id, TERN__TOKEN_ID_BYTES);
  uint8_t pk[32], sk[64], bin[TERN__TOKEN_MAX];
  crypto_sign_seed_keypair(pk, sk, seed);
  size_t n = 0;
  int rc = tern__token_mint(&t, sk, bin, sizeof(bin), &n);
  sodium_memzero(sk, sizeof(sk));
  if (rc) return rc;
  return tern__token_to_text(bin, n, out, TERN_TOKEN_TEXT_MAX);
}

int tern_token_decode_sized(const char *text, const uint8_t *backend_pk, tern_token_info *info,
                            size_t info_size) {
  tern_token_info full;
  memset(&full, 0, sizeof(full));
  uint8_t bin[TERN__TOKEN_MAX];
  size_t n = 0;
  tern__token t;
  int rc = sodium_init() < 0 ? TERN_ECRYPTO : tern__token_from_text(text, bin, &n);
  if (rc == 0) rc = tern__token_parse(bin, n, &t);
  if (rc == 0 && backend_pk) {
    /* The signature alone: binding and expiry are the caller's to judge. */
    rc = tern__token_verify(bin, n, backend_pk, t.device_key, NULL, 0, NULL);
    if (rc == TERN_ETOKENEXPIRED) rc = 0;
  }
  if (rc == 0) {
    memcpy(full.user, t.user, t.user_len + 1);
    memcpy(full.device_key, t.device_key, TERN_KEY_BYTES);
    full.expiry_s = t.expiry_s;
    memcpy(full.id, t.id, TERN__TOKEN_ID_BYTES);
  }
  tern__abi_out(info, info_size, &full, sizeof(full));
  return rc;
}
