/*
 * Tests of lib/wire/token.c, backend tokens: a good token passes; expired,
 * forged, bound to another device key or user, wrong-version, truncated and
 * garbage tokens are each refused with their own code; the text form
 * round-trips and refuses a second spelling; and the public calls agree
 * with the internal ones. The worked example of spec/tokens.md is checked
 * byte for byte by spec_examples_test.c.
 */
#include <criterion/criterion.h>

#include <sodium.h>
#include <string.h>

#include "wire/token.h"
#include "tern/tern.h"

typedef struct fixture {
  uint8_t pk[32], sk[64];
  uint8_t device[32];
  uint8_t bin[TERN__TOKEN_MAX];
  size_t len;
} fixture;

#define NOW 1700000000u

static void mint(fixture *f, const char *user, uint64_t expiry) {
  cr_assert_geq(sodium_init(), 0);
  uint8_t seed[32];
  memset(seed, 0x81, sizeof(seed));
  crypto_sign_seed_keypair(f->pk, f->sk, seed);
  memset(f->device, 0x07, sizeof(f->device));
  tern__token t = {.expiry_s = expiry};
  snprintf(t.user, sizeof(t.user), "%s", user);
  memcpy(t.device_key, f->device, 32);
  for (int i = 0; i < TERN__TOKEN_ID_BYTES; i++) t.id[i] = (uint8_t)i;
  cr_assert_eq(tern__token_mint(&t, f->sk, f->bin, sizeof(f->bin), &f->len), 0);
  cr_assert_eq(f->len, TERN__TOKEN_FIXED + strlen(user));
}

Test(token, good_token_verifies_and_gives_its_fields) {
  fixture f;
  mint(&f, "alice", NOW + 60);
  tern__token t;
  cr_assert_eq(tern__token_verify(f.bin, f.len, f.pk, f.device, "alice", NOW, &t), 0);
  cr_assert_str_eq(t.user, "alice");
  cr_assert_eq(t.expiry_s, NOW + 60);
  cr_assert_eq(t.id[15], 15);
  /* No user asked for: any user the token names. */
  cr_assert_eq(tern__token_verify(f.bin, f.len, f.pk, f.device, NULL, NOW, NULL), 0);
  cr_assert_eq(tern__token_verify(f.bin, f.len, f.pk, f.device, "", NOW, NULL), 0);
}

Test(token, expired_from_its_expiry_second_on) {
  fixture f;
  mint(&f, "alice", NOW + 60);
  cr_assert_eq(tern__token_verify(f.bin, f.len, f.pk, f.device, NULL, NOW + 59, NULL), 0);
  cr_assert_eq(tern__token_verify(f.bin, f.len, f.pk, f.device, NULL, NOW + 60, NULL),
               TERN_ETOKENEXPIRED);
  cr_assert_eq(tern__token_verify(f.bin, f.len, f.pk, f.device, NULL, UINT64_MAX, NULL),
               TERN_ETOKENEXPIRED);
}

Test(token, forged_signature_or_another_backend_key_is_invalid) {
  fixture f;
  mint(&f, "alice", NOW + 60);
  /* Every bit of the token is covered: flip each in turn. A flip in the
   * length or version byte makes it malformed, a flip elsewhere breaks the
   * signature; either way TERN_ETOKENINVALID, never a pass. */
  for (size_t i = 0; i < f.len; i++) {
    for (int bit = 0; bit < 8; bit++) {
      uint8_t copy[TERN__TOKEN_MAX];
      memcpy(copy, f.bin, f.len);
      copy[i] ^= (uint8_t)(1u << bit);
      int rc = tern__token_verify(copy, f.len, f.pk, f.device, NULL, NOW, NULL);
      cr_assert(rc == TERN_ETOKENINVALID, "byte %zu bit %d flipped: %s", i, bit, tern_errname(rc));
    }
  }
  uint8_t other_pk[32], other_sk[64];
  crypto_sign_keypair(other_pk, other_sk);
  cr_assert_eq(tern__token_verify(f.bin, f.len, other_pk, f.device, NULL, NOW, NULL),
               TERN_ETOKENINVALID);
}

Test(token, signature_is_over_the_context_too) {
  fixture f;
  mint(&f, "alice", NOW + 60);
  /* A signature by the backend's key over the token bytes without the
   * context (what a careless backend signing other data could produce)
   * is not a token. */
  uint8_t bad[TERN__TOKEN_MAX];
  memcpy(bad, f.bin, f.len);
  size_t n = f.len - TERN__TOKEN_SIG_BYTES;
  crypto_sign_detached(bad + n, NULL, bad, n, f.sk);
  cr_assert_eq(tern__token_verify(bad, f.len, f.pk, f.device, NULL, NOW, NULL), TERN_ETOKENINVALID);
}

Test(token, bound_to_another_device_key_or_user) {
  fixture f;
  mint(&f, "alice", NOW + 60);
  uint8_t other[32];
  memset(other, 0x08, sizeof(other));
  cr_assert_eq(tern__token_verify(f.bin, f.len, f.pk, other, NULL, NOW, NULL), TERN_ETOKENKEY);
  cr_assert_eq(tern__token_verify(f.bin, f.len, f.pk, f.device, "bob", NOW, NULL), TERN_ETOKENKEY);
  cr_assert_eq(tern__token_verify(f.bin, f.len, f.pk, f.device, "alic", NOW, NULL), TERN_ETOKENKEY);
  /* Binding is judged before expiry: an expired token for another key says
   * it is for another key, which a fresh token would not cure either. */
  cr_assert_eq(tern__token_verify(f.bin, f.len, f.pk, other, NULL, NOW + 61, NULL), TERN_ETOKENKEY);
}

Test(token, truncated_or_extended_or_garbage) {
  fixture f;
  mint(&f, "alice", NOW + 60);
  for (size_t n = 0; n < f.len; n++)
    cr_assert_eq(tern__token_verify(f.bin, n, f.pk, f.device, NULL, NOW, NULL), TERN_ETOKENINVALID,
                 "cut to %zu bytes", n);
  uint8_t longer[TERN__TOKEN_MAX + 1] = {0};
  memcpy(longer, f.bin, f.len);
  cr_assert_eq(tern__token_verify(longer, f.len + 1, f.pk, f.device, NULL, NOW, NULL),
               TERN_ETOKENINVALID);
  uint8_t junk[TERN__TOKEN_MAX];
  for (int round = 0; round < 1000; round++) {
    size_t n = 1 + randombytes_uniform(sizeof(junk));
    randombytes_buf(junk, n);
    tern__token t;
    cr_assert_eq(tern__token_verify(junk, n, f.pk, f.device, NULL, NOW, &t), TERN_ETOKENINVALID);
  }
  /* A user name the relay could not use (space, '@', empty). */
  tern__token t = {.expiry_s = NOW + 60};
  size_t len = 0;
  snprintf(t.user, sizeof(t.user), "a b");
  cr_assert_eq(tern__token_mint(&t, f.sk, f.bin, sizeof(f.bin), &len), TERN_EINVAL);
  uint8_t hand[TERN__TOKEN_MAX];
  memcpy(hand, f.bin, f.len);
  hand[3] = '@'; /* "a@ice": parses as a length, fails as a name */
  cr_assert_eq(tern__token_parse(hand, f.len, &t), TERN_ETOKENINVALID);
}

Test(token, wrong_version) {
  fixture f;
  mint(&f, "alice", NOW + 60);
  for (int v = 0; v < 256; v++) {
    if (v == TERN__TOKEN_VERSION) continue;
    uint8_t copy[TERN__TOKEN_MAX];
    memcpy(copy, f.bin, f.len);
    copy[0] = (uint8_t)v;
    /* Re-signed, so only the version is wrong. */
    uint8_t msg[TERN__TOKEN_CONTEXT_LEN + TERN__TOKEN_MAX];
    size_t n = f.len - TERN__TOKEN_SIG_BYTES;
    memcpy(msg, TERN__TOKEN_CONTEXT, TERN__TOKEN_CONTEXT_LEN);
    memcpy(msg + TERN__TOKEN_CONTEXT_LEN, copy, n);
    crypto_sign_detached(copy + n, NULL, msg, TERN__TOKEN_CONTEXT_LEN + n, f.sk);
    tern__token t;
    cr_assert_eq(tern__token_parse(copy, f.len, &t), TERN_ETOKENINVALID, "version %d", v);
    cr_assert_eq(tern__token_verify(copy, f.len, f.pk, f.device, NULL, NOW, NULL),
                 TERN_ETOKENINVALID);
  }
}

Test(token, longest_user_fits_the_text_maximum) {
  fixture f;
  char user[TERN_USER_MAX + 1];
  memset(user, 'u', TERN_USER_MAX);
  user[TERN_USER_MAX] = 0;
  mint(&f, user, NOW + 60);
  cr_assert_eq(f.len, TERN__TOKEN_MAX);
  char text[TERN_TOKEN_TEXT_MAX];
  cr_assert_eq(tern__token_to_text(f.bin, f.len, text, sizeof(text)), 0);
  cr_assert_eq(strlen(text), TERN_TOKEN_TEXT_MAX - 1);
  cr_assert_eq(tern__token_to_text(f.bin, f.len, text, sizeof(text) - 1), TERN_EBUFSIZE);
}

Test(token, text_form_round_trips_and_is_strict) {
  fixture f;
  mint(&f, "alice", NOW + 60);
  char text[TERN_TOKEN_TEXT_MAX + 8];
  cr_assert_eq(tern__token_to_text(f.bin, f.len, text, TERN_TOKEN_TEXT_MAX), 0);
  cr_assert_eq(strspn(text, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
               strlen(text));
  uint8_t back[TERN__TOKEN_MAX];
  size_t n = 0;
  cr_assert_eq(tern__token_from_text(text, back, &n), 0);
  cr_assert_eq(n, f.len);
  cr_assert_arr_eq(back, f.bin, n);
  /* Whitespace around it (a file with a newline) is fine. */
  char spaced[TERN_TOKEN_TEXT_MAX + 8];
  snprintf(spaced, sizeof(spaced), " %s\n", text);
  cr_assert_eq(tern__token_from_text(spaced, back, &n), 0);
  /* Padding, the standard alphabet, inner spaces and empty input are not. */
  char bad[TERN_TOKEN_TEXT_MAX + 8];
  snprintf(bad, sizeof(bad), "%s=", text);
  cr_assert_eq(tern__token_from_text(bad, back, &n), TERN_ETOKENINVALID);
  snprintf(bad, sizeof(bad), "%s", text);
  bad[5] = '+';
  cr_assert_eq(tern__token_from_text(bad, back, &n), TERN_ETOKENINVALID);
  bad[5] = ' ';
  cr_assert_eq(tern__token_from_text(bad, back, &n), TERN_ETOKENINVALID);
  cr_assert_eq(tern__token_from_text("   ", back, &n), TERN_ETOKENINVALID);
  /* Bytes above 0x7f, which libsodium 1.0.18 alone would decode (found by
   * tests/fuzz/fuzz_token.c). */
  cr_assert_eq(tern__token_from_text("\xc9\xc9" "11", back, &n), TERN_ETOKENINVALID);
  snprintf(bad, sizeof(bad), "%s", text);
  bad[7] = (char)0xc9;
  cr_assert_eq(tern__token_from_text(bad, back, &n), TERN_ETOKENINVALID);
  /* 127 bytes end in a character carrying 4 spare bits; setting one is a
   * second spelling of other bytes, refused. */
  size_t len = strlen(text);
  snprintf(bad, sizeof(bad), "%s", text);
  const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  int idx = (int)(strchr(alpha, bad[len - 1]) - alpha);
  int spare = (int)((f.len * 8) % 6 ? 6 - (f.len * 8) % 6 : 0);
  cr_assert_gt(spare, 0, "the example's length leaves spare bits");
  bad[len - 1] = alpha[idx ^ 1];
  cr_assert_eq(tern__token_from_text(bad, back, &n), TERN_ETOKENINVALID);
}

Test(token, public_calls_mint_and_decode) {
  uint8_t seed[32], pk[32], device[32], id[TERN_TOKEN_ID_BYTES];
  memset(seed, 0x81, sizeof(seed));
  memset(device, 0x07, sizeof(device));
  memset(id, 0x42, sizeof(id));
  cr_assert_eq(tern_token_public_key(seed, pk), 0);
  char text[TERN_TOKEN_TEXT_MAX];
  cr_assert_eq(tern_token_mint(seed, "carol", device, NOW + 5, id, text), 0);
  tern_token_info info;
  cr_assert_eq(tern_token_decode(text, pk, &info), 0);
  cr_assert_str_eq(info.user, "carol");
  cr_assert_eq(info.expiry_s, NOW + 5);
  cr_assert_arr_eq(info.device_key, device, 32);
  cr_assert_arr_eq(info.id, id, sizeof(id));
  /* Without a key: the fields, unverified. With another key: refused. */
  cr_assert_eq(tern_token_decode(text, NULL, &info), 0);
  pk[0] ^= 1;
  cr_assert_eq(tern_token_decode(text, pk, &info), TERN_ETOKENINVALID);
  cr_assert_eq(info.expiry_s, 0);
  cr_assert_eq(tern_token_mint(seed, "no one", device, NOW, id, text), TERN_EINVAL);
  cr_assert_eq(tern_token_decode("not a token", NULL, &info), TERN_ETOKENINVALID);
}
