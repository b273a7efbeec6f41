/* ternd's token key and revocation list (tokens.h). */
#include "tokens.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Decodes exactly 2*n hex digits (either case) into out. 0 or -1. */
static int hex_exact(const char *s, size_t len, uint8_t *out, size_t n) {
  if (len != 2 * n) return -1;
  for (size_t i = 0; i < 2 * n; i++) {
    char c = s[i];
    int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (v < 0) return -1;
    if (i % 2 == 0) out[i / 2] = (uint8_t)(v << 4);
    else out[i / 2] |= (uint8_t)v;
  }
  return 0;
}

/* The line's first word (after '#' is cut) in [*w, *w + *n); 0 if none. */
static int first_word(char *line, const char **w, size_t *n) {
  char *hash = strchr(line, '#');
  if (hash) *hash = 0;
  char *p = line + strspn(line, " \t\r\n");
  *w = p;
  *n = strcspn(p, " \t\r\n");
  return *n > 0;
}

int ternd_token_key_load(const char *arg, uint8_t pk[32], char *err, size_t cap) {
  if (tern_key_from_hex(arg, pk) == 0) return 0;
  FILE *f = fopen(arg, "r");
  if (!f) {
    snprintf(err, cap, "--token-key %s: neither 64 hex digits nor a file (%s)", arg, strerror(errno));
    return -1;
  }
  char line[512];
  int found = 0, lineno = 0, rc = 0;
  while (rc == 0 && fgets(line, sizeof(line), f)) {
    lineno++;
    const char *w;
    size_t n;
    if (!first_word(line, &w, &n)) continue;
    if (strncmp(w, "token-secret:", 13) == 0) {
      snprintf(err, cap, "%s: line %d: the backend's secret; give the relay only its public key "
               "(the token-public line, or tern-token keygen's output)", arg, lineno);
      rc = -1;
      break;
    }
    if (strncmp(w, "token-public:", 13) == 0) {
      const char *rest = w + 13;
      rest += strspn(rest, " \t");
      w = rest;
      n = strcspn(rest, " \t\r\n");
    }
    uint8_t k[32];
    if (hex_exact(w, n, k, 32) != 0 || found) {
      snprintf(err, cap, "%s: line %d: expected one line of 64 hex digits (or 'token-public: HEX')",
               arg, lineno);
      rc = -1;
      break;
    }
    memcpy(pk, k, 32);
    found = 1;
  }
  fclose(f);
  if (rc == 0 && !found) {
    snprintf(err, cap, "%s: no public key in the file", arg);
    rc = -1;
  }
  if (rc) memset(pk, 0, 32);
  return rc;
}

static int cmp_id(const void *a, const void *b) { return memcmp(a, b, TERN_TOKEN_ID_BYTES); }
static int cmp_key(const void *a, const void *b) { return memcmp(a, b, TERN_KEY_BYTES); }

int revlist_load(revlist *out, const char *path, char *err, size_t cap) {
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, cap, "%s: %s", path, strerror(errno));
    return errno == ENOENT ? TERN_ENOENT : TERN_EIO;
  }
  revlist r = {0};
  size_t icap = 0, kcap = 0;
  char *line = NULL;
  size_t line_cap = 0;
  int lineno = 0, rc = 0;
  while (getline(&line, &line_cap, f) >= 0) {
    lineno++;
    const char *w;
    size_t n;
    if (!first_word(line, &w, &n)) continue;
    if (w[n] && strspn(w + n, " \t\r\n") != strlen(w + n)) n = 0; /* a second word */
    /* A token id or a device key, by its length. */
    int is_id = n == 2 * TERN_TOKEN_ID_BYTES;
    if (is_id || n == 2 * TERN_KEY_BYTES) {
      uint8_t **arr = is_id ? &r.ids : &r.keys;
      size_t *count = is_id ? &r.nids : &r.nkeys, *slots = is_id ? &icap : &kcap;
      size_t size = is_id ? TERN_TOKEN_ID_BYTES : TERN_KEY_BYTES;
      if (*count == *slots) {
        *slots = *slots ? *slots * 2 : 16;
        void *p = realloc(*arr, *slots * size);
        if (!p) goto nomem;
        *arr = p;
      }
      if (hex_exact(w, n, *arr + *count * size, size) == 0) {
        (*count)++;
        continue;
      }
    }
    snprintf(err, cap, "%s: line %d: expected a token id (32 hex digits) or a device key "
             "(64 hex digits), one a line", path, lineno);
    rc = TERN_EINVAL;
    break;
  }
  if (rc == 0 && ferror(f)) {
    snprintf(err, cap, "%s: read error", path);
    rc = TERN_EIO;
  }
  free(line);
  fclose(f);
  if (rc) {
    revlist_free(&r);
    return rc;
  }
  if (r.nids) qsort(r.ids, r.nids, TERN_TOKEN_ID_BYTES, cmp_id);
  if (r.nkeys) qsort(r.keys, r.nkeys, TERN_KEY_BYTES, cmp_key);
  *out = r;
  return 0;
nomem:
  free(line);
  fclose(f);
  revlist_free(&r);
  snprintf(err, cap, "%s: out of memory", path);
  return TERN_ENOMEM;
}

void revlist_free(revlist *r) {
  free(r->ids);
  free(r->keys);
  memset(r, 0, sizeof(*r));
}

int revlist_has(void *ctx, const uint8_t id[TERN_TOKEN_ID_BYTES], const uint8_t device_key[TERN_KEY_BYTES]) {
  const revlist *r = ctx;
  return (r->nids && bsearch(id, r->ids, r->nids, TERN_TOKEN_ID_BYTES, cmp_id)) ||
         (r->nkeys && bsearch(device_key, r->keys, r->nkeys, TERN_KEY_BYTES, cmp_key));
}
