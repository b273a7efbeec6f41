/*
 * Noise protocol framework (revision 34), 25519 / ChaChaPoly / BLAKE2b only,
 * sans-I/O: no clock, no socket, no random source. Ephemeral keys are passed
 * in by the caller (who draws them from its random callback, or from test
 * vectors).
 *
 * Patterns supported: NK, IK, XX, IKpsk2. tern itself uses IK; the others
 * exist so that the shared symmetric-state core is proven by more than one
 * pattern's vectors.
 */
#ifndef TERN_NOISE_H
#define TERN_NOISE_H

#include <stddef.h>
#include <stdint.h>

#define TERN__NOISE_DHLEN 32
#define TERN__NOISE_HASHLEN 64
#define TERN__NOISE_KEYLEN 32
#define TERN__NOISE_TAGLEN 16
#define TERN__NOISE_PSKLEN 32
/* The Noise spec's maximum message size. */
#define TERN__NOISE_MAX_MSG 65535

typedef enum tern__noise_pattern {
  TERN__NOISE_NK = 0,
  TERN__NOISE_IK = 1,
  TERN__NOISE_XX = 2,
  TERN__NOISE_IKPSK2 = 3,
} tern__noise_pattern;

/* A CipherState (Noise §5.1). `n` is the implicit nonce; n = 2^64-1 is
 * reserved, so encryption with it fails. */
typedef struct tern__noise_cipher {
  uint8_t k[TERN__NOISE_KEYLEN];
  uint64_t n;
  int has_key;
} tern__noise_cipher;

/* A HandshakeState (Noise §5.3), including its SymmetricState. The fields are
 * readable by the caller; only the functions below write them. */
typedef struct tern__noise_hs {
  tern__noise_pattern pattern;
  int initiator;            /* 1 for the initiator, 0 for the responder */
  int msg_index;            /* index of the next handshake message */
  int failed;               /* set after any error: the state is dead */
  uint8_t ck[TERN__NOISE_HASHLEN];
  uint8_t h[TERN__NOISE_HASHLEN];
  tern__noise_cipher cs;
  uint8_t s_priv[TERN__NOISE_DHLEN], s_pub[TERN__NOISE_DHLEN];
  uint8_t e_priv[TERN__NOISE_DHLEN], e_pub[TERN__NOISE_DHLEN];
  uint8_t rs[TERN__NOISE_DHLEN], re[TERN__NOISE_DHLEN];
  uint8_t psk[TERN__NOISE_PSKLEN];
  int has_s, has_e, has_rs, has_re, has_psk;
} tern__noise_hs;

/* Initialises `hs` for `pattern`. `s_priv` (local static private key),
 * `e_priv` (local ephemeral private key), `rs_pub` (remote static public key,
 * pre-message), `psk`: each must be NULL where the pattern does not use it
 * and present where it does; otherwise TERN_EINVAL (a key passed but never
 * used, such as rs_pub for an XX responder, would look pinned and not be).
 * The ephemeral key must be supplied by the caller (sans-I/O). Keys are
 * copied. Returns 0 or TERN_EINVAL (then hs->failed is set). */
int tern__noise_hs_init(tern__noise_hs *hs, tern__noise_pattern pattern, int initiator,
                        const uint8_t *prologue, size_t prologue_len,
                        const uint8_t *s_priv, const uint8_t *e_priv,
                        const uint8_t *rs_pub, const uint8_t *psk);

/* Writes the next handshake message carrying `payload` into out[0..cap).
 * *out_len receives its length. Returns 0, TERN_EBUFSIZE, TERN_EINVAL (not
 * our turn / handshake finished / state failed), TERN_ETOOBIG (over 65535),
 * TERN_EDECRYPT on a DH with a low-order point. On error the state is dead. */
int tern__noise_write_message(tern__noise_hs *hs, const uint8_t *payload, size_t payload_len,
                              uint8_t *out, size_t cap, size_t *out_len);

/* Reads the next handshake message, writing its payload into
 * payload[0..cap) and its length into *payload_len. Returns 0,
 * TERN_EPROTO (truncated), TERN_ETOOBIG (over 65535 bytes), TERN_EDECRYPT
 * (authentication failed, or a low-order public key), TERN_EBUFSIZE,
 * TERN_EINVAL (not our turn / finished). On error the state is dead and must
 * not be reused, and payload[] holds no unauthenticated plaintext. */
int tern__noise_read_message(tern__noise_hs *hs, const uint8_t *msg, size_t msg_len,
                             uint8_t *payload, size_t cap, size_t *payload_len);

/* 1 once every message of the pattern has been written or read. */
int tern__noise_hs_finished(const tern__noise_hs *hs);

/* After the handshake: Split() into the two transport ciphers (c1 for the
 * initiator's sending direction, c2 for the responder's) and copy the
 * handshake hash into h_out (may be NULL). Wipes the handshake state.
 * Returns 0 or TERN_EINVAL if the handshake is not finished. */
int tern__noise_split(tern__noise_hs *hs, tern__noise_cipher *c1, tern__noise_cipher *c2,
                      uint8_t h_out[TERN__NOISE_HASHLEN]);

/* Wipes a handshake state. */
void tern__noise_hs_wipe(tern__noise_hs *hs);

/* CipherState EncryptWithAd / DecryptWithAd with the implicit nonce, which
 * advances only on success. Output length is len + 16 (encrypt) or
 * len - 16 (decrypt); a message (ciphertext) is at most 65535 bytes. Return
 * 0, TERN_EDECRYPT, TERN_ENONCE (n exhausted), TERN_EBUFSIZE, TERN_ETOOBIG,
 * TERN_EPROTO (ciphertext shorter than a tag), TERN_EINVAL (NULL arguments,
 * or a cipher without a key: unlike §5.1 these never pass plaintext
 * through). On a failed decrypt `out` holds no plaintext. */
int tern__noise_encrypt(tern__noise_cipher *c, const uint8_t *ad, size_t ad_len,
                        const uint8_t *pt, size_t len, uint8_t *out, size_t cap, size_t *out_len);
int tern__noise_decrypt(tern__noise_cipher *c, const uint8_t *ad, size_t ad_len,
                        const uint8_t *ct, size_t len, uint8_t *out, size_t cap, size_t *out_len);

/* ChaCha20-Poly1305-IETF with an explicit 64-bit nonce, encoded the Noise
 * way (4 zero bytes, then the counter little-endian). Used by the sealed
 * transport, which carries the counter in each packet. seal writes len + 16
 * bytes to out; open writes len - 16. n = 2^64-1 is reserved as in Noise.
 * seal returns 0, TERN_EINVAL, TERN_ENONCE, TERN_ETOOBIG; open returns 0,
 * TERN_EINVAL, TERN_ENONCE, TERN_EPROTO (shorter than a tag), TERN_EDECRYPT
 * (then out is zeroed). */
int tern__aead_seal(const uint8_t key[TERN__NOISE_KEYLEN], uint64_t n, const uint8_t *ad,
                    size_t ad_len, const uint8_t *pt, size_t len, uint8_t *out);
int tern__aead_open(const uint8_t key[TERN__NOISE_KEYLEN], uint64_t n, const uint8_t *ad,
                    size_t ad_len, const uint8_t *ct, size_t len, uint8_t *out);

/* HMAC-BLAKE2b (RFC 2104 with BLOCKLEN 128, HASHLEN 64), built from
 * unkeyed BLAKE2b: libsodium's keyed generichash is not HMAC. */
void tern__hmac_blake2b(const uint8_t *key, size_t key_len, const uint8_t *data, size_t data_len,
                        uint8_t out[TERN__NOISE_HASHLEN]);

/* Noise HKDF (§4.3) producing two or three 64-byte outputs (out3 may be
 * NULL). out1 may be the same buffer as ck: MixKey() writes the new chaining
 * key over the old one. */
void tern__noise_hkdf(const uint8_t ck[TERN__NOISE_HASHLEN], const uint8_t *ikm, size_t ikm_len,
                      uint8_t out1[TERN__NOISE_HASHLEN], uint8_t out2[TERN__NOISE_HASHLEN],
                      uint8_t out3[TERN__NOISE_HASHLEN]);

#endif
