#include "allowlist.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_entry(const void *a, const void *b) {
  return memcmp(((const allow_entry *)a)->key, ((const allow_entry *)b)->key, TERN_KEY_BYTES);
}

static int valid_user(const char *u) {
  size_t n = strlen(u);
  if (n == 0 || n > TERN_USER_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)u[i];
    if (c <= 0x20 || c == 0x7f || c == '@') return 0;
  }
  return 1;
}

int allowlist_load(allowlist *out, const char *path, char *err, size_t errcap) {
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errcap, "%s: %s", path, strerror(errno));
    return errno == ENOENT ? TERN_ENOENT : TERN_EIO;
  }
  allowlist a = {0};
  size_t cap = 0;
  char line[1024];
  int lineno = 0, rc = 0;
  while (fgets(line, sizeof(line), f)) {
    lineno++;
    if (!strchr(line, '\n') && !feof(f)) {
      snprintf(err, errcap, "%s: line %d: too long", path, lineno);
      rc = TERN_EINVAL;
      break;
    }
    char *hash = strchr(line, '#');
    if (hash) *hash = 0;
    char key_hex[128], user[256], extra[8];
    int n = sscanf(line, "%127s %255s %7s", key_hex, user, extra);
    if (n <= 0) continue;
    allow_entry e;
    if (n != 2 || tern_key_from_hex(key_hex, e.key) != 0 || !valid_user(user)) {
      snprintf(err, errcap,
               "%s: line %d: expected '<64-hex-digit public key> <user name>' "
               "(name: 1-%d bytes, no spaces or '@')",
               path, lineno, TERN_USER_MAX);
      rc = TERN_EINVAL;
      break;
    }
    memcpy(e.user, user, strlen(user) + 1);
    if (a.count == cap) {
      cap = cap ? cap * 2 : 32;
      allow_entry *ne = realloc(a.entries, cap * sizeof(*ne));
      if (!ne) {
        snprintf(err, errcap, "%s: out of memory", path);
        rc = TERN_ENOMEM;
        break;
      }
      a.entries = ne;
    }
    a.entries[a.count++] = e;
  }
  if (rc == 0 && ferror(f)) {
    snprintf(err, errcap, "%s: read error", path);
    rc = TERN_EIO;
  }
  fclose(f);
  if (rc == 0 && a.count) {
    qsort(a.entries, a.count, sizeof(*a.entries), cmp_entry);
    for (size_t i = 1; i < a.count; i++) {
      if (cmp_entry(&a.entries[i - 1], &a.entries[i]) == 0) {
        char hex[TERN_KEY_HEX_BYTES];
        tern_key_to_hex(a.entries[i].key, hex);
        snprintf(err, errcap, "%s: key %s is listed twice", path, hex);
        rc = TERN_EINVAL;
        break;
      }
    }
  }
  if (rc) {
    free(a.entries);
    return rc;
  }
  *out = a;
  return 0;
}

void allowlist_free(allowlist *a) {
  free(a->entries);
  a->entries = NULL;
  a->count = 0;
}

const char *allowlist_find(const allowlist *a, const uint8_t key[TERN_KEY_BYTES]) {
  if (!a->count) return NULL;
  allow_entry probe;
  memcpy(probe.key, key, TERN_KEY_BYTES);
  const allow_entry *e = bsearch(&probe, a->entries, a->count, sizeof(*a->entries), cmp_entry);
  return e ? e->user : NULL;
}
