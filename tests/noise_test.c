/*
 * Tests of lib/wire/noise.c: the cacophony vectors for NK, IK, XX and IKpsk2
 * (handshake and transport, byte for byte), HMAC-BLAKE2b known answers, and
 * the ways a hostile or broken peer can feed the reader bad input.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "json.h"
#include "wire/noise.h"
#include "tern/tern.h"

#define VECTOR_FILE TERN_TEST_VECTORS "/noise/cacophony-25519-ChaChaPoly-BLAKE2b.json"

static void setup(void) { cr_assert_geq(sodium_init(), 0, "sodium_init failed"); }

TestSuite(noise, .init = setup);

/* Decodes hex into out[0..cap), asserting it is well formed and fits. */
static size_t unhex(const char *hex, uint8_t *out, size_t cap) {
  size_t bin_len = 0;
  cr_assert_not_null(hex);
  cr_assert_eq(sodium_hex2bin(out, cap, hex, strlen(hex), NULL, &bin_len, NULL), 0,
               "bad or oversized hex: %.40s", hex);
  cr_assert_eq(bin_len * 2, strlen(hex), "trailing junk in hex: %.40s", hex);
  return bin_len;
}

static void unhex_exact(const char *hex, uint8_t *out, size_t len) {
  cr_assert_eq(unhex(hex, out, len), len, "hex of the wrong length: %.40s", hex);
}

/* ------------------------------------------------------------- vectors */

typedef struct side_keys {
  uint8_t prologue[256];
  size_t prologue_len;
  uint8_t s[32], e[32], rs[32], psk[32];
  int has_s, has_rs, has_psk;
} side_keys;

static void load_side(const json_value *v, const char *prefix, side_keys *k) {
  char name[64];
  const char *hex;
  memset(k, 0, sizeof *k);

  snprintf(name, sizeof name, "%s_prologue", prefix);
  k->prologue_len = unhex(json_get_string(v, name), k->prologue, sizeof k->prologue);
  snprintf(name, sizeof name, "%s_ephemeral", prefix);
  unhex_exact(json_get_string(v, name), k->e, 32);
  snprintf(name, sizeof name, "%s_static", prefix);
  if ((hex = json_get_string(v, name))) {
    unhex_exact(hex, k->s, 32);
    k->has_s = 1;
  }
  snprintf(name, sizeof name, "%s_remote_static", prefix);
  if ((hex = json_get_string(v, name))) {
    unhex_exact(hex, k->rs, 32);
    k->has_rs = 1;
  }
  snprintf(name, sizeof name, "%s_psks", prefix);
  const json_value *psks = json_get(v, name);
  if (psks) {
    /* The supported patterns have at most one PSK. */
    cr_assert_eq(psks->type, JSON_ARRAY);
    cr_assert_eq(psks->count, 1, "%s: expected one psk", name);
    cr_assert_eq(psks->items[0].type, JSON_STRING);
    unhex_exact(psks->items[0].str, k->psk, 32);
    k->has_psk = 1;
  }
}

static tern__noise_pattern pattern_of(const char *protocol_name) {
  static const struct {
    const char *name;
    tern__noise_pattern pattern;
  } names[] = {
    {"Noise_NK_25519_ChaChaPoly_BLAKE2b", TERN__NOISE_NK},
    {"Noise_IK_25519_ChaChaPoly_BLAKE2b", TERN__NOISE_IK},
    {"Noise_XX_25519_ChaChaPoly_BLAKE2b", TERN__NOISE_XX},
    {"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b", TERN__NOISE_IKPSK2},
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp(names[i].name, protocol_name) == 0) return names[i].pattern;
  cr_assert_fail("unsupported protocol in the vector file: %s", protocol_name);
  return TERN__NOISE_NK;
}

static void init_side(tern__noise_hs *hs, tern__noise_pattern pattern, int initiator,
                      const side_keys *k) {
  int rc = tern__noise_hs_init(hs, pattern, initiator, k->prologue, k->prologue_len,
                               k->has_s ? k->s : NULL, k->e, k->has_rs ? k->rs : NULL,
                               k->has_psk ? k->psk : NULL);
  cr_assert_eq(rc, 0, "hs_init(%s) = %s", initiator ? "initiator" : "responder",
               tern_errname(rc));
}

/* Runs one vector through both roles; every ciphertext must match. */
static void run_vector(const json_value *v) {
  const char *proto = json_get_string(v, "protocol_name");
  cr_assert_not_null(proto);
  tern__noise_pattern pattern = pattern_of(proto);
  side_keys ik, rk;
  load_side(v, "init", &ik);
  load_side(v, "resp", &rk);

  tern__noise_hs ini, resp;
  init_side(&ini, pattern, 1, &ik);
  init_side(&resp, pattern, 0, &rk);

  const json_value *msgs = json_get(v, "messages");
  cr_assert(msgs && msgs->type == JSON_ARRAY && msgs->count > 0);

  tern__noise_cipher ini_c1, ini_c2, resp_c1, resp_c2;
  uint8_t expected_h[64];
  unhex_exact(json_get_string(v, "handshake_hash"), expected_h, 64);
  int in_handshake = 1;
  size_t handshake_msgs = 0;

  for (size_t i = 0; i < msgs->count; i++) {
    const json_value *m = &msgs->items[i];
    uint8_t payload[1024], want_ct[1024], ct[1024], pt[1024];
    size_t payload_len = unhex(json_get_string(m, "payload"), payload, sizeof payload);
    size_t want_len = unhex(json_get_string(m, "ciphertext"), want_ct, sizeof want_ct);
    size_t ct_len = 0, pt_len = 0;
    int from_initiator = (i % 2) == 0;
    int rc;

    if (in_handshake) {
      tern__noise_hs *w = from_initiator ? &ini : &resp;
      tern__noise_hs *r = from_initiator ? &resp : &ini;
      rc = tern__noise_write_message(w, payload, payload_len, ct, sizeof ct, &ct_len);
      cr_assert_eq(rc, 0, "%s msg %zu write: %s", proto, i, tern_errname(rc));
      rc = tern__noise_read_message(r, ct, ct_len, pt, sizeof pt, &pt_len);
      cr_assert_eq(rc, 0, "%s msg %zu read: %s", proto, i, tern_errname(rc));
      handshake_msgs++;
    } else {
      tern__noise_cipher *w = from_initiator ? &ini_c1 : &resp_c2;
      tern__noise_cipher *r = from_initiator ? &resp_c1 : &ini_c2;
      rc = tern__noise_encrypt(w, NULL, 0, payload, payload_len, ct, sizeof ct, &ct_len);
      cr_assert_eq(rc, 0, "%s msg %zu encrypt: %s", proto, i, tern_errname(rc));
      rc = tern__noise_decrypt(r, NULL, 0, ct, ct_len, pt, sizeof pt, &pt_len);
      cr_assert_eq(rc, 0, "%s msg %zu decrypt: %s", proto, i, tern_errname(rc));
    }
    cr_assert_eq(ct_len, want_len, "%s msg %zu: length %zu, want %zu", proto, i, ct_len,
                 want_len);
    cr_assert_arr_eq(ct, want_ct, want_len, "%s msg %zu: ciphertext differs", proto, i);
    cr_assert_eq(pt_len, payload_len, "%s msg %zu: payload length", proto, i);
    cr_assert_arr_eq(pt, payload, payload_len, "%s msg %zu: payload differs", proto, i);

    if (in_handshake && tern__noise_hs_finished(&ini)) {
      cr_assert(tern__noise_hs_finished(&resp), "%s: only the initiator finished", proto);
      uint8_t h_ini[64], h_resp[64];
      cr_assert_eq(tern__noise_split(&ini, &ini_c1, &ini_c2, h_ini), 0);
      cr_assert_eq(tern__noise_split(&resp, &resp_c1, &resp_c2, h_resp), 0);
      cr_assert_arr_eq(h_ini, expected_h, 64, "%s: initiator handshake hash differs", proto);
      cr_assert_arr_eq(h_resp, expected_h, 64, "%s: responder handshake hash differs", proto);
      in_handshake = 0;
    } else if (in_handshake) {
      cr_assert(!tern__noise_hs_finished(&resp), "%s: only the responder finished", proto);
    }
  }
  cr_assert(!in_handshake, "%s: the vector ended inside the handshake", proto);
  cr_assert_lt(handshake_msgs, msgs->count, "%s: no transport messages checked", proto);
}

static json_value *load_vectors(void) {
  json_value *root = NULL;
  char err[256];
  cr_assert_eq(json_parse_file(VECTOR_FILE, &root, err, sizeof err), 0, "%s", err);
  const json_value *vecs = json_get(root, "vectors");
  cr_assert(vecs && vecs->type == JSON_ARRAY, "no \"vectors\" array");
  return root;
}

static void run_named(const char *protocol_name) {
  json_value *root = load_vectors();
  const json_value *vecs = json_get(root, "vectors");
  int found = 0;
  for (size_t i = 0; i < vecs->count; i++) {
    const char *name = json_get_string(&vecs->items[i], "protocol_name");
    if (name && strcmp(name, protocol_name) == 0) {
      run_vector(&vecs->items[i]);
      found++;
    }
  }
  json_free(root);
  cr_assert_eq(found, 1, "%s: %d vectors found, want 1", protocol_name, found);
}

Test(noise, vector_file_holds_the_four_patterns) {
  json_value *root = load_vectors();
  const json_value *vecs = json_get(root, "vectors");
  cr_assert_eq(vecs->count, 4);
  int seen[4] = {0};
  for (size_t i = 0; i < vecs->count; i++)
    seen[pattern_of(json_get_string(&vecs->items[i], "protocol_name"))]++;
  for (int p = 0; p < 4; p++) cr_assert_eq(seen[p], 1, "pattern %d seen %d times", p, seen[p]);
  json_free(root);
}

Test(noise, vector_nk) { run_named("Noise_NK_25519_ChaChaPoly_BLAKE2b"); }
Test(noise, vector_ik) { run_named("Noise_IK_25519_ChaChaPoly_BLAKE2b"); }
Test(noise, vector_xx) { run_named("Noise_XX_25519_ChaChaPoly_BLAKE2b"); }
Test(noise, vector_ikpsk2) { run_named("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b"); }

/* ------------------------------------------------------------ HMAC KAT */

/* Expected values computed independently with Python's
 * hmac.new(key, msg, hashlib.blake2b).hexdigest(). The keys cover the three
 * RFC 2104 cases: shorter than a block, exactly a block (128), longer (hashed
 * first). */
Test(noise, hmac_blake2b_known_answers) {
  uint8_t key64[64], key128[128], key200[200], msg150[150];
  for (size_t i = 0; i < sizeof key64; i++) key64[i] = (uint8_t)i;
  for (size_t i = 0; i < sizeof key128; i++) key128[i] = (uint8_t)i;
  for (size_t i = 0; i < sizeof key200; i++) key200[i] = (uint8_t)i;
  for (size_t i = 0; i < sizeof msg150; i++) msg150[i] = (uint8_t)"abc"[i % 3];
  const char *fox = "The quick brown fox jumps over the lazy dog";
  const struct {
    const uint8_t *key;
    size_t key_len;
    const uint8_t *msg;
    size_t msg_len;
    const char *want;
  } cases[] = {
    {(const uint8_t *)"key", 3, (const uint8_t *)fox, strlen(fox),
     "92294f92c0dfb9b00ec9ae8bd94d7e7d8a036b885a499f149dfe2fd2199394aa"
     "af6b8894a1730cccb2cd050f9bcf5062a38b51b0dab33207f8ef35ae2c9df51b"},
    {key64, 64, (const uint8_t *)"noise", 5,
     "72a06853dfea196da61f88e4d28c782910e84e5e76d5a555842754fae98657e2"
     "8718c7ed1234cf2c72c4f821f91e8ab64c07ae42bba94611c4d4abfd295699c1"},
    {key128, 128, (const uint8_t *)"", 0,
     "e79ec585fc83408cd654da61cc87457edd77cae194e6e4727420fa21a001229e"
     "d67f1fb7bb03effaaaec05d2d7902f98bfad11da65b4c08d197eefa96f314b31"},
    {key200, 200, msg150, sizeof msg150,
     "40dcdd8e5c2995dba2be810eb139cd2a39c84838e5cf3bbe9a347462dcbc5ba9"
     "fafe7b189bad1b9bf002d95ea940fc3ff535df8e6c9e7093a79bef16609fbb16"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uint8_t want[64], got[64];
    unhex_exact(cases[i].want, want, 64);
    tern__hmac_blake2b(cases[i].key, cases[i].key_len, cases[i].msg, cases[i].msg_len, got);
    cr_assert_arr_eq(got, want, 64, "HMAC case %zu differs", i);
  }
}

/* --------------------------------------------------- IK under attack */

/* The IK keys of the vectors: the initiator pins the responder's static. */
#define INIT_STATIC "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1"
#define INIT_EPHEMERAL "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a"
#define RESP_STATIC "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893"
#define RESP_EPHEMERAL "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b"

static const uint8_t early_data[] = "hello relay: early data";

typedef struct ik_pair {
  tern__noise_hs ini, resp;
  uint8_t msg1[256];
  size_t msg1_len;
} ik_pair;

/* Sets up both IK sides and writes message 1. `pinned` overrides the
 * responder key the initiator pins (NULL: the right one). */
static void ik_start(ik_pair *p, const uint8_t *pinned) {
  uint8_t is[32], ie[32], rs[32], re[32], rs_pub[32];
  unhex_exact(INIT_STATIC, is, 32);
  unhex_exact(INIT_EPHEMERAL, ie, 32);
  unhex_exact(RESP_STATIC, rs, 32);
  unhex_exact(RESP_EPHEMERAL, re, 32);
  crypto_scalarmult_base(rs_pub, rs);
  cr_assert_eq(tern__noise_hs_init(&p->ini, TERN__NOISE_IK, 1, NULL, 0, is, ie,
                                   pinned ? pinned : rs_pub, NULL), 0);
  cr_assert_eq(tern__noise_hs_init(&p->resp, TERN__NOISE_IK, 0, NULL, 0, rs, re, NULL, NULL), 0);
  cr_assert_eq(tern__noise_write_message(&p->ini, early_data, sizeof early_data, p->msg1,
                                         sizeof p->msg1, &p->msg1_len), 0);
  cr_assert_eq(p->msg1_len, 32 + 48 + sizeof early_data + 16);
}

/* Feeds msg[0..len) to `hs` from an exactly sized heap copy, so that a read
 * past the end is caught by ASan, and checks that it fails and kills the
 * state without leaving payload bytes behind. Returns the error. */
static int read_must_fail(tern__noise_hs *hs, const uint8_t *msg, size_t len) {
  uint8_t *copy = malloc(len ? len : 1);
  cr_assert_not_null(copy);
  if (len) memcpy(copy, msg, len);
  /* The payload buffer starts zeroed, so any byte left in it is plaintext
   * that the failed read let through. */
  uint8_t payload[256] = {0}, zero[256] = {0};
  size_t payload_len = 99;
  int rc = tern__noise_read_message(hs, copy, len, payload, sizeof payload, &payload_len);
  free(copy);
  cr_assert_lt(rc, 0, "a bad message of %zu bytes was accepted", len);
  cr_assert_eq(payload_len, 0);
  cr_assert(hs->failed, "the state survived an error");
  cr_assert_arr_eq(payload, zero, sizeof payload, "a failed read left payload bytes behind");
  /* A dead state refuses everything afterwards. */
  cr_assert_eq(tern__noise_read_message(hs, msg, len, payload, sizeof payload, &payload_len),
               TERN_EINVAL);
  cr_assert_eq(tern__noise_write_message(hs, NULL, 0, payload, sizeof payload, &payload_len),
               TERN_EINVAL);
  cr_assert(!tern__noise_hs_finished(hs));
  return rc;
}

Test(noise, ik_roundtrip_carries_early_data) {
  ik_pair p;
  ik_start(&p, NULL);
  uint8_t payload[256], msg2[256];
  size_t len = 0, msg2_len = 0;
  cr_assert_eq(tern__noise_read_message(&p.resp, p.msg1, p.msg1_len, payload, sizeof payload,
                                        &len), 0);
  cr_assert_eq(len, sizeof early_data);
  cr_assert_arr_eq(payload, early_data, len);
  /* The responder learnt the initiator's static key from message 1. */
  uint8_t is[32], is_pub[32];
  unhex_exact(INIT_STATIC, is, 32);
  crypto_scalarmult_base(is_pub, is);
  cr_assert_arr_eq(p.resp.rs, is_pub, 32);
  cr_assert_eq(tern__noise_write_message(&p.resp, NULL, 0, msg2, sizeof msg2, &msg2_len), 0);
  cr_assert_eq(tern__noise_read_message(&p.ini, msg2, msg2_len, payload, sizeof payload, &len), 0);
  cr_assert_eq(len, 0);
  cr_assert(tern__noise_hs_finished(&p.ini) && tern__noise_hs_finished(&p.resp));
}

Test(noise, ik_any_flipped_byte_of_message1_is_refused) {
  ik_pair p;
  ik_start(&p, NULL);
  for (size_t i = 0; i < p.msg1_len; i++) {
    for (int bit = 0; bit < 8; bit += 7) {
      tern__noise_hs resp = p.resp;
      uint8_t bad[256];
      memcpy(bad, p.msg1, p.msg1_len);
      bad[i] ^= (uint8_t)(1u << bit);
      int rc = read_must_fail(&resp, bad, p.msg1_len);
      cr_assert(rc == TERN_EDECRYPT || rc == TERN_EPROTO, "byte %zu bit %d: %s", i, bit,
                tern_errname(rc));
    }
  }
}

Test(noise, ik_wrong_pinned_responder_key_is_refused) {
  uint8_t other_priv[32], other_pub[32];
  memset(other_priv, 0x42, sizeof other_priv);
  crypto_scalarmult_base(other_pub, other_priv);
  ik_pair p;
  ik_start(&p, other_pub);
  cr_assert_eq(read_must_fail(&p.resp, p.msg1, p.msg1_len), TERN_EDECRYPT);
}

Test(noise, ik_truncated_messages_fail_cleanly) {
  ik_pair p;
  ik_start(&p, NULL);
  for (size_t len = 0; len < p.msg1_len; len++) {
    tern__noise_hs resp = p.resp;
    int rc = read_must_fail(&resp, p.msg1, len);
    cr_assert(rc == TERN_EPROTO || rc == TERN_EDECRYPT, "length %zu: %s", len, tern_errname(rc));
  }

  /* The same for message 2, read by the initiator. */
  uint8_t payload[256], msg2[256];
  size_t len = 0, msg2_len = 0;
  cr_assert_eq(tern__noise_read_message(&p.resp, p.msg1, p.msg1_len, payload, sizeof payload,
                                        &len), 0);
  cr_assert_eq(tern__noise_write_message(&p.resp, (const uint8_t *)"ok", 2, msg2, sizeof msg2,
                                         &msg2_len), 0);
  for (size_t n = 0; n < msg2_len; n++) {
    tern__noise_hs ini = p.ini;
    int rc = read_must_fail(&ini, msg2, n);
    cr_assert(rc == TERN_EPROTO || rc == TERN_EDECRYPT, "length %zu: %s", n, tern_errname(rc));
  }
  /* And an intact message 2 still works on a live copy. */
  cr_assert_eq(tern__noise_read_message(&p.ini, msg2, msg2_len, payload, sizeof payload, &len), 0);
  cr_assert_eq(len, 2);
}

Test(noise, oversized_messages_are_refused) {
  ik_pair p;
  ik_start(&p, NULL);
  size_t big = TERN__NOISE_MAX_MSG + 1;
  uint8_t *msg = calloc(1, big);
  cr_assert_not_null(msg);
  memcpy(msg, p.msg1, p.msg1_len);
  cr_assert_eq(read_must_fail(&p.resp, msg, big), TERN_ETOOBIG);

  /* Writing: a payload that would make the message exceed 65535 bytes. */
  tern__noise_hs ini;
  uint8_t is[32], ie[32], rs_pub[32];
  unhex_exact(INIT_STATIC, is, 32);
  unhex_exact(INIT_EPHEMERAL, ie, 32);
  memset(rs_pub, 9, 32);
  cr_assert_eq(tern__noise_hs_init(&ini, TERN__NOISE_IK, 1, NULL, 0, is, ie, rs_pub, NULL), 0);
  uint8_t *out = malloc(2 * big);
  size_t out_len = 1;
  /* IK message 1 adds 96 bytes to its payload: e (32), s (32 + 16), tag. */
  tern__noise_hs fits = ini;
  cr_assert_eq(tern__noise_write_message(&fits, msg, TERN__NOISE_MAX_MSG - 96, out, 2 * big,
                                         &out_len), 0);
  cr_assert_eq(out_len, TERN__NOISE_MAX_MSG);
  cr_assert_eq(tern__noise_write_message(&ini, msg, TERN__NOISE_MAX_MSG - 95, out, 2 * big,
                                         &out_len), TERN_ETOOBIG);
  cr_assert_eq(out_len, 0);
  cr_assert(ini.failed);
  free(out);
  free(msg);
}

Test(noise, low_order_ephemeral_is_refused) {
  ik_pair p;
  ik_start(&p, NULL);
  uint8_t bad[256];
  memcpy(bad, p.msg1, p.msg1_len);
  memset(bad, 0, 32); /* the all-zero point has order 1 */
  cr_assert_eq(read_must_fail(&p.resp, bad, p.msg1_len), TERN_EDECRYPT);
}

Test(noise, misuse_is_refused) {
  uint8_t k[32], out[256];
  size_t out_len = 7;
  tern__noise_hs hs;
  memset(k, 1, sizeof k);
  /* Missing keys, and a key the pattern would ignore. */
  cr_assert_eq(tern__noise_hs_init(&hs, TERN__NOISE_IK, 1, NULL, 0, k, k, NULL, NULL), TERN_EINVAL);
  cr_assert_eq(tern__noise_hs_init(&hs, TERN__NOISE_IK, 0, NULL, 0, k, NULL, NULL, NULL),
               TERN_EINVAL);
  cr_assert_eq(tern__noise_hs_init(&hs, TERN__NOISE_XX, 0, NULL, 0, k, k, k, NULL), TERN_EINVAL);
  cr_assert_eq(tern__noise_hs_init(&hs, TERN__NOISE_IKPSK2, 1, NULL, 0, k, k, k, NULL),
               TERN_EINVAL);
  cr_assert_eq(tern__noise_hs_init(&hs, (tern__noise_pattern)9, 1, NULL, 0, k, k, k, NULL),
               TERN_EINVAL);
  cr_assert(hs.failed);
  /* The responder may not speak first, and nobody may split early. */
  cr_assert_eq(tern__noise_hs_init(&hs, TERN__NOISE_XX, 0, NULL, 0, k, k, NULL, NULL), 0);
  tern__noise_cipher c1, c2;
  cr_assert_eq(tern__noise_split(&hs, &c1, &c2, NULL), TERN_EINVAL);
  cr_assert_eq(c1.has_key, 0);
  cr_assert_eq(tern__noise_write_message(&hs, NULL, 0, out, sizeof out, &out_len), TERN_EINVAL);
  cr_assert_eq(out_len, 0);
  cr_assert(hs.failed);
  /* Too small an output buffer. */
  cr_assert_eq(tern__noise_hs_init(&hs, TERN__NOISE_XX, 1, NULL, 0, k, k, NULL, NULL), 0);
  cr_assert_eq(tern__noise_write_message(&hs, NULL, 0, out, 31, &out_len), TERN_EBUFSIZE);
}

/* ------------------------------------------------- transport ciphers */

static void keyed_cipher(tern__noise_cipher *c, uint64_t n) {
  memset(c, 0, sizeof *c);
  for (int i = 0; i < 32; i++) c->k[i] = (uint8_t)(0xa0 + i);
  c->has_key = 1;
  c->n = n;
}

Test(noise, last_nonce_is_reserved) {
  tern__noise_cipher c;
  uint8_t out[64];
  size_t out_len = 5;
  keyed_cipher(&c, UINT64_MAX - 1);
  cr_assert_eq(tern__noise_encrypt(&c, NULL, 0, (const uint8_t *)"x", 1, out, sizeof out,
                                   &out_len), 0);
  cr_assert_eq(c.n, UINT64_MAX);
  cr_assert_eq(tern__noise_encrypt(&c, NULL, 0, (const uint8_t *)"x", 1, out, sizeof out,
                                   &out_len), TERN_ENONCE);
  cr_assert_eq(out_len, 0);
  cr_assert_eq(c.n, UINT64_MAX);
  cr_assert_eq(tern__noise_decrypt(&c, NULL, 0, out, 17, out, sizeof out, &out_len), TERN_ENONCE);
  cr_assert_eq(tern__aead_seal(c.k, UINT64_MAX, NULL, 0, out, 1, out), TERN_ENONCE);
}

Test(noise, failed_decrypt_does_not_advance_the_nonce) {
  tern__noise_cipher tx, rx;
  keyed_cipher(&tx, 0);
  keyed_cipher(&rx, 0);
  const uint8_t ad[] = "ad";
  uint8_t ct[64], pt[64], zero[64] = {0};
  size_t ct_len = 0, pt_len = 0;
  cr_assert_eq(tern__noise_encrypt(&tx, ad, 2, (const uint8_t *)"secret", 6, ct, sizeof ct,
                                   &ct_len), 0);
  cr_assert_eq(ct_len, 22);
  ct[3] ^= 1;
  memset(pt, 0xee, sizeof pt);
  cr_assert_eq(tern__noise_decrypt(&rx, ad, 2, ct, ct_len, pt, sizeof pt, &pt_len),
               TERN_EDECRYPT);
  cr_assert_eq(rx.n, 0);
  cr_assert_eq(pt_len, 0);
  cr_assert_arr_eq(pt, zero, 6, "plaintext left behind after a failed decrypt");
  ct[3] ^= 1;
  /* Wrong associated data fails too, and still does not advance. */
  cr_assert_eq(tern__noise_decrypt(&rx, ad, 1, ct, ct_len, pt, sizeof pt, &pt_len), TERN_EDECRYPT);
  cr_assert_eq(rx.n, 0);
  cr_assert_eq(tern__noise_decrypt(&rx, ad, 2, ct, ct_len, pt, sizeof pt, &pt_len), 0);
  cr_assert_eq(rx.n, 1);
  cr_assert_eq(pt_len, 6);
  cr_assert_arr_eq(pt, "secret", 6);
  /* Short ciphertexts, unkeyed ciphers, small buffers. */
  cr_assert_eq(tern__noise_decrypt(&rx, NULL, 0, ct, 15, pt, sizeof pt, &pt_len), TERN_EPROTO);
  cr_assert_eq(tern__noise_decrypt(&rx, NULL, 0, ct, ct_len, pt, 5, &pt_len), TERN_EBUFSIZE);
  cr_assert_eq(tern__noise_encrypt(&tx, NULL, 0, pt, 6, ct, 21, &ct_len), TERN_EBUFSIZE);
  rx.has_key = 0;
  cr_assert_eq(tern__noise_decrypt(&rx, NULL, 0, ct, ct_len, pt, sizeof pt, &pt_len), TERN_EINVAL);
}

Test(noise, explicit_nonce_aead_matches_the_implicit_one) {
  tern__noise_cipher c;
  keyed_cipher(&c, 0x0102030405060708ull);
  uint8_t a[64], b[64], pt[64], zero[64] = {0};
  size_t a_len = 0;
  cr_assert_eq(tern__noise_encrypt(&c, (const uint8_t *)"hdr", 3, (const uint8_t *)"payload", 7, a,
                                   sizeof a, &a_len), 0);
  cr_assert_eq(tern__aead_seal(c.k, 0x0102030405060708ull, (const uint8_t *)"hdr", 3,
                               (const uint8_t *)"payload", 7, b), 0);
  cr_assert_arr_eq(a, b, a_len, "seal and encrypt disagree on the nonce encoding");
  cr_assert_eq(tern__aead_open(c.k, 0x0102030405060708ull, (const uint8_t *)"hdr", 3, b, 23, pt),
               0);
  cr_assert_arr_eq(pt, "payload", 7);
  /* The wrong counter fails and leaves no plaintext. */
  memset(pt, 0xee, sizeof pt);
  cr_assert_eq(tern__aead_open(c.k, 0x0102030405060709ull, (const uint8_t *)"hdr", 3, b, 23, pt),
               TERN_EDECRYPT);
  cr_assert_arr_eq(pt, zero, 7);
  cr_assert_eq(tern__aead_open(c.k, 1, NULL, 0, b, 15, pt), TERN_EPROTO);
}
