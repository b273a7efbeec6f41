/*
 * Noise protocol framework, revision 34: the CipherState, SymmetricState and
 * HandshakeState of §5 for 25519 / ChaChaPoly / BLAKE2b and the patterns NK,
 * IK, XX and IKpsk2. Sans-I/O: every key, including the ephemeral one, comes
 * from the caller.
 */
#include "wire/noise.h"

#include <string.h>

#include <sodium.h>

#include "tern/tern.h"

#define BLAKE2B_BLOCKLEN 128

/* --------------------------------------------------------------- HMAC, HKDF */

void tern__hmac_blake2b(const uint8_t *key, size_t key_len, const uint8_t *data, size_t data_len,
                        uint8_t out[TERN__NOISE_HASHLEN]) {
  uint8_t k0[BLAKE2B_BLOCKLEN] = {0};
  uint8_t pad[BLAKE2B_BLOCKLEN];
  uint8_t inner[TERN__NOISE_HASHLEN];
  crypto_generichash_state st;

  /* RFC 2104: a key longer than the block is hashed first; a shorter one is
   * zero-padded to the block. */
  if (key_len > BLAKE2B_BLOCKLEN)
    crypto_generichash(k0, TERN__NOISE_HASHLEN, key, key_len, NULL, 0);
  else if (key_len > 0)
    memcpy(k0, key, key_len);

  for (size_t i = 0; i < sizeof pad; i++) pad[i] = k0[i] ^ 0x36;
  crypto_generichash_init(&st, NULL, 0, TERN__NOISE_HASHLEN);
  crypto_generichash_update(&st, pad, sizeof pad);
  crypto_generichash_update(&st, data, data_len);
  crypto_generichash_final(&st, inner, sizeof inner);

  for (size_t i = 0; i < sizeof pad; i++) pad[i] = k0[i] ^ 0x5c;
  crypto_generichash_init(&st, NULL, 0, TERN__NOISE_HASHLEN);
  crypto_generichash_update(&st, pad, sizeof pad);
  crypto_generichash_update(&st, inner, sizeof inner);
  crypto_generichash_final(&st, out, TERN__NOISE_HASHLEN);

  sodium_memzero(k0, sizeof k0);
  sodium_memzero(pad, sizeof pad);
  sodium_memzero(inner, sizeof inner);
  sodium_memzero(&st, sizeof st);
}

void tern__noise_hkdf(const uint8_t ck[TERN__NOISE_HASHLEN], const uint8_t *ikm, size_t ikm_len,
                      uint8_t out1[TERN__NOISE_HASHLEN], uint8_t out2[TERN__NOISE_HASHLEN],
                      uint8_t out3[TERN__NOISE_HASHLEN]) {
  uint8_t temp_key[TERN__NOISE_HASHLEN];
  uint8_t buf[TERN__NOISE_HASHLEN + 1];

  tern__hmac_blake2b(ck, TERN__NOISE_HASHLEN, ikm, ikm_len, temp_key);
  buf[0] = 0x01;
  tern__hmac_blake2b(temp_key, sizeof temp_key, buf, 1, out1);
  memcpy(buf, out1, TERN__NOISE_HASHLEN);
  buf[TERN__NOISE_HASHLEN] = 0x02;
  tern__hmac_blake2b(temp_key, sizeof temp_key, buf, sizeof buf, out2);
  if (out3) {
    memcpy(buf, out2, TERN__NOISE_HASHLEN);
    buf[TERN__NOISE_HASHLEN] = 0x03;
    tern__hmac_blake2b(temp_key, sizeof temp_key, buf, sizeof buf, out3);
  }
  sodium_memzero(temp_key, sizeof temp_key);
  sodium_memzero(buf, sizeof buf);
}

/* ------------------------------------------------------------------- AEAD */

static void make_nonce(uint8_t nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES], uint64_t n) {
  /* §12.3: 32 bits of zeros, then the counter little-endian. */
  memset(nonce, 0, 4);
  for (int i = 0; i < 8; i++) nonce[4 + i] = (uint8_t)(n >> (8 * i));
}

int tern__aead_seal(const uint8_t key[TERN__NOISE_KEYLEN], uint64_t n, const uint8_t *ad,
                    size_t ad_len, const uint8_t *pt, size_t len, uint8_t *out) {
  uint8_t nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES];
  unsigned long long clen = 0;

  if (!key || !out || (!pt && len > 0) || (!ad && ad_len > 0)) return TERN_EINVAL;
  if (n == UINT64_MAX) return TERN_ENONCE;
  if (len > crypto_aead_chacha20poly1305_ietf_MESSAGEBYTES_MAX) return TERN_ETOOBIG;
  make_nonce(nonce, n);
  crypto_aead_chacha20poly1305_ietf_encrypt(out, &clen, pt, len, ad, ad_len, NULL, nonce, key);
  return 0;
}

int tern__aead_open(const uint8_t key[TERN__NOISE_KEYLEN], uint64_t n, const uint8_t *ad,
                    size_t ad_len, const uint8_t *ct, size_t len, uint8_t *out) {
  uint8_t nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES];
  uint8_t dummy[1];
  unsigned long long mlen = 0;

  if (!key || !ct || (!out && len > TERN__NOISE_TAGLEN) || (!ad && ad_len > 0)) return TERN_EINVAL;
  if (len < TERN__NOISE_TAGLEN) return TERN_EPROTO;
  if (n == UINT64_MAX) return TERN_ENONCE;
  make_nonce(nonce, n);
  /* libsodium wants a real pointer even for an empty plaintext. */
  uint8_t *dst = out ? out : dummy;
  if (crypto_aead_chacha20poly1305_ietf_decrypt(dst, &mlen, NULL, ct, len, ad, ad_len, nonce, key) !=
      0) {
    /* Never leave unauthenticated plaintext behind. */
    sodium_memzero(dst, out ? len - TERN__NOISE_TAGLEN : 0);
    return TERN_EDECRYPT;
  }
  return 0;
}

/* ------------------------------------------------------------ CipherState */

/* EncryptWithAd (seal) and DecryptWithAd (open). A cipher without a key
 * passes the text through, as §5.1 says; only the handshake relies on
 * that. The nonce advances only when the operation succeeds: for
 * DecryptWithAd, only when authentication does. */
static int cipher_apply(tern__noise_cipher *c, int seal, const uint8_t *ad, size_t ad_len,
                        const uint8_t *in, size_t len, uint8_t *out) {
  if (!c->has_key) {
    if (len > 0) memmove(out, in, len);
    return 0;
  }
  int rc = seal ? tern__aead_seal(c->k, c->n, ad, ad_len, in, len, out)
                : tern__aead_open(c->k, c->n, ad, ad_len, in, len, out);
  if (rc == 0) c->n++;
  return rc;
}

static int cipher_encrypt(tern__noise_cipher *c, const uint8_t *ad, size_t ad_len,
                          const uint8_t *pt, size_t len, uint8_t *out) {
  return cipher_apply(c, 1, ad, ad_len, pt, len, out);
}

static int cipher_decrypt(tern__noise_cipher *c, const uint8_t *ad, size_t ad_len,
                          const uint8_t *ct, size_t len, uint8_t *out) {
  return cipher_apply(c, 0, ad, ad_len, ct, len, out);
}

static void cipher_init_key(tern__noise_cipher *c, const uint8_t *key) {
  memcpy(c->k, key, TERN__NOISE_KEYLEN);
  c->n = 0;
  c->has_key = 1;
}

int tern__noise_encrypt(tern__noise_cipher *c, const uint8_t *ad, size_t ad_len,
                        const uint8_t *pt, size_t len, uint8_t *out, size_t cap, size_t *out_len) {
  if (out_len) *out_len = 0;
  if (!c || !out_len || !out || (!pt && len > 0) || (!ad && ad_len > 0)) return TERN_EINVAL;
  /* A transport cipher without a key would send plaintext: refuse. */
  if (!c->has_key) return TERN_EINVAL;
  if (len > TERN__NOISE_MAX_MSG - TERN__NOISE_TAGLEN) return TERN_ETOOBIG;
  if (cap < len + TERN__NOISE_TAGLEN) return TERN_EBUFSIZE;
  int rc = cipher_encrypt(c, ad, ad_len, pt, len, out);
  if (rc == 0) *out_len = len + TERN__NOISE_TAGLEN;
  return rc;
}

int tern__noise_decrypt(tern__noise_cipher *c, const uint8_t *ad, size_t ad_len,
                        const uint8_t *ct, size_t len, uint8_t *out, size_t cap, size_t *out_len) {
  if (out_len) *out_len = 0;
  if (!c || !out_len || (!ct && len > 0) || (!ad && ad_len > 0)) return TERN_EINVAL;
  if (!c->has_key) return TERN_EINVAL;
  if (len > TERN__NOISE_MAX_MSG) return TERN_ETOOBIG;
  if (len < TERN__NOISE_TAGLEN) return TERN_EPROTO;
  if (cap < len - TERN__NOISE_TAGLEN) return TERN_EBUFSIZE;
  if (!out && len > TERN__NOISE_TAGLEN) return TERN_EINVAL;
  int rc = cipher_decrypt(c, ad, ad_len, ct, len, out);
  if (rc == 0) *out_len = len - TERN__NOISE_TAGLEN;
  return rc;
}

/* -------------------------------------------------------- SymmetricState */

static void mix_hash(tern__noise_hs *hs, const uint8_t *data, size_t len) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, NULL, 0, TERN__NOISE_HASHLEN);
  crypto_generichash_update(&st, hs->h, TERN__NOISE_HASHLEN);
  crypto_generichash_update(&st, data, len);
  crypto_generichash_final(&st, hs->h, TERN__NOISE_HASHLEN);
  sodium_memzero(&st, sizeof st);
}

static void mix_key(tern__noise_hs *hs, const uint8_t *ikm, size_t ikm_len) {
  uint8_t temp_k[TERN__NOISE_HASHLEN];
  tern__noise_hkdf(hs->ck, ikm, ikm_len, hs->ck, temp_k, NULL);
  cipher_init_key(&hs->cs, temp_k); /* truncated to KEYLEN (§5.2) */
  sodium_memzero(temp_k, sizeof temp_k);
}

static void mix_key_and_hash(tern__noise_hs *hs, const uint8_t *ikm, size_t ikm_len) {
  uint8_t temp_h[TERN__NOISE_HASHLEN], temp_k[TERN__NOISE_HASHLEN];
  tern__noise_hkdf(hs->ck, ikm, ikm_len, hs->ck, temp_h, temp_k);
  mix_hash(hs, temp_h, sizeof temp_h);
  cipher_init_key(&hs->cs, temp_k);
  sodium_memzero(temp_h, sizeof temp_h);
  sodium_memzero(temp_k, sizeof temp_k);
}

/* EncryptAndHash into out; the caller has checked the room (len, plus the tag
 * when the cipher has a key). */
static int encrypt_and_hash(tern__noise_hs *hs, const uint8_t *pt, size_t len, uint8_t *out,
                            size_t *written) {
  size_t clen = len + (hs->cs.has_key ? TERN__NOISE_TAGLEN : 0);
  int rc = cipher_encrypt(&hs->cs, hs->h, TERN__NOISE_HASHLEN, pt, len, out);
  if (rc != 0) return rc;
  mix_hash(hs, out, clen);
  *written = clen;
  return 0;
}

/* DecryptAndHash of ct[0..clen) into out; the caller has checked clen covers
 * the tag and out has room for the plaintext. */
static int decrypt_and_hash(tern__noise_hs *hs, const uint8_t *ct, size_t clen, uint8_t *out) {
  int rc = cipher_decrypt(&hs->cs, hs->h, TERN__NOISE_HASHLEN, ct, clen, out);
  if (rc != 0) return rc;
  mix_hash(hs, ct, clen);
  return 0;
}

/* --------------------------------------------------------------- patterns */

enum token { T_END = 0, T_E, T_S, T_EE, T_ES, T_SE, T_SS, T_PSK };

#define MAX_MSGS 3
#define MAX_TOKENS 6

typedef struct pattern_def {
  const char *name;
  int n_msgs;
  /* Every supported pattern with a pre-message has the responder's static
   * key (`<- s`) as its only one. */
  int resp_static_premsg;
  int psk;
  /* Which keys each role must supply, indexed [hs->initiator][k] with k 0
   * for the local static key and 1 for the remote static (pre-message) key;
   * the responder's row comes first. */
  int needs[2][2];
  uint8_t msgs[MAX_MSGS][MAX_TOKENS];
} pattern_def;

static const pattern_def patterns[] = {
  [TERN__NOISE_NK] = {"Noise_NK_25519_ChaChaPoly_BLAKE2b", 2, 1, 0, {{1, 0}, {0, 1}},
                      {{T_E, T_ES}, {T_E, T_EE}}},
  [TERN__NOISE_IK] = {"Noise_IK_25519_ChaChaPoly_BLAKE2b", 2, 1, 0, {{1, 0}, {1, 1}},
                      {{T_E, T_ES, T_S, T_SS}, {T_E, T_EE, T_SE}}},
  [TERN__NOISE_XX] = {"Noise_XX_25519_ChaChaPoly_BLAKE2b", 3, 0, 0, {{1, 0}, {1, 0}},
                      {{T_E}, {T_E, T_EE, T_S, T_ES}, {T_S, T_SE}}},
  [TERN__NOISE_IKPSK2] = {"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b", 2, 1, 1, {{1, 0}, {1, 1}},
                          {{T_E, T_ES, T_S, T_SS}, {T_E, T_EE, T_SE, T_PSK}}},
};

static int valid_pattern(tern__noise_pattern p) {
  return p == TERN__NOISE_NK || p == TERN__NOISE_IK || p == TERN__NOISE_XX ||
         p == TERN__NOISE_IKPSK2;
}

/* -------------------------------------------------------- HandshakeState */

void tern__noise_hs_wipe(tern__noise_hs *hs) {
  if (hs) sodium_memzero(hs, sizeof *hs);
}

/* Kills the state after an error: every secret goes, only the identity of
 * the handshake and the failed flag stay, so nothing can continue it. */
static int fail(tern__noise_hs *hs, int rc) {
  tern__noise_pattern pattern = hs->pattern;
  int initiator = hs->initiator, msg_index = hs->msg_index;
  tern__noise_hs_wipe(hs);
  hs->pattern = pattern;
  hs->initiator = initiator;
  hs->msg_index = msg_index;
  hs->failed = 1;
  return rc;
}

int tern__noise_hs_init(tern__noise_hs *hs, tern__noise_pattern pattern, int initiator,
                        const uint8_t *prologue, size_t prologue_len,
                        const uint8_t *s_priv, const uint8_t *e_priv,
                        const uint8_t *rs_pub, const uint8_t *psk) {
  if (!hs) return TERN_EINVAL;
  tern__noise_hs_wipe(hs);
  hs->pattern = pattern;
  hs->initiator = initiator ? 1 : 0;
  if (!valid_pattern(pattern) || (!prologue && prologue_len > 0)) return fail(hs, TERN_EINVAL);

  const pattern_def *p = &patterns[pattern];
  int role = hs->initiator;
  /* A key the pattern needs must be there, and one it would never use is
   * refused too: a caller passing rs_pub to an XX responder believes it has
   * pinned a key, and it has not. */
  if (!e_priv || !s_priv != !p->needs[role][0] || !rs_pub != !p->needs[role][1] ||
      !psk != !p->psk)
    return fail(hs, TERN_EINVAL);

  memcpy(hs->e_priv, e_priv, TERN__NOISE_DHLEN);
  if (crypto_scalarmult_base(hs->e_pub, hs->e_priv) != 0) return fail(hs, TERN_EINVAL);
  hs->has_e = 1;
  if (s_priv) {
    memcpy(hs->s_priv, s_priv, TERN__NOISE_DHLEN);
    if (crypto_scalarmult_base(hs->s_pub, hs->s_priv) != 0) return fail(hs, TERN_EINVAL);
    hs->has_s = 1;
  }
  if (rs_pub) {
    memcpy(hs->rs, rs_pub, TERN__NOISE_DHLEN);
    hs->has_rs = 1;
  }
  if (psk) {
    memcpy(hs->psk, psk, TERN__NOISE_PSKLEN);
    hs->has_psk = 1;
  }

  /* InitializeSymmetric (§5.2): a name of at most HASHLEN bytes is
   * zero-padded, not hashed. All supported names are that short. */
  size_t name_len = strlen(p->name);
  memset(hs->h, 0, TERN__NOISE_HASHLEN);
  memcpy(hs->h, p->name, name_len);
  memcpy(hs->ck, hs->h, TERN__NOISE_HASHLEN);
  mix_hash(hs, prologue, prologue_len);
  if (p->resp_static_premsg) mix_hash(hs, role ? hs->rs : hs->s_pub, TERN__NOISE_DHLEN);
  return 0;
}

int tern__noise_hs_finished(const tern__noise_hs *hs) {
  return hs && valid_pattern(hs->pattern) && !hs->failed &&
         hs->msg_index >= patterns[hs->pattern].n_msgs;
}

/* Whether it is this side's turn to write (want_write) or read the next
 * message. */
static int our_turn(const tern__noise_hs *hs, int want_write) {
  if (!valid_pattern(hs->pattern) || hs->failed) return 0;
  if (hs->msg_index >= patterns[hs->pattern].n_msgs) return 0;
  int initiator_writes = (hs->msg_index % 2) == 0;
  return (initiator_writes == (hs->initiator != 0)) == (want_write != 0);
}

/* The DH of a two-letter token, from this side's point of view: "es" is the
 * initiator's ephemeral with the responder's static. */
static int token_dh(tern__noise_hs *hs, int token) {
  const uint8_t *priv, *pub;
  int init = hs->initiator;
  switch (token) {
  case T_EE: priv = hs->e_priv; pub = hs->re; break;
  case T_ES: priv = init ? hs->e_priv : hs->s_priv; pub = init ? hs->rs : hs->re; break;
  case T_SE: priv = init ? hs->s_priv : hs->e_priv; pub = init ? hs->re : hs->rs; break;
  default: priv = hs->s_priv; pub = hs->rs; break; /* T_SS */
  }
  uint8_t shared[TERN__NOISE_DHLEN];
  /* An all-zero result means a low-order point: the peer chose a key that
   * would make the secret predictable. */
  if (crypto_scalarmult(shared, priv, pub) != 0) {
    sodium_memzero(shared, sizeof shared);
    return TERN_EDECRYPT;
  }
  mix_key(hs, shared, sizeof shared);
  sodium_memzero(shared, sizeof shared);
  return 0;
}

/* The length of the next message this side writes, given the payload. */
static size_t message_len(const tern__noise_hs *hs, const uint8_t *tokens, size_t payload_len) {
  int has_key = hs->cs.has_key;
  size_t len = 0;
  for (int i = 0; i < MAX_TOKENS && tokens[i] != T_END; i++) {
    if (tokens[i] == T_E) {
      len += TERN__NOISE_DHLEN;
      if (patterns[hs->pattern].psk) has_key = 1;
    } else if (tokens[i] == T_S) {
      len += TERN__NOISE_DHLEN + (has_key ? TERN__NOISE_TAGLEN : 0);
    } else {
      has_key = 1;
    }
  }
  return len + payload_len + (has_key ? TERN__NOISE_TAGLEN : 0);
}

/* The tokens both sides process alike: psk (§9) and the DH tokens. */
static int mix_token(tern__noise_hs *hs, uint8_t token) {
  if (token != T_PSK) return token_dh(hs, token);
  mix_key_and_hash(hs, hs->psk, TERN__NOISE_PSKLEN);
  return 0;
}

int tern__noise_write_message(tern__noise_hs *hs, const uint8_t *payload, size_t payload_len,
                              uint8_t *out, size_t cap, size_t *out_len) {
  if (out_len) *out_len = 0;
  if (!hs) return TERN_EINVAL;
  if (!out_len || !out || (!payload && payload_len > 0) || !our_turn(hs, 1))
    return fail(hs, TERN_EINVAL);

  const pattern_def *p = &patterns[hs->pattern];
  const uint8_t *tokens = p->msgs[hs->msg_index];
  if (payload_len > TERN__NOISE_MAX_MSG) return fail(hs, TERN_ETOOBIG);
  size_t need = message_len(hs, tokens, payload_len);
  if (need > TERN__NOISE_MAX_MSG) return fail(hs, TERN_ETOOBIG);
  if (need > cap) return fail(hs, TERN_EBUFSIZE);

  size_t pos = 0, n;
  int rc;
  for (int i = 0; i < MAX_TOKENS && tokens[i] != T_END; i++) {
    switch (tokens[i]) {
    case T_E:
      memcpy(out + pos, hs->e_pub, TERN__NOISE_DHLEN);
      pos += TERN__NOISE_DHLEN;
      mix_hash(hs, hs->e_pub, TERN__NOISE_DHLEN);
      /* §9: with a PSK, the ephemeral key also feeds the key. */
      if (p->psk) mix_key(hs, hs->e_pub, TERN__NOISE_DHLEN);
      break;
    case T_S:
      rc = encrypt_and_hash(hs, hs->s_pub, TERN__NOISE_DHLEN, out + pos, &n);
      if (rc != 0) return fail(hs, rc);
      pos += n;
      break;
    default: /* psk and the DH tokens: the same on both sides */
      rc = mix_token(hs, tokens[i]);
      if (rc != 0) return fail(hs, rc);
      break;
    }
  }
  rc = encrypt_and_hash(hs, payload, payload_len, out + pos, &n);
  if (rc != 0) return fail(hs, rc);
  pos += n;
  hs->msg_index++;
  *out_len = pos;
  return 0;
}

int tern__noise_read_message(tern__noise_hs *hs, const uint8_t *msg, size_t msg_len,
                             uint8_t *payload, size_t cap, size_t *payload_len) {
  if (payload_len) *payload_len = 0;
  if (!hs) return TERN_EINVAL;
  if (!payload_len || (!msg && msg_len > 0) || (!payload && cap > 0) || !our_turn(hs, 0))
    return fail(hs, TERN_EINVAL);
  if (msg_len > TERN__NOISE_MAX_MSG) return fail(hs, TERN_ETOOBIG);

  const pattern_def *p = &patterns[hs->pattern];
  const uint8_t *tokens = p->msgs[hs->msg_index];
  size_t pos = 0;
  int rc;
  for (int i = 0; i < MAX_TOKENS && tokens[i] != T_END; i++) {
    size_t left = msg_len - pos;
    switch (tokens[i]) {
    case T_E:
      if (left < TERN__NOISE_DHLEN) return fail(hs, TERN_EPROTO);
      memcpy(hs->re, msg + pos, TERN__NOISE_DHLEN);
      hs->has_re = 1;
      pos += TERN__NOISE_DHLEN;
      mix_hash(hs, hs->re, TERN__NOISE_DHLEN);
      if (p->psk) mix_key(hs, hs->re, TERN__NOISE_DHLEN);
      break;
    case T_S: {
      size_t clen = TERN__NOISE_DHLEN + (hs->cs.has_key ? TERN__NOISE_TAGLEN : 0);
      if (left < clen) return fail(hs, TERN_EPROTO);
      rc = decrypt_and_hash(hs, msg + pos, clen, hs->rs);
      if (rc != 0) return fail(hs, rc);
      hs->has_rs = 1;
      pos += clen;
      break;
    }
    default: /* psk and the DH tokens: the same on both sides */
      rc = mix_token(hs, tokens[i]);
      if (rc != 0) return fail(hs, rc);
      break;
    }
  }

  size_t clen = msg_len - pos;
  size_t tag = hs->cs.has_key ? TERN__NOISE_TAGLEN : 0;
  if (clen < tag) return fail(hs, TERN_EPROTO);
  size_t plen = clen - tag;
  if (plen > cap) return fail(hs, TERN_EBUFSIZE);
  uint8_t dummy[1];
  rc = decrypt_and_hash(hs, msg + pos, clen, payload ? payload : dummy);
  if (rc != 0) return fail(hs, rc);
  hs->msg_index++;
  *payload_len = plen;
  return 0;
}

int tern__noise_split(tern__noise_hs *hs, tern__noise_cipher *c1, tern__noise_cipher *c2,
                      uint8_t h_out[TERN__NOISE_HASHLEN]) {
  if (c1) sodium_memzero(c1, sizeof *c1);
  if (c2) sodium_memzero(c2, sizeof *c2);
  if (h_out) memset(h_out, 0, TERN__NOISE_HASHLEN);
  if (!hs || !c1 || !c2 || !tern__noise_hs_finished(hs)) return TERN_EINVAL;

  uint8_t k1[TERN__NOISE_HASHLEN], k2[TERN__NOISE_HASHLEN];
  tern__noise_hkdf(hs->ck, NULL, 0, k1, k2, NULL);
  cipher_init_key(c1, k1);
  cipher_init_key(c2, k2);
  if (h_out) memcpy(h_out, hs->h, TERN__NOISE_HASHLEN);
  sodium_memzero(k1, sizeof k1);
  sodium_memzero(k2, sizeof k2);
  tern__noise_hs_wipe(hs);
  return 0;
}
